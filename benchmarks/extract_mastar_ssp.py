"""Regenerate ``testing/data/mastar_ssp_subset.fits`` from the MaStar SSP models in sdss-mangadap.

The template-mismatch spectra (``skyledger.testing.mismatch_spectra``) are built from a
stellar library that the fit never uses: MaStar SSPs (Maraston et al. 2020, MNRAS 496,
2962), empirical MaNGA stellar spectra at SDSS-like resolution. Runs once, by hand:

    pip download sdss-mangadap==4.5.0 --no-deps -d /tmp/mangadap
    cd /tmp/mangadap && unzip -q sdss_mangadap-4.5.0-py3-none-any.whl 'mangadap/data/spectral_templates/mastar_ssp_v1.0/*'
    python benchmarks/extract_mastar_ssp.py /tmp/mangadap/mangadap/data/spectral_templates/mastar_ssp_v1.0

Kept: all 9 ages (3 Myr - 14 Gyr), log Z/Z_sun = -0.33, 0, +0.35 (Salpeter IMF, as
shipped), rest vacuum 3620-7600 A on the models' own log10 grid (1e-4 dex), float32.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from astropy.io import fits

OUT = Path(__file__).resolve().parents[1] / "testing" / "data" / "mastar_ssp_subset.fits"
METALLICITIES = ("-0.33", "+0.00", "+0.35")
WAVE_MAX = 7600.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="mangadap/data/spectral_templates/mastar_ssp_v1.0")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows, ages, logz, sres, hdr0 = [], [], [], None, None
    for path in sorted(args.folder.glob("MaStar-SSP-A*-Z*.fits.gz")):
        m = re.match(r"MaStar-SSP-A(\d+\.\d+)-Z([+-]\d\.\d+)\.fits\.gz", path.name)
        if not m or m.group(2) not in METALLICITIES:
            continue
        with fits.open(path) as h:
            hdr = h[0].header
            if hdr0 is not None and (hdr["CRVAL1"], hdr["CDELT1"], hdr["NAXIS1"]) != (hdr0["CRVAL1"], hdr0["CDELT1"], hdr0["NAXIS1"]):
                raise SystemExit(f"{path.name}: wavelength grid differs from the other models")
            hdr0 = hdr
            rows.append(np.asarray(h[0].data, float))
            sres = np.asarray(h["SRES"].data, float)
        ages.append(float(m.group(1)))
        logz.append(float(m.group(2)))
    if not rows:
        raise SystemExit(f"no MaStar-SSP-A*-Z*.fits.gz in {args.folder}")
    wave = 10 ** (hdr0["CRVAL1"] + np.arange(hdr0["NAXIS1"]) * hdr0["CDELT1"])
    n = int(np.searchsorted(wave, WAVE_MAX))
    order = np.lexsort((ages, logz))
    flux = np.stack(rows)[order, :n]
    flux = (flux / np.median(flux, axis=1, keepdims=True)).astype(np.float32)
    prim = fits.PrimaryHDU(flux)
    prim.header["CTYPE1"] = ("WAVE-LOG", "log10 vacuum wavelength, Angstrom")
    prim.header["CRPIX1"] = 1
    prim.header["CRVAL1"] = hdr0["CRVAL1"]
    prim.header["CDELT1"] = hdr0["CDELT1"]
    prim.header["BUNIT"] = ("", "each model divided by its median")
    prim.header["ORIGIN"] = "MaStar SSP v1.0 (Maraston et al. 2020) via sdss-mangadap 4.5.0, BSD-3-Clause"
    table = fits.BinTableHDU.from_columns(
        [fits.Column("AGE_GYR", "E", array=np.asarray(ages)[order]), fits.Column("LOGZ", "E", array=np.asarray(logz)[order])],
        name="MODELS",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([prim, fits.ImageHDU(sres[:n].astype(np.float32), name="SRES"), table]).writeto(args.out, overwrite=True)
    print(f"wrote {args.out}: {flux.shape[0]} models x {n} pixels, {wave[0]:.1f}-{wave[n - 1]:.1f} A")


if __name__ == "__main__":
    main()
