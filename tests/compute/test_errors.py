"""The compute errors (`skyledger.compute.errors`): each raised by a real call with bad
input, and shown by the command line as one clean line with exit code 1."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from astropy.io import fits
from sqlalchemy import text

from skyledger.compute.abundances.atomic import doublet_ratio, load_ion
from skyledger.compute.abundances.core import derive_abundances
from skyledger.compute.abundances.dust import extinction_k
from skyledger.compute.abundances.strong import strong_line
from skyledger.compute.errors import ComputeError, ComputeInputError, ModelFileError, RunStateError
from skyledger.compute.fitting import FitConfig, SpectraBatch, TemplateLibrary
from skyledger.compute.fitting.prepare import prepare_batch
from skyledger.compute.kinematics import rotation_curve
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema import runs
from skyledger.schema.errors import SkyledgerError
from tests.conftest import cli_env

CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]
F64 = torch.float64


def test_every_compute_error_is_a_skyledger_error():
    # The command line turns a SkyledgerError into "error: ..." and exit code 1.
    for cls in (ComputeInputError, ModelFileError):
        assert issubclass(cls, ComputeError) and issubclass(cls, SkyledgerError)
    assert issubclass(RunStateError, SkyledgerError)  # the run service's error, in schema (ingest records runs too)
    assert issubclass(ComputeInputError, ValueError)  # callers that caught ValueError still do


def _spectra(wave: np.ndarray, n_redshifts: int = 1) -> SpectraBatch:
    n = wave.size
    return SpectraBatch(wave=wave[None], flux=np.ones((1, n)), ivar=np.ones((1, n)), redshift=np.zeros(n_redshifts))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rotation_curve(torch.ones(3, dtype=F64), torch.tensor(1.0), torch.tensor(1.0), "flat"),
         "unknown rotation-curve model 'flat'; use arctan or freeman"),
        (lambda: strong_line("no-such-method", {}), "unknown method 'no-such-method'; known: direct, "),
        (lambda: extinction_k("no-such-curve", 3.1, ("HA6563",), torch.device("cpu"), F64),
         "unknown extinction curve 'no-such-curve'; choose one of "),
        (lambda: doublet_ratio("OIII5007", "NII6584"), "do not share an upper level; a doublet ratio needs"),
        (lambda: load_ion("O3").line_power("NII6584", torch.zeros(1, 6, dtype=F64)), "it is a line of N2: use load_ion('N2')"),
        (lambda: derive_abundances(torch.ones(2, 3), torch.ones(2, 3), torch.zeros(2, dtype=torch.bool)),
         "fluxes and errors must both be [n_objects, "),
        (lambda: prepare_batch(_spectra(np.array([4000.0, 4001.0, 4001.0, 4002.0, 4003.0])), FitConfig()),
         "spectrum 0 of the batch: wavelengths must increase strictly; sort its pixels"),
        (lambda: prepare_batch(_spectra(np.linspace(4000.0, 5000.0, 50), n_redshifts=2), FitConfig()),
         "redshift must have one value per spectrum (1), got 2"),
    ],
    ids=["rotation-model", "strong-line-method", "extinction-curve", "doublet", "line-of-other-ion", "abundance-shapes",
         "wavelengths", "redshifts"],
)
def test_bad_input_raises_compute_input_error(call, message):
    with pytest.raises(ComputeInputError) as info:
        call()
    assert message in str(info.value)


def _template(path, crval: float) -> None:
    hdu = fits.PrimaryHDU(np.ones(100))
    hdu.header["CRVAL1"], hdu.header["CDELT1"] = crval, 1.0
    hdu.writeto(path)


def test_unusable_template_files_raise_model_file_error(tmp_path):
    with pytest.raises(ModelFileError, match="no template files given: pass 1-D FITS templates"):
        TemplateLibrary.from_fits([], fwhm=2.5)
    _template(tmp_path / "a.fits", 4000.0)
    _template(tmp_path / "b.fits", 4010.0)
    with pytest.raises(ModelFileError, match="b.fits has a different wavelength grid .* share one CRVAL1/CDELT1 grid"):
        TemplateLibrary.from_fits([tmp_path / "a.fits", tmp_path / "b.fits"], fwhm=2.5)


def test_finishing_a_run_that_is_no_longer_running_raises_run_state_error(session):
    info = runs.start_run(session, task="lines", version=1, params={"errors": True}, model_sha256={}, upstream_run_ids=[],
                          device="cpu", prefect_flow_run_id=None)  # fmt: skip
    runs.fail_run(session, info.id, "abandoned: no heartbeat")  # as reap_abandoned_runs does
    with pytest.raises(RunStateError, match=f"run {info.id} is no longer running .* run `skyledger process` again"):
        runs.finish_run(session, info.id)


def test_cli_shows_a_compute_error_as_one_line_and_exits_1(fresh_settings, fresh_database, tmp_path):
    """A wavelength grid changed in the database after loading reaches the `lines` fit,
    which refuses it: `skyledger process` prints the message, no traceback, exit 1."""
    files = [shutil.copy(p, tmp_path / p.name) for p in sorted(sample_data_dir().glob("*_SDSS_DR18.fits"))]
    assert {o.status for o in ingest_paths(fresh_database, files).outcomes} == {"loaded"}
    with fresh_database.engine.begin() as conn:
        conn.execute(text("UPDATE wavelength_grid SET wave[100] = wave[99]"))
    done = subprocess.run([*CLI, "process", "--task", "lines"], env=cli_env(fresh_settings), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: spectrum ") and "wavelengths must increase strictly; sort its pixels" in last
    with fresh_database.engine.connect() as conn:
        status, error = conn.execute(text("SELECT status, error FROM run WHERE task = 'lines'")).one()
    assert status == "failed" and "ComputeInputError: spectrum " in error
