"""The reader protocol and the checks every reader shares.

One place for the rules a file must pass before its rows reach the loader: wavelength
grids strictly increasing, array shapes that agree, no NaN/inf flux where ivar > 0, no
negative ivar, no absurd array sizes, positions in range, unique object ids, and the
air -> vacuum conversion.  Every failure raises :class:`ReaderError` naming the file,
the HDU/column and the problem.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
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
from skyledger.compute.linelist import air_to_vacuum, vacuum_to_air
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
    "require_hdu",
    "hdu_data",
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


def _looks_like_fits(path: Path) -> bool:
    """First card is SIMPLE = T, plain or gzipped; the cheapest possible rejection of junk."""
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
            raise ReaderError(
                path,
                f"header claims {n_bytes} data bytes but the file ends "
                f"{file_size - info['datLoc']} bytes after the header: truncated file",
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
    try:
        if not _looks_like_fits(p):
            raise ReaderError(path, "not a FITS file (no 'SIMPLE = T' card at the start)")
        compressed = _is_gzip(p)
        file_size = None if compressed else p.stat().st_size
        with warnings.catch_warnings():
            # astropy's "file may have been truncated" warning is replaced by our own check.
            warnings.simplefilter("ignore", AstropyWarning)
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


def require_hdu(path: object, hdul: fits.HDUList, *names: str) -> fits.hdu.base._BaseHDU:
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


def find_column(names: Iterable[str], *candidates: str) -> str | None:
    """The actual column name matching the first candidate, case-insensitively, or None."""
    by_upper = {n.upper(): n for n in names}
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
    text = str(raw).strip()
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
