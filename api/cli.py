"""The `skyledger` command line. It parses, calls plain functions, and prints."""

from __future__ import annotations

import sys
from enum import Enum
from importlib.metadata import version as package_version
from typing import Annotated, Optional

import typer

from skyledger.schema.database import Database, connect
from skyledger.schema.errors import SkyledgerError
from skyledger.schema.settings import Settings

from . import admin
from .sql import FORMATS, format_result, run_query

__all__ = ["app", "main"]

OutputFormat = Enum("OutputFormat", {name: name for name in FORMATS}, type=str)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="skyledger: a catalog system for spectroscopic surveys.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database administration.")
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"skyledger {package_version('skyledger')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    # Settings are built once, here at the entry point, and handed to the commands.
    ctx.obj = Settings()


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def _open(ctx: typer.Context) -> Database:
    return connect(_settings(ctx))


def _print_status(db: Database) -> None:
    status = admin.database_status(db)
    typer.echo(f"server:          {status.server}")
    typer.echo(f"url:             {status.url}")
    typer.echo(f"server version:  {status.server_version}")
    state = "up to date" if status.up_to_date else f"code expects {status.code_revision}"
    typer.echo(f"schema version:  {status.schema_revision or 'none'} ({state})")
    if status.row_counts:
        typer.echo("rows:")
        width = max(map(len, status.row_counts))
        for table, count in status.row_counts.items():
            typer.echo(f"  {table.ljust(width)}  {count:>12,}")


@app.command()
def init(ctx: typer.Context) -> None:
    """Create (or start) the database and apply all migrations."""
    db = admin.init_database(_settings(ctx))
    try:
        _print_status(db)
    finally:
        db.dispose()


@app.command()
def demo(ctx: typer.Context) -> None:
    """Run the whole pipeline on the bundled real data."""
    db = admin.init_database(_settings(ctx))
    try:
        _print_status(db)
    finally:
        db.dispose()


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending migrations."""
    revision = admin.upgrade_database(_settings(ctx))
    typer.echo(f"schema version: {revision}")


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Server, URL (password hidden), schema version and row counts."""
    db = connect(_settings(ctx), check_version=False)
    try:
        _print_status(db)
    finally:
        db.dispose()


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL server (no effect on an external database)."""
    settings = _settings(ctx)
    if settings.database_url:
        typer.echo("SKYLEDGER_DATABASE_URL is set: an external server is not stopped by skyledger")
        return
    stopped = admin.stop_embedded(settings)
    typer.echo("embedded server stopped" if stopped else "embedded server was not running")


@app.command("sql")
def sql_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="One SQL statement.")],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
    allow_write: Annotated[
        bool, typer.Option("--allow-write", help="Run in a read-write transaction (operators only).")
    ] = False,
) -> None:
    """Run SQL against the catalogue, read-only unless --allow-write is given."""
    db = _open(ctx)
    try:
        with db.session() as session:
            result = run_query(session, query, read_only=not allow_write)
    finally:
        db.dispose()
    typer.echo(format_result(result, fmt.value))


def main() -> None:
    """Console-script entry point: a user error prints one clear line and exits 1."""
    try:
        app()  # standalone mode: usage errors are reported by click itself
    except SkyledgerError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
