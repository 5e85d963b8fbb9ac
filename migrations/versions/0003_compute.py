"""Compute: stellar kinematics results; catalog views resolved through the `current` collection.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# catalog.current_runs is the search path of the `current` collection: a task's runs,
# best first (lowest rank, then newest). Each results view takes, per input and task,
# the rows of the first run on that path that has a result for the input, so reprocessing
# (a new version, new parameters, or a nightly run over new data) never duplicates rows
# and never hides an input that only older runs have processed.
VIEWS = [
    """
CREATE VIEW catalog.current_runs AS
SELECT r.id AS run_id, r.task, r.version, r.params_hash, r.code_version, r.finished_at, cr.rank
FROM collection AS c
JOIN collection_run AS cr ON cr.collection_id = c.id
JOIN run AS r ON r.id = cr.run_id
WHERE c.name = 'current' AND r.status = 'succeeded'
""",
    """
CREATE VIEW catalog.stellar_kinematics AS
SELECT DISTINCT ON (k.spectrum_id)
       k.spectrum_id, k.z, k.velocity, k.velocity_err, k.sigma, k.sigma_err, k.chi2, k.stellar_chi2,
       k.snr, k.n_pixels, k.flags, k.run_id
FROM stellar_kinematics AS k
JOIN catalog.current_runs AS cr ON cr.run_id = k.run_id
ORDER BY k.spectrum_id, cr.rank, k.run_id DESC
""",
    """
CREATE VIEW catalog.lines AS
WITH chosen AS (
    SELECT DISTINCT ON (m.spectrum_id, cr.task) m.spectrum_id, m.run_id, cr.task
    FROM line_measurement AS m
    JOIN catalog.current_runs AS cr ON cr.run_id = m.run_id
    ORDER BY m.spectrum_id, cr.task, cr.rank, m.run_id DESC
)
SELECT m.spectrum_id, m.line, m.z, m.velocity, m.velocity_err, m.sigma, m.sigma_err, m.flux, m.flux_err,
       m.ew, m.ew_err, m.snr, m.flags, s.flux_unit, chosen.task AS source_task, m.run_id
FROM line_measurement AS m
JOIN chosen ON chosen.spectrum_id = m.spectrum_id AND chosen.run_id = m.run_id
JOIN spectrum AS s ON s.id = m.spectrum_id
""",
]

COMMENTS = {
    "catalog.current_runs": "Runs in the current collection, best first per task",
    "catalog.stellar_kinematics": "Stellar kinematics of every spectrum, from the current runs",
    "catalog.lines": "Emission lines of every spectrum, fitted (task lines) or from catalogues (task ingested)",
}


def upgrade() -> None:
    op.create_table(
        "stellar_kinematics",
        sa.Column("run_id", sa.BigInteger(), nullable=False, comment="Run that produced the fit"),
        sa.Column("spectrum_id", sa.BigInteger(), nullable=False, comment="Spectrum fitted"),
        sa.Column("z", sa.Double(), nullable=True, comment="Fitted redshift of the stars"),
        sa.Column("velocity", sa.Double(), nullable=True,
                  comment="Stellar line-of-sight velocity relative to the input redshift"),
        sa.Column("velocity_err", sa.Double(), nullable=True, comment="Error of velocity"),
        sa.Column("sigma", sa.Double(), nullable=True, comment="Stellar velocity dispersion, instrumental broadening removed"),
        sa.Column("sigma_err", sa.Double(), nullable=True, comment="Error of sigma"),
        sa.Column("chi2", sa.Double(), nullable=True, comment="Reduced chi-square of the full (stars + gas) fit"),
        sa.Column("stellar_chi2", sa.Double(), nullable=True,
                  comment="Reduced chi-square of the stellar fit with emission lines masked"),
        sa.Column("snr", sa.Double(), nullable=True, comment="Median signal-to-noise ratio per pixel over the fitted range"),
        sa.Column("n_pixels", sa.Integer(), nullable=True, comment="Pixels used in the final fit"),
        sa.Column("flags", sa.Integer(), server_default=sa.text("0"), nullable=False,
                  comment="Fit flag bits (see flag_definition)"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_stellar_kinematics_run_id_run")),
        sa.ForeignKeyConstraint(["spectrum_id"], ["spectrum.id"], name=op.f("fk_stellar_kinematics_spectrum_id_spectrum")),
        sa.PrimaryKeyConstraint("run_id", "spectrum_id", name=op.f("pk_stellar_kinematics")),
    )
    op.create_index("ix_stellar_kinematics_spectrum_id", "stellar_kinematics", ["spectrum_id"], unique=False)
    for view in VIEWS:
        op.execute(view)
    for name, doc in COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {name} IS '{doc}'")


def downgrade() -> None:
    op.execute("DROP VIEW catalog.lines")
    op.execute("DROP VIEW catalog.stellar_kinematics")
    op.execute("DROP VIEW catalog.current_runs")
    op.drop_index("ix_stellar_kinematics_spectrum_id", table_name="stellar_kinematics")
    op.drop_table("stellar_kinematics")
