"""Read-only role for catalogue users: SELECT on `catalog` and release schemas only.

Also what releases need at run time: the trigger function that keeps a release's
tables read-only, and `catalog.releases`, the list of releases readers can see.

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

# Release schemas are created at run time (`skyledger release create`); each of their
# tables gets a statement trigger calling this function, so nobody (superusers included,
# whom privileges do not stop) can change a release after the fact.
READ_ONLY_FUNCTION = """
CREATE FUNCTION release_read_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'release table %.% is read-only: a release never changes', TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING HINT = 'create a new release instead';
END
$$
"""

RELEASES_VIEW = """
CREATE VIEW catalog.releases AS
SELECT r.name, r.created_at, c.name AS collection, r.notes, r.code_version, r.schema_version,
       (SELECT count(*) FROM release_run AS rr WHERE rr.release_id = r.id) AS n_runs
FROM release AS r
JOIN collection AS c ON c.id = r.collection_id
"""
RELEASES_COMMENTS = {
    "name": "Release name, also its SQL schema (SELECT ... FROM <name>.lines)",
    "created_at": "Creation time",
    "collection": "Collection the release froze",
    "notes": "Release notes",
    "code_version": "skyledger version that wrote the release",
    "schema_version": "Database schema revision at release time",
    "n_runs": "Runs whose results the release holds",
}


# Cone search for readers. public.cone_search reads the base tables with the caller's
# rights (SECURITY INVOKER keeps it inlinable, which its index plan relies on), and readers
# have no grant on them; these wrappers run with the owner's rights and expose nothing
# beyond what catalog.spectra already shows (ids and positions).
READER_CONE_FUNCTIONS = """
CREATE FUNCTION catalog.cone_search(ra_deg double precision, dec_deg double precision, radius_arcsec double precision)
RETURNS TABLE (source_id bigint, ra double precision, "dec" double precision, distance_arcsec double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM public.cone_search(ra_deg, dec_deg, radius_arcsec)
$$;
CREATE FUNCTION catalog.cone_search_spectra(ra_deg double precision, dec_deg double precision, radius_arcsec double precision)
RETURNS TABLE (spectrum_id bigint, ra double precision, "dec" double precision, distance_arcsec double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT * FROM public.cone_search_spectra(ra_deg, dec_deg, radius_arcsec)
$$;
COMMENT ON FUNCTION catalog.cone_search(double precision, double precision, double precision)
    IS 'Sources within radius_arcsec of (ra_deg, dec_deg), nearest first (for catalogue readers)';
COMMENT ON FUNCTION catalog.cone_search_spectra(double precision, double precision, double precision)
    IS 'Spectra within radius_arcsec of (ra_deg, dec_deg), nearest first (for catalogue readers)';
"""
CONE_SIGNATURE = "(double precision, double precision, double precision)"


def upgrade() -> None:
    op.execute(CREATE_ROLE)
    op.execute(f"COMMENT ON ROLE {READER_ROLE} IS 'Catalogue users: read-only access to the catalog and release schemas'")
    op.execute(READ_ONLY_FUNCTION)
    op.execute("COMMENT ON FUNCTION release_read_only() IS 'Trigger that refuses every change to a release table'")
    op.execute(RELEASES_VIEW)
    op.execute("COMMENT ON VIEW catalog.releases IS 'Every catalogue release; each is an SQL schema of its own name'")
    for name, doc in RELEASES_COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN catalog.releases.{name} IS '{doc}'")
    # The catalog views run with their owner's rights, so the reader needs no grant on
    # the base tables: it sees exactly what the views show. PUBLIC keeps its default
    # CONNECT on the database, but nothing in the public schema.
    op.execute(f"GRANT USAGE ON SCHEMA catalog TO {READER_ROLE}")
    op.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA catalog TO {READER_ROLE}")
    # Views that later migrations add to `catalog` are readable without another grant.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA catalog GRANT SELECT ON TABLES TO {READER_ROLE}")
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute(READER_CONE_FUNCTIONS)
    for fn in ("catalog.cone_search", "catalog.cone_search_spectra"):
        op.execute(f"REVOKE EXECUTE ON FUNCTION {fn}{CONE_SIGNATURE} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {fn}{CONE_SIGNATURE} TO {READER_ROLE}")


def downgrade() -> None:
    for fn in ("catalog.cone_search", "catalog.cone_search_spectra"):
        op.execute(f"DROP FUNCTION {fn}{CONE_SIGNATURE}")
    # The role itself stays: it is shared by every database on the server.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA catalog REVOKE SELECT ON TABLES FROM {READER_ROLE}")
    op.execute(f"REVOKE SELECT ON ALL TABLES IN SCHEMA catalog FROM {READER_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA catalog FROM {READER_ROLE}")
    op.execute("DROP VIEW catalog.releases")
    # Fails while release schemas still use it: drop those first, deliberately.
    op.execute("DROP FUNCTION release_read_only()")
