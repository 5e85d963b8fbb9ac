"""The reader protocol and the checks every reader shares.

One place for the rules a file must pass before its rows reach the loader: wavelength
grids strictly increasing, array shapes that agree, no NaN/inf flux where ivar > 0, no
negative ivar, positions in range, unique object ids, and the air -> vacuum conversion.
Every failure raises :class:`ReaderError` naming the file, the HDU/column and the
problem. Opening FITS files (absurd array sizes included) is
:mod:`skyledger.ingest.readers.fits_access`, decoding their tables
:mod:`skyledger.ingest.readers.fits_tables`.
"""

from __future__ import annotations

import math

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from astropy import units as u

# The conversion is defined once, in the leaf module schema.linelist (compute must not
# import ingest); readers use it from here.
from skyledger.schema.linelist import air_to_vacuum, vacuum_to_air
from skyledger.ingest.records import ERROR_ESTIMATE_KEY, FileContents, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = [
    "Reader",
    "ReaderError",
    "air_to_vacuum",
    "vacuum_to_air",
    "check_medium",
    "CONTEXT_VALUES",
    "SHARED_OPTIONS",
    "check_options",
    "check_position",
    "check_unique_ids",
    "check_wavelength",
    "finalize_spectrum",
    "normalise_flux_unit",
    "file_stem",
    "resolution_from_sigma",
    "ERROR_ESTIMATE_KEY",
    "ivar_from_scatter",
]

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


#: Options every reader accepts, validated here.  ``context`` tells the nebula
#: classification whether the survey's spectra are integrated galaxies or nebulae inside a
#: galaxy (docs/nebula_classification.md); the reader itself does not use it (the task reads
#: it from survey.options).  The values are those of
#: skyledger.compute.classification.diagnostic.CONTEXTS (ingest does not import compute).
#: ``psf_fwhm_arcsec`` is the survey's seeing FWHM: the ``rotation`` task models beam
#: smearing with it and the nebula classification decides from it whether a child spectrum
#: sees its galaxy's nucleus; it must be a positive number.
SHARED_OPTIONS: tuple[str, ...] = ("context", "psf_fwhm_arcsec")
CONTEXT_VALUES: tuple[str, ...] = ("galaxy", "nebula")


def check_options(path: object, options: Mapping[str, Any] | None, known: Iterable[str]) -> dict[str, Any]:
    """Copy of ``options`` after rejecting unknown keys (a typo must not pass silently) and
    checking the shared options of :data:`SHARED_OPTIONS`."""
    opts = dict(options or {})
    allowed = set(known) | set(SHARED_OPTIONS)
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ReaderError(path, f"unknown reader option(s) {unknown}; known options: {sorted(allowed)}")
    if "context" in opts and opts["context"] not in CONTEXT_VALUES:
        raise ReaderError(
            path, f"option context must be 'galaxy' (integrated spectra) or 'nebula' (regions inside a galaxy), "
            f"got {opts['context']!r}",
        )  # fmt: skip
    # Parsed here rather than by lenient_fits.lenient_float: importing that module pulls in
    # astropy.wcs, and base must stay light (readers are imported only when asked for).
    if "psf_fwhm_arcsec" in opts:
        try:
            psf = float(opts["psf_fwhm_arcsec"])
        except (TypeError, ValueError):
            psf = math.nan
        if not (math.isfinite(psf) and psf > 0):
            raise ReaderError(path, f"option psf_fwhm_arcsec must be a positive number, got {opts['psf_fwhm_arcsec']!r}")
    return opts


def check_medium(path: object, value: object) -> str:
    """'air' or 'vacuum' (any case) from a ``medium`` option or header; ReaderError otherwise."""
    medium = str(value).strip().lower()
    if medium not in ("air", "vacuum"):
        raise ReaderError(path, f"option medium must be 'air' or 'vacuum', got {value!r}")
    return medium


def file_stem(path: str | os.PathLike[str]) -> str:
    """File name without the FITS/compression suffixes (``a.fits.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".fz", ".fits", ".fit", ".fts", ".csv", ".ecsv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


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
# IRAF writes "erg/cm2/s/A": a spectrum's flux is never per ampere.
_AMPERE = re.compile(r"(?<![A-Za-z])A(?![A-Za-z])")


@lru_cache(maxsize=256)
def _normalise_unit_text(text: str) -> str | None:
    if _AMPERE.search(text):
        text = _AMPERE.sub("Angstrom", text)
    fixed = text
    for pattern, repl in _UNIT_FIXES:
        fixed = pattern.sub(repl, fixed)
    # The fixed form first: "/pixel" parses (as astropy's pix) but is bookkeeping, not physics.
    candidates = [fixed, text]
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


#: the method of :func:`ivar_from_scatter`, as recorded under ``ERROR_ESTIMATE_KEY``
SCATTER_METHOD = "der_snr_local"


#: largest lag (pixels) of the second difference: wider, a continuum's curvature and
#: absorption features enter the estimate
_MAX_LAG = 6


def ivar_from_scatter(flux: np.ndarray, good: np.ndarray | None = None, *, half_window: int = 100) -> np.ndarray:
    """Inverse variance of a spectrum that comes without errors, from its own pixel scatter.

    The noise at each pixel is the DER_SNR estimate (Stoehr et al. 2008, ADASS XVII) taken
    over the ``2 * half_window + 1`` pixels around it: the running median of the second
    difference d_i = |2 f_i - f_(i-k) - f_(i+k)| divided by 0.6745 sqrt(6). The median
    ignores the few pixels of an emission line in the window, and the second difference
    cancels a continuum that is linear over 2k pixels.

    DER_SNR uses k = 2 and assumes independent pixels. Spectra resampled onto a finer grid
    (IRAF 1-D products: neighbour correlation ~0.8) have correlated noise, which cancels
    in a short difference: at k = 2 the estimate comes out about 2 times low on them. So
    the lag is chosen per spectrum (:func:`_decorrelation_lag`): the smallest k from 2 on
    at which the spectrum-wide estimate stops growing (by less than 5 % to k + 1), at most
    6. White noise keeps k = 2; a Gaussian resampling kernel of sigma 1.2 pixels gets
    k = 4, within 2 % of the true pixel noise. ivar is then each pixel's own inverse
    variance; the correlation between pixels is not represented, so a fit that treats them
    as independent still underestimates its errors, which is why the loader flags such
    spectra ERROR_ESTIMATED. On white noise the estimate scatters by about 10 % (1 sigma)
    around the true noise with the default window.

    ``good``: pixels that hold data (default: finite flux); others get ivar 0 and do not
    enter any window. A pixel whose window holds fewer than 10 usable differences, or a
    zero scatter, gets ivar 0.
    """
    f = np.asarray(flux, dtype=np.float64)
    ok = np.isfinite(f) if good is None else (np.asarray(good, dtype=bool) & np.isfinite(f))
    n = f.size
    ivar = np.zeros(n, dtype=np.float32)
    if n < 5:
        return ivar
    lag = _decorrelation_lag(f, ok)
    d = _second_differences(f, ok, lag)
    half = int(max(2, min(half_window, n // 2)))
    padded = np.pad(d, half, mode="constant", constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    counts = np.sum(np.isfinite(windows), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows: no estimate there
        sigma = np.nanmedian(windows, axis=1) / _DER_SNR_NORM
    usable = ok & (counts >= 10) & np.isfinite(sigma) & (sigma > 0)
    ivar[usable] = (1.0 / sigma[usable] ** 2).astype(np.float32)
    return ivar


# median |2 f_i - f_(i-k) - f_(i+k)| of independent Gaussian noise: 0.6745 sqrt(6) sigma
_DER_SNR_NORM = 0.6744897501960817 * np.sqrt(6.0)


def _second_differences(f: np.ndarray, ok: np.ndarray, lag: int) -> np.ndarray:
    """|2 f_i - f_(i-lag) - f_(i+lag)| where all three pixels hold data, NaN elsewhere."""
    d = np.full(f.size, np.nan)
    if f.size > 2 * lag:
        inner = ok[lag:-lag] & ok[: -2 * lag] & ok[2 * lag :]
        d[lag:-lag] = np.where(inner, np.abs(2.0 * f[lag:-lag] - f[: -2 * lag] - f[2 * lag :]), np.nan)
    return d


def _decorrelation_lag(f: np.ndarray, ok: np.ndarray) -> int:
    """The lag from which the spectrum-wide DER_SNR estimate no longer grows (see above)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = [np.nanmedian(_second_differences(f, ok, k)) for k in range(2, _MAX_LAG + 2)]
    for k in range(2, _MAX_LAG + 1):
        here, wider = scale[k - 2], scale[k - 1]
        if not (np.isfinite(here) and here > 0 and np.isfinite(wider)) or wider < 1.05 * here:
            return k
    return _MAX_LAG


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
