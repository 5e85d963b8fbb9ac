"""Coarse (V, sigma) grid of the stellar stage: the basin the optimiser starts in.

A few eigen-templates (free signs) plus the polynomial stand in for the library, all
coefficients solved at every grid point; the grid point of least chi^2 starts the
Levenberg-Marquardt fit.
"""

from __future__ import annotations

import numpy as np
import torch

from .kernels import losvd_fourier
from .nnls import solve_masked

__all__ = ["coarse_grid"]


def coarse_grid(
    eig_f: torch.Tensor,
    frac: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    poly: torch.Tensor,
    v_grid: np.ndarray,
    sigma_grid: tuple[float, ...],
    vpix: float,
    nt: int,
    nfft: int,
) -> torch.Tensor:
    """(V, sigma) of least chi^2 on the grid, per spectrum ``(b, 2)``.

    The model is the eigen-templates (rfft ``eig_f`` ``(b, E, nf)``) at (V, sigma) plus
    the polynomial ``poly`` ``(b, nt, P)``, all coefficients free. On the default grid V
    steps by whole pixels, where a shift is exactly a circular roll of the broadened
    eigen-templates, so one inverse FFT per sigma serves every velocity.
    """
    nb, ne = eig_f.shape[:2]
    dev, dt = y.device, y.dtype
    nv = len(v_grid)
    step = (v_grid[1] - v_grid[0]) / vpix if nv > 1 else 1.0
    npoly = poly.shape[-1]
    n = ne + npoly
    wy = w * y
    yy = (wy * y).sum(1)
    g_pp = poly.transpose(1, 2) @ (poly * w[..., None])
    r_p = torch.einsum("bnp,bn->bp", poly, wy)
    iu, ju = torch.triu_indices(ne, ne, device=dev)
    chi2 = torch.empty(nb, len(sigma_grid), nv, dtype=dt, device=dev)

    def solve(g_ee: torch.Tensor, g_ep: torch.Tensor, r_e: torch.Tensor, b: slice) -> torch.Tensor:
        """chi^2 (bb, nk) from the shift-dependent blocks (bb, nk, ...) of the normal equations."""
        bb, nk = g_ee.shape[:2]
        g = torch.empty(bb, nk, n, n, dtype=dt, device=dev)
        g[..., :ne, :ne] = g_ee
        g[..., :ne, ne:] = g_ep
        g[..., ne:, :ne] = g_ep.transpose(-1, -2)
        g[..., ne:, ne:] = g_pp[b, None]
        rhs = torch.cat([r_e, r_p[b, None].expand(-1, nk, -1)], dim=-1)
        d = torch.diagonal(g, dim1=-2, dim2=-1).clamp_min(1e-300).rsqrt()
        gs = (g * d[..., :, None] * d[..., None, :]).reshape(-1, n, n)
        rs = (rhs * d).reshape(-1, n)
        sol = solve_masked(gs, rs, torch.ones_like(rs, dtype=torch.bool), 1e-10).view(bb, nk, n)
        return yy[b, None] - (rhs * d * sol).sum(-1)

    if nv > 1 and abs(step - round(step)) < 1e-9 and round(step) >= 1:
        # Shift r of the columns: sum_n x(n) e_i(n - r) = sum_k e_i(k) x(k + r) (circular),
        # so every grid velocity comes from one product with a Hankel matrix of the
        # weighted data, w*y, w*P_l and (for e_i e_j) w. No per-velocity FFT or copy.
        st = int(round(step))
        span = (nv - 1) * st + 1
        x = torch.zeros(nb, npoly + 2, nfft, dtype=dt, device=dev)
        x[:, :npoly, :nt] = (poly * w[..., None]).transpose(1, 2)
        x[:, npoly, :nt] = wy
        x[:, npoly + 1, :nt] = w
        x = torch.cat([x, x[..., : span - 1]], dim=-1)
        # Spectra per block: bounds the (bb, nfft, (P+2) nv) Hankel copy to ~32 MB.
        bblk = max(1, int(4e6 // (nfft * (npoly + 2) * nv)))
        for b0 in range(0, nb, bblk):
            b = slice(b0, min(nb, b0 + bblk))
            hank = x[b].unfold(-1, span, 1)[..., ::st]  # (bb, P+2, nfft, nv) view
            h_x = hank[:, : npoly + 1].permute(0, 2, 1, 3).reshape(hank.shape[0], nfft, -1)
            h_w = hank[:, npoly + 1]
            for si, s0 in enumerate(sigma_grid):
                sig = torch.full((h_w.shape[0],), s0 / vpix, dtype=dt, device=dev)
                h0 = losvd_fourier(nfft, float(v_grid[0]) / vpix - frac[b], sig)[0]
                e0 = torch.fft.irfft(eig_f[b] * h0[:, None, :], n=nfft, dim=-1)  # (bb, E, nfft)
                q = e0[:, iu] * e0[:, ju]  # (bb, E(E+1)/2, nfft)
                g_up = (q @ h_w).transpose(1, 2)  # (bb, nv, E(E+1)/2)
                g_ee = torch.empty(h_w.shape[0], nv, ne, ne, dtype=dt, device=dev)
                g_ee[..., iu, ju] = g_up
                g_ee[..., ju, iu] = g_up
                g_ex = (e0 @ h_x).view(-1, ne, npoly + 1, nv).permute(0, 3, 1, 2)  # (bb, nv, E, P+1)
                chi2[b, si] = solve(g_ee, g_ex[..., :npoly], g_ex[..., npoly], b)
    else:
        # General step: the columns at each grid velocity from their own inverse FFT.
        block = max(1, min(nv, int(4e6 // max(1, nb * ne * nt))))
        side = torch.cat([poly, y[..., None]], dim=-1).unsqueeze(1)  # (b, 1, nt, P+1)
        for si, s0 in enumerate(sigma_grid):
            sig = torch.full((nb,), s0 / vpix, dtype=dt, device=dev)
            for k0 in range(0, nv, block):
                kv = np.arange(k0, min(nv, k0 + block))
                vk = torch.as_tensor(v_grid[kv], dtype=dt, device=dev)
                h = losvd_fourier(nfft, vk[None, :] / vpix - frac[:, None], sig[:, None].expand(-1, len(kv)))[0]
                cols = torch.fft.irfft(eig_f[:, :, None, :] * h[:, None], n=nfft, dim=-1)[..., :nt]
                cw = (cols * w[:, None, None, :]).transpose(1, 2)  # (b, nk, E, nt)
                g_ex = cw @ side
                chi2[:, si, k0 : k0 + len(kv)] = solve(cw @ cols.permute(0, 2, 3, 1), g_ex[..., :npoly], g_ex[..., npoly], slice(None))
    # First minimum in (sigma, V) order, as a sequential scan would find it.
    flat = chi2.reshape(nb, -1).argmin(1)
    vs = torch.as_tensor(v_grid, dtype=dt, device=dev)
    ss = torch.as_tensor(sigma_grid, dtype=dt, device=dev)
    return torch.stack([vs[flat % nv], ss[flat // nv]], dim=1)
