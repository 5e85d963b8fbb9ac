"""Template mismatch: bias and pulls of Halpha/Hbeta, Hbeta flux and sigma_gas on MaStar-SSP spectra.

    python benchmarks/lines_mismatch.py [--config degree=-1,mdegree=10,templates=emiles] [--n 48]
                                        [--snr 10 20 50] [--sigma 30 60 120] [--markdown]

Spectra from ``skyledger.testing.mismatch_spectra`` (MaStar SSPs, a library the fit does
not use; old + intermediate-age mixes with Lick Hbeta absorption of ~3-4 A; Hbeta
emission EW 1.5-6 A; Halpha/Hbeta 2.86-4.8; stellar dust and a few-% flux-calibration
error) are fitted with ``fit_spectra`` (FitConfig
defaults, changed by ``--config``). Per S/N and sigma_gas: median bias and robust
scatter (1.4826 MAD) of each quantity, and the mean, standard deviation and robust
width (1.4826 MAD) of its pulls (fit - truth) / error. The Halpha/Hbeta error is
propagated from the two flux errors (covariance neglected). Goal (issue 21):
|median bias of Halpha/Hbeta| < 3 % at S/N >= 20, pull widths near 1.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from skyledger.compute.fitting import fit_spectra
from skyledger.testing.fit_config import parse_fit_config
from skyledger.testing.mismatch_spectra import fitted_decrement, make_mismatch


def nmad(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def stats(fit: np.ndarray, err: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Relative bias (%), scatter (%), pulls; over the finite entries."""
    ok = np.isfinite(fit) & np.isfinite(err) & (err > 0)
    rel = 100 * (fit[ok] / true[ok] - 1)
    pull = (fit[ok] - true[ok]) / err[ok]
    return {"bias": float(np.median(rel)), "scatter": nmad(rel), "pull_mean": float(np.mean(pull)),
            "pull_sd": float(np.std(pull)), "pull_nmad": nmad(pull), "n": int(ok.sum())}  # fmt: skip


def measure(res, truth) -> dict[str, dict[str, float]]:
    """The table's quantities for one fitted set."""
    ratio, rerr = fitted_decrement(res)
    ib, ia, io = res.line_index("HB4861"), res.line_index("HA6563"), res.line_index("OIII5007")
    return {
        "Hα/Hβ": stats(ratio, rerr, truth.balmer_decrement),
        "Hβ flux": stats(res.line_flux[:, ib], res.line_flux_err[:, ib], truth.line_flux["HB4861"]),
        "Hα flux": stats(res.line_flux[:, ia], res.line_flux_err[:, ia], truth.line_flux["HA6563"]),
        "σ gas (Balmer)": stats(res.line_sigma[:, ia], res.line_sigma_err[:, ia], truth.gas_sigma[:, 0]),
        "σ gas (forbidden)": stats(res.line_sigma[:, io], res.line_sigma_err[:, io], truth.gas_sigma[:, 1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="", help="FitConfig fields and templates=NAME")
    ap.add_argument("--n", type=int, default=48, help="spectra per (S/N, sigma) cell")
    ap.add_argument("--snr", type=float, nargs="+", default=[10.0, 20.0, 50.0])
    ap.add_argument("--sigma", type=float, nargs="+", default=[30.0, 60.0, 120.0])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config, templates, ignored = parse_fit_config(args.config)
    if ignored:
        print(f"# ignored (not in this installation): {', '.join(ignored)}", file=sys.stderr)
    print(f"Configuration: `{args.config or 'FitConfig() defaults'}`" + (f" (ignored here: {', '.join(ignored)})" if ignored else ""))
    print()
    print("| S/N | σ gas (km/s) | quantity | median bias | scatter | pull mean | pull sd | pull width (NMAD) | N |")
    print("|---|---|---|---|---|---|---|---|---|")
    for snr in args.snr:
        for sg in args.sigma:
            batch, truth = make_mismatch(args.n, snr=snr, gas_sigma=sg, seed=int(1000 * snr + sg))
            t0 = time.perf_counter()
            res = fit_spectra(batch, templates, config)
            bad = int(np.sum(res.flags & 0b111 != 0))
            for name, s in measure(res, truth).items():
                print(f"| {snr:g} | {sg:g} | {name} | {s['bias']:+.2f} % | {s['scatter']:.2f} % | {s['pull_mean']:+.2f} | {s['pull_sd']:.2f} "
                      f"| {s['pull_nmad']:.2f} | {s['n']} |")  # fmt: skip
            print(f"# S/N {snr:g} σ {sg:g}: {time.perf_counter() - t0:.1f} s, {bad} failed; Lick Hβ absorption "
                  f"{np.median(truth.hb_absorption_ew):.1f} Å (median), Hβ emission EW {np.median(truth.hb_emission_ew):.1f} Å, "
                  f"median stellar χ²/dof {np.nanmedian(res.stellar_chi2_dof):.2f}", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
