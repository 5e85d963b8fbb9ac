"""Computing on a real Dask LocalCluster (two worker processes) through a real Prefect.

The toy task (tests/compute/toy_task) on the two real SDSS spectra: each Dask worker runs
a run of its own with its own database connection, and the inputs are shared out by the
claims, so the rows are those of the in-process path, each input once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.cosmology import Planck18
from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from pydantic import ValidationError
from sqlalchemy import text

from skyledger.compute.framework import registry
from skyledger.compute.framework.dask_runner import process_on_dask, split_limit
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.database import head_revision
from skyledger.schema.settings import Settings
from tests.compute.test_toy_task import _migrate_toy, toy  # noqa: F401 (a fixture)

#: A guard against a hung Prefect server start, not a timing assertion (tests/ingest/test_flows.py).
STARTUP_S = 600
CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    home = Path(tempfile.mkdtemp(prefix="skyledger-prefect-home-"))
    try:
        with temporary_settings(updates={PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}):
            with prefect_test_harness(server_startup_timeout=STARTUP_S):
                yield
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def toy_db(toy, fresh_database, tmp_path):  # noqa: F811
    files = [shutil.copy(p, tmp_path / p.name) for p in sorted(sample_data_dir().glob("*_SDSS_DR18.fits"))]
    assert {o.status for o in ingest_paths(fresh_database, files).outcomes} == {"loaded"}
    _migrate_toy(fresh_database)
    # The workers connect as any entry point does, which refuses a revision this code does
    # not know (toy_0001): stamp head back, the toy's table staying (a test-only shortcut).
    with fresh_database.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()})
    return fresh_database


def _toy_rows(db) -> list[tuple]:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT s.id, s.z, t.lookback_gyr, t.run_id FROM lookback AS t "
                                 "JOIN spectrum AS s ON s.id = t.spectrum_id ORDER BY s.id, t.run_id")).all()


def test_the_setting_takes_local_or_an_address():
    assert Settings(dask_scheduler="").dask_scheduler is None
    assert Settings(dask_scheduler="local").dask_scheduler == "local"
    assert Settings(dask_scheduler="tcp://10.0.0.5:8786").dask_scheduler == "tcp://10.0.0.5:8786"
    with pytest.raises(ValidationError, match="tcp://host:8786"):
        Settings(dask_scheduler="10.0.0.5:8786")


def test_split_limit_shares_every_input_out():
    assert split_limit(None, 2) == [None, None]
    assert split_limit(5, 2) == [3, 2]
    assert split_limit(1, 2) == [1]


def test_a_local_cluster_computes_every_input_once(prefect_api, toy_db, fresh_settings):
    settings = fresh_settings.model_copy(update={"dask_scheduler": "local", "cpu_workers": 2})
    task = registry.get_task("lookback")
    done = process_on_dask(settings, [task], device="cpu", batch_size=1)

    [summaries] = done
    assert len(summaries) == 2
    ran = [s for s in summaries if s.run_id is not None]
    assert ran and {s.status for s in ran} == {"succeeded"}
    assert sum(s.n_inputs for s in ran) == 2

    rows = _toy_rows(toy_db)
    # Every input exactly once, with the in-process path's value, from a run that succeeded.
    assert len(rows) == 2 and len({r.id for r in rows}) == 2
    for row in rows:
        assert row.lookback_gyr == pytest.approx(Planck18.lookback_time(row.z).to_value("Gyr"), rel=1e-12)
    with toy_db.engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT id, status FROM run WHERE task = 'lookback'")).all())
    assert {statuses[r.run_id] for r in rows} == {"succeeded"}
    assert set(statuses) == {s.run_id for s in ran}


def test_a_worker_killed_mid_batch_leaves_no_input_lost_or_twice(prefect_api, toy, toy_db, fresh_settings, tmp_path):  # noqa: F811
    """The first batch to be computed SIGKILLs its own worker process (once, by a marker
    file): Dask runs that Prefect task again on a live worker, whose new run takes the dead
    run's claims (its run lock went with its connection)."""
    marker = tmp_path / "killed"

    class KilledOnce(toy.LookbackTask):
        """The toy, but the first compute anywhere kills the process it runs in."""

        def compute(self, batch, params, device, workers=1):
            import os
            import signal

            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return super().compute(batch, params, device, workers)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    settings = fresh_settings.model_copy(update={"dask_scheduler": "local", "cpu_workers": 2})
    [summaries] = process_on_dask(settings, [KilledOnce()], device="cpu", batch_size=1)

    assert marker.exists(), "no worker was killed: the test tested nothing"
    rows = _toy_rows(toy_db)
    with toy_db.engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT id, status FROM run WHERE task = 'lookback'")).all())
    succeeded = [r for r in rows if statuses[r.run_id] == "succeeded"]
    # Every input once among the runs that count, with the right value; the killed run
    # never succeeded.
    assert sorted(r.id for r in succeeded) == sorted({r.id for r in rows}) and len(succeeded) == 2
    for row in succeeded:
        assert row.lookback_gyr == pytest.approx(Planck18.lookback_time(row.z).to_value("Gyr"), rel=1e-12)
    assert "running" in statuses.values()  # the killed run: visibly unfinished, as a killed process leaves it
    assert {s.status for s in summaries if s.run_id is not None} == {"succeeded"}


def test_the_process_flow_computes_on_dask_when_the_setting_says_so(prefect_api, toy_db, fresh_settings, monkeypatch):
    """The `process` flow (and so `nightly`) builds its Settings from the environment."""
    from skyledger.compute.framework.flows import process_tasks

    monkeypatch.setenv("SKYLEDGER_DATABASE_URL", fresh_settings.database_url)
    monkeypatch.setenv("SKYLEDGER_HOME", str(fresh_settings.home))
    monkeypatch.setenv("SKYLEDGER_DEVICE", "cpu")
    monkeypatch.setenv("SKYLEDGER_DASK_SCHEDULER", "local")
    monkeypatch.setenv("SKYLEDGER_CPU_WORKERS", "2")
    described = process_tasks(tasks=["lookback"], batch_size=1)

    assert len(described) == 2  # one run (or "nothing to do") per worker
    assert sum(d["n_inputs"] for d in described) == 2
    rows = _toy_rows(toy_db)
    assert len(rows) == 2 and len({r.id for r in rows}) == 2
    assert {r.run_id for r in rows} <= {d["run_id"] for d in described if d["status"] == "succeeded"}


def test_cli_process_on_a_local_cluster_gives_the_in_process_rows(prefect_api, fresh_settings, fresh_database, server,
                                                                   template_url, tmp_path):
    """`skyledger process` with SKYLEDGER_DASK_SCHEDULER=local against the in-process path,
    on two databases holding the same catalogue (same ids, so the same Monte Carlo seeds)."""
    from prefect.settings import PREFECT_API_URL

    from skyledger.compute.tasks.abundances import AbundancesTask
    from skyledger.compute.framework.runner import process
    from skyledger.schema.database import connect
    from tests.compute.test_abundances_task import ingest, view_rows, write_catalog
    from tests.conftest import _new_database, cli_env

    catalog = write_catalog(tmp_path / "a.ecsv", "a")
    for local_settings in _new_database(server, template_url, tmp_path / "local-home"):
        local = connect(local_settings)
        try:
            ingest(local, catalog, survey="hii", dust_corrected=False)
            assert process(local, AbundancesTask(), batch_size=1).status == "succeeded"
            expected = view_rows(local)
        finally:
            local.dispose()

    ingest(fresh_database, catalog, survey="hii", dust_corrected=False)
    env = cli_env(fresh_settings) | {"SKYLEDGER_DASK_SCHEDULER": "local", "SKYLEDGER_CPU_WORKERS": "2",
                                     "SKYLEDGER_DEVICE": "cpu", "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    # A guard against a hang, not a timing assertion: a cluster and Prefect start on a busy box.
    proc = subprocess.run([*CLI, "process", "--task", "abundances", "--batch-size", "1"], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "succeeded" in proc.stdout, proc.stdout + proc.stderr
    got = view_rows(fresh_database)

    def without_run(rows):
        return {key: {k: v for k, v in row.items() if k != "run_id"} for key, row in rows.items()}

    assert len(expected) >= 4 and without_run(got) == without_run(expected)
    with fresh_database.engine.connect() as conn:
        statuses = conn.execute(text("SELECT status FROM run WHERE task = 'abundances'")).scalars().all()
    assert statuses and set(statuses) == {"succeeded"}


def test_gpu_tasks_on_a_running_scheduler_ask_for_the_gpu_resource(prefect_api, toy, toy_db, fresh_settings, tmp_path):  # noqa: F811
    """A tcp:// address: the scheduler of a cluster started here, whose workers each have
    GPU=1 (as `dask worker --resources GPU=1`). Device cuda: each Dask task that computes
    holds the resource (the toy ignores the device, so no GPU is needed)."""
    from distributed import LocalCluster

    seen = tmp_path / "seen"
    seen.mkdir()

    class RecordsResources(toy.LookbackTask):
        def compute(self, batch, params, device, workers=1):
            import os

            from distributed import get_worker

            state = get_worker().state
            held = [ts.resource_restrictions for ts in state.executing]  # this Dask task's
            (seen / f"{os.getpid()}-{batch[0][0]}.json").write_text(json.dumps({"device": device, "held": held}))
            return super().compute(batch, params, device, workers)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={"GPU": 1},
                      dashboard_address=None) as cluster:
        settings = fresh_settings.model_copy(update={"dask_scheduler": cluster.scheduler_address, "cpu_workers": 2})
        [summaries] = process_on_dask(settings, [RecordsResources()], device="cuda", batch_size=1)

    records = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert len(records) == 2 and all(r["device"] == "cuda" for r in records)
    assert all(r["held"] == [{"GPU": 1}] for r in records), records
    assert len({r.id for r in _toy_rows(toy_db)}) == 2
    assert {s.status for s in summaries if s.run_id is not None} == {"succeeded"}
