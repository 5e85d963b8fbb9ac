"""A file's bytes read once: sha256, size, identity on disk, and the gzip inflate check.

Every file is checksummed before any reader looks at it (:func:`read_and_hash`), so a
damaged or hostile file is refused before format detection opens it; the identity taken
then (device, inode, size, times) later tells whether the file changed while it was
parsed (:func:`skyledger.ingest.prepare.changed_on_disk`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from skyledger.ingest.inflate import GZIP_MAGIC, GzipCheck, InflateError, InputLimits

__all__ = ["CHANGED_WHILE_READ", "Hashed", "Identity", "Rejected", "identity_of", "read_and_hash", "sha256_file"]


class Rejected(Exception):
    """The file is the problem; ``reason`` is what gets recorded."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


#: What identifies one version of a file on disk: device, inode, size, mtime and ctime (ns).
Identity = tuple[int, int, int, int, int]


def identity_of(status: os.stat_result) -> Identity:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@dataclass(frozen=True)
class Hashed:
    sha: str
    size: int
    content: bytes | None  # the bytes, when the file is at most the keep limit
    identity: Identity
    problem: str | None = None  # what is wrong with the content itself (a bad gzip stream)


def read_and_hash(path: Path, keep_limit: int, limits: InputLimits) -> Hashed:
    """sha256 and size of the file, its bytes when it is at most ``keep_limit`` bytes, and
    its identity; a gzip file is inflated to its end on the way (:mod:`skyledger.ingest.inflate`).

    A file that changes while it is read is refused here (Rejected); a change after this
    read is caught by :func:`~skyledger.ingest.prepare.changed_on_disk` once the file is parsed.
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
                raise Rejected(CHANGED_WHILE_READ)
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
                raise Rejected(CHANGED_WHILE_READ)
            if check is not None:
                problem = _inflate_problem(size, limits, [], check)
            sha = digest.hexdigest()
        after = os.fstat(fh.fileno())
    if identity_of(after) != identity_of(before):
        raise Rejected(CHANGED_WHILE_READ)
    return Hashed(sha, size, None if problem else content, identity_of(before), problem)


def _inflate_problem(size: int, limits: InputLimits, pieces: list[bytes], check: GzipCheck | None = None) -> str | None:
    try:
        check = check or GzipCheck(size, limits)
        for piece in pieces:
            check.feed(piece)
        check.finish()
    except InflateError as err:
        return err.reason
    return None


CHANGED_WHILE_READ = (
    "the file changed while it was being read (its size, modification time or inode differ from when it was "
    "checksummed): it is being written or replaced; ingest it again once it is complete"
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
