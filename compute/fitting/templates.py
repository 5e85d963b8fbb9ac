"""Stellar template libraries, resampled to the log-lambda grid of a fit."""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from skyledger.compute.errors import ModelFileError
from skyledger.schema.linelist import air_to_vacuum

from .types import C_KMS

__all__ = ["LIBRARIES", "TemplateLibrary", "LogTemplates", "flux_conserving_rebin"]

#: Shipped libraries: name -> files under ``skyledger/compute/templates`` (what a run's
#: model-file hash covers). MILESHC: 63 stellar eigen-spectra; E-MILES: 78 SSPs.
_EMILES_FILE = "emiles_ssp.npz"
LIBRARIES: dict[str, tuple[str, ...]] = {"mileshc": ("mileshc/MILESHC_*.fits",), "emiles": (f"emiles/{_EMILES_FILE}",)}

_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def flux_conserving_rebin(edges_old: np.ndarray, flux: np.ndarray, edges_new: np.ndarray) -> np.ndarray:
    """Rebin flux densities from bins ``edges_old`` to ``edges_new`` conserving flux.

    ``flux`` is ``(..., N)`` with ``N + 1`` old edges; returns ``(..., M)`` densities on
    the ``M + 1`` new edges (which must lie inside the old range).
    """
    widths = np.diff(edges_old)
    cum = np.concatenate([np.zeros(flux.shape[:-1] + (1,)), np.cumsum(flux * widths, axis=-1)], axis=-1)
    flat = cum.reshape(-1, cum.shape[-1])
    at = np.stack([np.interp(edges_new, edges_old, row) for row in flat])
    return (np.diff(at, axis=-1) / np.diff(edges_new)).reshape(flux.shape[:-1] + (len(edges_new) - 1,))


@dataclass(frozen=True, slots=True)
class LogTemplates:
    """Templates on a rest-frame vacuum log-lambda grid: ln(lambda_k) = ln0 + k*dln."""

    ln0: float
    dln: float
    flux: np.ndarray  # (K, L), each template normalised to median 1
    eigen: np.ndarray  # (E, L) leading singular vectors, for the coarse velocity grid
    sigma_kms: np.ndarray  # (L,) template LSF sigma, km/s

    @property
    def size(self) -> int:
        return self.flux.shape[1]

    def window(self, ln_lo: float, ln_hi: float) -> LogTemplates:
        """The pixels between rest ln(lambda) ``ln_lo`` and ``ln_hi`` (clipped to the grid)."""
        k0 = max(int(np.floor((ln_lo - self.ln0) / self.dln)), 0)
        k1 = min(int(np.ceil((ln_hi - self.ln0) / self.dln)) + 1, self.size)
        if k0 == 0 and k1 == self.size:
            return self
        return LogTemplates(
            ln0=self.ln0 + k0 * self.dln, dln=self.dln, flux=self.flux[:, k0:k1], eigen=self.eigen[:, k0:k1],
            sigma_kms=self.sigma_kms[k0:k1],
        )  # fmt: skip


@dataclass(frozen=True)
class TemplateLibrary:
    """A stellar library on a linear air-wavelength grid with a constant FWHM (A)."""

    wave_air: np.ndarray  # (M,) pixel centres, Angstrom, air, uniform step
    flux: np.ndarray  # (K, M)
    fwhm: float
    names: tuple[str, ...]
    _cache: dict[tuple[float, int], LogTemplates] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_fits(cls, paths: list[Path], fwhm: float) -> TemplateLibrary:
        """Read 1-D FITS templates with a linear CRVAL1/CDELT1 air-wavelength axis."""
        fluxes, waves, names = [], None, []
        for path in sorted(paths):
            with fits.open(path) as hdul:
                hdr, data = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
            crpix = hdr.get("CRPIX1", 1.0)
            wave = hdr["CRVAL1"] + (np.arange(data.size) + 1.0 - crpix) * hdr["CDELT1"]
            if waves is not None and not np.allclose(wave, waves):
                raise ModelFileError(
                    f"{path} has a different wavelength grid from the other templates; give templates that "
                    "share one CRVAL1/CDELT1 grid"
                )
            waves = wave
            fluxes.append(data)
            names.append(path.stem)
        if waves is None:
            raise ModelFileError(
                "no template files given: pass 1-D FITS templates (the shipped MILESHC library is in "
                "skyledger/compute/templates/mileshc; reinstall skyledger if its files are missing)"
            )
        return cls(wave_air=waves, flux=np.stack(fluxes), fwhm=fwhm, names=tuple(names))

    @classmethod
    def named(cls, name: str) -> TemplateLibrary:
        """A shipped library by name: ``mileshc`` or ``emiles`` (see :data:`LIBRARIES`)."""
        if name not in LIBRARIES:
            raise ModelFileError(f"unknown template library {name!r}: use one of {sorted(LIBRARIES)}")
        return getattr(cls, name)()

    @classmethod
    @functools.cache
    def emiles(cls) -> TemplateLibrary:
        """78 E-MILES SSPs shipped with skyledger (3540-8950 A air, FWHM 2.51 A; see
        ``compute/templates/emiles/README.md``)."""
        root = importlib.resources.files("skyledger.compute.templates") / "emiles"
        with importlib.resources.as_file(root / _EMILES_FILE) as path:
            try:
                with np.load(path) as npz:
                    flux = np.asarray(npz["flux"], dtype=np.float64)
                    wave = float(npz["crval"]) + float(npz["cdelt"]) * np.arange(flux.shape[1])
                    ages, mets, fwhm = npz["age_gyr"], npz["metallicity"], float(npz["fwhm"])
            except FileNotFoundError as exc:
                raise ModelFileError(f"{path} is missing: reinstall skyledger (the E-MILES file ships with it)") from exc
        names = tuple(f"Z{m:+.2f}_T{a:07.4f}" for m, a in zip(mets, ages))
        return cls(wave_air=wave, flux=flux, fwhm=fwhm, names=names)

    @classmethod
    @functools.cache
    def mileshc(cls) -> TemplateLibrary:
        """The 63 MILESHC templates shipped with skyledger (FWHM 2.5 A, air)."""
        root = importlib.resources.files("skyledger.compute.templates") / "mileshc"
        with importlib.resources.as_file(root) as folder:
            return cls.from_fits(list(Path(folder).glob("MILESHC_*.fits")), fwhm=2.5)

    def on_log_grid(self, dln: float, n_eigen: int = 6) -> LogTemplates:
        """Resample (flux-conserving) to rest-frame vacuum log-lambda with step ``dln``."""
        key = (round(dln, 12), n_eigen)
        if key in self._cache:
            return self._cache[key]
        step = self.wave_air[1] - self.wave_air[0]
        edges_air = np.concatenate([self.wave_air - step / 2, self.wave_air[-1:] + step / 2])
        edges_vac = np.asarray(air_to_vacuum(edges_air))
        ln_lo, ln_hi = np.log(edges_vac[0]), np.log(edges_vac[-1])
        n = int(np.floor((ln_hi - ln_lo) / dln))
        new_edges = np.exp(ln_lo + dln * np.arange(n + 1))
        flux = flux_conserving_rebin(edges_vac, self.flux, new_edges)
        flux = flux / np.median(flux, axis=1, keepdims=True)
        # Eigen-templates span the library well enough to locate the chi^2 minimum in
        # velocity with a handful of unconstrained columns.
        _, _, vt = np.linalg.svd(flux, full_matrices=False)
        centres = np.exp(ln_lo + dln * (np.arange(n) + 0.5))
        out = LogTemplates(
            ln0=float(ln_lo + dln / 2),
            dln=dln,
            flux=flux,
            eigen=vt[: max(n_eigen, 1)].copy(),
            sigma_kms=C_KMS * self.fwhm * _FWHM_TO_SIGMA / centres,
        )
        self._cache[key] = out
        return out
