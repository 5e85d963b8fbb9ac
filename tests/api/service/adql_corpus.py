"""ADQL queries as TOPCAT and pyvo users write them: the corpus the parser choice was
measured on (scripts/compare_adql_parsers.py, table in docs/adql.md) and that
test_adql.py runs on the reader.

Each entry: (name, ADQL, valid). Valid queries name only catalogue views that exist
after the migrations (catalog.*, tap_schema.* once migration 0023 is there).
"""

from __future__ import annotations

VALID: list[tuple[str, str]] = [
    ("top", "SELECT TOP 10 spectrum_id, ra, dec FROM catalog.spectra"),
    ("top_order", "SELECT TOP 5 spectrum_id, z FROM catalog.spectra ORDER BY z DESC, spectrum_id"),
    ("offset", "SELECT spectrum_id FROM catalog.spectra ORDER BY spectrum_id OFFSET 3"),
    ("top_offset", "SELECT TOP 3 spectrum_id FROM catalog.spectra ORDER BY spectrum_id OFFSET 2"),
    ("join", ("SELECT s.spectrum_id, s.z, l.line, l.flux FROM catalog.spectra AS s "
              "JOIN catalog.lines AS l ON l.spectrum_id = s.spectrum_id WHERE l.snr > 3")),
    ("left_join_using", ("SELECT spectrum_id, s.ra, k.velocity FROM catalog.spectra s "
                         "LEFT OUTER JOIN catalog.stellar_kinematics k USING (spectrum_id)")),
    ("subquery_in", ("SELECT spectrum_id, ra FROM catalog.spectra WHERE spectrum_id IN "
                     "(SELECT spectrum_id FROM catalog.lines WHERE line = 'Ha')")),
    ("subquery_top", "SELECT * FROM (SELECT TOP 2 spectrum_id, z FROM catalog.spectra ORDER BY z) AS q"),
    ("group_having", ("SELECT survey, COUNT(*) AS n, AVG(z) AS mean_z FROM catalog.spectra "
                      "GROUP BY survey HAVING COUNT(*) > 0 ORDER BY n DESC")),
    ("distinct", "SELECT DISTINCT survey FROM catalog.spectra"),
    ("ilike", "SELECT spectrum_id FROM catalog.spectra WHERE object_id ILIKE 'obj%'"),
    ("like_between", "SELECT spectrum_id FROM catalog.spectra WHERE object_id LIKE '%1%' AND z BETWEEN 0 AND 0.5"),
    ("quoted_ident", 'SELECT "spectrum_id", s."ra" AS "RA deg" FROM catalog.spectra AS s'),
    ("upper_case_names", "SELECT SPECTRUM_ID, RA FROM CATALOG.SPECTRA WHERE DEC > -90"),
    ("concat", "SELECT survey || ':' || object_id AS label FROM catalog.spectra"),
    ("cast", "SELECT CAST(spectrum_id AS VARCHAR(20)) AS sid, CAST(z AS REAL) AS zr FROM catalog.spectra"),
    ("math", ("SELECT LOG(ra + 1) AS ln_ra, LOG10(ra + 1) AS lg, TRUNCATE(dec, 2) AS td, ROUND(dec, 1) AS rd, "
              "MOD(spectrum_id, 7) AS m, POWER(z, 2) AS p, SQRT(ABS(dec)) AS sq, EXP(0) AS e, PI() AS pi, "
              "CEILING(ra) AS c, FLOOR(ra) AS f, SIGN(dec) AS sg FROM catalog.spectra")),
    ("trig", ("SELECT SIN(RADIANS(dec)), COS(RADIANS(dec)), TAN(0.5), COT(0.5), ASIN(0.5), ACOS(0.5), "
              "ATAN(1), ATAN2(1, 2), DEGREES(PI()) FROM catalog.spectra")),
    ("rand", "SELECT TOP 3 spectrum_id, RAND() AS r FROM catalog.spectra"),
    ("string_fns", "SELECT LOWER(survey), UPPER(object_id) FROM catalog.spectra WHERE object_id IS NOT NULL"),
    ("case_coalesce", ("SELECT spectrum_id, CASE WHEN z > 0.1 THEN 'far' ELSE 'near' END AS d, "
                       "COALESCE(z, -1) AS zz FROM catalog.spectra")),
    ("union", "SELECT spectrum_id FROM catalog.spectra WHERE z < 0.1 UNION SELECT spectrum_id FROM catalog.lines"),
    ("exists", ("SELECT s.spectrum_id FROM catalog.spectra s WHERE EXISTS "
                "(SELECT 1 FROM catalog.lines l WHERE l.spectrum_id = s.spectrum_id)")),
    ("contains_circle", ("SELECT spectrum_id, ra, dec FROM catalog.spectra AS t "
                         "WHERE CONTAINS(POINT('ICRS', t.ra, t.dec), CIRCLE('ICRS', 150.0, 2.0, 1.0)) = 1")),
    ("contains_reversed", ("SELECT spectrum_id FROM catalog.spectra "
                           "WHERE 1 = CONTAINS(POINT('', ra, dec), CIRCLE('', 150.0, 2.0, 1.0))")),
    ("distance_lt", ("SELECT spectrum_id, DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 150, 2)) AS d "
                     "FROM catalog.spectra WHERE DISTANCE(POINT('ICRS', ra, dec), POINT('ICRS', 150, 2)) < 0.5 "
                     "ORDER BY d")),
    ("distance_2arg", "SELECT TOP 5 spectrum_id, DISTANCE(ra, dec, 150, 2) AS d FROM catalog.spectra ORDER BY d"),
    ("contains_box", ("SELECT spectrum_id FROM catalog.spectra "
                      "WHERE CONTAINS(POINT('ICRS', ra, dec), BOX('ICRS', 150, 2, 2, 1)) = 1")),
    ("contains_polygon", ("SELECT spectrum_id FROM catalog.spectra WHERE CONTAINS(POINT('ICRS', ra, dec), "
                          "POLYGON('ICRS', 149, 1, 151, 1.5, 150.5, 3, 149.2, 2.6)) = 1")),
    ("intersects_circle", ("SELECT spectrum_id FROM catalog.spectra "
                           "WHERE INTERSECTS(CIRCLE('ICRS', ra, dec, 0.01), CIRCLE('ICRS', 150, 2, 1)) = 1")),
    ("geometry_output", ("SELECT TOP 3 POINT('ICRS', ra, dec) AS pos, CIRCLE('ICRS', ra, dec, 0.1) AS c, "
                         "COORD1(POINT('ICRS', ra, dec)) AS c1, COORD2(POINT('ICRS', ra, dec)) AS c2 "
                         "FROM catalog.spectra")),
    ("tap_schema_columns", "SELECT * FROM TAP_SCHEMA.columns WHERE table_name = 'catalog.spectra'"),
    ("tap_schema_tables", "SELECT table_name, description FROM TAP_SCHEMA.tables ORDER BY table_name"),
    ("comment_and_newlines", "-- a comment\nSELECT TOP 1\n  spectrum_id /* inline */\nFROM catalog.spectra\n"),
]

INVALID: list[tuple[str, str]] = [
    ("garbage", "SELEKT * FROM catalog.spectra"),
    ("insert", "INSERT INTO catalog.spectra (spectrum_id) VALUES (1)"),
    ("drop", "DROP TABLE catalog.spectra"),
    ("two_statements", "SELECT 1 FROM catalog.spectra; SELECT 2 FROM catalog.spectra"),
    ("missing_from_table", "SELECT spectrum_id FROM WHERE z > 1"),
    ("unclosed_string", "SELECT spectrum_id FROM catalog.spectra WHERE survey = 'abc"),
    ("bad_coordsys", ("SELECT spectrum_id FROM catalog.spectra "
                      "WHERE CONTAINS(POINT('GALACTIC', ra, dec), CIRCLE('GALACTIC', 10, 2, 1)) = 1")),
    ("circle_arity", "SELECT spectrum_id FROM catalog.spectra WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 10, 2)) = 1"),
    ("polygon_odd", "SELECT spectrum_id FROM catalog.spectra WHERE CONTAINS(POINT('ICRS', ra, dec), POLYGON('ICRS', 1, 2, 3, 4, 5)) = 1"),
    ("top_not_number", "SELECT TOP abc spectrum_id FROM catalog.spectra"),
    ("pg_cast_syntax", "SELECT spectrum_id::text FROM catalog.spectra"),
    ("set_statement", "SET statement_timeout = 0"),
]
