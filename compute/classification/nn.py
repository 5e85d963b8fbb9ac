"""The `nn` nebula classifier: a small MLP over dust-insensitive log line ratios and their S/N.

Trained by ``scripts/train_nebula_nn.py`` on noisy, reddened synthetic spectra drawn from
three families of models: HII regions and AGN narrow-line regions (MAPPINGS 5.1, the grids
shipped with NebulaBayes 0.9.9, Thomas et al. 2018) and fast radiative shocks (MAPPINGS III,
Allen et al. 2008, the abundance series at n = 1 cm^-3).  The network outputs HII, AGN and
SNR.  ``context`` decides what is a class: in a *galaxy* (integrated) spectrum a shock is
not a class of its own, so its probability is folded into AGN (non-stellar ionisation) and
``p_snr`` is NULL; in a *nebula* (a region inside a galaxy) all three are kept.  ``p_pn`` and
``p_dig`` are always NULL: no installable grid of either exists (docs/nebula_nn_model_card.md).

Features are built by :func:`features` for both training and inference, so the two can
never drift apart: for each ratio ([N II]/Ha, [S II]/Ha, [O I]/Ha, [O III]/Hb) its log10
(a non-detection enters as its 1-sigma upper limit), the log S/N of its numerator, and a
missing indicator; plus the log S/N of Halpha and Hbeta.
"""

from __future__ import annotations

import importlib.resources
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from .diagnostic import CLASSES, DIAGNOSTIC_LINES, NebulaFlag

__all__ = [
    "FEATURE_NAMES",
    "NN_CLASSES",
    "NebulaMLP",
    "NNResult",
    "GALAXY",
    "NEBULA",
    "classify_nn",
    "features",
    "in_context",
    "load_model",
    "weights_path",
]

_HB, _O3, _O1, _HA, _N2, _S2A, _S2B = range(len(DIAGNOSTIC_LINES))
#: the classes the network outputs, as indices into CLASSES
NN_CLASSES: tuple[str, ...] = ("HII", "AGN", "SNR")
#: values of the per-spectrum ``context`` of :func:`classify_nn`
GALAXY, NEBULA = 0, 1
RATIOS: tuple[str, ...] = ("n2", "s2", "o1", "o3hb")
FEATURE_NAMES: tuple[str, ...] = (
    *(f"log_{r}" for r in RATIOS), *(f"log_snr_{r}" for r in RATIOS), "log_snr_ha", "log_snr_hb",
    *(f"missing_{r}" for r in RATIOS),
)  # fmt: skip
_RATIO_RANGE = (-3.0, 2.0)  # log ratios are clipped here: beyond it nothing is learnt
_SNR_RANGE = (0.1, 1000.0)  # an unknown error counts as the top of the range


def weights_path() -> Path:
    return Path(str(importlib.resources.files("skyledger.compute.models") / "nebula_nn.pt"))


class NebulaMLP(nn.Module):
    def __init__(self, n_in: int = len(FEATURE_NAMES), hidden: int = 64, n_out: int = len(NN_CLASSES)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, n_out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _ratio(num: Tensor, num_err: Tensor, den: Tensor, ok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(log ratio, log S/N of the numerator, available) of num/den."""
    err_ok = torch.isfinite(num_err) & (num_err > 0)
    # A numerator below its error is a non-detection: its 1-sigma upper limit carries the
    # information, and the S/N feature tells the network it is a limit.
    value = torch.where(err_ok, torch.maximum(num, num_err), num)
    avail = ok & (value > 0) & (den > 0)
    safe = torch.where(avail, value / torch.where(den > 0, den, torch.ones_like(den)), torch.ones_like(den))
    log_r = torch.where(avail, torch.log10(safe).clamp(*_RATIO_RANGE), torch.zeros_like(den))
    snr = torch.where(err_ok, num / torch.where(err_ok, num_err, torch.ones_like(num_err)), torch.full_like(num, _SNR_RANGE[1]))
    log_snr = torch.where(avail, torch.log10(snr.clamp(*_SNR_RANGE)), torch.zeros_like(den))
    return log_r, log_snr, avail


def _snr(f: Tensor, e: Tensor, ok: Tensor) -> Tensor:
    err_ok = torch.isfinite(e) & (e > 0)
    snr = torch.where(err_ok, f / torch.where(err_ok, e, torch.ones_like(e)), torch.full_like(f, _SNR_RANGE[1]))
    return torch.where(ok, torch.log10(snr.clamp(*_SNR_RANGE)), torch.zeros_like(f))


def features(fluxes: Tensor, errors: Tensor) -> tuple[Tensor, Tensor]:
    """[n, len(FEATURE_NAMES)] features and the [n, 4] availability of the ratios.

    ``fluxes``/``errors`` are [n, len(DIAGNOSTIC_LINES)], NaN = not measured.
    """
    f = fluxes.to(torch.float32)
    e = errors.to(torch.float32)
    ok = torch.isfinite(f)
    f0 = torch.nan_to_num(f)
    ha_ok = ok[:, _HA] & (f0[:, _HA] > 0)
    hb_ok = ok[:, _HB] & (f0[:, _HB] > 0)
    s2 = f0[:, _S2A] + f0[:, _S2B]
    s2_err = torch.sqrt(e[:, _S2A] ** 2 + e[:, _S2B] ** 2)
    parts = [
        _ratio(f0[:, _N2], e[:, _N2], f0[:, _HA], ok[:, _N2] & ha_ok),
        _ratio(s2, s2_err, f0[:, _HA], ok[:, _S2A] & ok[:, _S2B] & ha_ok),
        _ratio(f0[:, _O1], e[:, _O1], f0[:, _HA], ok[:, _O1] & ha_ok),
        _ratio(f0[:, _O3], e[:, _O3], f0[:, _HB], ok[:, _O3] & hb_ok),
    ]
    avail = torch.stack([p[2] for p in parts], 1)
    x = torch.cat(
        [
            torch.stack([p[0] for p in parts], 1),
            torch.stack([p[1] for p in parts], 1),
            _snr(f0[:, _HA], e[:, _HA], ha_ok).unsqueeze(1),
            _snr(f0[:, _HB], e[:, _HB], hb_ok).unsqueeze(1),
            (~avail).to(torch.float32),
        ],
        1,
    )
    return x, avail


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float) -> tuple[NebulaMLP, Tensor, Tensor]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if tuple(blob.get("classes", ())) != NN_CLASSES or tuple(blob.get("features", ())) != FEATURE_NAMES:
        raise ValueError(
            f"{path} was trained for classes {blob.get('classes')} and features {blob.get('features')}, this code needs"
            f" {list(NN_CLASSES)} and {list(FEATURE_NAMES)}: retrain with `python scripts/train_nebula_nn.py`"
        )
    model = NebulaMLP(hidden=int(blob["hidden"]))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, blob["ratio_min"], blob["ratio_max"]


def load_model(path: Path | None = None) -> tuple[NebulaMLP, Tensor, Tensor]:
    """The network and the [4] min/max of each log ratio over its training set."""
    p = path or weights_path()
    return _cached(str(p), p.stat().st_mtime)


def in_context(p: Tensor, nebula: Tensor) -> Tensor:
    """[n, 3] network probabilities (NN_CLASSES order) as the context reads them: where
    ``nebula`` is False, P(SNR) is added to P(AGN) (both non-stellar ionisation; a shock is no
    class of an integrated spectrum) and the SNR column is 0."""
    i_hii, i_agn, i_snr = (NN_CLASSES.index(c) for c in ("HII", "AGN", "SNR"))
    return torch.stack(
        [p[:, i_hii], p[:, i_agn] + torch.where(nebula, 0.0, p[:, i_snr]), torch.where(nebula, p[:, i_snr], 0.0)], 1
    )


@dataclass
class NNResult:
    classes: Tensor  # int64 [n], indices into CLASSES
    probabilities: Tensor  # float64 [n, len(CLASSES)], NaN for classes the network does not model
    flags: Tensor  # int64 [n]


def classify_nn(
    fluxes: Tensor, errors: Tensor, ew: Tensor, min_snr: float, device: str, path: Path | None = None,
    context: Tensor | None = None,
) -> NNResult:
    """Classes, probabilities and flags of ``n`` spectra by the network.

    ``context`` is an [n] tensor, 0 (:data:`GALAXY`) or 1 (:data:`NEBULA`) per spectrum;
    None means every spectrum is a galaxy (an integrated spectrum, the default context of
    ``nebula_class``).  In galaxy context P(SNR) is added to P(AGN), both being non-stellar
    ionisation, and ``p_snr`` is NaN; in nebula context the three classes stand.
    """
    model, rmin, rmax = load_model(path)
    x, avail = features(fluxes, errors)
    with torch.no_grad():
        p = torch.softmax(model.to(device)(x.to(device)), dim=1).cpu().to(torch.float64)
    n = x.shape[0]
    if context is None:
        nebula = torch.zeros(n, dtype=torch.bool)
    else:
        ctx = torch.as_tensor(context).reshape(-1).to("cpu", torch.int64)
        if ctx.shape[0] != n or not bool(((ctx == GALAXY) | (ctx == NEBULA)).all()):
            raise ValueError(f"context must be an [{n}] tensor of 0 (galaxy) or 1 (nebula), one per spectrum")
        nebula = ctx == NEBULA
    p = in_context(p, nebula)
    f = fluxes.to(torch.float64)
    e = errors.to(torch.float64)
    ok = torch.isfinite(f)
    ha_ok = ok[:, _HA] & (torch.nan_to_num(f[:, _HA]) > 0)
    decidable = ha_ok & avail[:, :3].any(1)  # Halpha and at least one ratio to it

    probs = torch.full((n, len(CLASSES)), math.nan, dtype=torch.float64)
    for j, name in enumerate(NN_CLASSES):
        probs[:, CLASSES.index(name)] = torch.where(decidable, p[:, j], torch.zeros_like(p[:, j]))
    probs[:, CLASSES.index("SNR")] = torch.where(nebula, probs[:, CLASSES.index("SNR")], math.nan)
    best = torch.tensor([CLASSES.index(c) for c in NN_CLASSES])[p.argmax(1)]
    code = torch.where(decidable, best, torch.full_like(best, CLASSES.index("UNKNOWN")))

    flags = torch.zeros(n, dtype=torch.int64)
    err_ok = torch.isfinite(e) & (e > 0)
    snr = torch.where(err_ok, f / torch.where(err_ok, e, torch.ones_like(e)), torch.full_like(f, math.inf))
    flags |= torch.where((ok & (snr < min_snr)).any(1), int(NebulaFlag.LOW_SNR), 0)
    flags |= torch.where((ok & (torch.nan_to_num(f) <= 0)).any(1), int(NebulaFlag.NON_POSITIVE_FLUX), 0)
    flags |= torch.where((ok & ~err_ok).any(1), int(NebulaFlag.NO_ERROR), 0)
    flags |= torch.where(~avail[:, 3], int(NebulaFlag.NO_BPT), 0)
    flags |= torch.where(torch.isfinite(ew.to(torch.float64)), 0, int(NebulaFlag.NO_EW))
    outside = (avail & ((x[:, :4] < rmin - 0.1) | (x[:, :4] > rmax + 0.1))).any(1)
    flags |= torch.where(outside & decidable, int(NebulaFlag.NOT_MODELLED), 0)
    flags |= torch.where(decidable, 0, int(NebulaFlag.MISSING_LINES))
    return NNResult(code.to(torch.int64), probs, flags)
