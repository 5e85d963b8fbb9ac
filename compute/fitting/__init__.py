"""Batched pPXF-class spectral fitting in PyTorch: stellar kinematics and emission lines.

Pure numerics, no database: :func:`fit_spectra` takes a :class:`SpectraBatch` and returns
a :class:`FitResult` of numpy arrays, one row per spectrum. See ``docs/lines_validation.md``.
"""

from .fit import fit_spectra
from .nnls import nnls_gram
from .templates import LogTemplates, TemplateLibrary
from .types import (
    C_KMS,
    DEFAULT_GAS_GROUPS,
    DOUBLETS,
    FitConfig,
    FitResult,
    LineFlag,
    SpectraBatch,
    SpectrumFlag,
)

__all__ = [
    "C_KMS",
    "DEFAULT_GAS_GROUPS",
    "DOUBLETS",
    "FitConfig",
    "FitResult",
    "LineFlag",
    "LogTemplates",
    "SpectraBatch",
    "SpectrumFlag",
    "TemplateLibrary",
    "fit_spectra",
    "nnls_gram",
]
