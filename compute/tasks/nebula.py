"""The nebula-classification tasks: `nebula_diagnostic` and `nebula_nn` into ``nebula_class``.

Two tasks, one table: each method has its own hand-bumped version, so re-running one
method (a new version, new weights) makes new runs of that task only and leaves the
other method's rows and runs as they are.  ``catalog.nebula_class`` shows, per spectrum
and task, the rows of the best current run (migration 0006).

Inputs are the spectra with rows in ``catalog.lines`` (fitted by `lines` or read from a
catalogue), read exactly as :mod:`skyledger.compute.tasks.abundances` reads them: one line
source per spectrum, never a mix.  Fitted lines the fit could not measure are missing
lines, not zero fluxes.  Inputs are only the spectra that could get a class (Halpha and
a second diagnostic line, or Halpha's EW for the diagnostic method's DIG rule); every
input gets exactly one row per run, UNKNOWN with flags when nothing could be decided, so
that failures are data and no input stays pending.

Each row records its rule ``context`` (galaxy or nebula): the survey option ``context``
when set, else inferred by :func:`skyledger.compute.classification.context.infer_context`
from the spectrum's source (parent, positions, the parent's PSF), flag CONTEXT_INFERRED.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.compute.tasks.abundances import LineSource, batch_seed
from skyledger.compute.fitting import LineFlag
from skyledger.compute.classification.context import angular_offset_arcsec, infer_context
from skyledger.compute.kinematics.sky import kpc_per_arcsec
from skyledger.compute.classification.diagnostic import (
    CLASSES,
    CONTEXTS,
    DIAGNOSTIC_LINES,
    FLAG_DESCRIPTIONS,
    DiagnosticConfig,
    NebulaFlag,
    classify_diagnostic,
)
from skyledger.schema.result_models import NebulaClass
from skyledger.schema.results import chosen_sql
from skyledger.compute.framework.registry import register
from skyledger.compute.framework.task import FlagDoc, LoadNote, ResultTable, TaskOutput, pending_inputs

__all__ = [
    "NEBULA_CONTEXT_SQL",
    "ARM_SIBLINGS_SQL",
    "NEBULA_LINES_SQL",
    "NEBULA_TABLE",
    "NebulaBatch",
    "NebulaDiagnosticParams",
    "NebulaDiagnosticTask",
    "NebulaNNParams",
    "NebulaNNTask",
    "nebula_rows",
    "read_contexts",
]

_UNUSABLE_FIT = int(LineFlag.NO_GOOD_PIXELS | LineFlag.ZERO_FLUX | LineFlag.SPECTRUM_FAILED | LineFlag.NOT_IN_RANGE)
#: the class probability columns, in the order of CLASSES (UNKNOWN has none: it is the rest)
PROBABILITY_COLUMNS: tuple[str, ...] = ("p_hii", "p_pn", "p_snr", "p_dig", "p_agn")

NEBULA_TABLE = ResultTable.of(NebulaClass)
_FLAGS = FlagDoc.from_enum("nebula_class", "flags", NebulaFlag, FLAG_DESCRIPTIONS)

# As abundances.LINES_SQL (the lines catalog.lines shows for the preferred source task of
# each spectrum, written out so the spectrum filter reaches the index), plus the EW;
# component 0 (the narrow lines) only, as there.
NEBULA_LINES_SQL = f"""
WITH chosen AS (
    {chosen_sql("line_measurement", "spectrum_id", prefer="sources", where="t.spectrum_id = ANY(:ids)")}
)
SELECT m.spectrum_id, m.line, m.flux, m.flux_err, m.ew, m.ew_err, m.flags, chosen.task AS source_task, m.run_id
FROM line_measurement AS m
JOIN chosen ON chosen.spectrum_id = m.spectrum_id AND chosen.run_id = m.run_id
    AND m.component = 0
"""


# The other arms of an input spectrum: spectra of the same source that, like it, carry an
# ``arm`` in their meta (a SAMI blue/red pair of one bin).  A two-arm cube measures Hbeta and
# [O III] in one arm and Halpha, [N II], [S II], [O I] in the other; every BPT ratio stays
# within one arm, so joining them costs no flux-scale assumption, and without it a bin would
# be classified on its red arm alone (red-only criteria, NO_BPT).
ARM_SIBLINGS_SQL = """
SELECT s.id AS spectrum_id, o.id AS sibling_id
FROM spectrum AS s
JOIN spectrum AS o ON o.source_id = s.source_id AND o.id <> s.id AND o.meta ? 'arm'
    AND o.meta ->> 'arm' <> s.meta ->> 'arm'
WHERE s.id = ANY(:ids) AND s.meta ? 'arm'
"""


# What the context needs, per spectrum: the survey option, whether its source has a parent,
# its own position (a spaxel's or bin's, else its source's) and the parent's, the PSF FWHM
# (the parent's meta, as a cube reader records it, else the survey option) and a redshift
# (the parent's, else the source's, else the spectrum's). The database holds no aperture
# of a spectrum, but the PSF is the smallest scale a spectrum can resolve: at the redshift
# it gives the physical size of infer_context's >= 1 kpc rule.
NEBULA_CONTEXT_SQL = """
SELECT s.id AS spectrum_id, sv.options ->> 'context' AS option, src.parent_id IS NOT NULL AS has_parent,
       coalesce(s.ra, src.ra) AS ra, coalesce(s.dec, src.dec) AS dec, p.ra AS parent_ra, p.dec AS parent_dec,
       p.meta ->> 'psf_fwhm_arcsec' AS psf_meta, sv.options ->> 'psf_fwhm_arcsec' AS psf_option,
       coalesce(p.z, src.z, s.z) AS z
FROM spectrum AS s
JOIN source AS src ON src.id = s.source_id
JOIN survey AS sv ON sv.id = s.survey_id
LEFT JOIN source AS p ON p.id = src.parent_id
WHERE s.id = ANY(:ids)
"""


def _float(v: Any) -> float:
    """A JSON text value as a float; NaN when absent or not a number (infer_context then ignores it)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_contexts(session: Session, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(context code [n], inferred [n])`` of the spectra ``ids`` (codes index CONTEXTS)."""
    rows = {r.spectrum_id: r for r in session.execute(text(NEBULA_CONTEXT_SQL), {"ids": list(ids)})}
    code = np.zeros(len(ids), dtype=np.int64)
    inferred = np.zeros(len(ids), dtype=bool)
    scale = kpc_per_arcsec(np.array([_float(rows[sid].z) for sid in ids]))  # NaN without a redshift
    for i, sid in enumerate(ids):
        r = rows[sid]
        offset = angular_offset_arcsec(*(np.array([_float(v)]) for v in (r.ra, r.dec, r.parent_ra, r.parent_dec)))[0]
        psf = _float(r.psf_meta)
        psf = psf if psf > 0 else _float(r.psf_option)
        ctx, inferred[i] = infer_context(
            option=r.option, has_parent=r.has_parent, offset_arcsec=float(offset), psf_fwhm_arcsec=psf,
            aperture_kpc=float(psf * scale[i]),
        )  # fmt: skip
        code[i] = CONTEXTS.index(ctx)
    return code, inferred


def _sources_ok(v: tuple[str, ...]) -> tuple[str, ...]:
    if not v or len(set(v)) != len(v):
        raise ValueError("line_sources must name lines and/or ingested, each at most once")
    return v


class NebulaDiagnosticParams(DiagnosticConfig):
    """The diagnostic thresholds plus what the task adds; any change is a new run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(20261201, ge=0, description="Seed of the Monte Carlo draws (mixed with each batch's spectrum ids)")
    line_sources: tuple[LineSource, ...] = Field(("lines", "ingested"), description="Line source tasks, in order of preference")

    @field_validator("line_sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _sources_ok(v)


class NebulaNNParams(BaseModel):
    """What the nn task reads; the weights are recorded by sha256 in the run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_snr: float = Field(3.0, gt=0, description="S/N below which a used line sets LOW_SNR")
    line_sources: tuple[LineSource, ...] = Field(("lines", "ingested"), description="Line source tasks, in order of preference")

    @field_validator("line_sources")
    @classmethod
    def _sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _sources_ok(v)


@dataclass
class NebulaBatch:
    """Lines of one page of spectra: ``fluxes``/``errors`` [n, len(DIAGNOSTIC_LINES)], NaN = missing."""

    spectrum_ids: list[int]
    fluxes: np.ndarray
    errors: np.ndarray
    ew: np.ndarray  # EW(Halpha) [n], NaN = unknown
    ew_err: np.ndarray
    upstream_run_ids: list[int]
    context: np.ndarray | None = None  # [n] codes of CONTEXTS; None = every spectrum galaxy
    context_inferred: np.ndarray | None = None  # [n] bool: inferred, not the survey option

    def contexts(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.spectrum_ids)
        code = np.zeros(n, dtype=np.int64) if self.context is None else self.context
        inferred = np.zeros(n, dtype=bool) if self.context_inferred is None else self.context_inferred
        return code, inferred


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def nebula_rows(
    spectrum_ids: Sequence[int], method: str, classes: np.ndarray, probabilities: np.ndarray, flags: np.ndarray,
    contexts: np.ndarray | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of ``nebula_class`` (without run_id): one per spectrum.

    ``probabilities`` is [n, len(CLASSES)], NaN where the method does not give one.  The
    probability of UNKNOWN is what the class probabilities leave (1 - their sum).
    ``contexts`` [n] are codes of CONTEXTS (None: all galaxy).
    """
    out: list[tuple[Any, ...]] = []
    for i, sid in enumerate(spectrum_ids):
        c = int(classes[i])
        p = probabilities[i]
        p_class = p[c]
        if CLASSES[c] == "UNKNOWN":
            known = p[: len(PROBABILITY_COLUMNS)]
            p_class = np.nan if np.isnan(known).all() else 1.0 - float(np.nansum(known))
        out.append(
            (
                sid, method, CLASSES[c], _num(float(p_class)), *(_num(float(p[j])) for j in range(len(PROBABILITY_COLUMNS))),
                int(flags[i]), CONTEXTS[0 if contexts is None else int(contexts[i])],
            )
        )  # fmt: skip
    return out


class _NebulaTaskBase:
    """Pending inputs, upstream runs and loading shared by both methods."""

    name: ClassVar[str]
    version: ClassVar[int]
    #: Whether EW(Halpha) alone decides a class (the DIG rule), so that Halpha with an EW
    #: and no other line is an input.
    ew_decides: ClassVar[bool]
    result_tables: ClassVar[tuple[ResultTable, ...]] = (NEBULA_TABLE,)
    flags: ClassVar[tuple[FlagDoc, ...]] = _FLAGS

    def __init__(self) -> None:
        self._last_read = LoadNote()
        self._sources: tuple[str, ...] = ("lines", "ingested")

    def pending(self, session: Session, params: BaseModel, *, run_id: int, params_hash: str, limit: int) -> list[int]:
        sources = list(getattr(params, "line_sources"))
        # Only spectra that could get a class: every rule needs Halpha, and then a ratio to
        # it (a second diagnostic line from the same run) or, for methods with an EW rule,
        # Halpha's EW. A pixel of an Halpha velocity map (Halpha alone, no EW) could only
        # ever be UNKNOWN: it gets no row (tests/compute/test_pending_needs.py checks this).
        ew_clause = "m.ew IS NOT NULL OR " if self.ew_decides else ""
        return pending_inputs(
            session,
            inputs_sql=(
                "SELECT s.id FROM spectrum AS s WHERE EXISTS ("
                "SELECT 1 FROM line_measurement AS m JOIN catalog.current_runs AS cr ON cr.run_id = m.run_id "
                "WHERE m.spectrum_id = s.id AND cr.task = ANY(CAST(:sources AS text[])) AND m.flux IS NOT NULL "
                f"AND m.line = 'HA6563' AND ({ew_clause}EXISTS ("
                "SELECT 1 FROM line_measurement AS m2 WHERE m2.spectrum_id = s.id AND m2.run_id = m.run_id "
                "AND m2.line <> 'HA6563' AND m2.flux IS NOT NULL AND m2.line = ANY(CAST(:lines AS text[])))))"
            ),
            result_table="nebula_class",
            task=self.name, version=self.version, params_hash=params_hash, run_id=run_id, limit=limit,
            bind={"sources": sources, "lines": list(DIAGNOSTIC_LINES)},
        )  # fmt: skip

    def upstream_runs(self, session: Session, input_ids: Sequence[int]) -> list[int]:
        def read_again() -> list[int]:
            siblings = [r.sibling_id for r in session.execute(text(ARM_SIBLINGS_SQL), {"ids": sorted(input_ids)})]
            rows = session.execute(
                text(f"SELECT DISTINCT c.run_id FROM ({NEBULA_LINES_SQL}) AS c ORDER BY 1"),
                {"ids": sorted({*input_ids, *siblings}), "sources": list(self._sources)},
            )
            return list(rows.scalars())

        return self._last_read.upstream_runs(input_ids, read_again)

    def load(self, session: Session, input_ids: Sequence[int], params: BaseModel) -> NebulaBatch:
        sources = tuple(getattr(params, "line_sources"))
        ids = sorted(input_ids)
        row_of = {sid: i for i, sid in enumerate(ids)}
        col_of = {line: j for j, line in enumerate(DIAGNOSTIC_LINES)}
        fluxes = np.full((len(ids), len(DIAGNOSTIC_LINES)), np.nan)
        errors = np.full_like(fluxes, np.nan)
        ew = np.full(len(ids), np.nan)
        ew_err = np.full(len(ids), np.nan)
        used: set[int] = set()
        # The other arms of a two-arm cube's spaxel or bin fill the lines an input's arm lacks.
        sibling_of = {r.sibling_id: r.spectrum_id for r in session.execute(text(ARM_SIBLINGS_SQL), {"ids": ids})}
        sibling_of = {k: v for k, v in sibling_of.items() if k not in row_of}
        own: set[tuple[int, int]] = set()  # (row, column) filled by the input's own spectrum
        read = sorted([*ids, *sibling_of])
        rows = session.execute(text(NEBULA_LINES_SQL), {"ids": read, "sources": list(sources)}).all()
        # Own rows first, so that a sibling never replaces a line the input measured itself.
        for r in sorted(rows, key=lambda r: r.spectrum_id in sibling_of):
            from_sibling = r.spectrum_id in sibling_of
            i, j = row_of[sibling_of.get(r.spectrum_id, r.spectrum_id)], col_of.get(r.line)
            used.add(r.run_id)
            if j is None or (r.source_task == "lines" and r.flags & _UNUSABLE_FIT) or r.flux is None:
                continue
            if from_sibling and (i, j) in own:
                continue
            if not from_sibling:
                own.add((i, j))
            fluxes[i, j] = r.flux
            errors[i, j] = np.nan if r.flux_err is None else r.flux_err
            if r.line == "HA6563" and r.ew is not None:
                ew[i] = r.ew
                ew_err[i] = np.nan if r.ew_err is None else r.ew_err
        self._sources = sources
        self._last_read.record(ids, used)
        context, inferred = read_contexts(session, ids)
        return NebulaBatch(ids, fluxes, errors, ew, ew_err, sorted(used), context, inferred)


@register
class NebulaDiagnosticTask(_NebulaTaskBase):
    """Published BPT / [S II] / [O III] / EW rules with Monte Carlo class probabilities."""

    name: ClassVar[str] = "nebula_diagnostic"
    # 2 (issue 26): context-dependent rule order, the context column, [O I] SNR criterion,
    # red-only fallback, Kewley 2001 from [N II] or [S II] with [O I], model scatter in the
    # draws, class from the measured ratios, a two-arm cube's arms joined.
    version: ClassVar[int] = 2
    after: ClassVar[tuple[str, ...]] = ("lines",)
    Params: ClassVar[type[BaseModel]] = NebulaDiagnosticParams
    method: ClassVar[str] = "diagnostic"
    ew_decides: ClassVar[bool] = True

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        return {}  # the rules are code, versioned by `version`

    def compute(self, batch: NebulaBatch, params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        assert isinstance(params, NebulaDiagnosticParams)
        generator = torch.Generator(device=device).manual_seed(batch_seed(params.seed, batch.spectrum_ids))
        context, inferred = batch.contexts()
        # No absolute [O III] flux with a distance modulus nor a nebula size reaches the task
        # yet: the PN rule uses its fallback (flags PN_NO_DISTANCE, PN_NO_SIZE).
        res = classify_diagnostic(
            torch.from_numpy(batch.fluxes).to(device), torch.from_numpy(batch.errors).to(device),
            torch.from_numpy(batch.ew).to(device), torch.from_numpy(batch.ew_err).to(device), params, generator,
            context=torch.from_numpy(context).to(device),
        )  # fmt: skip
        classes = res.classes.cpu().numpy()
        flags = res.flags.cpu().numpy() | np.where(inferred, int(NebulaFlag.CONTEXT_INFERRED), 0)
        rows = nebula_rows(batch.spectrum_ids, self.method, classes, res.probabilities.cpu().numpy(), flags, context)
        n_flagged = int(np.count_nonzero(classes == CLASSES.index("UNKNOWN")))
        return TaskOutput(rows={"nebula_class": rows}, n_inputs=len(batch.spectrum_ids), n_flagged=n_flagged)


@register
class NebulaNNTask(_NebulaTaskBase):
    """A small MLP trained on MAPPINGS 5 HII and AGN and Allen+08 shock grids (see docs/nebula_nn_model_card.md)."""

    name: ClassVar[str] = "nebula_nn"
    # 2 (issue 26): three families (HII, AGN, SNR) with dust and noise augmentation, context
    # folds SNR into AGN in a galaxy, the context column.
    version: ClassVar[int] = 2
    after: ClassVar[tuple[str, ...]] = ("lines",)
    Params: ClassVar[type[BaseModel]] = NebulaNNParams
    method: ClassVar[str] = "nn"
    ew_decides: ClassVar[bool] = False  # the network needs a ratio to Halpha

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        from skyledger.compute.classification.nn import weights_path

        return {"models/nebula_nn.pt": weights_path()}

    def compute(self, batch: NebulaBatch, params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        assert isinstance(params, NebulaNNParams)
        from skyledger.compute.classification.nn import classify_nn

        # The same context as the diagnostic method: in a galaxy the network's SNR is folded into AGN.
        context, inferred = batch.contexts()
        res = classify_nn(
            torch.from_numpy(batch.fluxes), torch.from_numpy(batch.errors), torch.from_numpy(batch.ew), params.min_snr, device,
            context=torch.from_numpy(context),
        )  # fmt: skip
        classes = res.classes.cpu().numpy()
        flags = res.flags.cpu().numpy() | np.where(inferred, int(NebulaFlag.CONTEXT_INFERRED), 0)
        rows = nebula_rows(batch.spectrum_ids, self.method, classes, res.probabilities.cpu().numpy(), flags, context)
        n_flagged = int(np.count_nonzero(classes == CLASSES.index("UNKNOWN")))
        return TaskOutput(rows={"nebula_class": rows}, n_inputs=len(batch.spectrum_ids), n_flagged=n_flagged)

