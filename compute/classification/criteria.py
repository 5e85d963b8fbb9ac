"""Published line-ratio demarcations, one pure torch function each, with its citation.

Pure numerics, no configuration and no order: :mod:`skyledger.compute.classification.diagnostic`
decides which criterion applies in which context and in which order
(``docs/nebula_classification.md``).  ``x`` and ``y`` are log10 line ratios; [S II] is the
sum of the 6716 and 6731 lines, [O I] is 6300, [N II] 6584, [O III] 5007.  Curves return
the y of the demarcation at x; criteria return a boolean tensor (False where an input is
NaN, i.e. a ratio that was not measured: callers test availability themselves).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "CIARDULLO02_M5007_ZERO_POINT",
    "HO97_NII_HA",
    "HO97_OI_HA",
    "HO97_SII_HA",
    "above_hyperbola",
    "above_kewley01",
    "ciardullo02_m5007",
    "ciardullo02_pn",
    "dig_lacerda18",
    "ho97_red_agn",
    "kauffmann03_nii",
    "kewley01_nii",
    "kewley01_oi",
    "kewley01_sii",
    "kewley06_oi",
    "kewley06_sii",
    "snr_oi_ha",
    "snr_sii_ha",
]


# --------------------------------------------------------------------------- BPT curves


def kauffmann03_nii(x: Tensor) -> Tensor:
    """Kauffmann et al. 2003, MNRAS 346, 1055, eq. 1: log([OIII]/Hb) = 0.61/(log([NII]/Ha) - 0.05) + 1.3 (x < 0.05)."""
    return 0.61 / (x - 0.05) + 1.3


def kewley01_nii(x: Tensor) -> Tensor:
    """Kewley et al. 2001, ApJ 556, 121, eq. 5: log([OIII]/Hb) = 0.61/(log([NII]/Ha) - 0.47) + 1.19 (x < 0.47)."""
    return 0.61 / (x - 0.47) + 1.19


def kewley01_sii(x: Tensor) -> Tensor:
    """Kewley et al. 2001, eq. 6: log([OIII]/Hb) = 0.72/(log([SII]/Ha) - 0.32) + 1.30 (x < 0.32)."""
    return 0.72 / (x - 0.32) + 1.30


def kewley01_oi(x: Tensor) -> Tensor:
    """Kewley et al. 2001, eq. 7: log([OIII]/Hb) = 0.73/(log([OI]/Ha) + 0.59) + 1.33 (x < -0.59)."""
    return 0.73 / (x + 0.59) + 1.33


def kewley06_sii(x: Tensor) -> Tensor:
    """Kewley et al. 2006, MNRAS 372, 961, eq. 6: Seyfert above log([OIII]/Hb) = 1.89 log([SII]/Ha) + 0.76."""
    return 1.89 * x + 0.76


def kewley06_oi(x: Tensor) -> Tensor:
    """Kewley et al. 2006, eq. 7: Seyfert above log([OIII]/Hb) = 1.18 log([OI]/Ha) + 1.30."""
    return 1.18 * x + 1.30


def above_hyperbola(x: Tensor, y: Tensor, curve: Callable[[Tensor], Tensor], asymptote: float) -> Tensor:
    """Whether (x, y) lies above a hyperbolic demarcation whose vertical asymptote is at ``asymptote``.

    Right of the asymptote the hyperbola's other branch would mislead: every point there
    is beyond the starburst limit, so it counts as above.
    """
    return (x >= asymptote) | (y > curve(torch.clamp(x, max=asymptote - 1e-9)))


def above_kewley01(n2: Tensor, s2: Tensor, o1: Tensor, o3hb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Above the Kewley et al. (2001) maximum-starburst line in the [N II], [S II] and [O I] diagrams."""
    return (
        above_hyperbola(n2, o3hb, kewley01_nii, 0.47),
        above_hyperbola(s2, o3hb, kewley01_sii, 0.32),
        above_hyperbola(o1, o3hb, kewley01_oi, -0.59),
    )


# --------------------------------------------------------------------------- shocks (SNR)


def snr_sii_ha(s2: Tensor, minimum: float = 0.4) -> Tensor:
    """[S II](6716+6731)/Ha >= 0.4: shock-excited (SNR) rather than photoionised.

    Mathewson & Clarke 1973, ApJ 180, 725; the standard optical SNR criterion since, e.g.
    Blair & Long 2004, ApJS 155, 101, and the baseline Kopsacheili et al. 2020 (MNRAS 491,
    889) compare against.  ``s2`` is log10([S II]/Ha).
    """
    return s2 >= math.log10(minimum)


def snr_oi_ha(o1: Tensor, minimum: float = 0.1) -> Tensor:
    """[O I]6300/Ha >= 0.1: the neutral-oxygen zone behind a radiative shock.

    Fesen, Blair & Kirshner 1985 (ApJ 292, 29) showed that strong [O I] (and [O II]),
    together with the [S II]/Ha test, separates evolved SNRs from HII regions;
    Kopsacheili et al. 2020 (MNRAS 491, 889) define an [O I]/Ha SNR criterion from
    MAPPINGS III shock and photoionisation grids.  **The value 0.1 is not verified against
    either paper** (their tables were not available to us; the abstracts give no number):
    it is the value used by this project, which keeps 98.7-100 % of the HII test grids
    below it (docs/nebula_classification.md).  ``o1`` is log10([O I]/Ha).
    """
    return o1 >= math.log10(minimum)


# --------------------------------------------------------------------------- red-only (no Hb / [O III])

#: Ho, Filippenko & Sargent 1997, ApJS 112, 315: AGN/LINER (not HII) at or above these
#: ratios to Halpha when only the red lines are available.
HO97_NII_HA = 0.6
HO97_SII_HA = 0.4
HO97_OI_HA = 0.08


def ho97_red_agn(n2: Tensor, s2: Tensor, o1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[N II]/Ha >= 0.6, [S II]/Ha >= 0.4, [O I]/Ha >= 0.08: the red-only AGN/LINER criteria.

    Ho, Filippenko & Sargent 1997, ApJS 112, 315 (their HII nuclei lie below these
    ratios).  Inputs are log10 ratios to Halpha; returns one boolean per criterion.
    """
    return n2 >= math.log10(HO97_NII_HA), s2 >= math.log10(HO97_SII_HA), o1 >= math.log10(HO97_OI_HA)


# --------------------------------------------------------------------------- planetary nebulae

#: Ciardullo et al. 2002, ApJ 577, 31: m5007 = -2.5 log F5007 - 13.74 (F in erg cm^-2 s^-1).
CIARDULLO02_M5007_ZERO_POINT = -13.74


def ciardullo02_m5007(f5007_cgs: Tensor, distance_modulus: Tensor) -> Tensor:
    """Absolute [O III] 5007 magnitude M5007 = -2.5 log10 F5007 - 13.74 - mu (Ciardullo et al. 2002).

    ``f5007_cgs`` is the [O III] 5007 flux in erg cm^-2 s^-1, ``distance_modulus`` mu in mag.
    """
    return -2.5 * torch.log10(f5007_cgs) + CIARDULLO02_M5007_ZERO_POINT - distance_modulus


def ciardullo02_pn(log_oiii_ha_nii: Tensor, m5007: Tensor) -> Tensor:
    """PN above the HII-region limit: 4 > log([OIII]5007/(Ha+[NII])) > -0.37 M5007 - 1.16.

    Ciardullo et al. 2002, ApJ 577, 31 (used by Kreckel et al. 2017, ApJ 834, 174 and
    Scheuermann et al. 2022, MNRAS 511, 6087).  Needs an absolute flux and a distance
    (``m5007``); without them the classifier falls back to a fixed log([O III]/Ha) cut.
    """
    return (log_oiii_ha_nii > -0.37 * m5007 - 1.16) & (log_oiii_ha_nii < 4.0)


# --------------------------------------------------------------------------- diffuse ionised gas


def dig_lacerda18(ew_ha: Tensor, maximum: float = 3.0) -> Tensor:
    """EW(Ha) < 3 A: hDIG, gas ionised by hot low-mass evolved stars (HOLMES).

    Lacerda et al. 2018, MNRAS 474, 3727 (3-14 A is their mixed mDIG regime, > 14 A star
    formation); the same 3 A cut separates "retired" galaxies in the WHAN diagram of Cid
    Fernandes et al. 2011, MNRAS 413, 1687.  ``ew_ha`` in Angstrom; NaN gives False.
    """
    return ew_ha < maximum
