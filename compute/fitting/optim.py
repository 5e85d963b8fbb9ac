"""Levenberg-Marquardt by variable projection, batched with per-element damping.

The model is A(theta) x with theta a few kinematic parameters and x many linear
coefficients (some bounded). For each trial theta the caller solves for x exactly (NNLS),
so the optimiser only sees chi^2(theta). Its Jacobian is the derivative of the model at
fixed x with the part that the free coefficients can absorb projected out (Kaufman 1975;
Golub & Pereyra 2003): J_p = (I - A_S G_S^-1 A_S^T W) J, with S the columns whose bounds
are inactive. The same J_p gives the covariance of theta marginalised over x.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .nnls import masked_inverse

#: An element stops without evaluating a step once its Gauss-Newton model promises less
#: than this fraction of the tolerance (a step promising about ``tol`` still gains about
#: that much, so the old "take the step, then stop" rule is kept to within this factor).
_PROMISE = 0.1

__all__ = ["Evaluation", "evaluation_from", "projected_normal", "levenberg_marquardt", "theta_covariance"]


@dataclass(slots=True)
class Evaluation:
    """One model evaluation for a subset of the batch.

    Only the small cross products the optimiser needs are kept (J = sqrt(w) dm/dtheta at
    fixed coefficients, A = sqrt(w) design matrix, r = sqrt(w) residual), so nothing of
    size pixels x columns outlives the evaluation.
    """

    chi2: torch.Tensor  # (b,)
    coef: torch.Tensor  # (b, n) linear coefficients
    passive: torch.Tensor  # (b, n) bool: coefficients off their bounds (or free)
    resid: torch.Tensor  # (b, N) r
    gram: torch.Tensor  # (b, n, n) A^T A
    atr: torch.Tensor  # (b, n) A^T r
    cross: torch.Tensor  # (b, n, p) A^T J
    jtj: torch.Tensor  # (b, p, p)
    jtr: torch.Tensor  # (b, p)

    def take(self, idx: torch.Tensor) -> Evaluation:
        return Evaluation(*(getattr(self, f)[idx] for f in self.__slots__))

    def put(self, idx: torch.Tensor, other: Evaluation, where: torch.Tensor) -> None:
        sel = idx[where]
        for f in self.__slots__:
            getattr(self, f)[sel] = getattr(other, f)[where]


EvalFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], Evaluation]


def projected_normal(ev: Evaluation) -> tuple[torch.Tensor, torch.Tensor]:
    """J_p^T J_p and J_p^T r without forming J_p: the passive columns are projected out
    through G_S^-1 (J_p^T J_p = J^T J - (A^T J)^T G_S^-1 A^T J)."""
    ginv = masked_inverse(ev.gram, ev.passive)
    gc = ginv @ ev.cross
    h = ev.jtj - ev.cross.transpose(1, 2) @ gc
    g = ev.jtr - torch.einsum("bnp,bn->bp", gc, ev.atr)
    return 0.5 * (h + h.transpose(1, 2)), g


def levenberg_marquardt(
    evaluate: EvalFn,
    theta0: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    max_iter: int,
    tol: float,
    passive0: torch.Tensor | None = None,
    start: Evaluation | None = None,
) -> tuple[torch.Tensor, Evaluation, torch.Tensor]:
    """Minimise chi^2(theta) for every batch element; returns (theta, evaluation, converged).

    ``evaluate(idx, theta_idx, passive_guess)`` evaluates the elements ``idx``. Elements
    that have converged are no longer evaluated, so late iterations cost only what the
    slow elements need. ``start``, if given, is the evaluation at ``theta0`` (it is not
    repeated).
    """
    nb, npar = theta0.shape
    dev, dt = theta0.device, theta0.dtype
    theta = torch.minimum(torch.maximum(theta0, lower), upper).clone()
    every = torch.arange(nb, device=dev)
    cur = evaluate(every, theta, passive0) if start is None else start
    lam = torch.full((nb,), 1e-3, dtype=dt, device=dev)
    active = torch.isfinite(cur.chi2)
    for _ in range(max_iter):
        idx = every[active]
        if idx.numel() == 0:
            break
        sub = cur.take(idx)
        h, g = projected_normal(sub)
        hd = torch.diagonal(h, dim1=-2, dim2=-1)
        # Marquardt scaling of the damping, plus a floor so parameters with no
        # constraint (a gas group with no flux) get a zero step instead of a NaN.
        damp = lam[idx, None] * hd + 1e-12 * hd.amax(-1, keepdim=True) + 1e-30
        step, _ = torch.linalg.solve_ex(h + torch.diag_embed(damp), g.unsqueeze(-1))
        step = torch.nan_to_num(step.squeeze(-1))
        old = theta[idx]
        trial = torch.minimum(torch.maximum(old + step, lower[idx]), upper[idx])
        # Elements whose step (within the bounds) is negligible, or whose quadratic model
        # promises less than _PROMISE x the tolerance even undamped, have converged: stop
        # them here instead of paying an evaluation to confirm it. In the projected
        # Gauss-Newton model chi^2(theta + s) ~ chi^2 - 2 g.s + s^T H s.
        tiny_step = ((trial - old).abs() < 1e-4).all(-1)
        # The floor goes on the diagonal only (a (b, 1) tensor diag-embeds to (b, 1, 1) and
        # would be added to every entry, making any parameter without constraint, a
        # group without flux, singular: NaN, a zero promise, and the element stopped).
        floor = (1e-12 * hd.amax(-1, keepdim=True) + 1e-30).expand_as(hd)
        s_gn, _ = torch.linalg.solve_ex(h + torch.diag_embed(floor), g.unsqueeze(-1))
        s_gn = torch.minimum(torch.maximum(old + torch.nan_to_num(s_gn.squeeze(-1)), lower[idx]), upper[idx]) - old
        promise = 2.0 * (g * s_gn).sum(-1) - torch.einsum("bp,bpq,bq->b", s_gn, h, s_gn)
        settled = tiny_step | (promise < _PROMISE * tol * sub.chi2)
        if bool(settled.any()):
            active[idx[settled]] = False
            keep = ~settled
            idx, sub, trial = idx[keep], sub.take(keep), trial[keep]
            if idx.numel() == 0:
                break
        new = evaluate(idx, trial, sub.passive)
        better = torch.isfinite(new.chi2) & (new.chi2 < sub.chi2)
        gain = sub.chi2 - new.chi2
        cur.put(idx, new, better)
        theta[idx[better]] = trial[better]
        lam[idx] = torch.where(better, (lam[idx] / 10).clamp_min(1e-7), lam[idx] * 10)
        done = (better & (gain < tol * sub.chi2)) | (~better & (lam[idx] > 1e6))
        active[idx[done]] = False
    return theta, cur, ~active & torch.isfinite(cur.chi2)


def theta_covariance(ev: Evaluation, chi2_dof: torch.Tensor) -> torch.Tensor:
    """Covariance of theta at the optimum, scaled by the reduced chi^2 ``(b, p, p)``."""
    h, _ = projected_normal(ev)
    hd = torch.diagonal(h, dim1=-2, dim2=-1)
    constrained = hd > 1e-12 * hd.amax(-1, keepdim=True).clamp_min(1e-300)
    cov = masked_inverse(h, constrained)
    nan = torch.full_like(cov, float("nan"))
    both = constrained.unsqueeze(-1) & constrained.unsqueeze(-2)
    return torch.where(both, cov, nan) * chi2_dof.view(-1, 1, 1)



def evaluation_from(
    design_w: torch.Tensor, yw: torch.Tensor, gram: torch.Tensor, rhs: torch.Tensor,
    coef: torch.Tensor, passive: torch.Tensor, jac_w: torch.Tensor,
) -> Evaluation:
    """Assemble an :class:`Evaluation` from weighted design, data and Jacobian."""
    resid = yw - torch.einsum("bni,bi->bn", design_w, coef)
    atr = rhs - torch.einsum("bij,bj->bi", gram, coef)
    cross = design_w.transpose(1, 2) @ jac_w
    jtj = jac_w.transpose(1, 2) @ jac_w
    jtr = torch.einsum("bnp,bn->bp", jac_w, resid)
    return Evaluation((resid * resid).sum(1), coef, passive, resid, gram, atr, cross, jtj, jtr)
