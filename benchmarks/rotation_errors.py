"""Bootstrap against curvature errors of the disk fit: calibration and cost.

Calibration (``--calibrate``): ``--realisations`` noisy maps of one disk (24 x 24 pixels
of 0.25", PSF FWHM 0.55", i 60 deg, PA 142 deg, V_max 200 km/s, r_turn 0.6"; the disk
seen through the PSF by brute force on a fine grid, not by the fit's stencil) with
10 km/s noise that is either independent per pixel or PSF-correlated (white noise
smoothed by a Gaussian of the PSF's width, renormalised to 10 km/s per pixel), fitted
with the PSF; for each parameter the scatter of the fits about the truth, the median
curvature and bootstrap errors, and the widths (standard deviations) of the pulls
(fit - truth) / error.

Cost (``--cost``): ``fit_disks`` and ``bootstrap_disks`` on ``--galaxies`` random disks
of ``--points`` random points (as benchmarks/rotation_throughput.py: 8 km/s noise, 3 %
outliers, no PSF), and the same with a PSF.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from skyledger.compute.kinematics import DiskData, DiskFitConfig, fit_disks
from skyledger.compute.kinematics.bootstrap import bootstrap_disks
from skyledger.testing.disk_model import DiskParams, disk_velocity
from skyledger.testing.noisy_maps import (
    FWHM_PER_SIGMA,
    correlated_noise,
    pixel_grid,
    smeared_disk_map,
)

NAMES = ("x0", "y0", "pa", "inc", "vsys", "vmax", "r_turn")


def calibrate(n_real: int, correlated: bool, resamples: int, block: float, seed: int = 0,
              psf: float = 0.55, noise: float = 10.0, n: int = 24, pixel: float = 0.25) -> None:  # fmt: skip
    p = DiskParams(pa=142, inclination=60, v_sys=0, v_max=200, r_turn=0.6)
    x, y = pixel_grid(n, pixel)
    v0 = smeared_disk_map(p, x, y, psf)
    rng = np.random.default_rng(seed)
    sigma_pix = psf / FWHM_PER_SIGMA / pixel if correlated else 0.0
    vs = np.stack([v0 + correlated_noise(rng, x.shape, sigma_pix, noise) for _ in range(n_real)])
    t = lambda a: torch.tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    data = DiskData(t(np.broadcast_to(x.ravel(), (n_real, x.size))), t(np.broadcast_to(y.ravel(), (n_real, x.size))),
                    t(vs.reshape(n_real, -1)), torch.full((n_real, x.size), noise, dtype=torch.float64),
                    torch.ones(n_real, x.size, dtype=torch.bool), psf_fwhm=torch.full((n_real,), psf, dtype=torch.float64))  # fmt: skip
    config = DiskFitConfig(error_floor=0.0)
    t0 = time.perf_counter()
    fit = fit_disks(data, config)
    t1 = time.perf_counter()
    boot = bootstrap_disks(data, config, fit, resamples, block_fwhm=block)
    t2 = time.perf_counter()
    th, ce, be = fit.theta.numpy(), fit.errors.numpy(), boot.errors.numpy()
    truth = np.array([0, 0, math.radians(p.pa), math.radians(p.inclination), p.v_sys, p.v_max, p.r_turn])
    d = th - truth
    d[:, 2] = (d[:, 2] + math.pi) % (2 * math.pi) - math.pi
    flags = fit.flags.numpy() | boot.flags.numpy()
    print(f"\nnoise {'PSF-correlated' if correlated else 'independent'}, {n_real} maps, {resamples} resamples, "
          f"cells {block} FWHM ({int(boot.n_blocks.median())} cells): fit {t1 - t0:.1f} s, bootstrap {t2 - t1:.1f} s; "
          f"ERRORS_UNDERESTIMATED on {int(((flags & (1 << 12)) != 0).sum())}, BOOTSTRAP_UNRELIABLE on "
          f"{int(((flags & (1 << 13)) != 0).sum())}")  # fmt: skip
    print("| parameter | scatter about truth | median curvature error | median bootstrap error | pull width (curvature) | pull width (bootstrap) |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in (0, 2, 3, 4, 5, 6):
        scale = math.degrees(1) if k in (2, 3) else 1.0
        print(f"| {NAMES[k]} | {d[:, k].std() * scale:.3g} | {np.median(ce[:, k]) * scale:.3g} | "
              f"{np.nanmedian(be[:, k]) * scale:.3g} | {np.std(d[:, k] / ce[:, k]):.2f} | {np.nanstd(d[:, k] / be[:, k]):.2f} |")  # fmt: skip


def cost(n_gal: int, n_pts: int, resamples: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    xs, ys, vs = [], [], []
    for _ in range(n_gal):
        p = DiskParams(pa=rng.uniform(0, 360), inclination=rng.uniform(30, 70), v_sys=0.0,
                       v_max=rng.uniform(100, 300), r_turn=rng.uniform(1.0, 2.5))  # fmt: skip
        x, y = rng.uniform(-7, 7, n_pts), rng.uniform(-7, 7, n_pts)
        v = disk_velocity(x, y, p)[0] + rng.normal(0, 8.0, n_pts)
        bad = rng.random(n_pts) < 0.03
        v[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(150, 400, bad.sum())
        xs.append(x), ys.append(y), vs.append(v)
    t = lambda a: torch.tensor(np.array(a), dtype=torch.float64)  # noqa: E731
    for psf in (None, 0.8):
        data = DiskData(t(xs), t(ys), t(vs), torch.full((n_gal, n_pts), 8.0, dtype=torch.float64),
                        torch.ones(n_gal, n_pts, dtype=torch.bool),
                        psf_fwhm=None if psf is None else torch.full((n_gal,), psf, dtype=torch.float64))  # fmt: skip
        config = DiskFitConfig()
        fit_disks(data, config)  # warm-up
        t0 = time.perf_counter()
        fit = fit_disks(data, config)
        t1 = time.perf_counter()
        boot = bootstrap_disks(data, config, fit, resamples, seeds=range(n_gal))
        t2 = time.perf_counter()
        print(f"| {n_gal} x {n_pts} | {'none' if psf is None else f'{psf} arcsec'} | {resamples} | {t1 - t0:.2f} | "
              f"{t2 - t1:.2f} | {(t2 - t1) / (t1 - t0):.2f} | {int(boot.n_blocks.median())} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--realisations", type=int, default=50)
    ap.add_argument("--resamples", type=int, default=20)
    ap.add_argument("--block", type=float, nargs="+", default=[2.0], help="cell side(s) in PSF FWHM")
    ap.add_argument("--galaxies", type=int, default=500)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    if args.calibrate:
        for correlated in (False, True):
            for block in args.block:
                calibrate(args.realisations, correlated, args.resamples, block)
    if args.cost:
        print("| galaxies x points | PSF | resamples | fit_disks (s) | bootstrap_disks (s) | bootstrap / fit | cells |")
        print("|---|---|---:|---:|---:|---:|---:|")
        cost(args.galaxies, args.points, args.resamples)
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
