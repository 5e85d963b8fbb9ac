"""Te and ne diagnostics: emissivity-ratio grids and their batched inversion.

Each diagnostic ratio is computed once per (device, dtype) on a regular grid in
(log10 Te, log10 ne) by solving the full level populations (``atomic.IonModel``) for all
grid nodes in one batched ``torch.linalg.solve``; inverting an observed ratio is then a
bracketed Newton iteration on the bilinear interpolant of ln(ratio), which costs a few
element-wise operations per object instead of a linear solve per iteration.

The grid is fine enough that interpolation is not the limiting error: ln(R) of a
temperature diagnostic is close to linear in 1/T, so with 0.005 dex steps the bilinear
error is ~1e-5 in ln R (~1e-5 relative in Te); the density step of 0.05 dex gives
~1e-3 relative in ne.  ``tests/compute/test_nebular.py`` checks both against the
exact solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from skyledger.compute.abundances.atomic import LINE_TRANSITIONS, load_ion

__all__ = ["Diagnostic", "DIAGNOSTICS", "DiagnosticGrid", "diagnostic_grid", "invert"]


@dataclass(frozen=True)
class Diagnostic:
    """A line ratio sum(numerator) / sum(denominator) of one ion."""

    name: str
    ion: str
    numerator: tuple[str, ...]
    denominator: tuple[str, ...]
    kind: str  # "te" or "ne": which quantity it measures


DIAGNOSTICS: dict[str, Diagnostic] = {
    d.name: d
    for d in (
        Diagnostic("te_oiii", "O3", ("OIII4959", "OIII5007"), ("OIII4363",), "te"),
        Diagnostic("te_nii", "N2", ("NII6548", "NII6584"), ("NII5755",), "te"),
        Diagnostic("te_siii", "S3", ("SIII9069", "SIII9532"), ("SIII6312",), "te"),
        Diagnostic("te_oii", "O2", ("OII3726", "OII3729"), ("OII7320", "OII7330"), "te"),
        Diagnostic("ne_sii", "S2", ("SII6716",), ("SII6731",), "ne"),
        Diagnostic("ne_oii", "O2", ("OII3729",), ("OII3726",), "ne"),
    )
}

# Grid extent: Te 3,500-31,600 K, ne 1-10^6 cm^-3.
LOG_TE_RANGE = (3.545, 4.5)
LOG_NE_RANGE = (0.0, 6.0)
LOG_TE_STEP = 0.005
LOG_NE_STEP = 0.05


@dataclass(frozen=True)
class DiagnosticGrid:
    """ln(ratio) of every diagnostic on a regular (log10 Te, log10 ne) grid."""

    log_te0: float
    log_ne0: float
    d_log_te: float
    d_log_ne: float
    ln_ratio: dict[str, Tensor]  # name -> [n_te, n_ne]

    def evaluate(self, name: str, log_te: Tensor, log_ne: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Bilinear ln(ratio) and its partial derivatives in log_te and log_ne."""
        table = self.ln_ratio[name]
        nt, nn = table.shape
        ft = (log_te - self.log_te0) / self.d_log_te
        fn = (log_ne - self.log_ne0) / self.d_log_ne
        it = ft.floor().clamp(0, nt - 2)
        jn = fn.floor().clamp(0, nn - 2)
        wt = (ft - it).clamp(0.0, 1.0)
        wn = (fn - jn).clamp(0.0, 1.0)
        flat = table.reshape(-1)
        base = (it * nn + jn).long()
        v00 = flat[base]
        v01 = flat[base + 1]
        v10 = flat[base + nn]
        v11 = flat[base + nn + 1]
        lo = v00 + (v01 - v00) * wn
        hi = v10 + (v11 - v10) * wn
        value = lo + (hi - lo) * wt
        d_te = (hi - lo) / self.d_log_te
        d_ne = ((v01 - v00) + (v11 - v10 - v01 + v00) * wt) / self.d_log_ne
        return value, d_te, d_ne


def ratio_exact(diag: Diagnostic, te: Tensor, ne: Tensor) -> Tensor:
    """The diagnostic's emissivity ratio from a full level-population solve."""
    ion = load_ion(diag.ion, str(te.device), te.dtype)
    pops = ion.populations(te, ne)
    num = sum(ion.line_power(line, pops) for line in diag.numerator)
    den = sum(ion.line_power(line, pops) for line in diag.denominator)
    return num / den


@lru_cache(maxsize=8)
def diagnostic_grid(device: str = "cpu", dtype: torch.dtype = torch.float64) -> DiagnosticGrid:
    """Build (once per device and dtype) the grids of all diagnostics."""
    kw = {"dtype": dtype, "device": torch.device(device)}
    n_te = round((LOG_TE_RANGE[1] - LOG_TE_RANGE[0]) / LOG_TE_STEP) + 1
    n_ne = round((LOG_NE_RANGE[1] - LOG_NE_RANGE[0]) / LOG_NE_STEP) + 1
    log_te = LOG_TE_RANGE[0] + LOG_TE_STEP * torch.arange(n_te, **kw)
    log_ne = LOG_NE_RANGE[0] + LOG_NE_STEP * torch.arange(n_ne, **kw)
    te = (10.0**log_te).view(-1, 1).expand(n_te, n_ne)
    ne = (10.0**log_ne).view(1, -1).expand(n_te, n_ne)
    pops_by_ion: dict[str, Tensor] = {}
    tables: dict[str, Tensor] = {}
    for name, diag in DIAGNOSTICS.items():
        if diag.ion not in pops_by_ion:
            pops_by_ion[diag.ion] = load_ion(diag.ion, device, dtype).populations(te, ne)
        ion = load_ion(diag.ion, device, dtype)
        pops = pops_by_ion[diag.ion]
        num = sum(ion.line_power(line, pops) for line in diag.numerator)
        den = sum(ion.line_power(line, pops) for line in diag.denominator)
        tables[name] = torch.log(num / den)
    return DiagnosticGrid(LOG_TE_RANGE[0], LOG_NE_RANGE[0], LOG_TE_STEP, LOG_NE_STEP, tables)


def invert(
    grid: DiagnosticGrid,
    name: str,
    ln_target: Tensor,
    other: Tensor,
    bounds: tuple[float, float],
    start: Tensor | None = None,
    iterations: int = 24,
    window: float = 0.02,
) -> tuple[Tensor, Tensor, Tensor]:
    """Solve ln R(x, other) = ln_target for x (log Te for "te", log ne for "ne" diagnostics).

    Returns (x, below, above): ``below``/``above`` mark targets outside the model's range
    over ``bounds`` (x is then clamped to the bound the target lies beyond); NaN targets
    give NaN.  Bracketed Newton: a Newton step that leaves the bracket is replaced by
    bisection, so every row converges even on the flat wings of density diagnostics.
    """
    along_te = DIAGNOSTICS[name].kind == "te"

    def f(x: Tensor) -> tuple[Tensor, Tensor]:
        if along_te:
            v, d, _ = grid.evaluate(name, x, other)
        else:
            v, _, d = grid.evaluate(name, other, x)
        return v - ln_target, d

    lo = torch.full_like(ln_target, bounds[0])
    hi = torch.full_like(ln_target, bounds[1])
    f_lo, _ = f(lo)
    f_hi, _ = f(hi)
    bracketed = (f_lo * f_hi) <= 0
    # Outside the bracket the target lies beyond the ratio reached at one bound.
    outside = ~bracketed & torch.isfinite(ln_target)
    below = outside & (f_lo.abs() <= f_hi.abs())
    above = outside & ~below
    x = 0.5 * (lo + hi)
    if start is not None:
        # Warm start: a narrow bracket around the previous solution where it still holds
        # the root, so that a bisection fallback does not throw the iterate far away.
        s = torch.where(torch.isfinite(start), start, x).clamp(bounds[0], bounds[1])
        wlo = (s - window).clamp(min=bounds[0])
        whi = (s + window).clamp(max=bounds[1])
        fwlo, _ = f(wlo)
        fwhi, _ = f(whi)
        narrow = (fwlo * fwhi) <= 0
        lo = torch.where(narrow, wlo, lo)
        hi = torch.where(narrow, whi, hi)
        f_lo = torch.where(narrow, fwlo, f_lo)
        x = torch.where(narrow, s, x)
    for _ in range(iterations):
        fx, dfx = f(x)
        same = (fx * f_lo) > 0
        lo = torch.where(same, x, lo)
        f_lo = torch.where(same, fx, f_lo)
        hi = torch.where(same, hi, x)
        step = x - fx / dfx
        ok = torch.isfinite(step) & (step >= torch.minimum(lo, hi)) & (step <= torch.maximum(lo, hi))
        x = torch.where(ok, step, 0.5 * (lo + hi))
    x = torch.where(below, torch.full_like(x, bounds[0]), x)
    x = torch.where(above, torch.full_like(x, bounds[1]), x)
    x = torch.where(torch.isfinite(ln_target) & torch.isfinite(other), x, torch.full_like(x, float("nan")))
    return x, below, above


def check_transitions() -> None:
    """Fail loudly if a diagnostic names a line the atomic tables do not know."""
    for diag in DIAGNOSTICS.values():
        for line in diag.numerator + diag.denominator:
            if LINE_TRANSITIONS[line][0] != diag.ion:
                raise ValueError(f"{diag.name}: {line} is not a line of {diag.ion}")
