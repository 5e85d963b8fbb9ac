"""Shared helpers of the abundance benchmarks: synthetic nebulae made with PyNeb."""

from __future__ import annotations

import math

import numpy as np
import torch

from skyledger.schema.linelist import LINE_IDS

#: PyNeb atom and wavelength (its labels) for each line id used by the direct method
PYNEB_LINES: dict[str, tuple[str, int | tuple[tuple[int, int], ...]]] = {
    "OIII4363": ("O3", 4363), "OIII4959": ("O3", 4959), "OIII5007": ("O3", 5007),
    "NII5755": ("N2", 5755), "NII6548": ("N2", 6548), "NII6584": ("N2", 6584),
    "SIII6312": ("S3", 6312), "SIII9069": ("S3", 9069), "SIII9532": ("S3", 9531),
    "OII3726": ("O2", 3726), "OII3729": ("O2", 3729),
    "OII7320": ("O2", ((4, 2), (5, 2))), "OII7330": ("O2", ((4, 3), (5, 3))),
    "SII6716": ("S2", 6716), "SII6731": ("S2", 6731),
}  # fmt: skip
ABUNDANCE = {"O3": 1.6e-4, "O2": 6.0e-5, "N2": 8.0e-6, "S2": 6.0e-7, "S3": 2.0e-6}


def zone_temperatures(te_high: float) -> dict[str, float]:
    """Garnett (1992) zones, so every diagnostic has its own known answer."""
    low = 0.70 * te_high + 3000.0
    return {"O3": te_high, "S3": 0.83 * te_high + 1700.0, "N2": low, "O2": low, "S2": low}


def pyneb_atoms():  # type: ignore[no-untyped-def]
    import pyneb as pn

    pn.log_.level = 0
    atoms = {k: pn.Atom(e, s) for k, (e, s) in {"O3": ("O", 3), "N2": ("N", 2), "S3": ("S", 3), "O2": ("O", 2), "S2": ("S", 2)}.items()}
    return pn, atoms, pn.RecAtom("H", 1)


def synthetic_intensities(te_high: float, ne: float) -> dict[str, float]:
    """I(line)/I(Hbeta) x 100 from PyNeb emissivities, each zone at its own Te."""
    _, atoms, h1 = pyneb_atoms()
    zt = zone_temperatures(te_high)
    out = {"HB4861": 100.0}
    for line_id, (ion, wave) in PYNEB_LINES.items():
        te = zt[ion]
        if isinstance(wave, int):
            eps = atoms[ion].getEmissivity(te, ne, wave=wave)
        else:
            eps = sum(atoms[ion].getEmissivity(te, ne, u, l) for u, l in wave)
        out[line_id] = float(100.0 * ABUNDANCE[ion] * eps / h1.getEmissivity(te, ne, wave=4861))
    return out


def to_tensors(rows: list[dict[str, float]], rel_error: float) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.full((len(rows), len(LINE_IDS)), math.nan, dtype=torch.float64)
    for i, r in enumerate(rows):
        for k, v in r.items():
            f[i, LINE_IDS.index(k)] = v
    return f, f.abs() * rel_error


def log_abundance(x: float) -> float:
    return 12.0 + math.log10(x)


__all__ = ["PYNEB_LINES", "ABUNDANCE", "zone_temperatures", "pyneb_atoms", "synthetic_intensities", "to_tensors", "log_abundance", "np"]
