"""Regenerate ``compute/abundances/data/atomic_data.json`` from PyNeb's default data set.

PyNeb (Luridiana, Morisset & Shaw 2015) is the field's reference code for the direct
method; its *default* atomic data set is what the validation compares against, so the
package ships exactly those numbers.  This script runs once, by hand, whenever the
PyNeb data release changes; the package never imports PyNeb at run time.

    /work/venv/bin/python benchmarks/extract_atomic_data.py

What is extracted, per ion (O III, N II, S III, O II, S II):
- level energies (cm^-1, NIST ASD as bundled with PyNeb) and statistical weights,
- Einstein A values (s^-1),
- effective collision strengths Upsilon(T) at the tabulated log10(T) nodes.
For H I: the Storey & Hummer (1995) case-B emissivities of Halpha, Hbeta and Hgamma on
their native (T, ne) nodes (no interpolation), for Hbeta-relative abundances and the
intrinsic Balmer decrement.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

# Ion key -> (element, spectrum). The level counts are those PyNeb uses by default
# (the smaller of the A-value, collision and NIST level counts).
IONS: dict[str, tuple[str, int]] = {
    "O3": ("O", 3),
    "N2": ("N", 2),
    "S3": ("S", 3),
    "O2": ("O", 2),
    "S2": ("S", 2),
}

# SH95 nodes kept: the temperatures and densities where nebulae live.
H_TE_RANGE = (3000.0, 30000.0)
H_LOG_NE_RANGE = (2.0, 6.0)

OUT = Path(__file__).resolve().parents[1] / "compute" / "nebular" / "data" / "atomic_data.json"


def _sources(path: str) -> list[str]:
    """The ``*** SOURCEn`` bibliographic lines of a PyNeb ASCII data file."""
    out: list[str] = []
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("***") and "SOURCE" in line:
                out.append(line.split("SOURCE", 1)[1].lstrip("0123456789 ").strip())
    return out


def _ion_block(pn: Any, key: str, elem: str, spec: int) -> dict[str, Any]:
    atom = pn.Atom(elem, spec)
    n = int(atom.NLevels)
    data_dir = os.path.join(os.path.dirname(pn.__file__), "atomic_data")
    energy_cm = np.asarray(atom.getEnergy(unit="1/Ang"), dtype=float)[:n] * 1e8
    weights = np.asarray(atom.getStatWeight(), dtype=float)[:n]
    a_values = np.asarray(atom.getA(), dtype=float)[:n, :n]
    log_te = np.asarray(atom.getTemArray(), dtype=float)
    if atom.tem_units != "log(K)":
        raise SystemExit(f"{key}: unexpected temperature unit {atom.tem_units!r}")
    pairs: list[list[int]] = []
    values: list[list[float]] = []
    for upper in range(1, n):
        for lower in range(upper):
            pairs.append([lower + 1, upper + 1])
            # Ask per transition (upper, lower), 1-based: the full-array layout is internal.
            omega = np.asarray(atom.getOmegaArray(upper + 1, lower + 1), dtype=float)
            values.append([float(v) for v in omega])
    labels = []
    nist_refs: set[str] = set()
    for rec in atom.NIST[:n]:
        labels.append(f"{rec['conf'] if 'conf' in rec.dtype.names else rec[0]} "
                      f"{rec[1]} J={rec[2]:g}")
        nist_refs.add(str(rec[4]).strip())
    return {
        "element": elem,
        "spectrum": spec,
        "n_levels": n,
        "levels": labels,
        "energy_cm-1": [float(e) for e in energy_cm],
        "stat_weight": [float(g) for g in weights],
        "A_s-1": [[float(v) for v in row] for row in a_values],
        "upsilon": {"log10_te": [float(t) for t in log_te], "pairs": pairs, "values": values},
        "sources": {
            "energies": "NIST Atomic Spectra Database (Kramida et al.), bibliographic refs "
            + ", ".join(sorted(r for r in nist_refs if r)),
            "A_values": _sources(os.path.join(data_dir, atom.atomFile)),
            "collision_strengths": _sources(os.path.join(data_dir, atom.collFile)),
            "pyneb_files": [atom.atomFile, atom.collFile],
        },
    }


def _hydrogen_block(pn: Any) -> dict[str, Any]:
    h1 = pn.RecAtom("H", 1)
    te_nodes = np.unique(np.asarray(h1.temp, dtype=float))
    te_nodes = te_nodes[(te_nodes >= H_TE_RANGE[0]) & (te_nodes <= H_TE_RANGE[1])]
    ne_nodes = np.unique(np.asarray(h1.log_dens, dtype=float))
    ne_nodes = ne_nodes[(ne_nodes >= H_LOG_NE_RANGE[0]) & (ne_nodes <= H_LOG_NE_RANGE[1])]
    table: dict[str, list[list[float]]] = {}
    for name, label in (("HA6563", "3_2"), ("HB4861", "4_2"), ("HG4340", "5_2")):
        rows = []
        for te in te_nodes:
            rows.append([float(h1.getEmissivity(te, 10.0**ln, label=label)) for ln in ne_nodes])
        table[name] = rows
    return {
        "case": "B",
        "unit": "erg cm3 s-1 (4 pi j / (ne n_p))",
        "te_K": [float(t) for t in te_nodes],
        "log10_ne": [float(v) for v in ne_nodes],
        "emissivity": table,
        "source": "Storey, P. J. & Hummer, D. G. 1995, MNRAS, 272, 41 (case B), "
        "native table nodes as distributed with PyNeb (" + str(h1.recFitsFile) + ")",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import pyneb as pn  # benchmark-only dependency

    pn.log_.level = 0
    doc = {
        "description": "Atomic data for skyledger.compute.abundances: PyNeb default set, "
        "extracted by benchmarks/extract_atomic_data.py. Levels are 1-based in 'pairs' "
        "(lower, upper); A_s-1[upper][lower] with 0-based indices.",
        "generated_with": f"pyneb {pn.__version__}",
        "ions": {key: _ion_block(pn, key, *es) for key, es in IONS.items()},
        "hydrogen": _hydrogen_block(pn),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
