"""``skyledger release create``: freeze a collection into a schema and a directory of files.

Everything happens in one REPEATABLE READ transaction, so every table sees the same
snapshot: the release rows and schema are created, the files are written from the
frozen tables into a temporary directory beside the target, their checksums are
recorded, the directory is renamed into place, and only then does the transaction
commit. A failure at any step leaves no schema, no rows and no directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy.exc import DBAPIError

from skyledger.schema.runs import code_version, file_sha256
from skyledger.schema.database import Database, psycopg_connection
from skyledger.schema.tap import refresh_tap_schema

from .content import FORMAT_VERSION, ReleaseInfo, RunRef, TableContent
from .datamodel import datamodel_markdown
from .ecsv import EcsvWriter
from .errors import ReleaseError
from .fits import FitsWriter
from .hats import HATS_FORMAT, HatsTable, write_hats
from .digest import TableDigest
from .freeze import freeze_tables, load_search_path, record_digests, table_content
from .parquet import ParquetTableWriter
from .stream import stream_batches
from .tables import release_tables

__all__ = ["ReleaseFile", "ReleaseSummary", "check_name", "create_release", "FORMATS", "FORMAT_VERSION"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: Schemas a release may never take the name of.
RESERVED = frozenset({"public", "catalog", "information_schema"})
#: Table file formats, in the order they are listed; the writer of each.
FORMATS = {"fits": FitsWriter, "ecsv": EcsvWriter, "parquet": ParquetTableWriter}
MANIFEST = "manifest.json"
DATAMODEL = "datamodel.md"


@dataclass(frozen=True)
class ReleaseFile:
    path: str
    file_format: str
    table_name: str | None
    sha256: str
    size_bytes: int
    n_rows: int | None


@dataclass
class ReleaseSummary:
    name: str
    collection: str
    out_dir: Path
    created_at: dt.datetime
    runs: list[RunRef] = field(default_factory=list)
    tables: dict[str, int] = field(default_factory=dict)
    files: list[ReleaseFile] = field(default_factory=list)


def check_name(name: str) -> None:
    """Refuse a name that cannot be a release (and SQL schema) name."""
    if not NAME_PATTERN.match(name):
        raise ReleaseError(
            f"release name {name!r} is not allowed: it becomes an SQL schema name, so use 1-63 lower-case "
            "letters, digits and underscores, starting with a letter (e.g. dr1)")
    if name in RESERVED or name.startswith("pg_"):
        raise ReleaseError(f"release name {name!r} is reserved for the database's own schemas; choose another")


def _check_free(conn: psycopg.Connection, name: str, out_dir: Path) -> None:
    existing = conn.execute("SELECT created_at, out_dir FROM release WHERE name = %s", (name,)).fetchone()
    if existing:
        raise ReleaseError(
            f"release {name} already exists (created {existing[0]:%Y-%m-%d %H:%M %Z}, files in {existing[1]}); "
            "a release never changes: create a new one under another name")
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone():
        raise ReleaseError(f"the database already has a schema named {name}; choose another release name")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReleaseError(f"{out_dir} already exists and is not an empty directory; choose another --out or name")


def _collection_id(conn: psycopg.Connection, collection: str) -> int:
    row = conn.execute("SELECT id FROM collection WHERE name = %s", (collection,)).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM collection ORDER BY name")]
        raise ReleaseError(f"no collection named {collection!r}; collections: {', '.join(names) or 'none'}")
    return row[0]


def _write_table(conn: psycopg.Connection, directory: Path, info: ReleaseInfo, content: TableContent) -> list[ReleaseFile]:
    name = content.table.name
    writers = [cls(directory / f"{name}.{fmt}", info, content) for fmt, cls in FORMATS.items()]
    try:
        for batch in stream_batches(conn, info.name, name, content.columns):
            for writer in writers:
                writer.write(batch)
        rows = [writer.close() for writer in writers]
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    return [_describe(directory, f"{name}.{fmt}", fmt, name, n) for fmt, n in zip(FORMATS, rows)]


def _describe(directory: Path, rel: str, fmt: str, table: str | None, n_rows: int | None) -> ReleaseFile:
    path = directory / rel
    return ReleaseFile(rel, fmt, table, file_sha256(path), path.stat().st_size, n_rows)


def _manifest(info: ReleaseInfo, runs: list[RunRef], contents: list[TableContent], files: list[ReleaseFile],
              digests: dict[str, TableDigest], hats: list[HatsTable] | None = None) -> str:
    body = {
        "format_version": FORMAT_VERSION,
        "release": info.name,
        "sql_schema": info.name,
        "collection": info.collection,
        "created": info.created_iso + "Z",
        "notes": info.notes,
        "code_version": info.code_version,
        "schema_version": info.schema_version,
        "runs": [asdict(r) for r in runs],
        "tables": {c.table.name: {"rows": c.n_rows, "description": c.table.description,
                                  "runs": [r.id for r in c.runs]} for c in contents},
        "files": [{"path": f.path, "format": f.file_format, "table": f.table_name, "rows": f.n_rows,
                   "sha256": f.sha256, "size_bytes": f.size_bytes} for f in files],
        # SHA-256 of each SQL table's rows (api/releases/digest.py); `release verify` recomputes them.
        "sql_tables": {t: {"rows": d.n_rows, "sha256": d.sha256} for t, d in digests.items()},
    }
    if hats is not None:
        # `release create --hats`: the HATS catalogues (their files are in "files" above).
        body["hats"] = {h.table: {"directory": f"hats/{h.table}", "rows": h.rows, "rows_without_position": h.no_position}
                        for h in hats}
    return json.dumps(body, indent=1) + "\n"


def _release_row(conn: psycopg.Connection, name: str, collection_id: int, notes: str | None, out_dir: Path) -> tuple[int, dt.datetime, str]:
    schema_version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    row = conn.execute(
        "INSERT INTO release (name, collection_id, notes, code_version, schema_version, out_dir) "
        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, created_at",
        (name, collection_id, notes, code_version(), schema_version[0] if schema_version else "none", str(out_dir)),
    ).fetchone()
    assert row is not None
    return row[0], row[1], schema_version[0] if schema_version else "none"


def create_release(
    db: Database,
    name: str,
    *,
    out_dir: Path,
    collection: str = "current",
    notes: str | None = None,
    on_table: Callable[[TableContent], None] | None = None,
    hats: bool = False,
) -> ReleaseSummary:
    """Freeze ``collection`` as release ``name``: schema, rows and files, all or nothing.

    ``hats``: also write the tables with sky positions as HATS catalogues under
    ``hats/TABLE/`` (:mod:`.hats`), each of their files listed with its SHA-256.
    """
    check_name(name)
    out_dir = Path(out_dir).expanduser().resolve()
    renamed = False
    try:
        with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as sa_conn, sa_conn.begin():
            conn = psycopg_connection(sa_conn)
            _check_free(conn, name, out_dir)
            collection_id = _collection_id(conn, collection)
            release_id, created_at, schema_version = _release_row(conn, name, collection_id, notes, out_dir)
            info = ReleaseInfo(name, collection, created_at, code_version(), schema_version, notes)
            load_search_path(conn, collection_id)
            freeze_tables(conn, name=name, release_id=release_id,
                          description=f"Release {name}: collection {collection} frozen at {info.created_iso} UTC")
            digests = record_digests(conn, name=name, release_id=release_id)
            contents = [table_content(conn, name, t) for t in release_tables()]
            runs = [RunRef(*r) for r in conn.execute(
                "SELECT r.id, r.task, r.version, r.params_hash, r.code_version FROM release_run AS rr "
                "JOIN run AS r ON r.id = rr.run_id WHERE rr.release_id = %s ORDER BY r.id", (release_id,))]
            # Physical order is the order the tables were filled in (their key order).
            conn.execute("SET LOCAL synchronize_seqscans = off")
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=out_dir.parent))
            try:
                files: list[ReleaseFile] = []
                for content in contents:
                    files += _write_table(conn, tmp, info, content)
                    if on_table is not None:
                        on_table(content)
                written_hats = write_hats(conn, name, tmp, contents) if hats else None
                for h in written_hats or ():
                    files += [_describe(tmp, p, HATS_FORMAT, h.table, None) for p in h.paths]
                (tmp / DATAMODEL).write_text(datamodel_markdown(info, contents, list(FORMATS)))
                files.append(_describe(tmp, DATAMODEL, "md", None, None))
                (tmp / MANIFEST).write_text(_manifest(info, runs, contents, files, digests, written_hats))
                files.append(_describe(tmp, MANIFEST, "json", None, None))
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO release_file (release_id, path, table_name, file_format, sha256, size_bytes, n_rows) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        [(release_id, f.path, f.table_name, f.file_format, f.sha256, f.size_bytes, f.n_rows) for f in files],
                    )
                if out_dir.exists():
                    out_dir.rmdir()  # checked empty above
                os.rename(tmp, out_dir)
                renamed = True
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except BaseException as err:
        if renamed:  # the commit itself failed: the files must go too
            shutil.rmtree(out_dir, ignore_errors=True)
        cause = err.orig if isinstance(err, DBAPIError) else err
        if isinstance(cause, (pg_errors.UniqueViolation, pg_errors.DuplicateSchema)):
            # Two creates of one name raced: the other committed first.
            raise ReleaseError(f"release {name} was created by someone else meanwhile; nothing was written") from err
        raise
    # TAP_SCHEMA lists the new release's tables. In a transaction of its own, after the
    # commit: the refresh rewrites the rows of every release, and the create's snapshot
    # would miss a release committed meanwhile.
    with db.engine.begin() as tap_conn:
        refresh_tap_schema(tap_conn)
    return ReleaseSummary(name=name, collection=collection, out_dir=out_dir, created_at=created_at, runs=runs,
                          tables={c.table.name: c.n_rows for c in contents}, files=files)
