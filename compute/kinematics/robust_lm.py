"""Levenberg-Marquardt for many small robust least-squares problems at once.

Each row of the batch is one problem with the same parameters; the problem object (see
:class:`Problem`) evaluates the cost 0.5 sum rho(z^2) of normalised residuals z and its
Gauss-Newton normal equations, rho a robust loss in the convention of scipy's
``least_squares`` (``soft_l1``, ``cauchy``, ``linear``).  Rows stop independently and
leave the batch.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["TOL32", "TOL64", "Problem", "Tolerance", "cost_of", "levenberg_marquardt", "rho", "weight_factors"]


class Problem(Protocol):
    """What :func:`levenberg_marquardt` needs of a batch of problems."""

    def evaluate(self, theta: torch.Tensor, loss: str, curvature: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At ``theta`` ``(B, P)``, in one pass: the cost 0.5 sum rho(z^2) ``(B,)`` and the
        float64 Gauss-Newton normal equations J^T diag(k) J ``(B, P, P)`` and gradient
        J^T rho' z ``(B, P)``, k from :func:`weight_factors`."""
        ...

    def take(self, rows: torch.Tensor) -> Problem:
        """The problems of ``rows``."""
        ...


def rho(s: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rho(s), rho'(s)) of the robust loss at s = z^2 (the scipy least_squares convention)."""
    if loss == "soft_l1":
        t = torch.sqrt(1.0 + s)
        return 2.0 * (t - 1.0), 1.0 / t
    if loss == "cauchy":
        return torch.log1p(s), 1.0 / (1.0 + s)
    return s, torch.ones_like(s)


def weight_factors(s: torch.Tensor, loss: str, curvature: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point factors (of the Jacobian, of the residual) at s = z^2 whose products give
    the Gauss-Newton normal equations of 0.5 sum rho(z^2): J^T diag(k) J and J^T rho' z.

    ``curvature``: k = rho' + 2 s rho'', the robust scaling scipy's least_squares uses,
    with which the last digits converge in one or two steps near the optimum; otherwise
    k = rho' (iteratively reweighted least squares), slower at the end but steadier far
    from it.  k is kept above 1e-3 rho' where it would vanish or turn negative (Cauchy
    beyond z = 1), so the normal equations stay positive definite.  Returns
    (sqrt(k), rho' / sqrt(k)).
    """
    if loss == "soft_l1":
        # rho' = (1 + s)^-1/2, k = (1 + s)^-3/2
        slope = torch.rsqrt(s.add_(1.0))
        quarter = torch.sqrt(slope)  # (1 + s)^-1/4
        if not curvature:
            return quarter, quarter
        return slope.mul_(quarter), quarter.reciprocal_()
    if loss == "cauchy":
        slope = s.add(1.0).reciprocal_()
        k = slope if not curvature else torch.maximum((1.0 - s) * slope * slope, 1e-3 * slope)
        root = torch.sqrt(k)
        return root, slope / root
    one = torch.ones_like(s)
    return one, one


def cost_of(z: torch.Tensor, loss: str, mult: torch.Tensor | None = None) -> torch.Tensor:
    """0.5 sum mult rho(z^2) per row (``mult`` None: 1); z is 0 on the points that do not
    count, and rho(0) = 0."""
    s = z * z
    if loss == "soft_l1":
        s = s.add_(1.0).sqrt_().sub_(1.0)
    elif loss == "cauchy":
        s = s.log1p_().mul_(0.5)
    else:
        s = s.mul_(0.5)
    return (s if mult is None else s.mul_(mult)).sum(-1)


@dataclass(frozen=True)
class Tolerance:
    """When a row stops: relative cost gain of an accepted step below ``ftol``, or every
    parameter step below ``xtol`` relative; float32 sums carry ~1e-6 relative noise."""

    ftol: float
    xtol: float


TOL64 = Tolerance(1e-9, 1e-7)
TOL32 = Tolerance(1e-6, 1e-5)


def levenberg_marquardt(
    points: Problem,
    theta0: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    loss: str,
    max_iter: int,
    tol: Tolerance = TOL64,
    lam0: torch.Tensor | None = None,
    curvature: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise 0.5 sum rho(z^2) per row; returns (theta, cost, converged, damping).
    ``lam0`` continues the damping of an earlier call; ``curvature`` picks the
    Gauss-Newton weights (see :func:`weight_factors`).

    Rows that have stopped leave the working set, which is compacted so the remaining
    rows are computed on without gathers.  Each iteration evaluates the cost and the
    normal equations of the trial point in one pass; a rejected step re-solves the kept
    normal equations with more damping.
    A row stops when an accepted step gains less than ``tol.ftol`` of the cost, when
    its steps are below ``tol.xtol``, or when the quadratic model of a nearly undamped
    step predicts such a gain: then a rejected step only means that the cost is flat
    to within its rounding (float32), and more damping would not find anything.
    """
    theta = torch.minimum(torch.maximum(theta0, lower), upper).clone()
    nb, npar = theta.shape
    dev = theta.device
    lam = torch.full((nb,), 1e-3, dtype=torch.float64, device=dev) if lam0 is None else lam0.to(torch.float64).clone()
    converged = torch.zeros(nb, dtype=torch.bool, device=dev)
    if nb == 0:
        return theta, theta.new_zeros(0), converged, lam
    cost, hess, grad = points.evaluate(theta, loss, curvature)
    # The working set: original row numbers and their state.
    idx = torch.arange(nb, device=dev)
    pts, th, c, lm, lo, hi = points, theta.clone(), cost.clone(), lam.clone(), lower, upper
    nu = torch.full((nb,), 2.0, dtype=torch.float64, device=dev)
    for _ in range(max_iter):
        if idx.numel() == 0:
            break
        hd = torch.diagonal(hess, dim1=-2, dim2=-1)
        # Marquardt's scaled damping, plus a floor so an unconstrained parameter gets a
        # zero step instead of a NaN.
        damp = torch.addcmul(hd.amax(-1, keepdim=True).mul_(1e-12).add_(1e-30), lm.unsqueeze(-1), hd)
        step = torch.linalg.solve_ex(hess + torch.diag_embed(damp), grad.unsqueeze(-1))[0].squeeze(-1)
        trial = torch.nan_to_num(step).to(th.dtype).neg_().add_(th).clamp_(lo, hi)
        # Cost and normal equations at the trial point in one pass: most steps are
        # accepted, and then the next step needs them there.
        new_cost, new_hess, new_grad = pts.evaluate(trial, loss, curvature)
        better = new_cost < c  # False for NaN
        gain = c - new_cost
        moved = trial - th
        small = (moved.abs() <= th.abs().add_(1e-3).mul_(tol.xtol)).all(-1)
        # The gain the quadratic model predicts for the step taken (after the bounds).
        ds = moved.to(torch.float64).unsqueeze(-1)
        predicted = (torch.bmm(hess, ds).mul_(-0.5).sub_(grad.unsqueeze(-1)).mul_(ds)).sum((1, 2))
        flat = (lm < 1.0) & (predicted <= tol.ftol * c)
        th = torch.where(better.unsqueeze(-1), trial, th)
        c = torch.where(better, new_cost, c)
        hess = torch.where(better.view(-1, 1, 1), new_hess, hess)
        grad = torch.where(better.unsqueeze(-1), new_grad, grad)
        # Nielsen's damping update (H. B. Nielsen 1999, IMM-REP-1999-05, DTU; also in
        # Madsen, Nielsen & Tingleff 2004, "Methods for non-linear least squares
        # problems"): by how well the quadratic model predicted the gain, instead of /10
        # and x10, which zig-zags in the narrow inclination-V_max valley of nearly
        # face-on discs and costs many iterations.
        ratio = torch.where(predicted > 0, gain.to(torch.float64) / predicted, 0.0)
        shrink = ratio.mul_(2.0).sub_(1.0).pow_(3).neg_().add_(1.0).clamp_min_(1.0 / 3.0)
        lm = torch.where(better, shrink.mul_(lm).clamp_min_(1e-9), lm * nu)
        nu = torch.where(better, 2.0, nu * 2.0)
        done = (better & (gain <= tol.ftol * c)) | (~better & (lm > 1e8)) | small | flat
        if bool(done.any()):
            fin = idx[done]
            theta[fin], cost[fin], lam[fin], converged[fin] = th[done], c[done], lm[done], True
            keep = (~done).nonzero().squeeze(-1)
            idx, th, c, lm, nu = idx[keep], th[keep], c[keep], lm[keep], nu[keep]
            hess, grad, lo, hi = hess[keep], grad[keep], lo[keep], hi[keep]
            pts = pts.take(keep)
    # Rows still working hit the iteration limit.
    theta[idx], cost[idx], lam[idx] = th, c, lm
    return theta, cost, converged, lam
