"""skyledger's TAP service against GAVO DaCHS serving the same rows.

    python benchmarks/tap_peers.py prepare --workdir /var/tmp/tapbench      # once: rows into both
    bash benchmarks/dachs/setup.sh /var/tmp/tapbench/spectra.csv            # once, as root: DaCHS table + server
    python benchmarks/tap_peers.py run --workdir /var/tmp/tapbench          # the measurements (~3 min)
    python benchmarks/tap_peers.py sql-floor --workdir /var/tmp/tapbench    # the databases' part alone

docs/benchmarks.md ("Query service vs GAVO DaCHS") has the set-up and the results.

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
import warnings
from pathlib import Path
from typing import Any, Self

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


#: skyledger's service limits raised so the benchmark's queries fit (schema/settings.py).
SKYLEDGER_LIMITS = {
    "SKYLEDGER_TAP_SYNC_MAX_ROWS": "200000",
    "SKYLEDGER_TAP_DEFAULT_MAXREC": "200000",
    "SKYLEDGER_TAP_ASYNC_MAX_ROWS": "2000000",
    "SKYLEDGER_TAP_ASYNC_MAX_BYTES": str(4 << 30),
    "SKYLEDGER_TAP_JOBS_PER_CLIENT": "50",
    "SKYLEDGER_QUERY_MAX_ROWS": "2000000",
}


def start_skyledger(state: dict[str, Any], port: int, log: Path) -> subprocess.Popen:
    """``skyledger serve`` on the prepared database, as an operator runs it."""
    env = dict(os.environ, SKYLEDGER_HOME=state["home"], SKYLEDGER_DATABASE_URL=state["database_url"],
               SKYLEDGER_QUERY_URL=state["query_url"], **SKYLEDGER_LIMITS)  # fmt: skip
    exe = Path(sys.executable).with_name("skyledger")
    with log.open("ab") as out:
        return subprocess.Popen([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def wait_available(base: str, proc: subprocess.Popen | None = None, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before {base} answered; see its log")
        try:
            if httpx.get(f"{base}/availability", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{base}/availability did not answer within {timeout_s:.0f} s")


def listening_process(port: int) -> psutil.Process:
    """The process that listens on ``port`` (the DaCHS server daemonizes itself)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise SystemExit(f"nothing listens on port {port}; start the server first (benchmarks/dachs/setup.sh)")


class RssSampler:
    """Peak resident memory of a server process and its children (DaCHS runs each async
    job in a child process; uvicorn may run workers), sampled every 20 ms in a thread."""

    def __init__(self, proc: psutil.Process, interval_s: float = 0.02):
        self._proc = proc
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_main = self.peak_children = 0
        self.baseline = self.rss()
        self.peak = self.baseline

    def rss(self) -> int:
        main = self._proc.memory_info().rss
        children = 0
        # Children are listed at every sample: an async job's child lives a few seconds.
        for p in self._proc.children(recursive=True):
            try:
                children += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        self.peak_main = max(self.peak_main, main)
        self.peak_children = max(self.peak_children, children)
        return main + children

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


# ---------------------------------------------------------------- client


class Peer:
    """One TAP service: its base URL, an HTTP client (kept alive, as pyvo's session is)
    and its server process."""

    def __init__(self, name: str, base: str, proc: psutil.Process):
        self.name = name
        self.base = base.rstrip("/")
        self.proc = proc
        self.http = httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0))

    def params(self, adql: str, maxrec: int | None) -> dict[str, str]:
        out = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": adql, "RESPONSEFORMAT": BINARY2}
        if maxrec is not None:
            out["MAXREC"] = str(maxrec)
        return out

    def sync(self, adql: str, maxrec: int | None = None) -> tuple[float, bytes]:
        """Seconds from the request to the last byte, and the body."""
        t0 = time.perf_counter()
        with self.http.stream("POST", f"{self.base}/sync", data=self.params(adql, maxrec)) as resp:
            body = b"".join(resp.iter_bytes(1 << 16))
        elapsed = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"{self.name} sync {resp.status_code}: {body[:500]!r}")
        return elapsed, body

    def run_async(self, adql: str, maxrec: int, sink: Path) -> dict[str, float]:
        """Submit with PHASE=RUN, poll the phase every 50 ms, stream the result into
        ``sink``; the job is deleted afterwards (outside the clock)."""
        t0 = time.perf_counter()
        resp = self.http.post(f"{self.base}/async", data={**self.params(adql, maxrec), "PHASE": "RUN"})
        if resp.status_code not in (200, 303):
            raise RuntimeError(f"{self.name} async submit {resp.status_code}: {resp.text[:500]}")
        job = str(resp.url.join(resp.headers["location"])) if resp.status_code == 303 else str(resp.url)
        # As pyvo's run_async: create, then start the job (DaCHS 2.7 keeps a job created
        # with PHASE=RUN in PENDING; skyledger starts it either way).
        if self.http.get(f"{job}/phase").text.strip() == "PENDING":
            self.http.post(f"{job}/phase", data={"PHASE": "RUN"})
        while True:
            phase = self.http.get(f"{job}/phase").text.strip()
            if phase in ("COMPLETED", "ERROR", "ABORTED"):
                break
            time.sleep(0.05)
        t_done = time.perf_counter()
        if phase != "COMPLETED":
            raise RuntimeError(f"{self.name} async job {job} ended {phase}: {self.http.get(f'{job}/error').text[:500]}")
        size = 0
        with self.http.stream("GET", f"{job}/results/result", follow_redirects=True) as res, sink.open("wb") as fh:
            if res.status_code != 200:
                raise RuntimeError(f"{self.name} async result {res.status_code}")
            for chunk in res.iter_bytes(1 << 20):
                fh.write(chunk)
                size += len(chunk)
        t_end = time.perf_counter()
        self.http.post(job, data={"ACTION": "DELETE"})
        return {"seconds": t_end - t0, "run_s": t_done - t0, "download_s": t_end - t_done, "bytes": size}


def votable_rows(source: bytes | Path) -> tuple[int, list[int], str]:
    """Rows, the spectrum_id column and the QUERY_STATUS of a VOTable result."""
    from astropy.io.votable import parse

    with warnings.catch_warnings(), open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as fh:
        warnings.simplefilter("ignore")  # VOUnit's view of "Angstrom" is no concern here
        vot = parse(fh, verify="ignore")
    resource = vot.resources[0]
    status = next((info.value for info in resource.infos if info.name == "QUERY_STATUS"), "?")
    table = resource.tables[0].array
    return len(table), sorted(int(i) for i in table["spectrum_id"]), status


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(peers: list[Peer], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cols = ", ".join(COLUMNS)
    # CATALOG is an SQL (so ADQL) reserved word: the schema name is written delimited.
    table = '"catalog".spectra'
    rng = np.random.default_rng(args.seed)
    centres = [(150.0, 2.0)] + [(float(rng.uniform(125, 175)), float(rng.uniform(-5, 9))) for _ in range(args.cones - 1)]
    out: dict[str, Any] = {p.name: {} for p in peers}

    def order(i: int) -> list[Peer]:
        # Alternate who goes first, so neither always meets the other's warm cache.
        return peers if i % 2 == 0 else peers[::-1]

    # Warm-up (untimed): the planner, the connection, the first pages.
    for p in peers:
        for ra, dec in centres[:3]:
            p.sync(f"SELECT {cols} FROM {table} WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra}, {dec}, 0.05))")

    print(f"cone: {args.cones} centres", flush=True)
    times: dict[str, list[float]] = {p.name: [] for p in peers}
    rows: dict[str, list[int]] = {p.name: [] for p in peers}
    mismatches = 0
    for i, (ra, dec) in enumerate(centres):
        adql = f"SELECT {cols} FROM {table} WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra!r}, {dec!r}, {CONE_RADIUS_DEG}))"
        ids = {}
        for p in order(i):
            seconds, body = p.sync(adql)
            times[p.name].append(seconds)
            n, ids[p.name], _ = votable_rows(body)
            rows[p.name].append(n)
        mismatches += len({tuple(v) for v in ids.values()}) > 1
    for p in peers:
        out[p.name]["cone"] = {"p50_ms": 1000 * percentile(times[p.name], 50), "p95_ms": 1000 * percentile(times[p.name], 95),
                               "rows_mean": float(np.mean(rows[p.name])), "seconds": times[p.name]}  # fmt: skip
    out["cone_result_mismatches"] = mismatches

    print(f"sync TOP {args.sync_rows}: {args.sync_repeats} repeats", flush=True)
    adql = f"SELECT TOP {args.sync_rows} {cols} FROM {table}"
    times = {p.name: [] for p in peers}
    for i in range(args.sync_repeats):
        for p in order(i):
            with RssSampler(p.proc) as rss:
                seconds, body = p.sync(adql, maxrec=args.sync_rows)
            times[p.name].append(seconds)
            if i == 0:
                n, _, status = votable_rows(body)
                out[p.name]["sync"] = {"rows": n, "status": status, "bytes": len(body),
                                       "rss_before_mib": rss.baseline / 2**20, "rss_peak_mib": rss.peak / 2**20}  # fmt: skip
            del body
    for p in peers:
        out[p.name]["sync"].update(p50_ms=1000 * percentile(times[p.name], 50), p95_ms=1000 * percentile(times[p.name], 95),
                                   seconds=times[p.name])  # fmt: skip

    sink = work / "async_result.vot"
    for label, top, repeats in (("async_10k", 10_000, 1), ("async_1m", None, args.async_repeats)):
        adql = f"SELECT {f'TOP {top} ' if top else ''}{cols} FROM {table}"
        print(f"{label}: {repeats} repeats", flush=True)
        for i in range(repeats):
            for p in order(i):
                with RssSampler(p.proc) as rss:
                    res = p.run_async(adql, maxrec=2 * args.expect_rows, sink=sink)
                res.update(rss_before_mib=rss.baseline / 2**20, rss_peak_mib=rss.peak / 2**20,
                           rss_peak_main_mib=rss.peak_main / 2**20, rss_peak_children_mib=rss.peak_children / 2**20)  # fmt: skip
                if i == 0:
                    n, _, status = votable_rows(sink)
                    res.update(rows=n, status=status)
                out[p.name].setdefault(label, []).append(res)
        sink.unlink(missing_ok=True)
    return out


def summarize(out: dict[str, Any], names: list[str]) -> list[str]:
    """The Markdown table of docs/benchmarks.md: one row per measure, skyledger / DaCHS."""
    a, b = names

    def ratio(x: float, y: float) -> str:
        return f"{x / y:.2f}" if y else "-"

    def agg(name: str, label: str) -> dict[str, float]:
        runs = out[name][label]
        rows = runs[0]["rows"]
        rate = sum(rows for _ in runs) / sum(r["seconds"] for r in runs)
        return {"rows": rows, "rate": rate, "peak": max(r["rss_peak_mib"] for r in runs),
                "before": min(r["rss_before_mib"] for r in runs), "mb": runs[0]["bytes"] / 1e6}  # fmt: skip

    lines = [f"| measure | {a} | {b} | {a} ÷ {b} |", "|---|---:|---:|---:|"]
    for key, what in (("cone", "cone 0.1° (≈{rows:.0f} rows), sync"), ("sync", "TOP 100000, sync")):
        for q in ("p50_ms", "p95_ms"):
            x, y = out[a][key][q], out[b][key][q]
            rows = out[a][key].get("rows_mean", out[a][key].get("rows", 0))
            lines.append(f"| {what.format(rows=rows)}: {q[:3]} (ms) | {x:,.1f} | {y:,.1f} | {ratio(x, y)} |")
    big = {n: agg(n, "async_1m") for n in names}
    small = {n: agg(n, "async_10k") for n in names}
    lines.append(f"| all {big[a]['rows']:,} rows, async BINARY2 (rows/s, download included) | {big[a]['rate']:,.0f} | "
                 f"{big[b]['rate']:,.0f} | {ratio(big[a]['rate'], big[b]['rate'])} |")  # fmt: skip
    lines.append(f"| result size (MB), 1M rows | {big[a]['mb']:,.1f} | {big[b]['mb']:,.1f} | {ratio(big[a]['mb'], big[b]['mb'])} |")
    for label, d in (("10,000 rows async", small), ("1,000,000 rows async", big)):
        lines.append(f"| server peak RSS (MiB), {label} (idle before) | {d[a]['peak']:,.0f} ({d[a]['before']:,.0f}) | "
                     f"{d[b]['peak']:,.0f} ({d[b]['before']:,.0f}) | {ratio(d[a]['peak'], d[b]['peak'])} |")  # fmt: skip
    x, y = out[a]["sync"], out[b]["sync"]
    lines.append(f"| server peak RSS (MiB), 100,000 rows sync | {x['rss_peak_mib']:,.0f} | {y['rss_peak_mib']:,.0f} | "
                 f"{ratio(x['rss_peak_mib'], y['rss_peak_mib'])} |")  # fmt: skip
    lines += ["", "| peer | async run | rows | submit to COMPLETED (s) | download (s) | total (s) | rows/s | server RSS before → peak (MiB) | peak: server process + job processes (MiB) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in names:
        for label in ("async_10k", "async_1m"):
            runs = out[name][label]
            for i, r in enumerate(runs, 1):
                n = runs[0]["rows"]
                lines.append(f"| {name} | {label[6:]} #{i} | {n:,} | {r['run_s']:.2f} | {r['download_s']:.2f} | {r['seconds']:.2f} | "
                             f"{n / r['seconds']:,.0f} | {r['rss_before_mib']:,.0f} → {r['rss_peak_mib']:,.0f} | "
                             f"{r.get('rss_peak_main_mib', 0):,.0f} + {r.get('rss_peak_children_mib', 0):,.0f} |")  # fmt: skip
    return lines


def sql_floor(args: argparse.Namespace) -> None:
    """The database's part of the cone and the 100k queries: the SQL each service sends,
    run here with psycopg (fetchall), without HTTP, ADQL parsing or serialization.
    skyledger's SQL is its translator's output, run as the reader login; DaCHS's is what
    its log (/var/gavo/logs/dcInfos) shows it sends for the same ADQL, run as DaCHS's
    TAP login (``untrusted``, /var/gavo/etc/untrustedquery)."""
    from skyledger.api.service.adql import translate

    work = args.workdir.resolve()
    state = open_state(work)
    cols = ", ".join(COLUMNS)
    cone = f"SELECT {cols} FROM \"catalog\".spectra WHERE 1=CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.0, 2.0, 0.1))"
    top = f"SELECT TOP 100000 {cols} FROM \"catalog\".spectra"
    sky = {"cone": translate(cone).sql, "sync 100k": translate(top).sql + " LIMIT 100000"}
    dachs = {"cone": f'SELECT {cols} FROM "catalog".spectra WHERE q3c_join(150.0, 2.0, ra, dec, 0.1) LIMIT 20000',
             "sync 100k": f'SELECT {cols} FROM "catalog".spectra LIMIT 100000'}  # fmt: skip
    etc = Path("/var/gavo/etc")
    dsn = dict(line.split(" = ", 1) for f in ("dsn", "untrustedquery") for line in (etc / f).read_text().splitlines()
               if " = " in line)  # fmt: skip
    dachs_conninfo = f"host={dsn['host']} port={dsn['port']} dbname={dsn['database']} user={dsn['user']} password={dsn['password']}"
    print("| query | skyledger SQL, median (ms) | DaCHS SQL, median (ms) | rows |\n|---|---:|---:|---:|")
    with psycopg.connect(state["query_url"]) as a, psycopg.connect(dachs_conninfo) as b:
        for label, sky_sql in sky.items():
            repeats = 20 if label == "cone" else 5
            med = []
            for conn, text in ((a, sky_sql), (b, dachs[label])):
                conn.execute(text).fetchall()  # warm
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    n = len(conn.execute(text).fetchall())
                    times.append(time.perf_counter() - t0)
                med.append(1000 * percentile(times, 50))
            print(f"| {label} | {med[0]:,.1f} | {med[1]:,.1f} | {n:,} |")


def server_version(conninfo: str) -> str:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def open_state(work: Path) -> dict[str, Any]:
    """What ``prepare`` left, with its embedded server running again (after a reboot or
    ``embedded.stop``, the query login's socket is gone)."""
    from skyledger.schema import embedded

    state = json.loads((work / "skyledger.json").read_text())
    embedded.start(work / "pgdata")
    return state


def run(args: argparse.Namespace) -> None:
    work = args.workdir.resolve()
    state = open_state(work)
    args.expect_rows = state["rows"]
    started = None
    peers = []
    if args.dachs_only:
        pass
    elif args.skyledger_url:
        sky_base = args.skyledger_url
        sky_proc = listening_process(httpx.URL(sky_base).port or 80)
    else:
        started = start_skyledger(state, args.skyledger_port, work / "skyledger-serve.log")
        sky_base = f"http://127.0.0.1:{args.skyledger_port}/tap"
        wait_available(sky_base, started)
        sky_proc = psutil.Process(started.pid)
    if not args.dachs_only:
        peers.append(Peer("skyledger", sky_base, sky_proc))
    wait_available(args.dachs_url)
    peers.append(Peer("DaCHS", args.dachs_url, listening_process(httpx.URL(args.dachs_url).port or 80)))
    when = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()[0]
    try:
        out = measure(peers, args, work)
    finally:
        if started is not None:
            os.killpg(started.pid, signal.SIGTERM)
            started.wait(timeout=30)
    out["meta"] = {
        "started_utc": when.isoformat(timespec="seconds"),
        "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rows": state["rows"], "cones": args.cones, "sync_repeats": args.sync_repeats,
        "async_repeats": args.async_repeats, "load_before": load_before, "load_after": os.getloadavg()[0],
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "python": platform.python_version(), "commit": _git_commit(),
        "dachs": _version(["dachs", "--version"]), "postgres_skyledger": server_version(state["query_url"]),
        "postgres_dachs": _version(["psql", "--version"]), "astropy": _module_version("astropy"),
        "httpx": httpx.__version__,
    }  # fmt: skip
    (work / "tap_peers.json").write_text(json.dumps(out, indent=1) + "\n")
    names = [p.name for p in peers]
    if len(names) == 2:
        print("\n".join(summarize(out, names)))
    else:
        print(json.dumps({k: v for k, v in out[names[0]].items()}, indent=1, default=str)[:4000])
    print(f"cone result mismatches between peers: {out['cone_result_mismatches']}; JSON in {work / 'tap_peers.json'}")


def _version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    return (res.stdout or res.stderr).strip().splitlines()[-1] if (res.stdout or res.stderr) else ""


def _module_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _git_commit() -> str:
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, cwd=Path(__file__).parent)
    return res.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the rows for DaCHS and copy them into a private skyledger database")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp/tapbench"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=23)
    r = sub.add_parser("run", help="measure both services (skyledger serve is started here unless --skyledger-url)")
    r.add_argument("--workdir", type=Path, default=Path("/var/tmp/tapbench"))
    r.add_argument("--dachs-url", default="http://127.0.0.1:8080/tap")
    r.add_argument("--skyledger-url", help="a running skyledger TAP service (its server process is found by port)")
    r.add_argument("--skyledger-port", type=int, default=8000)
    r.add_argument("--dachs-only", action="store_true", help="measure DaCHS alone (the client's own check)")
    r.add_argument("--cones", type=int, default=50)
    r.add_argument("--sync-rows", type=int, default=100_000)
    r.add_argument("--sync-repeats", type=int, default=10)
    r.add_argument("--async-repeats", type=int, default=3)
    r.add_argument("--seed", type=int, default=23)
    f = sub.add_parser("sql-floor", help="time the SQL each service sends, directly on its database")
    f.add_argument("--workdir", type=Path, default=Path("/var/tmp/tapbench"))
    args = ap.parse_args()
    {"prepare": prepare, "run": run, "sql-floor": sql_floor}[args.command](args)


if __name__ == "__main__":
    main()
