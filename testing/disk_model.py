"""A thin rotating disk with known truth: geometry, velocity field, lines and continuum.

The model behind the synthetic IFU cubes (:mod:`skyledger.testing.ifu_cubes`) and
velocity maps (:mod:`skyledger.testing.velocity_maps`): arctan rotation curve,
exponential stellar continuum and ionised gas, Gaussian emission lines (H-alpha,
H-beta, [N II], [O III], [S II], [O II]) Doppler-shifted by the disk velocity field,
and optionally a radial metallicity gradient expressed through the Pettini & Pagel
(2004) N2 and O3N2 line ratios.

Geometry: east offset xi = -(CD-rotated x offset), north offset eta; the disk position
angle is measured from north through east to the receding major axis; a point at
(xi, eta) has major-axis coordinate a = xi sin PA + eta cos PA and minor-axis coordinate
b = -xi cos PA + eta sin PA; its deprojected radius is R = sqrt(a^2 + (b / cos i)^2) and
its line-of-sight velocity V = V_sys + V_rot(R) sin i (a / R), with
V_rot(R) = (2 / pi) V_max arctan(R / R_turn).  Lines are shifted as
lambda = lambda_rest,vac (1 + V / c) in vacuum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skyledger.schema.linelist import LINES

__all__ = [
    "C_KMS", "FWHM_PER_SIGMA", "DiskParams", "continuum_shape", "disk_spaxels", "disk_velocity", "field_centre",
    "model_cube", "sky_offsets", "tangent_plane_to_sky",
]  # fmt: skip

C_KMS = 299_792.458
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# Absorption features of an old stellar population (vacuum A, relative depth, sigma A):
# Ca II K and H, the Balmer series, G band, Mg b, Na D; enough to look like a galaxy.
_ABSORPTION = (
    (3934.78, 0.45, 6.0),
    (3969.59, 0.40, 6.0),
    (4102.89, 0.15, 8.0),
    (4305.6, 0.12, 10.0),
    (4341.69, 0.15, 8.0),
    (4862.68, 0.15, 8.0),
    (5176.7, 0.12, 10.0),
    (5270.0, 0.06, 8.0),
    (5894.6, 0.12, 6.0),
    (6564.61, 0.10, 8.0),
    (8500.4, 0.08, 5.0),
    (8544.4, 0.10, 5.0),
    (8664.5, 0.10, 5.0),
)

# Fixed line ratios: [N II] 6584/6548 and [O III] 5007/4959 from the atomic transition
# probabilities (~3.05, ~2.98, Storey & Zeippen 2000); case-B H-alpha/H-beta = 2.86;
# [S II] and [O II] relative to H-alpha / H-beta typical of disk HII regions.
_NII_DOUBLET = 3.05
_OIII_DOUBLET = 2.98
_BALMER_DECREMENT = 2.86
_SII6716_TO_HA = 0.15
_SII6731_TO_HA = 0.11
_OII3726_TO_HB = 1.2
_OII3729_TO_HB = 1.6


@dataclass(frozen=True, slots=True)
class DiskParams:
    """A thin rotating disk and how it is observed; angles in degrees, lengths in arcsec."""

    ra: float = 150.0  # galaxy centre, ICRS degrees
    dec: float = 2.0
    pa: float = 40.0  # position angle of the receding major axis, north through east
    inclination: float = 55.0
    v_sys: float = 6000.0  # km/s (cz)
    v_max: float = 200.0  # asymptotic rotation speed, km/s
    r_turn: float = 2.0  # arctan rotation-curve turnover radius, arcsec
    sigma_gas: float = 40.0  # intrinsic gas velocity dispersion, km/s
    r_gas: float = 3.0  # exponential scale length of the line emission, arcsec
    r_star: float = 2.5  # exponential scale length of the continuum, arcsec
    oh_centre: float = 8.7  # 12 + log(O/H) at the centre
    oh_gradient: float = 0.0  # dex per arcsec of deprojected radius (0 = no gradient)
    snr: float = 30.0  # continuum S/N per pixel at the centre spaxel
    centre_offset: tuple[float, float] = (0.0, 0.0)  # galaxy centre minus field centre (east, north), arcsec


def tangent_plane_to_sky(
    xi_deg: np.ndarray, eta_deg: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: standard coordinates (deg) about (ra0, dec0) -> ra, dec (deg)."""
    xi, eta = np.radians(xi_deg), np.radians(eta_deg)
    d0, a0 = math.radians(dec0), math.radians(ra0)
    denom = math.cos(d0) - eta * math.sin(d0)
    ra = a0 + np.arctan2(xi, denom)
    dec = np.arctan2(math.sin(d0) + eta * math.cos(d0), np.hypot(xi, denom))
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def disk_velocity(xi: np.ndarray, eta: np.ndarray, p: DiskParams) -> tuple[np.ndarray, np.ndarray]:
    """(line-of-sight velocity km/s, deprojected radius arcsec) at sky offsets (arcsec) from the centre."""
    pa, inc = math.radians(p.pa), math.radians(p.inclination)
    a = xi * math.sin(pa) + eta * math.cos(pa)
    b = -xi * math.cos(pa) + eta * math.sin(pa)
    radius = np.hypot(a, b / math.cos(inc))
    v_rot = (2.0 / math.pi) * p.v_max * np.arctan(radius / p.r_turn)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_theta = np.where(radius > 0, a / radius, 0.0)
    return p.v_sys + v_rot * math.sin(inc) * cos_theta, radius


def sky_offsets(n_y: int, n_x: int, scale: float, rotation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CD matrix (deg/pixel) and east/north offsets (arcsec) of every spaxel from CRPIX."""
    th = math.radians(rotation)
    s = scale / 3600.0
    # East is -x on the sky when north is up; rotation turns the pixel grid on the sky.
    cd = np.array([[-s * math.cos(th), s * math.sin(th)], [s * math.sin(th), s * math.cos(th)]])
    yy, xx = np.mgrid[0:n_y, 0:n_x].astype(np.float64)
    dx = xx - (n_x - 1) / 2.0
    dy = yy - (n_y - 1) / 2.0
    xi = (cd[0, 0] * dx + cd[0, 1] * dy) * 3600.0
    eta = (cd[1, 0] * dx + cd[1, 1] * dy) * 3600.0
    return cd, xi, eta


def _line_strengths(radius: np.ndarray, p: DiskParams, ha0: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Integrated flux of each line per spaxel, and 12+log(O/H), from the disk profile."""
    oh = p.oh_centre + p.oh_gradient * radius
    ha = ha0 * np.exp(-radius / p.r_gas)
    # Pettini & Pagel (2004): 12+log(O/H) = 8.90 + 0.57 N2 = 8.73 - 0.32 O3N2.
    n2 = (oh - 8.90) / 0.57
    o3n2 = (8.73 - oh) / 0.32
    hb = ha / _BALMER_DECREMENT
    nii6584 = ha * 10.0**n2
    oiii5007 = hb * 10.0 ** (o3n2 + n2)
    fluxes = {
        "OII3726": hb * _OII3726_TO_HB,
        "OII3729": hb * _OII3729_TO_HB,
        "HB4861": hb,
        "OIII4959": oiii5007 / _OIII_DOUBLET,
        "OIII5007": oiii5007,
        "NII6548": nii6584 / _NII_DOUBLET,
        "HA6563": ha,
        "NII6584": nii6584,
        "SII6716": ha * _SII6716_TO_HA,
        "SII6731": ha * _SII6731_TO_HA,
    }
    return fluxes, oh


def continuum_shape(wave_rest: np.ndarray) -> np.ndarray:
    """A smooth red continuum with absorption lines, 1 at rest 5500 A."""
    shape = (wave_rest / 5500.0) ** -0.6 * (1.0 - 0.5 * np.exp(-(((wave_rest - 3500.0) / 600.0) ** 2)))
    for centre, depth, sigma in _ABSORPTION:
        shape = shape * (1.0 - depth * np.exp(-0.5 * ((wave_rest - centre) / sigma) ** 2))
    return shape


def model_cube(
    wave_vac: np.ndarray,
    sigma_inst_kms: np.ndarray,
    velocity: np.ndarray,
    continuum: np.ndarray,
    line_flux: dict[str, np.ndarray],
    sigma_gas: float,
) -> np.ndarray:
    """Noise-free model, shape (n_wave, n_y, n_x), in flux per A."""
    n_y, n_x = velocity.shape
    doppler = 1.0 + velocity / C_KMS  # (n_y, n_x)
    wave_rest = wave_vac[:, None, None] / doppler[None]
    model = continuum[None] * continuum_shape(wave_rest)
    for line_id, flux in line_flux.items():
        centre = LINES[line_id].vacuum_wavelength * doppler  # (n_y, n_x)
        # Instrumental sigma at the observed line centre, interpolated on the grid.
        sig_inst = np.interp(centre, wave_vac, sigma_inst_kms)
        sig_a = centre * np.hypot(sigma_gas, sig_inst) / C_KMS
        # Only the pixels within 8 sigma of the largest line centre are touched.
        lo = np.searchsorted(wave_vac, centre.min() - 8 * sig_a.max())
        hi = np.searchsorted(wave_vac, centre.max() + 8 * sig_a.max())
        if hi <= lo:
            continue
        w = wave_vac[lo:hi, None, None]
        model[lo:hi] += (
            flux[None] / (math.sqrt(2 * math.pi) * sig_a[None]) * np.exp(-0.5 * ((w - centre[None]) / sig_a[None]) ** 2)
        )
    assert model.shape == (wave_vac.size, n_y, n_x)
    return model


def disk_spaxels(
    p: DiskParams, n_y: int, n_x: int, scale: float, rotation: float, ha0: float, cont0: float
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CD matrix, line fluxes, 12+log(O/H), velocity, radius, continuum, ra and dec of every
    spaxel of an ``n_y`` x ``n_x`` field of ``scale`` arcsec spaxels over the disk."""
    cd, xi, eta = sky_offsets(n_y, n_x, scale, rotation)
    ra, dec = tangent_plane_to_sky(xi / 3600.0, eta / 3600.0, *field_centre(p))
    # The galaxy centre may sit off the field centre (CRPIX is always the field centre).
    gx, gy = xi - p.centre_offset[0], eta - p.centre_offset[1]
    velocity, radius = disk_velocity(gx, gy, p)
    fluxes, oh = _line_strengths(radius, p, ha0)
    continuum = cont0 * np.exp(-np.hypot(gx, gy) / p.r_star)
    return cd, fluxes, oh, velocity, radius, continuum, ra, dec


def field_centre(p: DiskParams) -> tuple[float, float]:
    """ra, dec of the field centre (CRVAL) given the galaxy centre and its offset."""
    ra, dec = tangent_plane_to_sky(
        np.array(-p.centre_offset[0] / 3600.0), np.array(-p.centre_offset[1] / 3600.0), p.ra, p.dec
    )
    return float(ra), float(dec)
