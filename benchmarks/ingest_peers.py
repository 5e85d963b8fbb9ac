"""The peers of the ingest benchmark (``ingest_benchmark.py``): production ``ingest_paths``,
the ``psql \\copy`` ceiling of the same rows, and naive ORM inserts; each loads into its
own database and reports its spectra, seconds and memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bench_databases import Server
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.checksum import sha256_file
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.copy_columns import SOURCE_COLUMNS, SPECTRUM_COLUMNS
from skyledger.ingest.outcomes import FileOutcome
from skyledger.ingest.readers import get_reader
from skyledger.ingest.table_rows import SPECTRUM_FLAGS
from skyledger.schema import embedded
from skyledger.schema.database import Database
from skyledger.schema.models import IngestFile, Source, Spectrum, Survey, WavelengthGrid
from skyledger.schema.pgcopy import to_json

__all__ = ["DB_NAMES", "CopyCeiling", "OrmPeer", "RssSampler", "run_production", "settle"]

SURVEY = "sdss-bench"
DB_NAMES = {"production": "skyledger_bench_production", "inline": "skyledger_bench_inline", "copy": "skyledger_bench_copy",
            "orm": "skyledger_bench_orm"}  # fmt: skip
# Loader column lists, imported so the ceiling copies exactly the columns production writes.
SOURCE_COLS = [name for name, _ in SOURCE_COLUMNS]
SPECTRUM_COLS = [name for name, _ in SPECTRUM_COLUMNS]


class RssSampler:
    """Peak resident memory of this process, sampled in a thread (ru_maxrss never resets)."""

    def __init__(self, interval_s: float = 0.02):
        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._children: list[psutil.Process] = []
        self._children_at = 0.0
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline

    def _rss(self) -> int:
        """This process plus its children (the loader's reader workers)."""
        # Listing the children scans all of /proc (psutil's ppid map): every 20 ms that
        # took ~5 % of the CPU the measured pipeline has; the list is refreshed each second.
        now = time.monotonic()
        if now >= self._children_at:
            self._children = self._proc.children(recursive=True)
            self._children_at = now + 1.0
        total = self._proc.memory_info().rss
        for child in self._children:
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def now(self) -> int:
        rss = self._rss()
        self.peak = max(self.peak, rss)
        return rss


def settle() -> float:
    """Write dirty pages out before a peer's clock starts; returns the seconds it took.

    Generating 100,000 files leaves gigabytes for the kernel to write back, and a peer
    whose clock starts then (production, which runs first) shares the disk and a core
    with that writeback; so does a peer following another's bulk load.
    """
    t = time.perf_counter()
    os.sync()
    return time.perf_counter() - t


# --------------------------------------------------------------------------- peers
#
# Every peer loads into its own database, which keeps its rows from round to round, so
# each round's rows go into tables the size production's have at that point.


def run_production(
    server: Server, files: list[Path], *, db_name: str, read_workers: int | None, reader: str = "sdss",
    survey: str = SURVEY,
) -> dict[str, Any]:  # fmt: skip
    """One ``ingest_paths`` call over ``files``, timed from the call to its return."""
    url = server.url(db_name)
    engine = create_engine(url, pool_pre_ping=True)
    db = Database(engine=engine, url=url.render_as_string(hide_password=False), embedded=None)
    n_files = len(files)
    total_bytes = sum(f.stat().st_size for f in files)
    checkpoints = {max(1, round(n_files * k / 10)): k * 10 for k in range(1, 11)}
    memory: list[dict[str, Any]] = []
    seconds: list[float] = []
    statuses: dict[str, int] = {}
    settle_s = settle()
    started = time.perf_counter()

    with RssSampler() as rss:

        def on_file(outcome: FileOutcome) -> None:
            seconds.append(outcome.seconds)
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
            done = len(seconds)
            if done in checkpoints:
                now = rss.now()
                memory.append({"percent_of_files": checkpoints[done], "files": done, "rss_mib": now / 2**20,
                               "peak_rss_mib": rss.peak / 2**20, "elapsed_s": time.perf_counter() - started})  # fmt: skip

        summary = ingest_paths(db, [str(f) for f in files], survey=SurveySpec(name=survey, reader=reader),
                               on_file=on_file, read_workers=read_workers, keep_outcomes=False)  # fmt: skip
        wall = time.perf_counter() - started
    engine.dispose()
    if statuses.get("loaded", 0) != n_files:
        bad = summary.rejected()[:3]  # kept even with keep_outcomes=False
        raise SystemExit(f"{db_name} did not load every file: {statuses}; e.g. {[(o.path, o.reason) for o in bad]}")
    return {
        "spectra": summary.n_spectra,
        "files": n_files,
        "bytes": total_bytes,
        "wall_s": wall,
        "spectra_per_s": summary.n_spectra / wall,
        "rss_baseline_mib": rss.baseline / 2**20,
        "peak_rss_mib": rss.peak / 2**20,
        "memory_checkpoints": memory,
        "file_seconds_percentiles_ms": {q: float(np.percentile(seconds, q) * 1e3) for q in (50, 90, 99)},
        "settle_s": settle_s,
    }


def _copy_table(src: psycopg.Connection, dst: psycopg.Connection, query: str, target: str) -> None:
    with src.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as out, dst.cursor().copy(
        f"COPY {target} FROM STDIN (FORMAT BINARY)"
    ) as into:
        for chunk in out:
            into.write(chunk)


class CopyCeiling:
    """psql ``\\copy`` of the rows production wrote in a round, from prepared binary files."""

    def __init__(self, server: Server, workdir: Path):
        self.server = server
        self.workdir = workdir
        self.after = {"survey": 0, "ingest_file": 0, "wavelength_grid": 0, "source": 0, "spectrum": 0}

    def run(self) -> dict[str, Any]:
        prod = self.server.conninfo(DB_NAMES["production"])
        target = self.server.conninfo(DB_NAMES["copy"])
        export = {"source": self.workdir / "ceiling_source.pgcopy", "spectrum": self.workdir / "ceiling_spectrum.pgcopy"}
        cols = {"source": SOURCE_COLS, "spectrum": SPECTRUM_COLS}
        last = dict(self.after)
        with psycopg.connect(prod) as src:
            for table in self.after:
                self.after[table] = src.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
            # Server-side COPY TO a file is not allowed on the embedded server: stream to disk here.
            for table, path in export.items():
                query = f"SELECT {', '.join(cols[table])} FROM {table} WHERE id > {last[table]} AND id <= {self.after[table]} ORDER BY id"
                with src.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as cp, open(path, "wb") as fh:
                    for chunk in cp:
                        fh.write(chunk)
            # Rows the foreign keys point at, ids kept; untimed (production writes them
            # too, but they are bookkeeping, not the spectra being compared).
            with psycopg.connect(target) as dst:
                for table in ("survey", "ingest_file", "wavelength_grid"):
                    _copy_table(src, dst, f"SELECT * FROM {table} WHERE id > {last[table]} AND id <= {self.after[table]}", table)
                dst.commit()
        psql = str(embedded.psql_path())
        settle_s = settle()
        timings: dict[str, float] = {}
        for table, path in export.items():
            command = f"\\copy {table} ({', '.join(cols[table])}) FROM '{path}' WITH (FORMAT binary)"
            t = time.perf_counter()
            subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-c", command], check=True)
            timings[table] = time.perf_counter() - t
        sizes = {f"{t}_file_bytes": p.stat().st_size for t, p in export.items()}
        for path in export.values():
            path.unlink()  # as large as the round's rows: give the disk back now
        n = self.after["spectrum"] - last["spectrum"]
        wall = sum(timings.values())
        return {"spectra": n, "wall_s": wall, "source_copy_s": timings["source"], "spectrum_copy_s": timings["spectrum"],
                "spectra_per_s": n / wall, "settle_s": settle_s, **sizes}  # fmt: skip


class OrmPeer:
    """The naive pipeline: same reader, ORM objects with lists, one commit per file."""

    def __init__(self, server: Server):
        self.engine = create_engine(server.url(DB_NAMES["orm"]))
        self.reader = get_reader("sdss")
        self.batch = uuid.uuid4().hex
        self.grids: dict[str, int] = {}
        with Session(self.engine) as s, s.begin():
            survey = Survey(name=SURVEY, reader="sdss")
            s.add(survey)
            s.flush()
            self.survey_id = survey.id

    def run(self, files: list[Path]) -> dict[str, Any]:
        survey_id, grids = self.survey_id, self.grids
        read_s = db_s = 0.0
        n = 0
        settle()
        with RssSampler() as rss:
            t0 = time.perf_counter()
            for path in files:
                t = time.perf_counter()
                sha, size = sha256_file(path)
                contents = self.reader.read(path, {})
                spectra = list(contents.spectra)
                t_read = time.perf_counter()
                with Session(self.engine) as s, s.begin():
                    f = IngestFile(survey_id=survey_id, uri=str(path.resolve()), sha256=sha, size_bytes=size, status="loaded",
                                   reader="sdss", batch_id=self.batch, n_sources=len(contents.sources), n_spectra=len(spectra))  # fmt: skip
                    s.add(f)
                    s.flush()
                    sources = {
                        src.object_id: Source(survey_id=survey_id, ingest_file_id=f.id, object_id=src.object_id, ra=src.ra,
                                              dec=src.dec, z=src.z, flags=0, meta=json.loads(to_json(src.meta)))  # fmt: skip
                        for src in contents.sources
                    }
                    s.add_all(sources.values())
                    s.flush()
                    rows = []
                    for row in spectra:
                        wave = np.ascontiguousarray(row.wave, dtype="<f8")
                        key = hashlib.sha256(wave.tobytes()).hexdigest()
                        if key not in grids:
                            grid = s.scalars(select(WavelengthGrid).where(WavelengthGrid.sha256 == key)).one_or_none()
                            if grid is None:
                                grid = WavelengthGrid(sha256=key, n_pix=wave.size, wave=wave.tolist(), log_uniform=True)
                                s.add(grid)
                                s.flush()
                            grids[key] = grid.id
                        rows.append(Spectrum(
                            source_id=sources[row.source_object_id].id, survey_id=survey_id, ingest_file_id=f.id,
                            object_id=row.object_id, ra=row.ra, dec=row.dec, z=row.z, n_pix=row.n_pix, wave_grid_id=grids[key],
                            flux=row.flux.tolist(), ivar=row.ivar.tolist(), mask=row.mask.tolist(),
                            resolution=None if row.resolution is None else row.resolution.tolist(), flux_unit=row.flux_unit,
                            flags=0 if row.resolution is not None else SPECTRUM_FLAGS["NO_RESOLUTION"], meta=json.loads(to_json(row.meta)),
                        ))  # fmt: skip
                    s.add_all(rows)
                n += len(spectra)
                read_s += t_read - t
                db_s += time.perf_counter() - t_read
            wall = time.perf_counter() - t0
        return {"spectra": n, "files": len(files), "wall_s": wall, "spectra_per_s": n / wall, "read_s": read_s,
                "db_s": db_s, "peak_rss_mib": rss.peak / 2**20}  # fmt: skip

    def close(self) -> None:
        self.engine.dispose()
