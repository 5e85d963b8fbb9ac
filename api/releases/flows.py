"""Prefect flow `release`: `skyledger release create` as an on-demand deployment (prefect.yaml)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from skyledger.schema.database import connect
from skyledger.schema.settings import Settings

from skyledger.api.releases.create import create_release

__all__ = ["release"]


@flow(name="release")
def release(name: str, collection: str = "current", notes: str | None = None, out: str | None = None) -> dict[str, Any]:
    """Freeze ``collection`` as release ``name`` (files under SKYLEDGER_HOME/releases/NAME or ``out``)."""
    settings = Settings()  # the worker's environment, like the CLI's
    db = connect(settings)
    try:
        summary = create_release(db, name, collection=collection, notes=notes,
                                 out_dir=out or settings.releases_dir / name)
    finally:
        db.dispose()
    get_run_logger().info("release %s: %d runs, %d files in %s", name, len(summary.runs), len(summary.files),
                          summary.out_dir)
    return {"release": name, "out_dir": str(summary.out_dir), "runs": [r.id for r in summary.runs],
            "tables": summary.tables}
