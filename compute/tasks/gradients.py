"""The `gradients` task: radial 12+log(O/H) gradients of galaxies with a rotation geometry.

Inputs are galaxies (parent sources, as for `rotation`) that have a row in
``catalog.rotation`` with a centre, PA and inclination, and at least ``min_points`` child
spectra with an O/H in ``catalog.abundances``.  Each child's deprojected radius comes from
the first fit of ``geometry`` (component/model) the galaxy has; the gradient is fitted per
abundance method by :func:`~skyledger.compute.kinematics.gradient.fit_gradients`.

Units: the slope is fitted per arcsec and converted to dex/kpc with the rotation row's
``kpc_per_arcsec`` (astropy Planck18 at the galaxy redshift) and to dex per effective
radius where the galaxy's ``source.meta`` gives ``r_e_arcsec``.  Abundance errors are the
mean of the Monte Carlo ``oh_err_lo`` and ``oh_err_hi``.

A gradient row records the rotation run it took the geometry from; a later rotation run
does not make a galaxy pending again at the same gradients version and parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.compute.kinematics.disk import DiskFlag
from skyledger.compute.kinematics.gradient import GRADIENT_FLAG_DOCS, GradientFit, GradientFitConfig, GradientFlag, fit_gradients
from skyledger.compute.kinematics.sky import sky_offsets
from skyledger.schema.result_models import MetallicityGradient
from skyledger.schema.results import chosen_sql
from skyledger.compute.errors import ComputeError
from skyledger.compute.framework.registry import register
from skyledger.compute.framework.task import FlagDoc, LoadNote, ResultTable, TaskOutput, pending_inputs

__all__ = ["GradientsBatch", "GradientsParams", "GradientsTask", "deprojected_radius"]

GRADIENT_TABLE = ResultTable.of(MetallicityGradient)
#: rotation flags that make the deprojection doubtful
_GEOMETRY_DOUBT = int(DiskFlag.NEAR_FACE_ON | DiskFlag.AT_BOUND | DiskFlag.NOT_CONVERGED | DiskFlag.MANY_OUTLIERS)
_FAILED = int(GradientFlag.TOO_FEW_POINTS | GradientFlag.FIT_FAILED)

_KIDS = """
kids AS (
    SELECT s.id AS spectrum_id,
           CASE WHEN src.parent_id = ANY(:ids) THEN src.parent_id ELSE src.id END AS galaxy_id,
           COALESCE(s.ra, src.ra) AS ra, COALESCE(s.dec, src.dec) AS dec
    FROM spectrum AS s JOIN source AS src ON src.id = s.source_id
    WHERE (src.id = ANY(:ids) AND src.parent_id IS NULL) OR src.parent_id = ANY(:ids)
)"""

#: O/H of the galaxies' spectra from the best current `abundances` run of each spectrum
ABUNDANCE_SQL = f"""
WITH {_KIDS},
chosen AS (
    {chosen_sql("abundance", "spectrum_id", tasks=("abundances",), where="t.spectrum_id IN (SELECT spectrum_id FROM kids)")}
)
SELECT k.galaxy_id, k.spectrum_id, k.ra, k.dec, a.method, a.oh, a.oh_err_lo, a.oh_err_hi, a.run_id
FROM kids AS k
JOIN chosen ON chosen.spectrum_id = k.spectrum_id
JOIN abundance AS a ON a.spectrum_id = chosen.spectrum_id AND a.run_id = chosen.run_id
WHERE a.oh IS NOT NULL
ORDER BY k.spectrum_id, a.method
"""

_GEOMETRY_SQL = """
SELECT r.source_id, r.component, r.model, r.ra_center, r.dec_center, r.pa, r.inc, r.kpc_per_arcsec, r.flags,
       r.run_id, g.meta ->> 'r_e_arcsec' AS r_e
FROM catalog.rotation AS r JOIN source AS g ON g.id = r.source_id
WHERE r.source_id = ANY(:ids) AND r.pa IS NOT NULL AND r.inc IS NOT NULL AND r.ra_center IS NOT NULL
"""


class GradientsParams(BaseModel):
    """Parameters of the `gradients` task; any change makes a new run (new parameter hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    geometry: tuple[str, ...] = Field(
        ("gas/arctan", "stars/arctan", "gas/freeman", "stars/freeman"),
        description="Rotation fits (component/model) whose geometry deprojects the radii, in order of preference",
    )
    methods: tuple[str, ...] | None = Field(None, description="Abundance methods to fit (None: every method present)")
    min_points: int = Field(5, ge=3, description="Fewest points with O/H for a gradient (and for a galaxy to be an input)")
    clip_sigma: float = Field(3.0, gt=0, description="Outlier rejection threshold in standard deviations")
    min_span_arcsec: float = Field(1.0, ge=0, description="Radial spans shorter than this are flagged SHORT_RADIAL_RANGE")
    error_floor_dex: float = Field(0.01, gt=0, description="Smallest O/H error used (and the error of points without one)")

    @field_validator("geometry")
    @classmethod
    def _geometry(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for g in v:
            comp, _, model = g.partition("/")
            if comp not in ("gas", "stars") or model not in ("arctan", "freeman"):
                raise ValueError(f"geometry {g!r} must be gas|stars/arctan|freeman, e.g. gas/arctan")
        if not v:
            raise ValueError("geometry must name at least one rotation fit")
        return v

    def fit_config(self) -> GradientFitConfig:
        return GradientFitConfig(
            min_points=self.min_points, clip_sigma=self.clip_sigma, min_span_arcsec=self.min_span_arcsec,
            error_floor=self.error_floor_dex,
        )


@dataclass
class Geometry:
    component_model: str
    ra: float
    dec: float
    pa: float  # deg
    inc: float  # deg
    kpc_per_arcsec: float  # NaN without redshift
    flags: int
    run_id: int
    r_e: float  # arcsec, NaN unknown


@dataclass
class GradientsBatch:
    """One row per (galaxy, method) group, padded ``(G, N)``."""

    source_ids: list[int]
    groups: list[tuple[int, str]]  # (index into source_ids, method)
    geometry: list[Geometry]
    radius: np.ndarray  # arcsec
    oh: np.ndarray
    oh_err: np.ndarray
    mask: np.ndarray
    spectrum_id: np.ndarray
    upstream_run_ids: list[int] = field(default_factory=list)


def deprojected_radius(ra: np.ndarray, dec: np.ndarray, geo: Geometry) -> np.ndarray:
    """Deprojected galactocentric radius (arcsec) of sky positions in the disk ``geo``."""
    x, y = sky_offsets(ra, dec, geo.ra, geo.dec)
    pa, inc = math.radians(geo.pa), math.radians(geo.inc)
    a = x * math.sin(pa) + y * math.cos(pa)
    b = -x * math.cos(pa) + y * math.sin(pa)
    return np.hypot(a, b / math.cos(inc))


def _num(value: Any) -> float | None:
    v = float(value)
    return None if not math.isfinite(v) else v


def _float(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) and v > 0 else math.nan


@register
class GradientsTask:
    name: ClassVar[str] = "gradients"
    version: ClassVar[int] = 1
    after: ClassVar[tuple[str, ...]] = ("abundances", "rotation")
    Params: ClassVar[type[BaseModel]] = GradientsParams
    result_tables: ClassVar[tuple[ResultTable, ...]] = (GRADIENT_TABLE,)
    flags: ClassVar[tuple[FlagDoc, ...]] = FlagDoc.from_enum(
        "metallicity_gradient", "flags", GradientFlag, GRADIENT_FLAG_DOCS
    )

    def __init__(self) -> None:
        self._last_read = LoadNote()
        self._params = GradientsParams()

    # ----------------------------------------------------------------- database side

    def pending(self, session: Session, params: BaseModel, *, run_id: int, params_hash: str, limit: int) -> list[int]:
        assert isinstance(params, GradientsParams)
        return pending_inputs(
            session,
            inputs_sql=(
                "SELECT gal.id FROM ("
                "SELECT COALESCE(src.parent_id, src.id) AS id FROM spectrum AS s JOIN source AS src ON src.id = s.source_id "
                "WHERE EXISTS (SELECT 1 FROM abundance AS a JOIN catalog.current_runs AS cr ON cr.run_id = a.run_id "
                "WHERE a.spectrum_id = s.id AND cr.task = 'abundances' AND a.oh IS NOT NULL) "
                "GROUP BY 1 HAVING count(*) >= :min_points) AS gal "
                "WHERE EXISTS (SELECT 1 FROM catalog.rotation AS r WHERE r.source_id = gal.id "
                "AND r.pa IS NOT NULL AND r.inc IS NOT NULL AND r.ra_center IS NOT NULL)"
            ),
            result_table="metallicity_gradient", key_column="source_id",
            task=self.name, version=self.version, params_hash=params_hash, run_id=run_id, limit=limit,
            bind={"min_points": params.min_points},
        )

    def upstream_runs(self, session: Session, input_ids: Sequence[int]) -> list[int]:
        """The `rotation` and `abundances` runs whose rows ``load`` read for these galaxies."""
        return self._last_read.upstream_runs(
            input_ids, lambda: self.load(session, input_ids, self._params).upstream_run_ids
        )

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        return {}

    def load(self, session: Session, input_ids: Sequence[int], params: BaseModel) -> GradientsBatch:
        assert isinstance(params, GradientsParams)
        ids = sorted(int(i) for i in input_ids)
        index = {sid: b for b, sid in enumerate(ids)}
        rank = {g: k for k, g in enumerate(params.geometry)}
        best: dict[int, tuple[int, Geometry]] = {}
        for r in session.execute(text(_GEOMETRY_SQL), {"ids": ids}):
            key = f"{r.component}/{r.model}"
            if key not in rank:
                continue
            geo = Geometry(key, r.ra_center, r.dec_center, r.pa, r.inc,
                           math.nan if r.kpc_per_arcsec is None else r.kpc_per_arcsec, int(r.flags), int(r.run_id),
                           _float(r.r_e))
            if r.source_id not in best or rank[key] < best[r.source_id][0]:
                best[r.source_id] = (rank[key], geo)
        points: dict[tuple[int, str], list[tuple[int, float, float, float, float]]] = {}
        used: set[int] = {g.run_id for _, g in best.values()}
        for r in session.execute(text(ABUNDANCE_SQL), {"ids": ids}):
            if r.galaxy_id not in best or (params.methods is not None and r.method not in params.methods):
                continue
            if r.ra is None or r.dec is None:
                continue
            lo, hi = r.oh_err_lo, r.oh_err_hi
            errs = [e for e in (lo, hi) if e is not None]
            err = float(np.mean(errs)) if errs else math.nan
            points.setdefault((index[r.galaxy_id], r.method), []).append((r.spectrum_id, r.ra, r.dec, r.oh, err))
            used.add(r.run_id)
        missing = [sid for sid in ids if sid not in best]
        if missing:
            # pending() only offers galaxies with a geometry: the current rotation results
            # changed between pending() and load().
            raise ComputeError(f"galaxies {missing} have no usable rotation geometry any more: the current rotation "
                               "results changed while this run read them; run `skyledger process --task gradients` again")
        groups = sorted(points)
        for b, sid in enumerate(ids):
            # A galaxy whose methods were all filtered out still gets one (empty, flagged) group.
            if sid in best and not any(g[0] == b for g in groups):
                groups.append((b, (params.methods or ("none",))[0]))
        groups.sort()
        n = max([len(points.get(g, [])) for g in groups] + [1])
        shape = (len(groups), n)
        radius, oh, err = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
        mask = np.zeros(shape, dtype=bool)
        spec = np.full(shape, -1, dtype=np.int64)
        geometry = []
        for j, g in enumerate(groups):
            geo = best[ids[g[0]]][1]
            geometry.append(geo)
            pts = points.get(g, [])
            if not pts:
                continue
            k = len(pts)
            arr = np.array([p[1:] for p in pts], dtype=np.float64)
            radius[j, :k] = deprojected_radius(arr[:, 0], arr[:, 1], geo)
            oh[j, :k], err[j, :k] = arr[:, 2], arr[:, 3]
            spec[j, :k] = [p[0] for p in pts]
            mask[j, :k] = True
        batch = GradientsBatch(ids, groups, geometry, radius, oh, err, mask, spec, sorted(used))
        self._last_read.record(ids, batch.upstream_run_ids)
        self._params = params
        return batch

    # ----------------------------------------------------------------- numerics

    def compute(self, batch: GradientsBatch, params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        assert isinstance(params, GradientsParams)
        t = lambda a: torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        fit = fit_gradients(t(batch.radius), t(batch.oh), t(batch.oh_err), torch.as_tensor(batch.mask, device=device),
                            params.fit_config())
        rows = self.rows(batch, fit)
        ok = np.zeros(len(batch.source_ids), dtype=bool)
        flags = fit.flags.cpu().numpy()
        for j, (b, _) in enumerate(batch.groups):
            ok[b] |= (flags[j] & _FAILED) == 0
        return TaskOutput(rows={"metallicity_gradient": rows}, n_inputs=len(batch.source_ids),
                          n_flagged=int(np.count_nonzero(~ok)))

    @staticmethod
    def rows(batch: GradientsBatch, fit: GradientFit) -> list[tuple[Any, ...]]:
        slope, central, scatter = (a.cpu().numpy() for a in (fit.slope, fit.central, fit.scatter))
        err = fit.errors.cpu().numpy()
        flags = fit.flags.cpu().numpy()
        r_min, r_max = fit.r_min.cpu().numpy(), fit.r_max.cpu().numpy()
        out = []
        for j, (b, method) in enumerate(batch.groups):
            geo = batch.geometry[j]
            f = int(flags[j])
            if geo.flags & _GEOMETRY_DOUBT:
                f |= int(GradientFlag.GEOMETRY_FLAGGED)
            if not math.isfinite(geo.kpc_per_arcsec):
                f |= int(GradientFlag.NO_DISTANCE)
            s, se = slope[j], err[j, 1]
            kpc, re = geo.kpc_per_arcsec, geo.r_e
            out.append((
                batch.source_ids[b], method, geo.run_id, geo.component_model, _num(s), _num(se),
                _num(s / kpc), _num(se / kpc), _num(s * re), _num(se * re), _num(re),
                _num(central[j]), _num(err[j, 0]), _num(scatter[j]), _num(err[j, 2]),
                _num(r_min[j]), _num(r_max[j]), int(fit.n_points[j]), int(fit.n_rejected[j]), f,
            ))
        return out
