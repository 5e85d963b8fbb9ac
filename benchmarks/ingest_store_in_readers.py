"""Experiment: what would reader processes that store their own groups gain?

    /work/venv/bin/python benchmarks/ingest_store_in_readers.py --workdir /var/tmp/ip8k --n-spectra 8000 --rounds 3

Not a production path. Production (``ingest_paths``) reads files in two worker processes,
pickles each prepared file to the loader process, and two loader threads commit groups of
16 files. Here two processes each take half of the files in order, read them with the
same ``prepare`` and store them with the same ``Loader._store_members`` (groups of 16,
one transaction each), so nothing is pickled between processes and no loader process
runs. What it leaves out is what production coordinates: copies of a file judged in file
order across the two halves, outcomes reported in file order, one progress stream. The
two take turns, each into a freshly migrated database, process starts included; the
ratio says how much CPU the loader hop costs on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest_benchmark as ib  # noqa: E402 - the benchmark's data, server and production peer

from skyledger.schema import embedded  # noqa: E402


def _store_half(args: tuple[str, list[str]]) -> int:
    url, paths = args
    from sqlalchemy import create_engine

    from skyledger.ingest.config import SurveySpec
    from skyledger.ingest.loader import Loader, _Group
    from skyledger.ingest.read_ahead import Job, prepare
    from skyledger.schema.database import Database

    engine = create_engine(url)
    survey = SurveySpec(name=ib.SURVEY, reader="sdss")
    loaded = 0
    with Loader(Database(engine=engine, url=url, embedded=None)) as loader:
        group = _Group()
        for path in paths:
            started = time.perf_counter()
            if not group.admit(prepare(Job(path, survey, "sdss"), None), "sdss", started):
                raise SystemExit(f"{path} cannot join a group; this experiment takes fresh SDSS files only")
            if group.full():
                loaded += sum(o.status == "loaded" for o in loader._store_members(group.take()))
        loaded += sum(o.status == "loaded" for o in loader._store_members(group.take()))
    engine.dispose()
    return loaded


def run_direct(server: ib.Server, files: list[Path]) -> dict[str, float]:
    name = ib.DB_NAMES["production"]
    url = server.url(name).render_as_string(hide_password=False)
    half = len(files) // 2
    ib.settle()
    started = time.perf_counter()
    with mp.get_context("spawn").Pool(2) as pool:
        n = sum(pool.map(_store_half, [(url, [str(p) for p in files[:half]]), (url, [str(p) for p in files[half:]])],
                         chunksize=1))  # fmt: skip
    wall = time.perf_counter() - started
    if n != len(files):
        raise SystemExit(f"the readers stored {n} of {len(files)} files")
    return {"spectra": n, "wall_s": wall, "spectra_per_s": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-spectra", type=int, default=8000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp/skyledger-ingest-benchmark"))
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    files = ib.generate_files(workdir / "files", args.n_spectra, 4000, 0)
    for f in files:
        f.read_bytes()  # both peers read from the page cache
    server = ib.open_server(None, workdir)
    rows = []
    try:
        for k in range(args.rounds):
            rate = {}
            for peer in ("production", "direct"):
                ib.fresh_database(server, ib.DB_NAMES["production"])
                if peer == "production":
                    r = ib.run_production(server, files, db_name=ib.DB_NAMES["production"], read_workers=None)
                else:
                    r = run_direct(server, files)
                rate[peer] = r["spectra_per_s"]
            rows.append(rate)
            ib.log(f"round {k + 1}: production {rate['production']:.1f}, readers storing {rate['direct']:.1f} spectra/s")
    finally:
        ib.drop_database(server, ib.DB_NAMES["production"])
        if server.embedded_dir is not None:
            embedded.stop(server.embedded_dir)
    print("| round | production spectra/s | readers storing their groups | ratio |\n|---:|---:|---:|---:|")
    for k, r in enumerate(rows, 1):
        print(f"| {k} | {r['production']:.1f} | {r['direct']:.1f} | {r['direct'] / r['production']:.2f} |")
    total = {p: len(rows) / sum(1 / r[p] for r in rows) for p in ("production", "direct")}
    print(f"| all | {total['production']:.1f} | {total['direct']:.1f} | {total['direct'] / total['production']:.2f} |")


if __name__ == "__main__":
    main()
