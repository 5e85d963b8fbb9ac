"""Continuum model of the `lines` fit against pPXF in its recommended gas setup.

pPXF here: the E-MILES SSPs of the ``ppxf==8.2.6`` sdist (all 150, smoothed to the
data's LSF), no additive polynomial, multiplicative degree 10, stars + Balmer + forbidden
lines in one fit with the Balmer lines (and He) sharing one kinematic component and the
forbidden lines another (Cappellari's ``ppxf_example_population_gas_sdss`` setup, fluxes
of every line free). skyledger: each continuum configuration of :data:`CONFIGS`.

    .venv/bin/python benchmarks/lines_continuum_check.py --emiles-dir /tmp/ppxfsd/ppxf-8.2.6/ppxf/miles_models
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from lines_common import DATA, read_manga, read_sdss
from skyledger.compute.fitting import (
    FitConfig,
    SpectraBatch,
    TemplateLibrary,
    fit_spectra,
)
from skyledger.schema.linelist import air_to_vacuum

C_KMS = 299792.458
_FWHM = np.sqrt(8 * np.log(2))
SPECTRA = {
    "NGC3073": ("sdss", Path("/work/shared/data/spectra/sdss/NGC3073_SDSS_DR18.fits"), 0),
    "NGC3522": ("sdss", Path("/work/shared/data/spectra/sdss/NGC3522_SDSS_DR18.fits"), 0),
    **{f"MaNGA[{i}]": ("manga", DATA / "MaNGA_test_spectra.fits.gz", i) for i in range(5)},
}
#: name -> (library, FitConfig overrides)
CONFIGS = {
    "mileshc add8": ("mileshc", {"degree": 8, "gas_degree": 8, "mdegree": 0}),
    "mileshc mult10": ("mileshc", {"degree": -1, "gas_degree": -1, "mdegree": 10}),
    "emiles add8": ("emiles", {"degree": 8, "gas_degree": 8, "mdegree": 0}),
    "emiles mult10": ("emiles", {"degree": -1, "gas_degree": -1, "mdegree": 10}),
    "emiles mult10+gasadd2": ("emiles", {"degree": -1, "gas_degree": 2, "mdegree": 10}),
}
PAIRS = {"Ha/Hb": ("HA6563", "HB4861"), "OIII/Hb": ("OIII5007", "HB4861"), "NII/Ha": ("NII6584", "HA6563")}


def ppxf_recommended(batch, emiles_dir: Path) -> dict[str, float]:
    from ppxf import ppxf_util
    from ppxf.ppxf import ppxf

    wave = np.asarray(batch.wave[0], float)
    flux, ivar = np.asarray(batch.flux[0], float), np.asarray(batch.ivar[0], float)
    res = np.asarray(batch.resolution[0], float)
    z = float(batch.redshift[0])
    good = (np.asarray(batch.mask[0]) == 0) & (ivar > 0) & np.isfinite(flux)
    k = np.arange(wave.size)
    slope, icpt = np.polyfit(k, np.log(wave), 1)
    velscale = C_KMS * slope
    lam_rest = np.exp(icpt + slope * k) / (1 + z)
    fwhm_rest = lam_rest / np.where(np.isfinite(res), res, np.nanmedian(res))  # A at rest wavelengths
    files = sorted(glob.glob(str(emiles_dir / "Eun1.30Z*T*_iPp0.00_baseFe_linear_FWHM_variable.fits")))
    rows = []
    for f in files:
        with fits.open(f) as h:
            hdr, d = h[0].header, h[0].data.astype(float)
        rows.append(d)
    tw = np.asarray(air_to_vacuum(hdr["CRVAL1"] + (np.arange(d.size) + 1 - hdr.get("CRPIX1", 1)) * hdr["CDELT1"]))
    keep = (tw > lam_rest[0] / 1.02) & (tw < lam_rest[-1] * 1.02)
    tw = tw[keep]
    tpl = np.stack(rows)[:, keep].T
    sdiff = np.sqrt(np.clip(np.interp(tw, lam_rest, fwhm_rest) ** 2 - 2.51**2, 0, None)) / _FWHM
    tpl = ppxf_util.varsmooth(tw, tpl, sdiff)
    stars, ln_lam_t, _ = ppxf_util.log_rebin([tw[0], tw[-1]], tpl, velscale=velscale)
    stars /= np.median(stars)
    fwhm_fn = lambda lam: np.interp(lam, lam_rest, fwhm_rest)
    gas, names, lwave = ppxf_util.emission_lines(ln_lam_t, [lam_rest[0], lam_rest[-1]], fwhm_fn, tie_balmer=False, limit_doublets=False, vacuum=True)
    forb = np.array(["[" in n for n in names])
    component = np.array([0] * stars.shape[1] + [1 if not f else 2 for f in forb])
    scale = np.median(flux[good])
    noise = np.where(good, 1 / np.sqrt(np.where(good, ivar, 1)), 1e10) / scale
    t0 = time.perf_counter()
    pp = ppxf(np.column_stack([stars, gas]), flux / scale, noise, velscale, [[0, 150]] * 3, moments=[2, 2, 2],
              degree=-1, mdegree=10, lam=lam_rest, lam_temp=np.exp(ln_lam_t), component=component,
              gas_component=component > 0, gas_names=names, goodpixels=np.flatnonzero(good), quiet=True)  # fmt: skip
    out = {"V*": pp.sol[0][0], "sig*": pp.sol[0][1], "V_bal": pp.sol[1][0] - pp.sol[0][0], "sig_bal": pp.sol[1][1],
           "V_forb": pp.sol[2][0] - pp.sol[0][0], "sig_forb": pp.sol[2][1], "t": time.perf_counter() - t0}  # fmt: skip
    names = list(names)
    # gas_flux is the template weight times the template's sum over pixels (for a
    # doublet, both lines): the strong line's flux in flux x A is the weight (its line
    # has unit sum) times the pixel width in A at the line, ~ lambda * dln.
    weight = pp.gas_flux / gas.sum(0)
    flux_of = dict(zip(names, weight * np.asarray(lwave) * velscale / C_KMS * scale))
    alias = {"HA6563": "Halpha", "HB4861": "Hbeta", "OIII5007": "[OIII]5007_d", "NII6584": "[NII]6583_d"}
    for key, (a, b) in PAIRS.items():
        out[key] = flux_of[alias[a]] / flux_of[alias[b]]
    out["snr_Hb"] = pp.gas_flux[names.index("Hbeta")] / pp.gas_flux_error[names.index("Hbeta")] / np.sqrt(pp.chi2)
    return out


def skyledger_values(batch, lib: str, over: dict) -> dict[str, float]:
    t0 = time.perf_counter()
    res = fit_spectra(batch, TemplateLibrary.named(lib), FitConfig(**over))
    out = {"V*": res.velocity[0], "sig*": res.sigma[0], "t": time.perf_counter() - t0}
    ib, io = res.line_index("HB4861"), res.line_index("OIII5007")
    out.update({"V_bal": res.line_velocity[0, ib], "sig_bal": res.line_sigma[0, ib],
                "V_forb": res.line_velocity[0, io], "sig_forb": res.line_sigma[0, io]})  # fmt: skip
    for key, (a, b) in PAIRS.items():
        out[key] = res.line_flux[0, res.line_index(a)] / res.line_flux[0, res.line_index(b)]
    out["snr_Hb"] = res.line_snr[0, ib]
    out["flags"] = int(res.flags[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emiles-dir", type=Path, default=Path("/tmp/ppxfsd/ppxf-8.2.6/ppxf/miles_models"))
    ap.add_argument("--spectra", nargs="*", default=list(SPECTRA))
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--no-ppxf", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cols = ["V*", "sig*", "V_bal", "sig_bal", "V_forb", "sig_forb", "Ha/Hb", "OIII/Hb", "NII/Ha", "snr_Hb", "t"]
    for name in args.spectra:
        kind, path, i = SPECTRA[name]
        batch = read_sdss(path) if kind == "sdss" else read_manga(path)
        batch = SpectraBatch(*(None if a is None else np.asarray(a)[i : i + 1] for a in (batch.wave, batch.flux, batch.ivar, batch.redshift, batch.mask, batch.resolution)))
        print(f"\n{name} (z = {float(batch.redshift[0]):.5f})")
        print(f"| {'fit':24s} | " + " | ".join(f"{c:>8s}" for c in cols) + " |")
        rows = {} if args.no_ppxf else {"pPXF recommended": ppxf_recommended(batch, args.emiles_dir)}
        for cfg in args.configs:
            lib, over = CONFIGS[cfg]
            rows[cfg] = skyledger_values(batch, lib, over)
        for label, vals in rows.items():
            print(f"| {label:24s} | " + " | ".join(f"{vals[c]:8.3f}" if abs(vals[c]) < 10 else f"{vals[c]:8.1f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
