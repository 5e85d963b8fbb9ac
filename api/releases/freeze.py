"""Freezing a collection into a release schema: real copies, comments, grants, read-only.

Runs inside the caller's transaction, so the schema, its tables and the ``release`` /
``release_run`` rows appear together or not at all. Identifiers are composed with
:mod:`psycopg.sql`; the release name was validated before it gets here.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from .content import FlagBit, RunRef, TableContent
from .digest import TableDigest, table_digest
from .errors import ReleaseError
from .tables import SEARCH_PATH_TABLE, ReleaseTable, release_tables
from .units import load_flux_scales

__all__ = ["READER_ROLE", "frozen_tables", "load_search_path", "freeze_tables", "record_digests", "table_content"]

READER_ROLE = "skyledger_reader"

def frozen_tables() -> dict[str, tuple[str, ...]]:
    """Every table of a release schema and the key its digest sorts by first."""
    return {
        **{t.name: t.key for t in release_tables()},
        "runs": ("run_id",),
        "flag_definition": ("table_name", "column_name", "bit"),
    }

_PG_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real", "float8": "double precision",
             "text": "text", "bool": "boolean"}
_TNULL = {"int2": -(2**15), "int4": -(2**31), "int8": -(2**63)}


def load_search_path(conn: psycopg.Connection, collection_id: int) -> None:
    """Put the collection's succeeded runs and their ranks, and the line-flux unit factors,
    where the release queries read them."""
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (run_id bigint PRIMARY KEY, task text NOT NULL, rank integer NOT NULL) "
                "ON COMMIT DROP").format(sql.Identifier(SEARCH_PATH_TABLE))
    )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT r.id, r.task, cr.rank FROM collection_run AS cr JOIN run AS r ON r.id = cr.run_id "
                "WHERE cr.collection_id = %s AND r.status = 'succeeded'").format(sql.Identifier(SEARCH_PATH_TABLE)),
        (collection_id,),
    )
    load_flux_scales(conn)


def _comment(description: str, unit: str | None) -> str:
    return f"{description} [{unit}]" if unit else description


def _check_columns(conn: psycopg.Connection, schema: str, table: ReleaseTable) -> None:
    # The query and the column list are written side by side; a mismatch is a bug here,
    # caught before any file is written.
    got = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (sql.Identifier(schema, table.name).as_string(conn),),
    ).fetchall()
    expected = [(c.name, _PG_NAMES[c.pg_type]) for c in table.columns]
    if got != expected:
        raise ReleaseError(f"release table {table.name}: the query gives columns {got}, its definition says {expected}")


def _freeze_one(conn: psycopg.Connection, schema: str, table: ReleaseTable) -> None:
    target = sql.Identifier(schema, table.name)
    conn.execute(sql.SQL("CREATE TABLE {} AS ").format(target) + sql.SQL(table.query))  # type: ignore[arg-type]
    _check_columns(conn, schema, table)
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, table.key))))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(target, sql.Literal(table.description)))
    for column in table.columns:
        conn.execute(sql.SQL("COMMENT ON COLUMN {} IS {}").format(
            sql.Identifier(schema, table.name, column.name), sql.Literal(_comment(column.description, column.unit))))


def _read_only(conn: psycopg.Connection, schema: str, table: str) -> None:
    # Statement triggers stop writes by anyone, the owner and superusers included
    # (privileges alone would not: the embedded server's user is a superuser).
    conn.execute(sql.SQL(
        "CREATE TRIGGER release_read_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
        "FOR EACH STATEMENT EXECUTE FUNCTION public.release_read_only()").format(sql.Identifier(schema, table)))


def freeze_tables(conn: psycopg.Connection, *, name: str, release_id: int, description: str) -> None:
    """Create schema ``name`` with a frozen copy of every release table, the runs behind
    them and their flag bits; record the runs in ``release_run``; grant reading."""
    schema = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
    conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(schema, sql.Literal(description)))
    tables = release_tables()
    for table in tables:
        _freeze_one(conn, name, table)
    with_runs = [t for t in tables if t.has_runs]
    used = sql.SQL(" UNION ").join(
        sql.SQL("SELECT run_id FROM {}").format(sql.Identifier(name, t.name)) for t in with_runs)
    conn.execute(sql.SQL(
        "CREATE TABLE {} AS SELECT r.id AS run_id, r.task, r.version, r.params, r.params_hash, r.code_version, "
        "r.model_sha256, r.upstream_run_ids, r.device, r.started_at, r.finished_at "
        "FROM run AS r WHERE r.id IN ({}) ORDER BY r.id").format(sql.Identifier(name, "runs"), used))
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (run_id)").format(sql.Identifier(name, "runs")))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
        sql.Identifier(name, "runs"), sql.Literal("The runs whose results this release holds (copied from run)")))
    mapping = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(t.name), sql.Literal(t.flags_of)) for t in tables if t.flags_of)
    conn.execute(sql.SQL(
        "CREATE TABLE {} AS SELECT v.release_table AS table_name, f.column_name, f.bit, f.name, f.description "
        "FROM flag_definition AS f JOIN (VALUES {}) AS v (release_table, base) ON v.base = f.table_name "
        "ORDER BY 1, 2, 3").format(sql.Identifier(name, "flag_definition"), mapping))
    conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(
        sql.Identifier(name, "flag_definition"), sql.Literal("Meaning of every bit of the flags columns of this release")))
    for table in frozen_tables():
        _read_only(conn, name, table)
    conn.execute(
        sql.SQL("INSERT INTO release_run (release_id, run_id) SELECT %s, run_id FROM {}").format(
            sql.Identifier(name, "runs")),
        (release_id,),
    )
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
    conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM PUBLIC").format(schema))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, sql.Identifier(READER_ROLE)))
    conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, sql.Identifier(READER_ROLE)))


def record_digests(conn: psycopg.Connection, *, name: str, release_id: int) -> dict[str, TableDigest]:
    """Digest every frozen table of schema ``name`` and record it in ``release_table``."""
    digests = {table: table_digest(conn, name, table, key) for table, key in frozen_tables().items()}
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO release_table (release_id, table_name, n_rows, sha256) VALUES (%s, %s, %s, %s)",
            [(release_id, table, d.n_rows, d.sha256) for table, d in digests.items()],
        )
    return digests


def table_content(conn: psycopg.Connection, name: str, table: ReleaseTable) -> TableContent:
    """Row count, runs, flag bits, string widths and NULL-holding integer columns of a frozen table."""
    target = sql.Identifier(name, table.name)
    texts = [c.name for c in table.columns if c.pg_type == "text"]
    ints = [c for c in table.columns if c.pg_type in _TNULL]
    parts: list[sql.Composable] = [sql.SQL("count(*)")]
    parts += [sql.SQL("coalesce(max(octet_length({})), 0)").format(sql.Identifier(n)) for n in texts]
    parts += [sql.SQL("bool_or({} IS NULL), coalesce(bool_or({} = {}), false)").format(
        sql.Identifier(c.name), sql.Identifier(c.name), sql.Literal(_TNULL[c.pg_type])) for c in ints]
    row = conn.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(parts), target)).fetchone()
    assert row is not None
    n_rows, rest = row[0], list(row[1:])
    max_bytes = dict(zip(texts, rest[: len(texts)]))
    flags = rest[len(texts):]
    null_ints = set()
    for i, c in enumerate(ints):
        has_null, has_sentinel = flags[2 * i], flags[2 * i + 1]
        if has_null:
            if has_sentinel:
                raise ReleaseError(
                    f"release table {table.name}: column {c.name} holds both NULL and {_TNULL[c.pg_type]}, "
                    "which FITS would use for NULL; the release cannot be written faithfully")
            null_ints.add(c.name)
    runs: Sequence[RunRef] = ()
    if table.has_runs:
        runs = [RunRef(*r) for r in conn.execute(sql.SQL(
            "SELECT r.id, r.task, r.version, r.params_hash, r.code_version FROM run AS r "
            "WHERE r.id IN (SELECT DISTINCT run_id FROM {}) ORDER BY r.id").format(target))]
    bits: Sequence[FlagBit] = ()
    if table.flags_of:
        bits = [FlagBit(*f) for f in conn.execute(
            "SELECT bit, name, description FROM flag_definition WHERE table_name = %s AND column_name = 'flags' "
            "ORDER BY bit", (table.flags_of,))]
    return TableContent(table=table, n_rows=n_rows, runs=tuple(runs), flags=tuple(bits), max_bytes=max_bytes,
                        null_ints=frozenset(null_ints))
