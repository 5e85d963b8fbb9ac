"""skyledger ``fit_spectra`` against pPXF on the bundled real spectra.

    python benchmarks/compare_ppxf.py [--markdown]

Needs the bench extra (``pip install ppxf``). Prints, per spectrum, stellar V and sigma
from both codes and, for every line with S/N > 10 in both, the flux difference and the
difference of its ratio to H-beta (H-alpha where H-beta is weak).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lines_common import real_batches, run_ppxf  # noqa: E402

from skyledger.compute.fitting import FitConfig, SpectrumFlag, TemplateLibrary, fit_spectra  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = FitConfig()
    lib = TemplateLibrary.named(config.templates)
    kin_rows, line_rows = [], []
    worst = {"dv": 0.0, "ds": 0.0, "ratio": 0.0, "flux": 0.0}
    for name, (batch, labels) in real_batches().items():
        t0 = time.perf_counter()
        res = fit_spectra(batch, lib, config)
        t_sky = time.perf_counter() - t0
        for i, label in enumerate(labels):
            pp = run_ppxf(batch, i, config, lib)
            if pp is None or res.flags[i] & 0b111:
                kin_rows.append(f"| {label} | | {int(res.flags[i])} | no fit | {'no fit' if pp is None else 'pPXF ran'} | | | | |")
                continue
            dv = res.velocity[i] - pp.velocity
            ds = res.sigma[i] / pp.sigma - 1
            # The goals apply at continuum S/N > 10 with no kinematics flags.
            counted = res.snr[i] > 10 and not res.flags[i] & (SpectrumFlag.SIGMA_AT_BOUND | SpectrumFlag.NOT_CONVERGED)
            if counted:
                worst["dv"] = max(worst["dv"], abs(dv))
                worst["ds"] = max(worst["ds"], abs(ds))
            kin_rows.append(
                f"| {label} | {res.snr[i]:.0f} | {int(res.flags[i])} | {res.velocity[i]:.1f} ± {res.velocity_err[i]:.1f} | {pp.velocity:.1f} ± {pp.velocity_err:.1f} "
                f"| {dv:+.1f} | {res.sigma[i]:.1f} ± {res.sigma_err[i]:.1f} | {pp.sigma:.1f} ± {pp.sigma_err:.1f} | {100 * ds:+.1f} % |"
            )
            ref = "HB4861"
            j_ref = res.line_index(ref)
            if not (res.line_snr[i, j_ref] > 10 and pp.line_flux_err.get(ref, 0) > 0 and pp.line_flux[ref] / pp.line_flux_err[ref] > 10):
                ref = "HA6563"
                j_ref = res.line_index(ref)
            for lid in res.line_ids:
                j = res.line_index(lid)
                f_s, e_s = res.line_flux[i, j], res.line_flux_err[i, j]
                f_p, e_p = pp.line_flux.get(lid, np.nan), pp.line_flux_err.get(lid, np.nan)
                if not (f_s / e_s > 10 and f_p / e_p > 10):
                    continue
                dflux = f_s / f_p - 1
                r_s = f_s / res.line_flux[i, j_ref]
                r_p = f_p / pp.line_flux.get(ref, np.nan)
                dratio = r_s / r_p - 1
                worst["flux"] = max(worst["flux"], abs(dflux))
                if np.isfinite(dratio):
                    worst["ratio"] = max(worst["ratio"], abs(dratio))
                line_rows.append(
                    f"| {label} | {lid} | {f_s / e_s:.0f} | {100 * dflux:+.1f} % | {lid}/{ref} | {r_s:.4f} | {r_p:.4f} | {100 * dratio:+.1f} % |"
                )
        print(f"# {name}: skyledger {t_sky:.2f} s for {len(labels)} spectra", file=sys.stderr)
    print("| spectrum | S/N | flags | V skyledger (km/s) | V pPXF | ΔV | σ skyledger (km/s) | σ pPXF | Δσ/σ |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(kin_rows))
    print()
    print("| spectrum | line | S/N | Δflux | ratio | skyledger | pPXF | Δratio |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(line_rows))
    print()
    print(
        f"continuum S/N > 10, unflagged: worst |ΔV| = {worst['dv']:.1f} km/s; worst |Δσ/σ| = {100 * worst['ds']:.1f} %; "
        f"worst |Δflux| = {100 * worst['flux']:.1f} %; worst |Δratio| = {100 * worst['ratio']:.1f} % (S/N > 10)"
    )


if __name__ == "__main__":
    main()
