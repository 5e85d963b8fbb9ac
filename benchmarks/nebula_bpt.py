"""BPT diagrams of the catalogue, objects coloured by class (diagnostic: circles, nn: squares).

Reads `catalog.lines` and `catalog.nebula_class` of the configured database (run
`skyledger demo` first for the bundled real spectra) and writes a PNG; the demarcation
lines are the ones the `diagnostic` method uses.

    SKYLEDGER_HOME=/tmp/demo skyledger demo
    SKYLEDGER_HOME=/tmp/demo python benchmarks/nebula_bpt.py --out docs/nebula_bpt.png
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sqlalchemy import text  # noqa: E402

from skyledger.compute.classification.diagnostic import kauffmann03_nii, kewley01_nii, kewley01_sii, kewley06_sii  # noqa: E402
from skyledger.schema.database import connect  # noqa: E402
from skyledger.schema.settings import Settings  # noqa: E402

COLOURS = {"HII": "tab:blue", "AGN": "tab:red", "SNR": "tab:green", "PN": "tab:purple", "DIG": "tab:orange", "UNKNOWN": "grey"}
LINES = ("HB4861", "OIII5007", "HA6563", "NII6584", "SII6716", "SII6731")


def log_ratio(num: float | None, den: float | None) -> float:
    if num is None or den is None or num <= 0 or den <= 0:
        return math.nan
    return math.log10(num / den)


def curve(fn, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(lo, hi, 200)
    return x, fn(torch.as_tensor(x)).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/nebula_bpt.png"))
    args = parser.parse_args()
    db = connect(Settings())
    with db.engine.connect() as conn:
        fluxes: dict[int, dict[str, float | None]] = {}
        for sid, line, flux in conn.execute(
            text("SELECT spectrum_id, line, flux FROM catalog.lines WHERE line = ANY(:l)"), {"l": list(LINES)}
        ):
            fluxes.setdefault(sid, {})[line] = flux
        classes: dict[int, dict[str, str]] = {}
        for sid, method, cls in conn.execute(text("SELECT spectrum_id, method, class FROM catalog.nebula_class")):
            classes.setdefault(sid, {})[method] = cls
    db.dispose()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, kind in zip(axes, ("NII", "SII")):
        for sid, f in fluxes.items():
            if kind == "NII":
                x = log_ratio(f.get("NII6584"), f.get("HA6563"))
            else:
                s2 = None if f.get("SII6716") is None or f.get("SII6731") is None else f["SII6716"] + f["SII6731"]
                x = log_ratio(s2, f.get("HA6563"))
            y = log_ratio(f.get("OIII5007"), f.get("HB4861"))
            if math.isnan(x) or math.isnan(y) or sid not in classes:
                continue
            c = classes[sid]
            ax.scatter(x, y, s=90, c=COLOURS[c.get("diagnostic", "UNKNOWN")], edgecolors="k", zorder=3)
            ax.scatter(x, y, s=18, marker="s", c=COLOURS[c.get("nn", "UNKNOWN")], zorder=4)
        if kind == "NII":
            ax.plot(*curve(kewley01_nii, -2, 0.46), "k-", label="Kewley+01")
            ax.plot(*curve(kauffmann03_nii, -2, 0.04), "k--", label="Kauffmann+03")
        else:
            ax.plot(*curve(kewley01_sii, -2, 0.31), "k-", label="Kewley+01")
            ax.plot(*curve(kewley06_sii, -0.31, 0.5), "k:", label="Kewley+06 Seyfert/LINER")
        label = {"NII": "[N II]6584", "SII": "[S II]6716+6731"}[kind]
        ax.set(xlim=(-2, 0.6), ylim=(-1.2, 1.5), xlabel=f"log {label}/Hα", ylabel="log [O III]5007/Hβ")
        ax.legend(fontsize=7, loc="lower left")
    for cls, colour in COLOURS.items():
        axes[1].scatter([], [], c=colour, label=cls)
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle("skyledger catalogue: circle = diagnostic class, square = nn class")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
