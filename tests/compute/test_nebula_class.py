"""Nebula classification: the published demarcations, and a line catalogue end to end into
catalog.nebula_class (real PostgreSQL)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from astropy.table import Table
from sqlalchemy import text

from skyledger.compute.tasks.nebula import NebulaBatch, NebulaDiagnosticParams, NebulaDiagnosticTask, NebulaNNTask
from skyledger.compute.classification.diagnostic import (
    CLASSES,
    CONTEXTS,
    DIAGNOSTIC_LINES,
    DiagnosticConfig,
    NebulaFlag,
    classify_diagnostic,
    classify_ratios,
)
from skyledger.compute.framework.runner import process
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec

F = NebulaFlag
CFG = DiagnosticConfig()
NAN = math.nan
EPS = 0.02  # dex either side of a demarcation

# Observed line fluxes (Hbeta = 100) of the kinds of objects the classes describe.
OBJECTS: dict[str, dict[str, float]] = {
    # log [NII]/Ha = -1.0, log [OIII]/Hb = 0.18: well below Kauffmann et al. (2003).
    "hii": {"HB4861": 100, "OIII5007": 150, "OI6300": 3, "HA6563": 300, "NII6584": 30, "SII6716": 20, "SII6731": 15},
    # log [NII]/Ha = 0, log [OIII]/Hb = 1.0, [SII]/Ha = 0.71: above Kewley 2001 and the Kewley 2006 Seyfert line.
    "seyfert": {"HB4861": 100, "OIII5007": 1000, "OI6300": 60, "HA6563": 310, "NII6584": 310, "SII6716": 120, "SII6731": 100},
    # log [OIII]/Hb = 0.18 with strong low-ionisation lines: below the Kewley 2006 Seyfert/LINER lines.
    "liner": {"HB4861": 100, "OIII5007": 150, "OI6300": 100, "HA6563": 320, "NII6584": 480, "SII6716": 150, "SII6731": 120},
    # [SII]/Ha = 0.6, [OI]/Ha = 0.2: a shock; below Kewley 2001 in the [NII] diagram only.
    "snr": {"HB4861": 100, "OIII5007": 200, "OI6300": 60, "HA6563": 300, "NII6584": 150, "SII6716": 100, "SII6731": 80},
    # [OIII]/Ha = 4.1 with [SII]/Ha = 0.06.
    "pn": {"HB4861": 100, "OIII5007": 1200, "OI6300": 5, "HA6563": 290, "NII6584": 60, "SII6716": 8, "SII6731": 10},
    # Only Halpha and [NII]: no BPT diagram and no [SII].
    "missing": {"HA6563": 300, "NII6584": 30},
    # An HII region whose [O I] is zero and [N II] negative (noise): undetected, not a crash.
    "nonpos": {"HB4861": 100, "OIII5007": 150, "OI6300": 0.0, "HA6563": 300, "NII6584": -5, "SII6716": 20, "SII6731": 15},
    # Halpha zero: nothing can be decided.
    "zeroha": {"HB4861": 100, "OIII5007": 150, "HA6563": 0.0, "NII6584": 30, "SII6716": 20, "SII6731": 15},
    # The HII region with NaN errors.
    "nanerr": {"HB4861": 100, "OIII5007": 150, "OI6300": 3, "HA6563": 300, "NII6584": 30, "SII6716": 20, "SII6731": 15},
}
PARAMS = NebulaDiagnosticParams(n_draws=400)


def flux_err(flux: float) -> float:
    return 0.05 * abs(flux) + 1.0  # 5 % calibration plus a noise floor (S/N ~ 3 at flux 4)


def write_catalog(path: Path, ra0: float = 150.0) -> Path:
    table = Table()
    table["id"] = list(OBJECTS)
    table["ra"] = [ra0 + 0.001 * i for i in range(len(OBJECTS))]
    table["dec"] = [2.0] * len(OBJECTS)
    for line in DIAGNOSTIC_LINES:
        table[f"{line}_FLUX"] = [obj.get(line, NAN) for obj in OBJECTS.values()]
        table[f"{line}_FLUX_ERR"] = [
            NAN if name == "nanerr" or line not in obj else flux_err(obj[line]) for name, obj in OBJECTS.items()
        ]
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


def view_rows(db, survey: str = "nebulae") -> dict[tuple[str, str], dict[str, Any]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.object_id, n.* FROM catalog.nebula_class n JOIN spectrum s ON s.id = n.spectrum_id "
                "JOIN survey sv ON sv.id = s.survey_id WHERE sv.name = :survey"
            ),
            {"survey": survey},
        ).mappings()
        return {(r["object_id"], r["method"]): dict(r) for r in rows}


class DiagnosticV3(NebulaDiagnosticTask):
    version = 3


def test_catalogue_to_catalog_nebula_class(fresh_database, tmp_path):
    db = fresh_database
    # The same objects twice: as a survey of nebulae inside galaxies (option context) and as
    # catalogue rows without a parent (integrated galaxies, inferred).
    spec = SurveySpec(name="nebulae", reader="line_catalog", options={"context": "nebula"})
    outcome = ingest_paths(db, [write_catalog(tmp_path / "nebulae.ecsv")], survey=spec).outcomes[0]
    assert outcome.status == "loaded", outcome.reason
    galaxies = SurveySpec(name="galaxies", reader="line_catalog")
    outcome = ingest_paths(db, [write_catalog(tmp_path / "galaxies.ecsv", ra0=200.0)], survey=galaxies).outcomes[0]
    assert outcome.status == "loaded", outcome.reason

    summary = process(db, NebulaDiagnosticTask(), PARAMS)
    n = 2 * len(OBJECTS)
    assert summary.status == "succeeded" and summary.n_inputs == n and summary.n_results == n
    assert summary.n_flagged == 2  # zeroha: UNKNOWN, in each survey
    rows = view_rows(db)
    got = {obj: r["class"] for (obj, _), r in rows.items()}
    # Nebula context: SNR before AGN. The Seyfert's strong [S II] and [O I] pass the shock
    # criteria, so among nebulae it is an SNR (and flagged AGN_LIKE); the LINER-like one too.
    assert got == {
        "hii": "HII", "seyfert": "SNR", "liner": "SNR", "snr": "SNR", "pn": "PN",
        "missing": "HII", "nonpos": "HII", "zeroha": "UNKNOWN", "nanerr": "HII",
    }  # fmt: skip
    gal = view_rows(db, "galaxies")
    # Galaxy context: no SNR or PN class; Kewley 2001 in any diagram is AGN.
    assert {obj: r["class"] for (obj, _), r in gal.items()} == {
        "hii": "HII", "seyfert": "AGN", "liner": "AGN", "snr": "AGN", "pn": "AGN",
        "missing": "HII", "nonpos": "HII", "zeroha": "UNKNOWN", "nanerr": "HII",
    }  # fmt: skip
    assert {r["context"] for r in rows.values()} == {"nebula"} and {r["context"] for r in gal.values()} == {"galaxy"}
    assert all(r["flags"] & F.CONTEXT_INFERRED for r in gal.values() if r["class"] != "UNKNOWN")
    assert not any(r["flags"] & F.CONTEXT_INFERRED for r in rows.values())
    assert gal["snr", "diagnostic"]["flags"] & F.SHOCK_LIKE and not gal["hii", "diagnostic"]["flags"] & F.SHOCK_LIKE
    assert gal["missing", "diagnostic"]["flags"] & F.RED_ONLY
    for r in gal.values():
        # Classes a galaxy cannot have get probability 0, not NULL.
        assert r["p_pn"] == 0.0 and r["p_snr"] == 0.0

    for (obj, method), r in {**rows, **{(k[0] + "@gal", k[1]): v for k, v in gal.items()}}.items():
        assert method == "diagnostic"
        # A catalogue has no equivalent widths: no DIG decision, said so.
        assert r["p_dig"] is None and r["flags"] & F.NO_EW
        p = [r[c] for c in ("p_hii", "p_pn", "p_snr", "p_agn") if r[c] is not None]
        assert sum(p) <= 1 + 1e-12
        if r["class"] != "UNKNOWN":
            assert r["probability"] == r[f"p_{r['class'].lower()}"]

    # Its [O I] (3 +- 1.15) is below S/N 3: flagged, but the class does not hinge on it.
    # (0.25 dex model scatter: a clear HII region is not certain, p ~ 0.98.)
    assert rows["hii", "diagnostic"]["probability"] > 0.95 and rows["hii", "diagnostic"]["flags"] == F.NO_EW | F.LOW_SNR
    assert gal["seyfert", "diagnostic"]["p_agn"] > 0.99 and not gal["seyfert", "diagnostic"]["flags"] & F.LINER
    assert gal["liner", "diagnostic"]["flags"] & F.LINER
    assert rows["seyfert", "diagnostic"]["flags"] & F.AGN_LIKE
    snr = rows["snr", "diagnostic"]
    # ([S II]/Halpha 0.6 is 0.18 dex above the 0.4 limit: under 0.25 dex of model scatter p ~ 0.67.)
    assert snr["class"] == "SNR" and snr["p_snr"] > 0.5 and not snr["flags"] & F.SNR_SII_ONLY
    # The [S II] and [O I] diagrams put it above Kewley et al. (2001), the [N II] one below.
    assert gal["snr", "diagnostic"]["flags"] & F.AMBIGUOUS
    assert rows["pn", "diagnostic"]["p_pn"] > 0.9 and rows["pn", "diagnostic"]["flags"] & F.PN_NO_SIZE
    miss = rows["missing", "diagnostic"]
    # Halpha and [N II] alone: the red-only [N II]/Ha criterion (0.1 < 0.6), said so.
    assert miss["flags"] & F.RED_ONLY and miss["flags"] & F.NO_BPT and miss["probability"] > 0.99
    assert rows["nonpos", "diagnostic"]["flags"] & F.NON_POSITIVE_FLUX and rows["nonpos", "diagnostic"]["flags"] & F.LOW_SNR
    zero = rows["zeroha", "diagnostic"]
    assert zero["flags"] & F.MISSING_LINES and zero["flags"] & F.NON_POSITIVE_FLUX
    nanerr = rows["nanerr", "diagnostic"]
    # No errors: only the model scatter moves the draws, so the probability stays below 1 (a
    # point without errors is not certain near a demarcation) and the flag says why.
    assert nanerr["flags"] & F.NO_ERROR and 0.9 < nanerr["p_hii"] < 1.0

    with db.engine.connect() as conn:
        documented = conn.execute(text("SELECT count(*) FROM flag_definition WHERE table_name = 'nebula_class'")).scalar_one()
        ingested = conn.execute(text("SELECT max(id) FROM run WHERE task = 'ingested'")).scalar_one()
        upstream = conn.execute(text("SELECT upstream_run_ids FROM run WHERE id = :i"), {"i": summary.run_id}).scalar_one()
    assert documented == len(NebulaFlag) and upstream == sorted(upstream) and len(upstream) == 2 and ingested in upstream

    # Same version, same params: nothing pending.  A version bump makes a new run that the
    # view shows instead, while the old rows stay in the table.
    assert process(db, NebulaDiagnosticTask(), PARAMS).status == "nothing to do"
    v3 = process(db, DiagnosticV3(), PARAMS)
    assert v3.n_inputs == n
    with db.engine.connect() as conn:
        per_run = dict(conn.execute(text("SELECT run_id, count(*) FROM nebula_class GROUP BY run_id")).all())
        shown = set(conn.execute(text("SELECT DISTINCT run_id FROM catalog.nebula_class")).scalars())
    assert per_run == {summary.run_id: n, v3.run_id: n} and shown == {v3.run_id}

    # The nn method: its own task and run, next to the diagnostic rows, which it leaves alone.
    nn_run = process(db, NebulaNNTask())
    assert nn_run.n_inputs == n
    rows = view_rows(db)
    assert {m for (_, m) in rows} == {"diagnostic", "nn"} and len(rows) == 2 * len(OBJECTS)
    assert {r["context"] for (_, m), r in rows.items() if m == "nn"} == {"nebula"}
    assert {r["context"] for (_, m), r in view_rows(db, "galaxies").items() if m == "nn"} == {"galaxy"}
    gal = view_rows(db, "galaxies")
    for obj in OBJECTS:
        # No PN or DIG grid exists: those are NULL in both contexts.  In a nebula the network
        # gives HII, AGN and SNR; in a galaxy the shock probability is folded into AGN.
        r, g = rows[obj, "nn"], gal[obj, "nn"]
        assert r["p_pn"] is None and r["p_dig"] is None and g["p_pn"] is None and g["p_dig"] is None
        assert g["p_snr"] is None
        if r["class"] != "UNKNOWN":
            assert r["p_hii"] + r["p_agn"] + r["p_snr"] == pytest.approx(1.0) and r["probability"] >= 1 / 3
            assert g["p_hii"] + g["p_agn"] == pytest.approx(1.0) and g["probability"] >= 0.5
            assert g["p_agn"] == pytest.approx(r["p_agn"] + r["p_snr"]) and g["p_hii"] == pytest.approx(r["p_hii"])
    # p_hii is 0.79 with the three-family network (> 0.9 with the two-class one): a few slow,
    # low-metallicity shock models lie near this HII region, and folding shocks into AGN makes
    # the HII : non-stellar prior of a galaxy 1 : 2 (docs/nebula_nn_model_card.md).
    assert gal["hii", "nn"]["class"] == "HII" and gal["hii", "nn"]["p_hii"] > 0.7
    assert gal["seyfert", "nn"]["class"] == "AGN" and gal["seyfert", "nn"]["p_agn"] > 0.9
    assert gal["liner", "nn"]["class"] == "AGN"
    assert rows["zeroha", "nn"]["class"] == "UNKNOWN" and rows["zeroha", "nn"]["flags"] & F.MISSING_LINES
    assert rows["nanerr", "nn"]["flags"] & F.NO_ERROR and rows["nanerr", "nn"]["class"] == "HII"
    with db.engine.connect() as conn:
        sha = conn.execute(text("SELECT model_sha256 FROM run WHERE id = :i"), {"i": nn_run.run_id}).scalar_one()
    assert len(sha["models/nebula_nn.pt"]) == 64


def _batch(objects: list[dict[str, float]], ew: list[float], ew_err: list[float]) -> NebulaBatch:
    f = np.full((len(objects), len(DIAGNOSTIC_LINES)), np.nan)
    e = f.copy()
    for i, obj in enumerate(objects):
        for line, v in obj.items():
            f[i, DIAGNOSTIC_LINES.index(line)] = v
            e[i, DIAGNOSTIC_LINES.index(line)] = flux_err(v)
    return NebulaBatch(list(range(1, len(objects) + 1)), f, e, np.array(ew, float), np.array(ew_err, float), [])


def test_dig_from_the_halpha_equivalent_width():
    """EW(Ha) < 3 A is DIG (Lacerda et al. 2018) whatever the ratios; near 3 A it is a coin toss."""
    hii, liner = OBJECTS["hii"], OBJECTS["liner"]
    batch = _batch([hii, liner, hii, hii], ew=[1.0, 1.5, 30.0, 3.0], ew_err=[0.2, 0.2, 1.0, 0.5])
    rows = NebulaDiagnosticTask().compute(batch, PARAMS, "cpu").rows["nebula_class"]
    cls = [r[2] for r in rows]
    assert cls[:3] == ["DIG", "DIG", "HII"]
    p_dig = [r[7] for r in rows]
    assert p_dig[0] > 0.99 and p_dig[2] < 0.01 and 0.3 < p_dig[3] < 0.7  # EW = 3 +- 0.5: half the draws
    assert not any(r[-2] & F.NO_EW for r in rows)


def test_same_seed_same_batch_same_probabilities():
    batch = _batch([OBJECTS["snr"], OBJECTS["nonpos"]], ew=[NAN, NAN], ew_err=[NAN, NAN])
    a = NebulaDiagnosticTask().compute(batch, PARAMS, "cpu").rows["nebula_class"]
    b = NebulaDiagnosticTask().compute(batch, PARAMS, "cpu").rows["nebula_class"]
    assert a == b


def test_no_draws_gives_classes_without_probabilities():
    batch = _batch([OBJECTS["seyfert"]], ew=[NAN], ew_err=[NAN])
    (row,) = NebulaDiagnosticTask().compute(batch, NebulaDiagnosticParams(n_draws=0), "cpu").rows["nebula_class"]
    assert row[2] == "AGN" and row[3] is None and all(v is None for v in row[4:9]) and row[-2] & F.NO_PROBABILITIES and row[-1] == "galaxy"


# --------------------------------------------------------------------------- published lines
# Each test places points EPS dex either side of a demarcation, with y computed here from
# the paper's equation, and checks the rules put them on the right sides.


def _classify(context: str = "galaxy", **kw: float) -> tuple[str, int]:
    args = {k: torch.tensor([kw.get(k, NAN)], dtype=torch.float64) for k in ("n2", "s2", "o1", "o3hb", "o3ha", "ew")}
    ctx = torch.tensor([CONTEXTS.index(context)])
    code, info = classify_ratios(**args, ha_ok=torch.tensor([True]), config=CFG, context=ctx)
    return CLASSES[int(code[0])], int(info[0])


@pytest.mark.parametrize("x", [-1.5, -0.8, -0.3])
def test_kewley2001_nii_maximum_starburst(x):
    # Kewley et al. 2001, eq. 5: log([OIII]/Hb) = 0.61 / (log([NII]/Ha) - 0.47) + 1.19
    y = 0.61 / (x - 0.47) + 1.19
    assert _classify(n2=x, o3hb=y + EPS)[0] == "AGN"
    assert _classify(n2=x, o3hb=y - EPS)[0] == "HII"
    assert _classify(n2=0.5, o3hb=-1.0)[0] == "AGN"  # right of the asymptote: beyond any starburst


@pytest.mark.parametrize("x", [-1.0, -0.8, -0.4])
def test_kauffmann2003_composite(x):
    # (Left of log [NII]/Ha ~ -1.3 the two curves cross, and there is no composite zone.)
    # Kauffmann et al. 2003, eq. 1: log([OIII]/Hb) = 0.61 / (log([NII]/Ha) - 0.05) + 1.3
    y = 0.61 / (x - 0.05) + 1.3
    cls_above, info_above = _classify(n2=x, o3hb=y + EPS)
    cls_below, info_below = _classify(n2=x, o3hb=y - EPS)
    assert cls_above == cls_below == "HII"  # both below Kewley et al. 2001 at these x
    assert info_above & F.COMPOSITE and not info_below & F.COMPOSITE


@pytest.mark.parametrize("x", [-1.2, -0.6, 0.0])
def test_kewley2001_sii_maximum_starburst(x):
    # Kewley et al. 2001, eq. 6: log([OIII]/Hb) = 0.72 / (log([SII]/Ha) - 0.32) + 1.30
    y = 0.72 / (x - 0.32) + 1.30
    assert _classify(s2=x, o3hb=y + EPS)[0] == "AGN"
    assert _classify(s2=x, o3hb=y - EPS)[0] == "HII"
    # In a nebula, [S II]/Ha >= 0.4 without [O I] is an SNR on [S II] alone, before AGN.
    nebula = "HII" if x < math.log10(0.4) else "SNR"
    assert _classify("nebula", s2=x, o3hb=y - EPS)[0] == nebula


@pytest.mark.parametrize("x", [-2.0, -1.2, -0.8])
def test_kewley2001_oi_maximum_starburst(x):
    # Kewley et al. 2001, eq. 7: log([OIII]/Hb) = 0.73 / (log([OI]/Ha) + 0.59) + 1.33
    y = 0.73 / (x + 0.59) + 1.33
    assert _classify(o1=x, o3hb=y + EPS)[0] == "AGN"
    assert _classify(o1=x, o3hb=y - EPS)[0] == "HII"


@pytest.mark.parametrize("x", [-0.3, -0.1, 0.2])
def test_kewley2006_sii_seyfert_liner(x):
    # Kewley et al. 2006, eq. 6: Seyferts above log([OIII]/Hb) = 1.89 log([SII]/Ha) + 0.76
    y = 1.89 * x + 0.76
    up, info_up = _classify(s2=x, n2=0.3, o3hb=y + EPS)
    down, info_down = _classify(s2=x, n2=0.3, o3hb=y - EPS)
    assert up == down == "AGN" and not info_up & F.LINER and info_down & F.LINER


@pytest.mark.parametrize("x", [-1.0, -0.6, -0.3])
def test_kewley2006_oi_seyfert_liner(x):
    # Kewley et al. 2006, eq. 7: Seyferts above log([OIII]/Hb) = 1.18 log([OI]/Ha) + 1.30
    y = 1.18 * x + 1.30
    up, info_up = _classify(o1=x, n2=0.3, o3hb=y + EPS)
    down, info_down = _classify(o1=x, n2=0.3, o3hb=y - EPS)
    assert up == down == "AGN" and not info_up & F.LINER and info_down & F.LINER


def test_sii_halpha_shock_criterion():
    # Mathewson & Clarke 1973: [SII]/Ha >= 0.4 marks shock-excited (SNR) nebulae.
    cut = math.log10(0.4)
    cls, info = _classify("nebula", s2=cut + EPS, n2=-0.7, o3hb=-0.2)
    assert cls == "SNR" and info & F.SNR_SII_ONLY  # no [O I] to confirm
    assert _classify("nebula", s2=cut - EPS, n2=-0.7, o3hb=-0.2)[0] == "HII"
    assert _classify("nebula", s2=cut + EPS)[0] == "SNR"  # needs no BPT diagram
    # In a galaxy there is no SNR class: the same ratios are HII with SHOCK_LIKE.
    cls, info = _classify(s2=cut + EPS, n2=-0.7, o3hb=-0.2)
    assert cls == "HII" and info & F.SHOCK_LIKE


def test_oiii_halpha_pn_criterion():
    cut = CFG.pn_log_oiii_ha
    cls, info = _classify("nebula", o3ha=cut + EPS, s2=-1.0, n2=-0.7, o3hb=cut + EPS + 0.46)
    assert cls == "PN" and info & F.PN_NO_DISTANCE and info & F.PN_NO_SIZE
    # Just below the cut: a metal-poor, high-excitation HII region (below Kewley 2001 at
    # low [NII] and [SII]: every diagram must agree, as any one above Kewley 2001 is AGN-like).
    assert _classify("nebula", o3ha=cut - EPS, s2=-1.8, n2=-2.2, o3hb=cut - EPS + 0.46)[0] == "HII"
    # Strong [S II] (a Seyfert or a shock) vetoes PN; with weak [O I] it is no SNR either.
    assert _classify("nebula", o3ha=cut + 0.5, s2=-0.2, o1=-1.5, n2=0.0, o3hb=1.1)[0] == "AGN"
    # No PN class in a galaxy.
    assert _classify(o3ha=cut + EPS, s2=-1.8, n2=-2.2, o3hb=cut - EPS + 0.46)[0] == "HII"


def test_dig_equivalent_width_cut():
    # Lacerda et al. 2018: EW(Ha) < 3 A is hDIG, whatever the ratios say.
    assert _classify(ew=3.0 - 0.01, n2=0.3, o3hb=1.0)[0] == "DIG"
    assert _classify(ew=3.0 + 0.01, n2=0.3, o3hb=1.0)[0] == "AGN"


def test_halpha_error_drives_unknown_probability():
    """An Halpha at S/N ~ 1 makes many draws non-positive: those are UNKNOWN, not any class."""
    f = torch.tensor([[100.0, 150.0, 3.0, 5.0, 30.0, 20.0, 15.0]], dtype=torch.float64)
    e = torch.tensor([[6.0, 8.0, 1.0, 5.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    res = classify_diagnostic(f, e, torch.tensor([NAN]), torch.tensor([NAN]), CFG, torch.Generator().manual_seed(1))
    p = res.probabilities[0]
    known = float(torch.nansum(p[:5]))
    assert 0.1 < 1 - known < 0.3  # P(Ha draw <= 0) = P(z < -1) ~ 0.16
    assert res.flags[0] & F.LOW_SNR


def _training_script():
    """``scripts/train_nebula_nn.py`` of this checkout (scripts are not in the wheel)."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "train_nebula_nn.py"
    spec = importlib.util.spec_from_file_location("train_nebula_nn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_is_reproducible_with_a_fixed_seed():
    train = _training_script().train

    torch.set_num_threads(1)
    a, _ = train(seed=3, steps=20)
    b, _ = train(seed=3, steps=20)
    c, _ = train(seed=4, steps=20)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
