"""The reader protocol and the checks every reader shares.

One place for the rules a file must pass before its rows reach the loader: wavelength
grids strictly increasing, array shapes that agree, no NaN/inf flux where ivar > 0, no
negative ivar, no absurd array sizes, positions in range, unique object ids, and the
air -> vacuum conversion.  Every failure raises :class:`ReaderError` naming the file,
the HDU/column and the problem.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

# The conversion is defined once, in the leaf module compute.linelist (compute must not
# import ingest); readers use it from here.
from skyledger.schema.linelist import air_to_vacuum, vacuum_to_air
from skyledger.ingest.readers import rawfits
from skyledger.ingest.diagnose import describe
from skyledger.ingest.records import FileContents, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = [
    "Reader",
    "ReaderError",
    "MAX_ARRAY_ELEMENTS",
    "MAX_STREAMED_ELEMENTS",
    "FitsSummary",
    "air_to_vacuum",
    "vacuum_to_air",
    "fits_summary",
    "open_fits",
    "open_tables",
    "require_hdu",
    "hdu_data",
    "TableData",
    "read_table",
    "check_hdu_size",
    "check_options",
    "check_position",
    "check_unique_ids",
    "check_wavelength",
    "finalize_spectrum",
    "find_column",
    "normalise_flux_unit",
    "header_float",
    "file_stem",
    "resolution_from_sigma",
]

#: Largest array (number of elements) a reader will allocate: 5e8 float32 is 2 GB, more
#: than any single spectrum or cube extension of the surveys we read.
MAX_ARRAY_ELEMENTS = 500_000_000
#: Largest cube a reader streams from an uncompressed file through a memory map (only a
#: slab of rows is ever in memory): 1e10 float32 is a 40 GB mosaic.
MAX_STREAMED_ELEMENTS = 10_000_000_000

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@runtime_checkable
class Reader(Protocol):
    """What the loader needs from a file format."""

    name: str

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        """Cheap, content-based: does this file look like my format? Never raises."""
        ...

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        """Read and validate the file; raise ReaderError on anything wrong."""
        ...


# --------------------------------------------------------------------------- options


def check_options(path: object, options: Mapping[str, Any] | None, known: Iterable[str]) -> dict[str, Any]:
    """Copy of ``options`` after rejecting unknown keys (a typo must not pass silently)."""
    opts = dict(options or {})
    allowed = set(known)
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ReaderError(path, f"unknown reader option(s) {unknown}; known options: {sorted(allowed)}")
    return opts


def file_stem(path: str | os.PathLike[str]) -> str:
    """File name without the FITS/compression suffixes (``a.fits.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".fz", ".fits", ".fit", ".fts", ".csv", ".ecsv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


# --------------------------------------------------------------------------- FITS access


@dataclass(frozen=True)
class FitsSummary:
    """Headers of the first HDUs of a FITS file, for sniffing: (EXTNAME upper-cased, header)."""

    primary: fits.Header
    extensions: tuple[tuple[str, fits.Header], ...]

    def names(self) -> list[str]:
        return [name for name, _ in self.extensions]

    def get(self, name: str) -> fits.Header | None:
        for ext_name, header in self.extensions:
            if ext_name == name.upper():
                return header
        return None

    def columns(self, header: fits.Header) -> set[str]:
        """Upper-cased TTYPE names of a binary-table header."""
        n = int(header.get("TFIELDS", 0) or 0)
        return {str(header.get(f"TTYPE{i}", "")).strip().upper() for i in range(1, n + 1)}


def _looks_like_fits(path: Path, data: bytes | None = None) -> bool:
    """First card is SIMPLE = T, plain or gzipped; the cheapest possible rejection of junk.
    ``data``: the file's bytes, already read."""
    if data is not None:
        head = data[:80]
        if head[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as gz:
                head = gz.read(80)
        return head.startswith(b"SIMPLE  =") and head[10:30].strip() == b"T"
    with open(path, "rb") as fh:
        head = fh.read(80)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(path, "rb") as gz:
            head = gz.read(80)
    return head.startswith(b"SIMPLE  =") and head[10:30].strip() == b"T"


@lru_cache(maxsize=64)
def _summary_cached(path: str, mtime_ns: int, size: int, max_hdus: int) -> FitsSummary | None:
    # Keyed on mtime and size so that detect_reader's several sniffs open the file once,
    # yet a file rewritten in place is looked at again.
    del mtime_ns, size
    p = Path(path)
    if not _looks_like_fits(p):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(p, lazy_load_hdus=True, memmap=False) as hdul:
            primary = hdul[0].header.copy()
            exts: list[tuple[str, fits.Header]] = []
            for i in range(1, max_hdus + 1):
                try:
                    hdu = hdul[i]
                except IndexError:
                    break
                exts.append((str(hdu.name).upper(), hdu.header.copy()))
    return FitsSummary(primary, tuple(exts))


def fits_summary(path: str | os.PathLike[str], max_hdus: int = 8) -> FitsSummary | None:
    """Headers of the primary and the first ``max_hdus`` extensions, or None if not FITS.

    Never raises: sniffing must survive any junk, so every failure (unreadable, not FITS,
    broken header) means "not FITS" here; ``read`` reports the real problem.
    """
    try:
        st = os.stat(path)
        return _summary_cached(str(path), st.st_mtime_ns, st.st_size, max_hdus)
    except Exception:  # noqa: BLE001 - sniffing is a yes/no question on arbitrary bytes
        return None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def check_hdu_size(
    path: object, hdu: fits.hdu.base._BaseHDU, *, file_size: int | None, max_elements: int = MAX_ARRAY_ELEMENTS
) -> None:
    """Reject an HDU whose header claims an absurd array, before anything is allocated."""
    header = hdu.header
    naxis = int(header.get("NAXIS", 0) or 0)
    if naxis == 0:
        return
    dims = [int(header.get(f"NAXIS{i}", 0) or 0) for i in range(1, naxis + 1)]
    if any(d < 0 for d in dims):
        raise ReaderError(path, f"negative axis length in header: NAXISn = {dims}", hdu=hdu.name)
    n_elements = 1
    for d in dims:
        n_elements *= d
    is_table = str(header.get("XTENSION", "")).strip() == "BINTABLE"
    if is_table:
        # NAXIS1 is the row width in bytes, PCOUNT the heap of variable-length arrays.
        n_bytes = n_elements + int(header.get("PCOUNT", 0) or 0)
        too_big = n_bytes > 4 * max_elements
    else:
        n_bytes = n_elements * max(abs(int(header.get("BITPIX", 8) or 8)) // 8, 1)
        too_big = n_elements > max_elements
    if too_big:
        raise ReaderError(
            path,
            f"header claims an array of {dims} ({n_elements:.3g} elements), beyond the sane "
            f"limit of {max_elements:.1e}; the file is corrupt or not a survey product",
            hdu=hdu.name,
        )
    if file_size is not None:
        info = hdu.fileinfo()
        if info is not None and info["datLoc"] + n_bytes > file_size:
            present = file_size - info["datLoc"]
            # Cut mid-block is certainly a truncation; on a block boundary the header may
            # as well overstate the data (NAXISn larger than what was written).
            why = (
                "truncated file (it ends in the middle of a 2880-byte block)" if file_size % 2880 else
                "the header overstates the data size (NAXISn), or the file was truncated at a block boundary"
            )  # fmt: skip
            raise ReaderError(
                path,
                f"header claims {n_bytes} data bytes ({dims}) but the file ends {present} bytes after the header: {why}",
                hdu=hdu.name,
            )


@contextmanager
def open_fits(path: str | os.PathLike[str], *, streamed: bool = False) -> Iterator[fits.HDUList]:
    """Open a FITS file for reading with every structural problem turned into ReaderError.

    All headers are read up front, each HDU's claimed size is checked against the sane
    limit and (for uncompressed files) against the file's length, so a truncated or
    corrupt file is rejected here rather than half-read later.  ``streamed`` (cube
    readers that read slabs through a memory map) raises the limit for uncompressed
    files to :data:`MAX_STREAMED_ELEMENTS`; a gzipped file is always decompressed whole,
    so it keeps :data:`MAX_ARRAY_ELEMENTS`.
    """
    p = Path(path)
    data = rawfits.preloaded_bytes(path)  # the checksummed bytes, during an ingest
    try:
        if not _looks_like_fits(p, data):
            raise ReaderError(path, describe(p))  # empty, or what it is instead
        compressed = data[:2] == b"\x1f\x8b" if data is not None else _is_gzip(p)
        with warnings.catch_warnings():
            # astropy's "file may have been truncated" warning is replaced by our own check.
            warnings.simplefilter("ignore", AstropyWarning)
            if data is not None:
                file_size = None if compressed else len(data)
                source: Any = io.BytesIO(data)
                if compressed:  # astropy detects gzip by file name or magic only on real files
                    source = gzip.GzipFile(fileobj=source, mode="rb")
                hdul = fits.open(source, memmap=False, lazy_load_hdus=False)
            else:
                file_size = None if compressed else p.stat().st_size
                hdul = fits.open(p, memmap=not compressed, lazy_load_hdus=False)
    except ReaderError:
        raise
    except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as err:
        raise ReaderError(path, f"not a readable FITS file: {err}") from err
    try:
        limit = MAX_STREAMED_ELEMENTS if streamed and not compressed else MAX_ARRAY_ELEMENTS
        for hdu in hdul:
            check_hdu_size(path, hdu, file_size=file_size, max_elements=limit)
        if file_size is not None and file_size % 2880 != 0:
            raise ReaderError(
                path, f"file length {file_size} is not a whole number of 2880-byte FITS blocks: truncated file"
            )
        yield hdul
    finally:
        hdul.close()


@contextmanager
def open_tables(path: str | os.PathLike[str]) -> Iterator[fits.HDUList | rawfits.RawFits]:
    """``open_fits`` for readers that need only header values and binary tables.

    A plain, well-formed file is scanned without astropy (:mod:`.rawfits`, about 10x
    cheaper); anything else, broken files included, goes through :func:`open_fits`.
    Either way the HDUs have ``.name`` and a ``.header`` mapping, work with
    :func:`require_hdu` and :func:`read_table`, and the list supports ``len``, indexing
    by position or EXTNAME, and iteration. Header values are plain Python values.
    """
    try:
        raw = rawfits.scan(path, max_elements=MAX_ARRAY_ELEMENTS)
    except OSError:
        raw = None  # open_fits words the problem (missing, unreadable, ...)
    if raw is not None:
        yield raw
        return
    with open_fits(path) as hdul:
        yield hdul


def require_hdu(path: object, hdul: fits.HDUList | rawfits.RawFits, *names: str) -> Any:
    """The first HDU present among ``names`` (EXTNAME, case-insensitive), else ReaderError."""
    for name in names:
        if name in hdul:
            return hdul[name]
    present = [h.name for h in hdul]
    raise ReaderError(path, f"required HDU missing; HDUs present: {present}", hdu="/".join(names))


def hdu_data(path: object, hdu: fits.hdu.base._BaseHDU) -> Any:
    """The data of an HDU, with astropy's low-level failures (truncation) as ReaderError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            return hdu.data
    except (OSError, ValueError, TypeError, EOFError) as err:
        raise ReaderError(path, f"cannot read data: {err}", hdu=hdu.name) from err


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


def header_float(header: Mapping[str, Any], *keys: str) -> float | None:
    """The first of ``keys`` present in a header as a finite float, else None."""
    for key in keys:
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value):
                return value
    return None


# --------------------------------------------------------------------------- units

_UNIT_FIXES = (
    (re.compile(r"\bAng\b"), "Angstrom"),
    (re.compile(r"\^"), "**"),
    # Per-spaxel and per-fibre are bookkeeping words, not physical units.
    (re.compile(r"\s*/\s*(spaxel|fiber|fibre|pixel)\b", re.IGNORECASE), ""),
)


def normalise_flux_unit(raw: str | None) -> str | None:
    """An astropy-parsable form of a file's flux unit string, or None if it cannot be read."""
    if raw is None or not str(raw).strip():
        return None
    return _normalise_unit_text(str(raw).strip())


# A survey writes the same few BUNIT strings into every file, and a failed astropy parse
# (SDSS's "1E-17 erg/cm^2/s/Ang" fails before the fixed-up form succeeds) costs ~3 ms
# because astropy builds "did you mean" suggestions; the answer depends on the text only.
@lru_cache(maxsize=256)
def _normalise_unit_text(text: str) -> str | None:
    candidates = [text]
    fixed = text
    for pattern, repl in _UNIT_FIXES:
        fixed = pattern.sub(repl, fixed)
    candidates.append(fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        for cand in candidates:
            for fmt in (None, "fits", "vounit", "ogip"):
                try:
                    return u.Unit(cand, format=fmt).to_string()
                except ValueError:
                    continue
    return None


# --------------------------------------------------------------------------- validation


def check_wavelength(
    path: object, wave: np.ndarray, *, hdu: str | None = None, column: str | None = None
) -> np.ndarray:
    """A float64 1-D copy of ``wave``, after checking it is finite, positive, strictly increasing."""
    w = np.asarray(wave, dtype=np.float64)
    if w.ndim != 1 or w.size < 2:
        raise ReaderError(
            path, f"wavelength must be a 1-D array of >= 2 pixels, got shape {w.shape}", hdu=hdu, column=column
        )
    if not np.all(np.isfinite(w)):
        raise ReaderError(
            path, f"wavelength has {int((~np.isfinite(w)).sum())} non-finite values", hdu=hdu, column=column
        )
    if w[0] <= 0:
        raise ReaderError(path, f"wavelength must be positive, first pixel is {w[0]}", hdu=hdu, column=column)
    steps = np.diff(w)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0))
        raise ReaderError(
            path,
            f"wavelength is not strictly increasing: pixel {bad + 1} ({w[bad + 1]}) follows {w[bad]}",
            hdu=hdu,
            column=column,
        )
    return w


def _missing(value: object) -> bool:
    """None, or a NaN of any float type (numpy float32 is not a Python float)."""
    if value is None:
        return True
    try:
        return bool(np.isnan(value))  # type: ignore[call-overload]
    except TypeError:
        return False


def check_position(
    path: object,
    ra: float | None,
    dec: float | None,
    *,
    what: str = "",
    hdu: str | None = None,
    column: str | None = None,
) -> tuple[float | None, float | None]:
    """(ra, dec) as floats in range, (None, None) when both are missing, else ReaderError."""
    missing_ra, missing_dec = _missing(ra), _missing(dec)
    if missing_ra and missing_dec:
        return None, None
    label = f" of {what}" if what else ""
    if missing_ra or missing_dec:
        raise ReaderError(path, f"position{label} has only one of ra/dec ({ra!r}, {dec!r})", hdu=hdu, column=column)
    try:
        ra_f, dec_f = float(ra), float(dec)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ReaderError(path, f"position{label} is not numeric ({ra!r}, {dec!r})", hdu=hdu, column=column) from err
    if not (np.isfinite(ra_f) and 0.0 <= ra_f < 360.0):
        raise ReaderError(path, f"ra{label} = {ra_f} is outside [0, 360) degrees", hdu=hdu, column=column)
    if not (np.isfinite(dec_f) and -90.0 <= dec_f <= 90.0):
        raise ReaderError(path, f"dec{label} = {dec_f} is outside [-90, 90] degrees", hdu=hdu, column=column)
    return ra_f, dec_f


def check_unique_ids(path: object, ids: Iterable[str], *, hdu: str | None = None, column: str | None = None) -> None:
    """Reject a file that names the same object twice."""
    seen: set[str] = set()
    dups: list[str] = []
    for oid in ids:
        if oid in seen and oid not in dups:
            dups.append(oid)
        seen.add(oid)
    if dups:
        shown = ", ".join(repr(d) for d in dups[:5]) + (" ..." if len(dups) > 5 else "")
        raise ReaderError(path, f"duplicate object id(s) within the file: {shown}", hdu=hdu, column=column)


def resolution_from_sigma(wave: np.ndarray, sigma_angstrom: np.ndarray) -> np.ndarray:
    """R = lambda / FWHM from a Gaussian LSF sigma in Angstrom; NaN where sigma <= 0 or unknown."""
    sigma = np.asarray(sigma_angstrom, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        res = np.asarray(wave, dtype=np.float64) / (_FWHM_PER_SIGMA * sigma)
    return np.where(np.isfinite(res) & (sigma > 0), res, np.nan).astype(np.float32)


def finalize_spectrum(path: object, row: SpectrumRow, *, hdu: str | None = None) -> SpectrumRow:
    """Check a pixel spectrum against the conventions of ``records`` and normalise dtypes.

    Rejects: non-monotonic or non-finite wavelengths, arrays whose shapes disagree,
    negative or non-finite ivar, NaN/inf flux where ivar > 0.  Normalises: flux where
    ivar == 0 that is NaN/inf becomes 0 (so sums over masked pixels stay finite), and a
    resolution that is non-finite or <= 0 becomes NaN ("unknown").
    """
    where = f"spectrum {row.object_id!r}"
    if row.wave is None or row.flux is None or row.ivar is None:
        raise ReaderError(path, f"{where}: wave, flux and ivar are all required", hdu=hdu)
    row.wave = check_wavelength(path, row.wave, hdu=hdu)
    n = row.wave.shape[0]
    arrays = {"flux": row.flux, "ivar": row.ivar, "mask": row.mask, "resolution": row.resolution}
    for label, arr in arrays.items():
        if arr is not None and np.shape(arr) != (n,):
            raise ReaderError(path, f"{where}: {label} has shape {np.shape(arr)}, wavelength has ({n},)", hdu=hdu)
    ivar = np.asarray(row.ivar, dtype=np.float32)
    flux = np.asarray(row.flux, dtype=np.float32)
    if not np.all(np.isfinite(ivar)):
        raise ReaderError(path, f"{where}: ivar has {int((~np.isfinite(ivar)).sum())} NaN/inf values", hdu=hdu)
    if np.any(ivar < 0):
        raise ReaderError(path, f"{where}: ivar has {int((ivar < 0).sum())} negative values", hdu=hdu)
    bad_flux = ~np.isfinite(flux)
    if np.any(bad_flux & (ivar > 0)):
        raise ReaderError(
            path, f"{where}: flux is NaN/inf at {int((bad_flux & (ivar > 0)).sum())} pixels with ivar > 0", hdu=hdu
        )
    if np.any(bad_flux):
        flux = np.where(bad_flux, np.float32(0.0), flux)
    row.flux = flux
    row.ivar = ivar
    row.mask = np.zeros(n, dtype=np.int32) if row.mask is None else np.asarray(row.mask).astype(np.int32, copy=False)
    if row.resolution is not None:
        res = np.asarray(row.resolution, dtype=np.float32)
        row.resolution = np.where(np.isfinite(res) & (res > 0), res, np.float32(np.nan)).astype(np.float32)
    return row
