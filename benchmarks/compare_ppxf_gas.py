"""skyledger's line fit against the stored pPXF gas reference on every real spectrum.

    python benchmarks/compare_ppxf_gas.py [--config degree=-1,mdegree=10,templates=emiles] [--only NAME ...] [--out FILE]
    python benchmarks/compare_ppxf_gas.py --reference-table     # the stored pPXF numbers only

Fits the spectra of ``ppxf_gas_inputs.py`` with ``fit_spectra`` (FitConfig defaults,
changed by ``--config key=value,...``; see ``skyledger.testing.fit_config``) and prints
markdown tables against ``tests/data/ppxf_reference/ppxf_gas_reference.json`` (made by
``ppxf_gas_reference.py``). Goals (issue 21): line ratios within 5 % where both lines
have S/N > 10 in both codes; gas V within 10 km/s; sigma_gas within 10 % (for a group
with a line of S/N > 10 in both codes). Gas V is compared in the frame of the input
redshift (line V + stellar V in skyledger, pPXF's own V), so a stellar-V difference does
not count twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ppxf_gas_inputs import reference_inputs  # noqa: E402

from skyledger.compute.fitting import fit_spectra  # noqa: E402
from skyledger.testing.fit_config import parse_fit_config  # noqa: E402

REF = Path(__file__).resolve().parents[1] / "tests" / "data" / "ppxf_reference" / "ppxf_gas_reference.json"
#: (label, numerator lines, denominator lines)
RATIOS = (
    ("Hα/Hβ", ("HA6563",), ("HB4861",)),
    ("[OIII]5007/Hβ", ("OIII5007",), ("HB4861",)),
    ("[NII]6584/Hα", ("NII6584",), ("HA6563",)),
    ("[SII]/Hα", ("SII6716", "SII6731"), ("HA6563",)),
)
#: lines that speak for a kinematic group, in order of preference
GROUP_LINES = {"recombination": ("HA6563", "HB4861", "HG4340"), "forbidden": ("OIII5007", "NII6584", "SII6716", "OII3729")}
RATIO_TOL, V_TOL, SIGMA_TOL, MIN_SNR = 0.05, 10.0, 0.10, 10.0


def _sky_lines(res) -> dict[str, tuple[float, float, float, float]]:
    """skyledger line id -> (flux, flux_err, V vs z_in, sigma) of spectrum 0."""
    out = {}
    for j, lid in enumerate(res.line_ids):
        out[lid] = (float(res.line_flux[0, j]), float(res.line_flux_err[0, j]),
                    float(res.line_velocity[0, j] + res.velocity[0]), float(res.line_sigma[0, j]))  # fmt: skip
    return out


def _ratio(num: list[float], den: list[float]) -> float:
    """sum(num) / sum(den); NaN where the denominator is zero (a line at its bound)."""
    d = sum(den)
    return sum(num) / d if d > 0 else float("nan")


def _snr(f: float, e: float) -> float:
    return f / e if np.isfinite(f) and np.isfinite(e) and e > 0 else 0.0


def compare(name: str, ref: dict, res) -> tuple[list[str], list[str], dict[str, list[bool]]]:
    """Markdown rows (ratios, kinematics) and the pass/fail list per goal for one spectrum."""
    sky = _sky_lines(res)
    pl = ref["lines"]
    verdicts: dict[str, list[bool]] = {"ratio": [], "V": [], "σ": []}
    ratio_rows, kin_rows = [], []
    for label, num, den in RATIOS:
        ids = num + den
        if not all(i in pl and i in sky for i in ids):
            continue
        snr_ok = all(_snr(*sky[i][:2]) > MIN_SNR and _snr(pl[i]["flux"], pl[i]["flux_err"]) > MIN_SNR for i in ids)
        r_s = _ratio([sky[i][0] for i in num], [sky[i][0] for i in den])
        r_p = _ratio([pl[i]["flux"] for i in num], [pl[i]["flux"] for i in den])
        d = r_s / r_p - 1 if r_p != 0 else float("nan")
        if snr_ok and np.isfinite(d):
            verdicts["ratio"].append(abs(d) < RATIO_TOL)
            verdict = "pass" if abs(d) < RATIO_TOL else "**fail**"
        else:
            verdict = "— (S/N ≤ 10)"
        snr_txt = "/".join(f"{_snr(*sky[i][:2]):.0f}" for i in ids)
        ratio_rows.append(f"| {name} | {label} | {snr_txt} | {r_s:.3f} | {r_p:.3f} | {100 * d:+.1f} % | {verdict} |")
    for group, candidates in GROUP_LINES.items():
        g = ref["groups"].get(group)
        lid = next((i for i in candidates if i in pl and i in sky and _snr(*sky[i][:2]) > MIN_SNR
                    and _snr(pl[i]["flux"], pl[i]["flux_err"]) > MIN_SNR), None)  # fmt: skip
        if g is None or lid is None:
            continue
        v_s, s_s = sky[lid][2], sky[lid][3]
        dv, ds = v_s - g["velocity_zin"], s_s / g["sigma"] - 1
        ok_v, ok_s = abs(dv) < V_TOL, abs(ds) < SIGMA_TOL
        verdicts["V"].append(bool(ok_v))
        verdicts["σ"].append(bool(ok_s))
        kin_rows.append(
            f"| {name} | {group} ({lid}) | {v_s:.1f} | {g['velocity_zin']:.1f} ± {g['velocity_err']:.1f} | {dv:+.1f} {'pass' if ok_v else '**fail**'} "
            f"| {s_s:.1f} | {g['sigma']:.1f} ± {g['sigma_err']:.1f} | {100 * ds:+.1f} % {'pass' if ok_s else '**fail**'} |"
        )
    st = ref["stellar"]
    kin_rows.append(f"| {name} | stars | {res.velocity[0]:.1f} | {st['velocity']:.1f} ± {st['velocity_err']:.1f} | {res.velocity[0] - st['velocity']:+.1f} "
                    f"| {res.sigma[0]:.1f} | {st['sigma']:.1f} ± {st['sigma_err']:.1f} | {100 * (res.sigma[0] / st['sigma'] - 1):+.1f} % |")  # fmt: skip
    return ratio_rows, kin_rows, verdicts


def reference_table(ref: dict) -> str:
    """The stored pPXF numbers: one row per spectrum (no fitting)."""
    rows = ["| spectrum | Hα/Hβ (free) | Hα/Hβ (tied, Case B + C00) | [OIII]5007/Hβ | [NII]6584/Hα | [SII]/Hα "
            "| V, σ Balmer+He (km/s) | V, σ forbidden | V, σ stars | χ²/dof |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in ref.items():
        if r.get("status") != "ok":
            rows.append(f"| {name} | {r.get('status')} | | | | | | | | |")
            continue
        pl = r["lines"]

        def cell(num: tuple[str, ...], den: tuple[str, ...]) -> str:
            if not all(i in pl for i in num + den):
                return "—"
            value = _ratio([pl[i]["flux"] for i in num], [pl[i]["flux"] for i in den])
            snr = min(_snr(pl[i]["flux"], pl[i]["flux_err"]) for i in num + den)
            return f"{value:.3f}" + ("" if snr > MIN_SNR else f" (S/N {snr:.0f})")

        def kin(g: dict | None) -> str:
            return "—" if g is None else f"{g['velocity_zin']:.1f}, {g['sigma']:.1f}"

        tied = r.get("balmer_decrement_tied")
        rows.append(
            f"| {name} | {cell(('HA6563',), ('HB4861',))} | {'—' if tied is None else f'{tied:.3f}'} "
            f"| {cell(('OIII5007',), ('HB4861',))} | {cell(('NII6584',), ('HA6563',))} | {cell(('SII6716', 'SII6731'), ('HA6563',))} "
            f"| {kin(r['groups'].get('recombination'))} | {kin(r['groups'].get('forbidden'))} "
            f"| {r['stellar']['velocity']:.1f}, {r['stellar']['sigma']:.1f} | {r['chi2_dof']:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="", help="FitConfig fields and templates=NAME, e.g. degree=-1,mdegree=10,templates=emiles")
    ap.add_argument("--only", nargs="*", help="spectrum names (default: every one in the reference)")
    ap.add_argument("--reference", type=Path, default=REF)
    ap.add_argument("--out", type=Path, help="also write the markdown here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference-table", action="store_true", help="print the stored pPXF numbers and stop")
    args = ap.parse_args()
    if args.reference_table:
        print(reference_table(json.loads(args.reference.read_text())["spectra"]))
        return
    torch.set_num_threads(args.threads)
    config, templates, ignored = parse_fit_config(args.config)
    if ignored:
        print(f"# ignored (not in this installation): {', '.join(ignored)}", file=sys.stderr)
    ref = json.loads(args.reference.read_text())["spectra"]
    names = [n for n in (args.only or ref) if n in ref]
    inputs = reference_inputs(names)
    ratio_rows, kin_rows, failed_rows = [], [], []
    totals: dict[str, list[bool]] = {"ratio": [], "V": [], "σ": []}
    for name in names:
        r = ref[name]
        if r.get("status") != "ok":
            failed_rows.append(f"| {name} | pPXF {r.get('status')} |")
            continue
        t0 = time.perf_counter()
        res = fit_spectra(inputs[name].batch, templates, config)
        if res.flags[0] & 0b111 or not np.isfinite(res.velocity[0]):
            failed_rows.append(f"| {name} | skyledger flags {int(res.flags[0])} |")
            continue
        rr, kr, v = compare(name, r, res)
        ratio_rows += rr
        kin_rows += kr
        for k in totals:
            totals[k] += v[k]
        print(f"# {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    lines = [
        f"Configuration: `{args.config or 'FitConfig() defaults'}`" + (f" (ignored here: {', '.join(ignored)})" if ignored else ""),
        "",
        "| spectrum | ratio | S/N skyledger (lines) | skyledger | pPXF | Δ | within 5 % |",
        "|---|---|---|---|---|---|---|",
        *ratio_rows,
        "",
        "| spectrum | component (line) | V skyledger (km/s, vs z_in) | V pPXF | ΔV (goal 10 km/s) | σ skyledger (km/s) | σ pPXF | Δσ/σ (goal 10 %) |",
        "|---|---|---|---|---|---|---|---|",
        *kin_rows,
    ]
    if failed_rows:
        lines += ["", "| spectrum | not compared |", "|---|---|", *failed_rows]
    lines += ["", "Passed (ratios with S/N > 10; gas V; gas σ): "
              + "; ".join(f"{k} {sum(v)}/{len(v)}" for k, v in totals.items())]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
