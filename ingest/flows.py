"""Prefect flow: ingest one survey (the nightly chain, ingest then compute, is
:mod:`skyledger.api.nightly`).

Flows are entry points: they build the settings, open the database and own the
transactions (through the loader, one per file). Imports are absolute so that Prefect
can load this file by path from ``prefect.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from skyledger.ingest.batch import BatchSummary, InputLimits, ingest_surveys
from skyledger.ingest.config import load_config
from skyledger.ingest.loader import FileOutcome
from skyledger.schema.database import Database, connect
from skyledger.schema.settings import Settings

__all__ = ["ingest_survey", "report", "run_survey", "settings_for"]


def settings_for(config: str | None) -> Settings:
    return Settings(config=Path(config)) if config else Settings()


def report(summary: BatchSummary) -> dict[str, Any]:
    return {
        "batch_id": summary.batch_id,
        "counts": dict(summary.counts),
        "spectra": summary.n_spectra,
        "rejected": {o.path: o.reason for o in summary.rejected()},
    }


def run_survey(db: Database, settings: Settings, survey: str, batch_id: str | None) -> BatchSummary:
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
    settings = settings_for(config)
    db = connect(settings)
    try:
        summary = run_survey(db, settings, survey, batch_id=str(flow_run.get_id() or "") or None)
    finally:
        db.dispose()
    return report(summary)
