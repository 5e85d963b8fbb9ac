"""The one declaration of a result table, and everything derived from it.

A result table is a SQLAlchemy model (its columns carry type, description, unit and
UCD, :func:`skyledger.schema.base.column`) decorated with :func:`result_table`, which
adds what the model cannot say: the catalog view that shows it, the input it is keyed
by, and how the best run is chosen. From that one declaration come

- the COPY column list a task writes (:func:`copy_columns`),
- the SQL that picks each input's rows from the best run on a search path
  (:func:`chosen_sql`, :func:`best_rows_sql`), used by the catalog views, by the release
  queries and by tasks that read upstream results,
- the ``CREATE VIEW`` and ``COMMENT ON`` statements of its catalog view
  (:func:`view_ddl`), pasted into a migration when the view changes so that history
  stays fixed (``python -m skyledger.schema.catalog ddl``),
- the release table (:mod:`skyledger.api.releases.tables`), the TAP_SCHEMA rows
  (:mod:`skyledger.schema.tap`) and the data-model document (``docs/catalog.md``).

``tests/schema/test_declarations.py`` fails when the database, the documents or a task
drift from the declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import BigInteger, Boolean, DateTime, Double, Integer, SmallInteger, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL
from sqlalchemy.types import NullType

__all__ = [
    "CURRENT_RUNS",
    "RESULT_VIEWS",
    "ResultView",
    "ViewColumn",
    "best_rows_sql",
    "chosen_sql",
    "copy_columns",
    "pg_type",
    "result_table",
    "result_view",
    "view_ddl",
]

#: The search path of the `current` collection (run_id, task, rank, ...), migration 0003.
CURRENT_RUNS = "catalog.current_runs"

#: PostgreSQL type names (as COPY and the release files know them) of SQLAlchemy types.
_PG_TYPES = ((BigInteger, "int8"), (SmallInteger, "int2"), (Integer, "int4"), (REAL, "float4"),
             (Double, "float8"), (Text, "text"), (Boolean, "bool"), (DateTime, "timestamptz"))  # fmt: skip


def column_type(col: Any) -> Any:
    """The SQL type of a model column; a column declared by its foreign key alone takes
    the type of the column it refers to (SQLAlchemy leaves it NullType until resolved)."""
    if isinstance(col.type, NullType) and col.foreign_keys:
        return next(iter(col.foreign_keys)).column.type
    return col.type


def pg_type(sa_type: Any) -> str:
    if isinstance(sa_type, ARRAY):
        return pg_type(sa_type.item_type) + "[]"
    if isinstance(sa_type, JSONB):
        return "jsonb"
    # Order matters: BigInteger and SmallInteger are Integer subclasses, REAL a Float.
    for cls, name in _PG_TYPES:
        if isinstance(sa_type, cls):
            return name
    raise TypeError(f"no PostgreSQL type name for SQL type {sa_type!r}")


@dataclass(frozen=True)
class ViewColumn:
    """A column of a catalog view, with the metadata readers see (comment, unit, UCD)."""

    name: str
    pg_type: str
    description: str
    unit: str | None = None
    ucd: str | None = None

    @classmethod
    def of(cls, col: Any, *, name: str | None = None, description: str | None = None, ucd: str | None = None) -> ViewColumn:
        """From a model column (or mapped attribute); ``description``/``ucd`` narrow its meaning."""
        base = col.property.columns[0] if hasattr(col, "property") else col
        return cls(
            name=name or str(base.name),
            pg_type=pg_type(column_type(base)),
            description=description or base.comment or "",
            unit=base.info.get("unit"),
            ucd=ucd if ucd is not None else base.info.get("ucd"),
        )


@dataclass(frozen=True)
class ResultView:
    """How a result table is shown: its catalog view and the choice of the best run.

    Rows of one input (a spectrum, or a galaxy for per-galaxy tasks) are always taken
    from one run: the first on the search path (lowest rank, then newest) that has rows
    for it, so reprocessing never mixes or duplicates an input's rows.
    """

    model: Any
    #: catalog.<view>, and the release table of the same name.
    view: str
    description: str
    #: The input column (``spectrum_id`` or ``source_id``).
    key: str = "spectrum_id"
    #: Columns that, with the key, identify a row of one run (and order release rows).
    order: tuple[str, ...] = ()
    #: Tasks whose runs are shown; None: every task that writes the table.
    tasks: tuple[str, ...] | None = None
    #: Choose the best run per (input, task): tasks writing the same table (fitted and
    #: catalogued lines, two classifiers) do not replace each other's rows.
    per_task: bool = False
    #: Show the run's task under this name.
    task_column: str | None = None
    #: Columns of the input spectrum shown beside the rows (e.g. the unit of the fluxes).
    spectrum_columns: tuple[str, ...] = ()
    #: Per-galaxy tables show the galaxy's object_id after source_id.
    with_object_id: bool = False

    @property
    def table(self) -> str:
        return self.model.__tablename__

    def _model_column(self, name: str) -> Any:
        return self.model.__table__.columns[name]

    def value_names(self) -> list[str]:
        """Model columns shown after the key and the order columns, in model order."""
        skip = {"run_id", self.key, "flags", *self.order}
        return [str(c.name) for c in self.model.__table__.columns if c.name not in skip]

    def columns(self) -> list[ViewColumn]:
        """The view's columns in order: key, [object_id], order, values, flags, extras, run_id."""
        from . import models as m

        cols = [ViewColumn.of(self._model_column(self.key))]
        if self.with_object_id:
            cols.append(ViewColumn.of(m.Source.object_id, description="The survey's identifier of the galaxy"))
        cols += [ViewColumn.of(self._model_column(c)) for c in (*self.order, *self.value_names())]
        if "flags" in self.model.__table__.columns:
            cols.append(ViewColumn.of(self._model_column("flags")))
        cols += [ViewColumn.of(m.Spectrum.__table__.columns[c]) for c in self.spectrum_columns]
        if self.task_column:
            cols.append(ViewColumn.of(m.Run.task, name=self.task_column,
                                      description=f"Task that produced the row: {self._task_words()}", ucd="meta.code"))
        cols.append(ViewColumn.of(self._model_column("run_id")))
        return cols

    def _task_words(self) -> str:
        return " or ".join(self.tasks) if self.tasks else "any task writing " + self.table

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns()]

    @property
    def release_key(self) -> tuple[str, ...]:
        return (self.key, *((self.task_column,) if self.task_column else ()), *self.order)


#: Every declared result table by table name, in declaration order.
RESULT_VIEWS: dict[str, ResultView] = {}

M = TypeVar("M")


def result_table(
    *, view: str, description: str, **options: Any
) -> Callable[[M], M]:
    """Declare a model as a result table shown by ``catalog.<view>`` (see :class:`ResultView`)."""

    def register(model: M) -> M:
        spec = ResultView(model=model, view=view, description=description, **options)
        table = spec.table
        if table in RESULT_VIEWS and RESULT_VIEWS[table].model is not model:
            raise ValueError(f"result table {table} is declared twice")
        if "run_id" not in model.__table__.columns or spec.key not in model.__table__.columns:  # type: ignore[attr-defined]
            raise ValueError(f"result table {table} needs run_id and {spec.key} columns")
        RESULT_VIEWS[table] = spec
        model.__result_view__ = spec  # type: ignore[attr-defined]
        return model

    return register


def result_view(model_or_table: Any) -> ResultView:
    table = model_or_table if isinstance(model_or_table, str) else model_or_table.__tablename__
    try:
        return RESULT_VIEWS[table]
    except KeyError:
        raise KeyError(f"{table} is not a declared result table (decorate its model with result_table)") from None


def copy_columns(model: Any, names: Sequence[str] | None = None) -> tuple[tuple[str, str], ...]:
    """(name, PostgreSQL type) of the columns rows are COPYed into.

    By default every column in model order except ``run_id``, which the runner prepends,
    and columns the server computes. ``names`` gives the columns (and their order) a
    writer builds its rows with; the types still come from the model.
    """
    table = model.__table__
    if names is not None:
        unknown = [n for n in names if n not in table.columns]
        if unknown:
            raise KeyError(f"{table.name} has no columns {unknown}")
        picked = [table.columns[n] for n in names]
    else:
        picked = [c for c in table.columns if c.name != "run_id" and c.computed is None and c.identity is None]
    return tuple((str(c.name), pg_type(column_type(c))) for c in picked)


def chosen_sql(
    table: str,
    key: str,
    *,
    runs: str = CURRENT_RUNS,
    tasks: tuple[str, ...] | None = None,
    per_task: bool = False,
    prefer: str | None = None,
    where: str | None = None,
) -> str:
    """The best run of each input (and task, with ``per_task``): rows (key, run_id, task).

    This is the one place the best-run rule is written: per input, the run of ``runs``
    (a relation with run_id, task and rank) with the lowest rank, then the newest, among
    the runs that have rows for the input. ``prefer`` names a bound text array of tasks
    in order of preference (a task earlier in it wins over any rank of a later one);
    ``where`` is a condition on the result table, alias ``t`` (e.g. an id filter, which
    PostgreSQL cannot push into a view's DISTINCT ON).
    """
    conditions = []
    if tasks is not None:
        conditions.append("p.task IN (" + ", ".join(f"'{t}'" for t in tasks) + ")")
    if prefer is not None:
        conditions.append(f"p.task = ANY(CAST(:{prefer} AS text[]))")
    if where:
        conditions.append(where)
    partition = f"t.{key}, p.task" if per_task else f"t.{key}"
    preference = f"array_position(CAST(:{prefer} AS text[]), p.task), " if prefer else ""
    where_sql = f"\n    WHERE {' AND '.join(conditions)}" if conditions else ""
    return (
        f"SELECT DISTINCT ON ({partition}) t.{key}, t.run_id, p.task\n"
        f"    FROM {table} AS t\n"
        f"    JOIN {runs} AS p ON p.run_id = t.run_id{where_sql}\n"
        f"    ORDER BY {partition}, {preference}p.rank, t.run_id DESC"
    )


def _select_list(spec: ResultView) -> str:
    names = []
    for c in spec.columns():
        if spec.with_object_id and c.name == "object_id":
            names.append("src.object_id")
        elif c.name in spec.spectrum_columns:
            names.append(f"sp.{c.name}")
        elif c.name == spec.task_column:
            names.append(f"chosen.task AS {c.name}")
        else:
            names.append(f"t.{c.name}")
    lines, line = [], ""
    for name in names:
        if line and len(line) + len(name) > 100:
            lines.append(line)
            line = ""
        line += (", " if line else "") + name
    return ",\n       ".join([*lines, line])


def best_rows_sql(spec: ResultView, *, runs: str = CURRENT_RUNS, order: bool = False) -> str:
    """The rows of each input's best run on ``runs``, with the view's columns."""
    joins = ""
    if spec.with_object_id:
        joins += f"\nJOIN source AS src ON src.id = t.{spec.key}"
    if spec.spectrum_columns:
        joins += f"\nJOIN spectrum AS sp ON sp.id = t.{spec.key}"
    on = f"chosen.{spec.key} = t.{spec.key} AND chosen.run_id = t.run_id"
    order_by = ""
    if order:
        names = ["t." + spec.key, *(["chosen.task"] if spec.task_column else []), *("t." + c for c in spec.order)]
        order_by = "\nORDER BY " + ", ".join(names)
    chosen = chosen_sql(spec.table, spec.key, runs=runs, tasks=spec.tasks, per_task=spec.per_task)
    return (
        f"WITH chosen AS (\n    {chosen}\n)\n"
        f"SELECT {_select_list(spec)}\n"
        f"FROM {spec.table} AS t\n"
        f"JOIN chosen ON {on}{joins}{order_by}"
    )


def view_ddl(spec: ResultView) -> str:
    """CREATE VIEW catalog.<view> (its comments: :func:`skyledger.schema.catalog.comment_ddl`)."""
    return f"CREATE VIEW catalog.{spec.view} AS\n{best_rows_sql(spec)}"


def declared_views() -> Iterator[ResultView]:
    """Every declared result table: those of ``result_models`` and those a task declares in
    its own module (importing the task modules, by name, registers them)."""
    import importlib

    from . import result_models  # noqa: F401  (declares the shared result tables)

    importlib.import_module("skyledger.compute.framework.registry").task_names()
    yield from list(RESULT_VIEWS.values())
