"""The console script, run as a user would: in a subprocess, with only environment settings."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from skyledger.compute.tasks.abundances import AbundancesTask
from skyledger.schema.database import hide_password
from tests.conftest import cli_env


def skyledger(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    # The installed console script, not an in-process call: what users run.
    exe = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]
    proc = subprocess.run(exe + list(args), env=env, capture_output=True, text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"skyledger {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def embedded_env(tmp_path):
    """No database configured at all: the embedded default, in a private home."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SKYLEDGER_")}
    env["SKYLEDGER_HOME"] = str(tmp_path / "home")
    yield env
    subprocess.run(
        [sys.executable, "-c", "from skyledger.api.cli import main; main()", "db", "stop"],
        env=env, capture_output=True, timeout=120,
    )


def test_version():
    proc = skyledger("--version", env={})
    assert proc.stdout.startswith("skyledger ")


def test_sql_works_with_no_configuration_and_refuses_writes(embedded_env):
    one = skyledger("sql", "select 1 AS one", "--format", "json", env=embedded_env)
    assert json.loads(one.stdout) == [{"one": 1}]
    drop = skyledger("sql", "drop table survey", env=embedded_env, check=False)
    assert drop.returncode == 1
    assert "read-only" in drop.stderr and "Traceback" not in drop.stderr
    still = skyledger("sql", "select count(*) AS n from catalog.spectra", "-f", "csv", env=embedded_env)
    assert still.stdout.splitlines() == ["n", "0"]


def test_init_status_and_stop(embedded_env):
    init = skyledger("init", env=embedded_env)
    assert "schema version:  0" in init.stdout and "up to date" in init.stdout
    status = skyledger("db", "status", env=embedded_env)
    assert "embedded PostgreSQL" in status.stdout
    assert "flag_definition" in status.stdout
    assert "stopped" in skyledger("db", "stop", env=embedded_env).stdout
    assert "not running" in skyledger("db", "stop", env=embedded_env).stdout
    # The next command starts the server again, on the same data.
    assert "up to date" in skyledger("db", "status", env=embedded_env).stdout


def test_two_processes_start_and_stop_the_same_server(embedded_env):
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: skyledger("init", env=embedded_env, check=False), range(3)))
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    pids = {line for r in results for line in r.stdout.splitlines() if line.startswith("server:")}
    assert len(pids) == 1, pids  # all three share one server
    with ThreadPoolExecutor(2) as pool:
        stops = list(pool.map(lambda _: skyledger("db", "stop", env=embedded_env, check=False), range(2)))
    assert sorted(r.returncode for r in stops) == [0, 0]
    assert sorted("not running" in r.stdout for r in stops) == [False, True]


def test_external_url_is_used_and_password_hidden(settings):
    env = cli_env(settings)
    status = skyledger("db", "status", env=env)
    assert "external PostgreSQL" in status.stdout
    assert hide_password("postgresql+psycopg://u:secret@h/db") == "postgresql+psycopg://u:***@h/db"


def test_unreachable_database_gives_a_clear_error(tmp_path):
    env = {"SKYLEDGER_HOME": str(tmp_path), "SKYLEDGER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    proc = skyledger("sql", "select 1", env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot connect to postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_wrong_driver_is_refused(tmp_path):
    env = {"SKYLEDGER_HOME": str(tmp_path), "SKYLEDGER_DATABASE_URL": "mysql://x@h/db"}
    proc = skyledger("sql", "select 1", env=env, check=False)
    assert proc.returncode == 1 and "needs PostgreSQL" in proc.stderr


# ------------------------------------------------------------------ nightly and process


def test_nightly_gives_prefects_ephemeral_server_time_to_start():
    """`skyledger nightly` crashed at load ~10 ("Timed out while attempting to connect to
    ephemeral Prefect API server"): Prefect waits 20 s by default. The CLI sets a generous
    default before Prefect is imported, and an operator's own value still wins."""
    probe = (
        "from skyledger.api.cli import _prefect_environment; _prefect_environment(); "
        "from prefect.settings import get_current_settings; "
        "print(get_current_settings().server.ephemeral.startup_timeout_seconds)"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PREFECT_")}
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert default.returncode == 0, default.stderr
    assert float(default.stdout) >= 300
    env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "42"
    chosen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert float(chosen.stdout) == 42


def test_nightly_help_readme_and_prefect_yaml_agree_on_what_nightly_does():
    """All three say that nightly ingests and then processes."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    help_text = " ".join(skyledger("nightly", "--help", env={}).stdout.split())
    [deployment] = [d for d in yaml.safe_load((root / "prefect.yaml").read_text())["deployments"] if d["name"] == "nightly"]
    readme = root.joinpath("README.md").read_text()
    [summary_line] = [line for line in readme.splitlines() if line.startswith("skyledger nightly ")]
    schedule_section = readme.split("## Running the schedule", 1)[1].split("**Once, now**", 1)[0]
    for name, said in [("nightly --help", help_text), ("prefect.yaml", deployment["description"]),
                       ("README command list", summary_line), ("README, Running the schedule", schedule_section)]:
        words = " ".join(said.split()).lower()
        assert "ingest" in words and "process" in words, f"{name} does not say nightly ingests, then processes: {said!r}"
        assert words.index("ingest") < words.index("process"), name


PROGRESS_LINE = re.compile(r"^abundances: (\d+)/4 inputs \((\d+) %\), \d+\.\d inputs/s, (ETA \S+ \S+|done in \S+ \S+)$")


def test_process_logs_progress_lines_when_not_on_a_terminal(fresh_settings, fresh_database, tmp_path):
    """stderr is a pipe here, as under cron: progress comes as lines with the total."""
    from tests.compute.test_abundances_task import ingest, write_catalog

    ingest(fresh_database, write_catalog(tmp_path / "a.ecsv", "a"), survey="hii", dust_corrected=False)
    proc = skyledger("process", "--task", "abundances", "--batch-size", "1", env=cli_env(fresh_settings))
    lines = proc.stderr.splitlines()
    assert "abundances: 4 inputs pending" in lines, proc.stderr
    progress = [m for m in map(PROGRESS_LINE.match, lines) if m]
    assert len(progress) >= 2, proc.stderr  # a line at every 10 %: here one per batch of 1 of 4
    done = [int(m.group(1)) for m in progress]
    assert done == sorted(done) and done[-1] == 4
    assert progress[-1].group(2) == "100"
    assert "\r" not in proc.stderr  # no bar redrawn into a log file
    assert f"abundances v{AbundancesTask.version}: run " in proc.stdout and "4 inputs" in proc.stdout
