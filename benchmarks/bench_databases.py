"""PostgreSQL for the benchmarks: a private embedded server (or a given one) and fresh,
migrated databases on it, dropped again at the end (``ingest_benchmark``, ``lines_process``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import URL, create_engine, make_url

from skyledger.schema import embedded
from skyledger.schema.database import upgrade

__all__ = ["Server", "drop_database", "fresh_database", "open_server", "table_sizes"]


@dataclass
class Server:
    admin: URL  # a database on the server from which others are created
    embedded_dir: Path | None = None
    version: str = ""

    def url(self, dbname: str) -> URL:
        return self.admin.set(database=dbname)

    def conninfo(self, dbname: str) -> str:
        """libpq URI, accepted by psycopg and psql alike."""
        return self.url(dbname).set(drivername="postgresql").render_as_string(hide_password=False)


def open_server(database_url: str | None, workdir: Path) -> Server:
    if database_url:
        url = make_url(database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        server = Server(admin=url)
    else:
        data_dir = workdir / "pgdata"
        emb = embedded.start(data_dir)
        server = Server(admin=make_url(emb.url).set(database="postgres"), embedded_dir=data_dir)
    with psycopg.connect(server.conninfo(server.admin.database or "postgres")) as conn:
        server.version = conn.execute("SHOW server_version").fetchone()[0]
    return server


def fresh_database(server: Server, name: str) -> URL:
    """Drop and re-create ``name`` and apply the migrations."""
    with psycopg.connect(server.conninfo(server.admin.database or "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = create_engine(server.url(name))
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return server.url(name)


def drop_database(server: Server, name: str) -> None:
    with psycopg.connect(server.conninfo(server.admin.database or "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def table_sizes(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('spectrum'), pg_total_relation_size('source'), "
            "pg_database_size(current_database()), (SELECT count(*) FROM spectrum)"
        ).fetchone()
    return {"spectrum_bytes": row[0], "source_bytes": row[1], "database_bytes": row[2], "spectrum_rows": row[3]}
