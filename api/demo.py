"""`skyledger demo`: the whole pipeline on the real files bundled with the package."""

from __future__ import annotations

from pathlib import Path

from skyledger.compute.framework.registry import get_task, task_names
from skyledger.compute.framework.runner import RunSummary, process
from skyledger.ingest.batch import BatchSummary, ingest_surveys
from skyledger.ingest.config import IngestConfig, SurveySpec
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.database import Database

from .releases import ReleaseSummary, demo_release

__all__ = ["demo_config", "run_demo", "process_demo", "release_demo"]


def demo_config() -> IngestConfig:
    """The bundled files as three surveys, as an operator would configure them."""
    root = sample_data_dir()
    return IngestConfig(
        path=None,
        root=root,
        surveys=(
            SurveySpec(name="sdss-dr18", reader="sdss", location=root, glob="*_SDSS_DR18.fits"),
            # The LEGA-C file carries no redshift: the survey's value for M19_56670 (as used
            # in the pPXF LEGA-C example) goes in the configuration, as an operator would.
            SurveySpec(name="legac-dr3", reader="eso_phase3", location=root, glob="legac_*.fits", options={"z": 0.6686}),
            SurveySpec(name="manga-dap-test", reader="manga_rss", location=root, glob="MaNGA_*.fits.gz"),
        ),
    )


def run_demo(db: Database) -> BatchSummary:
    """Ingest the bundled data (a no-op when it is already in)."""
    return ingest_surveys(db, demo_config())


def process_demo(db: Database, device: str, workers: int = 1, on_task=None) -> list[RunSummary]:
    """Run every compute task on what is pending (nothing, the second time)."""
    summaries = []
    for name in task_names():
        summary = process(db, get_task(name), device=device, workers=workers, batch_size=16)
        summaries.append(summary)
        if on_task is not None:
            on_task(summary)
    return summaries


def release_demo(db: Database, releases_dir: Path) -> tuple[str, Path, ReleaseSummary | None]:
    """Freeze `current` as the next release ``drN`` unless the newest one already holds it."""
    return demo_release(db, releases_dir)
