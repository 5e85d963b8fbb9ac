"""The error estimate for spectra whose files give none (ivar_from_scatter, flag ERROR_ESTIMATED)."""

from __future__ import annotations

import numpy as np
import pytest

from skyledger.ingest.readers.base import ivar_from_scatter


def _spectrum(n: int, sigma: np.ndarray | float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=float)
    continuum = 40.0 + 8.0 * np.sin(x / 400.0) + 0.002 * x  # curves over hundreds of pixels
    lines = sum(a * np.exp(-0.5 * ((x - c) / 2.2) ** 2) for a, c in ((300.0, 900), (120.0, 2500), (60.0, 3300)))
    return continuum + lines + rng.normal(0.0, 1.0, n) * sigma


def test_white_noise_is_recovered_within_a_few_percent():
    true = 0.8
    sigma = 1.0 / np.sqrt(ivar_from_scatter(_spectrum(4000, true)))
    assert np.median(sigma) == pytest.approx(true, rel=0.05)
    # Emission lines occupy a few pixels of each 201-pixel window: they barely move the median.
    assert sigma[880:920].max() < 1.5 * true


def test_noise_that_changes_along_the_spectrum_is_followed():
    n = 4000
    true = np.linspace(0.3, 3.0, n)
    sigma = 1.0 / np.sqrt(ivar_from_scatter(_spectrum(n, true, seed=2)))
    for lo in (200, 1800, 3600):
        assert np.median(sigma[lo : lo + 200]) == pytest.approx(np.median(true[lo : lo + 200]), rel=0.15)


def test_masked_and_non_finite_pixels_get_no_weight_and_no_vote():
    clean = _spectrum(3000, 0.5, seed=3)
    good = np.ones(clean.size, bool)
    good[1500:1600] = False
    wild = clean.copy()
    wild[1500:1600] = np.random.default_rng(4).normal(0.0, 1e4, 100)  # wild, masked: must not inflate neighbours
    wild[2000] = np.nan
    ivar = ivar_from_scatter(wild, good)
    assert np.all(ivar[1500:1600] == 0) and ivar[2000] == 0
    reference = ivar_from_scatter(np.where(np.isfinite(wild), clean, np.nan), good)
    np.testing.assert_array_equal(ivar, reference)
    # Unmasked, the same stretch would have voted: the neighbours' errors blow up.
    assert ivar_from_scatter(np.where(np.isfinite(wild), wild, 0.0))[1490] < 0.5 * reference[1490]


def test_too_short_or_flat_spectra_get_zero_ivar():
    assert not ivar_from_scatter(np.array([1.0, 2.0, 3.0])).any()
    assert not ivar_from_scatter(np.full(500, 7.0)).any()  # no scatter: no estimate, not infinite weight


def test_noise_correlated_by_resampling_is_not_underestimated():
    """IRAF-style products are resampled: neighbouring pixels share noise. A short second
    difference cancels that shared part; the lag is widened until the noise decorrelates."""
    n, true = 4000, 0.8
    rng = np.random.default_rng(5)
    kernel = np.exp(-0.5 * (np.arange(-8, 9) / 1.2) ** 2)  # Gaussian resampling kernel, sigma 1.2 px
    noise = np.convolve(rng.normal(0.0, 1.0, n + 16), kernel, mode="same")[8:-8]
    noise *= true / noise.std()
    assert np.corrcoef(noise[:-1], noise[1:])[0, 1] > 0.75  # as correlated as the real IRAF files
    flux = _spectrum(n, 0.0) + noise
    sigma = 1.0 / np.sqrt(ivar_from_scatter(flux))
    assert np.median(sigma) == pytest.approx(true, rel=0.1)
    # The plain DER_SNR lag of 2 pixels would be about half of it.
    second = np.abs(2 * flux[2:-2] - flux[:-4] - flux[4:])
    assert np.median(second) / (0.6745 * np.sqrt(6.0)) < 0.7 * true
