"""Published criteria at known points, the rule order per context on archetypal spectra,
missing-line fallbacks and the model-scatter term of the probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from skyledger.compute.classification import criteria as C
from skyledger.compute.classification.diagnostic import (
    CLASSES,
    CONTEXTS,
    DIAGNOSTIC_LINES,
    DiagnosticConfig,
    NebulaFlag,
    classify_diagnostic,
    classify_ratios,
)

F = NebulaFlag
NAN = math.nan
CFG = DiagnosticConfig(n_draws=400)


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


# --------------------------------------------------------------------------- criteria at known points


def test_curves_at_known_points():
    assert float(C.kewley01_nii(t(0.0))) == pytest.approx(0.61 / -0.47 + 1.19)  # -0.108
    assert float(C.kewley01_sii(t(0.0))) == pytest.approx(0.72 / -0.32 + 1.30)  # -0.95
    assert float(C.kewley01_oi(t(-1.0))) == pytest.approx(0.73 / -0.41 + 1.33)
    assert float(C.kauffmann03_nii(t(0.0))) == pytest.approx(0.61 / -0.05 + 1.3)  # -10.9
    assert float(C.kewley06_sii(t(0.0))) == pytest.approx(0.76) and float(C.kewley06_oi(t(0.0))) == pytest.approx(1.30)
    # Right of an asymptote every point is above the starburst limit.
    above_n2, above_s2, above_o1 = C.above_kewley01(t(0.5), t(0.4), t(-0.5), t(-2.0))
    assert bool(above_n2) and bool(above_s2) and bool(above_o1)
    above_n2, _, _ = C.above_kewley01(t(0.0), t(NAN), t(NAN), t(-0.108 + 0.01))
    assert bool(above_n2) and not bool(C.above_kewley01(t(0.0), t(NAN), t(NAN), t(-0.108 - 0.01))[0])


@pytest.mark.parametrize(
    ("fn", "cut"),
    [(C.snr_sii_ha, 0.4), (C.snr_oi_ha, 0.1), (lambda x: C.ho97_red_agn(x, x, x)[0], 0.6),
     (lambda x: C.ho97_red_agn(x, x, x)[1], 0.4), (lambda x: C.ho97_red_agn(x, x, x)[2], 0.08)],
)  # fmt: skip
def test_ratio_thresholds_are_inclusive(fn, cut):
    lo = math.log10(cut)
    assert bool(fn(t(lo + 1e-9))) and not bool(fn(t(lo - 1e-3))) and not bool(fn(t(NAN)))


def test_ciardullo2002_pn_line():
    # F5007 = 1e-15 erg/cm2/s: m5007 = 37.5 - 13.74 = 23.76; at mu = 28.26, M5007 = -4.5
    # (the PNLF bright end), where the line is log([OIII]/(Ha+[NII])) = -0.37 * -4.5 - 1.16.
    m = C.ciardullo02_m5007(t(1e-15), t(28.26))
    assert float(m) == pytest.approx(-4.5)
    y = -0.37 * -4.5 - 1.16
    assert bool(C.ciardullo02_pn(t(y + 0.01), m)) and not bool(C.ciardullo02_pn(t(y - 0.01), m))
    assert not bool(C.ciardullo02_pn(t(4.5), m))  # above 4: not a nebula


def test_lacerda2018_dig():
    assert bool(C.dig_lacerda18(t(2.99))) and not bool(C.dig_lacerda18(t(3.0))) and not bool(C.dig_lacerda18(t(NAN)))


# --------------------------------------------------------------------------- archetypes per context

# Representative ratios of each kind (typical textbook ranges, Osterbrock & Ferland 2006;
# not measurements of one object): [O III]/Hb, [N II]/Ha, [S II]/Ha, [O I]/Ha.
ARCHETYPES = {
    "hii": (3.5, 0.15, 0.08, 0.01),
    "pn": (16.0, 0.25, 0.04, 0.02),
    "seyfert2": (12.0, 0.9, 0.5, 0.15),
    "textbook_snr": (3.0, 0.8, 0.9, 0.3),
}


def _fluxes(o3hb: float, n2ha: float, s2ha: float, o1ha: float, drop: tuple[str, ...] = ()) -> dict[str, float]:
    hb, ha = 100.0, 286.0
    f = {"HB4861": hb, "OIII5007": o3hb * hb, "OI6300": o1ha * ha, "HA6563": ha, "NII6584": n2ha * ha,
         "SII6716": 0.55 * s2ha * ha, "SII6731": 0.45 * s2ha * ha}  # fmt: skip
    return {k: v for k, v in f.items() if k not in drop}


def run(objects: list[dict[str, float]], context: str, cfg: DiagnosticConfig = CFG, with_errors: bool = True):
    f = torch.full((len(objects), len(DIAGNOSTIC_LINES)), NAN, dtype=torch.float64)
    for i, obj in enumerate(objects):
        for line, v in obj.items():
            f[i, DIAGNOSTIC_LINES.index(line)] = v
    e = 0.03 * f.abs() + 1.0 if with_errors else torch.full_like(f, NAN)
    nan = torch.full((len(objects),), NAN, dtype=torch.float64)
    ctx = torch.full((len(objects),), CONTEXTS.index(context))
    res = classify_diagnostic(f, e, nan, nan, cfg, torch.Generator().manual_seed(7), context=ctx)
    return [CLASSES[int(c)] for c in res.classes], res.probabilities, [int(x) for x in res.flags]


def test_archetypes_in_a_nebula():
    cls, p, flags = run([_fluxes(*v) for v in ARCHETYPES.values()], "nebula")
    got = dict(zip(ARCHETYPES, cls))
    assert got["hii"] == "HII" and got["pn"] == "PN" and got["textbook_snr"] == "SNR"
    # A Seyfert-like spectrum away from a nucleus: its [S II] and [O I] make it a shock; AGN-like is flagged.
    assert got["seyfert2"] == "SNR" and flags[2] & F.AGN_LIKE
    assert flags[1] & F.AGN_LIKE  # the PN's high [O III]/Hb is above Kewley 2001 too
    assert not flags[0] & F.AGN_LIKE


def test_archetypes_in_a_galaxy():
    cls, p, flags = run([_fluxes(*v) for v in ARCHETYPES.values()], "galaxy")
    got = dict(zip(ARCHETYPES, cls))
    assert got == {"hii": "HII", "pn": "AGN", "seyfert2": "AGN", "textbook_snr": "AGN"}
    assert flags[3] & F.SHOCK_LIKE and not flags[0] & F.SHOCK_LIKE
    # No PN or SNR class in a galaxy: probability 0, not NULL; DIG without EW is NULL.
    assert torch.all(p[:, CLASSES.index("PN")] == 0) and torch.all(p[:, CLASSES.index("SNR")] == 0)
    assert torch.all(torch.isnan(p[:, CLASSES.index("DIG")]))


@pytest.mark.parametrize("o3hb", [0.3, 1.0, 3.0, 10.0])
def test_textbook_snr_is_snr_in_a_nebula_and_agn_in_a_galaxy(o3hb):
    obj = _fluxes(o3hb, 0.8, 0.9, 0.3)
    (neb,), p_neb, (f_neb,) = run([obj], "nebula")
    (gal,), p_gal, (f_gal,) = run([obj], "galaxy")
    # (p ~ 0.87: both shock criteria must hold in each draw, under 0.25 dex of model scatter.)
    assert neb == "SNR" and float(p_neb[0, CLASSES.index("SNR")]) > 0.8 and not f_neb & F.SNR_SII_ONLY
    # At [O III]/Hb = 0.3 the object is below Kewley 2001 in [N II] and 0.15 dex above it in
    # [S II]: AGN only because [S II] and [O I] agree, which 0.1 dex model scatter makes uncertain.
    assert gal == "AGN" and f_gal & F.SHOCK_LIKE and float(p_gal[0, CLASSES.index("AGN")]) > (0.5 if o3hb < 1 else 0.8)


def test_pn_needs_a_compact_nebula_and_uses_ciardullo_given_m5007():
    nan = t(NAN)
    common = dict(n2=t(-0.6), s2=t(-1.4), o1=t(-1.7), o3hb=t(1.2), o3ha=t(0.75), ha_ok=torch.tensor([True]), ew=nan,
                  config=CFG, context=torch.tensor([1]))  # fmt: skip
    code, info = classify_ratios(**common)
    assert CLASSES[int(code)] == "PN" and info & F.PN_NO_SIZE and info & F.PN_NO_DISTANCE
    code, _ = classify_ratios(**common, extended=t(1.0))
    assert CLASSES[int(code)] == "AGN"  # extended: not a PN; above Kewley 2001
    code, info = classify_ratios(**common, extended=t(0.0), o3han2=t(0.6), m5007=t(-4.5))
    assert CLASSES[int(code)] == "PN" and not info & (F.PN_NO_SIZE | F.PN_NO_DISTANCE)  # 0.6 > 0.505
    code, _ = classify_ratios(**{**common, "o3hb": t(0.5)}, extended=t(0.0), o3han2=t(0.4), m5007=t(-4.5))
    assert CLASSES[int(code)] == "HII"  # below the Ciardullo line and below Kewley 2001
    # Above Kewley 2001 but below the [O III]/Ha cut: PN only when [S II] is measured and weak.
    code, _ = classify_ratios(**{**common, "o3ha": t(0.3)})
    assert CLASSES[int(code)] == "PN"
    code, _ = classify_ratios(**{**common, "o3ha": t(0.3), "s2": t(NAN)})
    assert CLASSES[int(code)] == "AGN"


# --------------------------------------------------------------------------- missing lines


def test_no_hbeta_or_oiii_uses_the_red_only_criteria_with_a_flag():
    seyfert = _fluxes(*ARCHETYPES["seyfert2"], drop=("HB4861", "OIII5007"))
    hii = _fluxes(*ARCHETYPES["hii"], drop=("HB4861", "OIII5007"))
    cls, _, flags = run([seyfert, hii], "galaxy")
    assert cls == ["AGN", "HII"]
    assert all(f & F.RED_ONLY and f & F.NO_BPT for f in flags)  # never silently HII


def test_no_oi_decides_snr_on_sii_alone_with_a_flag():
    snr = _fluxes(*ARCHETYPES["textbook_snr"], drop=("OI6300",))
    (cls,), _, (flags,) = run([snr], "nebula")
    assert cls == "SNR" and flags & F.SNR_SII_ONLY
    (cls,), _, (flags,) = run([snr], "galaxy")
    assert cls == "AGN" and flags & F.SHOCK_LIKE


def test_halpha_alone_is_unknown():
    (cls,), p, (flags,) = run([{"HA6563": 300.0}], "nebula")
    assert cls == "UNKNOWN" and flags & F.MISSING_LINES
    assert float(torch.nansum(p[0, :5])) == 0.0


# --------------------------------------------------------------------------- model scatter


def test_model_scatter_gives_honest_probabilities_on_a_demarcation_without_errors():
    # Exactly on Kewley 2001 in the only diagram, no line errors: without scatter every
    # draw is the measured value; with 0.1 dex it is a coin toss.
    x = -0.5
    o3hb = 0.61 / (x - 0.47) + 1.19
    obj = {"HB4861": 100.0, "OIII5007": 100.0 * 10**o3hb, "HA6563": 300.0, "NII6584": 300.0 * 10**x}
    _, sharp, (flags,) = run([obj], "galaxy", DiagnosticConfig(n_draws=400, model_scatter_dex=0.0), with_errors=False)
    _, soft, _ = run([obj], "galaxy", DiagnosticConfig(n_draws=400, model_scatter_dex=0.1), with_errors=False)
    agn = CLASSES.index("AGN")
    assert float(sharp[0, agn]) in (0.0, 1.0) and flags & F.NO_ERROR
    assert 0.3 < float(soft[0, agn]) < 0.7
    # Far (~1 dex) from every line the scatter changes nothing.
    _, far, _ = run([_fluxes(0.5, 0.1, 0.05, 0.005)], "galaxy", DiagnosticConfig(n_draws=400, model_scatter_dex=0.1), with_errors=False)
    assert float(far[0, CLASSES.index("HII")]) == 1.0
