"""Batched bound-constrained least squares on the normal equations.

The fits only ever need min ||W^(1/2) (A x - y)||^2 with some x >= 0 (template weights,
line fluxes), some x free (polynomial coefficients) and some x forced to 0 (lines out of
range). Working on the Gram matrix G = A^T W A keeps every step O(n^3) in the number of
columns (<~100) instead of O(N n^2) in pixels, so an active-set method is cheap even
when it takes tens of steps. The algorithm is Lawson & Hanson's (1974, ch. 23), run in
lock-step over the batch: every element takes one step per sweep and finished elements
stay put, so no Python loop ever runs over spectra.
"""

from __future__ import annotations

import torch

__all__ = ["nnls_gram", "solve_masked", "masked_inverse"]


def _masked_system(g: torch.Tensor, sel: torch.Tensor, ridge: float) -> torch.Tensor:
    """G restricted to ``sel`` (rows/cols outside set to the identity) plus a ridge."""
    m = sel.to(g.dtype)
    gm = g * m.unsqueeze(-1) * m.unsqueeze(-2)
    return gm + torch.diag_embed(torch.where(sel, ridge, 1.0).to(g.dtype))


def solve_masked(g: torch.Tensor, b: torch.Tensor, sel: torch.Tensor, ridge: float = 1e-11) -> torch.Tensor:
    """Solve G_SS x_S = b_S for each batch element, x = 0 outside S (G unit-diagonal)."""
    gm = _masked_system(g, sel, ridge)
    rhs = torch.where(sel, b, torch.zeros((), dtype=b.dtype, device=b.device)).unsqueeze(-1)
    # Cholesky is half the cost of LU; the ridge keeps near-collinear templates
    # positive definite, and LU takes over for the rare element where it still fails.
    chol, info = torch.linalg.cholesky_ex(gm)
    x = torch.cholesky_solve(rhs, chol)
    if bool((info != 0).any()):
        x_lu, _ = torch.linalg.solve_ex(gm, rhs)
        x = torch.where((info != 0).view(-1, 1, 1), x_lu, x)
    return torch.where(sel, x.squeeze(-1), torch.zeros((), dtype=b.dtype, device=b.device))


def masked_inverse(g: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Inverse of G restricted to ``sel`` (zero outside); NaN where G_SS is singular."""
    d = torch.diagonal(g, dim1=-2, dim2=-1)
    ok = sel & (d > 0)
    scale = torch.where(ok, d.clamp_min(1e-300).rsqrt(), torch.zeros_like(d))
    gs = g * scale.unsqueeze(-1) * scale.unsqueeze(-2)
    inv, info = torch.linalg.inv_ex(_masked_system(gs, ok, 1e-13))
    inv = inv * scale.unsqueeze(-1) * scale.unsqueeze(-2)
    both = ok.unsqueeze(-1) & ok.unsqueeze(-2)
    inv = torch.where(both, inv, torch.zeros((), dtype=g.dtype, device=g.device))
    bad = (info != 0).view(-1, 1, 1)
    return torch.where(bad, torch.full_like(inv, float("nan")), inv)


def nnls_gram(
    g: torch.Tensor,
    b: torch.Tensor,
    nonneg: torch.Tensor,
    enabled: torch.Tensor | None = None,
    passive0: torch.Tensor | None = None,
    max_iter: int | None = None,
    tol: float = 1e-10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimise x^T G x / 2 - b^T x with x_i >= 0 where ``nonneg``; batched.

    ``g`` ``(B, n, n)`` symmetric positive semi-definite, ``b`` ``(B, n)``. ``nonneg``
    ``(n,)`` or ``(B, n)``: True = constrained, False = free. ``enabled`` ``(B, n)``:
    False fixes x_i = 0. ``passive0``: a guess of the positive set (warm start from the
    previous kinematics). Returns ``(x, passive, converged)``.
    """
    bsz, n = b.shape
    dev, dt = b.device, b.dtype
    nonneg = nonneg.expand(bsz, n) if nonneg.dim() == 1 else nonneg
    enabled = torch.ones(bsz, n, dtype=torch.bool, device=dev) if enabled is None else enabled.clone()
    diag = torch.diagonal(g, dim1=-2, dim2=-1)
    enabled &= diag > 0
    # Jacobi scaling: unit diagonal makes one tolerance fit every column and tames the
    # conditioning of near-collinear stellar templates.
    s = torch.where(enabled, diag.clamp_min(1e-300).rsqrt(), torch.zeros_like(diag))
    gs = g * s.unsqueeze(-1) * s.unsqueeze(-2)
    bs = b * s
    free = enabled & ~nonneg
    passive = free.clone()
    if passive0 is not None:
        passive |= passive0 & enabled
    x = torch.zeros_like(bs)
    if passive0 is not None:
        # Warm start: the guessed set, less every constrained variable whose solution
        # on it is not positive, re-solved until none is left (a few rounds at most).
        # Starting the loop below from x = 0 instead would step straight back to x = 0
        # and drop the whole guess, then rebuild it one variable per step.
        for _ in range(n + 1):  # each round drops at least one variable
            z = solve_masked(gs, bs, passive)
            neg = passive & nonneg & (z <= 0)
            if not bool(neg.any()):
                break
            passive &= ~neg
        x = torch.where(passive, z, torch.zeros((), dtype=dt, device=dev))
    thresh = tol * bs.abs().amax(-1).clamp_min(1e-300)
    zero = torch.zeros((), dtype=dt, device=dev)
    inf = torch.tensor(float("inf"), dtype=dt, device=dev)
    cand = enabled & nonneg
    cols = torch.arange(n, device=dev)
    done = torch.zeros(bsz, dtype=torch.bool, device=dev)
    # Lock-step over the batch. A finished element is a fixed point of a step (its
    # solve returns its x, nothing is added), so it simply goes along until all are
    # done: cheaper, for these small systems, than removing it from the batch.
    for it in range(max_iter or 3 * n + 10):
        # After a warm start x is already the solution on the passive set: go straight
        # to the test for a variable to add.
        z = x if it == 0 and passive0 is not None else solve_masked(gs, bs, passive)
        bad = passive & nonneg & (z <= 0)
        step_back = bad.any(-1)
        if bool(step_back.any()):
            # Move from the feasible x towards z until the first constrained variable
            # hits 0, and drop the variables that did.
            ratio = torch.where(bad, x / (x - z).clamp_min(1e-300), inf)
            alpha = ratio.amin(-1, keepdim=True).clamp(0.0, 1.0)
            x_back = x + alpha * (z - x)
            drop = passive & nonneg & (x_back <= 1e-14) & step_back.unsqueeze(-1)
            x = torch.where(step_back.unsqueeze(-1), torch.where(drop, zero, x_back), z)
            passive = passive & ~drop
        else:
            x = z
        # Add the constrained variable with the largest descent direction.
        w = bs - (gs @ x.unsqueeze(-1)).squeeze(-1)
        wmax, j = torch.where(cand & ~passive, w, -inf).max(-1)
        add = ~step_back & (wmax > thresh)
        passive = passive | ((cols == j.unsqueeze(-1)) & add.unsqueeze(-1))
        done = ~step_back & ~add
        if bool(done.all()):
            break
    return x * s, passive & (x > 0) | free, done
