"""Tangent-plane offsets and the physical scale of an arcsecond.

Cosmology: astropy's ``Planck18`` (Planck 2018 TT,TE,EE+lowE+lensing+BAO, Planck
Collaboration 2020, A&A 641, A6, Table 2 last column: H0 = 67.66, Omega_m = 0.30966).
A length on the sky converts with the angular-diameter distance: 1 arcsec is
D_A(z) * pi / 648000 (proper kpc).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["COSMOLOGY_NAME", "kpc_per_arcsec", "offsets_to_sky", "sky_offsets"]

COSMOLOGY_NAME = "Planck18"


def sky_offsets(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic standard coordinates (east, north) in arcsec of (ra, dec) about (ra0, dec0), degrees."""
    a, d = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def offsets_to_sky(xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`sky_offsets`: (ra, dec) in degrees, ra in [0, 360)."""
    x, y = np.radians(np.asarray(xi, dtype=np.float64) / 3600.0), np.radians(np.asarray(eta, dtype=np.float64) / 3600.0)
    d0, a0 = math.radians(dec0), math.radians(ra0)
    denom = math.cos(d0) - y * math.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(math.sin(d0) + y * math.cos(d0), np.hypot(x, denom))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def kpc_per_arcsec(z: np.ndarray) -> np.ndarray:
    """Proper kpc per arcsec at redshift ``z`` (Planck18); NaN where z is missing or not > 0."""
    from astropy.cosmology import Planck18

    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    out = np.full(z.shape, np.nan)
    ok = np.isfinite(z) & (z > 0)
    if ok.any():
        out[ok] = Planck18.angular_diameter_distance(z[ok]).to_value("kpc") * math.pi / 648000.0
    return out
