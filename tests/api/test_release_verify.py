"""Release verification: row digests, owner bypasses of the read-only triggers, damaged files."""

from __future__ import annotations

import json
import shutil
import warnings

import psycopg
import pytest
from astropy.io import fits
from sqlalchemy import text

from skyledger.api.releases import verify_release
from skyledger.api.releases.digest import table_digest
from skyledger.api.releases.tables import release_tables
from skyledger.schema.database import psycopg_connection
from tests.api.test_release import _release, _rows, catalog_db, skyledger  # noqa: F401  (catalog_db: fixture)
from tests.conftest import cli_env


# --------------------------------------------------------------------------- row digests


def _as_superuser(server, db, *statements):
    """Run ``statements`` in one transaction as the server's superuser (the embedded
    server's owner is one): the role that can bypass the read-only triggers."""
    conninfo = psycopg.conninfo.make_conninfo(server.admin_conninfo, dbname=db.engine.url.database)
    with psycopg.connect(conninfo) as conn:
        for statement in statements:
            conn.execute(statement)


def test_digests_are_recorded_in_the_database_and_manifest_and_do_not_depend_on_physical_order(catalog_db, tmp_path):
    summary = _release(catalog_db, tmp_path)
    recorded = dict((t, (n, h)) for t, n, h in _rows(
        catalog_db, "SELECT table_name, n_rows, sha256 FROM release_table ORDER BY table_name"))
    assert set(recorded) == {t.name for t in release_tables()} | {"runs", "flag_definition"}
    assert recorded["lines"][0] == 7 and recorded["runs"][0] == 6
    manifest = json.loads((summary.out_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert {t: (e["rows"], e["sha256"]) for t, e in manifest["sql_tables"].items()} == recorded
    # The same rows written in another physical order (and with other output settings) give the same digest.
    with catalog_db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE public.shuffled AS SELECT * FROM dr1.lines ORDER BY random()"))
        conn.execute(text("SET LOCAL extra_float_digits = 3; SET LOCAL TimeZone = 'Pacific/Chatham'"))
        pg = psycopg_connection(conn)
        again = table_digest(pg, "public", "shuffled", ("spectrum_id", "source_task", "line"))
        runs_again = table_digest(pg, "dr1", "runs", ("run_id",))
        assert pg.execute("SHOW TimeZone").fetchone()[0] == "Pacific/Chatham"  # restored after the digest
    assert (again.n_rows, again.sha256) == recorded["lines"]
    assert (runs_again.n_rows, runs_again.sha256) == recorded["runs"]


def test_owner_bypasses_of_the_read_only_triggers_are_caught_by_verify(catalog_db, fresh_settings, server, tmp_path):
    _release(catalog_db, tmp_path)
    spec = catalog_db.spectra
    _as_superuser(server, catalog_db,
                  # The example: replica mode skips the triggers.
                  "SET LOCAL session_replication_role = replica",
                  "UPDATE dr1.lines SET flux = flux * 2",
                  f"INSERT INTO dr1.nebula_class (spectrum_id, method, class) VALUES ({spec[1]}, 'diagnostic', 'PN')",
                  "SET LOCAL session_replication_role = origin")
    _as_superuser(server, catalog_db,
                  # A trigger disabled and left so; a trigger disabled, bypassed and re-enabled (same row count).
                  "ALTER TABLE dr1.abundances DISABLE TRIGGER release_read_only",
                  "DELETE FROM dr1.abundances WHERE method = 'direct'",
                  "ALTER TABLE dr1.spectra DISABLE TRIGGER release_read_only",
                  f"UPDATE dr1.spectra SET object_id = 'renamed' WHERE spectrum_id = {spec[0]}",
                  "ALTER TABLE dr1.spectra ENABLE TRIGGER release_read_only",
                  "DROP TABLE dr1.rotation",
                  "CREATE TABLE dr1.smuggled (x int)",
                  # A table swapped for a view that fails: reported, and the other tables still checked.
                  "DROP TABLE dr1.runs",
                  "CREATE VIEW dr1.runs AS SELECT 1 / 0 AS run_id")
    with catalog_db.session() as s:
        report = verify_release(s, "dr1")
    assert not report.ok
    problems = "\n".join(report.problems)
    assert "schema dr1: table lines: its rows changed since the release" in problems
    assert "schema dr1: table nebula_class has 2 rows, 1 when released (rows were added)" in problems
    assert "schema dr1: table abundances has 1 rows, 2 when released (rows were deleted)" in problems
    assert "schema dr1: table abundances: its read-only trigger is disabled" in problems
    assert "schema dr1: table spectra: its rows changed since the release" in problems
    assert "schema dr1: table rotation is missing (dropped)" in problems
    assert "schema dr1: smuggled is not part of the release" in problems
    assert "schema dr1: table runs has lost its read-only trigger" in problems
    assert "schema dr1: table runs cannot be read: DivisionByZero" in problems
    assert len(report.problems) == 9, report.problems  # the untouched tables are intact
    proc = skyledger("release", "verify", "dr1", env=cli_env(fresh_settings), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    for table in ("lines", "nebula_class", "abundances", "spectra", "rotation"):
        assert f"table {table}" in proc.stderr, (table, proc.stderr)


def test_a_dropped_release_schema_is_caught_by_verify(catalog_db, fresh_settings, server, tmp_path):
    _release(catalog_db, tmp_path)
    _as_superuser(server, catalog_db, "DROP SCHEMA dr1 CASCADE")
    proc = skyledger("release", "verify", "dr1", env=cli_env(fresh_settings), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "schema dr1 is missing (dropped): tables abundances, flag_definition, lines" in proc.stderr


def test_a_release_made_before_digests_still_verifies_with_a_note(catalog_db, fresh_settings, tmp_path):
    _release(catalog_db, tmp_path)
    with catalog_db.session() as s:  # what a release made before migration 0012 looks like
        s.execute(text("DELETE FROM release_table"))
    with catalog_db.session() as s:
        report = verify_release(s, "dr1")
    assert report.ok and report.tables_checked == 0
    assert report.notes == ["schema dr1: no row digest recorded (release made before skyledger recorded them, "
                            "database schema revision 0012); only its row counts were checked"]
    proc = skyledger("release", "verify", "dr1", env=cli_env(fresh_settings), check=False)
    assert proc.returncode == 0 and "no row digest recorded" in proc.stderr and "intact" in proc.stdout


# --------------------------------------------------------------------------- damaged files


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20 if chr(data[offset]).isalpha() else 0x01
    path.write_bytes(bytes(data))


def _header_offset(path, hdu, text_):
    """Byte offset of ``text_`` in the header of HDU ``hdu`` (FITS blocks are 2880 bytes)."""
    data = path.read_bytes()
    start = 0
    for _ in range(hdu):
        with fits.open(path) as hdul:
            start = hdul[hdu].fileinfo()["hdrLoc"]
    return data.index(text_.encode(), start)


#: damage -> (file, how, what verify must say besides the SHA-256).
DAMAGES = {
    "a flipped byte in the table header's XTENSION": (
        "lines.fits", lambda p: _flip(p, _header_offset(p, 1, "XTENSION")), "HDU 1: CHECKSUM does not verify"),
    "a flipped digit of NAXIS2": (
        "lines.fits", lambda p: _flip(p, _header_offset(p, 1, "NAXIS2  =") + 29), "6 rows, 7 when written"),
    "a flipped byte in TFORM1": (
        "lines.fits", lambda p: _flip(p, _header_offset(p, 1, "TFORM1  = '") + 11), "HDU 1: CHECKSUM does not verify"),
    "a flipped byte in the primary header's END": (
        "spectra.fits", lambda p: _flip(p, _header_offset(p, 0, "END     ")), "damaged: ValueError: no table extension"),
    "a flipped byte in the table header's END": (
        "spectra.fits", lambda p: _flip(p, p.read_bytes().index(b"END" + b" " * 77, 2880)), "damaged: "),
    "a truncated FITS file": (
        "abundances.fits", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2 + 7]), "damaged: "),
    "a FITS file cut inside its primary header": (
        "rotation.fits", lambda p: p.write_bytes(p.read_bytes()[:100]), "damaged: "),
    "garbage in a Parquet file": (
        "lines.parquet", lambda p: p.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1"), "damaged: ArrowInvalid"),
    "a Parquet file of zeros": (
        "spectra.parquet", lambda p: p.write_bytes(b"\0" * p.stat().st_size), "damaged: ArrowInvalid"),
    "an ECSV header that is not UTF-8": (
        "lines.ecsv", lambda p: p.write_bytes(p.read_bytes().replace(b"# %ECSV 1.0", b"# %\xff\xfeCSV", 1)
                                              .replace(b"\nspectrum_id,", b"\nspectrum_id\xff,", 1)),
        "damaged: UnicodeDecodeError"),
    "an ECSV file that is a directory": (
        "nebula_class.ecsv", lambda p: (p.unlink(), p.mkdir()), "not a regular file"),
    "a deleted file": (
        "metallicity_gradients.parquet", lambda p: p.unlink(), "missing"),
    "a manifest that is not JSON": (
        "manifest.json", lambda p: p.write_bytes(b'{"files": [1, 2'), "damaged: JSONDecodeError"),
    "a manifest with odd entries": (
        "manifest.json", lambda p: p.write_text('{"files": [{"path": "lines.fits"}, 7]}'), "damaged: TypeError"),
}


@pytest.fixture
def released(catalog_db, tmp_path):
    summary = _release(catalog_db, tmp_path)
    pristine = tmp_path / "pristine"
    shutil.copytree(summary.out_dir, pristine)
    return summary.out_dir, pristine


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_file_is_reported_never_raised(catalog_db, released, damage):
    out, pristine = released
    shutil.rmtree(out)
    shutil.copytree(pristine, out)
    name, how, expected = DAMAGES[damage]
    how(out / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor does astropy print warnings about it
        with catalog_db.session() as s:
            report = verify_release(s, "dr1")
    assert all(p.startswith(f"{name}: ") for p in report.problems), report.problems
    assert any(p.startswith(f"{name}: {expected}") for p in report.problems), report.problems
    if expected not in ("missing", "not a regular file"):
        assert any(p.startswith(f"{name}: SHA-256") for p in report.problems), report.problems


def test_cli_verify_lists_every_damaged_missing_and_extra_file_and_exits_1(catalog_db, fresh_settings, tmp_path):
    env = cli_env(fresh_settings)
    out = _release(catalog_db, tmp_path).out_dir
    assert skyledger("release", "verify", "dr1", "--dir", str(out), env=env).returncode == 0
    _flip(out / "lines.fits", _header_offset(out / "lines.fits", 1, "XTENSION"))
    (out / "abundances.fits").write_bytes((out / "abundances.fits").read_bytes()[:3000])
    (out / "lines.parquet").write_bytes(b"PAR1 not parquet PAR1")
    _flip(out / "spectra.ecsv", 4)
    (out / "rotation.ecsv").unlink()
    (out / "notes.txt").write_text("not released")
    proc = skyledger("release", "verify", "dr1", "--dir", str(out), env=env, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    for expected in ("lines.fits: HDU 1: CHECKSUM does not verify", "abundances.fits: damaged: ", "lines.parquet: damaged: ",
                     "spectra.ecsv: SHA-256", "rotation.ecsv: missing", "notes.txt: not part of the release"):
        assert expected in proc.stderr, (expected, proc.stderr.splitlines())


# --------------------------------------------------------------------------- one unit per column
