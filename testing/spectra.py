"""Synthetic spectra with known kinematics and line fluxes, for validation.

The forward model is deliberately built differently from the fit: templates are
broadened by direct summation over a kernel on a grid 4x finer than the data (not in
Fourier space), lines are sampled on that fine grid, and everything is averaged into the
data pixels at the end. A fit that agrees with these spectra therefore tests the maths,
not a copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skyledger.schema.linelist import LINES, air_to_vacuum

from skyledger.compute.fitting.templates import TemplateLibrary, flux_conserving_rebin
from skyledger.compute.fitting.types import C_KMS, DOUBLETS, SpectraBatch

__all__ = ["SyntheticTruth", "make_synthetic"]

_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))

#: Lines put into synthetic spectra, with fluxes relative to H-beta (a typical HII region).
SYNTH_LINES: dict[str, float] = {
    "OII3726": 1.2, "OII3729": 1.6, "NEIII3869": 0.3, "HG4340": 0.47, "OIII4363": 0.03,
    "HB4861": 1.0, "OIII5007": 2.5, "HEI5876": 0.11, "OI6300": 0.05, "HA6563": 2.86,
    "NII6584": 0.6, "SII6716": 0.4, "SII6731": 0.3,
}  # fmt: skip


@dataclass(slots=True)
class SyntheticTruth:
    """Input values: stellar V (vs the redshift given to the fit), sigma, gas V/sigma per
    group (``recombination``, ``forbidden``) and line fluxes (flux units x A)."""

    velocity: np.ndarray
    sigma: np.ndarray
    gas_velocity: np.ndarray  # (B, 2)
    gas_sigma: np.ndarray  # (B, 2)
    line_flux: dict[str, np.ndarray]
    #: Second component (``second=``): its V (vs the redshift given to the fit), sigma,
    #: and line fluxes (``line_flux`` then holds the first component's); empty without.
    second_velocity: np.ndarray | None = None
    second_sigma: np.ndarray | None = None
    second_flux: dict[str, np.ndarray] = field(default_factory=dict)


def _resolution(wave_obs: np.ndarray) -> np.ndarray:
    """A wavelength-dependent R, coarser than MILES everywhere in the synthetic range."""
    return 1100.0 + 0.12 * (wave_obs - 4000.0)


def make_synthetic(
    n: int,
    snr: float,
    seed: int = 0,
    templates: TemplateLibrary | None = None,
    hb_ew: float = 10.0,
    sigma_range: tuple[float, float] = (60.0, 250.0),
    with_lines: bool = True,
    second: str | None = None,
) -> tuple[SpectraBatch, SyntheticTruth]:
    """``n`` spectra at continuum S/N ``snr`` per 69 km/s pixel, SDSS-like log grid.

    H-beta has rest equivalent width ``hb_ew`` A; other lines scale as ``SYNTH_LINES``.
    ``second`` adds a second kinematic component: ``"broad"`` on every Balmer line
    (V within +-300 km/s of the narrow lines, sigma 1000-2500 km/s, 30-70 % of each
    line's flux) or ``"outflow"`` on [OIII] 4959, 5007 (V 300-600 km/s blueward, sigma
    300-800 km/s, 20-60 % of the flux); the line's total flux is as without it.
    """
    if second not in (None, "broad", "outflow"):
        raise ValueError(f"second={second!r}: use None, 'broad' or 'outflow'")
    rng = np.random.default_rng(seed)
    lib = templates or TemplateLibrary.mileshc()
    dln = 1e-4 * np.log(10.0)
    fine = 4
    # Fine rest-frame vacuum log grid over the library.
    step = lib.wave_air[1] - lib.wave_air[0]
    edges_vac = np.asarray(air_to_vacuum(np.concatenate([lib.wave_air - step / 2, lib.wave_air[-1:] + step / 2])))
    lo, hi = np.log(edges_vac[0]), np.log(edges_vac[-1])
    nf = int((hi - lo) / (dln / fine))
    fedges = np.exp(lo + dln / fine * np.arange(nf + 1))
    fln = lo + dln / fine * (np.arange(nf) + 0.5)
    tpl_f = flux_conserving_rebin(edges_vac, lib.flux, fedges)
    tpl_f /= np.median(tpl_f, axis=1, keepdims=True)
    sig_t = C_KMS * lib.fwhm * _FWHM_TO_SIGMA / np.exp(fln)

    z = rng.uniform(0.01, 0.08, n)
    vel = rng.uniform(-200.0, 200.0, n)
    sig = rng.uniform(*sigma_range, n)
    gas_v = vel[:, None] + rng.uniform(-80.0, 80.0, (n, 2))
    gas_s = rng.uniform(30.0, 120.0, (n, 2))
    # Second component: its kinematics and share of the flux of each line it is on.
    if second == "broad":
        v2 = gas_v[:, 0] + rng.uniform(-300.0, 300.0, n)
        s2 = rng.uniform(1000.0, 2500.0, n)
        frac2 = rng.uniform(0.3, 0.7, n)
    elif second == "outflow":
        v2 = gas_v[:, 1] - rng.uniform(300.0, 600.0, n)
        s2 = rng.uniform(300.0, 800.0, n)
        frac2 = rng.uniform(0.2, 0.6, n)
    second_flux: dict[str, np.ndarray] = {}

    def has_second(lid: str) -> bool:
        if second == "broad":
            return LINES[lid].kind == "balmer"
        return second == "outflow" and lid in ("OIII5007", "OIII4959")
    # Data grid: observed, covering the library's rest range shrunk by a safety margin.
    ln_obs0 = lo + np.log1p(z) + 0.02
    npix = int((hi - lo - 0.04) / dln)
    flux = np.zeros((n, npix))
    wave = np.exp(ln_obs0[:, None] + dln * np.arange(npix)[None, :])
    fv = C_KMS * dln / fine  # km/s per fine pixel
    off = np.arange(-int(6 * 500 / fv), int(6 * 500 / fv) + 1)
    line_flux: dict[str, np.ndarray] = {}
    for b in range(n):
        w = rng.dirichlet(np.ones(3))
        pick = rng.choice(lib.flux.shape[0], 3, replace=False)
        spec = w @ tpl_f[pick]
        # Total kernel: stellar LOSVD (+V) and the LSF difference, summed directly.
        wobs = np.exp(fln + np.log1p(z[b]))
        sig_inst = C_KMS * _FWHM_TO_SIGMA / _resolution(wobs)
        s_tot = np.sqrt(sig[b] ** 2 + np.clip(sig_inst**2 - sig_t**2, 0, None)) / fv
        shift = vel[b] / fv
        kern = np.exp(-0.5 * ((off[None, :] - shift) / s_tot[:, None]) ** 2)
        kern /= kern.sum(1, keepdims=True)
        padded = np.pad(spec, len(off) // 2, mode="edge")
        # out[i] = sum_o kern[i, o] * spec[i - o]: a spectrum feature moves to +shift.
        conv = np.zeros(nf)
        for j, o in enumerate(off):
            conv += kern[:, j] * padded[len(off) // 2 - o : len(off) // 2 - o + nf]
        if with_lines:
            # Continuum level at H-beta sets the line fluxes (observed frame, per A).
            hb_vac = LINES["HB4861"].vacuum_wavelength
            i_hb = np.searchsorted(fln, np.log(hb_vac))
            f_hb = hb_ew * conv[i_hb] * (1 + z[b])  # F = EW_rest * C_obs * (1+z)
            for lid, rel in SYNTH_LINES.items():
                ln = LINES[lid]
                grp = 0 if ln.kind in ("balmer", "helium") else 1
                fl = rel * f_hb
                comps = [(lid, fl)]
                for child, (parent, ratio) in DOUBLETS.items():
                    if parent == lid:
                        comps.append((child, fl * ratio))
                for cid, f_tot in comps:
                    lam = LINES[cid].vacuum_wavelength
                    si = np.interp(np.log(lam), fln, sig_inst)
                    parts = [(f_tot, gas_v[b, grp], gas_s[b, grp])]
                    if has_second(cid):
                        parts = [(f_tot * (1 - frac2[b]), gas_v[b, grp], gas_s[b, grp]), (f_tot * frac2[b], v2[b], s2[b])]
                        second_flux.setdefault(cid, np.zeros(n))[b] = parts[1][0]
                    line_flux.setdefault(cid, np.zeros(n))[b] = parts[0][0]
                    for f, v_c, s_c in parts:
                        s_l = np.sqrt(s_c**2 + si**2) / C_KMS
                        mu = np.log(lam) + v_c / C_KMS
                        prof = np.exp(-0.5 * ((fln - mu) / s_l) ** 2) / (np.sqrt(2 * np.pi) * s_l)
                        # density per unit ln(lambda) -> per observed A
                        conv = conv + f * prof / wobs
        # Average into data pixels (observed frame = rest grid shifted by ln(1+z)).
        fe_obs = fedges * (1 + z[b])
        de = np.exp(ln_obs0[b] - dln / 2 + dln * np.arange(npix + 1))
        flux[b] = flux_conserving_rebin(fe_obs, conv[None, :], de)[0]
    cont_level = np.median(flux, axis=1, keepdims=True)
    noise = cont_level / snr
    flux_noisy = flux + rng.normal(size=flux.shape) * noise
    ivar = np.broadcast_to(1.0 / noise**2, flux.shape).copy()
    res = _resolution(wave)
    batch = SpectraBatch(wave=wave, flux=flux_noisy, ivar=ivar, redshift=z, resolution=res)
    truth = SyntheticTruth(velocity=vel, sigma=sig, gas_velocity=gas_v, gas_sigma=gas_s, line_flux=line_flux)
    if second is not None:
        truth.second_velocity, truth.second_sigma, truth.second_flux = v2, s2, second_flux
    return batch, truth
