"""Synthetic galaxy spectra built from a stellar library the fit does not use (template mismatch).

The continuum is a mix of MaStar SSPs (Maraston et al. 2020; empirical MaNGA stars, a
different stellar library, isochrones and flux calibration from the MILES-based
libraries skyledger fits with): an old population plus an intermediate-age one (0.1-1
Gyr, A stars: Balmer absorption of several A) and a little very young light, so the
emission lines sit in absorption troughs that the fit's templates can only approximate.
The spectra keep the SSPs' own SDSS-like resolution (MaStar R ~ 1400-2000, given to the
fit per pixel) and are sampled at 1e-4 dex like SDSS. Gaussian emission lines with known
fluxes, velocities and dispersions are added: the Balmer lines at their Case B ratios
(Storey & Hummer 1995, 10^4 K, 100 cm^-3) reddened by a power-law attenuation, so
Halpha/Hbeta spans 2.86-4.8. The stellar LOSVD is applied by direct summation on a 4x
finer grid and the lines are integrated over that grid: nothing here shares code with
the fit.

The subset of models shipped in ``testing/data/mastar_ssp_subset.fits`` (27 SSPs) is made
by ``benchmarks/extract_mastar_ssp.py``; see ``testing/data/README.md``.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from numpy.polynomial import legendre

from skyledger.compute.fitting.templates import flux_conserving_rebin
from skyledger.compute.fitting.types import C_KMS, DOUBLETS, SpectraBatch
from skyledger.schema.linelist import LINES

__all__ = ["MismatchTruth", "SSPLibrary", "mastar_ssps", "make_mismatch", "fitted_decrement", "CASE_B", "lick_hbeta_ew"]

_FWHM = np.sqrt(8.0 * np.log(2.0))
#: Case B intensities relative to H-beta (Storey & Hummer 1995, T = 1e4 K, ne = 100 cm^-3).
CASE_B = {"HA6563": 2.86, "HB4861": 1.0, "HG4340": 0.468, "HD4102": 0.259}
#: Rest range of the synthetic data (vacuum A): inside the MaStar subset with room for the LOSVD.
REST_RANGE = (3660.0, 7500.0)


@dataclass(frozen=True, slots=True)
class SSPLibrary:
    """SSPs on a rest vacuum log10 grid (step ``dlog10``), each divided by its median."""

    wave: np.ndarray  # (M,) vacuum A
    flux: np.ndarray  # (K, M)
    resolution: np.ndarray  # (M,) R = lambda / FWHM
    age_gyr: np.ndarray  # (K,)
    logz: np.ndarray  # (K,)


@functools.cache
def mastar_ssps() -> SSPLibrary:
    """The shipped MaStar SSP subset (9 ages x 3 metallicities)."""
    path = importlib.resources.files("skyledger.testing") / "data" / "mastar_ssp_subset.fits"
    with importlib.resources.as_file(path) as p, fits.open(p) as h:
        hdr = h[0].header
        flux = np.asarray(h[0].data, float)
        wave = 10 ** (hdr["CRVAL1"] + (np.arange(flux.shape[1]) + 1 - hdr["CRPIX1"]) * hdr["CDELT1"])
        return SSPLibrary(wave=wave, flux=flux, resolution=np.asarray(h["SRES"].data, float),
                          age_gyr=np.asarray(h["MODELS"].data["AGE_GYR"], float),
                          logz=np.asarray(h["MODELS"].data["LOGZ"], float))  # fmt: skip


@dataclass(slots=True)
class MismatchTruth:
    """Inputs: stellar V (vs the redshift given to the fit), sigma; gas V (vs the same
    redshift) and sigma per group (0 = recombination, 1 = forbidden); line fluxes (flux
    units x A, observed); the SFH and the Lick H-beta absorption EW of the continuum."""

    velocity: np.ndarray
    sigma: np.ndarray
    gas_velocity: np.ndarray  # (B, 2)
    gas_sigma: np.ndarray  # (B, 2)
    line_flux: dict[str, np.ndarray]
    balmer_decrement: np.ndarray  # true observed Halpha/Hbeta (flux-calibration error included)
    hb_absorption_ew: np.ndarray  # Lick H-beta index of the stellar continuum, A (positive = absorption)
    hb_emission_ew: np.ndarray  # rest EW of H-beta emission vs the pseudo-continuum, A
    young_light_fraction: np.ndarray  # light at 5000 A from populations younger than 1.5 Gyr


def lick_hbeta_ew(wave: np.ndarray, flux: np.ndarray) -> float:
    """Lick H-beta index (Worthey et al. 1994 bands, vacuum-shifted by ~1.4 A), A of absorption."""
    blue, band, red = (4828.5, 4849.0), (4849.0, 4878.6), (4877.4, 4892.4)
    mean = lambda b: float(np.mean(flux[(wave > b[0]) & (wave < b[1])]))  # noqa: E731
    wb, wr = np.mean(blue), np.mean(red)
    sel = (wave > band[0]) & (wave < band[1])
    cont = mean(blue) + (mean(red) - mean(blue)) * (wave[sel] - wb) / (wr - wb)
    return float(np.sum(1 - flux[sel] / cont) * np.mean(np.diff(wave[sel])))


def _attenuation(lam, a_v: float):
    """Flux factor of a power-law attenuation A_lambda = A_V (lambda / 5500 A)^-1.3."""
    return 10 ** (-0.4 * a_v * (lam / 5500.0) ** -1.3)


def make_mismatch(
    n: int,
    snr: float,
    gas_sigma: float,
    seed: int = 0,
    library: SSPLibrary | None = None,
    hb_emission_ew: tuple[float, float] = (1.5, 6.0),
    calibration_error: float = 0.04,
) -> tuple[SpectraBatch, MismatchTruth]:
    """``n`` spectra at continuum S/N ``snr`` per pixel with gas dispersion ``gas_sigma`` km/s.

    Per spectrum: z in 0.01-0.08; stellar V in +-100 km/s, sigma 40-150 km/s; light at
    5000 A from an old SSP (3-14 Gyr), an intermediate one (0.1-1 Gyr, 20-60 %) and a
    very young one (3-10 Myr, 0-10 %), one metallicity, attenuated by 0.44 x the gas A_V
    (Calzetti et al. 2000's stars-to-gas ratio); gas V = stellar V + U(-50, 50)
    per group, both groups at ``gas_sigma``; H-beta emission EW in ``hb_emission_ew``;
    A_V 0-1.5 mag; [OIII]5007/Hbeta 0.3-3, [NII]6584/Halpha 0.1-0.5, [SII]6716/Halpha
    0.1-0.25 (6731 = 0.75 x 6716), [OII]3726+3729/Hbeta 1-3 (3729/3726 = 1.3),
    [NeIII]3869 = 0.1 [OIII]5007, [OI]6300 = 0.03 Halpha, HeI5876 = 0.11 Hbeta.
    Finally the whole spectrum (stars and lines) is multiplied by a flux-calibration
    error 1 + sum_k a_k P_k(x), k = 1..3, |a_k| < ``calibration_error``, over the rest
    range (x in [-1, 1]); the true line fluxes include it, as an observer would see them.
    """
    rng = np.random.default_rng(seed)
    lib = library or mastar_ssps()
    dln = 1e-4 * np.log(10.0)
    fine = 4
    fdln = dln / fine
    lnw = np.log(lib.wave)
    # Fine rest grid over the library (linear interpolation of a spectrum sampled at
    # ~2.6 pixels per FWHM: the truth continuum, smooth at the fine scale).
    fln = np.arange(lnw[0], lnw[-1], fdln)
    fwave = np.exp(fln)
    ssp_f = np.stack([np.interp(fln, lnw, f) for f in lib.flux])
    res_f = np.interp(fln, lnw, lib.resolution)
    i5000 = (fwave > 4950) & (fwave < 5050)
    ssp_f /= ssp_f[:, i5000].mean(axis=1, keepdims=True)  # unit light at 5000 A
    metals = np.unique(lib.logz)
    old_ages, mid_ages, young_ages = (3.0, 9.0, 14.0), (0.1, 0.3, 1.0), (0.00316, 0.01)

    def pick(age: float, z: float) -> int:
        return int(np.argmin(np.abs(np.log(lib.age_gyr / age)) + 10 * np.abs(lib.logz - z)))

    z = rng.uniform(0.01, 0.08, n)
    vel = rng.uniform(-100.0, 100.0, n)
    sig = rng.uniform(40.0, 150.0, n)
    gas_v = vel[:, None] + rng.uniform(-50.0, 50.0, (n, 2))
    gas_s = np.full((n, 2), float(gas_sigma))
    a_v = rng.uniform(0.0, 1.5, n)
    npix = int(np.log(REST_RANGE[1] / REST_RANGE[0]) / dln)
    wave = np.exp(np.log(REST_RANGE[0]) + np.log1p(z)[:, None] + dln * np.arange(npix)[None, :])
    flux = np.zeros((n, npix))
    line_flux: dict[str, np.ndarray] = {}
    decrement, abs_ew, em_ew, young = (np.zeros(n) for _ in range(4))
    off = np.arange(-int(6 * 200 / (C_KMS * fdln)) - 1, int(6 * 200 / (C_KMS * fdln)) + 2)
    for b in range(n):
        zb = rng.choice(metals)
        f_mid, f_young = rng.uniform(0.2, 0.6), rng.uniform(0.0, 0.1)
        comps = [(pick(rng.choice(old_ages), zb), 1 - f_mid - f_young), (pick(rng.choice(mid_ages), zb), f_mid),
                 (pick(rng.choice(young_ages), zb), f_young)]  # fmt: skip
        young[b] = f_mid + f_young
        spec = sum(w * ssp_f[k] for k, w in comps)
        # LOSVD: Gaussian in velocity = in ln(lambda); a feature moves to +V.
        kern = np.exp(-0.5 * ((off * C_KMS * fdln - vel[b]) / sig[b]) ** 2)
        kern /= kern.sum()
        stars = np.convolve(np.pad(spec, len(off) // 2, mode="edge"), kern, mode="valid")
        stars = stars * _attenuation(fwave, 0.44 * a_v[b])
        x = np.clip(2 * (fln - np.log(REST_RANGE[0])) / np.log(REST_RANGE[1] / REST_RANGE[0]) - 1, -1, 1)
        calib = legendre.legval(x, np.concatenate([[1.0], rng.uniform(-calibration_error, calibration_error, 3)]))
        abs_ew[b] = lick_hbeta_ew(fwave, stars)
        pseudo = float(np.median(stars[(fwave > 4800) & (fwave < 4930)]))
        # Observed frame: density per observed A = rest density / (1+z).
        total = stars / (1 + z[b])
        em_ew[b] = rng.uniform(*hb_emission_ew)
        f_hb = em_ew[b] * pseudo  # rest EW x rest continuum = observed flux x A (1/(1+z) x (1+z))
        ha_hb = CASE_B["HA6563"] * _attenuation(6564.6, a_v[b]) / _attenuation(4862.7, a_v[b])
        oiii = rng.uniform(0.3, 3.0)
        rel = {
            "HB4861": 1.0, "HA6563": ha_hb,
            "HG4340": CASE_B["HG4340"] * _attenuation(4341.7, a_v[b]) / _attenuation(4862.7, a_v[b]),
            "HD4102": CASE_B["HD4102"] * _attenuation(4102.9, a_v[b]) / _attenuation(4862.7, a_v[b]),
            "HEI5876": 0.11, "OIII5007": oiii, "NEIII3869": 0.1 * oiii, "OI6300": 0.03 * ha_hb,
            "NII6584": rng.uniform(0.1, 0.5) * ha_hb,
        }  # fmt: skip
        rel["SII6716"] = rng.uniform(0.1, 0.25) * ha_hb
        rel["SII6731"] = 0.75 * rel["SII6716"]
        oii = rng.uniform(1.0, 3.0)
        rel["OII3726"], rel["OII3729"] = oii / 2.3, oii * 1.3 / 2.3
        for child, (parent, ratio) in DOUBLETS.items():
            if parent in rel:
                rel[child] = rel[parent] * ratio
        for lid, r in rel.items():
            line = LINES[lid]
            grp = 0 if line.kind in ("balmer", "helium") else 1
            fl = r * f_hb
            lam = line.vacuum_wavelength
            line_flux.setdefault(lid, np.zeros(n))[b] = fl * float(np.interp(np.log(lam), fln, calib))
            s_lsf = C_KMS / (_FWHM * np.interp(lam, fwave, res_f))
            s_ln = np.sqrt(gas_s[b, grp] ** 2 + s_lsf**2) / C_KMS
            mu = np.log(lam) + gas_v[b, grp] / C_KMS
            prof = np.exp(-0.5 * ((fln - mu) / s_ln) ** 2) / (np.sqrt(2 * np.pi) * s_ln)
            total = total + fl * prof / (fwave * (1 + z[b]))  # per ln(lambda) -> per observed A
        total = total * calib
        # The observed decrement (the calibration error changes it, as in real data).
        decrement[b] = line_flux["HA6563"][b] / line_flux["HB4861"][b]
        edges_f = np.exp(np.append(fln - fdln / 2, fln[-1] + fdln / 2)) * (1 + z[b])
        edges_d = np.exp(np.log(wave[b]) - dln / 2)
        edges_d = np.append(edges_d, wave[b, -1] * np.exp(dln / 2))
        flux[b] = flux_conserving_rebin(edges_f, total[None, :], edges_d)[0]
    noise = np.median(flux, axis=1, keepdims=True) / snr
    flux_noisy = flux + rng.normal(size=flux.shape) * noise
    ivar = np.broadcast_to(1.0 / noise**2, flux.shape).copy()
    # R is the same in the observed and rest frames; the SSPs' own R at each rest wavelength.
    resolution = np.interp(np.log(wave) - np.log1p(z)[:, None], lnw, lib.resolution)
    batch = SpectraBatch(wave=wave, flux=flux_noisy, ivar=ivar, redshift=z, resolution=resolution)
    truth = MismatchTruth(velocity=vel, sigma=sig, gas_velocity=gas_v, gas_sigma=gas_s, line_flux=line_flux,
                          balmer_decrement=decrement, hb_absorption_ew=abs_ew, hb_emission_ew=em_ew,
                          young_light_fraction=young)  # fmt: skip
    return batch, truth


def fitted_decrement(res) -> tuple[np.ndarray, np.ndarray]:
    """Halpha/Hbeta of a :class:`FitResult` and its error from the two flux errors
    (covariance neglected: the lines are fitted together but far apart)."""
    ia, ib = res.line_index("HA6563"), res.line_index("HB4861")
    fa, fb = res.line_flux[:, ia], res.line_flux[:, ib]
    ratio = fa / fb
    return ratio, np.abs(ratio) * np.hypot(res.line_flux_err[:, ia] / fa, res.line_flux_err[:, ib] / fb)
