"""Read-only role for catalogue users: SELECT on `catalog` and release schemas only.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"

# Roles belong to the whole server, not to one database, so the role may already exist
# (another skyledger database on the same server, or a concurrent migration): create it
# only when it is missing and tolerate losing that race. It is a group role (NOLOGIN);
# people log in as their own roles made members of it (see docs/database.md).
CREATE_ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{READER_ROLE}') THEN
        CREATE ROLE {READER_ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(CREATE_ROLE)
    op.execute(f"COMMENT ON ROLE {READER_ROLE} IS 'Catalogue users: read-only access to the catalog and release schemas'")
    # The catalog views run with their owner's rights, so the reader needs no grant on
    # the base tables: it sees exactly what the views show. PUBLIC keeps its default
    # CONNECT on the database, but nothing in the public schema.
    op.execute(f"GRANT USAGE ON SCHEMA catalog TO {READER_ROLE}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA catalog TO {READER_ROLE}")
    # Views that later migrations add to `catalog` are readable without another grant.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA catalog GRANT SELECT ON TABLES TO {READER_ROLE}")
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def downgrade() -> None:
    # The role itself stays: it is shared by every database on the server.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA catalog REVOKE SELECT ON TABLES FROM {READER_ROLE}")
    op.execute(f"REVOKE SELECT ON ALL TABLES IN SCHEMA catalog FROM {READER_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA catalog FROM {READER_ROLE}")
