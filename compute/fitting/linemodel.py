"""Emission-line model of the gas stage: Gaussian lines in windows around their centres.

Line columns vanish outside a window of a few widths around each line, so every product
that involves them is a sum over these few tens of pixels per line, never over the whole
spectrum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .chunk import DT, ChunkState
from .kernels import line_profiles
from .types import C_KMS

__all__ = ["GasLines", "gas_lines", "line_model", "line_windows", "window_overlaps"]


@dataclass(frozen=True, slots=True)
class GasLines:
    """The chunk's lines: their tensors and which of them each spectrum can fit."""

    comp: torch.Tensor  # (nL,) flux component of each line
    ratio: torch.Tensor  # (nL,) line flux / component flux
    lgroup: torch.Tensor  # (nL,) gas group of each line
    sig_line: torch.Tensor  # (b, nL) instrumental sigma at each line, km/s
    in_range: torch.Tensor  # (b, nL) bool: line inside the fitted range
    line_on: torch.Tensor  # (b, nL) bool: and with enough good pixels
    ratio_on: torch.Tensor  # (b, nL) ratio, 0 where the line is off
    onehot: torch.Tensor  # (nL, nC) line -> component
    g_onehot: torch.Tensor  # (nL, nG) line -> gas group
    comp_on: torch.Tensor  # (b, nC) bool: component with a line on
    dlam: torch.Tensor  # (b, nt) observed pixel width, Angstrom

    @property
    def nl(self) -> int:
        return self.comp.shape[0]


def gas_lines(st: ChunkState, v_star: torch.Tensor, fit2: torch.Tensor) -> GasLines:
    """Lines of ``st.setup`` on the chunk: each one on where, at the stellar velocity
    ``v_star``, it is in the fitted range with enough of the pixels ``fit2`` near it."""
    setup, config, dln, nt = st.setup, st.config, st.dln, st.nt
    nc, ng = setup.n_comp, setup.n_group
    comp = torch.as_tensor(setup.comp, device=st.dev)
    ratio = st.tensor(setup.ratio)
    lgroup = torch.as_tensor(setup.group[setup.comp], device=st.dev)  # group of each line
    # Line centre in work pixels at the stellar velocity, and data around it.
    kl = (st.ln_rest[None, :] + v_star[:, None] / C_KMS - st.lt.ln0) / dln - st.frac_t[:, None]
    kl_i = kl.round().long().clamp(0, nt - 1)
    sig_line = torch.gather(st.sig_inst, 1, kl_i)
    half = (3.0 * torch.sqrt(config.gas_sigma_start**2 + sig_line**2) / st.vpix).clamp_min(1.5)
    near = (st.k[None, None, :] - kl[:, :, None]).abs() <= half[:, :, None]
    n_line_pix = (near & fit2[:, None, :]).sum(-1)
    in_range = (kl >= st.k_lo[:, None]) & (kl <= st.k_hi[:, None])
    line_on = in_range & (n_line_pix >= config.min_line_pixels)
    ratio_on = ratio[None, :] * line_on.to(DT)  # (b, nL)
    onehot = torch.nn.functional.one_hot(comp, nc).to(DT)  # (nL, nC)
    g_onehot = torch.nn.functional.one_hot(lgroup, ng).to(DT)  # (nL, nG)
    comp_on = (line_on.to(DT) @ onehot) > 0
    # Flux density per unit line flux: pixel fraction / observed pixel width (A).
    dlam = torch.exp(st.u_centre + torch.log1p(st.tensor(st.z))[:, None]) * (2.0 * math.sinh(0.5 * dln))
    return GasLines(
        comp=comp, ratio=ratio, lgroup=lgroup, sig_line=sig_line, in_range=in_range, line_on=line_on,
        ratio_on=ratio_on, onehot=onehot, g_onehot=g_onehot, comp_on=comp_on, dlam=dlam,
    )  # fmt: skip


def line_windows(
    st: ChunkState, gl: GasLines, i: torch.Tensor, th: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Line profiles of the spectra ``i`` at gas kinematics ``th`` (b, 2nG) in a window
    around each line.

    Returns the window pixels (b, nL, W), the window centres (b, nL) and, per unit
    component flux, the model there and its derivatives in the group V and sigma (all
    (b, nL, W)). Only these few tens of pixels per line are ever touched, so the gas
    stage does not scale with the length of the spectrum.
    """
    dln, nt, nl = st.dln, st.nt, gl.nl
    vg, sg = th[:, 0::2], th[:, 1::2]
    v_l, s_l = vg[:, gl.lgroup], sg[:, gl.lgroup]  # (b, nL)
    width = torch.sqrt(s_l**2 + gl.sig_line[i] ** 2) / C_KMS
    centre = st.ln_rest[None, :] + v_l / C_KMS
    hw = min(int(math.ceil(float(6.0 * width.max()) / dln)) + 2, nt)
    kc = ((centre - st.lt.ln0) / dln - st.frac_t[i, None]).round().long()
    pix = kc[..., None] + torch.arange(-hw, hw + 1, device=st.dev)
    valid = (pix >= 0) & (pix < nt)
    pix = pix.clamp(0, nt - 1)
    b_, w_ = len(i), pix.shape[-1]
    flat = pix.view(b_, -1)
    uc = torch.gather(st.u_centre[i], 1, flat).view(b_, nl, w_)
    per = gl.ratio_on[i][..., None] / torch.gather(gl.dlam[i], 1, flat).view(b_, nl, w_) * valid
    prof = line_profiles(uc - 0.5 * dln, uc + 0.5 * dln, centre[..., None], width[..., None], derivatives=True)
    dsig = (s_l / (C_KMS**2 * width))[..., None]
    return pix, kc, prof[0] * per, prof[1] * per / C_KMS, prof[2] * per * dsig


def line_model(st: ChunkState, gl: GasLines, pix: torch.Tensor, val: torch.Tensor, coef_c: torch.Tensor) -> torch.Tensor:
    """Sum of the lines (window values (b, nL, W) x component fluxes) on all pixels."""
    b_ = pix.shape[0]
    out = torch.zeros(b_, st.nt, dtype=DT, device=st.dev)
    return out.scatter_add_(1, pix.view(b_, -1), (val * coef_c[:, gl.comp][..., None]).view(b_, -1))


def window_overlaps(kc: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    """sum_n u_l(n) v_l'(n) for every pair of lines and every pair of window
    quantities ``vals`` (b, nL, W, Q): (b, nL, nL, Q, Q).

    Windows have a common width, so line l' sits at a fixed offset in line l's
    window; only the few pairs whose windows can overlap anywhere in the batch
    (a line with itself, blends like [NII] + H-alpha) are computed.
    """
    b_, nl, w_, nq = vals.shape
    dev = vals.device
    delta = kc[:, None, :] - kc[:, :, None]  # (b, l, l'): start of l' in l's window
    la, lb = torch.nonzero((delta.abs() < w_).any(0), as_tuple=True)
    d = delta[:, la, lb]  # (b, P)
    pos = torch.arange(w_, device=dev) - d[..., None]
    ok = (pos >= 0) & (pos < w_)
    vb = torch.gather(vals[:, lb], 2, pos.clamp(0, w_ - 1)[..., None].expand(-1, -1, -1, nq))
    prod = torch.einsum("bpwq,bpwr->bpqr", vals[:, la] * ok[..., None], vb)
    full = torch.zeros(b_, nl, nl, nq, nq, dtype=DT, device=dev)
    full[:, la, lb] = prod
    return full
