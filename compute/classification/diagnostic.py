"""Ionised-nebula classes from published line-ratio diagnostics, with Monte Carlo probabilities.

Pure numerics (torch, no database).  Every demarcation is a published equation in
:mod:`skyledger.compute.classification.criteria`, cited there; this module decides which
applies, in which order, per *context* (``docs/nebula_classification.md``):

* ``galaxy`` (integrated spectrum: a fibre, a 1-D spectrum, a catalogue row without a
  parent, a spaxel or bin that sees the nucleus): DIG -> AGN -> HII.  There is no PN or
  SNR class; shock-like [S II]/[O I] only set ``SHOCK_LIKE``.
* ``nebula`` (a region, spaxel or bin of a galaxy away from its nucleus): DIG -> SNR ->
  PN -> AGN -> HII, and ``AGN_LIKE`` whenever the ratios are above Kewley et al. (2001).

Rules (the first that applies wins):

1. ``DIG``: EW(Halpha) < 3 A (Lacerda et al. 2018); spectra without an EW get no DIG
   decision (flag NO_EW, ``p_dig`` NULL).
2. ``SNR`` (nebula only): [S II]/Halpha >= 0.4 (Mathewson & Clarke 1973) and
   [O I]/Halpha >= 0.1; without [O I], [S II] alone (flag SNR_SII_ONLY).
3. ``PN`` (nebula only): weak [S II] (< 0.4 Halpha) and either log([O III]/Halpha) above
   ``pn_log_oiii_ha`` (or, given M5007, the Ciardullo et al. 2002 line) or above Kewley
   et al. (2001); not known to be extended.  Flags PN_NO_DISTANCE, PN_NO_SIZE say what
   was missing.
4. ``AGN``: above the Kewley et al. (2001) maximum-starburst line in the [N II]
   diagram, or in both the [S II] and [O I] diagrams (a lone one when it is the only
   diagram measured; the vote is explained in the docs); without Hbeta or [O III], a
   majority of the red-only criteria of Ho, Filippenko & Sargent (1997) (flag RED_ONLY).  Kewley et al. (2006) set the LINER bit.
5. ``HII``: below; between Kauffmann et al. (2003) and Kewley et al. (2001) in the
   [N II] diagram sets the COMPOSITE bit.
6. ``UNKNOWN``: nothing could be decided (no Halpha, or no ratio to it).

Probabilities: each line flux (and the EW) is drawn ``n_draws`` times from a Gaussian of
its measured error, and every log ratio gets a Gaussian ``model_scatter_dex`` on top (one
draw per ratio, shared by every diagram using it): published demarcations and
photoionisation codes disagree by 0.1-0.3 dex (default 0.25, chosen on the training
grids), so a point near a line is not certain even when its lines are.  The probability
of a class is the fraction of draws the rules put in it; the class itself is what the
rules give on the measured ratios.  Draws the rules cannot classify (a non-positive
Halpha draw, say) count as
UNKNOWN, so the five class probabilities sum to at most 1; classes that do not exist in
a context get probability 0.  A non-positive draw of a numerator line (an undetected
[O I], say) is kept as a ratio far below every demarcation, which is what a
non-detection means for these rules.
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
    kauffmann03_nii,
    kewley01_nii,
    kewley01_oi,
    kewley01_sii,
    kewley06_oi,
    kewley06_sii,
)
from skyledger.compute.classification.criteria import (
    above_kewley01,
    ciardullo02_pn,
    dig_lacerda18,
    ho97_red_agn,
    snr_oi_ha,
    snr_sii_ha,
)

__all__ = [
    "CLASSES",
    "CONTEXTS",
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

#: Contexts; the index is the code of the ``context`` tensors (0 galaxy, 1 nebula).
CONTEXTS: tuple[str, ...] = ("galaxy", "nebula")
GALAXY, NEBULA = range(len(CONTEXTS))

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
    # Bits 11..19: the context-dependent rules (issue 26).
    CONTEXT_INFERRED = 1 << 11
    AGN_LIKE = 1 << 12
    SHOCK_LIKE = 1 << 13
    SNR_SII_ONLY = 1 << 14
    RED_ONLY = 1 << 15
    PN_NO_DISTANCE = 1 << 16
    PN_NO_SIZE = 1 << 17


FLAG_DESCRIPTIONS: dict[str, str] = {
    "MISSING_LINES": "Too few lines for a class (no usable Halpha, or no line ratio to it): class UNKNOWN",
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
    "CONTEXT_INFERRED": "The context (galaxy or nebula) was inferred from the source's parent and position, not set by the survey option context",
    "AGN_LIKE": "Nebula context: above the Kewley et al. (2001) maximum-starburst line (AGN-like ratios) whatever the class",
    "SHOCK_LIKE": "Galaxy context: shock-like ratios ([S II]/Halpha >= 0.4 and [O I]/Halpha >= 0.1, or [S II] alone without [O I]); informational, there is no SNR class in this context",
    "SNR_SII_ONLY": "Class SNR from [S II]/Halpha >= 0.4 alone: no [O I] 6300 to confirm the shock",
    "RED_ONLY": "No Hbeta or [O III] 5007: AGN or HII from the red-only criteria of Ho, Filippenko & Sargent (1997), less certain than a BPT diagram",
    "PN_NO_DISTANCE": "Class PN from the fixed log([O III]/Halpha) cut (or the Kewley et al. 2001 line): no absolute flux and distance for the Ciardullo et al. (2002) criterion",
    "PN_NO_SIZE": "Class PN without a size: a compact (unresolved) nebula is assumed",
}


# --------------------------------------------------------------------------- configuration


class DiagnosticConfig(BaseModel):
    """Thresholds of the diagnostic method; any change makes a new run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_draws: int = Field(500, ge=0, le=100_000, description="Monte Carlo draws per spectrum (0: classes only, no probabilities)")
    min_snr: float = Field(3.0, gt=0, description="S/N below which a used line sets LOW_SNR")
    dig_ew_max: float = Field(3.0, gt=0, description="EW(Halpha) in Angstrom below which gas is DIG (Lacerda et al. 2018)")
    snr_sii_ha_min: float = Field(0.4, gt=0, description="[S II]/Halpha at or above which a nebula is shock-ionised (Mathewson & Clarke 1973)")
    snr_oi_ha_min: float = Field(
        0.1, gt=0, description="[O I]/Halpha at or above which a nebula is shock-ionised (Fesen et al. 1985; Kopsacheili et al. 2020)"
    )
    # 0.25: the smallest value within 0.005 of the lowest expected calibration error on the
    # TRAINING grids (MAPPINGS 5.1 HII and NLR; `benchmarks/nebula_grids.py --scan-scatter`,
    # table in docs/nebula_classification.md); the test grids were not read to choose it.
    model_scatter_dex: float = Field(
        0.25, ge=0, le=1,
        description="Gaussian scatter (dex) added to every log ratio in each Monte Carlo draw: how far "
        "demarcations and photoionisation codes disagree (chosen on the training grids; see docs/nebula_classification.md)",
    )  # fmt: skip
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


#: The bits that say how the class was decided: they follow the final class.
_CLASS_BITS = int(NebulaFlag.SNR_SII_ONLY | NebulaFlag.PN_NO_DISTANCE | NebulaFlag.PN_NO_SIZE | NebulaFlag.RED_ONLY)


def _class_flags(code: Tensor, has_o1: Tensor, red_only: Tensor, has_m5007: Tensor, size_known: Tensor) -> Tensor:
    """The flag bits of ``_CLASS_BITS`` for class ``code``, from what was measured."""
    out = torch.where((code == SNR) & ~has_o1, int(NebulaFlag.SNR_SII_ONLY), 0)
    out |= torch.where(((code == AGN) | (code == HII)) & red_only, int(NebulaFlag.RED_ONLY), 0)
    out |= torch.where((code == PN) & ~has_m5007, int(NebulaFlag.PN_NO_DISTANCE), 0)
    out |= torch.where((code == PN) & ~size_known, int(NebulaFlag.PN_NO_SIZE), 0)
    return out


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
    context: Tensor | None = None,
    o3han2: Tensor | None = None,
    m5007: Tensor | None = None,
    extended: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The class code and informational flag bits of each element.

    Inputs are log10 ratios of any (same) shape, NaN where the ratio is not available;
    ``ha_ok`` says Halpha is usable, ``ew`` is EW(Halpha) in Angstrom or NaN.  Optional,
    broadcastable: ``context`` (0 galaxy, 1 nebula; None = galaxy), ``o3han2`` =
    log([O III]/(Halpha+[N II])) and ``m5007`` (absolute [O III] magnitude, NaN unknown)
    for the Ciardullo et al. (2002) PN line, ``extended`` (1 extended, 0 compact, NaN
    unknown).
    """
    shape = n2.shape
    device = n2.device
    nan = torch.full(shape, math.nan, dtype=n2.dtype, device=device)
    nebula = (torch.zeros(shape, dtype=torch.bool, device=device) if context is None else (context == NEBULA).expand(shape))
    o3han2 = nan if o3han2 is None else o3han2.expand(shape)
    m5007 = nan if m5007 is None else m5007.expand(shape)
    extended = nan if extended is None else extended.expand(shape)

    has_n2, has_s2, has_o1 = ~torch.isnan(n2), ~torch.isnan(s2), ~torch.isnan(o1)
    has_bpt_y = ~torch.isnan(o3hb)
    n2_d, s2_d, o1_d = has_n2 & has_bpt_y, has_s2 & has_bpt_y, has_o1 & has_bpt_y
    any_d = n2_d | s2_d | o1_d

    # Kewley et al. (2001) in the [N II] diagram, or in both the [S II] and the [O I]
    # diagrams (Kewley et al. 2006 call a galaxy whose diagrams disagree ambiguous; the
    # two low-ionisation diagrams must agree to outvote [N II]); a lone [S II] or [O I]
    # decides only when it is the one diagram measured.  On the training grids every
    # variant keeps all HII models below (scripts/nebula_agn_variants.py); [O I] alone
    # would put 11 % more NLR models above, but [O I] is the line diffuse gas and weak
    # fits inflate, and it put the star-forming outer bins of SAMI 209807 above the
    # line (docs/nebula_classification.md, "Which Kewley 2001 vote").
    a_n2, a_s2, a_o1 = above_kewley01(n2, s2, o1, o3hb)
    only_s2, only_o1 = s2_d & ~n2_d & ~o1_d, o1_d & ~n2_d & ~s2_d
    above_bpt = (n2_d & a_n2) | (s2_d & a_s2 & o1_d & a_o1) | (only_s2 & a_s2) | (only_o1 & a_o1)
    below_some = (n2_d & ~a_n2) | (s2_d & ~a_s2) | (o1_d & ~a_o1)
    # No Hbeta or [O III]: the red-only criteria of Ho et al. (1997), a majority of those
    # measured (the variant that keeps >= 97 % of the training HII models, same script).
    r_n2, r_s2, r_o1 = ho97_red_agn(n2, s2, o1)
    n_red = has_n2.int() + has_s2.int() + has_o1.int()
    votes = (has_n2 & r_n2).int() + (has_s2 & r_s2).int() + (has_o1 & r_o1).int()
    red_d = ~has_bpt_y & (n_red > 0)
    above = torch.where(any_d, above_bpt, red_d & (2 * votes > n_red))
    decided = any_d | red_d
    ambiguous = (any_d & above_bpt & below_some) | (red_d & (votes > 0) & (votes < n_red))

    # Seyfert/LINER: Kewley et al. 2006 use [S II] and [O I]; [S II] first as it is stronger.
    seyfert = torch.where(s2_d, o3hb > kewley06_sii(s2), torch.where(o1_d, o3hb > kewley06_oi(o1), torch.ones_like(above)))
    sf_ka03 = (n2 < 0.05) & (o3hb < kauffmann03_nii(torch.clamp(n2, max=0.05 - 1e-9)))

    sii_shock = has_s2 & snr_sii_ha(s2, config.snr_sii_ha_min)
    shock = sii_shock & (~has_o1 | snr_oi_ha(o1, config.snr_oi_ha_min))
    dig = dig_lacerda18(ew, config.dig_ew_max)
    has_m5007 = ~torch.isnan(m5007) & ~torch.isnan(o3han2)
    high_excitation = torch.where(
        has_m5007, ciardullo02_pn(o3han2, m5007), ~torch.isnan(o3ha) & (o3ha > config.pn_log_oiii_ha)
    )
    # Strong [S II] (a Seyfert, a shock) vetoes PN; a nebula known to be extended is not one.
    # Above Kewley 2001 counts only with [S II] measured (and weak): without it a Seyfert-like
    # cloud could not be told from a PN.
    pn = nebula & (high_excitation | (above & has_s2)) & ~sii_shock & (extended != 1)
    snr = nebula & shock

    code = torch.full(shape, UNKNOWN, dtype=torch.int64, device=device)
    # Assigned from the lowest priority up, so that the highest-priority rule wins.
    for mask, c in ((decided & ~above, HII), (decided & above, AGN), (pn, PN), (snr, SNR), (dig, DIG)):
        code = torch.where(mask, torch.full_like(code, c), code)
    code = torch.where(ha_ok, code, torch.full_like(code, UNKNOWN))

    info = torch.zeros_like(code)
    info |= torch.where(ambiguous, int(NebulaFlag.AMBIGUOUS), 0)
    info |= torch.where(n2_d & ~above & ~sf_ka03, int(NebulaFlag.COMPOSITE), 0)
    info |= torch.where(any_d & above & ~seyfert & (s2_d | o1_d), int(NebulaFlag.LINER), 0)
    info |= torch.where(nebula & decided & above, int(NebulaFlag.AGN_LIKE), 0)
    info |= torch.where(~nebula & shock, int(NebulaFlag.SHOCK_LIKE), 0)
    info = torch.where(ha_ok, info, torch.zeros_like(info))
    info |= _class_flags(code, has_o1, red_d, has_m5007, ~torch.isnan(extended))
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
        # Ciardullo et al. (2002) use Ha+[N II] (a narrow-band filter's passband); without
        # [N II] Halpha alone, which can only raise the ratio by the missing [N II].
        "o3han2": _log_ratio(f[..., _O3], ha + torch.where(ok[..., _N2], f[..., _N2], torch.zeros_like(ha)), ok[..., _O3], ha_ok),
    }


def classify_diagnostic(
    fluxes: Tensor,
    errors: Tensor,
    ew: Tensor,
    ew_err: Tensor,
    config: DiagnosticConfig,
    generator: torch.Generator | None = None,
    *,
    context: Tensor | None = None,
    m5007: Tensor | None = None,
    extended: Tensor | None = None,
) -> DiagnosticResult:
    """Classes, probabilities and flags of ``n`` spectra.

    ``fluxes``/``errors`` are [n, len(DIAGNOSTIC_LINES)] (NaN = not measured); ``ew`` and
    ``ew_err`` are EW(Halpha) and its error in Angstrom, [n], NaN where unknown.
    ``context`` [n] is 0 (galaxy) or 1 (nebula), None = all galaxy; ``m5007`` [n] the
    absolute [O III] 5007 magnitude and ``extended`` [n] (1/0) the size, NaN where unknown.
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

    nan = torch.full((n,), math.nan, dtype=torch.float64, device=device)
    ctx = torch.zeros(n, dtype=torch.int64, device=device) if context is None else context.to(device=device, dtype=torch.int64)
    where = {
        "context": ctx,
        "m5007": nan if m5007 is None else m5007.to(device=device, dtype=torch.float64),
        "extended": nan if extended is None else extended.to(device=device, dtype=torch.float64),
    }
    nominal = _ratios(torch.nan_to_num(f), ok)
    code0, info0 = classify_ratios(**nominal, ha_ok=ha_ok, ew=ew64, config=config, **where)

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
        drawn = _ratios(fd, okd)
        if config.model_scatter_dex > 0:
            # One scatter draw per ratio, shared by every diagram that uses the ratio.
            for key in sorted(drawn):
                shift = torch.randn((d, n), generator=generator, dtype=torch.float64, device=device)
                drawn[key] = drawn[key] + config.model_scatter_dex * shift
        # A measured Halpha <= 0 is a failed measurement, not an upper limit: every rule
        # divides by it, so no draw of it is classified.
        codes, _ = classify_ratios(**drawn, ha_ok=ha_ok & (fd[..., _HA] > 0), ew=ewd, config=config, **where)
        counts = torch.stack([(codes == c).sum(0) for c in range(len(CLASSES))], dim=1)
        probs = counts.to(torch.float64) / d
        # The class is what the published rules give on the measured ratios; the draws
        # say how sure that is.  A measurement on a demarcation keeps its class with a
        # probability near 0.5 (or below, when the draws split three ways) instead of
        # flipping to whichever side the model scatter happens to favour.
        code = code0
    else:
        # The class is what the published rules give on the measured ratios; the draws
        # say how sure that is.  A measurement on a demarcation keeps its class with a
        # probability near 0.5 (or below, when the draws split three ways) instead of
        # flipping to whichever side the model scatter happens to favour.
        code = code0
        flags |= int(NebulaFlag.NO_PROBABILITIES)
    # The bits that say how the class was decided follow the class.
    has_m5007 = ~torch.isnan(where["m5007"]) & ~torch.isnan(nominal["o3han2"])
    flags = (flags & ~_CLASS_BITS) | _class_flags(
        code, ~torch.isnan(nominal["o1"]), no_bpt, has_m5007, ~torch.isnan(where["extended"])
    )
    # DIG is undecidable without an EW: its probability is unknown, not zero.
    probs[:, DIG] = torch.where(has_ew, probs[:, DIG], torch.full_like(probs[:, DIG], math.nan))
    flags |= torch.where(code == UNKNOWN, int(NebulaFlag.MISSING_LINES), 0)
    return DiagnosticResult(code, probs, flags)
