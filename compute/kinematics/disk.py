"""Thin rotating disks fitted to line-of-sight velocities, batched over galaxies.

Geometry (the convention of :mod:`skyledger.testing.survey_files`): a point at sky offsets
(x east, y north; arcsec) from the disk centre (x0, y0) has major-axis coordinate
a = dx sin PA + dy cos PA and minor-axis coordinate b = -dx cos PA + dy sin PA, PA being
the position angle of the *receding* major axis, north through east.  Its deprojected
radius is R = sqrt(a^2 + (b / cos i)^2) and its line-of-sight velocity

    V = V_sys + V_rot(R) sin i (a / R).

Rotation curves (``vmax`` and ``r_turn`` mean different things per model):

* ``arctan``: V_rot = (2 / pi) V_max arctan(R / r_turn) (Courteau 1997); V_max is the
  asymptotic speed, r_turn the turnover radius.
* ``freeman``: the exponential thin disk of Freeman (1970),
  V_rot^2 proportional to y^2 [I0(y) K0(y) - I1(y) K1(y)] with y = R / (2 R_d); V_max is
  the peak speed and r_turn the radius of the peak, 2.15 R_d.

Every galaxy of a batch is one row of padded ``(B, N)`` arrays with a mask; the fit is a
Levenberg-Marquardt on a robust (soft-L1 or Cauchy) cost with an analytic Jacobian
(checked against forward-mode automatic differentiation in the tests).  Several
inclination starts per galaxy run as extra batch rows (to convergence by default, or
for ``prune_after`` iterations, after which only the best start of each galaxy goes on);
rounds of clipping refit the galaxies whose points changed.  By default the iterations are in float32 and a float64 polish
follows (``DiskFitConfig.precision``); galaxies leave the batch as they converge.
Errors are the Gauss-Newton covariance of the surviving points scaled by the reduced
chi^2 where it is above 1.  Beam smearing, when a PSF is given, is modelled by evaluating the disk on a
5 x 5 Gauss-Hermite stencil of the Gaussian PSF around each point and averaging the
velocities weighted by an exponential surface brightness (see :func:`los_velocity`).

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from .robust_lm import TOL32, TOL64, cost_of, levenberg_marquardt, weight_factors

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
#: the fitted parameters, in this order: centre offsets (arcsec), PA and inclination
#: (radians), systemic velocity, V_max (km/s), r_turn (arcsec)
PARAMS = ("x0", "y0", "pa", "inc", "vsys", "vmax", "r_turn")
#: y = R / (2 R_d) at the peak of the Freeman curve (R = 2.15 R_d); d/dy of the curve
#: vanishes there (checked in the tests)
FREEMAN_Y_PEAK = 1.07503

Model = Literal["arctan", "freeman"]


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


DISK_FLAG_DOCS = {
    "TOO_FEW_POINTS": "Fewer usable points (finite velocity and position) than min_points: no fit, values NULL",
    "NEAR_FACE_ON": "Inclination below face_on_deg: V_max and inclination are degenerate (only V_max sin i is measured)",
    "TURNOVER_UNCONSTRAINED": "r_turn beyond 0.8 of the outermost point, or its relative error above 0.5: the curve "
    "does not turn over inside the data",
    "AT_BOUND": "A parameter (centre, inclination, r_turn) ended at a bound of the fit",
    "NOT_CONVERGED": "Levenberg-Marquardt reached its iteration limit",
    "FIT_FAILED": "The fit produced non-finite numbers: values NULL",
    "NO_REDSHIFT": "The galaxy has no redshift: velocities are relative to the median redshift of its points, "
    "vsys is relative to that, and no kpc values are given",
    "MANY_OUTLIERS": "More than 20 % of the points were rejected as outliers",
}
_FAILED = DiskFlag.TOO_FEW_POINTS | DiskFlag.FIT_FAILED

# Probabilists' Gauss-Hermite nodes for a unit Gaussian: a 5 x 5 product stencil is exact
# for polynomials of degree 9 in each direction, plenty for a smooth velocity field.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(5)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


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
    inc_bounds_deg: tuple[float, float] = (3.0, 87.0)
    face_on_deg: float = 20.0
    vmax_limit: float = 1500.0  # km/s
    r_turn_min: float = 0.02  # arcsec


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

    @property
    def errors(self) -> torch.Tensor:
        return torch.sqrt(torch.diagonal(self.cov, dim1=-2, dim2=-1))


# --------------------------------------------------------------------------- model


def _freeman_g(y: torch.Tensor) -> torch.Tensor:
    """y^2 [I0 K0 - I1 K1]; the exponentials of the scaled Bessel functions cancel."""
    i0, i1 = torch.special.i0e(y), torch.special.i1e(y)
    k0, k1 = torch.special.scaled_modified_bessel_k0(y), torch.special.scaled_modified_bessel_k1(y)
    return y * y * (i0 * k0 - i1 * k1)


def _freeman_dg(y: torch.Tensor) -> torch.Tensor:
    """d/dy of y^2 [I0 K0 - I1 K1] = 2 y I0 K0 + 2 y^2 (I1 K0 - I0 K1), from I0' = I1,
    K0' = -K1, I1' = I0 - I1 / y, K1' = -K0 - K1 / y."""
    i0, i1 = torch.special.i0e(y), torch.special.i1e(y)
    k0, k1 = torch.special.scaled_modified_bessel_k0(y), torch.special.scaled_modified_bessel_k1(y)
    return 2 * y * i0 * k0 + 2 * y * y * (i1 * k0 - i0 * k1)


class _FreemanG(torch.autograd.Function):
    # torch has no derivative of K0/K1; the analytic one serves both AD modes.
    @staticmethod
    def forward(y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _freeman_g(y)

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[no-untyped-def]
        (y,) = inputs
        ctx.save_for_backward(y)
        ctx.save_for_forward(y)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        (y,) = ctx.saved_tensors
        return grad * _freeman_dg(y)

    @staticmethod
    def jvp(ctx, tangent):  # type: ignore[no-untyped-def]
        (y,) = ctx.saved_tensors
        return tangent * _freeman_dg(y)


_FREEMAN_G_PEAK = float(_freeman_g(torch.tensor(FREEMAN_Y_PEAK, dtype=torch.float64)))


def rotation_curve(radius: torch.Tensor, vmax: torch.Tensor, r_turn: torch.Tensor, model: Model) -> torch.Tensor:
    """Circular speed at deprojected ``radius`` (same unit as ``r_turn``)."""
    if model == "arctan":
        return (2.0 / math.pi) * vmax * torch.atan(radius / r_turn)
    if model == "freeman":
        y = (FREEMAN_Y_PEAK * radius / r_turn).clamp_min(1e-8)
        return vmax * torch.sqrt(_FreemanG.apply(y).clamp_min(0.0) / _FREEMAN_G_PEAK)
    raise ValueError(f"unknown rotation-curve model {model!r}; use arctan or freeman")


def disk_coordinates(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(deprojected radius, major-axis a, minor-axis b) of points; theta ``(B, 7)``, x/y ``(B, N, ...)``."""
    extra = x.dim() - 2
    x0, y0, pa, inc = (theta[:, k].reshape(-1, 1, *([1] * extra)) for k in range(4))
    dx, dy = x - x0, y - y0
    s, c = torch.sin(pa), torch.cos(pa)
    a = dx * s + dy * c
    b = -dx * c + dy * s
    # The tiny offset keeps R and a / R differentiable at the centre itself.
    radius = torch.sqrt(a * a + (b / torch.cos(inc)) ** 2 + 1e-12)
    return radius, a, b


def _curve_shape(radius: torch.Tensor, r_turn: torch.Tensor, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, df/dR) of V_rot = V_max f(R / r_turn); df/dr_turn = -(R / r_turn) df/dR."""
    if model == "arctan":
        q = radius / r_turn
        return (2.0 / math.pi) * torch.atan(q), (2.0 / math.pi) / (r_turn * (1.0 + q * q))
    if model == "freeman":
        y = (FREEMAN_Y_PEAK * radius / r_turn).clamp_min(1e-8)
        g = _freeman_g(y).clamp_min(1e-300)
        f = torch.sqrt(g / _FREEMAN_G_PEAK)
        return f, _freeman_dg(y) / (2.0 * torch.sqrt(g * _FREEMAN_G_PEAK)) * (FREEMAN_Y_PEAK / r_turn)
    raise ValueError(f"unknown rotation-curve model {model!r}; use arctan or freeman")


def _intrinsic(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, model: Model, jacobian: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(V, R, dV/dtheta, dR/dtheta) at points ``x``, ``y`` shaped ``(B, N, ...)``; the
    derivatives ``(..., 7)`` are analytic (one pass; the tests check them against
    forward-mode AD) and None unless ``jacobian``."""
    extra = x.dim() - 2
    x0, y0, pa, inc, vsys, vmax, rt = (theta[:, k].reshape(-1, 1, *([1] * extra)) for k in range(7))
    dx, dy = x - x0, y - y0
    s, c = torch.sin(pa), torch.cos(pa)
    si, ci = torch.sin(inc), torch.cos(inc)
    a = dx * s + dy * c
    b = -dx * c + dy * s
    bq = b / (ci * ci)
    # The tiny offset keeps R and a / R differentiable at the centre itself.
    radius = torch.sqrt(a * a + b * bq + 1e-12)
    u = a / radius
    if not jacobian:
        f = rotation_curve(radius, torch.ones_like(vmax), rt, model)
        return vsys + vmax * f * si * u, radius, None, None
    f, df = _curve_shape(radius, rt, model)
    vrot = vmax * f
    dvrot_dr = vmax * df
    # d/d(x0, y0, pa) of a and b, then of R and u = a / R.
    da = torch.stack([-s.expand_as(a), -c.expand_as(a), -b], -1)
    db = torch.stack([c.expand_as(b), -s.expand_as(b), a], -1)
    dr_geo = (a.unsqueeze(-1) * da + bq.unsqueeze(-1) * db) / radius.unsqueeze(-1)
    dr_inc = b * bq * si / (ci * radius)
    du_geo = (da - u.unsqueeze(-1) * dr_geo) / radius.unsqueeze(-1)
    du_inc = -u * dr_inc / radius
    dv_geo = si.unsqueeze(-1) * (dvrot_dr.unsqueeze(-1) * dr_geo * u.unsqueeze(-1) + vrot.unsqueeze(-1) * du_geo)
    dv_inc = vrot * ci * u + si * (dvrot_dr * dr_inc * u + vrot * du_inc)
    dv_vmax = f * si * u
    dv_rt = -vmax * df * (radius / rt) * si * u
    jac = torch.cat(
        [dv_geo, dv_inc.unsqueeze(-1), torch.ones_like(a).unsqueeze(-1), dv_vmax.unsqueeze(-1), dv_rt.unsqueeze(-1)], -1
    )
    zeros = torch.zeros_like(a)
    dr = torch.cat([dr_geo, dr_inc.unsqueeze(-1), zeros.unsqueeze(-1), zeros.unsqueeze(-1), zeros.unsqueeze(-1)], -1)
    return vsys + vrot * si * u, radius, jac, dr


def _column(theta: torch.Tensor, k: int) -> torch.Tensor:
    return theta[:, k : k + 1]


#: ``weigh(model, factor, row)`` fills the two ``(B, N)`` arrays: see :func:`_disk_fast`
Weigh = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def _disk_fast(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, model: Model, jacobian: bool, weigh: Weigh | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V ``(B, N)``, dV/dtheta ``(B, 7, N)`` or None) of the disk without beam smearing:
    :func:`_intrinsic` rewritten for the fit loop, where it is nearly all the time.

    The same analytic derivatives, regrouped so that the Jacobian costs few passes over
    the points.  With A = sin i u (dV_rot/dR - V_rot / R), P = A / R, C = sin i V_rot / R,
    U = P a + C and W = P b / cos^2 i, the centre and PA columns are per-galaxy
    combinations of U and W: dV/dx0 = c W - s U, dV/dy0 = -c U - s W, dV/dPA = a W - b U
    (s, c: sin and cos PA).  Per-galaxy trigonometry is done once on ``(B, 1)`` columns,
    point arrays are reused in place, and the Jacobian is written parameter-major, one
    contiguous row per parameter, so that J W J^T is one batched matrix product.

    With ``weigh``, the Jacobian comes back as ``(B, 8, N)`` (in ``out`` if given):
    ``weigh(V, factor, row)`` writes a per-point factor, by which the seven rows are
    multiplied (folded into shared terms), and an eighth row; the fit's normal
    equations and gradient are then one product (see :class:`_Points`).
    """
    x0, y0, pa, inc, vsys, vmax, rt = (_column(theta, k) for k in range(7))
    s, c = torch.sin(pa), torch.cos(pa)
    si, ci = torch.sin(inc), torch.cos(inc)
    dx, dy = x - x0, y - y0
    a = torch.addcmul(dx * s, dy, c)
    b = dy.mul_(s).addcmul_(dx, c, value=-1.0)
    bq = b * (1.0 / (ci * ci))
    # The tiny offset keeps R and a / R finite at the centre itself.
    r2 = torch.addcmul(a * a, b, bq).add_(1e-12)
    inv_r = torch.rsqrt(r2)
    u = a * inv_r
    siu = u * si
    q = r2.mul_(inv_r).mul_(1.0 / rt)  # R / r_turn
    if model == "arctan":
        shape = torch.atan(q)  # f = V_rot / V_max, times pi / 2
        vrot = shape * (vmax * (2.0 / math.pi))
        v = torch.addcmul(vsys, vrot, siu)
        if not jacobian:
            return v, None
        # V_max df/dR = V_max (2 / pi) / (r_turn (1 + q^2))
        dvr = torch.mul(q, q).add_(1.0).reciprocal_().mul_(vmax * ((2.0 / math.pi) / rt))
        shape_scale = 2.0 / math.pi
    else:
        shape, df = _curve_shape(q * rt, rt, model)
        vrot = shape * vmax
        v = torch.addcmul(vsys, vrot, siu)
        if not jacobian:
            return v, None
        dvr = df.mul_(vmax)
        shape_scale = 1.0
    nb, npts = x.shape
    if weigh is None:
        jac = x.new_empty((nb, 7, npts))
        factor = None
    else:
        jac = x.new_empty((nb, 8, npts)) if out is None else out
        factor = jac[:, 4]
        weigh(v, factor, jac[:, 7])
    vr_r = vrot * inv_r  # V_rot / R
    p = (dvr - vr_r).mul_(siu).mul_(inv_r)  # P
    cu = vr_r.mul_(si)  # C, then U
    if factor is not None:
        p.mul_(factor)
        cu.mul_(factor)
        u.mul_(factor)
        siu = siu * factor
    cu.addcmul_(p, a)  # U
    w = p.mul_(bq)  # W
    torch.mul(w, c, out=jac[:, 0]).addcmul_(cu, -s)
    torch.mul(cu, -c, out=jac[:, 1]).addcmul_(w, -s)
    torch.mul(a, w, out=jac[:, 2]).addcmul_(b, cu, value=-1.0)
    # inclination: R dR/di = b bq tan i, and V_rot u d(sin i)/di
    torch.mul(b, w, out=jac[:, 3]).mul_(si / ci).addcmul_(vrot.mul_(ci), u)
    if factor is None:
        jac[:, 4] = 1.0
    torch.mul(shape, siu, out=jac[:, 5])
    if shape_scale != 1.0:
        jac[:, 5].mul_(shape_scale)
    torch.mul(dvr, q, out=jac[:, 6]).mul_(siu).neg_()
    return v, jac


def _stencil(x: torch.Tensor, y: torch.Tensor, psf_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    nodes = torch.as_tensor(_GH_NODES, dtype=x.dtype, device=x.device)
    weights = torch.as_tensor(_GH_WEIGHTS, dtype=x.dtype, device=x.device)
    ox, oy = torch.meshgrid(nodes, nodes, indexing="ij")
    w = torch.outer(weights, weights).reshape(1, 1, -1)
    sig = psf_sigma.reshape(-1, 1, 1)
    return x.unsqueeze(-1) + sig * ox.reshape(1, 1, -1), y.unsqueeze(-1) + sig * oy.reshape(1, 1, -1), w


def _smeared(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, model: Model, psf_sigma: torch.Tensor | None,
    flux_scale: torch.Tensor | None, jacobian: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V_los ``(B, N)``, its Jacobian ``(B, N, 7)`` or None): see :func:`los_velocity`."""
    if psf_sigma is None or not bool((psf_sigma > 0).any()):
        v, _, jac, _ = _intrinsic(theta, x, y, model, jacobian)
        return v, jac
    xs, ys, w = _stencil(x, y, psf_sigma)
    v, radius, jac, dr = _intrinsic(theta, xs, ys, model, jacobian)
    if flux_scale is None:
        h = torch.full((theta.shape[0], 1, 1), float("inf"), dtype=x.dtype, device=x.device)
    else:
        h = flux_scale.reshape(-1, 1, 1)
    # Brightness relative to the stencil centre, so far-out points do not underflow to 0/0.
    mid = radius.shape[-1] // 2
    bright = torch.exp(-(radius - radius[..., mid : mid + 1]) / h)
    wb = w * bright
    norm = wb.sum(-1)
    vbar = (wb * v).sum(-1) / norm
    if not jacobian:
        return vbar, None
    assert jac is not None and dr is not None
    # d(sum wb v / sum wb) = sum wb [dv + (v - vbar) dlog(wb)], dlog(wb) = -(dR - dR_mid) / h.
    dlog = -(dr - dr[..., mid : mid + 1, :]) / h.unsqueeze(-1)
    dvbar = (wb.unsqueeze(-1) * (jac + (v - vbar.unsqueeze(-1)).unsqueeze(-1) * dlog)).sum(-2) / norm.unsqueeze(-1)
    return vbar, dvbar


def los_velocity(
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    model: Model,
    psf_sigma: torch.Tensor | None = None,
    flux_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Line-of-sight velocity ``(B, N)`` of the disk ``theta`` at offsets ``x``, ``y``.

    With ``psf_sigma`` ``(B,)`` (arcsec, 0 = none), each point's velocity is the mean over
    a Gauss-Hermite stencil of the PSF of the disk velocity weighted by the surface
    brightness exp(-R / flux_scale) (``flux_scale`` ``(B,)``, inf = uniform): the
    first moment of a line observed through the PSF.  The spaxel's own size and any
    brightness structure beyond one exponential are neglected.
    """
    return _smeared(theta, x, y, model, psf_sigma, flux_scale, False)[0]


def los_velocity_jacobian(
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    model: Model,
    psf_sigma: torch.Tensor | None = None,
    flux_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`los_velocity` and its analytic Jacobian ``(B, N, 7)`` in :data:`PARAMS` order."""
    v, jac = _model_and_jacobian(theta, x, y, model, psf_sigma, flux_scale, True)
    assert jac is not None
    return v, jac.transpose(1, 2)


def _model_and_jacobian(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, model: Model, psf_sigma: torch.Tensor | None,
    flux_scale: torch.Tensor | None, jacobian: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V_los ``(B, N)``, its Jacobian parameter-major ``(B, 7, N)`` or None): the fit's model."""
    if psf_sigma is None or not bool((psf_sigma > 0).any()):
        return _disk_fast(theta, x, y, model, jacobian)
    v, jac = _smeared(theta, x, y, model, psf_sigma, flux_scale, jacobian)
    return v, None if jac is None else jac.transpose(1, 2)


# --------------------------------------------------------------------------- fit


def jacobian_forward_ad(fn, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(theta) ``(B, N)``, d fn / d theta ``(B, N, P)``) by forward-mode AD, one pass per
    parameter: the reference the analytic Jacobian is tested against."""
    cols = []
    value = None
    with fwAD.dual_level():
        for k in range(theta.shape[1]):
            tangent = torch.zeros_like(theta)
            tangent[:, k] = 1.0
            out = fn(fwAD.make_dual(theta, tangent))
            primal, tan = fwAD.unpack_dual(out)
            value = primal
            cols.append(tan)
    assert value is not None
    return value, torch.stack(cols, dim=-1)


#: points (stencil points with a PSF) per block of one evaluation: a few hundred kB of
#: float32 per array, so that the arrays of one evaluation stay in the CPU cache
_CHUNK_POINTS = 50_000
#: at most this many float64 steps after the float32 iterations (precision "mixed")
_POLISH_STEPS = 4


@dataclass
class _Points:
    """The points the fit sees, one row per fitted problem; ``w`` is 1 / sigma on the
    points that count and 0 elsewhere, so the normalised residual is (model - v) w."""

    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor
    w: torch.Tensor
    model: Model
    psf_sigma: torch.Tensor | None
    flux_scale: torch.Tensor | None
    # Jacobian buffers reused from call to call, shared by the subsets taken: a fresh
    # megabyte-sized array per evaluation is mapped and page-faulted in anew each time.
    scratch: dict[tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(cls, x, y, v, sigma, mask, model, psf_sigma, flux_scale, dtype) -> _Points:  # type: ignore[no-untyped-def]
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        w = torch.where(mask, 1.0 / sigma, torch.zeros_like(sigma))
        if psf_sigma is not None and not bool((psf_sigma > 0).any()):
            psf_sigma = None
        return cls(cast(x), cast(y), cast(v), cast(w), model, cast(psf_sigma), cast(flux_scale))  # type: ignore[arg-type]

    def take(self, rows: torch.Tensor) -> _Points:
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return _Points(self.x[rows], self.y[rows], self.v[rows], self.w[rows], self.model, pick(self.psf_sigma),
                       pick(self.flux_scale), self.scratch)  # fmt: skip

    def rows(self, lo: int, hi: int) -> _Points:
        if lo == 0 and hi == self.x.shape[0]:
            return self
        part = lambda t: None if t is None else t[lo:hi]  # noqa: E731
        return _Points(self.x[lo:hi], self.y[lo:hi], self.v[lo:hi], self.w[lo:hi], self.model, part(self.psf_sigma),
                       part(self.flux_scale), self.scratch)  # fmt: skip

    def buffer(self, rows: int) -> torch.Tensor:
        key = (self.x.shape[1], self.x.dtype)
        buf = self.scratch.get(key)
        if buf is None or buf.shape[0] < rows:
            buf = self.scratch[key] = self.x.new_empty((rows, 8, self.x.shape[1]))
        return buf[:rows]

    def chunks(self) -> list[tuple[int, int]]:
        # Blocks of rows small enough that the point arrays of one evaluation stay in the
        # CPU cache: a 1,500-row batch computed whole runs 2-4x slower per point here.
        nb = self.x.shape[0]
        per_row = self.x.shape[1] * (1 if self.psf_sigma is None else _GH_NODES.size**2)
        step = max(1, _CHUNK_POINTS // max(1, per_row))
        return [(lo, min(nb, lo + step)) for lo in range(0, nb, step)]

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        """Normalised residuals (model - v) w ``(B, N)``."""
        parts = []
        for lo, hi in self.chunks():
            p = self.rows(lo, hi)
            model, _ = _model_and_jacobian(theta[lo:hi], p.x, p.y, p.model, p.psf_sigma, p.flux_scale, False)
            parts.append(model.sub_(p.v).mul_(p.w))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def normal_equations(
        self, theta: torch.Tensor, loss: str | None, curvature: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gauss-Newton (J^T diag(k) J, J^T rho' z) of the robust cost (k: see
        :func:`~.robust_lm.weight_factors`), float64 ``(B, 7, 7)``, ``(B, 7)``; ``loss``
        None: (J^T J, J^T z) of the plain chi^2 (the covariance)."""
        return self._products(theta, loss, curvature, None)

    def evaluate(self, theta: torch.Tensor, loss: str, curvature: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cost ``(B,)``, normal equations, gradient) at ``theta``, in one pass."""
        costs: list[torch.Tensor] = []
        hess, grad = self._products(theta, loss, curvature, costs)
        return (costs[0] if len(costs) == 1 else torch.cat(costs)), hess, grad

    def _products(
        self, theta: torch.Tensor, loss: str | None, curvature: bool, costs: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ``costs`` (a list) receives the cost of each block of rows.
        hess, grad = [], []
        for lo, hi in self.chunks():
            p = self.rows(lo, hi)

            def weigh(model: torch.Tensor, factor: torch.Tensor, row: torch.Tensor, p: _Points = p) -> None:
                # J^T diag(k w^2) J and J^T (rho' w z) (k the curvature weight) as J' J'^T
                # with J' = sqrt(k) w J and the residual row rho' z / sqrt(k).
                z = torch.sub(model, p.v, out=row).mul_(p.w)
                if loss is None:
                    factor.copy_(p.w)
                    return
                if costs is not None:
                    costs.append(cost_of(z, loss))
                f_jac, f_row = weight_factors(z * z, loss, curvature)
                torch.mul(f_jac, p.w, out=factor)
                z.mul_(f_row)

            th = theta[lo:hi]
            if p.psf_sigma is None:
                _, jac = _disk_fast(th, p.x, p.y, p.model, True, weigh, self.buffer(hi - lo))
                assert jac is not None
            else:
                model, j7 = _model_and_jacobian(th, p.x, p.y, p.model, p.psf_sigma, p.flux_scale, True)
                assert j7 is not None
                factor, last = torch.empty_like(model), torch.empty_like(model)
                weigh(model, factor, last)
                jac = torch.cat([j7 * factor.unsqueeze(1), last.unsqueeze(1)], 1)
            m = torch.bmm(jac, jac.transpose(1, 2)).to(torch.float64)
            hess.append(m[:, :7, :7])
            grad.append(m[:, :7, 7])
        if len(hess) == 1:
            return hess[0], grad[0]
        return torch.cat(hess), torch.cat(grad)


def _weighted_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    filled = torch.where(mask, values, torch.full_like(values, float("nan")))
    return torch.nanmedian(filled, dim=-1).values


def _flux_scale(data: DiskData, mask: torch.Tensor) -> torch.Tensor:
    """Exponential scale length (arcsec) of the points' flux against distance from the
    reference, from a least-squares line through log flux; inf (uniform) where there are
    fewer than 5 positive fluxes or the profile does not fall."""
    nb = data.batch
    inf = torch.full((nb,), float("inf"), dtype=data.x.dtype, device=data.x.device)
    if data.flux is None:
        return inf
    ok = mask & torch.isfinite(data.flux) & (data.flux > 0)
    r = torch.sqrt(data.x**2 + data.y**2)
    lf = torch.log(torch.where(ok, data.flux, torch.ones_like(data.flux)))
    w = ok.to(r.dtype)
    n = w.sum(-1)
    rm = (w * r).sum(-1) / n.clamp_min(1)
    lm = (w * lf).sum(-1) / n.clamp_min(1)
    cov = (w * (r - rm[:, None]) * (lf - lm[:, None])).sum(-1)
    var = (w * (r - rm[:, None]) ** 2).sum(-1)
    slope = cov / var.clamp_min(1e-30)
    h = (-1.0 / slope).clamp(0.05, 1e3)
    return torch.where((n >= 5) & (slope < 0) & torch.isfinite(h), h, inf)


def _initial(data: DiskData, mask: torch.Tensor, config: DiskFitConfig) -> torch.Tensor:
    """Starting parameters ``(B, 7)``, inclination not yet set (see :func:`fit_disks`)."""
    dt = data.x.dtype
    vsys = _weighted_median(data.v, mask)
    vsys = torch.nan_to_num(vsys)
    # A plane v = c + alpha x + beta y points its gradient at the receding side: PA = atan2(alpha, beta).
    w = mask.to(dt)
    design = torch.stack([w, data.x * w, data.y * w], 1)  # (B, 3, N)
    gram = design @ design.transpose(1, 2) + 1e-9 * torch.eye(3, dtype=dt, device=data.x.device)
    rhs = design @ torch.where(mask, data.v - vsys[:, None], torch.zeros_like(data.v)).unsqueeze(-1)
    coef, _ = torch.linalg.solve_ex(gram, rhs)
    coef = torch.nan_to_num(coef.squeeze(-1))
    pa = torch.atan2(coef[:, 1], coef[:, 2])
    r_sky = torch.sqrt(data.x**2 + data.y**2)
    r_max = torch.where(mask, r_sky, torch.zeros_like(r_sky)).amax(-1).clamp_min(0.1)
    dev = torch.where(mask, (data.v - vsys[:, None]).abs(), torch.full_like(data.v, float("nan")))
    amp = torch.nan_to_num(torch.nanquantile(dev, 0.9, dim=-1), nan=50.0).clamp_min(10.0)
    rt = (0.25 if config.model == "arctan" else 0.5) * r_max
    zeros = torch.zeros_like(vsys)
    # Column 5 holds V_max sin i here; each inclination start divides by its own sin i.
    return torch.stack([zeros, zeros, pa, zeros, vsys, amp, rt], -1)


def fit_disks(data: DiskData, config: DiskFitConfig) -> DiskFit:
    """Fit one disk per galaxy of ``data`` (see the module docstring)."""
    nb, npts = data.x.shape
    dt, dev = data.x.dtype, data.x.device
    nan = float("nan")
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
    lower_w, upper_w = lower.to(work), upper.to(work)
    fitted = mask & enough.unsqueeze(-1)

    def points(rows_mask: torch.Tensor, dtype: torch.dtype) -> _Points:
        return _Points.build(x, y, v, sigma, rows_mask, config.model, psf_sigma, flux_scale, dtype)

    # Several inclination starts per galaxy, as extra rows of one batch; after
    # ``prune_after`` iterations only the best start of each galaxy goes on.
    base = _initial(clean, mask, config)
    starts = []
    for inc_deg in config.inc_starts_deg:
        th = base.clone()
        th[:, 3] = math.radians(inc_deg)
        th[:, 5] = base[:, 5] / math.sin(math.radians(inc_deg))
        starts.append(th)
    ns = len(starts)
    every = torch.arange(nb, device=dev)
    first_iter = config.max_iter if config.prune_after <= 0 else min(config.prune_after, config.max_iter)
    pts = points(fitted, work)
    if ns > 1:
        rep = lambda t: None if t is None else t.repeat((ns,) + (1,) * (t.dim() - 1))  # noqa: E731
        pts_all = _Points(rep(pts.x), rep(pts.y), rep(pts.v), rep(pts.w), pts.model, rep(pts.psf_sigma),
                          rep(pts.flux_scale), pts.scratch)  # fmt: skip
        theta_all, cost_all, conv_all, lam_all = levenberg_marquardt(
            pts_all, torch.cat(starts, 0).to(work), rep(lower_w), rep(upper_w), config.loss, first_iter, tol
        )
        cost_all = torch.where(torch.isfinite(cost_all), cost_all, torch.full_like(cost_all, float("inf")))
        pick = cost_all.view(ns, nb).argmin(0) * nb + every
        theta, cost, converged, lam = theta_all[pick], cost_all[pick], conv_all[pick], lam_all[pick]
    else:
        theta, cost, converged, lam = levenberg_marquardt(pts, starts[0].to(work), lower_w, upper_w, config.loss,
                                                           first_iter, tol)  # fmt: skip
    if first_iter < config.max_iter:
        # The best start goes on as it was (reweighted least squares): a start can still
        # be far from the optimum here, where the curvature weights of the later stages
        # take rejected steps and, from a bad start, can stall.
        go_on = (~converged).nonzero().squeeze(-1)
        if go_on.numel():
            theta[go_on], _, converged[go_on], lam[go_on] = levenberg_marquardt(
                pts.take(go_on), theta[go_on], lower_w[go_on], upper_w[go_on], config.loss,
                config.max_iter - first_iter, tol, lam[go_on],
            )

    kept = fitted
    for _ in range(config.clip_rounds):
        with torch.no_grad():
            z = pts.residuals(theta)
        # Robust scale of the normalised residuals (MAD), so clipping adapts to
        # underestimated errors and to non-circular motions.
        zabs = torch.where(kept, z.abs(), torch.full_like(z, nan))
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
            points(kept, work).take(changed), theta[changed], lower_w[changed], upper_w[changed],
            config.loss, config.max_iter, tol, lam[changed], curvature=True,
        )
    theta = theta.to(dt)
    if work != dt:
        # Polish in full precision from the float32 optimum: one or two steps for nearly
        # every galaxy.  Capped, because in the flat inclination-V_max valley of nearly
        # face-on discs the float64 tolerance can take tens of steps that move the values
        # by a small fraction of their (large) errors; convergence is the float32 one.
        theta, _, _, _ = levenberg_marquardt(points(kept, dt), theta, lower, upper, config.loss,
                                              _POLISH_STEPS, TOL64, curvature=True)  # fmt: skip

    # Errors: Gauss-Newton covariance of the kept points, scaled by the reduced chi^2 when
    # it exceeds 1. Below 1 the error floor (non-circular motions) dominates the point
    # errors, and scaling down by it would shrink the errors below the real scatter.
    final = points(kept, dt)
    h = final.normal_equations(theta, None)[0].to(dt)
    z = final.residuals(theta)
    n_kept = kept.sum(-1)
    dof = (n_kept - len(PARAMS)).clamp_min(1)
    chi2 = (z * z).sum(-1) / dof
    cov, info = torch.linalg.inv_ex(h)
    cov = torch.where((info == 0).view(-1, 1, 1), cov, torch.full_like(cov, nan)) * chi2.clamp_min(1.0).view(-1, 1, 1)
    # A parameter pinned at a bound has no meaningful curvature error.
    at_low = theta <= lower + 1e-6 * (upper - lower).abs().clamp_max(1.0)
    at_high = theta >= upper - 1e-6 * (upper - lower).abs().clamp_max(1.0)
    pinned = at_low | at_high
    pinned[:, 5] = False  # vmax bounds are only a safety net: being there is a failure below
    pinned[:, 2] = False
    pinned[:, 4] = False

    # Canonical form: V_max >= 0 (the receding side defines PA), PA in [0, 2 pi).
    flip = theta[:, 5] < 0
    theta = theta.clone()
    theta[:, 5] = theta[:, 5].abs()
    theta[:, 2] = torch.remainder(theta[:, 2] + flip.to(dt) * math.pi, 2 * math.pi)

    radius, _, _ = disk_coordinates(theta, x, y)
    r_max = torch.where(kept, radius, torch.zeros_like(radius)).amax(-1)
    errs = torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))

    flags = torch.zeros(nb, dtype=torch.int64, device=dev)
    flags |= torch.where(~enough, int(DiskFlag.TOO_FEW_POINTS), 0)
    flags |= torch.where(theta[:, 3] < math.radians(config.face_on_deg), int(DiskFlag.NEAR_FACE_ON), 0)
    rt, rt_err = theta[:, 6], errs[:, 6]
    unconstrained = (rt > 0.8 * r_max) | ~torch.isfinite(rt_err) | (rt_err > 0.5 * rt)
    flags |= torch.where(unconstrained, int(DiskFlag.TURNOVER_UNCONSTRAINED), 0)
    flags |= torch.where(pinned.any(-1) | (theta[:, 5] >= config.vmax_limit * (1 - 1e-6)), int(DiskFlag.AT_BOUND), 0)
    flags |= torch.where(~converged, int(DiskFlag.NOT_CONVERGED), 0)
    n_rej = (mask & enough.unsqueeze(-1)).sum(-1) - n_kept
    flags |= torch.where(n_rej > 0.2 * n0, int(DiskFlag.MANY_OUTLIERS), 0)
    bad = ~torch.isfinite(theta).all(-1) | ~torch.isfinite(chi2)
    flags |= torch.where(bad & enough, int(DiskFlag.FIT_FAILED), 0)
    failed = (flags & int(_FAILED)) != 0
    theta = torch.where(failed.unsqueeze(-1), torch.full_like(theta, nan), theta)
    cov = torch.where(failed.view(-1, 1, 1) | pinned.unsqueeze(-1) | pinned.unsqueeze(-2), torch.full_like(cov, nan), cov)
    chi2 = torch.where(failed, torch.full_like(chi2, nan), chi2)
    r_max = torch.where(failed, torch.full_like(r_max, nan), r_max)
    return DiskFit(theta, cov, chi2, torch.where(failed, 0, n_kept), torch.where(failed, 0, n_rej), r_max, flags,
                   kept & ~failed.unsqueeze(-1), flux_scale)
