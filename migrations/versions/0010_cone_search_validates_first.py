"""Cone search refuses an invalid cone whatever plan the server picks.

``sky_zone_ranges`` raises on an RA, Dec or radius out of range, but ``cone_search`` and
``cone_search_spectra`` only call it as one side of a join, and the executor need not
run that side at all: a hash join whose other side (``source`` or ``spectrum``) is empty
stops before it. On an empty or freshly analysed catalogue an invalid cone then came
back as an empty result instead of an error. An uncorrelated ``EXISTS`` over the same
ranges is planned as a one-time filter (an InitPlan) evaluated before the join, so the
arguments are checked first on every plan, by the one function that owns the checks.
The functions stay plain SQL, so callers still inline them and keep the index plan.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# One body for both tables; {gate} is the validation clause (empty before this revision).
CONE_FUNCTION = """
CREATE OR REPLACE FUNCTION {name}(ra_deg double precision, dec_deg double precision, radius_arcsec double precision)
RETURNS TABLE ({id_column} bigint, ra double precision, "dec" double precision, distance_arcsec double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT s.id, s.ra, s.dec, d.deg * 3600.0
    FROM sky_zone_ranges(ra_deg, dec_deg, radius_arcsec / 3600.0) AS r
    JOIN {table} AS s
      ON s.sky_zone = r.zone AND s.ra BETWEEN r.ra_min AND r.ra_max AND s.dec BETWEEN r.dec_min AND r.dec_max
    CROSS JOIN LATERAL (SELECT angular_distance_deg(ra_deg, dec_deg, s.ra, s.dec) AS deg) AS d
    WHERE d.deg <= radius_arcsec / 3600.0{gate}
    ORDER BY d.deg, s.id
$$;
"""
GATE = "\n      AND EXISTS (SELECT FROM sky_zone_ranges(ra_deg, dec_deg, radius_arcsec / 3600.0))"
CONE_FUNCTIONS = (("cone_search", "source_id", "source"), ("cone_search_spectra", "spectrum_id", "spectrum"))


def _define(gate: str) -> None:
    for name, id_column, table in CONE_FUNCTIONS:
        op.execute(CONE_FUNCTION.format(name=name, id_column=id_column, table=table, gate=gate))


def upgrade() -> None:
    _define(GATE)


def downgrade() -> None:
    _define("")
