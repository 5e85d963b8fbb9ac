"""The toy task's one migration: its table, and its view as `python -m skyledger.schema.catalog ddl` renders it.

Revision ID: toy_0001
Revises: the project's head (a test-only branch applied on a scratch database)
"""

from alembic import op
import sqlalchemy as sa

from skyledger.schema.database import head_revision

revision = "toy_0001"
down_revision = head_revision()
branch_labels = None
depends_on = None

VIEW = """
CREATE VIEW catalog.lookback AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id) t.spectrum_id, t.run_id, p.task
    FROM lookback AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lookback')
    ORDER BY t.spectrum_id, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.lookback_gyr, t.flags, t.run_id
FROM lookback AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
"""

COMMENTS = [
    "COMMENT ON VIEW catalog.lookback IS 'Lookback time to every spectrum with a redshift (task lookback)'",
    "COMMENT ON COLUMN catalog.lookback.spectrum_id IS 'Spectrum'",
    "COMMENT ON COLUMN catalog.lookback.lookback_gyr IS 'Lookback time to the input redshift (Planck18)'",
    "COMMENT ON COLUMN catalog.lookback.flags IS 'Lookback flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.lookback.run_id IS 'Run that produced the row'",
]


def upgrade() -> None:
    op.create_table(
        "lookback",
        sa.Column("run_id", sa.BigInteger(), sa.ForeignKey("run.id"), nullable=False, comment="Run that produced the row"),
        sa.Column("spectrum_id", sa.BigInteger(), sa.ForeignKey("spectrum.id"), nullable=False, comment="Spectrum"),
        sa.Column("lookback_gyr", sa.Double(), nullable=True, comment="Lookback time to the input redshift (Planck18)"),
        sa.Column("flags", sa.Integer(), nullable=False, comment="Lookback flag bits (see flag_definition)"),
        sa.PrimaryKeyConstraint("run_id", "spectrum_id", name="pk_lookback"),
    )
    op.execute(VIEW)
    for statement in COMMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP VIEW catalog.lookback")
    op.drop_table("lookback")
