"""Attack statements for every read path that runs people's SQL (CLI `sql`, HTTP service).

One list, as data: each entry is a statement a hostile or careless person might send and
what must come back: an error whose message matches ``refused`` (a regular expression),
or, for ``refused=None``, an answer (``rows`` when given). Whatever the outcome, the
database must be unchanged afterwards; the tests check that with a digest.

Timeouts: the statements that would run for minutes expect the read path's
statement_timeout; tests run them with a short one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Attack", "ATTACKS", "MULTI", "DENIED", "TIMEOUT", "REJECTED"]

MULTI = r"more than one SQL statement"
#: Refused by a privilege or by the read-only transaction (whichever PostgreSQL checks first).
DENIED = r"permission denied|read-only"
TIMEOUT = r"statement_timeout"
#: Refused by PostgreSQL for another reason (not in a transaction block, no such object, ...).
REJECTED = r"the database rejected the query"


@dataclass(frozen=True)
class Attack:
    name: str
    statement: str
    #: Regular expression the error message must match; None: the statement is answered.
    refused: str | None
    #: For answered statements: the rows expected, when they are known.
    rows: list[tuple[Any, ...]] | None = None


_NESTED = "SELECT " + "(" * 20_000 + "1" + ")" * 20_000
_LONG = "SELECT " + "+".join(["1"] * 60_000)

ATTACKS: list[Attack] = [
    # More than one statement: the transaction cannot be escaped.
    Attack("commit_then_drop", "COMMIT; DROP TABLE ingest_file CASCADE", MULTI),
    Attack("read_write_then_delete", "SET TRANSACTION READ WRITE; DELETE FROM flag_definition", MULTI),
    Attack("two_selects", "SELECT 1; SELECT 2", MULTI),
    Attack("rollback_then_create", "ROLLBACK; BEGIN READ WRITE; CREATE TABLE public.evil (x int)", MULTI),
    Attack("select_then_reset_role", "SELECT 1; RESET ROLE; DROP SCHEMA catalog CASCADE", MULTI),
    Attack("trailing_statement_after_comment", "SELECT 1 -- harmless\n; DROP TABLE survey", MULTI),
    # Server programs and files.
    Attack("copy_to_program", "COPY (SELECT 1) TO PROGRAM 'id > /tmp/skyledger-attack-program'", r"permission denied"),
    Attack("copy_from_program", "COPY flag_definition FROM PROGRAM 'id'", DENIED),
    Attack("copy_to_file", "COPY (SELECT 1) TO '/tmp/skyledger-attack-file'", r"permission denied"),
    Attack("copy_from_file", "COPY flag_definition FROM '/etc/passwd'", DENIED),
    Attack("copy_to_stdout", "COPY (SELECT 1) TO STDOUT", r"COPY is not available"),
    Attack("pg_read_file", "SELECT pg_read_file('/etc/passwd')", r"permission denied"),
    Attack("pg_read_binary_file", "SELECT pg_read_binary_file('/etc/passwd')", r"permission denied"),
    Attack("pg_ls_dir", "SELECT pg_ls_dir('/')", r"permission denied"),
    Attack("pg_stat_file", "SELECT pg_stat_file('/etc/passwd')", r"permission denied"),
    Attack("pg_ls_logdir", "SELECT * FROM pg_ls_logdir()", r"permission denied"),
    Attack("lo_import", "SELECT lo_import('/etc/passwd')", r"permission denied"),
    Attack("lo_export", "SELECT lo_export(1, '/tmp/skyledger-attack-lo')", r"permission denied"),
    Attack("lo_create", "SELECT lo_create(0)", r"permission denied"),
    Attack("lo_from_bytea", "SELECT lo_from_bytea(0, 'x')", r"permission denied"),
    Attack("lo_put", "SELECT lo_put(1, 0, 'x')", r"permission denied"),
    Attack("load_library", "LOAD 'dblink'", r"not allowed"),
    Attack("dblink", "SELECT dblink('dbname=skyledger user=postgres', 'DROP TABLE survey')", r"does not exist"),
    Attack("create_extension", "CREATE EXTENSION dblink", DENIED),
    # Server configuration.
    Attack("alter_system", "ALTER SYSTEM SET listen_addresses = '*'", REJECTED + "|" + DENIED),
    Attack("pg_reload_conf", "SELECT pg_reload_conf()", r"permission denied"),
    Attack("set_config_superuser_param", "SELECT set_config('log_statement', 'none', false)", r"permission denied"),
    Attack("set_temp_file_limit", "SET temp_file_limit = -1", r"permission denied"),
    # Identity.
    Attack("set_role_postgres", "SET ROLE postgres", r"permission denied"),
    Attack("set_role_server_programs", "SET ROLE pg_execute_server_program", r"permission denied"),
    Attack("set_session_authorization", "SET SESSION AUTHORIZATION postgres", r"permission denied"),
    Attack("set_config_role", "SELECT set_config('role', 'postgres', false)", r"permission denied"),
    Attack("set_config_session_authorization", "SELECT set_config('session_authorization', 'postgres', false)", r"permission denied"),
    Attack("create_role", "CREATE ROLE evil LOGIN SUPERUSER", DENIED),
    Attack("alter_own_role", "ALTER ROLE skyledger_query SET statement_timeout = 0", DENIED),
    Attack("grant_to_reader", "GRANT SELECT ON ingest_file TO skyledger_reader", DENIED),
    Attack("alter_default_privileges", "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", DENIED),
    # Objects of one's own.
    Attack("create_function", "CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'", DENIED),
    Attack("create_temp_function", "CREATE FUNCTION pg_temp.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'", DENIED),
    Attack("create_temp_table", "CREATE TEMP TABLE evil (x int)", DENIED),
    Attack("select_into_temp", "SELECT 1 AS x INTO TEMP evil", DENIED),
    Attack("create_table_public", "CREATE TABLE public.evil (x int)", DENIED),
    Attack("create_table_catalog", "CREATE TABLE pg_catalog.evil (x int)", DENIED),
    Attack("create_schema", "CREATE SCHEMA evil", DENIED),
    Attack("do_block", "DO $$ BEGIN PERFORM 1; END $$", r"permission denied"),
    Attack("do_block_sql", "DO LANGUAGE sql $$ SELECT 1 $$", REJECTED + "|" + DENIED),
    Attack("call_procedure", "CALL pg_catalog.evil()", r"does not exist"),
    Attack("comment_on", "COMMENT ON TABLE flag_definition IS 'owned'", DENIED),
    # Notifications, locks, other sessions.
    Attack("pg_notify", "SELECT pg_notify('skyledger', 'x')", r"permission denied"),
    # Answered, and harmless: the transaction is rolled back, so the notification is never
    # sent, and the LISTEN ends with the connection (a test listens for it).
    Attack("notify", "NOTIFY skyledger, 'x'", None, []),
    Attack("listen", "LISTEN skyledger", None, []),
    Attack("advisory_lock", "SELECT pg_advisory_lock(1)", r"permission denied"),
    Attack("try_advisory_xact_lock", "SELECT pg_try_advisory_xact_lock(1)", r"permission denied"),
    Attack("advisory_lock_shared", "SELECT pg_try_advisory_lock_shared(1, 2)", r"permission denied"),
    Attack("terminate_backend", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()", r"permission denied"),
    Attack("cancel_backend", "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()", r"permission denied"),
    Attack("read_other_sessions", "SELECT query FROM pg_stat_activity WHERE pid <> pg_backend_pid()", r"permission denied"),
    Attack("read_backend_activity", "SELECT pg_stat_get_backend_activity(1)", r"permission denied"),
    Attack("lock_table", "LOCK TABLE flag_definition IN ACCESS EXCLUSIVE MODE", DENIED),
    Attack("select_for_update", "SELECT * FROM catalog.spectra FOR UPDATE", DENIED),
    # Resources.
    Attack("sleep_past_timeout", "SELECT pg_sleep(600)", TIMEOUT),
    Attack("huge_series", "SELECT count(*) FROM generate_series(1, 1e12)", TIMEOUT),
    Attack("unset_timeout_then_sleep", "SELECT set_config('statement_timeout', '0', false), pg_sleep(600)", TIMEOUT),
    Attack("unbounded_recursion", "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r", TIMEOUT),
    Attack("cross_join_bomb", "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b", TIMEOUT),
    Attack("deeply_nested_expression", _NESTED, REJECTED),
    Attack("very_long_text", _LONG, r"characters long; at most"),
    # Writes through every statement kind.
    Attack("drop_table", "DROP TABLE survey", DENIED),
    Attack("insert_view", "INSERT INTO catalog.spectra (spectrum_id) VALUES (1)", REJECTED + "|" + DENIED),
    Attack("insert_table", "INSERT INTO survey (name, reader) VALUES ('x', 'sdss')", DENIED),
    Attack("update_catalog", "UPDATE pg_catalog.pg_authid SET rolsuper = true", DENIED),
    Attack("update_table", "UPDATE collection SET name = 'old' WHERE name = 'current'", DENIED),
    Attack("delete_table", "DELETE FROM flag_definition", DENIED),
    Attack("truncate_table", "TRUNCATE ingest_file CASCADE", DENIED),
    Attack("writable_cte", "WITH d AS (DELETE FROM flag_definition RETURNING *) SELECT count(*) FROM d", DENIED),
    Attack("explain_analyze_delete", "EXPLAIN ANALYZE DELETE FROM flag_definition", DENIED),
    Attack("vacuum", "VACUUM flag_definition", REJECTED),
    Attack("cluster", "CLUSTER flag_definition", DENIED),
    Attack("reindex", "REINDEX TABLE flag_definition", DENIED),
    Attack("alter_view_owner", "ALTER VIEW catalog.spectra OWNER TO skyledger_query", DENIED),
    Attack("create_database", "CREATE DATABASE evil", REJECTED + "|" + DENIED),
    Attack("drop_database", "DROP DATABASE skyledger", REJECTED + "|" + DENIED),
    # Reads outside the catalogue.
    Attack("select_base_table", "SELECT * FROM ingest_file", r"permission denied"),
    Attack("select_authid", "SELECT rolpassword FROM pg_authid", r"permission denied"),
    Attack("prepare_execute", "EXECUTE evil", REJECTED),
    # Answered, and harmless: PostgreSQL skips a table the login does not own, with a warning.
    Attack("analyze", "ANALYZE flag_definition", None, []),
    Attack("empty_text", " ; -- nothing", r"no SQL statement"),
    # libpq ends a statement at a NUL byte: what follows one must not be what runs.
    Attack("nul_character", "SELECT 1\x00; DROP TABLE survey", r"NUL character"),
    # Text that is only text: answered, not crashed on.
    Attack("bind_parameter_text", "SELECT ':x' AS s", None, [(":x",)]),
    Attack("format_placeholder_text", "SELECT '%s' AS s, '%(x)s' AS t, '$1' AS u", None, [("%s", "%(x)s", "$1")]),
    Attack("semicolon_inside_a_string", "SELECT 'a; DROP TABLE survey' AS s;", None, [("a; DROP TABLE survey",)]),
]
