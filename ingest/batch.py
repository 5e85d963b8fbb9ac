"""Ingesting many files: configured surveys, or paths given on the command line."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from skyledger.ingest.config import IngestConfig, SurveySpec
from skyledger.ingest.inflate import InputLimits
from skyledger.ingest.loader import FileOutcome, Job, Loader
from skyledger.ingest.prepare import UNSORTED_SURVEY
from skyledger.ingest.readers import get_reader
from skyledger.schema.database import Database

__all__ = ["BatchSummary", "InputLimits", "expand_paths", "ingest_paths", "ingest_surveys", "new_batch_id", "UNSORTED_SURVEY"]

OnFile = Callable[[FileOutcome], None]


def new_batch_id() -> str:
    return uuid.uuid4().hex


@dataclass
class BatchSummary:
    """What a batch did. ``keep_outcomes=False`` keeps counts and the rejected files only,
    so that memory does not grow with the number of files loaded."""

    batch_id: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    keep_outcomes: bool = True
    _counts: Counter[str] = field(default_factory=Counter, repr=False)
    _n_spectra: int = field(default=0, repr=False)

    def add(self, outcome: FileOutcome) -> None:
        if self.keep_outcomes:
            self.outcomes.append(outcome)
            return
        self._counts[outcome.status] += 1
        self._n_spectra += outcome.n_spectra
        if outcome.status == "rejected":
            self.outcomes.append(outcome)

    @property
    def counts(self) -> Counter[str]:
        if self.keep_outcomes:
            return Counter(o.status for o in self.outcomes)
        return Counter(self._counts)

    @property
    def n_spectra(self) -> int:
        if self.keep_outcomes:
            return sum(o.n_spectra for o in self.outcomes)
        return self._n_spectra

    def rejected(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "rejected"]

    def markdown(self) -> str:
        c = self.counts
        lines = [
            f"## Ingest batch `{self.batch_id}`",
            "",
            "| loaded | unchanged | duplicate | rejected | spectra loaded |",
            "|---:|---:|---:|---:|---:|",
            f"| {c['loaded']} | {c['unchanged']} | {c['duplicate']} | {c['rejected']} | {self.n_spectra} |",
        ]
        if self.rejected():
            lines += ["", "### Rejected files", "", "| file | reason |", "|---|---|"]
            lines += [f"| `{o.path}` | {o.reason.replace('|', '/') if o.reason else ''} |" for o in self.rejected()]
        return "\n".join(lines)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, and every non-hidden file below each directory, sorted."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.parts))
        else:
            files.append(p)  # missing or unreadable paths are reported by the loader
    return files


def _run(
    db: Database, jobs: list[Job], summary: BatchSummary, root: Path | None, on_file: OnFile | None,
    read_workers: int | None, limits: InputLimits | None, allow_duplicate_content: bool,
) -> BatchSummary:  # fmt: skip
    def record(outcome: FileOutcome) -> None:
        summary.add(outcome)
        if on_file is not None:
            on_file(outcome)

    with Loader(db, root=root, batch_id=summary.batch_id, limits=limits,
                allow_duplicate_content=allow_duplicate_content) as loader:  # fmt: skip
        loader.ingest_many(jobs, on_file=record, read_workers=read_workers)
    return summary


def ingest_paths(
    db: Database,
    paths: Iterable[str | os.PathLike[str]],
    *,
    survey: SurveySpec | None = None,
    reader: str | None = None,
    root: Path | None = None,
    batch_id: str | None = None,
    on_file: OnFile | None = None,
    read_workers: int | None = None,
    keep_outcomes: bool = True,
    limits: InputLimits | None = None,
    allow_duplicate_content: bool = False,
) -> BatchSummary:
    """Ingest files and directories. Without a survey, each file goes to the survey
    named after its detected reader. ``read_workers``: see :meth:`Loader.ingest_many`;
    ``limits``: how far a compressed file may inflate; ``allow_duplicate_content``: load
    content already stored under another survey again (default: a duplicate)."""
    if reader is not None:
        get_reader(reader)  # an unknown name is the caller's mistake, not each file's
    summary = BatchSummary(batch_id or new_batch_id(), keep_outcomes=keep_outcomes)
    jobs = [Job(str(path), survey, reader) for path in expand_paths(paths)]
    return _run(db, jobs, summary, root, on_file, read_workers, limits, allow_duplicate_content)


def ingest_surveys(
    db: Database,
    config: IngestConfig,
    *,
    names: Iterable[str] | None = None,
    batch_id: str | None = None,
    on_file: OnFile | None = None,
    read_workers: int | None = None,
    keep_outcomes: bool = True,
    limits: InputLimits | None = None,
    allow_duplicate_content: bool = False,
) -> BatchSummary:
    """Ingest every file of the configured surveys (or of those named); the options as
    for :func:`ingest_paths`."""
    specs = [config.survey(n) for n in names] if names is not None else list(config.surveys)
    summary = BatchSummary(batch_id or new_batch_id(), keep_outcomes=keep_outcomes)
    jobs = [Job(str(path), spec) for spec in specs for path in spec.files()]
    return _run(db, jobs, summary, config.root, on_file, read_workers, limits, allow_duplicate_content)
