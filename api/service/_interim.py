"""INTERIM stand-ins for the sibling modules adql.py and formats.py (COMMON.md items 1
and 3), used only while they are not merged on this branch; removed once they are.
Thin on purpose: ADQL text passes through with TOP taken off, and results are written
as VOTable TABLEDATA or CSV."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from skyledger.schema.errors import QueryError


class AdqlError(QueryError):
    pass


@dataclass
class Translation:
    sql: str
    top: int | None = None
    sources: list = field(default_factory=list)
    xtypes: list = field(default_factory=list)


def translate(adql: str) -> Translation:
    text = adql.strip().rstrip(";")
    if not re.match(r"(?is)\s*select\b", text):
        raise AdqlError("an ADQL query starts with SELECT")
    top = None
    m = re.match(r"(?is)(\s*select\s+(?:distinct\s+)?)top\s+(\d+)\s+", text)
    if m:
        top = int(m.group(2))
        text = m.group(1) + text[m.end():]
    text = re.sub(r"(?i)\btap_schema\.", "tap_schema.", text)
    return Translation(text, top)


@dataclass
class Field:
    name: str
    pg_type: str
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    xtype: str | None = None


@dataclass(frozen=True)
class Format:
    name: str
    media_type: str
    extension: str


_FORMATS = {
    "votable": Format("votable", "application/x-votable+xml", "xml"),
    "csv": Format("csv", "text/csv", "csv"),
}
_ALIASES = {"application/x-votable+xml": "votable", "text/xml": "votable", "votable/td": "votable", "text/csv": "csv"}


def resolve_format(value: str | None) -> Format:
    key = (value or "votable").strip().lower()
    key = _ALIASES.get(key.split(";")[0].strip(), key)
    if key not in _FORMATS:
        raise QueryError(f"unknown RESPONSEFORMAT {value!r}; use one of {', '.join(_FORMATS)}")
    return _FORMATS[key]


_VOTYPES = {"int2": "short", "int4": "int", "int8": "long", "float4": "float", "float8": "double", "bool": "boolean"}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return escape(str(value))


def stream_result(fmt: Format, fields: Sequence[Field], chunks: Iterable[Sequence[tuple]], *, overflow, infos) -> Iterator[bytes]:
    if fmt.name == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow([f.name for f in fields])
        for chunk in chunks:
            for row in chunk:
                w.writerow(["" if v is None else v for v in row])
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
        yield buf.getvalue().encode()
        return
    head = ['<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">',
            '<RESOURCE type="results"><INFO name="QUERY_STATUS" value="OK"/>']
    head += [f"<INFO name={quoteattr(k)} value={quoteattr(str(v))}/>" for k, v in infos.items()]
    head.append("<TABLE>")
    for f in fields:
        base = f.pg_type.lstrip("_")
        attrs = f'name={quoteattr(f.name)} datatype="{_VOTYPES.get(base, "char")}"'
        if base not in _VOTYPES or f.pg_type.startswith("_"):
            attrs += ' arraysize="*"'
        for key in ("unit", "ucd", "xtype"):
            if getattr(f, key):
                attrs += f" {key}={quoteattr(getattr(f, key))}"
        head.append(f"<FIELD {attrs}><DESCRIPTION>{escape(f.description or '')}</DESCRIPTION></FIELD>")
    head.append("<DATA><TABLEDATA>")
    yield "\n".join(head).encode()
    for chunk in chunks:
        yield "".join("<TR>" + "".join(f"<TD>{_cell(v)}</TD>" for v in row) + "</TR>\n" for row in chunk).encode()
    tail = "</TABLEDATA></DATA></TABLE>"
    if overflow:
        tail += '<INFO name="QUERY_STATUS" value="OVERFLOW"/>'
    yield (tail + "</RESOURCE></VOTABLE>\n").encode()


def error_document(message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
        f'<RESOURCE type="results"><INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO></RESOURCE></VOTABLE>\n'
    ).encode()
