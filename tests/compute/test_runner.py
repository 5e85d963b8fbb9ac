"""The task framework on a real database: runs, anti-join, collections, versions, faults."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from typing import ClassVar

import pytest
from sqlalchemy import create_engine, text

from skyledger.compute.fitting import SpectrumFlag
from skyledger.compute.tasks.lines import LinesParams, LinesTask
from skyledger.compute.framework.runner import process
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.testing.sdss_files import write_sdss_spectra
from tests.conftest import cli_env

CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]


def scalar(db, sql: str, **params):
    with db.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


@pytest.fixture
def sdss_db(fresh_database, tmp_path):
    """The two real SDSS spectra, ingested."""
    files = [shutil.copy(p, tmp_path / p.name) for p in sorted(sample_data_dir().glob("*_SDSS_DR18.fits"))]
    assert {o.status for o in ingest_paths(fresh_database, files).outcomes} == {"loaded"}
    return fresh_database


class LinesV2(LinesTask):
    """The same task after a hand-bumped version, as a developer would ship it."""

    version = LinesTask.version + 1


class BrokenLines(LinesTask):
    def compute(self, batch, params, device, workers=1):
        raise RuntimeError("simulated batch failure (device lost)")


def test_process_fills_the_catalog_and_a_rerun_does_no_work(sdss_db):
    summary = process(sdss_db, LinesTask(), batch_size=1)
    assert summary.status == "succeeded" and summary.n_inputs == 2
    with sdss_db.engine.connect() as conn:
        run = conn.execute(text("SELECT * FROM run WHERE id = :i"), {"i": summary.run_id}).mappings().one()
        kin = conn.execute(text("SELECT spectrum_id, velocity, sigma, flags FROM catalog.stellar_kinematics")).all()
        n_lines = conn.execute(text("SELECT count(*) FROM catalog.lines WHERE source_task = 'lines'")).scalar_one()
    assert run["status"] == "succeeded" and run["n_inputs"] == 2 and run["task"] == "lines" and run["version"] == LinesTask.version
    assert run["code_version"].startswith("skyledger ") and run["device"] == "cpu" and run["finished_at"] is not None
    # The default library's files (E-MILES: one file since lines v3), each hashed.
    assert set(run["model_sha256"]) == set(LinesTask().model_files(LinesParams())) == {"emiles/emiles_ssp.npz"}
    assert all(len(v) == 64 for v in run["model_sha256"].values())
    assert run["params"] == LinesParams().model_dump(mode="json")
    assert len(kin) == 2 and all(v is not None and s is not None for _, v, s, _ in kin)
    assert n_lines >= 2 * 15  # every line in the SDSS range
    again = process(sdss_db, LinesTask())
    assert again.run_id is None and again.status == "nothing to do"
    assert scalar(sdss_db, "SELECT count(*) FROM run") == 1
    # Every bit the task can write is documented.
    documented = scalar(sdss_db, "SELECT count(*) FROM flag_definition WHERE table_name = 'stellar_kinematics'")
    assert documented == len(SpectrumFlag)


class RecordingLines(LinesTask):
    seen: ClassVar[list[int]] = []

    def compute(self, batch, params, device, workers=1):
        self.seen.append(workers)
        return super().compute(batch, params, device, workers)


def test_process_hands_the_cpu_workers_setting_to_the_task(sdss_db):
    summary = process(sdss_db, RecordingLines(), params=LinesParams(fit_gas=False), workers=2)
    assert summary.status == "succeeded" and summary.n_inputs == 2
    assert RecordingLines.seen == [2]
    assert scalar(sdss_db, "SELECT count(*) FROM catalog.stellar_kinematics WHERE velocity IS NOT NULL") == 2


def test_version_bump_and_new_params_make_new_runs_and_keep_old_results(sdss_db):
    v1 = process(sdss_db, LinesTask(), params=LinesParams(fit_gas=False))
    v2 = process(sdss_db, LinesV2(), params=LinesParams(fit_gas=False))
    p2 = process(sdss_db, LinesV2(), params=LinesParams(fit_gas=False, degree=4))
    assert len({v1.run_id, v2.run_id, p2.run_id}) == 3 and all(s.n_inputs == 2 for s in (v1, v2, p2))
    assert scalar(sdss_db, "SELECT count(*) FROM stellar_kinematics") == 6  # nothing overwritten
    with sdss_db.engine.connect() as conn:
        shown = conn.execute(text("SELECT DISTINCT run_id FROM catalog.stellar_kinematics")).scalars().all()
        old = conn.execute(text("SELECT count(*) FROM stellar_kinematics WHERE run_id = :r"), {"r": v1.run_id}).scalar_one()
    assert shown == [p2.run_id]  # the newest run wins in `current`
    assert old == 2  # earlier results stay queryable by run


def test_batch_failure_fails_the_run_and_leaves_current_alone(sdss_db):
    with pytest.raises(RuntimeError, match="simulated batch failure"):
        process(sdss_db, BrokenLines())
    with sdss_db.engine.connect() as conn:
        status, error = conn.execute(text("SELECT status, error FROM run")).one()
        shown = conn.execute(text("SELECT count(*) FROM catalog.current_runs")).scalar_one()
    assert status == "failed" and "simulated batch failure" in error
    assert shown == 0
    # The work is still pending: a working run does it all.
    assert process(sdss_db, LinesTask(), params=LinesParams(fit_gas=False)).n_inputs == 2


def test_unfittable_spectrum_gets_a_flagged_row(fresh_database, tmp_path):
    manga = shutil.copy(sample_data_dir() / "MaNGA_test_spectra.fits.gz", tmp_path / "MaNGA_test_spectra.fits.gz")
    ingest_paths(fresh_database, [manga])
    summary = process(fresh_database, LinesTask(), params=LinesParams(fit_gas=False), batch_size=8)
    assert summary.n_inputs == 8 and summary.n_flagged >= 1
    with fresh_database.engine.connect() as conn:
        rows = dict(
            conn.execute(
                text("SELECT s.object_id, k.flags FROM catalog.stellar_kinematics k JOIN spectrum s ON s.id = k.spectrum_id")
            ).all()
        )
        velocity = conn.execute(
            text("SELECT k.velocity FROM catalog.stellar_kinematics k JOIN spectrum s ON s.id = k.spectrum_id "
                 "WHERE s.object_id = 'MaNGA_test_spectra#5'")
        ).scalar_one()
    assert len(rows) == 8
    failed = int(SpectrumFlag.NO_GOOD_PIXELS | SpectrumFlag.TOO_FEW_PIXELS | SpectrumFlag.FIT_FAILED)
    assert rows["MaNGA_test_spectra#5"] & failed and velocity is None
    assert sum(1 for f in rows.values() if f & failed) == 1  # the others are fitted


@pytest.mark.parametrize("damage", ["ivar = ivar[1:100]", "flux = NULL"])
def test_spectrum_whose_arrays_disagree_with_its_grid_gets_a_flagged_row(sdss_db, caplog, damage):
    with sdss_db.engine.begin() as conn:
        broken, other = conn.execute(text("SELECT id FROM spectrum ORDER BY id")).scalars().all()
        conn.execute(text(f"UPDATE spectrum SET {damage} WHERE id = :i"), {"i": broken})
    summary = process(sdss_db, LinesTask(), params=LinesParams(fit_gas=False))
    assert summary.status == "succeeded" and summary.n_inputs == 2 and summary.n_flagged == 1
    with sdss_db.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT spectrum_id, flags FROM catalog.stellar_kinematics")).all())
        velocity = dict(conn.execute(text("SELECT spectrum_id, velocity FROM catalog.stellar_kinematics")).all())
    assert rows[broken] & SpectrumFlag.NO_GOOD_PIXELS and velocity[broken] is None
    assert rows[other] == 0 and velocity[other] is not None
    assert f"spectrum {broken}: pixel arrays do not match" in caplog.text


@pytest.mark.slow
def test_sigkill_mid_run_leaves_an_unfinished_run_and_the_next_one_completes(fresh_settings, tmp_path):
    files = write_sdss_spectra(tmp_path / "survey", 6, seed=5, n_pix=3000)
    env = cli_env(fresh_settings)
    subprocess.run(CLI + ["ingest", str(tmp_path / "survey")], env=env, check=True, capture_output=True, timeout=300)
    engine = create_engine(fresh_settings.database_url)

    def rows() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM stellar_kinematics")).scalar_one()

    proc = subprocess.Popen(CLI + ["process", "--task", "lines", "--batch-size", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while rows() < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with engine.connect() as conn:
        killed = conn.execute(text("SELECT id, status, finished_at FROM run")).one()
        in_view = conn.execute(text("SELECT count(*) FROM catalog.stellar_kinematics")).scalar_one()
    partial = rows()
    assert killed.status == "running" and killed.finished_at is None  # visibly unfinished
    assert 2 <= partial < len(files)
    assert in_view == 0  # an unfinished run is never in `current`
    done = subprocess.run(CLI + ["process", "--task", "lines"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        per_spectrum = conn.execute(
            text("SELECT spectrum_id, count(*) FROM catalog.stellar_kinematics GROUP BY 1")
        ).all()
        statuses = conn.execute(text("SELECT status FROM run ORDER BY id")).scalars().all()
        dup = conn.execute(
            text("SELECT count(*) FROM (SELECT run_id, spectrum_id FROM stellar_kinematics GROUP BY 1, 2 HAVING count(*) > 1) d")
        ).scalar_one()
    engine.dispose()
    assert len(per_spectrum) == len(files) and all(n == 1 for _, n in per_spectrum)
    assert statuses == ["running", "succeeded"]
    assert dup == 0
