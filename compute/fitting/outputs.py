"""Outputs stage: the chunk's fitted state as per-spectrum and per-line result arrays.

Values of spectra whose fit produced non-finite numbers are NaN (flag FIT_FAILED); a
line's values are NaN where the line could not be fitted, with a :class:`LineFlag` bit
saying why. Errors are scaled by the reduced chi^2 (see :mod:`.stellar`).
"""

from __future__ import annotations

import numpy as np
import torch

from .chunk import DT, ChunkState
from .linemodel import line_model, line_windows
from .nnls import masked_inverse
from .optim import theta_covariance
from .types import C_KMS, FitConfig, LineFlag, SpectrumFlag

__all__ = ["collect_outputs", "line_values", "upper_limits"]


def collect_outputs(st: ChunkState) -> dict[str, np.ndarray]:
    """Outputs stage. Reads ``st.stars`` and ``st.gas``, adds their flag bits (and
    FIT_FAILED) to ``st.flags``, and returns the chunk's result arrays by
    :class:`FitResult` field name, one row per spectrum of the chunk (NaN, or 0 for
    counts and masks, on the rows that were not fitted)."""
    stars, gas = st.stars, st.gas
    n, sel_np = st.n_chunk, st.sel_np
    out: dict[str, np.ndarray] = {"flags": st.flags}
    finite = torch.isfinite(stars.theta).all(1) & torch.isfinite(stars.ev.chi2) & torch.isfinite(gas.ev.chi2)
    fin = finite.cpu().numpy()
    f_sel = stars.flags.copy()
    f_sel[~fin] |= SpectrumFlag.FIT_FAILED

    def put(name: str, values: torch.Tensor, fill: float = np.nan) -> None:
        arr = out.setdefault(name, np.full((n,) + tuple(values.shape[1:]), fill))
        v = values.detach().cpu().numpy()
        v = np.where(fin.reshape((-1,) + (1,) * (v.ndim - 1)), v, fill)
        arr[sel_np] = v

    z = st.tensor(st.z)
    put("velocity", stars.v_star)
    put("velocity_err", stars.cov[:, 0, 0].sqrt())
    put("sigma", stars.s_star)
    put("sigma_err", stars.cov[:, 1, 1].sqrt())
    put("z", (1.0 + z) * torch.exp(stars.v_star / C_KMS) - 1.0)
    put("chi2_dof", gas.chi2_dof)
    put("stellar_chi2_dof", stars.chi2_dof)
    put("snr", st.snr)
    out["n_pixels"] = np.zeros(n, dtype=np.int64)
    out["n_pixels"][sel_np] = gas.n_fit.cpu().numpy()
    st.flags[sel_np] |= f_sel
    wave_obs = torch.exp(st.u_centre + torch.log1p(z)[:, None])
    put("model_wave", wave_obs)
    model = gas.cont_model
    if gas.lines is not None:
        assert gas.theta is not None
        n0 = gas.cont.cols.shape[-1]
        pix_f, _, val_f, _, _ = line_windows(st, gas.lines, st.every, gas.theta)
        model = gas.cont_model + line_model(st, gas.lines, pix_f, val_f, gas.ev.coef[:, n0:])
    put("model_flux", model * st.scale[:, None])
    put("model_stars", gas.stars_only * st.scale[:, None])
    fm = np.zeros((n, st.nt), dtype=bool)
    fm[sel_np] = gas.fit2.cpu().numpy()
    out["model_fitmask"] = fm
    if gas.lines is not None:
        _line_outputs(st, fin, out)
    return out


def line_values(st: ChunkState) -> dict[str, torch.Tensor]:
    """Per-line (b, nL) kinematics, fluxes, equivalent widths and their errors, and the
    continuum under each line, from the gas stage (lines fitted)."""
    gas, setup = st.gas, st.setup
    gl, ev2, th_g = gas.lines, gas.ev, gas.theta
    assert gl is not None and th_g is not None
    ng, n0, scale = setup.n_group, gas.cont.cols.shape[-1], st.scale
    comp, lgroup = gl.comp, gl.lgroup
    err_scale2 = torch.where(st.floor_one, gas.chi2_dof.clamp_min(1.0), gas.chi2_dof)
    cov_g = theta_covariance(ev2, err_scale2)  # (b, 2nG, 2nG)
    vg, sg = th_g[:, 0::2], th_g[:, 1::2]
    var_g = torch.diagonal(cov_g, dim1=-2, dim2=-1)
    verr_g, serr_g = var_g[:, 0::2].sqrt(), var_g[:, 1::2].sqrt()
    # Flux errors with every enabled line treated as free, so a line at zero flux
    # still gets the error (upper-limit scale) its data support.
    err_set = ev2.passive | torch.cat([torch.zeros_like(gas.cont.enabled), gl.comp_on], dim=1)
    # Marginalise over the gas kinematics too (block inverse of the full Fisher
    # matrix): the flux of a strong line is correlated with its fitted width.
    ginv = masked_inverse(ev2.gram, err_set)
    gc = ginv @ ev2.cross
    schur = ev2.jtj - ev2.cross.transpose(1, 2) @ gc
    sd = torch.diagonal(schur, dim1=-2, dim2=-1)
    hinv = masked_inverse(schur, sd > 1e-12 * sd.amax(-1, keepdim=True).clamp_min(1e-300))
    cov_lin = (ginv + gc @ hinv @ gc.transpose(1, 2)) * err_scale2[:, None, None]
    cerr = torch.diagonal(cov_lin, dim1=-2, dim2=-1)[:, n0:].clamp_min(0).sqrt()
    cflux = ev2.coef[:, n0:]
    flux_l = cflux[:, comp] * gl.ratio[None, :] * scale[:, None]
    ferr_l = cerr[:, comp] * gl.ratio[None, :] * scale[:, None]
    grp_has_flux = (cflux > 0).to(DT) @ torch.nn.functional.one_hot(st.tensor(setup.group, torch.long), ng).to(DT) > 0
    v_l, s_l = vg[:, lgroup], sg[:, lgroup]
    # Continuum under each line at its fitted centre (not at the stellar V, which
    # can be far off when the continuum is faint).
    kl_fit = ((st.ln_rest[None, :] + v_l / C_KMS - st.lt.ln0) / st.dln - st.frac_t[:, None]).round().long().clamp(0, st.nt - 1)
    c_at = torch.gather(gas.cont_model, 1, kl_fit) * scale[:, None]
    z_l = (1.0 + st.tensor(st.z))[:, None] * torch.exp(v_l / C_KMS) - 1.0
    # EW error by first-order propagation of EW = F / (C (1+z)), with the variances and
    # the covariance of F and C from the same (marginalised, chi^2-scaled) covariance:
    # C at the line is the continuum columns' row there times their coefficients.
    row = torch.gather(gas.cont.cols, 1, kl_fit[..., None].expand(-1, -1, n0))  # (b, nL, n0)
    var_c = torch.einsum("blm,bmn,bln->bl", row, cov_lin[:, :n0, :n0], row) * scale[:, None] ** 2
    cov_fc = torch.einsum("blm,bml->bl", row, cov_lin[:, :n0, n0:][:, :, comp]) * gl.ratio[None, :] * scale[:, None] ** 2
    q = flux_l / c_at
    var_ew = (ferr_l**2 - 2.0 * q * cov_fc + q * q * var_c).clamp_min(0.0) / (c_at * (1.0 + z_l)) ** 2
    return {
        "velocity": v_l - st.stars.v_star[:, None], "velocity_err": verr_g[:, lgroup], "sigma": s_l,
        "sigma_err": serr_g[:, lgroup], "z": z_l, "flux": flux_l, "flux_err": ferr_l,
        "ew": flux_l / c_at / (1.0 + z_l), "ew_err": var_ew.sqrt(), "has_flux": grp_has_flux[:, lgroup], "continuum": c_at,
    }  # fmt: skip


def upper_limits(flux: torch.Tensor, err: torch.Tensor, config: FitConfig) -> torch.Tensor:
    """Upper flux limits where a line is not detected (flux/err < ``config.detect_snr``,
    flux 0 at the bound included), NaN where it is: max(flux, 0) + limit_sigma * err, a
    one-sided bound that also covers a positive but insignificant flux."""
    limit = flux.clamp_min(0.0) + config.limit_sigma * err
    undetected = (flux < config.detect_snr * err) & torch.isfinite(err) & (err > 0)
    return torch.where(undetected, limit, torch.full_like(limit, float("nan")))


def _line_outputs(st: ChunkState, fin: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Per-line result arrays and their LineFlag bits into ``out``; ``fin`` (b,) marks
    the spectra whose fit is finite."""
    gl, config, setup = st.gas.lines, st.config, st.setup
    assert gl is not None
    nl, n, sel_np = gl.nl, st.n_chunk, st.sel_np
    val = line_values(st)
    flux_l = val["flux"]
    lflags = np.zeros((st.nb, nl), dtype=np.int64)
    on = gl.line_on.cpu().numpy()
    lflags[~gl.in_range.cpu().numpy()] |= LineFlag.NOT_IN_RANGE
    lflags[gl.in_range.cpu().numpy() & ~on] |= LineFlag.NO_GOOD_PIXELS
    lflags[on & (flux_l <= 0).cpu().numpy()] |= LineFlag.ZERO_FLUX
    lflags[:, setup.tied] |= LineFlag.TIED_FLUX
    s_np_l = val["sigma"].cpu().numpy()
    lflags[(s_np_l <= config.sigma_min * 1.01) | (s_np_l >= config.gas_sigma_max * 0.99)] |= LineFlag.SIGMA_AT_BOUND
    nokin = ~val["has_flux"].cpu().numpy()
    lflags[nokin] |= LineFlag.KINEMATICS_UNCONSTRAINED
    nocont = (val["continuum"] <= 0).cpu().numpy()
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
        arr = out.setdefault(name, np.full((n, nl), np.nan))
        arr[sel_np] = v

    for name in ("velocity", "velocity_err", "sigma", "sigma_err", "z"):
        put_line(f"line_{name}", val[name], kin=True)
    put_line("line_flux", flux_l)
    put_line("line_flux_err", val["flux_err"])
    put_line("line_ew", val["ew"], extra_nan=nocont)
    put_line("line_ew_err", val["ew_err"], extra_nan=nocont)
    put_line("line_snr", flux_l / val["flux_err"])
    limit = upper_limits(flux_l, val["flux_err"], config)
    undetected = on & fin[:, None] & torch.isfinite(limit).cpu().numpy()
    lflags[undetected] |= LineFlag.NOT_DETECTED
    put_line("line_flux_limit", limit)
    lf = np.zeros((n, nl), dtype=np.int64)
    lf[sel_np] = lflags
    out["line_flags"] = lf
