"""Result formats of the TAP service: RESPONSEFORMAT values, media types, streaming writers.

:func:`resolve_format` turns a TAP ``RESPONSEFORMAT`` (or ``FORMAT``) value, short name
or MIME type, case-insensitive, into a :class:`Format`; :func:`stream_result` writes a
result in it as an iterator of byte chunks whose memory does not grow with the number
of rows (FITS, whose header holds the row count, spools to a temporary file first).

- VOTable 1.4, BINARY2 (TAP's default) or TABLEDATA: :mod:`.votable`;
- CSV and TSV with a header row: NULL is an empty field, arrays are space-separated
  (DALI), booleans ``true``/``false``, timestamps ISO 8601;
- JSON: ``{"metadata": [...], "data": [[...], ...], "query_status": "OK"|"OVERFLOW"|"ERROR"}``
  (with ``"message"`` when ERROR); NULL and NaN are ``null``;
- FITS: a binary table with TUNIT, TUCD and TCOMM: :mod:`.fitstable`.

A statement can fail after its first rows were written (an error in a later row, the
statement timeout): the chunk iterator raises :class:`QueryError` part-way. VOTable and
JSON end their data after the last whole row and say ``QUERY_STATUS`` ``ERROR`` with the
message at the end, where TAP clients look (the document stays valid). CSV and TSV have no
place for a status, and a last line would read as data: the error is raised on, and the
HTTP layer aborts the response (no final chunk of the chunked transfer), so a client sees
an incomplete transfer rather than a short table that looks whole. FITS spools every row
before its first byte, so its error comes before anything is sent (an error document).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from skyledger.schema.errors import QueryError

from .columns import Encoding, Field, arrays, columns_of, encoding, row_chunks, texts
from .votable import error_document, votable_stream

__all__ = [
    "FORMATS",
    "Field",
    "Format",
    "error_document",
    "resolve_format",
    "stream_result",
]


@dataclass(frozen=True)
class Format:
    """A result format: ``name`` (the short RESPONSEFORMAT value), the ``media_type`` to
    answer with, the file ``extension``, and for VOTable the ``serialization``."""

    name: str
    media_type: str
    extension: str
    serialization: str | None = None


VOTABLE = Format("votable", "application/x-votable+xml", "xml", "BINARY2")
VOTABLE_TD = Format(
    "votable/td",
    "application/x-votable+xml;serialization=TABLEDATA",
    "xml",
    "TABLEDATA",
)
CSV = Format("csv", "text/csv;header=present", "csv")
TSV = Format("tsv", "text/tab-separated-values", "tsv")
JSON = Format("json", "application/json", "json")
FITS = Format("fits", "application/fits", "fits")
FORMATS = (VOTABLE, VOTABLE_TD, CSV, TSV, JSON, FITS)

# Every accepted value, lower case, MIME parameters without spaces.
_VALUES = {
    "votable": VOTABLE, "votable/b2": VOTABLE, "votable/binary2": VOTABLE,
    "application/x-votable+xml": VOTABLE, "application/x-votable+xml;serialization=binary2": VOTABLE,
    "text/xml": VOTABLE, "application/xml": VOTABLE,
    "votable/td": VOTABLE_TD, "votable/tabledata": VOTABLE_TD,
    "application/x-votable+xml;serialization=tabledata": VOTABLE_TD,
    "csv": CSV, "text/csv": CSV, "text/csv;header=present": CSV,
    "tsv": TSV, "text/tab-separated-values": TSV,
    "json": JSON, "application/json": JSON,
    "fits": FITS, "application/fits": FITS,
}  # fmt: skip


def resolve_format(value: str | None) -> Format:
    """The format a TAP ``RESPONSEFORMAT``/``FORMAT`` value asks for (absent or empty:
    VOTable BINARY2); an unknown value raises :class:`QueryError` naming the accepted ones."""
    if value is None or not value.strip():
        return VOTABLE
    key = ";".join(part.strip().replace(" ", "") for part in value.strip().lower().split(";"))
    if key in _VALUES:
        return _VALUES[key]
    accepted = ", ".join(sorted(_VALUES))
    raise QueryError(f"unknown RESPONSEFORMAT {value!r}: use one of {accepted} (default: votable, BINARY2)")


def stream_result(
    fmt: Format,
    fields: Sequence[Field],
    chunks: Iterable[Sequence[tuple]],
    *,
    overflow: bool | Callable[[], bool] = False,
    infos: dict[str, str] | None = None,
) -> Iterator[bytes]:
    """The result of ``fields`` and the rows of ``chunks`` (each a sequence of row tuples,
    None for NULL) written in ``fmt``, as byte chunks: one or a few per input chunk.

    ``overflow`` says the result was cut at MAXREC (TAP's OVERFLOW status); it may be a
    callable, asked after the last chunk. ``infos`` are extra name/value pairs (the query,
    the request id): VOTable INFOs, FITS header comments, JSON ``infos``.

    A :class:`QueryError` out of ``chunks`` ends a VOTable or JSON result with status
    ERROR and its message; CSV, TSV and FITS raise it (see the module's text).
    """
    if fmt.serialization is not None:
        rows = _Rows(chunks)
        return votable_stream(
            fields,
            rows,
            serialization=fmt.serialization,
            overflow=overflow,
            error=rows.message,
            infos=infos,
        )
    if fmt.name in ("csv", "tsv"):
        return _delimited(fields, chunks, "\t" if fmt.name == "tsv" else ",")
    if fmt.name == "json":
        rows = _Rows(chunks)
        return _json(fields, rows, overflow, rows.message, infos)
    if fmt.name == "fits":
        from .fitstable import fits_stream  # astropy.io.fits, only when asked for

        return fits_stream(fields, chunks, overflow=overflow, infos=infos)
    raise QueryError(f"no writer for format {fmt.name!r}")


class _Rows:
    """The chunks of a result, ending early, without an exception, when reading them
    raises :class:`QueryError` (the statement failed after its first rows); ``message()``
    is then that error's text, for the writer to end its document with."""

    def __init__(self, chunks: Iterable[Sequence[tuple]]) -> None:
        self._chunks = chunks
        self.error: QueryError | None = None

    def __iter__(self) -> Iterator[Sequence[tuple]]:
        try:
            yield from self._chunks
        except QueryError as err:
            self.error = err

    def message(self) -> str | None:
        return None if self.error is None else str(self.error)


def _is_overflow(overflow: bool | Callable[[], bool]) -> bool:
    return bool(overflow() if callable(overflow) else overflow)


# -- CSV, TSV ----------------------------------------------------------------------------------------


def _csv_float(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def _delimited_column(values: Sequence[Any], enc: Encoding) -> list[str]:
    if enc.kind == "number":
        fmt = _csv_float if enc.dtype.kind == "f" else lambda v: str(int(v))
        return ["" if v is None else fmt(v) for v in values]
    if enc.kind == "bool":
        return ["" if v is None else ("true" if v else "false") for v in values]
    if enc.kind in ("array", "fixed_array"):
        if enc.is_int:  # a NULL element has no number: "null"
            return ["" if a is None else " ".join("null" if x is None else str(int(x)) for x in a) for a in values]
        return ["" if a is None else " ".join(map(_csv_float, a.tolist())) for a in arrays(values, enc)]
    return ["" if s is None else s for s in texts(values, enc)]


def _delimited(fields: Sequence[Field], chunks: Iterable[Sequence[tuple]], delimiter: str) -> Iterator[bytes]:
    encs = [encoding(f) for f in fields]
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([f.name for f in fields])
    yield buffer.getvalue().encode("utf-8")
    for rows in row_chunks(chunks):
        buffer.seek(0)
        buffer.truncate()
        columns = [_delimited_column(values, enc) for values, enc in zip(columns_of(rows, len(encs)), encs)]
        writer.writerows(zip(*columns))
        yield buffer.getvalue().encode("utf-8")


# -- JSON --------------------------------------------------------------------------------------------


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def _json_column(values: Sequence[Any], enc: Encoding) -> list[Any]:
    if enc.kind == "number":
        if enc.dtype.kind == "f":
            return [None if v is None else _json_float(float(v)) for v in values]
        return [None if v is None else int(v) for v in values]
    if enc.kind == "bool":
        return [None if v is None else bool(v) for v in values]
    if enc.kind in ("array", "fixed_array"):
        if enc.is_int:
            return [None if a is None else [None if x is None else int(x) for x in a] for a in values]
        return [None if a is None else [_json_float(x) for x in a.tolist()] for a in arrays(values, enc)]
    return texts(values, enc)


def _json_metadata(field: Field, enc: Encoding) -> dict[str, Any]:
    return {
        "name": field.name, "datatype": enc.datatype, "arraysize": enc.arraysize, "xtype": enc.xtype,
        "unit": field.unit, "ucd": field.ucd, "description": field.description,
    }  # fmt: skip


def _json(fields, chunks, overflow, error, infos) -> Iterator[bytes]:
    encs = [encoding(f) for f in fields]
    metadata = json.dumps([_json_metadata(f, e) for f, e in zip(fields, encs)], ensure_ascii=False)
    yield f'{{"metadata": {metadata},\n"data": ['.encode()
    separator = "\n"
    for rows in row_chunks(chunks):
        columns = [_json_column(values, enc) for values, enc in zip(columns_of(rows, len(encs)), encs)]
        text = ",\n".join(json.dumps(list(row), ensure_ascii=False, allow_nan=False) for row in zip(*columns))
        yield (separator + text).encode("utf-8")
        separator = ",\n"
    message = error()
    if message is not None:
        status = f'"ERROR", "message": {json.dumps(message, ensure_ascii=False)}'
    else:
        status = '"OVERFLOW"' if _is_overflow(overflow) else '"OK"'
    tail = f'],\n"query_status": {status}, "infos": {json.dumps(infos or {}, ensure_ascii=False)}}}\n'
    yield tail.encode("utf-8")
