"""The writing half of an ingest: a file's rows into the database, wholly or not at all.

A file is wholly in or wholly out. Its rows are written inside one transaction (the
``ingest_file`` row, its sources, its spectra streamed through COPY, and for line
catalogues an ``ingested`` run with its line measurements), which commits only at the
end; any problem with the file rolls everything back and records the file as
``rejected`` with the reason, and the batch goes on. Infrastructure failures (the
database going away) are not the file's fault: they propagate and stop the batch.

Small, already-read files can share a transaction (:meth:`Store.store_group`: up to
:data:`GROUP_FILES` per transaction, one COPY per table for the group): for
one-spectrum files the per-file statements cost more than the rows. A group holds whole
files only, so a killed process still leaves every file wholly in or out; a group that
fails on one file's rows is retried file by file, so only that file is rejected.

The duplicate check runs inside the file's (or group's) transaction, on a psycopg
connection held for the batch (a handful of round trips per transaction). Commits do not
wait for the WAL flush (``synchronous_commit = off``, this connection only): a crash of
the *server* may forget the last fraction of a second of files, each one whole,
``ingest_file`` row included, so a rerun loads them again; a crash of the ingest process
loses nothing committed. Closing the store waits for the flush, so a finished batch is
durable.

Surveys and wavelength grids are registered on a separate autocommit connection (grids
are content-addressed and immutable), so a rolled-back file can at most leave an unused
grid behind. This module needs psycopg and numpy only, not SQLAlchemy: the read-ahead
worker processes that store groups import it (:mod:`skyledger.ingest.read_ahead`).
"""

from __future__ import annotations

import hashlib
import itertools
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

from skyledger.ingest.config import SurveySpec
from skyledger.ingest.inflate import InputLimits
from skyledger.ingest.read_ahead import Job, Prepared, changed_on_disk, locate, read_contents
from skyledger.ingest.records import FileContents, LineMeasurement, SourceRow, SpectrumRow
from skyledger.schema.errors import DatabaseError, ReaderError
from skyledger.schema.pgcopy import copy_rows, to_json

__all__ = [
    "FileOutcome", "GROUP_BYTES", "GROUP_FILES", "LINE_FLAGS", "Member", "SOURCE_FLAGS", "SPECTRUM_FLAGS", "Store",
    "ensure_survey", "groupable",
]  # fmt: skip

_log = logging.getLogger(__name__)

# Bit values; their meanings are rows of flag_definition (migrations 0001, 0002 and 0013).
SOURCE_FLAGS = {"NO_POSITION": 1 << 0, "POSITION_FROM_CONFIG": 1 << 1}
SPECTRUM_FLAGS = {
    "NO_POSITION": 1 << 0, "POSITION_FROM_CONFIG": 1 << 1, "NO_RESOLUTION": 1 << 2, "AIR_TO_VACUUM": 1 << 3,
    "ZERO_IVAR": 1 << 4,
}  # fmt: skip
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

# The stored copy of this content (in any survey, unless the batch allows a copy per
# survey: %(own)s), else a rejection of it in this survey.
_PREVIOUS_SQL = (
    "SELECT f.id, f.uri, f.status, f.reason, f.survey_id, s.name FROM ingest_file f JOIN survey s ON s.id = f.survey_id "
    "WHERE f.sha256 = %(h)s AND (f.status = 'loaded' AND (f.survey_id = %(s)s OR NOT %(own)s) "
    "OR f.status = 'rejected' AND f.survey_id = %(s)s) "
    "ORDER BY (f.status = 'loaded') DESC, (f.survey_id = %(s)s) DESC, (f.uri = %(u)s) DESC, f.id DESC LIMIT 1"
)
_DUPLICATE_SQL = (
    "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reason, batch_id, finished_at) "
    "SELECT %(s)s, %(u)s, %(h)s, size_bytes, 'duplicate', %(why)s, %(b)s, now() FROM ingest_file WHERE id = %(id)s "
    "RETURNING id"
)
# The file's row and the ids of its sources in one round trip (COPY cannot return ids).
_FILE_SQL = (
    "WITH f AS (INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reader, batch_id, version) "
    "VALUES (%(s)s, %(u)s, %(h)s, %(size)s, 'loaded', %(r)s, %(b)s, 1 + coalesce((SELECT max(version) FROM ingest_file "
    "WHERE survey_id = %(s)s AND uri = %(u)s AND status = 'loaded'), 0)) RETURNING id) "
    "SELECT f.id, ARRAY(SELECT nextval(pg_get_serial_sequence('source', 'id')) FROM generate_series(1, %(n)s)) FROM f"
)
_FINISH_SQL = (
    "UPDATE ingest_file SET n_sources = %(a)s, n_spectra = %(b)s, n_lines = %(c)s, finished_at = now(), "
    "duration_s = extract(epoch FROM clock_timestamp() - started_at) WHERE id = %(id)s"
)
_REJECT_SQL = (
    "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reason, reader, batch_id, "
    "finished_at, duration_s) VALUES (%(s)s, %(u)s, %(h)s, %(size)s, 'rejected', %(why)s, %(r)s, %(b)s, now(), %(d)s) "
    "RETURNING id"
)

#: Read-ahead files are committed in groups of up to this many files (or bytes of
#: arrays), one transaction per group: per-file statements and commits cost more than
#: the COPY of a one-spectrum file. Every file is still wholly in or wholly out. 32, not
#: 16, since the read-ahead workers store their own groups: 20,000 SDSS files went in at
#: 700-800 against 550-650 spectra/s (docs/benchmarks.md, "Ingest"); 64 was no better.
GROUP_FILES = 32
GROUP_BYTES = 16 << 20
STREAM_CHUNK_BYTES = 256 << 10

# Several files' rows in one statement; versions are looked up first (_GROUP_VERSIONS_SQL)
# so that each lookup is an index probe by uri, not a subquery the planner may misjudge.
_GROUP_FILES_SQL = (
    "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reader, batch_id, version, "
    "n_sources, n_spectra, n_lines, finished_at, duration_s) "
    "SELECT s, u, h, size, 'loaded', r, %(b)s, v, na, nb, 0, now(), d FROM unnest(%(s)s::int4[], %(u)s::text[], "
    "%(h)s::text[], %(size)s::int8[], %(r)s::text[], %(v)s::int4[], %(na)s::int4[], %(nb)s::int4[], %(d)s::float8[]) "
    "AS t(s, u, h, size, r, v, na, nb, d) RETURNING id, survey_id, uri"
)
_GROUP_VERSIONS_SQL = (
    "SELECT survey_id, uri, max(version) FROM ingest_file WHERE uri = ANY(%(u)s) AND status = 'loaded' "
    "GROUP BY survey_id, uri"
)
_GROUP_KNOWN_SQL = (
    "SELECT survey_id, sha256, status FROM ingest_file WHERE sha256 = ANY(%(h)s) AND status IN ('loaded', 'rejected')"
)
_SOURCE_IDS_SQL = "SELECT nextval(pg_get_serial_sequence('source', 'id')) FROM generate_series(1, %(n)s)"

@dataclass(slots=True)
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


def ensure_survey(conn: psycopg.Connection, spec: SurveySpec, reader: str | None) -> int:
    """Register the survey (or refresh its configuration) and return its id."""
    row = conn.execute(
        "INSERT INTO survey (name, reader, location, options) VALUES (%(n)s, %(r)s, %(l)s, CAST(%(o)s AS jsonb)) "
        "ON CONFLICT (name) DO UPDATE SET reader = EXCLUDED.reader, location = EXCLUDED.location, "
        "options = EXCLUDED.options RETURNING id",
        {
            "n": spec.name,
            "r": spec.reader or reader or "auto",
            "l": None if spec.location is None else f"{spec.location}/{spec.glob}",
            "o": to_json(spec.options),
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def _code_version() -> str:
    return f"skyledger {package_version('skyledger')}"


class _Changed(ReaderError):
    """The file on disk is no longer the version that was checksummed."""


def _lost(path: object) -> DatabaseError:
    return DatabaseError(
        f"lost the database connection while ingesting {path}; nothing of that file was written; "
        "run the ingest again to load it and the files after it"
    )


class Store:
    """Writes files into one database (libpq ``conninfo``). One per batch and process: it
    holds its connections and caches survey and grid ids."""

    def __init__(
        self, conninfo: str, *, root: Path | None = None, batch_id: str | None = None,
        limits: InputLimits | None = None, allow_duplicate_content: bool = False,
    ):  # fmt: skip
        self.conninfo = conninfo
        self.root = root.resolve() if root is not None else None
        self.batch_id = batch_id
        self.limits = limits or InputLimits()
        #: load content already stored under another survey again (one copy per survey),
        #: instead of recording the file as a duplicate of the stored copy
        self.allow_duplicate_content = allow_duplicate_content
        self._grids: dict[str, int] = {}
        self._recent_grids: dict[tuple[int, float, float], tuple[np.ndarray, int]] = {}
        self._side_conn: psycopg.Connection | None = None
        self._conn: psycopg.Connection | None = None
        self.survey_ids: dict[str, int] = {}

    # ------------------------------------------------------------------ public

    def close(self, *, failing: bool = False) -> None:
        """Release the connections, first waiting until the committed files are durable.

        ``failing``: an error is already on its way out; a failed flush must not hide it.
        """
        try:
            if self._conn is not None and not self._conn.closed:
                try:
                    self._flush_wal()
                except psycopg.Error:
                    if not failing:
                        raise
                    _log.warning("could not wait for the last files' WAL flush", exc_info=True)
        finally:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            if self._side_conn is not None:
                self._side_conn.close()
                self._side_conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(failing=exc_type is not None)

    def ingest(self, path: str | os.PathLike[str], survey: SurveySpec | None, *, reader: str | None = None) -> FileOutcome:
        """Ingest one file, in its own transaction. Never leaves a partial file behind.

        Losing the database is not the file's fault: it stops the batch with a
        :class:`DatabaseError` (the open transaction dies with the connection).
        ``survey=None`` names the survey after the file's reader.
        """
        started = time.perf_counter()
        prepared = locate(Job(str(path), survey, reader), self.root, self.limits)
        return self._store(prepared, reader, started, read_inline=True)

    # ------------------------------------------------------------------ steps

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo)
            # Durability is restored at close (_flush_wal); atomicity never depends on it.
            self._conn.execute("SET synchronous_commit = off")
            self._conn.commit()
        return self._conn

    def _flush_wal(self) -> None:
        """Wait until every file this loader committed is on disk (one synchronous commit)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return
        conn.rollback()
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT pg_current_xact_id()")  # a transaction id, so the commit waits for the flush
        conn.commit()

    def _side(self) -> psycopg.Connection:
        """The autocommit connection for surveys and grids (rows no file's rollback undoes)."""
        if self._side_conn is None or self._side_conn.closed:
            self._side_conn = psycopg.connect(self.conninfo, autocommit=True)
        return self._side_conn

    def survey_id(self, survey: SurveySpec, reader: str | None) -> int:
        if survey.name not in self.survey_ids:
            self.survey_ids[survey.name] = ensure_survey(self._side(), survey, reader)
        return self.survey_ids[survey.name]

    def _store(self, prepared: Prepared, reader: str | None, started: float, *, read_inline: bool) -> FileOutcome:
        """The writing half: duplicate check, rows, bookkeeping, one transaction."""
        try:
            survey_id = self.survey_id(prepared.survey, reader)
            conn = self._connection()
            outcome = FileOutcome(path=prepared.path, status="rejected", size_bytes=prepared.size)
            try:
                return self._store_in_transaction(conn, prepared, outcome, survey_id, reader, started, read_inline)
            except BaseException:
                if not conn.closed and not conn.broken:
                    conn.rollback()
                raise
        except psycopg.OperationalError as err:
            raise _lost(prepared.path) from err

    def _store_in_transaction(
        self, conn: psycopg.Connection, prepared: Prepared, outcome: FileOutcome, survey_id: int,
        reader: str | None, started: float, read_inline: bool,
    ) -> FileOutcome:  # fmt: skip
        if prepared.sha is not None:
            previous = self._previous(conn, survey_id, prepared.uri, prepared.sha)
            if previous is not None:
                outcome.status, outcome.reason, outcome.ingest_file_id = previous
                conn.commit()
                outcome.seconds = time.perf_counter() - started
                return outcome
        if prepared.reason is None and read_inline:
            read_contents(prepared, reader)
        outcome.reader = prepared.reader
        if prepared.reason is None and prepared.contents is not None:
            try:
                self._load(conn, prepared.contents, outcome, survey_id=survey_id, uri=prepared.uri,
                           sha=prepared.sha, path=Path(prepared.uri))  # fmt: skip
                changed = changed_on_disk(prepared)
                if changed is not None:
                    raise _Changed(Path(prepared.uri), changed)
            except _Changed as err:
                conn.rollback()
                outcome.status, prepared.reason = "rejected", err.detail
                outcome.n_sources = outcome.n_spectra = outcome.n_lines = 0
                # Not the checksummed content's fault: recorded without a checksum, so
                # that the same content is judged afresh next time.
                prepared.sha = None
            except ReaderError as err:
                conn.rollback()
                prepared.reason = err.detail
            except pg_errors.UniqueViolation as err:
                conn.rollback()
                if "uq_ingest_file_loaded_content" not in str(err):
                    prepared.reason = f"the database refused the rows: {err.diag.message_primary}"
                else:  # another process loaded the same content at the same moment
                    outcome.status, outcome.reason = "duplicate", "loaded concurrently by another process"
                    outcome.seconds = time.perf_counter() - started
                    return outcome
            except (pg_errors.DataError, pg_errors.IntegrityError) as err:
                conn.rollback()
                prepared.reason = f"the database refused the rows: {err.diag.message_primary}"
        outcome.seconds = time.perf_counter() - started
        if outcome.status == "loaded":
            conn.commit()
            return outcome
        outcome.reason = prepared.reason or "the reader returned nothing"
        outcome.ingest_file_id = conn.execute(
            _REJECT_SQL,
            {"s": survey_id, "u": prepared.uri, "h": prepared.sha, "size": outcome.size_bytes or None,
             "why": outcome.reason, "r": outcome.reader, "b": self.batch_id, "d": outcome.seconds},
        ).fetchone()[0]  # fmt: skip
        conn.commit()
        _log.info("rejected %s: %s", prepared.uri, outcome.reason)
        return outcome

    def store_group(self, members: list[Member]) -> list[FileOutcome]:
        """Store a group's files: the new ones in one transaction, the rest one by one.

        Files whose content is already known (loaded or rejected before, or twice in the
        group) take the per-file path after the group's commit, which gives them their
        ``unchanged``/``duplicate`` outcome. If the group's transaction fails on any
        file's rows, it is rolled back and every file of the group is stored alone, so
        the culprit is rejected with its reason and the others load. Returns the
        outcomes in the order of the files, once the commits that made them true are done.
        """
        if not members:
            return []
        outcomes: dict[int, FileOutcome] = {}
        try:
            conn = self._connection()
            fresh = self._fresh_members(conn, members)
            if not fresh:
                conn.commit()  # end the check's transaction; each file below has its own
            else:
                try:
                    outcomes.update(self._store_group(conn, fresh))
                # TransactionRollback: a deadlock with another writer's group (each holding
                # a copy of content the other inserts); one file at a time cannot deadlock.
                except (ReaderError, pg_errors.DataError, pg_errors.IntegrityError, pg_errors.TransactionRollback):
                    conn.rollback()
                    for member in fresh:
                        member.rewind()
                    _log.info("a group of %d files failed together; storing them one by one", len(fresh))
        except psycopg.OperationalError as err:
            raise _lost(members[0].prepared.path) from err
        for member in members:
            if member.position not in outcomes:
                outcomes[member.position] = self._store(member.prepared, member.reader, member.started, read_inline=False)
        return [outcomes[position] for position in sorted(outcomes)]

    def _fresh_members(self, conn: psycopg.Connection, members: list[Member]) -> list[Member]:
        """The members whose content is new to their survey and unique within the group."""
        for member in members:
            member.survey_id = self.survey_id(member.prepared.survey, member.reader)
        known: set[tuple[int | None, str]] = set()
        for survey_id, sha, status in conn.execute(_GROUP_KNOWN_SQL, {"h": [m.prepared.sha for m in members]}):
            known.add((survey_id, sha))
            if status == "loaded" and not self.allow_duplicate_content:
                known.add((None, sha))  # stored under some survey: a duplicate in every survey
        fresh: list[Member] = []
        seen: set[tuple[int | None, str | None]] = set()
        uris: set[tuple[int, str]] = set()
        for member in members:
            key = (member.survey_id if self.allow_duplicate_content else None, member.prepared.sha)
            if (member.survey_id, member.prepared.sha) in known:
                continue
            uri = (member.survey_id, member.prepared.uri)
            if key in known or key in seen or uri in uris:
                continue
            seen.add(key)
            uris.add(uri)
            fresh.append(member)
        return fresh

    def _store_group(self, conn: psycopg.Connection, members: list[Member]) -> dict[int, FileOutcome]:
        """One transaction for several new files: their ``ingest_file`` rows, one COPY of
        all their sources and one of all their spectra, one commit."""
        versions = {
            (survey_id, uri): version
            for survey_id, uri, version in conn.execute(_GROUP_VERSIONS_SQL, {"u": [m.prepared.uri for m in members]})
        }
        file_rows = conn.execute(
            _GROUP_FILES_SQL,
            {"s": [m.survey_id for m in members], "u": [m.prepared.uri for m in members],
             "h": [m.prepared.sha for m in members], "size": [m.prepared.size for m in members],
             "r": [m.prepared.reader for m in members],
             "v": [1 + versions.get((m.survey_id, m.prepared.uri), 0) for m in members],
             "na": [len(m.contents.sources) for m in members],
             "nb": [len(m.spectra) for m in members], "d": [time.perf_counter() - m.started for m in members],
             "b": self.batch_id},
        ).fetchall()  # fmt: skip
        file_ids = {(survey_id, uri): file_id for file_id, survey_id, uri in file_rows}
        source_ids = iter(
            row[0] for row in conn.execute(_SOURCE_IDS_SQL, {"n": sum(len(m.contents.sources) for m in members)})
        )
        source_rows: list[tuple[Any, ...]] = []
        spectrum_rows: list[Iterator[tuple[Any, ...]]] = []
        outcomes: dict[int, FileOutcome] = {}
        for member in members:
            prepared, contents = member.prepared, member.contents
            file_id = file_ids[(member.survey_id, prepared.uri)]
            path = Path(prepared.uri)
            ids = [next(source_ids) for _ in contents.sources]
            by_name = self._source_rows(conn, contents.sources, ids, source_rows, survey_id=member.survey_id,
                                        file_id=file_id, path=path)  # fmt: skip
            air = contents.meta.get("wavelength_medium_in_file") == "air"
            spectrum_rows.append(
                self._spectrum_rows(iter(member.spectra), by_name, [], survey_id=member.survey_id, file_id=file_id,
                                    path=path, air=air)  # fmt: skip
            )
            outcomes[member.position] = FileOutcome(
                path=prepared.path, status="loaded", reader=prepared.reader, ingest_file_id=file_id,
                n_sources=len(by_name), n_spectra=len(member.spectra), size_bytes=prepared.size,
            )  # fmt: skip
        copy_rows(conn, "source", _SOURCE_COLUMNS, source_rows)
        # Sent in small chunks so that the server inserts rows while the rest are encoded.
        copy_rows(conn, "spectrum", _SPECTRUM_COLUMNS, itertools.chain.from_iterable(spectrum_rows),
                  chunk_bytes=STREAM_CHUNK_BYTES)  # fmt: skip
        for member in members:
            changed = changed_on_disk(member.prepared)
            if changed is not None:  # the group is stored file by file, and this file rejected
                raise _Changed(Path(member.prepared.uri), changed)
        conn.commit()
        now = time.perf_counter()
        for member in members:
            outcomes[member.position].seconds = now - member.started
        return outcomes

    def _previous(self, conn: psycopg.Connection, survey_id: int, uri: str, sha: str) -> tuple[str, str, int] | None:
        """Loaded or rejected before with the same content? Then this is a no-op.

        Content is stored once: a copy under another path or another survey is recorded
        as a duplicate of the stored copy, unless ``allow_duplicate_content`` (then each
        survey may hold one copy).
        """
        row = conn.execute(
            _PREVIOUS_SQL, {"s": survey_id, "h": sha, "u": uri, "own": self.allow_duplicate_content}
        ).fetchone()
        if row is None:
            return None
        prev_id, prev_uri, status, reason, prev_survey_id, prev_survey = row
        if status == "rejected":
            if prev_uri != uri:
                return None  # same bad content under another name: judge it afresh
            return ("rejected", f"unchanged since ingest_file {prev_id}: {reason}", prev_id)
        if prev_uri == uri and prev_survey_id == survey_id:
            return ("unchanged", f"already loaded as ingest_file {prev_id}", prev_id)
        where = "" if prev_survey_id == survey_id else f" in survey {prev_survey!r}"
        why = f"same content as ingest_file {prev_id} ({prev_uri}){where}"
        dup_id = conn.execute(
            _DUPLICATE_SQL, {"s": survey_id, "u": uri, "h": sha, "why": why, "b": self.batch_id, "id": prev_id}
        ).fetchone()[0]
        return ("duplicate", why, dup_id)

    def _load(
        self, conn: psycopg.Connection, contents: FileContents, outcome: FileOutcome, *, survey_id: int, uri: str,
        sha: str | None, path: Path,
    ) -> None:  # fmt: skip
        if not contents.sources:
            raise ReaderError(path, "the file holds no sources")
        file_id, source_ids = conn.execute(
            _FILE_SQL,
            {"s": survey_id, "u": uri, "h": sha, "size": outcome.size_bytes, "r": outcome.reader, "b": self.batch_id,
             "n": len(contents.sources)},
        ).fetchone()  # fmt: skip
        by_name = self._copy_sources(conn, contents.sources, source_ids, survey_id=survey_id, file_id=file_id, path=path)
        lines: list[tuple[str, list[LineMeasurement]]] = []
        air = contents.meta.get("wavelength_medium_in_file") == "air"
        outcome.n_spectra = copy_rows(
            conn, "spectrum", _SPECTRUM_COLUMNS,
            self._spectrum_rows(contents.spectra, by_name, lines, survey_id=survey_id, file_id=file_id, path=path, air=air),
        )  # fmt: skip
        if outcome.n_spectra == 0:
            raise ReaderError(path, "the file holds no spectra")
        outcome.n_sources = len(by_name)
        if lines:
            outcome.n_lines = self._copy_lines(conn, lines, contents, file_id=file_id, uri=uri)
        conn.execute(_FINISH_SQL, {"a": outcome.n_sources, "b": outcome.n_spectra, "c": outcome.n_lines, "id": file_id})
        outcome.status, outcome.ingest_file_id = "loaded", file_id

    def _copy_sources(
        self, conn: psycopg.Connection, sources: Sequence[SourceRow], ids: Sequence[int], *, survey_id: int,
        file_id: int, path: Path,
    ) -> dict[str, int]:  # fmt: skip
        rows: list[tuple[Any, ...]] = []
        by_name = self._source_rows(conn, sources, ids, rows, survey_id=survey_id, file_id=file_id, path=path)
        copy_rows(conn, "source", _SOURCE_COLUMNS, rows)
        return by_name

    def _source_rows(
        self, conn: psycopg.Connection, sources: Sequence[SourceRow], ids: Sequence[int], out: list[tuple[Any, ...]],
        *, survey_id: int, file_id: int, path: Path,
    ) -> dict[str, int]:  # fmt: skip
        """Append the file's ``source`` rows to ``out``; returns the source ids by object id."""
        by_name = {src.object_id: sid for src, sid in zip(sources, ids)}
        if len(by_name) != len(sources):
            raise ReaderError(path, "duplicate source identifiers within the file")
        external = {s.parent_object_id for s in sources if s.parent_object_id and s.parent_object_id not in by_name}
        parents = dict(by_name)
        for name in external:
            found = conn.execute(
                "SELECT max(id) FROM source WHERE survey_id = %s AND object_id = %s", (survey_id, name)
            ).fetchone()[0]
            if found is None:
                raise ReaderError(path, f"parent object {name!r} is neither in the file nor already ingested for this survey")
            parents[name] = found

        for src, sid in zip(sources, ids):
            flags = SOURCE_FLAGS["NO_POSITION"] if src.ra is None else 0
            if src.meta.get("position_from_config"):
                flags |= SOURCE_FLAGS["POSITION_FROM_CONFIG"]
            parent = parents[src.parent_object_id] if src.parent_object_id else None
            out.append((sid, survey_id, file_id, src.object_id, parent, src.ra, src.dec, src.z, flags, src.meta))
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
            if row.n_pix and not row.ivar.any():
                flags |= SPECTRUM_FLAGS["ZERO_IVAR"]  # loaded, but no pixel carries data
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
        # Most files of a survey share a few grids: compare with the last grid of the
        # same ends before hashing (sha256 of 32 kB per spectrum shows in a profile).
        probe = (values.size, float(values[0]), float(values[-1])) if values.size else (0, 0.0, 0.0)
        seen = self._recent_grids.get(probe)
        if seen is not None and np.array_equal(seen[0], values):
            return seen[1]
        key = hashlib.sha256(values.tobytes()).hexdigest()
        cached = self._grids.get(key)
        if cached is not None:
            self._recent_grids[probe] = (values, cached)
            return cached
        steps = np.diff(np.log(values))
        log_uniform = bool(values.size > 2 and np.allclose(steps, steps.mean(), rtol=1e-5, atol=0))
        with self._side().cursor() as cur:
            cur.execute(
                "INSERT INTO wavelength_grid (sha256, n_pix, wave, log_uniform) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (sha256) DO NOTHING",
                (key, int(values.size), values.tolist(), log_uniform),
            )
            grid = cur.execute("SELECT id FROM wavelength_grid WHERE sha256 = %s", (key,)).fetchone()
        assert grid is not None
        self._grids[key] = grid[0]
        self._recent_grids[probe] = (values, grid[0])
        return grid[0]

    def _copy_lines(
        self,
        conn: psycopg.Connection,
        lines: list[tuple[str, list[LineMeasurement]]],
        contents: FileContents,
        *,
        file_id: int,
        uri: str,
    ) -> int:
        params = {"ingest_file_id": file_id, "file": uri, "dust_corrected": contents.dust_corrected}
        run_id = conn.execute(
            "INSERT INTO run (task, version, params, params_hash, code_version, host, status, n_inputs, "
            "finished_at) VALUES (%(t)s, %(v)s, CAST(%(p)s AS jsonb), %(h)s, %(c)s, %(host)s, 'running', %(n)s, now()) "
            "RETURNING id",
            {"t": INGESTED_TASK, "v": INGESTED_VERSION, "p": to_json(params),
             "h": hashlib.sha256(to_json(params).encode()).hexdigest(), "c": _code_version(),
             "host": socket.gethostname(), "n": len(lines)},
        ).fetchone()[0]
        spectrum_ids = dict(conn.execute("SELECT object_id, id FROM spectrum WHERE ingest_file_id = %s", (file_id,)))
        base_flags = LINE_FLAGS["FROM_CATALOGUE"] | (LINE_FLAGS["DUST_CORRECTED"] if contents.dust_corrected else 0)

        def rows() -> Iterator[tuple[Any, ...]]:
            for object_id, measured in lines:
                sid = spectrum_ids[object_id]
                for m in measured:
                    yield (run_id, sid, m.line, m.velocity, m.velocity_err, m.sigma, m.sigma_err, m.flux, m.flux_err, base_flags)

        n = copy_rows(conn, "line_measurement", _LINE_COLUMNS, rows())
        # Catalogue lines are current as soon as the file is: the run joins `current`
        # in the same transaction that makes it succeed.
        conn.execute("UPDATE run SET status = 'succeeded', n_results = %s, finished_at = now() WHERE id = %s", (n, run_id))
        conn.execute(
            "INSERT INTO collection_run (collection_id, run_id) SELECT id, %s FROM collection WHERE name = 'current'",
            (run_id,),
        )
        return n


@dataclass(slots=True)
class Member:
    """A read file that may share a transaction with others (see :func:`groupable`), its
    spectra materialised. ``position`` orders a group's outcomes (the file's place in
    its batch)."""

    position: int
    prepared: Prepared
    reader: str | None
    started: float
    contents: FileContents
    spectra: list[SpectrumRow]
    nbytes: int = 0
    survey_id: int = 0

    def rewind(self) -> None:
        """Make the file storable alone again after a failed group."""
        self.contents.spectra = iter(self.spectra)


def groupable(prepared: Prepared, reader: str | None, position: int, started: float) -> Member | None:
    """The file as a group member, if it can share a transaction: read without a
    rejection, checksummed, not a line catalogue, no parents outside the file, at least
    one spectrum. None: it is stored alone."""
    contents = prepared.contents
    if prepared.reason is not None or prepared.deferred or contents is None or prepared.sha is None:
        return None
    names = {src.object_id for src in contents.sources}
    if not contents.sources or any(s.parent_object_id and s.parent_object_id not in names for s in contents.sources):
        return None
    spectra = list(contents.spectra)
    contents.spectra = iter(spectra)
    if not spectra or any(row.lines for row in spectra):
        return None
    nbytes = sum(a.nbytes for row in spectra for a in (row.wave, row.flux, row.ivar, row.mask, row.resolution)
                 if a is not None)  # fmt: skip
    return Member(position, prepared, reader, started, contents, spectra, nbytes)
