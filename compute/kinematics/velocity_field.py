"""The line-of-sight velocity field of a thin rotating disk and its analytic Jacobian.

Geometry (the convention of :mod:`skyledger.testing.disk_model`): a point at sky offsets
(x east, y north; arcsec) from the disk centre (x0, y0) has major-axis coordinate
a = dx sin PA + dy cos PA and minor-axis coordinate b = -dx cos PA + dy sin PA, PA being
the position angle of the *receding* major axis, north through east.  Its deprojected
radius is R = sqrt(a^2 + (b / cos i)^2) and its line-of-sight velocity

    V = V_sys + V_rot(R) sin i (a / R),

V_rot one of the curves of :mod:`.rotation_curves`.  Beam smearing, when a PSF is given,
is modelled by evaluating the disk on a 5 x 5 Gauss-Hermite stencil of the Gaussian PSF
around each point and averaging the velocities weighted by an exponential surface
brightness (see :func:`los_velocity`); points that are the pixels of a map get the
PSF-convolved model on their grid instead (:mod:`.beam_grid`).  The Jacobians are analytic, checked against
forward-mode automatic differentiation (:func:`jacobian_forward_ad`) in the tests.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from .rotation_curves import Model, _curve_shape, rotation_curve

__all__ = [
    "PARAMS", "disk_coordinates", "jacobian_forward_ad", "los_velocity", "los_velocity_jacobian", "stencil_moments",
]  # fmt: skip

#: the fitted parameters, in this order: centre offsets (arcsec), PA and inclination
#: (radians), systemic velocity, V_max (km/s), r_turn (arcsec)
PARAMS = ("x0", "y0", "pa", "inc", "vsys", "vmax", "r_turn")

# Probabilists' Gauss-Hermite nodes for a unit Gaussian: a 5 x 5 product stencil is exact
# for polynomials of degree 9 in each direction, plenty for a smooth velocity field.
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(5)
_GH_WEIGHTS = _GH_WEIGHTS / _GH_WEIGHTS.sum()


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
    equations and gradient are then one product (see :class:`.disk_problem._Points`).
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


def stencil_moments(
    theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, model: Model, psf_sigma: torch.Tensor | None,
    flux_scale: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V_obs, sigma_beam) ``(B, N)`` on the stencil of :func:`los_velocity`: the first
    moment and the dispersion beam-smeared rotation adds (the weighted standard deviation
    of the velocities over the stencil); sigma_beam = 0 without a PSF."""
    if psf_sigma is None or not bool((psf_sigma > 0).any()):
        v = _intrinsic(theta, x, y, model)[0]
        return v, torch.zeros_like(v)
    xs, ys, w = _stencil(x, y, psf_sigma)
    v, radius, _, _ = _intrinsic(theta, xs, ys, model)
    h = (torch.full((theta.shape[0],), float("inf"), dtype=x.dtype, device=x.device) if flux_scale is None
         else flux_scale).reshape(-1, 1, 1)  # fmt: skip
    mid = radius.shape[-1] // 2
    wb = w * torch.exp(-(radius - radius[..., mid : mid + 1]) / h)
    wb = wb / wb.sum(-1, keepdim=True)
    vbar = (wb * v).sum(-1)
    var = (wb * (v - vbar.unsqueeze(-1)) ** 2).sum(-1)
    return vbar, torch.sqrt(var.clamp_min(0.0))
