"""Batched full-spectrum fit: stellar kinematics, then tied Gaussian emission lines.

Stage 1 fits the stellar continuum (non-negative template mix convolved with a Gaussian
LOSVD, plus an additive Legendre polynomial) with the emission-line windows masked:
a coarse (V, sigma) grid with a few eigen-templates finds the basin, Levenberg-Marquardt
by variable projection converges on the full library, outliers are clipped and the fit
repeated. Stage 2 keeps the stellar kinematics, refits the template weights together with
the emission lines (non-negative fluxes, doublets at fixed ratios) and a polynomial,
and optimises one (V, sigma) per gas group. Everything is float64: the normal equations
square the condition number of the near-collinear stellar templates (~1e6 in the Gram
matrix), which float32 cannot carry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from skyledger.compute.linelist import LINES

from .kernels import line_profiles, losvd_fourier, lsf_match
from .nnls import masked_inverse, nnls_gram, solve_masked
from .optim import EvalFn, Evaluation, evaluation_from, levenberg_marquardt, theta_covariance
from .prepare import LogSpectra, prepare_batch
from .templates import LogTemplates, TemplateLibrary
from .types import C_KMS, DOUBLETS, FitConfig, FitResult, LineFlag, SpectraBatch, SpectrumFlag

__all__ = ["fit_spectra"]

_DT = torch.float64


def _good_fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast for every FFT backend)."""
    best = 1 << (n - 1).bit_length()
    a = 1
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


def _legendre(x: torch.Tensor, degree: int) -> torch.Tensor:
    """Legendre polynomials P_0..P_degree at x, stacked on a new last axis."""
    if degree < 0:
        return x.new_zeros(x.shape + (0,))
    cols = [torch.ones_like(x)]
    if degree >= 1:
        cols.append(x)
    for n in range(1, degree):
        cols.append(((2 * n + 1) * x * cols[n] - n * cols[n - 1]) / (n + 1))
    return torch.stack(cols, dim=-1)


@dataclass(frozen=True, slots=True)
class _LineSetup:
    """Line bookkeeping: which flux parameter (component) and gas group each line uses."""

    ids: tuple[str, ...]
    ln_rest: np.ndarray  # (nL,) ln vacuum rest wavelength
    comp: np.ndarray  # (nL,) component index
    ratio: np.ndarray  # (nL,) flux of the line / flux parameter of its component
    group: np.ndarray  # (nC,) gas group of each component
    n_comp: int
    n_group: int
    tied: np.ndarray  # (nL,) bool: flux set by a doublet ratio


def _line_setup(config: FitConfig) -> _LineSetup:
    wanted = set(config.lines) if config.lines is not None else None
    group_of_kind = {kind: g for g, kinds in enumerate(config.gas_groups.values()) for kind in kinds}
    lines = [ln for ln in LINES.values() if (wanted is None or ln.id in wanted) and ln.kind in group_of_kind]
    ids = tuple(ln.id for ln in lines)
    parents = [ln.id for ln in lines if ln.id not in DOUBLETS or DOUBLETS[ln.id][0] not in ids]
    comp = np.array([parents.index(DOUBLETS[i][0]) if i in DOUBLETS and DOUBLETS[i][0] in ids else parents.index(i) for i in ids])
    ratio = np.array([DOUBLETS[i][1] if i in DOUBLETS and DOUBLETS[i][0] in ids else 1.0 for i in ids])
    group = np.array([group_of_kind[lines[ids.index(p)].kind] for p in parents])
    return _LineSetup(
        ids=ids,
        ln_rest=np.log([ln.vacuum_wavelength for ln in lines]),
        comp=comp,
        ratio=ratio,
        group=group,
        n_comp=len(parents),
        n_group=len(config.gas_groups),
        tied=ratio != 1.0,
    )


def fit_spectra(
    batch: SpectraBatch,
    templates: TemplateLibrary | None = None,
    config: FitConfig | None = None,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Fit stellar kinematics and emission lines of every spectrum in ``batch``.

    Spectra that cannot be fitted come back as NaN with :class:`SpectrumFlag` bits set;
    they never stop the rest of the batch. ``templates`` defaults to the shipped MILESHC.
    """
    config = config or FitConfig()
    templates = templates or TemplateLibrary.mileshc()
    dev = torch.device(device)
    spectra = prepare_batch(batch, config)
    lt = templates.on_log_grid(spectra.dln, config.n_eigen)
    setup = _line_setup(config)
    nb, nl = len(spectra.redshift), len(setup.ids)
    res = _empty_result(nb, setup.ids, lt.size)
    res.flags[:] = spectra.flags
    fittable = np.flatnonzero(spectra.flags == 0)
    chunk = config.chunk_size or (256 if dev.type == "cuda" else 8)
    for start in range(0, len(fittable), chunk):
        idx = fittable[start : start + chunk]
        out = _fit_chunk(spectra, idx, lt, setup, config, dev)
        for name, values in out.items():
            getattr(res, name)[idx] = values
    # A spectrum that failed before the line stage gets every line flagged.
    failed = (res.flags & (SpectrumFlag.NO_GOOD_PIXELS | SpectrumFlag.TOO_FEW_PIXELS | SpectrumFlag.FIT_FAILED | SpectrumFlag.BAD_REDSHIFT)) != 0
    res.line_flags[failed] |= LineFlag.SPECTRUM_FAILED
    if nl:
        for name in ("line_velocity", "line_velocity_err", "line_sigma", "line_sigma_err", "line_flux", "line_flux_err", "line_ew", "line_snr", "line_z"):
            getattr(res, name)[failed] = np.nan
    return res


def _empty_result(nb: int, ids: tuple[str, ...], nmod: int) -> FitResult:
    def nan(*shape: int) -> np.ndarray:
        return np.full(shape, np.nan)

    nl = len(ids)
    return FitResult(
        line_ids=ids,
        velocity=nan(nb), velocity_err=nan(nb), sigma=nan(nb), sigma_err=nan(nb), z=nan(nb),
        chi2_dof=nan(nb), stellar_chi2_dof=nan(nb), snr=nan(nb),
        n_pixels=np.zeros(nb, dtype=np.int64), flags=np.zeros(nb, dtype=np.int64),
        line_velocity=nan(nb, nl), line_velocity_err=nan(nb, nl), line_sigma=nan(nb, nl),
        line_sigma_err=nan(nb, nl), line_flux=nan(nb, nl), line_flux_err=nan(nb, nl),
        line_ew=nan(nb, nl), line_snr=nan(nb, nl), line_z=nan(nb, nl),
        line_flags=np.zeros((nb, nl), dtype=np.int64),
        model_wave=nan(nb, nmod), model_flux=nan(nb, nmod), model_stars=nan(nb, nmod),
        model_fitmask=np.zeros((nb, nmod), dtype=bool),
    )  # fmt: skip


def _fit_chunk(
    spectra: LogSpectra,
    idx: np.ndarray,
    lt: LogTemplates,
    setup: _LineSetup,
    config: FitConfig,
    dev: torch.device,
) -> dict[str, np.ndarray]:
    """Fit one chunk; returns per-field arrays for the spectra ``idx``."""
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

    def t(a: np.ndarray, dtype: torch.dtype = _DT) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=dev)

    good = t(inside & spectra.good[rows, kc], torch.bool)
    flux = t(np.where(inside, spectra.flux[rows, kc], 0.0))
    ivar = t(np.where(inside, spectra.ivar[rows, kc], 0.0))
    sig_inst = t(spectra.sigma_inst[rows, kc])  # edge values outside the data
    frac_t = t(frac)
    k = torch.arange(nt, dtype=_DT, device=dev)
    u_centre = lt.ln0 + (k[None, :] + frac_t[:, None]) * dln  # rest-frame ln(lambda)
    margin = int(math.ceil((1.5 * config.v_search + 3.0 * max(config.sigma_grid)) / vpix)) + 2
    in_tpl = (k >= margin) & (k <= nt - 1 - margin)
    base = good & in_tpl[None, :]
    ln_rest = t(setup.ln_rest) if len(setup.ids) else t(np.log([ln.vacuum_wavelength for ln in LINES.values()]))
    near_line = ((u_centre[:, :, None] - t(np.log([ln.vacuum_wavelength for ln in LINES.values()]))[None, None, :]).abs() < config.line_mask_kms / C_KMS).any(-1)
    fit1 = base & ~near_line

    flags = np.zeros(nb, dtype=np.int64)
    out: dict[str, np.ndarray] = {"flags": flags}
    n1 = fit1.sum(1)
    ok = (n1 >= config.min_pixels).cpu().numpy()
    flags[~ok] |= SpectrumFlag.TOO_FEW_PIXELS
    if not ok.any():
        return out
    sel_np = np.flatnonzero(ok)
    sel = torch.as_tensor(sel_np, device=dev)
    good, flux, ivar, sig_inst, frac_t, u_centre = good[sel], flux[sel], ivar[sel], sig_inst[sel], frac_t[sel], u_centre[sel]
    base, fit1, z = base[sel], fit1[sel], z[sel_np]
    nb = len(sel_np)

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
    tall = t(np.concatenate([lt.flux, lt.eigen]))
    matched = lsf_match(tall, sdiff)  # (b, K+E, nt)
    nfft = _good_fft_size(nt + 2 * margin)
    pad = nfft - nt
    # Pad with edge values (half right, half left) so the circular FFT sees no jump
    # next to the fitted pixels.
    right = matched[..., -1:].expand(-1, -1, pad - pad // 2)
    left = matched[..., :1].expand(-1, -1, pad // 2)
    spec_f = torch.fft.rfft(torch.cat([matched, right, left], dim=-1), dim=-1)
    del matched, right, left
    tpl_f, eig_f = spec_f[:, :ntpl], spec_f[:, ntpl:]

    # Legendre polynomial over each spectrum's fitted range.
    kf = torch.where(base, k[None, :], torch.full_like(u_centre, float("nan")))
    k_lo = torch.nan_to_num(kf, nan=float("inf")).amin(1)
    k_hi = torch.nan_to_num(kf, nan=-float("inf")).amax(1)
    x = 2.0 * (k[None, :] - k_lo[:, None]) / (k_hi - k_lo).clamp_min(1.0)[:, None] - 1.0

    def stellar_columns(i: torch.Tensor, v: torch.Tensor, s: torch.Tensor, fourier: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, nt, K) template columns at (V, sigma) km/s, and the LOSVD transforms."""
        hs = losvd_fourier(nfft, v / vpix - frac_t[i], s / vpix, derivatives=True)
        cols = torch.fft.irfft(fourier[i] * hs[0][:, None, :], n=nfft, dim=-1)[..., :nt]
        return cols.transpose(1, 2), torch.stack(hs)

    # ---------------- Stage 1: stellar kinematics ----------------
    poly1 = _legendre(x, config.degree)
    npoly1 = poly1.shape[-1]
    v_step = config.v_step or vpix
    v_grid = np.arange(-config.v_search, config.v_search + 0.5 * v_step, v_step)
    w1 = torch.where(fit1, wfull, torch.zeros_like(wfull))
    best = torch.full((nb,), float("inf"), dtype=_DT, device=dev)
    theta = torch.zeros(nb, 2, dtype=_DT, device=dev)
    every = torch.arange(nb, device=dev)
    sw = w1.sqrt()
    yw = y * sw
    yy = (yw * yw).sum(1)
    for s0 in config.sigma_grid:
        for v0 in v_grid:
            vv = torch.full((nb,), float(v0), dtype=_DT, device=dev)
            cols, _ = stellar_columns(every, vv, torch.full_like(vv, s0), eig_f)
            a = torch.cat([cols, poly1], dim=-1) * sw[..., None]
            g = a.transpose(1, 2) @ a
            rhs = torch.einsum("bni,bn->bi", a, yw)
            d = torch.diagonal(g, dim1=-2, dim2=-1).clamp_min(1e-300).rsqrt()
            sol = solve_masked(g * d[:, :, None] * d[:, None, :], rhs * d, torch.ones_like(rhs, dtype=torch.bool), 1e-10)
            chi2 = yy - (rhs * d * sol).sum(1)
            better = chi2 < best
            best = torch.where(better, chi2, best)
            theta[better] = torch.tensor([float(v0), s0], dtype=_DT, device=dev)

    nonneg1 = torch.cat([torch.ones(ntpl, dtype=torch.bool), torch.zeros(npoly1, dtype=torch.bool)]).to(dev)

    def eval_stars(i: torch.Tensor, th: torch.Tensor, passive0: torch.Tensor | None) -> Evaluation:
        cols, hs = stellar_columns(i, th[:, 0], th[:, 1], tpl_f)
        swi = w1[i].sqrt()
        a = torch.cat([cols, poly1[i]], dim=-1) * swi[..., None]
        g = a.transpose(1, 2) @ a
        ywi = y[i] * swi
        rhs = torch.einsum("bni,bn->bi", a, ywi)
        coef, passive, _ = nnls_gram(g, rhs, nonneg1, passive0=passive0)
        # Derivatives of the model at fixed weights: one inverse FFT each for V, sigma.
        mix = torch.einsum("bkf,bk->bf", tpl_f[i], coef[:, :ntpl].to(tpl_f.dtype))
        dv = torch.fft.irfft(mix * hs[1], n=nfft, dim=-1)[..., :nt] / vpix
        ds = torch.fft.irfft(mix * hs[2], n=nfft, dim=-1)[..., :nt] / vpix
        jac = torch.stack([dv, ds], dim=-1) * swi[..., None]
        return evaluation_from(a, ywi, g, rhs, coef, passive, jac)

    lo1 = torch.tensor([-1.5 * config.v_search, config.sigma_min], dtype=_DT, device=dev).expand(nb, 2)
    hi1 = torch.tensor([1.5 * config.v_search, config.sigma_max], dtype=_DT, device=dev).expand(nb, 2)
    theta, ev1, conv1 = levenberg_marquardt(eval_stars, theta, lo1, hi1, config.max_iter, config.tol)
    clipped = torch.zeros_like(fit1)
    for _ in range(config.clip_iterations):
        r = ev1.resid
        n_in = (w1 > 0).sum(1).clamp_min(1)
        rms = ((r * r).sum(1) / n_in).sqrt()
        new = (w1 > 0) & (r.abs() > config.clip_sigma * rms[:, None])
        if not bool(new.any()):
            break
        clipped |= new
        w1 = torch.where(new, torch.zeros_like(w1), w1)
        theta, ev1, conv1 = levenberg_marquardt(eval_stars, theta, lo1, hi1, config.max_iter, config.tol, ev1.passive)
    n_fit1 = (w1 > 0).sum(1)
    dof1 = (n_fit1 - ev1.passive.sum(1) - 2).clamp_min(1).to(_DT)
    chi2_dof1 = ev1.chi2 / dof1
    cov1 = theta_covariance(ev1, chi2_dof1)
    v_star, s_star = theta[:, 0], theta[:, 1]
    coef_t = ev1.coef[:, :ntpl]

    f_sel = np.zeros(nb, dtype=np.int64)
    f_sel[~conv1.cpu().numpy()] |= SpectrumFlag.NOT_CONVERGED
    s_np = s_star.cpu().numpy()
    f_sel[(s_np <= config.sigma_min * 1.01) | (s_np >= config.sigma_max * 0.99)] |= SpectrumFlag.SIGMA_AT_BOUND
    f_sel[np.abs(v_star.cpu().numpy()) >= 1.5 * config.v_search - 1.0] |= SpectrumFlag.VELOCITY_AT_BOUND
    f_sel[worse.cpu().numpy()] |= SpectrumFlag.TEMPLATE_RES_WORSE
    f_sel[(coef_t <= 0).all(1).cpu().numpy()] |= SpectrumFlag.NO_CONTINUUM

    # ---------------- Stage 2: stars (fixed kinematics) + gas ----------------
    fit2 = base & ~clipped
    w2 = torch.where(fit2, wfull, torch.zeros_like(wfull))
    sw2 = w2.sqrt()
    yw2 = y * sw2
    cols_s, _ = stellar_columns(every, v_star, s_star, tpl_f)
    poly2 = _legendre(x, config.gas_degree)
    b_cols = torch.cat([cols_s, poly2], dim=-1)  # unweighted continuum columns
    b_w = b_cols * sw2[..., None]
    g00 = b_w.transpose(1, 2) @ b_w
    r0 = torch.einsum("bni,bn->bi", b_w, yw2)
    n0 = b_cols.shape[-1]
    nl, nc, ng = len(setup.ids), setup.n_comp, setup.n_group
    fit_gas = config.fit_gas and nl > 0

    if fit_gas:
        comp = torch.as_tensor(setup.comp, device=dev)
        ratio = t(setup.ratio)
        lgroup = torch.as_tensor(setup.group[setup.comp], device=dev)  # group of each line
        # Line centre in work pixels at the stellar velocity, and data around it.
        kl = (ln_rest[None, :] + v_star[:, None] / C_KMS - lt.ln0) / dln - frac_t[:, None]
        kl_i = kl.round().long().clamp(0, nt - 1)
        sig_line = torch.gather(sig_inst, 1, kl_i)
        half = (3.0 * torch.sqrt(config.gas_sigma_start**2 + sig_line**2) / vpix).clamp_min(1.5)
        near = (k[None, None, :] - kl[:, :, None]).abs() <= half[:, :, None]
        n_line_pix = (near & fit2[:, None, :]).sum(-1)
        in_range = (kl >= k_lo[:, None]) & (kl <= k_hi[:, None])
        line_on = in_range & (n_line_pix >= config.min_line_pixels)
        ratio_on = ratio[None, :] * line_on.to(_DT)  # (b, nL)
        onehot = torch.nn.functional.one_hot(comp, nc).to(_DT)  # (nL, nC)
        comp_on = (line_on.to(_DT) @ onehot) > 0
        # Flux density per unit line flux: pixel fraction / observed pixel width (A).
        dlam = torch.exp(u_centre + torch.log1p(t(z))[:, None]) * (2.0 * math.sinh(0.5 * dln))
        enabled_l = torch.cat([torch.ones(nb, n0, dtype=torch.bool, device=dev), comp_on], dim=1)
        comp_l = comp.view(1, nl, 1)
        grp_l = lgroup.view(1, nl, 1)

        def gas_columns(i: torch.Tensor, th: torch.Tensor, coef_c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
            """Unweighted line columns (b, nt, nC) at gas kinematics ``th`` (b, 2nG), and
            with component fluxes ``coef_c`` also d model / d theta (b, nt, 2nG).

            Profiles are evaluated only in a window around each line (a few tens of
            pixels) and scattered into the dense columns, so the cost does not grow
            with the length of the spectrum.
            """
            vg, sg = th[:, 0::2], th[:, 1::2]
            v_l, s_l = vg[:, lgroup], sg[:, lgroup]  # (b, nL)
            width = torch.sqrt(s_l**2 + sig_line[i] ** 2) / C_KMS
            centre = ln_rest[None, :] + v_l / C_KMS
            hw = min(int(math.ceil(float(6.0 * width.max()) / dln)) + 2, nt)
            kc = ((centre - lt.ln0) / dln - frac_t[i, None]).round().long()
            pix = kc[..., None] + torch.arange(-hw, hw + 1, device=dev)
            valid = (pix >= 0) & (pix < nt)
            pix = pix.clamp(0, nt - 1)
            b_, w_ = len(i), pix.shape[-1]
            flat = pix.view(b_, -1)
            uc = torch.gather(u_centre[i], 1, flat).view(b_, nl, w_)
            per = ratio_on[i][..., None] / torch.gather(dlam[i], 1, flat).view(b_, nl, w_) * valid
            prof = line_profiles(uc - 0.5 * dln, uc + 0.5 * dln, centre[..., None], width[..., None], derivatives=coef_c is not None)
            lcols = torch.zeros(b_, nt * nc, dtype=_DT, device=dev)
            lcols.scatter_add_(1, (pix * nc + comp_l).view(b_, -1), (prof[0] * per).view(b_, -1))
            if coef_c is None:
                return lcols.view(b_, nt, nc), None
            amp = coef_c[:, comp][..., None] * per
            jac = torch.zeros(b_, nt * 2 * ng, dtype=_DT, device=dev)
            jac.scatter_add_(1, (pix * 2 * ng + 2 * grp_l).view(b_, -1), (amp * prof[1] / C_KMS).view(b_, -1))
            dsig = (s_l / (C_KMS**2 * width))[..., None]
            jac.scatter_add_(1, (pix * 2 * ng + 2 * grp_l + 1).view(b_, -1), (amp * prof[2] * dsig).view(b_, -1))
            return lcols.view(b_, nt, nc), jac.view(b_, nt, 2 * ng)

        def make_eval_gas(base_w: torch.Tensor, g00_: torch.Tensor, r0_: torch.Tensor, nonneg_base: torch.Tensor) -> EvalFn:
            """Evaluation of continuum block ``base_w`` (weighted) + lines at gas kinematics."""
            nbase = base_w.shape[-1]
            nonneg = torch.cat([nonneg_base, torch.ones(nc, dtype=torch.bool, device=dev)])
            enabled = torch.cat([torch.ones(nb, nbase, dtype=torch.bool, device=dev), comp_on], dim=1)

            def evaluate(i: torch.Tensor, th: torch.Tensor, passive0: torch.Tensor | None) -> Evaluation:
                lcols, _ = gas_columns(i, th, None)
                swi = sw2[i]
                l_w = lcols * swi[..., None]
                bw = base_w[i]
                g01 = bw.transpose(1, 2) @ l_w
                g11 = l_w.transpose(1, 2) @ l_w
                ywi = yw2[i]
                rhs = torch.cat([r0_[i], torch.einsum("bni,bn->bi", l_w, ywi)], 1)
                g = torch.cat([torch.cat([g00_[i], g01], 2), torch.cat([g01.transpose(1, 2), g11], 2)], 1)
                coef, passive, _ = nnls_gram(g, rhs, nonneg, enabled[i], passive0)
                _, jac = gas_columns(i, th, coef[:, nbase:])
                assert jac is not None
                return evaluation_from(torch.cat([bw, l_w], dim=-1), ywi, g, rhs, coef, passive, jac * swi[..., None])

            return evaluate

        nonneg_b = torch.arange(n0, device=dev) < ntpl
        eval_gas = make_eval_gas(b_w, g00, r0, nonneg_b)
        # Coarse grid on a common gas velocity offset from the stars, with the stellar
        # continuum frozen to its stage-1 shape (one column): cheap, and enough to find
        # the basin of the line kinematics.
        star1 = torch.einsum("bni,bi->bn", cols_s, coef_t)[..., None]
        grid_w = torch.cat([star1, poly2], dim=-1) * sw2[..., None]
        eval_grid = make_eval_gas(
            grid_w, grid_w.transpose(1, 2) @ grid_w, torch.einsum("bni,bn->bi", grid_w, yw2),
            torch.arange(grid_w.shape[-1], device=dev) < 1,
        )  # fmt: skip
        th_g = torch.zeros(nb, 2 * ng, dtype=_DT, device=dev)
        best_g = torch.full((nb,), float("inf"), dtype=_DT, device=dev)
        for dv in np.arange(-config.gas_v_search, config.gas_v_search + 0.5 * config.gas_v_step, config.gas_v_step):
            trial = torch.zeros_like(th_g)
            trial[:, 0::2] = v_star[:, None] + float(dv)
            trial[:, 1::2] = config.gas_sigma_start
            ev = eval_grid(every, trial, None)
            better = ev.chi2 < best_g
            best_g = torch.where(better, ev.chi2, best_g)
            th_g[better] = trial[better]
        lo2 = torch.zeros_like(th_g)
        hi2 = torch.zeros_like(th_g)
        lo2[:, 0::2] = v_star[:, None] - config.gas_v_search - 300.0
        hi2[:, 0::2] = v_star[:, None] + config.gas_v_search + 300.0
        lo2[:, 1::2] = config.sigma_min
        hi2[:, 1::2] = config.gas_sigma_max
        th_g, ev2, _ = levenberg_marquardt(eval_gas, th_g, lo2, hi2, config.max_iter, config.tol)
        n_lin = ev2.passive.sum(1)
    else:
        coef0, passive0, _ = nnls_gram(g00, r0, torch.arange(n0, device=dev) < ntpl)
        ev2 = evaluation_from(b_w, yw2, g00, r0, coef0, passive0, b_w[..., :0])
        n_lin = passive0.sum(1)
    n_fit2 = (w2 > 0).sum(1)
    n_nonlin = 2 * ng if fit_gas else 0
    dof2 = (n_fit2 - n_lin - n_nonlin).clamp_min(1).to(_DT)
    chi2_dof2 = ev2.chi2 / dof2
    cont = torch.einsum("bni,bi->bn", b_cols, ev2.coef[:, :n0])
    stars_only = torch.einsum("bni,bi->bn", cols_s, ev2.coef[:, :ntpl])

    # --- Collect the per-spectrum results. ---
    finite = torch.isfinite(theta).all(1) & torch.isfinite(ev1.chi2) & torch.isfinite(ev2.chi2)
    fin = finite.cpu().numpy()
    f_sel[~fin] |= SpectrumFlag.FIT_FAILED

    def put(name: str, values: torch.Tensor, fill: float = np.nan) -> None:
        arr = out.setdefault(name, np.full((len(idx),) + tuple(values.shape[1:]), fill))
        v = values.detach().cpu().numpy()
        v = np.where(fin.reshape((-1,) + (1,) * (v.ndim - 1)), v, fill)
        arr[sel_np] = v

    put("velocity", v_star)
    put("velocity_err", cov1[:, 0, 0].sqrt())
    put("sigma", s_star)
    put("sigma_err", cov1[:, 1, 1].sqrt())
    put("z", (1.0 + t(z)) * torch.exp(v_star / C_KMS) - 1.0)
    put("chi2_dof", chi2_dof2)
    put("stellar_chi2_dof", chi2_dof1)
    put("snr", snr)
    out["n_pixels"] = np.zeros(len(idx), dtype=np.int64)
    out["n_pixels"][sel_np] = n_fit2.cpu().numpy()
    flags[sel_np] |= f_sel
    wave_obs = torch.exp(u_centre + torch.log1p(t(z))[:, None])
    put("model_wave", wave_obs)
    model = cont
    if fit_gas:
        model = cont + torch.einsum("bni,bi->bn", gas_columns(every, th_g, None)[0], ev2.coef[:, n0:])
    put("model_flux", model * scale[:, None])
    put("model_stars", stars_only * scale[:, None])
    fm = np.zeros((len(idx), nt), dtype=bool)
    fm[sel_np] = fit2.cpu().numpy()
    out["model_fitmask"] = fm

    if fit_gas:
        lflags = np.zeros((nb, nl), dtype=np.int64)
        cov_g = theta_covariance(ev2, chi2_dof2)  # (b, 2nG, 2nG)
        vg, sg = th_g[:, 0::2], th_g[:, 1::2]
        var_g = torch.diagonal(cov_g, dim1=-2, dim2=-1)
        verr_g, serr_g = var_g[:, 0::2].sqrt(), var_g[:, 1::2].sqrt()
        # Flux errors with every enabled line treated as free, so a line at zero flux
        # still gets the error (upper-limit scale) its data support.
        err_set = ev2.passive | enabled_l & (torch.arange(n0 + nc, device=dev) >= n0)
        # Marginalise over the gas kinematics too (block inverse of the full Fisher
        # matrix): the flux of a strong line is correlated with its fitted width.
        ginv = masked_inverse(ev2.gram, err_set)
        gc = ginv @ ev2.cross
        schur = ev2.jtj - ev2.cross.transpose(1, 2) @ gc
        sd = torch.diagonal(schur, dim1=-2, dim2=-1)
        hinv = masked_inverse(schur, sd > 1e-12 * sd.amax(-1, keepdim=True).clamp_min(1e-300))
        cov_lin = (ginv + gc @ hinv @ gc.transpose(1, 2)) * chi2_dof2[:, None, None]
        cerr = torch.diagonal(cov_lin, dim1=-2, dim2=-1)[:, n0:].clamp_min(0).sqrt()
        cflux = ev2.coef[:, n0:]
        flux_l = cflux[:, comp] * ratio[None, :] * scale[:, None]
        ferr_l = cerr[:, comp] * ratio[None, :] * scale[:, None]
        grp_has_flux = (cflux > 0).to(_DT) @ torch.nn.functional.one_hot(t(setup.group, torch.long), ng).to(_DT) > 0
        has_flux_l = grp_has_flux[:, lgroup]
        c_at = torch.gather(cont, 1, kl_i) * scale[:, None]
        v_l, s_l = vg[:, lgroup], sg[:, lgroup]
        z_l = (1.0 + t(z))[:, None] * torch.exp(v_l / C_KMS) - 1.0
        ew = flux_l / c_at / (1.0 + z_l)
        on = line_on.cpu().numpy()
        lflags[~in_range.cpu().numpy()] |= LineFlag.NOT_IN_RANGE
        lflags[in_range.cpu().numpy() & ~on] |= LineFlag.NO_GOOD_PIXELS
        lflags[on & (flux_l <= 0).cpu().numpy()] |= LineFlag.ZERO_FLUX
        lflags[:, setup.tied] |= LineFlag.TIED_FLUX
        s_np_l = s_l.cpu().numpy()
        lflags[(s_np_l <= config.sigma_min * 1.01) | (s_np_l >= config.gas_sigma_max * 0.99)] |= LineFlag.SIGMA_AT_BOUND
        nokin = ~has_flux_l.cpu().numpy()
        lflags[nokin] |= LineFlag.KINEMATICS_UNCONSTRAINED
        nocont = (c_at <= 0).cpu().numpy()
        lflags[on & nocont] |= LineFlag.NO_CONTINUUM
        lflags[~fin] |= LineFlag.SPECTRUM_FAILED

        def put_line(name: str, values: torch.Tensor, kin: bool = False, extra_nan: np.ndarray | None = None) -> None:
            v = values.detach().cpu().numpy().copy()
            bad = ~on | ~fin[:, None]
            if kin:
                bad |= nokin
            if extra_nan is not None:
                bad |= extra_nan
            v[bad] = np.nan
            arr = out.setdefault(name, np.full((len(idx), nl), np.nan))
            arr[sel_np] = v

        put_line("line_velocity", v_l - v_star[:, None], kin=True)
        put_line("line_velocity_err", verr_g[:, lgroup], kin=True)
        put_line("line_sigma", s_l, kin=True)
        put_line("line_sigma_err", serr_g[:, lgroup], kin=True)
        put_line("line_z", z_l, kin=True)
        put_line("line_flux", flux_l)
        put_line("line_flux_err", ferr_l)
        put_line("line_ew", ew, extra_nan=nocont)
        put_line("line_snr", flux_l / ferr_l)
        lf = np.zeros((len(idx), nl), dtype=np.int64)
        lf[sel_np] = lflags
        out["line_flags"] = lf
    return out

