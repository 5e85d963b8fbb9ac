"""Spectrum flag ERROR_ESTIMATED: the file gives no errors; ivar is the reader's estimate.

IRAF-style 1-D images and many published spectra carry flux only. Such spectra are
loaded with an inverse variance estimated from the local scatter of the flux
(:func:`skyledger.ingest.readers.base.ivar_from_scatter`) and bit 5 of
``spectrum.flags`` set; this revision adds the bit's meaning to ``flag_definition``.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

FLAGS = [
    ("spectrum", "flags", 5, "ERROR_ESTIMATED",
     "The file gives no errors: ivar was estimated from the local scatter of the flux (DER_SNR over 201 pixels)"),
]  # fmt: skip


def upgrade() -> None:
    flag_table = sa.table(
        "flag_definition",
        sa.column("table_name", sa.Text), sa.column("column_name", sa.Text), sa.column("bit", sa.SmallInteger),
        sa.column("name", sa.Text), sa.column("description", sa.Text),
    )
    op.bulk_insert(flag_table, [dict(zip(("table_name", "column_name", "bit", "name", "description"), f)) for f in FLAGS])


def downgrade() -> None:
    op.execute("DELETE FROM flag_definition WHERE table_name = 'spectrum' AND column_name = 'flags' AND bit = 5")
