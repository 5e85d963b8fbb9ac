"""Upper limits of undetected lines: ``line_measurement.flux_limit``, shown in catalog.lines.

The `lines` task (version 3) flags a line NOT_DETECTED where flux/flux_err < 3 (the
non-negativity bound included) and stores max(flux, 0) + 3 flux_err as its upper limit;
NULL where the line is detected and in ingested rows. catalog.lines shows the column
before ``flags`` (model order), so the view is re-created, as printed by
``python -m skyledger.schema.catalog ddl lines``.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"
DOC = (
    "Upper limit of flux where the line is not detected (flag NOT_DETECTED): max(flux, 0) + 3 flux_err; "
    "NULL where detected"
)

VIEW = """
CREATE VIEW catalog.lines AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id, p.task) t.spectrum_id, t.run_id, p.task
    FROM line_measurement AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lines', 'ingested')
    ORDER BY t.spectrum_id, p.task, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.line, t.component, t.z, t.velocity, t.velocity_err, t.sigma, t.sigma_err, t.flux,
       t.flux_err, t.ew, t.ew_err, t.snr, t.v10, t.v90, t.w80, t.flux_limit, t.flags, sp.flux_unit,
       chosen.task AS source_task, t.run_id
FROM line_measurement AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
JOIN spectrum AS sp ON sp.id = t.spectrum_id
"""

COMMENTS = [
    "COMMENT ON VIEW catalog.lines IS 'Emission lines of every spectrum, fitted (task lines) or read from catalogues (task ingested), one row per kinematic component'",
    "COMMENT ON COLUMN catalog.lines.spectrum_id IS 'Spectrum measured'",
    "COMMENT ON COLUMN catalog.lines.line IS 'Line identifier, e.g. HA6563, OIII5007'",
    "COMMENT ON COLUMN catalog.lines.component IS 'Kinematic component: 0 the narrow (or only) one, 1 the second (broad Balmer or [OIII] outflow); a line''s total flux is the sum over its components'",
    "COMMENT ON COLUMN catalog.lines.z IS 'Redshift of the line'",
    "COMMENT ON COLUMN catalog.lines.velocity IS 'Line-of-sight velocity relative to the stellar (or input) redshift'",
    "COMMENT ON COLUMN catalog.lines.velocity_err IS 'Error of velocity'",
    "COMMENT ON COLUMN catalog.lines.sigma IS 'Intrinsic velocity dispersion (instrumental broadening removed)'",
    "COMMENT ON COLUMN catalog.lines.sigma_err IS 'Error of sigma'",
    "COMMENT ON COLUMN catalog.lines.flux IS 'Integrated line flux, in the spectrum''s flux unit times Angstrom'",
    "COMMENT ON COLUMN catalog.lines.flux_err IS 'Error of flux'",
    "COMMENT ON COLUMN catalog.lines.ew IS 'Equivalent width (positive in emission)'",
    "COMMENT ON COLUMN catalog.lines.ew_err IS 'Error of ew'",
    "COMMENT ON COLUMN catalog.lines.snr IS 'Signal-to-noise ratio of the flux'",
    "COMMENT ON COLUMN catalog.lines.v10 IS 'Velocity below which 10 % of the line''s total flux (all components) lies, intrinsic profile, same frame as velocity; on the component 0 row only'",
    "COMMENT ON COLUMN catalog.lines.v90 IS 'Velocity below which 90 % of the line''s total flux lies (as v10)'",
    "COMMENT ON COLUMN catalog.lines.w80 IS 'Width containing the central 80 % of the line''s total flux, v90 - v10 (2.563 sigma for one Gaussian); component 0 row only'",
    "COMMENT ON COLUMN catalog.lines.flux_limit IS 'Upper limit of flux where the line is not detected (flag NOT_DETECTED): max(flux, 0) + 3 flux_err; NULL where detected'",
    "COMMENT ON COLUMN catalog.lines.flags IS 'Line flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.lines.flux_unit IS 'Unit of flux (astropy string)'",
    "COMMENT ON COLUMN catalog.lines.source_task IS 'Task that produced the row: lines or ingested'",
    "COMMENT ON COLUMN catalog.lines.run_id IS 'Run that produced the measurement'",
]


def _recreate(ddl: str, comments: list[str]) -> None:
    op.execute("DROP VIEW catalog.lines")
    op.execute(ddl)
    op.execute(f"GRANT SELECT ON catalog.lines TO {READER_ROLE}")
    for statement in comments:
        op.execute(sa.text(statement))


def upgrade() -> None:
    op.add_column(
        "line_measurement",
        sa.Column("flux_limit", sa.Double(), nullable=True, comment=DOC),
    )
    _recreate(VIEW, COMMENTS)


def downgrade() -> None:
    old_view = VIEW.replace("t.w80, t.flux_limit, t.flags", "t.w80, t.flags")
    _recreate(old_view, [c for c in COMMENTS if "catalog.lines.flux_limit " not in c])
    op.drop_column("line_measurement", "flux_limit")
