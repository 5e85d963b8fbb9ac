"""Second kinematic components of the gas, kept where the data ask for them (BIC).

Stage after :mod:`.gas` (``FitConfig.components = "auto"``). Two extra components are
tried on top of the one-component model of the gas stage:

- ``broad``: a broad component on every Balmer line (AGN broad-line region), one
  (V, sigma) for all of them, free fluxes, sigma in [BROAD_SIGMA];
- ``outflow``: a second component on [OIII] 4959, 5007 (at the 1:2.98 doublet ratio)
  with its own (V, sigma), sigma in [OUTFLOW_SIGMA] and V from OUTFLOW_DV around the
  narrow [OIII] V (blue-shifted outflows, allowing a little redshift).

Each is a model of the same kind as the gas stage's (the gas stage's final template
subset and polynomial refitted with the lines, fluxes non-negative, kinematics by
Levenberg-Marquardt), over the same pixels, so chi^2 values compare directly. The
selection, per spectrum and per extra component e:

1. fit the model with every extra component ("full", started from the best point of a
   coarse grid of the extra kinematics with the one-component fit's narrow kinematics);
2. chi^2 without e: the full model refitted without e (or, when e is the only extra
   with flux, the one-component fit itself; the smaller of the two otherwise);
3. Delta BIC_e = (chi^2_without_e - chi^2_full) / s - k_e ln n, with n the fitted pixels,
   k_e = 2 + the flux parameters of e, and s the reduced chi^2 of the full model (the
   error scale the fit applies to its errors, not below 1 for resampled spectra);
4. e is kept where Delta BIC_e > ``FitConfig.components_min_delta_bic``. The chosen model
   is refitted at its kinematics (the full model, the one without the rejected extra, or
   the one-component fit).

The threshold (10, "very strong" evidence on the Kass & Raftery 1995 scale) was set so
that fewer than 5 % of one-component synthetic spectra with template mismatch get a
second component (``benchmarks/lines_components.py``, ``docs/lines_validation.md``).

Outputs: the narrow (component 0) values stay in ``line_*``, second components go to
``line2_*`` at the column of their narrow line, and :func:`nonparametric_widths` gives
v10, v90 and W80 of the total profile of every line with flux.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from skyledger.schema.linelist import LINES

from .chunk import DT, ChunkState
from .gas import GasFit, _line_gain, _make_eval, _Work
from .linemodel import GasLines, gas_lines
from .linesetup import LineSetup
from .optim import levenberg_marquardt
from .outputs import collect_outputs
from .types import DOUBLETS, FitResult, LineFlag

__all__ = [
    "BROAD",
    "EXTRAS",
    "OUTFLOW",
    "ExtraSetup",
    "GAS_MODEL_NAMES",
    "LINE_FIELDS",
    "extra_setup",
    "fit_components",
    "nonparametric_widths",
    "one_component_outputs",
]

BROAD = 1  #: ``FitResult.gas_model`` bit: broad Balmer component kept
OUTFLOW = 2  #: ``FitResult.gas_model`` bit: [OIII] outflow component kept
#: The extra components in the order of their bits.
EXTRAS = ("broad", "outflow")
OUTFLOW_LINES = ("OIII4959", "OIII5007")
#: Bounds of the extra components (km/s). Broad-line regions have FWHM >~ 1200 km/s;
#: outflows in quasar hosts have sigma ~ 300-1000 km/s and V ~ -1000..0 km/s.
BROAD_SIGMA = (500.0, 4000.0)
BROAD_DV = 1500.0
OUTFLOW_SIGMA = (100.0, 1500.0)
OUTFLOW_DV = (-1500.0, 500.0)
#: Coarse start grid of the extra kinematics, relative to the narrow group's V.
_BROAD_GRID = ((-500.0, 0.0, 500.0), (700.0, 1500.0, 3000.0))
_OUTFLOW_GRID = ((-600.0, -300.0, 0.0), (250.0, 500.0, 900.0))
#: Per-line result fields that a second component has too (``line_*`` and ``line2_*``).
LINE_FIELDS = ("velocity", "velocity_err", "sigma", "sigma_err", "flux", "flux_err", "ew", "snr", "z")
#: Name of each ``FitResult.gas_model`` value (bits of EXTRAS), as stellar_kinematics stores it.
GAS_MODEL_NAMES = {
    bits: "+".join(["narrow"] + [name for e, name in enumerate(EXTRAS) if bits & (1 << e)])
    for bits in range(1 << len(EXTRAS))
}


@dataclass(frozen=True, slots=True)
class ExtraSetup:
    """The gas stage's lines followed by copies of them for the extra components."""

    setup: LineSetup  # narrow lines (as the gas stage), then the copies
    parent: np.ndarray  # (nX,) narrow line column of each copy
    extra: np.ndarray  # (nX,) which entry of ``names`` each copy belongs to
    narrow_group: np.ndarray  # (nE,) gas group of the narrow lines each extra sits on
    names: tuple[str, ...]  # extras with at least one line, a subset of EXTRAS in order

    def comp_extra(self) -> np.ndarray:
        """(nC,) extra of each flux component, -1 for the narrow ones."""
        s, nl0 = self.setup, len(self.setup.ids) - len(self.parent)
        out = np.full(s.n_comp, -1)
        out[s.comp[nl0:]] = self.extra
        return out


def extra_setup(setup: LineSetup) -> ExtraSetup | None:
    """The extra components that ``setup`` has lines for; None when it has none."""
    ids = setup.ids
    members = {
        "broad": [j for j, i in enumerate(ids) if LINES[i].kind == "balmer"],
        "outflow": [j for j, i in enumerate(ids) if i in OUTFLOW_LINES],
    }
    comp, ratio, group = list(setup.comp), list(setup.ratio), list(setup.group)
    ln_rest, new_ids, parent, extra, narrow_group, names = list(setup.ln_rest), list(ids), [], [], [], []
    nc = setup.n_comp
    for name in EXTRAS:
        lines = members[name]
        if not lines:
            continue
        e, g = len(names), setup.n_group + len(names)
        names.append(name)
        narrow_group.append(setup.group[setup.comp[lines[0]]])
        mine = {ids[j] for j in lines}
        own: dict[str, int] = {}
        for j in lines:  # parents first: doublet children take their parent's component
            if not (ids[j] in DOUBLETS and DOUBLETS[ids[j]][0] in mine):
                own[ids[j]] = nc
                group.append(g)
                nc += 1
        for j in lines:
            lid = ids[j]
            c, r = (own[lid], 1.0) if lid in own else (own[DOUBLETS[lid][0]], DOUBLETS[lid][1])
            comp.append(c)
            ratio.append(r)
            ln_rest.append(setup.ln_rest[j])
            new_ids.append(f"{lid}:{name}")
            parent.append(j)
            extra.append(e)
    if not names:
        return None
    ratio_a = np.array(ratio)
    full = LineSetup(
        ids=tuple(new_ids), ln_rest=np.array(ln_rest), comp=np.array(comp), ratio=ratio_a, group=np.array(group),
        n_comp=nc, n_group=setup.n_group + len(names), tied=ratio_a != 1.0,
    )  # fmt: skip
    return ExtraSetup(full, np.array(parent), np.array(extra), np.array(narrow_group), tuple(names))


def _bounds(st: ChunkState, xs: ExtraSetup) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds (b, 2nG') of every group: the gas stage's for the narrow groups (as in
    :func:`.gas._line_start`), the extras' around their narrow group's V."""
    config, th1 = st.config, st.gas.theta
    assert th1 is not None
    ng, ne = st.setup.n_group, len(xs.names)
    v_star = st.stars.v_star
    lo = torch.empty(st.nb, 2 * (ng + ne), dtype=DT, device=st.dev)
    hi = torch.empty_like(lo)
    lo[:, 0 : 2 * ng : 2] = torch.minimum(v_star, torch.zeros_like(v_star))[:, None] - config.gas_v_search - 300.0
    hi[:, 0 : 2 * ng : 2] = torch.maximum(v_star, torch.zeros_like(v_star))[:, None] + config.gas_v_search + 300.0
    lo[:, 1 : 2 * ng : 2] = config.sigma_min
    hi[:, 1 : 2 * ng : 2] = config.gas_sigma_max
    for e, name in enumerate(xs.names):
        g = ng + e
        v_n = th1[:, 2 * int(xs.narrow_group[e])]
        dv = (-BROAD_DV, BROAD_DV) if name == "broad" else OUTFLOW_DV
        sig = BROAD_SIGMA if name == "broad" else OUTFLOW_SIGMA
        lo[:, 2 * g], hi[:, 2 * g] = v_n + dv[0], v_n + dv[1]
        lo[:, 2 * g + 1], hi[:, 2 * g + 1] = sig
    return lo, hi


def _start(wk: _Work, st: ChunkState, xs: ExtraSetup, gl_with: Callable[[torch.Tensor], GasLines], tried: torch.Tensor) -> torch.Tensor:
    """Start (b, 2nG') of the full model: the one-component narrow kinematics and, for
    each extra, the best point of a coarse grid of its kinematics with the other extras
    off, where at each point only the line fluxes are solved for over the gas stage's
    continuum (as :func:`.gas._line_start`). One call per trial sigma: line windows are
    as wide as the widest line of a call, and a 3000 km/s trial would make all wide."""
    th1 = st.gas.theta
    assert th1 is not None
    ne, nb = len(xs.names), st.nb
    ng = xs.setup.n_group - ne
    th0 = torch.empty(nb, 2 * (ng + ne), dtype=DT, device=st.dev)
    th0[:, : 2 * ng] = th1
    for e, name in enumerate(xs.names):  # the others sit at their narrowest while off
        th0[:, 2 * (ng + e) + 1] = (BROAD_SIGMA if name == "broad" else OUTFLOW_SIGMA)[0]
    rw = (st.y - st.gas.cont_model) * wk.sw
    for e, name in enumerate(xs.names):
        only = torch.zeros_like(tried)
        only[:, e] = tried[:, e]
        gl = gl_with(only)
        dvs, sigs = _BROAD_GRID if name == "broad" else _OUTFLOW_GRID
        v_n = th1[:, 2 * int(xs.narrow_group[e])]
        best_gain = torch.full((nb,), -torch.inf, dtype=DT, device=st.dev)
        best = torch.stack([v_n, torch.full_like(v_n, sigs[0])], 1)
        for sig in sigs:
            nd = len(dvs)
            trial = th0[:, None, :].repeat(1, nd, 1)
            trial[..., 2 * (ng + e)] = v_n[:, None] + st.tensor(np.array(dvs))[None, :]
            trial[..., 2 * (ng + e) + 1] = sig
            gain = _line_gain(wk, gl, rw, st.every.repeat_interleave(nd), trial.view(nb * nd, -1)).view(nb, nd)
            g_max, k = gain.max(1)
            better = g_max > best_gain
            best_gain = torch.where(better, g_max, best_gain)
            best[better, 0] = trial[st.every, k, 2 * (ng + e)][better]
            best[better, 1] = sig
        th0[:, 2 * (ng + e) : 2 * (ng + e) + 2] = best
    return th0


def _subset_eval(evaluate, rows: torch.Tensor):  # type: ignore[no-untyped-def]
    """``evaluate`` on the spectra ``rows`` only, indexed 0..len(rows)-1."""
    return lambda i, th, p: evaluate(rows[i], th, p)


def fit_components(st: ChunkState) -> dict[str, np.ndarray]:
    """Components stage. Reads ``st.gas`` (the one-component fit), tries the extra
    components, chooses per spectrum by Delta BIC and returns the chunk's result arrays
    (as :func:`.outputs.collect_outputs`, plus ``line2_*``, ``gas_model`` and
    ``delta_bic_*``)."""
    gas, config = st.gas, st.config
    xs = extra_setup(st.setup)
    if gas.lines is None or gas.theta is None or xs is None:
        return one_component_outputs(st, tried=False)
    nl0, ng, ne = len(st.setup.ids), st.setup.n_group, len(xs.names)
    st2 = copy.copy(st)
    st2.setup = xs.setup
    st2.ln_rest = st.tensor(xs.setup.ln_rest)
    sw = torch.where(gas.fit2, st.wfull, torch.zeros_like(st.wfull)).sqrt()
    none = sw.new_zeros(0)
    # Only the weights, the data and the state are read by the gas stage's evaluation.
    wk = _Work(st2, none, none, sw, st.y * sw, none, none)
    gl = gas_lines(st2, st.stars.v_star, gas.fit2)
    comp_extra = torch.as_tensor(xs.comp_extra(), device=st.dev)
    # (b, nE) the extra has a line with enough pixels in this spectrum
    tried = torch.stack([(gl.comp_on & (comp_extra == e)[None, :]).any(1) for e in range(ne)], dim=1)
    n0 = gas.cont.cols.shape[-1]
    lo, hi = _bounds(st, xs)

    def lines_with(allowed: torch.Tensor) -> GasLines:
        """``gl`` with the flux components of the extras not ``allowed`` (b, nE) off."""
        extra_ok = torch.cat([torch.ones(st.nb, 1, dtype=torch.bool, device=st.dev), allowed], 1)[:, comp_extra + 1]
        return dataclasses.replace(gl, comp_on=gl.comp_on & extra_ok)

    def passive0(g: GasLines) -> torch.Tensor:
        return torch.cat([gas.ev.passive[:, :n0], g.comp_on], dim=1)

    gl_full = lines_with(tried)
    th0 = _start(wk, st2, xs, lines_with, tried)
    eval_full = _make_eval(wk, gl_full, gas.cont)
    th_f, ev_f, _ = levenberg_marquardt(eval_full, th0, lo, hi, config.max_iter, config.tol, passive0(gl_full))
    cflux = ev_f.coef[:, n0:]
    has = torch.stack([((cflux > 0) & (comp_extra == e)[None, :]).any(1) for e in range(ne)], dim=1) & tried
    chi2_1, chi2_f = gas.ev.chi2, ev_f.chi2
    chi2_wo = chi2_1[:, None].expand(-1, ne).clone()
    th_wo = [th_f.clone() for _ in range(ne)]
    for e in range(ne):
        others = has & (torch.arange(ne, device=st.dev) != e)[None, :]
        rows = torch.nonzero(has[:, e] & others.any(1)).flatten()
        if rows.numel() == 0:
            continue
        allowed = tried.clone()
        allowed[:, e] = False
        g_wo = lines_with(allowed)
        ev_all = _make_eval(wk, g_wo, gas.cont)
        th_e, ev_e, _ = levenberg_marquardt(
            _subset_eval(ev_all, rows), th_f[rows], lo[rows], hi[rows], config.max_iter, config.tol, passive0(g_wo)[rows]
        )
        chi2_wo[rows, e] = torch.minimum(ev_e.chi2, chi2_1[rows])
        th_wo[e][rows] = th_e
    n_fit = gas.n_fit.to(DT)
    k_e = torch.stack([((gl_full.comp_on) & (comp_extra == e)[None, :]).sum(1) for e in range(ne)], dim=1).to(DT) + 2.0
    dof_f = (n_fit - ev_f.passive.sum(1) - 2 * (ng + has.sum(1))).clamp_min(1).to(DT)
    s = chi2_f / dof_f
    s = torch.where(st.floor_one, s.clamp_min(1.0), s)
    dchi2 = torch.where(has, (chi2_wo - chi2_f[:, None]).clamp_min(0.0), torch.zeros_like(chi2_wo))
    dbic = dchi2 / s[:, None] - k_e * torch.log(n_fit)[:, None]
    # An extra whose kinematics end on a bound is not measured (template mismatch under
    # the Balmer absorption lines drives a "broad component" to the widest sigma allowed).
    g_e = 2 * ng + 2 * torch.arange(ne, device=st.dev)
    span = (hi - lo)[:, g_e[:, None] + torch.arange(2, device=st.dev)]  # (b, nE, 2)
    pos = th_f[:, g_e[:, None] + torch.arange(2, device=st.dev)]
    at_bound = ((pos - lo[:, g_e[:, None] + torch.arange(2, device=st.dev)] < 1e-3 * span)
                | (hi[:, g_e[:, None] + torch.arange(2, device=st.dev)] - pos < 1e-3 * span)).any(-1)
    keep = has & (dbic > config.components_min_delta_bic) & torch.isfinite(dbic) & ~at_bound

    # The chosen model's kinematics: full, without one extra, or the one-component fit.
    th_c = th_f.clone()
    n_keep = keep.sum(1)
    th_c[n_keep == 0, : 2 * ng] = gas.theta[n_keep == 0]
    for e in range(ne):
        dropped_only = has[:, e] & ~keep[:, e] & (n_keep > 0)
        th_c[dropped_only] = th_wo[e][dropped_only]
    gl_c = lines_with(keep)
    ev_c = _make_eval(wk, gl_c, gas.cont)(st.every, th_c, passive0(gl_c))
    b_cols = gas.cont.cols
    m2 = gas.cont.sub.shape[1]  # template columns come first, then the polynomial
    dof_c = (n_fit - ev_c.passive.sum(1) - 2 * (ng + n_keep)).clamp_min(1).to(DT)
    st2.gas = GasFit(
        fit2=gas.fit2, cont=gas.cont, ev=ev_c, theta=th_c, lines=gl_c, n_fit=gas.n_fit, chi2_dof=ev_c.chi2 / dof_c,
        cont_model=torch.einsum("bni,bi->bn", b_cols, ev_c.coef[:, :n0]),
        stars_only=torch.einsum("bni,bi->bn", b_cols[..., :m2], ev_c.coef[:, :m2]),
    )  # fmt: skip
    out = collect_outputs(st2)  # its flag bits go to st.flags, which st2 shares
    return _split_outputs(st, xs, out, keep, tried, dbic, nl0)


def _split_outputs(
    st: ChunkState, xs: ExtraSetup, out: dict[str, np.ndarray], keep: torch.Tensor, tried: torch.Tensor,
    dbic: torch.Tensor, nl0: int,
) -> dict[str, np.ndarray]:
    """Per-line arrays of the extended setup back to the narrow lines' columns: component
    0 in ``line_*``, the second components in ``line2_*``; the per-spectrum choice."""
    n, sel = st.n_chunk, st.sel_np
    keep_np, tried_np, dbic_np = keep.cpu().numpy(), tried.cpu().numpy(), dbic.cpu().numpy()
    kept_l = np.zeros((n, nl0), bool)  # the line has a second component in the chosen model
    tried_l = np.zeros((n, nl0), bool)
    for k, (j, e) in enumerate(zip(xs.parent, xs.extra)):
        kept_l[sel, j] |= keep_np[:, e]
        tried_l[sel, j] |= tried_np[:, e]
    for name in LINE_FIELDS:
        full = out[f"line_{name}"]
        second = np.full((n, nl0), np.nan)
        second[:, xs.parent] = full[:, nl0:]
        out[f"line2_{name}"] = np.where(kept_l, second, np.nan)
        out[f"line_{name}"] = full[:, :nl0]
    # Limits and EW errors are kept for the narrow lines only (a kept second component
    # is a detection; its EW error is not propagated).
    for name in ("flux_limit", "ew_err"):
        out[f"line_{name}"] = out[f"line_{name}"][:, :nl0]
    flags = out["line_flags"]
    f2 = np.zeros((n, nl0), dtype=np.int64)
    f2[:, xs.parent] = flags[:, nl0:]
    # The narrow-group SIGMA_AT_BOUND test does not apply to the extras' bounds.
    f2 &= ~np.int64(LineFlag.SIGMA_AT_BOUND)
    sig2 = out["line2_sigma"]
    for e, name in enumerate(xs.names):
        bounds = BROAD_SIGMA if name == "broad" else OUTFLOW_SIGMA
        cols = xs.parent[xs.extra == e]
        at = (sig2[:, cols] <= bounds[0] * 1.01) | (sig2[:, cols] >= bounds[1] * 0.99)
        f2[:, cols] |= np.where(at, np.int64(LineFlag.SIGMA_AT_BOUND), 0)
    f0 = flags[:, :nl0].copy()
    f0[kept_l] |= LineFlag.SECOND_COMPONENT
    f0[tried_l & ~kept_l] |= LineFlag.COMPONENT_REJECTED
    out["line_flags"] = f0
    out["line2_flags"] = np.where(kept_l, f2 | LineFlag.SECOND_COMPONENT, 0)
    model = np.full(n, -1, dtype=np.int64)
    model[sel] = 0
    for e, name in enumerate(xs.names):
        model[sel] |= np.where(keep_np[:, e], BROAD if name == "broad" else OUTFLOW, 0)
        d = np.full(n, np.nan)
        d[sel] = np.where(tried_np[:, e], dbic_np[:, e], np.nan)
        out[f"delta_bic_{name}"] = d
    out["gas_model"] = model
    return out


def one_component_outputs(st: ChunkState, tried: bool) -> dict[str, np.ndarray]:
    """The gas stage's outputs with the components fields of a one-component model
    (``gas_model`` 0 where ``tried``, else -1: components not tried)."""
    out = collect_outputs(st)
    model = np.full(st.n_chunk, -1, dtype=np.int64)
    if tried:
        model[st.sel_np] = 0
    out["gas_model"] = model
    return out


def nonparametric_widths(res: FitResult) -> None:
    """v10, v90 and W80 = v90 - v10 (km/s, intrinsic: instrumental width removed) of the
    total profile of every line with flux, into ``res``: the velocities below which 10 %
    and 90 % of the line's flux lies, in the frame of ``line_velocity`` (the stellar z),
    from its fitted component(s). NaN where the line has no flux or no kinematics."""
    f = np.stack([res.line_flux, np.where(np.isfinite(res.line2_flux), res.line2_flux, 0.0)])
    v = np.stack([res.line_velocity, np.where(np.isfinite(res.line2_velocity), res.line2_velocity, 0.0)])
    s = np.stack([res.line_sigma, np.where(np.isfinite(res.line2_sigma), res.line2_sigma, 1.0)])
    f = np.where(np.isfinite(f), np.clip(f, 0.0, None), 0.0)
    tot = f.sum(0)
    ok = (tot > 0) & np.all(np.isfinite(v) | (f == 0), axis=0) & np.all(np.isfinite(s) | (f == 0), axis=0)
    v = np.where(f > 0, v, 0.0)
    s = np.where(f > 0, np.maximum(s, 1e-3), 1.0)
    w = f / np.where(ok, tot, 1.0)
    lo = np.where(f > 0, v - 6 * s, np.inf).min(0)
    hi = np.where(f > 0, v + 6 * s, -np.inf).max(0)
    lo, hi = np.where(ok, lo, 0.0), np.where(ok, hi, 1.0)
    def cdf(x: np.ndarray) -> np.ndarray:
        z = (x[None] - v) / (s * math.sqrt(2.0))
        return (w * 0.5 * (1.0 + _erf(z))).sum(0)

    def quantile(q: float) -> np.ndarray:
        a, b = lo.copy(), hi.copy()
        for _ in range(50):  # bisection: 6 sigma / 2^50 is far below any error
            mid = 0.5 * (a + b)
            below = cdf(mid) < q
            a, b = np.where(below, mid, a), np.where(below, b, mid)
        return 0.5 * (a + b)

    v10, v90 = quantile(0.1), quantile(0.9)
    res.line_v10 = np.where(ok, v10, np.nan)
    res.line_v90 = np.where(ok, v90, np.nan)
    res.line_w80 = res.line_v90 - res.line_v10


def _erf(x: np.ndarray) -> np.ndarray:
    return torch.special.erf(torch.as_tensor(x)).numpy()
