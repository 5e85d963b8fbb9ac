"""``skyledger release verify`` and ``list``: is every file and every row of a release still what was written?

The database's ``release_file`` and ``release_table`` rows are the reference (the
manifest is one of the files they cover): each file must exist with its recorded size,
SHA-256 and row count, FITS files must pass their own CHECKSUM/DATASUM, the manifest
must agree with the database, the directory must hold nothing else, and every table of
the release schema must still exist, guarded by its read-only trigger, with the rows
whose digest was recorded (:mod:`.digest`). A file no reader can parse is reported as
damaged, never raised. Releases made before digests were recorded (migration 0012) get
their row counts checked, and a note says so.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.io import fits
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.schema.runs import file_sha256
from skyledger.schema.database import psycopg_connection

from .create import MANIFEST, ReleaseFile
from .digest import TableDigest, relation_exists, table_digest
from .errors import ReleaseError
from .fits import verify_fits_checksums
from .freeze import frozen_tables

__all__ = ["DIGESTS_SINCE", "ReleaseListing", "VerifyReport", "list_releases", "verify_release", "count_rows"]

#: The database schema revision that started recording table digests (release_table).
DIGESTS_SINCE = "0012"


@dataclass
class ReleaseListing:
    name: str
    collection: str
    created_at: dt.datetime
    n_runs: int
    n_files: int
    out_dir: str | None
    notes: str | None


@dataclass
class VerifyReport:
    name: str
    directory: Path
    files_checked: int = 0
    #: Tables whose rows were checked against their recorded digest.
    tables_checked: int = 0
    problems: list[str] = field(default_factory=list)
    #: What could not be checked and why (not a problem: an old release has no digests).
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def list_releases(session: Session) -> list[ReleaseListing]:
    rows = session.execute(text(
        "SELECT r.name, c.name, r.created_at, "
        "(SELECT count(*) FROM release_run rr WHERE rr.release_id = r.id), "
        "(SELECT count(*) FROM release_file rf WHERE rf.release_id = r.id), r.out_dir, r.notes "
        "FROM release r JOIN collection c ON c.id = r.collection_id ORDER BY r.created_at, r.id"))
    return [ReleaseListing(*row) for row in rows]


def count_rows(path: Path, file_format: str) -> int:
    """Rows of a release table file, read the way its format defines them."""
    if file_format == "fits":
        # Opened here so that the file is closed whatever astropy raises.
        with open(path, "rb") as fh:
            try:
                header = fits.getheader(fh, 1)
            except IndexError as err:
                raise ValueError("no table extension (HDU 1): a header is broken or the file ends early") from err
        return int(header["NAXIS2"])
    if file_format == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    if file_format == "ecsv":
        with open(path, "rb") as fh:
            skip = 0
            for line in fh:
                if not line.startswith(b"#"):
                    break
                skip += 1
        names = line.decode("utf-8").rstrip("\r\n").split(",")
        # Rows are counted by a CSV parser, not by lines: a quoted value may hold a newline.
        reader = pacsv.open_csv(
            str(path),
            read_options=pacsv.ReadOptions(skip_rows=skip + 1, column_names=names),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}, include_columns=names[:1]),
        )
        return sum(batch.num_rows for batch in reader)
    raise ValueError(f"no row count for format {file_format}")


def _check_file(directory: Path, f: ReleaseFile) -> list[str]:
    """Size, SHA-256, row count and FITS checksums of one file. Each parsing step that
    fails is reported as damaged (the first reason only) and the next step still runs."""
    path = directory / f.path
    if not path.exists():
        return [f"{f.path}: missing"]
    if not path.is_file():
        return [f"{f.path}: not a regular file"]
    problems: list[str] = []
    damaged: list[str] = []

    def step(check: Callable[[], list[str]]) -> None:
        try:
            with warnings.catch_warnings():
                # A damaged header often makes astropy warn and guess; a guess is not a check.
                warnings.simplefilter("error")
                problems.extend(check())
        except Exception as err:  # noqa: BLE001 -- whatever a reader raises on a damaged file is a finding
            damaged.append(_reason(err))

    def size() -> list[str]:
        got = path.stat().st_size
        return [] if got == f.size_bytes else [f"{f.path}: {got} bytes, {f.size_bytes} when written"]

    def sha256() -> list[str]:
        got = file_sha256(path)
        return [] if got == f.sha256 else [f"{f.path}: SHA-256 {got} differs from the recorded {f.sha256}"]

    def rows() -> list[str]:
        got = count_rows(path, f.file_format)
        return [] if got == f.n_rows else [f"{f.path}: {got} rows, {f.n_rows} when written"]

    def checksums() -> list[str]:
        return [f"{f.path}: {p}" for p in verify_fits_checksums(path)]

    step(size)
    step(sha256)
    if f.n_rows is not None:
        step(rows)
    if f.file_format == "fits":
        step(checksums)
    if damaged:
        problems.append(f"{f.path}: damaged: {damaged[0]}")
    return problems


def _reason(err: BaseException) -> str:
    text_ = " ".join(str(err).split()) or "no message"
    if len(text_) > 200:
        text_ = text_[:197] + "..."
    return f"{type(err).__name__}: {text_}"


def verify_release(session: Session, name: str, directory: Path | None = None) -> VerifyReport:
    """Recompute every checksum, row count and table digest of release ``name`` (files in
    ``directory``, by default where they were written) and report each difference.

    Never raises for what it finds: a damaged file, a dropped table or a changed row is a
    problem in the report. It raises :class:`ReleaseError` only when it cannot start (no
    such release, no directory).
    """
    row = session.execute(text("SELECT id, out_dir FROM release WHERE name = :n"), {"n": name}).one_or_none()
    if row is None:
        known = session.execute(text("SELECT name FROM release ORDER BY name")).scalars().all()
        raise ReleaseError(f"no release named {name!r}; releases: {', '.join(known) or 'none'}")
    release_id, out_dir = row
    where = Path(directory) if directory is not None else Path(out_dir) if out_dir else None
    if where is None or not where.is_dir():
        raise ReleaseError(
            f"release {name}: its directory {where} does not exist; pass --dir with the directory that holds "
            "its files (e.g. a downloaded copy)")
    files = [ReleaseFile(*r) for r in session.execute(text(
        "SELECT path, file_format, table_name, sha256, size_bytes, n_rows FROM release_file "
        "WHERE release_id = :r ORDER BY id"), {"r": release_id})]
    digests = {r[0]: TableDigest(r[1], r[2]) for r in session.execute(text(
        "SELECT table_name, n_rows, sha256 FROM release_table WHERE release_id = :r ORDER BY table_name"),
        {"r": release_id})}
    report = VerifyReport(name=name, directory=where)
    for f in files:
        report.problems += _check_file(where, f)
        report.files_checked += 1
    report.problems += [f"{p}: not part of the release" for p in _extra(where, {f.path for f in files})]
    report.problems += _check_manifest(where, files, digests)
    conn = psycopg_connection(session)
    if digests:
        report.problems += _check_tables(conn, name, digests)
        report.tables_checked = len(digests)
    else:
        report.notes.append(
            f"schema {name}: no row digest recorded (release made before skyledger recorded them, "
            f"database schema revision {DIGESTS_SINCE}); only its row counts were checked")
        report.problems += _check_counts(conn, name, files)
    return report


def _extra(directory: Path, known: set[str], prefix: str = "") -> list[str]:
    """Entries of ``directory`` no recorded path names. A subdirectory holding recorded
    files (``hats/...``) is searched in turn; any other one is reported whole."""
    extra = []
    for entry in sorted(directory.iterdir()):
        rel = prefix + entry.name
        if rel in known:
            continue
        if entry.is_dir() and not entry.is_symlink() and any(k.startswith(rel + "/") for k in known):
            extra += _extra(entry, known, rel + "/")
        else:
            extra.append(rel)
    return extra


def _check_manifest(directory: Path, files: list[ReleaseFile], digests: dict[str, TableDigest]) -> list[str]:
    path = directory / MANIFEST
    if not path.is_file():
        return []  # already reported missing
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        listed = {f["path"]: f for f in body["files"]}
        problems = []
        for f in files:
            if f.path == MANIFEST:
                continue
            entry = listed.get(f.path)
            if entry is None:
                problems.append(f"{MANIFEST}: does not list {f.path}")
            elif (entry.get("sha256"), entry.get("rows"), entry.get("size_bytes")) != (f.sha256, f.n_rows, f.size_bytes):
                problems.append(f"{MANIFEST}: its entry for {f.path} differs from the database's")
        if digests:
            tables = body.get("sql_tables", {})
            for table, d in sorted(digests.items()):
                entry = tables.get(table)
                if entry is None or (entry.get("rows"), entry.get("sha256")) != (d.n_rows, d.sha256):
                    problems.append(f"{MANIFEST}: its digest of table {table} differs from the database's")
    except Exception as err:  # noqa: BLE001 -- a damaged manifest is a finding, whatever the parser raises
        return [f"{MANIFEST}: damaged: {_reason(err)}"]
    return problems


def _relations(conn: psycopg.Connection, name: str) -> dict[str, str | None]:
    """Every table-like relation of schema ``name`` and the state of its read-only trigger
    (``pg_trigger.tgenabled``: O or A fire normally; D disabled; R only in replica mode)."""
    return {r[0]: r[1] for r in conn.execute(
        "SELECT c.relname, t.tgenabled::text FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_trigger AS t ON t.tgrelid = c.oid AND t.tgname = 'release_read_only' "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')", (name,))}


def _schema_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() is not None


def _check_tables(conn: psycopg.Connection, name: str, recorded: dict[str, TableDigest]) -> list[str]:
    """Recompute every table's digest; name each table that is gone, gained or lost rows,
    or holds other rows, and each read-only trigger that no longer guards its table."""
    if not _schema_exists(conn, name):
        return [f"schema {name} is missing (dropped): tables {', '.join(sorted(recorded))} are gone"]
    relations = _relations(conn, name)
    problems = []
    keys = frozen_tables()
    for table, expected in sorted(recorded.items()):
        where = f"schema {name}: table {table}"
        if table not in relations:
            problems.append(f"{where} is missing (dropped)")
            continue
        trigger = relations[table]
        if trigger is None:
            problems.append(f"{where} has lost its read-only trigger release_read_only")
        elif trigger not in ("O", "A"):
            problems.append(f"{where}: its read-only trigger is disabled "
                            f"(ALTER TABLE {name}.{table} ENABLE TRIGGER release_read_only restores it)")
        try:
            with conn.transaction():  # a savepoint: one unreadable table does not end the checks
                got = table_digest(conn, name, table, keys.get(table, ()))
        except psycopg.Error as err:
            problems.append(f"{where} cannot be read: {_reason(err)}")
            continue
        if got.n_rows != expected.n_rows:
            change = "rows were deleted" if got.n_rows < expected.n_rows else "rows were added"
            problems.append(f"{where} has {got.n_rows} rows, {expected.n_rows} when released ({change})")
        elif got.sha256 != expected.sha256:
            problems.append(f"{where}: its rows changed since the release "
                            f"(SHA-256 {got.sha256}, {expected.sha256} when released)")
    extra = sorted(set(relations) - set(recorded))
    problems += [f"schema {name}: {t} is not part of the release" for t in extra]
    return problems


def _check_counts(conn: psycopg.Connection, name: str, files: list[ReleaseFile]) -> list[str]:
    """Releases made before table digests: the row count of each table its files hold."""
    expected = {f.table_name: f.n_rows for f in files if f.table_name is not None}
    if not _schema_exists(conn, name):
        return [f"schema {name} is missing (dropped): tables {', '.join(sorted(expected))} are gone"]
    problems = []
    for table, n_rows in sorted(expected.items()):
        if not relation_exists(conn, name, table):
            problems.append(f"schema {name}: table {table} is missing (dropped)")
            continue
        try:
            with conn.transaction():
                got = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name, table))).fetchone()[0]
        except psycopg.Error as err:
            problems.append(f"schema {name}: table {table} cannot be read: {_reason(err)}")
            continue
        if got != n_rows:
            problems.append(f"schema {name}: table {table} has {got} rows, {n_rows} when released")
    return problems
