"""Run bookkeeping: every execution of a task is an immutable ``run`` row.

A run starts as ``running``, writes its results batch by batch, and becomes
``succeeded`` (and joins the ``current`` collection) in one transaction at the very
end, or ``failed`` with the error. A run whose process died stays ``running`` until a
later process sees its heartbeat is stale and marks it ``failed``; its rows are never
shown through a collection, and the next run redoes its inputs.

Concurrent runs of one task version and parameter hash share the work through
``task_claim``: a run claims each batch before computing it (:func:`claim_inputs`), and
the pending query of every other run skips inputs claimed by a *live* run (``running``,
a fresh heartbeat, and its process still holding its run lock). Claims go when their
run finishes, fails or is reaped; those of a run whose process died are ignored and
taken over at once, so its inputs are neither lost nor left waiting.

The lifecycle (:func:`start_run`, :func:`heartbeat`, :func:`finish_run`,
:func:`fail_run`) also runs on a plain psycopg connection: ingest records a line
catalogue's ``ingested`` run inside the transaction that holds the file's rows, which is
a psycopg one (:mod:`skyledger.ingest.catalogue_lines`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.orm import Session

from skyledger.schema.errors import RunStateError
from skyledger.schema.pgcopy import to_json

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "RunInfo",
    "params_hash",
    "code_version",
    "file_sha256",
    "start_run",
    "heartbeat",
    "finish_run",
    "fail_run",
    "reap_abandoned_runs",
    "claim_inputs",
    "lock_claims",
    "hold_run_lock",
    "LIVE_CLAIM_SQL",
    "LIVE_RUN_SQL",
    "RUN_LOCK_CLASS",
    "create_collection",
    "CURRENT",
]

CURRENT = "current"
#: A running run whose heartbeat is older than this is taken for dead.
STALE_AFTER_S = 600

#: First key of the session-level advisory lock that a run's process holds, on a
#: connection of its own, for as long as it lives (the second key is the run id). A
#: process that dies (SIGKILL, power) loses its connection and with it the lock, at once:
#: other runs see in pg_locks that its claims are dead without waiting for the heartbeat
#: to go stale. Nobody waits on this lock; it is only looked at.
RUN_LOCK_CLASS = 1936423282  # b"skyr"

#: True when run ``{r}`` is live: running, heartbeat fresh, and its process still holds
#: its run lock in this database (binds ``:stale_s``).
LIVE_RUN_SQL = (
    "({r}.status = 'running' AND {r}.heartbeat_at >= now() - make_interval(secs => :stale_s) "
    "AND EXISTS (SELECT 1 FROM pg_locks AS lk WHERE lk.locktype = 'advisory' AND lk.granted "
    "AND lk.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    f"AND lk.classid = CAST({RUN_LOCK_CLASS} AS oid) AND lk.objid = CAST({{r}}.id % 2147483648 AS oid) "
    "AND lk.objsubid = 2))"
)

#: True when input ``{input}`` is claimed by a live run other than ``:run_id`` for this
#: task version and parameter hash (binds ``:task``, ``:version``, ``:phash``, ``:run_id``,
#: ``:stale_s``). The pending query of every task adds ``NOT`` this.
LIVE_CLAIM_SQL = (
    "EXISTS (SELECT 1 FROM task_claim AS cl JOIN run AS clr ON clr.id = cl.run_id "
    "WHERE cl.task = :task AND cl.version = :version AND cl.params_hash = :phash AND cl.input_id = {input} "
    "AND cl.run_id <> :run_id AND " + LIVE_RUN_SQL.format(r="clr") + ")"
)


def _execute(db: Session | Connection | psycopg.Connection, sql: str, params: dict[str, Any]) -> Any:
    """``sql`` (``:name`` binds) on ``db``; the result has ``fetchone`` and ``rowcount`` either way."""
    if isinstance(db, (Session, Connection)):
        return db.execute(text(sql), params)
    return db.execute(_pyformat(sql), params)


@lru_cache(maxsize=16)
def _pyformat(sql: str) -> str:
    """``sql`` with psycopg's ``%(name)s`` binds, as SQLAlchemy would send it."""
    return str(text(sql).compile(dialect=PGDialect_psycopg()))


@dataclass(frozen=True)
class RunInfo:
    id: int
    task: str
    version: int
    params_hash: str


def params_hash(params: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the parameters (sorted keys, no spaces)."""
    canonical = json.dumps(json.loads(to_json(params)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, plus the git commit when running from a checkout."""
    version = f"skyledger {package_version('skyledger')}"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return version
    if commit.returncode == 0 and commit.stdout.strip():
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{version} ({commit.stdout.strip()}{'-dirty' if dirty else ''})"
    return version


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def start_run(
    session: Session | Connection | psycopg.Connection,
    *,
    task: str,
    version: int,
    params: dict[str, Any],
    model_sha256: dict[str, str],
    upstream_run_ids: list[int],
    device: str | None,
    prefect_flow_run_id: str | None,
) -> RunInfo:
    phash = params_hash(params)
    run_id = _execute(
        session,
        "INSERT INTO run (task, version, params, params_hash, code_version, model_sha256, upstream_run_ids, "
        "device, host, status, prefect_flow_run_id, heartbeat_at) VALUES (:t, :v, CAST(:p AS jsonb), :h, :c, "
        "CAST(:m AS jsonb), CAST(:u AS bigint[]), :d, :host, 'running', :f, now()) RETURNING id",
        {"t": task, "v": version, "p": to_json(params), "h": phash, "c": code_version(), "m": to_json(model_sha256),
         "u": upstream_run_ids, "d": device, "host": f"{socket.gethostname()}:{os.getpid()}", "f": prefect_flow_run_id},
    ).fetchone()[0]
    return RunInfo(id=run_id, task=task, version=version, params_hash=phash)


def heartbeat(
    session: Session | Connection | psycopg.Connection, run_id: int, *, inputs: int, results: int, flagged: int
) -> None:
    _execute(
        session,
        "UPDATE run SET heartbeat_at = now(), n_inputs = n_inputs + :i, n_results = n_results + :r, "
        "n_flagged = n_flagged + :f WHERE id = :id AND status = 'running'",
        {"i": inputs, "r": results, "f": flagged, "id": run_id},
    )


def claim_inputs(session: Session, run: RunInfo, input_ids: list[int]) -> list[int]:
    """Claim these inputs for ``run``; returns those it now holds (in the order given).

    Call it in its own short transaction, after reading ``input_ids`` from the task's
    pending query in that same transaction, and commit before computing. The table lock
    (SHARE ROW EXCLUSIVE conflicts with itself) serialises the claim transactions, so
    no run can claim, compute and finish an input between another run's pending query
    and its insert: what that query saw as unclaimed is still undone. Readers cannot
    take this lock (it needs write privileges on ``task_claim``), so they cannot stall
    the runs. A claim of the same run (a retried batch) or of a run that is not live
    any more is taken over.
    """
    if not input_ids:
        return []
    got = set(
        session.execute(
            text(
                "INSERT INTO task_claim AS c (task, version, params_hash, input_id, run_id) "
                "SELECT :task, :version, :phash, i, :run_id FROM unnest(CAST(:ids AS bigint[])) AS i ORDER BY i "
                "ON CONFLICT (task, version, params_hash, input_id) DO UPDATE "
                "SET run_id = EXCLUDED.run_id, claimed_at = now() "
                "WHERE c.run_id = EXCLUDED.run_id OR NOT EXISTS (SELECT 1 FROM run AS r WHERE r.id = c.run_id "
                f"AND {LIVE_RUN_SQL.format(r='r')}) "
                "RETURNING c.input_id"
            ),
            {"task": run.task, "version": run.version, "phash": run.params_hash, "run_id": run.id,
             "ids": sorted(input_ids), "stale_s": STALE_AFTER_S},
        ).scalars()
    )
    return [i for i in input_ids if i in got]


def hold_run_lock(connection: Connection, run_id: int) -> None:
    """Take ``run_id``'s run lock on ``connection`` (kept open for the run's lifetime).

    Taken in the transaction that inserts the run, so the run is never visible without
    it. ``try``: should anyone else hold that key, the run still looks live, and nothing
    waits.
    """
    connection.execute(
        text("SELECT pg_try_advisory_lock(:k, CAST(:id % 2147483648 AS integer))"), {"k": RUN_LOCK_CLASS, "id": run_id}
    )


def lock_claims(session: Session) -> None:
    """Serialise claim transactions (see :func:`claim_inputs`); held until commit."""
    session.execute(text("LOCK TABLE task_claim IN SHARE ROW EXCLUSIVE MODE"))


def _release_claims(session: Session | Connection | psycopg.Connection, run_id: int) -> None:
    _execute(session, "DELETE FROM task_claim WHERE run_id = :id", {"id": run_id})


def finish_run(session: Session | Connection | psycopg.Connection, run_id: int) -> None:
    """Mark the run succeeded and put it at the head of ``current``, atomically.

    Its claims go in the same transaction: other runs see its inputs either claimed by
    a running run or done by a succeeded one, never neither.
    """
    updated = _execute(
        session, "UPDATE run SET status = 'succeeded', finished_at = now() WHERE id = :id AND status = 'running'",
        {"id": run_id},
    ).rowcount
    if updated != 1:
        raise RunStateError(
            f"run {run_id} is no longer running (was it reaped as abandoned?): its results were not made "
            "current; run `skyledger process` again"
        )
    _release_claims(session, run_id)
    _execute(
        session, "INSERT INTO collection_run (collection_id, run_id) SELECT id, :r FROM collection WHERE name = :c",
        {"r": run_id, "c": CURRENT},
    )


def fail_run(session: Session | Connection | psycopg.Connection, run_id: int, error: str) -> None:
    _execute(
        session,
        "UPDATE run SET status = 'failed', error = :e, finished_at = now() WHERE id = :id AND status = 'running'",
        {"e": error[:4000], "id": run_id},
    )
    _release_claims(session, run_id)  # its inputs are pending again, for any run


def reap_abandoned_runs(session: Session, task: str) -> int:
    """Mark runs of ``task`` whose heartbeat went stale as failed, and drop the claims of
    every finished run of ``task``; returns how many runs were reaped."""
    reaped = session.execute(
        text(
            "UPDATE run SET status = 'failed', finished_at = now(), "
            "error = 'abandoned: no heartbeat since ' || heartbeat_at::text "
            "WHERE task = :t AND status = 'running' AND heartbeat_at < now() - make_interval(secs => :s)"
        ),
        {"t": task, "s": STALE_AFTER_S},
    ).rowcount
    session.execute(
        text("DELETE FROM task_claim AS c USING run AS r WHERE r.id = c.run_id AND c.task = :t AND r.status <> 'running'"),
        {"t": task},
    )
    return reaped


def create_collection(session: Session, name: str, run_ids: list[int], description: str | None = None) -> int:
    """A named collection over the given runs, searched in the order given."""
    collection_id = session.execute(
        text("INSERT INTO collection (name, description) VALUES (:n, :d) RETURNING id"), {"n": name, "d": description}
    ).scalar_one()
    for rank, run_id in enumerate(run_ids):
        session.execute(
            text("INSERT INTO collection_run (collection_id, run_id, rank) VALUES (:c, :r, :k)"),
            {"c": collection_id, "r": run_id, "k": rank},
        )
    return collection_id
