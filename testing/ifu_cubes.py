"""Synthetic IFU cubes in the MUSE ``DATACUBE_FINAL`` and MaNGA DRP ``LOGCUBE`` layouts.

:func:`write_muse_cube` and :func:`write_manga_cube` write the same extensions and
header cards as the real products, holding a thin rotating disk
(:mod:`skyledger.testing.disk_model`), converted to air wavelengths for MUSE. Each
returns ``(path, CubeTruth)``. Everything random comes from
``numpy.random.default_rng(seed)``: same seed, same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from skyledger.schema.linelist import air_to_vacuum
from skyledger.testing.disk_model import (
    C_KMS,
    FWHM_PER_SIGMA,
    DiskParams,
    continuum_shape,
    disk_spaxels,
    field_centre,
    model_cube,
)

__all__ = ["CubeTruth", "muse_lsf_fwhm", "write_manga_cube", "write_muse_cube"]

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
    sigma_inst = C_KMS / (wave_air / muse_lsf_fwhm(wave_air)) / FWHM_PER_SIGMA
    cd, fluxes, oh, velocity, radius, continuum, ra, dec = disk_spaxels(p, n_y, n_x, pixel_scale, rotation, 6.0e4, 300.0)
    model = model_cube(wave_vac, sigma_inst, velocity, continuum, fluxes, p.sigma_gas)
    noise_sigma = float(continuum.max() * continuum_shape(np.array([5500.0]))[0] / p.snr)
    data = (model + rng.normal(0.0, noise_sigma, model.shape)).astype(np.float32)
    stat = np.full(model.shape, noise_sigma**2, dtype=np.float32)
    covered = np.ones((n_y, n_x), dtype=bool)
    if nan_border > 0:
        covered[:nan_border] = covered[-nan_border:] = False
        covered[:, :nan_border] = covered[:, -nan_border:] = False
        data[:, ~covered] = np.nan
        stat[:, ~covered] = np.nan

    crval1, crval2 = field_centre(p)
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


def _manga_primary(p: DiskParams, crval1: float, crval2: float, plateifu: str, mangaid: str) -> fits.Header:
    """The primary header of a MaNGA LOGCUBE: survey, target and observation cards."""
    plate, ifu = plateifu.split("-")
    primary = fits.Header()
    # The AUTHOR card names the module this writer came from; kept, so that a seed still
    # gives the same bytes.
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
    return primary


def _manga_wcs(h: fits.Header, n_x: int, n_y: int, crval1: float, crval2: float, cd: np.ndarray) -> fits.Header:
    """``h`` with the cube's 3-D WCS cards (spatial TAN, log-lambda spectral axis)."""
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


def _manga_cube_hdu(
    data: np.ndarray, name: str, clas2: str, clas3: str | None, bunit: str | None, wcs: Callable[[fits.Header], fits.Header]
) -> fits.ImageHDU:
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
    return fits.ImageHDU(data=data, header=wcs(h))


def _manga_vector(data: np.ndarray, name: str, bunit: str | None = None) -> fits.ImageHDU:
    h = fits.Header()
    h["EXTNAME"] = name
    if bunit:
        h["BUNIT"] = bunit
    return fits.ImageHDU(data=np.asarray(data, dtype=np.float64), header=h)


def _manga_image(
    band: str, lo: float, hi: float, wave: np.ndarray, flux: np.ndarray, wcs: Callable[[fits.Header], fits.Header]
) -> fits.ImageHDU:
    """The mean of the cube over a band, as the DRP's ``<band>IMG`` extensions."""
    n_y, n_x = flux.shape[1:]
    sel = (wave >= lo) & (wave < hi)
    img = flux[sel].mean(axis=0) if sel.any() else np.zeros((n_y, n_x), np.float32)
    h = fits.Header()
    h["EXTNAME"] = f"{band}IMG"
    h["BUNIT"] = ("nanomaggies/pixel", "")
    for key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CD1_1", "CD2_2", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2"):
        h[key] = wcs(fits.Header())[key]
    return fits.ImageHDU(data=img.astype(np.float32), header=h)


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
    sigma_inst = C_KMS / res / FWHM_PER_SIGMA
    cd, fluxes, oh, velocity, radius, continuum, ra, dec = disk_spaxels(p, n_y, n_x, pixel_scale, 0.0, 20.0, 0.6)
    model = model_cube(wave, sigma_inst, velocity, continuum, fluxes, p.sigma_gas)
    noise_sigma = float(continuum.max() * continuum_shape(np.array([5500.0]))[0] / p.snr)
    flux = (model + rng.normal(0.0, noise_sigma, model.shape)).astype(np.float32)
    ivar = np.full(model.shape, 1.0 / noise_sigma**2, dtype=np.float32)
    mask = np.zeros(model.shape, dtype=np.int32)
    yy, xx = np.mgrid[0:n_y, 0:n_x]
    r_cov = coverage_radius if coverage_radius is not None else (min(n_x, n_y) - 1) / 2.0
    covered = np.hypot(xx - (n_x - 1) / 2.0, yy - (n_y - 1) / 2.0) <= r_cov
    flux[:, ~covered] = 0.0
    ivar[:, ~covered] = 0.0
    mask[:, ~covered] = (1 << 0) | (1 << 10)  # NOCOV | DONOTUSE
    disp = np.broadcast_to((wave / res / FWHM_PER_SIGMA)[:, None, None], model.shape).astype(np.float32)
    predisp = (disp * 0.92).astype(np.float32)  # the LSF before pixel convolution is narrower

    crval1, crval2 = field_centre(p)
    primary = _manga_primary(p, crval1, crval2, plateifu, mangaid)

    wcs3 = partial(_manga_wcs, n_x=n_x, n_y=n_y, crval1=crval1, crval2=crval2, cd=cd)
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(header=primary),
            _manga_cube_hdu(flux, "FLUX", "DATA", None, "1E-17 erg/s/cm^2/Ang/spaxel", wcs3),
            _manga_cube_hdu(ivar, "IVAR", "ERROR", "INVMSE", "1E-17 erg/s/cm^2/Ang/spaxel", wcs3),
            _manga_cube_hdu(mask, "MASK", "QUALITY", "FLAG32BIT", None, wcs3),
            _manga_cube_hdu(disp, "DISP", "DATA", None, "Angstrom", wcs3),
            _manga_cube_hdu(predisp, "PREDISP", "DATA", None, "Angstrom", wcs3),
            _manga_vector(wave, "WAVE", "Angstrom"),
            _manga_vector(res, "SPECRES"),
            _manga_vector(np.full(n_wave, 20.0), "SPECRESD"),
            _manga_vector(res / 0.92, "PRESPECRES"),
            _manga_vector(np.full(n_wave, 22.0), "PRESPECRESD"),
            _manga_image("G", 4000.0, 5500.0, wave, flux, wcs3),
            _manga_image("R", 5500.0, 6900.0, wave, flux, wcs3),
            _manga_image("I", 6900.0, 8400.0, wave, flux, wcs3),
            _manga_image("Z", 8400.0, 10400.0, wave, flux, wcs3),
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
