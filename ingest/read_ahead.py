"""The reading half of an ingest: find, checksum and read a file, inline or in worker processes.

Reading a survey file (FITS headers, table decoding, validation) costs the CPU more than
writing its rows, so a batch reads the next files in worker processes while the loader
writes the current one. ``ReadAhead`` keeps at most ``window`` files read and not yet
written, so memory is bounded whatever the batch size; a file too large to ship between
processes (a cube) is left for the loader to stream itself. Workers are started with
``spawn`` (safe inside Prefect's threads), stopped on every exit path, and exit on their
own if the parent dies (SIGKILL included).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyledger.ingest.config import SurveySpec
from skyledger.ingest.readers import detect_reader, get_reader, rawfits
from skyledger.ingest.records import FileContents
from skyledger.schema.errors import IngestError, ReaderError

__all__ = ["Job", "Prepared", "ReadAhead", "Rejected", "UNSORTED_SURVEY", "locate", "prepare", "read_contents", "serve", "sha256_file"]

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
    #: the file's bytes as checksummed (files up to ``rawfits.MAX_SCAN_BYTES``), until it
    #: is read: readers that scan headers with :mod:`rawfits` (SDSS) parse these very
    #: bytes; astropy-based readers open the file again. Never pickled.
    content: bytes | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "content": None}


def _read_and_hash(path: Path, keep_limit: int) -> tuple[str, int, bytes | None]:
    """sha256 and size of the file, and its bytes when it is at most ``keep_limit`` bytes."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size <= keep_limit:
            data = fh.read(keep_limit + 1)
            if len(data) <= keep_limit:  # it did not grow meanwhile
                return hashlib.sha256(data).hexdigest(), len(data), data
    sha, size = sha256_file(path)
    return sha, size, None


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


def locate(job: Job, root: Path | None) -> Prepared:
    """Resolve, check against the root and checksum; the rejection reason set on failure."""
    path = Path(job.path)
    prepared = Prepared(path=job.path, uri=str(path.absolute()), survey=survey_for(path, job.survey, job.reader))
    try:
        resolved = path.resolve(strict=True)
        prepared.uri = str(resolved)
        if root is not None and not resolved.is_relative_to(root):
            raise Rejected(f"the file is outside the configured root {root}")
        if not resolved.is_file():
            raise Rejected("not a regular file")
        prepared.sha, prepared.size, prepared.content = _read_and_hash(resolved, rawfits.MAX_SCAN_BYTES)
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


def prepare(job: Job, root: Path | None, *, ship_limit: int | None = None) -> Prepared:
    """Locate and read one file (the whole reading half, as a worker does it)."""
    started = time.perf_counter()
    prepared = locate(job, root)
    if prepared.reason is None:
        read_contents(prepared, job.reader)
        if ship_limit is not None:
            _ship(prepared, ship_limit)
    prepared.seconds = time.perf_counter() - started
    return prepared


# --------------------------------------------------------------------------- workers
#
# Workers are plain ``python -c`` subprocesses fed pickled jobs on stdin and answering
# with pickled results on stdout, in order. Not multiprocessing's ``spawn``: it re-runs
# the parent's ``__main__`` script in every child, which breaks any caller's script
# that lacks an ``if __name__ == "__main__"`` guard.

_WORKER_CODE = "from skyledger.ingest.read_ahead import serve; serve()"


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGTERM to this worker when its parent dies, even by
    # SIGKILL; elsewhere the closed stdin ends the loop.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class _Failure:
    path: str
    trace: str


def serve() -> None:
    """A worker's loop: (job, root, ship_limit) in, Prepared (or _Failure) out, until EOF."""
    _die_with_parent()
    jobs = os.fdopen(os.dup(0), "rb")
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # a stray print must not corrupt the result stream
    try:
        while True:
            try:
                job, root, ship_limit = pickle.load(jobs)
            except EOFError:
                return  # the parent closed the stream, or died
            try:
                result: Prepared | _Failure = prepare(job, root, ship_limit=ship_limit)
            except Exception:  # noqa: BLE001 - a bug in a reader: the parent re-raises it with this trace
                result = _Failure(job.path, traceback.format_exc())
            pickle.dump(result, results, protocol=pickle.HIGHEST_PROTOCOL)
            results.flush()
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


class ReadAhead:
    """Prepared files in job order, read by ``workers`` processes, each at most
    ``window`` files ahead of the loader (job ``i`` goes to worker ``i % workers``)."""

    def __init__(self, jobs: Sequence[Job], *, root: Path | None, workers: int = 1, window: int = 12,
                 ship_limit: int = SHIP_LIMIT_BYTES):  # fmt: skip
        if workers < 1:
            raise ValueError("ReadAhead needs at least one worker")
        self._jobs = jobs
        self._root = root
        self._n_workers = max(1, min(workers, len(jobs)))
        self._window = max(window, 1)
        self._ship_limit = ship_limit
        self._procs: list[subprocess.Popen[bytes]] = []
        self._sent = 0
        self._finished = False

    def __enter__(self) -> ReadAhead:
        env = dict(os.environ)
        # The child imports what this process can import, as multiprocessing would.
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        try:
            for _ in range(self._n_workers):
                proc = subprocess.Popen([sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, close_fds=True)  # fmt: skip
                self._procs.append(proc)
                _widen_pipe(proc.stdout)
            while self._sent < min(self._window * self._n_workers, len(self._jobs)):
                self._send()
        except BaseException:
            self.close(graceful=False)
            raise
        return self

    def _send(self) -> None:
        if self._sent < len(self._jobs):
            proc = self._procs[self._sent % self._n_workers]
            assert proc.stdin is not None
            try:
                pickle.dump((self._jobs[self._sent], self._root, self._ship_limit), proc.stdin)
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # the worker is dead: reading its next result says so, clearly
            self._sent += 1

    def __iter__(self) -> Iterator[Prepared]:
        for index in range(len(self._jobs)):
            proc = self._procs[index % self._n_workers]
            assert proc.stdout is not None
            try:
                result = pickle.load(proc.stdout)
            except (EOFError, pickle.UnpicklingError) as err:
                code = proc.wait(timeout=5)
                raise IngestError(
                    f"a reader process died (exit code {code}) while {self._jobs[index].path} was being read; "
                    "the files before it are ingested; run the ingest again for the rest"
                ) from err
            self._send()
            if isinstance(result, _Failure):
                raise IngestError(f"reading {result.path} failed in a reader process:\n{result.trace}")
            yield result
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
