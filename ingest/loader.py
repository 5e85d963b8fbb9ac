"""Bulk loading of survey files: one transaction per file, binary COPY, bounded memory.

A file is wholly in or wholly out. Its rows are written inside one transaction (the
``ingest_file`` row, its sources, its spectra streamed through COPY, and for line
catalogues an ``ingested`` run with its line measurements), which commits only at the
end; any problem with the file rolls everything back and records the file as
``rejected`` with the reason, and the batch goes on. Infrastructure failures (the
database going away) are not the file's fault: they propagate and stop the batch.

Wavelength grids are content-addressed and immutable; they are registered on a separate
autocommit connection, so a rolled-back file can at most leave an unused grid behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import errors as pg_errors
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from skyledger.ingest.config import SurveySpec
from skyledger.ingest.readers import detect_reader, get_reader
from skyledger.ingest.records import FileContents, LineMeasurement, SourceRow, SpectrumRow
from skyledger.schema.database import Database
from skyledger.schema.errors import DatabaseError, IngestError, ReaderError
from skyledger.schema.pgcopy import copy_rows, to_json

__all__ = ["FileOutcome", "Loader", "sha256_file", "ensure_survey", "SPECTRUM_FLAGS", "SOURCE_FLAGS", "LINE_FLAGS"]

_log = logging.getLogger(__name__)

# Bit values; their meanings are rows of flag_definition (migrations 0001 and 0002).
SOURCE_FLAGS = {"NO_POSITION": 1 << 0, "POSITION_FROM_CONFIG": 1 << 1}
SPECTRUM_FLAGS = {"NO_POSITION": 1 << 0, "POSITION_FROM_CONFIG": 1 << 1, "NO_RESOLUTION": 1 << 2, "AIR_TO_VACUUM": 1 << 3}
LINE_FLAGS = {"DUST_CORRECTED": 1 << 16, "FROM_CATALOGUE": 1 << 17}

INGESTED_TASK = "ingested"
INGESTED_VERSION = 1

_SOURCE_COLUMNS = [
    ("id", "int8"), ("survey_id", "int4"), ("ingest_file_id", "int8"), ("object_id", "text"),
    ("parent_id", "int8"), ("ra", "float8"), ("dec", "float8"), ("z", "float8"), ("flags", "int4"), ("meta", "jsonb"),
]
_SPECTRUM_COLUMNS = [
    ("source_id", "int8"), ("survey_id", "int4"), ("ingest_file_id", "int8"), ("object_id", "text"),
    ("ra", "float8"), ("dec", "float8"), ("z", "float8"), ("n_pix", "int4"), ("wave_grid_id", "int8"),
    ("flux", "float4[]"), ("ivar", "float4[]"), ("mask", "int4[]"), ("resolution", "float4[]"),
    ("flux_unit", "text"), ("flags", "int4"), ("meta", "jsonb"),
]
_LINE_COLUMNS = [
    ("run_id", "int8"), ("spectrum_id", "int8"), ("line", "text"), ("velocity", "float8"), ("velocity_err", "float8"),
    ("sigma", "float8"), ("sigma_err", "float8"), ("flux", "float8"), ("flux_err", "float8"), ("flags", "int4"),
]

_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError, UnicodeError)


@dataclass
class FileOutcome:
    """What happened to one file."""

    path: str
    status: str  # loaded, rejected, duplicate, unchanged
    reason: str | None = None
    reader: str | None = None
    ingest_file_id: int | None = None
    n_sources: int = 0
    n_spectra: int = 0
    n_lines: int = 0
    size_bytes: int = 0
    seconds: float = 0.0


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def ensure_survey(session: Session, spec: SurveySpec, reader: str | None) -> int:
    """Register the survey (or refresh its configuration) and return its id."""
    return session.execute(
        text(
            "INSERT INTO survey (name, reader, location, options) VALUES (:n, :r, :l, CAST(:o AS jsonb)) "
            "ON CONFLICT (name) DO UPDATE SET reader = EXCLUDED.reader, location = EXCLUDED.location, "
            "options = EXCLUDED.options RETURNING id"
        ),
        {
            "n": spec.name,
            "r": spec.reader or reader or "auto",
            "l": None if spec.location is None else f"{spec.location}/{spec.glob}",
            "o": to_json(spec.options),
        },
    ).scalar_one()


def _code_version() -> str:
    return f"skyledger {package_version('skyledger')}"


class _Rejected(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Loader:
    """Loads files into one database. Create one per batch (it caches grid ids)."""

    def __init__(self, db: Database, *, root: Path | None = None, batch_id: str | None = None):
        self.db = db
        self.root = root.resolve() if root is not None else None
        self.batch_id = batch_id
        self._grids: dict[str, int] = {}
        self._grid_conn: psycopg.Connection | None = None
        self._survey_ids: dict[str, int] = {}

    # ------------------------------------------------------------------ public

    def close(self) -> None:
        if self._grid_conn is not None:
            self._grid_conn.close()
            self._grid_conn = None

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(self, path: str | os.PathLike[str], survey: SurveySpec, *, reader: str | None = None) -> FileOutcome:
        """Ingest one file, in its own transaction. Never leaves a partial file behind.

        Losing the database is not the file's fault: it stops the batch with a
        :class:`DatabaseError` (the open transaction dies with the connection).
        """
        try:
            return self._ingest(path, survey, reader=reader)
        except (OperationalError, psycopg.OperationalError) as err:
            raise DatabaseError(
                f"lost the database connection while ingesting {path}; nothing of that file was written; "
                "run the ingest again to load it and the files after it"
            ) from err

    def _ingest(self, path: str | os.PathLike[str], survey: SurveySpec, *, reader: str | None) -> FileOutcome:
        started = time.perf_counter()
        path = Path(path)
        outcome = FileOutcome(path=str(path), status="rejected")
        survey_id = self._survey_id(survey, reader)
        sha: str | None = None
        uri = str(path.absolute())
        try:
            try:
                resolved = path.resolve(strict=True)
                uri = str(resolved)
                if self.root is not None and not resolved.is_relative_to(self.root):
                    raise _Rejected(f"the file is outside the configured root {self.root}")
                if not resolved.is_file():
                    raise _Rejected("not a regular file")
                sha, outcome.size_bytes = sha256_file(resolved)
            except PermissionError as err:
                raise _Rejected(f"cannot read the file: permission denied ({err.strerror})") from err
            previous = self._previous(survey_id, uri, sha)
            if previous is not None:
                outcome.status, outcome.reason, outcome.ingest_file_id = previous
                return outcome
            chosen = get_reader(reader or survey.reader) if (reader or survey.reader) else detect_reader(resolved)
            outcome.reader = chosen.name
            try:
                contents = chosen.read(resolved, survey.options)
            except ReaderError:
                raise
            except _READ_ERRORS as err:
                raise ReaderError(resolved, f"unreadable ({type(err).__name__}: {err})") from err
            self._load(contents, outcome, survey_id=survey_id, uri=uri, sha=sha, path=resolved)
        except FileNotFoundError:
            outcome.reason = "no such file"
        except _Rejected as err:
            outcome.reason = err.reason
        except ReaderError as err:
            outcome.reason = err.detail
        except IngestError as err:
            outcome.reason = str(err)
        outcome.seconds = time.perf_counter() - started
        if outcome.status == "rejected":
            self._record_rejection(outcome, survey_id, uri, sha)
        return outcome

    # ------------------------------------------------------------------ steps

    def _survey_id(self, survey: SurveySpec, reader: str | None) -> int:
        if survey.name not in self._survey_ids:
            with self.db.session() as session:
                self._survey_ids[survey.name] = ensure_survey(session, survey, reader)
        return self._survey_ids[survey.name]

    def _previous(self, survey_id: int, uri: str, sha: str) -> tuple[str, str, int] | None:
        """Loaded or rejected before with the same content? Then this is a no-op."""
        with self.db.session() as session:
            row = session.execute(
                text(
                    "SELECT id, uri, status, reason FROM ingest_file WHERE survey_id = :s AND sha256 = :h "
                    "AND status IN ('loaded', 'rejected') ORDER BY (status = 'loaded') DESC, (uri = :u) DESC, id DESC LIMIT 1"
                ),
                {"s": survey_id, "h": sha, "u": uri},
            ).one_or_none()
            if row is None:
                return None
            if row.status == "rejected":
                if row.uri != uri:
                    return None  # same bad content under another name: judge it afresh
                return ("rejected", f"unchanged since ingest_file {row.id}: {row.reason}", row.id)
            if row.uri == uri:
                return ("unchanged", f"already loaded as ingest_file {row.id}", row.id)
            dup_id = session.execute(
                text(
                    "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reason, batch_id, finished_at) "
                    "SELECT :s, :u, :h, size_bytes, 'duplicate', :why, :b, now() FROM ingest_file WHERE id = :id "
                    "RETURNING id"
                ),
                {"s": survey_id, "u": uri, "h": sha, "why": f"same content as ingest_file {row.id} ({row.uri})",
                 "b": self.batch_id, "id": row.id},
            ).scalar_one()
            return ("duplicate", f"same content as ingest_file {row.id} ({row.uri})", dup_id)

    def _record_rejection(self, outcome: FileOutcome, survey_id: int, uri: str, sha: str | None) -> None:
        outcome.status = "rejected"
        with self.db.session() as session:
            outcome.ingest_file_id = session.execute(
                text(
                    "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reason, reader, batch_id, "
                    "finished_at, duration_s) VALUES (:s, :u, :h, :size, 'rejected', :why, :r, :b, now(), :d) RETURNING id"
                ),
                {"s": survey_id, "u": uri, "h": sha, "size": outcome.size_bytes or None, "why": outcome.reason,
                 "r": outcome.reader, "b": self.batch_id, "d": outcome.seconds},
            ).scalar_one()
        _log.info("rejected %s: %s", uri, outcome.reason)

    def _load(self, contents: FileContents, outcome: FileOutcome, *, survey_id: int, uri: str, sha: str, path: Path) -> None:
        try:
            with self.db.session() as session:
                file_id = session.execute(
                    text(
                        "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reader, batch_id, version) "
                        "VALUES (:s, :u, :h, :size, 'loaded', :r, :b, 1 + coalesce((SELECT max(version) FROM ingest_file "
                        "WHERE survey_id = :s AND uri = :u AND status = 'loaded'), 0)) RETURNING id"
                    ),
                    {"s": survey_id, "u": uri, "h": sha, "size": outcome.size_bytes, "r": outcome.reader, "b": self.batch_id},
                ).scalar_one()
                conn = session.connection().connection.driver_connection
                source_ids = self._copy_sources(session, conn, contents.sources, survey_id=survey_id, file_id=file_id, path=path)
                lines: list[tuple[str, list[LineMeasurement]]] = []
                air = contents.meta.get("wavelength_medium_in_file") == "air"
                outcome.n_spectra = copy_rows(
                    conn, "spectrum", _SPECTRUM_COLUMNS,
                    self._spectrum_rows(
                        contents.spectra, source_ids, lines, survey_id=survey_id, file_id=file_id, path=path, air=air
                    ),
                )
                if outcome.n_spectra == 0:
                    raise ReaderError(path, "the file holds no spectra")
                outcome.n_sources = len(source_ids)
                if lines:
                    outcome.n_lines = self._copy_lines(session, conn, lines, contents, file_id=file_id, uri=uri)
                session.execute(
                    text(
                        "UPDATE ingest_file SET n_sources = :a, n_spectra = :b, n_lines = :c, finished_at = now(), "
                        "duration_s = extract(epoch FROM clock_timestamp() - started_at) WHERE id = :id"
                    ),
                    {"a": outcome.n_sources, "b": outcome.n_spectra, "c": outcome.n_lines, "id": file_id},
                )
        except DBAPIError as err:  # from statements run through SQLAlchemy
            if isinstance(err.orig, pg_errors.UniqueViolation) and "uq_ingest_file_loaded_content" in str(err.orig):
                # Another process loaded the same content at the same moment.
                outcome.status, outcome.reason = "duplicate", "loaded concurrently by another process"
                return
            if isinstance(err.orig, (pg_errors.DataError, pg_errors.IntegrityError)):
                raise ReaderError(path, f"the database refused the rows: {err.orig.diag.message_primary}") from err
            raise
        except (pg_errors.DataError, pg_errors.IntegrityError) as err:  # from COPY on the raw connection
            raise ReaderError(path, f"the database refused the rows: {err.diag.message_primary}") from err
        outcome.status, outcome.ingest_file_id = "loaded", file_id

    def _copy_sources(
        self, session: Session, conn: psycopg.Connection, sources: Sequence[SourceRow], *, survey_id: int, file_id: int, path: Path
    ) -> dict[str, int]:
        if not sources:
            raise ReaderError(path, "the file holds no sources")
        ids = session.execute(
            text("SELECT nextval(pg_get_serial_sequence('source', 'id')) FROM generate_series(1, :n)"), {"n": len(sources)}
        ).scalars().all()
        by_name = {src.object_id: sid for src, sid in zip(sources, ids)}
        if len(by_name) != len(sources):
            raise ReaderError(path, "duplicate source identifiers within the file")
        external = {s.parent_object_id for s in sources if s.parent_object_id and s.parent_object_id not in by_name}
        parents = dict(by_name)
        for name in external:
            found = session.execute(
                text("SELECT max(id) FROM source WHERE survey_id = :s AND object_id = :o"), {"s": survey_id, "o": name}
            ).scalar_one()
            if found is None:
                raise ReaderError(path, f"parent object {name!r} is neither in the file nor already ingested for this survey")
            parents[name] = found

        def rows() -> Iterator[tuple[Any, ...]]:
            for src, sid in zip(sources, ids):
                flags = SOURCE_FLAGS["NO_POSITION"] if src.ra is None else 0
                if src.meta.get("position_from_config"):
                    flags |= SOURCE_FLAGS["POSITION_FROM_CONFIG"]
                parent = parents[src.parent_object_id] if src.parent_object_id else None
                yield (sid, survey_id, file_id, src.object_id, parent, src.ra, src.dec, src.z, flags, src.meta)

        copy_rows(conn, "source", _SOURCE_COLUMNS, rows())
        return by_name

    def _spectrum_rows(
        self,
        spectra: Iterator[SpectrumRow],
        source_ids: dict[str, int],
        lines: list[tuple[str, list[LineMeasurement]]],
        *,
        survey_id: int,
        file_id: int,
        path: Path,
        air: bool,
    ) -> Iterator[tuple[Any, ...]]:
        for row in spectra:
            try:
                source_id = source_ids[row.source_object_id]
            except KeyError:
                raise ReaderError(path, f"spectrum {row.object_id!r} refers to unknown source {row.source_object_id!r}") from None
            flags = 0
            if row.ra is None:
                flags |= SPECTRUM_FLAGS["NO_POSITION"]
            if row.meta.get("position_from_config"):
                flags |= SPECTRUM_FLAGS["POSITION_FROM_CONFIG"]
            if row.n_pix and (air or row.meta.get("wavelength_medium_in_file") == "air"):
                flags |= SPECTRUM_FLAGS["AIR_TO_VACUUM"]
            grid_id = None
            if row.n_pix:
                grid_id = self._grid_id(row.wave)
                if row.resolution is None:
                    flags |= SPECTRUM_FLAGS["NO_RESOLUTION"]
            if row.lines:
                lines.append((row.object_id, row.lines))
            yield (
                source_id, survey_id, file_id, row.object_id, row.ra, row.dec, row.z, row.n_pix, grid_id,
                row.flux, row.ivar, row.mask, row.resolution, row.flux_unit, flags, row.meta,
            )

    def _grid_id(self, wave: np.ndarray) -> int:
        values = np.ascontiguousarray(wave, dtype="<f8")
        key = hashlib.sha256(values.tobytes()).hexdigest()
        cached = self._grids.get(key)
        if cached is not None:
            return cached
        if self._grid_conn is None or self._grid_conn.closed:
            self._grid_conn = psycopg.connect(self._conninfo(), autocommit=True)
        steps = np.diff(np.log(values))
        log_uniform = bool(values.size > 2 and np.allclose(steps, steps.mean(), rtol=1e-5, atol=0))
        with self._grid_conn.cursor() as cur:
            cur.execute(
                "INSERT INTO wavelength_grid (sha256, n_pix, wave, log_uniform) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (sha256) DO NOTHING",
                (key, int(values.size), values.tolist(), log_uniform),
            )
            grid = cur.execute("SELECT id FROM wavelength_grid WHERE sha256 = %s", (key,)).fetchone()
        assert grid is not None
        self._grids[key] = grid[0]
        return grid[0]

    def _conninfo(self) -> str:
        url = self.db.engine.url
        return url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _copy_lines(
        self,
        session: Session,
        conn: psycopg.Connection,
        lines: list[tuple[str, list[LineMeasurement]]],
        contents: FileContents,
        *,
        file_id: int,
        uri: str,
    ) -> int:
        params = {"ingest_file_id": file_id, "file": uri, "dust_corrected": contents.dust_corrected}
        run_id = session.execute(
            text(
                "INSERT INTO run (task, version, params, params_hash, code_version, host, status, n_inputs, "
                "finished_at) VALUES (:t, :v, CAST(:p AS jsonb), :h, :c, :host, 'running', :n, now()) RETURNING id"
            ),
            {"t": INGESTED_TASK, "v": INGESTED_VERSION, "p": to_json(params),
             "h": hashlib.sha256(to_json(params).encode()).hexdigest(), "c": _code_version(),
             "host": socket.gethostname(), "n": len(lines)},
        ).scalar_one()
        spectrum_ids = {
            object_id: sid
            for object_id, sid in session.execute(
                text("SELECT object_id, id FROM spectrum WHERE ingest_file_id = :f"), {"f": file_id}
            )
        }
        base_flags = LINE_FLAGS["FROM_CATALOGUE"] | (LINE_FLAGS["DUST_CORRECTED"] if contents.dust_corrected else 0)

        def rows() -> Iterator[tuple[Any, ...]]:
            for object_id, measured in lines:
                sid = spectrum_ids[object_id]
                for m in measured:
                    yield (run_id, sid, m.line, m.velocity, m.velocity_err, m.sigma, m.sigma_err, m.flux, m.flux_err, base_flags)

        n = copy_rows(conn, "line_measurement", _LINE_COLUMNS, rows())
        # Catalogue lines are current as soon as the file is: the run joins `current`
        # in the same transaction that makes it succeed.
        session.execute(
            text("UPDATE run SET status = 'succeeded', n_results = :n, finished_at = now() WHERE id = :id"),
            {"n": n, "id": run_id},
        )
        session.execute(
            text(
                "INSERT INTO collection_run (collection_id, run_id) "
                "SELECT id, :r FROM collection WHERE name = 'current'"
            ),
            {"r": run_id},
        )
        return n
