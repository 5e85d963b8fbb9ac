"""IVOA Simple Cone Search 1.03 on catalog.spectra.

``/scs?RA=&DEC=&SR=`` (ICRS degrees) runs the index-backed ``catalog.cone_search_spectra``
on the read path, nearest first, and answers a VOTable whose fields carry the UCDs the
standard requires (ID_MAIN, POS_EQ_RA_MAIN, POS_EQ_DEC_MAIN). Errors are SCS error
documents (a VOTable with INFO name="Error"), with HTTP 200 as the standard asks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

from skyledger.schema.errors import QueryError
from skyledger.schema.settings import Settings

# TABLEDATA: SCS 1.03 clients predate BINARY2.
from .query import Result, lower_keys, open_statement, resolve_format

__all__ = ["cone_query", "scs_error", "MAX_SR_DEG"]

#: Largest search radius, degrees: beyond, one cone is a table scan better asked through TAP.
MAX_SR_DEG = 10.0

#: Columns per VERB (1 least, 3 every column of catalog.spectra).
_VERB = {
    1: ["spectrum_id", "ra", "dec"],
    2: ["spectrum_id", "ra", "dec", "survey", "object_id", "z", "n_pix", "wave_min", "wave_max"],
    3: ["spectrum_id", "survey", "object_id", "ra", "dec", "z", "file", "file_version", "n_pix", "source_id",
        "source_object_id", "parent_source_id", "flux_unit", "flags", "wave_min", "wave_max", "resolution_median"],
}

_REQUIRED = {
    "spectrum_id": {"ucd": "ID_MAIN"},
    "ra": {"ucd": "POS_EQ_RA_MAIN", "unit": "deg"},
    "dec": {"ucd": "POS_EQ_DEC_MAIN", "unit": "deg"},
    "distance_deg": {"ucd": "pos.angDistance", "unit": "deg", "description": "Distance from the cone's centre"},
}


def _number(p: dict[str, str], name: str, low: float, high: float) -> float:
    if name.lower() not in p:
        raise QueryError(f"{name} is missing: send RA and DEC (ICRS degrees) and SR (search radius, degrees)")
    try:
        value = float(p[name.lower()])
    except ValueError:
        raise QueryError(f"{name}={p[name.lower()]!r} is not a number of degrees") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise QueryError(f"{name}={value:g} is outside [{low:g}, {high:g}] degrees")
    return value


def cone_query(settings: Settings, params: Mapping[str, str]) -> Result:
    p = lower_keys(params)
    ra = _number(p, "RA", 0.0, 360.0)
    dec = _number(p, "DEC", -90.0, 90.0)
    sr = _number(p, "SR", 0.0, MAX_SR_DEG)
    try:
        verb = int(p.get("verb", "2"))
    except ValueError:
        raise QueryError(f"VERB={p['verb']!r} is not 1, 2 or 3") from None
    columns = _VERB[min(3, max(1, verb))]
    # The numbers are Python floats (checked above), so their repr is a SQL literal.
    sql = (
        "SELECT " + ", ".join(f"s.{c}" for c in columns) + ", c.distance_arcsec / 3600.0 AS distance_deg "
        f"FROM catalog.cone_search_spectra({ra!r}, {dec!r}, {sr * 3600.0!r}) AS c "
        "JOIN catalog.spectra AS s USING (spectrum_id) ORDER BY c.distance_arcsec"
    )
    sources = [("catalog.spectra", c) for c in columns] + [None]
    return open_statement(
        settings, sql, fmt=resolve_format("votable/td"), limit=settings.tap_sync_max_rows,
        timeout_s=settings.tap_sync_timeout_s, sources=sources, overrides=_REQUIRED,
        infos={"RA": repr(ra), "DEC": repr(dec), "SR": repr(sr)},
    )


def scs_error(message: str) -> bytes:
    """SCS 1.03 error document (also TAP-style QUERY_STATUS for newer clients)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE type="results">'
        f'<INFO ID="Error" name="Error" value={quoteattr(message)}/>'
        f'<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO></RESOURCE></VOTABLE>\n'
    ).encode()
