"""Synthetic DESI coadd files of a realistic size, made from a real coadd's usable fibre.

:func:`write_desi_coadd` tiles one usable fibre of a real coadd (the DESI EDR sample of
``tests/data/desi``) to a petal's 500 fibres: each copy keeps the fibre's ivar, mask and
resolution matrix and gets fresh Gaussian noise of that ivar on its flux, its own
TARGETID and a position offset; ``n_dead`` fibres are unassigned (negative TARGETID,
COADD_FIBERSTATUS 1, zero data) as on a real petal. Same seed, same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

__all__ = ["write_desi_coadd"]


def write_desi_coadd(
    path: Path, template: Path, *, n_fibres: int = 500, n_dead: int = 10, seed: int = 0,
    first_targetid: int = 39_633_300_000_000_000, fibre: int | None = None,
) -> Path:  # fmt: skip
    """Write a coadd of ``n_fibres`` fibres (``n_dead`` of them dead) at ``path``."""
    rng = np.random.default_rng(seed)
    with fits.open(template, memmap=False) as h:
        fm = Table(h["FIBERMAP"].data)
        if fibre is None:
            fibre = int(np.flatnonzero((fm["TARGETID"] > 0) & (fm["COADD_FIBERSTATUS"] == 0))[0])
        dead = np.zeros(n_fibres, dtype=bool)
        dead[rng.choice(n_fibres, size=min(n_dead, n_fibres), replace=False)] = True
        table = fm[[fibre] * n_fibres]
        table["TARGETID"] = np.where(dead, -(np.arange(n_fibres) + 1), first_targetid + np.arange(n_fibres))
        table["FIBER"] = 2500 + np.arange(n_fibres)
        table["COADD_FIBERSTATUS"] = np.where(dead, 1, 0)
        table["COADD_EXPTIME"] = np.where(dead, 0.0, table["COADD_EXPTIME"])
        table["TARGET_RA"] = table["TARGET_RA"] + rng.uniform(-0.8, 0.8, n_fibres)
        table["TARGET_DEC"] = table["TARGET_DEC"] + rng.uniform(-0.8, 0.8, n_fibres)
        hdus: list = [h[0].copy(), fits.table_to_hdu(table), h["EXP_FIBERMAP"].copy()]
        hdus[1].name = "FIBERMAP"
        live = (~dead)[:, None]
        for arm in ("B", "R", "Z"):
            flux1, ivar1 = h[f"{arm}_FLUX"].data[fibre], h[f"{arm}_IVAR"].data[fibre]
            sigma = np.where(ivar1 > 0, 1.0 / np.sqrt(np.where(ivar1 > 0, ivar1, 1.0)), 0.0).astype(np.float32)
            noise = rng.standard_normal((n_fibres, flux1.size), dtype=np.float32) * sigma
            flux = np.where(live, flux1 + noise, 0.0).astype(np.float32)
            ivar = np.where(live, ivar1, 0.0).astype(np.float32)
            mask = np.where(live, h[f"{arm}_MASK"].data[fibre], 0).astype(np.uint32)
            res = np.where(live[:, :, None], h[f"{arm}_RESOLUTION"].data[fibre][None], 0.0).astype(np.float32)
            hdus.append(h[f"{arm}_WAVELENGTH"].copy())
            for part, data in (("FLUX", flux), ("IVAR", ivar), ("MASK", mask), ("RESOLUTION", res)):
                hdus.append(fits.ImageHDU(data, header=h[f"{arm}_{part}"].header.copy(), name=f"{arm}_{part}",
                                          uint=part == "MASK"))  # fmt: skip
        scores = Table(h["SCORES"].data)[[fibre] * n_fibres]
        scores["TARGETID"] = table["TARGETID"]
        hdus.append(fits.table_to_hdu(scores))
        hdus[-1].name = "SCORES"
        fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
