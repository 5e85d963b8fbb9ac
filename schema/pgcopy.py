"""PostgreSQL's binary format: rows (numpy arrays included) in for COPY, arrays out.

psycopg's per-value adaptation of long Python lists is the bottleneck of bulk loads
(arrays of thousands of floats per row). Here an array is encoded by numpy in one
vectorised step, scalars with :mod:`struct`, and whole rows are written to
``COPY ... FROM STDIN (FORMAT BINARY)`` as bytes. The ingest loader and the compute
result writer both use it. The other direction has the same cost: a ``real[]`` column
read as text is parsed into a Python float per pixel; :func:`numpy_arrays` makes a
cursor read numeric arrays in binary, straight into numpy (:func:`decode_array`).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.abc import AdaptContext
from psycopg.adapt import Loader
from psycopg.pq import Format

__all__ = ["Encoder", "ENCODERS", "CopyWriter", "copy_rows", "to_json", "decode_array", "numpy_arrays"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)

Encoder = Callable[[Any], bytes]


def _scalar(fmt: str) -> Encoder:
    packer = struct.Struct(">i" + fmt)
    size = packer.size - 4
    return lambda v: packer.pack(size, v)


def _text(value: Any) -> bytes:
    data = str(value).encode()
    return struct.pack(">i", len(data)) + data


def _jsonb(value: Any) -> bytes:
    data = b"\x01" + to_json(value).encode()  # jsonb binary format: version 1, then text
    return struct.pack(">i", len(data)) + data


def _array(elem_oid: int, np_dtype: str) -> Encoder:
    size = np.dtype(np_dtype).itemsize
    record = np.dtype([("len", ">i4"), ("val", np_dtype)])

    def encode(value: Any) -> bytes:
        arr = np.asarray(value).ravel()
        n = arr.size
        if n == 0:
            body = struct.pack(">iii", 0, 0, elem_oid)
        else:
            cells = np.empty(n, dtype=record)
            cells["len"] = size
            cells["val"] = arr
            body = struct.pack(">iiiii", 1, 0, elem_oid, n, 1) + cells.tobytes()
        return struct.pack(">i", len(body)) + body

    return encode


#: One encoder per PostgreSQL type name, producing the field's length and bytes.
ENCODERS: dict[str, Encoder] = {
    "int2": _scalar("h"),
    "int4": _scalar("i"),
    "int8": _scalar("q"),
    "float4": _scalar("f"),
    "float8": _scalar("d"),
    "bool": lambda v: struct.pack(">i?", 1, bool(v)),
    "text": _text,
    "jsonb": _jsonb,
    "float4[]": _array(700, ">f4"),
    "float8[]": _array(701, ">f8"),
    "int4[]": _array(23, ">i4"),
    "int8[]": _array(20, ">i8"),
}


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to null (jsonb has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _plain(value: Any) -> Any:
    # json.dumps's fallback for what it cannot encode itself: numpy integers and bools.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError


def to_json(value: Any) -> str:
    try:
        # The common case (plain values, numpy scalars, no NaN) without _clean's walk,
        # which costs more than the encoding itself for the per-row ``meta`` of a load.
        # Dict keys must already be strings: json would coerce 1 and "1" alike.
        if not isinstance(value, dict) or all(type(k) is str for k in value):
            return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_plain)
    except (TypeError, ValueError):
        pass  # NaN/inf, nested odd types: the careful walk below
    return json.dumps(_clean(value), separators=(",", ":"))


class CopyWriter:
    """Encodes rows for one table's columns; ``None`` is NULL."""

    def __init__(self, types: Sequence[str]):
        unknown = [t for t in types if t not in ENCODERS]
        if unknown:
            raise ValueError(f"no binary encoder for PostgreSQL type(s) {unknown}")
        self._encoders = [ENCODERS[t] for t in types]
        self._count = struct.pack(">h", len(types))

    def encode(self, row: Sequence[Any]) -> bytes:
        return b"".join(self.parts(row))

    def parts(self, row: Sequence[Any]) -> list[bytes]:
        """The row's encoding in pieces, to be joined once with the rows around it."""
        if len(row) != len(self._encoders):
            raise ValueError(f"row has {len(row)} values, the COPY expects {len(self._encoders)}")
        parts = [self._count]
        for enc, value in zip(self._encoders, row):
            parts.append(_NULL if value is None else enc(value))
        return parts


def copy_rows(
    conn: psycopg.Connection,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]],
    *,
    chunk_bytes: int = 4 << 20,
) -> int:
    """COPY ``rows`` into ``table`` (``schema.table`` allowed) in the connection's
    transaction; ``columns`` are (name, PostgreSQL type) pairs. Returns the row count.

    Rows are buffered up to ``chunk_bytes`` before each write, so memory stays bounded
    however many rows the iterable yields.
    """
    writer = CopyWriter([t for _, t in columns])
    target = sql.Identifier(*table.split("."))
    names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in columns)
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, names)
    n = 0
    with conn.cursor() as cur, cur.copy(statement) as copy:
        buf = [HEADER]
        size = len(HEADER)
        for row in rows:
            parts = writer.parts(row)  # joined once per chunk: a row's arrays are copied once
            buf += parts
            size += sum(map(len, parts))
            n += 1
            if size >= chunk_bytes:
                copy.write(b"".join(buf))
                buf, size = [], 0
        buf.append(TRAILER)
        copy.write(b"".join(buf))
    return n


#: Numeric array types read into numpy: array type OID -> (element OID, big-endian dtype).
_ARRAY_TYPES: dict[int, tuple[int, str]] = {
    1005: (21, ">i2"),  # int2[]
    1007: (23, ">i4"),  # int4[]
    1016: (20, ">i8"),  # int8[]
    1021: (700, ">f4"),  # float4[] (real[])
    1022: (701, ">f8"),  # float8[] (double precision[])
}


def decode_array(data: bytes | bytearray | memoryview, elem_oid: int, dtype: str) -> np.ndarray:
    """A numeric array in PostgreSQL's binary send format, as a numpy array.

    The format: dimensions, a has-NULLs flag and the element type, the size and lower
    bound of each dimension, then per element its length (-1 for NULL) and its bytes.
    NULL elements become NaN in float arrays; an integer array with a NULL has no numpy
    value for it and raises ``ValueError``.
    """
    buf = memoryview(data)
    if len(buf) < 12:
        raise ValueError(f"binary array of {len(buf)} bytes is shorter than its 12-byte header")
    ndim, has_null, oid = struct.unpack_from(">iii", buf)
    big = np.dtype(dtype)
    native = big.newbyteorder("=")
    if oid != elem_oid:
        raise ValueError(f"binary array holds elements of type OID {oid}, expected {elem_oid}")
    if ndim == 0:
        return np.empty(0, dtype=native)
    if ndim < 0 or len(buf) < 12 + 8 * ndim:
        raise ValueError(f"binary array header is corrupt ({ndim} dimensions in {len(buf)} bytes)")
    dims = struct.unpack_from(f">{2 * ndim}i", buf, 12)[0::2]
    n = math.prod(dims)
    offset = 12 + 8 * ndim
    size = big.itemsize
    if not has_null:
        # Every element is (length = size, value): one structured view decodes them all.
        if len(buf) != offset + n * (4 + size):
            raise ValueError(f"binary array of {dims} elements has {len(buf) - offset} data bytes, expected {n * (4 + size)}")
        cells = np.frombuffer(buf, dtype=np.dtype([("len", ">i4"), ("val", big)]), count=n, offset=offset)
        if (cells["len"] != size).any():
            raise ValueError(f"binary array has an element whose length is not {size} bytes")
        return cells["val"].astype(native).reshape(dims)
    if big.kind != "f":
        raise ValueError("integer array has NULL elements, which numpy cannot hold")
    out = np.empty(n, dtype=native)
    pos = offset
    for k in range(n):
        (length,) = struct.unpack_from(">i", buf, pos)
        pos += 4
        if length < 0:
            out[k] = np.nan
        else:
            out[k] = np.frombuffer(buf, dtype=big, count=1, offset=pos)[0]
            pos += length
    return out.reshape(dims)


def _numpy_loader(elem_oid: int, dtype: str) -> type[Loader]:
    class NumpyArrayLoader(Loader):
        format = Format.BINARY

        def load(self, data: bytes | bytearray | memoryview) -> np.ndarray:
            return decode_array(data, elem_oid, dtype)

    return NumpyArrayLoader


_NUMPY_LOADERS = {array_oid: _numpy_loader(elem_oid, dtype) for array_oid, (elem_oid, dtype) in _ARRAY_TYPES.items()}


def numpy_arrays(context: AdaptContext) -> None:
    """Make ``context`` (a cursor or connection) load numeric arrays as numpy arrays.

    Applies to results fetched in binary (``conn.cursor(binary=True)``); register it on
    a cursor to leave every other query of the connection as it was.
    """
    for array_oid, loader in _NUMPY_LOADERS.items():
        context.adapters.register_loader(array_oid, loader)
