"""skyledger's TAP service against GAVO DaCHS serving the same rows.

    python benchmarks/tap_peers.py prepare --workdir /var/tmp/tapbench      # once: rows into both
    sudo bash benchmarks/dachs/setup.sh /var/tmp/tapbench/spectra.csv       # once: DaCHS table + server
    python benchmarks/tap_peers.py run --workdir /var/tmp/tapbench          # the measurements

``prepare`` makes ``--rows`` (1,000,000) seeded synthetic catalogue entries on a
survey-like footprint (ra 120..180 deg, dec -10..+14 deg, uniform on the sphere within
it, so a 0.1 deg cone holds ~20 rows), writes them as ``WORKDIR/spectra.csv`` for DaCHS
(``benchmarks/dachs/q.rd`` reads it) and COPYs the very same values into the owner
tables of a private skyledger database (survey, ingest_file, source, spectrum with
``n_pix = 0``), so ``catalog.spectra`` there shows them. Both sides then answer
``FROM catalog.spectra`` (the DaCHS table lives in a schema named ``catalog``), so the
benchmark sends identical ADQL text to both.

``run`` starts ``skyledger serve`` on that database (or uses ``--skyledger-url``), finds
the DaCHS server by its port, and measures, peers interleaved query by query:

* cone: ``SELECT <cols> FROM catalog.spectra WHERE 1=CONTAINS(POINT('ICRS', ra, dec),
  CIRCLE('ICRS', ra0, dec0, 0.1))``, sync, ``--cones`` seeded centres (the first at
  150, 2), p50/p95 of the request-to-last-byte time;
* sync 100k: ``SELECT TOP 100000 <cols> FROM catalog.spectra``, ``--sync-repeats`` times;
* async 1M: all rows, VOTable BINARY2, ``--async-repeats`` times: submit, poll the phase
  every 50 ms, download the result; rows/s counts the whole (download included);
* peak RSS of each server process (with its children: DaCHS runs async jobs in a child
  process) sampled every 20 ms during the async 10k-row and 1M-row results, against its
  RSS before: a streamed VOTable keeps it flat in the result size.

Every result is checked: row counts from the VOTable (parsed once per peer and query
kind, outside the clock), and the cone results' spectrum_id sets must be equal between
peers. The JSON result goes to ``WORKDIR/tap_peers.json``; a Markdown table is printed.
Nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import psycopg

#: The columns of catalog.spectra both peers serve (benchmarks/dachs/q.rd declares the same).
COLUMNS = ["spectrum_id", "survey", "object_id", "ra", "dec", "z", "n_pix", "flux_unit", "wave_min", "wave_max"]
SURVEY = "bench-sdss"
FLUX_UNIT = "1e-17 erg / (Angstrom s cm2)"
#: Spectra per ingest_file row (an SDSS plate's worth).
FILE_ROWS = 1000
FOOTPRINT = {"ra": (120.0, 180.0), "dec": (-10.0, 14.0)}
CONE_RADIUS_DEG = 0.1
BINARY2 = "application/x-votable+xml;serialization=BINARY2"


# ---------------------------------------------------------------- data


def synthetic_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded catalogue entries, uniform on the sphere within the footprint."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(*FOOTPRINT["ra"], n)
    s0, s1 = np.sin(np.radians(FOOTPRINT["dec"]))
    dec = np.degrees(np.arcsin(rng.uniform(s0, s1, n)))
    return {
        "spectrum_id": np.arange(1, n + 1, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "z": rng.uniform(0.0, 0.8, n),
        "wave_min": 3600.0 + rng.uniform(0.0, 20.0, n),
        "wave_max": 10400.0 - rng.uniform(0.0, 20.0, n),
    }


def object_id(spectrum_id: int) -> str:
    """SDSS-like plate-mjd-fiber name, one plate per FILE_ROWS spectra."""
    plate, fiber = divmod(int(spectrum_id) - 1, FILE_ROWS)
    return f"{3000 + plate:04d}-{55000 + plate}-{fiber + 1:04d}"


def text_rows(rows: dict[str, np.ndarray]):
    """The rows as CSV/COPY text fields; floats as Python's shortest round-trip repr, so
    DaCHS parsing the CSV and skyledger's COPY get the same doubles."""
    for i, sid in enumerate(rows["spectrum_id"].tolist()):
        yield (
            str(sid), SURVEY, object_id(sid), repr(float(rows["ra"][i])), repr(float(rows["dec"][i])),
            repr(float(rows["z"][i])), "0", FLUX_UNIT, repr(float(rows["wave_min"][i])), repr(float(rows["wave_max"][i])),
        )  # fmt: skip


def write_csv(path: Path, rows: dict[str, np.ndarray]) -> None:
    # No field holds a comma or quote, so plain joins are valid CSV.
    with path.open("w") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for fields in text_rows(rows):
            fh.write(",".join(fields) + "\n")


def load_skyledger(conninfo: str, rows: dict[str, np.ndarray]) -> None:
    """COPY the rows into the owner tables: one survey, an ingest_file per FILE_ROWS
    spectra, a source and a pixel-less spectrum per row (what a catalogue-only ingest
    writes), then ANALYZE so the planner knows the sizes."""
    n = len(rows["spectrum_id"])
    n_files = -(-n // FILE_ROWS)
    with psycopg.connect(conninfo) as conn:
        survey_id = conn.execute(
            "INSERT INTO survey (name, reader) VALUES (%s, 'sdss') RETURNING id", (SURVEY,)
        ).fetchone()[0]
        with conn.cursor().copy(
            "COPY ingest_file (id, survey_id, uri, sha256, size_bytes, status, reader, n_sources, n_spectra, batch_id,"
            " finished_at, duration_s) FROM STDIN"
        ) as copy:
            for k in range(1, n_files + 1):
                uri = f"/bench/spectra/{3000 + k - 1:04d}/plate-{k:04d}.fits"
                count = min(FILE_ROWS, n - (k - 1) * FILE_ROWS)
                copy.write_row((k, survey_id, uri, hashlib.sha256(uri.encode()).hexdigest(), 1 << 20, "loaded",
                                "sdss", count, count, "tap-bench", dt.datetime.now(dt.UTC), 0.1))  # fmt: skip
        for table, extra in (("source", ""), ("spectrum", ", source_id, n_pix, flux_unit, wave_min, wave_max")):
            cols = f"id, survey_id, ingest_file_id, object_id, ra, dec, z{extra}"
            with conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for fields in text_rows(rows):
                    sid = int(fields[0])
                    base = (sid, survey_id, (sid - 1) // FILE_ROWS + 1, fields[2], fields[3], fields[4], fields[5])
                    copy.write_row(base if table == "source" else base + (sid, 0, FLUX_UNIT, fields[8], fields[9]))
        conn.commit()
        # Identity columns continue after the copied ids (a later ingest must not collide).
        for table in ("ingest_file", "source", "spectrum"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE survey, ingest_file, source, spectrum")


def prepare(args: argparse.Namespace) -> None:
    from skyledger.schema.readpath import ensure_query_role
    from skyledger.testing.private_database import private_database

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = synthetic_rows(args.rows, args.seed)
    write_csv(work / "spectra.csv", rows)
    print(f"wrote {work / 'spectra.csv'} ({args.rows:,} rows) in {time.perf_counter() - t0:.0f} s", flush=True)
    db = private_database(work, "tap_bench")
    url, owner = db.engine.url, db.conninfo
    db.engine.dispose()
    socket_dir, db_name = url.query["host"], url.database
    t0 = time.perf_counter()
    load_skyledger(owner, rows)
    print(f"copied into {db_name} in {time.perf_counter() - t0:.0f} s", flush=True)
    ensure_query_role(f"host={socket_dir} user=postgres dbname=postgres")
    state = {
        "rows": args.rows,
        "seed": args.seed,
        "home": str(work),
        "database_url": url.render_as_string(hide_password=False),
        "query_url": f"postgresql://skyledger_query@/{db_name}?host={socket_dir}",
    }
    (work / "skyledger.json").write_text(json.dumps(state, indent=2) + "\n")
    print(f"state in {work / 'skyledger.json'}")


# ---------------------------------------------------------------- servers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the rows for DaCHS and copy them into a private skyledger database")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/tapbench"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=23)
    args = ap.parse_args()
    {"prepare": prepare}[args.command](args)


if __name__ == "__main__":
    main()
