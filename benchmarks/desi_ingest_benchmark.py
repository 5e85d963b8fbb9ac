"""DESI coadd ingest throughput: the production loader against ``psql \\copy`` of the same rows.

    .venv/bin/python benchmarks/desi_ingest_benchmark.py --quick       # 4 files, ~2,000 spectra
    .venv/bin/python benchmarks/desi_ingest_benchmark.py --files 20 --rounds 4 --cleanup

The files are petal coadds as DESI writes them (``write_desi_coadd``: the usable fibre of
the EDR sample in ``tests/data/desi`` tiled to 500 fibres with fresh noise, 10 of them
unassigned; B/R/Z arms with 11-diagonal resolution matrices, ~223 MB a file). Two peers,
each into its own freshly migrated database on the same server, as in
``ingest_benchmark.py``, taking turns on every round's block of files:

* production: ``ingest_paths(reader="desi_coadd")`` (read, merge the arms, compute R,
  COPY into the database; ``READ_WORKERS`` reader processes);
* ceiling: the identical ``source`` and ``spectrum`` rows production wrote in the round,
  exported to binary COPY files before the clock starts, then ``psql \\copy`` (only the
  psql calls timed; ``CopyCeiling`` of ``ingest_peers.py``).

Rates are per spectrum (one merged spectrum per usable fibre); a peer's overall rate is
its spectra over its summed seconds. The JSON result goes to ``WORKDIR/desi_ingest_benchmark.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_databases import drop_database, fresh_database, open_server  # noqa: E402
from ingest_benchmark import log, machine_facts  # noqa: E402
from ingest_peers import DB_NAMES, CopyCeiling, run_production  # noqa: E402

from skyledger.schema import embedded  # noqa: E402
from skyledger.testing.desi_files import write_desi_coadd  # noqa: E402

TEMPLATE = Path(__file__).resolve().parents[1] / "tests" / "data" / "desi" / "coadd-5-169-thru20210419.fits"
PEERS = ("production", "copy")


def generate(files_dir: Path, n_files: int, n_fibres: int, seed: int) -> list[Path]:
    manifest = files_dir.with_name(files_dir.name + ".manifest.json")
    wanted = {"files": n_files, "fibres": n_fibres, "seed": seed, "generator": "write_desi_coadd"}
    if manifest.exists() and json.loads(manifest.read_text()) == wanted:
        paths = sorted(files_dir.glob("coadd-*.fits"))
        if len(paths) == n_files:
            return paths
    shutil.rmtree(files_dir, ignore_errors=True)
    files_dir.mkdir(parents=True)
    paths = [
        write_desi_coadd(files_dir / f"coadd-{k % 10}-{1000 + k // 10}-thru20210419.fits", TEMPLATE, n_fibres=n_fibres,
                         seed=seed + k, first_targetid=39_633_300_000_000_000 + 1000 * k)  # fmt: skip
        for k in range(n_files)
    ]
    manifest.write_text(json.dumps(wanted))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20, help="petal coadd files (500 fibres each)")
    ap.add_argument("--fibres", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "skyledger-desi-benchmark")
    ap.add_argument("--database-url", help="a server to create the benchmark databases on (default: embedded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="4 files (~2,000 spectra) in 2 rounds")
    ap.add_argument("--cleanup", action="store_true", help="delete the generated files and the embedded server")
    args = ap.parse_args()
    if args.quick:
        args.files, args.rounds = 4, 2
    args.rounds = max(1, min(args.rounds, args.files))
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    files_dir = workdir / "files"
    res: dict[str, Any] = {"machine": machine_facts(), "loadavg_start": os.getloadavg(),
                           "command": " ".join([Path(sys.executable).name, *sys.argv])}  # fmt: skip
    t = time.perf_counter()
    files = generate(files_dir, args.files, args.fibres, args.seed)
    res["generation_s"] = time.perf_counter() - t
    res["input"] = {"files": len(files), "bytes_per_file": sum(f.stat().st_size for f in files) / len(files)}
    server = open_server(args.database_url, workdir)
    res["machine"]["postgresql"] = server.version
    rounds: list[dict[str, Any]] = []
    try:
        for peer in PEERS:
            fresh_database(server, DB_NAMES[peer])
        ceiling = CopyCeiling(server, workdir)
        bounds = np.linspace(0, len(files), args.rounds + 1).round().astype(int)
        for k in range(args.rounds):
            block = files[bounds[k] : bounds[k + 1]]
            r = {"production": run_production(server, block, db_name=DB_NAMES["production"], read_workers=None,
                                              reader="desi_coadd", survey="desi-bench")}  # fmt: skip
            r["copy"] = ceiling.run()
            r["loadavg_after"] = os.getloadavg()
            rounds.append(r)
            log(f"round {k + 1}/{args.rounds}: production {r['production']['spectra_per_s']:.1f}, copy "
                f"{r['copy']['spectra_per_s']:.1f} spectra/s; ratio {r['production']['spectra_per_s'] / r['copy']['spectra_per_s']:.3f}")  # fmt: skip
    finally:
        for peer in PEERS:
            drop_database(server, DB_NAMES[peer])
        if server.embedded_dir is not None:
            embedded.stop(server.embedded_dir)
            if args.cleanup:
                shutil.rmtree(server.embedded_dir, ignore_errors=True)
        if args.cleanup:
            shutil.rmtree(files_dir, ignore_errors=True)
            files_dir.with_name(files_dir.name + ".manifest.json").unlink(missing_ok=True)
    res["rounds"] = rounds
    tot = {}
    for peer in PEERS:
        n = sum(r[peer]["spectra"] for r in rounds)
        wall = sum(r[peer]["wall_s"] for r in rounds)
        tot[peer] = {"spectra": n, "wall_s": wall, "spectra_per_s": n / wall}
    res["totals"] = tot
    res["ratio"] = tot["production"]["spectra_per_s"] / tot["copy"]["spectra_per_s"]
    res["loadavg_end"] = os.getloadavg()
    (workdir / "desi_ingest_benchmark.json").write_text(json.dumps(res, indent=2))
    p, c = tot["production"], tot["copy"]
    print("| peer | spectra | wall (s) | spectra/s | production ÷ peer |\n|---|---:|---:|---:|---:|")
    print(f"| production `ingest_paths` (desi_coadd) | {p['spectra']:,} | {p['wall_s']:.1f} | **{p['spectra_per_s']:.1f}** | 1 |")
    print(f"| `psql \\copy` of the same rows | {c['spectra']:,} | {c['wall_s']:.1f} | {c['spectra_per_s']:.1f} | **{res['ratio']:.3f}** |")
    per_round = ", ".join(f"{r['production']['spectra_per_s'] / r['copy']['spectra_per_s']:.3f}" for r in rounds)
    peak = max(r["production"]["peak_rss_mib"] for r in rounds)
    print(f"\nper round production ÷ copy: {per_round}; production peak RSS {peak:.0f} MiB; "
          f"load {res['loadavg_start'][0]:.1f} -> {res['loadavg_end'][0]:.1f}")  # fmt: skip
    print(json.dumps(res["machine"]))


if __name__ == "__main__":
    main()
