"""One file's reading half: locate and checksum it, then read it with its reader.

:func:`locate` resolves the path, checks it against the batch's root and checksums the
bytes (:mod:`skyledger.ingest.checksum`); :func:`read_contents` has the survey's reader
(or the detected one) parse it into :class:`~skyledger.ingest.records.FileContents`.
What is known about the file travels in a :class:`Prepared`: the loader stores it
(:mod:`skyledger.ingest.store`), inline or after a worker process read it
(:mod:`skyledger.ingest.read_ahead`). Any problem with the file sets its rejection
reason; nothing here touches the database.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyledger.ingest.checksum import CHANGED_WHILE_READ, Identity, Rejected, identity_of, read_and_hash
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.inflate import InputLimits
from skyledger.ingest.readers import detect_reader, get_reader, rawfits
from skyledger.ingest.records import FileContents
from skyledger.schema.errors import IngestError, ReaderError

__all__ = [
    "Job", "Prepared", "SHIP_LIMIT_BYTES", "UNSORTED_SURVEY", "changed_on_disk", "locate", "prepare", "read_contents",
    "survey_for",
]  # fmt: skip

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


def changed_on_disk(prepared: Prepared) -> str | None:
    """Why the file is no longer the version checksummed (the rejection reason), or None.

    Called once the file is parsed: readers that reopen the file by path (astropy's) may
    have parsed other content than the checksummed bytes if it changed meanwhile. A
    rewrite in place that keeps the size, within one tick of the file system's clock,
    is not seen (files that :mod:`skyledger.ingest.readers.rawfits` scans parse the checksummed bytes
    themselves).
    """
    if prepared.identity is None:
        return None
    try:
        now = identity_of(os.stat(prepared.uri))
    except OSError:
        return "the file was removed or replaced while it was being read; ingest it again once it is complete"
    return None if now == prepared.identity else CHANGED_WHILE_READ


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
        hashed = read_and_hash(resolved, rawfits.MAX_SCAN_BYTES, limits or InputLimits())
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
