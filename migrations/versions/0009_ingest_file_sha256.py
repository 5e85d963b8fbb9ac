"""Index ingest_file by content hash, whatever the status.

The loader asks, for every file (or group of files) it is about to load, whether the
same content was loaded or rejected before. The only index on ``sha256`` was the partial
unique index over loaded rows, which cannot answer a question that includes rejected
rows, so each check scanned the whole table: an ingest of N files did O(N^2) work. A
plain index on ``sha256`` makes each check a few index probes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ingest_file_sha256", "ingest_file", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_ingest_file_sha256", table_name="ingest_file")
