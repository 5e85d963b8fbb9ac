"""Scaling of the ``lines`` fit with the number of spectra, and its memory.

    python benchmarks/lines_scaling.py                          # 1,000 / 3,000 / 10,000 spectra
    python benchmarks/lines_scaling.py --sizes 256 1024 --page 128
    python benchmarks/lines_scaling.py --workers 2 --threads 1     # as SKYLEDGER_CPU_WORKERS=2

Production (``skyledger process``) pages pending spectra from the database in batches
of ``--page`` and fits each batch with ``fit_spectra``; this benchmark does the same with
synthetic SDSS-like spectra made page by page (``make_synthetic`` with a seed per page),
so nothing but one page is ever in memory. One child process fits the largest size and
reports, at each of ``--sizes`` spectra, the rate over the spectra since the previous
checkpoint and its peak resident memory so far (``ru_maxrss``): the claims checked are
that spectra/s stays constant and peak memory stays flat as the count grows.
Generating the synthetic spectra is excluded from the fit time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from skyledger.compute.fitting import FitConfig, TemplateLibrary, fit_spectra
from skyledger.testing.spectra import make_synthetic


def _workers_rss_mib() -> float:
    """Resident memory of this process's worker processes now (0 without workers)."""
    import psutil

    return sum(c.memory_info().rss for c in psutil.Process().children(recursive=True)) / 2**20


def _child(sizes: list[int], page: int, snr: float, threads: int, device: str, workers: int) -> None:
    torch.set_num_threads(threads)
    lib = TemplateLibrary.mileshc()
    config = FitConfig()
    checkpoints = sorted(sizes)
    n_done = n_flagged = 0
    fit_s = 0.0
    last_n, last_s = 0, 0.0
    sq_err = 0.0
    for k in range(math.ceil(checkpoints[-1] / page)):
        # Pages end exactly on the checkpoints, so each is measured on its own spectra.
        n = min(page, next(c for c in checkpoints if c > n_done) - n_done)
        batch, truth = make_synthetic(n, snr=snr, seed=1000 + k, templates=lib)
        t0 = time.perf_counter()
        res = fit_spectra(batch, lib, config, device, workers=workers)
        fit_s += time.perf_counter() - t0
        n_done += n
        n_flagged += int((res.flags != 0).sum())
        sq_err += float(np.nansum((res.velocity - truth.velocity) ** 2))
        del batch, truth, res
        if n_done in checkpoints:
            print(json.dumps({
                "n": n_done, "fit_s": fit_s, "spectra_per_s": (n_done - last_n) / (fit_s - last_s),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "workers_rss_mib": _workers_rss_mib(),
                "flagged": n_flagged, "v_rms_kms": math.sqrt(sq_err / n_done), "load": os.getloadavg()[0],
            }), flush=True)  # fmt: skip
            last_n, last_s = n_done, fit_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--page", type=int, default=256, help="spectra per fit_spectra call (the runner's batch size)")
    ap.add_argument("--snr", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1, help="worker processes of fit_spectra")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.sizes, args.page, args.snr, args.threads, args.device, args.workers)
        return
    print(f"# torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, device {args.device}, page {args.page}, S/N {args.snr}, {args.workers} worker(s)")  # fmt: skip
    print("| spectra | fit time so far (s) | spectra/s since previous row | peak RSS so far (MiB) | workers' RSS now (MiB) | flagged | V rms vs truth (km/s) | load avg |")
    print("|---|---|---|---|---|---|---|---|")
    cmd = [sys.executable, __file__, "--child", "--sizes", *map(str, args.sizes), "--page", str(args.page),
           "--snr", str(args.snr), "--threads", str(args.threads), "--device", args.device,
           "--workers", str(args.workers)]  # fmt: skip
    # The child is a fresh process so that its peak memory is the fit's alone.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            r = json.loads(line)
            print(f"| {r['n']:,} | {r['fit_s']:.0f} | {r['spectra_per_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['workers_rss_mib']:.0f} | "
                  f"{r['flagged']} | {r['v_rms_kms']:.2f} | {r['load']:.1f} |", flush=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"the fitting process failed with exit status {proc.returncode}")


if __name__ == "__main__":
    main()
