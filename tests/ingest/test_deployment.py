"""prefect.yaml end to end: a real Prefect server, `prefect deploy`, a process worker
started away from the repository, and flow runs that load the fresh test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import cli_env
from tests.ingest.test_flows import prefect_env, spectra_by_survey, survey_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]  # this environment's Prefect, whatever is on PATH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    # Own session: teardown can stop the process and every child it spawned (flow runs).
    with open(log, "wb") as out:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@dataclass
class PrefectServer:
    api_url: str
    env: dict[str, str]  # for Prefect clients: private PREFECT_HOME, PREFECT_API_URL


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[PrefectServer]:
    """`prefect server start` (with its scheduler) in a private PREFECT_HOME, on a free port."""
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server_env = prefect_env(dict(os.environ), tmp_path / "server-home")
    server_env["PREFECT_UI_ENABLED"] = "false"
    log = tmp_path / "server.log"
    proc = _start(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=server_env, cwd=tmp_path, log=log
    )
    try:
        deadline = time.monotonic() + 600  # generous: 267 s at load ~12 on 2 cores (docs/operations.md)
        while True:
            assert proc.poll() is None, f"prefect server exited:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, f"prefect server not healthy after 600 s:\n{log.read_text()}"
            time.sleep(0.5)
        client_env = prefect_env(dict(os.environ), tmp_path / "client-home")
        client_env["PREFECT_API_URL"] = api_url
        yield PrefectServer(api_url, client_env)
    finally:
        _stop(proc)


def prefect(*args: str, env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PREFECT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_prefect_yaml_deploys_and_a_process_worker_runs_it(prefect_server, fresh_settings, fresh_database, tmp_path):
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    assert len(pools) == 1
    [pool] = pools
    config = survey_config(tmp_path / "surveys")
    env = {**prefect_server.env, **{k: v for k, v in cli_env(fresh_settings).items() if k.startswith("SKYLEDGER_")}}

    created = prefect("work-pool", "create", pool, "--type", "process", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stdout + created.stderr
    # From the repository root, as the README says: entrypoints are relative to it.
    deployed = prefect("--no-prompt", "deploy", "--all", env=env, cwd=REPO, timeout=300)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("nightly/nightly")
        on_demand = client.read_deployment_by_name("ingest-survey/ingest-survey")
        for deployment in (nightly, on_demand):
            assert deployment.work_pool_name == pool
            # The pull step points at this clone, whichever directory that is.
            [step] = deployment.pull_steps
            directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
            assert Path(directory).resolve() == REPO
        [schedule] = nightly.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 3 * * *", "UTC", True)
        assert nightly.parameters == {"config": None}
        assert on_demand.schedules == []
        assert "survey" in on_demand.parameter_openapi_schema["required"]

    # A worker started elsewhere: only the pull step can lead it to ingest/flows.py.
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    worker_log = tmp_path / "worker.log"
    worker = _start([*PREFECT, "worker", "start", "--pool", pool], env=env, cwd=elsewhere, log=worker_log)
    try:
        def run(deployment: str, *params: str) -> subprocess.CompletedProcess[str]:
            args = ["deployment", "run", deployment, "--watch", "--watch-interval", "2", "--watch-timeout", "240"]
            for p in params:
                args += ["--param", p]
            proc = prefect(*args, env=env, cwd=tmp_path, timeout=300)
            assert proc.returncode == 0, f"{proc.stdout}{proc.stderr}\nworker:\n{worker_log.read_text()}"
            assert "Completed" in proc.stdout, proc.stdout
            return proc

        refused = prefect("deployment", "run", "ingest-survey/ingest-survey", env=env, cwd=tmp_path)
        # `survey` has no default: the server refuses the run rather than queue a failure.
        assert refused.returncode != 0
        said = " ".join((refused.stdout + refused.stderr).split())  # undo rich's line wrapping
        assert "'survey' is a required property" in said, said

        run("ingest-survey/ingest-survey", "survey=sdss-test", f"config={config}")
        assert spectra_by_survey(fresh_database) == {"sdss-test": 2}
        run("nightly/nightly", f"config={config}")
        assert worker.poll() is None, worker_log.read_text()
    finally:
        _stop(worker)
    assert spectra_by_survey(fresh_database) == {"sdss-test": 2, "legac-test": 1}

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}), get_client(sync_client=True) as client:
        # Only the run triggered above: the 03:00 runs the scheduler made are not due.
        [flow_run] = [
            r
            for r in client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[nightly.id])))
            if r.state is not None and r.state.is_final()
        ]
        assert flow_run.state.is_completed()
        assert flow_run.parameters == {"config": str(config)}
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["nightly-summary"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])
            )
        )
        # The ingest-survey run had loaded the SDSS files: the nightly loads LEGA-C only.
        assert "| 1 | 2 | 0 | 0 | 1 |" in artifact.data
