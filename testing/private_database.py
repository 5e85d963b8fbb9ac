"""A migrated database of its own on the embedded server, for scripts outside pytest.

The benchmarks and the scripts that make test data (tests/data/*/make_*.py) run the real
chain — ingest, tasks, catalogue views — on a database nobody else uses; pytest has its
own fixtures (tests/conftest.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from sqlalchemy import create_engine

from skyledger.schema import embedded
from skyledger.schema.database import Database, connect, upgrade
from skyledger.schema.settings import Settings

__all__ = ["private_database"]


def private_database(work: Path, name: str) -> Database:
    """A new database ``<name>_<ms>`` with the migrations applied, on the embedded server
    under ``work`` (started if needed)."""
    running = embedded.start(work / "pgdata")
    db_name = f"{name}_{int(time.time() * 1000)}"
    with psycopg.connect(running.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    url = f"postgresql+psycopg://postgres@/{db_name}?host={running.socket_dir}"
    engine = create_engine(url)
    upgrade(engine)
    engine.dispose()
    return connect(Settings(home=work, database_url=url))
