"""`skyledger process` for the lines task end to end, against the fit alone.

    python benchmarks/lines_process.py                      # 512 spectra, 2 workers, 3 rounds
    python benchmarks/lines_process.py --n 2048 --workers 2 --rounds 2

What an operator gets per night is the rate of the whole pipeline: pending anti-join,
reading the pixel arrays from PostgreSQL, the fit, and COPYing the results back, one
transaction per batch. The peer is the fit alone (`fit_spectra` with the same worker
processes, on the same batches, already in memory), measured in the same process,
interleaved with the pipeline round by round; the ratio is the share of the fit's
rate that survives the database work around it.

Set-up (untimed): ``--n`` synthetic SDSS spectra (``write_sdss_spectra``) ingested into
a fresh database on the embedded server under ``--workdir`` (or the server that
``--database-url`` names). Each round processes every spectrum again as a new task
version (a new run), so the results tables grow as they would night after night.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_databases import drop_database, fresh_database, open_server  # noqa: E402

from skyledger.compute.framework import runner  # noqa: E402
from skyledger.compute.fitting import TemplateLibrary, fit_spectra  # noqa: E402
from skyledger.compute.fitting.workers import shutdown_pool  # noqa: E402
from skyledger.compute.tasks.lines import LinesParams, LinesTask  # noqa: E402
from skyledger.ingest.batch import ingest_paths  # noqa: E402
from skyledger.testing.sdss_files import write_sdss_spectra  # noqa: E402
from skyledger.schema import embedded  # noqa: E402
from skyledger.schema.database import Database  # noqa: E402

_DB = "skyledger_bench_lines_process"


def _timed(phase: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` adding its wall-clock time to ``TimedLines.phases[phase]``."""

    def timed(self: LinesTask, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            TimedLines.phases[phase] += time.perf_counter() - t0

    return timed


class TimedLines(LinesTask):
    """The lines task with wall-clock time per phase (the runner calls these methods)."""

    phases: collections.Counter[str] = collections.Counter()
    pending = _timed("pending", LinesTask.pending)
    load = _timed("load", LinesTask.load)
    compute = _timed("fit", LinesTask.compute)


def _server_cpu_s() -> float:
    """CPU seconds used so far by this machine's PostgreSQL processes (0 if none are visible)."""
    total = 0.0
    for proc in psutil.process_iter(["name"]):
        try:
            if "postgres" in (proc.info["name"] or ""):
                t = proc.cpu_times()
                total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="spectra to ingest and process")
    ap.add_argument("--workers", type=int, default=2, help="fit worker processes (SKYLEDGER_CPU_WORKERS)")
    ap.add_argument("--batch-size", type=int, default=64, help="spectra per runner batch (the runner's default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/skyledger-bench-lines-process"))
    ap.add_argument("--database-url", default=None, help="an external server (default: the embedded one)")
    args = ap.parse_args()
    torch.set_num_threads(1 if args.workers > 1 else torch.get_num_threads())
    args.workdir.mkdir(parents=True, exist_ok=True)

    server = open_server(args.database_url, args.workdir)
    url = fresh_database(server, _DB)
    engine = create_engine(url, pool_pre_ping=True)
    db = Database(engine=engine, url=url.render_as_string(hide_password=False), embedded=None)
    try:
        files = write_sdss_spectra(args.workdir / "files", args.n, seed=11)
        outcome = ingest_paths(db, files)
        loaded = sum(o.status == "loaded" for o in outcome.outcomes)
        if loaded != args.n:
            raise SystemExit(f"set-up: {loaded} of {args.n} synthetic files loaded")
        print(f"# {args.n} synthetic SDSS spectra, {args.workers} worker(s), batches of {args.batch_size}; torch "
              f"{torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
              f"PostgreSQL {server.version}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip

        # The peer's input: the same batches the runner will make, read once, untimed.
        task = TimedLines()
        params = LinesParams()
        config = task.fit_config(params)
        lib = TemplateLibrary.mileshc()
        with db.session() as session:
            ids = session.execute(text("SELECT id FROM spectrum ORDER BY wave_grid_id, id")).scalars().all()
            batches = [task.load(session, ids[i : i + args.batch_size], params).spectra for i in range(0, len(ids), args.batch_size)]
        fit_spectra(batches[0], lib, config, workers=args.workers)  # spawns the workers; untimed

        fit_rate, proc_rate, server_cpu, phases = [], [], [], collections.Counter()
        def fit_alone() -> float:
            t0 = time.perf_counter()
            for b in batches:
                fit_spectra(b, lib, config, workers=args.workers)
            return args.n / (time.perf_counter() - t0)

        def pipeline(rnd: int) -> float:
            versioned = type(f"TimedLinesR{rnd}", (TimedLines,), {"version": LinesTask.version + 100 + rnd})()
            TimedLines.phases.clear()
            cpu0 = _server_cpu_s()
            t0 = time.perf_counter()
            summary = runner.process(db, versioned, params, workers=args.workers, batch_size=args.batch_size)
            wall = time.perf_counter() - t0
            server_cpu.append((_server_cpu_s() - cpu0) / wall)
            if summary.status != "succeeded" or summary.n_inputs != args.n:
                raise SystemExit(f"round {rnd + 1}: process ended {summary.status} after {summary.n_inputs} spectra")
            TimedLines.phases["write and bookkeeping"] = wall - sum(TimedLines.phases.values())
            phases.update({k: v / wall for k, v in TimedLines.phases.items()})
            return args.n / wall

        fit_rate, proc_rate, server_cpu, phases = [], [], [], collections.Counter()
        for rnd in range(args.rounds):
            # Alternate which goes first, so a trend in the machine's load favours neither.
            if rnd % 2 == 0:
                fit_rate.append(fit_alone())
                proc_rate.append(pipeline(rnd))
            else:
                proc_rate.append(pipeline(rnd))
                fit_rate.append(fit_alone())
            print(f"round {rnd + 1}: fit alone {fit_rate[-1]:.1f}/s, skyledger process {proc_rate[-1]:.1f}/s, "
                  f"ratio {proc_rate[-1] / fit_rate[-1]:.3f}, PostgreSQL busy {100 * server_cpu[-1]:.1f} % of a core "
                  f"during process, load {os.getloadavg()[0]:.1f}", flush=True)

        ratios = np.array(proc_rate) / np.array(fit_rate)
        print(f"fit alone (fit_spectra, same batches, in memory): {np.median(fit_rate):.1f} spectra/s (median round)")
        print(f"skyledger process --task lines:                   {np.median(proc_rate):.1f} spectra/s (median round)")
        print(f"process / fit alone: {np.median(ratios):.3f} (per round {', '.join(f'{r:.3f}' for r in ratios)})")
        print("share of the process wall time: " + ", ".join(f"{k} {100 * v / args.rounds:.1f} %" for k, v in phases.most_common()))
    finally:
        shutdown_pool()
        engine.dispose()
        drop_database(server, _DB)
        if server.embedded_dir is not None:
            embedded.stop(server.embedded_dir)


if __name__ == "__main__":
    main()
