"""Binary-table rows of survey FITS files, decoded by numpy where a dtype suffices.

:func:`read_table` gives a :class:`TableData` for a binary-table HDU opened by
:func:`~skyledger.ingest.readers.fits_access.open_fits` or scanned by
:mod:`skyledger.ingest.readers.rawfits`; :func:`find_column` looks a column up by name,
case-insensitively.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from functools import lru_cache
from typing import Any

import numpy as np
from astropy.io import fits

from skyledger.ingest.readers import rawfits
from skyledger.ingest.readers.fits_access import hdu_data, open_fits
from skyledger.schema.errors import ReaderError

__all__ = ["TableData", "cell_value", "find_column", "read_table"]


def cell_value(value: Any) -> Any:
    """A numpy/FITS table cell or header value as a plain Python value (text stripped)."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- binary tables
#
# astropy's ``BinTableHDU.data`` builds a ``ColDefs`` with a ``Column`` object per column
# (~4 ms for an SDSS file's COADD + SPECOBJ); the same bytes decode with one numpy read
# at the data offset once a dtype is built from TFORMn/TTYPEn.  Columns whose decoding
# needs more than a dtype (scaling, bits, heap arrays, TDIM) send the table back to
# astropy, so values are always astropy's.

_TFORM = re.compile(r"^\s*(\d*)([LXBIJKAEDCMPQ])(.*)$")
_TFORM_DTYPES = {
    "L": "u1", "B": "u1", "I": ">i2", "J": ">i4", "K": ">i8", "E": ">f4", "D": ">f8", "C": ">c8", "M": ">c16",
}  # fmt: skip
_ASTROPY_ONLY = frozenset("XPQ")
_TDIM = re.compile(r"^\s*\(\s*(\d+(?:\s*,\s*\d+)*)\s*\)\s*$")


class TableData:
    """The rows of a FITS binary table: columns by name, cells by (name, row).

    Logical (``L``) columns come out as bool and strings as ``bytes`` from the numpy
    path (``str`` from astropy's); readers strip and decode either.
    """

    def __init__(self, array: np.ndarray, names: tuple[str, ...], logical: frozenset[str] = frozenset()):
        self._array = array
        self.names = names
        self._logical = logical

    def __len__(self) -> int:
        return len(self._array)

    def column(self, name: str) -> np.ndarray:
        values = self._array[name]
        return values == ord("T") if name in self._logical else values

    def cell(self, name: str, row: int) -> Any:
        value = self._array[name][row]
        return bool(value == ord("T")) if name in self._logical else value

    def row(self, index: int) -> Mapping[str, Any]:
        """Cells of one row by column name, looked up on access (a row may have hundreds)."""
        return _TableRow(self, index)


class _TableRow(Mapping[str, Any]):
    def __init__(self, table: TableData, index: int):
        self._table = table
        self._index = index

    def __getitem__(self, name: str) -> Any:
        if name not in self._table.names:
            raise KeyError(name)
        return self._table.cell(name, self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.names)

    def __len__(self) -> int:
        return len(self._table.names)


_CARD_STRING = re.compile(r"'((?:[^']|'')*)'")


def _raw_cards(block: bytes) -> dict[str, str]:
    """Keyword -> value text of a header's fixed-format cards (strings unquoted).

    Only the table-layout cards are read this way; astropy parses every card's value
    through its configuration on each access, which costs more than decoding the rows.
    """
    cards: dict[str, str] = {}
    text = block.decode("ascii", "replace")
    for start in range(0, len(text) - 79, 80):
        card = text[start : start + 80]
        keyword = card[:8].rstrip()
        if keyword == "END":
            break
        if card[8:10] != "= ":
            continue
        value = card[10:].lstrip()
        if value.startswith("'"):
            match = _CARD_STRING.match(value)
            cards[keyword] = match.group(1).replace("''", "'").rstrip() if match else value
        else:
            cards[keyword] = value.split("/", 1)[0].strip()
    return cards


def _card_int(path: object, cards: Mapping[str, str], key: str, hdu: str) -> int:
    try:
        return int(cards.get(key, "0") or 0)
    except ValueError as err:
        raise ReaderError(path, f"{key} is not an integer: {cards[key]!r}", hdu=hdu) from err


def _table_dtype(path: object, cards: Mapping[str, str], hdu: str) -> tuple[np.dtype, tuple[str, ...], frozenset[str]] | None:
    """numpy dtype of one row, or None where astropy must decode; ReaderError for a broken TFORM."""
    n_fields = _card_int(path, cards, "TFIELDS", hdu)
    names: list[str] = []
    formats: list[Any] = []
    logical: set[str] = set()
    for i in range(1, n_fields + 1):
        name = cards.get(f"TTYPE{i}", "").strip() or f"col{i}"
        tform = cards.get(f"TFORM{i}", "")
        match = _TFORM.match(tform)
        if match is None:
            raise ReaderError(path, f"TFORM{i} = {tform!r} is not a FITS binary-table format", hdu=hdu, column=name)
        repeat_text, code, rest = match.groups()
        if any(f"{key}{i}" in cards for key in ("TSCAL", "TZERO")) or code in _ASTROPY_ONLY or name.endswith("&"):
            return None  # scaling, bit or heap columns, long-string names: astropy's rules
        repeat = int(repeat_text) if repeat_text else 1
        shape: tuple[int, ...] = (repeat,)
        if f"TDIM{i}" in cards:
            dims = _TDIM.match(cards[f"TDIM{i}"])
            if dims is None or code == "A":
                return None  # string arrays and malformed TDIM: astropy's rules
            shape = tuple(int(d) for d in reversed(dims.group(1).split(",")))  # FITS order is Fortran's
            if math.prod(shape) != repeat:
                return None
        if code == "A":
            if repeat == 0:
                return None
            formats.append(f"S{repeat}")
        else:
            if rest.strip() or repeat == 0:
                return None  # a repeat with trailing text, or an empty column: leave it to astropy
            formats.append(_TFORM_DTYPES[code] if shape == (1,) else (_TFORM_DTYPES[code], shape))
            if code == "L":
                logical.add(name)
        names.append(name)
    if len({n.upper() for n in names}) != len(names):
        return None  # astropy's rules for clashing names apply
    dtype = np.dtype({"names": names, "formats": formats})
    width = _card_int(path, cards, "NAXIS1", hdu)
    if dtype.itemsize != width:
        raise ReaderError(
            path, f"columns add up to {dtype.itemsize} bytes per row but NAXIS1 = {width}: a TFORMn is wrong", hdu=hdu
        )
    return dtype, tuple(names), frozenset(logical)


def read_table(path: str | os.PathLike[str], hdu: fits.hdu.base._BaseHDU | rawfits.RawHdu) -> TableData | None:
    """A binary table HDU's rows (None when it has none), decoded by numpy where possible.

    For an uncompressed file the header block and the rows are read straight from the
    file at the HDU's offsets (``open_fits`` has checked that the rows lie within the
    file); for a gzipped file, or columns numpy cannot decode alone, astropy decodes them.
    """
    if str(hdu.header.get("XTENSION", "")).strip() != "BINTABLE":
        raise ReaderError(path, f"expected a binary table, found XTENSION = {hdu.header.get('XTENSION')!r}", hdu=hdu.name)
    if isinstance(hdu, rawfits.RawHdu):
        return _raw_table(path, hdu)
    info = hdu.fileinfo()
    if info is not None and getattr(info["file"], "compression", None) is None:
        table = _uncompressed_table(path, hdu.name, info["hdrLoc"], info["datLoc"])
        if table is not _UNDECODED:
            return table
    try:
        data = hdu_data(path, hdu)
    except fits.VerifyError as err:
        raise ReaderError(path, f"cannot decode the table: {err}", hdu=hdu.name) from err
    if data is None or len(data) == 0:
        return None
    return TableData(data, tuple(data.columns.names))


#: Returned by _uncompressed_table when numpy cannot decode the columns alone.
_UNDECODED = object()


def _uncompressed_table(path: str | os.PathLike[str], name: str, header_at: int, data_at: int):
    """Rows of an uncompressed binary table HDU decoded by numpy at its offsets: from the
    checksummed bytes when ``open_fits`` kept them (so what is parsed is what was hashed),
    else from the file. None when it has no rows, ``_UNDECODED`` when numpy cannot."""
    kept = rawfits.preloaded_bytes(path)
    with ExitStack() as stack:
        if kept is None:
            fh = stack.enter_context(open(path, "rb"))
            fh.seek(header_at)
            header = fh.read(data_at - header_at)
        else:
            header = kept[header_at:data_at]
        cards = _raw_cards(header)
        layout = _table_dtype(path, cards, name)
        if layout is None:
            return _UNDECODED
        dtype, names, logical = layout
        n_rows = _card_int(path, cards, "NAXIS2", name)
        if n_rows == 0:
            return None
        if kept is None:
            array = np.fromfile(fh, dtype=dtype, count=n_rows)
        else:
            available = max(len(kept) - data_at, 0) // dtype.itemsize
            count = min(n_rows, available)
            array = np.frombuffer(kept, dtype=dtype, count=count, offset=data_at) if count else np.empty(0, dtype)
    if len(array) != n_rows:
        raise ReaderError(path, f"expected {n_rows} rows, the file holds {len(array)}: truncated file", hdu=name)
    return TableData(array, names, logical)


def _raw_table(path: str | os.PathLike[str], hdu: rawfits.RawHdu) -> TableData | None:
    cards = hdu.header.texts
    if "table_layout" in hdu.header.memo:  # the same header seen in an earlier file
        layout = hdu.header.memo["table_layout"]
    else:
        layout = hdu.header.memo["table_layout"] = _table_dtype(path, cards, hdu.name)
    if layout is None:
        # Columns only astropy decodes: open the file its way (rare; not SDSS's tables).
        with open_fits(path) as hdul:
            table = read_table(path, hdul[hdu.index])
            return None if table is None else TableData(table._array.copy(), table.names, table._logical)
    dtype, names, logical = layout
    n_rows = _card_int(path, cards, "NAXIS2", hdu.name)
    if n_rows == 0:
        return None
    # The scan checked that the rows lie within the file's bytes.
    array = np.frombuffer(hdu.buffer, dtype=dtype, count=n_rows, offset=hdu.data_offset)
    return TableData(array, names, logical)


@lru_cache(maxsize=64)
def _by_upper(names: tuple[str, ...]) -> dict[str, str]:
    # A table's names tuple is shared by every file with the same header (rawfits), and a
    # reader looks up a dozen columns among hundreds per file.
    return {n.upper(): n for n in names}


def find_column(names: Iterable[str], *candidates: str) -> str | None:
    """The actual column name matching the first candidate, case-insensitively, or None."""
    by_upper = _by_upper(names) if isinstance(names, tuple) else {n.upper(): n for n in names}
    for cand in candidates:
        if cand.upper() in by_upper:
            return by_upper[cand.upper()]
    return None
