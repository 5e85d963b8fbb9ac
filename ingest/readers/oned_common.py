"""What the 1-D spectrum readers without a survey layout share: header positions, the
``medium``, ``resolution`` and ``flux_unit`` options, estimated errors, float32-safe flux units.

Used by :mod:`.fits_image_1d`, :mod:`.text_spectrum`, :mod:`.starlight` and
:mod:`.nirspec_x1d`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy import units as u

from skyledger.ingest.readers.base import (
    SCATTER_METHOD,
    check_medium,
    check_position,
    ivar_from_scatter,
    normalise_flux_unit,
)
from skyledger.ingest.readers.lenient_fits import lenient_angle
from skyledger.ingest.records import ERROR_ESTIMATE_KEY
from skyledger.schema.errors import ReaderError

__all__ = [
    "F_LAMBDA", "estimated_ivar", "flux_unit_option", "header_position", "medium_option",
    "rescale_flux", "resolution_option",
]  # fmt: skip

#: the unit the readers of this family give f_lambda in when they convert
F_LAMBDA = u.erg / u.s / u.cm**2 / u.AA
#: position card pairs, most specific first (an object position before a pointing)
_POSITION_CARDS = (("OBJRA", "OBJDEC"), ("RA_OBJ", "DEC_OBJ"), ("RA", "DEC"))


def header_position(
    path: object, header: Mapping[str, Any], opts: Mapping[str, Any], *, what: str, hdu: str | None = None
) -> tuple[float | None, float | None, str | None]:
    """(ra, dec, where from): options ``ra``/``dec``, else the first card pair present
    (OBJRA/OBJDEC, RA_OBJ/DEC_OBJ, RA/DEC; degrees, or sexagesimal strings with RA in
    hours); unparsable cards are a ReaderError naming them."""
    if "ra" in opts or "dec" in opts:
        ra, dec = check_position(path, opts.get("ra"), opts.get("dec"), what=what)
        return ra, dec, "options"
    for ra_key, dec_key in _POSITION_CARDS:
        if ra_key in header and dec_key in header:
            ra_raw, dec_raw = header[ra_key], header[dec_key]
            ra, dec = lenient_angle(ra_raw, u.hourangle), lenient_angle(dec_raw, u.deg)
            if ra is None or dec is None:
                raise ReaderError(
                    path, f"cannot read the position cards {ra_key} = {ra_raw!r}, {dec_key} = {dec_raw!r}", hdu=hdu
                )
            ra, dec = check_position(path, ra, dec, what=what, hdu=hdu)
            return ra, dec, f"{ra_key}/{dec_key}"
    return None, None, None


def medium_option(path: object, opts: Mapping[str, Any], default: str) -> str:
    """The ``medium`` option ('air' or 'vacuum', any case) or ``default``."""
    return check_medium(path, opts.get("medium") or default)


def resolution_option(path: object, opts: Mapping[str, Any], n: int) -> np.ndarray | None:
    """A constant R array from option ``resolution``, or None (the loader flags NO_RESOLUTION)."""
    if opts.get("resolution") is None:
        return None
    try:
        r = float(opts["resolution"])
    except (TypeError, ValueError):
        r = float("nan")
    if not (np.isfinite(r) and r > 0):
        raise ReaderError(path, f"option resolution must be a positive R = lambda/FWHM, got {opts['resolution']!r}")
    return np.full(n, r, dtype=np.float32)


def estimated_ivar(flux: np.ndarray, meta: dict[str, Any], good: np.ndarray | None = None) -> np.ndarray:
    """ivar from the spectrum's own scatter (:func:`ivar_from_scatter`), recorded in ``meta``."""
    meta[ERROR_ESTIMATE_KEY] = SCATTER_METHOD
    return ivar_from_scatter(flux, good)


def rescale_flux(flux: np.ndarray, unit: str | None) -> tuple[float, str | None]:
    """(factor, unit): a flux in a plain cgs f_lambda unit with tiny values (1e-17 erg/s/cm2/A)
    is multiplied by ``factor`` = 10^-k and its unit becomes ``1e<k> erg / (Angstrom s cm2)``,
    so that ivar = 1/sigma^2 stays far inside float32 (1/(1e-20)^2 = 1e40 overflows it);
    (1.0, unit) for anything else."""
    if not unit:
        return 1.0, unit
    try:
        parsed = u.Unit(unit)
        if not parsed.is_equivalent(F_LAMBDA):
            return 1.0, unit
        to_cgs = parsed.to(F_LAMBDA)
    except (ValueError, u.UnitConversionError):
        return 1.0, unit
    if not np.isclose(to_cgs, 1.0):
        return 1.0, unit  # already a scaled unit (1e-17 erg/s/cm2/A): kept as the file gives it
    values = np.abs(np.asarray(flux, dtype=np.float64)) * to_cgs
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0 or np.median(values) > 1e-10:
        return 1.0, unit
    k = int(np.floor(np.log10(np.median(values))))
    return 10.0**-k, (u.Unit(f"1e{k}") * F_LAMBDA).to_string()


def flux_unit_option(path: object, opts: Mapping[str, Any]) -> str | None:
    """Option ``flux_unit`` in astropy's form (None when not given); an unreadable one is an error."""
    raw = opts.get("flux_unit")
    if raw is None:
        return None
    unit = normalise_flux_unit(str(raw))
    if unit is None:
        raise ReaderError(path, f"option flux_unit {raw!r} is not a unit astropy can read")
    return unit
