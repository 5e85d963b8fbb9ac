"""Synthetic survey files with known truth, for tests and benchmarks.

* :func:`write_muse_cube` and :func:`write_manga_cube` write IFU cubes in the MUSE
  ``DATACUBE_FINAL`` and MaNGA DRP ``LOGCUBE`` layouts (same extensions and header cards
  as the real products) holding a thin rotating disk: arctan rotation curve, exponential
  stellar continuum and ionised gas, Gaussian emission lines (H-alpha, H-beta, [N II],
  [O III], [S II], [O II]) Doppler-shifted by the disk velocity field, and optionally a
  radial metallicity gradient expressed through the Pettini & Pagel (2004) N2 and O3N2
  line ratios.  Each returns ``(path, CubeTruth)``.
* :func:`write_sdss_spectra` writes N SDSS-like ``spec-PLATE-MJD-FIBER.fits`` files
  (COADD + SPECOBJ, ~3,850 log-lambda pixels) quickly enough for benchmarks of 1e5 files.

Everything random comes from ``numpy.random.default_rng(seed)``: same seed, same bytes.

Geometry: east offset xi = -(CD-rotated x offset), north offset eta; the disk position
angle is measured from north through east to the receding major axis; a point at
(xi, eta) has major-axis coordinate a = xi sin PA + eta cos PA and minor-axis coordinate
b = -xi cos PA + eta sin PA; its deprojected radius is R = sqrt(a^2 + (b / cos i)^2) and
its line-of-sight velocity V = V_sys + V_rot(R) sin i (a / R), with
V_rot(R) = (2 / pi) V_max arctan(R / R_turn).  Lines are shifted as
lambda = lambda_rest,vac (1 + V / c) in vacuum, then converted to air for MUSE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from skyledger.schema.linelist import LINES, air_to_vacuum

__all__ = [
    "DiskParams",
    "CubeTruth",
    "disk_velocity",
    "tangent_plane_to_sky",
    "write_muse_cube",
    "write_manga_cube",
    "write_sdss_spectra",
    "muse_lsf_fwhm",
    "VelocityMapTruth",
    "write_velocity_map",
]

C_KMS = 299_792.458
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

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


@dataclass(slots=True)
class CubeTruth:
    """What the generator put into a cube, per spaxel arrays shaped (n_y, n_x)."""

    params: DiskParams
    object_id: str
    ra: np.ndarray  # spaxel-centre positions computed independently of astropy.wcs
    dec: np.ndarray
    velocity: np.ndarray  # line-of-sight velocity of gas and stars, km/s
    radius: np.ndarray  # deprojected radius, arcsec
    oh: np.ndarray  # 12 + log(O/H)
    line_flux: dict[str, np.ndarray]  # integrated line flux per spaxel (flux unit x A)
    continuum: np.ndarray  # continuum level per spaxel at rest 5500 A (flux unit)
    noise_sigma: float  # per-pixel noise standard deviation (flux unit)
    covered: np.ndarray  # bool: spaxel has data
    wave_vacuum: np.ndarray  # vacuum wavelength of every pixel, A
    pixel_scale: float  # arcsec
    sigma_instrument_kms: np.ndarray  # instrumental sigma per pixel, km/s
    header_cards: dict[str, object] = field(default_factory=dict)


def muse_lsf_fwhm(wave: np.ndarray) -> np.ndarray:
    """MUSE WFM line-spread FWHM (A) at ``wave`` (A), Bacon et al. 2017 eq. 8."""
    w = np.asarray(wave, dtype=np.float64)
    return 5.866e-8 * w**2 - 9.187e-4 * w + 6.040


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


def _offsets(n_y: int, n_x: int, scale: float, rotation: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _continuum_shape(wave_rest: np.ndarray) -> np.ndarray:
    """A smooth red continuum with absorption lines, 1 at rest 5500 A."""
    shape = (wave_rest / 5500.0) ** -0.6 * (1.0 - 0.5 * np.exp(-(((wave_rest - 3500.0) / 600.0) ** 2)))
    for centre, depth, sigma in _ABSORPTION:
        shape = shape * (1.0 - depth * np.exp(-0.5 * ((wave_rest - centre) / sigma) ** 2))
    return shape


def _model_cube(
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
    model = continuum[None] * _continuum_shape(wave_rest)
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


def _disk(
    p: DiskParams, n_y: int, n_x: int, scale: float, rotation: float, ha0: float, cont0: float
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cd, xi, eta = _offsets(n_y, n_x, scale, rotation)
    ra, dec = tangent_plane_to_sky(xi / 3600.0, eta / 3600.0, *_field_centre(p))
    # The galaxy centre may sit off the field centre (CRPIX is always the field centre).
    gx, gy = xi - p.centre_offset[0], eta - p.centre_offset[1]
    velocity, radius = disk_velocity(gx, gy, p)
    fluxes, oh = _line_strengths(radius, p, ha0)
    continuum = cont0 * np.exp(-np.hypot(gx, gy) / p.r_star)
    return cd, fluxes, oh, velocity, radius, continuum, ra, dec


def _field_centre(p: DiskParams) -> tuple[float, float]:
    """ra, dec of the field centre (CRVAL) given the galaxy centre and its offset."""
    ra, dec = tangent_plane_to_sky(
        np.array(-p.centre_offset[0] / 3600.0), np.array(-p.centre_offset[1] / 3600.0), p.ra, p.dec
    )
    return float(ra), float(dec)


# --------------------------------------------------------------------------- MUSE


def write_muse_cube(
    path: str | Path,
    params: DiskParams | None = None,
    *,
    n_x: int = 24,
    n_y: int = 24,
    wave_start: float = 4749.76,
    n_wave: int = 3681,
    pixel_scale: float = 0.2,
    rotation: float = 0.0,
    object_id: str = "NGC0000",
    seed: int = 0,
    nan_border: int = 1,
) -> tuple[Path, CubeTruth]:
    """Write a MUSE WFM-like ``DATACUBE_FINAL`` (DATA + STAT, AWAV axis) with a rotating disk.

    ``wave_start``/``n_wave`` give the air wavelength grid (1.25 A steps, MUSE's own:
    4749.76 A + 3681 pixels covers the nominal mode); ``nan_border`` spaxels at the
    field edge are NaN in DATA and STAT, as in real cubes.  Fluxes are in
    1e-20 erg/s/cm^2/A.
    """
    p = params or DiskParams()
    path = Path(path)
    rng = np.random.default_rng(seed)
    d_wave = 1.25
    wave_air = wave_start + d_wave * np.arange(n_wave)
    wave_vac = air_to_vacuum(wave_air)
    sigma_inst = C_KMS / (wave_air / muse_lsf_fwhm(wave_air)) / _FWHM_PER_SIGMA
    cd, fluxes, oh, velocity, radius, continuum, ra, dec = _disk(p, n_y, n_x, pixel_scale, rotation, 6.0e4, 300.0)
    model = _model_cube(wave_vac, sigma_inst, velocity, continuum, fluxes, p.sigma_gas)
    noise_sigma = float(continuum.max() * _continuum_shape(np.array([5500.0]))[0] / p.snr)
    data = (model + rng.normal(0.0, noise_sigma, model.shape)).astype(np.float32)
    stat = np.full(model.shape, noise_sigma**2, dtype=np.float32)
    covered = np.ones((n_y, n_x), dtype=bool)
    if nan_border > 0:
        covered[:nan_border] = covered[-nan_border:] = False
        covered[:, :nan_border] = covered[:, -nan_border:] = False
        data[:, ~covered] = np.nan
        stat[:, ~covered] = np.nan

    crval1, crval2 = _field_centre(p)
    primary = fits.Header()
    for key, value, comment in (
        ("DATE", "2019-03-02T09:44:12", "file creation date (YYYY-MM-DDThh:mm:ss UT)"),
        ("ORIGIN", "ESO-PARANAL", "European Southern Observatory"),
        ("TELESCOP", "ESO-VLT-U4", "ESO <TEL>"),
        ("INSTRUME", "MUSE", "Instrument used."),
        ("OBJECT", object_id, "Original target."),
        ("RA", crval1, "[deg] pointing"),
        ("DEC", crval2, "[deg] pointing"),
        ("EQUINOX", 2000.0, "Standard FK5 (years)"),
        ("RADESYS", "FK5", "Coordinate reference frame"),
        ("EXPTIME", 2400.0, "Integration time"),
        ("MJD-OBS", 58544.3, "Obs start"),
        ("DATE-OBS", "2019-03-02T07:12:00.000", "Observing date"),
        ("PRODCATG", "SCIENCE.CUBE.IFS", "Data product category"),
        ("PIPEFILE", "DATACUBE_FINAL.fits", "Filename of data product"),
        ("HIERARCH ESO INS MODE", "WFM-NOAO-N", "Instrument mode used."),
        ("HIERARCH ESO PRO CATG", "DATACUBE_FINAL", "Category of pipeline product frame"),
        ("HIERARCH ESO DRS MUSE LAMBDA MIN", float(wave_air[0]), "[Angstrom] minimum wavelength"),
        ("HIERARCH ESO DRS MUSE LAMBDA MAX", float(wave_air[-1]), "[Angstrom] maximum wavelength"),
    ):
        primary[key] = (value, comment)

    def cube_header(extname: str) -> fits.Header:
        h = fits.Header()
        h["EXTNAME"] = (
            extname,
            "This extension contains data values" if extname == "DATA" else "This extension contains data variance",
        )
        h["HDUCLASS"] = ("ESO", "class name (ESO format)")
        h["HDUDOC"] = ("DICD", "document with class description")
        h["HDUVERS"] = ("DICD version 6", "version number (according to spec v2.5.1)")
        h["HDUCLAS1"] = ("IMAGE", "Image data format")
        if extname == "DATA":
            h["HDUCLAS2"] = ("DATA", "this extension contains the data itself")
            h["ERRDATA"] = ("STAT", "pointer to the variance extension")
            h["BUNIT"] = ("10**(-20)*erg/s/cm**2/Angstrom", "")
        else:
            h["HDUCLAS2"] = ("ERROR", "this extension contains the error data")
            h["HDUCLAS3"] = ("MSE", "the extension contains variances (sigma**2)")
            h["SCIDATA"] = ("DATA", "pointer to the data extension")
            h["BUNIT"] = ("(10**(-20)*erg/s/cm**2/Angstrom)**2", "")
        h["OBJECT"] = (object_id, "Original target.")
        h["CRPIX1"] = ((n_x - 1) / 2.0 + 1.0, "Pixel coordinate of reference point")
        h["CRPIX2"] = ((n_y - 1) / 2.0 + 1.0, "Pixel coordinate of reference point")
        h["CD1_1"] = (float(cd[0, 0]), "Coordinate transformation matrix element")
        h["CD1_2"] = (float(cd[0, 1]), "Coordinate transformation matrix element")
        h["CD2_1"] = (float(cd[1, 0]), "Coordinate transformation matrix element")
        h["CD2_2"] = (float(cd[1, 1]), "Coordinate transformation matrix element")
        h["CUNIT1"] = ("deg", "Units of coordinate increment and value")
        h["CUNIT2"] = ("deg", "Units of coordinate increment and value")
        h["CTYPE1"] = ("RA---TAN", "Right ascension, gnomonic projection")
        h["CTYPE2"] = ("DEC--TAN", "Declination, gnomonic projection")
        h["CSYER1"] = (1.0e-5, "[deg] Systematic error in coordinate")
        h["CSYER2"] = (1.0e-5, "[deg] Systematic error in coordinate")
        h["CRVAL1"] = (crval1, "")
        h["CRVAL2"] = (crval2, "")
        h["CTYPE3"] = ("AWAV", "")
        h["CUNIT3"] = ("Angstrom", "")
        h["CD3_3"] = (d_wave, "")
        h["CRPIX3"] = (1.0, "")
        h["CRVAL3"] = (float(wave_air[0]), "")
        for key in ("CD1_3", "CD2_3", "CD3_1", "CD3_2"):
            h[key] = (0.0, "")
        return h

    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=primary),
            fits.ImageHDU(data=data, header=cube_header("DATA")),
            fits.ImageHDU(data=stat, header=cube_header("STAT")),
        ]
    )
    hdul.writeto(path, overwrite=True)
    truth = CubeTruth(
        params=p,
        object_id=object_id,
        ra=ra,
        dec=dec,
        velocity=velocity,
        radius=radius,
        oh=oh,
        line_flux=fluxes,
        continuum=continuum,
        noise_sigma=noise_sigma,
        covered=covered,
        wave_vacuum=wave_vac,
        pixel_scale=pixel_scale,
        sigma_instrument_kms=sigma_inst,
        header_cards={"BUNIT": "10**(-20)*erg/s/cm**2/Angstrom", "CTYPE3": "AWAV"},
    )
    return path, truth


# --------------------------------------------------------------------------- MaNGA

_MANGA_LOG_START = 3621.5960  # A, first pixel of the MaNGA LOGCUBE grid
_MANGA_DLOG = 1.0e-4  # dex per pixel


def _manga_resolution(wave: np.ndarray) -> np.ndarray:
    """A smooth R(lambda) close to the BOSS spectrographs' (~1400 blue, ~2600 red)."""
    return 1400.0 + 0.22 * (wave - 3600.0)


def write_manga_cube(
    path: str | Path,
    params: DiskParams | None = None,
    *,
    n_x: int = 21,
    n_y: int = 21,
    n_wave: int = 4563,
    pixel_scale: float = 0.5,
    plateifu: str = "8485-1901",
    mangaid: str = "1-209232",
    seed: int = 0,
    coverage_radius: float | None = None,
) -> tuple[Path, CubeTruth]:
    """Write a MaNGA DRP LOGCUBE-like file (FLUX/IVAR/MASK/DISP/PREDISP/WAVE/SPECRES...).

    The log-lambda grid starts at 3621.596 A in 1e-4 dex steps (``n_wave`` = 4563 is the
    full DRP grid).  Spaxels farther than ``coverage_radius`` spaxels (default: the
    largest circle that fits) from the centre have no data: ivar 0 and mask bits NOCOV
    and DONOTUSE, as outside a real IFU bundle.  Fluxes are 1e-17 erg/s/cm^2/A/spaxel.
    """
    p = params or DiskParams(ra=184.6, dec=45.1, v_sys=5400.0)
    path = Path(path)
    rng = np.random.default_rng(seed)
    wave = _MANGA_LOG_START * 10.0 ** (_MANGA_DLOG * np.arange(n_wave))
    res = _manga_resolution(wave)
    sigma_inst = C_KMS / res / _FWHM_PER_SIGMA
    cd, fluxes, oh, velocity, radius, continuum, ra, dec = _disk(p, n_y, n_x, pixel_scale, 0.0, 20.0, 0.6)
    model = _model_cube(wave, sigma_inst, velocity, continuum, fluxes, p.sigma_gas)
    noise_sigma = float(continuum.max() * _continuum_shape(np.array([5500.0]))[0] / p.snr)
    flux = (model + rng.normal(0.0, noise_sigma, model.shape)).astype(np.float32)
    ivar = np.full(model.shape, 1.0 / noise_sigma**2, dtype=np.float32)
    mask = np.zeros(model.shape, dtype=np.int32)
    yy, xx = np.mgrid[0:n_y, 0:n_x]
    r_cov = coverage_radius if coverage_radius is not None else (min(n_x, n_y) - 1) / 2.0
    covered = np.hypot(xx - (n_x - 1) / 2.0, yy - (n_y - 1) / 2.0) <= r_cov
    flux[:, ~covered] = 0.0
    ivar[:, ~covered] = 0.0
    mask[:, ~covered] = (1 << 0) | (1 << 10)  # NOCOV | DONOTUSE
    disp = np.broadcast_to((wave / res / _FWHM_PER_SIGMA)[:, None, None], model.shape).astype(np.float32)
    predisp = (disp * 0.92).astype(np.float32)  # the LSF before pixel convolution is narrower

    crval1, crval2 = _field_centre(p)
    plate, ifu = plateifu.split("-")
    primary = fits.Header()
    for key, value, comment in (
        ("AUTHOR", "Synthetic (skyledger)", "Written by skyledger.testing.survey_files"),
        ("VERSDRP2", "v2_4_3", "MaNGA DRP version (2d processing)"),
        ("VERSDRP3", "v2_4_3", "MaNGA DRP Version (3d processing)"),
        ("VERSUTIL", "v5_5_32", "Version of idlutils"),
        ("PLATETYP", "APOGEE-2&MaNGA", "Plate type"),
        ("SRVYMODE", "MaNGA dither", "Survey mode"),
        ("OBJRA", p.ra, "Right ascension of the science object in J2000"),
        ("OBJDEC", p.dec, "Declination of the science object in J2000"),
        ("IFURA", crval1, "Right ascension of this IFU in J2000"),
        ("IFUDEC", crval2, "Declination of this IFU in J2000"),
        ("CENRA", crval1 + 0.3, "Plate center right ascension in J2000"),
        ("CENDEC", crval2 - 0.4, "Plate center declination in J2000"),
        ("MANGAID", mangaid, "Unique ID of MaNGA object"),
        ("PLATEIFU", plateifu, "Plate-IFU designation"),
        ("PLATEID", int(plate), "Current plate"),
        ("IFUDSGN", ifu, "IFU design id (e.g. 12701)"),
        ("DESIGNID", 8980, "Current design"),
        ("MNGTARG1", 2336, "manga_target1 maskbit for galaxy target catalog"),
        ("MNGTARG2", 0, "manga_target2 maskbit (non-galaxy targets)"),
        ("MNGTARG3", 0, "manga_target3 maskbit (ancillary targets)"),
        ("EBVGAL", 0.016, "E(B-V) from SDSS dust maps for this IFU"),
        ("DRP3QUAL", 0, "Quality bitmask"),
        ("BSCALE", 1, "Intensity unit scaling"),
        ("BZERO", 0, "Intensity zeropoint"),
        ("BUNIT", "1E-17 erg/s/cm^2/Ang/spaxel", "Specific intensity (per spaxel)"),
        ("MASKNAME", "MANGA_DRP3PIXMASK", "Bits in sdssMaskbits.par used by mask extension"),
        ("EXPTIME", 10800.0, "Total exposure time (seconds)"),
        ("NEXP", 9, "Total number of exposures"),
    ):
        primary[key] = (value, comment)

    def wcs3(h: fits.Header) -> fits.Header:
        h["CRPIX1"] = ((n_x - 1) / 2.0 + 1.0, "Reference pixel (1-indexed)")
        h["CRPIX2"] = ((n_y - 1) / 2.0 + 1.0, "Reference pixel (1-indexed)")
        h["CRPIX3"] = (1.0, "Reference pixel (1-indexed)")
        h["CRVAL1"] = (crval1, "")
        h["CRVAL2"] = (crval2, "")
        h["CRVAL3"] = (_MANGA_LOG_START, "")
        h["CD1_1"] = (float(cd[0, 0]), "")
        h["CD2_2"] = (float(cd[1, 1]), "")
        h["CD3_3"] = (_MANGA_LOG_START * math.log(10.0) * _MANGA_DLOG, "")
        h["CTYPE1"] = ("RA---TAN", "")
        h["CTYPE2"] = ("DEC--TAN", "")
        h["CTYPE3"] = ("WAVE-LOG", "")
        h["CUNIT1"] = ("deg", "")
        h["CUNIT2"] = ("deg", "")
        h["CUNIT3"] = ("Angstrom", "")
        return h

    def cube_hdu(data: np.ndarray, name: str, clas2: str, clas3: str | None, bunit: str | None) -> fits.ImageHDU:
        h = fits.Header()
        h["EXTNAME"] = name
        h["HDUCLASS"] = ("SDSS", "SDSS format class")
        h["HDUCLAS1"] = ("CUBE", "Data is in cube format")
        h["HDUCLAS2"] = (clas2, "")
        if clas3:
            h["HDUCLAS3"] = (clas3, "")
        if name == "FLUX":
            h["ERRDATA"] = ("IVAR", "Error data extension")
            h["QUALDATA"] = ("MASK", "Mask extension")
        else:
            h["SCIDATA"] = ("FLUX", "Science data extension")
        if bunit:
            h["BUNIT"] = (bunit, "")
        return fits.ImageHDU(data=data, header=wcs3(h))

    def vector(data: np.ndarray, name: str, bunit: str | None = None) -> fits.ImageHDU:
        h = fits.Header()
        h["EXTNAME"] = name
        if bunit:
            h["BUNIT"] = bunit
        return fits.ImageHDU(data=np.asarray(data, dtype=np.float64), header=h)

    def image(band: str, lo: float, hi: float) -> fits.ImageHDU:
        sel = (wave >= lo) & (wave < hi)
        img = flux[sel].mean(axis=0) if sel.any() else np.zeros((n_y, n_x), np.float32)
        h = fits.Header()
        h["EXTNAME"] = f"{band}IMG"
        h["BUNIT"] = ("nanomaggies/pixel", "")
        for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD2_2", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2"):
            h[key] = wcs3(fits.Header())[key]
        return fits.ImageHDU(data=img.astype(np.float32), header=h)

    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=primary),
            cube_hdu(flux, "FLUX", "DATA", None, "1E-17 erg/s/cm^2/Ang/spaxel"),
            cube_hdu(ivar, "IVAR", "ERROR", "INVMSE", "1E-17 erg/s/cm^2/Ang/spaxel"),
            cube_hdu(mask, "MASK", "QUALITY", "FLAG32BIT", None),
            cube_hdu(disp, "DISP", "DATA", None, "Angstrom"),
            cube_hdu(predisp, "PREDISP", "DATA", None, "Angstrom"),
            vector(wave, "WAVE", "Angstrom"),
            vector(res, "SPECRES"),
            vector(np.full(n_wave, 20.0), "SPECRESD"),
            vector(res / 0.92, "PRESPECRES"),
            vector(np.full(n_wave, 22.0), "PRESPECRESD"),
            image("G", 4000.0, 5500.0),
            image("R", 5500.0, 6900.0),
            image("I", 6900.0, 8400.0),
            image("Z", 8400.0, 10400.0),
        ]
    )
    hdul.writeto(path, overwrite=True)
    truth = CubeTruth(
        params=p,
        object_id=plateifu,
        ra=ra,
        dec=dec,
        velocity=velocity,
        radius=radius,
        oh=oh,
        line_flux=fluxes,
        continuum=continuum,
        noise_sigma=noise_sigma,
        covered=covered,
        wave_vacuum=wave,
        pixel_scale=pixel_scale,
        sigma_instrument_kms=sigma_inst,
        header_cards={"BUNIT": "1E-17 erg/s/cm^2/Ang/spaxel", "CTYPE3": "WAVE-LOG"},
    )
    return path, truth


# --------------------------------------------------------------------------- SDSS

_SDSS_COEFF0 = 3.5800  # log10 A of the first pixel (3801.9 A)
_SDSS_COEFF1 = 1.0e-4
_COADD_DTYPE = np.dtype(
    [
        ("flux", ">f4"),
        ("loglam", ">f4"),
        ("ivar", ">f4"),
        ("and_mask", ">i4"),
        ("or_mask", ">i4"),
        ("wdisp", ">f4"),
        ("sky", ">f4"),
        ("model", ">f4"),
    ]
)
_SPECOBJ_DTYPE = np.dtype(
    [
        ("SURVEY", "S6"),
        ("PROGRAMNAME", "S16"),
        ("PLATEQUALITY", "S8"),
        ("SPECPRIMARY", ">u1"),
        ("SPECOBJID", "S19"),
        ("BESTOBJID", "S19"),
        ("PLATE", ">i4"),
        ("MJD", ">i4"),
        ("FIBERID", ">i4"),
        ("RUN2D", "S6"),
        ("PLUG_RA", ">f8"),
        ("PLUG_DEC", ">f8"),
        ("CLASS", "S6"),
        ("SUBCLASS", "S21"),
        ("Z", ">f4"),
        ("Z_ERR", ">f4"),
        ("RCHI2", ">f4"),
        ("DOF", ">i4"),
        ("ZWARNING", ">i4"),
        ("WAVEMIN", ">f4"),
        ("WAVEMAX", ">f4"),
        ("SN_MEDIAN_ALL", ">f4"),
    ]
)
# Lines put into SDSS spectra: (id, strength relative to H-alpha) for star-forming galaxies.
_SDSS_LINES = (
    ("OII3726", 0.45),
    ("OII3729", 0.60),
    ("HB4861", 0.35),
    ("OIII4959", 0.12),
    ("OIII5007", 0.36),
    ("NII6548", 0.10),
    ("HA6563", 1.0),
    ("NII6584", 0.30),
    ("SII6716", 0.15),
    ("SII6731", 0.11),
)


def _fixed_card(key: str, value: int | float | str, comment: str) -> str:
    """One 80-character FITS card in fixed format, for the per-file cards of the fast writer.

    astropy's Card is exact but costs ~60 us per card, the largest share of writing an
    SDSS file; the values here are plain ints, floats and short strings.
    """
    if isinstance(value, str):
        text = "'" + value.replace("'", "''").ljust(8) + "'"
        image = f"{key:<8}= {text:<20} / {comment}"
    else:
        text = repr(float(value)).upper() if isinstance(value, float) else str(int(value))
        image = f"{key:<8}= {text:>20} / {comment}"
    return image[:80].ljust(80)


def _pad(raw: bytes, fill: bytes) -> bytes:
    return raw + fill * (-len(raw) % 2880)


def _specobjid(plate: int, fiber: int, mjd: int) -> int:
    """SDSS DR8+ SPECOBJID bit layout (plate<<50 | fiber<<38 | (mjd-50000)<<24 | run2d)."""
    return (plate << 50) | (fiber << 38) | ((mjd - 50000) << 24) | (26 << 10)


def write_sdss_spectra(
    directory: str | Path,
    n: int,
    *,
    seed: int = 0,
    n_pix: int = 3850,
    start: int = 0,
    z_range: tuple[float, float] = (0.01, 0.25),
    batch: int = 512,
) -> list[Path]:
    """Write ``n`` SDSS-like ``spec-PLATE-MJD-FIBER.fits`` files into ``directory``.

    Each holds a COADD table (flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model)
    of ``n_pix`` log-lambda pixels and a one-row SPECOBJ (plate, mjd, fiberid, specobjid,
    plug_ra/dec, z, class ...), i.e. a "lite" file.  Spectra are a red continuum with
    absorption features plus star-forming emission lines at a random redshift, with
    noise matching ivar.  Speed: headers are formatted once with astropy and reused; per
    file only the primary header's object cards are re-formatted and the two tables'
    bytes written, so writing runs at thousands of files per second and memory stays at
    one batch.  File ``k`` (``start`` + index) is on plate 3000 + k // 1000, fibre
    k % 1000 + 1, so files from different ``start`` values never collide.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    loglam = _SDSS_COEFF0 + _SDSS_COEFF1 * np.arange(n_pix)
    wave = 10.0**loglam
    wdisp = (1.05 + 0.1 * (loglam - loglam[0]) / (loglam[-1] - loglam[0])).astype(np.float32)
    sky = (5.0 + 20.0 * ((wave - 5500.0) / 3500.0).clip(0) ** 2).astype(np.float32)
    sigma_inst = C_KMS * wdisp * _SDSS_COEFF1 * math.log(10.0)  # km/s, LSF sigma

    coadd_template = np.zeros(n_pix, dtype=_COADD_DTYPE)
    coadd_template["loglam"] = loglam.astype(np.float32)
    coadd_template["wdisp"] = wdisp
    coadd_template["sky"] = sky
    coadd_header = fits.BinTableHDU(data=coadd_template, name="COADD").header
    coadd_header["COMMENT"] = "Coadded spectrum"
    specobj_header = fits.BinTableHDU(data=np.zeros(1, dtype=_SPECOBJ_DTYPE), name="SPECOBJ").header
    coadd_head_bytes = _pad(coadd_header.tostring().encode("ascii"), b" ")
    specobj_head_bytes = _pad(specobj_header.tostring().encode("ascii"), b" ")

    static_primary = fits.Header()
    static_primary["SIMPLE"] = True
    static_primary["BITPIX"] = 8
    static_primary["NAXIS"] = 0
    static_primary["EXTEND"] = True
    for key, value, comment in (
        ("TELESCOP", "SDSS 2.5-M", "Sloan Digital Sky Survey"),
        ("FLAVOR", "science", "Flavor of this sequence"),
        ("EXPTIME", 2700.0, "Minimum of exposure times for all cameras"),
        ("VERS2D", "v5_7_0", "Version of idlspec2d for 2D reduction"),
        ("VERSCOMB", "v5_7_0", "Version of idlspec2d for combining multiple spe"),
        ("RUN2D", "26", "Spectroscopic 2D reduction (extraction) name"),
        ("VACUUM", True, "Wavelengths are in vacuum"),
        ("NWORDER", 2, "Linear-log10 coefficients"),
        ("WFITTYPE", "LOG-LINEAR", "Linear-log10 dispersion"),
        ("COEFF0", _SDSS_COEFF0, "Central wavelength (log10) of first pixel"),
        ("COEFF1", _SDSS_COEFF1, "Log10 dispersion per pixel"),
        ("BUNIT", "1E-17 erg/cm^2/s/Ang", ""),
        ("NEXP", 0, "Number of exposures (lite: none kept)"),
    ):
        static_primary[key] = (value, comment)
    static_cards = static_primary.tostring().encode("ascii")
    static_cards = static_cards[: static_cards.rindex(b"END" + b" " * 77)]

    paths: list[Path] = []
    rest = {lid: LINES[lid].vacuum_wavelength for lid, _ in _SDSS_LINES}
    for b0 in range(0, n, batch):
        nb = min(batch, n - b0)
        # One generator per file, seeded by (seed, file number): file k has the same
        # bytes whatever the batch size or the split of the run into calls.
        rngs = [np.random.default_rng((seed, start + b0 + j)) for j in range(nb)]
        draws = np.array([r.uniform(size=7) for r in rngs])
        z = z_range[0] + (z_range[1] - z_range[0]) * draws[:, 0]
        ra = 360.0 * draws[:, 1]
        dec = np.degrees(np.arcsin(-0.3 + 1.3 * draws[:, 2]))
        cont = 2.0 + 18.0 * draws[:, 3]
        ha = cont * (5.0 + 75.0 * draws[:, 4])  # H-alpha flux, 1e-17 erg/s/cm2
        snr = 4.0 + 26.0 * draws[:, 5]
        sigma_gas = 30.0 + 90.0 * draws[:, 6]
        wave_rest = wave[None, :] / (1.0 + z[:, None])
        model = cont[:, None] * _continuum_shape(wave_rest)
        for lid, strength in _SDSS_LINES:
            centre = rest[lid] * (1.0 + z)
            sig_kms = np.hypot(sigma_gas, np.interp(centre, wave, sigma_inst))
            sig_a = centre * sig_kms / C_KMS
            model += (strength * ha / (math.sqrt(2 * math.pi) * sig_a))[:, None] * np.exp(
                -0.5 * ((wave[None, :] - centre[:, None]) / sig_a[:, None]) ** 2
            )
        noise = np.sqrt((cont / snr)[:, None] ** 2 * (0.5 + sky[None, :] / sky.mean()))
        flux = model + np.array([r.standard_normal(n_pix) for r in rngs]) * noise
        ivar = 1.0 / noise**2
        bad = np.array([r.random(n_pix) for r in rngs]) < 0.002  # cosmic-ray / bad-column pixels
        for j in range(nb):
            k = start + b0 + j
            plate, mjd, fiber = 3000 + k // 1000, 55000 + k // 1000, k % 1000 + 1
            specobjid = _specobjid(plate, fiber, mjd)
            coadd = coadd_template.copy()
            coadd["flux"] = flux[j]
            coadd["ivar"] = np.where(bad[j], 0.0, ivar[j])
            coadd["and_mask"] = np.where(bad[j], 1 << 22, 0)  # 22: BRIGHTSKY in SPPIXMASK
            coadd["or_mask"] = coadd["and_mask"]
            coadd["model"] = model[j]
            specobj = np.zeros(1, dtype=_SPECOBJ_DTYPE)
            row = specobj[0]
            row["SURVEY"], row["PROGRAMNAME"], row["PLATEQUALITY"] = b"boss", b"boss", b"good"
            row["SPECPRIMARY"] = 1
            row["SPECOBJID"] = str(specobjid).encode()
            row["BESTOBJID"] = str(1237650000000000000 + k).encode()
            row["PLATE"], row["MJD"], row["FIBERID"], row["RUN2D"] = plate, mjd, fiber, b"26"
            row["PLUG_RA"], row["PLUG_DEC"] = ra[j], dec[j]
            row["CLASS"], row["SUBCLASS"] = b"GALAXY", b"STARFORMING"
            row["Z"], row["Z_ERR"] = z[j], 1.0e-5 * (1 + z[j])
            row["RCHI2"], row["DOF"], row["ZWARNING"] = 1.05, n_pix - 10, 0
            row["WAVEMIN"], row["WAVEMAX"] = wave[0], wave[-1]
            row["SN_MEDIAN_ALL"] = snr[j]
            object_cards = "".join(
                _fixed_card(key, value, comment)
                for key, value, comment in (
                    ("PLATEID", plate, "Plate Id"),
                    ("MJD", mjd, "MJD of observation"),
                    ("FIBERID", fiber, "Fiber number"),
                    ("PLUG_RA", float(ra[j]), "RA of object [deg]"),
                    ("PLUG_DEC", float(dec[j]), "dec of object [deg]"),
                    ("RA", float(ra[j]), "RA of telescope boresight (deg)"),
                    ("DEC", float(dec[j]), "Dec of telescope boresight (deg)"),
                    ("SPEC_ID", str(specobjid), "Unique object identifier"),
                    ("NAME", f"{plate:04d}-{mjd:05d}-01", "Name of target; PlateId-MJD-Mapper Re"),
                )
            ).encode("ascii")
            primary_bytes = _pad(static_cards + object_cards + b"END" + b" " * 77, b" ")
            target = out / f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"
            with open(target, "wb") as fh:
                fh.write(primary_bytes)
                fh.write(coadd_head_bytes)
                fh.write(_pad(coadd.tobytes(), b"\0"))
                fh.write(specobj_head_bytes)
                fh.write(_pad(specobj.tobytes(), b"\0"))
            paths.append(target)
    return paths


# --------------------------------------------------------------------------- velocity maps


@dataclass(slots=True)
class VelocityMapTruth:
    """What :func:`write_velocity_map` put into a map; arrays shaped (n_y, n_x), NaN = no value.

    ``velocity`` is the noise-free line-of-sight velocity relative to the galaxy redshift
    ``z`` (= ``v_sys / c``) in the galaxy's rest frame, V_rot(R) sin i cos(theta) with the
    physical ``v_max`` of :class:`DiskParams`; ``velocity_measured`` is the same plus the
    noise, i.e. what a reader must return for each valid pixel, whatever convention the
    file was written in (``velocity_written``).
    """

    params: DiskParams
    object_id: str
    z: float
    ra: np.ndarray  # pixel-centre positions computed independently of astropy.wcs
    dec: np.ndarray
    velocity: np.ndarray
    velocity_measured: np.ndarray
    velocity_err: np.ndarray  # 1-sigma noise of velocity_measured (galaxy frame), km/s
    velocity_written: np.ndarray  # the VEL image as written, in the file's convention
    sigma: np.ndarray | None  # measured dispersion as written (NaN where the fit "failed")
    sigma_err: np.ndarray | None
    flux: np.ndarray | None  # measured H-alpha flux as written
    flux_err: np.ndarray | None
    radius: np.ndarray  # deprojected radius, arcsec
    valid: np.ndarray  # bool: VEL and VEL_ERR are finite
    pixel_scale: float  # arcsec
    velocity_reference: str  # "systemic" or "cz"
    header_cards: dict[str, str] = field(default_factory=dict)  # the raw non-standard cards written


def _raw_card(key: str, value: str) -> bytes:
    """An 80-byte card written as-is, for values astropy refuses to write (NaN, lower case)."""
    return f"{key:<8}= {value:>20}".ljust(80)[:80].encode("ascii")


def write_velocity_map(
    path: str | Path,
    params: DiskParams | None = None,
    *,
    n_x: int = 40,
    n_y: int = 40,
    pixel_scale: float = 0.5,
    rotation: float = 0.0,
    wcs: str = "cd",
    object_id: str = "NGC0000",
    velocity_reference: str = "systemic",
    velref_card: bool = True,
    with_sigma: bool = True,
    with_flux: bool = True,
    messy: bool = True,
    err_floor: float = 4.0,
    max_err: float = 40.0,
    hole_fraction: float = 0.03,
    seed: int = 0,
) -> tuple[Path, VelocityMapTruth]:
    """Write a 2-D H-alpha velocity map of a rotating disk (``VEL``, ``VEL_ERR`` [, ``SIGMA``,
    ``SIGMA_ERR``] [, ``FLUX``, ``FLUX_ERR``] float32 images, km/s) and return its truth.

    Noise: the velocity error grows outwards as err_floor sqrt(F_max / F) (F the H-alpha
    surface brightness); pixels whose error would exceed ``max_err`` are NaN, as a S/N
    cut leaves them in real maps, and so is a random ``hole_fraction`` of the rest.  A few
    valid pixels have a NaN SIGMA (a failed dispersion fit).  ``wcs`` is ``"cd"`` (CDi_j
    matrix) or ``"cdelt"`` (CDELTi, plus CROTA2 when ``rotation`` is not 0).
    ``velocity_reference``: ``"systemic"`` writes velocities relative to the galaxy
    redshift, ``"cz"`` absolute c z_obs = c z + v (1 + z); ``velref_card`` says which in a
    ``VELREF`` card.  The galaxy redshift is a ``Z`` card and its centre ``OBJRA``/``OBJDEC``.

    ``messy`` writes the header the way real instrument files come: ``BLANK = NaN`` on the
    float images, ``RADECSYS`` instead of RADESYS, ``CUNITi = 'DEGREE'``, a lower-case
    ``vsys`` card, a card astropy cannot parse, ``Z`` as a quoted string, ``BUNIT =
    'KM/S'`` and (in ``"cdelt"`` mode) CDELTi as quoted strings.
    """
    if wcs not in ("cd", "cdelt"):
        raise ValueError(f"wcs must be 'cd' or 'cdelt', got {wcs!r}")
    if velocity_reference not in ("systemic", "cz"):
        raise ValueError(f"velocity_reference must be 'systemic' or 'cz', got {velocity_reference!r}")
    p = params or DiskParams()
    path = Path(path)
    rng = np.random.default_rng(seed)
    z = p.v_sys / C_KMS
    cd, xi, eta = _offsets(n_y, n_x, pixel_scale, rotation)
    crval1, crval2 = _field_centre(p)
    ra, dec = tangent_plane_to_sky(xi / 3600.0, eta / 3600.0, crval1, crval2)
    v_los, radius = disk_velocity(xi - p.centre_offset[0], eta - p.centre_offset[1], p)
    velocity = v_los - p.v_sys  # the rotation term alone: rest-frame velocity about the systemic one
    flux_true = 1.0e3 * np.exp(-radius / p.r_gas)
    err = err_floor * np.sqrt(flux_true.max() / flux_true)
    valid = (err <= max_err) & (rng.random((n_y, n_x)) >= hole_fraction)
    measured = velocity + rng.normal(0.0, 1.0, velocity.shape) * err
    measured = np.where(valid, measured, np.nan)
    err = np.where(valid, err, np.nan)
    if velocity_reference == "cz":
        written, written_err = C_KMS * z + measured * (1 + z), err * (1 + z)
    else:
        written, written_err = measured, err

    images: list[tuple[str, np.ndarray, str]] = [("VEL", written, "KM/S" if messy else "km/s"), ("VEL_ERR", written_err, "km/s")]
    sigma = sigma_err = flux = flux_err = None
    if with_sigma:
        sigma_err = np.where(valid, 1.2 * err, np.nan)
        sigma = p.sigma_gas + rng.normal(0.0, 1.0, velocity.shape) * sigma_err
        failed = valid & (rng.random((n_y, n_x)) < 0.03)
        sigma = np.where(valid & ~failed, np.abs(sigma), np.nan)
        sigma_err = np.where(valid & ~failed, sigma_err, np.nan)
        images += [("SIGMA", sigma, "km/s"), ("SIGMA_ERR", sigma_err, "km/s")]
    if with_flux:
        flux_err = np.where(valid, 0.01 * flux_true.max(), np.nan)
        flux = np.where(valid, flux_true + rng.normal(0.0, 1.0, velocity.shape) * flux_err, np.nan)
        images += [("FLUX", flux, "1E-17 erg/s/cm^2/spaxel"), ("FLUX_ERR", flux_err, "1E-17 erg/s/cm^2/spaxel")]

    primary = fits.Header()
    primary["TELESCOP"] = ("SYNTH-IFU", "synthetic telescope")
    primary["INSTRUME"] = ("SYNTHIFU", "synthetic instrument")
    primary["OBJECT"] = (object_id, "Target name")
    primary["OBJRA"] = (p.ra, "[deg] galaxy centre")
    primary["OBJDEC"] = (p.dec, "[deg] galaxy centre")
    primary["Z"] = (f"{z:.8f}" if messy else z, "galaxy redshift (v_sys / c)")
    primary["HIERARCH ESO QC VEL METHOD"] = ("gaussian", "line fit")
    if messy:
        primary["DATE-OBS"] = ("02/03/19", "old-style date")
        primary["ZZVSYS"] = (0, "placeholder")
        primary["ZZJUNK"] = (0, "placeholder")
    hdus: list[fits.PrimaryHDU | fits.ImageHDU] = [fits.PrimaryHDU(header=primary)]
    for name, data, bunit in images:
        h = fits.Header()
        h["EXTNAME"] = (name, "map")
        h["BUNIT"] = (bunit, "")
        h["CRPIX1"] = ((n_x - 1) / 2.0 + 1.0, "Pixel coordinate of reference point")
        h["CRPIX2"] = ((n_y - 1) / 2.0 + 1.0, "Pixel coordinate of reference point")
        h["CRVAL1"] = (crval1, "")
        h["CRVAL2"] = (crval2, "")
        h["CTYPE1"] = ("RA---TAN", "")
        h["CTYPE2"] = ("DEC--TAN", "")
        if wcs == "cd":
            for (i, j), value in np.ndenumerate(cd):
                h[f"CD{i + 1}_{j + 1}"] = float(value)
        else:
            s = pixel_scale / 3600.0
            h["CDELT1"] = (f"{-s:.10E}" if messy else -s, "")
            h["CDELT2"] = (f"{s:.10E}" if messy else s, "")
            if rotation:
                # CROTA2 turns the grid the other way round from _offsets' rotation.
                h["CROTA2"] = -rotation
        h["CUNIT1"] = ("DEGREE" if messy else "deg", "")
        h["CUNIT2"] = ("DEGREE" if messy else "deg", "")
        if messy:
            h["RADECSYS"] = ("ICRS", "deprecated spelling of RADESYS")
            h["ZZBLANK"] = (0, "placeholder")
        else:
            h["RADESYS"] = "ICRS"
        if name == "VEL" and velref_card:
            h["VELREF"] = ("SYSTEMIC" if velocity_reference == "systemic" else "CZ", "velocity reference")
        hdus.append(fits.ImageHDU(data=np.asarray(data, dtype=np.float32), header=h))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    cards = {}
    if messy:
        cards = {
            "ZZBLANK": _raw_card("BLANK", "NaN"),
            "ZZVSYS": _raw_card("vsys", f"{p.v_sys:.1f}"),
            "ZZJUNK": b"ESO QC  JUNK VALUE = 3 this card follows no convention".ljust(80),
        }
        raw = bytearray(path.read_bytes())
        for key, card in cards.items():
            start = 0
            while (i := raw.find(key.ljust(8).encode() + b"=", start)) >= 0:
                if i % 80 == 0:
                    raw[i : i + 80] = card
                start = i + 1
        path.write_bytes(bytes(raw))
    truth = VelocityMapTruth(
        params=p,
        object_id=object_id,
        z=z,
        ra=ra,
        dec=dec,
        velocity=velocity,
        velocity_measured=measured,
        velocity_err=err,
        velocity_written=np.asarray(written, dtype=np.float32).astype(np.float64),
        sigma=sigma,
        sigma_err=sigma_err,
        flux=flux,
        flux_err=flux_err,
        radius=radius,
        valid=valid,
        pixel_scale=pixel_scale,
        velocity_reference=velocity_reference,
        header_cards={k[2:]: v.decode("ascii").rstrip() for k, v in cards.items()},
    )
    return path, truth
