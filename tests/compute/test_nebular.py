"""Fast tests of skyledger.compute.abundances (no PyNeb needed: reference numbers are recorded).

PyNeb numbers below were printed by ``benchmarks/abundances_pyneb_reference.py`` with
PyNeb 1.1.32 and its default atomic data; the full PyNeb grid comparison is the benchmark
``benchmarks/abundances_pyneb_grid.py`` (results in docs/abundances_validation.md).
"""

from __future__ import annotations

import math

import pytest
import torch

from skyledger.schema.linelist import LINE_IDS
from skyledger.compute.abundances import AbundanceConfig, AbundanceFlag, derive_abundances
from skyledger.compute.abundances.atomic import LINE_TRANSITIONS, doublet_ratio, load_hydrogen, load_ion
from skyledger.compute.abundances.diagnostics import DIAGNOSTICS, diagnostic_grid, invert, ratio_exact
from skyledger.compute.abundances.direct import direct_method
from skyledger.compute.abundances.dust import intrinsic_balmer_ratios

F64 = torch.float64

PYNEB_REFERENCE = {
    ("O3_te_ratio", 10000.0, 100.0): 204.869989537209,
    ("N2_te_ratio", 10000.0, 100.0): 89.67976524021303,
    ("S3_te_ratio", 10000.0, 100.0): 51.813975256738274,
    ("S2_ne_ratio", 10000.0, 100.0): 1.3511179221917713,
    ("O2_ne_ratio", 10000.0, 100.0): 1.3493455593469876,
    ("O3_5007_emis", 10000.0, 100.0): 3.4970737098460715e-21,
    ("H1_hbeta_emis", 10000.0, 100.0): 1.235e-25,
    ("O3_te_ratio", 15000.0, 1000.0): 68.22226731606615,
    ("N2_te_ratio", 15000.0, 1000.0): 38.30070618555389,
    ("S3_te_ratio", 15000.0, 1000.0): 24.15163709071401,
    ("S2_ne_ratio", 15000.0, 1000.0): 0.9519734233237999,
    ("O2_ne_ratio", 15000.0, 1000.0): 0.8484909049747182,
    ("O3_5007_emis", 15000.0, 1000.0): 8.151100795285286e-21,
    ("H1_hbeta_emis", 15000.0, 1000.0): 8.607e-26,
}
# PyNeb getCrossTemDen('[OIII] 4363/5007+', '[SII] 6731/6716', 1/300, 1/1.3)
PYNEB_CROSS = (8961.471399295977, 153.7756357761819)
# PyNeb O3.getIonAbundance(450, 11000, 200, wave=5007, Hbeta=100)
PYNEB_O3_ABUND = 0.00011530071196656423

_DIAG_FOR = {"O3_te_ratio": "te_oiii", "N2_te_ratio": "te_nii", "S3_te_ratio": "te_siii", "S2_ne_ratio": "ne_sii", "O2_ne_ratio": "ne_oii"}


def t(x: float) -> torch.Tensor:
    return torch.tensor([x], dtype=F64)


@pytest.mark.parametrize("key", sorted(PYNEB_REFERENCE, key=str))
def test_emissivities_match_pyneb(key: tuple[str, float, float]) -> None:
    name, te, ne = key
    if name in _DIAG_FOR:
        mine = ratio_exact(DIAGNOSTICS[_DIAG_FOR[name]], t(te), t(ne)).item()
    elif name == "O3_5007_emis":
        mine = load_ion("O3").emissivity("OIII5007", t(te), t(ne)).item()
    else:
        mine = load_hydrogen().emissivity("HB4861", t(te), t(ne)).item()
    assert mine == pytest.approx(PYNEB_REFERENCE[key], rel=2e-3)


def test_line_wavelengths_from_levels_match_linelist() -> None:
    from skyledger.schema.linelist import LINES

    for line_id, (ion, _) in LINE_TRANSITIONS.items():
        vac = load_ion(ion).wavelength(line_id)
        # The 2P->2D [O II] blends are labelled by one component; allow their 1.1 A spread.
        assert vac == pytest.approx(LINES[line_id].vacuum_wavelength, abs=2.5 if "OII73" in line_id else 0.6)


def test_doublet_ratios_are_the_textbook_values() -> None:
    assert doublet_ratio("OIII5007", "OIII4959") == pytest.approx(2.98, abs=0.01)
    assert doublet_ratio("NII6584", "NII6548") == pytest.approx(2.94, abs=0.01)
    assert doublet_ratio("SIII9532", "SIII9069") == pytest.approx(2.47, abs=0.01)


def test_case_b_balmer_ratios() -> None:
    ha, hg = intrinsic_balmer_ratios(1e4, 100.0)
    assert ha == pytest.approx(2.863, abs=1e-3)
    assert hg == pytest.approx(0.468, abs=1e-3)


def test_grid_inversion_matches_exact_solver() -> None:
    grid = diagnostic_grid()
    gen = torch.Generator().manual_seed(3)
    lt = torch.empty(400, dtype=F64).uniform_(3.78, 4.3, generator=gen)
    ln = torch.empty(400, dtype=F64).uniform_(1.0, 4.0, generator=gen)
    for name, diag in DIAGNOSTICS.items():
        r = torch.log(ratio_exact(diag, 10**lt, 10**ln))
        if diag.kind == "te":
            x, below, above = invert(grid, name, r, ln, (3.6, 4.5))
            assert (10 ** (x - lt) - 1).abs().max() < 1e-3, name
        else:
            x, below, above = invert(grid, name, r, lt, (0.0, 6.0))
            assert (10 ** (x - ln) - 1).abs().max() < 1e-2, name
        assert not (below | above).any()


def test_cross_diagnostic_matches_pyneb() -> None:
    lines = {k: t(math.nan) for k in LINE_IDS}
    lines.update(HB4861=t(100.0), OIII5007=t(300.0 * 0.75), OIII4959=t(300.0 * 0.25), OIII4363=t(1.0))
    lines.update(SII6716=t(1.3), SII6731=t(1.0))
    out, flags = direct_method(lines)
    assert out["te_oiii"].item() == pytest.approx(PYNEB_CROSS[0], rel=2e-3)
    assert out["ne_sii"].item() == pytest.approx(PYNEB_CROSS[1], rel=0.02)


def _synthetic(te_high: float, ne: float, abund: dict[str, float]) -> dict[str, torch.Tensor]:
    """Intensities relative to Hbeta=100 for a two-zone nebula with Garnett temperatures."""
    zone = {"O3": te_high, "S3": 0.83 * te_high + 1700.0, "N2": 0.70 * te_high + 3000.0}
    zone["O2"] = zone["S2"] = zone["N2"]
    hyd = load_hydrogen()
    lines = {k: t(math.nan) for k in LINE_IDS}
    lines["HB4861"] = t(100.0)
    for line_id, (ion, _) in LINE_TRANSITIONS.items():
        tz = t(zone[ion])
        eps = load_ion(ion).emissivity(line_id, tz, t(ne))
        lines[line_id] = 100.0 * abund[ion] * eps / hyd.emissivity("HB4861", tz, t(ne))
    return lines


ABUND = {"O3": 1.6e-4, "O2": 6.0e-5, "N2": 8.0e-6, "S2": 6.0e-7, "S3": 2.0e-6}


@pytest.mark.parametrize(("te", "ne"), [(7000.0, 30.0), (12000.0, 300.0), (18000.0, 3000.0)])
def test_direct_method_recovers_a_synthetic_nebula(te: float, ne: float) -> None:
    out, flags = direct_method(_synthetic(te, ne, ABUND))
    assert out["te_oiii"].item() == pytest.approx(te, rel=1e-3)
    assert out["te_nii"].item() == pytest.approx(0.7 * te + 3000.0, rel=1e-3)
    assert out["te_siii"].item() == pytest.approx(0.83 * te + 1700.0, rel=1e-3)
    assert out["ne_sii"].item() == pytest.approx(ne, rel=0.02)
    assert out["o_plus2"].item() == pytest.approx(12 + math.log10(ABUND["O3"]), abs=2e-3)
    assert out["o_plus"].item() == pytest.approx(12 + math.log10(ABUND["O2"]), abs=2e-3)
    assert out["n_plus"].item() == pytest.approx(12 + math.log10(ABUND["N2"]), abs=2e-3)
    assert out["oh"].item() == pytest.approx(12 + math.log10(ABUND["O3"] + ABUND["O2"]), abs=2e-3)
    assert out["no"].item() == pytest.approx(math.log10(ABUND["N2"] / ABUND["O2"]), abs=3e-3)
    # Only the bits saying which measured temperature each zone used.
    assert int(flags.item()) == AbundanceFlag.TE_HIGH_FROM_OIII | AbundanceFlag.TE_LOW_FROM_NII | AbundanceFlag.TE_INT_FROM_SIII


def _catalogue(lines: dict[str, torch.Tensor], n: int = 1, snr: float = 50.0) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.full((n, len(LINE_IDS)), math.nan, dtype=F64)
    for k, v in lines.items():
        f[:, LINE_IDS.index(k)] = v.item() if isinstance(v, torch.Tensor) else v
    return f, f.abs() / snr


def _run(f: torch.Tensor, e: torch.Tensor, corrected: bool = True, **cfg: object):
    config = AbundanceConfig(**{"n_draws": 50, **cfg})
    dc = torch.full((f.shape[0],), corrected)
    return derive_abundances(f, e, dc, config, generator=torch.Generator().manual_seed(0))


def _strong_lines() -> dict[str, float]:
    return {"OII3726": 120.0, "OII3729": 160.0, "HG4340": 46.8, "HB4861": 100.0, "OIII4959": 150.0,
            "OIII5007": 450.0, "NII6548": 10.0, "HA6563": 286.3, "NII6584": 30.0, "SII6716": 20.0,
            "SII6731": 15.0}  # fmt: skip


def test_strong_line_values_against_the_papers_equations() -> None:
    L = _strong_lines()
    res = _run(*_catalogue(L), n_draws=0)
    n2 = math.log10(L["NII6584"] / L["HA6563"])
    o3n2 = math.log10((L["OIII5007"] / L["HB4861"]) / (L["NII6584"] / L["HA6563"]))
    o3n2_value = res.methods["O3N2_PP04"].values["oh"].nominal.item()
    assert res.methods["N2_PP04"].values["oh"].nominal.item() == pytest.approx(8.90 + 0.57 * n2, abs=1e-9)
    assert o3n2_value == pytest.approx(8.73 - 0.32 * o3n2, abs=1e-9)
    assert res.methods["N2_M13"].values["oh"].nominal.item() == pytest.approx(8.743 + 0.462 * n2, abs=1e-9)
    assert res.methods["O3N2_M13"].values["oh"].nominal.item() == pytest.approx(8.533 - 0.214 * o3n2, abs=1e-9)
    # Dopita et al. 2016, eq. 1-2
    y = math.log10(L["NII6584"] / (L["SII6716"] + L["SII6731"])) + 0.264 * math.log10(L["NII6584"] / L["HA6563"])
    assert res.methods["N2S2HA_D16"].values["oh"].nominal.item() == pytest.approx(8.77 + y + 0.45 * (y + 0.3) ** 5, abs=1e-9)
    # Pilyugin & Grebel 2016, upper branch (log N2 = log(40/100) > -0.6)
    N2 = (L["NII6548"] + L["NII6584"]) / 100
    R2 = (L["OII3726"] + L["OII3729"]) / 100
    R3 = (L["OIII4959"] + L["OIII5007"]) / 100
    S2 = (L["SII6716"] + L["SII6731"]) / 100
    lg = math.log10
    r_u = 8.589 + 0.022 * lg(R3 / R2) + 0.399 * lg(N2) + (-0.137 + 0.164 * lg(R3 / R2) + 0.589 * lg(N2)) * lg(R2)
    s_u = 8.424 + 0.030 * lg(R3 / S2) + 0.751 * lg(N2) + (-0.349 + 0.182 * lg(R3 / S2) + 0.508 * lg(N2)) * lg(S2)
    assert res.methods["R_PG16"].values["oh"].nominal.item() == pytest.approx(r_u, abs=1e-9)
    assert res.methods["S_PG16"].values["oh"].nominal.item() == pytest.approx(s_u, abs=1e-9)
    # Curti et al. 2020, N2: the returned z must reproduce the observed N2 through their polynomial
    z = res.methods["N2_C20"].values["oh"].nominal.item()
    x = z - 8.69
    assert -0.489 + 1.513 * x - 2.554 * x**2 - 5.293 * x**3 - 2.867 * x**4 == pytest.approx(n2, abs=1e-6)
    # Kobulnicky & Kewley 2004, iterated by hand (upper branch: log NII/OII = -0.97 > -1.2)
    xr = lg((L["OII3726"] + L["OII3729"] + L["OIII4959"] + L["OIII5007"]) / 100)
    yq = lg((L["OIII4959"] + L["OIII5007"]) / (L["OII3726"] + L["OII3729"]))
    zz = 8.7
    for _ in range(10):
        q = (32.81 - 1.153 * yq**2 + zz * (-3.396 - 0.025 * yq + 0.1444 * yq**2)) / (
            4.603 - 0.3119 * yq - 0.163 * yq**2 + zz * (-0.48 + 0.0271 * yq + 0.02037 * yq**2))
        zz = 9.72 - 0.777 * xr - 0.951 * xr**2 - 0.072 * xr**3 - 0.811 * xr**4 - q * (
            0.0737 - 0.0713 * xr - 0.141 * xr**2 + 0.0373 * xr**3 - 0.058 * xr**4)
    assert res.methods["R23_KK04"].values["oh"].nominal.item() == pytest.approx(zz, abs=1e-6)


def test_calibration_out_of_range_is_flagged() -> None:
    L = _strong_lines() | {"NII6584": 200.0, "NII6548": 68.0}  # N2 = -0.16: beyond PP04's -0.3
    res = _run(*_catalogue(L), n_draws=0)
    assert res.methods["N2_PP04"].flags.item() & AbundanceFlag.CALIBRATION_OUT_OF_RANGE
    assert not (_run(*_catalogue(_strong_lines()), n_draws=0).methods["N2_PP04"].flags.item() & AbundanceFlag.CALIBRATION_OUT_OF_RANGE)


def test_reddening_is_measured_applied_and_clipped() -> None:
    L = _strong_lines()
    # Redden by E(B-V)=0.3 with the default curve (F99, R_V=3.1) and recover it.
    from skyledger.compute.abundances.dust import extinction_k

    ids = tuple(L)
    k = extinction_k("F99", 3.1, ids, torch.device("cpu"), F64)
    red = {i: L[i] * 10 ** (-0.4 * 0.3 * k[j].item()) for j, i in enumerate(ids)}
    res = _run(*_catalogue(red), corrected=False, n_draws=0)
    assert res.ebv.nominal.item() == pytest.approx(0.3, abs=2e-3)
    assert res.methods["N2_PP04"].values["oh"].nominal.item() == pytest.approx(
        _run(*_catalogue(L), n_draws=0).methods["N2_PP04"].values["oh"].nominal.item(), abs=1e-6)
    # Halpha/Hbeta below case B: clipped to zero and flagged
    low = L | {"HA6563": 250.0}
    res = _run(*_catalogue(low), corrected=False, n_draws=0)
    assert res.ebv.nominal.item() == 0.0
    assert res.dust_flags.item() & AbundanceFlag.NEGATIVE_REDDENING_CLIPPED
    # Already corrected: no E(B-V), no correction
    res = _run(*_catalogue(red), corrected=True, n_draws=0)
    assert math.isnan(res.ebv.nominal.item())
    assert res.dust_flags.item() & AbundanceFlag.ALREADY_DUST_CORRECTED
    # Hgamma fallback, then nothing at all
    res = _run(*_catalogue({k: v for k, v in red.items() if k != "HA6563"}), corrected=False, n_draws=0)
    assert res.dust_flags.item() & AbundanceFlag.BALMER_FROM_HGAMMA
    assert res.ebv.nominal.item() == pytest.approx(0.3, abs=5e-3)
    res = _run(*_catalogue({k: v for k, v in red.items() if k not in ("HA6563", "HG4340")}), corrected=False, n_draws=0)
    assert res.dust_flags.item() & AbundanceFlag.NO_BALMER_DECREMENT


def test_missing_doublet_member_uses_theory_and_flags() -> None:
    lines = _synthetic(11000.0, 200.0, ABUND)
    full = _run(*_catalogue(lines), n_draws=0).methods["direct"]
    part = _run(*_catalogue({k: v for k, v in lines.items() if k not in ("OIII4959", "NII6548", "SIII9069")}), n_draws=0)
    d = part.methods["direct"]
    assert d.flags.item() & AbundanceFlag.RATIO_FROM_THEORY
    assert not full.flags.item() & AbundanceFlag.RATIO_FROM_THEORY
    assert d.values["te_oiii"].nominal.item() == pytest.approx(full.values["te_oiii"].nominal.item(), rel=2e-3)


def test_missing_auroral_line_gives_nan_te_and_relation() -> None:
    lines = _synthetic(11000.0, 200.0, ABUND)
    lines["OIII4363"] = t(math.nan)
    lines["SIII6312"] = t(math.nan)
    d = _run(*_catalogue(lines), n_draws=0).methods["direct"]
    assert math.isnan(d.values["te_oiii"].nominal.item())
    assert d.flags.item() & AbundanceFlag.NO_TE_OIII
    assert d.flags.item() & AbundanceFlag.TE_FROM_RELATION
    # T[O III] from T[N II] by Garnett (1992) is exact for this synthetic nebula
    assert d.values["o_plus2"].nominal.item() == pytest.approx(12 + math.log10(ABUND["O3"]), abs=5e-3)


def test_edge_cases_flag_instead_of_crashing() -> None:
    lines = _synthetic(11000.0, 200.0, ABUND)
    f, e = _catalogue(lines, n=4)
    f[1, LINE_IDS.index("OIII4363")] = -0.5  # negative auroral flux
    f[2, LINE_IDS.index("HB4861")] = 0.0  # zero Hbeta
    e[3, LINE_IDS.index("OIII5007")] = math.nan  # NaN error
    res = _run(f, e)
    d = res.methods["direct"]
    assert d.flags[1].item() & AbundanceFlag.NONPOSITIVE_FLUX and d.flags[1].item() & AbundanceFlag.NO_TE_OIII
    assert math.isnan(d.values["oh"].median[2].item()) and d.flags[2].item() & AbundanceFlag.MISSING_LINES
    assert d.flags[3].item() & AbundanceFlag.BAD_ERROR and math.isfinite(d.values["oh"].median[3].item())


def test_low_density_limit_and_low_sn_auroral_are_flagged() -> None:
    lines = _synthetic(11000.0, 200.0, ABUND)
    lines["SII6716"] = lines["SII6731"] * 1.6  # above the low-density limit (~1.45)
    lines["OII3729"] = lines["OII3726"] * 1.6
    f, e = _catalogue(lines)
    e[0, LINE_IDS.index("OIII4363")] = f[0, LINE_IDS.index("OIII4363")] / 2  # S/N = 2
    d = _run(f, e).methods["direct"]
    assert d.flags.item() & AbundanceFlag.NE_LOW_DENSITY_LIMIT
    assert d.flags.item() & AbundanceFlag.AURORAL_LOW_SN
    assert d.values["ne_sii"].nominal.item() == pytest.approx(1.0)


def test_monte_carlo_is_seeded_and_brackets_the_median() -> None:
    lines = _synthetic(11000.0, 200.0, ABUND)
    f, e = _catalogue(lines, n=3, snr=20.0)
    a = _run(f, e, n_draws=100).methods["direct"].values["oh"]
    b = _run(f, e, n_draws=100).methods["direct"].values["oh"]
    assert torch.equal(a.median, b.median)
    assert bool((a.p16 < a.median).all() and (a.median < a.p84).all())
    width = (a.p84 - a.p16).mean().item()
    assert 0.005 < width < 0.3
    assert a.nominal[0].item() == pytest.approx(12 + math.log10(ABUND["O3"] + ABUND["O2"]), abs=3e-3)


def test_low_sn_auroral_line_is_not_used_and_the_relation_is_named() -> None:
    """A MaNGA-like spaxel: [N II]5755 at S/N 1 and 30 % too bright (noise), [O II]7320,30
    at S/N 1 too; [O III]4363 is good. The direct method must leave 5755 out and take the
    low zone from the Garnett relation, and say so; with the threshold at 0 it uses the
    bad line, and the O+ abundance moves."""
    lines = _synthetic(11000.0, 200.0, ABUND)
    lines["NII5755"] = lines["NII5755"] * 1.3  # a 1-sigma-high draw: T[N II] comes out too high
    f, e = _catalogue(lines)
    for k in ("NII5755", "OII7320", "OII7330"):
        e[0, LINE_IDS.index(k)] = f[0, LINE_IDS.index(k)]  # S/N = 1 (the 7320+7330 sum: 1.4)
    d = _run(f, e, n_draws=0).methods["direct"]
    flags = int(d.flags.item())
    assert flags & AbundanceFlag.AURORAL_LOW_SN and flags & AbundanceFlag.NO_TE_NII and flags & AbundanceFlag.NO_TE_OII
    assert flags & AbundanceFlag.TE_LOW_FROM_RELATION and not flags & (AbundanceFlag.TE_LOW_FROM_NII | AbundanceFlag.TE_LOW_FROM_OII)
    assert flags & AbundanceFlag.TE_HIGH_FROM_OIII and flags & AbundanceFlag.TE_INT_FROM_SIII
    assert math.isnan(d.values["te_nii"].nominal.item())
    # The relation is exact for this synthetic nebula: O+ comes back right.
    assert d.values["o_plus"].nominal.item() == pytest.approx(12 + math.log10(ABUND["O2"]), abs=5e-3)
    used = _run(f, e, n_draws=0, auroral_min_snr=0.0).methods["direct"]
    assert int(used.flags.item()) & AbundanceFlag.TE_LOW_FROM_NII
    assert used.values["te_nii"].nominal.item() > 1.05 * (0.7 * 11000.0 + 3000.0)
    assert used.values["o_plus"].nominal.item() < d.values["o_plus"].nominal.item() - 0.05


def test_no_auroral_line_says_no_te() -> None:
    lines = _synthetic(11000.0, 200.0, ABUND)
    for k in ("OIII4363", "NII5755", "SIII6312", "OII7320", "OII7330"):
        lines[k] = t(math.nan)
    d = _run(*_catalogue(lines), n_draws=0).methods["direct"]
    flags = int(d.flags.item())
    assert flags & AbundanceFlag.NO_TE and flags & AbundanceFlag.MISSING_LINES
    assert not flags & (AbundanceFlag.TE_HIGH_FROM_RELATION | AbundanceFlag.TE_LOW_FROM_RELATION | AbundanceFlag.TE_INT_FROM_RELATION)
