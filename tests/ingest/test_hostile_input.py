"""The loader against hostile and changing input: gzip bombs, spectra without data, files
that change while they are read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.loader import SPECTRUM_FLAGS, Loader
from skyledger.ingest.readers import get_reader
from skyledger.ingest.sample_data import sample_data_dir
from tests.conftest import cli_env
from tests.ingest.broken import MANGA, NGC3073
from tests.ingest.test_loader import counts


# --------------------------------------------------------------------------- hostile and changing input

BOMB_SCRIPT = """
import resource, sys
from skyledger.ingest.prepare import Job, locate

before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepared = locate(Job(sys.argv[1], None), None)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, prepared.reason, sep="|")
"""


def test_a_gzip_bomb_is_rejected_in_bounded_memory_and_the_batch_goes_on(fresh_database, fresh_settings, tmp_path):
    from tests.ingest.broken import gzip_bomb

    bomb = gzip_bomb(tmp_path)  # 3.4 MB that inflate to 2.7 GiB
    assert bomb.stat().st_size < 5e6
    good = Path(shutil.copy(NGC3073, tmp_path / "good.fits"))
    summary = ingest_paths(fresh_database, [bomb, good])
    assert [o.status for o in summary.outcomes] == ["rejected", "loaded"]
    assert "gzip bomb" in summary.outcomes[0].reason and "SKYLEDGER_MAX_INFLATE_RATIO" in summary.outcomes[0].reason
    assert counts(fresh_database)["spectrum"] == 1
    # Coarse, from a fresh process: the check holds one 1 MiB chunk of output at a time,
    # whatever the file inflates to (2.7 GiB whole, 340 MB before the default limit stops it).
    proc = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(bomb)], env=cli_env(fresh_settings),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    grown_kib, reason = proc.stdout.strip().split("|")
    assert "gzip bomb" in reason
    assert int(grown_kib) < 64 * 1024, f"peak RSS grew by {grown_kib} KiB while checking the bomb"


def test_the_inflate_limit_is_a_setting(fresh_database, tmp_path):
    from skyledger.ingest.inflate import InputLimits

    manga = Path(shutil.copy(MANGA, tmp_path / MANGA.name))
    tight = InputLimits(max_inflate_ratio=1.2, max_inflated_bytes=1 << 30, free_inflated_bytes=0)
    refused = ingest_paths(fresh_database, [manga], limits=tight)
    assert refused.outcomes[0].status == "rejected" and "inflates to more than" in refused.outcomes[0].reason
    # The bundled file inflates 1.5 times: the default limits load it.
    assert ingest_paths(fresh_database, [Path(shutil.copy(MANGA, tmp_path / "again.fits.gz"))]).outcomes[0].status == "loaded"


def test_a_spectrum_without_any_inverse_variance_is_flagged(fresh_database, tmp_path):
    from tests.ingest.broken import modified_copy

    def blank(h):
        h["COADD"].data["ivar"][:] = 0.0

    path = modified_copy(NGC3073, tmp_path / "no-ivar.fits", blank)
    good = Path(shutil.copy(sample_data_dir() / "NGC3522_SDSS_DR18.fits", tmp_path / "good.fits"))
    summary = ingest_paths(fresh_database, [path, good], read_workers=0)
    assert [o.status for o in summary.outcomes] == ["loaded", "loaded"]
    with fresh_database.engine.connect() as conn:
        flags = dict(conn.execute(text("SELECT f.uri, s.flags FROM spectrum s JOIN ingest_file f ON f.id = s.ingest_file_id")).all())
        name = conn.execute(text("SELECT name FROM flag_definition WHERE table_name = 'spectrum' AND bit = 4")).scalar_one()
    assert name == "ZERO_IVAR" and SPECTRUM_FLAGS["ZERO_IVAR"] == 1 << 4
    assert flags[str(path.resolve())] & SPECTRUM_FLAGS["ZERO_IVAR"]
    assert not flags[str(good.resolve())] & SPECTRUM_FLAGS["ZERO_IVAR"]


def _swap_before_reading(monkeypatch, path: Path, replacement: bytes, *, atomic: bool) -> None:
    """Fault injection: the file is rewritten after its checksum, before the reader parses it."""
    from skyledger.ingest import store

    real = store.read_contents

    def swap_then_read(prepared, reader):
        if atomic:  # a new file renamed over the old one (same size, new inode)
            fresh = path.with_name(path.name + ".tmp")
            fresh.write_bytes(replacement)
            os.replace(fresh, path)
        else:  # rewritten in place
            path.write_bytes(replacement)
        return real(prepared, reader)

    monkeypatch.setattr(store, "read_contents", swap_then_read)


@pytest.mark.parametrize("atomic", [False, True], ids=["in-place-other-size", "renamed-same-size"])
def test_a_file_that_changes_while_it_is_read_is_never_stored_under_another_checksum(
    fresh_database, tmp_path, monkeypatch, atomic
):
    import hashlib

    from tests.ingest.broken import LEGAC, modified_copy

    def double(h):
        h[1].data["FLUX"] *= 2

    version_b = modified_copy(LEGAC, tmp_path / "b.fits", double).read_bytes()
    if not atomic:
        version_b += b"\0" * 2880  # another size: a file being rewritten rarely keeps it
    path = Path(shutil.copy(LEGAC, tmp_path / "spectrum.fits"))
    _swap_before_reading(monkeypatch, path, version_b, atomic=atomic)
    outcome = ingest_paths(fresh_database, [path], read_workers=0).outcomes[0]
    assert outcome.status == "rejected" and "changed while it was being read" in outcome.reason
    assert counts(fresh_database)["spectrum"] == 0
    with fresh_database.engine.connect() as conn:
        assert conn.execute(text("SELECT sha256 FROM ingest_file")).scalar_one() is None  # not tied to any content
    monkeypatch.undo()
    again = ingest_paths(fresh_database, [path], read_workers=0).outcomes[0]
    assert again.status == "loaded"  # the rejection did not stick to the content
    with fresh_database.engine.connect() as conn:
        sha, flux = conn.execute(
            text("SELECT f.sha256, s.flux FROM ingest_file f JOIN spectrum s ON s.ingest_file_id = f.id")
        ).one()
    assert sha == hashlib.sha256(version_b).hexdigest()
    expected = next(get_reader("eso_phase3").read(path, {}).spectra)
    np.testing.assert_array_equal(np.asarray(flux, np.float32), expected.flux)


def test_a_file_that_changes_after_a_worker_read_it_is_rejected(fresh_database, tmp_path):
    """Read-ahead: the worker read the file; it changes before its group commits."""
    from skyledger.ingest.prepare import Job, prepare
    from skyledger.ingest.store_groups import groupable
    from skyledger.testing.sdss_files import write_sdss_spectra

    files = write_sdss_spectra(tmp_path / "sdss", 3, seed=31, n_pix=300)
    members = [groupable(prepare(Job(str(p), None, "sdss"), None, ship_limit=1 << 20), "sdss", i, 0.0)
               for i, p in enumerate(files)]  # fmt: skip
    with open(files[1], "ab") as fh:
        fh.write(b"\0" * 2880)
    with Loader(fresh_database) as loader:
        outcomes = loader.store_group(members)
    assert [o.status for o in outcomes] == ["loaded", "rejected", "loaded"]
    assert "changed while it was being read" in outcomes[1].reason
