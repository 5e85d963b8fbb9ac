"""The `abundances` task: nebular abundances of every spectrum with emission lines.

Inputs are the spectra that have rows in ``catalog.lines``: lines fitted by the `lines`
task or read from a catalogue (task `ingested`).  The numerics live in
:mod:`skyledger.compute.abundances`; this module reads each spectrum's lines into
``[n, n_lines]`` arrays, calls :func:`~skyledger.compute.abundances.derive_abundances` on the
device, and turns its results into rows of ``abundance``: one per (spectrum, method).

Choices a user of the table should know:

* One line source per spectrum, never a mix (apertures and flux scales differ): the first
  task of ``line_sources`` that has lines for it in ``catalog.lines``.
* Catalogue lines flagged DUST_CORRECTED (bit 16, ``ingest.loader.LINE_FLAGS``) are not
  dereddened again: ``ebv`` is NULL and the rows carry ALREADY_DUST_CORRECTED.
* Fitted lines the fit could not measure (NO_GOOD_PIXELS, ZERO_FLUX, SPECTRUM_FAILED) are
  missing lines here, not zero fluxes.
* Inputs are the spectra with at least two of the core's lines (with fluxes) from one
  run: one line alone gives no quantity at all, and a Halpha velocity map of a thousand
  pixels would otherwise make a thousand all-NULL rows. Such spectra get no row.
* A method gets a row when it produced any value (O/H, a temperature, a density); an
  input for which no method produced anything still gets one row (the first
  configured method, all NULL, with its flags), so that failures are data and the input
  is not pending forever.
* Values are Monte Carlo medians, errors the 16th/84th-percentile distances from them
  (NULL with ``n_draws = 0``).  Draws are seeded per batch from ``seed`` and the batch's
  spectrum ids: a rerun over the same batches gives the same numbers bit for bit, and
  no two batches share a noise pattern.
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.compute.fitting import LineFlag
from skyledger.schema.linelist import LINE_IDS
from skyledger.compute.abundances import FLAG_DESCRIPTIONS, AbundanceConfig, AbundanceFlag, AbundanceResult, Quantity, derive_abundances
from skyledger.schema.result_models import Abundance
from skyledger.schema.results import chosen_sql
from skyledger.compute.framework.registry import register
from skyledger.compute.framework.task import FlagDoc, LoadNote, ResultTable, TaskOutput, pending_inputs

__all__ = [
    "AbundancesParams",
    "AbundancesBatch",
    "AbundancesTask",
    "DUST_CORRECTED_BIT",
    "ERROR_COLUMNS",
    "LINES_SQL",
    "VALUE_COLUMNS",
    "batch_seed",
]

LineSource = Literal["lines", "ingested"]

#: ``line_measurement.flags`` bit of catalogue lines that are already dust-corrected
#: (``skyledger.ingest.loader.LINE_FLAGS``; compute must not import ingest).
DUST_CORRECTED_BIT = 1 << 16
#: Fitted lines with these bits carry no usable flux.
_UNUSABLE_FIT = int(LineFlag.NO_GOOD_PIXELS | LineFlag.ZERO_FLUX | LineFlag.SPECTRUM_FAILED | LineFlag.NOT_IN_RANGE)

#: table column -> quantity of the nebular core; these get ``_err_lo`` / ``_err_hi`` too
ERROR_COLUMNS: dict[str, str] = {
    "oh": "oh", "n_o": "no", "s_h": "sh",
    "te_oiii": "te_oiii", "te_nii": "te_nii", "te_siii": "te_siii", "te_oii": "te_oii",
    "ne_sii": "ne_sii", "ne_oii": "ne_oii",
}  # fmt: skip
#: table column -> quantity of the nebular core, value only
VALUE_COLUMNS: dict[str, str] = {"op_h": "o_plus", "opp_h": "o_plus2", "np_h": "n_plus", "sp_h": "s_plus", "spp_h": "s_plus2"}

# Input-level failures counted in run.n_flagged (besides "no method gave O/H"): results
# that are not dust-corrected although they should be, or that lack Monte Carlo errors.
_FAILED = int(AbundanceFlag.NO_BALMER_DECREMENT | AbundanceFlag.BAD_ERROR)


class AbundancesParams(AbundanceConfig):
    """The core's :class:`AbundanceConfig` plus what the task adds; any change is a new run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(20261124, ge=0, description="Seed of the Monte Carlo draws (mixed with each batch's spectrum ids)")
    line_sources: tuple[LineSource, ...] = Field(
        ("lines", "ingested"), description="Tasks whose lines are used, in order of preference per spectrum"
    )

    @field_validator("line_sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError("line_sources must name lines and/or ingested, each at most once")
        return v


@dataclass
class AbundancesBatch:
    """Lines of one page of spectra: ``fluxes``/``errors`` [n, len(LINE_IDS)], NaN = missing."""

    spectrum_ids: list[int]
    fluxes: np.ndarray
    errors: np.ndarray
    dust_corrected: np.ndarray  # bool [n]
    upstream_run_ids: list[int]
    #: bool [n]: a line comes from a spectrum whose errors the reader estimated
    errors_estimated: np.ndarray | None = None


def batch_seed(seed: int, spectrum_ids: Sequence[int]) -> int:
    """The generator seed of one batch: ``seed`` hashed with the batch's spectrum ids."""
    state = np.random.SeedSequence([int(seed), *map(int, spectrum_ids)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))  # torch seeds must fit in a signed 64-bit integer


def _num(value: float) -> float | None:
    """NaN (no result) becomes NULL in the database."""
    return None if math.isnan(value) else float(value)


# The lines of each requested spectrum from its preferred source task: the rows
# catalog.lines shows for (spectrum, that task), i.e. the best run on the `current` path
# (lowest rank, then newest). Written out rather than selected from the view because
# PostgreSQL cannot push `spectrum_id = ANY(:ids)` into the view's DISTINCT ON, and each
# page would then sort every current line of the survey. Component 0 only: the narrow
# lines; a second component (broad-line region, outflow) is not the gas these methods model.
LINES_SQL = f"""
WITH chosen AS (
    {chosen_sql("line_measurement", "spectrum_id", prefer="sources", where="t.spectrum_id = ANY(:ids)")}
)
SELECT m.spectrum_id, m.line, m.flux, m.flux_err, m.flags, chosen.task AS source_task, m.run_id
FROM line_measurement AS m
JOIN chosen ON chosen.spectrum_id = m.spectrum_id AND chosen.run_id = m.run_id
    AND m.component = 0
"""


ABUNDANCE_TABLE = ResultTable.of(Abundance)
# The rows are built as (spectrum, method, quantities with errors, E(B-V) with errors,
# ionic abundances, flags); this puts each value in its column of the table.
_BUILT = ("spectrum_id", "method", *(c + s for c in (*ERROR_COLUMNS, "ebv") for s in ("", "_err_lo", "_err_hi")),
          *VALUE_COLUMNS, "flags")
_TO_TABLE = tuple(_BUILT.index(name) for name in ABUNDANCE_TABLE.column_names)


def _in_table_order(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(row[k] for k in _TO_TABLE)


@register
class AbundancesTask:
    name: ClassVar[str] = "abundances"
    # 2: auroral lines below auroral_min_snr (default 3) are left out of the direct
    # method (before: used and flagged AURORAL_LOW_SN); TE_*_FROM_* / NO_TE flag bits say
    # which temperature each zone used.
    version: ClassVar[int] = 2
    after: ClassVar[tuple[str, ...]] = ("lines",)
    Params: ClassVar[type[BaseModel]] = AbundancesParams
    result_tables: ClassVar[tuple[ResultTable, ...]] = (ABUNDANCE_TABLE,)
    flags: ClassVar[tuple[FlagDoc, ...]] = FlagDoc.from_enum(
        "abundance", "flags", AbundanceFlag, {m.name: d for m, d in FLAG_DESCRIPTIONS.items() if m.name}
    )

    def __init__(self) -> None:
        # What the last ``load`` read (spectrum ids, runs), and with which line sources.
        self._last_read = LoadNote()
        self._sources: tuple[str, ...] = AbundancesParams().line_sources

    # ----------------------------------------------------------------- database side

    def pending(self, session: Session, params: BaseModel, *, run_id: int, params_hash: str, limit: int) -> list[int]:
        assert isinstance(params, AbundancesParams)
        # Spectra with rows in catalog.lines from the chosen source tasks. Written against
        # line_measurement + catalog.current_runs (the same rows: catalog.lines shows, per
        # spectrum and task, the best of exactly these runs) so that the semi-join uses
        # ix_line_measurement_spectrum_id instead of sorting the whole view for each page.
        # At least two lines the core uses, with fluxes, from one run: every quantity
        # (E(B-V), Te, ne, each calibration) is a ratio of two lines, so a spectrum with one
        # line (a pixel of an H-alpha velocity map) could only ever get an all-NULL row
        # (tests/compute/test_pending_needs.py checks this against the core).
        return pending_inputs(
            session,
            inputs_sql=(
                "SELECT s.id FROM spectrum AS s WHERE EXISTS ("
                "SELECT 1 FROM line_measurement AS m JOIN catalog.current_runs AS cr ON cr.run_id = m.run_id "
                "WHERE m.spectrum_id = s.id AND cr.task = ANY(CAST(:sources AS text[])) AND m.flux IS NOT NULL "
                "AND m.line = ANY(CAST(:lines AS text[])) AND EXISTS ("
                "SELECT 1 FROM line_measurement AS m2 WHERE m2.spectrum_id = s.id AND m2.run_id = m.run_id "
                "AND m2.line <> m.line AND m2.flux IS NOT NULL AND m2.line = ANY(CAST(:lines AS text[]))))"
            ),
            result_table="abundance",
            task=self.name, version=self.version, params_hash=params_hash, run_id=run_id, limit=limit,
            bind={"sources": list(params.line_sources), "lines": list(LINE_IDS)},
        )

    def upstream_runs(self, session: Session, input_ids: Sequence[int]) -> list[int]:
        """The `lines`/`ingested` runs whose rows ``load`` read (or would read) for these spectra."""
        def read_again() -> list[int]:
            rows = session.execute(
                text(f"SELECT DISTINCT c.run_id FROM ({LINES_SQL}) AS c ORDER BY 1"),
                {"ids": sorted(input_ids), "sources": list(self._sources)},
            )
            return list(rows.scalars())

        return self._last_read.upstream_runs(input_ids, read_again)

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        # The atomic data decide every Te, ne and ionic abundance: record their checksum.
        path = Path(str(importlib.resources.files("skyledger.compute.abundances") / "data" / "atomic_data.json"))
        return {"nebular/atomic_data.json": path}

    def load(self, session: Session, input_ids: Sequence[int], params: BaseModel) -> AbundancesBatch:
        assert isinstance(params, AbundancesParams)
        ids = sorted(input_ids)
        row_of = {sid: i for i, sid in enumerate(ids)}
        col_of = {line: j for j, line in enumerate(LINE_IDS)}
        fluxes = np.full((len(ids), len(LINE_IDS)), np.nan)
        errors = np.full_like(fluxes, np.nan)
        corrected = np.zeros(len(ids), dtype=bool)
        estimated = np.zeros(len(ids), dtype=bool)
        used: set[int] = set()
        rows = session.execute(text(LINES_SQL), {"ids": ids, "sources": list(params.line_sources)})
        for r in rows:
            i, j = row_of[r.spectrum_id], col_of.get(r.line)
            used.add(r.run_id)
            if j is None:
                continue  # a line the nebular core does not use
            corrected[i] |= bool(r.flags & DUST_CORRECTED_BIT) and r.source_task == "ingested"
            if r.source_task == "lines" and r.flags & _UNUSABLE_FIT:
                continue
            estimated[i] |= r.source_task == "lines" and bool(r.flags & LineFlag.ERRORS_ESTIMATED)
            if r.flux is not None:
                fluxes[i, j] = r.flux
                errors[i, j] = np.nan if r.flux_err is None else r.flux_err
        self._sources = params.line_sources
        self._last_read.record(ids, used)
        return AbundancesBatch(ids, fluxes, errors, corrected, sorted(used), estimated)

    # ----------------------------------------------------------------- numerics

    def compute(self, batch: AbundancesBatch, params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        assert isinstance(params, AbundancesParams)
        generator = torch.Generator(device=device).manual_seed(batch_seed(params.seed, batch.spectrum_ids))
        result = derive_abundances(
            torch.from_numpy(batch.fluxes), torch.from_numpy(batch.errors), torch.from_numpy(batch.dust_corrected),
            params, device, generator, LINE_IDS,
        )
        rows, n_flagged = self.rows(batch.spectrum_ids, result, params, batch.errors_estimated)
        return TaskOutput(rows={"abundance": rows}, n_inputs=len(batch.spectrum_ids), n_flagged=n_flagged)

    @staticmethod
    def rows(
        spectrum_ids: Sequence[int], result: AbundanceResult, params: AbundancesParams,
        errors_estimated: np.ndarray | None = None,
    ) -> tuple[list[tuple[Any, ...]], int]:  # fmt: skip
        """Rows of ``abundance`` (without run_id) and the number of failed inputs."""
        n = len(spectrum_ids)
        marked = np.zeros(n, dtype=bool) if errors_estimated is None else np.asarray(errors_estimated, dtype=bool)
        mark = int(AbundanceFlag.ERRORS_ESTIMATED)
        with_errors = params.n_draws > 0
        missing = np.full((3, n), np.nan)

        def stats(q: Quantity) -> np.ndarray:
            """[3, n]: median, p16, p84."""
            return np.stack([getattr(q, s).detach().cpu().numpy().astype(np.float64) for s in ("median", "p16", "p84")])

        def triple(s: np.ndarray, i: int) -> tuple[float | None, float | None, float | None]:
            med, p16, p84 = (float(x) for x in s[:, i])
            if math.isnan(med):
                return (None, None, None)
            if not with_errors:
                return (med, None, None)
            return (med, _num(med - p16), _num(p84 - med))

        ebv = stats(result.ebv)
        out: list[tuple[Any, ...]] = []
        has_row = np.zeros(n, dtype=bool)
        has_oh = np.zeros(n, dtype=bool)
        for name, res in result.methods.items():
            q = {core: stats(v) for core, v in res.values.items()}
            with_err = [q.get(core, missing) for core in ERROR_COLUMNS.values()]
            value_only = [q.get(core, missing)[0] for core in VALUE_COLUMNS.values()]
            flags = res.flags.detach().cpu().numpy()
            for i, sid in enumerate(spectrum_ids):
                measured = [c for s in with_err for c in triple(s, i)]
                ionic = [_num(v[i]) for v in value_only]
                if all(c is None for c in measured + ionic):
                    continue  # the method produced nothing (ebv is shared, not the method's)
                row_flags = int(flags[i]) | (mark if marked[i] else 0)
                out.append(_in_table_order((sid, name, *measured, *triple(ebv, i), *ionic, row_flags)))
                has_row[i] = True
                has_oh[i] |= measured[0] is not None
        first = params.methods[0]
        first_flags = result.methods[first].flags.detach().cpu().numpy()
        empty = [None] * (3 * len(ERROR_COLUMNS))
        for i in np.nonzero(~has_row)[0]:
            # No method produced anything: one row keeps the flags (and E(B-V), if any).
            flags = int(first_flags[i]) | int(AbundanceFlag.MISSING_LINES) | (mark if marked[i] else 0)
            out.append(_in_table_order((spectrum_ids[i], first, *empty, *triple(ebv, i), *[None] * len(VALUE_COLUMNS), flags)))
        shared = result.dust_flags.detach().cpu().numpy()
        n_flagged = int(np.count_nonzero(~has_oh | ((shared & _FAILED) != 0)))
        return out, n_flagged
