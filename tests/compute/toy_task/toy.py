"""A toy task, the whole of it in one module, as docs/architecture.md says a task is added.

`lookback`: the lookback time to each spectrum's input redshift (astropy Planck18). Its
table is declared here, on a private declarative base so that the shared metadata (which
the migration test compares with the database) never sees it; a real task declares its
table on ``skyledger.schema.base.Base``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy import BigInteger, Double, Integer, MetaData, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

from skyledger.compute.framework.registry import register
from skyledger.compute.framework.task import FlagDoc, ResultTable, TaskOutput, pending_inputs
from skyledger.schema.base import NAMING_CONVENTION, column
from skyledger.schema.results import result_table


class _ToyBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@result_table(view="lookback", description="Lookback time to every spectrum with a redshift (task lookback)",
              tasks=("lookback",))
class Lookback(_ToyBase):
    __tablename__ = "lookback"

    run_id: Mapped[int] = column(BigInteger, primary_key=True, doc="Run that produced the row", ucd="meta.id")
    spectrum_id: Mapped[int] = column(BigInteger, primary_key=True, doc="Spectrum", ucd="meta.id")
    lookback_gyr: Mapped[float | None] = column(Double, doc="Lookback time to the input redshift (Planck18)",
                                                unit="Gyr", ucd="time.age")
    flags: Mapped[int] = column(Integer, doc="Lookback flag bits (see flag_definition)", ucd="meta.code")


class LookbackFlag(enum.IntFlag):
    NO_REDSHIFT = 1


class LookbackParams(BaseModel):
    max_z: float = 10.0


@register
class LookbackTask:
    name: ClassVar[str] = "lookback"
    version: ClassVar[int] = 1
    after: ClassVar[tuple[str, ...]] = ("lines",)
    Params: ClassVar[type[BaseModel]] = LookbackParams
    result_tables: ClassVar[tuple[ResultTable, ...]] = (ResultTable.of(Lookback),)
    flags: ClassVar[tuple[FlagDoc, ...]] = FlagDoc.from_enum(
        "lookback", "flags", LookbackFlag, {"NO_REDSHIFT": "The spectrum has no usable input redshift"})

    def pending(self, session: Session, params: BaseModel, *, run_id: int, params_hash: str, limit: int) -> list[int]:
        return pending_inputs(session, inputs_sql="SELECT id FROM spectrum", result_table="lookback", task=self.name,
                              version=self.version, params_hash=params_hash, run_id=run_id, limit=limit)

    def upstream_runs(self, session: Session, input_ids: Sequence[int]) -> list[int]:
        return []

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        return {}

    def load(self, session: Session, input_ids: Sequence[int], params: BaseModel) -> list[tuple[int, Any]]:
        rows = session.execute(text("SELECT id, z FROM spectrum WHERE id = ANY(:ids) ORDER BY id"), {"ids": list(input_ids)})
        return [tuple(r) for r in rows]

    def compute(self, batch: list[tuple[int, Any]], params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        from astropy.cosmology import Planck18

        assert isinstance(params, LookbackParams)
        rows = []
        for spectrum_id, z in batch:
            if z is None or not 0 <= z <= params.max_z:
                rows.append((spectrum_id, None, int(LookbackFlag.NO_REDSHIFT)))
            else:
                rows.append((spectrum_id, float(Planck18.lookback_time(z).to_value("Gyr")), 0))
        flagged = sum(1 for r in rows if r[2])
        return TaskOutput(rows={"lookback": rows}, n_inputs=len(rows), n_flagged=flagged)
