"""Running a task: page pending inputs, compute on the device, COPY results back.

Each batch is its own transaction (results plus the run's heartbeat), so a long run
makes progress that survives; the run itself turns ``succeeded`` only in the final
transaction. A batch that raises fails the run; the caller (a Prefect task with
retries, or the operator) runs it again and the new run picks up every input that
has no result from a succeeded run.

Concurrent runs of one task share its inputs: each batch is first claimed in a short
transaction of its own (``task_claim``, see :mod:`.runs`), then loaded and computed.
A run computes only what it claimed, so no input is computed twice, and a run that
finds every pending input claimed by others ends with nothing to do.

``run.upstream_run_ids`` starts as ``task.upstream_runs(session, [])`` (runs known before
any input is read) and grows with each batch by ``task.upstream_runs(session, ids)``,
the runs that batch read, in the batch's results transaction.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.schema.database import Database, psycopg_connection
from skyledger.schema.pgcopy import copy_rows

from skyledger.schema import runs
from .task import Task, TaskOutput, register_flags

__all__ = ["RunSummary", "process", "BatchExecutor"]

_log = logging.getLogger(__name__)

#: How one batch is executed: ``executor(fn)`` must call ``fn()`` and return its value.
#: Flows pass a Prefect task with retries; the CLI calls it directly.
BatchExecutor = Callable[[Callable[[], int]], int]


@dataclass
class RunSummary:
    run_id: int | None
    task: str
    version: int
    status: str
    n_inputs: int = 0
    n_results: int = 0
    n_flagged: int = 0
    seconds: float = 0.0


#: "No limit" for the pending query (a LIMIT it never reaches).
_ALL = 2**62


def _direct(fn: Callable[[], int]) -> int:
    return fn()


def process(
    db: Database,
    task: Task,
    params: BaseModel | None = None,
    *,
    device: str = "cpu",
    workers: int = 1,
    limit: int | None = None,
    batch_size: int = 64,
    flow_run_id: str | None = None,
    executor: BatchExecutor = _direct,
    on_batch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> RunSummary:
    """Process every pending input of ``task`` (at most ``limit``) in one new run.

    Returns without creating a run when nothing is pending (or all of it is claimed by
    other runs). ``on_start(total)`` is told how many inputs are pending when the run
    starts (at most ``limit``; other runs may take some of them), ``on_batch(n)`` how
    many each batch did.
    """
    params = params or task.Params()
    param_dict = params.model_dump(mode="json")
    phash = runs.params_hash(param_dict)
    started = time.perf_counter()
    with db.session() as session:
        runs.reap_abandoned_runs(session, task.name)
        # The whole pending list once, for the progress total (ids only: cheap next to any batch).
        total = len(task.pending(session, params, run_id=-1, params_hash=phash, limit=limit or _ALL))
    if not total:
        return RunSummary(None, task.name, task.version, "nothing to do")
    # A connection of the run's own, open while this process runs it: it holds the run
    # lock that tells other runs its claims are live (see runs.RUN_LOCK_CLASS).
    holder = db.engine.connect()
    try:
        with Session(bind=holder) as session, session.begin():
            register_flags(session, task.flags)
            model_sha = {name: runs.file_sha256(path) for name, path in sorted(task.model_files(params).items())}
            upstream = task.upstream_runs(session, [])
            info = runs.start_run(
                session, task=task.name, version=task.version, params=param_dict, model_sha256=model_sha,
                upstream_run_ids=upstream, device=device, prefect_flow_run_id=flow_run_id,
            )
            runs.hold_run_lock(session.connection(), info.id)
        return _run(db, task, params, info, total, started=started, device=device, workers=workers, limit=limit,
                    batch_size=batch_size, executor=executor, on_batch=on_batch, on_start=on_start)
    finally:
        # Closing the database connection itself (not back into the pool) drops the lock,
        # and needs no query that could fail after the run's own error.
        holder.invalidate()
        holder.close()


def _run(
    db: Database,
    task: Task,
    params: BaseModel,
    info: runs.RunInfo,
    total: int,
    *,
    started: float,
    device: str,
    workers: int,
    limit: int | None,
    batch_size: int,
    executor: BatchExecutor,
    on_batch: Callable[[int], None] | None,
    on_start: Callable[[int], None] | None,
) -> RunSummary:
    """The batches of a started run, then its end: succeeded, or failed with the error."""
    summary = RunSummary(info.id, task.name, task.version, "running")
    if on_start is not None:
        on_start(total)

    def one_batch(size: int) -> int:
        ids = _claim_batch(db, task, params, info, size)
        if not ids:
            return 0
        with db.session() as session:
            batch = task.load(session, ids, params)
            # The runs this batch read, asked right after load (same session) so that they
            # are the rows the batch was computed from; recorded with its results.
            used = task.upstream_runs(session, ids)
        output = task.compute(batch, params, device, workers)  # no database access in here
        _write(db, task, info.id, output, upstream=used)
        summary.n_inputs += output.n_inputs
        summary.n_flagged += output.n_flagged
        summary.n_results += sum(len(r) for r in output.rows.values())
        return len(ids)

    try:
        while limit is None or summary.n_inputs < limit:
            size = batch_size if limit is None else min(batch_size, limit - summary.n_inputs)
            done = executor(lambda: one_batch(size))
            if done == 0:
                break
            if on_batch is not None:
                on_batch(done)
        with db.session() as session:
            runs.finish_run(session, info.id)
    except BaseException as err:
        # Record why, then let the error go on: the run stays visibly unfinished.
        message = "".join(traceback.format_exception_only(type(err), err)).strip()
        try:
            with db.session() as session:
                runs.fail_run(session, info.id, message)
        except Exception:  # the database may be what failed; the run then stays 'running'
            _log.exception("could not mark run %s as failed", info.id)
        raise
    summary.status = "succeeded"
    summary.seconds = time.perf_counter() - started
    return summary


def _claim_batch(db: Database, task: Task, params: BaseModel, run: runs.RunInfo, size: int) -> list[int]:
    """Up to ``size`` pending inputs, claimed for ``run`` and committed; [] when none is left.

    Claiming comes back empty only when another run claimed the same inputs first; the
    next pending query then skips them. Should a task's pending query not skip claimed
    inputs, the same ids come back and the run stops rather than spin.
    """
    previous: list[int] | None = None
    while True:
        with db.session() as session:
            runs.lock_claims(session)
            ids = task.pending(session, params, run_id=run.id, params_hash=run.params_hash, limit=size)
            if not ids or ids == previous:
                return []
            claimed = runs.claim_inputs(session, run, ids)
        if claimed:
            return claimed
        previous = ids


def _write(db: Database, task: Task, run_id: int, output: TaskOutput, *, upstream: Sequence[int] = ()) -> None:
    with db.session() as session:
        if upstream:
            # run.upstream_run_ids grows batch by batch: the union of every batch's runs.
            session.execute(
                text(
                    "UPDATE run SET upstream_run_ids = ARRAY(SELECT DISTINCT u FROM "
                    "unnest(upstream_run_ids || CAST(:u AS bigint[])) AS u ORDER BY u) WHERE id = :id"
                ),
                {"u": list(upstream), "id": run_id},
            )
        conn = psycopg_connection(session)
        for table in task.result_tables:
            rows = output.rows.get(table.name, [])
            if rows:
                copy_rows(conn, table.name, (("run_id", "int8"),) + table.columns, ((run_id, *row) for row in rows))
        runs.heartbeat(
            session, run_id, inputs=output.n_inputs, results=sum(len(r) for r in output.rows.values()),
            flagged=output.n_flagged,
        )


def describe(summary: RunSummary) -> dict[str, Any]:
    return {k: getattr(summary, k) for k in ("run_id", "task", "version", "status", "n_inputs", "n_results", "n_flagged")}
