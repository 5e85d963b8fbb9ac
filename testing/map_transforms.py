"""Known transformations of a real 2-D velocity map, for robustness checks of the disk fit.

The maps are files in the layout of the ``velocity_map`` reader (``VEL``, ``VEL_ERR``,
optionally ``SIGMA``, ``FLUX``; celestial WCS in the ``VEL`` header; galaxy position in
``OBJRA``/``OBJDEC``).  :func:`transform_map` writes a copy with

* the sky rotated by ``rotate_deg`` east of north about the WCS reference pixel: only the
  CD matrix changes, so every pixel keeps its value and the true PA becomes PA + angle
  (the reference pixel of the maps made by ``benchmarks/rotation_real_maps.py`` is the
  galaxy position, so the centre stays put);
* a random ``drop_fraction`` of the valid pixels removed (NaN);
* one side removed: every pixel east (``"east"``) or west (``"west"``) of the galaxy
  position (after the rotation), a lopsided coverage;
* the galaxy position (the fit's reference) moved by ``shift_arcsec`` = (east, north).

:func:`map_points` gives the valid pixels as offsets from the galaxy position, the
frame the ``rotation`` task fits in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from skyledger.compute.kinematics.sky import offsets_to_sky, sky_offsets

__all__ = ["MapPoints", "map_points", "transform_map"]

_IMAGES = ("VEL", "VEL_ERR", "SIGMA", "SIGMA_ERR", "FLUX", "FLUX_ERR")


@dataclass(slots=True)
class MapPoints:
    """The valid pixels of a map: east/north offsets (arcsec) from the galaxy position."""

    east: np.ndarray
    north: np.ndarray
    v: np.ndarray
    v_err: np.ndarray
    flux: np.ndarray  # NaN without a FLUX extension


def _cd(header: fits.Header) -> np.ndarray:
    """The CD matrix (degrees per pixel) of a celestial header, whatever form it is written in."""
    return WCS(header).celestial.pixel_scale_matrix


def _galaxy(header: fits.Header, primary: fits.Header) -> tuple[float, float]:
    for h in (header, primary):
        if "OBJRA" in h and "OBJDEC" in h:
            return float(h["OBJRA"]), float(h["OBJDEC"])
    raise ValueError("the map has no OBJRA/OBJDEC cards: write the galaxy position into the VEL or primary header")


def map_points(path: Path) -> MapPoints:
    with fits.open(path) as hdul:
        vel = hdul["VEL"]
        ra0, dec0 = _galaxy(vel.header, hdul[0].header)
        v = np.asarray(vel.data, dtype=np.float64)
        err = np.asarray(hdul["VEL_ERR"].data, dtype=np.float64)
        flux = np.asarray(hdul["FLUX"].data, dtype=np.float64) if "FLUX" in hdul else np.full_like(v, np.nan)
        ok = np.isfinite(v) & np.isfinite(err) & (err > 0)
        ys, xs = np.nonzero(ok)
        ra, dec = WCS(vel.header).celestial.pixel_to_world_values(xs.astype(float), ys.astype(float))
    east, north = sky_offsets(ra, dec, ra0, dec0)
    return MapPoints(east, north, v[ok], err[ok], flux[ok])


def transform_map(
    src: Path,
    dst: Path,
    *,
    rotate_deg: float = 0.0,
    drop_fraction: float = 0.0,
    drop_side: str | None = None,
    shift_arcsec: tuple[float, float] = (0.0, 0.0),
    object_id: str | None = None,
    seed: int = 0,
) -> Path:
    """Write ``src`` transformed (see the module docstring) to ``dst``; returns ``dst``."""
    if drop_side not in (None, "east", "west"):
        raise ValueError(f"drop_side must be None, 'east' or 'west', got {drop_side!r}")
    if not 0.0 <= drop_fraction < 1.0:
        raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    vel = hdul["VEL"]
    ra0, dec0 = _galaxy(vel.header, hdul[0].header)
    if rotate_deg:
        # Intermediate world coordinates are (east, north); rotating them by the angle
        # toward east turns a point at PA phi into one at PA phi + angle.
        t = math.radians(rotate_deg)
        rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
        cd = rot @ _cd(vel.header)
        for h in hdul:
            if h.name in _IMAGES:
                for key in ("CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CROTA2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
                    h.header.remove(key, ignore_missing=True, remove_all=True)
                for i in range(2):
                    for j in range(2):
                        h.header[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    valid = np.isfinite(vel.data)
    drop = np.zeros_like(valid)
    if drop_fraction:
        rng = np.random.default_rng(seed)
        idx = np.flatnonzero(valid)
        drop.flat[rng.choice(idx, round(drop_fraction * idx.size), replace=False)] = True
    if drop_side is not None:
        ys, xs = np.mgrid[0 : valid.shape[0], 0 : valid.shape[1]]
        ra, dec = WCS(vel.header).celestial.pixel_to_world_values(xs.astype(float), ys.astype(float))
        east, _ = sky_offsets(np.ravel(ra), np.ravel(dec), ra0, dec0)
        east = east.reshape(valid.shape)
        drop |= (east > 0) if drop_side == "east" else (east < 0)
    for h in hdul:
        if h.name in _IMAGES and h.data is not None:
            data = np.array(h.data, dtype=np.float64)
            data[drop] = np.nan
            h.data = data
    if shift_arcsec != (0.0, 0.0):
        ra, dec = offsets_to_sky(np.array([shift_arcsec[0]]), np.array([shift_arcsec[1]]), ra0, dec0)
        for h in (hdul[0], vel):
            if "OBJRA" in h.header:
                h.header["OBJRA"], h.header["OBJDEC"] = float(ra[0]), float(dec[0])
    if object_id is not None:
        hdul[0].header["OBJECT"] = object_id
        vel.header.remove("OBJECT", ignore_missing=True)
    hdul.writeto(dst, overwrite=True)
    return dst
