"""Data finer than the templates: the SAMI red-arm sectors cube, fitted as it is and degraded.

SAMI's red arm (1000R grating) has FWHM ~1.6 A against 2.51 A of E-MILES (2.5 A of
MILESHC), so every stellar fit of it is flagged TEMPLATE_RES_WORSE. This fits each bin
of ``209807_A_sectors_red`` (39 bins, every spaxel of a bin holds the same spectrum)
three ways and compares H-alpha, [N II] 6584 and the stellar sigma:

* ``native``: the data as they are, R = lambda / 1.6 A;
* ``degraded``: flux convolved to the templates' 2.51 A (variance with the kernel
  squared), R = lambda / 2.51 A: templates and data then have one resolution;
* ``v2``: the data as they are with the continuum model of lines v2 (MILESHC, additive
  degree 8).

    .venv/bin/python benchmarks/lines_sami_resolution.py
"""

from __future__ import annotations

import numpy as np
import torch
from astropy.io import fits
from skyledger.compute.fitting import (
    FitConfig,
    SpectraBatch,
    SpectrumFlag,
    fit_spectra,
)
from skyledger.schema.linelist import air_to_vacuum

PATH = "/work/shared/data/cubes/sami/209807_A_sectors_red.fits.gz"
FWHM_RED = 1.6  # A, SAMI 1000R (Croom et al. 2021: R ~ 4300 at 6800 A)
FWHM_TPL = 2.51


def read_bins() -> SpectraBatch:
    with fits.open(PATH) as h:
        hdr = h[0].header
        cube, var, bins = h[0].data, h["VARIANCE"].data, h["BIN_MASK"].data
        z = float(hdr["Z_SPEC"])
    wave_air = hdr["CRVAL3"] + (np.arange(cube.shape[0]) + 1.0 - hdr["CRPIX3"]) * hdr["CDELT3"]
    wave = np.asarray(air_to_vacuum(wave_air))
    ids = [b for b in np.unique(bins) if b > 0]
    flux, ivar = [], []
    for b in ids:
        y, x = np.argwhere(bins == b)[0]
        f, v = cube[:, y, x], var[:, y, x]
        good = np.isfinite(f) & np.isfinite(v) & (v > 0)
        flux.append(np.where(good, f, 0.0))
        ivar.append(np.where(good, 1.0 / np.where(good, v, 1.0), 0.0))
    n = len(ids)
    return SpectraBatch(
        wave=np.broadcast_to(wave, (n, wave.size)).copy(), flux=np.array(flux), ivar=np.array(ivar),
        redshift=np.full(n, z), resolution=np.broadcast_to(wave / FWHM_RED, (n, wave.size)).copy(),
    )  # fmt: skip


def degrade(batch: SpectraBatch) -> SpectraBatch:
    """Convolve to FWHM_TPL (Gaussian, constant in A on SAMI's linear grid)."""
    wave = np.asarray(batch.wave)[0]
    step = wave[1] - wave[0]
    sig = np.sqrt(FWHM_TPL**2 - FWHM_RED**2) / 2.3548 / step  # pixels
    off = np.arange(-int(5 * sig) - 1, int(5 * sig) + 2)
    k = np.exp(-0.5 * (off / sig) ** 2)
    k /= k.sum()
    flux, ivar = np.asarray(batch.flux), np.asarray(batch.ivar)
    good = ivar > 0
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    f2 = np.array([np.convolve(f, k, mode="same") for f in flux])
    v2 = np.array([np.convolve(v, k * k, mode="same") for v in var])
    # A pixel is good only if its whole kernel was.
    bad2 = np.array([np.convolve((~g).astype(float), np.ones_like(k), mode="same") > 0 for g in good])
    ivar2 = np.where(~bad2 & (v2 > 0), 1.0 / np.where(v2 > 0, v2, 1.0), 0.0)
    res = np.broadcast_to(wave / FWHM_TPL, flux.shape).copy()
    return SpectraBatch(wave=batch.wave, flux=f2, ivar=ivar2, redshift=batch.redshift, resolution=res)


def main() -> None:
    torch.set_num_threads(1)
    native = read_bins()
    runs = {
        "native": fit_spectra(native, None, FitConfig()),
        "degraded": fit_spectra(degrade(native), None, FitConfig()),
        "v2": fit_spectra(native, None, FitConfig(templates="mileshc", degree=8, gas_degree=8, mdegree=0)),
    }
    ref = runs["native"]
    ia, inii = ref.line_index("HA6563"), ref.line_index("NII6584")
    sel = ref.line_snr[:, ia] > 10
    print(f"{sel.sum()} of {len(sel)} bins with H-alpha S/N > 10")
    print("| fit | TEMPLATE_RES_WORSE | F(Ha)/native | sigma(Ha)/native | F(NII)/native | sigma*/native (median, rms) |")
    print("|---|---|---|---|---|---|")
    for name, res in runs.items():
        worse = int(((res.flags & SpectrumFlag.TEMPLATE_RES_WORSE) != 0).sum())

        def q(a: np.ndarray, b: np.ndarray) -> str:
            r = (a / b)[sel]
            r = r[np.isfinite(r)]
            return f"{np.median(r):.3f} ({np.std(r):.3f})"

        print(f"| {name} | {worse}/{len(sel)} | {q(res.line_flux[:, ia], ref.line_flux[:, ia])} | "
              f"{q(res.line_sigma[:, ia], ref.line_sigma[:, ia])} | {q(res.line_flux[:, inii], ref.line_flux[:, inii])} | "
              f"{q(res.sigma, ref.sigma)} |")  # fmt: skip
    print(f"native medians: sigma* {np.nanmedian(ref.sigma[sel]):.1f} km/s, sigma(Ha) {np.nanmedian(ref.line_sigma[sel, ia]):.1f} km/s")


if __name__ == "__main__":
    main()
