"""VOTable 1.4 result documents, written as a stream (TAP 1.1 section 4.9, DALI).

The document is ``RESOURCE type="results"`` with ``INFO name="QUERY_STATUS" value="OK"``,
the caller's INFOs (the query, the request id), one TABLE whose FIELDs carry name, type,
unit, UCD, xtype and description, and, when the result was cut at MAXREC, a second
``QUERY_STATUS`` INFO with value ``OVERFLOW`` after the TABLE (clients take the last).
When the statement fails after rows were sent (an error in a later row, the statement
timeout), the data and the TABLE are closed after the last whole row and the INFO after
the TABLE is ``QUERY_STATUS`` ``ERROR`` with the message (DALI 1.1, section 4.4.1), so the
document stays valid and clients raise the error instead of taking a short table.

Rows come in chunks and leave as bytes chunk by chunk: BINARY2 rows are packed with
numpy a chunk at a time (null bitmap, big-endian values, 4-byte length before each
variable-length value) and base64-encoded in multiples of 3 bytes, the remainder
carried into the next chunk, so that the STREAM is one continuous base64 text;
TABLEDATA rows are escaped XML.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

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
    text_bytes,
    texts,
)

__all__ = ["binary2_rows", "error_document", "tabledata_rows", "votable_stream"]

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xsi:schemaLocation="http://www.ivoa.net/xml/VOTable/v1.3 http://www.ivoa.net/xml/VOTable/v1.3">\n'
)
_U1 = np.dtype(np.uint8)
# Characters XML 1.0 cannot hold at all, even as references: replaced by U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: str) -> str:
    """``value`` escaped for XML character data."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _NOT_XML.sub("\ufffd", value) if _NOT_XML.search(value) else value


def _attr(value: str) -> str:
    """``value`` escaped for a double-quoted XML attribute (newlines kept as references)."""
    value = _text(str(value)).replace('"', "&quot;")
    return value.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")


def _info(name: str, value: str, content: str | None = None) -> str:
    if content is None:
        return f'<INFO name="{_attr(name)}" value="{_attr(value)}"/>\n'
    return f'<INFO name="{_attr(name)}" value="{_attr(value)}">{_text(content)}</INFO>\n'


def _field(field: Field, enc: Encoding) -> str:
    attrs = f'name="{_attr(field.name)}" datatype="{enc.datatype}"'
    if enc.arraysize is not None:
        attrs += f' arraysize="{enc.arraysize}"'
    for key, value in (("unit", field.unit), ("ucd", field.ucd), ("xtype", enc.xtype)):
        if value:
            attrs += f' {key}="{_attr(value)}"'
    body = ""
    if field.description:
        body += f"<DESCRIPTION>{_text(field.description)}</DESCRIPTION>"
    if enc.kind == "array" and enc.is_int:
        # Integer arrays have no bitmap for their elements: NULL elements are this value.
        body += f'<VALUES null="{INT_ARRAY_NULL[enc.datatype]}"/>'
    return f"<FIELD {attrs}>{body}</FIELD>\n" if body else f"<FIELD {attrs}/>\n"


def error_document(message: str) -> bytes:
    """A TAP 1.1 error document: ``QUERY_STATUS`` ``ERROR`` with ``message`` as its text."""
    return (
        _HEAD + '<RESOURCE type="results">\n' + _info("QUERY_STATUS", "ERROR", message) + "</RESOURCE>\n</VOTABLE>\n"
    ).encode("utf-8")


def votable_stream(
    fields: Sequence[Field],
    chunks: Iterable[Sequence[tuple]],
    *,
    serialization: str = "BINARY2",
    overflow: bool | Callable[[], bool] = False,
    error: Callable[[], str | None] | None = None,
    infos: dict[str, str] | None = None,
) -> Iterator[bytes]:
    """The VOTable of ``fields`` and the rows of ``chunks``, as UTF-8 byte chunks.

    ``overflow`` may be a callable, asked once every chunk has been written (a streaming
    query only knows whether it was cut at MAXREC once it has fetched its last row);
    ``error``, asked then too, is the message of a failure that ended the rows early.
    """
    encs = [encoding(f) for f in fields]
    head = [_HEAD, '<RESOURCE type="results">\n', _info("QUERY_STATUS", "OK")]
    head += [_info(name, value) for name, value in (infos or {}).items()]
    head.append("<TABLE>\n")
    head += [_field(f, e) for f, e in zip(fields, encs)]
    binary = serialization.upper() == "BINARY2"
    head.append('<DATA><BINARY2><STREAM encoding="base64">\n' if binary else "<DATA><TABLEDATA>\n")
    yield "".join(head).encode("utf-8")
    if binary:
        carry = b""
        for rows in row_chunks(chunks):
            raw = carry + binary2_rows(rows, encs)
            cut = len(raw) - len(raw) % 3
            carry = raw[cut:]
            yield base64.b64encode(memoryview(raw)[:cut]) + b"\n"
        yield base64.b64encode(carry) + b"</STREAM></BINARY2></DATA>\n"
    else:
        for rows in row_chunks(chunks):
            yield tabledata_rows(rows, encs).encode("utf-8")
        yield b"</TABLEDATA></DATA>\n"
    tail = "</TABLE>\n"
    message = error() if error is not None else None
    if message is not None:
        tail += _info("QUERY_STATUS", "ERROR", message)
    elif overflow() if callable(overflow) else overflow:
        tail += _info(
            "QUERY_STATUS",
            "OVERFLOW",
            "The result was truncated at MAXREC rows; ask for more with MAXREC.",
        )
    yield (tail + "</RESOURCE>\n</VOTABLE>\n").encode("utf-8")


# -- BINARY2 -----------------------------------------------------------------------------------------


def _fixed(arr: np.ndarray, n: int) -> tuple[np.ndarray, None]:
    """A fixed-width segment: each row's bytes of ``arr`` as an (n, width) uint8 array."""
    return np.ascontiguousarray(arr).view(_U1).reshape(n, -1), None


def _prefix(counts: np.ndarray, n: int) -> tuple[np.ndarray, None]:
    return _fixed(counts.astype(">u4"), n)


def binary2_rows(rows: Sequence[tuple], encs: Sequence[Encoding]) -> bytes:
    """``rows`` encoded as BINARY2: per row a null bitmap (first field in the most
    significant bit), then each value big-endian, variable-length ones after a 4-byte
    element count."""
    n = len(rows)
    columns = columns_of(rows, len(encs))
    masks = np.zeros((n, len(encs)), bool)
    segments: list[tuple[np.ndarray, np.ndarray | None]] = []
    for j, (enc, values) in enumerate(zip(encs, columns)):
        if enc.kind == "number":
            arr, masks[:, j] = numbers(values, enc.dtype)
            segments.append(_fixed(arr, n))
        elif enc.kind == "bool":
            arr, masks[:, j] = booleans(values)
            out = np.where(arr, np.uint8(ord("T")), np.uint8(ord("F")))
            out[masks[:, j]] = ord("?")
            segments.append(_fixed(out.astype(_U1), n))
        elif enc.kind == "fixed_array":
            arr, masks[:, j] = fixed_arrays(values, enc)
            segments.append(_fixed(arr.astype(enc.dtype), n))
        elif enc.kind == "array":
            items = arrays(values, enc)
            masks[:, j] = [a is None for a in items]
            present = [a for a in items if a is not None]
            counts = np.fromiter((0 if a is None else a.size for a in items), np.int64, n)
            flat = np.concatenate(present).astype(enc.dtype) if present else np.empty(0, enc.dtype)
            segments.append(_prefix(counts, n))
            segments.append((flat.view(_U1), counts * enc.dtype.itemsize))
        else:  # text, timestamp
            unicode = enc.datatype == "unicodeChar"
            flat, lengths, masks[:, j] = text_bytes(values, enc, "utf-16-be" if unicode else "ascii")
            segments.append(_prefix(lengths // 2 if unicode else lengths, n))
            segments.append((flat, lengths))
    bitmap = np.packbits(masks, axis=1) if encs else np.empty((n, 0), _U1)
    return _assemble(n, [(bitmap, None), *segments])


def _assemble(n: int, segments: list[tuple[np.ndarray, np.ndarray | None]]) -> bytes:
    """Interleave the segments row by row into one byte string."""
    # Neighbouring fixed-width segments become one block, so a table without strings or
    # arrays is a single hstack.
    merged: list[tuple[np.ndarray, np.ndarray | None]] = []
    for seg in segments:
        if seg[1] is None and merged and merged[-1][1] is None:
            merged[-1] = (np.hstack([merged[-1][0], seg[0]]), None)
        else:
            merged.append(seg)
    if len(merged) == 1:
        return merged[0][0].tobytes()
    widths = [np.full(n, seg[0].shape[1], np.int64) if seg[1] is None else seg[1] for seg in merged]
    row_length = np.sum(widths, axis=0)
    offset = np.cumsum(row_length) - row_length
    out = np.empty(int(row_length.sum()), _U1)
    for (data, lengths), width in zip(merged, widths):
        if lengths is None:
            out[offset[:, None] + np.arange(data.shape[1])] = data
        else:
            total = int(lengths.sum())
            if total:
                source_start = np.cumsum(lengths) - lengths
                out[np.repeat(offset - source_start, lengths) + np.arange(total)] = data
        offset += width
    return out.tobytes()


# -- TABLEDATA ---------------------------------------------------------------------------------------


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _cells(values: Sequence[Any], enc: Encoding) -> list[str]:
    if enc.kind == "number":
        fmt = _float if enc.dtype.kind == "f" else lambda v: str(int(v))
        return ["<TD/>" if v is None else f"<TD>{fmt(v)}</TD>" for v in values]
    if enc.kind == "bool":
        return ["<TD/>" if v is None else ("<TD>T</TD>" if v else "<TD>F</TD>") for v in values]
    if enc.kind in ("array", "fixed_array"):
        items = arrays(values, enc)
        fmt = _float if enc.dtype.kind == "f" else str
        return ["<TD/>" if a is None else "<TD>" + " ".join(map(fmt, a.tolist())) + "</TD>" for a in items]
    return ["<TD/>" if s is None else f"<TD>{_text(s)}</TD>" for s in texts(values, enc)]


def tabledata_rows(rows: Sequence[tuple], encs: Sequence[Encoding]) -> str:
    """``rows`` as TABLEDATA ``<TR>`` elements; NULL is an empty cell."""
    if not encs:
        return "<TR></TR>" * len(rows)
    columns = [_cells(values, enc) for values, enc in zip(columns_of(rows, len(encs)), encs)]
    return "".join("<TR>" + "".join(cells) + "</TR>\n" for cells in zip(*columns))
