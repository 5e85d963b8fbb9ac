"""The `rotation` task: a thin rotating disk fitted to every galaxy with enough velocities.

Inputs are galaxies, not spectra: a galaxy is a source without a parent, and its points
are the spectra of the galaxy itself (IFU spaxels and Voronoi bins, whose source is the
galaxy) and of its child sources (velocity-map pixels, HII regions of a catalogue), each
at its own ra/dec.  A galaxy is pending when at least ``min_points`` of those spectra
have a velocity in the `current` runs: emission lines from the tasks of ``line_sources``
(``lines`` fits, ``ingested`` catalogues and maps), stars from ``stellar_kinematics``
(task ``lines``) or ingested ``STELLAR`` rows.

Choices a user of the table should know:

* Gas velocity of a point: its ``gas_line`` (H-alpha) when that has S/N >= ``min_line_snr``
  (or no S/N, as in velocity maps), else its highest-S/N line with a velocity.
* Every velocity is brought to one rest frame per galaxy: from the line redshift z
  (or, where a catalogue gives only a velocity, z = (1 + z_spec)(1 + v / c) - 1),
  v = c (z - z_gal) / (1 + z_gal).  Children whose spectra carry different input
  redshifts are therefore consistent, and velocities are rest-frame (the (1 + z)
  time dilation is removed).  A galaxy without a redshift uses the median z of its
  points instead (flag NO_REDSHIFT, no kpc values).
* One row per (galaxy, component, model) for each component that has any velocity;
  a component with too few usable points gets a row flagged TOO_FEW_POINTS, all NULL.
* Beam smearing is modelled when ``beam_smearing`` is on and a PSF FWHM is known, taken
  in this order: the galaxy source's meta ``psf_fwhm_arcsec`` (per object, from its
  file's header: the IFU cube readers' PSFFWHM, the velocity-map reader's PSF cards),
  else the ``psf_fwhm_arcsec`` option of its survey; a value that is not a positive
  number is skipped.  Map pixels and spaxels get the PSF-convolved model on their pixel
  grid, scattered points the stencil (see :mod:`skyledger.compute.kinematics.disk`);
  ``psf_fwhm`` records what was used.
* Geometry: the fit starts from the kinematic centre, V_sys and PA of the field's symmetry
  (``pa_kin``, :mod:`skyledger.compute.kinematics.kinematic_pa`), at that PA and 90, 180
  and 270 deg from it; every model is then refitted from the other models' geometry and
  keeps the solution of lower cost, and rows where the models still disagree carry
  MODELS_DISAGREE (:mod:`skyledger.compute.kinematics.model_agreement`).
* vmax_obs: the highest rotation speed of the beam-smeared model near the major axis,
  what the map shows without the PSF model (equal to the intrinsic curve's highest
  speed within the data when no PSF is used); vmax is the intrinsic one.
* kpc: angular-diameter distance of z_gal with astropy's Planck18.
* Errors: the curvature errors (*_err) are checked by a block bootstrap over the kept
  points (*_err_boot, ``bootstrap`` resamples of cells of ``bootstrap_block_fwhm`` PSF
  FWHM, single points without a PSF; seeded by the source id), which keeps the
  correlation the PSF gives neighbouring pixels; flag ERRORS_UNDERESTIMATED where it
  exceeds the curvature error more than twice in PA, inclination or V_max.
* sigma0: median intrinsic dispersion (instrumental broadening already removed by the
  line fit) of the kept points beyond r_turn (all kept points when fewer than 3 lie
  there), with the dispersion beam-smeared rotation adds removed in quadrature:
  sigma_beam^2 = [(Sigma V^2) * PSF] / [Sigma * PSF] - V_obs^2 from the fit's own
  convolution (:mod:`skyledger.compute.kinematics.beam_grid`, or the stencil).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.compute.fitting import LineFlag
from skyledger.compute.kinematics.disk import (
    C_KMS,
    DISK_FLAG_DOCS,
    DiskData,
    DiskFit,
    DiskFitConfig,
    DiskFlag,
    disk_coordinates,
    fit_disks,
    los_velocity,
)
from skyledger.compute.kinematics.bootstrap import BLOCK_FWHM, DiskBootstrap, bootstrap_disks
from skyledger.compute.kinematics.model_agreement import agree
from skyledger.compute.kinematics.sky import kpc_per_arcsec, offsets_to_sky, sky_offsets
from skyledger.schema.result_models import RotationFit
from skyledger.schema.results import chosen_sql
from skyledger.compute.framework.registry import register
from skyledger.compute.framework.task import FlagDoc, LoadNote, ResultTable, TaskOutput, pending_inputs

__all__ = [
    "ComponentPoints",
    "RotationBatch",
    "RotationParams",
    "RotationTask",
    "dispersion_floor",
    "rotation_rows",
]

Component = Literal["gas", "stars"]
ModelName = Literal["arctan", "freeman"]
LineSource = Literal["lines", "ingested"]

#: line id of stellar velocities in ``line_measurement`` (ingested stellar velocity maps)
STELLAR_LINE = "STELLAR"
_UNUSABLE_LINE = int(
    LineFlag.NO_GOOD_PIXELS | LineFlag.ZERO_FLUX | LineFlag.SPECTRUM_FAILED | LineFlag.NOT_IN_RANGE
    | LineFlag.KINEMATICS_UNCONSTRAINED
)
_FAILED = int(DiskFlag.TOO_FEW_POINTS | DiskFlag.FIT_FAILED)

ROTATION_TABLE = ResultTable.of(RotationFit)

# The spectra of the requested galaxies: their own (IFU spaxels, bins) and those of their
# child sources (map pixels, HII regions). Written as an OR of two index-backed conditions.
_KIDS = """
kids AS (
    SELECT s.id AS spectrum_id,
           CASE WHEN src.parent_id = ANY(:ids) THEN src.parent_id ELSE src.id END AS galaxy_id,
           COALESCE(s.ra, src.ra) AS ra, COALESCE(s.dec, src.dec) AS dec, s.z AS spec_z
    FROM spectrum AS s JOIN source AS src ON src.id = s.source_id
    WHERE (src.id = ANY(:ids) AND src.parent_id IS NULL) OR src.parent_id = ANY(:ids)
)"""

#: lines of the galaxies' spectra from the preferred source task of each spectrum (the
#: narrow component 0: a broad or outflow component does not trace the disk)
GAS_SQL = f"""
WITH {_KIDS},
chosen AS (
    {chosen_sql("line_measurement", "spectrum_id", prefer="sources", where="t.spectrum_id IN (SELECT spectrum_id FROM kids)")}
)
SELECT k.galaxy_id, k.spectrum_id, k.ra, k.dec, k.spec_z, m.line, m.z, m.velocity, m.velocity_err, m.sigma,
       m.flux, m.snr, m.flags, chosen.task AS source_task, m.run_id
FROM kids AS k
JOIN chosen ON chosen.spectrum_id = k.spectrum_id
JOIN line_measurement AS m ON m.spectrum_id = chosen.spectrum_id AND m.run_id = chosen.run_id
    AND m.component = 0
ORDER BY k.spectrum_id
"""

#: stellar kinematics of the galaxies' spectra from the best current `lines` run
STARS_SQL = f"""
WITH {_KIDS},
chosen AS (
    {chosen_sql("stellar_kinematics", "spectrum_id", tasks=("lines",), where="t.spectrum_id IN (SELECT spectrum_id FROM kids)")}
)
SELECT k.galaxy_id, k.spectrum_id, k.ra, k.dec, k.spec_z, sk.z, sk.velocity, sk.velocity_err, sk.sigma, sk.run_id
FROM kids AS k
JOIN chosen ON chosen.spectrum_id = k.spectrum_id
JOIN stellar_kinematics AS sk ON sk.spectrum_id = chosen.spectrum_id AND sk.run_id = chosen.run_id
ORDER BY k.spectrum_id
"""

_GALAXY_SQL = """
SELECT g.id, g.object_id, g.ra, g.dec, g.z, g.meta ->> 'psf_fwhm_arcsec' AS psf_meta,
       sv.options ->> 'psf_fwhm_arcsec' AS psf
FROM source AS g JOIN survey AS sv ON sv.id = g.survey_id
WHERE g.id = ANY(:ids)
"""

_GAS_EXISTS = (
    "EXISTS (SELECT 1 FROM line_measurement AS m JOIN catalog.current_runs AS cr ON cr.run_id = m.run_id "
    "WHERE m.spectrum_id = s.id AND cr.task = ANY(CAST(:sources AS text[])) AND m.line <> 'STELLAR' "
    "AND (m.z IS NOT NULL OR m.velocity IS NOT NULL))"
)
_STARS_EXISTS = (
    "EXISTS (SELECT 1 FROM stellar_kinematics AS k JOIN catalog.current_runs AS cr ON cr.run_id = k.run_id "
    "WHERE k.spectrum_id = s.id AND cr.task = 'lines' AND (k.z IS NOT NULL OR k.velocity IS NOT NULL)) "
    "OR EXISTS (SELECT 1 FROM line_measurement AS m JOIN catalog.current_runs AS cr ON cr.run_id = m.run_id "
    "WHERE m.spectrum_id = s.id AND cr.task = ANY(CAST(:sources AS text[])) AND m.line = 'STELLAR' "
    "AND (m.z IS NOT NULL OR m.velocity IS NOT NULL))"
)


class RotationParams(BaseModel):
    """Parameters of the `rotation` task; any change makes a new run (new parameter hash)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelName, ...] = Field(("arctan", "freeman"), description="Rotation-curve models fitted, each its own row")
    components: tuple[Component, ...] = Field(("gas", "stars"), description="Velocity sets fitted, each its own row")
    line_sources: tuple[LineSource, ...] = Field(
        ("lines", "ingested"), description="Tasks whose line velocities are used, in order of preference per spectrum"
    )
    gas_line: str = Field("HA6563", description="Preferred emission line for the gas velocity")
    min_line_snr: float = Field(3.0, ge=0, description="S/N the preferred line needs; else the strongest line is used")
    min_points: int = Field(10, ge=8, description="Fewest usable points for a fit (and for a galaxy to be an input)")
    error_floor_kms: float = Field(5.0, ge=0, description="Added in quadrature to every velocity error, km/s")
    loss: Literal["soft_l1", "cauchy", "linear"] = Field("soft_l1", description="Robust loss of the fit")
    clip_sigma: float = Field(4.0, gt=0, description="Outlier rejection threshold in robust standard deviations")
    beam_smearing: bool = Field(
        True, description="Model beam smearing where a PSF FWHM is known (the galaxy's header, else the survey option)"
    )
    face_on_deg: float = Field(20.0, ge=0, le=90, description="Inclinations below this are flagged NEAR_FACE_ON")
    # errors (bootstrap): see skyledger.compute.kinematics.bootstrap
    bootstrap: int = Field(
        20, ge=0, le=1000,
        description="Block-bootstrap resamples checking the curvature errors (*_err_boot columns); 0 or 1 = none",
    )
    bootstrap_block_fwhm: float = Field(
        BLOCK_FWHM, gt=0, description="Side of the bootstrap's cells in PSF FWHM (points are resampled singly without a PSF)"
    )

    @field_validator("models", "components", "line_sources")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or len(set(v)) != len(v):
            raise ValueError("must name at least one value, each at most once")
        return v

    def fit_config(self, model: ModelName) -> DiskFitConfig:
        return DiskFitConfig(
            model=model, min_points=self.min_points, error_floor=self.error_floor_kms, loss=self.loss,
            clip_sigma=self.clip_sigma, face_on_deg=self.face_on_deg,
        )


@dataclass
class ComponentPoints:
    """The points of one component, padded ``(B, N)``; ``n_rows`` counts what the database held."""

    x: np.ndarray  # east offset from the reference, arcsec
    y: np.ndarray  # north offset, arcsec
    v: np.ndarray  # rest-frame velocity relative to the galaxy frame, km/s
    v_err: np.ndarray
    sigma: np.ndarray  # intrinsic dispersion, km/s
    flux: np.ndarray  # line flux (gas), NaN unknown
    mask: np.ndarray  # bool
    spectrum_id: np.ndarray  # int64, -1 = padding
    n_rows: np.ndarray  # (B,) int


@dataclass
class RotationBatch:
    source_ids: list[int]
    object_ids: list[str]
    ref_ra: np.ndarray  # (B,) tangent-plane reference: the galaxy position (or mean of its points)
    ref_dec: np.ndarray
    z_gal: np.ndarray  # (B,) the galaxy's redshift, NaN = none
    z_frame: np.ndarray  # (B,) redshift the velocities are relative to (z_gal or the points' median)
    psf_fwhm: np.ndarray  # (B,) arcsec, NaN = none
    components: dict[str, ComponentPoints] = field(default_factory=dict)
    upstream_run_ids: list[int] = field(default_factory=list)


def _f(value: Any) -> float:
    return math.nan if value is None else float(value)


def _num(value: Any) -> float | None:
    v = float(value)
    return None if not math.isfinite(v) else v


class _Point:
    __slots__ = ("spectrum_id", "ra", "dec", "z", "velocity", "v_err", "sigma", "flux", "spec_z")

    def __init__(self, spectrum_id: int, ra: Any, dec: Any, spec_z: Any, z: Any, velocity: Any, v_err: Any,
                 sigma: Any, flux: Any) -> None:
        self.spectrum_id = spectrum_id
        self.ra, self.dec, self.spec_z = _f(ra), _f(dec), _f(spec_z)
        self.z, self.velocity, self.v_err, self.sigma, self.flux = _f(z), _f(velocity), _f(v_err), _f(sigma), _f(flux)

    def redshift(self, z_default: float) -> float:
        """The point's redshift: its own, or (1 + z_spec)(1 + v / c) - 1 from a velocity."""
        if math.isfinite(self.z):
            return self.z
        base = self.spec_z if math.isfinite(self.spec_z) else z_default
        if math.isfinite(base) and math.isfinite(self.velocity):
            return (1.0 + base) * (1.0 + self.velocity / C_KMS) - 1.0
        return math.nan


def _psf_fwhm(*values: Any) -> float:
    """The first positive finite number among ``values`` (source meta, then survey
    option), else NaN: a malformed value means no beam smearing rather than a failed batch."""
    for raw in values:
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            return value
    return math.nan


def _choose_gas(rows: list[Any], params: RotationParams) -> Any | None:
    """The line giving a spectrum's gas velocity (see the module docstring)."""
    usable = [
        r for r in rows
        if r.line != STELLAR_LINE and (r.z is not None or r.velocity is not None)
        and not (r.source_task == "lines" and r.flags & _UNUSABLE_LINE)
    ]
    if not usable:
        return None
    for r in usable:
        if r.line == params.gas_line and (r.snr is None or r.snr >= params.min_line_snr):
            return r
    return max(usable, key=lambda r: (-math.inf if r.snr is None or not math.isfinite(r.snr) else r.snr,
                                      -math.inf if r.flux is None or not math.isfinite(r.flux) else r.flux))


def _pad(points: list[list[_Point]], ref_ra: np.ndarray, ref_dec: np.ndarray, z_frame: np.ndarray) -> ComponentPoints:
    nb = len(points)
    n = max([len(p) for p in points] + [1])
    arr = {k: np.full((nb, n), np.nan) for k in ("x", "y", "v", "v_err", "sigma", "flux")}
    mask = np.zeros((nb, n), dtype=bool)
    sid = np.full((nb, n), -1, dtype=np.int64)
    for b, pts in enumerate(points):
        if not pts:
            continue
        k = len(pts)
        ra = np.array([p.ra for p in pts])
        dec = np.array([p.dec for p in pts])
        arr["x"][b, :k], arr["y"][b, :k] = sky_offsets(ra, dec, ref_ra[b], ref_dec[b])
        zf = z_frame[b]
        if math.isfinite(zf):
            z = np.array([p.redshift(zf) for p in pts])
            # One rest frame per galaxy, whatever input redshift each child was fitted from.
            arr["v"][b, :k] = C_KMS * (z - zf) / (1.0 + zf)
        else:
            arr["v"][b, :k] = [p.velocity for p in pts]  # no redshift anywhere: the catalogue's own frame
        arr["v_err"][b, :k] = [p.v_err for p in pts]
        arr["sigma"][b, :k] = [p.sigma for p in pts]
        arr["flux"][b, :k] = [p.flux for p in pts]
        sid[b, :k] = [p.spectrum_id for p in pts]
        mask[b, :k] = True
    counts = np.array([len(p) for p in points], dtype=np.int64)
    return ComponentPoints(**arr, mask=mask, spectrum_id=sid, n_rows=counts)


def dispersion_floor(
    fit: DiskFit, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor, model: ModelName, psf_fwhm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma0, error) per galaxy: see the module docstring; NaN without 3 measured dispersions.

    The beam-smearing term is ``fit.sigma_beam``, the spread of the disk's velocities
    within the PSF from the same convolution (grid or stencil) the fit used; a fit
    without it (an older DiskFit) falls back to psf_sigma |grad V|."""
    theta = torch.nan_to_num(fit.theta)
    if fit.sigma_beam.shape == sigma.shape:
        smear = torch.nan_to_num(fit.sigma_beam)
    else:
        psf_sigma = torch.nan_to_num(psf_fwhm, nan=0.0) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        h = 0.05  # arcsec, central differences of the intrinsic field
        with torch.no_grad():
            gx = (los_velocity(theta, x + h, y, model) - los_velocity(theta, x - h, y, model)) / (2 * h)
            gy = (los_velocity(theta, x, y + h, model) - los_velocity(theta, x, y - h, model)) / (2 * h)
        smear = psf_sigma.unsqueeze(-1) * torch.sqrt(gx * gx + gy * gy)
    corrected = torch.sqrt((sigma * sigma - smear * smear).clamp_min(0.0))
    radius, _, _ = disk_coordinates(theta, x, y)
    ok = fit.kept & torch.isfinite(sigma)
    outer = ok & (radius > theta[:, 6:7])
    use = torch.where((outer.sum(-1) >= 3).unsqueeze(-1), outer, ok)
    vals = torch.where(use, corrected, torch.full_like(corrected, math.nan))
    med = torch.nanmedian(vals, dim=-1).values
    mad = torch.nanmedian((vals - med.unsqueeze(-1)).abs(), dim=-1).values
    n = use.sum(-1)
    err = 1.2533 * 1.4826 * mad / torch.sqrt(n.clamp_min(1).to(vals.dtype))
    enough = n >= 3
    nan = torch.full_like(med, math.nan)
    return torch.where(enough, med, nan), torch.where(enough, err, nan)


def rotation_rows(batch: RotationBatch, component: str, model: ModelName, fit: DiskFit,
                  sigma0: torch.Tensor, sigma0_err: torch.Tensor, rows_of: np.ndarray, psf: np.ndarray,
                  no_redshift: np.ndarray, boot: DiskBootstrap | None = None) -> list[tuple[Any, ...]]:
    """Rows of ``rotation_fit`` (without run_id) for the galaxies ``rows_of`` of the batch."""
    th = fit.theta.detach().cpu().numpy()
    err = fit.errors.detach().cpu().numpy()
    flags = fit.flags.cpu().numpy() | np.where(no_redshift, int(DiskFlag.NO_REDSHIFT), 0)
    # errors (bootstrap)
    n_gal = th.shape[0]
    b_err = np.full((n_gal, 7), np.nan) if boot is None else boot.errors.detach().cpu().numpy()
    n_boot = np.zeros(n_gal, dtype=np.int64) if boot is None else boot.n_resamples.cpu().numpy()
    if boot is not None:
        flags = flags | boot.flags.cpu().numpy()
    s0, s0e = sigma0.cpu().numpy(), sigma0_err.cpu().numpy()
    chi2, r_max = fit.chi2.cpu().numpy(), fit.r_max.cpu().numpy()
    vmax_obs = fit.vmax_obs.cpu().numpy() if fit.vmax_obs.numel() else np.full(len(rows_of), np.nan)
    pa_kin, pa_kin_err = fit.pa_kin.cpu().numpy(), fit.pa_kin_err.cpu().numpy()
    scale = kpc_per_arcsec(batch.z_gal[rows_of])
    out = []
    for j, b in enumerate(rows_of):
        x0, y0, pa, inc, vsys, vmax, rt = th[j]
        ra_c, dec_c = offsets_to_sky(np.array([x0]), np.array([y0]), batch.ref_ra[b], batch.ref_dec[b])
        finite = math.isfinite(x0)
        out.append((
            batch.source_ids[b], component, model, _num(batch.z_gal[b]),
            _num(ra_c[0]) if finite else None, _num(dec_c[0]) if finite else None, _num(err[j, 0]), _num(err[j, 1]),
            _num(math.degrees(pa)), _num(math.degrees(err[j, 2])), _num(math.degrees(inc)), _num(math.degrees(err[j, 3])),
            _num(vsys), _num(err[j, 4]), _num(vmax), _num(err[j, 5]), _num(rt), _num(err[j, 6]),
            _num(rt * scale[j]), _num(err[j, 6] * scale[j]), _num(s0[j]), _num(s0e[j]), _num(scale[j]), _num(r_max[j]),
            _num(psf[b]), _num(chi2[j]), int(fit.n_points[j]), int(fit.n_rejected[j]), int(flags[j]),
            # the columns added after flags, in the table's order (migration 0020)
            _num(math.degrees(pa_kin[j])), _num(math.degrees(pa_kin_err[j])),
            _num(vmax_obs[j]),
            _num(math.degrees(b_err[j, 2])), _num(math.degrees(b_err[j, 3])), _num(b_err[j, 4]), _num(b_err[j, 5]),
            _num(b_err[j, 6]), int(n_boot[j]) if n_boot[j] > 0 else None,
        ))
    return out


@register
class RotationTask:
    name: ClassVar[str] = "rotation"
    # 2: parameter errors no longer scaled down by a reduced chi^2 below 1.
    # 3: faster fit (float32 iterations with a float64 polish, Nielsen damping, only
    #    galaxies whose points changed refitted after clipping): with the robust losses
    #    values move by at most a few hundredths of their errors, and some nearly face-on
    #    galaxies no longer hit NOT_CONVERGED.
    # 4: starting geometry from the field's symmetry (kinematic centre, V_sys and PA),
    #    PA starts at +0/90/180/270 deg, each model refitted from the other's geometry
    #    (lower cost kept), flags MODELS_DISAGREE and PA_KIN_DISAGREES, columns pa_kin(_err);
    #    beam smearing convolved with the PSF on the pixel grid of maps and spaxels, PSF
    #    from the galaxy's header before the survey option, vmax_obs, sigma0 corrected by
    #    the convolution's own beam dispersion, BEAM_DOMINATED / TURNOVER_UNRESOLVED;
    #    block-bootstrap errors (*_err_boot, n_bootstrap), flags ERRORS_UNDERESTIMATED
    #    and BOOTSTRAP_UNRELIABLE.
    version: ClassVar[int] = 4
    after: ClassVar[tuple[str, ...]] = ("lines",)
    Params: ClassVar[type[BaseModel]] = RotationParams
    result_tables: ClassVar[tuple[ResultTable, ...]] = (ROTATION_TABLE,)
    flags: ClassVar[tuple[FlagDoc, ...]] = FlagDoc.from_enum("rotation_fit", "flags", DiskFlag, DISK_FLAG_DOCS)

    def __init__(self) -> None:
        # What the last ``load`` read (galaxy ids, runs), and with which parameters.
        self._last_read = LoadNote()
        self._params = RotationParams()

    # ----------------------------------------------------------------- database side

    def pending(self, session: Session, params: BaseModel, *, run_id: int, params_hash: str, limit: int) -> list[int]:
        assert isinstance(params, RotationParams)
        conditions = [c for comp, c in (("gas", _GAS_EXISTS), ("stars", _STARS_EXISTS)) if comp in params.components]
        return pending_inputs(
            session,
            inputs_sql=(
                "SELECT COALESCE(src.parent_id, src.id) AS id FROM spectrum AS s JOIN source AS src ON src.id = s.source_id "
                f"WHERE {' OR '.join(f'({c})' for c in conditions)} GROUP BY 1 HAVING count(*) >= :min_points"
            ),
            result_table="rotation_fit", key_column="source_id",
            task=self.name, version=self.version, params_hash=params_hash, run_id=run_id, limit=limit,
            bind={"sources": list(params.line_sources), "min_points": params.min_points},
        )

    def upstream_runs(self, session: Session, input_ids: Sequence[int]) -> list[int]:
        """The runs whose lines and stellar kinematics ``load`` read for these galaxies."""
        return self._last_read.upstream_runs(
            input_ids, lambda: self.load(session, input_ids, self._params).upstream_run_ids
        )

    def model_files(self, params: BaseModel) -> dict[str, Path]:
        return {}

    def load(self, session: Session, input_ids: Sequence[int], params: BaseModel) -> RotationBatch:
        assert isinstance(params, RotationParams)
        ids = sorted(int(i) for i in input_ids)
        index = {sid: b for b, sid in enumerate(ids)}
        nb = len(ids)
        gal = {r.id: r for r in session.execute(text(_GALAXY_SQL), {"ids": ids})}
        gas: list[list[_Point]] = [[] for _ in ids]
        stars: list[list[_Point]] = [[] for _ in ids]
        used: set[int] = set()
        bind = {"ids": ids, "sources": list(params.line_sources)}
        if "gas" in params.components or "stars" in params.components:
            by_spectrum: dict[int, list[Any]] = {}
            for r in session.execute(text(GAS_SQL), bind):
                by_spectrum.setdefault(r.spectrum_id, []).append(r)
            for rows in by_spectrum.values():
                first = rows[0]
                b = index[first.galaxy_id]
                if "gas" in params.components:
                    r = _choose_gas(rows, params)
                    if r is not None:
                        used.add(r.run_id)
                        gas[b].append(_Point(first.spectrum_id, first.ra, first.dec, first.spec_z, r.z, r.velocity,
                                             r.velocity_err, r.sigma, r.flux))
                if "stars" in params.components:
                    for r in rows:
                        if r.line == STELLAR_LINE and (r.z is not None or r.velocity is not None):
                            used.add(r.run_id)
                            stars[b].append(_Point(first.spectrum_id, first.ra, first.dec, first.spec_z, r.z,
                                                   r.velocity, r.velocity_err, r.sigma, None))
        if "stars" in params.components:
            have = {p.spectrum_id for pts in stars for p in pts}
            for r in session.execute(text(STARS_SQL), {"ids": ids}):
                if r.spectrum_id in have or (r.z is None and r.velocity is None):
                    continue  # a fitted stellar velocity wins over a catalogue one only when there is none
                used.add(r.run_id)
                stars[index[r.galaxy_id]].append(
                    _Point(r.spectrum_id, r.ra, r.dec, r.spec_z, r.z, r.velocity, r.velocity_err, r.sigma, None)
                )

        ref_ra, ref_dec = np.full(nb, np.nan), np.full(nb, np.nan)
        z_gal, z_frame, psf = np.full(nb, np.nan), np.full(nb, np.nan), np.full(nb, np.nan)
        object_ids = []
        for b, sid in enumerate(ids):
            g = gal[sid]
            object_ids.append(g.object_id)
            pts = gas[b] + stars[b]
            if g.ra is not None and g.dec is not None:
                ref_ra[b], ref_dec[b] = g.ra, g.dec
            elif pts:
                # A galaxy known only as a parent name has no position: the mean of its points.
                ra = np.array([p.ra for p in pts])
                dec = np.array([p.dec for p in pts])
                ok = np.isfinite(ra) & np.isfinite(dec)
                if ok.any():
                    ang = np.radians(ra[ok])
                    ref_ra[b] = np.mod(np.degrees(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean())), 360.0)
                    ref_dec[b] = dec[ok].mean()
            if g.z is not None and math.isfinite(g.z):
                z_gal[b] = z_frame[b] = g.z
            else:
                zs = np.array([p.z for p in pts if math.isfinite(p.z)])
                if zs.size:
                    z_frame[b] = float(np.median(zs))
            if params.beam_smearing:
                psf[b] = _psf_fwhm(g.psf_meta, g.psf)
        batch = RotationBatch(ids, object_ids, ref_ra, ref_dec, z_gal, z_frame, psf)
        if "gas" in params.components:
            batch.components["gas"] = _pad(gas, ref_ra, ref_dec, z_frame)
        if "stars" in params.components:
            batch.components["stars"] = _pad(stars, ref_ra, ref_dec, z_frame)
        batch.upstream_run_ids = sorted(used)
        self._last_read.record(ids, batch.upstream_run_ids)
        self._params = params
        return batch

    # ----------------------------------------------------------------- numerics

    def compute(self, batch: RotationBatch, params: BaseModel, device: str, workers: int = 1) -> TaskOutput:
        assert isinstance(params, RotationParams)
        nb = len(batch.source_ids)
        rows: list[tuple[Any, ...]] = []
        ok_any = np.zeros(nb, dtype=bool)
        has_row = np.zeros(nb, dtype=bool)
        no_redshift = ~np.isfinite(batch.z_gal)
        for component in params.components:
            pts = batch.components.get(component)
            if pts is None:
                continue
            rows_of = np.nonzero(pts.n_rows > 0)[0]
            if rows_of.size == 0:
                continue
            data, sigma = self.tensors(batch, component, rows_of, device)
            configs = {model: params.fit_config(model) for model in params.models}
            fits = agree(data, {model: fit_disks(data, configs[model]) for model in params.models}, configs)
            for model in params.models:
                fit = fits[model]
                s0, s0e = dispersion_floor(fit, data.x, data.y, sigma, model, data.psf_fwhm)
                # errors (bootstrap): seeded by source id, so a galaxy's errors do not depend on its batch
                boot = None
                if params.bootstrap >= 2:
                    boot = bootstrap_disks(data, configs[model], fit, params.bootstrap,
                                           [batch.source_ids[b] for b in rows_of], params.bootstrap_block_fwhm)
                rows += rotation_rows(batch, component, model, fit, s0, s0e, rows_of, batch.psf_fwhm, no_redshift[rows_of],
                                      boot)
                ok_any[rows_of] |= (fit.flags.cpu().numpy() & _FAILED) == 0
            has_row[rows_of] = True
        for b in np.nonzero(~has_row)[0]:
            # No component had a single velocity row (cannot happen for a pending galaxy, but
            # an input must never stay pending forever): one empty flagged row.
            flags = int(DiskFlag.TOO_FEW_POINTS) | (int(DiskFlag.NO_REDSHIFT) if no_redshift[b] else 0)
            rows.append((batch.source_ids[b], params.components[0], params.models[0], _num(batch.z_gal[b]),
                         *[None] * 21, _num(batch.psf_fwhm[b]), None, 0, 0, flags, *[None] * 9))
        return TaskOutput(rows={"rotation_fit": rows}, n_inputs=nb, n_flagged=int(np.count_nonzero(~ok_any)))

    @staticmethod
    def tensors(batch: RotationBatch, component: str, rows_of: np.ndarray, device: str) -> tuple[DiskData, torch.Tensor]:
        """The :class:`DiskData` of one component for galaxies ``rows_of``, and the dispersions."""
        pts = batch.components[component]
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a[rows_of]), dtype=torch.float64, device=device)  # noqa: E731
        data = DiskData(
            x=t(pts.x), y=t(pts.y), v=t(pts.v), v_err=t(pts.v_err),
            mask=torch.as_tensor(pts.mask[rows_of], device=device), flux=t(pts.flux), psf_fwhm=t(batch.psf_fwhm),
        )
        return data, t(pts.sigma)

