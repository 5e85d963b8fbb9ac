"""One TAP query, from request parameters to result bytes, through the read path.

ADQL is translated (adql.translate), capped with ``LIMIT min(TOP, MAXREC) + 1`` (the
extra row tells an overflow from an exact fit), and run with
:func:`skyledger.schema.readpath.stream_statement` on a reader connection: the service
never holds more than one chunk of rows, and never runs anything as the owner. Field
metadata (unit, UCD, description) comes from ``tap_schema.columns`` for the output
columns the translation traces to a table column.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg

from skyledger.schema.errors import QueryError
from skyledger.schema.readpath import Limits, connect_reader, stream_statement
from skyledger.schema.settings import Settings

from .adql import translate
from .formats import Field, Format, resolve_format, stream_result

__all__ = ["TapRequest", "parse_tap_params", "Result", "open_result"]

#: LANG values accepted (TAP 1.1 says "ADQL"; versions as the capabilities list them).
LANGS = {"adql", "adql-2.0", "adql-2.1"}


@dataclass(frozen=True)
class TapRequest:
    query: str
    lang: str
    maxrec: int
    format: Format
    #: What the client sent, as the job's parameters show them.
    params: dict[str, str]


def lower_keys(params: Mapping[str, str]) -> dict[str, str]:
    """TAP parameter names are case-insensitive; the last value of a name wins."""
    return {str(k).lower(): str(v) for k, v in params.items()}


def parse_tap_params(params: Mapping[str, str], *, default_maxrec: int, max_rows: int, sync: bool) -> TapRequest:
    """The query a TAP request asks for; :class:`QueryError` saying what to fix otherwise."""
    p = lower_keys(params)
    request = p.get("request", "doQuery" if not sync else None)
    if request is None:
        raise QueryError("REQUEST is missing: send REQUEST=doQuery with LANG=ADQL and QUERY")
    if request.lower() != "doquery":
        raise QueryError(f"REQUEST={request!r} is not supported; use REQUEST=doQuery")
    lang = p.get("lang", "ADQL")
    if lang.lower() not in LANGS:
        raise QueryError(f"LANG={lang!r} is not supported; use LANG=ADQL (ADQL-2.0 and ADQL-2.1 are accepted too)")
    query = p.get("query", "").strip()
    if not query:
        raise QueryError("QUERY is missing or empty: send an ADQL query such as SELECT TOP 10 * FROM catalog.spectra")
    maxrec = default_maxrec
    if "maxrec" in p:
        try:
            maxrec = int(p["maxrec"])
        except ValueError:
            raise QueryError(f"MAXREC={p['maxrec']!r} is not a whole number") from None
        if maxrec < 0:
            raise QueryError(f"MAXREC={maxrec} is negative; send 0 for the metadata alone, or a positive row count")
    maxrec = min(maxrec, max_rows)
    fmt = resolve_format(p.get("responseformat") or p.get("format"))
    return TapRequest(query, lang, maxrec, fmt, {k: v for k, v in p.items()})


def _column_metadata(conn: psycopg.Connection, tables: set[str]) -> dict[tuple[str, str], tuple]:
    """(table, column) -> (unit, ucd, description) from tap_schema.columns."""
    if not tables:
        return {}
    try:
        with conn.transaction():
            rows = conn.execute(
                "SELECT lower(table_name), lower(column_name), unit, ucd, description FROM tap_schema.columns "
                "WHERE lower(table_name) = ANY(%s)",
                (sorted(t.lower() for t in tables),),
            ).fetchall()
    except psycopg.Error:
        return {}  # no tap_schema (a database before its migration): fields go without metadata
    return {(t, c): (unit, ucd, desc) for t, c, unit, ucd, desc in rows}


class Result:
    """An open query: ``media_type`` and ``body`` (bytes chunks); ``close()`` ends the
    statement and closes the connection (also when the body was not read to its end)."""

    def __init__(self, fmt: Format, body: Iterator[bytes], stack: ExitStack, stream) -> None:
        self.format = fmt
        self.media_type = fmt.media_type
        self.body = body
        self._stack = stack
        self.stream = stream

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Result:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _columns_of(conn: psycopg.Connection):
    """``columns_of`` for adql.translate: a table's columns in order, from tap_schema."""
    cache: dict[str, list[str]] = {}

    def columns_of(table: str) -> list[str]:
        key = table.lower()
        if key not in cache:
            try:
                with conn.transaction():
                    cache[key] = [row[0] for row in conn.execute(
                        "SELECT column_name FROM tap_schema.columns WHERE lower(table_name) = %s "
                        "ORDER BY column_index", (key,))]
            except psycopg.Error:
                cache[key] = []
        return cache[key]

    return columns_of


def open_result(settings: Settings, req: TapRequest, *, timeout_s: float, cancel_hook=None) -> Result:
    """Translate, connect as the reader, start the statement and read its first chunk, so
    that every error the statement raises up front comes out of here (and is answered
    with its status) rather than half-way through a response."""

    def plan(conn: psycopg.Connection) -> _Plan:
        tr = translate(req.query, columns_of=_columns_of(conn))
        # TOP within MAXREC is the query's own answer: cut there, and no OVERFLOW.
        by_top = tr.top is not None and tr.top <= req.maxrec
        return _Plan(tr.sql, tr.top if by_top else req.maxrec, not by_top, tr.sources, tr.xtypes)

    return _open(settings, plan, fmt=req.format, timeout_s=timeout_s,
                 infos={"QUERY": req.query, "MAXREC": str(req.maxrec)}, cancel_hook=cancel_hook)


@dataclass
class _Plan:
    sql: str
    limit: int
    overflow: bool = True
    sources: Any = None
    xtypes: Any = None


def open_statement(
    settings: Settings,
    sql: str,
    *,
    fmt: Format,
    limit: int,
    timeout_s: float,
    sources=None,
    infos: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Result:
    """Run ``sql`` (a SELECT without LIMIT, written by the service) on the read path like
    a TAP query; ``overrides``: field attributes by column name (the cone search's UCDs)."""
    return _open(settings, lambda conn: _Plan(sql, limit, True, sources), fmt=fmt, timeout_s=timeout_s,
                 infos=infos, overrides=overrides)


def _open(settings, plan, *, fmt: Format, timeout_s: float, infos=None, overrides=None, cancel_hook=None) -> Result:
    """Connect as the reader, ``plan(conn)`` the statement, and start it with
    ``LIMIT limit + 1`` (the extra row marks an overflow; without overflow ``LIMIT limit``)."""
    stack = ExitStack()
    try:
        conn = stack.enter_context(connect_reader(settings, Limits(statement_timeout_s=timeout_s)))
        if cancel_hook is not None:
            cancel_hook(conn)
        p = plan(conn)
        limits = Limits(statement_timeout_s=timeout_s, max_rows=p.limit)
        statement = f"{p.sql}\nLIMIT {p.limit + 1 if p.overflow else p.limit}"
        sources = list(p.sources or [])
        xtypes = list(p.xtypes or [])
        meta = _column_metadata(conn, {s[0] for s in sources if s})
        stream = stack.enter_context(stream_statement(conn, statement, limits))
        fields = []
        for i, (name, pg_type) in enumerate(zip(stream.columns, stream.types)):
            src = sources[i] if i < len(sources) else None
            unit, ucd, desc = meta.get((src[0].lower(), src[1].lower()), (None, None, None)) if src else (None, None, None)
            attrs = dict(name=name, pg_type=pg_type, unit=unit, ucd=ucd, description=desc,
                         xtype=xtypes[i] if i < len(xtypes) else None)
            attrs.update((overrides or {}).get(name, {}))
            fields.append(Field(**attrs))
        first = next(stream.chunks, None)

        def chunks():
            if first is not None:
                yield first
                yield from stream.chunks

        body = stream_result(fmt, fields, chunks(), overflow=lambda: stream.truncated, infos=infos or {})
        return Result(fmt, body, stack, stream)
    except BaseException:
        stack.close()
        raise
