"""The shared reader option ``context`` (ingest/readers/base.py): every reader accepts
'galaxy' or 'nebula', rejects anything else naming the file, and the CLI then writes nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from skyledger.ingest.readers import READERS
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.errors import ReaderError
from tests.conftest import cli_env

CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]
NGC3073 = sample_data_dir() / "NGC3073_SDSS_DR18.fits"


@pytest.mark.parametrize("name", sorted(r.name for r in READERS.values()))
def test_every_reader_validates_the_context_option(name, tmp_path):
    reader = READERS[name]
    path = tmp_path / "empty.fits"
    path.write_bytes(b"")
    with pytest.raises(ReaderError) as bad:
        reader.read(path, {"context": "disc"})
    assert str(path) in str(bad.value) and "option context must be 'galaxy'" in str(bad.value)
    for good in ("galaxy", "nebula"):
        # Accepted: the reader goes on to the (empty) file and fails on that, not on the option.
        with pytest.raises(ReaderError) as later:
            reader.read(path, {"context": good})
        assert "option context" not in str(later.value)


def test_a_good_value_reads_and_is_kept_in_the_survey(fresh_settings, tmp_path):
    spectra = list(READERS["sdss"].read(NGC3073, {"context": "galaxy"}).spectra)
    assert len(spectra) == 1
    root = tmp_path / "sdss"
    root.mkdir()
    shutil.copy(NGC3073, root / NGC3073.name)
    env = cli_env(fresh_settings)

    def ingest(survey: str, value: str) -> subprocess.CompletedProcess:
        config = tmp_path / f"{survey}.toml"
        config.write_text(
            f'root = "{tmp_path}"\n[[survey]]\nname = "{survey}"\nreader = "sdss"\nlocation = "sdss"\n'
            f'options = {{ context = "{value}" }}\n'
        )
        return subprocess.run(CLI + ["ingest"], env=env | {"SKYLEDGER_CONFIG": str(config)}, capture_output=True, text=True, timeout=300)

    bad = ingest("typo", "disk")
    assert bad.returncode != 0 and "option context must be 'galaxy'" in bad.stdout + bad.stderr
    assert NGC3073.name in bad.stdout + bad.stderr
    engine = create_engine(fresh_settings.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM spectrum")).scalar_one() == 0
        good = ingest("regions", "nebula")
        assert good.returncode == 0, good.stdout + good.stderr
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT options ->> 'context' FROM survey WHERE name = 'regions'")).scalar_one()
            n = conn.execute(text("SELECT count(*) FROM spectrum")).scalar_one()
    finally:
        engine.dispose()
    assert stored == "nebula" and n == 1
