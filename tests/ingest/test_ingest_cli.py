"""`skyledger ingest` and `skyledger demo` as an operator runs them, and the survey config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import create_engine, text

from skyledger.compute.classification.diagnostic import NebulaFlag
from skyledger.compute.tasks.lines import LinesTask
from skyledger.ingest.config import load_config
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.errors import ConfigError
from tests.conftest import cli_env

CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]


def run(args, env, check=True):
    proc = subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "skyledger.toml"
    path.write_text(body)
    return path


@pytest.fixture
def survey_root(tmp_path) -> Path:
    root = tmp_path / "surveys"
    (root / "sdss").mkdir(parents=True)
    (root / "manga").mkdir()
    for f in sample_data_dir().glob("*_SDSS_DR18.fits"):
        shutil.copy(f, root / "sdss" / f.name)
    shutil.copy(sample_data_dir() / "MaNGA_test_spectra.fits.gz", root / "manga")
    (root / "manga" / "notes.txt").write_text("observing log, not a spectrum\n")
    return root


def test_ingest_every_configured_survey(fresh_settings, survey_root, tmp_path):
    config = write_config(
        tmp_path,
        f'root = "{survey_root}"\n'
        '[[survey]]\nname = "sdss-dr18"\nreader = "sdss"\nlocation = "sdss"\nglob = "*.fits"\n'
        '[[survey]]\nname = "manga"\nlocation = "manga"\n',
    )
    env = cli_env(fresh_settings) | {"SKYLEDGER_CONFIG": str(config)}
    first = run(["ingest"], env, check=False)
    assert first.returncode == 3, first.stderr  # some files rejected
    assert "loaded 3, unchanged 0, duplicate 0, rejected 1; 10 spectra loaded" in first.stdout
    assert "notes.txt: no reader recognises this file: not a FITS file: the content is text" in first.stdout
    second = run(["ingest"], env, check=False)
    assert second.returncode == 3
    assert "loaded 0, unchanged 3, duplicate 0, rejected 1; 0 spectra loaded" in second.stdout
    assert "unchanged since ingest_file" in second.stdout  # the bad file is not recorded twice
    engine = create_engine(fresh_settings.database_url)
    with engine.connect() as conn:
        surveys = conn.execute(text("SELECT survey, count(*) FROM catalog.spectra GROUP BY 1 ORDER BY 1")).all()
    engine.dispose()
    assert surveys == [("manga", 8), ("sdss-dr18", 2)]


def test_ingest_paths_with_a_forced_reader_and_survey(fresh_settings, survey_root):
    env = cli_env(fresh_settings)
    proc = run(["ingest", str(survey_root / "sdss"), "--reader", "sdss", "--survey", "my-sdss"], env)
    assert "loaded 2" in proc.stdout
    wrong = run(["ingest", str(survey_root / "manga"), "--reader", "sdss"], env, check=False)
    assert "rejected 2" in wrong.stdout  # a MaNGA file is no SDSS file, and a text file neither
    assert wrong.returncode == 3


def test_unknown_reader_is_a_usage_error(fresh_settings, survey_root):
    proc = run(["ingest", str(survey_root), "--reader", "nope"], cli_env(fresh_settings), check=False)
    assert proc.returncode == 1 and "unknown reader 'nope'" in proc.stderr


def test_demo_ingests_and_processes_the_bundled_data_once(fresh_settings):
    env = cli_env(fresh_settings)
    first = run(["demo"], env)
    # 2 SDSS + 1 LEGA-C + 8 + 3 MaNGA spectra, and the 39 bins x 2 arms of the SAMI cube
    assert "loaded 7, unchanged 0, duplicate 0, rejected 0; 92 spectra loaded" in first.stdout
    assert f"lines v{LinesTask.version}: run 1 succeeded, 92 inputs" in first.stdout
    assert "sdss-dr18" in first.stdout and "sami-dr3" in first.stdout and "schema version:" in first.stdout
    engine = create_engine(fresh_settings.database_url)
    with engine.connect() as conn:
        fitted = conn.execute(text("SELECT count(velocity) FROM catalog.stellar_kinematics")).scalar_one()
        rotation = conn.execute(text(
            "SELECT component, count(*) FROM catalog.rotation WHERE object_id = '209807' AND vmax IS NOT NULL GROUP BY 1"
        )).all()  # fmt: skip
        gradients = conn.execute(text(
            "SELECT count(*) FROM catalog.metallicity_gradients WHERE object_id = '209807' AND slope_dex_per_kpc IS NOT NULL"
        )).scalar_one()  # fmt: skip
        # Second kinematic components (the demo runs lines with components = auto).
        second = conn.execute(text(
            "SELECT count(*) FROM catalog.lines AS l JOIN spectrum AS s ON s.id = l.spectrum_id "
            "WHERE l.component = 1 AND s.object_id LIKE 'MaNGA_multicomp%'"
        )).scalar_one()  # fmt: skip
        models = conn.execute(text("SELECT count(gas_model) FROM catalog.stellar_kinematics")).scalar_one()
        # Every SAMI bin is classified as part of an integrated galaxy (its seeing is 2.7 kpc),
        # inferred; the 1-D spectra (no parent) are galaxies too.
        contexts = conn.execute(text(
            "SELECT s.survey, n.context, count(*) FROM catalog.nebula_class AS n "
            "JOIN catalog.spectra AS s ON s.spectrum_id = n.spectrum_id GROUP BY 1, 2"
        )).all()  # fmt: skip
        sami_bpt = conn.execute(text(
            "SELECT s.object_id, n.class, n.probability, n.flags & :no_bpt FROM catalog.nebula_class AS n JOIN catalog.spectra AS s "
            "ON s.spectrum_id = n.spectrum_id WHERE s.survey = 'sami-dr3' AND n.method = 'diagnostic' AND n.class <> 'UNKNOWN'"
        ), {"no_bpt": int(NebulaFlag.NO_BPT)}).all()  # fmt: skip
    engine.dispose()
    assert {(sv, c) for sv, c, _ in contexts if sv == "sami-dr3"} == {("sami-dr3", "galaxy")}
    # A SAMI bin is one input (its red arm, with Halpha) classified on both arms' lines: the
    # BPT diagrams are used, not the red-only fallback; only the faint bins whose blue-arm
    # Hbeta/[O III] fits fail (2 of 39 in tests/data/nebula/sami_209807_bins.ecsv) lack them.
    assert len(sami_bpt) == 39 and sum(r[3] != 0 for r in sami_bpt) <= 2, [r for r in sami_bpt if r[3]]
    assert "nebula classes (catalog.nebula_class) per survey, method and context" in first.stdout
    assert second > 0 and models == 91
    assert fitted == 91  # MaNGA index 5 is unfittable by design: a flagged row, no numbers
    # The cube's galaxy: a rotation curve of gas and of stars, and metallicity gradients, shown and plotted.
    assert dict(rotation) == {"gas": 2, "stars": 2} and gradients > 0
    assert "SAMI galaxy 209807: rotation curve and metallicity gradient" in first.stdout
    assert (fresh_settings.home / "plots" / "209807_gas_rotation_curve.png").is_file()
    assert "release dr1 written:" in first.stdout
    release_dir = fresh_settings.releases_dir / "dr1"
    assert (release_dir / "manifest.json").is_file() and (release_dir / "lines.fits").is_file()
    with fits.open(release_dir / "lines.fits") as hdul:
        names = set(hdul[1].columns.names)
    assert {"component", "v10", "v90", "w80"} <= {n.lower() for n in names}
    assert "verified" in run(["release", "verify", "dr1"], env).stdout
    again = run(["demo"], env)
    assert "loaded 0, unchanged 7" in again.stdout
    assert f"lines v{LinesTask.version}: nothing to do" in again.stdout
    assert "release dr1 already holds the current results" in again.stdout


@pytest.mark.parametrize(
    "body, message",
    [
        ("[[survey]]\nreader = 'sdss'\n", "needs a name"),
        ("[[survey]]\nname = 'a'\nreader = 'nope'\n", "unknown reader 'nope'"),
        ("[[survey]]\nname = 'a'\n[[survey]]\nname = 'a'\n", "appears twice"),
        ("[[survey]]\nname = 'a'\nlocation = '../../elsewhere'\n", "outside the configured root"),
        ("[[survey]]\nname = 'a'\nlocaton = 'x'\n", "unknown key"),
        ("survey = [\n", "not valid TOML"),
        ("surveys = []\n", "unknown top-level key"),
    ],
)
def test_bad_configuration_is_explained(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, body))


def test_missing_configuration_names_the_file(tmp_path, fresh_settings):
    env = cli_env(fresh_settings) | {"SKYLEDGER_CONFIG": str(tmp_path / "absent.toml")}
    proc = run(["ingest"], env, check=False)
    assert proc.returncode == 1
    assert f"no survey configuration at {tmp_path / 'absent.toml'}" in proc.stderr


def test_exit_codes_tell_scripts_what_happened(fresh_settings, survey_root, tmp_path):
    env = cli_env(fresh_settings)
    missing = run(["ingest", str(survey_root / "sdss"), str(tmp_path / "nope.fits")], env, check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr  # a usage error: nothing ingested
    assert "loaded" not in missing.stdout
    good = run(["ingest", str(survey_root / "sdss")], env, check=False)
    assert good.returncode == 0 and "loaded 2" in good.stdout
    again = run(["ingest", str(survey_root / "sdss")], env, check=False)
    assert again.returncode == 0 and "unchanged 2" in again.stdout
    (tmp_path / "empty.fits").write_bytes(b"")
    bad = run(["ingest", str(tmp_path / "empty.fits"), str(survey_root / "sdss")], env, check=False)
    assert bad.returncode == 3 and "rejected 1" in bad.stdout and "the file is empty" in bad.stdout
    # The same content under another survey is a duplicate (exit 0), unless allowed.
    other = run(["ingest", str(survey_root / "sdss"), "--survey", "sdss-copy", "--reader", "sdss"], env, check=False)
    assert other.returncode == 0 and "duplicate 2" in other.stdout
    allowed = run(["ingest", str(survey_root / "sdss"), "--survey", "sdss-copy", "--reader", "sdss",
                   "--allow-duplicate-content"], env, check=False)  # fmt: skip
    assert allowed.returncode == 0 and "loaded 2" in allowed.stdout
