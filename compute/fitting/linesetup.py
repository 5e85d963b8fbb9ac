"""Which emission lines a fit has, and how their fluxes and kinematics are tied.

Each line's flux is a multiple of one flux parameter (a "component": the line itself, or
the parent of a doublet at its fixed ratio); each component belongs to one gas group,
whose lines share a (V, sigma).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyledger.schema.linelist import LINES

from .types import DOUBLETS, FitConfig

__all__ = ["LineSetup", "line_setup"]


@dataclass(frozen=True, slots=True)
class LineSetup:
    """Line bookkeeping: which flux parameter (component) and gas group each line uses."""

    ids: tuple[str, ...]
    ln_rest: np.ndarray  # (nL,) ln vacuum rest wavelength
    comp: np.ndarray  # (nL,) component index
    ratio: np.ndarray  # (nL,) flux of the line / flux parameter of its component
    group: np.ndarray  # (nC,) gas group of each component
    n_comp: int
    n_group: int
    tied: np.ndarray  # (nL,) bool: flux set by a doublet ratio


def line_setup(config: FitConfig) -> LineSetup:
    """The lines of ``config`` (requested ones of the configured gas groups' kinds)."""
    wanted = set(config.lines) if config.lines is not None else None
    group_of_kind = {kind: g for g, kinds in enumerate(config.gas_groups.values()) for kind in kinds}
    lines = [ln for ln in LINES.values() if (wanted is None or ln.id in wanted) and ln.kind in group_of_kind]
    ids = tuple(ln.id for ln in lines)
    parents = [ln.id for ln in lines if ln.id not in DOUBLETS or DOUBLETS[ln.id][0] not in ids]
    comp = np.array([parents.index(DOUBLETS[i][0]) if i in DOUBLETS and DOUBLETS[i][0] in ids else parents.index(i) for i in ids])
    ratio = np.array([DOUBLETS[i][1] if i in DOUBLETS and DOUBLETS[i][0] in ids else 1.0 for i in ids])
    group = np.array([group_of_kind[lines[ids.index(p)].kind] for p in parents])
    return LineSetup(
        ids=ids,
        ln_rest=np.log([ln.vacuum_wavelength for ln in lines]),
        comp=comp,
        ratio=ratio,
        group=group,
        n_comp=len(parents),
        n_group=len(config.gas_groups),
        tied=ratio != 1.0,
    )
