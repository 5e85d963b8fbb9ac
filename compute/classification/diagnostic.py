"""Ionised-nebula classes from published line-ratio diagnostics, with Monte Carlo probabilities.

Pure numerics (torch, no database).  Every demarcation is a published equation, cited
where it is defined; ``docs/nebula_classification.md`` explains the scheme and its order.

Classes, decided per spectrum in this order (the first rule that applies wins):

1. ``DIG``: EW(Halpha) < 3 A (Lacerda et al. 2018, MNRAS 474, 3727): diffuse ionised gas
   powered by hot low-mass evolved stars; spectra without an equivalent width get no DIG
   decision (flag NO_EW, ``p_dig`` NULL).
2. ``PN``: log([O III]5007/Halpha) above ``pn_log_oiii_ha`` while [S II]/Halpha stays
   below the shock value of rule 4 (see :class:`DiagnosticConfig`).
3. ``AGN``: above the Kewley et al. (2001) maximum-starburst line of the primary BPT
   diagram ([N II] if measured, else [S II], else [O I]).  The Kewley et al. (2006)
   Seyfert/LINER lines set the LINER flag bit; a LINER stays class AGN.
4. ``SNR``: [S II](6716+6731)/Halpha > 0.4 (Mathewson & Clarke 1973, ApJ 180, 725; the
   criterion used by e.g. Blair & Long 2004 and discussed by Kopsacheili et al. 2020).
5. ``HII``: below the Kewley et al. (2001) line; between it and the Kauffmann et al.
   (2003) line in the [N II] diagram sets the COMPOSITE bit.
6. ``UNKNOWN``: none of the above could be decided (no Halpha, or neither a BPT diagram
   nor [S II]).

Probabilities: each line flux (and the EW) is drawn ``n_draws`` times from a Gaussian of
its measured error; the probability of a class is the fraction of draws the rules put in
it.  Draws the rules cannot classify (a non-positive Halpha draw, say) count as UNKNOWN,
so the five class probabilities sum to at most 1.  A non-positive draw of a numerator
line (an undetected [O I], say) is kept as a ratio far below every demarcation, which is
what a non-detection means for these rules.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

# The demarcations live in criteria.py; their names stay importable from here.
from skyledger.compute.classification.criteria import (
    above_hyperbola as _above_hyperbola,
    kauffmann03_nii,
    kewley01_nii,
    kewley01_oi,
    kewley01_sii,
    kewley06_oi,
    kewley06_sii,
)

__all__ = [
    "CLASSES",
    "DIAGNOSTIC_LINES",
    "DiagnosticConfig",
    "DiagnosticResult",
    "FLAG_DESCRIPTIONS",
    "NebulaFlag",
    "classify_diagnostic",
    "classify_ratios",
    "kauffmann03_nii",
    "kewley01_nii",
    "kewley01_oi",
    "kewley01_sii",
    "kewley06_oi",
    "kewley06_sii",
]

#: Class names; the index is the integer code used inside the numerics.
CLASSES: tuple[str, ...] = ("HII", "PN", "SNR", "DIG", "AGN", "UNKNOWN")
HII, PN, SNR, DIG, AGN, UNKNOWN = range(len(CLASSES))

#: Lines the diagnostics read, in the column order of the flux arrays.
DIAGNOSTIC_LINES: tuple[str, ...] = ("HB4861", "OIII5007", "OI6300", "HA6563", "NII6584", "SII6716", "SII6731")
_HB, _O3, _O1, _HA, _N2, _S2A, _S2B = range(len(DIAGNOSTIC_LINES))

# A non-positive numerator draw becomes this log ratio: below every demarcation, finite
# so that no inf - inf or 0 * inf can turn a comparison into NaN.
_LOG_FLOOR = -30.0


class NebulaFlag(enum.IntFlag):
    MISSING_LINES = 1 << 0
    LOW_SNR = 1 << 1
    NON_POSITIVE_FLUX = 1 << 2
    NO_ERROR = 1 << 3
    NO_EW = 1 << 4
    NO_BPT = 1 << 5
    AMBIGUOUS = 1 << 6
    COMPOSITE = 1 << 7
    LINER = 1 << 8
    NO_PROBABILITIES = 1 << 9
    NOT_MODELLED = 1 << 10


FLAG_DESCRIPTIONS: dict[str, str] = {
    "MISSING_LINES": "Too few lines for a class (no usable Halpha, or neither a BPT diagram nor [S II]/Halpha): class UNKNOWN",
    "LOW_SNR": "A line the classification used has S/N below the configured minimum (default 3)",
    "NON_POSITIVE_FLUX": "A line the classification used has a zero or negative flux (treated as undetected)",
    "NO_ERROR": "A line the classification used has no usable error (NULL, NaN or <= 0): held fixed in the Monte Carlo draws, so probabilities understate the uncertainty",
    "NO_EW": "No Halpha equivalent width (e.g. a line catalogue): no DIG decision, p_dig is NULL",
    "NO_BPT": "No Hbeta or [O III] 5007: the BPT diagrams could not be used",
    "AMBIGUOUS": "The BPT diagrams disagree about the Kewley et al. (2001) maximum-starburst line; the primary diagram decided",
    "COMPOSITE": "Between the Kauffmann et al. (2003) and Kewley et al. (2001) lines in the [N II] diagram (informational)",
    "LINER": "In the AGN region but below the Kewley et al. (2006) Seyfert/LINER line (informational; class stays AGN)",
    "NO_PROBABILITIES": "No Monte Carlo draws were made (n_draws = 0): class from the measured values, probabilities NULL",
    "NOT_MODELLED": "The method does not model this object's lines well (nn: feature outside the training range); treat the class with care",
}


# --------------------------------------------------------------------------- configuration


class DiagnosticConfig(BaseModel):
    """Thresholds of the diagnostic method; any change makes a new run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_draws: int = Field(500, ge=0, le=100_000, description="Monte Carlo draws per spectrum (0: classes only, no probabilities)")
    min_snr: float = Field(3.0, gt=0, description="S/N below which a used line sets LOW_SNR")
    dig_ew_max: float = Field(3.0, gt=0, description="EW(Halpha) in Angstrom below which gas is DIG (Lacerda et al. 2018)")
    snr_sii_ha_min: float = Field(0.4, gt=0, description="[S II]/Halpha above which a nebula is shock-ionised (Mathewson & Clarke 1973)")
    pn_log_oiii_ha: float = Field(
        0.5,
        description="log([O III]5007/Halpha) above which a nebula with weak [S II] is a PN (see docs/nebula_classification.md)",
    )


@dataclass
class DiagnosticResult:
    """Per spectrum: class code, probabilities [n, 6] (NaN where not available) and flags."""

    classes: Tensor  # int64 [n]
    probabilities: Tensor  # float64 [n, len(CLASSES)]
    flags: Tensor  # int64 [n]


# --------------------------------------------------------------------------- rules


def classify_ratios(
    *,
    n2: Tensor,
    s2: Tensor,
    o1: Tensor,
    o3hb: Tensor,
    o3ha: Tensor,
    ha_ok: Tensor,
    ew: Tensor,
    config: DiagnosticConfig,
) -> tuple[Tensor, Tensor]:
    """The class code and informational flag bits of each element.

    Inputs are log10 ratios of any (same) shape, NaN where the ratio is not available;
    ``ha_ok`` says Halpha is usable, ``ew`` is EW(Halpha) in Angstrom or NaN.
    """
    has_n2, has_s2, has_o1 = ~torch.isnan(n2), ~torch.isnan(s2), ~torch.isnan(o1)
    has_bpt_y = ~torch.isnan(o3hb)
    n2_d, s2_d, o1_d = has_n2 & has_bpt_y, has_s2 & has_bpt_y, has_o1 & has_bpt_y

    above_n2 = _above_hyperbola(n2, o3hb, kewley01_nii, 0.47)
    above_s2 = _above_hyperbola(s2, o3hb, kewley01_sii, 0.32)
    above_o1 = _above_hyperbola(o1, o3hb, kewley01_oi, -0.59)
    # Primary diagram: [N II] (the best calibrated, and the one with the Kauffmann line),
    # then [S II], then [O I].
    any_d = n2_d | s2_d | o1_d
    above = torch.where(n2_d, above_n2, torch.where(s2_d, above_s2, above_o1)) & any_d
    disagree = (n2_d & (above_n2 != above)) | (s2_d & (above_s2 != above)) | (o1_d & (above_o1 != above))
    # Seyfert/LINER: Kewley et al. 2006 use [S II] and [O I]; [S II] first as it is stronger.
    seyfert = torch.where(s2_d, o3hb > kewley06_sii(s2), torch.where(o1_d, o3hb > kewley06_oi(o1), torch.ones_like(above)))
    sf_ka03 = (n2 < 0.05) & (o3hb < kauffmann03_nii(torch.clamp(n2, max=0.05 - 1e-9)))

    shock_sii = has_s2 & (s2 > math.log10(config.snr_sii_ha_min))
    dig = ~torch.isnan(ew) & (ew < config.dig_ew_max)
    pn = ~torch.isnan(o3ha) & (o3ha > config.pn_log_oiii_ha) & ~shock_sii
    agn = any_d & above
    hii = any_d & ~above

    code = torch.full(n2.shape, UNKNOWN, dtype=torch.int64, device=n2.device)
    # Assigned from the lowest priority up, so that the highest-priority rule wins.
    for mask, c in ((hii, HII), (shock_sii, SNR), (agn, AGN), (pn, PN), (dig, DIG)):
        code = torch.where(mask, torch.full_like(code, c), code)
    code = torch.where(ha_ok, code, torch.full_like(code, UNKNOWN))

    info = torch.zeros_like(code)
    info |= torch.where(any_d & disagree, int(NebulaFlag.AMBIGUOUS), 0)
    info |= torch.where(n2_d & ~above_n2 & ~sf_ka03, int(NebulaFlag.COMPOSITE), 0)
    info |= torch.where(agn & ~seyfert & (s2_d | o1_d), int(NebulaFlag.LINER), 0)
    return code, info


def _log_ratio(num: Tensor, den: Tensor, num_ok: Tensor, den_ok: Tensor) -> Tensor:
    """log10(num/den); NaN where either line is missing or den <= 0; floor for num <= 0."""
    safe_num = torch.where(num > 0, num, torch.ones_like(num))
    safe_den = torch.where(den > 0, den, torch.ones_like(den))
    r = torch.where(num > 0, torch.log10(safe_num / safe_den), torch.full_like(num, _LOG_FLOOR))
    return torch.where(num_ok & den_ok & (den > 0), r, torch.full_like(num, math.nan))


def _ratios(f: Tensor, ok: Tensor) -> dict[str, Tensor]:
    """Log ratios from fluxes [..., 7] with availability [..., 7]."""
    s2 = f[..., _S2A] + f[..., _S2B]
    s2_ok = ok[..., _S2A] & ok[..., _S2B]
    ha, ha_ok = f[..., _HA], ok[..., _HA]
    return {
        "n2": _log_ratio(f[..., _N2], ha, ok[..., _N2], ha_ok),
        "s2": _log_ratio(s2, ha, s2_ok, ha_ok),
        "o1": _log_ratio(f[..., _O1], ha, ok[..., _O1], ha_ok),
        "o3hb": _log_ratio(f[..., _O3], f[..., _HB], ok[..., _O3], ok[..., _HB]),
        "o3ha": _log_ratio(f[..., _O3], ha, ok[..., _O3], ha_ok),
    }


def classify_diagnostic(
    fluxes: Tensor,
    errors: Tensor,
    ew: Tensor,
    ew_err: Tensor,
    config: DiagnosticConfig,
    generator: torch.Generator | None = None,
) -> DiagnosticResult:
    """Classes, probabilities and flags of ``n`` spectra.

    ``fluxes``/``errors`` are [n, len(DIAGNOSTIC_LINES)] (NaN = not measured); ``ew`` and
    ``ew_err`` are EW(Halpha) and its error in Angstrom, [n], NaN where unknown.
    """
    f = fluxes.to(torch.float64)
    e = errors.to(torch.float64)
    device = f.device
    n = f.shape[0]
    ok = torch.isfinite(f)
    err_ok = torch.isfinite(e) & (e > 0)
    ha_ok = ok[:, _HA] & (f[:, _HA] > 0)
    ew64 = ew.to(device=device, dtype=torch.float64)
    ew_e = ew_err.to(device=device, dtype=torch.float64)

    nominal = _ratios(torch.nan_to_num(f), ok)
    code0, info0 = classify_ratios(**nominal, ha_ok=ha_ok, ew=ew64, config=config)

    # Which lines the decision used: those present among the rules' lines.
    used = ok
    flags = torch.zeros(n, dtype=torch.int64, device=device)
    snr = torch.where(err_ok, f / torch.where(err_ok, e, torch.ones_like(e)), torch.full_like(f, math.inf))
    flags |= torch.where((used & (snr < config.min_snr)).any(1), int(NebulaFlag.LOW_SNR), 0)
    flags |= torch.where((used & (f <= 0)).any(1), int(NebulaFlag.NON_POSITIVE_FLUX), 0)
    flags |= torch.where((used & ~err_ok).any(1), int(NebulaFlag.NO_ERROR), 0)
    has_ew = torch.isfinite(ew64)
    flags |= torch.where(has_ew, 0, int(NebulaFlag.NO_EW))
    no_bpt = torch.isnan(nominal["o3hb"])
    flags |= torch.where(no_bpt, int(NebulaFlag.NO_BPT), 0)
    flags |= info0

    probs = torch.full((n, len(CLASSES)), math.nan, dtype=torch.float64, device=device)
    if config.n_draws > 0 and n > 0:
        d = config.n_draws
        noise = torch.randn((d, *f.shape), generator=generator, dtype=torch.float64, device=device)
        sigma = torch.where(err_ok, e, torch.zeros_like(e))
        fd = torch.nan_to_num(f) + noise * sigma
        ew_noise = torch.randn((d, n), generator=generator, dtype=torch.float64, device=device)
        ewd = ew64 + ew_noise * torch.where(torch.isfinite(ew_e) & (ew_e > 0), ew_e, torch.zeros_like(ew_e))
        okd = ok.expand(d, -1, -1)
        # A measured Halpha <= 0 is a failed measurement, not an upper limit: every rule
        # divides by it, so no draw of it is classified.
        codes, _ = classify_ratios(**_ratios(fd, okd), ha_ok=ha_ok & (fd[..., _HA] > 0), ew=ewd, config=config)
        counts = torch.stack([(codes == c).sum(0) for c in range(len(CLASSES))], dim=1)
        probs = counts.to(torch.float64) / d
        # Ties go to the higher-priority class: the order of CLASSES is not the priority, so
        # pick by count, then by the nominal class when it is among the maxima.
        best = counts.max(1, keepdim=True).values
        is_best = counts == best
        nominal_best = is_best.gather(1, code0.unsqueeze(1)).squeeze(1)
        code = torch.where(nominal_best, code0, is_best.to(torch.int64).argmax(1))
    else:
        code = code0
        flags |= int(NebulaFlag.NO_PROBABILITIES)
    # DIG is undecidable without an EW: its probability is unknown, not zero.
    probs[:, DIG] = torch.where(has_ew, probs[:, DIG], torch.full_like(probs[:, DIG], math.nan))
    flags |= torch.where(code == UNKNOWN, int(NebulaFlag.MISSING_LINES), 0)
    return DiagnosticResult(code, probs, flags)
