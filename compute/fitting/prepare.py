"""Turn a :class:`SpectraBatch` into log-lambda tensors with masks.

Log-sampled spectra (SDSS, MaNGA) whose step equals the fit's step are used pixel for
pixel: resampling would correlate the noise and bias the errors. Others (e.g. linear
grids) are rebinned, conserving flux, onto a log grid starting at their first pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skyledger.compute.errors import ComputeInputError

from .templates import flux_conserving_rebin
from .types import C_KMS, FitConfig, SpectraBatch, SpectrumFlag

__all__ = ["LogSpectra", "prepare_batch"]

_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))
_LOG_TOL = 2e-2  # float32 loglam columns jitter the step by ~0.5 %


@dataclass(slots=True)
class LogSpectra:
    """Spectra on log grids with a common step: pixel j of b is at ln0[b] + j*dln."""

    dln: float
    ln0: np.ndarray  # (B,) observed-frame ln(vacuum lambda) of pixel 0
    flux: np.ndarray  # (B, N)
    ivar: np.ndarray  # (B, N), 0 where not good
    good: np.ndarray  # (B, N) bool
    sigma_inst: np.ndarray  # (B, N) instrumental LSF sigma, km/s
    redshift: np.ndarray  # (B,)
    flags: np.ndarray  # (B,) SpectrumFlag bits found while preparing
    rebinned: np.ndarray  # (B,) bool: resampled onto the log grid (noise now correlated)

    def take(self, rows: np.ndarray) -> LogSpectra:
        """The spectra ``rows`` only (copies), e.g. one chunk to send to a worker."""
        return LogSpectra(
            dln=self.dln, ln0=self.ln0[rows], flux=self.flux[rows], ivar=self.ivar[rows], good=self.good[rows],
            sigma_inst=self.sigma_inst[rows], redshift=self.redshift[rows], flags=self.flags[rows],
            rebinned=self.rebinned[rows],
        )  # fmt: skip


def _as_np(a: object, dtype: type = np.float64) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(a, dtype=dtype)


def _edges_from_centres(wave: np.ndarray) -> np.ndarray:
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[2 * wave[0] - mid[0]], mid, [2 * wave[-1] - mid[-1]]])


def prepare_batch(batch: SpectraBatch, config: FitConfig) -> LogSpectra:
    """Validate, mask and log-sample a batch (numpy, once per batch)."""
    wave = _as_np(batch.wave)
    flux = _as_np(batch.flux)
    ivar = _as_np(batch.ivar)
    if wave.ndim == 1:
        wave = np.broadcast_to(wave, flux.shape)
    if not (wave.shape == flux.shape == ivar.shape) or flux.ndim != 2:
        raise ComputeInputError(f"wave/flux/ivar must share a (B, N) shape, got {wave.shape}, {flux.shape}, {ivar.shape}")
    nb, npix = flux.shape
    mask = np.zeros(flux.shape, dtype=bool) if batch.mask is None else _as_np(batch.mask, np.int64) != 0
    redshift = _as_np(batch.redshift).reshape(-1)
    if redshift.size != nb:
        raise ComputeInputError(f"redshift must have one value per spectrum ({nb}), got {redshift.size}")
    if batch.resolution is None:
        res = np.full(flux.shape, config.default_resolution)
    else:
        res = _as_np(batch.resolution)
        res = np.broadcast_to(res, flux.shape) if res.ndim == 1 else res
        res = np.where(np.isfinite(res) & (res > 0), res, config.default_resolution)
    with np.errstate(invalid="ignore"):
        good = ~mask & np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & np.isfinite(wave) & (wave > 0)
    flags = np.zeros(nb, dtype=np.int64)
    flags[~good.any(axis=1)] |= SpectrumFlag.NO_GOOD_PIXELS
    flags[~np.isfinite(redshift) | (redshift <= -1)] |= SpectrumFlag.BAD_REDSHIFT
    sig = C_KMS * _FWHM_TO_SIGMA / res

    # Per spectrum: the real pixel range (finite, increasing wavelengths) and its step.
    finite_w = np.isfinite(wave) & (wave > 0)
    first = np.argmax(finite_w, axis=1)
    last = npix - 1 - np.argmax(finite_w[:, ::-1], axis=1)
    lnw = np.log(np.where(finite_w, wave, 1.0))
    steps = np.full(nb, np.nan)
    is_log = np.zeros(nb, dtype=bool)
    lin_step = np.full(nb, np.nan)
    for b in range(nb):  # cheap metadata only; the pixel work below is vectorised
        if last[b] - first[b] < 2 or not finite_w[b, first[b] : last[b] + 1].all():
            flags[b] |= SpectrumFlag.NO_GOOD_PIXELS
            continue
        d = np.diff(lnw[b, first[b] : last[b] + 1])
        if (d <= 0).any():
            raise ComputeInputError(
                f"spectrum {b} of the batch: wavelengths must increase strictly; sort its pixels by "
                "wavelength (`skyledger ingest` rejects such files: a stored grid was changed after loading)"
            )
        med = np.median(d)
        is_log[b] = np.abs(d - med).max() < _LOG_TOL * med
        if is_log[b]:
            # Least-squares slope through all pixels: the median of float32-rounded
            # steps is off by ~1e-3 relative, which drifts by pixels across a spectrum.
            j = np.arange(last[b] - first[b] + 1)
            steps[b] = np.polyfit(j, lnw[b, first[b] : last[b] + 1], 1)[0]
        else:
            steps[b] = med
        lin_step[b] = (lnw[b, last[b]] - lnw[b, first[b]]) / (last[b] - first[b] + 1)
    usable = np.isfinite(steps)
    if config.velscale is not None:
        dln = config.velscale / C_KMS
    elif usable.any():
        cand = np.where(is_log, steps, lin_step)[usable]
        dln = float(np.min(cand))
    else:
        dln = 1e-4 * np.log(10.0)

    out_flux, out_ivar, out_good, out_sig, ln0 = [], [], [], [], np.zeros(nb)
    rebinned = np.zeros(nb, dtype=bool)
    for b in range(nb):
        if not usable[b]:
            out_flux.append(np.zeros(1))
            out_ivar.append(np.zeros(1))
            out_good.append(np.zeros(1, dtype=bool))
            out_sig.append(np.full(1, sig[b, 0]))
            continue
        sl = slice(first[b], last[b] + 1)
        # Same step to 1e-6: the accumulated offset over 1e4 pixels stays < 0.01 pixel.
        if is_log[b] and abs(steps[b] - dln) < 1e-6 * dln:
            # Exact log grid: take ln(lambda_0) from a straight-line fit through all
            # pixels, which averages away float32 rounding of the stored wavelengths.
            j = np.arange(last[b] - first[b] + 1)
            ln0[b] = float(np.mean(lnw[b, sl] - dln * j))
            out_flux.append(np.where(good[b, sl], flux[b, sl], 0.0))
            out_ivar.append(np.where(good[b, sl], ivar[b, sl], 0.0))
            out_good.append(good[b, sl].copy())
            out_sig.append(sig[b, sl].copy())
            continue
        rebinned[b] = True
        w = wave[b, sl]
        e_old = _edges_from_centres(w)
        n_new = int(np.floor((np.log(e_old[-1]) - np.log(e_old[0])) / dln))
        e_new = np.exp(np.log(e_old[0]) + dln * np.arange(n_new + 1))
        ln0[b] = float(np.log(e_old[0]) + dln / 2)
        g = good[b, sl]
        f = np.where(g, flux[b, sl], 0.0)
        var = np.where(g, 1.0 / np.where(g, ivar[b, sl], 1.0), 0.0)
        # Variance of a mean over n old pixels falls as 1/n: rebin var*width, which the
        # flux-conserving rebin divides by the new width, and scale by (old/new) width.
        wid_old = np.diff(e_old)
        # The rebin spreads each old pixel evenly over its width before integrating over
        # the new ones: the data gain a top-hat of the old pixel (variance width^2/12)
        # that the line and template models, integrated over new pixels only, lack.
        # Without it MUSE gas sigmas came out 40 -> 41-46 km/s (docs/lines_validation.md).
        sig_box = C_KMS * np.diff(np.log(e_old)) / np.sqrt(12.0)
        stacked = np.stack([f, var * wid_old, (~g).astype(float), np.hypot(sig[b, sl], sig_box)])
        rb = flux_conserving_rebin(e_old, stacked, e_new)
        g_new = rb[2] < 1e-6
        var_new = rb[1] / np.diff(e_new)
        out_flux.append(np.where(g_new, rb[0], 0.0))
        out_ivar.append(np.where(g_new & (var_new > 0), 1.0 / np.where(var_new > 0, var_new, 1.0), 0.0))
        out_good.append(g_new & (var_new > 0))
        out_sig.append(rb[3])
    n_out = max(len(f) for f in out_flux)

    def pad(rows: list[np.ndarray], fill: float | bool, edge: bool = False) -> np.ndarray:
        arr = np.full((nb, n_out), fill, dtype=np.asarray(rows[0]).dtype)
        for b, r in enumerate(rows):
            arr[b, : len(r)] = r
            if edge:
                arr[b, len(r) :] = r[-1]
        return arr

    return LogSpectra(
        dln=dln,
        ln0=ln0,
        flux=pad(out_flux, 0.0),
        ivar=pad(out_ivar, 0.0),
        good=pad(out_good, False),
        sigma_inst=pad(out_sig, 0.0, edge=True),
        redshift=np.where(np.isfinite(redshift), redshift, 0.0),
        flags=flags,
        rebinned=rebinned,
    )
