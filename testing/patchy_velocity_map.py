"""A patchy, beam-smeared velocity map with known truth, made as an observation makes it.

A clumpy, lopsided H-alpha disk (an exponential plus bright knots, mostly on the receding
side), its flux-weighted line-of-sight velocity (arctan disk of :mod:`.disk_model`)
convolved with a Gaussian PSF by brute force on a grid 5 times finer than the pixels and
binned to 0.125" pixels; faint pixels are masked (flux with 30 % log-normal scatter below
a quantile), and more of the approaching side, so that one side has far more pixels than
the other; 15 km/s noise.  Not made with the fit's model: the flux is not the fit's
exponential, the PSF is applied on the sky, not by the fit's stencil.  Modelled on KMOS3D
GS4_43501 (33 x 33 pixels of 0.125", PSF FWHM 0.55", inclination 62 deg, receding PA
322 deg, centre (+0.25", -0.75") from the map centre), the real map on which `rotation`
version 3's arctan fit ended with the PA ~140 deg and V_sys 55 km/s off.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from skyledger.compute.kinematics import DiskData

from .disk_model import DiskParams, disk_velocity

__all__ = ["CENTRE", "patchy_map", "to_data"]

F64 = torch.float64
#: kinematic centre, arcsec east and north of the map centre
CENTRE = (0.25, -0.75)


def patchy_map(seed: int, pa: float = 322.0, inc: float = 62.0, keep_frac: float = 0.45, approaching_kept: float = 0.25,
               vsys: float = 40.0) -> dict:
    """Pixels (x east, y north; arcsec from the map centre), velocities and fluxes of a
    beam-smeared, clumpy, lopsided disk (see the module docstring)."""
    rng = np.random.default_rng(seed)
    p = DiskParams(pa=pa, inclination=inc, v_sys=vsys, v_max=250.0, r_turn=0.3)
    npix, pix, over, psf = 33, 0.125, 5, 0.55
    fine = pix / over
    pad = 6 * over
    nf = npix * over + 2 * pad
    g = (np.arange(nf) - (nf - 1) / 2) * fine
    gx, gy = np.meshgrid(g, g)
    v, r = disk_velocity(gx - CENTRE[0], gy - CENTRE[1], p)
    flux = np.exp(-r / 0.6)
    major = np.array([math.sin(math.radians(pa)), math.cos(math.radians(pa))])
    for k in range(7):  # five knots on the receding side, two on the approaching one
        off = np.array(CENTRE) + (1.0 if k < 5 else -1.0) * rng.uniform(0.3, 1.3) * major + rng.normal(0, 0.3, 2)
        width = rng.uniform(0.08, 0.18)
        flux += rng.uniform(0.6, 1.5) * np.exp(-0.5 * ((gx - off[0]) ** 2 + (gy - off[1]) ** 2) / width**2)
    s = psf / 2.3548
    kg = np.arange(-4 * s, 4 * s + fine / 2, fine)
    k1 = np.exp(-0.5 * kg**2 / s**2)
    k1 /= k1.sum()

    def convolve(a: np.ndarray) -> np.ndarray:  # separable Gaussian, brute force on the fine grid
        a = np.apply_along_axis(lambda m: np.convolve(m, k1, mode="same"), 0, a)
        return np.apply_along_axis(lambda m: np.convolve(m, k1, mode="same"), 1, a)

    sl = slice(pad, pad + npix * over)
    binned = lambda a: convolve(a)[sl, sl].reshape(npix, over, npix, over).sum((1, 3))  # noqa: E731
    bf = binned(flux)
    vobs = binned(flux * v) / bf + rng.normal(0, 15.0, (npix, npix))
    px = (np.arange(npix) - (npix - 1) / 2) * pix
    xx, yy = np.meshgrid(px, px)
    fobs = bf * np.exp(rng.normal(0, 0.3, bf.shape))
    keep = fobs > np.quantile(fobs, 1 - keep_frac)
    a = (xx - CENTRE[0]) * major[0] + (yy - CENTRE[1]) * major[1]
    keep &= (a > -0.2) | (rng.random(a.shape) < approaching_kept)
    return {"x": xx[keep], "y": yy[keep], "v": vobs[keep], "flux": fobs[keep], "truth": p, "psf": psf}


def to_data(maps: list[dict], with_flux: bool = True) -> DiskData:
    n = max(len(m["x"]) for m in maps)
    arr = {k: np.full((len(maps), n), np.nan) for k in ("x", "y", "v", "flux")}
    mask = np.zeros((len(maps), n), dtype=bool)
    for i, m in enumerate(maps):
        k = len(m["x"])
        for key in arr:
            arr[key][i, :k] = m[key]
        mask[i, :k] = True
    t = lambda a: torch.tensor(a, dtype=F64)  # noqa: E731
    return DiskData(t(arr["x"]), t(arr["y"]), t(arr["v"]), t(np.where(mask, 15.0, np.nan)), torch.tensor(mask),
                    flux=t(arr["flux"]) if with_flux else None,
                    psf_fwhm=torch.tensor([m["psf"] for m in maps], dtype=F64))
