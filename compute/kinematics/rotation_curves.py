"""Rotation curves V_rot(R) of a thin disk (``vmax`` and ``r_turn`` mean different things per model).

* ``arctan``: V_rot = (2 / pi) V_max arctan(R / r_turn) (Courteau 1997); V_max is the
  asymptotic speed, r_turn the turnover radius.
* ``freeman``: the exponential thin disk of Freeman (1970),
  V_rot^2 proportional to y^2 [I0(y) K0(y) - I1(y) K1(y)] with y = R / (2 R_d); V_max is
  the peak speed and r_turn the radius of the peak, 2.15 R_d.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from skyledger.compute.errors import ComputeInputError

__all__ = ["FREEMAN_Y_PEAK", "Model", "rotation_curve"]

#: y = R / (2 R_d) at the peak of the Freeman curve (R = 2.15 R_d); d/dy of the curve
#: vanishes there (checked in the tests)
FREEMAN_Y_PEAK = 1.07503

Model = Literal["arctan", "freeman"]


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
    raise ComputeInputError(f"unknown rotation-curve model {model!r}; use arctan or freeman")



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
    raise ComputeInputError(f"unknown rotation-curve model {model!r}; use arctan or freeman")

