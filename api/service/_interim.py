"""INTERIM stand-in for the sibling module adql.py (COMMON.md item 1), used only while it
is not merged on this branch; removed once it is. Thin on purpose: ADQL text passes
through with TOP taken off."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
