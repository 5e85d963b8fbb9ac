"""Computing on Dask through Prefect: every Dask worker runs the task as a run of its own.

Concurrent runs of one task already share its inputs through ``task_claim`` (see
:mod:`.runner`): each claims a batch before computing it, so no input is computed twice,
and the claims of a run whose process died (its database connection held the run lock)
are no longer live, so the next claim takes those inputs. On Dask each of the
``cpu_workers`` Prefect tasks runs one such run on a worker, which builds its own database
connection from the :class:`Settings` it is sent: an engine holds sockets and cannot be
pickled, nor shared between processes. A worker that dies takes its run's lock with it;
Dask runs the Prefect task again on a live worker (and Prefect retries one that raised),
and that new run computes what the dead one left.

``SKYLEDGER_DASK_SCHEDULER``: ``local`` starts a ``distributed.LocalCluster`` for the
command (one single-threaded process per ``cpu_workers``); ``tcp://host:8786`` uses that
running scheduler. On a GPU every task asks for the Dask resource ``GPU=1``: start each GPU
worker with ``--resources GPU=1`` so that two tasks never share one device (a worker
without the resource gets no GPU task at all).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import dask
from prefect import flow, task
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from prefect_dask import DaskTaskRunner

from skyledger.schema.database import connect
from skyledger.schema.settings import Settings

from .runner import RunSummary, process
from .task import Task

__all__ = ["process_on_dask", "dask_task_runner", "split_limit"]


def dask_task_runner(settings: Settings) -> DaskTaskRunner:
    """The Prefect task runner for ``settings.dask_scheduler`` (``local`` or an address)."""
    address = settings.dask_scheduler
    if not address:
        raise ValueError("SKYLEDGER_DASK_SCHEDULER is unset: set it to 'local' or a scheduler address (tcp://host:8786)")
    if address == "local":
        # Processes, one thread each: the fits hold the GIL, and torch runs one thread per worker.
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": settings.cpu_workers, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None},
        )
    return DaskTaskRunner(address=address)


def split_limit(limit: int | None, parts: int) -> list[int | None]:
    """``limit`` shared out over ``parts`` runs (each at least 1 input); no limit: none for each."""
    if limit is None:
        return [None] * parts
    parts = min(parts, limit)
    return [limit // parts + (1 if i < limit % parts else 0) for i in range(parts)]


@task(name="compute-run", retries=2, retry_delay_seconds=1, cache_policy=NONE)
def _run_on_worker(settings: Settings, t: Task, device: str, limit: int | None, batch_size: int,
                   flow_run_id: str | None) -> RunSummary:
    """One run of ``t`` on this worker, with a database connection of its own."""
    db = connect(settings)
    try:
        # workers=1: the Dask worker is the process; the cluster gives the parallelism.
        return process(db, t, device=device, workers=1, limit=limit, batch_size=batch_size, flow_run_id=flow_run_id)
    finally:
        db.dispose()


def process_on_dask(
    settings: Settings,
    tasks: Sequence[Task],
    *,
    device: str,
    limit: int | None = None,
    batch_size: int = 64,
    on_task: Callable[[Task, list[RunSummary]], None] | None = None,
) -> list[list[RunSummary]]:
    """Every pending input of each task (in order), computed on ``settings.dask_scheduler``.

    Each task's runs (one per Dask task, ``cpu_workers`` of them) all end before the next
    task starts, since a task reads its upstream's results. Returns each task's summaries;
    ``on_task`` is told them as each task ends.
    """
    resources = {"GPU": 1} if device.startswith("cuda") else None
    # Connect once here: the schema version is checked (and a brand-new embedded database
    # set up) before any worker starts. The embedded server is started here, once, and the
    # workers sent its address so that they do not race to start it; only workers on this
    # machine reach it (a remote scheduler's workers need SKYLEDGER_DATABASE_URL).
    db = connect(settings)
    try:
        settings = settings.model_copy(update={"database_url": db.url})
    finally:
        db.dispose()

    # A flow made here, closing over the settings: as a flow parameter they would be stored
    # in Prefect's database, database password included.
    def _process_on_dask(names: list[str], limit: int | None, batch_size: int) -> list[list[RunSummary]]:
        run_id = str(flow_run.get_id() or "") or None
        done = []
        for t in tasks:
            annotate = dask.annotate(resources=resources) if resources else contextlib.nullcontext()
            with annotate:
                futures = [_run_on_worker.submit(settings, t, device, share, batch_size, run_id)
                           for share in split_limit(limit, settings.cpu_workers)]
            summaries = [f.result() for f in futures]
            if on_task is not None:
                on_task(t, summaries)
            done.append(summaries)
        return done

    run = flow(name="process-on-dask", task_runner=dask_task_runner(settings))(_process_on_dask)
    return run([t.name for t in tasks], limit, batch_size)
