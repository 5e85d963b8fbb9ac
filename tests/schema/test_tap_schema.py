"""TAP_SCHEMA in the database (migration 0023, refresh_tap_schema) and the views the service adds.

What a reader sees through the read path must be what the declarations say, for the
catalog views, every release and TAP_SCHEMA itself; it never names a column the
database lacks; and the reader can read it but never change it.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors
from sqlalchemy import text

from skyledger.api.releases import create_release
from skyledger.api.releases.tables import release_tap_tables
from skyledger.schema import runs
from skyledger.schema.errors import QueryError
from skyledger.schema.readpath import query_login, run_reader_query
from skyledger.schema.tap import TAP_SCHEMA_TABLES, catalog_tap_tables, tap_datatype, refresh_tap_schema

COLUMNS = ("SELECT table_name, column_name, datatype, arraysize, xtype, unit, ucd, description, column_index "
           "FROM tap_schema.columns")


def _declared(tables) -> list[tuple]:
    return [(t.qualified, c.name, *tap_datatype(c.pg_type), c.unit, c.ucd, c.description, i)
            for t in tables for i, c in enumerate(t.columns)]


def _listed(settings, where: str) -> list[tuple]:
    result = run_reader_query(settings, f"{COLUMNS} WHERE {where} ORDER BY table_name, column_index")
    assert not result.truncated
    return result.rows


def _keys(settings) -> set[tuple[str, str, str, str]]:
    return set(run_reader_query(settings, (
        "SELECT k.from_table, c.from_column, k.target_table, c.target_column "
        "FROM tap_schema.keys AS k JOIN tap_schema.key_columns AS c ON c.key_id = k.key_id")).rows)


def _missing_columns(conn) -> list[tuple[str, str]]:
    """TAP_SCHEMA columns that the database does not have (owner's view of the catalog)."""
    return [tuple(r) for r in conn.execute(text(
        "SELECT c.table_name, c.column_name FROM tap_schema.columns AS c WHERE NOT EXISTS ("
        "  SELECT 1 FROM information_schema.columns AS i"
        "  WHERE i.table_schema || '.' || i.table_name = c.table_name AND i.column_name = c.column_name)"))]


def test_the_reader_sees_every_catalog_view_and_column_as_declared(settings, database):
    expected = _declared(sorted(catalog_tap_tables(), key=lambda t: t.qualified))
    assert _listed(settings, "table_name LIKE 'catalog.%'") == expected
    with database.engine.connect() as conn:
        views = set(conn.execute(text(
            "SELECT 'catalog.' || table_name FROM information_schema.views WHERE table_schema = 'catalog'")).scalars())
        assert _missing_columns(conn) == []
    tables = dict(run_reader_query(settings, "SELECT table_name, table_type FROM tap_schema.tables").rows)
    assert {t for t in tables if t.startswith("catalog.")} == views
    assert {"catalog.runs", "catalog.ingest_files", "catalog.spectrum_pixels"} <= views
    schemas = run_reader_query(settings, "SELECT schema_name FROM tap_schema.schemas ORDER BY schema_index").rows
    assert schemas == [("catalog",), ("tap_schema",)]
    # TAP 1.1 (4): TAP_SCHEMA describes itself.
    assert {t: tables[t] for t in tables if t.startswith("tap_schema.")} == {
        f"tap_schema.{n}": "table" for n in ("schemas", "tables", "columns", "keys", "key_columns")}
    assert _listed(settings, "table_name LIKE 'tap\\_schema.%'") == _declared(
        sorted(TAP_SCHEMA_TABLES, key=lambda t: t.qualified))


def test_units_ucds_and_array_types_come_from_the_model_columns(settings):
    rows = {r[1]: r for r in _listed(settings, "table_name = 'catalog.spectrum_pixels'")}
    assert rows["wave"][2:7] == ("double", "*", None, "Angstrom", "em.wl")
    assert rows["flux"][2:4] == ("float", "*") and rows["mask"][2:4] == ("int", "*")
    assert rows["spectrum_id"][2:4] == ("long", None)
    ra = _listed(settings, "table_name = 'catalog.spectra' AND column_name = 'ra'")
    assert ra[0][5:7] == ("deg", "pos.eq.ra;meta.main")
    finished = _listed(settings, "table_name = 'catalog.runs' AND column_name = 'finished_at'")
    assert finished[0][2:5] == ("char", "*", "timestamp")


def test_keys_link_ids_to_the_tables_they_identify(settings):
    keys = _keys(settings)
    assert {("catalog.lines", "spectrum_id", "catalog.spectra", "spectrum_id"),
            ("catalog.spectrum_pixels", "spectrum_id", "catalog.spectra", "spectrum_id"),
            ("catalog.rotation", "source_id", "catalog.spectra", "source_id"),
            ("catalog.lines", "run_id", "catalog.runs", "run_id"),
            ("catalog.current_runs", "run_id", "catalog.runs", "run_id"),
            ("tap_schema.columns", "table_name", "tap_schema.tables", "table_name"),
            ("tap_schema.key_columns", "key_id", "tap_schema.keys", "key_id")} <= keys
    # No table links to itself, and every result view that shows a spectrum links it.
    assert all(f != t for f, _, t, _ in keys)
    with_spectrum = {t for t, c, *_ in _listed(settings, "column_name = 'spectrum_id'") if t != "catalog.spectra"}
    assert with_spectrum == {f for f, c, t, _ in keys if c == "spectrum_id"}


def test_the_reader_cannot_change_tap_schema(settings):
    before = run_reader_query(settings, "SELECT count(*) FROM tap_schema.columns").rows
    # Through the read path: refused whatever the statement.
    for statement in ("DELETE FROM tap_schema.columns", "UPDATE tap_schema.columns SET unit = 'm'",
                      "INSERT INTO tap_schema.schemas (schema_name) VALUES ('x')", "DROP TABLE tap_schema.keys"):
        with pytest.raises(QueryError):
            run_reader_query(settings, statement)
    # And as the reader login in a read-write transaction: refused by privileges, not
    # only by the read-only default of the read path.
    with psycopg.connect(query_login(settings).conninfo) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.commit()
        for statement in ("DELETE FROM tap_schema.columns", "UPDATE tap_schema.tables SET description = ''",
                          "INSERT INTO tap_schema.schemas (schema_name) VALUES ('x')",
                          "TRUNCATE tap_schema.keys", "CREATE TABLE tap_schema.extra (x int)"):
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
    assert run_reader_query(settings, "SELECT count(*) FROM tap_schema.columns").rows == before


def test_a_new_release_is_listed_and_an_older_one_only_with_the_columns_it_has(fresh_settings, fresh_database,
                                                                             tmp_path):
    create_release(fresh_database, "dr7", out_dir=tmp_path / "dr7")
    declared = sorted(release_tap_tables("dr7"), key=lambda t: t.qualified)
    assert _listed(fresh_settings, "table_name LIKE 'dr7.%'") == _declared(declared)
    assert ("dr7.lines", "spectrum_id", "dr7.spectra", "spectrum_id") in _keys(fresh_settings)
    schemas = run_reader_query(fresh_settings, "SELECT schema_name, description FROM tap_schema.schemas").rows
    assert next(d for s, d in schemas if s == "dr7").startswith("Release dr7: the collection current frozen on")

    # A release written by older code: a table it lacks, a column it lacks. (Only the
    # owner can change a release's DDL; the read-only triggers stop row changes.)
    with fresh_database.engine.begin() as conn:
        conn.execute(text("DROP TABLE dr7.rotation"))
        conn.execute(text("ALTER TABLE dr7.lines DROP COLUMN ew_err"))
        refresh_tap_schema(conn)
        assert _missing_columns(conn) == []
    listed = _listed(fresh_settings, "table_name LIKE 'dr7.%'")
    assert {t for t, *_ in listed} == {t.qualified for t in declared} - {"dr7.rotation"}
    assert ("dr7.lines", "ew_err") not in {(t, c) for t, c, *_ in listed}
    assert ("dr7.lines", "ew") in {(t, c) for t, c, *_ in listed}


def _insert(conn, table: str, **values):
    names = ", ".join(values)
    return conn.execute(text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + n for n in values)}) "
                             "RETURNING id"), values).scalar_one()


def test_runs_ingest_files_and_spectrum_pixels_show_the_right_rows(fresh_settings, fresh_database):
    with fresh_database.session() as s:
        survey = _insert(s, "survey", name="manga", reader="manga")
        old = _insert(s, "ingest_file", survey_id=survey, uri="/d/cube.fits", sha256="a" * 64, status="loaded",
                      reader="manga", n_spectra=1)
        new = _insert(s, "ingest_file", survey_id=survey, uri="/d/cube.fits", sha256="b" * 64, status="loaded",
                      version=2, reader="manga", n_spectra=2, batch_id="night-1", duration_s=1.5)
        rejected = _insert(s, "ingest_file", survey_id=survey, uri="/d/bad.fits", sha256=None, status="rejected",
                           reason="not a FITS file")
        grid = s.execute(text("INSERT INTO wavelength_grid (sha256, n_pix, wave, log_uniform) "
                              "VALUES (:h, 3, ARRAY[4000.0, 4000.5, 4001.25], false) RETURNING id"),
                         {"h": "c" * 64}).scalar_one()

        def spectrum(file_id, object_id, pixels):
            src = _insert(s, "source", survey_id=survey, ingest_file_id=file_id, object_id=object_id)
            if not pixels:
                return _insert(s, "spectrum", source_id=src, survey_id=survey, ingest_file_id=file_id,
                               object_id=object_id, n_pix=0)
            return s.execute(text(
                "INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, n_pix, wave_grid_id, flux, "
                "ivar, mask, resolution, flux_unit) VALUES (:src, :sv, :f, :o, 3, :g, ARRAY[1.5, -2.25, 0]::real[], "
                "ARRAY[4, 0.5, 0]::real[], ARRAY[0, 1, 1024], ARRAY[2000, 2000.5, 2001]::real[], "
                "'1e-17 erg / (s cm2 Angstrom)') RETURNING id"),
                {"src": src, "sv": survey, "f": file_id, "o": object_id, "g": grid}).scalar_one()

        superseded = spectrum(old, "spaxel-1", True)
        shown = spectrum(new, "spaxel-1", True)
        no_pixels = spectrum(new, "catalogue-entry", False)

        def run(task, *, status):
            info = runs.start_run(s, task=task, version=1, params={}, model_sha256={}, upstream_run_ids=[],
                                  device="cpu", prefect_flow_run_id=None)
            if status == "succeeded":
                runs.finish_run(s, info.id)
            elif status == "failed":
                s.execute(text("UPDATE run SET status = 'failed', error = 'out of memory', finished_at = now() "
                               "WHERE id = :i"), {"i": info.id})
            return info.id

        current, failed, running = run("lines", status="succeeded"), run("lines", status="failed"), \
            run("abundances", status="running")

    pixels = run_reader_query(fresh_settings, "SELECT * FROM catalog.spectrum_pixels ORDER BY spectrum_id")
    assert pixels.columns == ["spectrum_id", "wave", "flux", "ivar", "mask", "resolution", "flux_unit"]
    assert pixels.rows == [(shown, [4000.0, 4000.5, 4001.25], [1.5, -2.25, 0.0], [4.0, 0.5, 0.0], [0, 1, 1024],
                            [2000.0, 2000.5, 2001.0], "1e-17 erg / (s cm2 Angstrom)")]
    with_pixels = run_reader_query(fresh_settings, "SELECT spectrum_id FROM catalog.spectra WHERE n_pix > 0").rows
    assert with_pixels == [(shown,)] and superseded != shown and no_pixels != shown

    files = run_reader_query(fresh_settings, "SELECT file_id, survey, file, file_version, status, reason, reader, "
                                             "n_spectra, batch_id, duration_s FROM catalog.ingest_files ORDER BY file_id")
    assert files.rows == [
        (old, "manga", "/d/cube.fits", 1, "loaded", None, "manga", 1, None, None),
        (new, "manga", "/d/cube.fits", 2, "loaded", None, "manga", 2, "night-1", 1.5),
        (rejected, "manga", "/d/bad.fits", 1, "rejected", "not a FITS file", None, 0, None, None),
    ]

    rows = run_reader_query(fresh_settings, "SELECT run_id, task, status, error, device, is_current, "
                                            "finished_at IS NOT NULL FROM catalog.runs ORDER BY run_id").rows
    assert rows == [(current, "lines", "succeeded", None, "cpu", True, True),
                    (failed, "lines", "failed", "out of memory", "cpu", False, True),
                    (running, "abundances", "running", None, "cpu", False, False)]


def test_the_tap_schema_tables_in_the_database_are_the_declared_ones(database):
    """Migration 0023 pasted tap_schema_ddl(): the declarations must still describe its tables."""
    with database.engine.connect() as conn:
        for table in TAP_SCHEMA_TABLES:
            got = [tuple(r) for r in conn.execute(text(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
                "FROM pg_attribute AS a WHERE a.attrelid = CAST(:t AS regclass) AND a.attnum > 0 "
                "AND NOT a.attisdropped ORDER BY a.attnum"), {"t": table.qualified})]
            assert got == [(c.name, {"text": "text", "int4": "integer"}[c.pg_type], c.description)
                           for c in table.columns], table.qualified
            key = conn.execute(text(
                "SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index AS x "
                "CROSS JOIN unnest(x.indkey) WITH ORDINALITY AS k(attnum, i) "
                "JOIN pg_attribute AS a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
                "WHERE x.indrelid = CAST(:t AS regclass) AND x.indisprimary"), {"t": table.qualified}).scalar_one()
            assert tuple(key) == table.key, table.qualified


def test_types_map_to_the_votable_type_system_of_tap_1_1():
    assert tap_datatype("_float8") == tap_datatype("float8[]") == ("double", "*", None)
    assert tap_datatype("_float4") == tap_datatype("float4[]") == ("float", "*", None)
    assert tap_datatype("_int4") == tap_datatype("int4[]") == ("int", "*", None)
    assert tap_datatype("text") == ("char", "*", None) and tap_datatype("int8") == ("long", None, None)
    assert tap_datatype("timestamptz") == ("char", "*", "timestamp")
    with pytest.raises(KeyError):
        tap_datatype("jsonb")
    with pytest.raises(KeyError):
        tap_datatype("_text")
