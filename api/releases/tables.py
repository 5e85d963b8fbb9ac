"""What a release holds: its tables, their columns' metadata and the SQL that freezes them.

Every table but ``spectra`` is derived from a result-table declaration
(:mod:`skyledger.schema.results`): the same columns as its catalog view, with the same
metadata (type, unit, UCD, description), and the same best-run rule. ``spectra`` freezes
``catalog.spectra`` with the columns :mod:`skyledger.schema.catalog` declares. These
columns feed the SQL comments of the release schema, the FITS, ECSV and Parquet headers
and ``datamodel.md``.

Every numeric column has one unit for all its rows: line fluxes, stored in each
spectrum's own unit, are converted by the query (factors in the temporary table
``release_flux_scale``, :mod:`.units`).

The queries resolve results through a *search path*: the succeeded runs of the named
collection with their rank, in the temporary table ``release_search_path``, where the
catalog views use ``catalog.current_runs``; a test checks that a release of ``current``
equals the views. A task that declares a result table gets its release table with no
change here.
"""

from __future__ import annotations

from dataclasses import dataclass

from skyledger.schema.catalog import SPECTRA as SPECTRA_VIEW
from skyledger.schema.results import ResultView, ViewColumn, best_rows_sql, declared_views
from skyledger.schema.tap import TapTable

from .units import FLUX_SCALE_TABLE, LINE_FLUX_UNIT

__all__ = ["PG_TYPES", "SEARCH_PATH_TABLE", "ReleaseColumn", "ReleaseTable", "release_table", "release_tables", "release_tap_tables"]

#: The temporary table (run_id, task, rank) the queries read the collection's runs from.
SEARCH_PATH_TABLE = "release_search_path"

#: PostgreSQL types a release table column may have.
PG_TYPES = ("int2", "int4", "int8", "float4", "float8", "text", "bool")


@dataclass(frozen=True)
class ReleaseColumn(ViewColumn):
    """A column of a release table: a view column restricted to the types the files can hold."""

    def __post_init__(self) -> None:
        if self.pg_type not in PG_TYPES:
            raise ValueError(f"release column {self.name}: type {self.pg_type} is not one of {PG_TYPES}")

    @classmethod
    def of_view(cls, column: ViewColumn, *, description: str | None = None, unit: str | None = None) -> ReleaseColumn:
        """The view's column as released; ``description``/``unit`` where the release converts it."""
        return cls(column.name, column.pg_type, description or column.description,
                   unit if unit is not None else column.unit, column.ucd)


@dataclass(frozen=True)
class ReleaseTable:
    name: str
    description: str
    #: SELECT producing the columns in order; may read ``release_search_path``.
    query: str
    columns: tuple[ReleaseColumn, ...]
    #: Primary key of the frozen table (also the order its rows are written in).
    key: tuple[str, ...]
    #: flag_definition.table_name of the flags column's bits.
    flags_of: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def has_runs(self) -> bool:
        return "run_id" in self.column_names


SPECTRA = ReleaseTable(
    name="spectra",
    description=SPECTRA_VIEW.description,
    # Spectra are not run results: the release freezes what catalog.spectra lists.
    query=f"SELECT {', '.join(c.name for c in SPECTRA_VIEW.columns)} FROM catalog.spectra ORDER BY spectrum_id",
    columns=tuple(ReleaseColumn.of_view(c) for c in SPECTRA_VIEW.columns),
    key=("spectrum_id",),
    flags_of="spectrum",
)

#: Columns of a view whose release values are converted to one unit for all rows: the
#: query multiplies them by the factor of the row's spectrum flux unit (:mod:`.units`),
#: and the unit column itself is not released.
_CONVERTED = {
    "lines": {
        "flux": "Integrated line flux, converted from the spectrum's flux unit (NULL where that unit is unknown "
                "or no flux density per wavelength; see spectra.flux_unit)",
        "flux_err": "Error of flux",
        "flux_limit": "Upper limit of flux where the line is not detected (flag NOT_DETECTED): max(flux, 0) + 3 flux_err, "
                      "converted like flux; NULL where detected",
    },
}


def _from_result(spec: ResultView) -> ReleaseTable:
    rows = best_rows_sql(spec, runs=SEARCH_PATH_TABLE, order=True)
    converted = _CONVERTED.get(spec.view, {})
    view_columns = [c for c in spec.columns() if not (converted and c.name == "flux_unit")]
    columns = tuple(
        ReleaseColumn.of_view(c, description=converted[c.name], unit=LINE_FLUX_UNIT) if c.name in converted
        else ReleaseColumn.of_view(c)
        for c in view_columns
    )
    if converted:
        select = ", ".join(f"b.{c.name} * fs.scale AS {c.name}" if c.name in converted else f"b.{c.name}"
                           for c in view_columns)
        order = ", ".join(f"b.{k}" for k in spec.release_key)
        rows = (f"SELECT {select}\nFROM ({rows}) AS b\n"
                f"LEFT JOIN {FLUX_SCALE_TABLE} AS fs ON fs.flux_unit = b.flux_unit\nORDER BY {order}")
    return ReleaseTable(
        name=spec.view,
        description=spec.description,
        query=rows,
        columns=columns,
        key=spec.release_key,
        flags_of=spec.table if "flags" in spec.model.__table__.columns else None,
    )


def release_tables() -> tuple[ReleaseTable, ...]:
    """Every table a release holds, in the order they are written: spectra, then one per
    declared result table (read at each call, so a task registered later is included)."""
    return (SPECTRA, *(_from_result(spec) for spec in declared_views()))


def release_table(name: str) -> ReleaseTable:
    for table in release_tables():
        if table.name == name:
            return table
    raise KeyError(name)


def release_tap_tables(release: str) -> list[TapTable]:
    """The tables of release schema ``release`` as TAP_SCHEMA lists them."""
    return [TapTable(release, t.name, t.description, t.columns, t.key, table_type="table") for t in release_tables()]
