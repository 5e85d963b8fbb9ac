"""The ingest flows under a real Prefect API: one survey, the nightly run and its lock,
bad files, and the `skyledger nightly` / `skyledger schedule` commands."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import text

from skyledger.compute.tasks.lines import LinesTask
from skyledger.api.nightly import NIGHTLY_LOCK, nightly
from skyledger.ingest.flows import ingest_survey
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.database import Database
from skyledger.schema.errors import ConfigError
from skyledger.schema.locks import advisory_lock
from skyledger.schema.settings import Settings
from tests.conftest import cli_env
from tests.ingest.broken import not_fits, truncated

SAMPLE = sample_data_dir()
SDSS_FILES = ("NGC3073_SDSS_DR18.fits", "NGC3522_SDSS_DR18.fits")
LEGAC_FILE = "legac_M19_56670_v3.0.fits"
CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]
#: How long a Prefect server may take to start (a guard against hangs, not a timing
#: assertion): at load ~12 on 2 cores one took 267 s (docs/operations.md).
STARTUP_S = 600


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A throwaway Prefect server (the test harness) with a private PREFECT_HOME; its API URL."""
    # mkdtemp, not pytest's basetemp: a concurrent pytest session may prune the latter.
    home = Path(tempfile.mkdtemp(prefix="skyledger-prefect-home-"))
    try:
        with temporary_settings(updates={PREFECT_HOME: home, PREFECT_SERVER_ANALYTICS_ENABLED: False}):
            # The server subprocess takes a while to start on a loaded machine: 267 s at
            # load ~12 on 2 cores with a fresh PREFECT_HOME (docs/operations.md).
            with prefect_test_harness(server_startup_timeout=STARTUP_S):
                yield str(PREFECT_API_URL.value())
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def flow_env(prefect_api: str, fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The flows build ``Settings()`` from the environment: point it at the fresh database."""
    assert fresh_settings.database_url
    monkeypatch.setenv("SKYLEDGER_DATABASE_URL", fresh_settings.database_url)
    monkeypatch.setenv("SKYLEDGER_HOME", str(fresh_settings.home))
    monkeypatch.delenv("SKYLEDGER_CONFIG", raising=False)
    return fresh_settings


def survey_config(root: Path) -> Path:
    """Two surveys of real sample files under ``root`` (location + glob); their skyledger.toml."""
    (root / "sdss").mkdir(parents=True)
    (root / "legac").mkdir()
    for name in SDSS_FILES:
        shutil.copy(SAMPLE / name, root / "sdss" / name)
    shutil.copy(SAMPLE / LEGAC_FILE, root / "legac" / LEGAC_FILE)
    config = root / "skyledger.toml"
    # sdss-test detects each file's format, so damaged files are judged on their own.
    config.write_text(
        textwrap.dedent(
            """\
            [[survey]]
            name = "sdss-test"
            location = "sdss"
            glob = "*.fits"

            [[survey]]
            name = "legac-test"
            reader = "eso_phase3"
            location = "legac"
            glob = "*.fits"
            """
        )
    )
    return config


def spectra_by_survey(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        return dict(conn.execute(text("SELECT survey, count(*) FROM catalog.spectra GROUP BY survey")).tuples().all())


def files_by_status(db: Database) -> dict[str, set[str]]:
    """ingest_file uris by status."""
    out: dict[str, set[str]] = {}
    with db.engine.connect() as conn:
        for uri, status in conn.execute(text("SELECT uri, status FROM ingest_file")):
            out.setdefault(status, set()).add(uri)
    return out


def nightly_artifacts(flow_run_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["nightly-summary"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )


def prefect_env(base: dict[str, str], home: Path) -> dict[str, str]:
    """``base`` without any PREFECT_* setting of the user's, plus a private PREFECT_HOME."""
    env = {k: v for k, v in base.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


# ---------------------------------------------------------------------------- flows


def test_ingest_survey_loads_only_the_named_survey(flow_env, fresh_database, tmp_path):
    config = survey_config(tmp_path / "surveys")
    state = ingest_survey(survey="sdss-test", config=str(config), return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["counts"] == {"loaded": 2}
    assert result["spectra"] == 2 and result["rejected"] == {}
    # The other configured survey is left alone.
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2}
    with fresh_database.engine.connect() as conn:
        files = set(conn.execute(text("SELECT file FROM catalog.spectra")).scalars())
        batches = set(conn.execute(text("SELECT batch_id FROM ingest_file")).scalars())
    assert files == {str((tmp_path / "surveys" / "sdss" / n).resolve()) for n in SDSS_FILES}
    # The batch is the Prefect flow run, so a file can be traced to the run that loaded it.
    assert batches == {result["batch_id"]} == {str(state.state_details.flow_run_id)}


def test_ingest_survey_of_an_unknown_survey_fails(flow_env, tmp_path):
    config = survey_config(tmp_path / "surveys")
    state = ingest_survey(survey="nope", config=str(config), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="survey 'nope' is not in .*configured surveys: sdss-test, legac-test"):
        state.result()


def test_nightly_ingests_every_survey_and_publishes_a_summary(flow_env, fresh_database, tmp_path):
    config = survey_config(tmp_path / "surveys")
    state = nightly(config=str(config), process=False, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["status"] == "completed"
    assert result["counts"] == {"loaded": 3} and result["spectra"] == 3
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2, "legac-test": 1}

    run_id = state.state_details.flow_run_id
    assert result["batch_id"] == str(run_id)
    [artifact] = nightly_artifacts(run_id)
    assert artifact.type == "markdown"
    assert f"`{run_id}`" in artifact.data
    assert "| 3 | 0 | 0 | 0 | 3 |" in artifact.data  # loaded, unchanged, duplicate, rejected, spectra

    # The next night finds nothing new: every file is unchanged and nothing is added.
    again = nightly(config=str(config), process=False, return_state=True)
    assert again.is_completed(), again
    assert again.result()["counts"] == {"unchanged": 3}
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2, "legac-test": 1}
    [second] = nightly_artifacts(again.state_details.flow_run_id)
    assert "| 0 | 3 | 0 | 0 | 0 |" in second.data


def test_nightly_named_surveys_only(flow_env, fresh_database, tmp_path):
    config = survey_config(tmp_path / "surveys")
    result = nightly(config=str(config), surveys=["legac-test"], process=False)
    assert result["counts"] == {"loaded": 1}
    assert spectra_by_survey(fresh_database) == {"legac-test": 1}


def test_nightly_skips_while_another_holds_the_lock(flow_env, fresh_database, tmp_path):
    config = survey_config(tmp_path / "surveys")
    with advisory_lock(fresh_database.engine, NIGHTLY_LOCK) as acquired:
        assert acquired
        state = nightly(config=str(config), process=False, return_state=True)
        assert state.is_completed(), state  # skipping is not a failure
        result = state.result()
        assert result["status"] == "skipped"
        assert "in progress" in result["reason"]
        assert files_by_status(fresh_database) == {}
        assert spectra_by_survey(fresh_database) == {}
        assert nightly_artifacts(state.state_details.flow_run_id) == []
    # The lock was the only reason: once it is free, the same call does the work.
    result = nightly(config=str(config), process=False)
    assert result["status"] == "completed" and result["counts"] == {"loaded": 3}


def test_nightly_rejects_a_bad_file_and_loads_the_others(flow_env, fresh_database, tmp_path):
    config = survey_config(tmp_path / "surveys")
    sdss = tmp_path / "surveys" / "sdss"
    bad = dict([truncated(sdss), not_fits(sdss)])
    state = nightly(config=str(config), process=False, return_state=True)
    assert state.is_completed(), state
    result = state.result()
    assert result["counts"] == {"loaded": 3, "rejected": 2}
    assert result["spectra"] == 3
    assert set(result["rejected"]) == {str(p) for p in bad}
    for path, fragment in bad.items():
        assert fragment in result["rejected"][str(path)]
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2, "legac-test": 1}
    statuses = files_by_status(fresh_database)
    assert statuses["rejected"] == {str(p.resolve()) for p in bad}
    assert len(statuses["loaded"]) == 3
    [artifact] = nightly_artifacts(state.state_details.flow_run_id)
    assert "### Rejected files" in artifact.data
    assert all(p.name in artifact.data for p in bad)


# ---------------------------------------------------------------------------- CLI


def test_cli_nightly_runs_once_now(fresh_settings, fresh_database, tmp_path):
    """`skyledger nightly` in a fresh process, Prefect in ephemeral mode (no server)."""
    config = survey_config(tmp_path / "surveys")
    bad, _ = truncated(tmp_path / "surveys" / "sdss")
    env = prefect_env(cli_env(fresh_settings), tmp_path / "prefect-home")
    env["SKYLEDGER_CONFIG"] = str(config)
    proc = subprocess.run([*CLI, "nightly"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=STARTUP_S + 600)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # some files rejected
    lines = proc.stdout.splitlines()
    assert lines[0] == "loaded 3, rejected 1; 3 spectra loaded", proc.stdout
    assert any(line.startswith(f"  rejected {bad}: ") for line in lines[1:]), proc.stdout
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2, "legac-test": 1}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, with the flow-run processes it spawned."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_cli_schedule_serves_the_nightly_deployment(prefect_api, fresh_settings, fresh_database, tmp_path):
    """`skyledger schedule` registers nightly/nightly with its cron and runs what is triggered."""
    config = survey_config(tmp_path / "surveys")
    env = prefect_env(cli_env(fresh_settings), tmp_path / "prefect-home")
    env.update(PREFECT_API_URL=prefect_api, SKYLEDGER_CONFIG=str(config))
    log = tmp_path / "schedule.log"
    # Started away from the repository: serving must not depend on the working directory.
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "schedule"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + STARTUP_S
            deployment = None
            while deployment is None:
                assert proc.poll() is None, f"skyledger schedule exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"no deployment registered:\n{log.read_text()}"
                try:
                    deployment = client.read_deployment_by_name("nightly/nightly")
                except ObjectNotFound:
                    time.sleep(1)
            [schedule] = deployment.schedules
            assert schedule.active
            assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 3 * * *", "UTC")
            assert deployment.parameters == {"config": str(config.resolve())}

            # A run triggered now is picked up and executed by the serving process.
            run = client.create_flow_run_from_deployment(deployment.id)
            deadline = time.monotonic() + STARTUP_S
            while not (run := client.read_flow_run(run.id)).state.is_final():
                assert proc.poll() is None, f"skyledger schedule exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"flow run still {run.state.type}:\n{log.read_text()}"
                time.sleep(2)
            assert run.state.is_completed(), f"{run.state}\n{log.read_text()}"
    finally:
        _stop(proc)
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2, "legac-test": 1}


@pytest.mark.slow
def test_cli_schedule_alone_fires_its_cron(fresh_settings, fresh_database, tmp_path):
    """With no PREFECT_API_URL, `skyledger schedule` brings its own Prefect server, whose
    scheduler fires the cron: the single-process way really runs the nightly."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = survey_config(tmp_path / "surveys")
    env = prefect_env(cli_env(fresh_settings), tmp_path / "prefect-home")
    env.pop("PREFECT_API_URL", None)
    env["SKYLEDGER_CONFIG"] = str(config)
    log = tmp_path / "schedule.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "schedule", "--cron", "* * * * *"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_S + 60  # the private server's own start-up limit, and some
        url = None
        while url is None:
            assert proc.poll() is None, f"skyledger schedule exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no private server announced:\n{log.read_text()}"
            found = [w for w in log.read_text().split() if w.startswith("http://127.0.0.1:") and w.endswith("/api")]
            url = found[0] if found else None
            time.sleep(1)
        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + 300  # the next minute boundary, then the run itself
            while True:
                assert proc.poll() is None, f"skyledger schedule exited:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"the cron never produced a completed run:\n{log.read_text()}"
                runs = client.read_flow_runs()
                if any(r.state is not None and r.state.is_completed() for r in runs):
                    break
                time.sleep(3)
    finally:
        _stop(proc)
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2, "legac-test": 1}


def test_nightly_chains_the_compute_tasks(flow_env, fresh_database, tmp_path):
    """After ingest the nightly runs every task on what is pending and reports it."""
    config = survey_config(tmp_path / "surveys")
    state = nightly(config=str(config), surveys=["sdss-test"], return_state=True)
    assert state.is_completed(), state
    result = state.result()
    [lines] = [r for r in result["compute"] if r["task"] == "lines"]
    assert lines["status"] == "succeeded" and lines["n_inputs"] == 2
    with fresh_database.engine.connect() as conn:
        fitted = conn.execute(text("SELECT count(*) FROM catalog.stellar_kinematics WHERE velocity IS NOT NULL")).scalar_one()
        prefect_ids = conn.execute(text("SELECT prefect_flow_run_id FROM run WHERE task = 'lines'")).scalars().all()
    assert fitted == 2
    assert prefect_ids and all(prefect_ids)  # the run records the flow run it belongs to
    [artifact] = nightly_artifacts(state.state_details.flow_run_id)
    assert "## Compute" in artifact.data and f"| lines | {LinesTask.version} |" in artifact.data
