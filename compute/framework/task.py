"""The protocol every compute task follows, and the pieces tasks share.

A task is a name, a hand-bumped version, a typed parameter model, a pending query (an
anti-join: inputs without a result at this version and parameter hash), a loader that
turns a page of inputs into arrays, and a numeric ``compute`` that turns arrays into
result rows with no database access.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.schema.results import copy_columns, result_view
from skyledger.schema.runs import LIVE_CLAIM_SQL, STALE_AFTER_S

__all__ = ["FlagDoc", "LoadNote", "ResultTable", "Task", "TaskOutput", "pending_inputs", "register_flags", "resolve_device"]


class LoadNote:
    """What a task's last ``load`` read: its input ids and the upstream runs of their rows.

    The runner asks for a batch's upstream runs right after loading it; a task that keeps
    this note answers from the rows the batch was computed from, without reading again.
    """

    def __init__(self) -> None:
        self._ids: tuple[int, ...] = ()
        self._runs: list[int] = []

    def record(self, input_ids: Sequence[int], run_ids: Iterable[int]) -> None:
        self._ids = tuple(sorted(input_ids))
        self._runs = sorted(run_ids)

    def upstream_runs(self, input_ids: Sequence[int], read_again: Callable[[], list[int]]) -> list[int]:
        """The noted runs when the last load read exactly ``input_ids``; else ``read_again()``.

        Nothing is read before the first batch, so no inputs means no upstream runs.
        """
        if not input_ids:
            return []
        if self._ids == tuple(sorted(input_ids)):
            return list(self._runs)
        return read_again()


@dataclass(frozen=True)
class ResultTable:
    """A results table: its name and its COPY columns after ``run_id`` (name, PostgreSQL type).

    Built from the table's model (:meth:`of`), whose declaration
    (:func:`skyledger.schema.results.result_table`) is the only list of its columns: a
    task's rows are tuples in this order. The first column after ``run_id`` is the input
    key (``spectrum_id``, or ``source_id`` for per-galaxy tasks); results are never
    updated in place, so (run_id, input, ...) is the primary key.
    """

    name: str
    columns: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, model: Any) -> ResultTable:
        result_view(model)  # only declared result tables: they have a view, a release table
        return cls(model.__tablename__, copy_columns(model))

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


@dataclass(frozen=True)
class FlagDoc:
    table: str
    column: str
    value: int
    name: str
    description: str

    @classmethod
    def from_enum(cls, table: str, column: str, enum_cls: type[enum.IntFlag], docs: Mapping[str, str]) -> tuple[FlagDoc, ...]:
        """One FlagDoc per member; ``docs`` must describe every member (a test checks it)."""
        return tuple(cls(table, column, int(m), m.name, docs[m.name]) for m in enum_cls)


@dataclass
class TaskOutput:
    """Rows per result table (without ``run_id``), and how many inputs carry a failure flag."""

    rows: dict[str, list[tuple[Any, ...]]]
    n_inputs: int
    n_flagged: int


@runtime_checkable
class Task(Protocol):
    name: ClassVar[str]
    version: ClassVar[int]
    #: Tasks whose results this one reads: the registry runs them first.
    after: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[BaseModel]]
    #: The table whose rows mark an input as done (checked by the pending anti-join).
    result_tables: ClassVar[tuple[ResultTable, ...]]
    #: Every flag bit the task writes, for flag_definition.
    flags: ClassVar[tuple[FlagDoc, ...]]

    def pending(self, session: Session, params: BaseModel, *, run_id: int, params_hash: str, limit: int) -> list[int]:
        """Inputs with no result at this version and params hash (succeeded runs or this one),
        not claimed by another live run (:func:`pending_inputs` does both)."""
        ...

    def upstream_runs(self, session: Session, input_ids: Sequence[int]) -> list[int]:
        """Runs whose results these inputs were read from."""
        ...

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        """Files (weights, templates) whose sha256 the run records."""
        ...

    def load(self, session: Session, input_ids: Sequence[int], params: BaseModel) -> Any:
        """Read the inputs into arrays (the only database access of a batch)."""
        ...

    def compute(self, batch: Any, params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        """Pure numerics: arrays in, result rows out. ``workers``: CPU processes the task
        may use (``SKYLEDGER_CPU_WORKERS``); tasks whose numerics gain nothing from them
        ignore it."""
        ...


def pending_inputs(
    session: Session,
    *,
    inputs_sql: str,
    result_table: str,
    task: str,
    version: int,
    params_hash: str,
    run_id: int,
    limit: int,
    order_by: str = "i.id",
    bind: Mapping[str, Any] | None = None,
    key_column: str = "spectrum_id",
) -> list[int]:
    """Ids from ``inputs_sql`` (a query selecting ``id`` aliased as table ``i``) that have no
    row in ``result_table`` (input key ``key_column``) from a succeeded run, or from
    ``run_id``, of this task version and parameter hash, and that no other live run of it
    has claimed (``task_claim``: concurrent runs share the work). Results of failed or
    abandoned runs do not count: they are redone."""
    query = (
        f"SELECT i.id FROM ({inputs_sql}) AS i WHERE NOT EXISTS ("
        f"SELECT 1 FROM {result_table} AS res JOIN run AS r ON r.id = res.run_id "
        f"WHERE res.{key_column} = i.id AND r.task = :task AND r.version = :version AND r.params_hash = :phash "
        "AND (r.status = 'succeeded' OR r.id = :run_id)) "
        f"AND NOT {LIVE_CLAIM_SQL.format(input='i.id')} "
        f"ORDER BY {order_by} LIMIT :limit"
    )
    params = {"task": task, "version": version, "phash": params_hash, "run_id": run_id, "limit": limit,
              "stale_s": STALE_AFTER_S}
    params.update(bind or {})
    return list(session.execute(text(query), params).scalars())


def register_flags(session: Session, flags: Sequence[FlagDoc]) -> None:
    """Upsert every flag bit a task writes into flag_definition."""
    for f in flags:
        session.execute(
            text(
                "INSERT INTO flag_definition (table_name, column_name, bit, name, description) "
                "VALUES (:t, :c, :b, :n, :d) ON CONFLICT (table_name, column_name, bit) "
                "DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description"
            ),
            {"t": f.table, "c": f.column, "b": f.value.bit_length() - 1, "n": f.name, "d": f.description},
        )


def resolve_device(setting: str) -> str:
    """``auto`` means cuda when torch sees a GPU, else cpu; anything else is used as given."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        from skyledger.schema.errors import ConfigError

        raise ConfigError(f"SKYLEDGER_DEVICE={setting} but torch sees no CUDA device; use cpu or auto")
    return setting
