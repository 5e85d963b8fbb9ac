"""The release `skyledger demo` ends with: `dr1`, then `dr2`, ... only when something changed.

Re-running the demo ingests and processes nothing new, so it must not stack up identical
releases: a new one is written only when the runs the collection resolves to, or the
spectra it lists, differ from the newest demo release.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
from psycopg import sql

from skyledger.schema.database import Database, psycopg_connection

from .create import ReleaseSummary, create_release
from .freeze import load_search_path
from .tables import release_tables

__all__ = ["demo_release"]

_DEMO_NAME = re.compile(r"^dr([0-9]+)$")


def _resolved(conn: psycopg.Connection, collection_id: int) -> tuple[frozenset[int], int]:
    """(runs, spectra) a release of the collection would hold now; leaves nothing behind
    (the caller rolls back)."""
    load_search_path(conn, collection_id)
    runs: set[int] = set()
    for table in release_tables():
        if table.has_runs:
            query = sql.SQL("SELECT DISTINCT run_id FROM (") + sql.SQL(table.query) + sql.SQL(") AS q")  # type: ignore[arg-type]
            runs.update(r[0] for r in conn.execute(query))
    n_spectra = conn.execute("SELECT count(*) FROM catalog.spectra").fetchone()[0]
    return frozenset(runs), n_spectra


def demo_release(db: Database, releases_dir: Path, collection: str = "current") -> tuple[str, Path, ReleaseSummary | None]:
    """Write the next ``drN`` release of ``collection`` if it would differ from the newest
    one; returns (name, directory, summary or None when the newest is still current)."""
    with db.engine.connect() as sa_conn:
        conn = psycopg_connection(sa_conn)
        with sa_conn.begin() as tx:
            collection_id = conn.execute("SELECT id FROM collection WHERE name = %s", (collection,)).fetchone()
            names = [r[0] for r in conn.execute("SELECT name FROM release")]
            schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}
            newest = conn.execute(
                "SELECT r.id, r.name, r.out_dir FROM release r WHERE r.collection_id = %s AND r.name ~ '^dr[0-9]+$' "
                "ORDER BY r.created_at DESC, r.id DESC LIMIT 1", (collection_id[0] if collection_id else None,)
            ).fetchone()
            if collection_id is not None and newest is not None:
                now = _resolved(conn, collection_id[0])
                frozen_runs = frozenset(r[0] for r in conn.execute(
                    "SELECT run_id FROM release_run WHERE release_id = %s", (newest[0],)))
                frozen_spectra = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(newest[1], "spectra"))).fetchone()[0]
                if now == (frozen_runs, frozen_spectra):
                    tx.rollback()
                    return newest[1], Path(newest[2]), None
            tx.rollback()
    taken = set(names) | schemas
    if releases_dir.exists():
        taken |= {p.name for p in releases_dir.iterdir()}
    numbers = [int(m.group(1)) for n in taken if (m := _DEMO_NAME.match(n))]
    n = max(numbers, default=0) + 1
    name = f"dr{n}"
    summary = create_release(db, name, collection=collection, out_dir=releases_dir / name,
                             notes="Written by `skyledger demo` from the bundled real data")
    return name, summary.out_dir, summary
