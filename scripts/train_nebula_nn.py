"""Train the `nn` nebula classifier: ``python scripts/train_nebula_nn.py`` (from a checkout).

Three families of models, each labelled by what ionises the gas:

* HII: MAPPINGS 5.1 HII regions, ``compute/models/mappings5_nebulabayes_grids.csv.gz``;
* AGN: MAPPINGS 5.1 AGN narrow-line regions, same file;
* SNR: MAPPINGS III fast radiative shocks of Allen et al. (2008), components ``s`` (shock
  only) and ``sp`` (shock + precursor), ``tests/data/nebula_grids/allen08_shock.csv.gz``.
  Only the n = 1 cm^-3 abundance series (``SHOCK_TRAIN_SERIES``) are trained on; the
  density series (``SHOCK_TEST_SERIES``) are a held-out test that is *same code,
  out-of-series*, not a test on another code.

Synthetic spectra (classes balanced) carry model scatter, Cardelli et al. (1989) reddening,
noise drawn per line across S/N, randomly missing lines and (5 %) no errors.  Validation (the only data
hyperparameters were chosen on): HII and AGN models with 12 + log(O/H) in ``HELD_OUT_OH``,
shock models with B in ``SHOCK_VALIDATION_B``; none is trained on.  The out-of-family
measurements (held-out shock series, HII grids of other codes, a network trained on HII + AGN
only, leave-one-family-out) are written next to the weights, for the model card.
Everything is seeded: the same command gives the same weights on the same torch version.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import importlib.resources
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from skyledger.compute.classification.diagnostic import CLASSES, DIAGNOSTIC_LINES, DiagnosticConfig, classify_diagnostic
from skyledger.compute.classification.nn import FEATURE_NAMES, NN_CLASSES, NebulaMLP, features, in_context, load_model

__all__ = [
    "HELD_OUT_OH", "OTHER_CODE_HII", "SHOCK_TEST_SERIES", "SHOCK_TRAIN_SERIES", "SNR_BINS", "evaluate", "families",
    "load_grids", "main", "out_of_family", "read_grid", "synthesise", "train",
]  # fmt: skip

REPO = Path(__file__).resolve().parents[1]
GRID_FILE = Path(str(importlib.resources.files("skyledger.compute.models") / "mappings5_nebulabayes_grids.csv.gz"))
GRID_DIR = REPO / "tests" / "data" / "nebula_grids"  # grids of other codes (tests/data/nebula_grids/README.md)
GRID_LINES = ("Hbeta", "OIII5007", "OI6300", "Halpha", "NII6583", "SII6716", "SII6731")  # = DIAGNOSTIC_LINES
#: Interior metallicities held out of training for validation (both MAPPINGS 5 grids share the O/H axis).
HELD_OUT_OH = (8.362, 8.874)
#: AGN NLR models below this O/H are left out: AGN hosts are massive, metal-rich galaxies
#: (Groves et al. 2006 find few low-metallicity AGN), and the low-Z NLR models sit on HII regions.
AGN_MIN_OH = 8.3
#: Allen et al. (2008) series at n = 1 cm^-3: M solar, J Dopita (2005), R 2x solar, P SMC, Q LMC.
SHOCK_TRAIN_SERIES = ("M", "J", "R", "P", "Q")
#: Solar abundances at n = 0.01 (T), 0.1 (U), 10 (V), 100 (L), 1000 (S) cm^-3: never trained on.
SHOCK_TEST_SERIES = ("T", "U", "V", "L", "S")
#: Components trained on: shock only. The precursor is gas photoionised by the shock's radiation
#: (an HII-like spectrum); in shock + precursor (sp) models it can dominate, and training on
#: sp put SNR probability on textbook HII regions (docs/nebula_nn_model_card.md). Both s and
#: sp of the held-out series are tested.
TRAIN_SHOCK_COMPONENTS = ("s",)
TEST_SHOCK_COMPONENTS = ("s", "sp")
#: Magnetic parameters (uG) of the training series held out for validation.
SHOCK_VALIDATION_B = (1.0, 4.0)
#: HII grids of codes the network never saw (tests/data/nebula_grids/<name>.csv.gz).
OTHER_CODE_HII = ("kewley01_hii", "dopita13_hii", "bagpipes_cloudy25_hii")
SNR_BINS = ((2, 5), (5, 10), (10, 30), (30, 100), (100, 500))
#: S/N(Halpha) range of the out-of-family test spectra (all lines measured).
TEST_SNR = (10.0, 100.0)
#: Per-line log-normal model scatter. 0.1 dex is the size of the differences between codes and
#: between published demarcations (issue 26 design), fixed before any test grid was looked at.
MODEL_SCATTER_DEX = 0.1


def _cardelli89_k() -> np.ndarray:
    """k(lambda) = A(lambda)/E(B-V) at the lines, Cardelli, Clayton & Mathis (1989), R_V = 3.1."""
    import astropy.units as u
    from dust_extinction.parameter_averages import CCM89

    wave = np.array([4861.32, 5006.84, 6300.30, 6562.80, 6583.45, 6716.44, 6730.82]) * u.AA  # DIAGNOSTIC_LINES
    return 3.1 * np.asarray(CCM89(Rv=3.1)(wave))


_K = _cardelli89_k()


def load_grids(path: Path = GRID_FILE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAPPINGS 5.1: (fluxes [m, 7] relative to Hbeta, label [m] index into NN_CLASSES, O/H [m])."""
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


def read_grid(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """A grid of tests/data/nebula_grids: (fluxes [m, 7] in DIAGNOSTIC_LINES order, NaN = not
    given; labels [m]; params [m] as dicts)."""
    with gzip.open(path, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or any(c not in rows[0] for c in (*DIAGNOSTIC_LINES, "label", "params")):
        raise ValueError(f"{path} lacks the columns label, params, {', '.join(DIAGNOSTIC_LINES)}: see tests/data/nebula_grids/README.md")
    flux = np.array([[float(r[c]) if r[c] not in ("", None) else math.nan for c in DIAGNOSTIC_LINES] for r in rows])
    params = [dict(kv.split("=", 1) for kv in r["params"].split(";") if "=" in kv) for r in rows]
    return flux, np.array([r["label"] for r in rows]), params


def _shocks(path: Path, series: tuple[str, ...], components: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Allen et al. (2008) models of the given series and components: (fluxes, B [uG], NaN = equipartition)."""
    flux, _, params = read_grid(path)
    keep = np.array([p["series"] in series and p["comp"] in components for p in params])
    if not keep.any():
        raise ValueError(f"{path} has no models of series {series} and components {components}")
    b = np.array([float(p["B"]) if _is_number(p["B"]) else math.nan for p in params])
    ok = keep & np.isfinite(flux).all(1) & (flux > 0).all(1)
    return flux[ok], b[ok]


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def families(shock_path: Path, shock_components: tuple[str, ...] = TRAIN_SHOCK_COMPONENTS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{family: (training fluxes, validation fluxes)} for HII, AGN and SNR."""
    flux, label, oh = load_grids()
    val = np.isin(np.round(oh, 3), HELD_OUT_OH)
    out = {c: (flux[~val & (label == i)], flux[val & (label == i)]) for i, c in enumerate(NN_CLASSES) if c != "SNR"}
    shock, b = _shocks(shock_path, SHOCK_TRAIN_SERIES, shock_components)
    sval = np.isin(b, SHOCK_VALIDATION_B)
    out["SNR"] = (shock[~sval], shock[sval])
    return out


def synthesise(
    flux: np.ndarray, label: np.ndarray, n: int, rng: np.random.Generator, snr_range=(2.0, 500.0),
    scatter_dex: float = MODEL_SCATTER_DEX, drop_lines: bool = True,
):  # fmt: skip
    """n noisy spectra, classes balanced: (fluxes [n,7] NaN=missing, errors [n,7], labels [n], S/N(Ha) [n])."""
    classes = np.unique(label)
    idx = np.concatenate([rng.choice(np.flatnonzero(label == c), n // len(classes)) for c in classes])
    rng.shuffle(idx)
    m = len(idx)
    true = flux[idx] * 10 ** rng.normal(0.0, scatter_dex, (m, 7))
    true *= 10 ** (-0.4 * rng.uniform(0.0, 1.0, (m, 1)) * _K)  # E(B-V) in [0, 1], Cardelli et al. 1989
    snr_ha = np.exp(rng.uniform(math.log(snr_range[0]), math.log(snr_range[1]), m))
    # Noise drawn per line: a level per spectrum (lines sit on similar continuum) set by
    # S/N(Ha), times a factor per line; a line below its noise is a non-detection.
    sigma = (true[:, 3] / snr_ha)[:, None] * np.exp(rng.uniform(math.log(0.5), math.log(2.0), (m, 7)))
    obs = true + sigma * rng.normal(size=(m, 7))
    err = sigma * np.exp(rng.uniform(math.log(0.8), math.log(1.25), (m, 7)))  # mis-estimated errors
    if drop_lines:
        drop = np.zeros((m, 7), dtype=bool)
        drop[:, 2] = rng.random(m) < 0.3  # [O I] is often not measured
        drop[:, 4] = rng.random(m) < 0.15
        drop[:, 5:7] = (rng.random(m) < 0.15)[:, None]
        drop[:, 0:2] = (rng.random(m) < 0.15)[:, None]  # red-only spectra: no Hbeta, [O III]
        obs[drop] = np.nan
        err[drop] = np.nan
        # Catalogues without errors: the features give such a line the top S/N, which the
        # network must have seen (else an HII region without errors reads as AGN).
        err[rng.random(m) < 0.05] = np.nan
    return obs, err, label[idx], snr_ha


def train(
    seed: int = 20261201, steps: int = 6000, hidden: int = 128, classes: tuple[str, ...] = NN_CLASSES,
    shock_path: Path | None = None, shock_components: tuple[str, ...] = TRAIN_SHOCK_COMPONENTS,
) -> tuple[NebulaMLP, dict]:  # fmt: skip
    """A network over ``classes`` (a subset of NN_CLASSES, in that order), trained on their
    families' training models; the outputs are in the order of ``classes``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fam = families(shock_path or GRID_DIR / "allen08_shock.csv.gz", shock_components)
    flux = np.concatenate([fam[c][0] for c in classes])
    label = np.concatenate([np.full(len(fam[c][0]), i) for i, c in enumerate(classes)])
    f, e, y, _ = synthesise(flux, label, 300_000, rng)
    x, _ = features(torch.from_numpy(f), torch.from_numpy(e))
    yt = torch.from_numpy(y).long()
    model = NebulaMLP(hidden=hidden, n_out=len(classes))
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
    info = {
        "seed": seed, "steps": steps, "hidden": hidden, "classes": list(classes), "model_scatter_dex": MODEL_SCATTER_DEX,
        "shock_train_series": list(SHOCK_TRAIN_SERIES), "shock_components": list(shock_components),
        "n_train_models": {c: len(fam[c][0]) for c in classes}, "n_validation_models": {c: len(fam[c][1]) for c in classes},
        "final_loss": float(loss.detach()),
    }  # fmt: skip
    return model, {"ratio_min": rmin, "ratio_max": rmax, "info": info}


def _ece(p: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-class probability (10 equal-width bins on [0, 1])."""
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    return float(sum(abs(p[which == k].mean() - correct[which == k].mean()) * (which == k).mean() for k in range(bins) if (which == k).any()))


def _probabilities(model: NebulaMLP, classes: tuple[str, ...], f: np.ndarray, e: np.ndarray, nebula: bool) -> np.ndarray:
    """[n, 3] probabilities in NN_CLASSES order as ``classify_nn`` reads them in a context;
    a class the network was not trained on has probability 0."""
    x, _ = features(torch.from_numpy(f), torch.from_numpy(e))
    with torch.no_grad():
        q = torch.softmax(model(x), 1).to(torch.float64)
    p = torch.zeros(len(q), len(NN_CLASSES), dtype=torch.float64)
    p[:, [NN_CLASSES.index(c) for c in classes]] = q
    return in_context(p, torch.full((len(q),), nebula)).numpy()


def evaluate(model: NebulaMLP, seed: int = 7, shock_path: Path | None = None,
             shock_components: tuple[str, ...] = TRAIN_SHOCK_COMPONENTS) -> dict:  # fmt: skip
    """Validation accuracy and ECE per S/N(Ha) bin (nebula context: three classes), for the
    network and the diagnostic rules, on the held-out models of the training families."""
    rng = np.random.default_rng(seed)
    fam = families(shock_path or GRID_DIR / "allen08_shock.csv.gz", shock_components)
    flux = np.concatenate([fam[c][1] for c in NN_CLASSES])
    label = np.concatenate([np.full(len(fam[c][1]), i) for i, c in enumerate(NN_CLASSES)])
    out: dict = {
        "held_out_oh": list(HELD_OUT_OH), "held_out_shock_b": list(SHOCK_VALIDATION_B),
        "n_held_out_models": {c: len(fam[c][1]) for c in NN_CLASSES}, "bins": [],
    }  # fmt: skip
    cfg = DiagnosticConfig(n_draws=0)
    k = len(NN_CLASSES)
    for lo, hi in SNR_BINS:
        f, e, y, _ = synthesise(flux, label, 30_000, rng, (lo, hi))
        p = _probabilities(model, NN_CLASSES, f, e, nebula=True)
        pred, top = p.argmax(1), p.max(1)
        correct = pred == y
        nan = torch.full((len(y),), math.nan, dtype=torch.float64)
        d = classify_diagnostic(torch.from_numpy(f), torch.from_numpy(e), nan, nan, cfg).classes.numpy()
        d_as_nn = np.array([NN_CLASSES.index(CLASSES[c]) if CLASSES[c] in NN_CLASSES else -1 for c in d])
        decided = d_as_nn >= 0
        # Confusion matrices, rows = true class, columns = predicted class. The diagnostic's
        # columns are all its classes: an HII model it calls PN or DIG is a miss too.
        nn_confusion = np.zeros((k, k), dtype=int)
        np.add.at(nn_confusion, (y, pred), 1)
        diag_confusion = np.zeros((k, len(CLASSES)), dtype=int)
        np.add.at(diag_confusion, (y, d), 1)
        # Galaxy context: HII against non-stellar (AGN + shock), the truth of a shock being AGN.
        pg = _probabilities(model, NN_CLASSES, f, e, nebula=False)
        yg = np.where(y == NN_CLASSES.index("SNR"), NN_CLASSES.index("AGN"), y)
        correct_g = pg.argmax(1) == yg
        out["bins"].append({
            "snr_ha": [lo, hi], "n": len(y), "nn_accuracy": float(correct.mean()), "nn_ece": _ece(top, correct),
            "nn_galaxy_accuracy": float(correct_g.mean()), "nn_galaxy_ece": _ece(pg.max(1), correct_g),
            "nn_galaxy_recall": {c: float(correct_g[yg == i].mean()) for i, c in enumerate(NN_CLASSES[:2])},
            "nn_recall": {c: float(correct[y == i].mean()) for i, c in enumerate(NN_CLASSES)},
            "nn_confusion": {"rows_true": list(NN_CLASSES), "cols_predicted": list(NN_CLASSES), "counts": nn_confusion.tolist()},
            "diagnostic_accuracy_where_decided": float((d_as_nn == y)[decided].mean()),
            "diagnostic_decided_fraction": float(decided.mean()),
            "diagnostic_confusion": {"rows_true": list(NN_CLASSES), "cols_predicted": list(CLASSES), "counts": diag_confusion.tolist()},
        })  # fmt: skip
    return out


def _test_sets(grid_dir: Path) -> dict[str, tuple[np.ndarray, str, str, np.ndarray | None]]:
    """{name: (fluxes, true family, source file, group of each model or None)} of the
    out-of-family test grids present in ``grid_dir``; a shock model's group is its series."""
    sets: dict[str, tuple[np.ndarray, str, str, np.ndarray | None]] = {}
    shock = grid_dir / "allen08_shock.csv.gz"
    flux, _, params = read_grid(shock)
    series = np.array([p["series"] for p in params])
    for comp in TEST_SHOCK_COMPONENTS:
        keep = np.array([p["series"] in SHOCK_TEST_SERIES and p["comp"] == comp for p in params])
        keep &= np.isfinite(flux).all(1) & (flux > 0).all(1)
        sets[f"allen08_{comp}_heldout_series"] = (flux[keep], "SNR", shock.name, series[keep])
    for name in OTHER_CODE_HII:
        path = grid_dir / f"{name}.csv.gz"
        if path.exists():
            flux, labels, _ = read_grid(path)
            # Rows that lack a line the classifier needs (a grid that gives no [O I], say) are
            # measured as they are: the features mark the ratio missing.
            keep = (labels == "HII") & np.isfinite(flux[:, 3]) & (flux[:, 3] > 0)
            sets[name] = (flux[keep], "HII", path.name, None)
    return sets


def out_of_family(model: NebulaMLP, classes: tuple[str, ...] = NN_CLASSES, grid_dir: Path = GRID_DIR, seed: int = 11,
                  n: int = 20_000) -> dict:  # fmt: skip
    """Per test grid, in each context: the fraction of spectra given each class, accuracy and ECE.

    Spectra: n // (number of models) per model, every line measured, S/N(Ha) log-uniform in
    TEST_SNR, noise and reddening as in training, no extra model scatter (the grid is already another model). In galaxy context
    the truth of a shock is AGN (non-stellar ionisation): SNR is no class there.
    """
    out = {}
    for name, (flux, truth, source, group) in _test_sets(grid_dir).items():
        rng = np.random.default_rng(seed)
        # Label = model index: every model gets the same number of spectra, and each spectrum's
        # model (and its group) is known.
        f, e, which, _ = synthesise(flux, np.arange(len(flux)), n, rng, TEST_SNR, scatter_dex=0.0, drop_lines=False)
        res: dict = {"source": source, "sha256": hashlib.sha256((grid_dir / source).read_bytes()).hexdigest(),
                     "true_family": truth, "n_models": len(flux), "n_spectra": len(f)}  # fmt: skip
        for context, nebula in (("nebula", True), ("galaxy", False)):
            p = _probabilities(model, classes, f, e, nebula)
            pred, top = p.argmax(1), p.max(1)
            want = NN_CLASSES.index(truth if nebula or truth != "SNR" else "AGN")
            correct = pred == want
            res[context] = {
                "fraction": {c: float((pred == i).mean()) for i, c in enumerate(NN_CLASSES) if nebula or c != "SNR"},
                "accuracy": float(correct.mean()), "ece": _ece(top, correct),
                "mean_p_true": float(p[:, want].mean()),
            }  # fmt: skip
            if group is not None and nebula:
                g = group[which]
                res[context]["accuracy_by_series"] = {s: float(correct[g == s].mean()) for s in sorted(set(g))}
        out[name] = res
    return out


def _ablations(args, grid_dir: Path) -> dict:
    """Networks trained on fewer families, tested on the family they lack and the test grids."""
    out: dict = {}
    shock_path = grid_dir / "allen08_shock.csv.gz"
    for left_out in NN_CLASSES:
        classes = tuple(c for c in NN_CLASSES if c != left_out)
        t0 = time.perf_counter()
        model, extra = train(args.seed, args.steps, args.hidden, classes, shock_path, args.shock_components)
        rng = np.random.default_rng(13)
        fam = families(shock_path, args.shock_components)
        # The left-out family's models, training and validation split together.
        flux = np.concatenate(fam[left_out])
        if left_out == "SNR":  # every series and both components: none was seen
            flux = _shocks(shock_path, SHOCK_TRAIN_SERIES + SHOCK_TEST_SERIES, TEST_SHOCK_COMPONENTS)[0]
        f, e, _, _ = synthesise(flux, np.zeros(len(flux), int), 20_000, rng, TEST_SNR, scatter_dex=0.0, drop_lines=False)
        left = {}
        for context, nebula in (("nebula", True), ("galaxy", False)):
            p = _probabilities(model, classes, f, e, nebula)
            pred = p.argmax(1)
            left[context] = {c: float((pred == i).mean()) for i, c in enumerate(NN_CLASSES) if nebula or c != "SNR"}
        out[f"without_{left_out}"] = {
            "trained_on": list(classes), "train_seconds": round(time.perf_counter() - t0, 1),
            "left_out_family_filed_as": left, "test_grids": out_of_family(model, classes, grid_dir),
        }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "compute" / "models" / "nebula_nn.pt")
    ap.add_argument("--grid-dir", type=Path, default=GRID_DIR, help="folder of allen08_shock.csv.gz and the test grids")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument(
        "--shock-components", type=lambda s: tuple(s.split(",")), default=TRAIN_SHOCK_COMPONENTS,
        help="Allen et al. (2008) components trained on, comma-separated (s, sp)",
    )  # fmt: skip
    ap.add_argument("--no-ablations", action="store_true", help="skip the networks trained on fewer families")
    ap.add_argument(
        "--evaluate-only", action="store_true",
        help="re-measure the validation and out-of-family metrics of the weights at --out without training",
    )  # fmt: skip
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # reproducible and polite on shared machines
    shock_path = args.grid_dir / "allen08_shock.csv.gz"
    metrics_path = args.out.with_suffix(".metrics.json")
    if args.evaluate_only:
        model, _, _ = load_model(args.out)
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    else:
        t0 = time.perf_counter()
        model, extra = train(args.seed, args.steps, args.hidden, NN_CLASSES, shock_path, args.shock_components)
        blob = {"state_dict": model.state_dict(), "hidden": args.hidden, "classes": list(NN_CLASSES),
                "features": list(FEATURE_NAMES), "ratio_min": extra["ratio_min"], "ratio_max": extra["ratio_max"]}  # fmt: skip
        torch.save(blob, args.out)
        metrics = {"training": {**extra["info"], "train_seconds": round(time.perf_counter() - t0, 1)}}
    components = tuple(metrics.get("training", {}).get("shock_components", args.shock_components))
    metrics["held_out"] = evaluate(model, shock_path=shock_path, shock_components=components)
    metrics["out_of_family"] = out_of_family(model, NN_CLASSES, args.grid_dir)
    if not args.no_ablations:
        metrics["ablations"] = _ablations(args, args.grid_dir)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in metrics.items() if k != "held_out"}, indent=2))


if __name__ == "__main__":
    main()
