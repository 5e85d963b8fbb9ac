"""Concurrent runs of one task share its pending inputs through `task_claim` (real
PostgreSQL, real processes): no input computed twice, none lost, every run finishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.schema import runs
from skyledger.compute.tasks.abundances import AbundancesTask
from skyledger.compute.framework.runner import process
from tests.compute.claims_worker import PARAMS
from tests.compute.test_abundances_task import ingest, write_catalog
from tests.conftest import cli_env

ROOT = Path(__file__).resolve().parents[2]


def two_catalogues(db, tmp_path: Path) -> list[int]:
    """Eight spectra with lines (two line catalogues of four objects); their ids."""
    ingest(db, write_catalog(tmp_path / "a.ecsv", "a"), survey="hii", dust_corrected=False)
    ingest(db, write_catalog(tmp_path / "b.ecsv", "b"), survey="hii-b", dust_corrected=False)
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT id FROM spectrum ORDER BY id")).scalars().all()


def results_by_spectrum(db) -> dict[int, set[int]]:
    """spectrum id -> runs that wrote abundance rows for it."""
    out: dict[int, set[int]] = {}
    with db.engine.connect() as conn:
        for sid, run_id in conn.execute(text("SELECT DISTINCT spectrum_id, run_id FROM abundance")):
            out.setdefault(sid, set()).add(run_id)
    return out


def test_two_concurrent_process_runs_share_the_inputs(fresh_settings, fresh_database, tmp_path):
    ids = two_catalogues(fresh_database, tmp_path)
    sync = tmp_path / "sync"
    sync.mkdir()
    env = cli_env(fresh_settings)
    worker = [sys.executable, "-m", "tests.compute.claims_worker"]
    procs = {role: subprocess.Popen([*worker, role, str(sync)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for role in ("a", "b")}
    out = {role: p.communicate(timeout=600) for role, p in procs.items()}
    for role, p in procs.items():
        assert p.returncode == 0, f"run {role} failed:\n{out[role][1]}"
    summaries = {role: json.loads(out[role][0].splitlines()[-1]) for role in procs}

    # Both ran (the sync files make them overlap) and both finished.
    assert all(s["status"] == "succeeded" and s["n_inputs"] > 0 for s in summaries.values()), summaries
    with fresh_database.engine.connect() as conn:
        statuses = conn.execute(text("SELECT status FROM run WHERE task = 'abundances'")).scalars().all()
        claims_left = conn.execute(text("SELECT count(*) FROM task_claim")).scalar_one()
    assert statuses == ["succeeded", "succeeded"]
    # Every input computed, each by exactly one run; the inputs split between the runs.
    done = results_by_spectrum(fresh_database)
    assert set(done) == set(ids)
    assert all(len(r) == 1 for r in done.values()), done
    assert sum(s["n_inputs"] for s in summaries.values()) == len(ids)
    assert claims_left == 0  # released when the runs succeeded


def start_other_run(db, conn, inputs: list[int]) -> runs.RunInfo:
    """A run of another process, as the runner starts one: its run lock held on ``conn``,
    ``inputs`` claimed."""
    task = AbundancesTask()
    with Session(bind=conn) as session, session.begin():
        other = runs.start_run(session, task=task.name, version=task.version, params=PARAMS.model_dump(mode="json"),
                               model_sha256={}, upstream_run_ids=[], device="cpu", prefect_flow_run_id=None)
        runs.hold_run_lock(session.connection(), other.id)
    with db.session() as session:
        runs.lock_claims(session)
        assert runs.claim_inputs(session, other, inputs) == inputs
    return other


def test_inputs_claimed_by_a_live_run_are_skipped_until_it_fails(fresh_database, tmp_path):
    db = fresh_database
    ids = two_catalogues(db, tmp_path)
    with db.engine.connect() as conn:
        other = start_other_run(db, conn, ids)
        # Everything is claimed by a live run: nothing to do, and no run is made.
        nothing = process(db, AbundancesTask(), PARAMS)
        assert nothing.run_id is None and nothing.status == "nothing to do"
        # A run that fails releases its claims: its inputs are pending again.
        with db.session() as session:
            runs.fail_run(session, other.id, "simulated crash")
        summary = process(db, AbundancesTask(), PARAMS, batch_size=3)
    assert summary.status == "succeeded" and summary.n_inputs == len(ids)
    assert set(results_by_spectrum(db)) == set(ids)


def test_claims_of_a_run_whose_process_died_are_taken_over_at_once(fresh_database, tmp_path):
    """SIGKILL leaves the run 'running' with a fresh heartbeat, but its connection, and with
    it the run lock, is gone: the next run takes its inputs without waiting."""
    db = fresh_database
    ids = two_catalogues(db, tmp_path)
    conn = db.engine.connect()
    dead = start_other_run(db, conn, ids[:4])
    conn.invalidate()  # the process died: the server closes its session and drops the lock
    conn.close()
    summary = process(db, AbundancesTask(), PARAMS)
    assert summary.n_inputs == len(ids)
    with db.engine.connect() as c:
        status = c.execute(text("SELECT status FROM run WHERE id = :i"), {"i": dead.id}).scalar_one()
        claims = c.execute(text("SELECT DISTINCT run_id FROM task_claim")).scalars().all()
    assert status == "running"  # visibly unfinished, as after SIGKILL
    assert claims == []  # taken over by the new run, and released when it succeeded
    assert set(results_by_spectrum(db)) == set(ids)


def test_claims_of_a_run_whose_heartbeat_went_stale_are_taken_over(fresh_database, tmp_path):
    db = fresh_database
    ids = two_catalogues(db, tmp_path)
    with db.engine.connect() as conn:
        hung = start_other_run(db, conn, ids[:4])
        # Its process still holds the lock but stopped beating long ago (hung).
        with db.session() as session:
            session.execute(text("UPDATE run SET heartbeat_at = now() - interval '1 hour' WHERE id = :i"), {"i": hung.id})
        summary = process(db, AbundancesTask(), PARAMS)
    assert summary.n_inputs == len(ids)
    with db.engine.connect() as c:
        status = c.execute(text("SELECT status FROM run WHERE id = :i"), {"i": hung.id}).scalar_one()
        left = c.execute(text("SELECT count(*) FROM task_claim")).scalar_one()
    assert status == "failed" and left == 0  # reaped, its claims gone


class FlakyAbundances(AbundancesTask):
    """Fails the first batch once, after claiming it (a device lost mid-batch)."""

    failed = False

    def compute(self, batch, params, device, workers=1):
        if not FlakyAbundances.failed:
            FlakyAbundances.failed = True
            raise RuntimeError("simulated transient failure")
        return super().compute(batch, params, device, workers)


def retry_once(fn):
    try:
        return fn()
    except RuntimeError:
        return fn()  # as Prefect's task retries do


def test_a_retried_batch_takes_back_its_own_claims(fresh_database, tmp_path):
    db = fresh_database
    ids = two_catalogues(db, tmp_path)
    summary = process(db, FlakyAbundances(), PARAMS, batch_size=4, executor=retry_once)
    assert FlakyAbundances.failed and summary.status == "succeeded" and summary.n_inputs == len(ids)
    done = results_by_spectrum(db)
    assert set(done) == set(ids) and all(r == {summary.run_id} for r in done.values())
