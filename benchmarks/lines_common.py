"""Shared helpers of the ``lines`` benchmarks: real-spectrum readers and a pPXF runner.

pPXF is a benchmark extra (``pip install skyledger[bench]``); it is imported lazily here
and never by the package. The pPXF set-up mirrors the skyledger fit so the comparison
is like for like: the same MILESHC templates (air -> vacuum), matched per spectrum to
the instrumental resolution (``ppxf_util.varsmooth``), the same additive degree, the
same masks and the same two stages (stars with the emission lines masked and 3-sigma
clipping; then stars at fixed kinematics + gas with the same kinematic groups and
doublet ratios).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from skyledger.compute.fitting import DOUBLETS, FitConfig, SpectraBatch, TemplateLibrary
from skyledger.schema.linelist import LINES, air_to_vacuum

__all__ = ["DATA", "read_sdss", "read_manga", "read_legac", "real_batches", "run_ppxf", "PpxfResult"]

C_KMS = 299792.458
#: Bundled copies of the public test spectra (see ingest/sample_data/README.md).
DATA = Path(__file__).resolve().parents[1] / "ingest" / "sample_data"
_FWHM = np.sqrt(8 * np.log(2))


def read_sdss(path: Path) -> SpectraBatch:
    """SDSS spec file: COADD loglam/flux/ivar/and_mask/wdisp; z from SPECOBJ."""
    with fits.open(path) as h:
        d = h["COADD"].data
        z = float(h["SPECOBJ"].data["Z"][0])
        wave = 10.0 ** d["loglam"].astype(np.float64)
        # wdisp: LSF sigma in pixels of 1e-4 dex -> R = lambda/FWHM = 1/(FWHM in ln units)
        sig_ln = d["wdisp"].astype(np.float64) * 1e-4 * np.log(10)
        res = np.where(sig_ln > 0, 1.0 / (_FWHM * np.where(sig_ln > 0, sig_ln, 1.0)), np.nan)
        return SpectraBatch(
            wave=wave[None], flux=d["flux"][None].astype(np.float64), ivar=d["ivar"][None].astype(np.float64),
            mask=d["and_mask"][None], resolution=res[None], redshift=np.array([z]),
        )  # fmt: skip


def read_manga(path: Path) -> SpectraBatch:
    """MaNGA test spectra: WAVE, FLUX, IVAR, MASK, SRES, Z."""
    with fits.open(path) as h:
        return SpectraBatch(
            wave=np.broadcast_to(h["WAVE"].data.astype(np.float64), h["FLUX"].data.shape).copy(),
            flux=h["FLUX"].data.astype(np.float64), ivar=h["IVAR"].data.astype(np.float64),
            mask=h["MASK"].data.astype(np.int64), resolution=h["SRES"].data.astype(np.float64),
            redshift=h["Z"].data.astype(np.float64),
        )  # fmt: skip


def read_legac(path: Path, redshift: float = 0.6686) -> SpectraBatch:
    """LEGA-C DR3 1-D spectrum (air wavelengths per ESO Phase 3; R ~ 3500 on VIMOS HR).

    The file carries no redshift; the LEGA-C catalogue value for M19_56670 (0.6686, as
    used by the pPXF LEGA-C example) is the guess. The wavelengths are taken to be air
    (ESO Phase 3 convention for VIMOS); R = 3500 (van der Wel et al. 2021, sec. 3.2).
    """
    with fits.open(path) as h:
        d = h[1].data
        wave = np.asarray(air_to_vacuum(d["WAVE"][0].astype(np.float64)))
        err = d["ERR"][0].astype(np.float64)
        ivar = np.where(err > 0, 1.0 / np.where(err > 0, err, 1.0) ** 2, 0.0)
        return SpectraBatch(
            wave=wave[None], flux=d["FLUX"][0][None].astype(np.float64), ivar=ivar[None],
            mask=(d["QUAL"][0] != 0)[None].astype(np.int64), resolution=np.full((1, wave.size), 3500.0),
            redshift=np.array([redshift]),
        )  # fmt: skip


def real_batches() -> dict[str, tuple[SpectraBatch, list[str]]]:
    """Name -> (batch, per-spectrum labels) for every bundled real file."""
    out = {}
    for name in ("NGC3073", "NGC3522"):
        out[name] = (read_sdss(DATA / f"{name}_SDSS_DR18.fits"), [name])
    m = read_manga(DATA / "MaNGA_test_spectra.fits.gz")
    out["MaNGA"] = (m, [f"MaNGA[{i}]" for i in range(len(m))])
    mc = read_manga(DATA / "MaNGA_multicomp_test_spectra.fits.gz")
    out["MaNGA-multicomp"] = (mc, [f"MaNGA-mc[{i}]" for i in range(len(mc))])
    out["LEGA-C"] = (read_legac(DATA / "legac_M19_56670_v3.0.fits"), ["LEGA-C M19_56670"])
    return out


@dataclass(slots=True)
class PpxfResult:
    velocity: float
    sigma: float
    velocity_err: float
    sigma_err: float
    line_flux: dict[str, float]
    line_flux_err: dict[str, float]
    gas_velocity: dict[str, float]  # per group
    gas_sigma: dict[str, float]
    seconds: float


def _log_grid_spectrum(batch: SpectraBatch, i: int) -> tuple[np.ndarray, ...]:
    """Spectrum i on a log grid with step 1e-4 dex equivalent (rebinning LEGA-C)."""
    from ppxf import ppxf_util

    wave = np.asarray(batch.wave[i], dtype=float)
    flux = np.asarray(batch.flux[i], dtype=float)
    ivar = np.asarray(batch.ivar[i], dtype=float)
    mask = np.zeros_like(flux, bool) if batch.mask is None else np.asarray(batch.mask[i]) != 0
    res = np.asarray(batch.resolution[i], dtype=float)
    good = ~mask & (ivar > 0) & np.isfinite(flux)
    dl = np.diff(np.log(wave))
    if np.ptp(dl) < 0.02 * np.median(dl):
        # Exact log grid through the (float32-rounded) stored wavelengths.
        k = np.arange(wave.size)
        slope, icpt = np.polyfit(k, np.log(wave), 1)
        return np.exp(icpt + slope * k), flux, ivar, good, res, float(C_KMS * slope)
    lam_range = [wave[0], wave[-1]]
    f_log, ln_lam, velscale = ppxf_util.log_rebin(lam_range, np.where(good, flux, 0.0))
    v_log, _, _ = ppxf_util.log_rebin(lam_range, np.where(good, 1 / np.where(good, ivar, 1), 0.0))
    b_log, _, _ = ppxf_util.log_rebin(lam_range, (~good).astype(float))
    w_log = np.exp(ln_lam)
    npix_ratio = len(wave) / len(w_log)
    good_log = b_log < 1e-6
    ivar_log = np.where(good_log & (v_log > 0), 1 / np.where(v_log > 0, v_log * npix_ratio, 1), 0)
    return w_log, f_log, ivar_log, good_log, np.interp(w_log, wave, res), float(velscale)


def run_ppxf(
    batch: SpectraBatch, i: int, config: FitConfig, templates: TemplateLibrary, extras: tuple[str, ...] = ()
) -> PpxfResult | None:
    """pPXF on spectrum ``i`` with settings matching :func:`fit_spectra`; None if unfittable.

    ``extras`` adds second gas components as ``FitConfig(components="auto")`` defines them
    (``"broad"``: every Balmer line, one (V, sigma), free fluxes; ``"outflow"``: the
    [OIII] doublet), each a kinematic component of its own with the same bounds; their
    lines come back as ``"HA6563:broad"`` etc., their kinematics under the extra's name.
    """
    from ppxf import ppxf_util
    from ppxf.ppxf import ppxf

    t0 = time.perf_counter()
    z = float(np.asarray(batch.redshift)[i])
    wave, flux, ivar, good, res, velscale = _log_grid_spectrum(batch, i)
    lam_rest = wave / (1 + z)
    tw_air = templates.wave_air
    tw = np.asarray(air_to_vacuum(tw_air))
    # Keep galaxy pixels that the templates cover with a margin (as the skyledger fit).
    # (pPXF checks the coverage at its velocity bounds: those of a broad component are
    # 1500 km/s wider, so its range is cut by that much more at each end.)
    margin = np.exp((1.5 * config.v_search + 900 + 3 * velscale + (1500.0 if extras else 0.0)) / C_KMS)
    keep = (lam_rest > tw[0] * margin) & (lam_rest < tw[-1] / margin)
    if good[keep].sum() < config.min_pixels:
        return None
    lam_rest, flux, ivar, good, res = lam_rest[keep], flux[keep], ivar[keep], good[keep], res[keep]
    scale = np.median(flux[good])
    gal = flux / scale
    noise = np.where(good, 1 / np.sqrt(np.where(good, ivar, 1)) / scale, 1e10)
    # LSF matching: sigma_diff(lambda) in A at rest wavelengths, where the data are worse.
    sig_gal_rest = lam_rest / (res * _FWHM)  # A, rest frame
    sig_t = templates.fwhm / _FWHM
    sig_at_t = np.interp(tw, lam_rest, sig_gal_rest)
    sdiff = np.sqrt(np.clip(sig_at_t**2 - sig_t**2, 0, None))
    tpl = ppxf_util.varsmooth(tw, templates.flux.T, sdiff)
    lam_range_t = [tw[0], tw[-1]]
    stars, ln_lam_t, _ = ppxf_util.log_rebin(lam_range_t, tpl, velscale=velscale)
    stars /= np.median(stars, axis=0)
    lam_t = np.exp(ln_lam_t)
    # Stage 1: stars, emission-line windows masked, 3-sigma clipping.
    ln_rest = np.log(lam_rest)
    near = np.zeros(lam_rest.size, bool)
    for ln in LINES.values():
        near |= np.abs(ln_rest - np.log(ln.vacuum_wavelength)) < config.line_mask_kms / C_KMS
    gp1 = np.flatnonzero(good & ~near)
    start = [0.0, 150.0]
    vb = 1.5 * config.v_search  # the same bounds as the skyledger fit
    bounds1 = [[-vb, vb], [config.sigma_min, config.sigma_max]]
    pp1 = ppxf(stars, gal, noise, velscale, start, goodpixels=gp1, degree=config.degree, mdegree=config.mdegree, moments=2,
               lam=lam_rest, lam_temp=lam_t, clean=True, quiet=True, bounds=bounds1)  # fmt: skip
    v_err, s_err = pp1.error[:2] * np.sqrt(pp1.chi2)
    # Stage 2: stars at fixed kinematics + gas, same groups and doublet ratios.
    sig_line = lambda lam: lam / (np.interp(lam, lam_rest, res) * _FWHM)  # noqa: E731  A, rest
    groups = list(config.gas_groups)
    gas_cols, names, comp_idx, lam_line = [], [], [], []
    kind_group = {k: g for g, kinds in enumerate(config.gas_groups.values()) for k in kinds}
    edges = np.exp(np.append(ln_lam_t - 0.5 * velscale / C_KMS, ln_lam_t[-1] + 0.5 * velscale / C_KMS))
    from scipy.special import erf

    def gauss(lam0: float) -> np.ndarray:
        s = sig_line(lam0)
        cdf = 0.5 * (1 + erf((edges - lam0) / (np.sqrt(2) * s)))
        return np.diff(cdf)  # unit flux integrated over template pixels

    def line_column(ln):  # type: ignore[no-untyped-def]
        """The line's template, with its doublet children at their fixed ratios."""
        col = gauss(ln.vacuum_wavelength)
        for child, (parent, ratio) in DOUBLETS.items():
            if parent == ln.id:
                col = col + ratio * gauss(LINES[child].vacuum_wavelength)
        return col

    for ln in LINES.values():
        if ln.id in DOUBLETS and DOUBLETS[ln.id][0] in LINES:
            continue
        lam0 = ln.vacuum_wavelength
        if not (lam_rest[0] < lam0 < lam_rest[-1]):
            continue
        gas_cols.append(line_column(ln))
        lam_line.append(lam0)
        names.append(ln.id)
        comp_idx.append(1 + kind_group[ln.kind])
    from skyledger.compute.fitting.components import (
        BROAD_DV,
        BROAD_SIGMA,
        OUTFLOW_DV,
        OUTFLOW_LINES,
        OUTFLOW_SIGMA,
    )

    extra_bounds = {}
    for e, name in enumerate(extras):
        c_e = 1 + len(groups) + e
        for ln in LINES.values():
            if ln.id in DOUBLETS and DOUBLETS[ln.id][0] in LINES:
                continue
            lam0 = ln.vacuum_wavelength
            mine = ln.kind == "balmer" if name == "broad" else ln.id in OUTFLOW_LINES
            if not mine or not (lam_rest[0] < lam0 < lam_rest[-1]):
                continue
            gas_cols.append(line_column(ln))
            lam_line.append(lam0)
            names.append(f"{ln.id}:{name}")
            comp_idx.append(c_e)
        dv, sig = (BROAD_DV, BROAD_SIGMA) if name == "broad" else (OUTFLOW_DV, OUTFLOW_SIGMA)
        dv = (-dv, dv) if name == "broad" else dv
        extra_bounds[c_e] = (dv, sig, 1500.0 if name == "broad" else 400.0, 0.0 if name == "broad" else -300.0)
    gas = np.column_stack(gas_cols)
    templ = np.column_stack([stars, gas])
    component = np.array([0] * stars.shape[1] + comp_idx)
    present = sorted(set(comp_idx))
    # renumber gas components consecutively
    remap = {c: j + 1 for j, c in enumerate(present)}
    component = np.array([0] * stars.shape[1] + [remap[c] for c in comp_idx])
    vg = config.gas_v_search + 300.0
    start2, bounds2 = [[pp1.sol[0], pp1.sol[1]]], [bounds1]
    for c in present:
        if c in extra_bounds:  # around the stellar V (pPXF fits all components at once)
            dv, sig, s0, v0 = extra_bounds[c]
            start2.append([pp1.sol[0] + v0, s0])
            bounds2.append([[pp1.sol[0] - vg + dv[0], pp1.sol[0] + vg + dv[1]], list(sig)])
        else:
            start2.append([pp1.sol[0], config.gas_sigma_start])
            bounds2.append([[pp1.sol[0] - vg, pp1.sol[0] + vg], [config.sigma_min, config.gas_sigma_max]])
    moments = [-2] + [2] * len(present)
    # Stage 2 uses the good pixels minus those pPXF clipped in stage 1 (as skyledger does).
    gp2 = np.setdiff1d(np.flatnonzero(good), np.setdiff1d(gp1, pp1.goodpixels))
    pp2 = ppxf(templ, gal, noise, velscale, start2, goodpixels=gp2, degree=config.gas_degree, mdegree=config.mdegree, moments=moments,
               component=component, gas_component=component > 0, gas_names=names,
               lam=lam_rest, lam_temp=lam_t, quiet=True, bounds=bounds2)  # fmt: skip
    chi = np.sqrt(pp2.chi2)
    # gas_flux is the sum over pixels of the (scaled) flux density: times the observed
    # pixel width in A at the line gives flux x A; a doublet template sums to 1 + ratio.
    fl, fe = {}, {}
    for j, nm in enumerate(names):
        to_flux = scale * lam_line[j] * (1 + z) * velscale / C_KMS / gas_cols[j].sum()
        fl[nm] = float(pp2.gas_flux[j]) * to_flux
        fe[nm] = float(pp2.gas_flux_error[j]) * to_flux * chi
        for child, (parent, ratio) in DOUBLETS.items():
            if parent == nm:
                fl[child], fe[child] = fl[nm] * ratio, fe[nm] * ratio
    gv, gs = {}, {}
    for c in present:
        sol = pp2.sol[remap[c]]
        key = groups[c - 1] if c <= len(groups) else extras[c - 1 - len(groups)]
        gv[key] = float(sol[0])
        gs[key] = float(sol[1])
    return PpxfResult(
        velocity=float(pp1.sol[0]), sigma=float(pp1.sol[1]), velocity_err=float(v_err), sigma_err=float(s_err),
        line_flux=fl, line_flux_err=fe, gas_velocity=gv, gas_sigma=gs, seconds=time.perf_counter() - t0,
    )  # fmt: skip
