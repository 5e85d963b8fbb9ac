"""Strong-line oxygen-abundance calibrations, batched.

Every function takes ``lines`` (line id -> [rows] dust-corrected fluxes, NaN where
missing) and returns ``(oh, out_of_range, extra_flags)``: 12+log(O/H) per row (NaN where
the lines are missing or no solution exists), a bool mask of rows outside the stated
validity range, and an int64 tensor of method-specific flag bits.  Equations,
coefficients and ranges are tabulated with their references in docs/abundance_methods.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from skyledger.compute.abundances.flags import AbundanceFlag as F
from skyledger.compute.errors import ComputeInputError

__all__ = ["STRONG_LINE_METHODS", "C20_POLYNOMIALS", "C20_DEFAULT_SET", "c20_index", "strong_line"]

StrongResult = tuple[Tensor, Tensor, Tensor]


def _log(x: Tensor) -> Tensor:
    """log10 of positive values, NaN elsewhere (zero or negative fluxes give no ratio)."""
    return torch.where(x > 0, torch.log10(torch.where(x > 0, x, torch.ones_like(x))), torch.full_like(x, math.nan))


def _no_flags(x: Tensor) -> Tensor:
    return torch.zeros(x.shape, dtype=torch.int64, device=x.device)


def _outside(x: Tensor, lo: float, hi: float) -> Tensor:
    return torch.isfinite(x) & ((x < lo) | (x > hi))


# --- Pettini & Pagel 2004 (MNRAS 348, L59) and Marino et al. 2013 (A&A 559, A114) ---------

def _n2(lines: dict[str, Tensor]) -> Tensor:
    return _log(lines["NII6584"] / lines["HA6563"])


def _o3n2(lines: dict[str, Tensor]) -> Tensor:
    return _log((lines["OIII5007"] / lines["HB4861"]) / (lines["NII6584"] / lines["HA6563"]))


def n2_pp04(lines: dict[str, Tensor]) -> StrongResult:
    """12+log(O/H) = 8.90 + 0.57 N2, valid -2.5 < N2 < -0.3."""
    n2 = _n2(lines)
    return 8.90 + 0.57 * n2, _outside(n2, -2.5, -0.3), _no_flags(n2)


def o3n2_pp04(lines: dict[str, Tensor]) -> StrongResult:
    """12+log(O/H) = 8.73 - 0.32 O3N2, valid -1 < O3N2 < 1.9."""
    x = _o3n2(lines)
    return 8.73 - 0.32 * x, _outside(x, -1.0, 1.9), _no_flags(x)


def n2_m13(lines: dict[str, Tensor]) -> StrongResult:
    """12+log(O/H) = 8.743 + 0.462 N2, valid -1.6 < N2 < -0.2."""
    n2 = _n2(lines)
    return 8.743 + 0.462 * n2, _outside(n2, -1.6, -0.2), _no_flags(n2)


def o3n2_m13(lines: dict[str, Tensor]) -> StrongResult:
    """12+log(O/H) = 8.533 - 0.214 O3N2, valid -1.1 < O3N2 < 1.7."""
    x = _o3n2(lines)
    return 8.533 - 0.214 * x, _outside(x, -1.1, 1.7), _no_flags(x)


# --- Kobulnicky & Kewley 2004 (ApJ 617, 240), R23 with q from O32 --------------------------

KK04_RANGE = (7.6, 9.4)  # span of the Kewley & Dopita (2002) grid the fits were made on


def _kk04_logq(z: Tensor, y: Tensor) -> Tensor:
    """KK04 eq. 13: log q from y = log O32 and z = 12+log(O/H)."""
    num = 32.81 - 1.153 * y**2 + z * (-3.396 - 0.025 * y + 0.1444 * y**2)
    den = 4.603 - 0.3119 * y - 0.163 * y**2 + z * (-0.48 + 0.0271 * y + 0.02037 * y**2)
    return num / den


def _kk04_lower(x: Tensor, logq: Tensor) -> Tensor:
    """KK04 eq. 16."""
    return 9.40 + 4.65 * x - 3.17 * x**2 - logq * (0.272 + 0.547 * x - 0.513 * x**2)


def _kk04_upper(x: Tensor, logq: Tensor) -> Tensor:
    """KK04 eq. 17."""
    poly = 9.72 - 0.777 * x - 0.951 * x**2 - 0.072 * x**3 - 0.811 * x**4
    return poly - logq * (0.0737 - 0.0713 * x - 0.141 * x**2 + 0.0373 * x**3 - 0.058 * x**4)


def r23_kk04(lines: dict[str, Tensor], iterations: int = 10) -> StrongResult:
    """R23 with the ionisation parameter iterated from O32; branch by log([NII]6584/[OII]3727) vs -1.2.

    The branch criterion is Kewley & Ellison (2008, ApJ 681, 1183).  Rows where the
    chosen branch lands on the other side of the turnover (~8.4) are flagged ambiguous.
    """
    o2 = lines["OII3726"] + lines["OII3729"]
    o3 = lines["OIII4959"] + lines["OIII5007"]
    x = _log((o2 + o3) / lines["HB4861"])
    y = _log(o3 / o2)
    n2o2 = _log(lines["NII6584"] / o2)
    upper = n2o2 > -1.2
    z = torch.where(upper, torch.full_like(x, 8.7), torch.full_like(x, 7.9))
    for _ in range(iterations):
        logq = _kk04_logq(z, y)
        z = torch.where(upper, _kk04_upper(x, logq), _kk04_lower(x, logq))
    z = torch.where(torch.isfinite(n2o2), z, torch.full_like(z, math.nan))
    crossed = torch.where(upper, z < 8.4, z > 8.4) & torch.isfinite(z)
    flags = torch.where(crossed | (~torch.isfinite(n2o2) & torch.isfinite(x)), int(F.BRANCH_AMBIGUOUS), 0)
    out = _outside(z, *KK04_RANGE) | (torch.isfinite(x) & (x > 1.0))
    return z, out, flags.to(torch.int64)


# --- Pilyugin & Grebel 2016 (MNRAS 457, 3678), R and S calibrations ------------------------

PG16_RANGE = (7.0, 8.85)  # span of their calibrating H II regions (adopted)


def _pg16_ratios(lines: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    hb = lines["HB4861"]
    n2 = _log((lines["NII6548"] + lines["NII6584"]) / hb)
    r2 = _log((lines["OII3726"] + lines["OII3729"]) / hb)
    r3 = _log((lines["OIII4959"] + lines["OIII5007"]) / hb)
    s2 = _log((lines["SII6716"] + lines["SII6731"]) / hb)
    return n2, r2, r3, s2


def r_pg16(lines: dict[str, Tensor]) -> StrongResult:
    """PG16 eqs. 4 (upper, log N2 >= -0.6) and 5 (lower)."""
    n2, r2, r3, _ = _pg16_ratios(lines)
    a = r3 - r2
    up = 8.589 + 0.022 * a + 0.399 * n2 + (-0.137 + 0.164 * a + 0.589 * n2) * r2
    lo = 7.932 + 0.944 * a + 0.695 * n2 + (0.970 - 0.291 * a - 0.019 * n2) * r2
    z = torch.where(n2 >= -0.6, up, lo)
    return z, _outside(z, *PG16_RANGE), _no_flags(z)


def s_pg16(lines: dict[str, Tensor]) -> StrongResult:
    """PG16 eqs. 6 (upper, log N2 >= -0.6) and 7 (lower)."""
    n2, _, r3, s2 = _pg16_ratios(lines)
    a = r3 - s2
    up = 8.424 + 0.030 * a + 0.751 * n2 + (-0.349 + 0.182 * a + 0.508 * n2) * s2
    lo = 8.072 + 0.789 * a + 0.726 * n2 + (1.069 - 0.170 * a + 0.022 * n2) * s2
    z = torch.where(n2 >= -0.6, up, lo)
    return z, _outside(z, *PG16_RANGE), _no_flags(z)


# --- Dopita et al. 2016 (Ap&SS 361, 61), N2S2Halpha ----------------------------------------

D16_RANGE = (7.7, 9.2)  # adopted: where the D16 model grid constrains the relation


def n2s2ha_d16(lines: dict[str, Tensor]) -> StrongResult:
    """y = log(N2/S2) + 0.264 log(N2/Ha); 12+log(O/H) = 8.77 + y + 0.45 (y + 0.3)^5."""
    nii = lines["NII6584"]
    y = _log(nii / (lines["SII6716"] + lines["SII6731"])) + 0.264 * _log(nii / lines["HA6563"])
    z = 8.77 + y + 0.45 * (y + 0.3) ** 5
    return z, _outside(z, *D16_RANGE), _no_flags(z)


# --- Curti et al. 2020 (MNRAS 491, 944), Table 2: log R = sum c_n x^n, x = 12+log(O/H) - 8.69

C20_POLYNOMIALS: dict[str, tuple[float, ...]] = {
    "R2": (0.435, -1.362, -5.655, -4.851, -0.478, 0.736),
    "R3": (-0.277, -3.549, -3.593, -0.981),
    "O3O2": (-0.691, -2.944, -1.308),
    "R23": (0.527, -1.569, -1.652, -0.421),
    "N2": (-0.489, 1.513, -2.554, -5.293, -2.867),
    "O3N2": (0.281, -4.765, -2.268),
    "S2": (-0.442, -0.360, -6.271, -8.339, -3.559),
    "RS32": (-0.054, -2.546, -1.970, 0.082, 0.222),
    "O3S2": (0.191, -4.292, -2.538, 0.053, 0.332),
}
C20_RANGE = (7.6, 8.85)  # span of the calibrating stacks (adopted for every index)
#: indices combined by ``C20``: each metal line enters once, so no line is double-counted
C20_DEFAULT_SET: tuple[str, ...] = ("R2", "R3", "N2", "S2")


def c20_index(name: str, lines: dict[str, Tensor]) -> Tensor:
    """log of a C20 index from the lines (definitions of C20 sect. 2)."""
    hb, ha = lines["HB4861"], lines["HA6563"]
    o2 = lines["OII3726"] + lines["OII3729"]
    s2 = lines["SII6716"] + lines["SII6731"]
    r3 = lines["OIII5007"] / hb
    ratio = {
        "R2": lambda: o2 / hb,
        "R3": lambda: r3,
        "O3O2": lambda: lines["OIII5007"] / o2,
        "R23": lambda: (o2 + lines["OIII4959"] + lines["OIII5007"]) / hb,
        "N2": lambda: lines["NII6584"] / ha,
        "O3N2": lambda: r3 / (lines["NII6584"] / ha),
        "S2": lambda: s2 / ha,
        "RS32": lambda: r3 + s2 / ha,
        "O3S2": lambda: r3 / (s2 / ha),
    }[name]()
    return _log(ratio)


def _c20_poly(name: str, z: Tensor) -> tuple[Tensor, Tensor]:
    """The C20 polynomial log R(z) and its derivative dlogR/dz (Horner)."""
    coeffs = C20_POLYNOMIALS[name]
    x = z - 8.69
    value = torch.full_like(x, coeffs[-1])
    deriv = torch.zeros_like(x)
    for c in reversed(coeffs[:-1]):
        deriv = deriv * x + value
        value = value * x + c
    return value, deriv


def c20_solve(lines: dict[str, Tensor], names: tuple[str, ...], tolerance: float = 0.01) -> StrongResult:
    """12+log(O/H) minimising sum_i (log R_i,obs - log R_i,cal)^2 over the indices available.

    Equal weights per index (dex residuals).  A grid search over C20_RANGE (0.01 dex) finds
    the global minimum, so double-valued indices need no branch choice when several are
    combined; Gauss-Newton steps inside the best grid cell refine it.  With one index, a
    residual above ``tolerance`` dex at the optimum means no root in range: NaN and flagged.
    """
    obs = torch.stack([c20_index(n, lines) for n in names], dim=-1)  # [rows, k]
    valid = torch.isfinite(obs)
    obs0 = obs.nan_to_num(0.0)
    lo, hi = C20_RANGE
    grid = torch.linspace(lo, hi, 126, dtype=obs.dtype, device=obs.device)
    step = float(grid[1] - grid[0])
    chi2 = torch.zeros(obs.shape[0], grid.numel(), dtype=obs.dtype, device=obs.device)
    for k, name in enumerate(names):
        model, _ = _c20_poly(name, grid)  # the same grid for every row: evaluate once
        chi2 += torch.where(valid[:, k : k + 1], (obs0[:, k : k + 1] - model) ** 2, 0.0)
    z0 = grid[chi2.argmin(dim=1)]
    z = z0
    zlo, zhi = (z0 - step).clamp(min=lo), (z0 + step).clamp(max=hi)
    for _ in range(5):
        grad = torch.zeros_like(z)
        hess = torch.zeros_like(z)
        for k, name in enumerate(names):
            m, dm = _c20_poly(name, z)
            w = valid[:, k].to(z.dtype)
            grad += w * (m - obs0[:, k]) * dm
            hess += w * dm * dm
        z = torch.minimum(torch.maximum(z - grad / hess.clamp(min=1e-12), zlo), zhi)
    model = torch.stack([_c20_poly(n, z)[0] for n in names], dim=-1)
    rms = torch.where(valid, (obs0 - model) ** 2, 0.0).sum(-1).div(valid.sum(-1).clamp(min=1)).sqrt()
    has_any = valid.any(-1)
    z = torch.where(has_any, z, torch.full_like(z, math.nan))
    # An optimum on the range edge with a poor fit means the observed ratios lie beyond it.
    at_edge = (z <= lo + 1e-6) | (z >= hi - 1e-6)
    out = has_any & (rms > tolerance) & (at_edge | (len(names) == 1))
    if len(names) == 1:
        z = torch.where(out, torch.full_like(z, math.nan), z)
    return z, out, _no_flags(z)


def _c20(names: tuple[str, ...]) -> Callable[[dict[str, Tensor]], StrongResult]:
    return lambda lines: c20_solve(lines, names)


#: method name -> function; "C20" combines C20_DEFAULT_SET, the others use one index
STRONG_LINE_METHODS: dict[str, Callable[[dict[str, Tensor]], StrongResult]] = {
    "N2_PP04": n2_pp04,
    "O3N2_PP04": o3n2_pp04,
    "N2_M13": n2_m13,
    "O3N2_M13": o3n2_m13,
    "R23_KK04": r23_kk04,
    "S_PG16": s_pg16,
    "R_PG16": r_pg16,
    "N2S2HA_D16": n2s2ha_d16,
    "C20": _c20(C20_DEFAULT_SET),
    "N2_C20": _c20(("N2",)),
    "O3N2_C20": _c20(("O3N2",)),
    "O3O2_C20": _c20(("O3O2",)),
    "O3S2_C20": _c20(("O3S2",)),
    "S2_C20": _c20(("S2",)),
}


def strong_line(method: str, lines: dict[str, Tensor]) -> StrongResult:
    """Run one strong-line method by name (see :data:`STRONG_LINE_METHODS`)."""
    try:
        fn = STRONG_LINE_METHODS[method]
    except KeyError:
        raise ComputeInputError(f"unknown method {method!r}; known: direct, {', '.join(STRONG_LINE_METHODS)}") from None
    return fn(lines)
