"""The direct (Te-based) method: joint Te-ne solution, ionic and total abundances.

Zones and temperatures
    high ionisation (O++):        T[O III]
    intermediate (S++):           T[S III]
    low ionisation (O+, N+, S+):  T[N II], else T[O II]
Where a zone's auroral line is missing (or below the S/N threshold, see
:mod:`.core`), its temperature follows from another zone by the Garnett (1992, AJ 103,
1330) relations  T[N II] = T[O II] = 0.70 T[O III] + 3000 K  and
T[S III] = 0.83 T[O III] + 1700 K (inverted where T[O III] itself is missing). Flag bits
TE_*_FROM_* say, per zone, which measured temperature or which relation was used.

Density: ne[S II] 6716/6731, else ne[O II] 3729/3726, else the configured default; the
low-ionisation zone temperature is used for both (they arise in the same zone).  Te and ne
are iterated together (Gauss-Seidel on the two kinds of diagnostics) until both settle.

Totals: O/H = O+/H+ + O++/H+;  N/O = N+/O+ (the usual ICF(N+) = O/O+ assumption);
S/H = (S+ + S++)/H+ x ICF with the Stasinska (1978, A&A 66, 257) ICF
[1 - (1 - O+/O)^3]^(-1/3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from skyledger.compute.abundances.atomic import load_hydrogen, load_ion
from skyledger.compute.abundances.diagnostics import DIAGNOSTICS, diagnostic_grid, invert
from skyledger.compute.abundances.flags import AbundanceFlag as F

__all__ = ["DIRECT_QUANTITIES", "direct_method", "garnett_relations"]

#: per-row outputs of :func:`direct_method` (K, cm^-3, 12+log X/H, dex)
DIRECT_QUANTITIES: tuple[str, ...] = (
    "oh", "no", "sh",
    "te_oiii", "te_nii", "te_siii", "te_oii", "ne_sii", "ne_oii",
    "o_plus", "o_plus2", "n_plus", "s_plus", "s_plus2",
)  # fmt: skip

_TE_FLAG = {"te_oiii": F.NO_TE_OIII, "te_nii": F.NO_TE_NII, "te_siii": F.NO_TE_SIII, "te_oii": F.NO_TE_OII}

# (ion, lines summed, zone) for each ionic abundance.
_IONIC: dict[str, tuple[str, tuple[str, ...], str]] = {
    "o_plus2": ("O3", ("OIII4959", "OIII5007"), "high"),
    "o_plus": ("O2", ("OII3726", "OII3729"), "low"),
    "n_plus": ("N2", ("NII6548", "NII6584"), "low"),
    "s_plus": ("S2", ("SII6716", "SII6731"), "low"),
    "s_plus2": ("S3", ("SIII9069", "SIII9532"), "int"),
}


def _first(*candidates: Tensor) -> Tensor:
    """Element-wise first finite value among the candidates (NaN where none is)."""
    out = candidates[-1]
    for c in reversed(candidates[:-1]):
        out = torch.where(torch.isfinite(c), c, out)
    return out


def garnett_relations(te: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Adopted (T_high, T_int, T_low) from the direct temperatures, Garnett (1992) where missing."""
    t_lowd = _first(te["te_nii"], te["te_oii"])
    t_high = _first(te["te_oiii"], (te["te_siii"] - 1700.0) / 0.83, (t_lowd - 3000.0) / 0.70)
    t_low = _first(t_lowd, 0.70 * t_high + 3000.0)
    t_int = _first(te["te_siii"], 0.83 * t_high + 1700.0)
    return t_high, t_int, t_low


def _zone_sources(te: dict[str, Tensor], t_high: Tensor, t_int: Tensor, t_low: Tensor) -> Tensor:
    """Flag bits saying where each zone's temperature came from (see :func:`garnett_relations`)."""

    def bits(mask: Tensor, bit: F) -> Tensor:
        return torch.where(mask, int(bit), 0)

    nii, oii = torch.isfinite(te["te_nii"]), torch.isfinite(te["te_oii"])
    oiii, siii = torch.isfinite(te["te_oiii"]), torch.isfinite(te["te_siii"])
    return (
        bits(oiii, F.TE_HIGH_FROM_OIII) | bits(~oiii & torch.isfinite(t_high), F.TE_HIGH_FROM_RELATION)
        | bits(nii, F.TE_LOW_FROM_NII) | bits(~nii & oii, F.TE_LOW_FROM_OII)
        | bits(~nii & ~oii & torch.isfinite(t_low), F.TE_LOW_FROM_RELATION)
        | bits(siii, F.TE_INT_FROM_SIII) | bits(~siii & torch.isfinite(t_int), F.TE_INT_FROM_RELATION)
        | bits(~torch.isfinite(t_high) & ~torch.isfinite(t_low) & ~torch.isfinite(t_int), F.NO_TE)
    )  # fmt: skip


def _ln_ratio(lines: dict[str, Tensor], num: tuple[str, ...], den: tuple[str, ...]) -> Tensor:
    """ln(sum num / sum den); NaN if a line is missing or the ratio is not positive."""
    a = sum(lines[k] for k in num)
    b = sum(lines[k] for k in den)
    ok = (a > 0) & (b > 0)
    return torch.where(ok, torch.log(torch.where(ok, a / b, torch.ones_like(a))), torch.full_like(a, math.nan))


def direct_method(
    lines: dict[str, Tensor],
    *,
    te_bounds: tuple[float, float] = (4000.0, 30000.0),
    ne_bounds: tuple[float, float] = (1.0, 1.0e6),
    default_ne: float = 100.0,
    outer_iterations: int = 5,
) -> tuple[dict[str, Tensor], Tensor]:
    """Direct-method abundances for rows of Hbeta-normalisable, dust-corrected line fluxes.

    ``lines`` maps line id -> [rows] (NaN where missing).  Returns the per-row quantities
    named in :data:`DIRECT_QUANTITIES` and a per-row int64 flags tensor.
    """
    hb = lines["HB4861"]
    device, dtype = hb.device, hb.dtype
    grid = diagnostic_grid(str(device), dtype)
    lt_bounds = (math.log10(te_bounds[0]), math.log10(te_bounds[1]))
    ln_bounds = (math.log10(ne_bounds[0]), math.log10(ne_bounds[1]))
    flags = torch.zeros(hb.shape, dtype=torch.int64, device=device)
    nan = torch.full_like(hb, math.nan)

    ln_obs = {name: _ln_ratio(lines, d.numerator, d.denominator) for name, d in DIAGNOSTICS.items()}
    te_names = [n for n, d in DIAGNOSTICS.items() if d.kind == "te"]
    ne_names = [n for n, d in DIAGNOSTICS.items() if d.kind == "ne"]
    log_te: dict[str, Tensor] = {n: nan for n in te_names}
    log_ne_d: dict[str, Tensor] = {n: nan for n in ne_names}
    log_ne = torch.full_like(hb, math.log10(default_ne))
    te_out = torch.zeros_like(hb, dtype=torch.bool)
    ne_low = torch.zeros_like(te_out)
    ne_high = torch.zeros_like(te_out)
    previous = log_ne
    for it in range(outer_iterations):
        # Cold start needs a full bracketed search; afterwards Newton from the last pass.
        iters = 24 if it == 0 else 8
        te_out = torch.zeros_like(te_out)
        prev_te = dict(log_te)
        for name in te_names:
            start = None if it == 0 else log_te[name]
            x, below, above = invert(grid, name, ln_obs[name], log_ne, lt_bounds, start, iters)
            te_out |= below | above
            log_te[name] = torch.where(below | above, nan, x)
        te_lin = {n: 10.0 ** log_te[n] for n in te_names}
        _, _, t_low = garnett_relations(te_lin)
        lt_low = torch.log10(torch.where(torch.isfinite(t_low), t_low, torch.full_like(t_low, 1.0e4)))
        ne_low = torch.zeros_like(te_out)
        ne_high = torch.zeros_like(te_out)
        for name in ne_names:
            start = None if it == 0 else log_ne_d[name]
            x, below, above = invert(grid, name, ln_obs[name], lt_low, ln_bounds, start, iters)
            ne_low |= below
            ne_high |= above
            log_ne_d[name] = x
        previous, log_ne = log_ne, _first(log_ne_d["ne_sii"], log_ne_d["ne_oii"], torch.full_like(hb, math.log10(default_ne)))
    # Converged when the last pass moved neither ne nor any Te (in dex).
    te_moved = torch.stack([(log_te[n] - prev_te[n]).abs() for n in te_names]).nan_to_num(0.0).amax(0)
    moved = ((log_ne - previous).abs() > 1e-3) | (te_moved > 1e-4)
    flags |= torch.where(moved, int(F.NOT_CONVERGED), 0)
    flags |= torch.where(te_out, int(F.TE_OUT_OF_RANGE), 0)
    flags |= torch.where(ne_low, int(F.NE_LOW_DENSITY_LIMIT), 0)
    flags |= torch.where(ne_high, int(F.NE_HIGH_DENSITY_LIMIT), 0)
    no_density = ~torch.isfinite(log_ne_d["ne_sii"]) & ~torch.isfinite(log_ne_d["ne_oii"])
    flags |= torch.where(no_density, int(F.NO_DENSITY), 0)

    te = {n: 10.0 ** log_te[n] for n in te_names}
    for name, bit in _TE_FLAG.items():
        flags |= torch.where(torch.isfinite(te[name]), 0, int(bit))
    t_high, t_int, t_low = garnett_relations(te)
    flags |= _zone_sources(te, t_high, t_int, t_low)
    zone_t = {"high": t_high, "int": t_int, "low": t_low}
    zone_direct = {
        "high": torch.isfinite(te["te_oiii"]),
        "int": torch.isfinite(te["te_siii"]),
        "low": torch.isfinite(te["te_nii"]) | torch.isfinite(te["te_oii"]),
    }
    ne = 10.0**log_ne
    hyd = load_hydrogen(str(device), dtype)
    out: dict[str, Tensor] = {**te, "ne_sii": 10.0 ** log_ne_d["ne_sii"], "ne_oii": 10.0 ** log_ne_d["ne_oii"]}
    used_relation = torch.zeros_like(te_out)
    for key, (ion_key, ids, zone) in _IONIC.items():
        t = zone_t[zone]
        ion = load_ion(ion_key, str(device), dtype)
        t_safe = torch.where(torch.isfinite(t), t, torch.full_like(t, 1.0e4)).clamp(*te_bounds)
        pops = ion.populations(t_safe, ne)
        power = sum(ion.line_power(k, pops) for k in ids)  # erg s^-1 per ion
        eps_hb = hyd.emissivity("HB4861", t_safe, ne) * ne  # per proton, same units
        flux = sum(lines[k] for k in ids)
        ok = (flux > 0) & (hb > 0) & torch.isfinite(t)
        val = 12.0 + torch.log10(torch.where(ok, flux / hb * eps_hb / power, torch.ones_like(hb)))
        out[key] = torch.where(ok, val, nan)
        used_relation |= ok & ~zone_direct[zone]
    flags |= torch.where(used_relation, int(F.TE_FROM_RELATION), 0)

    o1 = 10.0 ** (out["o_plus"] - 12.0)
    o2 = 10.0 ** (out["o_plus2"] - 12.0)
    out["oh"] = 12.0 + torch.log10(o1 + o2)
    out["no"] = out["n_plus"] - out["o_plus"]
    frac = (o1 / (o1 + o2)).clamp(1e-6, 1.0)
    icf = (1.0 - (1.0 - frac) ** 3) ** (-1.0 / 3.0)
    s12 = 10.0 ** (out["s_plus"] - 12.0) + 10.0 ** (out["s_plus2"] - 12.0)
    out["sh"] = 12.0 + torch.log10(s12 * icf)
    flags |= torch.where(torch.isfinite(out["oh"]), 0, int(F.MISSING_LINES))
    return out, flags
