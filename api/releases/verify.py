"""``skyledger release verify`` and ``list``: is every file of a release still what was written?

The database's ``release_file`` rows are the reference (the manifest is one of the files
they cover): each file must exist with its recorded size, SHA-256 and row count, FITS
files must pass their own CHECKSUM/DATASUM, the manifest must agree with the database,
the directory must hold nothing else, and the release schema's tables must still hold
the recorded number of rows.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from astropy.io import fits
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.compute.runs import file_sha256
from skyledger.schema.database import psycopg_connection

from .create import MANIFEST, ReleaseFile
from .errors import ReleaseError
from .fits import verify_fits_checksums

__all__ = ["ReleaseListing", "VerifyReport", "list_releases", "verify_release", "count_rows"]


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
    problems: list[str] = field(default_factory=list)

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
        return int(fits.getheader(path, 1)["NAXIS2"])
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
    path = directory / f.path
    if not path.is_file():
        return [f"{f.path}: missing"]
    problems = []
    size = path.stat().st_size
    if size != f.size_bytes:
        problems.append(f"{f.path}: {size} bytes, {f.size_bytes} when written")
    digest = file_sha256(path)
    if digest != f.sha256:
        problems.append(f"{f.path}: SHA-256 {digest} differs from the recorded {f.sha256}")
    if f.n_rows is not None:
        try:
            rows = count_rows(path, f.file_format)
        except (OSError, ValueError, KeyError, IndexError) as err:
            problems.append(f"{f.path}: cannot count its rows ({err})")
        else:
            if rows != f.n_rows:
                problems.append(f"{f.path}: {rows} rows, {f.n_rows} when written")
    if f.file_format == "fits":
        problems += [f"{f.path}: {p}" for p in verify_fits_checksums(path)]
    return problems


def verify_release(session: Session, name: str, directory: Path | None = None) -> VerifyReport:
    """Recompute every checksum and row count of release ``name`` (files in ``directory``,
    by default where they were written) and report each difference."""
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
    report = VerifyReport(name=name, directory=where)
    for f in files:
        report.problems += _check_file(where, f)
        report.files_checked += 1
    known = {f.path for f in files}
    extra = sorted(p.name for p in where.iterdir() if p.name not in known)
    report.problems += [f"{p}: not part of the release" for p in extra]
    report.problems += _check_manifest(where, files)
    report.problems += _check_schema(session, name, files)
    return report


def _check_manifest(directory: Path, files: list[ReleaseFile]) -> list[str]:
    path = directory / MANIFEST
    if not path.is_file():
        return []  # already reported missing
    try:
        listed = {f["path"]: f for f in json.loads(path.read_text())["files"]}
    except (ValueError, KeyError, TypeError) as err:
        return [f"{MANIFEST}: unreadable ({err})"]
    problems = []
    for f in files:
        if f.path == MANIFEST:
            continue
        entry = listed.get(f.path)
        if entry is None:
            problems.append(f"{MANIFEST}: does not list {f.path}")
        elif (entry.get("sha256"), entry.get("rows"), entry.get("size_bytes")) != (f.sha256, f.n_rows, f.size_bytes):
            problems.append(f"{MANIFEST}: its entry for {f.path} differs from the database's")
    return problems


def _check_schema(session: Session, name: str, files: list[ReleaseFile]) -> list[str]:
    expected = {f.table_name: f.n_rows for f in files if f.table_name is not None}
    conn = psycopg_connection(session)
    problems = []
    for table, n_rows in sorted(expected.items()):
        exists = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(name, table).as_string(conn),)).fetchone()[0]
        if exists is None:
            problems.append(f"schema {name}: table {table} is missing")
            continue
        got = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name, table))).fetchone()[0]
        if got != n_rows:
            problems.append(f"schema {name}: table {table} has {got} rows, {n_rows} when released")
    return problems
