"""Balmer-decrement reddening and dust correction.

k(lambda) = A(lambda) / E(B-V) = R_V * A(lambda)/A(V) comes from the maintained
``dust_extinction`` package (Gordon et al.), evaluated once per line on the CPU at the
line's vacuum wavelength and then used as a tensor.  The intrinsic case-B ratios come
from the shipped Storey & Hummer (1995) table at a stated (Te, ne).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from skyledger.schema.linelist import LINES
from skyledger.compute.abundances.atomic import load_hydrogen
from skyledger.compute.errors import ComputeInputError

__all__ = ["EXTINCTION_CURVES", "extinction_k", "intrinsic_balmer_ratios", "balmer_ebv", "deredden"]

#: R_V-parameterised Milky Way curves (dust_extinction class names) that cover 3700 A - 1 um
EXTINCTION_CURVES: tuple[str, ...] = ("CCM89", "O94", "F99", "F04", "M14", "F19", "G23")


@lru_cache(maxsize=32)
def _k_values(curve: str, rv: float, line_ids: tuple[str, ...]) -> tuple[float, ...]:
    if curve not in EXTINCTION_CURVES:
        raise ComputeInputError(f"unknown extinction curve {curve!r}; choose one of {', '.join(EXTINCTION_CURVES)}")
    import astropy.units as u
    import dust_extinction.parameter_averages as pa
    import numpy as np

    model = getattr(pa, curve)(Rv=rv)
    wave = np.array([LINES[i].vacuum_wavelength for i in line_ids]) * u.AA
    return tuple(float(v) for v in rv * np.asarray(model(wave)))


def extinction_k(curve: str, rv: float, line_ids: tuple[str, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """k(lambda) for each line id, [n_lines], on the device."""
    return torch.tensor(_k_values(curve, float(rv), tuple(line_ids)), dtype=dtype, device=device)


def intrinsic_balmer_ratios(te: float, ne: float) -> tuple[float, float]:
    """Case-B Halpha/Hbeta and Hgamma/Hbeta (SH95) at te (K), ne (cm^-3): 2.863, 0.468 at 1e4 K, 100."""
    h = load_hydrogen()
    t = torch.tensor(te, dtype=torch.float64)
    n = torch.tensor(ne, dtype=torch.float64)
    hb = h.emissivity("HB4861", t, n)
    return float(h.emissivity("HA6563", t, n) / hb), float(h.emissivity("HG4340", t, n) / hb)


def balmer_ebv(
    ha: Tensor, hb: Tensor, hg: Tensor, k_ha: float, k_hb: float, k_hg: float, ha_hb0: float, hg_hb0: float
) -> tuple[Tensor, Tensor]:
    """E(B-V) from Halpha/Hbeta, or Hgamma/Hbeta where Halpha is unusable; NaN where neither.

    Returns (ebv, used_hgamma).  Negative values are returned as they are; the caller
    clips them (and flags) so that Monte Carlo draws keep their scatter around zero.
    """
    ok_a = (ha > 0) & (hb > 0)
    ok_g = (hg > 0) & (hb > 0)
    ebv_a = 2.5 / (k_hb - k_ha) * torch.log10(torch.where(ok_a, ha / hb, torch.ones_like(ha)) / ha_hb0)
    ebv_g = 2.5 / (k_hg - k_hb) * torch.log10(hg_hb0 / torch.where(ok_g, hg / hb, torch.ones_like(hg)))
    nan = torch.full_like(ha, float("nan"))
    use_g = ~ok_a & ok_g
    ebv = torch.where(ok_a, ebv_a, torch.where(ok_g, ebv_g, nan))
    return ebv, use_g


def deredden(flux: Tensor, ebv: Tensor, k: Tensor) -> Tensor:
    """I_corr = I_obs 10^(0.4 E(B-V) k(lambda)); flux [..., n_lines], ebv [...], k [n_lines]."""
    return flux * torch.pow(10.0, 0.4 * ebv.unsqueeze(-1) * k)
