"""The nightly Prefect flow: ingest every configured survey, then run every compute task
on what is pending. It sits above both ingest and compute, which do not import each other.

Imports are absolute so that Prefect can load this file by path from ``prefect.yaml``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from skyledger.compute.framework.flows import process_tasks
from skyledger.ingest.batch import BatchSummary
from skyledger.ingest.config import load_config
from skyledger.ingest.flows import report, run_survey, settings_for
from skyledger.schema.database import connect
from skyledger.schema.locks import advisory_lock

__all__ = ["nightly", "NIGHTLY_LOCK"]

NIGHTLY_LOCK = "skyledger.nightly"


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
    settings = settings_for(config)
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
                summary.outcomes += run_survey(db, settings, name, batch_id).outcomes
            computed: list[dict[str, Any]] = []
            markdown = summary.markdown()
            if process:
                computed = process_tasks()
                markdown += _compute_markdown(computed)
            create_markdown_artifact(markdown, key="nightly-summary", description="skyledger nightly ingest and compute")
            return {"status": "completed", **report(summary), "compute": computed}
    finally:
        db.dispose()
