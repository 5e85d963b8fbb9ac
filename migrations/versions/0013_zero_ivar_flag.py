"""Spectrum flag ZERO_IVAR: loaded, but no pixel carries data.

A spectrum whose inverse variance is zero at every pixel (a dead fibre, a file whose
errors are all missing) used to load like any other, and only a look at the pixels
told it apart. The loader now sets bit 4 of ``spectrum.flags`` on it; this revision
adds the bit's meaning to ``flag_definition``.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

FLAGS = [
    ("spectrum", "flags", 4, "ZERO_IVAR",
     "Every pixel has zero inverse variance: the file gives no usable data for this spectrum"),
]  # fmt: skip


def upgrade() -> None:
    flag_table = sa.table(
        "flag_definition",
        sa.column("table_name", sa.Text), sa.column("column_name", sa.Text), sa.column("bit", sa.SmallInteger),
        sa.column("name", sa.Text), sa.column("description", sa.Text),
    )
    op.bulk_insert(flag_table, [dict(zip(("table_name", "column_name", "bit", "name", "description"), f)) for f in FLAGS])


def downgrade() -> None:
    op.execute("DELETE FROM flag_definition WHERE table_name = 'spectrum' AND column_name = 'flags' AND bit = 4")
