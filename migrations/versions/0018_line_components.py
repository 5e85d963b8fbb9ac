"""Kinematic components of emission lines: a component column in line_measurement.

The `lines` fit can now give a line a second kinematic component (a broad Balmer line,
an [OIII] outflow; parameter ``components = auto``). ``line_measurement`` gets
``component`` (0 the narrow or only component, 1 the second; part of the primary key, 0
for every row already in and for catalogue lines, which do not write it) and the
non-parametric widths v10, v90 and W80 of the line's total profile;
``stellar_kinematics`` gets the chosen gas model and the Delta BIC of each second
component. catalog.lines and catalog.stellar_kinematics show the new columns (the views
are re-created: ``component`` sits after ``line``, before the values).

The view SQL below was printed by ``python -m skyledger.schema.catalog ddl
stellar_kinematics lines`` and is pasted, not imported: a migration never changes once
released.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"

LINE_COLUMNS = {
    "v10": "Velocity below which 10 % of the line's total flux (all components) lies, intrinsic profile, same frame as "
    "velocity; on the component 0 row only",
    "v90": "Velocity below which 90 % of the line's total flux lies (as v10)",
    "w80": "Width containing the central 80 % of the line's total flux, v90 - v10 (2.563 sigma for one Gaussian); "
    "component 0 row only",
}
COMPONENT_DOC = (
    "Kinematic component: 0 the narrow (or only) one, 1 the second (broad Balmer or [OIII] outflow); a line's total "
    "flux is the sum over its components"
)
KINEMATICS_COLUMNS = {
    "gas_model": (sa.Text(), (
        "Gas model chosen by Delta BIC: narrow, narrow+broad (broad Balmer), narrow+outflow ([OIII]) "
        "or narrow+broad+outflow; NULL where second components were not tried (parameter components = none)"
    )),
    "delta_bic_broad": (sa.Double(), (
        "BIC decrease from adding the broad Balmer component (kept above the run's threshold, 10 by default); "
        "NULL where not tried"
    )),
    "delta_bic_outflow": (sa.Double(), "BIC decrease from adding the [OIII] outflow component; NULL where not tried"),
}

VIEWS = {
    "stellar_kinematics": """
CREATE VIEW catalog.stellar_kinematics AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id) t.spectrum_id, t.run_id, p.task
    FROM stellar_kinematics AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lines')
    ORDER BY t.spectrum_id, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.z, t.velocity, t.velocity_err, t.sigma, t.sigma_err, t.chi2, t.stellar_chi2, t.snr,
       t.n_pixels, t.gas_model, t.delta_bic_broad, t.delta_bic_outflow, t.flags, t.run_id
FROM stellar_kinematics AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
""",
    "lines": """
CREATE VIEW catalog.lines AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id, p.task) t.spectrum_id, t.run_id, p.task
    FROM line_measurement AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lines', 'ingested')
    ORDER BY t.spectrum_id, p.task, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.line, t.component, t.z, t.velocity, t.velocity_err, t.sigma, t.sigma_err, t.flux,
       t.flux_err, t.ew, t.ew_err, t.snr, t.v10, t.v90, t.w80, t.flags, sp.flux_unit,
       chosen.task AS source_task, t.run_id
FROM line_measurement AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
JOIN spectrum AS sp ON sp.id = t.spectrum_id
""",
}

COMMENTS = [
    "COMMENT ON VIEW catalog.stellar_kinematics IS 'Stellar kinematics of every fitted spectrum (task lines)'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.spectrum_id IS 'Spectrum fitted'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.z IS 'Fitted redshift of the stars'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.velocity IS 'Stellar line-of-sight velocity relative to the input redshift'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.velocity_err IS 'Error of velocity'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.sigma IS 'Stellar velocity dispersion, instrumental broadening removed'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.sigma_err IS 'Error of sigma'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.chi2 IS 'Reduced chi-square of the full (stars + gas) fit'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.stellar_chi2 IS 'Reduced chi-square of the stellar fit with emission lines masked'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.snr IS 'Median signal-to-noise ratio per pixel over the fitted range'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.n_pixels IS 'Pixels used in the final fit'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.gas_model IS 'Gas model chosen by Delta BIC: narrow, narrow+broad (broad Balmer), narrow+outflow ([OIII]) or narrow+broad+outflow; NULL where second components were not tried (parameter components = none)'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.delta_bic_broad IS 'BIC decrease from adding the broad Balmer component (kept above the run''s threshold, 10 by default); NULL where not tried'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.delta_bic_outflow IS 'BIC decrease from adding the [OIII] outflow component; NULL where not tried'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.flags IS 'Fit flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.run_id IS 'Run that produced the fit'",
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
    "COMMENT ON COLUMN catalog.lines.flags IS 'Line flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.lines.flux_unit IS 'Unit of flux (astropy string)'",
    "COMMENT ON COLUMN catalog.lines.source_task IS 'Task that produced the row: lines or ingested'",
    "COMMENT ON COLUMN catalog.lines.run_id IS 'Run that produced the measurement'",
]

#: The views as migration 0015 created them (with their comments), for the downgrade.
OLD_VIEWS = {
    "stellar_kinematics": """
CREATE VIEW catalog.stellar_kinematics AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id) t.spectrum_id, t.run_id, p.task
    FROM stellar_kinematics AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lines')
    ORDER BY t.spectrum_id, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.z, t.velocity, t.velocity_err, t.sigma, t.sigma_err, t.chi2, t.stellar_chi2, t.snr,
       t.n_pixels, t.flags, t.run_id
FROM stellar_kinematics AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
""",
    "lines": """
CREATE VIEW catalog.lines AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id, p.task) t.spectrum_id, t.run_id, p.task
    FROM line_measurement AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lines', 'ingested')
    ORDER BY t.spectrum_id, p.task, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.line, t.z, t.velocity, t.velocity_err, t.sigma, t.sigma_err, t.flux, t.flux_err, t.ew,
       t.ew_err, t.snr, t.flags, sp.flux_unit, chosen.task AS source_task, t.run_id
FROM line_measurement AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
JOIN spectrum AS sp ON sp.id = t.spectrum_id
""",
}
#: Comments of the old views' columns that the new views change (the rest are re-read).
OLD_VIEW_COMMENTS = {
    "lines": "Emission lines of every spectrum, fitted (task lines) or read from catalogues (task ingested)",
    "stellar_kinematics": "Stellar kinematics of every fitted spectrum (task lines)",
}


def upgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW catalog.{name}")
    op.add_column("line_measurement", sa.Column("component", sa.SmallInteger(), server_default=sa.text("0"),
                                                nullable=False, comment=COMPONENT_DOC))
    for name, doc in LINE_COLUMNS.items():
        op.add_column("line_measurement", sa.Column(name, sa.Double(), nullable=True, comment=doc))
    op.drop_constraint("pk_line_measurement", "line_measurement", type_="primary")
    op.create_primary_key("pk_line_measurement", "line_measurement", ["run_id", "spectrum_id", "line", "component"])
    for name, (type_, doc) in KINEMATICS_COLUMNS.items():
        op.add_column("stellar_kinematics", sa.Column(name, type_, nullable=True, comment=doc))
    for name, ddl in VIEWS.items():
        op.execute(ddl)
        op.execute(f"GRANT SELECT ON catalog.{name} TO {READER_ROLE}")
    for statement in COMMENTS:
        op.execute(statement)


def downgrade() -> None:
    # Second components have no place in the old key: their rows go.
    comments = {
        name: op.get_bind().execute(sa.text(
            "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute AS a "
            f"WHERE a.attrelid = 'catalog.{name}'::regclass AND a.attnum > 0 "
            "AND col_description(a.attrelid, a.attnum) IS NOT NULL"
        )).all()
        for name in OLD_VIEWS
    }  # fmt: skip
    for name in OLD_VIEWS:
        op.execute(f"DROP VIEW catalog.{name}")
    op.execute("DELETE FROM line_measurement WHERE component <> 0")
    op.drop_constraint("pk_line_measurement", "line_measurement", type_="primary")
    op.create_primary_key("pk_line_measurement", "line_measurement", ["run_id", "spectrum_id", "line"])
    for name in ("component", *LINE_COLUMNS):
        op.drop_column("line_measurement", name)
    for name in KINEMATICS_COLUMNS:
        op.drop_column("stellar_kinematics", name)
    dropped = {"component", *LINE_COLUMNS, *KINEMATICS_COLUMNS}
    for name, ddl in OLD_VIEWS.items():
        op.execute(ddl)
        op.execute(f"GRANT SELECT ON catalog.{name} TO {READER_ROLE}")
        op.execute(sa.text(f"COMMENT ON VIEW catalog.{name} IS " + _literal(OLD_VIEW_COMMENTS[name])))
        for column, doc in comments[name]:
            if column not in dropped:
                op.execute(sa.text(f"COMMENT ON COLUMN catalog.{name}.{column} IS " + _literal(doc)))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
