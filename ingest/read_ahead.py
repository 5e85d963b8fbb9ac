"""The reading half of a large batch: the next files read (and stored) by worker processes.

Reading a survey file (FITS headers, table decoding, validation) costs the CPU more than
writing its rows, so a batch reads the next files in worker processes while the loader
writes the current one. ``ReadAhead`` keeps at most ``window`` files per worker read and
not yet taken, so memory is bounded whatever the batch size; a file too large to ship
between processes (a cube) is left for the loader to stream itself. Workers
(:mod:`skyledger.ingest.read_worker`) are plain subprocesses (safe inside Prefect's
threads), stopped on every exit path, and exit on their own if the parent dies (SIGKILL
included). What one file's reading is lives in :mod:`skyledger.ingest.prepare`.

Given a :class:`~skyledger.ingest.read_worker.StoreTarget`, the workers also *store*
what they read: a file that can share a transaction
(:func:`skyledger.ingest.store_groups.groupable`) stays in its worker, the loader gets
a stub (``Prepared.held``) and later tells the worker which of its held files to commit
as one group (:meth:`ReadAhead.store`). The arrays then never cross a process boundary,
and the loader process only coordinates: which files form a group, file order and the
duplicate judgement across groups (see :mod:`skyledger.ingest.loader`).
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from skyledger.ingest.inflate import InputLimits
from skyledger.ingest.prepare import SHIP_LIMIT_BYTES, Job, Prepared
from skyledger.ingest.read_worker import WORKER_CODE, Failure, StoreTarget, Stored
from skyledger.schema.errors import DatabaseError, IngestError

__all__ = ["PIPE_BYTES", "ReadAhead"]

_log = logging.getLogger(__name__)


#: Results a worker may leave in its pipe before it blocks (Linux; elsewhere the default
#: 64 kB, about one prepared SDSS file).
PIPE_BYTES = 1 << 20


def _widen_pipe(stream: Any) -> None:
    # A worker whose result does not fit in the pipe waits until the loader reads it; the
    # loader reads nothing while it commits a group, so with the default 64 kB pipe the
    # readers stalled for every group (2,000 files: the whole run's CPU use was 1.3 of
    # 2 cores). What waits in the pipe is bounded by PIPE_BYTES and the job window.
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, slower


def _prefetch(path: str) -> None:
    """Ask the kernel to start reading the file now (Linux ``POSIX_FADV_WILLNEED``), so that
    it is in the page cache when its worker gets to it, a window of files later: a batch
    larger than the page cache otherwise has each worker wait for the disk on every file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return  # missing or unreadable: the worker says so
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except (OSError, AttributeError):
        pass  # not Linux, or not a regular file: read as it comes
    finally:
        os.close(fd)


class ReadAhead:
    """Prepared files in job order, read by ``workers`` processes, each at most ``window``
    files ahead of the loader. Jobs go to the workers in blocks of ``block`` consecutive
    files (job ``i`` to worker ``(i // block) % workers``), so that a group of files
    stored together is held by one worker.

    With ``store``, the workers hold groupable files and :meth:`store` has one commit
    some of them; :meth:`finish` then waits until everything they committed is durable.
    """

    def __init__(self, jobs: Sequence[Job], *, root: Path | None, workers: int = 1, window: int = 12,
                 ship_limit: int = SHIP_LIMIT_BYTES, store: StoreTarget | None = None, block: int = 1,
                 limits: InputLimits | None = None):  # fmt: skip
        if workers < 1:
            raise ValueError("ReadAhead needs at least one worker")
        self._jobs = jobs
        self._root = root
        self._block = max(block, 1)
        self._n_workers = max(1, min(workers, -(-len(jobs) // self._block)))
        self._window = max(window, 1)
        self._ship_limit = ship_limit
        self._limits = limits
        self._target = store
        self._procs: list[subprocess.Popen[bytes]] = []
        self._sent = 0
        self._finished = False
        # What each worker's next replies answer, in order: ("read", index) or ("store", token).
        self._expected: list[deque[tuple[str, int]]] = []
        self._ready: dict[int, Prepared] = {}
        self._stored: dict[int, list[Any]] = {}
        self._tokens: dict[int, tuple[int, str]] = {}  # token -> (worker, what it asked, for messages)

    def __enter__(self) -> ReadAhead:
        env = dict(os.environ)
        # The child imports what this process can import, as multiprocessing would.
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        try:
            for _ in range(self._n_workers):
                proc = subprocess.Popen([sys.executable, "-c", WORKER_CODE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, close_fds=True)  # fmt: skip
                self._procs.append(proc)
                self._expected.append(deque())
                _widen_pipe(proc.stdout)
                if self._target is not None:
                    self._tell(len(self._procs) - 1, ("setup", self._target, self._root))
            while self._sent < min(self._window * self._n_workers, len(self._jobs)):
                self._send()
        except BaseException:
            self.close(graceful=False)
            raise
        return self

    def worker_of(self, index: int) -> int:
        return (index // self._block) % self._n_workers

    def _tell(self, worker: int, message: tuple[Any, ...]) -> None:
        proc = self._procs[worker]
        assert proc.stdin is not None
        try:
            pickle.dump(message, proc.stdin)
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker is dead: reading its next reply says so, clearly

    def _send(self) -> None:
        if self._sent < len(self._jobs):
            index = self._sent
            worker = self.worker_of(index)
            self._tell(worker, ("read", index, self._jobs[index], self._root, self._ship_limit, self._limits))
            self._expected[worker].append(("read", index))
            self._sent += 1
            _prefetch(self._jobs[index].path)

    def _receive(self, worker: int) -> None:
        """Read the worker's next reply into ``_ready`` or ``_stored``."""
        proc = self._procs[worker]
        assert proc.stdout is not None
        kind, key = self._expected[worker].popleft()
        try:
            reply = pickle.load(proc.stdout)
        except (EOFError, pickle.UnpicklingError) as err:
            code = proc.wait(timeout=5)
            raise IngestError(
                f"a reader process died (exit code {code}) while {self._task(kind, key)}; the files reported "
                "before it are ingested, each wholly; run the ingest again for the rest"
            ) from err
        if isinstance(reply, Failure):
            if reply.database is not None:
                raise DatabaseError(reply.database)
            raise IngestError(f"{self._task(kind, key)} failed in a reader process:\n{reply.trace}")
        if kind == "read":
            self._ready[key] = reply
        else:
            self._stored[key] = reply.outcomes if isinstance(reply, Stored) else []

    def _task(self, kind: str, key: int) -> str:
        """What a reply answers, for messages: ``reading PATH``, or the store or close task."""
        return f"reading {self._jobs[key].path}" if kind == "read" else self._tokens[key][1]

    def __iter__(self) -> Iterator[Prepared]:
        for index in range(len(self._jobs)):
            worker = self.worker_of(index)
            while index not in self._ready:
                self._receive(worker)
            result = self._ready.pop(index)
            self._send()
            yield result
        if self._target is None:
            self._finished = True

    def store(self, indexes: Sequence[int], survey_ids: dict[str, int]) -> int:
        """Have the worker holding these files (all one worker's) store them as one group;
        returns a token for :meth:`stored`."""
        worker = self.worker_of(indexes[0])
        if any(self.worker_of(i) != worker for i in indexes):
            raise ValueError("a group's files must all be held by one worker")
        token = len(self._tokens)
        self._tokens[token] = (worker, f"storing files from {self._jobs[indexes[0]].path}")
        self._tell(worker, ("store", list(indexes), survey_ids))
        self._expected[worker].append(("store", token))
        return token

    def stored(self, token: int) -> list[Any]:
        """The group's outcomes (FileOutcome, file order), once its worker committed it."""
        worker = self._tokens[token][0]
        while token not in self._stored:
            self._receive(worker)
        return self._stored.pop(token)

    def finish(self) -> None:
        """After the last file and group: every worker commits nothing more and waits until
        what it committed is durable (its store's WAL flush)."""
        closing = []
        if self._target is not None:
            for worker in range(len(self._procs)):
                token = len(self._tokens)
                self._tokens[token] = (worker, "finishing the batch")
                self._tell(worker, ("close",))
                self._expected[worker].append(("close", token))
                closing.append((worker, token))
        for worker, token in closing:
            while token not in self._stored:
                self._receive(worker)
            self._stored.pop(token)
        self._finished = True

    def __exit__(self, *exc: object) -> None:
        self.close(graceful=self._finished)

    def close(self, *, graceful: bool = False) -> None:
        """Stop every worker: by closing its input after a finished batch, at once otherwise."""
        for proc in self._procs:
            if not graceful:
                proc.terminate()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except BrokenPipeError:
                        pass
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _log.warning("reader process %s did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait(timeout=10)
        self._procs = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]
