"""Which Kewley et al. (2001) vote decides AGN in galaxy context: measured on the TRAIN grids only.

Reads compute/models/mappings5_nebulabayes_grids.csv.gz (MAPPINGS 5.1, NebulaBayes HII and
NLR; fluxes relative to Hbeta) and prints, per variant, the fraction of HII models kept
below the line and of NLR models put above it.  docs/nebula_classification.md quotes the
output; the test grids (other codes) are never read here.

    .venv/bin/python scripts/nebula_agn_variants.py
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import torch

from skyledger.compute.classification.criteria import above_kewley01, ho97_red_agn

GRID = Path(__file__).resolve().parents[1] / "compute" / "models" / "mappings5_nebulabayes_grids.csv.gz"


def main() -> None:
    with gzip.open(GRID, "rt") as fh:
        rows = list(csv.DictReader(fh))
    label = np.array([r["grid"] for r in rows])

    def col(name: str) -> torch.Tensor:
        # "--" marks a line the grid does not give: NaN, so the model drops out of that diagram
        return torch.tensor([float(r[name]) if r[name] not in ("", "--") else float("nan") for r in rows], dtype=torch.float64)

    ha = col("Halpha")
    n2, s2 = torch.log10(col("NII6583") / ha), torch.log10((col("SII6716") + col("SII6731")) / ha)
    o1, o3hb = torch.log10(col("OI6300") / ha), torch.log10(col("OIII5007") / col("Hbeta"))
    a_n2, a_s2, a_o1 = above_kewley01(n2, s2, o1, o3hb)
    votes = a_n2.int() + a_s2.int() + a_o1.int()
    variants = {
        "[N II] diagram only (primary)": a_n2,
        "[S II] diagram only": a_s2,
        "[O I] diagram only": a_o1,
        "any of the three": votes >= 1,
        "majority (>= 2 of 3)": votes >= 2,
        "all three": votes == 3,
        "[N II], or both [S II] and [O I]": a_n2 | (a_s2 & a_o1),
    }
    hii, nlr = label == "HII", label == "NLR"
    print(f"MAPPINGS 5.1 NebulaBayes grids: {hii.sum()} HII, {nlr.sum()} NLR models")
    print("| variant | HII kept below | NLR (AGN) above |\n|---|---|---|")
    for name, above in variants.items():
        a = above.numpy()
        print(f"| {name} | {1 - a[hii].mean():.4f} | {a[nlr].mean():.4f} |")
    # The same with 0.1 dex Gaussian scatter on every ratio (100 draws per model): does a
    # variant keep the HII models when the demarcation is uncertain by as much as codes differ?
    gen = torch.Generator().manual_seed(1)
    drawn = [v.unsqueeze(0) + 0.1 * torch.randn((100, len(v)), generator=gen, dtype=torch.float64) for v in (n2, s2, o1, o3hb)]
    d_n2, d_s2, d_o1 = above_kewley01(*drawn)
    d_votes = d_n2.int() + d_s2.int() + d_o1.int()
    scattered = {"[N II] diagram only (primary)": d_n2, "any of the three": d_votes >= 1, "majority (>= 2 of 3)": d_votes >= 2,
                 "all three": d_votes == 3}  # fmt: skip
    h, a_ = torch.from_numpy(hii), torch.from_numpy(nlr)
    print("| variant, 0.1 dex scatter | HII kept below | NLR (AGN) above |\n|---|---|---|")
    for name, above in scattered.items():
        f = above.double()
        print(f"| {name} | {1 - float(f[:, h].mean()):.4f} | {float(f[:, a_].mean()):.4f} |")
    # Without Hbeta/[O III]: the red-only criteria of Ho, Filippenko & Sargent (1997).
    r_n2, r_s2, r_o1 = ho97_red_agn(n2, s2, o1)
    red_votes = r_n2.int() + r_s2.int() + r_o1.int()
    red = {
        "red-only: [N II]/Ha >= 0.6 only": r_n2,
        "red-only: any of the three": red_votes >= 1,
        "red-only: majority (>= 2 of 3)": red_votes >= 2,
        "red-only: all three": red_votes == 3,
    }
    print("| red-only variant | HII kept below | NLR (AGN) above |\n|---|---|---|")
    for name, above in red.items():
        a = above.numpy()
        print(f"| {name} | {1 - a[hii].mean():.4f} | {a[nlr].mean():.4f} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
