"""The writing half of an ingest: a file's rows into the database, wholly or not at all.

A file is wholly in or wholly out. Its rows are written inside one transaction (the
``ingest_file`` row, its sources, its spectra streamed through COPY, and for line
catalogues an ``ingested`` run with its line measurements), which commits only at the
end; any problem with the file rolls everything back and records the file as
``rejected`` with the reason, and the batch goes on. Infrastructure failures (the
database going away) are not the file's fault: they propagate and stop the batch.

Small, already-read files can share a transaction (:meth:`Store.store_group`, see
:mod:`skyledger.ingest.store_groups`): for one-spectrum files the per-file statements
cost more than the rows. A group holds whole files only, so a killed process still
leaves every file wholly in or out; a group that fails on one file's rows is retried
file by file, so only that file is rejected.

The duplicate check runs inside the file's (or group's) transaction, on a psycopg
connection held for the batch (a handful of round trips per transaction). Commits do not
wait for the WAL flush (``synchronous_commit = off``, this connection only): a crash of
the *server* may forget the last fraction of a second of files, each one whole,
``ingest_file`` row included, so a rerun loads them again; a crash of the ingest process
loses nothing committed. Closing the store waits for the flush, so a finished batch is
durable.

Surveys and wavelength grids are registered on a separate autocommit connection (grids
are content-addressed and immutable), so a rolled-back file can at most leave an unused
grid behind. The rows themselves are built in :mod:`skyledger.ingest.table_rows`, a line
catalogue's measurements and their run in :mod:`skyledger.ingest.catalogue_lines`. This
module needs psycopg and numpy only, not SQLAlchemy: the read-ahead worker processes
that store groups import it (:mod:`skyledger.ingest.read_worker`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from skyledger.ingest.catalogue_lines import copy_lines
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.copy_columns import SOURCE_COLUMNS, SPECTRUM_COLUMNS
from skyledger.ingest.inflate import InputLimits
from skyledger.ingest.outcomes import ChangedOnDisk, FileOutcome, lost_connection
from skyledger.ingest.prepare import Job, Prepared, changed_on_disk, locate, read_contents
from skyledger.ingest.records import FileContents, LineMeasurement, SourceRow
from skyledger.ingest.store_groups import Member, fresh_members, insert_group
from skyledger.ingest.table_rows import WavelengthGrids, source_rows, spectrum_rows
from skyledger.schema.errors import ReaderError
from skyledger.schema.pgcopy import copy_rows, to_json

__all__ = ["FileOutcome", "Store", "ensure_survey"]

_log = logging.getLogger(__name__)

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
        self._grids = WavelengthGrids(self._side)
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
            raise lost_connection(prepared.path) from err

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
                    raise ChangedOnDisk(Path(prepared.uri), changed)
            except ChangedOnDisk as err:
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
            for member in members:
                member.survey_id = self.survey_id(member.prepared.survey, member.reader)
            fresh = fresh_members(conn, members, allow_duplicate_content=self.allow_duplicate_content)
            if not fresh:
                conn.commit()  # end the check's transaction; each file below has its own
            else:
                try:
                    outcomes.update(insert_group(conn, fresh, batch_id=self.batch_id, grid_id=self._grids.id_of))
                # TransactionRollback: a deadlock with another writer's group (each holding
                # a copy of content the other inserts); one file at a time cannot deadlock.
                except (ReaderError, pg_errors.DataError, pg_errors.IntegrityError, pg_errors.TransactionRollback):
                    conn.rollback()
                    for member in fresh:
                        member.rewind()
                    _log.info("a group of %d files failed together; storing them one by one", len(fresh))
        except psycopg.OperationalError as err:
            raise lost_connection(members[0].prepared.path) from err
        for member in members:
            if member.position not in outcomes:
                outcomes[member.position] = self._store(member.prepared, member.reader, member.started, read_inline=False)
        return [outcomes[position] for position in sorted(outcomes)]

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
            conn, "spectrum", SPECTRUM_COLUMNS,
            spectrum_rows(contents.spectra, by_name, lines, grid_id=self._grids.id_of, survey_id=survey_id,
                          file_id=file_id, path=path, air=air),
        )  # fmt: skip
        if outcome.n_spectra == 0:
            raise ReaderError(path, "the file holds no spectra")
        outcome.n_sources = len(by_name)
        if lines:
            outcome.n_lines = copy_lines(conn, lines, contents, file_id=file_id, uri=uri)
        conn.execute(_FINISH_SQL, {"a": outcome.n_sources, "b": outcome.n_spectra, "c": outcome.n_lines, "id": file_id})
        outcome.status, outcome.ingest_file_id = "loaded", file_id

    def _copy_sources(
        self, conn: psycopg.Connection, sources: Sequence[SourceRow], ids: Sequence[int], *, survey_id: int,
        file_id: int, path: Path,
    ) -> dict[str, int]:  # fmt: skip
        rows: list[tuple[Any, ...]] = []
        by_name = source_rows(conn, sources, ids, rows, survey_id=survey_id, file_id=file_id, path=path)
        copy_rows(conn, "source", SOURCE_COLUMNS, rows)
        return by_name
