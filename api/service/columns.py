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
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import repeat
from typing import Any

import numpy as np

__all__ = [
    "INT_ARRAY_NULL",
    "Encoding",
    "Field",
    "arrays",
    "booleans",
    "columns_of",
    "encoding",
    "fixed_arrays",
    "iso_timestamp",
    "null_mask",
    "numbers",
    "pg_type_name",
    "row_chunks",
    "text_bytes",
    "texts",
]


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
_TEXTS = {
    "text",
    "varchar",
    "bpchar",
    "char",
    "name",
    "uuid",
    "json",
    "jsonb",
    "citext",
}
_TIMESTAMPS = {"timestamptz", "timestamp", "date"}
#: DALI geometry xtypes and their number of doubles (None: variable, a polygon).
_GEOMETRY = {"point": 2, "circle": 3, "polygon": None}
#: The null value declared (VOTable VALUES null, FITS TNULL) for integer array elements,
#: which have no null bitmap: PostgreSQL arrays may hold NULL elements.
INT_ARRAY_NULL = {"short": -(2**15), "int": -(2**31), "long": -(2**63)}


#: SQL-standard and ADQL spellings of the types above, as PostgreSQL's short names.
_ALIASES = {
    "smallint": "int2", "integer": "int4", "int": "int4", "bigint": "int8", "real": "float4",
    "double precision": "float8", "double": "float8", "float": "float8", "decimal": "numeric",
    "boolean": "bool", "character varying": "varchar", "character": "bpchar",
    "timestamp with time zone": "timestamptz", "timestamp without time zone": "timestamp",
}  # fmt: skip


def pg_type_name(pg_type: str) -> str:
    """``pg_type`` as PostgreSQL's short name, arrays with a leading underscore:
    ``"double precision[]"`` -> ``"_float8"``, ``"BIGINT"`` -> ``"int8"``."""
    name = " ".join(pg_type.lower().split())
    array = name.endswith("[]")
    name = name.removesuffix("[]").strip()
    if name.startswith("_"):
        array, name = True, name[1:]
    name = _ALIASES.get(name, name)
    return "_" + name if array else name


def encoding(field: Field) -> Encoding:
    """How ``field`` is written; types without a numeric or array meaning are text."""
    pg_type = pg_type_name(field.pg_type)
    xtype = (field.xtype or "").lower() or None
    if xtype is None and pg_type in _GEOMETRY:  # PostgreSQL's own point, circle, polygon
        xtype = pg_type
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


def row_chunks(
    chunks: Iterable[Iterable[Sequence[Any]]],
) -> Iterator[Sequence[Sequence[Any]]]:
    """The non-empty chunks, each as a list or tuple of rows."""
    for chunk in chunks:
        rows = chunk if isinstance(chunk, (list, tuple)) else list(chunk)
        if rows:
            yield rows


def columns_of(rows: Sequence[Sequence[Any]], n_fields: int) -> list[tuple]:
    """The chunk's values column by column; a row without one value per field is an error
    (rather than a silently shifted table)."""
    try:
        columns = list(zip(*rows, strict=True))
    except ValueError:
        columns = None
    if columns is None or len(columns) != n_fields:
        lengths = sorted({len(row) for row in rows})
        raise ValueError(f"rows have {lengths} values for {n_fields} fields")
    return columns


def null_mask(values: Sequence[Any]) -> np.ndarray:
    """True where a value is None (NULL)."""
    if isinstance(values, (tuple, list)) and not values.count(None):  # C speed, the common case
        return np.zeros(len(values), bool)
    return np.fromiter(map(operator.is_, values, repeat(None)), bool, len(values))


def numbers(values: Sequence[Any], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (None for NULL) as an array of ``dtype`` and the NULL mask; NULL
    floats are NaN, NULL integers 0 (the mask or bitmap says they are NULL)."""
    mask = null_mask(values)
    if not mask.any():
        return np.array(values, dtype=dtype), mask
    out = np.array([0 if v is None else v for v in values], dtype=dtype)
    if dtype.kind == "f":
        out[mask] = np.nan
    return out, mask


def booleans(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as a bool array (False where NULL) and the NULL mask."""
    mask = null_mask(values)
    return np.array([bool(v) for v in values] if mask.any() else values, dtype=bool), mask


def iso_timestamp(value: Any) -> str:
    """A DALI timestamp: ISO 8601 in UTC without a zone suffix."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _timestamps(values: Sequence[Any]) -> list[str]:
    """Datetimes (all aware or all naive, no None) as DALI timestamps, by numpy; like
    ``isoformat``, whole seconds are written without a fraction."""
    epoch = _EPOCH if values[0].tzinfo is not None else _NAIVE_EPOCH
    micro = np.array([(v - epoch) // _MICROSECOND for v in values], dtype=np.int64)
    stamps = micro.astype("datetime64[us]")
    out = np.datetime_as_string(stamps, unit="us")
    whole = micro % 1_000_000 == 0
    if whole.any():
        out[whole] = np.datetime_as_string(stamps[whole], unit="s")
    return out.tolist()


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
    if enc.kind == "timestamp":
        present = [v for v in values if v is not None]
        if present and type(present[0]) is datetime:
            try:
                converted = iter(_timestamps(present))
            except TypeError:  # aware and naive mixed: one at a time
                pass
            else:
                return [None if v is None else next(converted) for v in values]
        return [None if v is None else iso_timestamp(v) for v in values]
    return [None if v is None else _text(v) for v in values]


def text_bytes(values: Sequence[Any], enc: Encoding, codec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values of a text or timestamp column encoded with ``codec`` one after the
    other (NULL as nothing), each value's length in bytes, and the NULL mask."""
    mask = null_mask(values)
    strings = values
    try:
        # Plain strings without NULLs (most text columns) are encoded in one call.
        if enc.kind != "text" or mask.any():
            raise TypeError
        joined = "".join(values)
    except TypeError:
        strings = ["" if s is None else s for s in texts(values, enc)]
        joined = "".join(strings)
    flat = joined.encode(codec, "replace")
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    unit = 2 if codec == "utf-16-be" else 1
    if len(flat) != unit * lengths.sum():  # some characters take more than one code unit
        lengths = np.fromiter((len(s.encode(codec, "replace")) for s in strings), np.int64, len(strings))
    else:
        lengths *= unit
    return np.frombuffer(flat, np.uint8), lengths, mask


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
