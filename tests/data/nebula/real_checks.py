"""Print the tables of docs/nebula_real_checks.md: the line ratios of every real input,
computed by hand from the fluxes (not by the classifier), and what `nebula_diagnostic`
gives on them, through the same chain and selections as tests/compute/test_nebula_real.py
(a private embedded PostgreSQL; ~15 s of `lines` on the GMOS files).

    .venv/bin/python tests/data/nebula/real_checks.py [--all]

``--all`` lists every GMOS spaxel and SAMI bin; by default the tested ones are listed and
the others counted.

Before the context option exists (branch without helper `rules`' work), the surveys are
ingested without it and the context column shows "-".
"""

from __future__ import annotations

import math
import shutil
import sys
from collections import Counter
import tempfile
from pathlib import Path

import torch
from astropy.table import Table

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "compute"))

import test_nebula_real as T  # noqa: E402  the test's inputs and selections, one definition

from skyledger.compute.classification.diagnostic import (  # noqa: E402
    DIAGNOSTIC_LINES,
    NebulaFlag,
    kewley01_nii,
    kewley01_oi,
    kewley01_sii,
)
from skyledger.compute.fitting import LineFlag  # noqa: E402
from skyledger.compute.tasks.nebula import NebulaDiagnosticTask  # noqa: E402
from skyledger.ingest.readers import base  # noqa: E402
from skyledger.testing.private_database import private_database  # noqa: E402

#: lines `lines` could not fit, dropped by the nebula tasks (as make_sami_catalogue.py)
UNUSABLE = int(LineFlag.NO_GOOD_PIXELS | LineFlag.ZERO_FLUX | LineFlag.SPECTRUM_FAILED | LineFlag.NOT_IN_RANGE)
HAS_CONTEXT = "context" in getattr(base, "SHARED_OPTIONS", ())




def ratios(f: dict[str, float]) -> dict[str, float]:
    """log10 of the diagnostic ratios (NaN where a line is missing or not positive)."""

    def lg(a: float, b: float) -> float:
        return math.log10(a / b) if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan

    ha = f.get("HA6563", math.nan)
    return {
        "N2": lg(f.get("NII6584", math.nan), ha),
        "S2": lg(f.get("SII6716", math.nan) + f.get("SII6731", math.nan), ha),
        "O1": lg(f.get("OI6300", math.nan), ha),
        "O3": lg(f.get("OIII5007", math.nan), f.get("HB4861", math.nan)),
    }


def above_kewley(x: float, y: float, curve, asymptote: float) -> float:
    """y minus the Kewley et al. (2001) curve at x (dex); +inf right of the curve's asymptote."""
    if x >= asymptote:
        return math.inf
    return y - float(curve(torch.tensor([x], dtype=torch.float64))[0])


def fmt(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{10**v:.2f}"


def summary(r: dict | None) -> str:
    """Class and context of a row, for the counts of the rows not listed."""
    return "no row" if r is None else f"{r['class']}/{r.get('context', '-') if HAS_CONTEXT else '-'}"


def verdict(r: dict | None) -> str:
    if r is None:
        return "no row"
    names = [f.name for f in NebulaFlag if r["flags"] & f and f.name not in ("NO_EW",)]
    ctx = r.get("context", "-") if HAS_CONTEXT else "-"
    return f"{r['class']} ({r['probability']:.2f}) | {ctx} | {'+'.join(names) or '-'}"


HEAD = "| input | [NII]/Ha | [SII]/Ha | [OI]/Ha | [OIII]/Hb | class (p) | context | flags (NO_EW omitted) |\n|---|---:|---:|---:|---:|---|---|---|"


def row(name: str, f: dict[str, float], r: dict | None) -> str:
    q = ratios(f)
    return f"| {name} | {fmt(q['N2'])} | {fmt(q['S2'])} | {fmt(q['O1'])} | {fmt(q['O3'])} | {verdict(r)} |"


def main() -> None:
    show_all = "--all" in sys.argv[1:]
    torch.set_num_threads(1)
    if not HAS_CONTEXT:
        ingest = T.ingest
        T.ingest = lambda db, path, survey, **o: ingest(db, path, survey, **{k: v for k, v in o.items() if k != "context"})
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = private_database(work, "nebula_real")

        class Factory:
            def mktemp(self, name: str) -> Path:
                (work / name).mkdir(exist_ok=True)
                return work / name

        try:
            rows, gmos = T.classified.__wrapped__(db, Factory())
            # The test's sami_inferred fixture, but said rather than failed when the reader
            # refuses the PSF option: then the bins are ingested without it.
            try:
                T.ingest(db, T.SAMI, "sami-inferred", psf_fwhm_arcsec=T.SAMI_PSF_FWHM)
                psf_note = f"survey option psf_fwhm_arcsec = {T.SAMI_PSF_FWHM}"
            except AssertionError as err:
                reason = err.args[0][1] if err.args and isinstance(err.args[0], tuple) else err
                psf_note = f"no PSF: the reader refused the option psf_fwhm_arcsec: {reason}"
                # (a copy: the refused attempt is recorded against the file's path)
                T.ingest(db, Path(shutil.copy(T.SAMI, work)), "sami-inferred")
            assert T.process(db, T.NebulaDiagnosticTask(), T.PARAMS).status == "succeeded"
            rows = T.diagnostic_rows(db)
        finally:
            db.dispose()
    print(f"nebula_diagnostic version {NebulaDiagnosticTask.version}; context option {'used' if HAS_CONTEXT else 'not available'}\n")

    print("### GMOS (the chain on tests/data/gmos)\n")
    print(HEAD)
    peak, around = T.ngc3081_nucleus(gmos)
    others: Counter[str] = Counter()
    for s in sorted(gmos):
        f = {line: d["flux"] for line, d in gmos[s].items() if d["flux"] is not None and not d["flags"] & UNUSABLE}
        survey = "gmos-nuclei" if s == "NGC 6300" else "gmos-ifu"
        tag = " **(nucleus: brightest Halpha)**" if s == peak else (" (3x3 around the nucleus)" if s in around else "")
        if tag or s == "NGC 6300" or show_all:
            print(row(s + tag, f, rows.get((survey, s))))
        else:
            others[summary(rows.get((survey, s)))] += 1
    if others:
        print(f"\nThe other {sum(others.values())} NGC 3081 spaxels: {dict(others.most_common())}")

    t = Table.read(T.SAMI, format="ascii.ecsv")
    central, outer = T.sami_bins()
    for survey in ("sami-galaxy", "sami-inferred"):
        print(f"\n### SAMI 209807 bins, survey {survey}" + ("" if survey == "sami-galaxy" else f" ({psf_note})") + "\n")
        print(HEAD.replace("| input |", "| bin (r\") |"))
        others = Counter()
        for b in t[t["parent"] == "209807"]:
            f = {line: float(b[f"{line}_FLUX"]) for line in DIAGNOSTIC_LINES}
            tag = " central" if b["id"] in central else (" outer" if b["id"] in outer else "")
            if tag or show_all:
                print(row(f"{b['id']} ({b['r_arcsec']:.2f}){tag}", f, rows.get((survey, str(b["id"])))))
            else:
                others[summary(rows.get((survey, str(b["id"]))))] += 1
        if others:
            print(f"\nThe other {sum(others.values())} bins (between the two radii, or an outer bin with a line below S/N 3): "
                  f"{dict(others.most_common())}")

    print("\n### SAMI 209807 tested bins: y - y(Kewley et al. 2001) in dex at the measured ratios (positive = above)\n")
    print("| bin | [N II] | [S II] | [O I] | above in |\n|---|---:|---:|---:|---|")
    for b in t[t["parent"] == "209807"]:
        if b["id"] not in central + outer:
            continue
        q = ratios({line: float(b[f"{line}_FLUX"]) for line in DIAGNOSTIC_LINES})
        d = [above_kewley(q[x], q["O3"], curve, asymptote)
             for x, curve, asymptote in (("N2", kewley01_nii, 0.47), ("S2", kewley01_sii, 0.32), ("O1", kewley01_oi, -0.59))]  # fmt: skip
        print(f"| {b['id']} ({'central' if b['id'] in central else 'outer'}) | " + " | ".join(f"{v:+.2f}" for v in d)
              + f" | {sum(v > 0 for v in d)} of 3 |")

    print("\n### Archetypes (tests/data/nebula/archetypes.csv)\n")
    print(HEAD.replace("| input |", "| row (expected) |"))
    for a in T.archetype_rows():
        f = {line: float(a[f"{line}_FLUX"]) for line in DIAGNOSTIC_LINES}
        print(row(f"{a['id']} ({a['expected_class']}, {a['context']})", f, rows.get((f"archetypes-{a['context']}", a["id"]))))


if __name__ == "__main__":
    main()
