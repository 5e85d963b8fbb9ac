"""Connecting to the database, applying migrations and checking the schema version.

Every entry point does the same three things: build :class:`Settings`, call
:func:`connect` (which starts the embedded server when no URL is configured), and
open sessions from the returned :class:`Database`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import embedded
from .errors import DatabaseError, SchemaVersionError
from .settings import Settings

__all__ = [
    "Database",
    "connect",
    "psycopg_connection",
    "database_url",
    "hide_password",
    "alembic_config",
    "head_revision",
    "current_revision",
    "upgrade",
    "check_schema_version",
    "MIN_SERVER_VERSION",
]

MIN_SERVER_VERSION = 140000


def psycopg_connection(bind: Session | Connection) -> psycopg.Connection:
    """The psycopg connection under a session (or SQLAlchemy connection), for binary COPY
    and binary cursors; what runs on it is part of the caller's transaction."""
    conn = bind.connection() if isinstance(bind, Session) else bind
    return conn.connection.driver_connection  # type: ignore[return-value]


@dataclass
class Database:
    """An engine plus where it came from. Sessions are opened by the caller."""

    engine: Engine
    url: str
    embedded: embedded.EmbeddedServer | None

    @property
    def conninfo(self) -> str:
        """The libpq connection string (password included), for plain psycopg connections."""
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    @property
    def sessions(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def database_url(settings: Settings) -> tuple[str, embedded.EmbeddedServer | None]:
    """The SQLAlchemy URL to use, starting the embedded server when none is configured."""
    if settings.database_url:
        url = make_url(settings.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        elif url.drivername != "postgresql+psycopg":
            raise DatabaseError(
                f"SKYLEDGER_DATABASE_URL uses driver {url.drivername!r}; skyledger needs PostgreSQL "
                "through psycopg 3, e.g. postgresql://user:password@host:5432/dbname"
            )
        return url.render_as_string(hide_password=False), None
    server = embedded.start(settings.embedded_data_dir)
    return server.url, server


def hide_password(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def connect(settings: Settings, *, check_version: bool = True, **engine_kwargs) -> Database:
    """Open the configured database; by default refuse a schema other than this code's."""
    url, server = database_url(settings)
    engine = create_engine(url, pool_pre_ping=True, **engine_kwargs)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version_num")).scalar_one()
    except OperationalError as err:
        engine.dispose()
        raise DatabaseError(f"cannot connect to {hide_password(url)}: {err.orig}") from err
    if int(version) < MIN_SERVER_VERSION:
        engine.dispose()
        raise DatabaseError(f"{hide_password(url)} runs PostgreSQL {version}; skyledger needs 14 or newer")
    db = Database(engine=engine, url=url, embedded=server)
    if server is not None:
        with engine.connect() as conn:
            fresh = current_revision(conn) is None
        if fresh:
            # The embedded database is skyledger's own: a brand-new one is set up on
            # first use. An external database is only ever migrated on request.
            upgrade(engine)
    if check_version:
        check_schema_version(engine)
    return db


def _migrations_dir() -> Path:
    return Path(str(files("skyledger.migrations")))


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Apply migrations up to ``revision``, then regenerate TAP_SCHEMA's rows from this
    code's declarations (where the schema has it); returns the revision the database is at."""
    command.upgrade(alembic_config(engine), revision)
    with engine.begin() as conn:
        rev = current_revision(conn)
        if conn.execute(text("SELECT to_regclass('tap_schema.columns')")).scalar() is not None:
            # Imported here: it loads the task modules, which declare result tables.
            from .tap import refresh_tap_schema

            refresh_tap_schema(conn)
    assert rev is not None
    return rev


def check_schema_version(engine: Engine) -> str:
    """Raise :class:`SchemaVersionError` unless the database is at this code's head."""
    head = head_revision()
    with engine.connect() as conn:
        current = current_revision(conn)
    if current == head:
        return current
    if current is None:
        raise SchemaVersionError("the database has no skyledger schema yet; run `skyledger init`")
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current in known:
        raise SchemaVersionError(
            f"the database schema is at revision {current}, older than this code's {head}; "
            "run `skyledger db upgrade`"
        )
    raise SchemaVersionError(
        f"the database schema is at revision {current}, which this skyledger does not know "
        f"(its newest is {head}): the database was upgraded by a newer skyledger; upgrade the "
        "skyledger package instead of using this one"
    )
