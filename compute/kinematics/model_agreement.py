"""Agreement of the rotation-curve models fitted to the same velocities.

The models (``arctan``, ``freeman``) share the disk geometry (centre, PA, inclination,
V_sys); only the curve differs.  On a patchy, beam-smeared map one model can end in a
minimum with the wrong geometry while the other finds the right one.  So each model is
refitted from the geometry of every other model's optimum (:func:`refit_from_each_other`)
and keeps, per galaxy, the solution of lower robust cost over all its usable points
(:attr:`DiskFit.cost`, which does not depend on which points a solution rejected).
Where the models still disagree (:func:`disagree`), every model's row carries
MODELS_DISAGREE:

* PA: wrapped difference above max(10 deg, 3 sigma),
* inclination: above max(15 deg, 3 sigma),
* V_sys: above max(20 km/s, 3 sigma),

sigma being the two models' errors in quadrature (0 where an error is undefined), the
floors being the accuracy asked of the geometry on real maps (PA 10 deg, inclination
15 deg) and a V_sys offset far beyond what the curve shape alone moves (a few km/s).

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .disk import DiskData, DiskFit, DiskFitConfig, DiskFlag, fit_disks

__all__ = ["INC_LIMIT_DEG", "PA_LIMIT_DEG", "VSYS_LIMIT_KMS", "agree", "disagree", "refit_from_each_other"]

PA_LIMIT_DEG = 10.0
INC_LIMIT_DEG = 15.0
VSYS_LIMIT_KMS = 20.0
_FAILED = int(DiskFlag.TOO_FEW_POINTS | DiskFlag.FIT_FAILED)


def _rows(better: torch.Tensor, a: DiskFit, b: DiskFit) -> DiskFit:
    """Per galaxy, ``b``'s row where ``better`` is True, else ``a``'s."""
    out = {}
    for f in dataclasses.fields(DiskFit):
        ta, tb = getattr(a, f.name), getattr(b, f.name)
        if ta.numel() == 0 or ta.shape[:1] != better.shape:
            out[f.name] = ta
            continue
        out[f.name] = torch.where(better.view(-1, *([1] * (ta.dim() - 1))), tb, ta)
    return DiskFit(**out)


def refit_from_each_other(
    data: DiskData, fits: dict[str, DiskFit], configs: dict[str, DiskFitConfig]
) -> dict[str, DiskFit]:
    """Each model's fit, refitted from every other model's geometry; per galaxy the
    solution of lower cost is kept (see the module docstring)."""
    out = dict(fits)
    for model, fit in fits.items():
        best = fit
        for other, other_fit in fits.items():
            if other == model:
                continue
            refit = fit_disks(data, configs[model], start=other_fit.theta)
            ok = (refit.flags & _FAILED) == 0
            better = ok & (refit.cost < best.cost)
            best = _rows(better, best, refit)
        out[model] = best
    return out


def disagree(fits: dict[str, DiskFit]) -> torch.Tensor:
    """(B,) bool: some pair of the models' geometries disagrees (see the module docstring)."""
    items = list(fits.values())
    nb = items[0].theta.shape[0]
    out = torch.zeros(nb, dtype=torch.bool, device=items[0].theta.device)
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            a, b = items[i], items[j]
            ea, eb = torch.nan_to_num(a.errors), torch.nan_to_num(b.errors)
            sig = torch.sqrt(ea * ea + eb * eb)
            d = a.theta - b.theta
            dpa = torch.remainder(d[:, 2] + math.pi, 2 * math.pi) - math.pi
            pa_bad = dpa.abs() > torch.clamp_min(3 * sig[:, 2], math.radians(PA_LIMIT_DEG))
            inc_bad = d[:, 3].abs() > torch.clamp_min(3 * sig[:, 3], math.radians(INC_LIMIT_DEG))
            vsys_bad = d[:, 4].abs() > torch.clamp_min(3 * sig[:, 4], VSYS_LIMIT_KMS)
            both = ((a.flags & _FAILED) == 0) & ((b.flags & _FAILED) == 0)
            out |= both & torch.nan_to_num((pa_bad | inc_bad | vsys_bad).to(torch.float64)).bool()
    return out


def agree(data: DiskData, fits: dict[str, DiskFit], configs: dict[str, DiskFitConfig]) -> dict[str, DiskFit]:
    """:func:`refit_from_each_other`, then MODELS_DISAGREE on every model's row where
    :func:`disagree`; one model alone is returned as it is."""
    if len(fits) < 2:
        return fits
    out = refit_from_each_other(data, fits, configs)
    flag = torch.where(disagree(out), int(DiskFlag.MODELS_DISAGREE), 0)
    return {m: dataclasses.replace(f, flags=f.flags | flag) for m, f in out.items()}
