"""The `lines` task: stellar kinematics and emission lines of every spectrum with pixels.

The numerics live in :mod:`skyledger.compute.fitting`; this module reads spectra from
the database into padded arrays, calls the fit, and turns its arrays into rows of
``stellar_kinematics`` and ``line_measurement``.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from skyledger.schema.database import psycopg_connection
from skyledger.schema.result_models import LineMeasurement, StellarKinematics
from skyledger.schema.pgcopy import numpy_arrays

from skyledger.compute.fitting import FitConfig, LineFlag, SpectraBatch, SpectrumFlag, TemplateLibrary, fit_spectra
from skyledger.compute.fitting.components import GAS_MODEL_NAMES
from skyledger.compute.fitting.templates import LIBRARIES
from skyledger.compute.framework.registry import register
from skyledger.compute.framework.task import FlagDoc, ResultTable, TaskOutput, pending_inputs

__all__ = ["LinesParams", "LinesTask", "SPECTRUM_FLAG_DOCS", "LINE_FLAG_DOCS"]

_log = logging.getLogger(__name__)

# The file gave no errors (spectrum flag ERROR_ESTIMATED): its ivar is the reader's
# scatter estimate, which the fit's reduced chi-square scaling then calibrates; the
# results carry the mark so that nobody reads their errors as measured ones.
_ESTIMATED_DOC = "The spectrum's file gives no errors: errors derive from the reader's scatter estimate"
#: bit of spectrum.flags set by the readers (flag_definition, migration 0016)
SPECTRUM_ERROR_ESTIMATED = 1 << 5

SPECTRUM_FLAG_DOCS = {
    "NO_GOOD_PIXELS": "No pixel survives the mask, ivar and finiteness checks; no results",
    "TOO_FEW_PIXELS": "Too few good pixels overlap the templates; no results",
    "FIT_FAILED": "A linear solve failed or gave non-finite numbers; no results",
    "NOT_CONVERGED": "The stellar Levenberg-Marquardt fit reached its iteration limit",
    "SIGMA_AT_BOUND": "The stellar dispersion is at a bound of the fit",
    "VELOCITY_AT_BOUND": "The stellar velocity is at the edge of the search window",
    "TEMPLATE_RES_WORSE": "The templates have coarser resolution than the data over most pixels",
    "NO_CONTINUUM": "All template weights are zero: the continuum is polynomial only",
    "BAD_REDSHIFT": "The input redshift is missing or not finite; no results",
    "ERRORS_ESTIMATED": _ESTIMATED_DOC,
}
LINE_FLAG_DOCS = {
    "NOT_IN_RANGE": "The line is outside the fitted wavelength range",
    "NO_GOOD_PIXELS": "Too few good pixels on the line; no results",
    "ZERO_FLUX": "The non-negativity bound is active: flux 0, flux_err is an upper-limit scale",
    "TIED_FLUX": "Flux fixed to its doublet partner by the atomic ratio",
    "SIGMA_AT_BOUND": "The dispersion of the line's kinematic group is at a bound",
    "KINEMATICS_UNCONSTRAINED": "No line of the kinematic group has flux: velocity and sigma undefined",
    "SPECTRUM_FAILED": "The spectrum's fit failed; no results",
    "NO_CONTINUUM": "The continuum at the line is not positive: no equivalent width",
    "ERRORS_ESTIMATED": _ESTIMATED_DOC,
    "NOT_DETECTED": "Not detected: flux/flux_err below 3; flux_limit holds the upper limit max(flux, 0) + 3 flux_err",
    "LOCAL_CONTINUUM": "Beyond the stellar templates: fitted over a local polynomial continuum with its group's kinematics",
    "SECOND_COMPONENT": "The chosen gas model gives the line a second kinematic component (its row component = 1)",
    "COMPONENT_REJECTED": "A second kinematic component was tried on the line and rejected by the Delta BIC criterion",
}
_FAILED = SpectrumFlag.NO_GOOD_PIXELS | SpectrumFlag.TOO_FEW_PIXELS | SpectrumFlag.FIT_FAILED | SpectrumFlag.BAD_REDSHIFT


class LinesParams(BaseModel):
    """Parameters of the `lines` fit; any change makes a new run (new parameter hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Continuum model (docs/lines_validation.md, "Continuum model"): by default pPXF's
    # recommendation for gas, SSP templates with a multiplicative polynomial only.
    templates: Literal["emiles", "mileshc"] = Field(
        "emiles", description="Stellar template library: emiles (78 E-MILES SSPs) or mileshc (63 MILES stars)"
    )
    degree: int = Field(-1, ge=-1, le=20, description="Additive Legendre degree of the stellar fit (-1: none)")
    mdegree: int = Field(10, ge=0, le=20, description="Multiplicative Legendre degree of the stellar fit (0: none)")
    gas_degree: int = Field(-1, ge=-1, le=20, description="Additive Legendre degree under the emission lines (-1: none)")
    default_resolution: float = Field(2000.0, gt=0, description="R used where a spectrum gives none")
    fit_gas: bool = Field(True, description="Fit emission lines (False: stellar kinematics only)")
    clip_sigma: float = Field(3.0, gt=0, description="Outlier clipping threshold of the stellar fit")
    components: Literal["none", "auto"] = Field(
        "none", description="Second kinematic components: none, or auto (broad Balmer and [OIII] outflow, kept by Delta BIC)"
    )
    components_min_delta_bic: float = Field(10.0, ge=0, description="Delta BIC above which a second component is kept")


@dataclass
class LinesBatch:
    spectrum_ids: list[int]
    spectra: SpectraBatch
    #: (B,) the spectrum's errors are the reader's estimate (flag ERROR_ESTIMATED)
    errors_estimated: np.ndarray | None = None


def _num(value: Any) -> float | None:
    """NaN (no result) becomes NULL in the database."""
    v = float(value)
    return None if math.isnan(v) else v


@register
class LinesTask:
    name: ClassVar[str] = "lines"
    # 2: gas searched around the input redshift too (not only the stellar V); resampled
    # spectra: rebin top-hat added to the instrumental width, errors not scaled below the
    # noise; EW continuum at the fitted line centre.
    # 3: continuum model E-MILES SSPs, no additive polynomial, multiplicative degree 10
    # (params templates/degree/mdegree/gas_degree); lines beyond the templates
    # ([SIII]9069, 9532) fitted over a local continuum (LOCAL_CONTINUUM), [SIII]9069 tied
    # to 9532; NOT_DETECTED below S/N 3 with flux_limit; ew_err from the flux and
    # continuum covariance; line rows carry a kinematic component (0; 1 for second
    # components with components = auto) and v10/v90/W80; stellar_kinematics the chosen
    # gas model.
    version: ClassVar[int] = 3
    after: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[BaseModel]] = LinesParams
    result_tables: ClassVar[tuple[ResultTable, ...]] = (ResultTable.of(StellarKinematics), ResultTable.of(LineMeasurement))
    flags: ClassVar[tuple[FlagDoc, ...]] = FlagDoc.from_enum(
        "stellar_kinematics", "flags", SpectrumFlag, SPECTRUM_FLAG_DOCS
    ) + FlagDoc.from_enum("line_measurement", "flags", LineFlag, LINE_FLAG_DOCS)

    def __init__(self) -> None:
        self._grids: dict[int, np.ndarray] = {}

    # ----------------------------------------------------------------- database side

    def pending(self, session: Session, params: BaseModel, *, run_id: int, params_hash: str, limit: int) -> list[int]:
        # Ordered by wavelength grid so that a batch shares one grid (little padding).
        return pending_inputs(
            session,
            inputs_sql="SELECT id, wave_grid_id FROM spectrum WHERE n_pix > 0",
            result_table="stellar_kinematics",
            task=self.name, version=self.version, params_hash=params_hash, run_id=run_id, limit=limit,
            order_by="i.wave_grid_id, i.id",
        )

    def upstream_runs(self, session: Session, input_ids: Sequence[int]) -> list[int]:
        return []  # reads ingested pixels only

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        assert isinstance(params, LinesParams)
        root = Path(str(importlib.resources.files("skyledger.compute.templates")))
        return {str(p.relative_to(root)): p for pattern in LIBRARIES[params.templates] for p in sorted(root.glob(pattern))}

    def load(self, session: Session, input_ids: Sequence[int], params: BaseModel) -> LinesBatch:
        # The pixel arrays come in binary, decoded by numpy: read as text, parsing a
        # Python float per pixel took ~3 ms per spectrum, 8.7 % of `skyledger process`
        # (benchmarks/lines_process.py).
        with psycopg_connection(session).cursor(binary=True) as cur:
            numpy_arrays(cur)
            rows = cur.execute(
                "SELECT id, wave_grid_id, z, flux, ivar, mask, resolution, flags FROM spectrum "
                "WHERE id = ANY(%s) ORDER BY wave_grid_id, id",
                (list(input_ids),),
            ).fetchall()
            missing = sorted({r[1] for r in rows} - set(self._grids))
            if missing:
                for gid, wave in cur.execute("SELECT id, wave FROM wavelength_grid WHERE id = ANY(%s)", (missing,)):
                    self._grids[gid] = np.asarray(wave, dtype=np.float64)
        n = max(self._grids[r[1]].size for r in rows)
        b = len(rows)
        wave = np.full((b, n), np.nan)
        flux = np.zeros((b, n), np.float32)
        ivar = np.zeros((b, n), np.float32)
        mask = np.ones((b, n), np.int32)  # padding is masked
        res = np.full((b, n), np.nan, np.float32)
        z = np.full(b, np.nan)
        estimated = np.array([bool(r[7] & SPECTRUM_ERROR_ESTIMATED) for r in rows], dtype=bool)
        for i, (sid, gid, zi, f, iv, m, r, _) in enumerate(rows):
            w = self._grids[gid]
            k = w.size
            wave[i, :k] = w
            if f is None or iv is None or any(a is not None and a.size != k for a in (f, iv, m, r)):
                # Corrupt row (ingest checks this): the spectrum is fitted as having no
                # good pixel, so it gets its flagged result row and the batch goes on.
                _log.warning("spectrum %s: pixel arrays do not match its %d-pixel wavelength grid %s; "
                             "fitted as having no good pixels", sid, k, gid)
                continue
            flux[i, :k] = f
            ivar[i, :k] = iv
            mask[i, :k] = 0 if m is None else m
            if r is not None:
                res[i, :k] = r
            if zi is not None:
                z[i] = zi
        spectra = SpectraBatch(wave=wave, flux=flux, ivar=ivar, redshift=z, mask=mask, resolution=res)
        return LinesBatch([r[0] for r in rows], spectra, estimated)

    # ----------------------------------------------------------------- numerics

    @staticmethod
    def fit_config(params: LinesParams) -> FitConfig:
        return FitConfig(
            templates=params.templates,
            degree=params.degree,
            mdegree=params.mdegree,
            gas_degree=params.gas_degree,
            default_resolution=params.default_resolution,
            fit_gas=params.fit_gas,
            clip_sigma=params.clip_sigma,
            components=params.components,
            components_min_delta_bic=params.components_min_delta_bic,
        )

    def compute(self, batch: LinesBatch, params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        assert isinstance(params, LinesParams)
        config = self.fit_config(params)
        result = fit_spectra(batch.spectra, TemplateLibrary.named(config.templates), config, device=device, workers=workers)
        kin, lines = [], []
        estimated = np.zeros(len(batch.spectrum_ids), bool) if batch.errors_estimated is None else batch.errors_estimated
        for i, sid in enumerate(batch.spectrum_ids):
            sflags = int(result.flags[i]) | (int(SpectrumFlag.ERRORS_ESTIMATED) if estimated[i] else 0)
            kin.append((
                sid, _num(result.z[i]), _num(result.velocity[i]), _num(result.velocity_err[i]), _num(result.sigma[i]),
                _num(result.sigma_err[i]), _num(result.chi2_dof[i]), _num(result.stellar_chi2_dof[i]),
                _num(result.snr[i]), int(result.n_pixels[i]), sflags, GAS_MODEL_NAMES.get(int(result.gas_model[i])),
                _num(result.delta_bic_broad[i]), _num(result.delta_bic_outflow[i]),
            ))
            for j, line in enumerate(result.line_ids):
                lflags = int(result.line_flags[i, j])
                if lflags & LineFlag.NOT_IN_RANGE:
                    continue  # the line is not in this spectrum: no row
                if estimated[i]:
                    lflags |= int(LineFlag.ERRORS_ESTIMATED)
                lines.append((
                    sid, line, _num(result.line_z[i, j]), _num(result.line_velocity[i, j]),
                    _num(result.line_velocity_err[i, j]), _num(result.line_sigma[i, j]), _num(result.line_sigma_err[i, j]),
                    _num(result.line_flux[i, j]), _num(result.line_flux_err[i, j]), _num(result.line_ew[i, j]),
                    _num(result.line_ew_err[i, j]), _num(result.line_snr[i, j]), lflags, 0,
                    _num(result.line_v10[i, j]), _num(result.line_v90[i, j]), _num(result.line_w80[i, j]),
                    _num(result.line_flux_limit[i, j]),
                ))
                f2 = int(result.line2_flags[i, j])
                if f2 & LineFlag.SECOND_COMPONENT:
                    if estimated[i]:
                        f2 |= int(LineFlag.ERRORS_ESTIMATED)
                    lines.append((
                        sid, line, _num(result.line2_z[i, j]), _num(result.line2_velocity[i, j]),
                        _num(result.line2_velocity_err[i, j]), _num(result.line2_sigma[i, j]),
                        _num(result.line2_sigma_err[i, j]), _num(result.line2_flux[i, j]),
                        _num(result.line2_flux_err[i, j]), _num(result.line2_ew[i, j]), None,
                        _num(result.line2_snr[i, j]), f2, 1, None, None, None,  # v10/v90/w80: component 0 row
                        None,  # flux_limit: a kept second component is a detection
                    ))
        n_flagged = int(np.count_nonzero(np.asarray(result.flags) & int(_FAILED)))
        return TaskOutput(rows={"stellar_kinematics": kin, "line_measurement": lines}, n_inputs=len(kin), n_flagged=n_flagged)
