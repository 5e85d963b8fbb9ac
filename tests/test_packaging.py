"""A non-editable install from a built wheel carries everything skyledger needs at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import cli_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("skyledger-*.whl")
    return found


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "skyledger/schema/models.py",
        "skyledger/migrations/env.py",
        "skyledger/migrations/script.py.mako",
        "skyledger/migrations/versions/0001_foundation.py",
        "skyledger/migrations/versions/0002_ingest.py",
        "skyledger/api/cli.py",
        "skyledger/ingest/records.py",
        "skyledger/ingest/sample_data/NGC3073_SDSS_DR18.fits",
        "skyledger/ingest/sample_data/README.md",
        # weights, templates and atomic data ship with the package: nothing downloads at run time
        "skyledger/compute/templates/mileshc/MILESHC_00.fits",
        "skyledger/compute/templates/emiles/emiles_ssp.npz",
        "skyledger/compute/templates/emiles/README.md",
        "skyledger/compute/models/nebula_nn.pt",
        "skyledger/compute/abundances/data/atomic_data.json",
        # the template-mismatch spectra's SSPs (skyledger.testing.mismatch_spectra)
        "skyledger/testing/data/mastar_ssp_subset.fits",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    # Every package of the source tree is in the wheel (a new subpackage must be listed in
    # pyproject.toml; an editable install would not notice the omission).
    for top in ("schema", "migrations", "ingest", "compute", "api", "testing"):
        for init in (REPO / top).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                installed = "skyledger/" + init.relative_to(REPO).as_posix()
                assert installed in names, f"{init.parent.relative_to(REPO)} is not listed in pyproject packages"
    # The brief's folders install under skyledger.*, never as bare top-level packages.
    assert not any(n.split("/")[0] in {"schema", "api", "ingest", "compute", "migrations", "tests"} for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "skyledger = skyledger.api.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_against_a_database(wheel, tmp_path, settings):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = cli_env(settings) | {"PYTHONPATH": str(target)}
    code = (
        "import skyledger.schema, skyledger.migrations, sys; "
        f"assert skyledger.schema.__file__.startswith({str(target)!r}), skyledger.schema.__file__; "
        "from skyledger.api.cli import main; sys.argv = ['skyledger', 'db', 'status']; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
