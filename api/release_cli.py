"""`skyledger release ...`: create, verify and list catalogue releases (parsing and printing only)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from skyledger.schema.database import Database
    from skyledger.schema.settings import Settings

__all__ = ["release_app"]

release_app = typer.Typer(no_args_is_help=True, help="Frozen catalogue releases: create, verify, list.")


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def _open(ctx: typer.Context) -> Database:
    # Imported here: SQLAlchemy and Alembic only load for commands that use them (fast --help).
    from skyledger.schema.database import connect

    return connect(_settings(ctx))


@release_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name, also its SQL schema: lower case, e.g. dr1.")],
    collection: Annotated[str, typer.Option(help="Collection to freeze.")] = "current",
    notes: Annotated[Optional[str], typer.Option(help="Release notes.")] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Directory for the files (default: SKYLEDGER_HOME/releases/NAME); must not exist.")
    ] = None,
    hats: Annotated[
        bool, typer.Option("--hats", help="Also write the tables with sky positions as HATS catalogues (hats/TABLE/) for lsdb.")
    ] = False,
) -> None:
    """Freeze a collection: SQL schema NAME plus FITS, ECSV, Parquet, datamodel.md and manifest.json."""
    from .releases import check_name, create_release

    check_name(name)  # before the database is even opened
    settings = _settings(ctx)
    db = _open(ctx)
    try:
        summary = create_release(
            db, name, collection=collection, notes=notes, out_dir=out or settings.releases_dir / name,
            on_table=lambda c: typer.echo(f"  {c.table.name}: {c.n_rows:,} rows"), hats=hats,
        )
    finally:
        db.dispose()
    typer.echo(
        f"release {summary.name}: collection {summary.collection}, {len(summary.runs)} runs, "
        f"{len(summary.files)} files in {summary.out_dir}; SQL schema {summary.name}"
    )


@release_app.command("verify")
def verify(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Release name.")],
    directory: Annotated[
        Optional[Path], typer.Option("--dir", help="Directory holding the files (default: where they were written).")
    ] = None,
) -> None:
    """Recompute every file's checksum and row count and every table's row digest.

    Exit 0: intact. Exit 1: problems found (each listed: missing, extra or damaged files,
    changed or dropped tables), or the release or its directory does not exist.
    """
    from .releases import verify_release

    db = _open(ctx)
    try:
        with db.session() as session:
            report = verify_release(session, name, directory)
    finally:
        db.dispose()
    for note in report.notes:
        typer.echo(f"release {name}: note: {note}", err=True)
    if report.ok:
        rows = f"{report.tables_checked} tables' rows" if report.tables_checked else "schema row counts"
        typer.echo(f"release {name}: {report.files_checked} files in {report.directory} and {rows} verified, intact")
        return
    typer.echo(f"release {name}: {len(report.problems)} problem(s) in {report.directory} or schema {name}:", err=True)
    for problem in report.problems:
        typer.echo(f"  {problem}", err=True)
    raise typer.Exit(1)


@release_app.command("list")
def list_command(ctx: typer.Context) -> None:
    """Every release: name, collection, creation time, runs, files, directory."""
    from .releases import list_releases
    from .sql import QueryResult, format_result

    db = _open(ctx)
    try:
        with db.session() as session:
            releases = list_releases(session)
    finally:
        db.dispose()
    result = QueryResult(
        columns=["name", "collection", "created_at", "runs", "files", "directory", "notes"],
        rows=[(r.name, r.collection, r.created_at, r.n_runs, r.n_files, r.out_dir, r.notes) for r in releases],
    )
    typer.echo(format_result(result, "table"))
