"""Lines beyond the templates: fitted over a local polynomial continuum.

The work frame of the fit (:mod:`.chunk`) is the templates' log grid, so a line whose
observed wavelength lies outside it ([SIII]9069 and 9532 on MaNGA or SDSS spectra of
nearby galaxies, where MILES ends at 7410 A) used to come back NOT_IN_RANGE although the
spectrum has good pixels there. Here each such line is fitted on the spectrum's own
pixels (:class:`.prepare.LogSpectra`), within +-``FitConfig.local_window_kms`` of it,
other lines masked, as a Legendre polynomial of degree ``FitConfig.local_degree`` plus
the Gaussian lines at the kinematics of their gas group from the main fit (tied, not
refitted: the group's strong lines constrain V and sigma far better than a weak far-red
line could). Doublets keep their fixed ratio (:data:`.types.DOUBLETS`). The lines get
LineFlag LOCAL_CONTINUUM.

Fluxes are least-squares values with every line free (a negative one is then set to 0
and the rest refitted, flag ZERO_FLUX), so the error of a line at zero flux is still the
error its pixels support. Errors are scaled by the reduced chi^2 of the window (the main
fit's chi^2 says nothing about these pixels), not below 1 for resampled spectra as in
:mod:`.stellar`. They are at fixed kinematics: the group's V and sigma errors are not
propagated (for a line of S/N < 30 with sigma known to 5 % this adds < 1 % to the error).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.polynomial import legendre as npleg
from scipy.special import erf
from skyledger.schema.linelist import LINES

from .chunk import ChunkState
from .linesetup import LineSetup
from .outputs import line_values, upper_limits
from .prepare import LogSpectra
from .types import C_KMS, FitConfig, LineFlag

__all__ = ["fit_local_lines"]

_HALF = (
    3.0  # a line needs min_line_pixels good pixels within +-_HALF widths of its centre
)


def fit_local_lines(
    st: ChunkState, spectra: LogSpectra, idx: np.ndarray, out: dict[str, np.ndarray]
) -> None:
    """Fit the lines that the main fit left NOT_IN_RANGE but that fall on good pixels of
    the spectra ``idx`` of ``spectra`` (the chunk of ``st``), and write their values and
    flags into ``out`` (the chunk's result arrays from :func:`.outputs.collect_outputs`)."""
    gl, config, setup = st.gas.lines, st.config, st.setup
    if gl is None or not config.local_lines:
        return
    far = ~gl.in_range.cpu().numpy()  # (b, nL)
    if not far.any():
        return
    val: dict[str, np.ndarray] = {}  # the main fit's per-line values, once needed
    theta = st.gas.theta.detach().cpu().numpy()
    floor_one = st.floor_one.cpu().numpy()
    lgroup = setup.group[setup.comp]
    ln_rest = setup.ln_rest
    all_ln = {ln.id: math.log(ln.vacuum_wavelength) for ln in LINES.values()}
    mask_half = config.line_mask_kms / C_KMS
    for bi, row in enumerate(st.sel_np):
        if not np.isfinite(out["chi2_dof"][row]):
            continue  # the spectrum's fit failed: its lines stay flagged so
        g = idx[row]
        good = spectra.good[g]
        ln_pix = spectra.ln0[g] + spectra.dln * np.arange(good.size)
        lnz = math.log1p(float(spectra.redshift[g]))
        if not good.any():
            continue
        lo, hi = ln_pix[good][0], ln_pix[good][-1]
        cand = [l for l in np.flatnonzero(far[bi]) if lo < ln_rest[l] + lnz < hi]
        if not cand:
            continue
        if not val:
            val = {k: v.detach().cpu().numpy() for k, v in line_values(st).items()}
        v_l = theta[bi, 2 * lgroup[cand]]
        s_l = theta[bi, 2 * lgroup[cand] + 1]
        centre = ln_rest[cand] + v_l / C_KMS + lnz
        sinst = spectra.sigma_inst[
            g, np.clip(np.searchsorted(ln_pix, centre), 0, good.size - 1)
        ]
        width = np.sqrt(s_l**2 + sinst**2) / C_KMS
        n_near = np.array(
            [
                (good & (np.abs(ln_pix - c) <= _HALF * w)).sum()
                for c, w in zip(centre, width)
            ]
        )
        on = n_near >= config.min_line_pixels
        for k in np.flatnonzero(~on):
            out["line_flags"][row, cand[k]] = (
                out["line_flags"][row, cand[k]] & ~LineFlag.NOT_IN_RANGE
            ) | LineFlag.NO_GOOD_PIXELS
        lines = [(cand[k], centre[k], width[k]) for k in np.flatnonzero(on)]
        for cluster in _clusters(lines, config.local_window_kms / C_KMS, setup):
            res = _fit_window(cluster, ln_pix, spectra, g, good, all_ln, mask_half, config.local_degree,
                              config.local_window_kms / C_KMS, setup, bool(floor_one[bi]))  # fmt: skip
            if res is None:
                for l, _, _ in (item for w in cluster for item in w):
                    out["line_flags"][row, l] = (
                        out["line_flags"][row, l] & ~LineFlag.NOT_IN_RANGE
                    ) | LineFlag.NO_GOOD_PIXELS
                continue
            for l, (flux, err, cont, ew_err) in res.items():
                _put(out, row, bi, l, flux, err, cont, ew_err, val, config, setup)


def _clusters(
    lines: list[tuple[int, float, float]], half: float, setup: LineSetup
) -> list[list[list[tuple[int, float, float]]]]:
    """Fits to make: each a list of windows (lines whose windows overlap), windows joined
    into one fit when their lines share a flux component (a doublet split over two
    windows, like [SIII]9069 and 9532, keeps its ratio)."""
    windows: list[list[tuple[int, float, float]]] = []
    for item in sorted(lines, key=lambda t: t[1]):
        if windows and item[1] - windows[-1][-1][1] < 2 * half:
            windows[-1].append(item)
        else:
            windows.append([item])
    fits: list[tuple[set[int], list[list[tuple[int, float, float]]]]] = []
    for w in windows:
        comps = {int(setup.comp[l]) for l, _, _ in w}
        joined = [f for f in fits if f[0] & comps]
        for f in joined:
            fits.remove(f)
            comps |= f[0]
        fits.append((comps, [win for f in joined for win in f[1]] + [w]))
    return [f[1] for f in fits]


def _fit_window(
    windows: list[list[tuple[int, float, float]]],
    ln_pix: np.ndarray,
    spectra: LogSpectra,
    g: int,
    good: np.ndarray,
    all_ln: dict[str, float],
    mask_half: float,
    degree: int,
    half: float,
    setup: LineSetup,
    floor_one: bool,
) -> dict[int, tuple[float, float, float, float]] | None:
    """Weighted least squares of one polynomial per window + the lines (one flux per
    component); per line (flux, flux error, continuum at the line, EW error times
    continuum*(1+z)). None: too few pixels to fit."""
    lnz = math.log1p(float(spectra.redshift[g]))
    cluster = [item for w in windows for item in w]
    own = {setup.ids[l] for l, _, _ in cluster}
    masked = good.copy()
    # Other lines of the list (not fitted here) are masked.
    for lid, ln in all_ln.items():
        if lid not in own:
            masked &= np.abs(ln_pix - (ln + lnz)) > mask_half
    comps = sorted({int(setup.comp[l]) for l, _, _ in cluster})
    npoly = degree + 1
    sels, xs = [], []
    for w in windows:
        cw = np.array([c for _, c, _ in w])
        sel = masked & (ln_pix > cw.min() - half) & (ln_pix < cw.max() + half)
        if sel.sum() < npoly + 3:
            return None
        lp_w = ln_pix[sel]
        sels.append(sel)
        xs.append((lp_w[0], max(lp_w[-1] - lp_w[0], 1e-12)))
    sel_all = np.any(sels, axis=0)
    lp = ln_pix[sel_all]
    n, nw = len(lp), len(windows)
    ncol = nw * npoly + len(comps)
    if n < ncol + 3:
        return None
    a = np.zeros((n, ncol))
    for k, (sel, (x0, dx)) in enumerate(zip(sels, xs)):
        rows = sel[sel_all]
        a[rows, k * npoly : (k + 1) * npoly] = npleg.legvander(
            2.0 * (lp[rows] - x0) / dx - 1.0, degree
        )
    dlam = np.exp(lp) * (2.0 * math.sinh(0.5 * spectra.dln))  # observed pixel width, A
    nb = nw * npoly
    for l, c, w in cluster:
        # Gaussian of unit flux integrated over each pixel (in ln lambda), per A.
        lo, hi = (
            (lp - 0.5 * spectra.dln - c) / (math.sqrt(2.0) * w),
            (lp + 0.5 * spectra.dln - c) / (math.sqrt(2.0) * w),
        )
        a[:, nb + comps.index(int(setup.comp[l]))] += (
            setup.ratio[l] * 0.5 * (erf(hi) - erf(lo)) / dlam
        )
    y, ivar = spectra.flux[g, sel_all], spectra.ivar[g, sel_all]
    sw = np.sqrt(ivar)
    aw, yw = a * sw[:, None], y * sw
    free = np.ones(ncol, dtype=bool)
    cov_free = np.linalg.pinv(aw.T @ aw)  # every line free: errors of lines at zero too
    coef = np.zeros(ncol)
    for _ in range(len(comps) + 1):  # drop negative fluxes (non-negativity), refit
        coef[:] = 0.0
        coef[free] = np.linalg.lstsq(aw[:, free], yw, rcond=None)[0]
        neg = np.flatnonzero(free[nb:] & (coef[nb:] < 0)) + nb
        if not len(neg):
            break
        free[neg] = False
    resid = yw - aw @ coef
    scale2 = float(resid @ resid) / max(n - int(free.sum()), 1)
    if floor_one:
        scale2 = max(scale2, 1.0)
    cov = cov_free * scale2
    out = {}
    for k, w in enumerate(windows):
        x0, dx = xs[k]
        pc = slice(k * npoly, (k + 1) * npoly)
        for l, c, _ in w:
            j = nb + comps.index(int(setup.comp[l]))
            r = float(setup.ratio[l])
            row = npleg.legvander(
                np.array([np.clip(2.0 * (c - x0) / dx - 1.0, -1.0, 1.0)]), degree
            )[0]
            cont = float(row @ coef[pc])
            f, var_f = r * coef[j], r * r * cov[j, j]
            var_c = float(row @ cov[pc, pc] @ row)
            cov_fc = r * float(row @ cov[pc, j])
            q = f / cont if cont != 0 else 0.0
            out[l] = (
                f,
                math.sqrt(var_f),
                cont,
                math.sqrt(max(var_f - 2 * q * cov_fc + q * q * var_c, 0.0)),
            )
    return out


def _put(
    out: dict[str, np.ndarray],
    row: int,
    bi: int,
    l: int,
    flux: float,
    err: float,
    cont: float,
    ew_err: float,
    val: dict[str, np.ndarray],
    config: FitConfig,
    setup: LineSetup,
) -> None:
    """Write line ``l`` of chunk row ``row`` (fitted row ``bi``) and set its flags."""
    flags = int(out["line_flags"][row, l]) & ~int(LineFlag.NOT_IN_RANGE)
    flags |= LineFlag.LOCAL_CONTINUUM
    if setup.tied[l]:
        flags |= LineFlag.TIED_FLUX
    if flux <= 0:
        flags |= LineFlag.ZERO_FLUX
    kin = bool(val["has_flux"][bi, l])
    if not kin:
        flags |= LineFlag.KINEMATICS_UNCONSTRAINED
    s = float(val["sigma"][bi, l])
    if s <= config.sigma_min * 1.01 or s >= config.gas_sigma_max * 0.99:
        flags |= LineFlag.SIGMA_AT_BOUND
    for name in ("velocity", "velocity_err", "sigma", "sigma_err", "z"):
        out[f"line_{name}"][row, l] = val[name][bi, l] if kin else np.nan
    z_l = float(val["z"][bi, l])
    out["line_flux"][row, l] = flux
    out["line_flux_err"][row, l] = err
    out["line_snr"][row, l] = flux / err if err > 0 else np.nan
    if cont > 0:
        out["line_ew"][row, l] = flux / cont / (1.0 + z_l)
        out["line_ew_err"][row, l] = ew_err / cont / (1.0 + z_l)
    else:
        flags |= LineFlag.NO_CONTINUUM
    limit = float(
        upper_limits(
            torch.tensor([flux], dtype=torch.float64),
            torch.tensor([err], dtype=torch.float64),
            config,
        )[0]
    )
    out["line_flux_limit"][row, l] = limit
    if np.isfinite(limit):
        flags |= LineFlag.NOT_DETECTED
    out["line_flags"][row, l] = flags
