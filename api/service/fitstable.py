"""Query results as a FITS binary table, written without holding the result in memory.

A FITS header states the row count, the widths of string columns and the heap size
before any row, so the chunks are first spooled (pickled) to a temporary file while
those are counted; the header is then written, and the rows are encoded chunk by chunk
on a second pass, variable-length arrays into the heap (``Q`` descriptors), which a
third read of the spool writes after the table.

Columns carry TTYPE, TFORM, TUNIT, and the UCD and description as ``TUCDn`` and
``TCOMMn`` (the keywords TOPCAT/STILTS use; astropy keeps them as header cards).
NULL is NaN in floats, ``TNULLn`` in integers, an empty string in text (FITS has no
other), 0 (undefined) in logicals, and a zero-length array in arrays.
"""

from __future__ import annotations

import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from astropy.io import fits

from .columns import (
    INT_ARRAY_NULL,
    Encoding,
    Field,
    arrays,
    booleans,
    columns_of,
    encoding,
    fixed_arrays,
    numbers,
    row_chunks,
    texts,
)

__all__ = ["fits_stream"]

_BLOCK = 2880
_U1 = np.dtype(np.uint8)
_TFORM = {"short": "I", "int": "J", "long": "K", "float": "E", "double": "D"}
#: TNULL of integer columns (the smallest value of each type).
_TNULL = INT_ARRAY_NULL


def _spool(chunks: Iterable[Sequence[tuple]], encs: Sequence[Encoding], spool) -> tuple[int, list[int], int]:
    """Pickle the chunks to ``spool``; return the row count, each column's width (text:
    longest UTF-8 value; array: most elements) and the heap size in bytes."""
    n_rows, widths, heap = 0, [1] * len(encs), 0
    for rows in row_chunks(chunks):
        columns = columns_of(rows, len(encs))
        pickle.dump(rows, spool, protocol=pickle.HIGHEST_PROTOCOL)
        n_rows += len(rows)
        for j, (enc, values) in enumerate(zip(encs, columns)):
            if enc.kind in ("text", "timestamp"):
                encoded = [len(s.encode("utf-8")) for s in texts(values, enc) if s is not None]
                widths[j] = max([widths[j], *encoded])
            elif enc.kind == "array":
                sizes = [a.size for a in arrays(values, enc) if a is not None]
                widths[j] = max([widths[j], *sizes])
                heap += sum(sizes) * enc.dtype.itemsize
    return n_rows, widths, heap


def _chunks(spool) -> Iterator[list[tuple]]:
    spool.seek(0)
    while True:
        try:
            yield pickle.load(spool)
        except EOFError:
            return


def _ascii(text: str) -> str:
    """``text`` as a header card may hold it: printable ASCII, other characters as
    Python escapes (``\\xe9``), control characters as spaces."""
    return re.sub(r"[^ -~]", " ", text.encode("ascii", "backslashreplace").decode("ascii"))


def _tform(enc: Encoding, width: int) -> str:
    if enc.kind == "number":
        return _TFORM[enc.datatype]
    if enc.kind == "bool":
        return "L"
    if enc.kind == "fixed_array":
        return f"{enc.length}D"
    if enc.kind == "array":
        return f"Q{_TFORM[enc.datatype]}({width})"
    return f"{width}A"


def _headers(fields, encs, widths, n_rows, heap, overflow: bool, infos) -> bytes:
    primary = fits.Header()
    primary["SIMPLE"] = True
    primary["BITPIX"] = 8
    primary["NAXIS"] = 0
    primary["EXTEND"] = True
    primary["QSTATUS"] = (
        "OVERFLOW" if overflow else "OK",
        "TAP QUERY_STATUS (OVERFLOW: cut at MAXREC)",
    )
    for name, value in (infos or {}).items():
        # Header cards hold printable ASCII only: other characters as escapes.
        primary.add_comment(_ascii(f"{name}: {value}"))
    table = fits.Header()
    row_width = 0
    cards: list[tuple[str, object, str]] = []
    for i, (field, enc, width) in enumerate(zip(fields, encs, widths), start=1):
        tform = _tform(enc, width)
        row_width += _row_bytes(enc, width)
        cards.append((f"TTYPE{i}", _ascii(field.name), "column name"))
        cards.append((f"TFORM{i}", tform, "data format"))
        if field.unit:
            cards.append((f"TUNIT{i}", _ascii(field.unit), "unit"))
        if enc.kind == "number" and enc.is_int:  # (astropy cannot read TNULL on array columns)
            cards.append((f"TNULL{i}", _TNULL[enc.datatype], "NULL value"))
        if field.ucd:
            cards.append((f"TUCD{i}", _ascii(field.ucd), "UCD"))
        if field.description:
            cards.append((f"TCOMM{i}", _ascii(field.description), None))
        if enc.xtype:
            cards.append((f"TXTYP{i}", enc.xtype, "DALI xtype"))
    table["XTENSION"] = "BINTABLE"
    table["BITPIX"] = 8
    table["NAXIS"] = 2
    table["NAXIS1"] = row_width
    table["NAXIS2"] = n_rows
    table["PCOUNT"] = heap
    table["GCOUNT"] = 1
    table["TFIELDS"] = len(fields)
    for key, value, comment in cards:
        table[key] = (value, comment) if comment else value
    table["EXTNAME"] = "RESULTS"
    return primary.tostring().encode("ascii") + table.tostring().encode("ascii")


def _row_bytes(enc: Encoding, width: int) -> int:
    if enc.kind == "number":
        return enc.dtype.itemsize
    if enc.kind == "bool":
        return 1
    if enc.kind == "fixed_array":
        return 8 * enc.length
    if enc.kind == "array":
        return 16  # Q descriptor: element count and heap offset, int64 each
    return width


def _encode(rows: list[tuple], encs, widths, heap_offset: int) -> tuple[bytes, int]:
    """The chunk's table rows, and the heap offset after its arrays."""
    n = len(rows)
    blocks = []
    for enc, width, values in zip(encs, widths, columns_of(rows, len(encs))):
        if enc.kind == "number":
            arr, mask = numbers(values, enc.dtype)
            if enc.is_int and mask.any():
                arr[mask] = _TNULL[enc.datatype]
            blocks.append(arr.view(_U1).reshape(n, -1))
        elif enc.kind == "bool":
            arr, mask = booleans(values)
            out = np.where(arr, np.uint8(ord("T")), np.uint8(ord("F")))
            out[mask] = 0
            blocks.append(out.astype(_U1).reshape(n, 1))
        elif enc.kind == "fixed_array":
            arr, _ = fixed_arrays(values, enc)
            blocks.append(np.ascontiguousarray(arr.astype(">f8")).view(_U1).reshape(n, -1))
        elif enc.kind == "array":
            counts = np.fromiter((0 if a is None else a.size for a in arrays(values, enc)), np.int64, n)
            offsets = heap_offset + (np.cumsum(counts) - counts) * enc.dtype.itemsize
            heap_offset += int(counts.sum()) * enc.dtype.itemsize
            descriptor = np.stack([counts, offsets], axis=1).astype(">i8")
            blocks.append(np.ascontiguousarray(descriptor).view(_U1).reshape(n, 16))
        else:
            strings = [b"" if s is None else s.encode("utf-8") for s in texts(values, enc)]
            blocks.append(np.array(strings, dtype=f"S{width}").view(_U1).reshape(n, width))
    table = np.hstack(blocks) if blocks else np.empty((n, 0), _U1)
    return table.tobytes(), heap_offset


def _heap(rows: list[tuple], encs) -> bytes:
    """The chunk's array elements, row by row, column by column (the order of ``_encode``'s offsets)."""
    parts = []
    for enc, values in zip(encs, columns_of(rows, len(encs))):
        if enc.kind == "array":
            parts += [a.astype(enc.dtype).tobytes() for a in arrays(values, enc) if a is not None]
    return b"".join(parts)


def fits_stream(
    fields: Sequence[Field],
    chunks: Iterable[Sequence[tuple]],
    *,
    overflow: bool | Callable[[], bool] = False,
    infos: dict[str, str] | None = None,
) -> Iterator[bytes]:
    """The FITS file (empty primary HDU, then a BINTABLE ``RESULTS``) as byte chunks."""
    encs = [encoding(f) for f in fields]
    with tempfile.TemporaryFile() as spool:
        n_rows, widths, heap = _spool(chunks, encs, spool)
        overflowed = bool(overflow() if callable(overflow) else overflow)
        yield _headers(fields, encs, widths, n_rows, heap, overflowed, infos)
        written, heap_offset = 0, 0
        for rows in _chunks(spool):
            data, heap_offset = _encode(rows, encs, widths, heap_offset)
            written += len(data)
            yield data
        for rows in _chunks(spool):
            data = _heap(rows, encs)
            written += len(data)
            yield data
        if written % _BLOCK:
            yield bytes(_BLOCK - written % _BLOCK)
