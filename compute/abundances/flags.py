"""The ``flags`` bitmask of abundance results: one bit per condition, all documented.

Bits are stable: append new ones, never renumber (they are stored in result rows and in
the ``flag_definition`` table).  Flags describe the nominal (noise-free) evaluation of an
object, except ``MC_UNSTABLE`` which summarises the Monte Carlo draws.
"""

from __future__ import annotations

import enum

__all__ = ["AbundanceFlag", "FLAG_DESCRIPTIONS"]


class AbundanceFlag(enum.IntFlag):
    """Bits of the per-object, per-method ``flags`` column."""

    NO_BALMER_DECREMENT = 1 << 0
    NEGATIVE_REDDENING_CLIPPED = 1 << 1
    BALMER_FROM_HGAMMA = 1 << 2
    ALREADY_DUST_CORRECTED = 1 << 3
    RATIO_FROM_THEORY = 1 << 4
    AURORAL_LOW_SN = 1 << 5
    NO_TE_OIII = 1 << 6
    NO_TE_NII = 1 << 7
    NO_TE_SIII = 1 << 8
    NO_TE_OII = 1 << 9
    NE_LOW_DENSITY_LIMIT = 1 << 10
    NE_HIGH_DENSITY_LIMIT = 1 << 11
    TE_OUT_OF_RANGE = 1 << 12
    CALIBRATION_OUT_OF_RANGE = 1 << 13
    MISSING_LINES = 1 << 14
    NONPOSITIVE_FLUX = 1 << 15
    BAD_ERROR = 1 << 16
    MC_UNSTABLE = 1 << 17
    NO_DENSITY = 1 << 18
    TE_FROM_RELATION = 1 << 19
    BRANCH_AMBIGUOUS = 1 << 20
    NOT_CONVERGED = 1 << 21
    ERRORS_ESTIMATED = 1 << 22
    # Which temperature each zone of the direct method used, and from what (one of the
    # two bits of each zone is set when the zone has a temperature).
    TE_HIGH_FROM_OIII = 1 << 23
    TE_LOW_FROM_NII = 1 << 24
    TE_LOW_FROM_OII = 1 << 25
    TE_INT_FROM_SIII = 1 << 26
    TE_HIGH_FROM_RELATION = 1 << 27
    TE_LOW_FROM_RELATION = 1 << 28
    TE_INT_FROM_RELATION = 1 << 29
    NO_TE = 1 << 30  # the last bit an int4 column holds


FLAG_DESCRIPTIONS: dict[AbundanceFlag, str] = {
    AbundanceFlag.NO_BALMER_DECREMENT: "no usable Halpha/Hbeta or Hgamma/Hbeta: fluxes not dust-corrected, E(B-V) NULL",
    AbundanceFlag.NEGATIVE_REDDENING_CLIPPED: "Balmer decrement below case B: E(B-V) < 0 clipped to 0",
    AbundanceFlag.BALMER_FROM_HGAMMA: "E(B-V) from Hgamma/Hbeta because Halpha is missing",
    AbundanceFlag.ALREADY_DUST_CORRECTED: "input marked as dust-corrected: no correction applied",
    AbundanceFlag.RATIO_FROM_THEORY: "a line of a fixed-ratio doublet was missing and set from the theoretical ratio",
    AbundanceFlag.AURORAL_LOW_SN: "an auroral line has S/N < auroral_min_snr (default 3): not used, its zone's Te from a relation",
    AbundanceFlag.NO_TE_OIII: "no direct T[O III] (4363 missing, non-positive or out of range)",
    AbundanceFlag.NO_TE_NII: "no direct T[N II] (5755 missing, non-positive or out of range)",
    AbundanceFlag.NO_TE_SIII: "no direct T[S III] (6312 missing, non-positive or out of range)",
    AbundanceFlag.NO_TE_OII: "no direct T[O II] (7320/7330 missing, non-positive or out of range)",
    AbundanceFlag.NE_LOW_DENSITY_LIMIT: "a density diagnostic is at or beyond its low-density limit (ne set to the lower bound)",
    AbundanceFlag.NE_HIGH_DENSITY_LIMIT: "a density diagnostic is at or beyond its high-density limit (ne set to the upper bound)",
    AbundanceFlag.TE_OUT_OF_RANGE: "a temperature ratio is outside the model range over the Te bounds (that Te NULL)",
    AbundanceFlag.CALIBRATION_OUT_OF_RANGE: "strong-line index or result outside the calibration's validity range",
    AbundanceFlag.MISSING_LINES: "a line the method needs is missing: result NULL",
    AbundanceFlag.NONPOSITIVE_FLUX: "some line of the object has zero or negative flux: treated as missing (set for every method)",
    AbundanceFlag.BAD_ERROR: "some line of the object has a NaN or negative error: no Monte Carlo scatter from it (set for every method)",
    AbundanceFlag.MC_UNSTABLE: "more than half of the Monte Carlo draws gave no valid value",
    AbundanceFlag.NO_DENSITY: "no density diagnostic: the configured default ne was assumed",
    AbundanceFlag.TE_FROM_RELATION: "a zone temperature was taken from the Te-Te relation (Garnett 1992)",
    AbundanceFlag.BRANCH_AMBIGUOUS: "R23 branches cross or the branch indicator is missing (KK04)",
    AbundanceFlag.NOT_CONVERGED: "the joint Te-ne iteration did not converge",
    AbundanceFlag.ERRORS_ESTIMATED: "the spectrum's file gives no errors: line errors derive from the reader's scatter estimate",
    AbundanceFlag.TE_HIGH_FROM_OIII: "direct: high-ionisation zone (O++) at T[O III] measured from [O III]4363/(4959+5007)",
    AbundanceFlag.TE_LOW_FROM_NII: "direct: low-ionisation zone (O+, N+, S+) at T[N II] measured from [N II]5755/(6548+6584)",
    AbundanceFlag.TE_LOW_FROM_OII: "direct: low-ionisation zone at T[O II] measured from [O II](7320+7330)/(3726+3729) (no usable T[N II])",
    AbundanceFlag.TE_INT_FROM_SIII: "direct: S++ zone at T[S III] measured from [S III]6312/(9069+9532)",
    AbundanceFlag.TE_HIGH_FROM_RELATION: "direct: no usable T[O III]: high zone from Garnett (1992), T[S III] = 0.83 T[O III] + 1700 K inverted, else T[N II] = 0.70 T[O III] + 3000 K inverted",
    AbundanceFlag.TE_LOW_FROM_RELATION: "direct: no usable T[N II] or T[O II]: low zone from Garnett (1992) T[N II] = 0.70 T_high + 3000 K",
    AbundanceFlag.TE_INT_FROM_RELATION: "direct: no usable T[S III]: S++ zone from Garnett (1992) T[S III] = 0.83 T_high + 1700 K",
    AbundanceFlag.NO_TE: "direct: no usable auroral line at all: no temperature, direct abundances NULL",
}
