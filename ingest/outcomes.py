"""What happened to a file in an ingest, and the two ways storing it can stop short."""

from __future__ import annotations

from dataclasses import dataclass

from skyledger.schema.errors import DatabaseError, ReaderError

__all__ = ["ChangedOnDisk", "FileOutcome", "lost_connection"]


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


class ChangedOnDisk(ReaderError):
    """The file on disk is no longer the version that was checksummed."""


def lost_connection(path: object) -> DatabaseError:
    return DatabaseError(
        f"lost the database connection while ingesting {path}; nothing of that file was written; "
        "run the ingest again to load it and the files after it"
    )
