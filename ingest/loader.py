"""Bulk loading of survey files: whole files per transaction, binary COPY, bounded memory.

:class:`Loader` is the :class:`~skyledger.ingest.store.Store` of a batch (what a file
becomes in the database, one transaction per file or per group of files, is described
there) plus the batch itself: :meth:`Loader.ingest_many` reads files in order, inline or
in worker processes, and reports each file's outcome once the commit that made it true
is done.

Large batches read ahead in worker processes that also store what they read: a new,
small file stays in the worker that read it, and the loader has that worker commit its
files in groups (up to :data:`GROUP_FILES` per transaction; jobs go to the workers in
blocks of that many files). What the loader keeps to itself is the order: outcomes are
reported in file order, a file that must be stored alone (a rejection, a line
catalogue, a file too large to ship) waits until every group before it is committed,
and a group that shares content or a path with a group in flight waits for it, so a
copy of a file is judged against its original exactly as in order.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from skyledger.ingest.inflate import InputLimits
from skyledger.ingest.checksum import sha256_file
from skyledger.ingest.outcomes import FileOutcome
from skyledger.ingest.prepare import Job, Prepared
from skyledger.ingest.read_ahead import ReadAhead
from skyledger.ingest.read_worker import StoreTarget
from skyledger.ingest.store import Store, ensure_survey
from skyledger.ingest.store_groups import GROUP_BYTES, GROUP_FILES
from skyledger.ingest.table_rows import LINE_FLAGS, SOURCE_FLAGS, SPECTRUM_FLAGS
from skyledger.schema.database import Database

__all__ = [
    "FileOutcome", "GROUP_FILES", "InputLimits", "Job", "Loader", "LINE_FLAGS", "READ_AHEAD_MIN_FILES", "READ_WORKERS", "SOURCE_FLAGS",
    "SPECTRUM_FLAGS", "ensure_survey", "sha256_file",
]  # fmt: skip

#: Batches with at least this many files read ahead in a worker process (below it the
#: process start, about half a second of interpreter and imports, costs more than it saves).
READ_AHEAD_MIN_FILES = 200
#: Reader processes of a large batch. Two, even on two cores: each waits for the database
#: server while it commits a group, and the other reads meanwhile (docs/benchmarks.md,
#: "Ingest").
READ_WORKERS = min(2, os.cpu_count() or 1)
#: Groups each worker may have been told to store and not yet reported: bounds what the
#: workers hold in memory, with the read-ahead window (two blocks per worker).
GROUPS_IN_FLIGHT_PER_WORKER = 2

OnFile = Callable[[FileOutcome], None]


class Loader(Store):
    """Loads files into one database. Create one per batch (it holds connections and caches ids)."""

    def __init__(
        self, db: Database, *, root: Path | None = None, batch_id: str | None = None,
        limits: InputLimits | None = None, allow_duplicate_content: bool = False,
    ):  # fmt: skip
        super().__init__(db.conninfo, root=root, batch_id=batch_id, limits=limits,
                         allow_duplicate_content=allow_duplicate_content)  # fmt: skip
        self.db = db

    def __enter__(self) -> Loader:
        return self

    def ingest_many(
        self, jobs: Sequence[Job], *, on_file: OnFile | None = None, read_workers: int | None = None
    ) -> None:
        """Ingest every job in order, calling ``on_file`` once each file's transaction committed.

        ``read_workers`` processes read the next files and store them in groups (default:
        :data:`READ_WORKERS` for batches of :data:`READ_AHEAD_MIN_FILES` files or more,
        else none: each file is read and stored here, in its own transaction).
        """
        if read_workers is None:
            read_workers = READ_WORKERS if len(jobs) >= READ_AHEAD_MIN_FILES else 0
        if read_workers <= 0:
            for job in jobs:
                outcome = self.ingest(job.path, job.survey, reader=job.reader)
                if on_file is not None:
                    on_file(outcome)
            return
        target = StoreTarget(self.conninfo, self.batch_id, self.allow_duplicate_content)
        with ReadAhead(jobs, root=self.root, workers=read_workers, window=2 * GROUP_FILES, block=GROUP_FILES,
                       store=target, limits=self.limits) as ahead:  # fmt: skip
            groups = _Groups(self, ahead, on_file, limit=GROUPS_IN_FLIGHT_PER_WORKER * read_workers)
            for index, (job, prepared) in enumerate(zip(jobs, ahead)):
                if prepared.held:
                    groups.add(index, prepared, job.reader)
                    continue
                groups.submit()
                groups.drain()  # files stay in order around one stored alone
                started = time.perf_counter() - prepared.seconds
                outcome = self._store(prepared, job.reader, started, read_inline=prepared.deferred)
                if on_file is not None:
                    on_file(outcome)
            groups.submit()
            groups.drain()
            ahead.finish()


class _Groups:
    """The groups of a read-ahead batch: files held by one worker collected in file order,
    stored by that worker, their outcomes reported in the order the groups were formed."""

    def __init__(self, loader: Loader, ahead: ReadAhead, on_file: OnFile | None, *, limit: int):
        self._loader, self._ahead, self._on_file, self._limit = loader, ahead, on_file, limit
        self._indexes: list[int] = []
        self._keys: set[str] = set()
        self._survey_ids: dict[str, int] = {}
        self._bytes = 0
        self._inflight: collections.deque[tuple[int, set[str]]] = collections.deque()

    def add(self, index: int, prepared: Prepared, reader: str | None) -> None:
        if self._indexes and self._ahead.worker_of(index) != self._ahead.worker_of(self._indexes[0]):
            self.submit()
        self._indexes.append(index)
        self._keys |= {prepared.sha or "", prepared.uri}
        self._survey_ids[prepared.survey.name] = self._loader.survey_id(prepared.survey, reader)
        self._bytes += prepared.held_bytes
        if len(self._indexes) >= GROUP_FILES or self._bytes >= GROUP_BYTES:
            self.submit()

    def submit(self) -> None:
        """Send the collected files to their worker, once no group in flight shares their
        content or paths (a copy is judged against its original as in order)."""
        if not self._indexes:
            return
        while self._inflight and any(self._keys & busy for _, busy in self._inflight):
            self._report_oldest()
        while len(self._inflight) >= self._limit:
            self._report_oldest()
        token = self._ahead.store(self._indexes, self._survey_ids)
        self._inflight.append((token, self._keys))
        self._indexes, self._keys, self._survey_ids, self._bytes = [], set(), {}, 0

    def drain(self) -> None:
        """Wait for every group in flight and report it."""
        while self._inflight:
            self._report_oldest()

    def _report_oldest(self) -> None:
        token, _ = self._inflight.popleft()
        outcomes = self._ahead.stored(token)  # a worker's DatabaseError stops the batch here
        if self._on_file is not None:
            for outcome in outcomes:
                self._on_file(outcome)
