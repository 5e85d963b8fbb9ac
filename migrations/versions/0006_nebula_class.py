"""Nebula classification: the `nebula_class` results table and its catalog view.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

# Per spectrum and task (nebula_diagnostic, nebula_nn), the rows of the best run on the
# `current` search path (lowest rank, then newest). Keyed by task, not by spectrum alone,
# so that a new version of one method replaces that method's rows and never the other's.
VIEW = """
CREATE VIEW catalog.nebula_class AS
WITH chosen AS (
    SELECT DISTINCT ON (n.spectrum_id, cr.task) n.spectrum_id, n.run_id
    FROM nebula_class AS n
    JOIN catalog.current_runs AS cr ON cr.run_id = n.run_id
    WHERE cr.task IN ('nebula_diagnostic', 'nebula_nn')
    ORDER BY n.spectrum_id, cr.task, cr.rank, n.run_id DESC
)
SELECT n.spectrum_id, n.method, n.class, n.probability, n.p_hii, n.p_pn, n.p_snr, n.p_dig, n.p_agn,
       n.flags, n.run_id
FROM nebula_class AS n
JOIN chosen ON chosen.spectrum_id = n.spectrum_id AND chosen.run_id = n.run_id
"""
VIEW_COMMENT = "Ionised-nebula class of every spectrum with emission lines, one row per method, from the current runs"


def _p(name: str) -> sa.Column:
    return sa.Column(
        f"p_{name.lower()}", sa.Double(), nullable=True,
        comment=f"Probability that the object is {name}; NULL where the method does not model the class",
    )


def upgrade() -> None:
    op.create_table(
        "nebula_class",
        sa.Column("run_id", sa.BigInteger(), nullable=False, comment="Run that produced the classification"),
        sa.Column("spectrum_id", sa.BigInteger(), nullable=False, comment="Spectrum whose emission lines were classified"),
        sa.Column("method", sa.Text(), nullable=False, comment="Classification method: diagnostic (published line-ratio rules) or nn (neural network)"),
        sa.Column("class", sa.Text(), nullable=False, comment="Most probable class: HII, PN, SNR, DIG, AGN or UNKNOWN"),
        sa.Column("probability", sa.Double(), nullable=True, comment="Probability of the class given in class; NULL when the method gave no probabilities"),
        _p("HII"), _p("PN"), _p("SNR"), _p("DIG"), _p("AGN"),
        sa.Column("flags", sa.Integer(), server_default=sa.text("0"), nullable=False, comment="Classification flag bits (see flag_definition)"),
        sa.CheckConstraint("class IN ('HII', 'PN', 'SNR', 'DIG', 'AGN', 'UNKNOWN')", name=op.f("ck_nebula_class_class_name")),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_nebula_class_run_id_run")),
        sa.ForeignKeyConstraint(["spectrum_id"], ["spectrum.id"], name=op.f("fk_nebula_class_spectrum_id_spectrum")),
        sa.PrimaryKeyConstraint("run_id", "spectrum_id", "method", name=op.f("pk_nebula_class")),
    )
    op.create_index("ix_nebula_class_spectrum_id", "nebula_class", ["spectrum_id"], unique=False)
    op.execute(VIEW)
    op.execute(f"COMMENT ON VIEW catalog.nebula_class IS '{VIEW_COMMENT}'")


def downgrade() -> None:
    op.execute("DROP VIEW catalog.nebula_class")
    op.drop_index("ix_nebula_class_spectrum_id", table_name="nebula_class")
    op.drop_table("nebula_class")
