"""SDSS / BOSS ``spec-PLATE-MJD-FIBER.fits`` files, full and lite.

Layout read: HDU ``COADD`` (columns flux, loglam, ivar, and_mask, wdisp, ...) and one
metadata row in ``SPECOBJ`` (SDSS-I/II/III) or ``SPALL`` (BOSS/SDSS-V).  Full files add
one HDU per exposure; lite files lack them and read identically.

Conventions:

* object id ``PPPP-MMMMM-FFFF`` (plate-mjd-fiberid, zero padded as in the file name);
  it is readable, stable across data releases (SPECOBJID encodes the reduction version
  RUN2D, so the same spectrum changes SPECOBJID between releases) and exists in every
  SDSS generation.  ``options['id_format'] = 'specobjid'`` uses SPECOBJID instead; both
  are always kept in ``meta``.  The source id equals the spectrum id.
* wavelength: ``10**loglam``, vacuum (header ``VACUUM = T``; air is converted if F);
  loglam is stored as float32, so when the primary header's COEFF0/COEFF1 describe the
  same grid the exact float64 grid is rebuilt from them.
* resolution: ``wdisp`` is the Gaussian LSF sigma in pixels of COEFF1 (1e-4) dex, so
  R = 1 / (2.3548 * wdisp * COEFF1 * ln 10).
* position: PLUG_RA/PLUG_DEC of the metadata row (FIBER_RA/DEC or RACAT/DECCAT for
  SDSS-V), redshift Z.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from skyledger.ingest.readers.base import (
    air_to_vacuum,
    check_options,
    check_position,
    finalize_spectrum,
    normalise_flux_unit,
)
from skyledger.ingest.readers.fits_access import fits_summary, header_float, open_tables, require_hdu
from skyledger.ingest.readers.fits_tables import cell_value, find_column, read_table
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["SdssReader", "reader", "SDSS_FLUX_UNIT"]

SDSS_FLUX_UNIT = "1e-17 erg / (Angstrom s cm2)"
_OPTIONS = ("id_format", "flux_unit")
_LN10 = float(np.log(10.0))
_FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))
# Metadata columns copied into meta when present (upper-case names).
_META_COLUMNS = (
    "CLASS",
    "SUBCLASS",
    "Z_ERR",
    "ZWARNING",
    "SN_MEDIAN_ALL",
    "BESTOBJID",
    "SURVEY",
    "PROGRAMNAME",
    "RUN2D",
)


class SdssReader:
    """Reader of SDSS/BOSS single-spectrum files."""

    name = "sdss"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        summary = fits_summary(path, max_hdus=2)
        if summary is None:
            return False
        coadd = summary.get("COADD")
        if coadd is None or summary.get("SPECOBJ") is None and summary.get("SPALL") is None:
            return False
        return {"FLUX", "LOGLAM", "IVAR"} <= summary.columns(coadd)

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        id_format = str(opts.get("id_format", "plate-mjd-fiber")).lower()
        if id_format not in ("plate-mjd-fiber", "specobjid"):
            raise ReaderError(path, f"option id_format must be 'plate-mjd-fiber' or 'specobjid', got {id_format!r}")
        with open_tables(path) as hdul:
            primary = hdul[0].header
            coadd_hdu = require_hdu(path, hdul, "COADD")
            meta_hdu = require_hdu(path, hdul, "SPECOBJ", "SPALL")
            coadd = read_table(path, coadd_hdu)
            meta_tab = read_table(path, meta_hdu)
            if coadd is None or len(coadd) < 2:
                raise ReaderError(path, "COADD table has fewer than 2 rows", hdu="COADD")
            if meta_tab is None or len(meta_tab) != 1:
                raise ReaderError(
                    path,
                    f"expected exactly one metadata row, found {0 if meta_tab is None else len(meta_tab)}",
                    hdu=meta_hdu.name,
                )
            cols = coadd.names
            col = {}
            for key in ("flux", "loglam", "ivar"):
                found = find_column(cols, key)
                if found is None:
                    raise ReaderError(
                        path, f"required column missing; columns present: {list(cols)}", hdu="COADD", column=key
                    )
                col[key] = found
            mask_col = find_column(cols, "and_mask", "mask")
            wdisp_col = find_column(cols, "wdisp")

            loglam = np.asarray(coadd.column(col["loglam"]), dtype=np.float64)
            wave = self._wavelength(primary, loglam)
            if primary.get("VACUUM", True) is False:
                wave = air_to_vacuum(wave)
            resolution = None
            if wdisp_col is not None:
                dloglam = header_float(primary, "COEFF1") or 1.0e-4
                wdisp = np.asarray(coadd.column(wdisp_col), dtype=np.float64)
                with np.errstate(divide="ignore", invalid="ignore"):
                    resolution = 1.0 / (_FWHM_PER_SIGMA * wdisp * dloglam * _LN10)

            names = meta_tab.names
            row = meta_tab.row(0)
            plate = self._int(path, row, names, meta_hdu.name, "PLATE", "FIELD")
            mjd = self._int(path, row, names, meta_hdu.name, "MJD")
            fiber = self._int(path, row, names, meta_hdu.name, "FIBERID")
            specobjid_col = find_column(names, "SPECOBJID")
            specobjid = str(cell_value(row[specobjid_col])).strip() if specobjid_col else None
            pmf = f"{plate:04d}-{mjd:05d}-{fiber:04d}"
            if id_format == "specobjid":
                if not specobjid or specobjid == "0":
                    raise ReaderError(
                        path,
                        "id_format='specobjid' but the file has no SPECOBJID",
                        hdu=meta_hdu.name,
                        column="SPECOBJID",
                    )
                object_id = specobjid
            else:
                object_id = pmf

            ra_col = find_column(names, "PLUG_RA", "FIBER_RA", "RACAT")
            dec_col = find_column(names, "PLUG_DEC", "FIBER_DEC", "DECCAT")
            ra_val = float(row[ra_col]) if ra_col else header_float(primary, "PLUG_RA")
            dec_val = float(row[dec_col]) if dec_col else header_float(primary, "PLUG_DEC")
            ra, dec = check_position(path, ra_val, dec_val, what=object_id, hdu=meta_hdu.name, column=ra_col)
            z_col = find_column(names, "Z")
            z = float(row[z_col]) if z_col is not None and np.isfinite(row[z_col]) else None

            meta: dict[str, Any] = {"plate": plate, "mjd": mjd, "fiberid": fiber, "plate_mjd_fiber": pmf}
            if specobjid:
                meta["specobjid"] = specobjid
            for name in _META_COLUMNS:
                found = find_column(names, name)
                if found is not None:
                    meta[name.lower()] = cell_value(row[found])
            n_exposure_hdus = (
                len(hdul)
                - 1
                - sum(
                    1 for h in hdul[1:] if h.name in ("COADD", "SPECOBJ", "SPALL", "SPZLINE", "SPZALL", "ZALL", "ZLINE")
                )
            )
            meta["lite"] = n_exposure_hdus == 0
            meta["n_exposure_hdus"] = n_exposure_hdus

            flux_unit = opts.get("flux_unit") or normalise_flux_unit(primary.get("BUNIT")) or SDSS_FLUX_UNIT
            spectrum = SpectrumRow(
                object_id=object_id,
                source_object_id=object_id,
                ra=ra,
                dec=dec,
                z=z,
                wave=wave,
                flux=np.array(coadd.column(col["flux"]), dtype=np.float32),
                ivar=np.array(coadd.column(col["ivar"]), dtype=np.float32),
                mask=None if mask_col is None else np.array(coadd.column(mask_col), dtype=np.int32),
                resolution=resolution,
                flux_unit=flux_unit,
                meta=dict(meta),
            )
            finalize_spectrum(path, spectrum, hdu="COADD")
        source = SourceRow(object_id=object_id, ra=ra, dec=dec, z=z, meta=meta)
        return FileContents(reader=self.name, sources=[source], spectra=iter([spectrum]), meta={"id_format": id_format})

    @staticmethod
    def _wavelength(primary: Mapping[str, Any], loglam: np.ndarray) -> np.ndarray:
        # loglam is float32 in the files (~1e-7 dex, 0.1 km/s, of rounding); rebuild the
        # exact float64 grid when the header's log-linear solution matches it.
        c0 = header_float(primary, "COEFF0")
        c1 = header_float(primary, "COEFF1")
        if c0 is not None and c1 is not None and c1 > 0 and np.all(np.isfinite(loglam)):
            index = np.rint((loglam - c0) / c1)
            exact = c0 + c1 * index
            if np.max(np.abs(exact - loglam)) < 1.0e-5:
                return 10.0**exact
        return 10.0**loglam

    @staticmethod
    def _int(path: object, row: Any, names: tuple[str, ...], hdu: str, *candidates: str) -> int:
        found = find_column(names, *candidates)
        if found is None:
            raise ReaderError(path, "required column missing", hdu=hdu, column="/".join(candidates))
        try:
            return int(row[found])
        except (TypeError, ValueError) as err:
            raise ReaderError(path, f"not an integer: {row[found]!r}", hdu=hdu, column=found) from err


#: the registered instance
reader = SdssReader()
