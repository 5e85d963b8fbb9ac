"""ADQL -> PostgreSQL (api/service/adql.py): the corpus runs on the reader, geometry
predicates equal brute-force numpy on the same rows, cones on catalog.spectra are
index-backed, invalid ADQL gets a message saying what to fix."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from sqlalchemy import text

from skyledger.api.service.adql import AdqlError, translate
from skyledger.schema.database import connect
from skyledger.schema.errors import QueryError
from skyledger.schema.readpath import run_reader_query
from tests.api.service.adql_corpus import INVALID, VALID
from tests.conftest import _new_database

# -- data ---------------------------------------------------------------------------------------


def _sky(seed: int = 23):
    """Positions where the tests look: round (150, 2), across RA 0 at dec -30, near the
    north pole, anywhere; and three spectra without a position."""
    rng = np.random.default_rng(seed)
    parts = [
        (150 + rng.uniform(-2.5, 2.5, 300), 2 + rng.uniform(-2, 2, 300)),
        (rng.uniform(-2.5, 2.5, 120) % 360.0, -30 + rng.uniform(-2, 2, 120)),
        (rng.uniform(0, 360, 60), rng.uniform(86.5, 90, 60)),
        (rng.uniform(0, 360, 40), np.degrees(np.arcsin(rng.uniform(-1, 1, 40)))),
    ]
    ra = np.concatenate([p[0] for p in parts])
    dec = np.concatenate([p[1] for p in parts])
    return ra, dec


@pytest.fixture(scope="module")
def sky(server, template_url, tmp_path_factory):
    """A database of its own with spectra at _sky()'s positions: (settings, ids, ra, dec)."""
    ra, dec = _sky()
    for settings in _new_database(server, template_url, tmp_path_factory.mktemp("adql") / "home"):
        db = connect(settings)
        with db.sessions() as s, s.begin():
            survey = s.execute(text("INSERT INTO survey (name, reader) VALUES ('adql-sky', 'test') RETURNING id")).scalar_one()
            file_id = s.execute(
                text(
                    "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status) "
                    "VALUES (:s, 'memory://adql', repeat('0', 64), 0, 'loaded') RETURNING id"
                ),
                {"s": survey},
            ).scalar_one()
            source = s.execute(
                text(
                    "INSERT INTO source (survey_id, ingest_file_id, object_id, ra, dec) "
                    "VALUES (:s, :f, 'obj-host', 150, 2) RETURNING id"
                ),
                {"s": survey, "f": file_id},
            ).scalar_one()
            s.execute(
                text(
                    "INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, ra, dec, z, n_pix) "
                    "SELECT :src, :s, :f, 'obj' || i, r, d, i / 1000.0, 0 "
                    "FROM unnest(CAST(:ra AS float8[]), CAST(:dec AS float8[])) WITH ORDINALITY AS t(r, d, i)"
                ),
                {"src": source, "s": survey, "f": file_id, "ra": ra.tolist(), "dec": dec.tolist()},
            )
            s.execute(
                text(
                    "INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, n_pix) "
                    "SELECT :src, :s, :f, 'nopos' || i, 0 FROM generate_series(1, 3) AS i"
                ),
                {"src": source, "s": survey, "f": file_id},
            )
            ids = s.execute(text("SELECT id FROM spectrum WHERE ra IS NOT NULL ORDER BY id")).scalars().all()
        db.dispose()
        yield settings, np.asarray(ids), ra, dec


def _columns_of(settings):
    """columns_of for translate(), from information_schema as the reader sees it."""

    def columns_of(table: str) -> list[str]:
        schema, _, name = table.partition(".")
        rows = run_reader_query(
            settings,
            "SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = '{schema}' AND table_name = '{name}' ORDER BY ordinal_position",
        ).rows
        return [r[0] for r in rows]

    return columns_of


def _ids(settings, adql: str) -> set[int]:
    t = translate(adql)
    return {row[0] for row in run_reader_query(settings, t.sql).rows}


# -- numpy references --------------------------------------------------------------------------


def _distance(ra0, dec0, ra, dec):
    """Great-circle distance (deg), Vincenty's form (as tests/schema/test_cone.py)."""
    r0, d0, r, d = map(np.radians, (ra0, dec0, ra, dec))
    dra = r - r0
    num = np.hypot(np.cos(d) * np.sin(dra), np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(dra))
    den = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(dra)
    return np.degrees(np.arctan2(num, den))


def _unit(ra, dec):
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


def _in_polygon(vertices, ra, dec):
    """Point in a small spherical polygon, independently of the SQL: a gnomonic projection
    about the vertices' mean direction maps great circles to straight lines, where the
    even-odd ray test decides."""
    v = _unit(*np.asarray(vertices, dtype=float).T)
    c = v.mean(axis=0)
    c /= np.linalg.norm(c)
    e1 = np.cross([0.0, 0.0, 1.0], c) if abs(c[2]) < 0.9 else np.cross([1.0, 0.0, 0.0], c)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(c, e1)

    def project(xyz):
        z = xyz @ c
        return np.stack([(xyz @ e1) / z, (xyz @ e2) / z], axis=-1), z

    poly, _ = project(v)
    pts, z = project(_unit(ra, dec))
    inside = np.zeros(len(pts), dtype=bool)
    x, y = pts[:, 0], pts[:, 1]
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xs)
    return inside & (z > 0)


def _polygon_meets_circle(vertices, ra, dec, r):
    """Densified edges: the circle meets the polygon when its centre is inside or an edge
    point lies within r (edge points every ~0.001 deg)."""
    v = _unit(*np.asarray(vertices, dtype=float).T)
    points = []
    for a, b in zip(v, np.roll(v, -1, axis=0)):
        t = np.linspace(0, 1, 3000)[:, None]
        p = a * (1 - t) + b * t
        points.append(p / np.linalg.norm(p, axis=1, keepdims=True))
    edge = np.concatenate(points)
    edge_ra = np.degrees(np.arctan2(edge[:, 1], edge[:, 0])) % 360
    edge_dec = np.degrees(np.arcsin(edge[:, 2]))
    near = np.array([_distance(a, d, edge_ra, edge_dec).min() <= r for a, d in zip(ra, dec)])
    return near | _in_polygon(vertices, ra, dec)


# -- the corpus -------------------------------------------------------------------------------


@pytest.mark.parametrize("name,adql", VALID, ids=[n for n, _ in VALID])
def test_corpus_query_runs_on_the_reader(sky, name, adql):
    settings = sky[0]
    t = translate(adql, columns_of=_columns_of(settings))
    assert "TOP" not in t.sql.upper().split("--")[0].replace('"', " ").split()
    result = run_reader_query(settings, t.sql)
    assert len(t.sources) == len(result.columns) == len(t.xtypes)
    if t.top is not None:
        assert name.startswith(("top", "rand", "distance_2arg", "geometry", "comment"))


@pytest.mark.parametrize("name,adql", INVALID, ids=[n for n, _ in INVALID])
def test_invalid_adql_is_refused_with_a_message(name, adql):
    with pytest.raises(AdqlError) as err:
        translate(adql)
    assert isinstance(err.value, QueryError)
    message = str(err.value)
    expected = {
        "garbage": "starts with SELECT",
        "insert": "only SELECT",
        "drop": "only SELECT",
        "two_statements": "one ADQL query",
        "missing_from_table": "line 1, column",
        "unclosed_string": "not closed",
        "bad_coordsys": "'GALACTIC' is not supported",
        "circle_arity": "CIRCLE needs a centre and a radius",
        "polygon_odd": "at least three vertices",
        "top_not_number": "TOP needs a whole number",
        "pg_cast_syntax": "write CAST(x AS type)",
        "set_statement": "starts with SELECT",
    }[name]
    assert expected in message


@pytest.mark.parametrize(
    "adql,fix",
    [
        ("SELECT pg_sleep(1) FROM catalog.spectra", "not an ADQL function"),
        ("SELECT RAND(4) FROM catalog.spectra", "write RAND()"),
        ("SELECT spectrum_id FROM catalog.spectra LIMIT 3", "SELECT TOP n"),
        ("SELECT CAST(ra AS BOOLEAN) FROM catalog.spectra", "cast to SMALLINT"),
        ("SELECT REGION('CIRCLE ICRS 1 2 3') FROM catalog.spectra", "CIRCLE, BOX or POLYGON"),
        ("SELECT 1 FROM catalog.spectra WHERE INTERSECTS(POLYGON(1,1,2,1,2,2), POLYGON(1,1,2,1,2,2)) = 1", "two polygons"),
        ("SELECT 1 FROM catalog.spectra WHERE CONTAINS(POINT(ra, dec), ra) = 1", "must be written as POINT"),
        ("SELECT COORD1(CIRCLE(1, 2, 3)) FROM catalog.spectra", "COORD1 takes a POINT"),
        ("", "empty"),
        ("SELECT 1 FROM catalog.spectra WHERE CONTAINS(POINT(ra, dec), CIRCLE(10, 95, 1)) = 1", "outside [-90, 90]"),
        ("SELECT 1 FROM catalog.spectra WHERE CONTAINS(POINT(ra, dec), CIRCLE(10, 5, -1)) = 1", "between 0 and 180"),
    ],
)
def test_unsupported_constructs_say_what_to_write(adql, fix):
    with pytest.raises(AdqlError, match=None) as err:
        translate(adql)
    assert fix in str(err.value)


def test_syntax_errors_give_line_and_column():
    with pytest.raises(AdqlError, match=r"line 2, column \d+"):
        translate("SELECT spectrum_id\nFROM catalog.spectra WHERE AND z > 1")


# -- translation details -------------------------------------------------------------------------


def test_top_leaves_the_outer_query_but_limits_a_subquery():
    t = translate("SELECT TOP 7 * FROM (SELECT TOP 2 spectrum_id FROM catalog.spectra) AS q")
    assert t.top == 7
    assert t.sql.count("LIMIT") == 1 and "LIMIT 2" in t.sql
    assert translate("SELECT spectrum_id FROM catalog.spectra").top is None


def test_identifiers_fold_to_lower_case_and_delimited_ones_stay():
    t = translate('SELECT S.RA, S."Dec" AS "Mixed", Z FROM CATALOG.SPECTRA AS S')
    assert '"s"."ra"' in t.sql and '"s"."Dec"' in t.sql and 'AS "Mixed"' in t.sql and '"catalog"."spectra"' in t.sql


def test_tap_schema_names_are_case_insensitive():
    for adql in ("SELECT * FROM TAP_SCHEMA.columns WHERE table_name = 'catalog.spectra'",
                 'SELECT * FROM "TAP_SCHEMA"."COLUMNS"', "select * from tap_schema.Columns"):
        assert '"tap_schema"."columns"' in translate(adql).sql


def test_functions_map_to_postgresql():
    sql = translate("SELECT LOG(z), LOG10(z), TRUNCATE(z, 2), RAND(), MOD(spectrum_id, 3) FROM catalog.spectra").sql
    assert "ln(" in sql and "log10(" in sql and "trunc(CAST" in sql and "random()" in sql and "mod(" in sql


def test_function_values_on_the_reader(sky):
    settings = sky[0]
    t = translate(
        "SELECT LOG(EXP(2)), LOG10(1000), TRUNCATE(2.789, 1), TRUNCATE(-2.789), ROUND(2.75, 1), MOD(7, 3), "
        "MOD(7.5, 2), POWER(2, 10), RAND(), CEILING(1.2), 'a' || 'b' FROM catalog.spectra WHERE spectrum_id = "
        "(SELECT MIN(spectrum_id) FROM catalog.spectra)"
    )
    row = run_reader_query(settings, t.sql).rows[0]
    assert row[:8] == pytest.approx([2.0, 3.0, 2.7, -2.0, 2.8, 1.0, 1.5, 1024.0])
    assert 0 <= row[8] < 1 and row[9] == 2 and row[10] == "ab"


def test_sources_resolve_aliases_subqueries_and_star(sky):
    settings = sky[0]
    columns_of = _columns_of(settings)
    t = translate(
        "SELECT q.sid, q.z AS redshift, s.ra, 1 + 1 AS two FROM "
        "(SELECT spectrum_id AS sid, z FROM catalog.spectra) AS q JOIN catalog.spectra AS s ON s.spectrum_id = q.sid",
        columns_of=columns_of,
    )
    assert t.sources == [("catalog.spectra", "spectrum_id"), ("catalog.spectra", "z"), ("catalog.spectra", "ra"), None]
    star = translate("SELECT * FROM catalog.spectra", columns_of=columns_of)
    names = columns_of("catalog.spectra")
    assert star.sources == [("catalog.spectra", n) for n in names]
    assert run_reader_query(settings, star.sql).columns == names
    assert translate("SELECT * FROM catalog.spectra").sources == []  # no columns_of: unknown


def test_geometry_outputs_are_dali_arrays_with_xtypes(sky):
    settings = sky[0]
    t = translate(
        "SELECT TOP 1 POINT('ICRS', ra, dec) AS p, CIRCLE('ICRS', ra, dec, 0.5) AS c, "
        "BOX('ICRS', 10, 20, 2, 4) AS b, POLYGON('ICRS', 1, 2, 3, 4, 5, 6) AS g, ra "
        "FROM catalog.spectra WHERE ra IS NOT NULL ORDER BY spectrum_id"
    )
    assert t.xtypes == ["point", "circle", "polygon", "polygon", None]
    row = run_reader_query(settings, t.sql).rows[0]
    assert row[0] == [row[4], pytest.approx(sky[3][0])] and len(row[1]) == 3 and row[1][2] == 0.5
    assert row[2] == [9, 18, 11, 18, 11, 22, 9, 22]
    assert row[3] == [1, 2, 3, 4, 5, 6]


# -- geometry against numpy -----------------------------------------------------------------------

CIRCLES = [(150.0, 2.0, 1.0), (0.5, -30.0, 1.5), (10.0, 89.5, 2.0), (359.8, -29.0, 0.7)]
POLYGONS = {
    "convex": [(149, 1), (151, 1.5), (150.5, 3), (149.2, 2.6)],
    "non_convex": [(148.5, 0.5), (151.5, 0.5), (151.5, 3.5), (150.5, 3.5), (150.5, 1.5), (149.5, 1.5), (149.5, 3.5),
                   (148.5, 3.5)],
    "across_ra_0": [(359.0, -31.0), (1.5, -31.0), (1.5, -29.0), (359.0, -29.0)],
    "round_the_pole": [(0, 88.0), (90, 88.0), (180, 88.0), (270, 88.0)],
}


def _margin(distance, r, ids):
    """Ids decided by rounding (within 1e-9 deg of the edge): no assertion relies on them."""
    return set(ids[np.abs(distance - r) <= 1e-9].tolist())


@pytest.mark.parametrize("ra0,dec0,r", CIRCLES)
def test_contains_point_circle_equals_brute_force(sky, ra0, dec0, r):
    settings, ids, ra, dec = sky
    d = _distance(ra0, dec0, ra, dec)
    expected = set(ids[d <= r].tolist())
    edge = _margin(d, r, ids)
    for adql in (
        (f"SELECT t.spectrum_id FROM catalog.spectra AS t "
         f"WHERE CONTAINS(POINT('ICRS', t.ra, t.dec), CIRCLE('ICRS', {ra0}, {dec0}, {r})) = 1"),
        f"SELECT spectrum_id FROM catalog.spectra WHERE 1 = CONTAINS(POINT('', ra, dec), CIRCLE({ra0}, {dec0}, {r}))",
        f"SELECT spectrum_id FROM catalog.spectra WHERE DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', {ra0}, {dec0})) <= {r}",
        f"SELECT spectrum_id FROM catalog.spectra WHERE {r} >= DISTANCE({ra0}, {dec0}, ra, dec)",
        # A subquery is no table with an index: the declination band instead.
        (f"SELECT q.i FROM (SELECT spectrum_id AS i, ra AS a, dec AS b FROM catalog.spectra) AS q "
         f"WHERE CONTAINS(POINT('ICRS', q.a, q.b), CIRCLE('ICRS', {ra0}, {dec0}, {r})) = 1"),
    ):
        got = _ids(settings, adql)
        assert got ^ expected <= edge, adql
    outside = _ids(settings, f"SELECT spectrum_id FROM catalog.spectra WHERE "
                             f"CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', {ra0}, {dec0}, {r})) = 0")
    assert outside ^ (set(ids.tolist()) - expected) <= edge  # NULL positions are neither in nor out


def test_cone_queries_get_an_index_backed_preselection():
    spectra = translate("SELECT spectrum_id FROM catalog.spectra AS t "
                        "WHERE CONTAINS(POINT('ICRS', t.ra, t.dec), CIRCLE('ICRS', 150, 2, 0.1)) = 1").sql
    assert 'IN (SELECT "spectrum_id" FROM "catalog".cone_search_spectra(150.0, 2.0, 360.0' in spectra
    distance = translate("SELECT spectrum_id FROM catalog.spectra "
                         "WHERE DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', -10, 2)) < 0.1").sql
    assert "cone_search_spectra(350.0, 2.0," in distance
    other = translate("SELECT source_id FROM catalog.rotation AS r "
                      "WHERE CONTAINS(POINT('ICRS', r.ra_center, r.dec_center), CIRCLE('ICRS', 150, 2, 0.1)) = 1").sql
    assert '"r"."dec_center" BETWEEN 1.8999' in other and "adql_point_in_circle" in other
    # Under OR the pre-selection would not be equivalent for NULL positions: exact test only.
    either = translate("SELECT spectrum_id FROM catalog.spectra WHERE z > 1 OR "
                       "CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150, 2, 0.1)) = 1").sql
    assert "cone_search_spectra" not in either and "adql_point_in_circle" in either


@pytest.mark.parametrize("name", list(POLYGONS))
def test_contains_point_polygon_equals_brute_force(sky, name):
    settings, ids, ra, dec = sky
    vertices = POLYGONS[name]
    expected = set(ids[_in_polygon(vertices, ra, dec)].tolist())
    assert expected, "the data should put points in every polygon"
    for order in (vertices, vertices[::-1]):  # either orientation: inside is the smaller region
        flat = ", ".join(f"{a}, {b}" for a, b in order)
        got = _ids(settings, f"SELECT spectrum_id FROM catalog.spectra "
                             f"WHERE CONTAINS(POINT('ICRS', ra, dec), POLYGON('ICRS', {flat})) = 1")
        assert got == expected, (name, sorted(got ^ expected)[:5])
        points = ", ".join(f"POINT('ICRS', {a}, {b})" for a, b in order)
        assert _ids(settings, f"SELECT spectrum_id FROM catalog.spectra "
                              f"WHERE CONTAINS(POINT(ra, dec), POLYGON({points})) = 1") == expected


def test_contains_point_box_equals_brute_force(sky):
    settings, ids, ra, dec = sky
    corners = [(149, 1.5), (151, 1.5), (151, 2.5), (149, 2.5)]  # BOX(150, 2, 2, 1), great-circle edges
    expected = set(ids[_in_polygon(corners, ra, dec)].tolist())
    got = _ids(settings, "SELECT spectrum_id FROM catalog.spectra "
                         "WHERE CONTAINS(POINT('ICRS', ra, dec), BOX('ICRS', 150, 2, 2, 1)) = 1")
    assert expected and got == expected


def test_intersects_circles_and_polygon_circle_equal_brute_force(sky):
    settings, ids, ra, dec = sky
    d = _distance(150, 2, ra, dec)
    expected = set(ids[d <= 1.05].tolist())
    got = _ids(settings, "SELECT spectrum_id FROM catalog.spectra "
                         "WHERE INTERSECTS(CIRCLE('ICRS', ra, dec, 0.05), CIRCLE('ICRS', 150, 2, 1)) = 1")
    assert got ^ expected <= _margin(d, 1.05, ids)
    vertices = POLYGONS["non_convex"]
    flat = ", ".join(f"{a}, {b}" for a, b in vertices)
    near = _polygon_meets_circle(vertices, ra, dec, 0.2)
    got = _ids(settings, f"SELECT spectrum_id FROM catalog.spectra "
                         f"WHERE INTERSECTS(CIRCLE('ICRS', ra, dec, 0.2), POLYGON('ICRS', {flat})) = 1")
    # The densified edges are exact to ~1e-6 deg; rows that close to r are not asserted.
    assert got == set(ids[near].tolist())
    # A point INTERSECTS a shape when the shape contains it.
    assert _ids(settings, f"SELECT spectrum_id FROM catalog.spectra "
                          f"WHERE INTERSECTS(POINT(ra, dec), POLYGON({flat})) = 1") == set(
        ids[_in_polygon(vertices, ra, dec)].tolist())


def test_distance_values_equal_brute_force(sky):
    settings, ids, ra, dec = sky
    t = translate("SELECT spectrum_id, DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 150, 2)) AS d "
                  "FROM catalog.spectra WHERE ra IS NOT NULL ORDER BY spectrum_id")
    rows = run_reader_query(settings, t.sql).rows
    assert [r[0] for r in rows] == ids.tolist()
    assert np.allclose([r[1] for r in rows], _distance(150, 2, ra, dec), rtol=0, atol=1e-9)


def test_circle_in_circle_and_polygon_in_circle(sky):
    settings = sky[0]
    t = translate(
        "SELECT CONTAINS(CIRCLE(150, 2, 0.5), CIRCLE(150, 2.4, 1)), CONTAINS(CIRCLE(150, 2, 0.5), CIRCLE(150, 2.6, 1)), "
        "CONTAINS(POLYGON(150, 2, 150.5, 2, 150.2, 2.5), CIRCLE(150, 2, 1)), "
        "CONTAINS(BOX(150, 2, 3, 3), CIRCLE(150, 2, 1)), AREA(CIRCLE(0, 0, 90)) "
        "FROM catalog.spectra WHERE spectrum_id = (SELECT MIN(spectrum_id) FROM catalog.spectra)"
    )
    row = run_reader_query(settings, t.sql).rows[0]
    assert row[:4] == (1, 0, 1, 0)
    assert row[4] == pytest.approx(2 * np.pi * (180 / np.pi) ** 2)  # a hemisphere in square degrees


# -- index use ------------------------------------------------------------------------------------


def test_cone_on_spectra_uses_the_sky_index(fresh_settings):
    """The reader's plan runs catalog.cone_search_spectra; what that runs (as the owner,
    public.cone_search_spectra) scans ix_spectrum_sky on a catalogue of 100 000 spectra."""
    db = connect(fresh_settings)
    with db.sessions() as s, s.begin():
        survey = s.execute(text("INSERT INTO survey (name, reader) VALUES ('big', 'test') RETURNING id")).scalar_one()
        file_id = s.execute(
            text("INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status) "
                 "VALUES (:s, 'memory://big', repeat('1', 64), 0, 'loaded') RETURNING id"),
            {"s": survey},
        ).scalar_one()
        source = s.execute(
            text("INSERT INTO source (survey_id, ingest_file_id, object_id, ra, dec) "
                 "VALUES (:s, :f, 'host', 150, 2) RETURNING id"),
            {"s": survey, "f": file_id},
        ).scalar_one()
        s.execute(text("SELECT setseed(0.23)"))
        s.execute(
            text("INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, ra, dec, n_pix) "
                 "SELECT :src, :s, :f, 'o' || i, 360 * random(), degrees(asin(2 * random() - 1)), 0 "
                 "FROM generate_series(1, 100000) AS i"),
            {"src": source, "s": survey, "f": file_id},
        )
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute("ANALYZE spectrum")
        inner = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT * FROM public.cone_search_spectra(150, 2, 360)"))
    db.dispose()
    assert "ix_spectrum_sky" in inner, inner
    t = translate("SELECT t.spectrum_id, t.ra, t.dec FROM catalog.spectra AS t "
                  "WHERE CONTAINS(POINT('ICRS', t.ra, t.dec), CIRCLE('ICRS', 150, 2, 0.1)) = 1")
    plan = "\n".join(r[0] for r in run_reader_query(fresh_settings, "EXPLAIN " + t.sql).rows)
    assert "Function Scan on cone_search_spectra" in plan, plan
    # The cone's ids reach catalog.spectra's rows through the primary key, not a scan.
    assert "Index Scan using pk_spectrum on spectrum" in plan and "Seq Scan on spectrum" not in plan, plan
