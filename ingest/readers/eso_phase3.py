"""ESO Phase-3 1-D spectra (``PRODCATG = SCIENCE.SPECTRUM``): one binary-table row of arrays.

Columns WAVE, FLUX, ERR, QUAL (or FLUX_REDUCED / ERR_REDUCED, as some ESO products
name them); units from TUNITn.  ERR -> ivar = 1/ERR^2, with ivar = 0 where ERR = 0 or
non-finite; a negative ERR rejects the file; QUAL is kept as the mask (0 = good).

Air or vacuum: the ESO Science Data Products standard marks air wavelengths by the UCD
of the spectral column, ``TUCDn = 'em.wl;obs.atmos'``, and vacuum by plain ``em.wl``.
That rule decides, with an explicit header ``AIRORVAC``/``WAVESYS`` card or the
``medium`` option taking precedence.  LEGA-C DR3 (VIMOS) declares
``TUCD1 = 'em.wl;obs.atmos' / Air wavelength``: its wavelengths are air and are
converted to vacuum on reading.

The spectrum is taken in whatever frame SPECSYS says (LEGA-C: TOPOCENT); no velocity
correction is applied because a combined multi-night spectrum has no single epoch.
SPECSYS is kept in ``meta`` for the fitting tasks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy import units as u
from skyledger.ingest.readers.base import (
    air_to_vacuum,
    check_medium,
    check_options,
    check_position,
    check_unique_ids,
    file_stem,
    finalize_spectrum,
    normalise_flux_unit,
)
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, header_float, open_fits
from skyledger.ingest.readers.fits_tables import find_column
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["EsoPhase3Reader", "reader", "wavelength_medium"]

_OPTIONS = ("object_id", "medium", "z", "ra", "dec", "flux_unit", "resolution")
_FLUX_COLUMNS = ("FLUX", "FLUX_REDUCED")
_ERR_COLUMNS = ("ERR", "ERR_REDUCED", "ERROR")


def _find_spectrum_hdu(hdul: Any) -> Any | None:
    for hdu in hdul[1:]:
        if hdu.header.get("XTENSION", "").strip() != "BINTABLE":
            continue
        names = [str(n).upper() for n in (hdu.columns.names or [])]
        if "WAVE" in names and any(c in names for c in _FLUX_COLUMNS):
            return hdu
    return None


def wavelength_medium(primary: Mapping[str, Any], table_header: Mapping[str, Any], wave_index: int) -> str:
    """'air' or 'vacuum' for an ESO Phase-3 spectral column, from its header (see module doc)."""
    for header in (table_header, primary):
        for key in ("AIRORVAC", "WAVESYS"):
            value = str(header.get(key, "")).strip().lower()
            if value.startswith("air"):
                return "air"
            if value.startswith("vac"):
                return "vacuum"
    ucd = str(table_header.get(f"TUCD{wave_index}", "")).lower()
    return "air" if "obs.atmos" in ucd else "vacuum"


def _to_angstrom(path: object, wave: np.ndarray, unit_text: str, hdu: str, column: str) -> np.ndarray:
    if not unit_text.strip():
        return wave  # the ESO standard's default spectral unit for optical data
    try:
        unit = u.Unit(unit_text.strip(), parse_strict="raise")
        return (wave * unit).to_value(u.AA)
    except (ValueError, u.UnitConversionError) as err:
        raise ReaderError(
            path, f"wavelength unit {unit_text!r} is not a length: {err}", hdu=hdu, column=column
        ) from err


class EsoPhase3Reader:
    """Reader of ESO Phase-3 1-D spectrum files."""

    name = "eso_phase3"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        summary = fits_summary(path, max_hdus=2)
        if summary is None or not summary.extensions:
            return False
        _, table = summary.extensions[0]
        if str(table.get("XTENSION", "")).strip() != "BINTABLE":
            return False
        declared = str(summary.primary.get("PRODCATG", "")).upper().startswith("SCIENCE.SPECTRUM") or str(
            table.get("VOCLASS", "")
        ).upper().startswith("SPECTRUM")
        cols = summary.columns(table)
        return declared and "WAVE" in cols and bool(cols & set(_FLUX_COLUMNS))

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        with open_fits(path) as hdul:
            primary = hdul[0].header
            hdu = _find_spectrum_hdu(hdul)
            if hdu is None:
                raise ReaderError(
                    path,
                    f"no binary table with WAVE and FLUX columns; HDUs: {[h.name for h in hdul]}",
                    hdu="PHASE3SPECTRA",
                )
            hname = hdu.name
            table = hdu_data(path, hdu)
            header = hdu.header
            names = list(hdu.columns.names)
            wave_col = find_column(names, "WAVE")
            flux_col = find_column(names, *_FLUX_COLUMNS)
            err_col = find_column(names, *_ERR_COLUMNS)
            qual_col = find_column(names, "QUAL", "QUALITY")
            if err_col is None:
                raise ReaderError(path, f"required column missing; columns present: {names}", hdu=hname, column="ERR")
            if table is None or len(table) == 0:
                raise ReaderError(path, "spectrum table has no rows", hdu=hname)
            wave_index = names.index(wave_col) + 1
            medium = check_medium(path, opts.get("medium") or wavelength_medium(primary, header, wave_index))

            flux_unit_raw = str(header.get(f"TUNIT{names.index(flux_col) + 1}", "") or "")
            err_unit_raw = str(header.get(f"TUNIT{names.index(err_col) + 1}", "") or "")
            flux_unit = opts.get("flux_unit") or normalise_flux_unit(flux_unit_raw)
            err_scale = 1.0
            err_unit = normalise_flux_unit(err_unit_raw)
            if flux_unit and err_unit and err_unit != flux_unit:
                try:
                    err_scale = u.Unit(err_unit).to(u.Unit(flux_unit))
                except u.UnitConversionError as err:
                    raise ReaderError(
                        path,
                        f"ERR unit {err_unit_raw!r} does not convert to FLUX unit {flux_unit_raw!r}",
                        hdu=hname,
                        column=err_col,
                    ) from err

            base_id = str(
                opts.get("object_id") or header.get("OBJECT") or primary.get("OBJECT") or file_stem(path)
            ).strip()
            ra_val = opts.get("ra", header_float(header, "RA") if "RA" in header else header_float(primary, "RA"))
            dec_val = opts.get("dec", header_float(header, "DEC") if "DEC" in header else header_float(primary, "DEC"))
            ra, dec = check_position(path, ra_val, dec_val, what=base_id, hdu=hname)
            z = opts.get("z", header_float(primary, "REDSHIFT", "Z"))
            spec_res = opts.get("resolution", header_float(header, "SPEC_RES") or header_float(primary, "SPEC_RES"))
            meta_common = {
                "specsys": str(primary.get("SPECSYS", header.get("SPECSYS", ""))).strip() or None,
                "wavelength_medium_in_file": medium,
                "instrument": str(primary.get("INSTRUME", "")).strip() or None,
                "snr": header_float(primary, "SNR"),
                "spec_res": spec_res,
                "flux_unit_in_file": flux_unit_raw or None,
            }

            spectra: list[SpectrumRow] = []
            n_rows = len(table)
            for i in range(n_rows):
                object_id = base_id if n_rows == 1 else f"{base_id}#{i}"
                wave = np.asarray(table[wave_col][i], dtype=np.float64).ravel()
                wave = _to_angstrom(path, wave, str(header.get(f"TUNIT{wave_index}", "")), hname, wave_col)
                if medium == "air":
                    wave = air_to_vacuum(wave)
                flux = np.asarray(table[flux_col][i], dtype=np.float64).ravel()
                err = np.asarray(table[err_col][i], dtype=np.float64).ravel() * err_scale
                if err.shape != flux.shape:
                    raise ReaderError(
                        path, f"ERR has {err.size} pixels, FLUX has {flux.size}", hdu=hname, column=err_col
                    )
                negative = int(np.count_nonzero(err < 0))
                if negative:
                    # Not read as "no data" (ivar = 0) silently: an error is never negative,
                    # so the column is damaged or not an error at all.
                    raise ReaderError(
                        path, f"ERR has {negative} negative values in spectrum {object_id!r}; an error cannot be "
                        "negative", hdu=hname, column=err_col,
                    )  # fmt: skip
                good = np.isfinite(err) & (err > 0)
                ivar = np.zeros_like(err)
                ivar[good] = 1.0 / err[good] ** 2
                qual = None if qual_col is None else np.asarray(table[qual_col][i]).ravel().astype(np.int32)
                resolution = None if spec_res is None else np.full(wave.shape, float(spec_res), dtype=np.float32)
                row = SpectrumRow(
                    object_id=object_id,
                    source_object_id=object_id,
                    ra=ra,
                    dec=dec,
                    z=z,
                    wave=wave,
                    flux=flux.astype(np.float32),
                    ivar=ivar.astype(np.float32),
                    mask=qual,
                    resolution=resolution,
                    flux_unit=flux_unit,
                    meta=dict(meta_common),
                )
                spectra.append(finalize_spectrum(path, row, hdu=hname))
        check_unique_ids(path, (s.object_id for s in spectra), hdu=hname)
        sources = [SourceRow(object_id=s.object_id, ra=ra, dec=dec, z=z) for s in spectra]
        return FileContents(reader=self.name, sources=sources, spectra=iter(spectra), meta=meta_common)


#: the registered instance
reader = EsoPhase3Reader()
