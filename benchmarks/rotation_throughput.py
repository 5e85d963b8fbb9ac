"""Rotation fits: galaxies per second, batched torch (``fit_disks``) against
``scipy.optimize.least_squares`` fitting the same model galaxy by galaxy, in one run.

Both sides do the same work per galaxy: the arctan thin disk (7 parameters), soft-L1 loss,
the same starting guesses (four PA starts, at the kinematic PA of the field and 90, 180,
270 deg from it, times three inclination starts, each run to convergence and the best
kept; with ``--prune-after K`` all twelve run K iterations, then only the lowest-cost one
continues; ``--pa-starts 0`` for the single PA start of rotation version 3), then up to two rounds of 4-sigma (MAD)
clipping with a refit of the galaxies whose points changed, and the covariance at the
end.  scipy gets an analytic numpy Jacobian, so neither side differentiates numerically.
What differs is the arithmetic of one evaluation (fit_disks: float32 iterations, a
float64 polish, fused Jacobian and normal equations) and the batching.  Data: random
disks (PA, i in 30-70 deg, V_max 100-300 km/s, r_turn 1-2.5") sampled at N random
positions with 8 km/s noise and 3 % outliers.

With ``--psf FWHM`` (arcsec) the points are N random pixels of a 0.5" map (29 x 29
pixels; the rest masked), the velocities the disk convolved with that Gaussian PSF on
the grid, and both codes fit the PSF-convolved grid model
(:mod:`skyledger.compute.kinematics.beam_grid`): fit_disks batched in torch, the peer
with the same oversampled grid and separable convolution as numpy matrix products (its
grid set-up inside its clock, as fit_disks's is inside its).

    python benchmarks/rotation_throughput.py --galaxies 2000 --points 200 --scipy 150 [--threads 2] [--device cuda]
    python benchmarks/rotation_throughput.py --galaxies 300 --points 200 --scipy 30 --psf 1.0
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np
import scipy
import torch
from scipy.optimize import least_squares

from skyledger.compute.kinematics import DiskData, DiskFitConfig, fit_disks
from skyledger.compute.kinematics.beam_grid import detect_grids
from skyledger.compute.kinematics.initial_guess import _initial
from skyledger.testing.disk_model import DiskParams, disk_velocity


def make_data(n_gal: int, n_pts: int, seed: int, psf: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[DiskParams]]:
    rng = np.random.default_rng(seed)
    pix = (np.arange(29) - 14) * 0.5
    xs, ys, vs, truth = np.empty((n_gal, n_pts)), np.empty((n_gal, n_pts)), np.empty((n_gal, n_pts)), []
    for b in range(n_gal):
        p = DiskParams(pa=rng.uniform(0, 360), inclination=rng.uniform(30, 70), v_sys=rng.uniform(-20, 20),
                       v_max=rng.uniform(100, 300), r_turn=rng.uniform(1.0, 2.5))
        if psf > 0:
            pick = rng.choice(pix.size**2, n_pts, replace=False)
            x, y = pix[pick % pix.size], pix[pick // pix.size]
            th = np.array([0.0, 0.0, math.radians(p.pa), math.radians(p.inclination), p.v_sys, p.v_max, p.r_turn])
            v = GridModel(x, y, psf)(th)[0]
        else:
            x, y = rng.uniform(-7, 7, n_pts), rng.uniform(-7, 7, n_pts)
            v = disk_velocity(x, y, p)[0]
        v = v + rng.normal(0, 8.0, n_pts)
        k = max(1, n_pts * 3 // 100)
        v[:k] += rng.choice([-1, 1], k) * rng.uniform(150, 400, k)
        xs[b], ys[b], vs[b] = x, y, v
        truth.append(p)
    return xs, ys, vs, truth


def model_np(th: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The arctan disk and its Jacobian (n, 7), numpy, for scipy."""
    x0, y0, pa, inc, vsys, vmax, rt = th
    dx, dy = x - x0, y - y0
    s, c, si, ci = math.sin(pa), math.cos(pa), math.sin(inc), math.cos(inc)
    a, b = dx * s + dy * c, -dx * c + dy * s
    bq = b / ci**2
    r = np.sqrt(a * a + b * bq + 1e-12)
    u = a / r
    q = r / rt
    f = (2 / math.pi) * np.arctan(q)
    df = (2 / math.pi) / (rt * (1 + q * q))
    vrot, dvr = vmax * f, vmax * df
    da = np.stack([-s * np.ones_like(a), -c * np.ones_like(a), -b], -1)
    db = np.stack([c * np.ones_like(b), -s * np.ones_like(b), a], -1)
    dr = (a[:, None] * da + bq[:, None] * db) / r[:, None]
    dr_i = b * bq * si / (ci * r)
    du = (da - u[:, None] * dr) / r[:, None]
    dv_geo = si * (dvr[:, None] * dr * u[:, None] + vrot[:, None] * du)
    dv_i = vrot * ci * u + si * (dvr * dr_i * u - vrot * u * dr_i / r)
    jac = np.column_stack([dv_geo, dv_i, np.ones_like(a), f * si * u, -vmax * df * q * si * u])
    return vsys + vrot * si * u, jac


class GridModel:
    """The PSF-convolved arctan disk on the points' pixel grid and its Jacobian, numpy: the
    same grid, brightness and separable convolution as fit_disks (``detect_grids``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, psf_fwhm: float) -> None:
        t = lambda a: torch.as_tensor(a[None], dtype=torch.float64)  # noqa: E731
        sig = torch.tensor([psf_fwhm / 2.3548200450309493], dtype=torch.float64)
        on, g = detect_grids(t(x), t(y), torch.ones(1, x.size, dtype=torch.bool), sig, None,
                             torch.tensor([math.inf], dtype=torch.float64))  # fmt: skip
        assert bool(on[0]) and g is not None, "the points are not on a grid"
        self.gx, self.gy = g.gx[0].numpy(), g.gy[0].numpy()
        self.ky, self.kx, self.bright = g.ky[0].numpy(), g.kx[0].numpy(), g.bright[0].numpy().ravel()
        self.norm, self.index = g.norm[0].numpy().ravel(), g.index[0].numpy()
        self.shape = g.shape

    def __call__(self, th: np.ndarray, keep: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        v, jac = model_np(th, self.gx, self.gy)
        chans = np.concatenate([(v - th[4])[None], jac.T]) * self.bright
        pix = (self.ky @ chans.reshape(8, *self.shape) @ self.kx.T).reshape(8, -1) / self.norm
        at = pix[:, self.index[keep]]
        return at[0] + th[4], at[1:].T


def scipy_fit(x, y, v, sigma, start, lower, upper, config: DiskFitConfig, psf: float = 0.0) -> np.ndarray:
    """The same procedure as fit_disks, one galaxy, with scipy least_squares (TRF, soft_l1)."""
    keep = np.ones_like(v, dtype=bool)
    if psf > 0:
        grid = GridModel(x, y, psf)
        model_np = lambda th, xk, yk, keep=None: grid(th, slice(None) if keep is None else keep)  # noqa: E731
    else:
        model_np = lambda th, xk, yk, keep=None: globals()["model_np"](th, xk, yk)  # noqa: E731

    def solve(th0, keep, max_nfev=config.max_iter * 2):
        fun = lambda th: (model_np(th, x[keep], y[keep], keep)[0] - v[keep]) / sigma[keep]  # noqa: E731
        jac = lambda th: model_np(th, x[keep], y[keep], keep)[1] / sigma[keep][:, None]  # noqa: E731
        th0 = np.clip(th0, lower + 1e-9, upper - 1e-9)
        return least_squares(fun, th0, jac=jac, bounds=(lower, upper), loss=config.loss, max_nfev=max_nfev)

    # The same start pruning as fit_disks: every start for prune_after iterations (one
    # function evaluation each, plus the one at the start), then only the best goes on.
    prune = 0 < config.prune_after < config.max_iter
    best = None
    for pa in config.pa_starts_deg:
        for inc in config.inc_starts_deg:
            th0 = start.copy()
            th0[2] = start[2] + math.radians(pa)
            th0[3] = math.radians(inc)
            th0[5] = start[5] / math.sin(math.radians(inc))
            res = solve(th0, keep, config.prune_after + 1) if prune else solve(th0, keep)
            if best is None or res.cost < best.cost:
                best = res
    if prune and best.status == 0:  # stopped by max_nfev, not converged
        best = solve(best.x, keep)
    theta = best.x
    for _ in range(config.clip_rounds):
        z = (model_np(theta, x, y)[0] - v) / sigma
        mad = max(np.median(np.abs(z[keep])) * 1.4826, 1.0)
        new = keep & (np.abs(z) <= config.clip_sigma * mad)
        if (new == keep).all():
            break
        keep = new
        theta = solve(theta, keep).x
    jac = model_np(theta, x[keep], y[keep], keep)[1] / sigma[keep][:, None]
    z = (model_np(theta, x[keep], y[keep], keep)[0] - v[keep]) / sigma[keep]
    np.linalg.pinv(jac.T @ jac) * (z @ z) / max(keep.sum() - 7, 1)  # the covariance, as fit_disks computes it
    theta[5], theta[2] = abs(theta[5]), (theta[2] + (math.pi if theta[5] < 0 else 0)) % (2 * math.pi)
    return theta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, default=2000)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--scipy", type=int, default=150, help="galaxies fitted by the scipy peer (a prefix of the same set)")
    ap.add_argument("--batch", type=int, default=500, help="galaxies per fit_disks call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (scipy is single-threaded)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--precision", choices=("mixed", "double"), default="mixed",
                    help="fit_disks iterations in float32 with a float64 polish (mixed) or all in float64")
    ap.add_argument("--prune-after", type=int, default=DiskFitConfig.prune_after,
                    help="iterations of every inclination start before only the best goes on, for both "
                    "codes (0: every start to convergence)")
    ap.add_argument("--psf", type=float, default=0.0, help="PSF FWHM (arcsec): points on a map grid, grid-convolved model")
    ap.add_argument("--pa-starts", default=",".join(f"{a:g}" for a in DiskFitConfig.pa_starts_deg),
                    help="PA starts, offsets in deg from the kinematic PA, for both codes (e.g. 0 for one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pa_starts = tuple(float(a) for a in args.pa_starts.split(","))
    config = DiskFitConfig(model="arctan", error_floor=0.0, precision=args.precision, prune_after=args.prune_after,
                           pa_starts_deg=pa_starts)
    xs, ys, vs, truth = make_data(args.galaxies, args.points, args.seed, args.psf)
    psf = lambda n: None if args.psf <= 0 else torch.full((n,), args.psf, dtype=torch.float64, device=args.device)  # noqa: E731
    t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=args.device)  # noqa: E731

    # warm-up (first-call costs of torch are not throughput)
    fit_disks(DiskData(t(xs[:4]), t(ys[:4]), t(vs[:4]), t(np.full((4, args.points), 8.0)),
                       torch.ones(4, args.points, dtype=torch.bool, device=args.device), psf_fwhm=psf(4)), config)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()

    # The peer starts from the very same guesses (computed outside its clock, as for torch
    # they are a negligible part of the batch) and the same bounds.
    ns = min(args.scipy, args.galaxies)
    cpu = lambda a: torch.as_tensor(a[:ns], dtype=torch.float64)  # noqa: E731
    sub = DiskData(cpu(xs), cpu(ys), cpu(vs), cpu(np.full((ns, args.points), 8.0)), torch.ones(ns, args.points, dtype=torch.bool))
    starts = _initial(sub, sub.mask, config)[0].numpy()
    sigma = np.full(args.points, 8.0)

    # The two codes take turns, one fit_disks batch and then an equal share of the scipy
    # galaxies, so that on a shared machine both see the same load; wall and CPU clocks.
    batches = list(range(0, args.galaxies, args.batch))
    shares = np.array_split(np.arange(ns), len(batches))
    torch_s = torch_cpu = scipy_s = scipy_cpu = 0.0
    thetas, theta_scipy = [], []
    for lo, share in zip(batches, shares, strict=True):
        wall, proc = time.perf_counter(), time.process_time()
        sl = slice(lo, lo + args.batch)
        n = xs[sl].shape[0]
        data = DiskData(t(xs[sl]), t(ys[sl]), t(vs[sl]), t(np.full((n, args.points), 8.0)),
                        torch.ones(n, args.points, dtype=torch.bool, device=args.device), psf_fwhm=psf(n))
        thetas.append(fit_disks(data, config).theta.cpu().numpy())
        sync()
        torch_s += time.perf_counter() - wall
        torch_cpu += time.process_time() - proc
        wall, proc = time.perf_counter(), time.process_time()
        for b in share:
            ext = float(np.hypot(xs[b], ys[b]).max())
            lower = np.array([-ext, -ext, -1e9, math.radians(3), -1e9, -config.vmax_limit, config.r_turn_min])
            upper = np.array([ext, ext, 1e9, math.radians(87), 1e9, config.vmax_limit, 10 * ext])
            theta_scipy.append(scipy_fit(xs[b], ys[b], vs[b], sigma, starts[b], lower, upper, config, args.psf))
        scipy_s += time.perf_counter() - wall
        scipy_cpu += time.process_time() - proc
    theta_torch = np.concatenate(thetas)
    theta_scipy = np.array(theta_scipy)

    def accuracy(th: np.ndarray, n: int) -> dict[str, float]:
        p = truth[:n]
        dpa = np.array([(math.degrees(th[i, 2]) - p[i].pa + 180) % 360 - 180 for i in range(n)])
        dinc = np.array([math.degrees(th[i, 3]) - p[i].inclination for i in range(n)])
        dv = np.array([th[i, 5] / p[i].v_max - 1 for i in range(n)])
        return {"pa_rms_deg": float(np.sqrt(np.mean(dpa**2))), "inc_rms_deg": float(np.sqrt(np.mean(dinc**2))),
                "vmax_rms_frac": float(np.sqrt(np.mean(dv**2))), "vmax_within_5pc": float(np.mean(np.abs(dv) < 0.05))}

    diff = theta_torch[:ns] - theta_scipy
    diff[:, 2] = (diff[:, 2] + math.pi) % (2 * math.pi) - math.pi
    result = {
        "galaxies": args.galaxies, "points": args.points, "device": args.device, "torch_threads": args.threads,
        "precision": args.precision, "prune_after": args.prune_after, "psf_fwhm": args.psf,
        "pa_starts_deg": list(pa_starts),
        "torch_galaxies_per_s": args.galaxies / torch_s, "scipy_galaxies": ns, "scipy_galaxies_per_s": ns / scipy_s,
        "ratio": (args.galaxies / torch_s) / (ns / scipy_s),
        # CPU time: all of torch's threads together, so with one thread the ratio of work done
        "torch_cpu_s": torch_cpu, "scipy_cpu_s": scipy_cpu,
        "ratio_cpu": (args.galaxies / torch_cpu) / (ns / scipy_cpu),
        "torch_accuracy": accuracy(theta_torch, args.galaxies), "scipy_accuracy": accuracy(theta_scipy, ns),
        "median_abs_difference": {"pa_deg": float(np.degrees(np.median(np.abs(diff[:, 2])))),
                                  "inc_deg": float(np.degrees(np.median(np.abs(diff[:, 3])))),
                                  "vmax_kms": float(np.median(np.abs(diff[:, 5])))},
        "torch": torch.__version__, "scipy": scipy.__version__, "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
