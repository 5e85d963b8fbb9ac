"""The exception hierarchy every skyledger layer raises from.

User-facing errors say what was wrong and what to do about it; the original cause is
chained with ``raise ... from err`` so nothing is swallowed.
"""

from __future__ import annotations

__all__ = [
    "SkyledgerError",
    "ConfigError",
    "DatabaseError",
    "SchemaVersionError",
    "QueryError",
    "ReadOnlyViolation",
    "IngestError",
    "ReaderError",
    "RunStateError",
]


class SkyledgerError(Exception):
    """Base class of every error skyledger raises on purpose."""


class ConfigError(SkyledgerError):
    """A setting or configuration file is missing or wrong."""


class DatabaseError(SkyledgerError):
    """The database could not be reached, started or used."""


class SchemaVersionError(DatabaseError):
    """The database schema is older or newer than this code."""


class QueryError(SkyledgerError):
    """The database, or the read path's limits, refused a person's query."""


class ReadOnlyViolation(QueryError):
    """A statement tried to write inside a read-only transaction."""


class IngestError(SkyledgerError):
    """A survey file could not be ingested."""


class ReaderError(IngestError):
    """A reader rejected a file; the message names the file, the HDU/column and the problem."""

    def __init__(self, path: object, problem: str, *, hdu: str | None = None, column: str | None = None):
        self.path = str(path)
        self.hdu = hdu
        self.column = column
        self.problem = problem
        super().__init__(f"{self.path}: {self.detail}")

    @property
    def detail(self) -> str:
        """The problem with its HDU/column, without the path (which is recorded apart)."""
        where = ""
        if self.hdu is not None:
            where += f"[HDU {self.hdu}] "
        if self.column is not None:
            where += f"[column {self.column}] "
        return where + self.problem


class RunStateError(SkyledgerError):
    """Raised when a run is not in the state an operation needs: finishing a run that is
    no longer 'running' (reaped as abandoned when its heartbeat went stale, or marked
    failed meanwhile).  Its results are not made current: run ``skyledger process``
    again, and if runs keep being reaped, find why their heartbeats stop (a suspended
    process, a lost database connection)."""
