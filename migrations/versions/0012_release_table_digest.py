"""Record a content digest of every table of a release, so that verify checks rows, not only files.

Row counts alone miss an UPDATE; the statement triggers that keep release tables
read-only can be bypassed by their owner or a superuser (``SET session_replication_role
= replica``, ``ALTER TABLE ... DISABLE TRIGGER``, ``DROP``). ``release verify``
recomputes each table's SHA-256 from its rows and names every table that differs.
Releases made before this revision have no rows here; verify says so and checks their
row counts only.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_table",
        sa.Column("release_id", sa.Integer(), nullable=False, comment="Release the table belongs to"),
        sa.Column("table_name", sa.Text(), nullable=False, comment="Table of the release schema"),
        sa.Column("n_rows", sa.BigInteger(), nullable=False, comment="Rows of the table when it was frozen"),
        sa.Column(
            "sha256",
            sa.Text(),
            nullable=False,
            comment="SHA-256 (hex) of the table's columns and rows in key order, as release verify recomputes it",
        ),
        sa.ForeignKeyConstraint(["release_id"], ["release.id"], name=op.f("fk_release_table_release_id_release")),
        sa.PrimaryKeyConstraint("release_id", "table_name", name=op.f("pk_release_table")),
        comment="Content digest of every table of a release schema, recorded when it was frozen",
    )


def downgrade() -> None:
    op.drop_table("release_table")
