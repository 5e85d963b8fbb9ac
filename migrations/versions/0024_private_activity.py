"""A catalogue reader cannot read other sessions' statements.

Every person's query (``skyledger sql``, the TAP service, its async jobs) runs as the
one query login, and PostgreSQL shows the text of a session's current statement to any
session of the same role through ``pg_stat_activity`` (``pg_stat_get_activity``) and
``pg_stat_get_backend_activity``: one person could read another's queries, and with
them the positions and objects that person is working on. This revision takes SELECT on
the view and EXECUTE on those functions from PUBLIC in this database and gives them back
to the owner (the login that runs the migrations), as revision 0011 did for the
functions that act on other sessions. The read path checks at connect time that its
login really lacks them (``skyledger.schema.readpath``).

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-08
"""

from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

VIEW = "pg_catalog.pg_stat_activity"
#: The functions that return another backend's current statement text.
FUNCTIONS = ("pg_catalog.pg_stat_get_activity(integer)", "pg_catalog.pg_stat_get_backend_activity(integer)")


def upgrade() -> None:
    op.execute(f"REVOKE SELECT ON {VIEW} FROM PUBLIC")
    op.execute(f"GRANT SELECT ON {VIEW} TO CURRENT_USER")
    for signature in FUNCTIONS:
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO CURRENT_USER")


def downgrade() -> None:
    for signature in FUNCTIONS:
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM CURRENT_USER")
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO PUBLIC")
    op.execute(f"REVOKE SELECT ON {VIEW} FROM CURRENT_USER")
    op.execute(f"GRANT SELECT ON {VIEW} TO PUBLIC")
