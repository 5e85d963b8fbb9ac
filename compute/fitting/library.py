"""The template library on a chunk's work frame.

The templates matched to each spectrum's LSF and taken to Fourier space once per chunk,
the subsets of them that the optimisers work on, and the KKT test that lets a left-out
template join a subset. Both fit stages fit on the templates in use only; every left-out
template is checked against the NNLS optimality (KKT) conditions and joins when it fails
them, so the answer is the full library's at a fraction of the cost.
"""

from __future__ import annotations

import torch

from .kernels import lsf_match

__all__ = ["KKT_ROUNDS", "entering", "fourier_entering", "good_fft_size", "match_templates", "on_library", "to_subset"]

#: Relative tolerance of the KKT test on left-out templates: the one ``nnls_gram`` uses
#: (gradient per unit column norm against the data norm) so that fitting on a subset
#: reaches the same solution as the full library would.
_KKT_TOL = 1e-10
#: Subset widenings before a stage falls back to the full library.
KKT_ROUNDS = 4
#: Work on template subsets; False fits every template at every step (the reference the
#: tests compare the subset strategy against).
_USE_SUBSETS = True


def good_fft_size(n: int) -> int:
    """Smallest even 2^a 3^b 5^c >= n (fast for every FFT backend).

    Even: a real FFT of odd length cannot be done as a complex one of half the length,
    and measured 2.2x slower here (3375 = 15^3 against 3456 = 2^7 3^3).
    """
    best = 1 << (n - 1).bit_length()
    a = 2
    while a < 2 * n:
        b = a
        while b < 2 * n:
            c = b
            while c < n:
                c *= 5
            best = min(best, c)
            b *= 3
        a *= 2
    return best


def match_templates(tall: torch.Tensor, sdiff: torch.Tensor, nfft: int) -> torch.Tensor:
    """rfft of the templates ``tall`` (K, nt) matched to each spectrum's LSF, ``(b, K, nfft//2+1)``.

    ``sdiff`` ``(b, nt)`` is the Gaussian sigma (pixels) that takes the templates to each
    spectrum's resolution.
    """
    nb, nt = sdiff.shape
    # Spectra with the same LSF on the work frame (the spaxels of an IFU cube: one
    # instrument LSF, one input redshift) share their matched templates: each distinct
    # row is matched and transformed once.
    lsf_rows, lsf_of = torch.unique(sdiff, dim=0, return_inverse=True)
    shared = len(lsf_rows) < nb
    matched = lsf_match(tall, lsf_rows if shared else sdiff)  # (distinct LSFs or b, K+E, nt)
    pad = nfft - nt
    # Pad with edge values (half right, half left) so the circular FFT sees no jump
    # next to the fitted pixels.
    right = matched[..., -1:].expand(-1, -1, pad - pad // 2)
    left = matched[..., :1].expand(-1, -1, pad // 2)
    spec_f = torch.fft.rfft(torch.cat([matched, right, left], dim=-1), dim=-1)
    del matched, right, left
    if shared:
        spec_f = spec_f.expand(nb, -1, -1) if len(lsf_rows) == 1 else spec_f[lsf_of]
    return spec_f


def to_subset(members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, K) bool -> padded template indices (b, m) and their validity."""
    if not _USE_SUBSETS:
        members = torch.ones_like(members)
    m = max(int(members.sum(1).max()), 1)
    order = torch.argsort((~members).to(torch.int8), dim=1, stable=True)[:, :m]
    return order, torch.gather(members, 1, order)


def on_library(sub: torch.Tensor, sub_on: torch.Tensor, flags_sub: torch.Tensor, ntpl: int) -> torch.Tensor:
    """Scatter per-column values of a subset layout back onto all ``ntpl`` templates (b, K)."""
    full = torch.zeros(sub.shape[0], ntpl, dtype=flags_sub.dtype, device=sub.device)
    return full.scatter(1, sub, torch.where(sub_on, flags_sub, torch.zeros_like(flags_sub)))


def entering(grad: torch.Tensor, in_sub: torch.Tensor, data_norm: torch.Tensor, col_norm: torch.Tensor) -> torch.Tensor:
    """(b, K) templates outside the subset ``in_sub`` whose chi^2 gradient ``grad`` says
    they would enter the full NNLS: the test Lawson-Hanson applies before it stops, per
    unit column norm ``col_norm`` (b, K) against the data norm ``data_norm`` (b,)."""
    return ~in_sub & (grad > _KKT_TOL * data_norm[:, None] * col_norm)


def fourier_entering(
    spec_f: torch.Tensor,
    kernel: torch.Tensor,
    q: torch.Tensor,
    nfft: int,
    in_sub: torch.Tensor,
    data_norm: torch.Tensor,
    col_norm: torch.Tensor,
) -> torch.Tensor:
    """:func:`entering` with the gradient from the template spectra ``spec_f`` under the
    LOSVD ``kernel`` and the weighted residuals ``q``, done in Fourier space for all
    templates at once (no inverse FFTs, no Gram matrix)."""
    return entering(_fourier_dot(spec_f, kernel, q, nfft), in_sub, data_norm, col_norm)


def _fourier_dot(spec_f: torch.Tensor, factor: torch.Tensor, q: torch.Tensor, nfft: int) -> torch.Tensor:
    """sum_n irfft(spec_f * factor)[n] q[n] over the first ``q.shape[-1]`` pixels, ``(b, K)``.

    ``spec_f`` ``(b, K, nfft//2+1)``, ``factor`` ``(b, nfft//2+1)`` (a kernel applied to
    every row), ``q`` ``(b, N)``. By Parseval this is one rfft of ``q`` and one real
    matrix-vector product per spectrum: the gradient of chi^2 with respect to every
    template's weight without synthesising a single template column.
    """
    nf = spec_f.shape[-1]
    # One-sided spectrum: every bin but DC (and Nyquist for even nfft) stands for two.
    twice = torch.full((nf,), 2.0 / nfft, dtype=q.dtype, device=q.device)
    twice[0] = 1.0 / nfft
    if nfft % 2 == 0:
        twice[-1] = 1.0 / nfft
    v = factor * torch.fft.rfft(q, n=nfft, dim=-1).conj() * twice
    # Re(A v) = A_re v_re - A_im v_im, as one real product over (frequency, re/im).
    vr = torch.stack([v.real, -v.imag], dim=-1).reshape(v.shape[0], -1, 1)
    return (torch.view_as_real(spec_f).reshape(*spec_f.shape[:2], -1) @ vr).squeeze(-1)
