"""Test fixtures: one real PostgreSQL per test session, with the migrations applied.

By default the embedded server is started in a temporary SKYLEDGER_HOME (exactly the
code path users get). With SKYLEDGER_DATABASE_URL set, the same suite runs against that
server instead; it creates its own scratch databases there and drops them at the end.

Isolation: ``session`` runs each test inside a transaction that is rolled back; tests
that must commit (loaders, CLI in subprocesses) take ``fresh_settings``, a new database
cloned from a migrated template in a few hundred milliseconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, make_url
from sqlalchemy.orm import Session

from skyledger.schema import embedded
from skyledger.schema.database import connect, upgrade
from skyledger.schema.readpath import QUERY_ROLE, ensure_query_role
from skyledger.schema.settings import Settings

TEMPLATE = "skyledger_test_template"

# Prefect's ephemeral API server (in-process flows, `skyledger nightly` in subprocesses)
# must have time to start at load ~10 on 2 cores; Prefect's default is 20 s. Set before
# any test module imports Prefect, which reads its settings at import.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")


class Server:
    """A PostgreSQL server on which the tests may create and drop databases."""

    def __init__(self, admin_conninfo: str, url_for):
        self.admin_conninfo = admin_conninfo
        self.url_for = url_for
        self.created: list[str] = []

    def execute(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str, template: str | None = None) -> str:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        self.execute(stmt)
        if template:
            # A copy gets the default database privileges, not the template's: take
            # TEMPORARY from PUBLIC again, as migration 0011 did on the template.
            self.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        self.created.append(name)
        return self.url_for(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def test_home() -> Iterator[Path]:
    # Under /tmp, never /root: as root the embedded server runs as an unprivileged user.
    # Not in pytest's basetemp either: a concurrent pytest session prunes old basetemp
    # directories, which would pull the data directory from under a running server.
    home = Path(tempfile.mkdtemp(prefix="skyledger-test-home-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def server(test_home) -> Iterator[Server]:
    external = os.environ.get("SKYLEDGER_DATABASE_URL")
    if external:
        base = make_url(external).set(drivername="postgresql+psycopg")
        admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
        srv = Server(admin, lambda name: base.set(database=name).render_as_string(hide_password=False))
    else:
        running = embedded.start(test_home / "pgdata")
        srv = Server(
            running.conninfo("postgres"),
            lambda name: f"postgresql+psycopg://postgres@/{name}?host={running.socket_dir}",
        )
    yield srv
    srv.drop_all()
    if not external:
        embedded.stop(test_home / "pgdata")


@pytest.fixture(scope="session")
def template_url(server) -> str:
    """A database at the head revision, used as the template of every fresh database."""
    url = server.create_database(f"{TEMPLATE}_{os.getpid()}")
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    # The reader login of people's queries (server-wide; needs skyledger_reader first).
    ensure_query_role(server.admin_conninfo)
    return url


def query_url(url: str) -> str:
    """The same database as the reader login (no password: the test server trusts local logins)."""
    return make_url(url).set(username=QUERY_ROLE, password=None).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def settings(server, template_url, test_home) -> Settings:
    """Settings of the shared, migrated database (tests on it must not commit).

    It is a clone of the template: the template itself must stay free of connections
    for ``CREATE DATABASE ... TEMPLATE`` to work.
    """
    url = server.create_database(f"skyledger_test_shared_{os.getpid()}", template=make_url(template_url).database)
    return Settings(home=test_home, database_url=url, query_url=query_url(url))


@pytest.fixture(scope="session")
def database(settings):
    db = connect(settings)
    yield db
    db.dispose()


@pytest.fixture
def session(database) -> Iterator[Session]:
    """A session whose every change is rolled back after the test."""
    with database.engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as sess:
            yield sess
        outer.rollback()


def _new_database(server, template_url: str, home: Path) -> Iterator[Settings]:
    template = make_url(template_url).database
    name = f"skyledger_test_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name, template=template)
    home.mkdir()
    yield Settings(home=home, database_url=url, query_url=query_url(url))
    server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    server.created.remove(name)


@pytest.fixture
def fresh_settings(server, template_url, tmp_path) -> Iterator[Settings]:
    """Settings pointing at a brand-new migrated database that the test may commit to."""
    yield from _new_database(server, template_url, tmp_path / "home")


@pytest.fixture
def fresh_database(fresh_settings):
    db = connect(fresh_settings)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def fresh_database_module(server, template_url, tmp_path_factory):
    """A brand-new migrated database shared by the tests of one module (ingest once, check many ways)."""
    for settings in _new_database(server, template_url, tmp_path_factory.mktemp("module") / "home"):
        db = connect(settings)
        yield db
        db.dispose()


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for running the `skyledger` console script against ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLEDGER_")}
    env["SKYLEDGER_HOME"] = str(settings.home)
    if settings.database_url:
        env["SKYLEDGER_DATABASE_URL"] = settings.database_url
    if settings.query_url:
        env["SKYLEDGER_QUERY_URL"] = settings.query_url
    return env
