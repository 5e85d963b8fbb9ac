"""Formatting query results, and the project's own fixed queries (run as the owner).

People's SQL never goes through :func:`run_query`: it takes the one read path,
:mod:`skyledger.schema.readpath` (a reader login, one statement, limits). This module
imports no SQLAlchemy at import time, so `skyledger sql` starts fast.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from skyledger.schema.errors import QueryError, ReadOnlyViolation

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from skyledger.schema.readpath import QueryResult

__all__ = ["QueryResult", "QueryError", "run_query", "format_result", "FORMATS"]

FORMATS = ("table", "csv", "json")


def __getattr__(name: str) -> Any:
    # QueryResult lives with the read path, which imports psycopg: loaded on first use,
    # so that `skyledger --help` does not pay for it.
    if name == "QueryResult":
        from skyledger.schema.readpath import QueryResult

        return QueryResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_query(
    session: Session,
    query: str,
    *,
    read_only: bool = True,
    max_rows: int | None = None,
    timeout_s: float | None = None,
) -> QueryResult:
    """Execute one of the project's own statements in the session's transaction (as the
    session's login, the owner) and fetch its rows: the `runs` and `demo` listings.

    With ``read_only`` the transaction is marked READ ONLY before the statement runs,
    so PostgreSQL itself refuses any write (DDL included).
    """
    from psycopg import errors as pg_errors
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from skyledger.schema.readpath import QueryResult

    if read_only:
        session.execute(text("SET TRANSACTION READ ONLY"))
    if timeout_s is not None:
        session.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(timeout_s * 1000))})
    try:
        result = session.execute(text(query))
    except DBAPIError as err:
        if isinstance(err.orig, pg_errors.ReadOnlySqlTransaction):
            raise ReadOnlyViolation(
                "this statement writes to the database, and this query runs read-only; "
                f"nothing was changed ({err.orig.diag.message_primary})"
            ) from err
        message = getattr(err.orig, "diag", None)
        primary = message.message_primary if message is not None else str(err.orig)
        raise QueryError(f"the database rejected the query: {primary}") from err
    if not result.returns_rows:
        return QueryResult(columns=[], rows=[])
    columns = list(result.keys())
    if max_rows is None:
        rows = [tuple(r) for r in result.fetchall()]
        return QueryResult(columns, rows)
    rows = [tuple(r) for r in result.fetchmany(max_rows + 1)]
    truncated = len(rows) > max_rows
    return QueryResult(columns, rows[:max_rows], truncated)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(_plain(value))
    return str(_plain(value))


def format_result(result: QueryResult, fmt: str) -> str:
    """Render rows as an aligned text table, CSV (empty field = NULL) or JSON records."""
    if fmt == "json":
        return json.dumps([dict(zip(result.columns, map(_plain, row))) for row in result.rows], indent=1)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([_cell(v) for v in row] for row in result.rows)
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    cells = [[_cell(v) if v is not None else "NULL" for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(result.columns, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    footer = f"({len(cells)} row{'s' if len(cells) != 1 else ''}{', truncated' if result.truncated else ''})"
    return "\n".join(lines + [footer])
