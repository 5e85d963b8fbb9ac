"""Stellar stage: kinematics of the stellar continuum with the emission-line windows masked.

The model is a non-negative template mix convolved with a Gaussian LOSVD, times a
multiplicative Legendre polynomial P(x) = 1 + sum_j c_j L_j(x) (``FitConfig.mdegree``,
0 = none), plus an additive Legendre polynomial (``FitConfig.degree``, -1 = none). A
coarse (V, sigma) grid with a few eigen-templates and an additive polynomial finds the
basin (:mod:`.grid`), Levenberg-Marquardt by variable projection converges, outliers are
clipped and the fit repeated. The c_j are nonlinear parameters of the optimiser next to
(V, sigma): the template weights stay a non-negative linear solve at every trial, and
P_0 needs no coefficient because the weights carry the mix's scale. The optimiser works
on the templates in use; the others are tested against KKT at every optimum and join a
subset that fails it (:mod:`.library`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .chunk import DT, ChunkState, legendre
from .grid import coarse_grid
from .kernels import losvd_fourier
from .library import KKT_ROUNDS, fourier_entering, on_library, to_subset
from .nnls import nnls_gram
from .optim import EvalFn, Evaluation, levenberg_marquardt, theta_covariance
from .types import SpectrumFlag

__all__ = ["StellarFit", "fit_stars", "mpoly_basis", "mpoly_factor", "template_columns"]


@dataclass(slots=True)
class StellarFit:
    """What the stellar stage leaves on the chunk (``ChunkState.stars``)."""

    theta: torch.Tensor  # (b, 2 + M) stellar (V, sigma), km/s, then the mpoly coefficients
    ev: Evaluation  # at theta, on the template subset ``sub``
    conv: torch.Tensor  # (b,) bool: the optimiser converged
    cov: torch.Tensor  # (b, 2 + M, 2 + M) covariance of theta, scaled by the reduced chi^2
    chi2_dof: torch.Tensor  # (b,)
    sub: torch.Tensor  # (b, m) template subset of ``ev`` (then ``ev``'s polynomial columns)
    poly: torch.Tensor  # (b, nt, P) the stage's additive Legendre polynomial columns
    mfactor: torch.Tensor  # (b, nt) the multiplicative polynomial P(x) at the optimum (1: none)
    coef_t: torch.Tensor  # (b, K) template weights on the whole library
    passive_t: torch.Tensor  # (b, K) bool: templates in use
    clipped: torch.Tensor  # (b, nt) bool: pixels clipped as outliers
    flags: np.ndarray  # (b,) SpectrumFlag bits of the stage

    @property
    def v_star(self) -> torch.Tensor:
        return self.theta[:, 0]

    @property
    def s_star(self) -> torch.Tensor:
        return self.theta[:, 1]


@dataclass(slots=True)
class _Work:
    """The stellar fit under way: weights change as pixels are clipped."""

    st: ChunkState
    poly: torch.Tensor  # (b, nt, P)
    mpoly: torch.Tensor  # (b, nt, M) L_1..L_M of the multiplicative polynomial
    w: torch.Tensor  # (b, nt) weights of the fitted pixels (0 where masked or clipped)
    lo: torch.Tensor  # (b, 2 + M) bounds of (V, sigma) and the mpoly coefficients (none)
    hi: torch.Tensor
    col_norm: torch.Tensor | None = None  # (b, K) weighted template column norms


def template_columns(st: ChunkState, i: torch.Tensor, v: torch.Tensor, s: torch.Tensor, fourier: torch.Tensor) -> torch.Tensor:
    """(b, nt, K) template columns (rfft ``fourier``) of the spectra ``i`` at (V, sigma) km/s."""
    h = losvd_fourier(st.nfft, v / st.vpix - st.frac_t[i], s / st.vpix)[0]
    return torch.fft.irfft(fourier[i] * h[:, None, :], n=st.nfft, dim=-1)[..., : st.nt].transpose(1, 2)


def mpoly_basis(st: ChunkState, mdegree: int) -> torch.Tensor:
    """(b, nt, M) Legendre L_1..L_M of the multiplicative polynomial. Outside the fitted
    range x is held at its end value, so P(x) continues flat into the unfitted pixels
    (where the model is only drawn, never fitted) instead of diverging."""
    return legendre(st.x.clamp(-1.0, 1.0), mdegree)[..., 1:]


def mpoly_factor(mpoly: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """P(x) = 1 + sum_j c_j L_j(x), (b, nt), from the basis (b, nt, M) and c (b, M)."""
    return 1.0 + (mpoly @ coef.unsqueeze(-1)).squeeze(-1)


def _make_eval(wk: _Work, sub: torch.Tensor, sub_on: torch.Tensor, library: torch.Tensor | None = None) -> EvalFn:
    """Evaluation with only the templates ``sub`` (b, m) (where ``sub_on``) as columns.

    The NNLS at every trial kinematics is exact on this subset; templates left out
    are checked against the KKT conditions (``_kkt``), so the subset only saves work,
    never changes the answer. With ``library`` (rfft, (b, E, nf)) the columns come from
    it instead, with free signs (the eigen-templates). Uses the current weights ``wk.w``.
    """
    st = wk.st
    dev, nb, nt, nfft, vpix = st.dev, st.nb, st.nt, st.nfft, st.vpix
    npoly1 = wk.poly.shape[-1]
    nm = wk.mpoly.shape[-1]  # multiplicative coefficients, theta[:, 2:]
    lib_f = st.tpl_f if library is None else library
    m = sub.shape[1]
    nonneg = torch.cat([torch.full((m,), library is None, dtype=torch.bool, device=dev), torch.zeros(npoly1, dtype=torch.bool, device=dev)])
    enabled = torch.cat([sub_on, torch.ones(nb, npoly1, dtype=torch.bool, device=dev)], dim=1)
    n = m + npoly1
    # The polynomial columns and the data do not depend on the kinematics: their
    # weighted products are formed once per set of weights, not at every trial.
    sw = wk.w.sqrt()
    fixed = torch.cat([wk.poly, st.y[..., None]], dim=-1) * sw[..., None]  # (b, nt, P+1)
    g_pp = fixed[..., :npoly1].transpose(1, 2) @ fixed

    whole = lib_f[st.every[:, None], sub]  # (b, m, nf): the columns' transforms, gathered once

    def evaluate(i: torch.Tensor, th: torch.Tensor, passive0: torch.Tensor | None) -> Evaluation:
        hs = losvd_fourier(nfft, th[:, 0] / vpix - st.frac_t[i], th[:, 1] / vpix, derivatives=True)
        f_sub = whole if len(i) == nb else whole[i]
        # Weighted template columns, one row per template (b, m, nt): the layout the
        # inverse FFT gives, so no transposed copy of the design is ever made; the
        # polynomial and data columns (b, nt, P+1) are fixed.
        sw_i = sw[i]
        cw0 = torch.fft.irfft(f_sub * hs[0][:, None, :], n=nfft, dim=-1)[..., :nt]
        if nm:
            # P(x) multiplies every template column, so it enters like a weight.
            pfac = mpoly_factor(wk.mpoly[i], th[:, 2:])
            cw = cw0 * (sw_i * pfac)[:, None, :]
        else:
            cw = cw0 * sw_i[:, None, :]
        fx = fixed[i]
        g_tf = cw @ fx  # (b, m, P+1): template x polynomial, and the right-hand side
        g = torch.empty(len(i), n, n, dtype=DT, device=dev)
        g[:, :m, :m] = cw @ cw.transpose(1, 2)
        g[:, :m, m:] = g_tf[..., :npoly1]
        g[:, m:, :m] = g_tf[..., :npoly1].transpose(1, 2)
        g[:, m:, m:] = g_pp[i, :, :npoly1]
        rhs = torch.cat([g_tf[..., npoly1], g_pp[i, :, npoly1]], dim=1)
        coef, passive, _ = nnls_gram(g, rhs, nonneg, enabled[i], passive0)
        # Derivatives of the model at fixed weights: one inverse FFT each for V, sigma.
        mix = torch.einsum("bkf,bk->bf", f_sub, coef[:, :m].to(f_sub.dtype))
        d = torch.fft.irfft(torch.stack([mix * hs[1], mix * hs[2]], dim=1), n=nfft, dim=-1)
        if nm:
            # d model / d c_j = L_j(x) * (template mix at these kinematics).
            mix_pix = (coef[:, None, :m].to(cw0.dtype) @ cw0).squeeze(1)  # (b, nt)
            jac = torch.cat([d[..., :nt].transpose(1, 2) * (sw_i * pfac)[..., None] / vpix, wk.mpoly[i] * (mix_pix * sw_i)[..., None]], dim=-1)
        else:
            jac = d[..., :nt].transpose(1, 2) * (sw_i[..., None] / vpix)  # (b, nt, 2)
        resid = fx[..., npoly1] - (coef[:, None, :m] @ cw).squeeze(1) - (fx[..., :npoly1] @ coef[:, m:, None]).squeeze(-1)
        return Evaluation(
            chi2=(resid * resid).sum(1), coef=coef, passive=passive, resid=resid, gram=g,
            atr=rhs - torch.einsum("bij,bj->bi", g, coef),
            cross=torch.cat([cw @ jac, fx[..., :npoly1].transpose(1, 2) @ jac], dim=1),
            jtj=jac.transpose(1, 2) @ jac, jtr=(jac * resid[..., None]).sum(1),
        )  # fmt: skip

    return evaluate


def _kkt(wk: _Work, th: torch.Tensor, ev: Evaluation, in_sub: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """(b, K) templates outside the subset whose gradient says they would enter the
    full NNLS at ``th`` (computed in Fourier space, :func:`.library.fourier_entering`)."""
    st = wk.st
    h = losvd_fourier(st.nfft, th[:, 0] / st.vpix - st.frac_t, th[:, 1] / st.vpix)[0]
    scale = (wk.w * st.y * st.y).sum(1).sqrt()
    q = wk.w.sqrt() * ev.resid
    if wk.mpoly.shape[-1]:
        q = q * mpoly_factor(wk.mpoly, th[:, 2:])  # the template columns carry P(x)
    return fourier_entering(st.tpl_f, h, q, st.nfft, in_sub, scale, norm)


#: Alternations (P at a fixed template mix, then the mix at P) that start the
#: multiplicative polynomial: one settles the subset on mismatched spectra; more gained
#: nothing (0-3 rounds: the same fits, 8.5-9.5 spectra/s, docs/lines_validation.md).
_MPOLY_START_ROUNDS = 1


def _mpoly_start(wk: _Work, theta: torch.Tensor, ev: Evaluation) -> torch.Tensor:
    """``theta`` with the multiplicative coefficients refitted, linearly, to the template
    mix of ``ev`` (an evaluation on the whole library) held fixed: the data are fitted
    by s * mix * (1 + sum_j c_j L_j) plus the additive polynomial."""
    st, ntpl = wk.st, wk.st.ntpl
    sw = wk.w.sqrt()
    padd = wk.poly * sw[..., None]
    yw = st.y * sw
    stars_w = yw - ev.resid - (padd @ ev.coef[:, ntpl:, None]).squeeze(-1)  # P * mix, weighted
    mix_w = stars_w / mpoly_factor(wk.mpoly, theta[:, 2:]).clamp_min(1e-3)
    design = torch.cat([mix_w[..., None], mix_w[..., None] * wk.mpoly, padd], dim=-1)
    g = design.transpose(1, 2) @ design
    g = g + 1e-12 * torch.diag_embed(torch.diagonal(g, dim1=-2, dim2=-1).clamp_min(1e-300))
    coef, info = torch.linalg.solve_ex(g, (design * yw[..., None]).sum(1))
    nm = wk.mpoly.shape[-1]
    c = coef[:, 1 : 1 + nm] / coef[:, :1]
    ok = (info == 0) & torch.isfinite(c).all(1) & (coef[:, 0] > 0)
    out = theta.clone()
    out[:, 2:] = torch.where(ok[:, None], c, theta[:, 2:])
    return out


def _subset_passive(wk: _Work, sub: torch.Tensor, sub_on: torch.Tensor, full_passive: torch.Tensor) -> torch.Tensor:
    """Warm start of the NNLS on ``sub``: its templates passive in ``full_passive`` (b, K),
    and the polynomial."""
    p = torch.gather(full_passive, 1, sub) & sub_on
    return torch.cat([p, torch.ones(wk.st.nb, wk.poly.shape[-1], dtype=torch.bool, device=wk.st.dev)], dim=1)


def _optimise(wk: _Work, evaluate: EvalFn, theta: torch.Tensor, ev: Evaluation) -> tuple[torch.Tensor, Evaluation, torch.Tensor]:
    """Levenberg-Marquardt from ``theta``, where ``evaluate`` gave ``ev``."""
    cfg = wk.st.config
    return levenberg_marquardt(evaluate, theta, wk.lo, wk.hi, cfg.max_iter, cfg.tol, start=ev)


def _settle_kkt(
    wk: _Work, theta: torch.Tensor, ev: Evaluation, conv: torch.Tensor, sub: torch.Tensor, sub_on: torch.Tensor
) -> tuple[torch.Tensor, Evaluation, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Widen the subset until no left-out template violates KKT at the optimum.

    After a widening the NNLS is re-solved at the same kinematics and the optimiser
    resumes from there; where the wider set does not move the optimum it stops at
    once (its quadratic model promises nothing), so only spectra that gained pay.
    """
    ntpl = wk.st.ntpl
    assert wk.col_norm is not None
    for rnd in range(2 * KKT_ROUNDS + 1):
        passive_full = on_library(sub, sub_on, ev.passive[:, : sub.shape[1]], ntpl)
        enter = _kkt(wk, theta, ev, on_library(sub, sub_on, sub_on, ntpl), wk.col_norm)
        if not bool(enter.any()):
            break
        # Next subset: the templates in use plus those that want in (the whole
        # library if widening has not settled it, which is not expected).
        last = rnd >= 2 * KKT_ROUNDS
        sub, sub_on = to_subset(torch.ones_like(enter) if last else passive_full | enter)
        evaluate = _make_eval(wk, sub, sub_on)
        ev = evaluate(wk.st.every, theta, _subset_passive(wk, sub, sub_on, passive_full))
        theta, ev, conv_new = _optimise(wk, evaluate, theta, ev)
        conv = conv & conv_new
    return theta, ev, conv, sub, sub_on


def fit_stars(st: ChunkState) -> None:
    """Stellar stage. Reads the work frame of ``st`` (``y``, ``wfull``, ``fit1``, ``x``,
    the matched templates ``tpl_f``/``eig_f``, ``config``) and writes ``st.stars``
    (:class:`StellarFit`): kinematics, their covariance, template weights, clipped pixels
    and the stage's flags."""
    config, dev, nb, ntpl = st.config, st.dev, st.nb, st.ntpl
    every = st.every
    poly1 = legendre(st.x, config.degree)
    npoly1 = poly1.shape[-1]
    mpoly = mpoly_basis(st, config.mdegree)
    nm = mpoly.shape[-1]
    # The coarse grid and the eigen-template start are additive only (linear, cheap); a
    # multiplicative polynomial stands in as an additive one of its degree, which is
    # enough to place the basin in (V, sigma).
    poly0 = poly1 if config.degree >= 0 or nm == 0 else legendre(st.x, nm)
    v_step = config.v_step or st.vpix
    v_grid = np.arange(-config.v_search, config.v_search + 0.5 * v_step, v_step)
    w1 = torch.where(st.fit1, st.wfull, torch.zeros_like(st.wfull))
    theta = coarse_grid(st.eig_f, st.frac_t, st.y, w1, poly0, v_grid, config.sigma_grid, st.vpix, st.nt, st.nfft)
    lo0 = torch.tensor([-1.5 * config.v_search, config.sigma_min], dtype=DT, device=dev).expand(nb, 2)
    hi0 = torch.tensor([1.5 * config.v_search, config.sigma_max], dtype=DT, device=dev).expand(nb, 2)
    inf = torch.full((nb, nm), float("inf"), dtype=DT, device=dev)
    lo1, hi1 = torch.cat([lo0, -inf], 1), torch.cat([hi0, inf], 1)
    wk0 = _Work(st, poly0, mpoly[..., :0], w1, lo0, hi0)

    # The eigen-templates (free signs) first carry the kinematics from the grid point
    # to near the optimum, cheaply; there one exact NNLS on the full library picks the
    # templates that matter, and the optimiser then works on those (typically a
    # handful of 63), so the subset rarely has to grow.
    ne = st.eig_f.shape[1]
    theta, _, _ = levenberg_marquardt(
        _make_eval(wk0, torch.arange(ne, device=dev).expand(nb, ne), torch.ones(nb, ne, dtype=torch.bool, device=dev), st.eig_f),
        theta, lo0, hi0, config.max_iter, config.tol,
    )  # fmt: skip
    theta = torch.cat([theta, torch.zeros(nb, nm, dtype=DT, device=dev)], 1)  # P(x) = 1 to start
    wk = _Work(st, poly1, mpoly, w1, lo1, hi1)
    all_sub = torch.arange(ntpl, device=dev).expand(nb, ntpl)
    every_tpl = torch.ones(nb, ntpl + npoly1, dtype=torch.bool, device=dev)  # warm start: all, negatives dropped
    eval_all = _make_eval(wk, all_sub, every_tpl[:, :ntpl])
    ev0 = eval_all(every, theta, every_tpl)
    for _ in range(_MPOLY_START_ROUNDS if nm else 0):
        # With P(x) = 1 the full NNLS bends the continuum with many templates; a start
        # P fitted to that mix lets it pick the few that matter (measured on 16
        # synthetic spectra: the optimiser's subset fell from ~37 to ~21 of 78).
        theta = _mpoly_start(wk, theta, ev0)
        ev0 = eval_all(every, theta, every_tpl)
    wk.col_norm = torch.diagonal(ev0.gram, dim1=-2, dim2=-1)[:, :ntpl].clamp_min(0).sqrt()
    members = ev0.passive[:, :ntpl]
    passive_full = members.clone()

    # The optimiser works on the templates the full NNLS uses at the start; every
    # left-out template is tested at each optimum (before pixels are clipped on its
    # residuals, and at the end), and the subset widened only where one fails.
    sub1, sub1_on = to_subset(members)
    eval1 = _make_eval(wk, sub1, sub1_on)
    ev1 = eval1(every, theta, _subset_passive(wk, sub1, sub1_on, passive_full))
    theta, ev1, conv1 = _optimise(wk, eval1, theta, ev1)
    theta, ev1, conv1, sub1, sub1_on = _settle_kkt(wk, theta, ev1, conv1, sub1, sub1_on)
    clipped = torch.zeros_like(st.fit1)
    for _ in range(config.clip_iterations):
        r = ev1.resid
        n_in = (wk.w > 0).sum(1).clamp_min(1)
        rms = ((r * r).sum(1) / n_in).sqrt()
        new = (wk.w > 0) & (r.abs() > config.clip_sigma * rms[:, None])
        if not bool(new.any()):
            break
        clipped |= new
        wk.w = torch.where(new, torch.zeros_like(wk.w), wk.w)
        eval1 = _make_eval(wk, sub1, sub1_on)  # the new weights
        ev1 = eval1(every, theta, ev1.passive)
        theta, ev1, conv1 = _optimise(wk, eval1, theta, ev1)
        theta, ev1, conv1, sub1, sub1_on = _settle_kkt(wk, theta, ev1, conv1, sub1, sub1_on)
    n_fit1 = (wk.w > 0).sum(1)
    dof1 = (n_fit1 - ev1.passive.sum(1) - theta.shape[1]).clamp_min(1).to(DT)
    chi2_dof1 = ev1.chi2 / dof1
    # Errors are scaled by the reduced chi^2, except that a resampled spectrum's is not
    # allowed below 1: there chi^2/dof ~ 2/3 comes from the noise correlation the rebin
    # introduces (neighbouring pixels share old pixels), not from overestimated noise,
    # and scaling by it made the errors of MUSE spaxels ~20 % too small.
    cov1 = theta_covariance(ev1, torch.where(st.floor_one, chi2_dof1.clamp_min(1.0), chi2_dof1))
    v_star, s_star = theta[:, 0], theta[:, 1]
    m1 = sub1.shape[1]
    coef_t = on_library(sub1, sub1_on, ev1.coef[:, :m1], ntpl)  # (b, K) template weights
    passive_t = on_library(sub1, sub1_on, ev1.passive[:, :m1], ntpl)

    f_sel = np.zeros(nb, dtype=np.int64)
    f_sel[~conv1.cpu().numpy()] |= SpectrumFlag.NOT_CONVERGED
    s_np = s_star.cpu().numpy()
    f_sel[(s_np <= config.sigma_min * 1.01) | (s_np >= config.sigma_max * 0.99)] |= SpectrumFlag.SIGMA_AT_BOUND
    f_sel[np.abs(v_star.cpu().numpy()) >= 1.5 * config.v_search - 1.0] |= SpectrumFlag.VELOCITY_AT_BOUND
    f_sel[st.worse.cpu().numpy()] |= SpectrumFlag.TEMPLATE_RES_WORSE
    f_sel[(coef_t <= 0).all(1).cpu().numpy()] |= SpectrumFlag.NO_CONTINUUM
    st.stars = StellarFit(
        theta=theta, ev=ev1, conv=conv1, cov=cov1, chi2_dof=chi2_dof1, sub=sub1, poly=poly1,
        mfactor=mpoly_factor(mpoly, theta[:, 2:]), coef_t=coef_t,
        passive_t=passive_t, clipped=clipped, flags=f_sel,
    )  # fmt: skip
