"""The loader against a real PostgreSQL: real files in, bad files out with nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.loader import LINE_FLAGS, SOURCE_FLAGS, SPECTRUM_FLAGS, Loader
from skyledger.ingest.readers import get_reader
from skyledger.ingest.sample_data import sample_data_dir
from tests.conftest import cli_env
from tests.ingest.broken import BROKEN, FORCED_READER, MANGA, NGC3073

SAMPLE_FILES = sorted(p for p in sample_data_dir().iterdir() if ".fits" in p.name)
TABLES = ("source", "spectrum", "line_measurement", "run")


def counts(db) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def copy_samples(dst: Path) -> list[Path]:
    dst.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, dst / p.name)) for p in SAMPLE_FILES]


def test_real_files_load_and_read_back(fresh_database, tmp_path):
    files = copy_samples(tmp_path / "data")
    summary = ingest_paths(fresh_database, files)
    assert [o.status for o in summary.outcomes] == ["loaded"] * len(files), [o.reason for o in summary.outcomes]
    assert summary.n_spectra == 8 + 3 + 1 + 1 + 1 + 2 * 39  # SAMI: 39 bins, two arms
    with fresh_database.engine.connect() as conn:
        rows = conn.execute(text("SELECT survey, count(*) FROM catalog.spectra GROUP BY 1 ORDER BY 1")).all()
        assert rows == [("eso_phase3", 1), ("manga_rss", 11), ("sami_cube", 78), ("sdss", 2)]
        # Pixels survive the binary COPY bit for bit.
        flux, ivar, mask, wave, res = conn.execute(
            text(
                "SELECT s.flux, s.ivar, s.mask, g.wave, s.resolution FROM spectrum s "
                "JOIN wavelength_grid g ON g.id = s.wave_grid_id WHERE s.object_id = '0945-52652-0470'"
            )
        ).one()
    (expected,) = list(get_reader("sdss").read(NGC3073, {}).spectra)
    np.testing.assert_array_equal(np.asarray(flux, np.float32), expected.flux)
    np.testing.assert_array_equal(np.asarray(ivar, np.float32), expected.ivar)
    np.testing.assert_array_equal(np.asarray(mask), expected.mask)
    np.testing.assert_array_equal(np.asarray(wave), expected.wave)
    np.testing.assert_array_equal(np.asarray(res, np.float32), expected.resolution)
    with fresh_database.engine.connect() as conn:
        manga = conn.execute(
            text("SELECT count(DISTINCT wave_grid_id), bool_and(ra IS NULL), bit_and(flags) FROM spectrum "
                 "WHERE object_id LIKE 'MaNGA_test_spectra#%'")
        ).one()
    assert manga[0] == 1  # eight spectra, one shared wavelength grid
    assert manga[1] and manga[2] & SPECTRUM_FLAGS["NO_POSITION"]


def test_reingest_is_a_no_op(fresh_database, tmp_path):
    files = copy_samples(tmp_path / "data")
    ingest_paths(fresh_database, files)
    before = counts(fresh_database)
    with fresh_database.engine.connect() as conn:
        n_files = conn.execute(text("SELECT count(*) FROM ingest_file")).scalar_one()
    again = ingest_paths(fresh_database, files)
    assert {o.status for o in again.outcomes} == {"unchanged"}
    assert counts(fresh_database) == before
    with fresh_database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ingest_file")).scalar_one() == n_files


def test_same_content_under_another_name_is_a_duplicate(fresh_database, tmp_path):
    (a,) = copy_samples(tmp_path / "a")[-1:]
    b = tmp_path / "b" / "renamed.fits"
    b.parent.mkdir()
    shutil.copy(a, b)
    first = ingest_paths(fresh_database, [a])
    before = counts(fresh_database)
    second = ingest_paths(fresh_database, [b], reader=first.outcomes[0].reader)
    assert second.outcomes[0].status == "duplicate"
    assert "same content as ingest_file" in second.outcomes[0].reason
    assert counts(fresh_database) == before


def write_catalog(path: Path, ha: float) -> Path:
    path.write_text(
        "# %ECSV 1.0\n# ---\n# datatype:\n# - {name: id, datatype: string}\n# - {name: ra, datatype: float64}\n"
        "# - {name: dec, datatype: float64}\n# - {name: HA6563_FLUX, datatype: float64}\n"
        "# - {name: HA6563_FLUX_ERR, datatype: float64}\n# - {name: HB4861_FLUX, datatype: float64}\n"
        "# - {name: HB4861_FLUX_ERR, datatype: float64}\n"
        "id ra dec HA6563_FLUX HA6563_FLUX_ERR HB4861_FLUX HB4861_FLUX_ERR\n"
        f"reg1 10.0 -5.0 {ha} 2.0 100.0 2.0\nreg2 10.01 -5.0 250.0 3.0 90.0 2.0\n"
    )
    return path


def test_changed_file_is_a_new_version_and_old_rows_stay(fresh_database, tmp_path):
    cat = write_catalog(tmp_path / "regions.ecsv", ha=300.0)
    spec = SurveySpec(name="regions", reader="line_catalog", options={"dust_corrected": True})
    first = ingest_paths(fresh_database, [cat], survey=spec)
    assert first.outcomes[0].status == "loaded" and first.outcomes[0].n_lines == 4
    write_catalog(cat, ha=310.0)
    second = ingest_paths(fresh_database, [cat], survey=spec)
    assert second.outcomes[0].status == "loaded"
    with fresh_database.engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM ingest_file WHERE status = 'loaded' ORDER BY id")).scalars().all()
        assert versions == [1, 2]
        assert conn.execute(text("SELECT count(*) FROM spectrum")).scalar_one() == 4  # both versions kept
        listed = conn.execute(text("SELECT DISTINCT file_version FROM catalog.spectra")).scalars().all()
        assert listed == [2]  # the catalogue shows the newest version
        fluxes = conn.execute(
            text(
                "SELECT f.version, m.flux, m.flags, r.task, r.status FROM line_measurement m "
                "JOIN spectrum s ON s.id = m.spectrum_id JOIN ingest_file f ON f.id = s.ingest_file_id "
                "JOIN run r ON r.id = m.run_id WHERE m.line = 'HA6563' AND s.object_id = 'reg1' ORDER BY 1"
            )
        ).all()
        assert [(v, f) for v, f, *_ in fluxes] == [(1, 300.0), (2, 310.0)]
        expected_flags = LINE_FLAGS["DUST_CORRECTED"] | LINE_FLAGS["FROM_CATALOGUE"]
        assert all(task == "ingested" and status == "succeeded" and flags == expected_flags for _, _, flags, task, status in fluxes)
        in_current = conn.execute(
            text("SELECT count(*) FROM collection_run cr JOIN collection c ON c.id = cr.collection_id WHERE c.name = 'current'")
        ).scalar_one()
        assert in_current == 2


@pytest.mark.parametrize("damage", sorted(BROKEN))
def test_bad_file_is_rejected_with_nothing_written_and_the_batch_goes_on(fresh_database, tmp_path, damage):
    bad, fragment = BROKEN[damage](tmp_path)
    good = Path(shutil.copy(NGC3073, tmp_path / "good.fits"))
    reader = FORCED_READER.get(damage)
    survey = SurveySpec(name="test", reader=reader) if reader else None
    summary = ingest_paths(fresh_database, [bad], survey=survey)
    (outcome,) = summary.outcomes
    assert outcome.status == "rejected"
    assert fragment.lower() in outcome.reason.lower(), outcome.reason
    assert str(bad) not in outcome.reason  # the path is recorded apart, not repeated
    assert counts(fresh_database) == dict.fromkeys(TABLES, 0)
    with fresh_database.engine.connect() as conn:
        status, reason, uri = conn.execute(text("SELECT status, reason, uri FROM ingest_file")).one()
    assert (status, reason, uri) == ("rejected", outcome.reason, str(bad.resolve()))
    # The next file of the batch is not affected.
    after = ingest_paths(fresh_database, [good])
    assert after.outcomes[0].status == "loaded"
    assert counts(fresh_database)["spectrum"] == 1


def test_unchanged_rejected_file_is_not_recorded_again(fresh_database, tmp_path):
    bad, _ = BROKEN["truncated"](tmp_path)
    ingest_paths(fresh_database, [bad])
    again = ingest_paths(fresh_database, [bad])
    assert again.outcomes[0].status == "rejected" and "unchanged since" in again.outcomes[0].reason
    with fresh_database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ingest_file")).scalar_one() == 1


def test_location_outside_the_root_is_rejected(fresh_database, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = Path(shutil.copy(NGC3073, tmp_path / "outside.fits"))
    link = root / "sneaky.fits"
    link.symlink_to(outside)  # a symlink does not make a file part of the root
    summary = ingest_paths(fresh_database, [link], root=root)
    assert summary.outcomes[0].status == "rejected"
    assert "outside the configured root" in summary.outcomes[0].reason
    assert counts(fresh_database)["spectrum"] == 0


UNREADABLE_SCRIPT = """
import os, sys
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.loader import Loader
from skyledger.schema.database import connect
from skyledger.schema.settings import Settings

db = connect(Settings())
with Loader(db) as loader:
    first = loader.ingest(sys.argv[1], SurveySpec(name="s"))
    if os.geteuid() == 0:
        # root reads every file: become an ordinary user, keeping the open connections.
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    second = loader.ingest(sys.argv[2], SurveySpec(name="s"))
print(first.status, second.status, second.reason, sep="|")
"""


def test_unreadable_file_is_rejected(fresh_database, fresh_settings):
    data = Path(tempfile.mkdtemp(prefix="skyledger-perm-"))  # traversable by an ordinary user
    try:
        data.chmod(0o755)
        readable = Path(shutil.copy(NGC3073, data / "readable.fits"))
        locked = Path(shutil.copy(MANGA, data / "locked.fits.gz"))
        locked.chmod(0)
        proc = subprocess.run(
            [sys.executable, "-c", UNREADABLE_SCRIPT, str(readable), str(locked)],
            env=cli_env(fresh_settings), capture_output=True, text=True, timeout=300,
        )
    finally:
        shutil.rmtree(data)
    assert proc.returncode == 0, proc.stderr
    first, second, reason = proc.stdout.strip().split("|")
    assert (first, second) == ("loaded", "rejected")
    assert "permission denied" in reason
    with fresh_database.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM spectrum")).scalar_one() == 1


def test_mid_stream_failure_rolls_back_rows_already_copied(fresh_database, tmp_path):
    """The last spectrum of a MaNGA file is bad: the seven before it were already streamed."""
    bad, _ = BROKEN["negative_ivar"](tmp_path)
    with Loader(fresh_database) as loader:
        outcome = loader.ingest(bad, SurveySpec(name="manga", reader="manga_rss"))
    assert outcome.status == "rejected"
    assert counts(fresh_database) == dict.fromkeys(TABLES, 0)


def test_flags_record_air_wavelengths_and_configured_positions(fresh_database, tmp_path):
    files = copy_samples(tmp_path / "data")
    legac = next(f for f in files if f.name.startswith("legac"))
    manga = next(f for f in files if f.name == MANGA.name)
    ingest_paths(fresh_database, [legac])
    ingest_paths(fresh_database, [manga], survey=SurveySpec(name="manga", reader="manga_rss", options={"ra": 10.5, "dec": -3.25}))
    with fresh_database.engine.connect() as conn:
        legac_flags = conn.execute(text("SELECT flags FROM spectrum WHERE object_id = 'M19_56670'")).scalar_one()
        manga_rows = conn.execute(
            text("SELECT s.flags, s.ra, src.flags FROM spectrum s JOIN source src ON src.id = s.source_id "
                 "WHERE s.object_id LIKE 'MaNGA_test_spectra#%'")
        ).all()
    assert legac_flags & SPECTRUM_FLAGS["AIR_TO_VACUUM"]
    assert not legac_flags & SPECTRUM_FLAGS["NO_POSITION"]
    assert len(manga_rows) == 8
    for flags, ra, source_flags in manga_rows:
        assert ra == 10.5
        assert flags & SPECTRUM_FLAGS["POSITION_FROM_CONFIG"] and not flags & SPECTRUM_FLAGS["NO_POSITION"]
        assert not flags & SPECTRUM_FLAGS["AIR_TO_VACUUM"]
        assert source_flags & SOURCE_FLAGS["POSITION_FROM_CONFIG"]


def test_the_same_content_under_another_survey_is_a_duplicate_unless_allowed(fresh_database, tmp_path):
    from skyledger.testing.sdss_files import write_sdss_spectra

    files = write_sdss_spectra(tmp_path / "sdss", 4, seed=33, n_pix=300)
    first = ingest_paths(fresh_database, files, survey=SurveySpec(name="sdss-a", reader="sdss"))
    assert first.counts == {"loaded": 4}
    copies = [Path(shutil.copy(f, tmp_path / f"copy-{f.name}")) for f in files]
    for read_workers, batch in ((0, files[:2] + copies[:2]), (1, files[2:] + copies[2:])):  # inline and grouped
        again = ingest_paths(fresh_database, batch, survey=SurveySpec(name="sdss-b", reader="sdss"),
                             read_workers=read_workers)  # fmt: skip
        assert again.counts == {"duplicate": 4}, [o.reason for o in again.outcomes]
        assert all("in survey 'sdss-a'" in o.reason for o in again.outcomes)
    assert counts(fresh_database)["spectrum"] == 4  # one copy of each content
    allowed = ingest_paths(fresh_database, files, survey=SurveySpec(name="sdss-c", reader="sdss"),
                           allow_duplicate_content=True, read_workers=1)  # fmt: skip
    assert allowed.counts == {"loaded": 4}
    assert counts(fresh_database)["spectrum"] == 8
    # Within one survey the content is still stored once, allowed or not.
    within = ingest_paths(fresh_database, copies, survey=SurveySpec(name="sdss-c", reader="sdss"),
                          allow_duplicate_content=True)  # fmt: skip
    assert within.counts == {"duplicate": 4}
