"""The reading half of an ingest: find, checksum and read a file, inline or in worker processes.

Reading a survey file (FITS headers, table decoding, validation) costs the CPU more than
writing its rows, so a batch reads the next files in worker processes while the loader
writes the current one. ``ReadAhead`` keeps at most ``window`` files per worker read and
not yet taken, so memory is bounded whatever the batch size; a file too large to ship
between processes (a cube) is left for the loader to stream itself. Workers are plain
subprocesses (safe inside Prefect's threads), stopped on every exit path, and exit on
their own if the parent dies (SIGKILL included).

Given a :class:`StoreTarget`, the workers also *store* what they read: a file that can
share a transaction (:func:`skyledger.ingest.store.groupable`) stays in its worker, the
loader gets a stub (``Prepared.held``) and later tells the worker which of its held files
to commit as one group (:meth:`ReadAhead.store`). The arrays then never cross a process
boundary, and the loader process only coordinates: which files form a group, file order
and the duplicate judgement across groups (see :mod:`skyledger.ingest.loader`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyledger.ingest.config import SurveySpec
from skyledger.ingest.inflate import GZIP_MAGIC, GzipCheck, InflateError, InputLimits
from skyledger.ingest.readers import detect_reader, get_reader, rawfits
from skyledger.ingest.records import FileContents
from skyledger.schema.errors import DatabaseError, IngestError, ReaderError

__all__ = [
    "InputLimits", "Job", "Prepared", "ReadAhead", "Rejected", "StoreTarget", "UNSORTED_SURVEY", "changed_on_disk",
    "locate", "prepare", "read_contents", "serve", "sha256_file",
]  # fmt: skip

_log = logging.getLogger(__name__)

#: Survey of files given by path whose format nobody recognised (they are rejected).
UNSORTED_SURVEY = "unsorted"

#: Files whose arrays exceed this many bytes are not sent between processes: the loader
#: reads (streams) them itself.
SHIP_LIMIT_BYTES = 32 << 20

_READ_ERRORS = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError, UnicodeError)


@dataclass(frozen=True)
class Job:
    """One file of a batch: its path, its survey (None: named after the detected reader)."""

    path: str
    survey: SurveySpec | None
    reader: str | None = None


class Rejected(Exception):
    """The file is the problem; ``reason`` is what gets recorded."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


#: What identifies one version of a file on disk: device, inode, size, mtime and ctime (ns).
Identity = tuple[int, int, int, int, int]


def _identity(status: os.stat_result) -> Identity:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@dataclass
class Prepared:
    """Everything known about a file before the database is asked anything."""

    path: str
    uri: str
    survey: SurveySpec
    sha: str | None = None
    size: int = 0
    reader: str | None = None
    contents: FileContents | None = None
    reason: str | None = None  # rejected before the database
    deferred: bool = False  # located but not read: the loader reads it (too large to ship)
    seconds: float = 0.0
    #: a stub: the file was read and is held by the worker that read it, to be stored in a
    #: group (``contents`` is None here); ``held_bytes``: its arrays' size
    held: bool = False
    held_bytes: int = 0
    #: the file's version on disk when it was checksummed (see :func:`changed_on_disk`)
    identity: Identity | None = None
    #: the file's bytes as checksummed (files up to ``rawfits.MAX_SCAN_BYTES``), until it
    #: is read: readers that scan headers with :mod:`rawfits` (SDSS) parse these very
    #: bytes; astropy-based readers open the file again. Never pickled.
    content: bytes | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "content": None}


@dataclass(frozen=True)
class _Hashed:
    sha: str
    size: int
    content: bytes | None  # the bytes, when the file is at most the keep limit
    identity: Identity
    problem: str | None = None  # what is wrong with the content itself (a bad gzip stream)


def _read_and_hash(path: Path, keep_limit: int, limits: InputLimits) -> _Hashed:
    """sha256 and size of the file, its bytes when it is at most ``keep_limit`` bytes, and
    its identity; a gzip file is inflated to its end on the way (:mod:`.inflate`).

    A file that changes while it is read is refused here (Rejected); a change after this
    read is caught by :func:`changed_on_disk` once the file is parsed.
    """
    problem = None
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        size = before.st_size
        if size <= keep_limit:
            # One byte more than the size, to see whether the file grew meanwhile. Not
            # keep_limit + 1: read(n) allocates n bytes first (64 MiB for a 144 kB file:
            # 0.06 ms per SDSS file, more than reading it).
            data = fh.read(size + 1)
            if len(data) != size:
                raise Rejected(_CHANGED_WHILE_READ)
            sha, content = hashlib.sha256(data).hexdigest(), data
            if data[:2] == GZIP_MAGIC:
                problem = _inflate_problem(size, limits, [data])
        else:
            digest, n, content = hashlib.sha256(), 0, None
            check: GzipCheck | None = None
            while block := fh.read(1 << 20):
                if n == 0 and block[:2] == GZIP_MAGIC:
                    check = GzipCheck(size, limits)
                digest.update(block)
                n += len(block)
                if check is not None:
                    try:
                        check.feed(block)
                    except InflateError as err:
                        problem, check = err.reason, None  # hash the rest, inflate no more
            if n != size:
                raise Rejected(_CHANGED_WHILE_READ)
            if check is not None:
                problem = _inflate_problem(size, limits, [], check)
            sha = digest.hexdigest()
        after = os.fstat(fh.fileno())
    if _identity(after) != _identity(before):
        raise Rejected(_CHANGED_WHILE_READ)
    return _Hashed(sha, size, None if problem else content, _identity(before), problem)


def _inflate_problem(size: int, limits: InputLimits, pieces: list[bytes], check: GzipCheck | None = None) -> str | None:
    try:
        check = check or GzipCheck(size, limits)
        for piece in pieces:
            check.feed(piece)
        check.finish()
    except InflateError as err:
        return err.reason
    return None


_CHANGED_WHILE_READ = (
    "the file changed while it was being read (its size, modification time or inode differ from when it was "
    "checksummed): it is being written or replaced; ingest it again once it is complete"
)


def changed_on_disk(prepared: Prepared) -> str | None:
    """Why the file is no longer the version checksummed (the rejection reason), or None.

    Called once the file is parsed: readers that reopen the file by path (astropy's) may
    have parsed other content than the checksummed bytes if it changed meanwhile. A
    rewrite in place that keeps the size, within one tick of the file system's clock,
    is not seen (files that :mod:`.readers.rawfits` scans parse the checksummed bytes
    themselves).
    """
    if prepared.identity is None:
        return None
    try:
        now = _identity(os.stat(prepared.uri))
    except OSError:
        return "the file was removed or replaced while it was being read; ingest it again once it is complete"
    return None if now == prepared.identity else _CHANGED_WHILE_READ


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def survey_for(path: Path, survey: SurveySpec | None, reader: str | None) -> SurveySpec:
    """The job's survey, or one named after the file's reader (forced or detected)."""
    if survey is not None:
        return survey
    name = reader
    if name is None:
        try:
            name = detect_reader(path).name
        except ReaderError:
            name = UNSORTED_SURVEY  # the read step records why
    return SurveySpec(name=name, reader=reader)


#: Directories resolved by this process: absolute path as given -> real path.
_REAL_DIRS: dict[str, str] = {}
_REAL_DIRS_SIZE = 4096


def _resolve(path: Path) -> tuple[Path, os.stat_result]:
    """``path.resolve(strict=True)`` and the stat of what it names, each directory resolved
    once per process. ``Path.resolve`` walks every component with an ``lstat`` in Python:
    5 % of a read-ahead worker's time on SDSS files, most of it the same directories."""
    status = os.lstat(path)  # a missing or unreachable file raises here, as resolve does
    if stat.S_ISLNK(status.st_mode) or path.name in ("", ".", ".."):
        resolved = path.resolve(strict=True)
        return resolved, os.stat(resolved)
    # Not os.path.abspath: it folds ".." before symlinks are followed, resolve after.
    parent = str(path.parent if path.is_absolute() else Path.cwd() / path.parent)
    real = _REAL_DIRS.get(parent)
    if real is None:
        if len(_REAL_DIRS) >= _REAL_DIRS_SIZE:
            _REAL_DIRS.clear()
        real = _REAL_DIRS[parent] = str(Path(parent).resolve(strict=True))
    return Path(real, path.name), status


def locate(job: Job, root: Path | None, limits: InputLimits | None = None) -> Prepared:
    """Resolve, check against the root and checksum; the rejection reason set on failure.

    The file is checksummed (and a gzip file inflated to its end, within ``limits``)
    before any reader looks at it, so that a damaged or hostile file is refused before
    format detection opens it.
    """
    path = Path(job.path)
    fallback = job.survey or SurveySpec(name=job.reader or UNSORTED_SURVEY, reader=job.reader)
    prepared = Prepared(path=job.path, uri=str(path.absolute()), survey=fallback)
    try:
        resolved, status = _resolve(path)
        prepared.uri = str(resolved)
        if root is not None and not resolved.is_relative_to(root):
            raise Rejected(f"the file is outside the configured root {root}")
        if not stat.S_ISREG(status.st_mode):
            raise Rejected("not a regular file")
        hashed = _read_and_hash(resolved, rawfits.MAX_SCAN_BYTES, limits or InputLimits())
        prepared.sha, prepared.size, prepared.content, prepared.identity = (
            hashed.sha, hashed.size, hashed.content, hashed.identity
        )
        if hashed.problem is not None:
            raise Rejected(hashed.problem)
        prepared.survey = survey_for(path, job.survey, job.reader)
    except FileNotFoundError:
        prepared.reason = "no such file"
    except PermissionError as err:
        prepared.reason = f"cannot read the file: permission denied ({err.strerror})"
    except Rejected as err:
        prepared.reason = err.reason
    return prepared


def read_contents(prepared: Prepared, reader: str | None) -> None:
    """Read the located file into ``prepared.contents`` (or set the rejection reason)."""
    path = Path(prepared.uri)
    survey = prepared.survey
    try:
        chosen = get_reader(reader or survey.reader) if (reader or survey.reader) else detect_reader(path)
        prepared.reader = chosen.name
        try:
            with rawfits.preloaded(path, prepared.content):
                prepared.contents = chosen.read(path, survey.options)
        except ReaderError:
            raise
        except _READ_ERRORS as err:
            raise ReaderError(path, f"unreadable ({type(err).__name__}: {err})") from err
    except ReaderError as err:
        prepared.reason = err.detail
    except IngestError as err:
        prepared.reason = str(err)
    finally:
        prepared.content = None  # read once; a batch does not keep files in memory


def _ship(prepared: Prepared, limit: int) -> None:
    """Materialise the spectra so they can be pickled, or defer a file above ``limit`` bytes."""
    contents = prepared.contents
    if contents is None:
        return
    spectra = []
    size = 0
    iterator = iter(contents.spectra)
    try:
        for row in iterator:
            spectra.append(row)
            size += sum(a.nbytes for a in (row.wave, row.flux, row.ivar, row.mask, row.resolution) if a is not None)
            if size > limit:
                prepared.contents, prepared.deferred = None, True
                return
    except ReaderError as err:  # a bad spectrum further down a stream
        prepared.contents, prepared.reason = None, err.detail
        return
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    contents.spectra = iter(spectra)


def prepare(
    job: Job, root: Path | None, *, ship_limit: int | None = None, limits: InputLimits | None = None
) -> Prepared:
    """Locate and read one file (the whole reading half, as a worker does it)."""
    started = time.perf_counter()
    prepared = locate(job, root, limits)
    if prepared.reason is None:
        read_contents(prepared, job.reader)
        if ship_limit is not None:
            _ship(prepared, ship_limit)
    prepared.seconds = time.perf_counter() - started
    return prepared


# --------------------------------------------------------------------------- workers
#
# Workers are plain ``python -c`` subprocesses fed pickled messages on stdin and answering
# each with one pickled reply on stdout, in order. Not multiprocessing's ``spawn``: it
# re-runs the parent's ``__main__`` script in every child, which breaks any caller's
# script that lacks an ``if __name__ == "__main__"`` guard.
#
# Messages: ("setup", StoreTarget, root) once, no reply (storing workers only);
# ("read", index, job, root, ship_limit, limits) -> Prepared (a stub if held);
# ("store", indexes, survey_ids) -> _Stored; ("close",) -> _Closed. Any -> _Failure.

_WORKER_CODE = "from skyledger.ingest.read_ahead import serve; serve()"


@dataclass(frozen=True)
class StoreTarget:
    """Where storing workers write: the database (libpq conninfo) and the batch id, and
    whether content stored under another survey is loaded again (see ``Store``)."""

    conninfo: str
    batch_id: str | None = None
    allow_duplicate_content: bool = False


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGTERM to this worker when its parent dies, even by
    # SIGKILL; elsewhere the closed stdin ends the loop. SIGTERM ends the process at
    # once: an open transaction dies with its connection.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _Failure:
    path: str
    trace: str
    database: str | None = None  # a DatabaseError's message: the loader raises it as one


@dataclass
class _Stored:
    outcomes: list[Any]  # FileOutcome, in file order


@dataclass
class _Closed:
    pass


class _Slot:
    """A reply in the making; replies leave a worker in the order of their messages."""

    __slots__ = ("_done", "reply")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.reply: Any = None

    def fill(self, reply: Any) -> None:
        self.reply = reply
        self._done.set()

    def wait(self) -> Any:
        self._done.wait()
        return self.reply


class _Worker:
    """A worker's state: the files it holds for groups, and its store (storing workers).

    Reads run on the worker's main thread; stores and the closing flush run in order on
    a storing thread, so the worker goes on reading while the database server inserts a
    group (the thread waits on the socket with the GIL released); a third thread writes
    the replies in message order.
    """

    def __init__(self, results: Any) -> None:
        self.store: Any = None  # skyledger.ingest.store.Store, made on setup
        self.held: dict[int, Any] = {}  # job index -> Member
        self._groupable: Any = None  # skyledger.ingest.store.groupable, storing workers only
        self._results = results
        self._replies: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._stores: queue.SimpleQueue[tuple[str, Any, _Slot]] = queue.SimpleQueue()
        self._replier = threading.Thread(target=self._reply_loop, name="skyledger-reader-replies", daemon=True)
        self._replier.start()
        self._storer: threading.Thread | None = None

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "setup":
            # Imported here: the store module imports this one (Job, Prepared, locate).
            from skyledger.ingest.store import Store, groupable

            target, root = message[1], message[2]
            self.store = Store(target.conninfo, root=root, batch_id=target.batch_id,
                               allow_duplicate_content=target.allow_duplicate_content)  # fmt: skip
            self._groupable = groupable
            self._storer = threading.Thread(target=self._store_loop, name="skyledger-reader-store", daemon=True)
            self._storer.start()
            return
        slot = _Slot()
        self._replies.put(slot)
        if kind == "read":
            try:
                slot.fill(self.read(*message[1:]))
            except Exception:  # noqa: BLE001 - a bug in a reader: the parent re-raises it with this trace
                slot.fill(_Failure(message[2].path, traceback.format_exc()))
        elif kind == "store":
            indexes, survey_ids = message[1], message[2]
            missing = [i for i in indexes if i not in self.held]
            if missing:  # a loader bug: say which files, rather than dying
                slot.fill(_Failure("", f"asked to store files {missing} this worker does not hold"))
                return
            self._stores.put(("store", ([self.held.pop(i) for i in indexes], survey_ids), slot))
        elif kind == "close":
            if self._storer is None:
                slot.fill(_Closed())  # nothing stored, nothing to flush
            else:
                self._stores.put(("close", None, slot))
        else:
            slot.fill(_Failure("", f"unknown message {kind!r}"))

    def read(
        self, index: int, job: Job, root: Path | None, ship_limit: int | None, limits: InputLimits | None = None
    ) -> Prepared:
        prepared = prepare(job, root, ship_limit=ship_limit, limits=limits)
        if self._groupable is None:
            return prepared
        member = self._groupable(prepared, job.reader, index, time.perf_counter() - prepared.seconds)
        if member is None:
            return prepared
        self.held[index] = member
        return dataclasses.replace(prepared, contents=None, held=True, held_bytes=member.nbytes)

    def _store_loop(self) -> None:
        while True:
            kind, payload, slot = self._stores.get()
            if kind == "store":
                members, survey_ids = payload
                self.store.survey_ids.update(survey_ids)
                try:
                    slot.fill(_Stored(self.store.store_group(members)))
                except DatabaseError as err:
                    slot.fill(_Failure(members[0].prepared.path, traceback.format_exc(), database=str(err)))
                except Exception:  # noqa: BLE001 - a bug: the parent re-raises it with this trace
                    slot.fill(_Failure(members[0].prepared.path, traceback.format_exc()))
            else:
                try:
                    self.store.close()
                    slot.fill(_Closed())
                except Exception as err:  # noqa: BLE001 - psycopg's: the flush of the last groups failed
                    slot.fill(_Failure("", traceback.format_exc(),
                                       database=f"could not make the last stored files durable: {err}"))  # fmt: skip
                return

    def _reply_loop(self) -> None:
        try:
            while (slot := self._replies.get()) is not None:
                pickle.dump(slot.wait(), self._results, protocol=pickle.HIGHEST_PROTOCOL)
                self._results.flush()
        except (BrokenPipeError, ValueError):
            pass  # the parent is gone, or the stream was closed on the way out

    def finish(self) -> None:
        """Write the outstanding replies (the input has ended)."""
        self._replies.put(None)
        self._replier.join()


def serve() -> None:
    """A worker's loop: one reply per message (see above), until EOF."""
    _die_with_parent()
    messages = os.fdopen(os.dup(0), "rb")
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # a stray print must not corrupt the result stream
    worker = _Worker(results)
    try:
        while True:
            try:
                message = pickle.load(messages)
            except EOFError:
                break  # the parent closed the stream, or died
            worker.handle(message)
        worker.finish()
    except (KeyboardInterrupt, BrokenPipeError):
        return  # Ctrl-C reaches the whole process group; a broken pipe means the parent is gone


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
                proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE,
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
        if isinstance(reply, _Failure):
            if reply.database is not None:
                raise DatabaseError(reply.database)
            raise IngestError(f"{self._task(kind, key)} failed in a reader process:\n{reply.trace}")
        if kind == "read":
            self._ready[key] = reply
        else:
            self._stored[key] = reply.outcomes if isinstance(reply, _Stored) else []

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
