"""Which context a spectrum is classified in: an integrated ``galaxy`` or a ``nebula`` inside one.

The rule order of :mod:`skyledger.compute.classification.diagnostic` depends on it (no SNR
or PN class for an integrated galaxy spectrum; AGN is only a flag for a disc nebula).  The
survey option ``context`` (validated by every reader, ingest/readers/base.py) wins;
otherwise :func:`infer_context` decides from what the database knows about the spectrum's
source.  ``docs/nebula_classification.md`` states the rules and why.
"""

from __future__ import annotations

import math

import numpy as np

from skyledger.compute.classification.diagnostic import CONTEXTS

__all__ = ["MIN_NUCLEUS_RADIUS_ARCSEC", "GALAXY_APERTURE_KPC", "angular_offset_arcsec", "infer_context"]

#: A child sees the nucleus within max(PSF FWHM, this) of its parent's position: a
#: seeing-limited spaxel 1" from the centre still holds nuclear light.
MIN_NUCLEUS_RADIUS_ARCSEC = 1.0
#: A child whose physical aperture is at least this wide integrates a good part of a galaxy
#: (bulge, many HII regions): a design choice, not a published number.
GALAXY_APERTURE_KPC = 1.0


def angular_offset_arcsec(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    """Great-circle separation in arcsec (haversine, degrees in); NaN where a position is missing."""
    r1, d1, r2, d2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))) * 3600.0


def _finite_positive(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) and v > 0 else None


def infer_context(
    *,
    option: str | None,
    has_parent: bool,
    offset_arcsec: float | None = None,
    psf_fwhm_arcsec: float | None = None,
    aperture_kpc: float | None = None,
) -> tuple[str, bool]:
    """``(context, inferred)`` of one spectrum.

    * ``option`` (the survey's ``context``), when set, wins: ``inferred`` is False.
    * A spectrum whose source has no parent (a fibre, a 1-D spectrum, a catalogue row) is
      an integrated ``galaxy`` spectrum.
    * A child (spaxel, bin, region) is ``galaxy`` when it sees the nucleus (its offset from
      the parent's position within max(PSF FWHM, 1")) or its physical aperture is
      >= 1 kpc where known; else ``nebula``.  A child whose offset is unknown is a nebula:
      it was extracted as a region of its parent.
    """
    if option is not None:
        if option not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {option!r}")
        return option, False
    if not has_parent:
        return "galaxy", True
    radius = max(_finite_positive(psf_fwhm_arcsec) or 0.0, MIN_NUCLEUS_RADIUS_ARCSEC)
    if offset_arcsec is not None and math.isfinite(offset_arcsec) and offset_arcsec <= radius:
        return "galaxy", True
    aperture = _finite_positive(aperture_kpc)
    if aperture is not None and aperture >= GALAXY_APERTURE_KPC:
        return "galaxy", True
    return "nebula", True
