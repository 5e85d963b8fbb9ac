"""Radial abundance gradients: a straight line with intrinsic scatter, batched over groups.

Each group (one galaxy and one abundance method) is a row of padded ``(G, N)`` arrays:
deprojected radius r, abundance y (12 + log O/H) and its error e.  The model is

    y_i = c + s r_i + noise,   noise ~ N(0, e_i^2 + tau^2),

fitted by maximum likelihood.  For fixed tau the best (c, s) is a weighted least-squares
line, so the profile likelihood of tau alone is minimised by golden-section search on
[0, tau_max]; errors are the inverse of the analytic Hessian of -ln L in (c, s, tau) at
the optimum.  Points beyond ``clip_sigma`` standard deviations of the model (sqrt of
e^2 + tau^2) are rejected and the fit repeated (``clip_rounds`` times at most).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

__all__ = ["GRADIENT_FLAG_DOCS", "GradientFit", "GradientFitConfig", "GradientFlag", "fit_gradients"]


class GradientFlag(enum.IntFlag):
    """Bits of ``metallicity_gradient.flags``."""

    TOO_FEW_POINTS = 1 << 0
    FIT_FAILED = 1 << 1
    SHORT_RADIAL_RANGE = 1 << 2
    SCATTER_UNRESOLVED = 1 << 3
    MANY_OUTLIERS = 1 << 4
    GEOMETRY_FLAGGED = 1 << 5
    NO_DISTANCE = 1 << 6
    NO_ERRORS = 1 << 7


GRADIENT_FLAG_DOCS = {
    "TOO_FEW_POINTS": "Fewer points with a finite 12+log(O/H) than min_points: no fit, values NULL",
    "FIT_FAILED": "The fit produced non-finite numbers: values NULL",
    "SHORT_RADIAL_RANGE": "The points span less than min_span_arcsec in deprojected radius: the slope rests on a short lever arm",
    "SCATTER_UNRESOLVED": "The intrinsic scatter is consistent with zero (at its lower bound); scatter_err is not a Gaussian error",
    "MANY_OUTLIERS": "More than 20 % of the points were rejected as outliers",
    "GEOMETRY_FLAGGED": "The rotation fit that gave the geometry (centre, PA, inclination) carries flags",
    "NO_DISTANCE": "The galaxy has no redshift: no slope per kpc",
    "NO_ERRORS": "Some abundances had no error; they were given error_floor",
}


@dataclass(frozen=True)
class GradientFitConfig:
    min_points: int = 5
    clip_sigma: float = 3.0
    clip_rounds: int = 3
    tau_max: float = 1.0  # dex
    error_floor: float = 0.01  # dex, stands in for a missing or zero error
    min_span_arcsec: float = 1.0
    golden_iterations: int = 48


@dataclass
class GradientFit:
    slope: torch.Tensor  # (G,) dex per unit of r
    central: torch.Tensor  # (G,) dex at r = 0
    scatter: torch.Tensor  # (G,) dex
    cov: torch.Tensor  # (G, 3, 3) of (central, slope, scatter)
    n_points: torch.Tensor  # (G,) points kept
    n_rejected: torch.Tensor  # (G,)
    r_min: torch.Tensor  # (G,)
    r_max: torch.Tensor  # (G,)
    flags: torch.Tensor  # (G,) int64
    kept: torch.Tensor  # (G, N) bool

    @property
    def errors(self) -> torch.Tensor:
        return torch.sqrt(torch.diagonal(self.cov, dim1=-2, dim2=-1))


def _wls(r: torch.Tensor, y: torch.Tensor, var: torch.Tensor, w_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c, s, -ln L) of the weighted line for each group at the given total variances."""
    w = w_mask / var
    sw, swr, swy = w.sum(-1), (w * r).sum(-1), (w * y).sum(-1)
    swrr, swry = (w * r * r).sum(-1), (w * r * y).sum(-1)
    det = sw * swrr - swr * swr
    s = (sw * swry - swr * swy) / det
    c = (swy - s * swr) / sw
    res = y - c.unsqueeze(-1) - s.unsqueeze(-1) * r
    nll = 0.5 * (w_mask * (res * res / var + torch.log(var))).sum(-1)
    return c, s, nll


def _profile(r, y, e2, m, tau):  # type: ignore[no-untyped-def]
    return _wls(r, y, e2 + tau.unsqueeze(-1) ** 2, m)


def _golden(r, y, e2, m, config: GradientFitConfig) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """tau minimising the profile -ln L on [0, tau_max], per group."""
    g = (math.sqrt(5.0) - 1.0) / 2.0
    lo = torch.zeros(r.shape[0], dtype=r.dtype, device=r.device)
    hi = torch.full_like(lo, config.tau_max)
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _profile(r, y, e2, m, a)[2], _profile(r, y, e2, m, b)[2]
    for _ in range(config.golden_iterations):
        left = fa < fb  # the minimum lies in [lo, b]: b becomes a, a new a is placed
        hi = torch.where(left, b, hi)
        lo = torch.where(left, lo, a)
        keep_pt, keep_f = torch.where(left, a, b), torch.where(left, fa, fb)
        new_pt = torch.where(left, hi - g * (hi - lo), lo + g * (hi - lo))
        new_f = _profile(r, y, e2, m, new_pt)[2]
        a, fa = torch.where(left, new_pt, keep_pt), torch.where(left, new_f, keep_f)
        b, fb = torch.where(left, keep_pt, new_pt), torch.where(left, keep_f, new_f)
    tau = 0.5 * (lo + hi)
    # The bracket shrinks to ~1e-10 of tau_max: compare with the bound itself.
    at_zero = _profile(r, y, e2, m, torch.zeros_like(tau))[2] <= _profile(r, y, e2, m, tau)[2]
    return torch.where(at_zero, torch.zeros_like(tau), tau)


def _hessian(r, y, e2, m, c, s, tau):  # type: ignore[no-untyped-def]
    """Analytic Hessian of -ln L in (c, s, tau) ``(G, 3, 3)``."""
    c, s, tau = c.unsqueeze(-1), s.unsqueeze(-1), tau.unsqueeze(-1)
    v = e2 + tau * tau
    res = y - c - s * r
    iv = m / v
    h = torch.zeros(r.shape[0], 3, 3, dtype=r.dtype, device=r.device)
    h[:, 0, 0] = iv.sum(-1)
    h[:, 0, 1] = h[:, 1, 0] = (iv * r).sum(-1)
    h[:, 1, 1] = (iv * r * r).sum(-1)
    # d(-lnL)/dc = -sum res / v; d/dtau of that = sum res * 2 tau / v^2.
    h[:, 0, 2] = h[:, 2, 0] = (m * 2 * tau * res / (v * v)).sum(-1)
    h[:, 1, 2] = h[:, 2, 1] = (m * 2 * tau * res * r / (v * v)).sum(-1)
    # -lnL(tau) = 0.5 sum [res^2 / v + ln v]: d2/dtau2 = sum [ (1/v - res^2/v^2) + tau^2 (4 res^2/v^3 - 2/v^2) ].
    h[:, 2, 2] = (m * ((1 / v - res * res / (v * v)) + tau * tau * (4 * res * res / v**3 - 2 / (v * v)))).sum(-1)
    return h


def fit_gradients(r: torch.Tensor, y: torch.Tensor, err: torch.Tensor, mask: torch.Tensor, config: GradientFitConfig) -> GradientFit:
    """Fit y = c + s r with intrinsic scatter for every row of the padded ``(G, N)`` arrays."""
    nan = float("nan")
    ok = mask & torch.isfinite(r) & torch.isfinite(y)
    no_err = ok & ~(torch.isfinite(err) & (err > 0))
    e = torch.where(no_err | ~ok, torch.full_like(err, config.error_floor), err.clamp_min(config.error_floor))
    e2 = e * e
    r0 = torch.where(ok, r, torch.zeros_like(r))
    y0 = torch.where(ok, y, torch.zeros_like(y))
    n0 = ok.sum(-1)
    enough = n0 >= max(config.min_points, 3)
    kept = ok & enough.unsqueeze(-1)
    m = kept.to(r.dtype)
    # Groups without enough points get harmless dummy weights; their results are blanked below.
    m_safe = torch.where(enough.unsqueeze(-1), m, torch.ones_like(m))
    r_safe = torch.where(enough.unsqueeze(-1), r0, torch.arange(r.shape[1], dtype=r.dtype, device=r.device).expand_as(r0))
    tau = _golden(r_safe, y0, e2, m_safe, config)
    for _ in range(config.clip_rounds):
        c, s, _ = _profile(r_safe, y0, e2, m_safe, tau)
        z = (y0 - c.unsqueeze(-1) - s.unsqueeze(-1) * r_safe) / torch.sqrt(e2 + tau.unsqueeze(-1) ** 2)
        new_kept = kept & (z.abs() <= config.clip_sigma)
        new_kept = torch.where((new_kept.sum(-1) >= 3).unsqueeze(-1), new_kept, kept)
        if bool((new_kept == kept).all()):
            break
        kept = new_kept
        m_safe = torch.where(enough.unsqueeze(-1), kept.to(r.dtype), m_safe)
        tau = _golden(r_safe, y0, e2, m_safe, config)
    c, s, _ = _profile(r_safe, y0, e2, m_safe, tau)
    h = _hessian(r_safe, y0, e2, m_safe, c, s, tau)
    cov, info = torch.linalg.inv_ex(h)
    cov = torch.where((info == 0).view(-1, 1, 1), cov, torch.full_like(cov, nan))
    n_kept = kept.sum(-1)
    r_in = torch.where(kept, r0, torch.full_like(r0, nan))
    r_min = torch.nan_to_num(r_in, nan=float("inf")).amin(-1)
    r_max = torch.nan_to_num(r_in, nan=-float("inf")).amax(-1)

    flags = torch.zeros(r.shape[0], dtype=torch.int64, device=r.device)
    flags |= torch.where(~enough, int(GradientFlag.TOO_FEW_POINTS), 0)
    flags |= torch.where(enough & ((r_max - r_min) < config.min_span_arcsec), int(GradientFlag.SHORT_RADIAL_RANGE), 0)
    flags |= torch.where(enough & (tau <= 0), int(GradientFlag.SCATTER_UNRESOLVED), 0)
    flags |= torch.where((ok.sum(-1) - n_kept) > 0.2 * n0, int(GradientFlag.MANY_OUTLIERS), 0)
    flags |= torch.where((no_err & kept).any(-1), int(GradientFlag.NO_ERRORS), 0)
    bad = enough & ~(torch.isfinite(c) & torch.isfinite(s) & torch.isfinite(tau))
    flags |= torch.where(bad, int(GradientFlag.FIT_FAILED), 0)
    failed = ~enough | bad
    blank = lambda t: torch.where(failed, torch.full_like(t, nan), t)  # noqa: E731
    cov = torch.where(failed.view(-1, 1, 1), torch.full_like(cov, nan), cov)
    return GradientFit(
        blank(s), blank(c), blank(tau), cov, torch.where(failed, 0, n_kept), torch.where(failed, 0, n0 - n_kept),
        blank(r_min), blank(r_max), flags, kept & ~failed.unsqueeze(-1),
    )
