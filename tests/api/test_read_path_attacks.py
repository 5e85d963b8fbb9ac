"""The read path of people's SQL (`skyledger sql`) under attack: every statement of
``read_path_attacks.ATTACKS`` is refused (or harmlessly answered) and the database is
byte-for-byte the same afterwards; the reader login has nothing but reading."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import make_url

from skyledger.api.nightly import NIGHTLY_LOCK
from skyledger.schema.database import head_revision
from skyledger.schema.errors import DatabaseError, QueryError, ReadOnlyViolation
from skyledger.schema.locks import advisory_lock, lock_key
from skyledger.schema.readpath import (
    QUERY_ROLE,
    Limits,
    code_head_revision,
    connect_reader,
    excess_privileges,
    run_reader_query,
)
from skyledger.schema.settings import Settings
from tests.api.read_path_attacks import ATTACKS, MULTI
from tests.conftest import cli_env

# Short enough for the statements that would run for minutes; the others take milliseconds.
LIMITS = Limits(statement_timeout_s=3)
FILES_AN_ATTACK_MIGHT_WRITE = [Path("/tmp/skyledger-attack-program"), Path("/tmp/skyledger-attack-file"), Path("/tmp/skyledger-attack-lo")]


def owner_conninfo(settings: Settings) -> str:
    return make_url(settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)


# What an attack could change, read as the superuser: catalogs (roles, privileges,
# functions, comments, settings, large objects, ALTER SYSTEM's file) and every row.
CATALOG_DIGESTS = {
    "relations": "SELECT string_agg(format('%s.%s %s %s %s', n.nspname, c.relname, c.relkind, c.relowner::regrole, c.relacl), "
    "E'\\n' ORDER BY n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname NOT LIKE 'pg\\_toast%'",
    "namespaces": "SELECT string_agg(format('%s %s %s', nspname, nspowner::regrole, nspacl), E'\\n' ORDER BY nspname) FROM pg_namespace",
    "functions": "SELECT string_agg(format('%s %s %s %s', oid::regprocedure, proowner::regrole, proacl, md5(prosrc)), E'\\n' "
    "ORDER BY oid::regprocedure::text) FROM pg_proc",
    "roles": "SELECT string_agg(format('%s %s %s %s %s %s %s %s', rolname, rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, "
    "rolbypassrls, rolconnlimit, rolconfig), E'\\n' ORDER BY rolname) FROM pg_roles",
    "memberships": "SELECT string_agg(format('%s %s', roleid::regrole, member::regrole), E'\\n' ORDER BY 1) FROM pg_auth_members",
    "role_settings": "SELECT string_agg(format('%s %s %s', setdatabase, setrole, setconfig), E'\\n' ORDER BY 1) FROM pg_db_role_setting",
    "databases": "SELECT string_agg(format('%s %s %s %s', datname, datdba::regrole, datallowconn, datacl), E'\\n' ORDER BY datname) FROM pg_database",
    "languages": "SELECT string_agg(format('%s %s', lanname, lanacl), E'\\n' ORDER BY lanname) FROM pg_language",
    "default_acls": "SELECT string_agg(format('%s %s %s', defaclrole::regrole, defaclnamespace, defaclacl), E'\\n' ORDER BY 1) FROM pg_default_acl",
    "comments": "SELECT string_agg(format('%s %s %s %s', classoid, objoid, objsubid, md5(description)), E'\\n' ORDER BY 1) FROM pg_description",
    "large_objects": "SELECT count(*)::text FROM pg_largeobject_metadata",
    "extensions": "SELECT string_agg(extname, ' ' ORDER BY extname) FROM pg_extension",
    "triggers": "SELECT string_agg(format('%s %s %s', tgrelid::regclass, tgname, tgenabled), E'\\n' ORDER BY 1) FROM pg_trigger",
    "alter_system": "SELECT md5(pg_read_file('postgresql.auto.conf'))",
}


def database_digest(settings: Settings) -> dict[str, str]:
    digest: dict[str, str] = {}
    with psycopg.connect(owner_conninfo(settings), autocommit=True) as conn:
        for name, query in CATALOG_DIGESTS.items():
            digest[name] = conn.execute(query).fetchone()[0]
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} AS t")
            count, rows = conn.execute(query.format(sql.Identifier(schema, table))).fetchone()
            digest[f"rows {schema}.{table}"] = f"{count} {rows}"
    return digest


def test_the_attack_list_is_long_enough():
    assert len(ATTACKS) >= 40
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)


def test_every_attack_is_refused_and_nothing_changes(fresh_settings):
    for path in FILES_AN_ATTACK_MIGHT_WRITE:
        path.unlink(missing_ok=True)
    with psycopg.connect(owner_conninfo(fresh_settings), autocommit=True) as conn:
        # Some rows of every kind the attacks aim at, so that a change would show.
        conn.execute("INSERT INTO survey (name, reader) VALUES ('attack-test', 'sdss')")
    before = database_digest(fresh_settings)
    assert any(v.split()[0] != "0" for k, v in before.items() if k.startswith("rows public.flag_definition"))
    failures = []
    for attack in ATTACKS:
        try:
            result = run_reader_query(fresh_settings, attack.statement, LIMITS)
        except QueryError as err:
            message = str(err)
            if attack.refused is None:
                failures.append(f"{attack.name}: expected an answer, got: {message}")
            elif not re.search(attack.refused, message):
                failures.append(f"{attack.name}: error does not match {attack.refused!r}: {message}")
            elif "\n" in message or "Traceback" in message:
                failures.append(f"{attack.name}: the error is not one clear line: {message!r}")
        else:
            if attack.refused is not None:
                failures.append(f"{attack.name}: answered {result.columns} {result.rows[:3]} instead of being refused")
            elif attack.rows is not None and result.rows != attack.rows:
                failures.append(f"{attack.name}: answered {result.rows!r}, expected {attack.rows!r}")
    assert failures == []
    after = database_digest(fresh_settings)
    assert {k: v for k, v in after.items() if before.get(k) != v} == {}
    assert after == before
    assert [p for p in FILES_AN_ATTACK_MIGHT_WRITE if p.exists()] == []


def test_the_reader_login_has_nothing_but_reading(fresh_settings):
    with connect_reader(fresh_settings, LIMITS) as conn:
        assert conn.info.user == QUERY_ROLE
        assert excess_privileges(conn) == []
        role = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin, rolconfig "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert role[:6] == (False, False, False, False, False, True)
        config = dict(item.split("=", 1) for item in role[6])
        assert config["default_transaction_read_only"] == "on"
        assert config["temp_file_limit"] == "1GB"
        assert {"statement_timeout", "idle_in_transaction_session_timeout"} <= set(config)
        member_of = conn.execute(
            "SELECT array_agg(b.rolname::text) FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
            "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        ).fetchone()[0]
        assert member_of == ["skyledger_reader"]
        assert conn.execute("SELECT has_database_privilege(current_database(), 'TEMPORARY')").fetchone()[0] is False
        shown = conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout'), "
            "current_setting('transaction_read_only')"
        ).fetchone()
        assert shown == ("3s", "10s", "on")


def test_a_set_inside_a_statement_dies_with_it(fresh_settings):
    run_reader_query(fresh_settings, "SELECT set_config('statement_timeout', '0', false)", LIMITS)
    assert run_reader_query(fresh_settings, "SHOW statement_timeout", LIMITS).rows == [("3s",)]


def test_the_reader_cannot_take_or_block_the_nightly_lock(fresh_settings, fresh_database):
    key = lock_key(NIGHTLY_LOCK)
    with connect_reader(fresh_settings, LIMITS) as reader:
        for function in ("pg_try_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock_shared"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(sql.SQL("SELECT {}(%s)").format(sql.Identifier(function)), (key,))
            reader.rollback()
        # The reader's session is still open: the nightly flow takes its lock regardless.
        with advisory_lock(fresh_database.engine, NIGHTLY_LOCK) as acquired:
            assert acquired
            holder = fresh_database.engine.raw_connection()
            try:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute("SELECT pg_cancel_backend(pid) FROM pg_locks WHERE locktype = 'advisory'")
            finally:
                holder.close()


def test_notify_never_reaches_a_listener(fresh_settings):
    with psycopg.connect(owner_conninfo(fresh_settings), autocommit=True) as listener:
        listener.execute("LISTEN skyledger")
        run_reader_query(fresh_settings, "NOTIFY skyledger, 'from a reader'", LIMITS)
        with pytest.raises(QueryError, match="permission denied"):
            run_reader_query(fresh_settings, "SELECT pg_notify('skyledger', 'from a reader')", LIMITS)
        # Both ran (and ended) before the calls returned: a delivered one would be waiting.
        assert [n.payload for n in listener.notifies(timeout=0.5, stop_after=1)] == []


def test_rows_are_capped_and_marked(fresh_settings):
    result = run_reader_query(fresh_settings, "SELECT n FROM generate_series(1, 1000000) AS n", replace(LIMITS, max_rows=5))
    assert result.columns == ["n"] and [r[0] for r in result.rows] == [1, 2, 3, 4, 5] and result.truncated
    empty = run_reader_query(fresh_settings, "SELECT spectrum_id, survey FROM catalog.spectra WHERE false", LIMITS)
    assert empty.columns == ["spectrum_id", "survey"] and empty.rows == [] and not empty.truncated


def test_an_external_owner_is_refused_unless_allowed(fresh_settings):
    owner = Settings(home=fresh_settings.home, database_url=fresh_settings.database_url)
    with pytest.raises(DatabaseError, match="is more than one: it is a superuser.*SKYLEDGER_QUERY_URL.*SKYLEDGER_ALLOW_OWNER_QUERIES"):
        run_reader_query(owner, "SELECT 1", LIMITS)
    allowed = owner.model_copy(update={"allow_owner_queries": True})
    assert run_reader_query(allowed, "SELECT 1 AS one", LIMITS).rows == [(1,)]
    # Still read-only, one statement, with the limits.
    with pytest.raises(ReadOnlyViolation):
        run_reader_query(allowed, "DROP TABLE survey", LIMITS)
    with pytest.raises(QueryError, match=MULTI):
        run_reader_query(allowed, "SELECT 1; DROP TABLE survey", LIMITS)
    shown = run_reader_query(allowed, "SELECT current_setting('statement_timeout'), current_setting('temp_file_limit')", LIMITS)
    assert shown.rows == [("3s", "1GB")]


@pytest.fixture
def extra_login(server):
    """A login that is a reader and a bit more; dropped afterwards (roles are server-wide)."""
    name = "skyledger_test_wide"
    server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    server.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE skyledger_reader, pg_read_server_files").format(sql.Identifier(name)))
    yield name
    server.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_login_with_more_than_reading_is_refused(fresh_settings, extra_login, server):
    url = make_url(fresh_settings.database_url).set(username=extra_login).render_as_string(hide_password=False)
    wide = Settings(home=fresh_settings.home, database_url=fresh_settings.database_url, query_url=url)
    with pytest.raises(DatabaseError, match="is a member of pg_read_server_files"):
        run_reader_query(wide, "SELECT 1", LIMITS)
    # Without the extra membership it is a reader, but one without a temp_file_limit.
    server.execute(sql.SQL("REVOKE pg_read_server_files FROM {}").format(sql.Identifier(extra_login)))
    with pytest.raises(DatabaseError, match="has no temp_file_limit.*ALTER ROLE"):
        run_reader_query(wide, "SELECT 1", LIMITS)
    server.execute(sql.SQL("ALTER ROLE {} SET temp_file_limit = '1GB'").format(sql.Identifier(extra_login)))
    assert run_reader_query(wide, "SELECT count(*) FROM catalog.spectra", LIMITS).rows == [(0,)]


def test_the_head_revision_from_file_names_is_alembics():
    assert code_head_revision() == head_revision()


def test_an_older_schema_is_refused_on_the_read_path(fresh_settings):
    with psycopg.connect(owner_conninfo(fresh_settings), autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0010'")
    with pytest.raises(DatabaseError, match="older than this code's .* run `skyledger db upgrade`"):
        run_reader_query(fresh_settings, "SELECT 1", LIMITS)


def skyledger(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]
    return subprocess.run(exe + list(args), env=env, capture_output=True, text=True, timeout=180)


CLI_ATTACKS = ["commit_then_drop", "copy_to_program", "pg_read_file", "select_base_table", "do_block", "sleep_past_timeout"]


def test_the_console_script_refuses_with_one_line(fresh_settings):
    env = cli_env(fresh_settings) | {"SKYLEDGER_QUERY_TIMEOUT_S": "3"}
    by_name = {a.name: a for a in ATTACKS}
    for name in CLI_ATTACKS:
        proc = skyledger("sql", by_name[name].statement, env=env)
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, proc.stderr)
        assert re.search(by_name[name].refused, lines[0]), (name, lines[0])
    answered = skyledger("sql", "SELECT ':x' AS s", "--format", "csv", env=env)
    assert answered.returncode == 0 and answered.stdout.splitlines() == ["s", ":x"], answered.stderr
    capped = skyledger("sql", "SELECT generate_series(1, 10) AS n", "--max-rows", "3", "-f", "csv", env=env)
    assert capped.stdout.splitlines() == ["n", "1", "2", "3"] and "only the first 3 rows" in capped.stderr


def test_the_console_script_refuses_the_owner_unless_allowed(fresh_settings):
    env = cli_env(fresh_settings)
    del env["SKYLEDGER_QUERY_URL"]
    refused = skyledger("sql", "SELECT 1", env=env)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "is a superuser" in refused.stderr and "SKYLEDGER_QUERY_URL" in refused.stderr
    allowed = skyledger("sql", "SELECT 1 AS one", "-f", "csv", env=env | {"SKYLEDGER_ALLOW_OWNER_QUERIES": "1"})
    assert allowed.returncode == 0 and allowed.stdout.splitlines() == ["one", "1"]
    gone = skyledger("sql", "DELETE FROM survey", "--allow-write", env=env | {"SKYLEDGER_ALLOW_OWNER_QUERIES": "1"})
    assert gone.returncode == 2 and "--allow-write" in gone.stderr  # the owner write path is gone


HEAVY = ("sqlalchemy", "alembic", "torch", "astropy", "prefect", "tqdm", "numpy")


def test_the_cli_and_its_sql_command_load_no_heavy_module(fresh_settings):
    probe = (
        "import sys; from skyledger.api.cli import app; "
        "loaded = [m for m in {heavy!r} if m in sys.modules]; {run}"
        "loaded += [m for m in {heavy!r} if m in sys.modules and m not in loaded]; print(loaded)"
    )
    just_import = subprocess.run(
        [sys.executable, "-c", probe.format(heavy=HEAVY, run="")], capture_output=True, text=True, timeout=120
    )
    assert just_import.stdout.strip() == "[]", just_import.stderr
    run = "app(['sql', 'SELECT 1'], standalone_mode=False); "
    with_sql = subprocess.run(
        [sys.executable, "-c", probe.format(heavy=HEAVY, run=run)],
        env=cli_env(fresh_settings), capture_output=True, text=True, timeout=120,
    )
    assert with_sql.returncode == 0, with_sql.stderr
    assert with_sql.stdout.strip().splitlines()[-1] == "[]", with_sql.stdout
