"""Bootstrap errors of the disk fit: resamples of the kept points as extra batch rows.

The curvature errors of :func:`~.disk.fit_disks` (Gauss-Newton covariance scaled by the
reduced chi^2 where it is above 1) assume independent points.  The pixels of a real
velocity map are not: the PSF spreads every velocity over about one FWHM, so N pixels
hold fewer independent measurements and the covariance errors are too small.  A block
bootstrap keeps that correlation inside each resample: the kept points are grouped in
square cells of ``block_fwhm`` PSF FWHM on the sky (single points when there is no PSF,
as for scattered HII regions), and each resample draws every cell a Poisson(1) number of
times (the Poisson bootstrap, equivalent to drawing as many cells as there are with
replacement when there are more than a few).  The grid's origin moves at random from resample to resample, so that the
cell borders are not always between the same pixels.

A resample is a vector of integer multiplicities on the points (how many times each is
drawn), and the fit of a resample minimises sum m rho(z^2) (``_Points.mult``): the
resamples of every galaxy are rows of one batched Levenberg-Marquardt, started from the
galaxy's optimum with the curvature weights, so each costs a few iterations.  Outliers
the fit rejected stay out; the bootstrap does not clip again.

The error of a parameter is the standard deviation of its resample values (PA
differences wrapped to +-180 deg).  Random numbers come from one generator per galaxy
seeded by ``seeds`` (the task passes the source ids), so a galaxy's errors do not depend
on which batch it was in, and the same run reproduces them.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .disk import (
    _FAILED,
    DiskData,
    DiskFit,
    DiskFitConfig,
    DiskFlag,
    _canonical,
    _prepare,
    _subset,
)
from .robust_lm import Tolerance, levenberg_marquardt

__all__ = ["BLOCK_FWHM", "BOOTSTRAP_MIN_BLOCKS", "UNDERESTIMATE_FACTOR", "DiskBootstrap", "block_multiplicities", "bootstrap_disks"]

#: side of the cells in PSF FWHM: see docs/rotation_validation.md ("Errors") for the
#: calibration (1 FWHM leaves half the PSF-correlated variance out, 3 FWHM too few cells
#: on small maps)
BLOCK_FWHM = 2.0
#: fewer independent cells than this and a bootstrap cannot tell the scatter (flag
#: BOOTSTRAP_UNRELIABLE)
BOOTSTRAP_MIN_BLOCKS = 10
#: bootstrap error above this many times the curvature error, in PA, inclination or V_max:
#: flag ERRORS_UNDERESTIMATED
UNDERESTIMATE_FACTOR = 2.0
#: Levenberg-Marquardt iterations of a resample, from the optimum (most need 2-5)
_MAX_ITER = 20
#: when a resample stops: its parameters need to be right to a small fraction of their
#: scatter only (a relative cost gain of 1e-5 is ~0.01 sigma on 200 points)
_TOL = Tolerance(1e-5, 1e-4)
#: cells per side of the table of a resample's cell draws (see :func:`block_multiplicities`)
_TABLE = 64
#: distribution function of Poisson(1) at 0, 1, ..., 16
_POISSON1_CDF = torch.cumsum(torch.tensor([math.exp(-1.0) / math.factorial(k) for k in range(17)], dtype=torch.float64), 0)


@dataclass
class DiskBootstrap:
    """Per galaxy: bootstrap errors in PARAMS order (NaN where not bootstrapped), the
    resamples used, the cells they were drawn from, and the flag bits they set."""

    errors: torch.Tensor  # (B, 7)
    samples: torch.Tensor  # (B, R, 7) resample parameters, canonical form (NaN: failed or not run)
    n_resamples: torch.Tensor  # (B,) int64, finite resamples
    n_blocks: torch.Tensor  # (B,) int64, cells with kept points (the points themselves without a PSF)
    flags: torch.Tensor  # (B,) int64 DiskFlag bits: ERRORS_UNDERESTIMATED, BOOTSTRAP_UNRELIABLE


def block_multiplicities(
    x: torch.Tensor, y: torch.Tensor, kept: torch.Tensor, block: torch.Tensor, n_resamples: int, seeds: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(multiplicities ``(B, R, N)`` of the points in each resample, cells per galaxy ``(B,)``).

    ``block`` ``(B,)``: cell side in arcsec, 0 = every point its own cell.  Each cell of a
    resample is drawn a Poisson(1) number of times (the Poisson bootstrap: the same
    limit as drawing as many cells as there are with replacement, without sorting the
    cells of every resample), and a point counts as often as its cell (0 off ``kept``).
    The cells' draws sit in a table of ``_TABLE`` x ``_TABLE`` per resample indexed by
    the cell's column and row modulo ``_TABLE``: cells that far apart (beyond 64 cells)
    would share their draw."""
    nb, n = x.shape
    r = n_resamples
    dev = x.device
    side = block.to(torch.float64).view(nb, 1, 1)
    gridded = side > 0
    size = _TABLE * _TABLE if bool(gridded.any()) else 0
    # Per galaxy, from its own generator: the grid origin of each resample and the
    # Poisson draws of its cells (or of its points, without a PSF).
    origin = torch.empty(nb, r, 2, dtype=torch.float64)
    draws = torch.empty(nb, r, max(n, size), dtype=torch.float64)
    for b in range(nb):
        g = torch.Generator().manual_seed(int(seeds[b]))
        origin[b] = torch.rand(r, 2, generator=g, dtype=torch.float64)
        torch.rand(r, draws.shape[-1], generator=g, dtype=torch.float64, out=draws[b])
    # Poisson(1) by its inverse distribution function (torch.poisson is ~5x slower here).
    draws = torch.searchsorted(_POISSON1_CDF, draws).to(torch.float64)
    origin, draws = origin.to(dev), draws.to(dev)
    point = torch.arange(n, device=dev, dtype=torch.int64).view(1, 1, n)
    if size:
        safe = torch.where(gridded, side, torch.ones_like(side))
        cx = torch.floor(x.to(torch.float64).unsqueeze(1) / safe - origin[..., :1]).to(torch.int64)
        cy = torch.floor(y.to(torch.float64).unsqueeze(1) / safe - origin[..., 1:]).to(torch.int64)
        cell = torch.where(gridded, torch.remainder(cx, _TABLE) * _TABLE + torch.remainder(cy, _TABLE), point)
    else:
        cell = point.expand(nb, r, n)
    valid = kept.unsqueeze(1)
    mult = torch.where(valid, torch.gather(draws, 2, cell), torch.zeros((), dtype=draws.dtype, device=dev))
    # Cells per galaxy with kept points, on the first resample's grid.
    occupied = torch.zeros(nb, draws.shape[-1], dtype=torch.int64, device=dev)
    occupied.scatter_add_(1, torch.where(kept, cell[:, 0], torch.zeros_like(cell[:, 0])), kept.to(torch.int64))
    return mult, (occupied > 0).sum(-1)


def bootstrap_disks(
    data: DiskData, config: DiskFitConfig, fit: DiskFit, n_resamples: int, seeds: Sequence[int] | None = None,
    block_fwhm: float = BLOCK_FWHM,
) -> DiskBootstrap:
    """Block-bootstrap errors of ``fit`` (the result of ``fit_disks(data, config)``)."""
    nb = data.batch
    dev = data.x.device
    dt = data.x.dtype
    nan = float("nan")
    seeds = list(range(nb)) if seeds is None else list(seeds)
    empty = DiskBootstrap(torch.full((nb, 7), nan, dtype=dt, device=dev),
                          torch.full((nb, max(n_resamples, 0), 7), nan, dtype=dt, device=dev),
                          torch.zeros(nb, dtype=torch.int64, device=dev), torch.zeros(nb, dtype=torch.int64, device=dev),
                          torch.zeros(nb, dtype=torch.int64, device=dev))  # fmt: skip
    ok = ((fit.flags & int(_FAILED)) == 0) & torch.isfinite(fit.theta).all(-1)
    if n_resamples < 2 or not bool(ok.any()):
        return empty
    b = _prepare(data, config)
    if bool(b.on_grid.any()) and not bool(b.on_grid.all()):
        # As fit_disks does: the map galaxies on their pixel grid, the scattered points with
        # the stencil, so that every resample is fitted with the model its galaxy's fit used.
        for part in (b.on_grid, ~b.on_grid):
            idx = part.nonzero().squeeze(-1)
            sub = bootstrap_disks(_subset(data, idx), config, fit.take(idx), n_resamples, [seeds[int(i)] for i in idx],
                                  block_fwhm)  # fmt: skip
            for name in DiskBootstrap.__dataclass_fields__:
                getattr(empty, name)[idx] = getattr(sub, name)
        return empty
    rows = ok.nonzero().squeeze(-1)
    r = n_resamples
    psf = b.psf_sigma if b.psf_sigma is not None else torch.zeros(nb, dtype=dt, device=dev)
    fwhm = psf * (2.0 * math.sqrt(2.0 * math.log(2.0)))
    kept = fit.kept[rows]
    mult, n_blocks = block_multiplicities(b.x[rows], b.y[rows], kept, block_fwhm * fwhm[rows], r,
                                          [seeds[int(i)] for i in rows])  # fmt: skip

    # One row per (galaxy, resample), galaxy-major, started from the galaxy's optimum.
    rep = rows.repeat_interleave(r)
    pts = b.points(fit.kept, b.work).take(rep)
    pts.mult = mult.view(-1, mult.shape[-1]).to(b.work)
    theta0 = fit.theta[rows].repeat_interleave(r, 0)
    theta, _, _, _ = levenberg_marquardt(pts, theta0.to(b.work), b.lower[rep].to(b.work), b.upper[rep].to(b.work),
                                         config.loss, _MAX_ITER, _TOL, curvature=True)  # fmt: skip
    theta = _canonical(theta.to(dt)).view(-1, r, 7)
    best = fit.theta[rows].unsqueeze(1)
    dev_ = theta - best
    dev_[..., 2] = torch.remainder(dev_[..., 2] + math.pi, 2 * math.pi) - math.pi
    finite = torch.isfinite(dev_).all(-1)
    n_ok = finite.sum(-1)
    d = torch.where(finite.unsqueeze(-1), dev_, torch.zeros_like(dev_))
    mean = d.sum(1) / n_ok.clamp_min(1).unsqueeze(-1)
    var = (torch.where(finite.unsqueeze(-1), d - mean.unsqueeze(1), torch.zeros_like(d)) ** 2).sum(1)
    err = torch.sqrt(var / (n_ok - 1).clamp_min(1).unsqueeze(-1))
    err = torch.where((n_ok >= 2).unsqueeze(-1), err, torch.full_like(err, nan))

    out = empty
    out.errors[rows] = err
    out.samples[rows] = torch.where(finite.unsqueeze(-1), theta, torch.full_like(theta, nan))
    out.n_resamples[rows] = n_ok
    out.n_blocks[rows] = n_blocks
    cov_err = fit.errors[rows]
    worse = torch.zeros(rows.numel(), dtype=torch.bool, device=dev)
    for k in (2, 3, 5):  # PA, inclination, V_max
        worse |= torch.isfinite(cov_err[:, k]) & (err[:, k] > UNDERESTIMATE_FACTOR * cov_err[:, k])
    unreliable = (n_blocks < BOOTSTRAP_MIN_BLOCKS) | (2 * n_ok < r)
    out.flags[rows] = (torch.where(worse, int(DiskFlag.ERRORS_UNDERESTIMATED), 0)
                       | torch.where(unreliable, int(DiskFlag.BOOTSTRAP_UNRELIABLE), 0))  # fmt: skip
    return out
