"""Result columns of the query service and how their values turn into arrays.

A :class:`Field` describes one output column the way TAP_SCHEMA does (PostgreSQL type,
unit, UCD, description, DALI xtype); :func:`encoding` says how every writer
(VOTable, FITS, CSV, JSON) represents it, so that the formats agree on types. The value
converters work on one chunk's column at a time (numpy where it pays), which keeps the
writers' memory bounded by the chunk size, never by the result size.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import Any

import numpy as np

__all__ = ["Field", "Encoding", "encoding", "numbers", "booleans", "texts", "arrays", "fixed_arrays",
           "iso_timestamp", "INT_ARRAY_NULL"]


@dataclass(frozen=True)
class Field:
    """One output column: its name, PostgreSQL type (``"int8"``, ``"float4"``, ``"text"``,
    ``"_float8"`` for an array, ``"timestamptz"``, ``"bool"``), unit, UCD, description
    and DALI xtype (``"point"``, ``"circle"``, ``"polygon"`` for ADQL geometries)."""

    name: str
    pg_type: str
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    xtype: str | None = None


@dataclass(frozen=True)
class Encoding:
    """How a field is written. ``kind`` is one of ``number``, ``bool``, ``text``,
    ``timestamp``, ``array`` (variable length) and ``fixed_array`` (a DALI point or
    circle: ``length`` doubles); ``dtype`` is the big-endian element type of numbers and
    arrays; ``datatype``/``arraysize``/``xtype`` are the VOTable FIELD attributes."""

    kind: str
    datatype: str
    arraysize: str | None = None
    dtype: np.dtype | None = None
    xtype: str | None = None
    length: int | None = None

    @property
    def is_int(self) -> bool:
        return self.dtype is not None and self.dtype.kind == "i"


_NUMBERS = {
    "int2": ("short", ">i2"), "int4": ("int", ">i4"), "int8": ("long", ">i8"), "oid": ("long", ">i8"),
    "float4": ("float", ">f4"), "float8": ("double", ">f8"), "numeric": ("double", ">f8"),
}  # fmt: skip
_TEXTS = {"text", "varchar", "bpchar", "char", "name", "uuid", "json", "jsonb", "citext"}
_TIMESTAMPS = {"timestamptz", "timestamp", "date"}
#: DALI geometry xtypes and their number of doubles (None: variable, a polygon).
_GEOMETRY = {"point": 2, "circle": 3, "polygon": None}
#: The null value declared (VOTable VALUES null, FITS TNULL) for integer array elements,
#: which have no null bitmap: PostgreSQL arrays may hold NULL elements.
INT_ARRAY_NULL = {"short": -(2**15), "int": -(2**31), "long": -(2**63)}


def encoding(field: Field) -> Encoding:
    """How ``field`` is written; types without a numeric or array meaning are text."""
    pg_type = field.pg_type.lower()
    xtype = (field.xtype or "").lower() or None
    if xtype in _GEOMETRY:
        length = _GEOMETRY[xtype]
        arraysize = "*" if length is None else str(length)
        kind = "array" if length is None else "fixed_array"
        return Encoding(kind, "double", arraysize, np.dtype(">f8"), xtype, length)
    if pg_type in _NUMBERS:
        datatype, dtype = _NUMBERS[pg_type]
        return Encoding("number", datatype, None, np.dtype(dtype), field.xtype)
    if pg_type.startswith("_") and pg_type[1:] in _NUMBERS:
        datatype, dtype = _NUMBERS[pg_type[1:]]
        return Encoding("array", datatype, "*", np.dtype(dtype), field.xtype)
    if pg_type == "bool":
        return Encoding("bool", "boolean", None, None, field.xtype)
    if pg_type in _TIMESTAMPS:
        # DALI timestamp: ISO 8601, UTC, no zone suffix; ASCII, so plain char.
        return Encoding("timestamp", "char", "*", None, "timestamp")
    # Text may hold any Unicode: unicodeChar (UTF-16) is what astropy/pyvo read back
    # from BINARY2 (their char is ASCII only).
    return Encoding("text", "unicodeChar", "*", None, field.xtype)


def numbers(values: Sequence[Any], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (None for NULL) as an array of ``dtype`` and the NULL mask; NULL
    floats are NaN, NULL integers 0 (the mask or bitmap says they are NULL)."""
    n = len(values)
    mask = np.fromiter((v is None for v in values), bool, n)
    if mask.any():
        values = [0 if v is None else v for v in values]
    out = np.array(values, dtype=dtype.newbyteorder("="))
    if dtype.kind == "f" and mask.any():
        out[mask] = np.nan
    return out.astype(dtype, copy=False), mask


def booleans(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as a bool array and the NULL mask."""
    n = len(values)
    mask = np.fromiter((v is None for v in values), bool, n)
    return np.fromiter((bool(v) for v in values), bool, n), mask


def iso_timestamp(value: Any) -> str:
    """A DALI timestamp: ISO 8601 in UTC without a zone suffix."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def texts(values: Sequence[Any], enc: Encoding) -> list[str | None]:
    """``values`` as strings (None stays None): timestamps in ISO 8601."""
    convert = iso_timestamp if enc.kind == "timestamp" else _text
    return [None if v is None else convert(v) for v in values]


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)", re.IGNORECASE)


def _elements(value: Any) -> Any:
    # A geometry may arrive as PostgreSQL's text form, e.g. "(10,20)" or "<(10,20),1>".
    if isinstance(value, str):
        return [float(x) for x in _NUMBER.findall(value)]
    return value


def arrays(values: Sequence[Any], enc: Encoding) -> list[np.ndarray | None]:
    """Each value as a 1-d array of ``enc.dtype`` (None stays None). NULL elements are
    NaN in float arrays and the declared null (:data:`INT_ARRAY_NULL`) in integer ones."""
    native = enc.dtype.newbyteorder("=")
    out: list[np.ndarray | None] = []
    for value in values:
        if value is None:
            out.append(None)
            continue
        value = _elements(value)
        try:
            arr = np.asarray(value, dtype=native)
        except TypeError:
            null = INT_ARRAY_NULL[enc.datatype] if native.kind == "i" else math.nan
            arr = np.asarray([null if x is None else x for x in value], dtype=native)
        out.append(arr.reshape(-1))
    return out


def fixed_arrays(values: Sequence[Any], enc: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """Values of a fixed-length geometry (point, circle) as an (n, length) float array
    (NaN where NULL, or where a value is shorter) and the NULL mask."""
    n, length = len(values), enc.length
    out = np.full((n, length), np.nan)
    mask = np.zeros(n, bool)
    for i, value in enumerate(values):
        if value is None:
            mask[i] = True
            continue
        arr = np.asarray(_elements(value), dtype=float).reshape(-1)[:length]
        out[i, : len(arr)] = arr
    return out, mask
