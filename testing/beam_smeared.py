"""Beam-smeared disks observed as a 3-D line cube and re-measured, with known truth.

Not the fit's model: the disk is built on a fine sub-pixel grid with clumpy H-alpha flux
(an inclined exponential disk plus random star-forming clumps in the disk plane), an
arctan or exponential-disk (Freeman) rotation curve and an intrinsic dispersion; every
channel of the line cube is convolved with a Gaussian or a Moffat PSF (the fit assumes a
Gaussian), binned to pixels, given noise, and velocity, dispersion and flux are
re-measured per pixel from the spectra (windowed moments around the line peak), with
the pixels below an S/N threshold masked: an observation, as an IFU would give it.

Geometry: x east, y north (arcsec), PA of the receding major axis north through east,
as :mod:`skyledger.testing.disk_model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import fftconvolve
from scipy.special import i0, i1, k0, k1

__all__ = ["ObservedDisk", "SmearedDiskSpec", "observe_disk"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class SmearedDiskSpec:
    """A disk and how it is observed; lengths in arcsec, speeds in km/s."""

    pa: float = 40.0  # deg, receding major axis
    inclination: float = 55.0  # deg
    v_sys: float = 0.0
    v_max: float = 200.0  # asymptotic (arctan) or peak (freeman) speed
    r_turn: float = 0.6  # arctan turnover radius, or the Freeman peak radius 2.15 R_d
    curve: str = "arctan"  # "arctan" or "freeman"
    sigma0: float = 40.0  # intrinsic dispersion
    r_eff: float = 1.5  # effective (half-light) radius of the exponential flux disk
    n_clumps: int = 8  # star-forming clumps, Gaussian, in the disk plane
    clump_fwhm: float = 0.25
    clump_fraction: float = 0.35  # share of the total flux in clumps
    psf: str = "gaussian"  # "gaussian" or "moffat"
    psf_fwhm: float = 0.5  # 0: no PSF
    moffat_beta: float = 3.5
    pixel: float = 0.125
    n_pix: int = 33
    fine: int = 5  # sub-pixels per pixel side of the model
    centre: tuple[float, float] = (0.04, -0.03)  # kinematic centre offset from the map centre
    channel: float = 15.0  # channel width, km/s
    snr_peak: float = 40.0  # S/N of the brightest pixel's integrated line
    snr_min: float = 5.0  # pixels below are masked
    seed: int = 0


@dataclass
class ObservedDisk:
    """Per-pixel measurements (flattened map; ``mask`` the pixels kept) and the truth."""

    x: np.ndarray
    y: np.ndarray
    v: np.ndarray
    v_err: np.ndarray
    sigma: np.ndarray  # observed dispersion (channel width removed)
    flux: np.ndarray
    mask: np.ndarray
    spec: SmearedDiskSpec
    extra: dict[str, float] = field(default_factory=dict)


def _curve(radius: np.ndarray, spec: SmearedDiskSpec) -> np.ndarray:
    if spec.curve == "arctan":
        return (2.0 / math.pi) * spec.v_max * np.arctan(radius / spec.r_turn)
    if spec.curve == "freeman":
        y_peak = 1.07503  # R = 2.15 R_d
        g = lambda y: y * y * (i0(y) * k0(y) - i1(y) * k1(y))
        y = np.clip(y_peak * radius / spec.r_turn, 1e-8, 300)
        return spec.v_max * np.sqrt(np.clip(g(y), 0, None) / g(y_peak))
    raise ValueError(f"unknown curve {spec.curve!r}; use arctan or freeman")


def _psf_kernel(spec: SmearedDiskSpec, step: float) -> np.ndarray | None:
    if spec.psf_fwhm <= 0:
        return None
    half = math.ceil(4.0 * spec.psf_fwhm / step)
    r = np.hypot(*np.meshgrid(np.arange(-half, half + 1) * step, np.arange(-half, half + 1) * step))
    if spec.psf == "gaussian":
        k = np.exp(-0.5 * (r / (spec.psf_fwhm / FWHM_PER_SIGMA)) ** 2)
    elif spec.psf == "moffat":
        alpha = spec.psf_fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / spec.moffat_beta) - 1.0))
        k = (1.0 + (r / alpha) ** 2) ** (-spec.moffat_beta)
    else:
        raise ValueError(f"unknown psf {spec.psf!r}; use gaussian or moffat")
    return k / k.sum()


def observe_disk(spec: SmearedDiskSpec) -> ObservedDisk:
    """Build, smear, observe and re-measure one disk (see the module docstring)."""
    rng = np.random.default_rng(spec.seed)
    n_f = spec.n_pix * spec.fine
    step = spec.pixel / spec.fine
    c = (np.arange(n_f) + 0.5) * step - spec.n_pix * spec.pixel / 2.0
    xf, yf = np.meshgrid(c, c)  # x east along columns, y north along rows
    pa, inc = math.radians(spec.pa), math.radians(spec.inclination)
    dx, dy = xf - spec.centre[0], yf - spec.centre[1]
    a = dx * math.sin(pa) + dy * math.cos(pa)
    b = -dx * math.cos(pa) + dy * math.sin(pa)
    radius = np.sqrt(a * a + (b / math.cos(inc)) ** 2)
    vel = spec.v_sys + _curve(radius, spec) * math.sin(inc) * a / np.maximum(radius, 1e-9)
    h = spec.r_eff / 1.678
    flux = np.exp(-radius / h)
    flux /= flux.sum()
    if spec.n_clumps:
        # Clumps at random disk-plane positions within 2 R_e, projected like the disk.
        rr = spec.r_eff * np.sqrt(rng.uniform(0.05, 4.0, spec.n_clumps))
        ph = rng.uniform(0, 2 * math.pi, spec.n_clumps)
        amps = rng.uniform(0.5, 1.5, spec.n_clumps)
        cs = spec.clump_fwhm / FWHM_PER_SIGMA
        clumps = np.zeros_like(flux)
        for r_c, p_c, amp in zip(rr, ph, amps, strict=True):
            ca, cb = r_c * math.cos(p_c), r_c * math.sin(p_c) * math.cos(inc)
            clumps += amp * np.exp(-0.5 * ((a - ca) ** 2 + (b - cb) ** 2) / cs**2)
        flux = (1 - spec.clump_fraction) * flux + spec.clump_fraction * clumps / clumps.sum()

    vmax_los = spec.v_max * math.sin(inc) * 1.2 + 4 * spec.sigma0
    chans = np.arange(-vmax_los, vmax_los + spec.channel, spec.channel) + spec.v_sys
    edges = np.concatenate([chans - spec.channel / 2, chans[-1:] + spec.channel / 2])
    # Channel-integrated Gaussian line of every sub-pixel: (n_chan, n_f, n_f).
    from scipy.special import ndtr

    z = (edges[:, None, None] - vel[None]) / spec.sigma0
    cube = flux[None] * np.diff(ndtr(z), axis=0)
    kern = _psf_kernel(spec, step)
    if kern is not None:
        cube = np.stack([fftconvolve(ch, kern, mode="same") for ch in cube])
    cube = cube.reshape(len(chans), spec.n_pix, spec.fine, spec.n_pix, spec.fine).sum((2, 4))

    # Noise: one level per voxel, set by the S/N of the brightest pixel's integrated line.
    line = cube.sum(0)
    n_eff = max(1.0, 2.5 * spec.sigma0 / spec.channel)
    noise = line.max() / (spec.snr_peak * math.sqrt(n_eff))
    cube = cube + rng.normal(0.0, noise, cube.shape)

    # Re-measure: windowed moments around the peak of a 3-channel smoothed spectrum,
    # twice (the window follows the measured width).
    smooth = cube[:-2] + cube[1:-1] + cube[2:]
    peak = chans[1:-1][np.argmax(smooth, axis=0)]
    width = np.full(peak.shape, 2.0 * spec.sigma0)
    for _ in range(2):
        win = np.abs(chans[:, None, None] - peak[None]) <= 3.0 * np.maximum(width, spec.channel)[None]
        wf = np.where(win, cube, 0.0)
        f = wf.sum(0)
        safe = np.where(f > 0, f, 1.0)
        m1 = (wf * chans[:, None, None]).sum(0) / safe
        m2 = (wf * (chans[:, None, None] - m1) ** 2).sum(0) / safe
        peak, width = m1, np.sqrt(np.clip(m2, 0.0, None))
    n_win = win.sum(0)
    f_err = noise * np.sqrt(np.maximum(n_win, 1))
    snr = f / f_err
    sig_obs = np.sqrt(np.clip(width**2 - spec.channel**2 / 12.0, 0.0, None))
    mask = (snr >= spec.snr_min) & np.isfinite(m1)
    v_err = np.maximum(sig_obs, spec.channel) / np.maximum(snr, 1e-3)

    pc = (np.arange(spec.n_pix) + 0.5) * spec.pixel - spec.n_pix * spec.pixel / 2.0
    xp, yp = np.meshgrid(pc, pc)
    return ObservedDisk(
        x=xp.ravel(), y=yp.ravel(), v=peak.ravel(), v_err=v_err.ravel(), sigma=sig_obs.ravel(), flux=f.ravel(),
        mask=mask.ravel(), spec=spec, extra={"noise": float(noise)},
    )
