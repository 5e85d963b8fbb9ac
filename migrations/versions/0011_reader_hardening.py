"""What a catalogue reader may not do, enforced by PostgreSQL's privileges.

People's queries (``skyledger sql``, later the HTTP service) run as a login that is a
member of ``skyledger_reader`` only. By default PostgreSQL grants every login (PUBLIC)
more than reading: temporary tables, advisory locks (one of which serialises the
nightly flow, so a reader holding it stopped every nightly run), large objects,
``pg_notify``, signalling other sessions of its own role, and ``DO`` blocks. This
revision takes those from PUBLIC in this database and gives back what the project's own
code needs to the login that runs the migrations (the owner): temporary tables (release
freezing), advisory locks (the migration lock, the nightly lock) and PL/pgSQL.

``pg_proc`` and database ACLs are per database, so nothing here reaches other databases
on the same server. A REVOKE on a built-in function by a login that does not own it (an
external database migrated by a non-superuser) is only a warning; the read path checks
at connect time that its login really lacks these privileges (``skyledger.schema.readpath``).

Readers also get SELECT on ``alembic_version`` (the query path compares the schema
revision with the code's over its own reader connection) and ``catalog.flag_definitions``,
what every flag bit means: their queries no longer run as the owner, who reads
``flag_definition`` directly.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from alembic import op
from sqlalchemy import text

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"

# Built-in functions that PostgreSQL lets PUBLIC execute and that let one session act on
# others or on the server: advisory locks (block the nightly flow), large objects
# (server-side storage a reader could fill), pg_notify (messages to every listener),
# pg_cancel/terminate_backend (signal sessions of the same role: another person's query
# on the shared query login). The superuser-only file and program functions
# (pg_read_file, lo_import, ...) need no revoke: PUBLIC never had them.
PUBLIC_FUNCTIONS = """
SELECT p.oid::regprocedure::text FROM pg_proc AS p
WHERE p.pronamespace = 'pg_catalog'::regnamespace
  AND (p.proname LIKE 'pg\\_advisory\\_%' OR p.proname LIKE 'pg\\_try\\_advisory\\_%'
       OR (p.proname LIKE 'lo\\_%' AND p.proname NOT IN ('lo_import', 'lo_export'))
       OR p.proname IN ('loread', 'lowrite', 'pg_notify', 'pg_cancel_backend', 'pg_terminate_backend'))
ORDER BY 1
"""
#: The ones the owner itself calls (migrations/env.py, schema/locks.py).
OWNER_FUNCTIONS = "p.proname LIKE 'pg\\_advisory\\_%' OR p.proname LIKE 'pg\\_try\\_advisory\\_%'"

# Database-level privileges need the database's name, which only the server knows here.
DATABASE_PRIVILEGES = """
DO $$
BEGIN
    EXECUTE format('{action} TEMPORARY ON DATABASE %I {direction} PUBLIC', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), current_user);
END
$$
"""


FLAGS_VIEW = """
CREATE VIEW catalog.flag_definitions AS
SELECT table_name, column_name, bit, name, description FROM flag_definition
"""
FLAGS_COMMENTS = {
    "table_name": "Table (or catalog view) holding the flags column",
    "column_name": "Name of the flags column",
    "bit": "Bit number (value 2**bit)",
    "name": "Short upper-case name of the flag",
    "description": "What the flag means",
}


def _functions(condition: str | None = None) -> list[str]:
    query = PUBLIC_FUNCTIONS if condition is None else PUBLIC_FUNCTIONS.replace("ORDER BY", f"AND ({condition}) ORDER BY")
    return list(op.get_bind().execute(text(query)).scalars())


def upgrade() -> None:
    op.execute(DATABASE_PRIVILEGES.format(action="REVOKE", direction="FROM"))
    for signature in _functions():
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
    for signature in _functions(OWNER_FUNCTIONS):
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO CURRENT_USER")
    # DO blocks and new PL/pgSQL functions need USAGE on the language; running the
    # project's existing PL/pgSQL functions and triggers does not.
    op.execute("GRANT USAGE ON LANGUAGE plpgsql TO CURRENT_USER")
    op.execute("REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC")
    op.execute(f"GRANT SELECT ON alembic_version TO {READER_ROLE}")
    # Readable by readers through the catalog schema's default privileges (0007).
    op.execute(FLAGS_VIEW)
    op.execute("COMMENT ON VIEW catalog.flag_definitions IS 'What every bit of every flags column means'")
    for name, doc in FLAGS_COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN catalog.flag_definitions.{name} IS '{doc}'")


def downgrade() -> None:
    op.execute("DROP VIEW catalog.flag_definitions")
    op.execute(f"REVOKE SELECT ON alembic_version FROM {READER_ROLE}")
    op.execute("GRANT USAGE ON LANGUAGE plpgsql TO PUBLIC")
    for signature in _functions(OWNER_FUNCTIONS):
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM CURRENT_USER")
    for signature in _functions():
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO PUBLIC")
    op.execute(DATABASE_PRIVILEGES.format(action="GRANT", direction="TO"))
