"""Convolution kernels: the Gaussian LOSVD in Fourier space, LSF matching, line profiles.

All positions are in pixels of the fit's log-lambda grid, where one pixel is
``c * dln`` km/s, so a velocity is a shift and a Gaussian LOSVD of dispersion sigma is a
convolution with a Gaussian of ``sigma / (c dln)`` pixels. Its Fourier transform is
analytic, exp(-i w s - (w sigma)^2 / 2), which stays exact for sigma well below one pixel
where a sampled kernel would not (Cappellari 2017, MNRAS 466, 798).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["losvd_fourier", "lsf_match", "line_profiles", "matched_sigma_table"]


def losvd_fourier(
    nfft: int, shift: torch.Tensor, sigma: torch.Tensor, derivatives: bool = False
) -> tuple[torch.Tensor, ...]:
    """rfft of a Gaussian of ``sigma`` pixels centred at ``shift`` pixels, ``(B, nfft//2+1)``.

    With ``derivatives`` also returns d/dshift and d/dsigma (per pixel).
    """
    w = 2.0 * math.pi * torch.arange(nfft // 2 + 1, dtype=shift.dtype, device=shift.device) / nfft
    ws = w * sigma.unsqueeze(-1)
    phase = -w * shift.unsqueeze(-1)
    h = torch.exp(-0.5 * ws * ws) * torch.polar(torch.ones_like(phase), phase)
    if not derivatives:
        return (h,)
    return h, h * (-1j * w), h * (-w * ws)


def matched_sigma_table(n: int = 400, smax: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Width s' of a sampled Gaussian whose discrete variance is s^2, tabulated in s.

    A Gaussian sampled at integer offsets has the wrong variance when it is narrower than
    about a pixel (the typical LSF difference between templates and data); choosing s'
    so the second moment is exact keeps the quadrature subtraction of sigmas right.
    """
    s_true = np.linspace(0.0, smax, n)
    sp_grid = np.linspace(1e-3, smax + 1.0, 4000)
    off = np.arange(-12, 13)
    wts = np.exp(-0.5 * (off[None, :] / sp_grid[:, None]) ** 2)
    var = (wts * off**2).sum(1) / wts.sum(1)
    return s_true, np.interp(s_true**2, var, sp_grid)


_S_TRUE, _S_PRIME = matched_sigma_table()


def lsf_match(templates: torch.Tensor, sigma_pix: torch.Tensor) -> torch.Tensor:
    """Convolve ``(K, L)`` templates with a Gaussian of per-pixel width ``(B, L)`` pixels.

    Returns ``(B, K, L)``. Each output pixel uses the kernel of its own width (the usual
    variable-LSF approximation); edges are padded with the edge value.
    """
    smax = float(sigma_pix.max()) if sigma_pix.numel() else 0.0
    nb, length = sigma_pix.shape
    if smax < 1e-3:
        return templates.unsqueeze(0).expand(nb, -1, -1).clone()
    half = int(math.ceil(4.0 * max(smax, 1.0)))
    s_true = torch.as_tensor(_S_TRUE, dtype=sigma_pix.dtype, device=sigma_pix.device)
    s_prime = torch.as_tensor(_S_PRIME, dtype=sigma_pix.dtype, device=sigma_pix.device)
    # Piecewise-linear lookup of the moment-matched width (beyond the table s' = s).
    idx = torch.searchsorted(s_true, sigma_pix.clamp(max=s_true[-1]).contiguous()).clamp(1, len(s_true) - 1)
    t0, t1 = s_true[idx - 1], s_true[idx]
    frac = (sigma_pix.clamp(max=s_true[-1]) - t0) / (t1 - t0)
    sp = s_prime[idx - 1] + frac * (s_prime[idx] - s_prime[idx - 1])
    sp = torch.where(sigma_pix >= s_true[-1], sigma_pix, sp).clamp_min(1e-3)
    off = torch.arange(-half, half + 1, dtype=sigma_pix.dtype, device=sigma_pix.device)
    wts = torch.exp(-0.5 * (off / sp.unsqueeze(-1)) ** 2)  # (B, L, 2h+1)
    wts = wts / wts.sum(-1, keepdim=True)
    padded = torch.cat(
        [templates[:, :1].expand(-1, half), templates, templates[:, -1:].expand(-1, half)], dim=1
    )
    # out[b, k, l] = sum_i wts[b, l, i] * padded[k, l + i]: per pixel l a (B, taps) x
    # (taps, K) product, so the templates are read once instead of once per tap.
    taps = padded.unfold(1, 2 * half + 1, 1).permute(1, 2, 0)  # (L, taps, K)
    out = torch.bmm(wts.transpose(0, 1), taps)  # (L, B, K)
    return out.permute(1, 2, 0).contiguous()


_SQRT2 = math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def line_profiles(
    u_lo: torch.Tensor, u_hi: torch.Tensor, centre: torch.Tensor, width: torch.Tensor, derivatives: bool = False
) -> tuple[torch.Tensor, ...]:
    """Fraction of a unit Gaussian (``centre``, ``width``; ``(B, 1, M)``) in each pixel.

    ``u_lo``/``u_hi`` ``(B, N, 1)`` are pixel edges in the same (log-lambda) units.
    Returns ``(B, N, M)``; with ``derivatives`` also d/dcentre and d/dwidth.
    """
    a_lo = (u_lo - centre) / width
    a_hi = (u_hi - centre) / width
    frac = 0.5 * (torch.erf(a_hi / _SQRT2) - torch.erf(a_lo / _SQRT2))
    if not derivatives:
        return (frac,)
    p_lo = torch.exp(-0.5 * a_lo * a_lo) * _INV_SQRT2PI
    p_hi = torch.exp(-0.5 * a_hi * a_hi) * _INV_SQRT2PI
    d_centre = -(p_hi - p_lo) / width
    d_width = -(a_hi * p_hi - a_lo * p_lo) / width
    return frac, d_centre, d_width
