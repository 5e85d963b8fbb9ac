"""Wavelength coverage and resolution of every spectrum, in catalog.spectra.

A user checking what a survey delivered (vacuum wavelengths? which range? which
resolution?) had to read the pixel arrays. ``spectrum`` gets three scalar columns, filled
by the loader from now on and here for the spectra already in: the vacuum wavelength of
the first and last pixel, and the median resolving power over the pixels where the file
gives one. ``catalog.spectra`` shows them as its last three columns.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# The view of migration 0002 with the three columns added at its end (which CREATE OR
# REPLACE allows, keeping the grants of the reader role).
SPECTRA_VIEW = """
CREATE OR REPLACE VIEW catalog.spectra AS
SELECT sp.id AS spectrum_id,
       sv.name AS survey,
       sp.object_id,
       sp.ra,
       sp.dec,
       sp.z,
       f.uri AS file,
       f.version AS file_version,
       sp.n_pix,
       sp.source_id,
       src.object_id AS source_object_id,
       src.parent_id AS parent_source_id,
       sp.flux_unit,
       sp.flags,
       sp.wave_min,
       sp.wave_max,
       sp.resolution_median
FROM spectrum AS sp
JOIN survey AS sv ON sv.id = sp.survey_id
JOIN ingest_file AS f ON f.id = sp.ingest_file_id
JOIN source AS src ON src.id = sp.source_id
WHERE f.status = 'loaded'
  AND NOT EXISTS (
      SELECT 1 FROM ingest_file AS newer
      WHERE newer.survey_id = f.survey_id AND newer.uri = f.uri
        AND newer.status = 'loaded' AND newer.version > f.version)
"""

READER_ROLE = "skyledger_reader"

COLUMNS = {
    "wave_min": ("Wavelength of the first pixel, vacuum; NULL without pixels", sa.Double()),
    "wave_max": ("Wavelength of the last pixel, vacuum; NULL without pixels", sa.Double()),
    "resolution_median": ("Median resolving power lambda/FWHM over the pixels; NULL when the file gives none", sa.REAL()),
}


def upgrade() -> None:
    for name, (doc, type_) in COLUMNS.items():
        op.add_column("spectrum", sa.Column(name, type_, nullable=True, comment=doc))
    op.execute(
        "UPDATE spectrum AS s SET wave_min = g.wave[1], wave_max = g.wave[g.n_pix] "
        "FROM wavelength_grid AS g WHERE g.id = s.wave_grid_id"
    )
    # PostgreSQL orders NaN above every number and equal to itself: exclude it by name.
    op.execute(
        "UPDATE spectrum SET resolution_median = (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY r) "
        "FROM unnest(resolution) AS r WHERE r > 0 AND r <> 'NaN'::real) WHERE resolution IS NOT NULL"
    )
    op.execute(SPECTRA_VIEW)
    for name, (doc, _) in COLUMNS.items():
        op.execute(f"COMMENT ON COLUMN catalog.spectra.{name} IS '{doc}'")


def downgrade() -> None:
    # The view of 0002 again (its columns are a prefix of the new one's), with its grant
    # and the comments 0015 gave its columns, which the DROP takes with it.
    old = SPECTRA_VIEW.replace(",\n       sp.wave_min,\n       sp.wave_max,\n       sp.resolution_median", "")
    comments = op.get_bind().execute(sa.text(
        "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute AS a "
        "WHERE a.attrelid = 'catalog.spectra'::regclass AND a.attnum > 0 AND col_description(a.attrelid, a.attnum) IS NOT NULL"
    )).all()  # fmt: skip
    view_comment = op.get_bind().execute(sa.text("SELECT obj_description('catalog.spectra'::regclass)")).scalar()
    op.execute("DROP VIEW catalog.spectra")
    op.execute(old.replace("CREATE OR REPLACE VIEW", "CREATE VIEW"))
    op.execute(f"GRANT SELECT ON catalog.spectra TO {READER_ROLE}")
    if view_comment:
        op.execute(sa.text("COMMENT ON VIEW catalog.spectra IS " + _literal(view_comment)))
    for name, doc in comments:
        if name not in COLUMNS:
            op.execute(sa.text(f"COMMENT ON COLUMN catalog.spectra.{name} IS " + _literal(doc)))
    for name in COLUMNS:
        op.drop_column("spectrum", name)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
