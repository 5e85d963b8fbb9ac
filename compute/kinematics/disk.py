"""Thin rotating disks fitted to line-of-sight velocities, batched over galaxies.

The model is split by what it does: the rotation curves (``arctan``, ``freeman``) are in
:mod:`.rotation_curves`, the disk geometry and line-of-sight velocity field with its
beam smearing and analytic Jacobian in :mod:`.velocity_field`, the batch of
least-squares problems in :mod:`.disk_problem` and the starting values in
:mod:`.initial_guess`; this module holds the fit itself and re-exports the public
names of the others.

Every galaxy of a batch is one row of padded ``(B, N)`` arrays with a mask; the fit is a
Levenberg-Marquardt on a robust (soft-L1 or Cauchy) cost with an analytic Jacobian
(checked against forward-mode automatic differentiation in the tests).  The starts
come from the velocity field's symmetry (:mod:`.kinematic_pa`: kinematic centre, V_sys
and PA, Krajnovic et al. 2006): the kinematic PA and 90, 180 and 270 deg from it
(``pa_starts_deg``), each with every inclination of ``inc_starts_deg``, run as extra
batch rows (to convergence by default, or for ``prune_after`` iterations, after which
only the best start of each galaxy goes on); ``fit_disks(..., start=)`` fits from a
given geometry instead (another model's, :mod:`.model_agreement`);
rounds of clipping refit the galaxies whose points changed.  By default the iterations are in float32 and a float64 polish
follows (``DiskFitConfig.precision``); galaxies leave the batch as they converge.
Errors are the Gauss-Newton covariance of the surviving points scaled by the reduced
chi^2 where it is above 1.  Beam smearing, when a PSF is given, is modelled on the data's
pixel grid where the points are the pixels of a map (the disk convolved with the PSF and
averaged over each pixel, weighted by the observed line flux: :mod:`.beam_grid`), and for
scattered points by evaluating the disk on a 5 x 5 Gauss-Hermite stencil of the Gaussian
PSF around each point, weighted by an exponential surface brightness (see
:func:`los_velocity`).  A batch mixing both is fitted as two batches.

The fit's PA ending more than max(10 deg, 3 sigma) from the kinematic PA is flagged
PA_KIN_DISAGREES; :attr:`DiskFit.cost` (robust cost of every usable point) lets
solutions of the same data be compared whatever points each rejected.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from .beam_grid import PixelGrid, detect_grids, grid_moments
from .disk_problem import _Points
from .initial_guess import _flux_scale, _initial
from .kinematic_pa import KinematicGeometry
from .robust_lm import TOL32, TOL64, Tolerance, cost_of, levenberg_marquardt
from .rotation_curves import FREEMAN_Y_PEAK, Model, rotation_curve
from .velocity_field import (
    PARAMS,
    disk_coordinates,
    jacobian_forward_ad,
    los_velocity,
    los_velocity_jacobian,
    stencil_moments,
)

__all__ = [
    "C_KMS",
    "DiskData",
    "DiskFitConfig",
    "DiskFit",
    "DiskFlag",
    "DISK_FLAG_DOCS",
    "FREEMAN_Y_PEAK",
    "PARAMS",
    "disk_coordinates",
    "fit_disks",
    "jacobian_forward_ad",
    "los_velocity",
    "los_velocity_jacobian",
    "rotation_curve",
]

C_KMS = 299_792.458


class DiskFlag(enum.IntFlag):
    """Bits of ``rotation_fit.flags``."""

    TOO_FEW_POINTS = 1 << 0
    NEAR_FACE_ON = 1 << 1
    TURNOVER_UNCONSTRAINED = 1 << 2
    AT_BOUND = 1 << 3
    NOT_CONVERGED = 1 << 4
    FIT_FAILED = 1 << 5
    NO_REDSHIFT = 1 << 6
    MANY_OUTLIERS = 1 << 7
    MODELS_DISAGREE = 1 << 8
    PA_KIN_DISAGREES = 1 << 9
    BEAM_DOMINATED = 1 << 10
    TURNOVER_UNRESOLVED = 1 << 11
    # errors (bootstrap, :mod:`.bootstrap`)
    ERRORS_UNDERESTIMATED = 1 << 12
    BOOTSTRAP_UNRELIABLE = 1 << 13


DISK_FLAG_DOCS = {
    "TOO_FEW_POINTS": "Fewer usable points (finite velocity and position) than min_points: no fit, values NULL",
    "NEAR_FACE_ON": "Inclination below face_on_deg: V_max and inclination are degenerate (only V_max sin i is measured)",
    "TURNOVER_UNCONSTRAINED": "r_turn beyond 0.8 of the outermost point, or its relative error above 0.5: the curve "
    "does not turn over inside the data: V_max is poorly constrained, and so are the centre along the major axis "
    "and V_sys, which trade off against each other on a field that only rises",
    "AT_BOUND": "A parameter (centre, inclination, r_turn) ended at a bound of the fit",
    "NOT_CONVERGED": "Levenberg-Marquardt reached its iteration limit",
    "FIT_FAILED": "The fit produced non-finite numbers: values NULL",
    "NO_REDSHIFT": "The galaxy has no redshift: velocities are relative to the median redshift of its points, "
    "vsys is relative to that, and no kpc values are given",
    "MANY_OUTLIERS": "More than 20 % of the points were rejected as outliers",
    "MODELS_DISAGREE": "The rotation-curve models of this galaxy and component found different geometries, each "
    "refitted from the other's: PAs differ by more than max(10 deg, 3 sigma), inclinations by more than "
    "max(15 deg, 3 sigma) or V_sys by more than max(20 km/s, 3 sigma) (sigma: the two errors in quadrature)",
    "PA_KIN_DISAGREES": "The fitted PA is more than max(10 deg, 3 pa_kin_err) from the kinematic PA of the "
    "velocity field (pa_kin, from its symmetry): the disk model and the field's symmetry disagree",
    "BEAM_DOMINATED": "The PSF FWHM is larger than the outermost deprojected radius of the kept points: the whole "
    "map is within about a beam, and V_max, inclination and r_turn rest on the PSF model",
    "TURNOVER_UNRESOLVED": "The PSF FWHM is larger than 2 r_turn: the rise of the curve is inside the beam, so r_turn "
    "(and V_max where the curve has not flattened inside the data) rest on the PSF model",
    "ERRORS_UNDERESTIMATED": "The block-bootstrap error of PA, inclination or V_max is more than twice its curvature "
    "error: the points are correlated (PSF) or the model misses structure; use the *_err_boot columns",
    "BOOTSTRAP_UNRELIABLE": "Fewer than 10 independent cells (PSF-sized blocks, or points without a PSF) or fewer than "
    "half the resamples fitted: the bootstrap errors are themselves uncertain by more than ~30 %",
}
_FAILED = DiskFlag.TOO_FEW_POINTS | DiskFlag.FIT_FAILED


@dataclass
class DiskData:
    """Points of B galaxies, padded to N; offsets in arcsec from each galaxy's reference."""

    x: torch.Tensor  # (B, N) east offset, arcsec
    y: torch.Tensor  # (B, N) north offset, arcsec
    v: torch.Tensor  # (B, N) line-of-sight velocity, km/s, common frame per galaxy
    v_err: torch.Tensor  # (B, N) km/s, NaN = unknown
    mask: torch.Tensor  # (B, N) bool: a real, usable point
    flux: torch.Tensor | None = None  # (B, N) surface brightness (any unit), NaN = unknown
    psf_fwhm: torch.Tensor | None = None  # (B,) arcsec, 0 or NaN = no beam smearing

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class DiskFitConfig:
    model: Model = "arctan"
    min_points: int = 10
    error_floor: float = 5.0  # km/s added in quadrature to every velocity error
    loss: Literal["soft_l1", "cauchy", "linear"] = "soft_l1"
    clip_sigma: float = 4.0  # points beyond this many robust sigmas are rejected
    clip_rounds: int = 2
    max_iter: int = 60
    #: "mixed" (float64 data): the Levenberg-Marquardt iterations and the clipping in
    #: float32, then a float64 polish from that optimum and float64 errors; with the
    #: robust losses results agree with "double" (every iteration in the data's
    #: precision) to a few hundredths of their errors at most
    precision: Literal["mixed", "double"] = "mixed"
    #: iterations after which only the lowest-cost inclination start of each galaxy goes
    #: on (0: every start runs to convergence and the best is kept). Off by default: it
    #: saves only ~25 % of the CPU time, and a start that is behind after a few
    #: iterations can still be the one that wins on a messy real velocity field.
    prune_after: int = 0
    inc_starts_deg: tuple[float, ...] = (30.0, 50.0, 70.0)
    #: PA starts, offsets (deg) from the kinematic PA of the field, each combined with
    #: every inclination start: on a patchy, beam-smeared map a start at the estimate
    #: alone can end in a minimum with the PA far off
    pa_starts_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    #: fitted PA this far (deg, or 3 pa_kin_err if more) from the kinematic PA: PA_KIN_DISAGREES
    pa_kin_limit_deg: float = 10.0
    inc_bounds_deg: tuple[float, float] = (3.0, 87.0)
    face_on_deg: float = 20.0
    vmax_limit: float = 1500.0  # km/s
    r_turn_min: float = 0.02  # arcsec
    #: beam smearing (with a PSF): "grid" convolves the model on the pixel grid of galaxies
    #: whose points are map pixels and uses the stencil for the others; "stencil" always
    #: uses the Gauss-Hermite stencil (the model before the grid convolution)
    beam_model: Literal["grid", "stencil"] = "grid"
    #: surface brightness weighting the grid convolution: the observed line-flux map where
    #: fluxes exist ("map"), or only the exponential fitted to them ("exponential")
    beam_flux: Literal["map", "exponential"] = "map"


@dataclass
class DiskFit:
    """Per galaxy: parameters (PA in [0, 2 pi), V_max >= 0), covariance, fit statistics."""

    theta: torch.Tensor  # (B, 7) in PARAMS order
    cov: torch.Tensor  # (B, 7, 7), NaN where not defined
    chi2: torch.Tensor  # (B,) reduced chi^2 of the kept points
    n_points: torch.Tensor  # (B,) points kept
    n_rejected: torch.Tensor  # (B,) points rejected as outliers
    r_max: torch.Tensor  # (B,) outermost deprojected radius of the kept points, arcsec
    flags: torch.Tensor  # (B,) int64 DiskFlag bits
    kept: torch.Tensor  # (B, N) bool
    flux_scale: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (B,) arcsec, inf = uniform
    #: (B,) highest rotation speed of the beam-smeared model near the major axis (see
    #: :func:`_observed_curve`), km/s; equals the intrinsic curve's at the data without a PSF
    vmax_obs: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    #: (B, N) dispersion beam-smeared rotation adds at each point, km/s (0 without a PSF)
    sigma_beam: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    #: (B,) bool: beam smearing modelled on the pixel grid (else the stencil, or none)
    beam_grid: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    #: (B,) robust cost of every usable point (kept or not) at theta: compares solutions
    #: of the same data and model, whatever points each one rejected
    cost: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    pa_kin: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (B,) radians, kinematic PA of the field
    pa_kin_err: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (B,) radians

    @property
    def errors(self) -> torch.Tensor:
        return torch.sqrt(torch.diagonal(self.cov, dim1=-2, dim2=-1))

    def take(self, rows: torch.Tensor) -> DiskFit:
        """The fits of galaxies ``rows`` (per-galaxy tensors indexed, others kept)."""
        nb = self.theta.shape[0]
        pick = lambda t: t[rows] if t.numel() and t.shape[0] == nb else t  # noqa: E731
        return DiskFit(**{name: pick(getattr(self, name)) for name in self.__dataclass_fields__})


# --------------------------------------------------------------------------- fit


#: at most this many float64 steps after the float32 iterations (precision "mixed")
_POLISH_STEPS = 4


@dataclass
class _Batch:
    """A batch as the fit sees it: the usable points (zero elsewhere), their errors with
    the floor, the bounds of the parameters, and the precision the iterations run in."""

    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor
    sigma: torch.Tensor
    mask: torch.Tensor  # (B, N) usable points: finite and in data.mask
    n0: torch.Tensor  # (B,) usable points
    enough: torch.Tensor  # (B,) enough of them to fit
    psf_sigma: torch.Tensor | None
    flux_scale: torch.Tensor
    on_grid: torch.Tensor  # (B,) bool: the rows of ``grid``
    grid: PixelGrid | None  # the pixel grids, when every row is on one
    lower: torch.Tensor  # (B, 7) in the data's precision
    upper: torch.Tensor
    work: torch.dtype
    tol: Tolerance
    model: Model
    base: torch.Tensor  # starting parameters, see :func:`~.initial_guess._initial`
    geo: KinematicGeometry

    @property
    def fitted(self) -> torch.Tensor:
        """(B, N): the usable points of the galaxies that are fitted."""
        return self.mask & self.enough.unsqueeze(-1)

    def points(self, rows_mask: torch.Tensor, dtype: torch.dtype) -> _Points:
        return _Points.build(self.x, self.y, self.v, self.sigma, rows_mask, self.model, self.psf_sigma,
                             self.flux_scale, dtype, self.grid)  # fmt: skip


def _prepare(data: DiskData, config: DiskFitConfig) -> _Batch:
    """The usable points of ``data``, the parameter bounds, the working precision and the
    starting parameters."""
    nb = data.x.shape[0]
    dt, dev = data.x.dtype, data.x.device
    finite = torch.isfinite(data.x) & torch.isfinite(data.y) & torch.isfinite(data.v)
    mask = data.mask & finite
    n0 = mask.sum(-1)
    enough = n0 >= max(config.min_points, len(PARAMS) + 1)
    x = torch.where(mask, data.x, torch.zeros_like(data.x))
    y = torch.where(mask, data.y, torch.zeros_like(data.y))
    v = torch.where(mask, data.v, torch.zeros_like(data.v))
    err = torch.where(mask & torch.isfinite(data.v_err), data.v_err, torch.zeros_like(data.v))
    sigma = torch.sqrt(err**2 + config.error_floor**2)
    clean = DiskData(x, y, v, err, mask, data.flux, data.psf_fwhm)

    psf_sigma = None
    if data.psf_fwhm is not None:
        psf_sigma = torch.nan_to_num(data.psf_fwhm.to(dt), nan=0.0).clamp_min(0.0) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    flux_scale = _flux_scale(clean, mask)
    on_grid = torch.zeros(nb, dtype=torch.bool, device=dev)
    grid = None
    if psf_sigma is not None and config.beam_model == "grid":
        on_grid, grid = detect_grids(x, y, mask, psf_sigma, data.flux, flux_scale, config.beam_flux == "map")
        if not bool(on_grid.all()):
            grid = None  # a mixed batch is split by fit_disks

    r_sky = torch.sqrt(x**2 + y**2)
    r_extent = torch.where(mask, r_sky, torch.zeros_like(r_sky)).amax(-1).clamp_min(0.1)
    lo_inc, hi_inc = (math.radians(a) for a in config.inc_bounds_deg)
    big = torch.full((nb,), 1e9, dtype=dt, device=dev)
    lower = torch.stack([-r_extent, -r_extent, -big, torch.full_like(big, lo_inc), -big,
                         -torch.full_like(big, config.vmax_limit), torch.full_like(big, config.r_turn_min)], -1)
    upper = torch.stack([r_extent, r_extent, big, torch.full_like(big, hi_inc), big,
                         torch.full_like(big, config.vmax_limit), 10.0 * r_extent], -1)

    # The iterations run in ``work`` precision (float32 by default: half the memory
    # traffic, and atan/sqrt vectorised twice as wide); a polish after the clipping and
    # the covariance are in the data's precision.
    work = torch.float32 if config.precision == "mixed" and dt == torch.float64 else dt
    tol = TOL32 if work == torch.float32 else TOL64
    base, geo = _initial(clean, mask, config)
    base[:, :2] = torch.minimum(torch.maximum(base[:, :2], 0.9 * lower[:, :2]), 0.9 * upper[:, :2])
    return _Batch(x, y, v, sigma, mask, n0, enough, psf_sigma, flux_scale, on_grid, grid, lower, upper, work, tol,
                  config.model, base, geo)  # fmt: skip


def _starts(b: _Batch, config: DiskFitConfig, start: torch.Tensor | None) -> list[torch.Tensor]:
    """The starting parameters, one ``(B, 7)`` per start: every PA offset of
    ``pa_starts_deg`` from the kinematic PA with every inclination of ``inc_starts_deg``;
    with ``start``, the geometry (x0, y0, PA, inclination, V_sys) given per galaxy."""
    if start is not None:
        th = b.base.clone()
        given = torch.isfinite(start[:, :5]).all(-1)
        th[:, :5] = torch.where(given.unsqueeze(-1), start[:, :5].to(th.dtype), th[:, :5])
        th[:, 3] = torch.where(given, th[:, 3], torch.full_like(th[:, 3], math.radians(50.0)))
        th[:, 3] = torch.minimum(torch.maximum(th[:, 3], b.lower[:, 3]), b.upper[:, 3])
        th[:, 5] = b.base[:, 5] / torch.sin(th[:, 3])
        return [th]
    starts = []
    for pa_deg in config.pa_starts_deg:
        for inc_deg in config.inc_starts_deg:
            th = b.base.clone()
            th[:, 2] = b.base[:, 2] + math.radians(pa_deg)
            th[:, 3] = math.radians(inc_deg)
            th[:, 5] = b.base[:, 5] / math.sin(math.radians(inc_deg))
            starts.append(th)
    return starts


def _fit_from_starts(
    b: _Batch, config: DiskFitConfig, start: torch.Tensor | None = None
) -> tuple[_Points, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the points of the fitted galaxies in working precision, theta, converged, LM
    damping) of the best start of each galaxy, iterated to convergence."""
    nb = b.x.shape[0]
    lower_w, upper_w = b.lower.to(b.work), b.upper.to(b.work)
    # Several starts per galaxy (PA x inclination), as extra rows of one batch; after
    # ``prune_after`` iterations only the best start of each galaxy goes on.
    starts = _starts(b, config, start)
    ns = len(starts)
    every = torch.arange(nb, device=b.x.device)
    first_iter = config.max_iter if config.prune_after <= 0 else min(config.prune_after, config.max_iter)
    pts = b.points(b.fitted, b.work)
    if ns > 1:
        rep = lambda t: None if t is None else t.repeat((ns,) + (1,) * (t.dim() - 1))  # noqa: E731
        pts_all = _Points(rep(pts.x), rep(pts.y), rep(pts.v), rep(pts.w), pts.model, rep(pts.psf_sigma),
                          rep(pts.flux_scale), None if pts.grid is None else pts.grid.repeat(ns), pts.scratch)  # fmt: skip
        theta_all, cost_all, conv_all, lam_all = levenberg_marquardt(
            pts_all, torch.cat(starts, 0).to(b.work), rep(lower_w), rep(upper_w), config.loss, first_iter, b.tol
        )
        cost_all = torch.where(torch.isfinite(cost_all), cost_all, torch.full_like(cost_all, float("inf")))
        pick = cost_all.view(ns, nb).argmin(0) * nb + every
        theta, cost, converged, lam = theta_all[pick], cost_all[pick], conv_all[pick], lam_all[pick]
    else:
        theta, cost, converged, lam = levenberg_marquardt(pts, starts[0].to(b.work), lower_w, upper_w, config.loss,
                                                           first_iter, b.tol)  # fmt: skip
    if first_iter < config.max_iter:
        # The best start goes on as it was (reweighted least squares): a start can still
        # be far from the optimum here, where the curvature weights of the later stages
        # take rejected steps and, from a bad start, can stall.
        go_on = (~converged).nonzero().squeeze(-1)
        if go_on.numel():
            theta[go_on], _, converged[go_on], lam[go_on] = levenberg_marquardt(
                pts.take(go_on), theta[go_on], lower_w[go_on], upper_w[go_on], config.loss,
                config.max_iter - first_iter, b.tol, lam[go_on],
            )
    return pts, theta, converged, lam


def _clip_outliers(
    b: _Batch, config: DiskFitConfig, pts: _Points, theta: torch.Tensor, converged: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """Rounds of clipping; the galaxies whose points changed are refitted, updating
    ``theta``, ``converged`` and ``lam`` in place.  Returns the kept points ``(B, N)``."""
    lower_w, upper_w = b.lower.to(b.work), b.upper.to(b.work)
    kept = b.fitted
    for _ in range(config.clip_rounds):
        with torch.no_grad():
            z = pts.residuals(theta)
        # Robust scale of the normalised residuals (MAD), so clipping adapts to
        # underestimated errors and to non-circular motions.
        zabs = torch.where(kept, z.abs(), torch.full_like(z, float("nan")))
        mad = torch.nan_to_num(torch.nanmedian(zabs, dim=-1).values * 1.4826, nan=1.0).clamp_min(1.0)
        new_kept = kept & (z.abs() <= config.clip_sigma * mad.unsqueeze(-1))
        new_kept = torch.where((new_kept.sum(-1) >= len(PARAMS) + 1).unsqueeze(-1), new_kept, kept)
        # Only galaxies whose points changed are refitted (the others are at their
        # optimum), from their optimum, so with the curvature weights (two or three steps).
        changed = (new_kept != kept).any(-1).nonzero().squeeze(-1)
        if changed.numel() == 0:
            break
        kept = new_kept
        theta[changed], _, converged[changed], lam[changed] = levenberg_marquardt(
            b.points(kept, b.work).take(changed), theta[changed], lower_w[changed], upper_w[changed],
            config.loss, config.max_iter, b.tol, lam[changed], curvature=True,
        )
    return kept


def _covariance(b: _Batch, kept: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(covariance ``(B, 7, 7)``, reduced chi^2, points kept) at the optimum ``theta``."""
    dt = b.x.dtype
    # Errors: Gauss-Newton covariance of the kept points, scaled by the reduced chi^2 when
    # it exceeds 1. Below 1 the error floor (non-circular motions) dominates the point
    # errors, and scaling down by it would shrink the errors below the real scatter.
    final = b.points(kept, dt)
    h = final.normal_equations(theta, None)[0].to(dt)
    z = final.residuals(theta)
    n_kept = kept.sum(-1)
    dof = (n_kept - len(PARAMS)).clamp_min(1)
    chi2 = (z * z).sum(-1) / dof
    cov, info = torch.linalg.inv_ex(h)
    cov = torch.where((info == 0).view(-1, 1, 1), cov, torch.full_like(cov, float("nan"))) * chi2.clamp_min(1.0).view(-1, 1, 1)
    return cov, chi2, n_kept


def _pinned(b: _Batch, theta: torch.Tensor) -> torch.Tensor:
    """(B, 7): parameters pinned at a bound, which have no meaningful curvature error."""
    lower, upper = b.lower, b.upper
    at_low = theta <= lower + 1e-6 * (upper - lower).abs().clamp_max(1.0)
    at_high = theta >= upper - 1e-6 * (upper - lower).abs().clamp_max(1.0)
    pinned = at_low | at_high
    pinned[:, 5] = False  # vmax bounds are only a safety net: being there is a failure below
    pinned[:, 2] = False
    pinned[:, 4] = False
    return pinned


def _canonical(theta: torch.Tensor) -> torch.Tensor:
    """Canonical form: V_max >= 0 (the receding side defines PA), PA in [0, 2 pi)."""
    flip = theta[:, 5] < 0
    theta = theta.clone()
    theta[:, 5] = theta[:, 5].abs()
    theta[:, 2] = torch.remainder(theta[:, 2] + flip.to(theta.dtype) * math.pi, 2 * math.pi)
    return theta


def _subset(data: DiskData, rows: torch.Tensor) -> DiskData:
    pick = lambda t: None if t is None else t[rows]  # noqa: E731
    return DiskData(data.x[rows], data.y[rows], data.v[rows], data.v_err[rows], data.mask[rows], pick(data.flux),
                    pick(data.psf_fwhm))  # fmt: skip


def _merge(nb: int, parts: list[tuple[torch.Tensor, DiskFit]]) -> DiskFit:
    """One :class:`DiskFit` of ``nb`` rows from fits of the rows ``idx`` of each part."""
    first = parts[0][1]
    out = {}
    for name in DiskFit.__dataclass_fields__:
        t0 = getattr(first, name)
        whole = t0.new_zeros((nb, *t0.shape[1:]))
        for idx, fit in parts:
            whole[idx] = getattr(fit, name)
        out[name] = whole
    return DiskFit(**out)


def _observed_curve(
    b: _Batch, theta: torch.Tensor, kept: torch.Tensor, grid: PixelGrid | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(vmax_obs ``(B,)``, sigma_beam ``(B, N)``) of the fitted disk ``theta`` (canonical).

    vmax_obs: the largest |V_obs - V_sys| / (sin i |cos phi|) over the kept points within
    20 degrees (in the disk plane) of the major axis, V_obs the beam-smeared model (the
    grid or the stencil one the fit used): the rotation speed one would read off the map
    without modelling the PSF; NaN without such points.  sigma_beam: the dispersion that
    the PSF adds by mixing velocities, from the same convolution."""
    with torch.no_grad():
        th = torch.nan_to_num(theta)
        if grid is not None:
            vobs, sbeam = grid_moments(th, grid.to(th.dtype), b.model)
        else:
            vobs, sbeam = stencil_moments(th, b.x, b.y, b.model, b.psf_sigma, b.flux_scale)
        radius, a, _ = disk_coordinates(th, b.x, b.y)
        cos_phi = (a / radius).abs()
        near = kept & (cos_phi >= math.cos(math.radians(20.0)))
        speed = (vobs - th[:, 4:5]).abs() / (torch.sin(th[:, 3:4]) * cos_phi).clamp_min(1e-6)
        speed = torch.where(near, speed, torch.full_like(speed, -1.0))
        vmax_obs = speed.amax(-1)
    return torch.where(vmax_obs >= 0, vmax_obs, torch.full_like(vmax_obs, float("nan"))), sbeam


def fit_disks(data: DiskData, config: DiskFitConfig, start: torch.Tensor | None = None) -> DiskFit:
    """Fit one disk per galaxy of ``data`` (see the module docstring).

    ``start`` ``(B, 7)``, optional: fit from this geometry (x0, y0, PA, inclination, V_sys;
    the rest is ignored) instead of the starts of ``config``, e.g. another model's
    optimum; rows with a NaN there use the kinematic estimate and 50 deg.
    """
    nan = float("nan")
    b = _prepare(data, config)
    if bool(b.on_grid.any()) and not bool(b.on_grid.all()):
        # Map galaxies get the grid convolution, scattered points the stencil: two batches.
        on, off = b.on_grid.nonzero().squeeze(-1), (~b.on_grid).nonzero().squeeze(-1)
        part = lambda rows: None if start is None else start[rows]  # noqa: E731
        return _merge(b.x.shape[0], [(on, fit_disks(_subset(data, on), config, part(on))),
                                      (off, fit_disks(_subset(data, off), config, part(off)))])  # fmt: skip
    dt = b.x.dtype
    pts, theta, converged, lam = _fit_from_starts(b, config, start)
    kept = _clip_outliers(b, config, pts, theta, converged, lam)
    theta = theta.to(dt)
    if b.work != dt:
        # Polish in full precision from the float32 optimum: one or two steps for nearly
        # every galaxy.  Capped, because in the flat inclination-V_max valley of nearly
        # face-on discs the float64 tolerance can take tens of steps that move the values
        # by a small fraction of their (large) errors; convergence is the float32 one.
        theta, _, _, _ = levenberg_marquardt(b.points(kept, dt), theta, b.lower, b.upper, config.loss,
                                              _POLISH_STEPS, TOL64, curvature=True)  # fmt: skip

    cov, chi2, n_kept = _covariance(b, kept, theta)
    every = b.points(b.fitted, dt)
    cost = cost_of(every.residuals(theta), config.loss)
    pinned = _pinned(b, theta)
    theta = _canonical(theta)

    radius, _, _ = disk_coordinates(theta, b.x, b.y)
    r_max = torch.where(kept, radius, torch.zeros_like(radius)).amax(-1)
    errs = torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))

    enough = b.enough
    flags = torch.zeros(b.x.shape[0], dtype=torch.int64, device=b.x.device)
    flags |= torch.where(~enough, int(DiskFlag.TOO_FEW_POINTS), 0)
    flags |= torch.where(theta[:, 3] < math.radians(config.face_on_deg), int(DiskFlag.NEAR_FACE_ON), 0)
    rt, rt_err = theta[:, 6], errs[:, 6]
    unconstrained = (rt > 0.8 * r_max) | ~torch.isfinite(rt_err) | (rt_err > 0.5 * rt)
    flags |= torch.where(unconstrained, int(DiskFlag.TURNOVER_UNCONSTRAINED), 0)
    flags |= torch.where(pinned.any(-1) | (theta[:, 5] >= config.vmax_limit * (1 - 1e-6)), int(DiskFlag.AT_BOUND), 0)
    flags |= torch.where(~converged, int(DiskFlag.NOT_CONVERGED), 0)
    n_rej = b.fitted.sum(-1) - n_kept
    flags |= torch.where(n_rej > 0.2 * b.n0, int(DiskFlag.MANY_OUTLIERS), 0)
    pa_kin, pa_kin_err = b.geo.pa, b.geo.pa_err
    off = torch.remainder(theta[:, 2] - pa_kin + math.pi, 2 * math.pi) - math.pi
    limit = torch.clamp_min(3.0 * pa_kin_err, math.radians(config.pa_kin_limit_deg))
    flags |= torch.where(torch.isfinite(off) & (off.abs() > limit), int(DiskFlag.PA_KIN_DISAGREES), 0)
    bad = ~torch.isfinite(theta).all(-1) | ~torch.isfinite(chi2)
    flags |= torch.where(bad & enough, int(DiskFlag.FIT_FAILED), 0)
    if b.psf_sigma is not None:
        fwhm = b.psf_sigma * (2.0 * math.sqrt(2.0 * math.log(2.0)))
        flags |= torch.where((fwhm > 0) & (fwhm > r_max), int(DiskFlag.BEAM_DOMINATED), 0)
        flags |= torch.where((fwhm > 0) & (fwhm > 2.0 * rt), int(DiskFlag.TURNOVER_UNRESOLVED), 0)
    vmax_obs, sigma_beam = _observed_curve(b, theta, kept, b.grid)
    failed = (flags & int(_FAILED)) != 0
    theta = torch.where(failed.unsqueeze(-1), torch.full_like(theta, nan), theta)
    cov = torch.where(failed.view(-1, 1, 1) | pinned.unsqueeze(-1) | pinned.unsqueeze(-2), torch.full_like(cov, nan), cov)
    chi2 = torch.where(failed, torch.full_like(chi2, nan), chi2)
    cost = torch.where(failed | ~torch.isfinite(cost), torch.full_like(cost, float("inf")), cost)
    pa_kin = torch.where(failed, torch.full_like(pa_kin, nan), pa_kin)  # as every value of a failed fit
    pa_kin_err = torch.where(failed, torch.full_like(pa_kin_err, nan), pa_kin_err)
    r_max = torch.where(failed, torch.full_like(r_max, nan), r_max)
    vmax_obs = torch.where(failed, torch.full_like(vmax_obs, nan), vmax_obs)
    return DiskFit(theta, cov, chi2, torch.where(failed, 0, n_kept), torch.where(failed, 0, n_rej), r_max, flags,
                   kept & ~failed.unsqueeze(-1), flux_scale=b.flux_scale, vmax_obs=vmax_obs, sigma_beam=sigma_beam,
                   beam_grid=b.on_grid.clone(), cost=cost, pa_kin=pa_kin, pa_kin_err=pa_kin_err)  # fmt: skip
