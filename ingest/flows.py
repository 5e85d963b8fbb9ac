"""Prefect flows: ingest one survey, and the nightly run over every configured survey.

Flows are entry points: they build the settings, open the database and own the
transactions (through the loader, one per file). Imports are absolute so that Prefect
can load this file by path from ``prefect.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from skyledger.ingest.batch import BatchSummary, InputLimits, ingest_surveys
from skyledger.ingest.config import load_config
from skyledger.ingest.loader import FileOutcome
from skyledger.schema.database import Database, connect
from skyledger.schema.locks import advisory_lock
from skyledger.schema.settings import Settings

__all__ = ["ingest_survey", "nightly", "NIGHTLY_LOCK"]

NIGHTLY_LOCK = "skyledger.nightly"


def _settings(config: str | None) -> Settings:
    return Settings(config=Path(config)) if config else Settings()


def _report(summary: BatchSummary) -> dict[str, Any]:
    return {
        "batch_id": summary.batch_id,
        "counts": dict(summary.counts),
        "spectra": summary.n_spectra,
        "rejected": {o.path: o.reason for o in summary.rejected()},
    }


def _run_survey(db: Database, settings: Settings, survey: str, batch_id: str | None) -> BatchSummary:
    logger = get_run_logger()
    config = load_config(settings.config)

    def log(outcome: FileOutcome) -> None:
        detail = f" ({outcome.reason})" if outcome.reason else ""
        logger.info("%s %s: %d spectra%s", outcome.status, outcome.path, outcome.n_spectra, detail)

    limits = InputLimits(settings.max_inflate_ratio, settings.max_inflated_bytes)
    return ingest_surveys(db, config, names=[survey], batch_id=batch_id, on_file=log, limits=limits)


@flow(name="ingest-survey")
def ingest_survey(survey: str, config: str | None = None) -> dict[str, Any]:
    """Ingest every file of one configured survey; each file wholly or not at all."""
    settings = _settings(config)
    db = connect(settings)
    try:
        summary = _run_survey(db, settings, survey, batch_id=str(flow_run.get_id() or "") or None)
    finally:
        db.dispose()
    return _report(summary)


def _compute_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["", "## Compute", "", "| task | version | run | status | inputs | results | flagged |", "|---|---:|---:|---|---:|---:|---:|"]
    lines += [
        f"| {r['task']} | {r['version']} | {r['run_id'] or ''} | {r['status']} | {r['n_inputs']} | {r['n_results']} | {r['n_flagged']} |"
        for r in results
    ]
    return "\n".join(lines)


@flow(name="nightly")
def nightly(config: str | None = None, surveys: list[str] | None = None, process: bool = True) -> dict[str, Any]:
    """Every configured survey (or those named), then every compute task on what is
    pending (unless ``process`` is false), then a summary artifact.

    A PostgreSQL advisory lock keeps two nightly runs from overlapping: a second one
    exits at once, saying so.
    """
    logger = get_run_logger()
    settings = _settings(config)
    db = connect(settings)
    try:
        with advisory_lock(db.engine, NIGHTLY_LOCK) as acquired:
            if not acquired:
                logger.warning("another nightly run holds the lock %r; this one exits without doing anything", NIGHTLY_LOCK)
                return {"status": "skipped", "reason": "another nightly run is in progress"}
            names = surveys if surveys is not None else [s.name for s in load_config(settings.config).surveys]
            batch_id = str(flow_run.get_id() or "") or None
            summary = BatchSummary(batch_id or "nightly")
            for name in names:
                summary.outcomes += _run_survey(db, settings, name, batch_id).outcomes
            computed: list[dict[str, Any]] = []
            markdown = summary.markdown()
            if process:
                # Imported here: ingest does not depend on compute, only the nightly chain does.
                from skyledger.compute.flows import process_tasks

                computed = process_tasks()
                markdown += _compute_markdown(computed)
            create_markdown_artifact(markdown, key="nightly-summary", description="skyledger nightly ingest and compute")
            return {"status": "completed", **_report(summary), "compute": computed}
    finally:
        db.dispose()
