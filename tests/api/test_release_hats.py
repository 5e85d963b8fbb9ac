"""`release create --hats`: HATS catalogues lsdb opens, cross-matches and cone-searches like the SQL tables."""

from __future__ import annotations

import json

import lsdb
import numpy as np
import pytest
from sqlalchemy import text

from skyledger.api.releases import ReleaseError, create_release, verify_release
from tests.api.test_release import _lines_run, _rows, _run, cli_env, skyledger

N_PLACED = 40


@pytest.fixture
def sky_db(fresh_database):
    """40 spectra spread over the sky plus one without a position, a lines run over all,
    and a rotation run (a table keyed by source_id, so without positions)."""
    rng = np.random.default_rng(24)
    ra = rng.uniform(0, 360, N_PLACED)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, N_PLACED)))
    ra[:5], dec[:5] = 150.0 + np.arange(5) * 0.2, 2.0  # a cluster for the cone
    with fresh_database.session() as s:
        survey = s.execute(text("INSERT INTO survey (name, reader) VALUES ('sdss-dr18', 'sdss') RETURNING id")).scalar()
        f = s.execute(text("INSERT INTO ingest_file (survey_id, uri, sha256, status) VALUES (:s, '/data/a.fits', :h, "
                           "'loaded') RETURNING id"), {"s": survey, "h": "b" * 64}).scalar()
        spectra = []
        for i, (r, d) in enumerate([*zip(ra.tolist(), dec.tolist()), (None, None)]):
            src = s.execute(text("INSERT INTO source (survey_id, ingest_file_id, object_id, ra, dec) "
                                 "VALUES (:s, :f, :o, :ra, :dec) RETURNING id"),
                            {"s": survey, "f": f, "o": f"obj{i}", "ra": r, "dec": d}).scalar()
            spectra.append(s.execute(text(
                "INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, ra, dec, z, n_pix, flux_unit, flags) "
                "VALUES (:src, :s, :f, :o, :ra, :dec, :z, 0, '1e-17 erg / (s cm2 Angstrom)', 0) RETURNING id"),
                {"src": src, "s": survey, "f": f, "o": f"spec{i}", "ra": r, "dec": d, "z": 0.01 * i}).scalar())
        _lines_run(s, spectra, 0.0)
        rot = _run(s, "rotation")
        s.execute(text("INSERT INTO rotation_fit (run_id, source_id, component, model, pa, inc, vmax, n_points, "
                       "n_rejected, flags) VALUES (:r, :g, 'gas', 'arctan', 40.0, 55.0, 200.0, 120, 3, 0)"),
                  {"r": rot, "g": src})
    return fresh_database


def _frame(catalog):
    return catalog.compute().sort_values("spectrum_id").reset_index(drop=True)


def test_hats_catalogues_match_the_sql_tables(sky_db, tmp_path):
    out = create_release(sky_db, "dr1", out_dir=tmp_path / "dr1", hats=True).out_dir
    spectra = lsdb.open_catalog(out / "hats" / "spectra")
    got = _frame(spectra)
    sql = _rows(sky_db, "SELECT spectrum_id, object_id, ra, dec, z FROM dr1.spectra WHERE ra IS NOT NULL ORDER BY spectrum_id")
    assert len(got) == len(sql) == N_PLACED
    assert [tuple(r) for r in got[["spectrum_id", "object_id", "ra", "dec", "z"]].itertuples(index=False)] == sql

    # Every spectrum matches itself, at distance 0 (the same float positions on both sides).
    matched = spectra.crossmatch(spectra, radius_arcsec=0.01, n_neighbors=1, suffixes=("_a", "_b"),
                                 suffix_method="all_columns").compute()
    assert len(matched) == N_PLACED
    assert (matched["spectrum_id_a"] == matched["spectrum_id_b"]).all() and (matched["_dist_arcsec"] == 0).all()

    # A cone: lsdb's and PostgreSQL's great-circle distance select the same spectra.
    in_cone = _frame(spectra.cone_search(150.3, 2.0, 0.25 * 3600))["spectrum_id"].tolist()
    sql_cone = [r[0] for r in _rows(sky_db, (
        "SELECT spectrum_id FROM dr1.spectra WHERE ra IS NOT NULL AND degrees(acos(least(1, sin(radians(dec)) * sin(radians(2.0)) "
        "+ cos(radians(dec)) * cos(radians(2.0)) * cos(radians(ra - 150.3))))) < 0.25 ORDER BY spectrum_id"))]  # least() skips NULL
    assert in_cone == sql_cone and 2 <= len(in_cone) < 5

    # A result table keyed by spectrum_id carries its spectrum's position; one keyed by source_id is not written.
    lines = lsdb.open_catalog(out / "hats" / "lines").compute()
    assert len(lines) == 2 * N_PLACED
    positions = dict(zip(got["spectrum_id"], zip(got["ra"], got["dec"])))
    assert all(positions[r.spectrum_id] == (r.ra, r.dec) for r in lines.itertuples())
    assert not (out / "hats" / "rotation").exists()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["hats"]["spectra"] == {"directory": "hats/spectra", "rows": N_PLACED, "rows_without_position": 1}
    assert "rotation" not in manifest["hats"]
    hats_files = [f for f in manifest["files"] if f["format"] == "hats"]
    assert any(f["path"].startswith("hats/spectra/") and f["path"].endswith(".parquet") for f in hats_files)

    with sky_db.session() as s:
        assert verify_release(s, "dr1").ok
    # verify looks inside hats/: a changed and an added file there are found.
    leaf = next(p for p in (out / "hats" / "spectra").rglob("Npix=*.parquet"))
    leaf.write_bytes(leaf.read_bytes() + b"x")
    (out / "hats" / "spectra" / "stray.txt").write_text("not released")
    with sky_db.session() as s:
        problems = "\n".join(verify_release(s, "dr1").problems)
    assert f"{leaf.relative_to(out).as_posix()}: SHA-256" in problems
    assert "hats/spectra/stray.txt: not part of the release" in problems


def test_cli_hats_and_an_existing_name(sky_db, fresh_settings, tmp_path):
    env = cli_env(fresh_settings)
    skyledger("release", "create", "dr1", env=env)
    out = fresh_settings.releases_dir / "dr1"
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    proc = skyledger("release", "create", "dr1", "--hats", env=env, check=False)
    assert proc.returncode == 1 and "release dr1 already exists" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before and not (out / "hats").exists()

    skyledger("release", "create", "dr2", "--hats", env=env)
    assert (fresh_settings.releases_dir / "dr2" / "hats" / "spectra" / "spectra" / "hats.properties").is_file()
    assert "intact" in skyledger("release", "verify", "dr2", env=env).stdout
    with pytest.raises(ReleaseError, match="already exists"):
        create_release(sky_db, "dr2", out_dir=tmp_path / "x", hats=True)
    assert not (tmp_path / "x").exists()
