"""What every file of one release table says about itself: provenance, flag bits, column facts.

One :class:`TableContent` is built per frozen table and handed to every writer, so the
FITS header, the ECSV/Parquet YAML and ``datamodel.md`` carry the same words.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import astropy.units as u
import yaml

from .tables import ReleaseColumn, ReleaseTable

__all__ = ["FORMAT_VERSION", "RunRef", "FlagBit", "ReleaseInfo", "TableContent", "astropy_unit", "fits_unit", "header_yaml", "ECSV_TYPES"]

#: Version of the release layout, in manifest.json and in every table file's metadata.
#: 1 (no ``format_version`` anywhere): releases made before migration 0012. 2: table
#: digests recorded; one unit per column (line fluxes converted, no per-row unit in
#: ``lines``); FITS ``TUNITn`` only where FITS and astropy accept it (docs/releases.md).
FORMAT_VERSION = 2

ECSV_TYPES = {
    "int2": "int16",
    "int4": "int32",
    "int8": "int64",
    "float4": "float32",
    "float8": "float64",
    "text": "string",
    "bool": "bool",
}


@dataclass(frozen=True)
class RunRef:
    id: int
    task: str
    version: int
    params_hash: str
    code_version: str


@dataclass(frozen=True)
class FlagBit:
    bit: int
    name: str
    description: str


@dataclass(frozen=True)
class ReleaseInfo:
    name: str
    collection: str
    created_at: dt.datetime
    code_version: str
    schema_version: str
    notes: str | None = None

    @property
    def created_iso(self) -> str:
        return self.created_at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@dataclass
class TableContent:
    """A frozen table and the facts its writers need before the first row."""

    table: ReleaseTable
    n_rows: int
    runs: tuple[RunRef, ...] = ()
    flags: tuple[FlagBit, ...] = ()
    #: Longest value (bytes) of every text column; fixed-width formats size their fields with it.
    max_bytes: dict[str, int] = field(default_factory=dict)
    #: Integer columns that hold NULLs (FITS gives them a TNULL).
    null_ints: frozenset[str] = frozenset()

    @property
    def columns(self) -> tuple[ReleaseColumn, ...]:
        return self.table.columns


def astropy_unit(unit: str | None) -> str | None:
    """The unit in astropy's generic spelling (what ECSV and Parquet carry)."""
    return None if unit is None else u.Unit(unit).to_string()


def fits_unit(unit: str | None) -> str | None:
    """The unit as FITS (Standard 4.0, sect. 4.3) spells it, or None where FITS has no spelling.

    ``dex`` (and ``dex / kpc``, ...) is no FITS unit, and astropy warns about a ``TUNITn``
    it cannot parse, so such a column gets no ``TUNITn``; its ``TCOMMn`` ends with the unit
    in brackets and the ECSV and Parquet files carry it exactly. docs/releases.md says so.
    """
    if unit is None:
        return None
    try:
        return u.Unit(unit).to_string("fits")
    except ValueError:
        return None


def table_meta(info: ReleaseInfo, content: TableContent) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "release": info.name,
        "table": content.table.name,
        "description": content.table.description,
        "collection": info.collection,
        "created": info.created_iso,
        "code_version": info.code_version,
        "schema_version": info.schema_version,
    }
    if info.notes:
        meta["notes"] = info.notes
    meta["runs"] = [{"id": r.id, "task": r.task, "version": r.version, "params_hash": r.params_hash}
                    for r in content.runs]
    if content.flags:
        meta["flag_bits"] = [{"bit": f.bit, "name": f.name, "description": f.description} for f in content.flags]
    return meta


def _datatype(column: ReleaseColumn) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": column.name, "datatype": ECSV_TYPES[column.pg_type]}
    unit = astropy_unit(column.unit)
    if unit is not None:
        entry["unit"] = unit
    entry["description"] = column.description
    if column.ucd:
        entry["meta"] = {"ucd": column.ucd}
    return entry


def header_yaml(info: ReleaseInfo, content: TableContent, *, delimiter: str | None = ",") -> list[str]:
    """The ECSV header (astropy-2.0 schema) as lines, without the ``# `` prefix.

    ECSV writes it after ``%ECSV 1.0`` / ``---``; Parquet stores it as ``table_meta_yaml``,
    where astropy's reader looks for it.
    """
    header: dict[str, Any] = {}
    if delimiter is not None:
        header["delimiter"] = delimiter
    header["datatype"] = [_datatype(c) for c in content.columns]
    header["meta"] = table_meta(info, content)
    header["schema"] = "astropy-2.0"
    text = yaml.safe_dump(header, sort_keys=False, allow_unicode=False, width=100, default_flow_style=False)
    return text.rstrip("\n").split("\n")
