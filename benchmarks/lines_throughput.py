"""Throughput of the full ``lines`` fit (stars + gas) against pPXF on the same spectra.

    python benchmarks/lines_throughput.py                  # small default run
    python benchmarks/lines_throughput.py --sizes 16 64 256 1024 --ppxf 16
    python benchmarks/lines_throughput.py --sizes 10000 --chunk 128   # large run

Synthetic SDSS-like spectra (S/N 30, MILESHC continuum, 13 emission lines, see
``skyledger.compute.fitting.synthetic``) are fitted by ``fit_spectra`` at several batch
sizes and, one by one, by pPXF with the same settings (``lines_common.run_ppxf``).
Both are timed in this process on the same CPU threads, and their accuracy against the
known truth is printed, so the speed-up is quoted at a measured agreement.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lines_common import run_ppxf  # noqa: E402

from skyledger.compute.fitting import FitConfig, SpectraBatch, TemplateLibrary, fit_spectra  # noqa: E402
from skyledger.compute.fitting.synthetic import make_synthetic  # noqa: E402


def _subset(batch: SpectraBatch, n: int) -> SpectraBatch:
    return SpectraBatch(
        wave=batch.wave[:n], flux=batch.flux[:n], ivar=batch.ivar[:n], redshift=batch.redshift[:n],
        resolution=None if batch.resolution is None else batch.resolution[:n],
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--ppxf", type=int, default=8, help="spectra fitted by pPXF (0: skip)")
    ap.add_argument("--chunk", type=int, default=None, help="FitConfig.chunk_size (default: auto)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--snr", type=float, default=30.0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lib = TemplateLibrary.mileshc()
    config = FitConfig(chunk_size=args.chunk)
    nmax = max(max(args.sizes), args.ppxf)
    t0 = time.perf_counter()
    batch, truth = make_synthetic(nmax, snr=args.snr, seed=42, templates=lib)
    print(f"# {nmax} synthetic spectra in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, device {args.device}")  # fmt: skip
    fit_spectra(_subset(batch, 2), lib, config, args.device)  # warm-up (template cache, allocator)
    rows = []
    res = None
    for n in args.sizes:
        sub = _subset(batch, n)
        t0 = time.perf_counter()
        res = fit_spectra(sub, lib, config, args.device)
        dt = time.perf_counter() - t0
        rows.append((n, dt, n / dt))
        print(f"skyledger batch {n:6d}: {dt:8.2f} s  {n / dt:8.2f} spectra/s", flush=True)
    if args.ppxf:
        n = args.ppxf
        sub = _subset(batch, n)
        res = fit_spectra(sub, lib, config, args.device)
        t0 = time.perf_counter()
        pps = [run_ppxf(sub, i, config, lib) for i in range(n)]
        dt = time.perf_counter() - t0
        rate_pp = n / dt
        print(f"pPXF (stars + gas, 2 stages) {n:4d}: {dt:8.2f} s  {rate_pp:8.3f} spectra/s")
        best = max(r[2] for r in rows)
        print(f"speed-up (best skyledger rate / pPXF rate): {best / rate_pp:.1f}x")
        v_pp = np.array([p.velocity for p in pps])
        s_pp = np.array([p.sigma for p in pps])
        ha_pp = np.array([p.line_flux["HA6563"] for p in pps])
        j = res.line_index("HA6563")
        tv, ts, tha = truth.velocity[:n], truth.sigma[:n], truth.line_flux["HA6563"][:n]
        for name, v, s, ha in (("skyledger", res.velocity, res.sigma, res.line_flux[:, j]), ("pPXF", v_pp, s_pp, ha_pp)):
            print(f"{name:9s} vs truth: V bias {np.mean(v - tv):+.2f} rms {np.std(v - tv):.2f} km/s; "
                  f"sigma bias {100 * np.mean(s / ts - 1):+.2f} % rms {100 * np.std(s / ts - 1):.2f} %; "
                  f"H-alpha flux bias {100 * np.mean(ha / tha - 1):+.2f} % rms {100 * np.std(ha / tha - 1):.2f} %")  # fmt: skip
        print(f"skyledger - pPXF: |dV| max {np.max(np.abs(res.velocity - v_pp)):.2f} km/s, "
              f"|dsigma/sigma| max {100 * np.max(np.abs(res.sigma / s_pp - 1)):.2f} %, "
              f"|dF(Ha)/F| max {100 * np.max(np.abs(res.line_flux[:, j] / ha_pp - 1)):.2f} %")  # fmt: skip


if __name__ == "__main__":
    main()
