"""Throughput of the full direct method against PyNeb, on the same inputs, in one run.

    /work/venv/bin/python benchmarks/abundances_throughput.py [--objects 2000] [--pyneb-objects 2]

skyledger: derive_abundances(methods=("direct",)) with Te and ne solved together for all
four Te diagnostics and both ne diagnostics, all five ions, 200 Monte Carlo draws.
PyNeb: for every draw of the same objects, getCrossTemDen for [O III], [N II], [S III]
and [O II] temperatures each crossed with [S II] density, then getIonAbundance for
O++, O+, N+, S+, S++ (arrays of all draws per call, PyNeb's fastest mode).  PyNeb is
timed on fewer objects (it is slow) and reported per object.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abundances_common import pyneb_atoms, synthetic_intensities, to_tensors  # noqa: E402

from skyledger.schema.linelist import LINE_IDS  # noqa: E402
from skyledger.compute.abundances import AbundanceConfig, derive_abundances  # noqa: E402

N_DRAWS = 200
REL_ERR = 0.03


def _inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    # A handful of PyNeb nebulae, scaled: the solver's cost does not depend on the values.
    base = [(te, ne) for te in (7000.0, 10000.0, 14000.0, 18000.0) for ne in (50.0, 300.0, 2000.0)]
    rows = [synthetic_intensities(te, ne) for te, ne in base]
    pick = rng.integers(0, len(base), n)
    f, e = to_tensors([rows[i] for i in pick], REL_ERR)
    return f, e, [base[i] for i in pick]


def _pyneb(f: torch.Tensor, e: torch.Tensor, n_obj: int, seed: int) -> float:
    pn, atoms, _ = pyneb_atoms()
    diags = pn.Diagnostics()
    rng = np.random.default_rng(seed)
    col = {k: LINE_IDS.index(k) for k in LINE_IDS}
    t0 = time.perf_counter()
    for i in range(n_obj):
        fl = f[i].numpy()[None, :] + e[i].numpy()[None, :] * rng.standard_normal((N_DRAWS, f.shape[1]))
        L = {k: fl[:, j] for k, j in col.items()}
        s2 = L["SII6731"] / L["SII6716"]
        t3, n3 = diags.getCrossTemDen("[OIII] 4363/5007+", "[SII] 6731/6716", L["OIII4363"] / (L["OIII4959"] + L["OIII5007"]), s2)
        t2, _ = diags.getCrossTemDen("[NII] 5755/6584+", "[SII] 6731/6716", L["NII5755"] / (L["NII6548"] + L["NII6584"]), s2)
        ts3, _ = diags.getCrossTemDen("[SIII] 6312/9200+", "[SII] 6731/6716", L["SIII6312"] / (L["SIII9069"] + L["SIII9532"]), s2)
        to2, _ = diags.getCrossTemDen("[OII] 3727+/7325+b", "[SII] 6731/6716", (L["OII3726"] + L["OII3729"]) / (L["OII7320"] + L["OII7330"]), s2)
        hb = L["HB4861"]
        atoms["O3"].getIonAbundance(100 * L["OIII5007"] / hb, t3, n3, wave=5007, Hbeta=100.0)
        atoms["O2"].getIonAbundance(100 * (L["OII3726"] + L["OII3729"]) / hb, t2, n3, to_eval="L(3726)+L(3729)", Hbeta=100.0)
        atoms["N2"].getIonAbundance(100 * L["NII6584"] / hb, t2, n3, wave=6584, Hbeta=100.0)
        atoms["S2"].getIonAbundance(100 * (L["SII6716"] + L["SII6731"]) / hb, t2, n3, to_eval="L(6716)+L(6731)", Hbeta=100.0)
        atoms["S3"].getIonAbundance(100 * L["SIII9532"] / hb, ts3, n3, wave=9531, Hbeta=100.0)
        _ = to2
    return (time.perf_counter() - t0) / n_obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--pyneb-objects", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    f, e, _ = _inputs(args.objects, 1)
    cfg = AbundanceConfig(methods=("direct",), n_draws=N_DRAWS)
    dc = torch.ones(args.objects, dtype=torch.bool)
    derive_abundances(f[:8], e[:8], dc[:8], cfg, generator=torch.Generator().manual_seed(0))  # build grids, warm up
    t0 = time.perf_counter()
    res = derive_abundances(f, e, dc, cfg, generator=torch.Generator().manual_seed(0))
    ours = time.perf_counter() - t0
    ok = torch.isfinite(res.methods["direct"].values["oh"].median).float().mean().item()
    sec_pyneb = _pyneb(f, e, args.pyneb_objects, 2)
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    print(f"skyledger: {args.objects} objects x {N_DRAWS} draws in {ours:.2f} s = {args.objects / ours:.1f} objects/s (valid O/H: {100 * ok:.1f} %)")
    print(f"PyNeb    : {sec_pyneb:.2f} s per object ({N_DRAWS} draws, 4 cross diagnostics + 5 ions) = {1 / sec_pyneb:.3f} objects/s")
    print(f"speed-up : {args.objects / ours * sec_pyneb:.0f}x")


if __name__ == "__main__":
    main()
