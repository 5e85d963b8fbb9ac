"""Synthetic 2-D velocity maps of a rotating disk, messy headers included.

:func:`write_velocity_map` writes the ``VEL``/``VEL_ERR`` (and optionally ``SIGMA``,
``FLUX``) images of a disk (:mod:`skyledger.testing.disk_model`) in the conventions the
velocity-map reader recognises, and returns a :class:`VelocityMapTruth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from skyledger.testing.disk_model import (
    C_KMS,
    DiskParams,
    disk_velocity,
    field_centre,
    sky_offsets,
    tangent_plane_to_sky,
)

__all__ = ["VelocityMapTruth", "write_velocity_map"]

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


def _image_header(
    name: str, bunit: str, n_x: int, n_y: int, crval1: float, crval2: float, cd: np.ndarray, *, wcs: str,
    pixel_scale: float, rotation: float, messy: bool,
) -> fits.Header:  # fmt: skip
    """The header of one map image: EXTNAME, BUNIT and the celestial WCS (CD or CDELT)."""
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
            # CROTA2 turns the grid the other way round from sky_offsets' rotation.
            h["CROTA2"] = -rotation
    h["CUNIT1"] = ("DEGREE" if messy else "deg", "")
    h["CUNIT2"] = ("DEGREE" if messy else "deg", "")
    if messy:
        h["RADECSYS"] = ("ICRS", "deprecated spelling of RADESYS")
        h["ZZBLANK"] = (0, "placeholder")
    else:
        h["RADESYS"] = "ICRS"
    return h


def _replace_cards(path: Path, cards: dict[str, bytes]) -> None:
    """Overwrite each placeholder card (keyword ``key``) of the written file with ``cards[key]``."""
    raw = bytearray(path.read_bytes())
    for key, card in cards.items():
        start = 0
        while (i := raw.find(key.ljust(8).encode() + b"=", start)) >= 0:
            if i % 80 == 0:
                raw[i : i + 80] = card
            start = i + 1
    path.write_bytes(bytes(raw))


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
    cd, xi, eta = sky_offsets(n_y, n_x, pixel_scale, rotation)
    crval1, crval2 = field_centre(p)
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
        h = _image_header(name, bunit, n_x, n_y, crval1, crval2, cd, wcs=wcs, pixel_scale=pixel_scale,
                          rotation=rotation, messy=messy)  # fmt: skip
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
        _replace_cards(path, cards)
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
