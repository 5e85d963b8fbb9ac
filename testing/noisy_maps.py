"""Velocity maps of a disk seen through a Gaussian PSF, with independent or PSF-correlated noise.

For checking error estimates: :func:`smeared_disk_map` convolves the thin disk of
:mod:`skyledger.testing.disk_model` with the PSF by brute force on a fine grid (not with
the fit's Gauss-Hermite stencil), and :func:`correlated_noise` is white noise smoothed
with a Gaussian of the PSF's width, as the noise of a real map whose spectra were
observed through the seeing: neighbouring pixels within about one FWHM share their errors.
"""

from __future__ import annotations

import math

import numpy as np
from skyledger.testing.disk_model import DiskParams, disk_velocity

__all__ = ["correlated_noise", "pixel_grid", "smeared_disk_map"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def pixel_grid(n: int, pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """East and north offsets (arcsec) of the centres of an n x n map, centred on 0."""
    c = (np.arange(n) - (n - 1) / 2.0) * pixel
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def smeared_disk_map(p: DiskParams, x: np.ndarray, y: np.ndarray, psf_fwhm: float, step: float = 0.04) -> np.ndarray:
    """Line-of-sight velocity (relative to p.v_sys's frame, as :func:`disk_velocity`) at
    offsets ``x``, ``y`` (arcsec from the disk centre) of the disk seen through a Gaussian
    PSF of ``psf_fwhm`` arcsec with uniform surface brightness: the PSF-weighted mean of the
    intrinsic velocity over a fine grid of ``step`` arcsec out to 4 sigma."""
    sig = psf_fwhm / FWHM_PER_SIGMA
    if sig <= 0:
        return disk_velocity(x, y, p)[0]
    g = np.arange(-4 * sig, 4 * sig + step / 2, step)
    gx, gy = np.meshgrid(g, g)
    w = np.exp(-0.5 * (gx**2 + gy**2) / sig**2)
    w /= w.sum()
    out = np.empty(x.shape)
    for idx in np.ndindex(x.shape):
        out[idx] = (w * disk_velocity(x[idx] + gx, y[idx] + gy, p)[0]).sum()
    return out


def correlated_noise(rng: np.random.Generator, shape: tuple[int, int], sigma_pix: float, amplitude: float) -> np.ndarray:
    """Noise of standard deviation ``amplitude`` per pixel, correlated as white noise
    smoothed by a Gaussian of ``sigma_pix`` pixels (0: independent pixels)."""
    if sigma_pix <= 0:
        return rng.normal(0.0, amplitude, shape)
    half = math.ceil(4 * sigma_pix)
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_pix) ** 2)
    k /= k.sum()
    white = rng.normal(0.0, 1.0, (shape[0] + 2 * half, shape[1] + 2 * half))
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, white)
    smooth = np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)
    # Each pixel is a sum of independent normals with weights k_i k_j: its variance is (sum k^2)^2.
    return smooth * (amplitude / float((k**2).sum()))
