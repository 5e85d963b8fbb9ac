"""The console script, run as a user would: in a subprocess, with only environment settings."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

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
