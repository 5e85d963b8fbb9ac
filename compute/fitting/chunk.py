"""One chunk of spectra on the fit's work frame: the state the fit stages share.

:func:`prepare_chunk` puts the chunk's spectra on the templates' log grid (pixel k of
every spectrum sits at template pixel k + frac), scales them, matches the templates to
their LSF and selects the spectra with enough pixels; the stages (:mod:`.stellar`,
:mod:`.gas`, :mod:`.outputs`) then read it and record their results on it. Everything
is float64: the normal equations square the condition number of the near-collinear
stellar templates (~1e6 in the Gram matrix), which float32 cannot carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from skyledger.schema.linelist import LINES

from .library import good_fft_size, match_templates
from .linesetup import LineSetup
from .prepare import LogSpectra
from .templates import LogTemplates
from .types import C_KMS, FitConfig, SpectrumFlag

if TYPE_CHECKING:
    from .gas import GasFit
    from .stellar import StellarFit

__all__ = ["DT", "ChunkState", "legendre", "prepare_chunk"]

DT = torch.float64


def legendre(x: torch.Tensor, degree: int) -> torch.Tensor:
    """Legendre polynomials P_0..P_degree at x, stacked on a new last axis."""
    if degree < 0:
        return x.new_zeros(x.shape + (0,))
    cols = [torch.ones_like(x)]
    if degree >= 1:
        cols.append(x)
    for n in range(1, degree):
        cols.append(((2 * n + 1) * x * cols[n] - n * cols[n - 1]) / (n + 1))
    return torch.stack(cols, dim=-1)


@dataclass(slots=True)
class ChunkState:
    """The spectra of one chunk that are fitted (``b`` of them), on the work frame of
    ``nt`` template pixels, and the results of the stages so far.

    Set by :func:`prepare_chunk`; ``stars`` is written by :func:`.stellar.fit_stars`,
    ``gas`` by :func:`.gas.fit_gas`, and :func:`.outputs.collect_outputs` writes
    ``flags`` and turns everything into the chunk's result arrays.
    """

    config: FitConfig
    setup: LineSetup
    lt: LogTemplates
    dev: torch.device
    #: Spectra in the chunk (n), the rows of the chunk that are fitted ``(b,)``, and the
    #: chunk's SpectrumFlag bits ``(n,)`` (TOO_FEW_PIXELS set here, the rest by outputs).
    n_chunk: int
    sel_np: np.ndarray
    flags: np.ndarray
    dln: float
    vpix: float  # km/s per pixel
    nt: int  # pixels of the work frame (the templates' log grid)
    ntpl: int  # templates in the library (eigen-templates not counted)
    nfft: int
    z: np.ndarray  # (b,) input redshift
    k: torch.Tensor  # (nt,) pixel index, float
    every: torch.Tensor  # (b,) arange: all spectra of the chunk
    frac_t: torch.Tensor  # (b,) spectrum pixel k sits at template pixel k + frac
    u_centre: torch.Tensor  # (b, nt) rest-frame ln(lambda) of each pixel centre
    sig_inst: torch.Tensor  # (b, nt) instrumental sigma, km/s (edge values outside the data)
    base: torch.Tensor  # (b, nt) bool: good pixels away from the template edges
    fit1: torch.Tensor  # (b, nt) bool: base without the emission-line windows (stellar stage)
    scale: torch.Tensor  # (b,) flux scale: the spectra are fitted as flux/scale
    y: torch.Tensor  # (b, nt) scaled flux
    wfull: torch.Tensor  # (b, nt) weights (scaled ivar), 0 off the data
    snr: torch.Tensor  # (b,) median flux*sqrt(ivar) over fit1
    worse: torch.Tensor  # (b,) bool: templates coarser than the data over most pixels
    floor_one: torch.Tensor  # (b,) bool: resampled spectrum, error scale not below 1
    tpl_f: torch.Tensor  # (b, K, nf) rfft of the LSF-matched templates
    eig_f: torch.Tensor  # (b, E, nf) the same for the eigen-templates
    k_lo: torch.Tensor  # (b,) first pixel of the fitted range
    k_hi: torch.Tensor  # (b,) last pixel of the fitted range
    x: torch.Tensor  # (b, nt) polynomial coordinate, -1..1 over the fitted range
    ln_rest: torch.Tensor  # (nL,) ln rest wavelengths of the fitted lines
    stars: StellarFit = field(init=False)
    gas: GasFit = field(init=False)

    @property
    def nb(self) -> int:
        return len(self.sel_np)

    def tensor(self, a: np.ndarray, dtype: torch.dtype = DT) -> torch.Tensor:
        """``a`` as a tensor on the chunk's device."""
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.dev)


def prepare_chunk(
    spectra: LogSpectra,
    idx: np.ndarray,
    lt: LogTemplates,
    setup: LineSetup,
    config: FitConfig,
    dev: torch.device,
) -> tuple[np.ndarray, ChunkState | None]:
    """The spectra ``idx`` of ``spectra`` on the work frame.

    Returns the chunk's flag bits ``(len(idx),)`` and its state, ``None`` when no
    spectrum has enough pixels to fit (they are flagged TOO_FEW_PIXELS).
    """
    dln, nt, ntpl = spectra.dln, lt.size, lt.flux.shape[0]
    vpix = C_KMS * dln  # km/s per pixel
    nb = len(idx)
    z = spectra.redshift[idx]

    # --- Work frame: pixel k of every spectrum sits at template pixel k + frac[b]. ---
    pos = (spectra.ln0[idx] - np.log1p(z) - lt.ln0) / dln
    shift0 = np.floor(pos).astype(np.int64)
    frac = pos - shift0
    kk = np.arange(nt)[None, :] - shift0[:, None]  # index into the spectrum's pixels
    npix = spectra.flux.shape[1]
    inside = (kk >= 0) & (kk < npix)
    kc = np.clip(kk, 0, npix - 1)
    rows = idx[:, None]

    def t(a: np.ndarray, dtype: torch.dtype = DT) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=dev)

    good = t(inside & spectra.good[rows, kc], torch.bool)
    flux = t(np.where(inside, spectra.flux[rows, kc], 0.0))
    ivar = t(np.where(inside, spectra.ivar[rows, kc], 0.0))
    sig_inst = t(spectra.sigma_inst[rows, kc])  # edge values outside the data
    frac_t = t(frac)
    k = torch.arange(nt, dtype=DT, device=dev)
    u_centre = lt.ln0 + (k[None, :] + frac_t[:, None]) * dln  # rest-frame ln(lambda)
    margin = int(math.ceil((1.5 * config.v_search + 3.0 * max(config.sigma_grid)) / vpix)) + 2
    in_tpl = (k >= margin) & (k <= nt - 1 - margin)
    base = good & in_tpl[None, :]
    ln_rest = t(setup.ln_rest) if len(setup.ids) else t(np.log([ln.vacuum_wavelength for ln in LINES.values()]))
    near_line = ((u_centre[:, :, None] - t(np.log([ln.vacuum_wavelength for ln in LINES.values()]))[None, None, :]).abs() < config.line_mask_kms / C_KMS).any(-1)
    fit1 = base & ~near_line

    flags = np.zeros(nb, dtype=np.int64)
    n1 = fit1.sum(1)
    ok = (n1 >= config.min_pixels).cpu().numpy()
    flags[~ok] |= SpectrumFlag.TOO_FEW_PIXELS
    if not ok.any():
        return flags, None
    sel_np = np.flatnonzero(ok)
    sel = torch.as_tensor(sel_np, device=dev)
    flux, ivar, sig_inst, frac_t, u_centre = flux[sel], ivar[sel], sig_inst[sel], frac_t[sel], u_centre[sel]
    base, fit1, z = base[sel], fit1[sel], z[sel_np]
    nb = len(sel_np)
    # Errors are scaled by the reduced chi^2, except that a resampled spectrum's is not
    # allowed below 1 (see :mod:`.stellar`).
    floor_one = t(spectra.rebinned[idx], torch.bool)[sel]

    # Scale each spectrum to a continuum of ~1 so coefficients and tolerances are O(1).
    fpos = torch.where(fit1, flux, torch.full_like(flux, float("nan")))
    scale = torch.nanmedian(fpos, dim=1).values
    alt = torch.nanmean(fpos.abs(), dim=1)
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, alt)
    scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
    y = flux / scale[:, None]
    wfull = ivar * scale[:, None] ** 2
    snr = torch.nanmedian(torch.where(fit1, flux * ivar.sqrt(), torch.full_like(flux, float("nan"))), dim=1).values

    # --- Templates matched to each spectrum's LSF, then to Fourier space. ---
    sig_t = t(lt.sigma_kms)
    sdiff = (sig_inst**2 - sig_t[None, :] ** 2).clamp_min(0.0).sqrt() / vpix
    worse = ((sig_t[None, :] > sig_inst) & fit1).sum(1) > 0.5 * fit1.sum(1)
    nfft = good_fft_size(nt + 2 * margin)
    spec_f = match_templates(t(np.concatenate([lt.flux, lt.eigen])), sdiff, nfft)

    # Legendre polynomial over each spectrum's fitted range.
    kf = torch.where(base, k[None, :], torch.full_like(u_centre, float("nan")))
    k_lo = torch.nan_to_num(kf, nan=float("inf")).amin(1)
    k_hi = torch.nan_to_num(kf, nan=-float("inf")).amax(1)
    x = 2.0 * (k[None, :] - k_lo[:, None]) / (k_hi - k_lo).clamp_min(1.0)[:, None] - 1.0

    state = ChunkState(
        config=config, setup=setup, lt=lt, dev=dev, n_chunk=len(idx), sel_np=sel_np, flags=flags,
        dln=dln, vpix=vpix, nt=nt, ntpl=ntpl, nfft=nfft, z=z, k=k, every=torch.arange(nb, device=dev),
        frac_t=frac_t, u_centre=u_centre, sig_inst=sig_inst, base=base, fit1=fit1, scale=scale, y=y,
        wfull=wfull, snr=snr, worse=worse, floor_one=floor_one, tpl_f=spec_f[:, :ntpl],
        eig_f=spec_f[:, ntpl:], k_lo=k_lo, k_hi=k_hi, x=x, ln_rest=ln_rest,
    )  # fmt: skip
    return flags, state
