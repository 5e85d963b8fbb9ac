"""Database administration behind `skyledger init` and `skyledger db ...`."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql as pgsql
from sqlalchemy import text

from skyledger.schema import embedded
from skyledger.schema import models, result_models  # noqa: F401  (puts the tables on Base.metadata)
from skyledger.schema.base import Base
from skyledger.schema.database import (
    Database,
    check_schema_version,
    connect,
    current_revision,
    head_revision,
    hide_password,
    upgrade,
)
from skyledger.schema.readpath import ensure_query_role
from skyledger.schema.settings import Settings

__all__ = ["DatabaseStatus", "init_database", "upgrade_database", "database_status", "stop_embedded"]


@dataclass
class DatabaseStatus:
    server: str
    url: str
    server_version: str
    schema_revision: str | None
    code_revision: str
    row_counts: dict[str, int] = field(default_factory=dict)

    @property
    def up_to_date(self) -> bool:
        return self.schema_revision == self.code_revision


def init_database(settings: Settings) -> Database:
    """Create or start the database and apply every migration; on the embedded server,
    also the login people's queries run as (`skyledger sql`)."""
    db = connect(settings, check_version=False)
    upgrade(db.engine)
    check_schema_version(db.engine)
    if db.embedded is not None:
        ensure_query_role(db.embedded.conninfo())
    return db


def upgrade_database(settings: Settings) -> str:
    db = connect(settings, check_version=False)
    try:
        return upgrade(db.engine)
    finally:
        db.dispose()


def database_status(db: Database) -> DatabaseStatus:
    if db.embedded is not None:
        server = f"embedded PostgreSQL, pid {db.embedded.pid}, data in {db.embedded.data_dir}"
    else:
        server = "external PostgreSQL (SKYLEDGER_DATABASE_URL)"
    with db.engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar_one()
        revision = current_revision(conn)
        counts: dict[str, int] = {}
        if revision is not None:
            existing = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
            for table in sorted(Base.metadata.tables):
                if table in existing:
                    query = pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(table))
                    counts[table] = conn.exec_driver_sql(query.as_string(conn.connection.dbapi_connection)).scalar_one()
    return DatabaseStatus(
        server=server,
        url=hide_password(db.url),
        server_version=version,
        schema_revision=revision,
        code_revision=head_revision(),
        row_counts=counts,
    )


def stop_embedded(settings: Settings) -> bool:
    return embedded.stop(settings.embedded_data_dir)
