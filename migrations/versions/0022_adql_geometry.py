"""ADQL geometry for catalogue readers: distance and the CONTAINS/INTERSECTS predicates.

The TAP service translates ADQL (api/service/adql.py, docs/adql.md). Its geometry values
are float8 arrays as DALI writes them (point [ra, dec], circle [ra, dec, r], polygon [ra1,
dec1, ...], degrees, ICRS), and its predicates are these SQL functions in schema
``catalog``, executable by ``skyledger_reader`` only (PUBLIC loses EXECUTE, as for the
cone functions of 0007). They are plain SQL, IMMUTABLE and PARALLEL SAFE, and read no
table; the index use comes from the translator, which puts ``catalog.cone_search_spectra``
(or a declination band) in front of them.

Polygons: edges are great-circle arcs and the inside is the smaller of the two regions
the edges bound, whatever the vertex order. A point is inside when the edges, seen in
the plane tangent to the sphere at the point, wind once round it in the sense in which
they bound the smaller region; the region on the left of the edges is the smaller one
when its interior angles sum to at most (n - 2) pi + 2 pi (Girard's theorem: its area
is that sum less (n - 2) pi).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"


def _xyz(ra: str, dec: str) -> tuple[str, str, str]:
    """Unit vector components of a position in degrees, as SQL."""
    return (
        f"cos(radians({dec})) * cos(radians({ra}))",
        f"cos(radians({dec})) * sin(radians({ra}))",
        f"sin(radians({dec}))",
    )


def _dot(a: str, b: str) -> str:
    return f"({a}_x * {b}_x + {a}_y * {b}_y + {a}_z * {b}_z)"


def _triple(a: str, b: str, c: str) -> str:
    """a . (b x c) for vectors whose components are the columns <name>_x, <name>_y, <name>_z."""
    return (
        f"({a}_x * ({b}_y * {c}_z - {b}_z * {c}_y) + {a}_y * ({b}_z * {c}_x - {b}_x * {c}_z)"
        f" + {a}_z * ({b}_x * {c}_y - {b}_y * {c}_x))"
    )


# Each vertex b of the polygon with its predecessor a and successor c, as unit vectors,
# plus its ra and dec (for distances). {poly} is the array parameter.
_VERTICES = """
    WITH k AS (SELECT cardinality({poly}) / 2 AS n),
    v AS (
        SELECT i, {poly}[2 * i + 1] AS ra, {poly}[2 * i + 2] AS "dec", {vx} AS x, {vy} AS y, {vz} AS z
        FROM k, generate_series(0, k.n - 1) AS i
    ),
    e AS (
        SELECT a.x AS a_x, a.y AS a_y, a.z AS a_z, b.x AS b_x, b.y AS b_y, b.z AS b_z, c.x AS c_x, c.y AS c_y, c.z AS c_z,
               b.ra AS b_ra, b."dec" AS b_dec, c.ra AS next_ra, c."dec" AS next_dec
        FROM v AS b
        CROSS JOIN k
        JOIN v AS a ON a.i = (b.i + k.n - 1) % k.n
        JOIN v AS c ON c.i = (b.i + 1) % k.n
    )"""


def _vertices(poly: str) -> str:
    vx, vy, vz = _xyz(f"{poly}[2 * i + 1]", f"{poly}[2 * i + 2]")
    return _VERTICES.format(poly=poly, vx=vx, vy=vy, vz=vz)


# The interior angle on the left of the edges at vertex b: from the direction towards c
# round (anticlockwise, seen from outside) to the direction towards a, in [0, 2 pi).
_LEFT_ANGLE = f"atan2({_triple('b', 'c', 'a')}, {_dot('c', 'a')} - {_dot('b', 'c')} * {_dot('b', 'a')})"
# The angle the edge b -> c subtends at the point p, signed (anticlockwise positive).
_WINDING = f"atan2({_triple('p', 'b', 'c')}, {_dot('b', 'c')} - {_dot('p', 'b')} * {_dot('p', 'c')})"

_PX, _PY, _PZ = _xyz("p_ra", "p_dec")
_CX, _CY, _CZ = _xyz("c_ra", "c_dec")

FUNCTIONS = f"""
CREATE FUNCTION catalog.adql_distance(ra1 double precision, dec1 double precision,
                                      ra2 double precision, dec2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- The body of public.angular_distance_deg (0001), which readers cannot call: Vincenty's
    -- form of the great-circle distance, accurate at all separations, in degrees.
    SELECT degrees(atan2(
        sqrt((cos(d2) * sin(dra)) ^ 2 + (cos(d1) * sin(d2) - sin(d1) * cos(d2) * cos(dra)) ^ 2),
        sin(d1) * sin(d2) + cos(d1) * cos(d2) * cos(dra)))
    FROM (SELECT CASE WHEN abs(dec1) < 1e-300 THEN 0 ELSE radians(dec1) END AS d1,
                 CASE WHEN abs(dec2) < 1e-300 THEN 0 ELSE radians(dec2) END AS d2,
                 CASE WHEN abs(ra2 - ra1) < 1e-300 THEN 0 ELSE radians(ra2 - ra1) END AS dra) AS r
$$;

CREATE FUNCTION catalog.adql_point_in_circle(p_ra double precision, p_dec double precision,
                                             c_ra double precision, c_dec double precision, r double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- Centre first, as public.cone_search measures.
    SELECT catalog.adql_distance(c_ra, c_dec, p_ra, p_dec) <= r
$$;

CREATE FUNCTION catalog.adql_circle_in_circle(ra1 double precision, dec1 double precision, r1 double precision,
                                              ra2 double precision, dec2 double precision, r2 double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT catalog.adql_distance(ra2, dec2, ra1, dec1) + r1 <= r2
$$;

CREATE FUNCTION catalog.adql_circles_intersect(ra1 double precision, dec1 double precision, r1 double precision,
                                               ra2 double precision, dec2 double precision, r2 double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT catalog.adql_distance(ra1, dec1, ra2, dec2) <= r1 + r2
$$;

CREATE FUNCTION catalog.adql_point_in_polygon(p_ra double precision, p_dec double precision,
                                              poly double precision[])
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    {_vertices("poly")},
    p AS (SELECT {_PX} AS p_x, {_PY} AS p_y, {_PZ} AS p_z),
    s AS (
        SELECT sum({_WINDING}) AS winding,
               sum(mod(({_LEFT_ANGLE} + 2 * pi())::numeric, (2 * pi())::numeric)::double precision) AS left_angles,
               count(*) AS n
        FROM e, p
    )
    -- The edges wind once round a point inside (+-2 pi; 0, give or take rounding, round a
    -- point outside, -+2 pi round one whose antipode is inside): anticlockwise when the
    -- region on their left is the smaller one, clockwise when it is the larger.
    SELECT CASE WHEN n < 3 OR cardinality(poly) % 2 = 1 THEN NULL
                WHEN left_angles - (n - 2) * pi() <= 2 * pi() THEN winding > pi()
                ELSE winding < -pi() END
    FROM s
$$;

CREATE FUNCTION catalog.adql_polygon_in_circle(poly double precision[],
                                               c_ra double precision, c_dec double precision, r double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- Exact for r <= 90 degrees: such a cap holds every great-circle arc between two of
    -- its points, so it holds the polygon when it holds the vertices.
    SELECT bool_and(catalog.adql_distance(c_ra, c_dec, poly[2 * i + 1], poly[2 * i + 2]) <= r)
    FROM generate_series(0, cardinality(poly) / 2 - 1) AS i
$$;

CREATE FUNCTION catalog.adql_polygon_intersects_circle(poly double precision[],
                                                       c_ra double precision, c_dec double precision,
                                                       r double precision)
RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- The circle meets the polygon when its centre is inside, or an edge comes within r of
    -- the centre: the distance to an arc is the distance to its great circle when the
    -- centre's foot on that circle lies between the arc's ends, else to the nearer end.
    {_vertices("poly")},
    p AS (SELECT {_CX} AS p_x, {_CY} AS p_y, {_CZ} AS p_z),
    d AS (
        SELECT least(catalog.adql_distance(c_ra, c_dec, b_ra, b_dec), catalog.adql_distance(c_ra, c_dec, next_ra, next_dec))
                   AS to_ends,
               CASE WHEN nn > 0 AND sa >= 0 AND sb >= 0
                    THEN degrees(asin(least(1.0, abs(pn) / sqrt(nn)))) END AS to_arc
        FROM (
            SELECT b_ra, b_dec, next_ra, next_dec,
                   (b_y * c_z - b_z * c_y) ^ 2 + (b_z * c_x - b_x * c_z) ^ 2 + (b_x * c_y - b_y * c_x) ^ 2 AS nn,
                   {_triple("p", "b", "c")} AS pn,
                   -- (b x p) . (b x c) and (p x c) . (b x c): the foot lies between b and c
                   {_dot("b", "b")} * {_dot("p", "c")} - {_dot("b", "c")} * {_dot("p", "b")} AS sa,
                   {_dot("p", "b")} * {_dot("c", "c")} - {_dot("p", "c")} * {_dot("b", "c")} AS sb
            FROM e, p
        ) AS arcs
    )
    SELECT catalog.adql_point_in_polygon(c_ra, c_dec, poly)
        OR EXISTS (SELECT FROM d WHERE to_ends <= r OR to_arc <= r)
$$;
"""

SIGNATURES = {
    "catalog.adql_distance": "(double precision, double precision, double precision, double precision)",
    "catalog.adql_point_in_circle": "(double precision, double precision, double precision, double precision, double precision)",
    "catalog.adql_circle_in_circle": "(double precision, double precision, double precision, double precision, double precision, double precision)",
    "catalog.adql_circles_intersect": "(double precision, double precision, double precision, double precision, double precision, double precision)",
    "catalog.adql_point_in_polygon": "(double precision, double precision, double precision[])",
    "catalog.adql_polygon_in_circle": "(double precision[], double precision, double precision, double precision)",
    "catalog.adql_polygon_intersects_circle": "(double precision[], double precision, double precision, double precision)",
}

COMMENTS = {
    "catalog.adql_distance": "ADQL DISTANCE: great-circle distance in degrees between two ICRS positions in degrees",
    "catalog.adql_point_in_circle": "ADQL CONTAINS(POINT, CIRCLE): the point lies within r degrees of the centre",
    "catalog.adql_circle_in_circle": "ADQL CONTAINS(CIRCLE, CIRCLE): the first circle lies inside the second",
    "catalog.adql_circles_intersect": "ADQL INTERSECTS(CIRCLE, CIRCLE): the circles overlap or touch",
    "catalog.adql_point_in_polygon": "ADQL CONTAINS(POINT, POLYGON): great-circle edges, inside = the smaller region",
    "catalog.adql_polygon_in_circle": "ADQL CONTAINS(POLYGON, CIRCLE): every vertex within r (exact for r <= 90 deg)",
    "catalog.adql_polygon_intersects_circle": "ADQL INTERSECTS(POLYGON, CIRCLE): centre inside, or an edge within r",
}


def upgrade() -> None:
    op.execute(FUNCTIONS)
    for name, signature in SIGNATURES.items():
        op.execute(f"COMMENT ON FUNCTION {name}{signature} IS '{COMMENTS[name]}'")
        op.execute(f"REVOKE EXECUTE ON FUNCTION {name}{signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {name}{signature} TO {READER_ROLE}")


def downgrade() -> None:
    # Dependants first: the polygon and circle predicates call adql_distance.
    for name in reversed(list(SIGNATURES)):
        op.execute(f"DROP FUNCTION {name}{SIGNATURES[name]}")
