"""The `catalog` schema that people query: every view, its columns and their metadata.

The result views are derived from the result-table declarations
(:mod:`skyledger.schema.results`); the other views (spectra, current runs, releases, flag
definitions, runs, ingest files, spectrum pixels) are written by hand in their migrations, and their columns are declared
here from the model columns they show. Comments on the views, TAP_SCHEMA rows and
``docs/catalog.md`` are generated from this module.

``python -m skyledger.schema.catalog ddl [VIEW ...]`` prints the statements a migration
pastes when a result view or a comment changes; ``python -m skyledger.schema.catalog
markdown`` prints ``docs/catalog.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from . import models as m
from .results import ResultView, ViewColumn, declared_views, view_ddl

__all__ = ["CORE_VIEWS", "CatalogView", "catalog_views", "comment_ddl", "markdown"]


@dataclass(frozen=True)
class CatalogView:
    name: str
    description: str
    columns: tuple[ViewColumn, ...]
    #: The result-table declaration the view is derived from (None for the core views).
    result: ResultView | None = None

    @classmethod
    def of_result(cls, spec: ResultView) -> CatalogView:
        return cls(spec.view, spec.description, tuple(spec.columns()), spec)


_ = ViewColumn.of

SPECTRA = CatalogView(
    "spectra",
    "Every ingested spectrum (IFU spaxels and bins included) of the newest version of each file, "
    "with its source and file",
    (
        _(m.Spectrum.id, name="spectrum_id"),
        _(m.Survey.name, name="survey", description="Survey name"),
        _(m.Spectrum.object_id),
        _(m.Spectrum.ra),
        _(m.Spectrum.dec),
        _(m.Spectrum.z),
        _(m.IngestFile.uri, name="file", description="File the spectrum was read from"),
        _(m.IngestFile.version, name="file_version",
          description="Version of that file (1 for the first content seen under its name)"),
        _(m.Spectrum.n_pix),
        _(m.Spectrum.source_id, ucd="meta.id"),
        _(m.Source.object_id, name="source_object_id", description="The survey's identifier of that source"),
        _(m.Source.parent_id, name="parent_source_id", description="Parent source (the galaxy of a spaxel, bin or region)",
          ucd="meta.id"),
        _(m.Spectrum.flux_unit),
        _(m.Spectrum.flags),
        _(m.Spectrum.wave_min),
        _(m.Spectrum.wave_max),
        _(m.Spectrum.resolution_median),
    ),
)

CURRENT_RUNS = CatalogView(
    "current_runs",
    "Runs in the current collection, best first per task",
    (
        _(m.Run.id, name="run_id"),
        _(m.Run.task),
        _(m.Run.version),
        _(m.Run.params_hash),
        _(m.Run.code_version),
        _(m.Run.finished_at),
        _(m.CollectionRun.rank),
    ),
)

RELEASES = CatalogView(
    "releases",
    "Every catalogue release; each is an SQL schema of its own name",
    (
        _(m.Release.name, description="Release name, also its SQL schema (SELECT ... FROM <name>.lines)"),
        _(m.Release.created_at),
        _(m.Collection.name, name="collection", description="Collection the release froze"),
        _(m.Release.notes),
        _(m.Release.code_version),
        _(m.Release.schema_version),
        ViewColumn("n_runs", "int8", "Runs whose results the release holds", ucd="meta.number"),
    ),
)

FLAG_DEFINITIONS = CatalogView(
    "flag_definitions",
    "What every bit of every flags column means",
    tuple(_(getattr(m.FlagDefinition, c)) for c in ("table_name", "column_name", "bit", "name", "description")),
)

RUNS = CatalogView(
    "runs",
    "Every run of every task (succeeded, failed or running), with its counts and whether the current "
    "collection holds it",
    (
        _(m.Run.id, name="run_id"),
        *(_(getattr(m.Run, c)) for c in ("task", "version", "status", "n_inputs", "n_results", "n_flagged",
                                          "error", "device", "started_at", "finished_at")),
        ViewColumn("is_current", "bool",
                   "True when the run is in the collection current, whose runs the result views choose from",
                   ucd="meta.code"),
    ),
)

INGEST_FILES = CatalogView(
    "ingest_files",
    "Every file the ingest has seen (loaded, rejected or duplicate), every version, with what it wrote",
    (
        _(m.IngestFile.id, name="file_id"),
        _(m.Survey.name, name="survey", description="Survey name"),
        _(m.IngestFile.uri, name="file"),
        _(m.IngestFile.version, name="file_version"),
        *(_(getattr(m.IngestFile, c)) for c in ("status", "reason", "reader", "n_sources", "n_spectra", "n_lines",
                                                 "batch_id", "started_at", "finished_at", "duration_s")),
    ),
)

SPECTRUM_PIXELS = CatalogView(
    "spectrum_pixels",
    "The pixels of every spectrum of catalog.spectra that has any: one row per spectrum, one array "
    "element per pixel",
    (
        _(m.Spectrum.id, name="spectrum_id"),
        _(m.WavelengthGrid.wave),
        *(_(getattr(m.Spectrum, c)) for c in ("flux", "ivar", "mask", "resolution", "flux_unit")),
    ),
)

#: The views written by hand in their migrations, in the order they were added.
CORE_VIEWS: tuple[CatalogView, ...] = (SPECTRA, CURRENT_RUNS, RELEASES, FLAG_DEFINITIONS, RUNS, INGEST_FILES,
                                       SPECTRUM_PIXELS)


def catalog_views() -> list[CatalogView]:
    """Every view of the catalog schema: the core views, then one per result table."""
    return [*CORE_VIEWS, *(CatalogView.of_result(spec) for spec in declared_views())]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def comment_ddl(view: CatalogView) -> list[str]:
    name = f"catalog.{view.name}"
    return [f"COMMENT ON VIEW {name} IS {_quote(view.description)}"] + [
        f"COMMENT ON COLUMN {name}.{c.name} IS {_quote(c.description)}" for c in view.columns
    ]


def _cell(text: str | None) -> str:
    return "" if not text else text.replace("|", "\\|")


def markdown() -> str:
    """``docs/catalog.md``: every catalog view and column, as the declarations say."""
    out = [
        "# The `catalog` schema",
        "",
        "Generated by `python -m skyledger.schema.catalog markdown` from the column declarations; "
        "`tests/schema/test_declarations.py` fails when this file, the database or a release drifts from them.",
        "Result views show, per input (spectrum or galaxy), the rows of the best run of the `current` "
        "collection: lowest rank, then newest.",
    ]
    for view in catalog_views():
        out += ["", f"## `catalog.{view.name}`", "", view.description + "."]
        if view.result is not None:
            r = view.result
            per = f"{r.key} and task" if r.per_task else r.key
            out += ["", f"Table `{r.table}`; best run chosen per {per}"
                    + (f" among the runs of {', '.join(r.tasks)}" if r.tasks else "") + "."]
        out += ["", "| column | type | unit | UCD | description |", "|---|---|---|---|---|"]
        out += [f"| `{c.name}` | {c.pg_type} | {_cell(c.unit)} | {_cell(c.ucd)} | {_cell(c.description)} |"
                for c in view.columns]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m skyledger.schema.catalog", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    ddl = sub.add_parser("ddl", help="CREATE VIEW and COMMENT statements of result views (all, or those named)")
    ddl.add_argument("views", nargs="*")
    sub.add_parser("comments", help="COMMENT statements of every catalog view")
    sub.add_parser("markdown", help="docs/catalog.md")
    args = ap.parse_args(argv)
    if args.what == "markdown":
        print(markdown(), end="")
        return
    if args.what == "comments":
        statements = [s for v in catalog_views() for s in comment_ddl(v)]
    else:
        specs = [s for s in declared_views() if not args.views or s.view in args.views]
        statements = [s for spec in specs for s in (view_ddl(spec), *comment_ddl(CatalogView.of_result(spec)))]
    print(";\n\n".join(statements) + ";")


if __name__ == "__main__":
    main()
