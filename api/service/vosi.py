"""VOSI documents of the TAP service: capabilities, availability, tables.

The table set is read from ``tap_schema`` as a catalogue reader, so /tap/tables lists
what a query may name, with the same units, UCDs and descriptions as the results.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

import psycopg
from skyledger.schema.errors import QueryError, SkyledgerError
from skyledger.schema.readpath import Limits, connect_reader
from skyledger.schema.settings import Settings

from .query import resolve_format

__all__ = ["availability_xml", "capabilities_xml", "read_tap_schema", "table_xml", "tableset_xml"]

XSI = "http://www.w3.org/2001/XMLSchema-instance"

#: Output formats the service may offer: (RESPONSEFORMAT value, IVOA identifier, alias).
#: Only those formats.resolve_format accepts are announced.
_OUTPUTS = [
    ("application/x-votable+xml;serialization=BINARY2", "ivo://ivoa.net/std/TAPRegExt#output-votable-binary2", "votable"),
    ("application/x-votable+xml;serialization=TABLEDATA", "ivo://ivoa.net/std/TAPRegExt#output-votable-td", "votable/td"),
    ("text/csv", "ivo://ivoa.net/std/TAPRegExt#output-csv", "csv"),
    ("text/tab-separated-values", "ivo://ivoa.net/std/TAPRegExt#output-tsv", "tsv"),
    ("application/json", None, "json"),
    ("application/fits", "ivo://ivoa.net/std/TAPRegExt#output-fits", "fits"),
]

#: ADQL geometry functions (TAPRegExt features-adqlgeo).
_GEOMETRY = ("POINT", "CIRCLE", "BOX", "POLYGON", "CONTAINS", "INTERSECTS", "DISTANCE", "COORD1", "COORD2", "AREA")


def offered_outputs() -> list[tuple[str, str | None, str]]:
    out = []
    for mime, ivo_id, alias in _OUTPUTS:
        try:
            resolve_format(alias)
        except QueryError:
            continue
        out.append((mime, ivo_id, alias))
    return out


def capabilities_xml(settings: Settings, base: str) -> str:
    """``base``: the service root URL (…/tap is the TAP endpoint)."""
    s = settings
    outputs = "".join(
        f"<outputFormat{' ivo-id=' + quoteattr(ivo) if ivo else ''}><mime>{escape(mime)}</mime><alias>{alias}</alias></outputFormat>"
        for mime, ivo, alias in offered_outputs()
    )
    geo = "".join(f"<feature><form>{name}</form></feature>" for name in _GEOMETRY)

    def vosi(std: str, path: str) -> str:
        return (f'<capability standardID="ivo://ivoa.net/std/VOSI#{std}"><interface xsi:type="vs:ParamHTTP">'
                f'<accessURL use="full">{escape(base)}/tap/{path}</accessURL></interface></capability>')

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
        f'xmlns:xsi="{XSI}" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
        'xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">'
        '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
        f'<interface xsi:type="vs:ParamHTTP" role="std" version="1.1"><accessURL use="base">{escape(base)}/tap</accessURL></interface>'
        '<language><name>ADQL</name>'
        '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>'
        '<version ivo-id="ivo://ivoa.net/std/ADQL#v2.1">2.1</version>'
        "<description>ADQL translated to PostgreSQL; geometry on the index-backed cone search</description>"
        f'<languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adqlgeo">{geo}</languageFeatures>'
        "</language>"
        f"{outputs}"
        f"<retentionPeriod><default>{int(s.tap_job_lifetime_s)}</default><hard>{int(s.tap_job_lifetime_s)}</hard></retentionPeriod>"
        f"<executionDuration><default>{int(s.tap_async_duration_s)}</default><hard>{int(s.tap_async_duration_s)}</hard></executionDuration>"
        f'<outputLimit><default unit="row">{s.tap_default_maxrec}</default><hard unit="row">{s.tap_async_max_rows}</hard></outputLimit>'
        "</capability>"
        f"{vosi('capabilities', 'capabilities')}{vosi('availability', 'availability')}{vosi('tables', 'tables')}"
        "</vosi:capabilities>\n"
    )


def availability_xml(settings: Settings) -> str:
    try:
        with connect_reader(settings, Limits(statement_timeout_s=5.0)) as conn:
            conn.execute("SELECT 1").fetchone()
        available, note = True, "the service is accepting queries"
    except (SkyledgerError, psycopg.Error) as err:
        available, note = False, f"the database cannot be queried: {err}"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
        f"<vosi:available>{str(available).lower()}</vosi:available><vosi:note>{escape(note)}</vosi:note>"
        "</vosi:availability>\n"
    )


def read_tap_schema(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """tap_schema.schemas, .tables and .columns as rows (dicts), read as the reader."""
    queries = {
        "schemas": "SELECT schema_name, description FROM tap_schema.schemas ORDER BY schema_name",
        "tables": "SELECT schema_name, table_name, table_type, description FROM tap_schema.tables "
                  "ORDER BY table_index, table_name",
        "columns": "SELECT table_name, column_name, datatype, arraysize, xtype, description, unit, ucd, principal, "
                   "indexed, std FROM tap_schema.columns ORDER BY table_name, column_index",
    }  # fmt: skip
    try:
        with connect_reader(settings, Limits(statement_timeout_s=30.0)) as conn:
            out = {}
            for key, q in queries.items():
                cur = conn.execute(q)
                names = [c.name for c in cur.description]
                out[key] = [dict(zip(names, row)) for row in cur]
            return out
    except psycopg.Error as err:
        raise QueryError(f"TAP_SCHEMA cannot be read ({err}); run `skyledger db upgrade`") from err


def _column(c: dict[str, Any]) -> str:
    arraysize = f" arraysize={quoteattr(str(c['arraysize']))}" if c.get("arraysize") else ""
    xtype = f" extendedType={quoteattr(c['xtype'])}" if c.get("xtype") else ""
    flags = "".join(f"<flag>{n}</flag>" for n, k in (("indexed", "indexed"), ("primary", "principal"), ("std", "std"))
                    if c.get(k))
    return (
        f"<column><name>{escape(c['column_name'])}</name><description>{escape(c.get('description') or '')}</description>"
        + (f"<unit>{escape(c['unit'])}</unit>" if c.get("unit") else "")
        + (f"<ucd>{escape(c['ucd'])}</ucd>" if c.get("ucd") else "")
        + f'<dataType xsi:type="vs:VOTableType"{arraysize}{xtype}>{escape(c["datatype"])}</dataType>{flags}</column>'
    )


def _table(t: dict[str, Any], columns: list[dict[str, Any]], tag: str = "table") -> str:
    cols = "".join(_column(c) for c in columns if c["table_name"] == t["table_name"])
    return (f"<{tag} type={quoteattr(t.get('table_type') or 'table')}><name>{escape(t['table_name'])}</name>"
            f"<description>{escape(t.get('description') or '')}</description>{cols}</{tag.split(' ')[0]}>")


_NS = f'xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" xmlns:xsi="{XSI}"'


def tableset_xml(rows: dict[str, list[dict[str, Any]]]) -> str:
    parts = []
    for s in rows["schemas"]:
        tables = "".join(_table(t, rows["columns"]) for t in rows["tables"] if t["schema_name"] == s["schema_name"])
        parts.append(f"<schema><name>{escape(s['schema_name'])}</name>"
                     f"<description>{escape(s.get('description') or '')}</description>{tables}</schema>")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<vosi:tableset {_NS}>{"".join(parts)}</vosi:tableset>\n'


def table_xml(rows: dict[str, list[dict[str, Any]]], name: str) -> str | None:
    """One table (VOSI 1.1 tables/{name}); None when there is none of that name."""
    for t in rows["tables"]:
        if t["table_name"].lower() == name.lower():
            body = _table(t, rows["columns"], tag="vosi:table")
            head = body.split(">", 1)
            return f'<?xml version="1.0" encoding="UTF-8"?>\n{head[0]} {_NS}>{head[1]}\n'
    return None
