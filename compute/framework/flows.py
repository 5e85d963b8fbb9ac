"""Prefect flow that runs the compute tasks, one run per task, batches as retried tasks
(or, with SKYLEDGER_DASK_SCHEDULER set, one run per Dask worker: :mod:`.dask_runner`).

On a GPU the whole task holds a slot of a global concurrency limit named after the
device (limit 1), so two flows never fight over one GPU's memory.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from skyledger.compute.framework.progress import ProgressLog
from skyledger.compute.framework.registry import get_task, task_names
from skyledger.compute.framework.runner import describe, process
from skyledger.compute.framework.task import resolve_device
from skyledger.schema.database import connect
from skyledger.schema.settings import Settings

__all__ = ["process_tasks", "gpu_limit_name"]


@task(name="compute-batch", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def _batch(fn) -> int:
    """One batch: a failure here is retried by Prefect before the run gives up."""
    return fn()


def gpu_limit_name(device: str) -> str:
    return f"skyledger-gpu-{device.replace(':', '-')}"


def _ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


@flow(name="process")
def process_tasks(tasks: list[str] | None = None, limit: int | None = None, batch_size: int = 64) -> list[dict[str, Any]]:
    """Every pending input of each task (default: all tasks, upstream first)."""
    logger = get_run_logger()
    settings = Settings()
    device = resolve_device(settings.device)
    if settings.dask_scheduler:
        # On Dask every worker opens the database itself, and the Dask resource GPU=1
        # (not the concurrency limit below) keeps two tasks off one device.
        from skyledger.compute.framework.dask_runner import process_on_dask

        done = process_on_dask(settings, [get_task(name) for name in tasks or task_names()], device=device,
                               limit=limit, batch_size=batch_size,
                               on_task=lambda t, summaries: logger.info("%s v%s: %d runs on Dask, %d inputs", t.name,
                                                                        t.version, len(summaries),
                                                                        sum(s.n_inputs for s in summaries)))
        return [describe(s) for summaries in done for s in summaries]
    db = connect(settings)
    results = []
    try:
        for name in tasks or task_names():
            t = get_task(name)
            run_id = str(flow_run.get_id() or "") or None
            # Flow logs are read after the fact: progress as lines (total, rate, ETA).
            progress = ProgressLog(t.name, logger.info)
            report = {"on_start": progress.start, "on_batch": progress.update}
            if device.startswith("cuda"):
                limit_name = gpu_limit_name(device)
                _ensure_limit(limit_name)
                with concurrency(limit_name, occupy=1, strict=True):
                    summary = process(db, t, device=device, limit=limit, batch_size=batch_size,
                                      flow_run_id=run_id, executor=_batch, **report)
            else:
                summary = process(db, t, device=device, workers=settings.cpu_workers, limit=limit,
                                  batch_size=batch_size, flow_run_id=run_id, executor=_batch, **report)
            progress.close()
            logger.info("%s v%s: %s (%d inputs)", t.name, t.version, summary.status, summary.n_inputs)
            results.append(describe(summary))
    finally:
        db.dispose()
    return results
