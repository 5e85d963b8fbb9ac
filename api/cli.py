"""The `skyledger` command line. It parses, calls plain functions, and prints.

Heavy modules (SQLAlchemy, Alembic, torch, astropy, Prefect, tqdm, numpy) are imported
inside the commands that use them: `skyledger --help` and `skyledger sql` load only
typer, pydantic-settings and psycopg (docs/database.md has the start-up times).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from skyledger.schema.errors import SkyledgerError

from .plot_cli import plot_app
from .release_cli import release_app
from .sql import FORMATS, format_result, run_query

if TYPE_CHECKING:
    from skyledger.schema.database import Database
    from skyledger.schema.settings import Settings

__all__ = ["app", "main"]

#: Exit code of `ingest` and `nightly` when some files were rejected (README, "Exit codes").
EXIT_REJECTED = 3

OutputFormat = Enum("OutputFormat", {name: name for name in FORMATS}, type=str)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="skyledger: a catalog system for spectroscopic surveys.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database administration.")
app.add_typer(db_app, name="db")
app.add_typer(plot_app, name="plot")
app.add_typer(release_app, name="release")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version as package_version

        typer.echo(f"skyledger {package_version('skyledger')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
) -> None:
    # Settings are built once, here at the entry point, and handed to the commands
    # (pydantic-settings is imported here, not for --help).
    from skyledger.schema.settings import Settings

    ctx.obj = Settings()


def _settings(ctx: typer.Context) -> Settings:
    return ctx.find_root().obj


def _open(ctx: typer.Context) -> Database:
    from skyledger.schema.database import connect

    return connect(_settings(ctx))


def _print_status(db: Database) -> None:
    from . import admin

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
    from . import admin

    db = admin.init_database(_settings(ctx))
    try:
        _print_status(db)
    finally:
        db.dispose()


@app.command()
def demo(ctx: typer.Context) -> None:
    """Run the whole pipeline on the bundled real data: ingest (then process and release)."""
    from skyledger.compute.framework.task import resolve_device

    from . import admin
    from .demo import NEBULA_SUMMARY_SQL, process_demo, release_demo, run_demo

    settings = _settings(ctx)
    db = admin.init_database(settings)
    try:
        typer.echo("1/3 ingesting the bundled real spectra (SDSS DR18, LEGA-C DR3, MaNGA) and a SAMI DR3 cube...")
        _print_batch(run_demo(db))
        device = resolve_device(settings.device)
        typer.echo(f"2/3 processing on {device}...")
        process_demo(db, device, workers=settings.cpu_workers, on_task=_print_run)
        with db.session() as session:
            result = run_query(
                session,
                "SELECT s.survey, count(*) AS spectra, count(k.velocity) AS stellar_fits, "
                "round(avg(k.sigma)::numeric, 1) AS mean_sigma_kms, "
                "(SELECT count(*) FROM catalog.lines l JOIN catalog.spectra t ON t.spectrum_id = l.spectrum_id "
                " WHERE t.survey = s.survey AND l.snr > 3) AS lines_snr_gt_3 "
                "FROM catalog.spectra s LEFT JOIN catalog.stellar_kinematics k ON k.spectrum_id = s.spectrum_id "
                "GROUP BY 1 ORDER BY 1",
            )
        typer.echo(format_result(result, "table"))
        with db.session() as session:
            result = run_query(session, NEBULA_SUMMARY_SQL)
        typer.echo("nebula classes (catalog.nebula_class) per survey, method and context")
        typer.echo(format_result(result, "table"))
        _print_cube_galaxy(db, settings.home / "plots")
        _print_status(db)
        typer.echo("3/3 releasing the current collection...")
        name, where, summary = release_demo(db, settings.releases_dir)
        if summary is None:
            typer.echo(f"release {name} already holds the current results: {where}")
        else:
            typer.echo(f"release {name} written: {len(summary.files)} files in {where}")
        typer.echo(f"SQL: SELECT * FROM {name}.lines LIMIT 10;  check: skyledger release verify {name}")
    finally:
        db.dispose()


def _print_cube_galaxy(db, plots_dir: Path) -> None:
    """The demo cube's rotation fits and gradients, and its plots written to ``plots_dir``."""
    from skyledger.api.rotation_plots import rotation_plots

    from .demo import CUBE_SUMMARY_SQL, DEMO_CUBE_GALAXY

    with db.session() as session:
        result = run_query(session, CUBE_SUMMARY_SQL)
    typer.echo(f"SAMI galaxy {DEMO_CUBE_GALAXY}: rotation curve and metallicity gradient")
    typer.echo(format_result(result, "table"))
    with db.session() as session:
        try:
            paths = rotation_plots(session, DEMO_CUBE_GALAXY, plots_dir)
        except SkyledgerError as err:
            typer.echo(f"no rotation plot: {err}")
            return
    for path in paths:
        typer.echo(f"plot: {path}")


def _print_batch(summary) -> None:
    counts = summary.counts
    typer.echo(
        f"loaded {counts['loaded']}, unchanged {counts['unchanged']}, duplicate {counts['duplicate']}, "
        f"rejected {counts['rejected']}; {summary.n_spectra} spectra loaded"
    )
    rejected = summary.rejected()
    if rejected:
        typer.echo("rejected files:")
        for outcome in rejected:
            typer.echo(f"  {outcome.path}: {outcome.reason}")


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[Optional[list[Path]], typer.Argument(
        exists=True, help="Files or directories; none: every configured survey.")] = None,
    reader: Annotated[Optional[str], typer.Option(help="Force this reader instead of detecting each file's format.")] = None,
    survey: Annotated[Optional[str], typer.Option(help="Survey name (default: the reader's name).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Survey configuration file (default: SKYLEDGER_CONFIG).")] = None,
    allow_duplicate_content: Annotated[bool, typer.Option(
        help="Load content already stored under another survey again (default: record a duplicate).")] = False,
) -> None:
    """Ingest survey files: each file wholly or not at all; bad files are rejected with a reason.

    Exit codes: 0 every file loaded, unchanged or duplicate; 1 an error stopped the
    batch (configuration, database); 2 usage (e.g. a path that does not exist);
    3 some files were rejected (the others are in).
    """
    from tqdm import tqdm

    from skyledger.ingest.batch import InputLimits, ingest_paths, ingest_surveys
    from skyledger.ingest.config import SurveySpec, load_config

    settings = _settings(ctx)
    config_path = config or settings.config
    options = {"limits": InputLimits(settings.max_inflate_ratio, settings.max_inflated_bytes),
               "allow_duplicate_content": allow_duplicate_content}  # fmt: skip
    db = _open(ctx)
    try:
        if paths:
            files_bar = tqdm(desc="ingest", unit="file", disable=None)
            spec = root = None
            if survey is not None:
                if config_path.exists():
                    cfg = load_config(config_path)
                    known = {s.name: s for s in cfg.surveys}
                    spec, root = known.get(survey), cfg.root if survey in known else None
                spec = spec or SurveySpec(name=survey, reader=reader)
            summary = ingest_paths(db, paths, survey=spec, reader=reader, root=root, on_file=lambda o: files_bar.update(),
                                   **options)  # fmt: skip
        else:
            cfg = load_config(config_path)
            files_bar = tqdm(desc="ingest", unit="file", disable=None, total=sum(len(s.files()) for s in cfg.surveys))
            summary = ingest_surveys(db, cfg, on_file=lambda o: files_bar.update(), **options)
        files_bar.close()
    finally:
        db.dispose()
    _print_batch(summary)
    if summary.counts["rejected"]:
        raise typer.Exit(EXIT_REJECTED)


#: Seconds `skyledger nightly` waits for Prefect's ephemeral API server to start. Prefect's
#: default (20 s) is far too short on a loaded machine: at load ~12 on 2 cores the start took
#: 267 s and nightly crashed ("Timed out while attempting to connect to ephemeral Prefect
#: API server"). docs/operations.md has the measurements.
EPHEMERAL_STARTUP_TIMEOUT_S = "600"


def _prefect_environment() -> None:
    # Prefect reads its settings at import: set the offline-friendly defaults first.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)


@app.command()
def nightly(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option(help="Survey configuration file (default: SKYLEDGER_CONFIG).")] = None,
) -> None:
    """Run the nightly flow once, now: ingest every configured survey, then process
    (every compute task on what is pending), then publish the summary."""
    _prefect_environment()
    from skyledger.api.nightly import nightly as nightly_flow

    result = nightly_flow(config=str(config or _settings(ctx).config))
    if result.get("status") == "skipped":
        typer.echo(f"skipped: {result['reason']}")
        return
    counts = result["counts"]
    typer.echo(", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; {result['spectra']} spectra loaded")
    for path, reason in result["rejected"].items():
        typer.echo(f"  rejected {path}: {reason}")
    for run in result.get("compute", []):
        done = f"run {run['run_id']} {run['status']}, {run['n_inputs']} inputs" if run["run_id"] else run["status"]
        typer.echo(f"{run['task']} v{run['version']}: {done}")
    if result["rejected"]:
        raise typer.Exit(EXIT_REJECTED)


@app.command()
def schedule(
    ctx: typer.Context,
    cron: Annotated[str, typer.Option(help="Cron schedule (UTC).")] = "0 3 * * *",
    config: Annotated[Optional[Path], typer.Option(help="Survey configuration file (default: SKYLEDGER_CONFIG).")] = None,
) -> None:
    """Serve the nightly deployment from this process: its runs execute here, no worker needed.

    The cron is fired by the scheduler of a Prefect server: the one PREFECT_API_URL names,
    or else a private one this command starts (Prefect's ephemeral mode has no scheduler).
    """
    from skyledger.ingest.config import load_config

    settings = _settings(ctx)
    config_path = (config or settings.config).resolve()
    load_config(config_path)  # a missing or broken configuration fails now, not at 03:00
    _prefect_environment()
    if os.environ.get("PREFECT_API_URL"):
        _serve_nightly(cron, config_path)
        return
    from .prefect_server import local_prefect_server

    with local_prefect_server(settings.home) as url:
        # Before Prefect is imported: its settings are read from the environment.
        os.environ["PREFECT_API_URL"] = url
        typer.echo(f"started a private Prefect server at {url} (UI: {url.removesuffix('/api')})")
        _serve_nightly(cron, config_path)


def _serve_nightly(cron: str, config_path: Path) -> None:
    from prefect.schedules import Cron

    from skyledger.api.nightly import nightly as nightly_flow

    # Explicitly UTC, as the option says (a bare cron is stored without a timezone).
    nightly_flow.serve(name="nightly", schedules=[Cron(cron, timezone="UTC")], parameters={"config": str(config_path)})


def _print_run(summary) -> None:
    if summary.run_id is None:
        typer.echo(f"{summary.task} v{summary.version}: nothing to do")
    else:
        typer.echo(
            f"{summary.task} v{summary.version}: run {summary.run_id} {summary.status}, {summary.n_inputs} inputs, "
            f"{summary.n_results} rows, {summary.n_flagged} flagged, {summary.seconds:.1f} s"
        )


@app.command()
def process(
    ctx: typer.Context,
    task: Annotated[Optional[list[str]], typer.Option("--task", help="Task to run (repeatable; default: all, in order).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Process at most this many inputs per task.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs per batch.")] = 64,
) -> None:
    """Run compute tasks on every pending input (each task: one new run).

    Concurrent runs share the pending inputs. Progress: a bar on a terminal, else a line
    on stderr at every 10 % and at least every minute (done/total, rate, ETA).
    """
    from skyledger.compute.framework.progress import progress_reporter
    from skyledger.compute.framework.registry import get_task, task_names
    from skyledger.compute.framework.runner import process as run_task
    from skyledger.compute.framework.task import resolve_device

    settings = _settings(ctx)
    device = resolve_device(settings.device)
    tasks = [get_task(name) for name in (task or task_names())]
    if settings.dask_scheduler:
        from skyledger.compute.framework.dask_runner import process_on_dask

        # Each worker opens the database itself; none is opened here (docs/compute.md, "Running on Dask").
        process_on_dask(settings, tasks, device=device, limit=limit, batch_size=batch_size,
                        on_task=lambda _t, summaries: [_print_run(s) for s in summaries])
        return
    db = _open(ctx)
    try:
        for t in tasks:
            bar = progress_reporter(t.name, lambda line: typer.echo(line, err=True))
            summary = run_task(db, t, device=device, workers=settings.cpu_workers, limit=limit, batch_size=batch_size,
                               on_start=bar.start, on_batch=bar.update)
            bar.close()
            _print_run(summary)
    finally:
        db.dispose()


@app.command()
def runs(
    ctx: typer.Context,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
) -> None:
    """List runs, newest first, with whether they are in the current collection."""
    db = _open(ctx)
    try:
        with db.session() as session:
            result = run_query(
                session,
                "SELECT r.id, r.task, r.version, r.status, r.n_inputs, r.n_results, r.n_flagged, r.device, "
                "left(r.params_hash, 10) AS params, r.started_at, r.finished_at, "
                "EXISTS (SELECT 1 FROM catalog.current_runs c WHERE c.run_id = r.id) AS current "
                "FROM run r ORDER BY r.id DESC",
            )
    finally:
        db.dispose()
    typer.echo(format_result(result, fmt.value))


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending migrations."""
    from . import admin

    revision = admin.upgrade_database(_settings(ctx))
    typer.echo(f"schema version: {revision}")


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Server, URL (password hidden), schema version and row counts."""
    from skyledger.schema.database import connect

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
    from . import admin

    stopped = admin.stop_embedded(settings)
    typer.echo("embedded server stopped" if stopped else "embedded server was not running")


@app.command("sql")
def sql_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="One SQL statement (a text holding more is refused).")],
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
    max_rows: Annotated[
        Optional[int], typer.Option("--max-rows", min=1, help="Return at most this many rows (default: SKYLEDGER_QUERY_MAX_ROWS).")
    ] = None,
) -> None:
    """Run one read-only SQL statement as a catalogue reader (the catalog schema and releases).

    As a member of skyledger_reader only, with a timeout and a row cap: PostgreSQL refuses writes.

    Operators change data with the maintenance commands, or with psql as the owner.
    """
    from dataclasses import replace

    from skyledger.schema.readpath import Limits, run_reader_query

    settings = _settings(ctx)
    limits = Limits.from_settings(settings)
    if max_rows is not None:
        limits = replace(limits, max_rows=max_rows)
    result = run_reader_query(settings, query, limits)
    typer.echo(format_result(result, fmt.value))
    if result.truncated:
        typer.echo(f"note: only the first {limits.max_rows:,} rows are shown (--max-rows)", err=True)


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
) -> None:
    """Serve the catalogue over HTTP: IVOA TAP 1.1 at /tap, cone search at /scs, spectrum
    download and DataLink, and the QA page at / (docs/query_service.md).

    Every query runs as a catalogue reader through the read path; limits are the
    SKYLEDGER_TAP_* settings.
    """
    import uvicorn

    from skyledger.api.service.app import create_app
    from skyledger.schema.readpath import connect_reader

    settings = _settings(ctx)
    # Fail now, with the read path's message, rather than on the first request.
    connect_reader(settings).close()
    typer.echo(f"skyledger query service on http://{host}:{port}/ (TAP at /tap); Ctrl-C stops it")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def main() -> None:
    """Console-script entry point: a user error prints one clear line and exits 1."""
    try:
        app()  # standalone mode: usage errors are reported by click itself
    except SkyledgerError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(1)
