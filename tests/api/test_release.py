"""Catalogue releases on a real database: freeze, files, round trip, immutability, verify, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import astropy.units as u
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from skyledger.api.releases import ReleaseError, create_release, demo_release, list_releases, verify_release
from skyledger.api.releases.content import fits_unit
from skyledger.api.releases.fits import FitsWriter, encode_checksum
from skyledger.api.releases.tables import release_tables
from skyledger.api.releases.units import line_flux_scale
from skyledger.schema import runs
from tests.conftest import cli_env

CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]


def skyledger(*args, env, check=True):
    proc = subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"skyledger {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _run(session, task, version=1, *, collection=True):
    info = runs.start_run(session, task=task, version=version, params={"v": version}, model_sha256={},
                          upstream_run_ids=[], device="cpu", prefect_flow_run_id=None)
    if collection:
        runs.finish_run(session, info.id)
    else:
        session.execute(text("UPDATE run SET status = 'succeeded', finished_at = now() WHERE id = :i"), {"i": info.id})
    return info.id


def _lines_run(session, spectra, offset, *, collection=True, version=1):
    """A `lines` run: stellar kinematics and two lines per spectrum; values shifted by ``offset``."""
    run_id = _run(session, "lines", version, collection=collection)
    for i, sid in enumerate(spectra):
        session.execute(text(
            "INSERT INTO stellar_kinematics (run_id, spectrum_id, z, velocity, velocity_err, sigma, n_pixels, flags) "
            "VALUES (:r, :s, :z, :v, 1.5, :sig, :n, :f)"),
            {"r": run_id, "s": sid, "z": 0.01 * i, "v": None if i == 1 else 10.0 * i + offset, "sig": 80.0 + offset,
             "n": None if i == 1 else 3000 + i, "f": 3 if i == 1 else 0})
        for line, flux, limit in (("HA6563", 100.0 + i + offset, None), ("OIII5007", None if i == 2 else 1e-17 * (i + 1), 2.0)):
            session.execute(text(
                "INSERT INTO line_measurement (run_id, spectrum_id, line, z, velocity, flux, flux_err, snr, flags, flux_limit) "
                "VALUES (:r, :s, :l, 0.01, :v, :fl, 0.5, :snr, 0, :lim)"),
                {"r": run_id, "s": sid, "l": line, "v": 1.0 / 3.0 + offset, "fl": flux, "snr": 7.25, "lim": limit})
    return run_id


@pytest.fixture
def catalog_db(fresh_database):
    """Three spectra (one with NULL position and flux unit), a lines run, an ingested
    catalogue run, an abundances run and a nebula run, all in `current`."""
    with fresh_database.session() as s:
        survey = s.execute(text("INSERT INTO survey (name, reader) VALUES ('sdss-dr18', 'sdss') RETURNING id")).scalar()
        f = s.execute(text(
            "INSERT INTO ingest_file (survey_id, uri, sha256, status) VALUES (:s, '/data/spec, \"odd\".fits', :h, "
            "'loaded') RETURNING id"), {"s": survey, "h": "a" * 64}).scalar()
        spectra = []
        for i, (ra, dec, unit) in enumerate([(150.25, 2.5, "1e-17 erg / (s cm2 Angstrom)"), (None, None, None),
                                              (359.999999999, -89.5, "")]):
            src = s.execute(text(
                "INSERT INTO source (survey_id, ingest_file_id, object_id, ra, dec) VALUES (:s, :f, :o, :ra, :dec) "
                "RETURNING id"), {"s": survey, "f": f, "o": f"obj{i}", "ra": ra, "dec": dec}).scalar()
            spectra.append(s.execute(text(
                "INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, ra, dec, z, n_pix, flux_unit, flags) "
                "VALUES (:src, :s, :f, :o, :ra, :dec, :z, 0, :u, :fl) RETURNING id"),
                {"src": src, "s": survey, "f": f, "o": f"spec{i}", "ra": ra, "dec": dec, "z": None if i else 0.1,
                 "u": unit, "fl": 1 if ra is None else 0}).scalar())
        lines = _lines_run(s, spectra, 0.0)
        ingested = _run(s, "ingested")
        s.execute(text("INSERT INTO line_measurement (run_id, spectrum_id, line, flux, flags) VALUES (:r, :s, 'HB4861', 42.0, :fl)"),
                  {"r": ingested, "s": spectra[0], "fl": 1 << 17})
        ab = _run(s, "abundances")
        for method, oh in (("direct", 8.45), ("N2_PP04", None)):
            s.execute(text("INSERT INTO abundance (run_id, spectrum_id, method, oh, te_oiii, ne_sii, flags) "
                           "VALUES (:r, :s, :m, :oh, 10500.0, NULL, 0)"), {"r": ab, "s": spectra[0], "m": method, "oh": oh})
        neb = _run(s, "nebula_diagnostic")
        s.execute(text("INSERT INTO nebula_class (run_id, spectrum_id, method, class, probability, p_hii) "
                       "VALUES (:r, :s, 'diagnostic', 'HII', NULL, 0.9)"), {"r": neb, "s": spectra[0]})
        # A galaxy (the first spectrum's source): two rotation rows, one with NULL errors, and a gradient.
        galaxy = s.execute(text("SELECT source_id FROM spectrum WHERE id = :s"), {"s": spectra[0]}).scalar()
        rot = _run(s, "rotation")
        for model, vmax, err in (("arctan", 201.5, 3.25), ("freeman", 188.0, None)):
            s.execute(text("INSERT INTO rotation_fit (run_id, source_id, component, model, pa, inc, vmax, vmax_err, "
                           "n_points, n_rejected, flags) VALUES (:r, :g, 'gas', :m, 40.0, 55.0, :v, :e, 120, 3, 0)"),
                      {"r": rot, "g": galaxy, "m": model, "v": vmax, "e": err})
        grad = _run(s, "gradients")
        s.execute(text("INSERT INTO metallicity_gradient (run_id, source_id, method, slope_dex_per_kpc, central_oh, "
                       "geometry, rotation_run_id, n_points, n_rejected, flags) "
                       "VALUES (:r, :g, 'O3N2_PP04', -0.0412, 8.71, 'gas/arctan', :rot, 118, 2, 0)"),
                  {"r": grad, "g": galaxy, "rot": rot})
    fresh_database.spectra = spectra
    fresh_database.run_ids = {"lines": lines, "ingested": ingested, "abundances": ab, "nebula_diagnostic": neb,
                              "rotation": rot, "gradients": grad}
    return fresh_database


def _rows(db, query, **params):
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(query), params)]


def _release(db, tmp_path, name="dr1", **kw):
    return create_release(db, name, out_dir=tmp_path / "releases" / name, **kw)


def _same(a, b, *, blank_is_null=False) -> bool:
    """Equal values, NULL/None/masked/NaN all counting as missing (and '' too where the
    format cannot tell an empty string from NULL: FITS, and ECSV as astropy reads it)."""
    def norm(v):
        if isinstance(v, bytes):
            v = v.decode()
        if v is None or v is np.ma.masked or (isinstance(v, float) and np.isnan(v)) or (blank_is_null and v == ""):
            return None
        return v.item() if hasattr(v, "item") else v
    return [tuple(map(norm, r)) for r in a] == [tuple(map(norm, r)) for r in b]


def test_release_of_current_matches_the_catalog_views_and_records_its_runs(catalog_db, tmp_path):
    summary = _release(catalog_db, tmp_path, notes="first light")
    for table in release_tables():
        # Line fluxes are converted to one unit in the release; the views keep each spectrum's own.
        names = [c for c in table.column_names if not (table.name == "lines" and c in ("flux", "flux_err", "flux_limit"))]
        cols = ", ".join(f'"{c}"' for c in names)
        key = ", ".join(table.key)
        frozen = _rows(catalog_db, f"SELECT {cols} FROM dr1.{table.name} ORDER BY {key}")
        live = _rows(catalog_db, f"SELECT {cols} FROM catalog.{table.name} ORDER BY {key}")
        assert frozen == live and len(frozen) == summary.tables[table.name], table.name
    assert summary.tables["lines"] == 7 and summary.tables["spectra"] == 3
    assert summary.tables["rotation"] == 2 and summary.tables["metallicity_gradients"] == 1
    recorded = {r for (r,) in _rows(catalog_db, "SELECT run_id FROM release_run")}
    assert recorded == set(catalog_db.run_ids.values()) == {r.id for r in summary.runs}
    # Every column of the release schema carries its description (and unit) as an SQL comment.
    comment = _rows(catalog_db, "SELECT col_description('dr1.stellar_kinematics'::regclass, 3)")[0][0]
    assert comment.startswith("Stellar line-of-sight velocity") and comment.endswith("[km/s]")
    assert _rows(catalog_db, "SELECT name, collection, notes, n_runs FROM catalog.releases") == [("dr1", "current", "first light", 6)]


def test_every_file_reads_back_with_astropy(catalog_db, tmp_path):
    summary = _release(catalog_db, tmp_path)
    out = summary.out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["release"] == "dr1" and manifest["schema_version"] and len(manifest["runs"]) == 6
    listed = {f["path"]: f for f in manifest["files"]}
    for table in release_tables():
        cols = ", ".join(f'"{c}"' for c in table.column_names)
        db_rows = _rows(catalog_db, f"SELECT {cols} FROM dr1.{table.name}")
        for fmt in ("fits", "ecsv", "parquet"):
            path = out / f"{table.name}.{fmt}"
            assert listed[path.name]["rows"] == len(db_rows)
            assert listed[path.name]["sha256"] == runs.file_sha256(path)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # every file reads without a single astropy warning
                t = Table.read(path, hdu=1) if fmt == "fits" else Table.read(path)
            assert t.colnames == table.column_names, (path, t.colnames)
            if fmt != "parquet":  # astropy's Parquet reader turns nulls into NaN/'None' (nulls checked below)
                assert _same([tuple(r) for r in t], db_rows, blank_is_null=True), path
            for column in table.columns:
                assert t[column.name].description == column.description, (path, column.name)
                # One unit per column, exactly the declared one; FITS leaves out what it cannot spell (dex).
                expected = None if column.unit is None or (fmt == "fits" and fits_unit(column.unit) is None) \
                    else u.Unit(column.unit)
                assert t[column.name].unit == expected, (path, column.name, t[column.name].unit)
        # Parquet's own nulls, as any Arrow reader sees them.
        arrow = pq.read_table(out / f"{table.name}.parquet")
        assert _same(list(zip(*[arrow[c].to_pylist() for c in table.column_names])), db_rows)
        assert arrow.schema.field(table.columns[0].name).metadata[b"description"]
    # NULLs: NaN in FITS floats, TNULL in FITS integers, masked in ECSV.
    kin = Table.read(out / "stellar_kinematics.ecsv")
    assert kin["velocity"].mask.tolist() == [False, True, False] and kin["n_pixels"].mask.tolist() == [False, True, False]
    kin_fits = Table.read(out / "stellar_kinematics.fits", hdu=1)
    assert kin_fits["velocity"].mask.tolist() == [False, True, False] == kin_fits["n_pixels"].mask.tolist()
    raw = fits.getdata(out / "stellar_kinematics.fits", 1)
    assert np.isnan(raw["velocity"][1]) and raw["n_pixels"][1] == fits.getheader(out / "stellar_kinematics.fits", 1)["TNULL10"]
    assert str(kin_fits["velocity"].unit) == "km / s"
    assert str(Table.read(out / "abundances.ecsv")["oh"].unit) == "dex"
    spectra = Table.read(out / "spectra.ecsv")
    assert spectra["file"][0] == '/data/spec, "odd".fits' and spectra["ra"][2] == 359.999999999


def test_fits_headers_and_checksums(catalog_db, tmp_path):
    out = _release(catalog_db, tmp_path).out_dir
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checksum mismatch is an astropy warning
        with fits.open(out / "lines.fits", checksum=True) as hdul:
            hdul[1].data  # noqa: B018 -- reading the data verifies DATASUM
            header = hdul[1].header
    assert header["RELEASE"] == "dr1" and header["COLLECT"] == "current" and header["CREATOR"].startswith("skyledger")
    assert {header[f"RUN{i}"] for i in range(1, header["NRUNS"] + 1)} == {
        catalog_db.run_ids["lines"], catalog_db.run_ids["ingested"]}
    assert header["FLAG17"].startswith("FROM_CATALOGUE:")
    units = {header[f"TTYPE{i}"]: header.get(f"TUNIT{i}") for i in range(1, header["TFIELDS"] + 1)}
    assert units["velocity"] == "km s-1" and units["ew"] == "Angstrom" and units["line"] is None
    assert units["flux"] == units["flux_err"] == "10**-17 erg s-1 cm-2" and "flux_unit" not in units
    assert header["FORMATV"] == 2
    # dex is no FITS unit: no TUNIT, the unit named in TCOMM instead (the ECSV and Parquet files carry it).
    with fits.open(out / "abundances.fits") as hdul:
        ab = hdul[1].header
    oh = next(i for i in range(1, ab["TFIELDS"] + 1) if ab[f"TTYPE{i}"] == "oh")
    assert f"TUNIT{oh}" not in ab and ab[f"TCOMM{oh}"].endswith("[dex]")
    assert header["TUCD1"] == "meta.id"
    # Checksum values use only letters and digits, as the convention requires.
    assert all(len(encode_checksum(v)) == 16 and encode_checksum(v).isalnum() for v in (0, 1, 0xFFFFFFFF, 0x3A3A3A3A))


def test_a_named_collection_is_resolved_by_rank(catalog_db, tmp_path):
    old = catalog_db.run_ids["lines"]
    with catalog_db.session() as s:
        new = _lines_run(s, catalog_db.spectra, 1000.0, version=2)
        # Rank 0 wins: the older run is preferred although a newer one is in the collection.
        runs.create_collection(s, "paper", [old, new])
    _release(catalog_db, tmp_path, name="paper_dr", collection="paper")
    assert {r for (r,) in _rows(catalog_db, "SELECT DISTINCT run_id FROM paper_dr.stellar_kinematics")} == {old}
    assert {r for (r,) in _rows(catalog_db, "SELECT DISTINCT run_id FROM catalog.stellar_kinematics")} == {new}
    assert _rows(catalog_db, "SELECT count(*) FROM paper_dr.abundances") == [(0,)]  # not in that collection


def test_reprocessing_after_a_release_changes_neither_schema_nor_files(catalog_db, tmp_path):
    summary = _release(catalog_db, tmp_path)
    before = _rows(catalog_db, "SELECT * FROM dr1.lines ORDER BY 1, 2, 3")
    with catalog_db.session() as s:
        _lines_run(s, catalog_db.spectra, 5.0, version=2)
        s.execute(text("DELETE FROM line_measurement WHERE run_id = :r"), {"r": catalog_db.run_ids["lines"]})
    assert _rows(catalog_db, "SELECT * FROM dr1.lines ORDER BY 1, 2, 3") == before
    assert _rows(catalog_db, "SELECT * FROM catalog.lines ORDER BY 1, 2, 3") != before
    with catalog_db.session() as s:
        assert verify_release(s, "dr1").ok
    assert summary.out_dir.is_dir()
    # A run frozen into a release cannot be deleted from under it.
    with pytest.raises(DBAPIError, match="release_run"), catalog_db.session() as s:
        s.execute(text("DELETE FROM stellar_kinematics WHERE run_id = :r"), {"r": catalog_db.run_ids["lines"]})
        s.execute(text("DELETE FROM collection_run WHERE run_id = :r"), {"r": catalog_db.run_ids["lines"]})
        s.execute(text("DELETE FROM run WHERE id = :r"), {"r": catalog_db.run_ids["lines"]})


def test_release_tables_are_read_only_and_readable_by_the_reader_role(catalog_db, tmp_path):
    _release(catalog_db, tmp_path)
    with pytest.raises(DBAPIError, match="read-only: a release never changes"), catalog_db.session() as s:
        s.execute(text("DELETE FROM dr1.lines"))
    with pytest.raises(DBAPIError, match="read-only"), catalog_db.session() as s:
        s.execute(text("TRUNCATE dr1.spectra"))
    with catalog_db.engine.connect() as conn:
        conn.execute(text("SET ROLE skyledger_reader"))
        assert conn.execute(text("SELECT count(*) FROM dr1.lines")).scalar_one() == 7
        assert conn.execute(text("SELECT count(*) FROM catalog.releases")).scalar_one() == 1
        # Cone search through the catalog wrappers; the public functions read base tables.
        near = conn.execute(text("SELECT spectrum_id, distance_arcsec FROM catalog.cone_search_spectra(150.25, 2.5, 1)")).all()
        assert [r[0] for r in near] == [catalog_db.spectra[0]] and near[0][1] < 1e-6
        assert conn.execute(text("SELECT count(*) FROM catalog.cone_search(150.25, 2.5, 1)")).scalar_one() == 1
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("SELECT * FROM public.cone_search(150.25, 2.5, 1)"))
        conn.rollback()
        conn.execute(text("SET ROLE skyledger_reader"))
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("SELECT count(*) FROM public.line_measurement"))
        conn.rollback()
        conn.execute(text("SET ROLE skyledger_reader"))
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("CREATE TABLE dr1.mine (x int)"))
        conn.rollback()


def test_tampered_missing_and_extra_files_fail_verify(catalog_db, tmp_path):
    out = _release(catalog_db, tmp_path).out_dir
    with catalog_db.session() as s:
        assert verify_release(s, "dr1").ok
    data = bytearray((out / "lines.fits").read_bytes())
    data[-2880 + 10] ^= 0x01  # one bit of the first row (the data fit in the last block)
    (out / "lines.fits").write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="Checksum verification failed"), fits.open(out / "lines.fits", checksum=True) as hdul:
        hdul[1].data  # noqa: B018
    (out / "abundances.ecsv").unlink()
    (out / "notes.txt").write_text("not released")
    with catalog_db.session() as s:
        report = verify_release(s, "dr1")
    text_ = "\n".join(report.problems)
    assert "lines.fits: SHA-256" in text_ and "lines.fits: HDU 1: DATASUM" in text_ and "CHECKSUM does not verify" in text_
    assert "abundances.ecsv: missing" in text_ and "notes.txt: not part of the release" in text_
    assert len(report.problems) == 5, report.problems


def test_a_second_create_fails_and_changes_nothing(catalog_db, tmp_path):
    summary = _release(catalog_db, tmp_path)
    files = {p.name: runs.file_sha256(p) for p in summary.out_dir.iterdir()}
    counts = _rows(catalog_db, "SELECT (SELECT count(*) FROM release), (SELECT count(*) FROM release_file), "
                               "(SELECT count(*) FROM release_run)")
    with pytest.raises(ReleaseError, match="release dr1 already exists"):
        _release(catalog_db, tmp_path)
    with pytest.raises(ReleaseError, match="release dr1 already exists"):
        create_release(catalog_db, "dr1", out_dir=tmp_path / "elsewhere")
    assert {p.name: runs.file_sha256(p) for p in summary.out_dir.iterdir()} == files
    assert not (tmp_path / "elsewhere").exists()
    assert _rows(catalog_db, "SELECT (SELECT count(*) FROM release), (SELECT count(*) FROM release_file), "
                             "(SELECT count(*) FROM release_run)") == counts


def test_a_failure_while_writing_leaves_no_schema_rows_or_files(catalog_db, tmp_path, monkeypatch):
    def broken(self, batch):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(FitsWriter, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        _release(catalog_db, tmp_path)
    assert _rows(catalog_db, "SELECT count(*) FROM release") == [(0,)]
    assert _rows(catalog_db, "SELECT count(*) FROM pg_namespace WHERE nspname = 'dr1'") == [(0,)]
    assert list((tmp_path / "releases").iterdir()) == []
    monkeypatch.undo()
    assert _release(catalog_db, tmp_path).tables["lines"] == 7  # the name is still free


@pytest.mark.parametrize("name, message", [
    ("DR1", "lower-case"), ("1dr", "lower-case"), ("dr-1", "lower-case"), ("a" * 64, "lower-case"),
    ("public", "reserved"), ("catalog", "reserved"), ("pg_x", "reserved"),
])
def test_bad_names_are_refused(catalog_db, tmp_path, name, message):
    with pytest.raises(ReleaseError, match=message):
        _release(catalog_db, tmp_path, name=name)


def test_unknown_collection_and_occupied_directory_are_refused(catalog_db, tmp_path):
    with pytest.raises(ReleaseError, match="no collection named 'nope'; collections: current"):
        _release(catalog_db, tmp_path, collection="nope")
    (tmp_path / "releases" / "dr1").mkdir(parents=True)
    (tmp_path / "releases" / "dr1" / "x").write_text("x")
    with pytest.raises(ReleaseError, match="not an empty directory"):
        _release(catalog_db, tmp_path)
    assert _rows(catalog_db, "SELECT count(*) FROM release") == [(0,)]


def test_demo_release_is_written_once_per_change(catalog_db, tmp_path):
    home = tmp_path / "releases"
    name, where, summary = demo_release(catalog_db, home)
    assert (name, where) == ("dr1", home / "dr1") and summary is not None
    assert demo_release(catalog_db, home) == ("dr1", home / "dr1", None)
    with catalog_db.session() as s:
        _lines_run(s, catalog_db.spectra, 2.0, version=2)
    name, where, summary = demo_release(catalog_db, home)
    assert name == "dr2" and summary is not None
    with catalog_db.session() as s:
        assert [r.name for r in list_releases(s)] == ["dr1", "dr2"]


def test_cli_create_list_verify_and_broken_input(catalog_db, fresh_settings, tmp_path):
    env = cli_env(fresh_settings)
    created = skyledger("release", "create", "dr1", "--notes", "CLI", env=env)
    assert "release dr1: collection current, 6 runs, 23 files" in created.stdout
    assert "dr1" in skyledger("release", "list", env=env).stdout
    assert "23 files" in skyledger("release", "verify", "dr1", env=env).stdout
    for args, message in [
        (("create", "Bad-Name"), "release name 'Bad-Name' is not allowed"),
        (("create", "dr2", "--collection", "nope"), "no collection named 'nope'"),
        (("create", "dr1"), "release dr1 already exists"),
        (("verify", "dr9"), "no release named 'dr9'; releases: dr1"),
        (("verify", "dr1", "--dir", str(tmp_path / "absent")), "does not exist; pass --dir"),
    ]:
        proc = skyledger("release", *args, env=env, check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    out = tmp_path / "home" / "releases" / "dr1"
    shutil.copy(out / "spectra.ecsv", out / "lines.ecsv")
    bad = skyledger("release", "verify", "dr1", env=env, check=False)
    assert bad.returncode == 1 and "lines.ecsv: SHA-256" in bad.stderr and "lines.ecsv: 3 rows, 7 when written" in bad.stderr



@pytest.mark.parametrize("unit, scale", [
    ("1e-17 erg / (Angstrom s cm2)", 1.0),  # SDSS, MaNGA: copied unchanged
    ("1e-19 erg / (Angstrom s cm2)", 0.01),  # LEGA-C
    ("erg / (s cm2 Angstrom)", 1e17),
    ("W / (m2 nm)", 1e19),
    ("1e-20 erg / (s cm2)", 0.001),  # a line catalogue's fluxes
    ("Jy", None), ("count", None), ("", None), (None, None), ("not a unit", None),
])
def test_line_flux_scale(unit, scale):
    got = line_flux_scale(unit)
    assert got == pytest.approx(scale, rel=1e-12) if scale is not None else got is None


def test_line_fluxes_have_one_unit_whatever_each_spectrum_s_unit(catalog_db, tmp_path):
    spec = catalog_db.spectra
    with catalog_db.session() as s:
        s.execute(text("UPDATE spectrum SET flux_unit = '1e-19 erg / (Angstrom s cm2)' WHERE id = :i"), {"i": spec[1]})
        s.execute(text("UPDATE spectrum SET flux_unit = 'Jy' WHERE id = :i"), {"i": spec[2]})
    before = _rows(catalog_db, "SELECT spectrum_id, line, flux, flux_err FROM line_measurement ORDER BY 1, 2")
    out = _release(catalog_db, tmp_path).out_dir
    got = {(r[0], r[1], r[2]): (r[3], r[4]) for r in _rows(
        catalog_db, "SELECT spectrum_id, source_task, line, flux, flux_err FROM dr1.lines")}
    assert got[(spec[0], "lines", "HA6563")] == (100.0, 0.5)  # already in 1e-17 erg/s/cm2/Angstrom
    assert got[(spec[0], "ingested", "HB4861")] == (42.0, None)
    assert got[(spec[1], "lines", "HA6563")] == (pytest.approx(1.01), pytest.approx(0.005))
    assert got[(spec[2], "lines", "HA6563")] == (None, None)  # Jy: no flux per wavelength, so no value
    # Upper limits of undetected lines are converted like the fluxes.
    limits = {(r[0], r[1]): r[2] for r in _rows(catalog_db, "SELECT spectrum_id, line, flux_limit FROM dr1.lines WHERE source_task = 'lines'")}
    assert limits[(spec[0], "OIII5007")] == 2.0 and limits[(spec[1], "OIII5007")] == pytest.approx(0.02)
    assert limits[(spec[0], "HA6563")] is None and limits[(spec[2], "OIII5007")] is None
    # The database keeps every value in its spectrum's unit.
    assert _rows(catalog_db, "SELECT spectrum_id, line, flux, flux_err FROM line_measurement ORDER BY 1, 2") == before
    for fmt in ("fits", "ecsv", "parquet"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = Table.read(out / f"lines.{fmt}", **({"hdu": 1} if fmt == "fits" else {}))
        assert "flux_unit" not in t.colnames and t["flux"].unit == u.Unit("1e-17 erg / (s cm2)"), fmt
