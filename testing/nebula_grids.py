"""Labelled model grids for the nebula classifiers, and line catalogues made from them.

* :func:`load_grid`: a TEST grid of tests/data/nebula_grids (codes the classifiers were not
  trained on; provenance in that folder's README.md).
* :func:`load_train_grids`: the MAPPINGS 5.1 HII + AGN-NLR grids the classifiers are built
  on (compute/models/mappings5_nebulabayes_grids.csv.gz); only these may tune a threshold.
* :func:`noisy_fluxes` / :func:`write_line_catalogue`: Gaussian noise at a stated S/N, and a
  CSV in the layout the ``line_catalog`` reader reads, to push a grid through the real ingest.
* :func:`classify_grid`: ``classify_diagnostic`` on many spectra in one context, in chunks.

numpy and csv only (no pandas).  The test grids live in the source tree, not in the wheel:
these functions work from a checkout.
"""

from __future__ import annotations

import csv
import gzip
import importlib.resources
import inspect
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from skyledger.compute.classification import diagnostic
from skyledger.compute.classification.diagnostic import CLASSES, DIAGNOSTIC_LINES, DiagnosticConfig, classify_diagnostic

__all__ = [
    "GRID_DIR",
    "GridFileError",
    "TEST_GRIDS",
    "TRAIN_GRID_FILE",
    "classify_grid",
    "context_argument",
    "load_grid",
    "load_train_grids",
    "noisy_fluxes",
    "write_line_catalogue",
]

#: tests/data/nebula_grids of an editable checkout; an installed wheel has no tests/, so
#: the tests and the benchmark pass their checkout's folder as ``directory``.
GRID_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "nebula_grids"
TEST_GRIDS = ("kewley01_hii", "dopita13_hii", "bagpipes_cloudy25_hii", "allen08_shock")
TRAIN_GRID_FILE = Path(str(importlib.resources.files("skyledger.compute.models") / "mappings5_nebulabayes_grids.csv.gz"))
_EXTRACT = "python scripts/extract_nebula_grids.py --downloads DIR (see tests/data/nebula_grids/README.md)"
_LABELS = ("HII", "AGN", "SNR", "PN")
# Columns of the training file, in DIAGNOSTIC_LINES order.
_TRAIN_LINES = ("Hbeta", "OIII5007", "OI6300", "Halpha", "NII6583", "SII6716", "SII6731")
_TRAIN_LABELS = {"HII": "HII", "NLR": "AGN"}


class GridFileError(ValueError):
    """A grid file is missing or not in the expected layout; the message names the file."""


def _read_rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise GridFileError(f"{path}: no such grid file; rebuild the test grids with `{_EXTRACT}`")
    try:
        with gzip.open(path, "rt", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise GridFileError(f"{path}: missing column(s) {', '.join(missing)} (header: {','.join(header) or 'empty'})")
            rows = list(reader)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise GridFileError(f"{path}: not a readable gzipped CSV ({err})") from err
    if not rows:
        raise GridFileError(f"{path}: no models")
    return rows


def _float(path: Path, row: int, column: str, value: str, missing: tuple[str, ...] = ("",)) -> float:
    if value in missing:
        return math.nan
    try:
        return float(value)
    except ValueError:
        raise GridFileError(f"{path}: row {row + 2}, column {column}: {value!r} is not a number") from None


def load_grid(name: str, *, directory: Path | None = None) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """(fluxes [n, 7] in DIAGNOSTIC_LINES order, relative to Hbeta = 1, NaN = not given;
    labels [n] of str; params: one dict per model, with ``model_id`` and ``code`` added)."""
    path = (directory or GRID_DIR) / f"{name}.csv.gz"
    rows = _read_rows(path, ("model_id", "code", "label", "params", *DIAGNOSTIC_LINES))
    fluxes = np.array([[_float(path, i, c, r[c]) for c in DIAGNOSTIC_LINES] for i, r in enumerate(rows)])
    labels = np.array([r["label"] for r in rows])
    bad = sorted(set(labels) - set(_LABELS))
    if bad:
        raise GridFileError(f"{path}: unknown label(s) {', '.join(bad)}; expected one of {', '.join(_LABELS)}")
    params: list[dict[str, str]] = []
    for i, r in enumerate(rows):
        try:
            p = dict(kv.split("=", 1) for kv in r["params"].split(";") if kv)
        except ValueError:
            raise GridFileError(f"{path}: row {i + 2}: params {r['params']!r} is not key=value;key=value") from None
        params.append({"model_id": r["model_id"], "code": r["code"], **p})
    return fluxes, labels, params


def load_train_grids(path: Path = TRAIN_GRID_FILE) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """The MAPPINGS 5.1 training grids: HII-region models labelled HII, AGN narrow-line-region
    models labelled AGN.  Same return layout as :func:`load_grid`; ``--`` (a line the
    NebulaBayes grid masks) becomes NaN."""
    rows = _read_rows(path, ("grid", "log_U", "log_P_k", "oh", "log_E_peak", *_TRAIN_LINES))
    fluxes = np.array([[_float(path, i, c, r[c], ("", "--")) for c in _TRAIN_LINES] for i, r in enumerate(rows)])
    try:
        labels = np.array([_TRAIN_LABELS[r["grid"]] for r in rows])
    except KeyError as err:
        raise GridFileError(f"{path}: unknown grid {err.args[0]!r}; expected HII or NLR") from None
    keys = ("log_U", "log_P_k", "oh", "log_E_peak")
    params = [{"model_id": f"{r['grid']}_{i}", "code": "MAPPINGS 5.1", **{k: r[k] for k in keys if r[k]}} for i, r in enumerate(rows)]
    return fluxes, labels, params


def noisy_fluxes(fluxes: np.ndarray, *, snr: float, seed: int, reference: str = "HA6563") -> tuple[np.ndarray, np.ndarray]:
    """(observed, error): one Gaussian noise level per spectrum, the same for every line
    (lines of one spectrum sit on a similar continuum), set so that the ``reference`` line
    has S/N = ``snr``.  ``reference`` is a line id, or ``"weakest"`` for the faintest given
    line of each spectrum (then every line has S/N >= snr).  NaN (not given) stays NaN."""
    f = np.asarray(fluxes, dtype=float)
    if reference == "weakest":
        ref = np.nanmin(np.where(f > 0, f, np.nan), axis=1)
    else:
        ref = f[:, DIAGNOSTIC_LINES.index(reference)]
    sigma = np.broadcast_to((np.abs(ref) / snr)[:, None], f.shape)
    rng = np.random.default_rng(seed)
    obs = f + sigma * rng.standard_normal(f.shape)
    err = np.where(np.isnan(f), np.nan, sigma)
    return obs, err


def write_line_catalogue(
    fluxes: np.ndarray,
    path: Path,
    *,
    snr: float | None,
    seed: int,
    prefix: str,
    reference: str = "HA6563",
    ra0: float | None = None,
    dec0: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Write a ``line_catalog`` CSV: ``id, ra, dec, <LINE>_FLUX, <LINE>_FLUX_ERR`` for the
    DIAGNOSTIC_LINES; ids are ``{prefix}{row}``.  ``snr`` None writes the model fluxes with
    no noise and no errors; otherwise see :func:`noisy_fluxes`.  Rows are 10 arcsec apart in
    RA from ``ra0`` (default: derived from the prefix, so catalogues of different prefixes
    do not overlap on the sky).  Returns the (fluxes, errors) written; NaN is an empty cell."""
    f = np.asarray(fluxes, dtype=float)
    if snr is None:
        obs, err = f.copy(), np.full_like(f, np.nan)
    else:
        obs, err = noisy_fluxes(f, snr=snr, seed=seed, reference=reference)
    if ra0 is None:
        ra0 = 10.0 + (zlib.crc32(prefix.encode()) % 3400) / 10.0
    header = ["id", "ra", "dec"] + [f"{line}_{q}" for line in DIAGNOSTIC_LINES for q in ("FLUX", "FLUX_ERR")]

    def cell(v: float) -> str:
        return "" if math.isnan(v) else repr(float(v))

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for i in range(len(f)):
            pairs = [cell(x) for j in range(f.shape[1]) for x in (obs[i, j], err[i, j])]
            w.writerow([f"{prefix}{i}", repr(ra0 + i * 10 / 3600), repr(dec0), *pairs])
    return obs, err


def context_argument() -> str | None:
    """How ``classify_diagnostic`` takes the per-spectrum context: ``"names"`` (a sequence of
    "galaxy"/"nebula"), ``"codes"`` (an int tensor indexing ``diagnostic.CONTEXTS``), or None
    when it has no ``context`` argument (the rules before issue 26)."""
    param = inspect.signature(classify_diagnostic).parameters.get("context")
    if param is None:
        return None
    ann = str(param.annotation)
    if "Tensor" in ann and "str" not in ann:
        if not hasattr(diagnostic, "CONTEXTS"):
            raise TypeError(f"classify_diagnostic(context: {ann}) but diagnostic.CONTEXTS is missing: cannot build context codes")
        return "codes"
    return "names"


_CHUNK = 2000  # the draws are [n_draws, chunk, 7] float64


def classify_grid(
    fluxes: np.ndarray,
    errors: np.ndarray,
    context: str,
    config: DiagnosticConfig,
    *,
    seed: int,
    require_context: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(class names [n], probabilities [n, len(CLASSES)]) of ``classify_diagnostic`` for
    spectra without an EW, all in ``context``.  With ``require_context`` a
    ``classify_diagnostic`` that takes no context is an error; without it the context is
    dropped (to measure the rules from before contexts existed)."""
    how = context_argument()
    if how is None and require_context:
        raise TypeError("classify_diagnostic takes no `context` argument: the context-dependent rules (issue 26) are missing")
    gen = torch.Generator().manual_seed(seed)
    names: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    for lo in range(0, len(fluxes), _CHUNK):
        f = torch.from_numpy(np.ascontiguousarray(fluxes[lo : lo + _CHUNK], dtype=float))
        e = torch.from_numpy(np.ascontiguousarray(errors[lo : lo + _CHUNK], dtype=float))
        nan = torch.full((len(f),), math.nan, dtype=torch.float64)
        kw: dict[str, object] = {}
        if how == "names":
            kw["context"] = [context] * len(f)
        elif how == "codes":
            kw["context"] = torch.full((len(f),), diagnostic.CONTEXTS.index(context), dtype=torch.int64)
        res = classify_diagnostic(f, e, nan, nan.clone(), config, gen, **kw)
        names.append(np.array(CLASSES)[res.classes.numpy()])
        probs.append(res.probabilities.numpy())
    if not names:
        return np.array([], dtype=str), np.zeros((0, len(CLASSES)))
    return np.concatenate(names), np.concatenate(probs)
