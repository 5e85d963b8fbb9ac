"""Crashes during ingest: a killed process or a restarted database never leaves half a file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from skyledger.ingest.loader import GROUP_FILES, GROUPS_IN_FLIGHT_PER_WORKER, READ_AHEAD_MIN_FILES, READ_WORKERS
from skyledger.testing.sdss_files import write_sdss_spectra
from skyledger.schema import embedded
from skyledger.schema.settings import Settings
from tests.conftest import cli_env
from tests.ingest.test_read_ahead import alive, worker_pids

# Enough files for the CLI to read ahead in worker processes (READ_AHEAD_MIN_FILES), for
# three kills each to land mid-batch with groups of GROUP_FILES in flight, and for a
# restart to land mid-batch however fast the loader is.
N_FILES = 400
INGEST = [sys.executable, "-c", "from skyledger.api.cli import main; main()", "ingest"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def survey_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("faults") / "survey"
    write_sdss_spectra(directory, N_FILES, seed=11, n_pix=4000)
    return directory


def loaded_files(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM ingest_file WHERE status = 'loaded'")).scalar_one()


def assert_whole_files_only(engine, directory: Path) -> int:
    """Every file is either loaded with all its rows, or absent; returns how many are loaded."""
    with engine.connect() as conn:
        files = conn.execute(
            text(
                "SELECT f.uri, f.status, f.n_spectra, f.n_sources, "
                "(SELECT count(*) FROM spectrum s WHERE s.ingest_file_id = f.id), "
                "(SELECT count(*) FROM source s WHERE s.ingest_file_id = f.id) FROM ingest_file f"
            )
        ).all()
        orphans = conn.execute(
            text("SELECT count(*) FROM spectrum s JOIN ingest_file f ON f.id = s.ingest_file_id WHERE f.status <> 'loaded'")
        ).scalar_one()
    assert orphans == 0
    assert all(status == "loaded" for _, status, *_ in files), files
    for uri, _, n_spectra, n_sources, spectra, sources in files:
        assert (n_spectra, n_sources) == (spectra, sources) == (1, 1), uri
    uris = [f[0] for f in files]
    assert len(uris) == len(set(uris)), "a file was loaded twice"
    assert set(uris) <= {str(p.resolve()) for p in directory.iterdir()}
    return len(files)


def run_and_kill(cmd, env, engine, kill_after_files: int, extra_delay: float) -> None:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while loaded_files(engine) < kill_after_files and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(extra_delay)  # land somewhere inside the next file's transaction
        workers = worker_pids(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The reader worker outlives no SIGKILLed parent.
    assert workers, "the batch was not read ahead in a worker process"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "a reader worker survived its parent"


def test_sigkill_at_random_points_leaves_whole_files_and_a_rerun_loads_the_rest(fresh_settings, survey_dir):
    assert N_FILES >= READ_AHEAD_MIN_FILES
    engine = create_engine(fresh_settings.database_url)
    env = cli_env(fresh_settings)
    rng = np.random.default_rng(2026)
    previous = 0
    # Read-ahead files commit in groups of GROUP_FILES, several groups at a time, so a kill
    # lands up to a few groups after its target: each target is a little past what the
    # previous runs left, and every kill leaves files to load.
    in_flight = (GROUPS_IN_FLIGHT_PER_WORKER * READ_WORKERS + 1) * GROUP_FILES
    for _ in range(3):
        target = previous + int(rng.integers(3, 40))
        assert target + in_flight < N_FILES
        run_and_kill(INGEST + [str(survey_dir)], env, engine, target, float(rng.uniform(0.0, 0.06)))
        now = assert_whole_files_only(engine, survey_dir)
        assert now >= target
        previous = now
    assert previous < N_FILES
    rerun = subprocess.run(INGEST + [str(survey_dir)], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"loaded {N_FILES - previous}, unchanged {previous}," in rerun.stdout
    assert assert_whole_files_only(engine, survey_dir) == N_FILES
    engine.dispose()


def test_database_restart_mid_ingest(survey_dir):
    """Uses a private embedded server, whatever SKYLEDGER_DATABASE_URL says, to restart it."""
    # Outside pytest's basetemp, like the session's server (see tests/conftest.py).
    home = Path(tempfile.mkdtemp(prefix="skyledger-restart-"))
    settings = Settings(home=home)
    server = embedded.start(settings.embedded_data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLEDGER_")} | {"SKYLEDGER_HOME": str(home)}
    try:
        subprocess.run(INGEST[:-1] + ["init"], env=env, check=True, capture_output=True, timeout=300)
        engine = create_engine(server.url)
        proc = subprocess.Popen(INGEST + [str(survey_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while loaded_files(engine) < 10 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        engine.dispose()
        assert embedded.stop(settings.embedded_data_dir)  # fast shutdown: every session is cut off
        server = embedded.start(settings.embedded_data_dir)
        out, err = proc.communicate(timeout=600)
        engine = create_engine(server.url)
        loaded = assert_whole_files_only(engine, survey_dir)
        # The batch stops with a clear message, not a traceback.
        assert proc.returncode == 1, (out, err)
        assert "lost the database connection" in err, err
        assert "Traceback" not in err
        assert 10 <= loaded < N_FILES
        rerun = subprocess.run(INGEST + [str(survey_dir)], env=env, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
        assert f"loaded {N_FILES - loaded}, unchanged {loaded}," in rerun.stdout
        assert assert_whole_files_only(engine, survey_dir) == N_FILES
        engine.dispose()
    finally:
        embedded.stop(settings.embedded_data_dir)
        shutil.rmtree(home, ignore_errors=True)
