"""Train the `nn` nebula classifier: ``python scripts/train_nebula_nn.py`` (from a checkout).

Synthetic spectra are drawn from the MAPPINGS 5 grids in
``compute/models/mappings5_nebulabayes_grids.csv.gz`` (HII regions, class HII; AGN
narrow-line regions, class AGN) with random reddening, model scatter, noise across S/N
and randomly missing lines.  Grid points with 12 + log(O/H) in ``HELD_OUT_OH`` are never
trained on: the held-out metrics (accuracy and ECE per S/N bin) are measured on them and
written next to the weights, for the model card.  Everything is seeded: the same command
gives the same weights on the same torch version and device.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.resources
import json
import math
from pathlib import Path

import numpy as np
import torch

from skyledger.compute.classification.diagnostic import CLASSES, DiagnosticConfig, classify_diagnostic
from skyledger.compute.classification.nn import FEATURE_NAMES, NN_CLASSES, NebulaMLP, features, load_model

__all__ = ["HELD_OUT_OH", "SNR_BINS", "evaluate", "load_grids", "main", "synthesise", "train"]

GRID_FILE = Path(str(importlib.resources.files("skyledger.compute.models") / "mappings5_nebulabayes_grids.csv.gz"))
GRID_LINES = ("Hbeta", "OIII5007", "OI6300", "Halpha", "NII6583", "SII6716", "SII6731")  # = DIAGNOSTIC_LINES
#: Interior metallicities held out of training (both grids share the O/H axis).
HELD_OUT_OH = (8.362, 8.874)
#: AGN NLR models below this O/H are left out: AGN hosts are massive, metal-rich galaxies
#: (Groves et al. 2006 find few low-metallicity AGN), and the low-Z NLR models sit on HII regions.
AGN_MIN_OH = 8.3
SNR_BINS = ((2, 5), (5, 10), (10, 30), (30, 100), (100, 500))
# Cardelli et al. (1989) R_V = 3.1 k(lambda) at the lines, for random reddening.
_K = np.array([3.61, 3.47, 2.66, 2.53, 2.52, 2.44, 2.44])


def load_grids(path: Path = GRID_FILE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fluxes [m, 7] relative to Hbeta, label [m] index into NN_CLASSES, O/H [m])."""
    with gzip.open(path, "rt") as fh:
        header = fh.readline().strip().split(",")
        rows = [line.strip().split(",") for line in fh]
    col = {c: i for i, c in enumerate(header)}
    grid = np.array([r[col["grid"]] for r in rows])
    oh = np.array([float(r[col["oh"]]) for r in rows])
    # "--": a line the grid file leaves masked (10 extreme HII models); those models are left out.
    flux = np.array([[math.nan if r[col[c]] == "--" else float(r[col[c]]) for c in GRID_LINES] for r in rows])
    label = np.where(grid == "NLR", NN_CLASSES.index("AGN"), NN_CLASSES.index("HII"))
    keep = ((grid == "HII") | (oh >= AGN_MIN_OH)) & np.isfinite(flux).all(1)
    return flux[keep], label[keep], oh[keep]


def synthesise(flux: np.ndarray, label: np.ndarray, n: int, rng: np.random.Generator, snr_range=(2.0, 500.0)):
    """n noisy spectra, classes balanced: (fluxes [n,7] NaN=missing, errors [n,7], labels [n], S/N(Ha) [n])."""
    idx = np.concatenate([rng.choice(np.flatnonzero(label == c), n // len(NN_CLASSES)) for c in range(len(NN_CLASSES))])
    rng.shuffle(idx)
    m = len(idx)
    true = flux[idx] * 10 ** rng.normal(0.0, 0.05, (m, 7))  # model scatter ~0.05 dex per line
    true *= 10 ** (-0.4 * rng.uniform(0.0, 1.0, (m, 1)) * _K)  # E(B-V) in [0, 1]
    snr_ha = np.exp(rng.uniform(math.log(snr_range[0]), math.log(snr_range[1]), m))
    # One noise level per spectrum (lines sit on similar continuum), varied per line.
    sigma = (true[:, 3] / snr_ha)[:, None] * np.exp(rng.uniform(math.log(0.5), math.log(2.0), (m, 7)))
    obs = true + sigma * rng.normal(size=(m, 7))
    err = sigma * np.exp(rng.uniform(math.log(0.8), math.log(1.25), (m, 7)))  # mis-estimated errors
    drop = np.zeros((m, 7), dtype=bool)
    drop[:, 2] = rng.random(m) < 0.3  # [O I] is often not measured
    drop[:, 4] = rng.random(m) < 0.15
    drop[:, 5:7] = (rng.random(m) < 0.15)[:, None]
    drop[:, 0:2] = (rng.random(m) < 0.15)[:, None]  # red-only spectra: no Hbeta, [O III]
    obs[drop] = np.nan
    err[drop] = np.nan
    return obs, err, label[idx], snr_ha


def train(seed: int = 20261201, steps: int = 3000, hidden: int = 64) -> tuple[NebulaMLP, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    flux, label, oh = load_grids()
    train_mask = ~np.isin(np.round(oh, 3), HELD_OUT_OH)
    f, e, y, _ = synthesise(flux[train_mask], label[train_mask], 300_000, rng)
    x, _ = features(torch.from_numpy(f), torch.from_numpy(e))
    yt = torch.from_numpy(y).long()
    model = NebulaMLP(hidden=hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = torch.randint(0, len(yt), (2048,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[b]), yt[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    ratios = x[:, :4]
    avail = x[:, -4:] == 0
    rmin = torch.stack([ratios[avail[:, j], j].min() for j in range(4)])
    rmax = torch.stack([ratios[avail[:, j], j].max() for j in range(4)])
    info = {"seed": seed, "steps": steps, "hidden": hidden, "n_train_models": int(train_mask.sum()), "final_loss": float(loss.detach())}
    return model, {"ratio_min": rmin, "ratio_max": rmax, "info": info}


def _ece(p: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-class probability (equal-width bins)."""
    edges = np.linspace(0.5, 1.0, bins + 1)  # two classes: the top probability is >= 0.5
    which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    return float(sum(abs(p[which == k].mean() - correct[which == k].mean()) * (which == k).mean() for k in range(bins) if (which == k).any()))


def evaluate(model: NebulaMLP, seed: int = 7) -> dict:
    """Held-out accuracy and ECE per S/N(Ha) bin, for the network and the diagnostic rules."""
    rng = np.random.default_rng(seed)
    flux, label, oh = load_grids()
    held = np.isin(np.round(oh, 3), HELD_OUT_OH)
    out: dict = {"held_out_oh": list(HELD_OUT_OH), "n_held_out_models": int(held.sum()), "bins": []}
    cfg = DiagnosticConfig(n_draws=0)
    for lo, hi in SNR_BINS:
        f, e, y, _ = synthesise(flux[held], label[held], 20_000, rng, (lo, hi))
        x, _ = features(torch.from_numpy(f), torch.from_numpy(e))
        with torch.no_grad():
            p = torch.softmax(model(x), 1).numpy()
        pred, top = p.argmax(1), p.max(1)
        correct = pred == y
        nan = torch.full((len(y),), math.nan, dtype=torch.float64)
        d = classify_diagnostic(torch.from_numpy(f), torch.from_numpy(e), nan, nan, cfg).classes.numpy()
        agn_d = d == CLASSES.index("AGN")
        decided = np.isin(d, [CLASSES.index("HII"), CLASSES.index("AGN"), CLASSES.index("SNR"), CLASSES.index("PN")])
        truth_agn = y == NN_CLASSES.index("AGN")
        # Confusion matrices, rows = true class, columns = predicted class. The diagnostic's
        # columns are all its classes: an HII model it calls SNR or DIG is a miss too.
        k = len(NN_CLASSES)
        nn_confusion = np.zeros((k, k), dtype=int)
        np.add.at(nn_confusion, (y, pred), 1)
        diag_confusion = np.zeros((k, len(CLASSES)), dtype=int)
        np.add.at(diag_confusion, (y, d), 1)
        out["bins"].append({
            "snr_ha": [lo, hi], "n": len(y), "nn_accuracy": float(correct.mean()), "nn_ece": _ece(top, correct),
            "nn_recall": {c: float(correct[y == i].mean()) for i, c in enumerate(NN_CLASSES)},
            "nn_confusion": {"rows_true": list(NN_CLASSES), "cols_predicted": list(NN_CLASSES), "counts": nn_confusion.tolist()},
            "diagnostic_agn_vs_rest_accuracy": float((agn_d == truth_agn)[decided].mean()),
            "diagnostic_decided_fraction": float(decided.mean()),
            "diagnostic_confusion": {"rows_true": list(NN_CLASSES), "cols_predicted": list(CLASSES), "counts": diag_confusion.tolist()},
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "compute" / "models" / "nebula_nn.pt")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument(
        "--evaluate-only", action="store_true",
        help="re-measure the held-out metrics of the weights at --out without training",
    )  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # reproducible and polite on shared machines
    if args.evaluate_only:
        model, _, _ = load_model(args.out)
        metrics_path = args.out.with_suffix(".metrics.json")
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        metrics["held_out"] = evaluate(model)
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
        print(json.dumps(metrics["held_out"], indent=2))
        return
    model, extra = train(args.seed, args.steps)
    blob = {"state_dict": model.state_dict(), "hidden": extra["info"]["hidden"], "classes": list(NN_CLASSES),
            "features": list(FEATURE_NAMES), "ratio_min": extra["ratio_min"], "ratio_max": extra["ratio_max"]}  # fmt: skip
    torch.save(blob, args.out)
    metrics = {"training": extra["info"], "held_out": evaluate(model)}
    args.out.with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
