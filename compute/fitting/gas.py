"""Gas stage: stars at fixed kinematics plus tied Gaussian emission lines.

The stellar kinematics are kept; the template weights are refitted together with the
emission lines (non-negative fluxes, doublets at fixed ratios) and a polynomial, and one
(V, sigma) per gas group is optimised, with every line product summed over the line
windows only (:mod:`.linemodel`). Templates enter through the same KKT test as in the
stellar stage (:mod:`.library`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .chunk import DT, ChunkState, legendre
from .library import KKT_ROUNDS, entering, on_library, to_subset
from .linemodel import GasLines, gas_lines, line_model, line_windows, window_overlaps
from .nnls import nnls_gram
from .optim import EvalFn, Evaluation, evaluation_from, levenberg_marquardt
from .stellar import mpoly_basis, template_columns

__all__ = ["Continuum", "GasFit", "fit_gas"]


@dataclass(frozen=True, slots=True)
class Continuum:
    """Continuum block of the gas-stage design: template subset + polynomial columns."""

    sub: torch.Tensor  # (b, m) template indices
    sub_on: torch.Tensor  # (b, m) bool: real (not padding) entries of ``sub``
    cols: torch.Tensor  # (b, nt, m + P) unweighted columns
    w: torch.Tensor  # (b, nt, m + P) weighted columns
    gram: torch.Tensor  # (b, m + P, m + P)
    rhs: torch.Tensor  # (b, m + P)
    nonneg: torch.Tensor  # (m + P,) bool
    enabled: torch.Tensor  # (b, m + P) bool


@dataclass(slots=True)
class GasFit:
    """What the gas stage leaves on the chunk (``ChunkState.gas``)."""

    fit2: torch.Tensor  # (b, nt) bool: pixels of the stage (fitted range, none clipped)
    cont: Continuum  # the final continuum block; ``ev``'s first columns
    ev: Evaluation  # at the final kinematics: continuum coefficients, then line components
    theta: torch.Tensor | None  # (b, 2nG) gas (V, sigma) per group; None: no lines fitted
    lines: GasLines | None  # None: no lines fitted
    n_fit: torch.Tensor  # (b,) pixels in the fit
    chi2_dof: torch.Tensor  # (b,) reduced chi^2 of the stage
    cont_model: torch.Tensor  # (b, nt) continuum (stars + polynomial), scaled units
    stars_only: torch.Tensor  # (b, nt) stars alone, scaled units


@dataclass(frozen=True, slots=True)
class _Work:
    """The stage's fixed inputs: stellar columns at the stellar kinematics and weights."""

    st: ChunkState
    cols_all: torch.Tensor  # (b, nt, K) every template at the stellar (V, sigma)
    poly: torch.Tensor  # (b, nt, P)
    sw: torch.Tensor  # (b, nt) sqrt of the weights
    yw: torch.Tensor  # (b, nt) weighted data
    norm: torch.Tensor  # (b, K) weighted template column norms
    scale: torch.Tensor  # (b,) weighted data norm


def _continuum(wk: _Work, members: torch.Tensor) -> Continuum:
    """Continuum block: the templates ``members`` (b, K) and the polynomial."""
    st = wk.st
    npoly2 = wk.poly.shape[-1]
    sub, sub_on = to_subset(members)
    cs = torch.gather(wk.cols_all, 2, sub[:, None, :].expand(-1, st.nt, -1))
    cols = torch.cat([cs, wk.poly], dim=-1)
    cw = cols * wk.sw[..., None]
    ext = cw.transpose(1, 2) @ torch.cat([cw, wk.yw[..., None]], dim=-1)
    m = sub.shape[1]
    nonneg = torch.arange(m + npoly2, device=st.dev) < m
    enabled = torch.cat([sub_on, torch.ones(st.nb, npoly2, dtype=torch.bool, device=st.dev)], dim=1)
    return Continuum(sub, sub_on, cols, cw, ext[..., :-1], ext[..., -1], nonneg, enabled)


def _continuum_passive(wk: _Work, c: Continuum, full_passive: torch.Tensor) -> torch.Tensor:
    """Warm start of the NNLS on ``c``: its templates passive in ``full_passive`` (b, K),
    and the polynomial."""
    p = torch.gather(full_passive, 1, c.sub) & c.sub_on
    return torch.cat([p, torch.ones(wk.st.nb, wk.poly.shape[-1], dtype=torch.bool, device=wk.st.dev)], dim=1)


def _continuum_kkt(wk: _Work, c: Continuum, ev: Evaluation) -> tuple[torch.Tensor, torch.Tensor]:
    """Passive templates (b, K) of ``ev`` and the left-out ones that violate KKT."""
    ntpl = wk.st.ntpl
    m = c.sub.shape[1]
    passive_full = on_library(c.sub, c.sub_on, ev.passive[:, :m], ntpl)
    grad = torch.einsum("bnk,bn->bk", wk.cols_all, wk.sw * ev.resid)
    enter = entering(grad, on_library(c.sub, c.sub_on, c.sub_on, ntpl), wk.scale, wk.norm)
    return passive_full, enter


def _make_eval(wk: _Work, gl: GasLines, c: Continuum) -> EvalFn:
    """Evaluation of the continuum block ``c`` + lines at gas kinematics.

    Every product that involves a line column is a sum over the line windows
    only (then summed over the lines of each flux component), which is exact
    because line columns vanish outside them.
    """
    st = wk.st
    dev, nl, nc, ng = st.dev, gl.nl, st.setup.n_comp, st.setup.n_group
    comp, onehot, g_onehot = gl.comp, gl.onehot, gl.g_onehot
    sw2, yw2 = wk.sw, wk.yw
    nbase = c.w.shape[-1]
    nonneg = torch.cat([c.nonneg, torch.ones(nc, dtype=torch.bool, device=dev)])
    enabled = torch.cat([c.enabled, gl.comp_on], dim=1)

    def evaluate(i: torch.Tensor, th: torch.Tensor, passive0: torch.Tensor | None) -> Evaluation:
        b_ = len(i)
        pix, kc, val, dv, ds = line_windows(st, gl, i, th)
        w_ = pix.shape[-1]
        flat = pix.view(b_, -1)
        swp = torch.gather(sw2[i], 1, flat).view(b_, nl, w_)
        # Weighted line profile and its V, sigma derivatives per unit flux; the
        # Jacobian at fixed fluxes is the latter times each line's flux.
        vals = torch.stack([val, dv, ds], dim=-1) * swp[..., None]  # (b, nL, W, 3)
        bw = c.w[i]
        bwg = torch.gather(bw, 1, flat[..., None].expand(-1, -1, nbase)).view(b_, nl, w_, nbase)
        ywi = yw2[i]
        t_b = torch.einsum("blwk,blwq->blkq", bwg, vals)  # continuum x window quantities
        ov = window_overlaps(kc, vals)
        r_l = torch.einsum("blw,blw->bl", vals[..., 0], torch.gather(ywi, 1, flat).view(b_, nl, w_))
        g01 = t_b[..., 0].transpose(1, 2) @ onehot
        g11 = torch.einsum("blm,lc,md->bcd", ov[..., 0, 0], onehot, onehot)
        g11 = 0.5 * (g11 + g11.transpose(1, 2))
        rhs = torch.cat([c.rhs[i], r_l @ onehot], 1)
        g = torch.cat([torch.cat([c.gram[i], g01], 2), torch.cat([g01.transpose(1, 2), g11], 2)], 1)
        coef, passive, _ = nnls_gram(g, rhs, nonneg, enabled[i], passive0)
        f_l = coef[:, nbase:][:, comp]  # (b, nL) flux parameter of each line
        resid = ywi - torch.einsum("bnk,bk->bn", bw, coef[:, :nbase]) - line_model(st, gl, pix, vals[..., 0], coef[:, nbase:])
        # Jacobian products, from the window sums scaled by the line fluxes.
        fj = f_l[..., None, None]
        cross_b = torch.einsum("blkd,lg->bkgd", t_b[..., 1:] * fj, g_onehot).reshape(b_, nbase, 2 * ng)
        cross_l = torch.einsum("blmd,lc,mg->bcgd", ov[..., 0, 1:] * f_l[:, None, :, None], onehot, g_onehot)
        jj = ov[..., 1:, 1:] * (f_l[:, :, None] * f_l[:, None, :])[..., None, None]
        jtj = torch.einsum("blmde,lg,mh->bgdhe", jj, g_onehot, g_onehot).reshape(b_, 2 * ng, 2 * ng)
        rg = torch.gather(resid, 1, flat).view(b_, nl, w_)
        jtr = torch.einsum("blwd,bl,lg->bgd", vals[..., 1:] * rg[..., None], f_l, g_onehot).reshape(b_, 2 * ng)
        return Evaluation(
            chi2=(resid * resid).sum(1), coef=coef, passive=passive, resid=resid, gram=g,
            atr=rhs - torch.einsum("bij,bj->bi", g, coef),
            cross=torch.cat([cross_b, cross_l.reshape(b_, nc, 2 * ng)], 1),
            jtj=0.5 * (jtj + jtj.transpose(1, 2)), jtr=jtr,
        )  # fmt: skip

    return evaluate


def _line_gain(wk: _Work, gl: GasLines, rw1: torch.Tensor, i: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
    """chi^2 decrease (b,) from the best non-negative line fluxes at ``th`` over the
    frozen continuum (weighted residual ``rw1`` (b, nt) of the stellar-stage model)."""
    st = wk.st
    nl, nc = gl.nl, st.setup.n_comp
    pix, kc, val, _, _ = line_windows(st, gl, i, th)
    b_, w_ = len(i), pix.shape[-1]
    flat = pix.view(b_, -1)
    vw = val * torch.gather(wk.sw[i], 1, flat).view(b_, nl, w_)
    r_l = (vw * torch.gather(rw1[i], 1, flat).view(b_, nl, w_)).sum(-1) @ gl.onehot
    ov = window_overlaps(kc, vw[..., None])[..., 0, 0]
    g11 = torch.einsum("blm,lc,md->bcd", ov, gl.onehot, gl.onehot)
    x, _, _ = nnls_gram(0.5 * (g11 + g11.transpose(1, 2)), r_l, torch.ones(nc, dtype=torch.bool, device=st.dev), gl.comp_on[i], gl.comp_on[i])
    return (x * r_l).sum(1)


def _line_start(wk: _Work, gl: GasLines) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Start and bounds (b, 2nG) of the gas kinematics, from a coarse grid.

    The grid is on a common gas velocity, with the continuum frozen to the stellar-stage
    model (stars and polynomial, fitted with the line windows masked): at each trial
    only the line fluxes are solved for (NNLS on the few line columns, from window
    sums), which is enough to find the basin of the line kinematics and a small
    fraction of a full evaluation. All grid points go through one batched call.
    """
    st, stars, config = wk.st, wk.st.stars, wk.st.config
    nb, ng, dev = st.nb, st.setup.n_group, st.dev
    m1p = stars.sub.shape[1]
    cont1 = torch.einsum("bnk,bk->bn", wk.cols_all, stars.coef_t) + torch.einsum("bnp,bp->bn", stars.poly, stars.ev.coef[:, m1p:])
    rw1 = (st.y - cont1) * wk.sw
    # The grid is searched around the stellar V *and* around the input redshift: at
    # low continuum S/N (faint IFU spaxels, weak or broad absorption features) the
    # stellar V can be off by far more than the window while the lines are bright,
    # and a window tied to the stars alone then returned a confident wrong gas V.
    v_star = stars.v_star
    dvs = np.arange(-config.gas_v_search, config.gas_v_search + 0.5 * config.gas_v_step, config.gas_v_step)
    centres = torch.stack([v_star, torch.zeros_like(v_star)], dim=1)  # stars first: ties keep them
    trial_v = (centres[:, :, None] + torch.as_tensor(dvs, dtype=DT, device=dev)[None, None, :]).reshape(nb, -1)
    nd = trial_v.shape[1]
    trial = torch.empty(nb, nd, 2 * ng, dtype=DT, device=dev)
    trial[..., 0::2] = trial_v[..., None]
    trial[..., 1::2] = config.gas_sigma_start
    gain_grid = _line_gain(wk, gl, rw1, st.every.repeat_interleave(nd), trial.view(nb * nd, 2 * ng))
    # First maximum along the grid, as a sequential scan would keep it.
    th_g = trial[st.every, gain_grid.view(nb, nd).argmax(1)]
    lo2 = torch.zeros_like(th_g)
    hi2 = torch.zeros_like(th_g)
    lo2[:, 0::2] = centres.amin(1)[:, None] - config.gas_v_search - 300.0
    hi2[:, 0::2] = centres.amax(1)[:, None] + config.gas_v_search + 300.0
    lo2[:, 1::2] = config.sigma_min
    hi2[:, 1::2] = config.gas_sigma_max
    return th_g, lo2, hi2


def _fit_lines(wk: _Work, gl: GasLines) -> tuple[Continuum, Evaluation, torch.Tensor]:
    """Continuum + lines at the optimised gas kinematics: the final continuum block,
    evaluation and gas (V, sigma) per group."""
    st, config = wk.st, wk.st.config
    passive_t = st.stars.passive_t
    th_g, lo2, hi2 = _line_start(wk, gl)
    # Templates: those of the stellar fit; any other that the lines make useful
    # enters through the same KKT test as in the stellar stage.
    cont = _continuum(wk, passive_t)
    p0 = torch.cat([_continuum_passive(wk, cont, passive_t), gl.comp_on], dim=1)
    eval_gas = _make_eval(wk, gl, cont)
    th_g, ev2, _ = levenberg_marquardt(eval_gas, th_g, lo2, hi2, config.max_iter, config.tol, p0)
    for rnd in range(KKT_ROUNDS + 1):
        pf, enter = _continuum_kkt(wk, cont, ev2)
        if not bool(enter.any()):
            break
        n_old = cont.w.shape[-1]
        cont = _continuum(wk, pf | enter if rnd < KKT_ROUNDS else torch.ones_like(pf))
        eval_gas = _make_eval(wk, gl, cont)
        new = eval_gas(st.every, th_g, torch.cat([_continuum_passive(wk, cont, pf), ev2.passive[:, n_old:]], dim=1))
        gain = ev2.chi2 - new.chi2
        ev2 = new
        if bool((gain > config.tol * new.chi2).any()):
            th_g, ev2, _ = levenberg_marquardt(eval_gas, th_g, lo2, hi2, config.max_iter, config.tol, start=ev2)
    return cont, ev2, th_g


def fit_gas(st: ChunkState) -> None:
    """Gas stage. Reads the work frame of ``st`` and ``st.stars`` (kinematics, template
    weights, clipped pixels) and writes ``st.gas`` (:class:`GasFit`): the final model,
    its evaluation and, when lines are fitted, the gas kinematics and line setup."""
    config, stars = st.config, st.stars
    fit2 = st.base & ~stars.clipped
    w2 = torch.where(fit2, st.wfull, torch.zeros_like(st.wfull))
    sw2 = w2.sqrt()
    yw2 = st.y * sw2
    # Every template at the stellar kinematics, times the stellar stage's multiplicative
    # polynomial, fixed from here on.
    cols_all = template_columns(st, st.every, stars.v_star, stars.s_star, st.tpl_f) * stars.mfactor[..., None]
    poly2 = legendre(st.x, config.gas_degree)
    if config.mdegree > 0 and config.gas_mpoly:
        # The multiplicative polynomial was fitted with the line windows masked, so it
        # bends to whatever line wings lie outside them (a broad Balmer line of sigma
        # 2000 km/s lost half its Delta BIC that way). Refit it with the lines, to first
        # order: the stellar-stage continuum times L_1..L_M are free linear columns.
        stellar = torch.einsum("bnk,bk->bn", cols_all, stars.coef_t)  # P(x) * mix, scaled units
        poly2 = torch.cat([poly2, stellar[..., None] * mpoly_basis(st, config.mdegree)], dim=-1)
    npoly2 = poly2.shape[-1]
    norm2 = (cols_all * cols_all * w2[..., None]).sum(1).sqrt()
    scale2 = (yw2 * yw2).sum(1).sqrt()
    wk = _Work(st, cols_all, poly2, sw2, yw2, norm2, scale2)
    fit_lines = config.fit_gas and len(st.setup.ids) > 0

    gl: GasLines | None = None
    th_g: torch.Tensor | None = None
    if fit_lines:
        gl = gas_lines(st, stars.v_star, fit2)
        cont, ev2, th_g = _fit_lines(wk, gl)
        n_lin = ev2.passive.sum(1)
    else:
        cont = _continuum(wk, torch.ones_like(stars.passive_t))
        coef0, passive0, _ = nnls_gram(cont.gram, cont.rhs, cont.nonneg, cont.enabled, _continuum_passive(wk, cont, stars.passive_t))
        ev2 = evaluation_from(cont.w, yw2, cont.gram, cont.rhs, coef0, passive0, cont.w[..., :0])
        n_lin = passive0.sum(1)
    b_cols = cont.cols
    n0 = b_cols.shape[-1]
    m2 = n0 - npoly2
    n_fit2 = (w2 > 0).sum(1)
    n_nonlin = 2 * st.setup.n_group if fit_lines else 0
    dof2 = (n_fit2 - n_lin - n_nonlin).clamp_min(1).to(DT)
    st.gas = GasFit(
        fit2=fit2, cont=cont, ev=ev2, theta=th_g, lines=gl, n_fit=n_fit2, chi2_dof=ev2.chi2 / dof2,
        cont_model=torch.einsum("bni,bi->bn", b_cols, ev2.coef[:, :n0]),
        stars_only=torch.einsum("bni,bi->bn", b_cols[..., :m2], ev2.coef[:, :m2]),
    )  # fmt: skip
