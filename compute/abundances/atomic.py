"""Multi-level atoms and hydrogen recombination emissivities, batched in torch.

The atomic numbers (energies, weights, A values, effective collision strengths, and the
Storey & Hummer 1995 H I table) ship in ``data/atomic_data.json``, extracted once from
PyNeb's default data set by ``benchmarks/extract_atomic_data.py``; the sources of every
number are recorded in that file.  Nothing here imports PyNeb.

Conventions: levels are 1-based in the public line table (as in the literature), 0-based
in tensors; ``A[u, l]`` is the spontaneous rate from upper ``u`` to lower ``l``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch
from torch import Tensor

from skyledger.compute.errors import ComputeInputError

__all__ = [
    "ION_KEYS",
    "LINE_TRANSITIONS",
    "IonModel",
    "HydrogenModel",
    "load_ion",
    "load_hydrogen",
    "doublet_ratio",
]

# CODATA 2018 constants, cgs.
_H = 6.62607015e-27  # erg s
_C = 2.99792458e10  # cm s^-1
_K = 1.380649e-16  # erg K^-1
_ME = 9.1093837015e-28  # g
#: hc/k in cm K: converts a level energy in cm^-1 to a temperature
_HC_OVER_K = _H * _C / _K
#: collisional de-excitation prefactor: q_ul = C Upsilon / (g_u sqrt(T)), C = h^2 / (2 pi m_e)^1.5 / sqrt(k)
_COLL = (_H**2) / ((2.0 * math.pi * _ME) ** 1.5) / math.sqrt(_K)

ION_KEYS: tuple[str, ...] = ("O3", "N2", "S3", "O2", "S2")

#: line id -> (ion, ((upper, lower), ...)) with 1-based levels; several transitions = a blend
LINE_TRANSITIONS: dict[str, tuple[str, tuple[tuple[int, int], ...]]] = {
    "OIII4363": ("O3", ((5, 4),)),
    "OIII4959": ("O3", ((4, 2),)),
    "OIII5007": ("O3", ((4, 3),)),
    "NII5755": ("N2", ((5, 4),)),
    "NII6548": ("N2", ((4, 2),)),
    "NII6584": ("N2", ((4, 3),)),
    "SIII6312": ("S3", ((5, 4),)),
    "SIII9069": ("S3", ((4, 2),)),
    "SIII9532": ("S3", ((4, 3),)),
    "OII3726": ("O2", ((3, 1),)),
    "OII3729": ("O2", ((2, 1),)),
    "OII7320": ("O2", ((4, 2), (5, 2))),
    "OII7330": ("O2", ((4, 3), (5, 3))),
    "SII6716": ("S2", ((3, 1),)),
    "SII6731": ("S2", ((2, 1),)),
}


@lru_cache(maxsize=1)
def _raw() -> dict:
    text = resources.files("skyledger.compute.abundances").joinpath("data/atomic_data.json").read_text()
    return json.loads(text)


@dataclass(frozen=True)
class IonModel:
    """One ion's atomic data as tensors on a device, with a batched level-population solver."""

    key: str
    energy: Tensor  # [n] cm^-1
    weight: Tensor  # [n]
    a_values: Tensor  # [n, n] s^-1, [upper, lower]
    log_te_nodes: Tensor  # [m] log10 K
    upsilon: Tensor  # [m, n, n], symmetric in the level indices

    @property
    def n_levels(self) -> int:
        return int(self.energy.shape[0])

    def _upsilon_at(self, log_te: Tensor) -> Tensor:
        """Collision strengths linear in log10 T, held constant beyond the tabulated range."""
        nodes = self.log_te_nodes
        x = log_te.clamp(float(nodes[0]), float(nodes[-1]))
        idx = torch.searchsorted(nodes, x.contiguous(), right=True).clamp(1, nodes.numel() - 1)
        x0 = nodes[idx - 1]
        w = ((x - x0) / (nodes[idx] - x0)).unsqueeze(-1).unsqueeze(-1)
        return self.upsilon[idx - 1] * (1.0 - w) + self.upsilon[idx] * w

    def populations(self, te: Tensor, ne: Tensor) -> Tensor:
        """Fractional level populations [..., n] at electron temperature te (K) and density ne (cm^-3)."""
        shape = torch.broadcast_shapes(te.shape, ne.shape)
        te = te.expand(shape).reshape(-1)
        ne = ne.expand(shape).reshape(-1)
        n = self.n_levels
        ups = self._upsilon_at(torch.log10(te))  # [B, n, n]
        de = self.energy.unsqueeze(0) - self.energy.unsqueeze(1)  # [l, u] = E_u - E_l
        upper = de > 0  # mask of (lower, upper) pairs, indexed [l, u]
        # q[l, u] (excitation) and q[u, l] (de-excitation) share Upsilon by detailed balance.
        down = _COLL * ups / (self.weight.unsqueeze(0) * te.sqrt().view(-1, 1, 1))  # [B, l, u]: rate u->l
        boltz = torch.exp(-de.clamp(min=0.0) * _HC_OVER_K / te.view(-1, 1, 1))
        up = down * (self.weight.unsqueeze(0) / self.weight.unsqueeze(1)) * boltz  # rate l->u
        rate = torch.where(upper, up, down.transpose(1, 2)) * ne.view(-1, 1, 1)  # [B, from, to]
        rate = rate * (1.0 - torch.eye(n, dtype=te.dtype, device=te.device))
        rate = rate + self.a_values.unsqueeze(0)  # radiative: from upper to lower
        # Statistical equilibrium: inflow = outflow for each level; row 0 replaced by sum N = 1.
        mat = rate.transpose(1, 2) - torch.diag_embed(rate.sum(dim=2))
        mat[:, 0, :] = 1.0
        rhs = torch.zeros(te.shape[0], n, 1, dtype=te.dtype, device=te.device)
        rhs[:, 0, 0] = 1.0
        pops = torch.linalg.solve(mat, rhs).squeeze(-1)
        return pops.reshape(*shape, n)

    def line_power(self, line_id: str, pops: Tensor) -> Tensor:
        """Energy emitted per ion per second in a line (or blend), erg s^-1: N_u A_ul h c dE."""
        ion, transitions = LINE_TRANSITIONS[line_id]
        if ion != self.key:
            raise ComputeInputError(f"line {line_id} does not belong to ion {self.key}; it is a line of {ion}: use load_ion({ion!r})")
        total = torch.zeros_like(pops[..., 0])
        for u, l in transitions:
            de = float(self.energy[u - 1] - self.energy[l - 1])
            total = total + pops[..., u - 1] * float(self.a_values[u - 1, l - 1]) * (_H * _C * de)
        return total

    def emissivity(self, line_id: str, te: Tensor, ne: Tensor) -> Tensor:
        """Line emissivity 4 pi j / (n_ion ne), erg cm^3 s^-1 (the convention of PyNeb and SH95)."""
        return self.line_power(line_id, self.populations(te, ne)) / ne

    def wavelength(self, line_id: str) -> float:
        """Vacuum wavelength (A) of a line's first transition, from the level energies."""
        _, transitions = LINE_TRANSITIONS[line_id]
        u, l = transitions[0]
        return 1e8 / float(self.energy[u - 1] - self.energy[l - 1])


@dataclass(frozen=True)
class HydrogenModel:
    """Case-B H I emissivities (Storey & Hummer 1995) interpolated in log T and log ne."""

    log_te_nodes: Tensor  # [nt]
    log_ne_nodes: Tensor  # [nn]
    log_emissivity: dict[str, Tensor]  # line id -> [nt, nn] log10 erg cm^3 s^-1

    def emissivity(self, line_id: str, te: Tensor, ne: Tensor) -> Tensor:
        """Bilinear in (log T, log ne) of log emissivity; clamped to the table (ne < 100 -> 100)."""
        table = self.log_emissivity[line_id]
        xt, xn = self.log_te_nodes, self.log_ne_nodes
        lt = torch.log10(te).clamp(float(xt[0]), float(xt[-1]))
        ln = torch.log10(ne).clamp(float(xn[0]), float(xn[-1]))
        it = torch.searchsorted(xt, lt.contiguous(), right=True).clamp(1, xt.numel() - 1)
        jn = torch.searchsorted(xn, ln.contiguous(), right=True).clamp(1, xn.numel() - 1)
        wt = (lt - xt[it - 1]) / (xt[it] - xt[it - 1])
        wn = (ln - xn[jn - 1]) / (xn[jn] - xn[jn - 1])
        v = (
            table[it - 1, jn - 1] * (1 - wt) * (1 - wn)
            + table[it, jn - 1] * wt * (1 - wn)
            + table[it - 1, jn] * (1 - wt) * wn
            + table[it, jn] * wt * wn
        )
        return 10.0**v


@lru_cache(maxsize=32)
def load_ion(key: str, device: str = "cpu", dtype: torch.dtype = torch.float64) -> IonModel:
    """The shipped atomic data for ion ``key`` (e.g. "O3") as tensors on ``device``."""
    block = _raw()["ions"][key]
    n = int(block["n_levels"])
    kw = {"dtype": dtype, "device": torch.device(device)}
    ups_block = block["upsilon"]
    nodes = torch.tensor(ups_block["log10_te"], **kw)
    ups = torch.zeros(nodes.numel(), n, n, **kw)
    for (lo, hi), values in zip(ups_block["pairs"], ups_block["values"], strict=True):
        if lo <= n and hi <= n:
            v = torch.tensor(values, **kw)
            ups[:, lo - 1, hi - 1] = v
            ups[:, hi - 1, lo - 1] = v
    a_values = torch.tensor(block["A_s-1"], **kw)[:n, :n]
    return IonModel(
        key=key,
        energy=torch.tensor(block["energy_cm-1"], **kw)[:n],
        weight=torch.tensor(block["stat_weight"], **kw)[:n],
        a_values=torch.tril(a_values, diagonal=-1),
        log_te_nodes=nodes,
        upsilon=ups,
    )


@lru_cache(maxsize=8)
def load_hydrogen(device: str = "cpu", dtype: torch.dtype = torch.float64) -> HydrogenModel:
    """The shipped Storey & Hummer (1995) case-B table on ``device``."""
    block = _raw()["hydrogen"]
    kw = {"dtype": dtype, "device": torch.device(device)}
    return HydrogenModel(
        log_te_nodes=torch.log10(torch.tensor(block["te_K"], **kw)),
        log_ne_nodes=torch.tensor(block["log10_ne"], **kw),
        log_emissivity={k: torch.log10(torch.tensor(v, **kw)) for k, v in block["emissivity"].items()},
    )


def doublet_ratio(strong: str, weak: str) -> float:
    """Theoretical intensity ratio of two lines from one upper level: A ratio x energy ratio.

    Density- and temperature-independent because both lines share the upper level.
    """
    ion_s, tr_s = LINE_TRANSITIONS[strong]
    ion_w, tr_w = LINE_TRANSITIONS[weak]
    if ion_s != ion_w or len(tr_s) != 1 or len(tr_w) != 1 or tr_s[0][0] != tr_w[0][0]:
        raise ComputeInputError(
            f"{strong} and {weak} do not share an upper level; a doublet ratio needs two single transitions "
            "from one upper level of one ion (e.g. OIII5007 and OIII4959)"
        )
    ion = load_ion(ion_s)
    (u, ls), (_, lw) = tr_s[0], tr_w[0]
    e = ion.energy
    return float(ion.a_values[u - 1, ls - 1] * (e[u - 1] - e[ls - 1])) / float(
        ion.a_values[u - 1, lw - 1] * (e[u - 1] - e[lw - 1])
    )
