"""Nebular abundances: dust correction, direct (Te-based) method and strong-line calibrations.

Pure batched torch, no database: see :func:`derive_abundances`.  Atomic data are PyNeb's
default set, shipped in ``data/atomic_data.json`` (regenerate with
``benchmarks/extract_atomic_data.py``); PyNeb itself is never imported here.
"""

from skyledger.compute.abundances.core import (
    ALL_METHODS,
    AbundanceConfig,
    AbundanceResult,
    MethodResult,
    Quantity,
    derive_abundances,
)
from skyledger.compute.abundances.flags import FLAG_DESCRIPTIONS, AbundanceFlag

__all__ = [
    "ALL_METHODS",
    "AbundanceConfig",
    "AbundanceFlag",
    "AbundanceResult",
    "FLAG_DESCRIPTIONS",
    "MethodResult",
    "Quantity",
    "derive_abundances",
]
