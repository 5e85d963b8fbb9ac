"""Streaming FITS binary-table writer with CHECKSUM/DATASUM, and the checksum check.

The header is written first (the row count and every string width are known from the
frozen table), then the rows chunk by chunk as big-endian records, then the header is
written again with DATASUM and CHECKSUM filled in; the header's length never changes
because both are fixed-width string cards. Checksums follow the FITS checksum
convention (FITS Standard 4.0, appendix J: 32-bit ones'-complement sum, CHECKSUM as the
16-character ASCII encoding of the complemented HDU sum).

NULL becomes NaN in float columns, TNULLn in integer columns that hold NULLs, and an
empty string in character columns (FITS has no null string; docs/releases.md says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io import fits

from .content import FORMAT_VERSION, ReleaseInfo, TableContent, fits_unit, header_yaml
from .errors import ReleaseError
from .tables import ReleaseColumn

__all__ = ["FitsWriter", "ones_complement_sum", "encode_checksum", "verify_fits_checksums"]

BLOCK = 2880
_FORMS = {"int2": ("I", ">i2"), "int4": ("J", ">i4"), "int8": ("K", ">i8"), "float4": ("E", ">f4"),
          "float8": ("D", ">f8"), "bool": ("L", "S1")}
_TNULL = {"int2": -(2**15), "int4": -(2**31), "int8": -(2**63)}
_ZERO_CHECKSUM = "0" * 16


def ones_complement_sum(data: bytes | memoryview, start: int = 0) -> int:
    """32-bit ones'-complement sum of big-endian words (``len(data)`` a multiple of 4)."""
    words = np.frombuffer(data, dtype=">u4")
    total = start + int(words.sum(dtype=np.uint64))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    return total


def encode_checksum(value: int) -> str:
    """The 16-character ASCII form of a 32-bit value, as the FITS checksum convention defines it.

    Each byte becomes four printable characters that add up to the byte (offset by '0'),
    nudged in pairs off the punctuation between digits and letters; the result is rotated
    by one place because the value starts at byte 11 of its card.
    """
    punctuation = set(range(0x3A, 0x41)) | set(range(0x5B, 0x61))
    chars = [0] * 16
    for i in range(4):
        byte = (value >> (8 * (3 - i))) & 0xFF
        quarter, rest = divmod(byte, 4)
        group = [quarter + 0x30 + rest, quarter + 0x30, quarter + 0x30, quarter + 0x30]
        moved = True
        while moved:
            moved = False
            for j in (0, 2):
                if group[j] in punctuation or group[j + 1] in punctuation:
                    group[j] += 1
                    group[j + 1] -= 1
                    moved = True
        for j in range(4):
            chars[4 * j + i] = group[j]
    return "".join(chr(chars[(k + 15) % 16]) for k in range(16))


class _Summer:
    """Ones'-complement sum of a byte stream that arrives in pieces of any length."""

    def __init__(self) -> None:
        self.total = 0
        self._tail = b""

    def add(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        whole = len(data) - len(data) % 4
        if whole:
            self.total = ones_complement_sum(memoryview(data)[:whole], self.total)
        self._tail = data[whole:]

    def result(self) -> int:
        if self._tail:
            self.add(b"\0" * (4 - len(self._tail)))
        return self.total


def _with_checksum(header: fits.Header, datasum: int) -> bytes:
    header["DATASUM"] = (str(datasum), "data unit checksum")
    header["CHECKSUM"] = (_ZERO_CHECKSUM, "HDU checksum")
    raw = header.tostring().encode("ascii")
    total = ones_complement_sum(raw, datasum)
    header["CHECKSUM"] = (encode_checksum(~total & 0xFFFFFFFF), "HDU checksum")
    out = header.tostring().encode("ascii")
    assert len(out) == len(raw)
    return out


def _set(header: fits.Header, keyword: str, value: object, comment: str) -> None:
    """Set a card, keeping the comment only where it fits: astropy would truncate it with
    a warning (names, versions and notes have no fixed length)."""
    width = 10 + max(len(str(value)) + 2, 20) + 3 + len(comment)  # "KEYWORD = 'value' / comment"
    header[keyword] = (value, comment) if width <= 80 else value


def _provenance(header: fits.Header, info: ReleaseInfo, content: TableContent) -> None:
    _set(header, "RELEASE", info.name, "skyledger release name (and its SQL schema)")
    header["FORMATV"] = (FORMAT_VERSION, "skyledger release format version")
    _set(header, "COLLECT", info.collection, "collection the release froze")
    _set(header, "DATE", info.created_iso, "release creation time (UTC)")
    _set(header, "CREATOR", info.code_version, "code that wrote the release")
    _set(header, "SCHEMAV", info.schema_version, "database schema revision")
    if info.notes:
        _set(header, "RELNOTES", info.notes, "release notes")
    header["NRUNS"] = (len(content.runs), "runs whose results are in this table")
    for i, run in enumerate(content.runs, start=1):
        header[f"RUN{i}"] = (run.id, "run id")
        _set(header, f"TASK{i}", run.task, f"task of run {run.id}")
        header[f"TASKV{i}"] = (run.version, f"task version of run {run.id}")
    for flag in content.flags:
        # No comment: a value that nearly fills its card would push it out and astropy
        # truncates with a warning. FLAGn is bit n (value 2**n) of the flags column.
        header[f"FLAG{flag.bit}"] = f"{flag.name}: {flag.description}"


def _table_header(info: ReleaseInfo, content: TableContent) -> tuple[fits.Header, np.dtype]:
    fields = []
    header = fits.Header()
    header["XTENSION"] = ("BINTABLE", "binary table extension")
    header["BITPIX"] = 8
    header["NAXIS"] = 2
    header["NAXIS1"] = 0
    header["NAXIS2"] = (content.n_rows, "number of rows")
    header["PCOUNT"] = 0
    header["GCOUNT"] = 1
    header["TFIELDS"] = len(content.columns)
    for n, column in enumerate(content.columns, start=1):
        if column.pg_type == "text":
            width = max(1, content.max_bytes.get(column.name, 0))
            form, dtype = f"{width}A", f"S{width}"
        else:
            form, dtype = _FORMS[column.pg_type]
        fields.append((column.name, dtype))
        header[f"TTYPE{n}"] = (column.name, column.description[:40])
        header[f"TFORM{n}"] = form
        unit = fits_unit(column.unit)
        if unit is not None:
            header[f"TUNIT{n}"] = unit
        if column.name in content.null_ints:
            header[f"TNULL{n}"] = (_TNULL[column.pg_type], "stands for NULL")
        # TCOMMn and TUCDn: the HEASARC/STIL convention TOPCAT reads. A unit FITS cannot
        # spell (dex) is named here instead of in TUNITn.
        missing_unit = column.unit is not None and unit is None
        header[f"TCOMM{n}"] = f"{column.description} [{column.unit}]" if missing_unit else column.description
        if column.ucd:
            header[f"TUCD{n}"] = column.ucd
    dtype = np.dtype(fields)
    header["NAXIS1"] = (dtype.itemsize, "bytes per row")
    header["EXTNAME"] = (content.table.name, "release table")
    _provenance(header, info, content)
    # astropy's own record of column descriptions and UCDs, so Table.read restores them.
    header.add_comment("--BEGIN-ASTROPY-SERIALIZED-COLUMNS--")
    for line in header_yaml(info, content, delimiter=None):
        pieces = [line[i:i + 70] for i in range(0, max(len(line), 1), 70)]
        for k, piece in enumerate(pieces):
            header.add_comment(piece + ("\\" if k < len(pieces) - 1 else ""))
    header.add_comment("--END-ASTROPY-SERIALIZED-COLUMNS--")
    return header, dtype


def _records(batch: pa.RecordBatch, columns: tuple[ReleaseColumn, ...], dtype: np.dtype, content: TableContent) -> bytes:
    rec = np.zeros(batch.num_rows, dtype=dtype)
    for column in columns:
        arr = batch.column(column.name)
        kind = column.pg_type
        if kind in ("float4", "float8"):
            rec[column.name] = arr.to_numpy(zero_copy_only=False)  # NULL -> NaN
        elif kind in _TNULL:
            if arr.null_count:
                if column.name not in content.null_ints:
                    raise ReleaseError(f"column {column.name} holds NULLs that the FITS header has no TNULL for")
                arr = pc.fill_null(arr, _TNULL[kind])
            rec[column.name] = arr.to_numpy(zero_copy_only=False)
        elif kind == "bool":
            letters = pc.if_else(arr, b"T", b"F").cast(pa.binary())
            rec[column.name] = pc.fill_null(letters, b"\0").to_numpy(zero_copy_only=False).astype("S1")
        else:
            values = pc.fill_null(arr, "").cast(pa.binary())
            rec[column.name] = values.to_numpy(zero_copy_only=False).astype(dtype[column.name])
    return rec.tobytes()


def _primary_header(info: ReleaseInfo, content: TableContent) -> fits.Header:
    header = fits.Header()
    header["SIMPLE"] = (True, "conforms to FITS standard")
    header["BITPIX"] = 8
    header["NAXIS"] = 0
    header["EXTEND"] = True
    _set(header, "RELEASE", info.name, "skyledger release name")
    _set(header, "TABLE", content.table.name, "release table in extension 1")
    _set(header, "DATE", info.created_iso, "release creation time (UTC)")
    _set(header, "CREATOR", info.code_version, "code that wrote the release")
    return header


class FitsWriter:
    """A primary HDU plus one BINTABLE, written batch by batch."""

    def __init__(self, path: Path, info: ReleaseInfo, content: TableContent) -> None:
        self.path = path
        self.content = content
        self.rows = 0
        self._header, self._dtype = _table_header(info, content)
        self._summer = _Summer()
        primary = _with_checksum(_primary_header(info, content), 0)
        self._table_at = len(primary)
        self._fh = open(path, "wb")
        self._fh.write(primary)
        self._fh.write(_with_checksum(self._header.copy(), 0))

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if self.rows > self.content.n_rows:
            raise ReleaseError(f"{self.content.table.name}: more rows than the {self.content.n_rows} counted")
        data = _records(batch, self.content.columns, self._dtype, self.content)
        self._summer.add(data)
        self._fh.write(data)

    def close(self) -> int:
        """Pad, write the final header with its checksums; returns the rows written."""
        with self._fh as fh:
            if self.rows != self.content.n_rows:
                raise ReleaseError(f"{self.content.table.name}: wrote {self.rows} rows, expected {self.content.n_rows}")
            fh.write(b"\0" * (-(self.rows * self._dtype.itemsize) % BLOCK))
            fh.seek(self._table_at)
            fh.write(_with_checksum(self._header, self._summer.result()))
        return self.rows

    def abort(self) -> None:
        self._fh.close()


def _read_header(fh: BinaryIO) -> bytes | None:
    blocks = []
    while True:
        block = fh.read(BLOCK)
        if not block:
            return None if not blocks else b"".join(blocks)
        if len(block) < BLOCK:
            raise ValueError("truncated header")
        blocks.append(block)
        cards = [block[i:i + 80] for i in range(0, BLOCK, 80)]
        if any(card.startswith(b"END") and card[3:].strip() == b"" for card in cards):
            return b"".join(blocks)


def verify_fits_checksums(path: Path) -> list[str]:
    """Problems with the CHECKSUM/DATASUM of every HDU of ``path``; empty when all verify."""
    problems: list[str] = []
    with open(path, "rb") as fh:
        index = 0
        while True:
            try:
                raw = _read_header(fh)
            except ValueError:
                return problems + [f"HDU {index}: truncated header"]
            if raw is None:
                break
            header = fits.Header.fromstring(raw.decode("ascii", errors="replace"))
            naxis = header.get("NAXIS", 0)
            size = 0
            if naxis:
                size = abs(header.get("BITPIX", 8)) // 8 * header.get("GCOUNT", 1)
                size *= int(np.prod([header.get(f"NAXIS{i}", 0) for i in range(1, naxis + 1)])) + header.get("PCOUNT", 0)
            padded = size + (-size % BLOCK)
            summer = _Summer()
            remaining = padded
            while remaining:
                chunk = fh.read(min(remaining, 8 << 20))
                if not chunk:
                    return problems + [f"HDU {index}: data truncated"]
                summer.add(chunk)
                remaining -= len(chunk)
            datasum = summer.result()
            if "DATASUM" not in header or "CHECKSUM" not in header:
                problems.append(f"HDU {index}: no CHECKSUM/DATASUM")
            else:
                if str(header["DATASUM"]) != str(datasum):
                    problems.append(f"HDU {index}: DATASUM {header['DATASUM']} but the data sum to {datasum}")
                if ones_complement_sum(raw, datasum) != 0xFFFFFFFF:
                    problems.append(f"HDU {index}: CHECKSUM does not verify")
            index += 1
    return problems
