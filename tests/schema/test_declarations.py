"""Drift: everything derived from a result-table declaration agrees with it.

The declaration (model columns + ``result_table``) is the one list; the database views
and their comments (from migrations), the COPY columns of every task, the release
tables, the TAP_SCHEMA rows and ``docs/catalog.md`` must all say the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from skyledger.api.releases.tables import SPECTRA, release_table, release_tap_tables
from skyledger.compute.framework.registry import get_task, task_names
from skyledger.schema.catalog import catalog_views, markdown
from skyledger.schema.results import best_rows_sql, copy_columns, declared_views, pg_type
from skyledger.schema.tap import catalog_tap_tables, tap_datatype, tap_schema_rows

DOCS = Path(__file__).resolve().parents[2] / "docs" / "catalog.md"

# format_type() spellings of the types the declarations use.
_FORMAT_TYPE = {"int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real",
                "float8": "double precision", "text": "text", "bool": "boolean",
                "timestamptz": "timestamp with time zone", "float8[]": "double precision[]", "float4[]": "real[]",
                "int4[]": "integer[]"}  # fmt: skip


def _columns(conn, relation: str) -> list[tuple[str, str, str | None]]:
    """(name, type, comment) of a relation's columns in order."""
    return [tuple(r) for r in conn.execute(text(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum) "
        "FROM pg_attribute AS a WHERE a.attrelid = CAST(:rel AS regclass) AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum"), {"rel": relation})]


def assert_view_matches_declaration(conn, spec) -> None:
    """The database's catalog view is what the declaration renders today: same definition
    (both parsed by PostgreSQL, so formatting does not matter), columns and comments."""
    conn.execute(text(f"CREATE TEMPORARY VIEW drift_{spec.view} AS {best_rows_sql(spec)}"))
    live, rendered = (conn.execute(text("SELECT pg_get_viewdef(CAST(:v AS regclass))"), {"v": v}).scalar_one()
                      for v in (f"catalog.{spec.view}", f"drift_{spec.view}"))
    assert live == rendered, f"catalog.{spec.view} drifted from its declaration; write a migration from " \
                             f"`python -m skyledger.schema.catalog ddl {spec.view}`"
    declared = [(c.name, _FORMAT_TYPE[c.pg_type], c.description) for c in spec.columns()]
    assert _columns(conn, f"catalog.{spec.view}") == declared


def test_every_result_view_is_rendered_from_its_declaration(database):
    specs = list(declared_views())
    assert {s.view for s in specs} == {"stellar_kinematics", "lines", "abundances", "nebula_class", "rotation",
                                       "metallicity_gradients"}
    with database.engine.connect() as conn:
        for spec in specs:
            assert_view_matches_declaration(conn, spec)
        conn.rollback()


def test_every_catalog_view_is_declared_with_comments_that_match(database):
    declared = {v.name: v for v in catalog_views()}
    with database.engine.connect() as conn:
        live = set(conn.execute(text(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'catalog'")).scalars())
        assert live == set(declared), "a catalog view is missing from schema/catalog.py or from the database"
        for name, view in declared.items():
            got = _columns(conn, f"catalog.{name}")
            assert [(n, t) for n, t, _ in got] == [(c.name, _FORMAT_TYPE[c.pg_type]) for c in view.columns], name
            assert [c for _, _, c in got] == [c.description for c in view.columns], name
            assert all(c.description for c in view.columns), name
            comment = conn.execute(text("SELECT obj_description(CAST(:v AS regclass), 'pg_class')"),
                                   {"v": f"catalog.{name}"}).scalar_one()
            assert comment == view.description


def test_every_task_copies_the_columns_of_its_declared_tables_in_table_order(database):
    with database.engine.connect() as conn:
        for name in task_names():
            for table in get_task(name).result_tables:
                spec = next(s for s in declared_views() if s.table == table.name)
                assert table.columns == copy_columns(spec.model)
                db = [(n, t) for n, t, _ in _columns(conn, table.name) if n != "run_id"]
                assert [(n, _FORMAT_TYPE[t]) for n, t in table.columns] == db, (name, table.name)


def test_release_tables_show_the_view_columns_with_the_same_metadata():
    assert [c.name for c in SPECTRA.columns] == [c.name for c in catalog_views()[0].columns]
    for spec in declared_views():
        release = release_table(spec.view)
        view = {c.name: c for c in spec.columns()}
        assert release.key == spec.release_key
        for col in release.columns:
            assert col.name in view and col.pg_type == view[col.name].pg_type and col.ucd == view[col.name].ucd
            if spec.view != "lines" or col.name not in ("flux", "flux_err", "flux_limit"):  # converted to one unit
                assert (col.description, col.unit) == (view[col.name].description, view[col.name].unit)
        dropped = set(view) - {c.name for c in release.columns}
        assert dropped == ({"flux_unit"} if spec.view == "lines" else set())


def test_tap_schema_rows_cover_every_catalog_column_and_release_table():
    tables = catalog_tap_tables() + release_tap_tables("dr1")
    rows = tap_schema_rows(tables, {"catalog": "The live catalogue"})
    assert {r["schema_name"] for r in rows["schemas"]} == {"catalog", "dr1"}
    by_table: dict[str, list[dict]] = {}
    for r in rows["columns"]:
        by_table.setdefault(r["table_name"], []).append(r)
    for view in catalog_views():
        cols = by_table[f"catalog.{view.name}"]
        assert [c["column_name"] for c in cols] == [c.name for c in view.columns]
        assert [(c["datatype"], c["arraysize"], c["xtype"], c["unit"], c["ucd"], c["description"]) for c in cols] == [
            (*tap_datatype(c.pg_type), c.unit, c.ucd, c.description) for c in view.columns]
    lines = {c["column_name"]: c for c in by_table["dr1.lines"]}
    flux = next(c for c in release_table("lines").columns if c.name == "flux")
    assert lines["flux"]["unit"] == flux.unit and "flux_unit" not in lines
    assert lines["spectrum_id"]["indexed"] == 1 and lines["line"]["principal"] == 1


def test_docs_catalog_md_is_generated_from_the_declarations():
    assert DOCS.read_text() == markdown(), "regenerate: python -m skyledger.schema.catalog markdown > docs/catalog.md"


def test_a_column_type_outside_the_map_is_refused():
    from sqlalchemy import Interval
    from sqlalchemy.dialects.postgresql import ARRAY, REAL

    assert pg_type(ARRAY(REAL())) == "float4[]"
    with pytest.raises(TypeError, match="no PostgreSQL type name"):
        pg_type(Interval())


def test_ingest_copies_columns_that_exist_with_the_database_types(database):
    from skyledger.ingest.copy_columns import LINE_COLUMNS, SOURCE_COLUMNS, SPECTRUM_COLUMNS
    from skyledger.schema.models import LineMeasurement, Source, Spectrum

    with database.engine.connect() as conn:
        for table, model, columns in (("source", Source, SOURCE_COLUMNS), ("spectrum", Spectrum, SPECTRUM_COLUMNS),
                                      ("line_measurement", LineMeasurement, LINE_COLUMNS)):
            assert tuple(columns) == copy_columns(model, [n for n, _ in columns]), table
            db = {n: t for n, t, _ in _columns(conn, table)}
            for name, typ in columns:
                want = _FORMAT_TYPE.get(typ) or {"jsonb": "jsonb", "float4[]": "real[]", "int4[]": "integer[]"}[typ]
                assert db[name] == want, (table, name)
