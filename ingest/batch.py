"""Ingesting many files: configured surveys, or paths given on the command line."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from skyledger.ingest.config import IngestConfig, SurveySpec
from skyledger.ingest.loader import FileOutcome, Loader
from skyledger.ingest.readers import detect_reader, get_reader
from skyledger.schema.database import Database
from skyledger.schema.errors import ReaderError

__all__ = ["BatchSummary", "expand_paths", "ingest_paths", "ingest_surveys", "new_batch_id", "UNSORTED_SURVEY"]

#: Survey of files given by path whose format nobody recognised (they are rejected).
UNSORTED_SURVEY = "unsorted"

OnFile = Callable[[FileOutcome], None]


def new_batch_id() -> str:
    return uuid.uuid4().hex


@dataclass
class BatchSummary:
    batch_id: str
    outcomes: list[FileOutcome] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    @property
    def n_spectra(self) -> int:
        return sum(o.n_spectra for o in self.outcomes)

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


def ingest_paths(
    db: Database,
    paths: Iterable[str | os.PathLike[str]],
    *,
    survey: SurveySpec | None = None,
    reader: str | None = None,
    root: Path | None = None,
    batch_id: str | None = None,
    on_file: OnFile | None = None,
) -> BatchSummary:
    """Ingest files and directories. Without a survey, each file goes to the survey
    named after its detected reader."""
    if reader is not None:
        get_reader(reader)  # an unknown name is the caller's mistake, not each file's
    summary = BatchSummary(batch_id or new_batch_id())
    with Loader(db, root=root, batch_id=summary.batch_id) as loader:
        for path in expand_paths(paths):
            spec = survey
            if spec is None:
                name = reader
                if name is None:
                    try:
                        name = detect_reader(path).name
                    except ReaderError:
                        name = UNSORTED_SURVEY  # the loader records why
                spec = SurveySpec(name=name, reader=reader)
            outcome = loader.ingest(path, spec, reader=reader)
            summary.outcomes.append(outcome)
            if on_file is not None:
                on_file(outcome)
    return summary


def ingest_surveys(
    db: Database,
    config: IngestConfig,
    *,
    names: Iterable[str] | None = None,
    batch_id: str | None = None,
    on_file: OnFile | None = None,
) -> BatchSummary:
    """Ingest every file of the configured surveys (or of those named)."""
    specs = [config.survey(n) for n in names] if names is not None else list(config.surveys)
    summary = BatchSummary(batch_id or new_batch_id())
    with Loader(db, root=config.root, batch_id=summary.batch_id) as loader:
        for spec in specs:
            for path in spec.files():
                outcome = loader.ingest(path, spec)
                summary.outcomes.append(outcome)
                if on_file is not None:
                    on_file(outcome)
    return summary
