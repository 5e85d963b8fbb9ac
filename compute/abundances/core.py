"""``derive_abundances``: dust correction, direct method and strong-line calibrations with
Monte Carlo uncertainties, for a batch of objects, on one torch device.

Monte Carlo draws are an extra leading batch dimension: row 0 is the nominal (noise-free)
input, rows 1..n_draws perturb every flux by its Gaussian error; everything downstream
(reddening, doublet filling, Te/ne, abundances, calibrations) runs once on all rows.
Flags describe the nominal row; medians and 16th/84th percentiles come from the draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from skyledger.schema.linelist import LINE_IDS
from skyledger.compute.abundances.atomic import doublet_ratio
from skyledger.compute.abundances.direct import DIRECT_QUANTITIES, direct_method
from skyledger.compute.abundances.dust import EXTINCTION_CURVES, balmer_ebv, deredden, extinction_k, intrinsic_balmer_ratios
from skyledger.compute.abundances.flags import AbundanceFlag as F
from skyledger.compute.abundances.strong import STRONG_LINE_METHODS, strong_line
from skyledger.compute.errors import ComputeInputError

__all__ = ["ALL_METHODS", "AbundanceConfig", "Quantity", "MethodResult", "AbundanceResult", "derive_abundances"]

ALL_METHODS: tuple[str, ...] = ("direct", *STRONG_LINE_METHODS)

#: (stronger, weaker) lines from one upper level: a missing one is set from the other
DOUBLETS: tuple[tuple[str, str], ...] = (
    ("OIII5007", "OIII4959"),
    ("NII6584", "NII6548"),
    ("SIII9532", "SIII9069"),
)
AURORAL: dict[str, str] = {"OIII4363": "te_oiii", "NII5755": "te_nii", "SIII6312": "te_siii", "OII7320": "te_oii", "OII7330": "te_oii"}
#: Auroral lines of each temperature diagnostic; their summed flux must reach
#: ``auroral_min_snr`` for the direct method to use them.
AURORAL_GROUPS: dict[str, tuple[str, ...]] = {
    "te_oiii": ("OIII4363",), "te_nii": ("NII5755",), "te_siii": ("SIII6312",), "te_oii": ("OII7320", "OII7330"),
}  # fmt: skip


class AbundanceConfig(BaseModel):
    """Parameters of the abundance computation (hashable; the Task's parameter model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    methods: tuple[str, ...] = ALL_METHODS
    n_draws: int = Field(200, ge=0, description="Monte Carlo draws per object")
    extinction_curve: str = Field("F99", description="dust_extinction R_V-parameterised curve")
    rv: float = 3.1
    balmer_te: float = Field(1.0e4, description="Te (K) of the intrinsic case-B Balmer ratios")
    balmer_ne: float = Field(1.0e2, description="ne (cm^-3) of the intrinsic case-B Balmer ratios")
    auroral_min_snr: float = Field(
        3.0,
        ge=0,
        description="Fewest S/N (flux/error of the nominal flux) of an auroral line (the 7320+7330 sum for T[O II]) "
        "that the direct method uses; below it the line is left out and its zone's Te comes from a Te-Te relation",
    )
    default_ne: float = 100.0
    te_bounds: tuple[float, float] = (4000.0, 30000.0)
    ne_bounds: tuple[float, float] = (1.0, 1.0e6)
    dtype: Literal["float64", "float32"] = "float64"
    max_rows: int = Field(400_000, ge=1, description="objects x (draws+1) processed at once")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in v if m not in ALL_METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {', '.join(ALL_METHODS)}")
        return v

    @field_validator("extinction_curve")
    @classmethod
    def _known_curve(cls, v: str) -> str:
        if v not in EXTINCTION_CURVES:
            raise ValueError(f"unknown extinction curve {v!r}; choose one of {', '.join(EXTINCTION_CURVES)}")
        return v


@dataclass(frozen=True)
class Quantity:
    """One quantity per object: Monte Carlo median and 16th/84th percentiles, and the nominal value."""

    median: Tensor
    p16: Tensor
    p84: Tensor
    nominal: Tensor


@dataclass(frozen=True)
class MethodResult:
    """Results of one method: quantities by name (``oh``; more for ``direct``) and flags."""

    method: str
    values: dict[str, Quantity]
    flags: Tensor  # int64 [n_objects], bits of AbundanceFlag


@dataclass(frozen=True)
class AbundanceResult:
    """All methods for a batch of objects; ``ebv`` is shared by the methods."""

    methods: dict[str, MethodResult]
    ebv: Quantity
    dust_flags: Tensor

    def columns(self) -> dict[str, Tensor]:
        """Flat columns ``{method}_{quantity}_{median|p16|p84}`` and ``{method}_flags`` for a writer."""
        cols: dict[str, Tensor] = {}
        for stat in ("median", "p16", "p84"):
            cols[f"ebv_{stat}"] = getattr(self.ebv, stat)
        for name, res in self.methods.items():
            for q, v in res.values.items():
                for stat in ("median", "p16", "p84"):
                    cols[f"{name}_{q}_{stat}"] = getattr(v, stat)
            cols[f"{name}_flags"] = res.flags
        return cols


def _bits(mask: Tensor, bit: F) -> Tensor:
    return torch.where(mask, int(bit), 0).to(torch.int64)


def _summarise(rows: Tensor, n_draws: int) -> Quantity:
    """rows [n_draws+1, n_obj] -> Quantity (draw statistics ignore NaN draws)."""
    nominal = rows[0]
    if n_draws == 0:
        return Quantity(nominal, nominal, nominal, nominal)
    q = torch.tensor([0.16, 0.5, 0.84], dtype=rows.dtype, device=rows.device)
    p16, med, p84 = torch.nanquantile(rows[1:], q, dim=0)
    # No nominal value (a needed line missing or non-positive) means no result, even if
    # noise pushes some draws positive: their statistics would be biased, not informative.
    nan = torch.full_like(nominal, math.nan)
    defined = torch.isfinite(nominal)
    return Quantity(torch.where(defined, med, nan), torch.where(defined, p16, nan), torch.where(defined, p84, nan), nominal)


def _mc_unstable(rows: Tensor, n_draws: int) -> Tensor:
    if n_draws == 0:
        return torch.zeros_like(rows[0], dtype=torch.bool)
    bad = (~torch.isfinite(rows[1:])).float().mean(0)
    return torch.isfinite(rows[0]) & (bad > 0.5)


def derive_abundances(
    fluxes: Tensor,
    errors: Tensor,
    dust_corrected: Tensor,
    config: AbundanceConfig | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    line_ids: tuple[str, ...] = LINE_IDS,
) -> AbundanceResult:
    """Abundances for ``fluxes``/``errors`` [n_objects, n_lines] (columns in ``line_ids``, NaN = missing).

    ``dust_corrected`` [n_objects] marks inputs already corrected for dust.  Fluxes need a
    common scale only (ratios are used throughout).  ``generator`` (on ``device``) seeds the
    Monte Carlo draws; results for a given seed do not depend on chunking only if the
    whole batch fits in one chunk (``config.max_rows``).
    """
    cfg = config or AbundanceConfig()
    dev = torch.device(device) if device is not None else fluxes.device
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    if fluxes.shape != errors.shape or fluxes.ndim != 2 or fluxes.shape[1] != len(line_ids):
        raise ComputeInputError(f"fluxes and errors must both be [n_objects, {len(line_ids)}]; got {tuple(fluxes.shape)} and {tuple(errors.shape)}")
    missing_ids = [k for k in ("HB4861",) if k not in line_ids]
    if missing_ids:
        raise ComputeInputError(f"line_ids must include {missing_ids}")
    n_obj = fluxes.shape[0]
    per_chunk = max(1, cfg.max_rows // (cfg.n_draws + 1))
    parts = [
        _derive_chunk(
            fluxes[s : s + per_chunk].to(dev, dtype),
            errors[s : s + per_chunk].to(dev, dtype),
            dust_corrected[s : s + per_chunk].to(dev, torch.bool),
            cfg,
            generator,
            line_ids,
        )
        for s in range(0, n_obj, per_chunk)
    ]
    if len(parts) == 1:
        return parts[0]
    cat = lambda qs: Quantity(*(torch.cat([getattr(q, f) for q in qs]) for f in ("median", "p16", "p84", "nominal")))  # noqa: E731
    methods = {
        m: MethodResult(
            m,
            {k: cat([p.methods[m].values[k] for p in parts]) for k in parts[0].methods[m].values},
            torch.cat([p.methods[m].flags for p in parts]),
        )
        for m in parts[0].methods
    }
    return AbundanceResult(methods, cat([p.ebv for p in parts]), torch.cat([p.dust_flags for p in parts]))


def _derive_chunk(
    flux0: Tensor,
    err: Tensor,
    corrected: Tensor,
    cfg: AbundanceConfig,
    generator: torch.Generator | None,
    line_ids: tuple[str, ...],
) -> AbundanceResult:
    n_obj, n_lines = flux0.shape
    col = {k: i for i, k in enumerate(line_ids)}
    d = cfg.n_draws
    present = torch.isfinite(flux0)
    bad_err = present & ~(torch.isfinite(err) & (err >= 0))
    err = torch.where(bad_err | ~present, torch.zeros_like(err), err)
    obj_flags = _bits(bad_err.any(1), F.BAD_ERROR) | _bits((present & (flux0 <= 0)).any(1), F.NONPOSITIVE_FLUX)

    noise = torch.randn((d, n_obj, n_lines), generator=generator, dtype=flux0.dtype, device=flux0.device)
    flux = torch.cat([flux0.unsqueeze(0), flux0.unsqueeze(0) + err.unsqueeze(0) * noise], dim=0)
    # Non-positive fluxes (given or drawn) carry no ratio information: treat as missing.
    flux = torch.where(flux > 0, flux, torch.full_like(flux, math.nan))

    def line(k: str) -> Tensor:
        return flux[..., col[k]] if k in col else torch.full_like(flux[..., 0], math.nan)

    lines = {k: line(k) for k in set(line_ids) | {"HA6563", "HG4340", "HB4861"}}
    theory = torch.zeros((n_obj,), dtype=torch.bool, device=flux.device)
    for strong, weak in DOUBLETS:
        r = doublet_ratio(strong, weak)
        s, w = lines.get(strong, line(strong)), lines.get(weak, line(weak))
        fill_w = torch.isfinite(s) & ~torch.isfinite(w)
        fill_s = torch.isfinite(w) & ~torch.isfinite(s)
        theory |= (fill_w | fill_s)[0]
        lines[weak] = torch.where(fill_w, s / r, w)
        lines[strong] = torch.where(fill_s, w * r, s)
    obj_flags |= _bits(theory, F.RATIO_FROM_THEORY)

    # Reddening from the Balmer decrement, per draw; skipped for corrected inputs.
    ha_hb0, hg_hb0 = intrinsic_balmer_ratios(cfg.balmer_te, cfg.balmer_ne)
    k_ids = tuple(lines)
    k = extinction_k(cfg.extinction_curve, cfg.rv, k_ids, flux.device, flux.dtype)
    kd = dict(zip(k_ids, k.tolist(), strict=True))
    ebv, used_hg = balmer_ebv(lines["HA6563"], lines["HB4861"], lines["HG4340"], kd["HA6563"], kd["HB4861"], kd["HG4340"], ha_hb0, hg_hb0)
    ebv = torch.where(corrected.unsqueeze(0), torch.full_like(ebv, math.nan), ebv)
    dust_flags = _bits(corrected, F.ALREADY_DUST_CORRECTED)
    dust_flags |= _bits(~corrected & ~torch.isfinite(ebv[0]), F.NO_BALMER_DECREMENT)
    dust_flags |= _bits(~corrected & (ebv[0] < 0), F.NEGATIVE_REDDENING_CLIPPED)
    dust_flags |= _bits(~corrected & used_hg[0], F.BALMER_FROM_HGAMMA)
    ebv = ebv.clamp(min=0.0)
    apply = torch.where(torch.isfinite(ebv), ebv, torch.zeros_like(ebv))
    stacked = deredden(torch.stack([lines[i] for i in k_ids], dim=-1), apply, k)
    rows = {i: stacked[..., j].reshape(-1) for j, i in enumerate(k_ids)}
    shape = (d + 1, n_obj)

    methods: dict[str, MethodResult] = {}
    common = obj_flags | dust_flags
    if "direct" in cfg.methods:
        # An auroral line below the S/N threshold is left out of the direct method (in
        # every draw): a 1-sigma 5755 gave T[N II] 10.5 kK where the T-T relation gave
        # 13.4 kK and moved O/H by +0.09 dex; its zone then takes a Te-Te relation.
        rows_direct = dict(rows)
        snr_low = torch.zeros((n_obj,), dtype=torch.bool, device=flux.device)
        for group in AURORAL_GROUPS.values():
            cols = [col[k] for k in group if k in col]
            if not cols:
                continue
            f_sum = torch.nan_to_num(flux0[:, cols], nan=0.0).sum(1)
            e_sum = torch.nan_to_num(err[:, cols], nan=0.0).pow(2).sum(1).sqrt()
            low = present[:, cols].any(1) & (e_sum > 0) & (f_sum < cfg.auroral_min_snr * e_sum)
            snr_low |= low
            for k in group:
                if k in rows_direct:
                    rows_direct[k] = torch.where(low.expand(shape).reshape(-1), torch.full_like(rows_direct[k], math.nan), rows_direct[k])
        vals, fl = direct_method(
            rows_direct, te_bounds=cfg.te_bounds, ne_bounds=cfg.ne_bounds, default_ne=cfg.default_ne
        )
        flags = fl.reshape(shape)[0] | common
        flags |= _bits(snr_low, F.AURORAL_LOW_SN)
        values = {}
        for q in DIRECT_QUANTITIES:
            r = vals[q].reshape(shape)
            values[q] = _summarise(r, d)
            if q == "oh":
                flags |= _bits(_mc_unstable(r, d), F.MC_UNSTABLE)
        methods["direct"] = MethodResult("direct", values, flags)
    for m in cfg.methods:
        if m == "direct":
            continue
        oh, out, extra = strong_line(m, rows)
        oh_rows = oh.reshape(shape)
        flags = common | extra.reshape(shape)[0] | _bits(out.reshape(shape)[0], F.CALIBRATION_OUT_OF_RANGE)
        flags |= _bits(~torch.isfinite(oh_rows[0]), F.MISSING_LINES) | _bits(_mc_unstable(oh_rows, d), F.MC_UNSTABLE)
        methods[m] = MethodResult(m, {"oh": _summarise(oh_rows, d)}, flags)
    return AbundanceResult(methods, _summarise(ebv, d), dust_flags | obj_flags)
