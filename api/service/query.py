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

from .adql import AdqlError, translate
from .formats import Field, Format, resolve_format, stream_result

__all__ = ["Result", "TapRequest", "open_result", "parse_tap_params"]

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


def parse_tap_params(params: Mapping[str, str], *, default_maxrec: int, max_rows: int) -> TapRequest:
    """The query a TAP request asks for; :class:`QueryError` saying what to fix otherwise."""
    p = lower_keys(params)
    # TAP 1.1 no longer requires REQUEST; when sent, it must be doQuery.
    request = p.get("request", "doQuery")
    if request.lower() != "doquery":
        raise QueryError(f"REQUEST={request[:40]!r} is not supported; use REQUEST=doQuery")
    lang = p.get("lang", "ADQL")
    if lang.lower() not in LANGS:
        raise QueryError(f"LANG={lang[:40]!r} is not supported; use LANG=ADQL (ADQL-2.0 and ADQL-2.1 are accepted too)")
    query = p.get("query", "").strip()
    if not query:
        raise QueryError("QUERY is missing or empty: send an ADQL query such as SELECT TOP 10 * FROM catalog.spectra")
    maxrec = default_maxrec
    if "maxrec" in p:
        try:
            maxrec = int(p["maxrec"])
        except ValueError:
            raise QueryError(f"MAXREC={p['maxrec'][:40]!r} is not a whole number") from None
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
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()  # a writer's own clean-up (FITS's spool file) when it was not read to its end
        finally:
            self._stack.close()

    def __enter__(self) -> Result:  # noqa: PYI034 - final class
        return self

    def __exit__(self, *exc: object) -> None:
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


def _tap_tables(conn: psycopg.Connection) -> set[str]:
    """Qualified names (lower case) of the tables TAP_SCHEMA lists."""
    with conn.transaction():
        return {row[0] for row in conn.execute("SELECT lower(table_name) FROM tap_schema.tables")}


def check_tables(sql: str, known: set[str]) -> None:
    """Refuse a statement that reads a table TAP_SCHEMA does not list.

    A reader may read some of PostgreSQL's own catalogs (pg_settings, pg_roles; not
    pg_stat_activity, which migration 0024 takes away) and alembic_version; TAP offers
    the tables it lists, so the service refuses the rest before the database sees them. The table functions the translator
    writes (catalog.cone_search...) live in schema catalog.
    """
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="postgres")
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        schema = (table.db or "").lower()
        if not isinstance(table.this, exp.Identifier):
            if schema == "catalog":
                continue  # a table function of the translator's
            raise AdqlError("table functions are not part of ADQL; /tap/tables lists the tables to query")
        name = table.name.lower()
        if not schema and name in ctes:
            continue
        full = f"{schema}.{name}" if schema else name
        if full not in known:
            raise AdqlError(f"there is no table {full} to query here; /tap/tables (TAP_SCHEMA.tables) lists them")


def open_result(
    settings: Settings, req: TapRequest, *, timeout_s: float, cancel_hook=None, datalink_url: str | None = None
) -> Result:
    """Translate, connect as the reader, start the statement and read its first chunk, so
    that every error the statement raises up front comes out of here (and is answered
    with its status) rather than half-way through a response."""

    def plan(conn: psycopg.Connection) -> _Plan:
        try:
            tr = translate(req.query, columns_of=_columns_of(conn))
            check_tables(tr.sql, _tap_tables(conn))
        except RecursionError:
            raise AdqlError(
                "the query nests too deeply to be translated: write it with fewer nested parentheses or "
                "subqueries (a long chain of AND/OR is fine inside IN (...))"
            ) from None
        # TOP within MAXREC is the query's own answer: cut there, and no OVERFLOW.
        by_top = tr.top is not None and tr.top <= req.maxrec
        return _Plan(tr.sql, tr.top if by_top else req.maxrec, not by_top, tr.sources, tr.xtypes)

    return _open(settings, plan, fmt=req.format, timeout_s=timeout_s,
                 infos={"QUERY": req.query, "MAXREC": str(req.maxrec)}, cancel_hook=cancel_hook,
                 datalink_url=datalink_url)


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
    datalink_url: str | None = None,
) -> Result:
    """Run ``sql`` (a SELECT without LIMIT, written by the service) on the read path like
    a TAP query; ``overrides``: field attributes by column name (the cone search's UCDs)."""
    return _open(settings, lambda conn: _Plan(sql, limit, True, sources), fmt=fmt, timeout_s=timeout_s,
                 infos=infos, overrides=overrides, datalink_url=datalink_url)


def _open(settings, plan, *, fmt: Format, timeout_s: float, infos=None, overrides=None, cancel_hook=None,
          datalink_url: str | None = None) -> Result:
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
            attrs = {"name": name, "pg_type": pg_type, "unit": unit, "ucd": ucd, "description": desc,
                     "xtype": xtypes[i] if i < len(xtypes) else None}
            attrs.update((overrides or {}).get(name, {}))
            fields.append(Field(**attrs))
        first = next(stream.chunks, None)

        def chunks():
            if first is not None:
                yield first
                yield from stream.chunks

        body = stream_result(fmt, fields, chunks(), overflow=lambda: stream.truncated, infos=infos or {})
        if fmt.name == "fits":
            body = _Primed(body)
        if datalink_url and getattr(fmt, "serialization", None) and "spectrum_id" in stream.columns:
            body = with_datalink(body, "spectrum_id", datalink_url)
        return Result(fmt, body, stack, stream)
    except BaseException:
        stack.close()
        raise


class _Primed:
    """``body`` with its first chunk made now. The FITS writer reads every row (to a
    spool) before its first byte, so a statement failing on a late row fails here, in
    open_result, and is answered with an error document instead of a broken response."""

    def __init__(self, body: Iterator[bytes]) -> None:
        self._body = body
        self._first: bytes | None = next(body, None)

    def __iter__(self) -> _Primed:
        return self

    def __next__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._body)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _xml_attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def with_datalink(body: Iterator[bytes], column: str, url: str) -> Iterator[bytes]:
    """A VOTable result with a DataLink service descriptor (DataLink 1.1, section 4) on
    ``column``: TOPCAT's activation action and pyvo's ``iter_datalinks`` then reach each
    row's spectrum through ``url`` (the /datalink endpoint) without configuration."""
    marker = f'<FIELD name="{_xml_attr(column)}"'.encode()
    descriptor = (
        '<RESOURCE type="meta" utype="adhoc:service" name="spectrum_datalink">\n'
        '<PARAM name="standardID" datatype="char" arraysize="*" value="ivo://ivoa.net/std/DataLink#links-1.1"/>\n'
        f'<PARAM name="accessURL" datatype="char" arraysize="*" value="{_xml_attr(url)}"/>\n'
        f'<GROUP name="inputParams"><PARAM name="ID" datatype="char" arraysize="*" value="" ref="{_xml_attr(column)}"/></GROUP>\n'
        "</RESOURCE>\n"
    ).encode()
    first, last = True, None
    for chunk in body:
        if first:
            # The FIELD gets an ID equal to its name (astropy names a column by its ID).
            chunk = chunk.replace(marker, f'<FIELD ID="{_xml_attr(column)}" '.encode() + marker[len(b"<FIELD "):], 1)
            first = False
        if last is not None:
            yield last
        last = chunk
    if last is not None:
        end = last.rfind(b"</VOTABLE>")
        yield last[:end] + descriptor + last[end:] if end >= 0 else last
