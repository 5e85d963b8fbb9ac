"""Opening survey FITS files safely: every structural problem becomes a ReaderError.

:func:`open_fits` reads all headers up front and checks each HDU's claimed size against
a sane limit and the file's length (:func:`check_hdu_size`), so a truncated or corrupt
file is rejected before anything is allocated; :func:`open_tables` scans a plain,
well-formed file without astropy (:mod:`skyledger.ingest.readers.rawfits`). Sniffing
goes through :func:`fits_summary`, which never raises. Binary tables are decoded in
:mod:`skyledger.ingest.readers.fits_tables`.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from skyledger.ingest.diagnose import describe
from skyledger.ingest.readers import rawfits
from skyledger.schema.errors import ReaderError

__all__ = [
    "MAX_ARRAY_ELEMENTS", "MAX_STREAMED_ELEMENTS", "FitsSummary", "check_hdu_size", "fits_summary", "hdu_data",
    "header_float", "open_fits", "open_tables", "require_hdu",
]  # fmt: skip

#: Largest array (number of elements) a reader will allocate: 5e8 float32 is 2 GB, more
#: than any single spectrum or cube extension of the surveys we read.
MAX_ARRAY_ELEMENTS = 500_000_000
#: Largest cube a reader streams from an uncompressed file through a memory map (only a
#: slab of rows is ever in memory): 1e10 float32 is a 40 GB mosaic.
MAX_STREAMED_ELEMENTS = 10_000_000_000


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
