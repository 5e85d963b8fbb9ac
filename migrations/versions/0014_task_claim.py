"""Work claims: concurrent `skyledger process` runs share the pending inputs.

Two runs of the same task version and parameters both read the same pending inputs
and computed them twice. Before computing a batch a run now inserts one row per input
into ``task_claim`` (``ON CONFLICT`` on the primary key decides who gets it) in its own
short transaction; the pending query of every other run skips inputs claimed by a
running run. Claims are deleted when their run succeeds, fails or is reaped.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_claim",
        sa.Column("task", sa.Text(), nullable=False, comment="Task name"),
        sa.Column("version", sa.Integer(), nullable=False, comment="Task version"),
        sa.Column("params_hash", sa.Text(), nullable=False, comment="SHA-256 of the run's parameters"),
        sa.Column("input_id", sa.BigInteger(), nullable=False, comment="Input claimed (spectrum or source id)"),
        sa.Column("run_id", sa.BigInteger(), nullable=False, comment="Run that claimed the input"),
        sa.Column(
            "claimed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False, comment="Claim time"
        ),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name="fk_task_claim_run_id_run", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task", "version", "params_hash", "input_id", name="pk_task_claim"),
    )
    op.create_index("ix_task_claim_run_id", "task_claim", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_task_claim_run_id", table_name="task_claim")
    op.drop_table("task_claim")
