"""Content digests of release tables: what ``verify`` recomputes to see whether rows changed.

A table's digest is the SHA-256 of a version line, its column list (name and type, in
order) and every row as ``COPY (SELECT ... ORDER BY ...) TO STDOUT`` writes it in text
format. The bytes are hashed in Python as they stream, so memory stays bounded whatever
the table's size (an SQL ``string_agg`` would build the whole table as one value, capped
at 1 GB); the server sorts, spilling to disk when it must.

The byte stream must be the same every time for the same rows:

* the order is total: the table's key columns first, then every other column, so even a
  table that lost its primary key sorts the same way; text sorts in the ``C`` collation,
  which no operating-system upgrade changes;
* every setting that changes how a value is printed (float digits, dates, time zone,
  intervals, bytea) is fixed for the duration of the digest and restored after.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

__all__ = ["DIGEST_VERSION", "TableDigest", "table_digest", "relation_exists"]

#: The first line hashed; a change of the recipe changes this, so old and new digests never mix silently.
DIGEST_VERSION = b"skyledger release table digest 1\n"

#: Output settings pinned while a digest is computed (shortest exact floats, ISO dates in UTC).
_OUTPUT_SETTINGS = {
    "extra_float_digits": "1",
    "DateStyle": "ISO, YMD",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
}


@dataclass(frozen=True)
class TableDigest:
    n_rows: int
    sha256: str


def relation_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, table).as_string(conn),)).fetchone()
    return row is not None and row[0] is not None


def _columns(conn: psycopg.Connection, schema: str, table: str) -> list[tuple[str, str, bool]]:
    """(name, type, collatable) of every column, in table order."""
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attcollation <> 0 FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (sql.Identifier(schema, table).as_string(conn),))]


def _pin_settings(conn: psycopg.Connection) -> dict[str, str]:
    previous = {}
    for name, value in _OUTPUT_SETTINGS.items():
        row = conn.execute("SELECT current_setting(%s), set_config(%s, %s, true)", (name, name, value)).fetchone()
        assert row is not None
        previous[name] = row[0]
    return previous


def _restore_settings(conn: psycopg.Connection, previous: dict[str, str]) -> None:
    for name, value in previous.items():
        conn.execute("SELECT set_config(%s, %s, true)", (name, value))


def table_digest(conn: psycopg.Connection, schema: str, table: str, key: Sequence[str] = ()) -> TableDigest:
    """Row count and SHA-256 of ``schema.table`` (which must exist), read in the caller's transaction."""
    columns = _columns(conn, schema, table)
    names = [c[0] for c in columns]
    collatable = {c[0] for c in columns if c[2]}
    order = [k for k in key if k in names] + [n for n in names if n not in key]

    def sort_item(name: str) -> sql.Composable:
        if name in collatable:
            return sql.SQL('{} COLLATE "C"').format(sql.Identifier(name))
        return sql.Identifier(name)

    query = sql.SQL("COPY (SELECT {} FROM {} ORDER BY {}) TO STDOUT").format(
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.Identifier(schema, table),
        sql.SQL(", ").join(map(sort_item, order)),
    )
    digest = hashlib.sha256(DIGEST_VERSION)
    digest.update("".join(f"{name}\t{type_}\n" for name, type_, _ in columns).encode("utf-8") + b"\n")
    n_rows = 0
    previous = _pin_settings(conn)
    with conn.cursor() as cur, cur.copy(query) as copy:
        # Text format ends every row with one newline and escapes newlines inside values.
        for chunk in copy:
            digest.update(chunk)
            n_rows += bytes(chunk).count(b"\n")
    _restore_settings(conn, previous)
    return TableDigest(n_rows=n_rows, sha256=digest.hexdigest())
