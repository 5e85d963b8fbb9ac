"""Validate the direct method against PyNeb on a grid of synthetic nebulae.

    /work/venv/bin/python benchmarks/abundances_pyneb_grid.py

Line intensities come from PyNeb's getEmissivity (default atomic data) for Te[O III] in
6,000-20,000 K and ne in 10-10^4 cm^-3, with Garnett (1992) zone temperatures and fixed
ionic abundances.  skyledger's derive_abundances (no noise) must return Te within 1 %,
ne within 5 % and ionic abundances within 0.02 dex of the input values; PyNeb's own
getCrossTemDen + getIonAbundance on the same intensities is shown alongside.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abundances_common import ABUNDANCE, log_abundance, pyneb_atoms, synthetic_intensities, to_tensors, zone_temperatures  # noqa: E402

from skyledger.compute.abundances import AbundanceConfig, derive_abundances  # noqa: E402

TE_GRID = (6000.0, 8000.0, 10000.0, 12500.0, 15000.0, 20000.0)
NE_GRID = (10.0, 100.0, 1000.0, 10000.0)
IONS = {"o_plus2": "O3", "o_plus": "O2", "n_plus": "N2", "s_plus": "S2", "s_plus2": "S3"}
TE_ZONE = {"te_oiii": "O3", "te_nii": "N2", "te_siii": "S3", "te_oii": "O2"}


def main() -> None:
    cases = [(te, ne) for te in TE_GRID for ne in NE_GRID]
    rows = [synthetic_intensities(te, ne) for te, ne in cases]
    f, e = to_tensors(rows, 0.0)
    res = derive_abundances(f, e, torch.ones(len(rows), dtype=torch.bool), AbundanceConfig(methods=("direct",), n_draws=0))
    d = res.methods["direct"].values
    worst = {k: 0.0 for k in [*TE_ZONE, "ne_sii", "ne_oii", *IONS]}
    print("| Te[O III] (K) | ne (cm^-3) | dTe[O III] | dTe[N II] | dTe[S III] | dTe[O II] | dne[S II] | dne[O II] | max d(ionic) dex |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (te, ne) in enumerate(cases):
        zt = zone_temperatures(te)
        rel = {k: d[k].nominal[i].item() / zt[z] - 1 for k, z in TE_ZONE.items()}
        rel |= {k: d[k].nominal[i].item() / ne - 1 for k in ("ne_sii", "ne_oii")}
        dion = {k: d[k].nominal[i].item() - log_abundance(ABUNDANCE[z]) for k, z in IONS.items()}
        for k, v in (rel | dion).items():
            worst[k] = max(worst[k], abs(v))
        print(f"| {te:.0f} | {ne:.0f} | " + " | ".join(f"{100 * rel[k]:+.3f} %" for k in [*TE_ZONE, "ne_sii", "ne_oii"])
              + f" | {max(abs(v) for v in dion.values()):.4f} |")
    print("\nworst |relative error| (Te, ne) and |dex| (ionic):")
    for k, v in worst.items():
        print(f"  {k:8s} {100 * v:.3f} %" if not k.startswith(("o_", "n_", "s_")) else f"  {k:8s} {v:.4f} dex")

    pn, atoms, _ = pyneb_atoms()
    diags = pn.Diagnostics()
    pworst = {"te_oiii": 0.0, "ne_sii": 0.0, "o_plus2": 0.0}
    for (te, ne), r in zip(cases, rows, strict=True):
        tem, den = diags.getCrossTemDen("[OIII] 4363/5007+", "[SII] 6731/6716",
                                        r["OIII4363"] / (r["OIII4959"] + r["OIII5007"]), r["SII6731"] / r["SII6716"])
        ab = atoms["O3"].getIonAbundance(r["OIII5007"], tem, den, wave=5007, Hbeta=100.0)
        pworst["te_oiii"] = max(pworst["te_oiii"], abs(tem / te - 1))
        pworst["ne_sii"] = max(pworst["ne_sii"], abs(den / ne - 1) if den == den else float("inf"))
        pworst["o_plus2"] = max(pworst["o_plus2"], abs(log_abundance(ab) - log_abundance(ABUNDANCE["O3"])))
    print("PyNeb getCrossTemDen([OIII],[SII]) + getIonAbundance on the same inputs, worst:",
          f"Te {100 * pworst['te_oiii']:.3f} %, ne {100 * pworst['ne_sii']:.3f} %, O++ {pworst['o_plus2']:.4f} dex")


if __name__ == "__main__":
    main()
