"""JWST NIRSpec extracted 1-D spectra (``x1d`` products of the jwst pipeline).

Layout read (jwst datamodels ``MultiSpecModel`` / ``SpecModel``): a PRIMARY header with
``TELESCOP = 'JWST'``, ``INSTRUME = 'NIRSPEC'``, ``GRATING``, ``FILTER``, ``TARG_RA`` /
``TARG_DEC``; then one or more ``EXTRACT1D`` binary tables. Two table layouts exist:

* one spectrum per ``EXTRACT1D`` HDU, one table row per pixel (pipeline < 1.18): the
  source from the HDU header, ``SOURCEID``, ``SLTNAME``, ``SRCNAME``, ``SRCTYPE``,
  ``SRCRA``/``SRCDEC``;
* one row per spectrum with array cells, padded with NaN to a common length (newer
  pipelines, multi-source MOS/WFSS): the source from the columns ``SOURCE_ID``,
  ``SLIT_NAME`` (if present), ``SOURCE_TYPE``, ``SOURCE_RA``/``SOURCE_DEC``.

Columns used: ``WAVELENGTH`` (micron, vacuum: a space telescope; converted to Angstrom),
``FLUX`` and ``FLUX_ERROR`` (Jy), ``DQ``. ``SURF_BRIGHT``, ``BACKGROUND``, ``NPIXELS`` ...
are not read. FLUX is used for point and extended sources alike (the pipeline fills it
for both; SRCTYPE is kept in ``meta``).

Flux conversion: f_nu in Jy becomes f_lambda,
``f_lambda = f_nu * 1e-23 * c / lambda^2`` with c = 2.99792458e18 Angstrom/s and lambda
in Angstrom, in units of 1e-20 erg/s/cm2/Angstrom (a 1 uJy source at 2 um is 7.5e-20
erg/s/cm2/A; the scale keeps ivar inside float32). FLUX_ERROR converts by the same
factor. The DQ column is kept as the mask; DQ bit 0 (DO_NOT_USE), a non-finite flux or
a non-positive/non-finite error give ivar 0. A spectrum whose pixels are all unusable is
a ReaderError; the NaN padding at the end of a row is dropped.

Ids: ``<SOURCEID>`` (or ``SOURCE_ID``) when present, else ``SLTNAME``/``SLIT_NAME``, else the
file name with ``#<n>``; a slit name is appended when two spectra share a source id
(``<source>#<slit>``). Position: options ``ra``/``dec``, else SRCRA/SRCDEC (SOURCE_RA/
SOURCE_DEC), else TARG_RA/TARG_DEC. Redshift: option ``z`` (x1d files carry none).

Resolution: option ``resolution`` (R), else the nominal resolving power of the
disperser from the JWST User Documentation (JDox, "NIRSpec Dispersers and Filters"):
R ~ 1000 for G140M/G235M/G395M, R ~ 2700 for G140H/G235H/G395H. The PRISM's R runs from
~30 to ~300 across its range; no single value describes it, so a PRISM spectrum gets no
resolution (flag NO_RESOLUTION) unless the option gives one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy import units as u

from skyledger.ingest.readers.base import check_options, check_position, check_unique_ids, file_stem, finalize_spectrum
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, header_float, open_fits
from skyledger.ingest.readers.fits_tables import find_column
from skyledger.ingest.readers.oned_common import resolution_option
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["NirspecX1DReader", "reader", "NOMINAL_R", "FLUX_UNIT", "jy_to_flambda"]

_OPTIONS = ("object_id", "ra", "dec", "z", "resolution")
_EXTNAME = "EXTRACT1D"
#: nominal resolving power per grating (JDox, NIRSpec Dispersers and Filters); PRISM: none
NOMINAL_R = {"G140M": 1000.0, "G235M": 1000.0, "G395M": 1000.0, "G140H": 2700.0, "G235H": 2700.0, "G395H": 2700.0}
#: the unit of the converted flux
FLUX_UNIT = (u.Unit("1e-20") * u.erg / u.s / u.cm**2 / u.AA).to_string()
_C_ANGSTROM_PER_S = 2.99792458e18
_DO_NOT_USE = 1


def jy_to_flambda(wave_angstrom: np.ndarray) -> np.ndarray:
    """Factor turning f_nu in Jy into f_lambda in 1e-20 erg/s/cm2/Angstrom at each wavelength."""
    w = np.asarray(wave_angstrom, dtype=np.float64)
    return 1e-23 * _C_ANGSTROM_PER_S / w**2 / 1e-20


def _finite(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip()


class NirspecX1DReader:
    """Reader of JWST NIRSpec x1d files (see the module doc)."""

    name = "nirspec_x1d"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        summary = fits_summary(path, max_hdus=3)
        if summary is None:
            return False
        p = summary.primary
        if _text(p.get("TELESCOP")).upper() != "JWST" or _text(p.get("INSTRUME")).upper() != "NIRSPEC":
            return False
        return _EXTNAME in summary.names()

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        spectra: list[SpectrumRow] = []
        with open_fits(path) as hdul:
            primary = hdul[0].header
            grating = _text(primary.get("GRATING")).upper()
            tables = [h for h in hdul if h.name == _EXTNAME]
            if not tables:
                raise ReaderError(
                    path, f"required HDU missing; HDUs present: {[h.name for h in hdul]}", hdu=_EXTNAME
                )
            if opts.get("resolution") is not None:
                resolution_option(path, opts, 1)  # a positive number, or ReaderError
            resolution = opts.get("resolution", NOMINAL_R.get(grating))
            common = {
                "instrument": "NIRSPEC", "grating": grating or None, "filter": _text(primary.get("FILTER")) or None,
                "wavelength_medium_in_file": "vacuum", "flux_unit_in_file": "Jy",
                "resolution_from": "options" if "resolution" in opts else ("nominal" if resolution else None),
            }  # fmt: skip
            base = str(opts.get("object_id") or "").strip()
            for number, hdu in enumerate(tables, start=1):
                hname = f"{_EXTNAME}[{number}]"
                if hdu.header.get("XTENSION", "").strip() != "BINTABLE":
                    raise ReaderError(path, "EXTRACT1D is not a binary table", hdu=hname)
                data = hdu_data(path, hdu)
                names = list(hdu.columns.names)
                cols = {}
                for role in ("WAVELENGTH", "FLUX", "FLUX_ERROR"):
                    col = find_column(names, role, *(("ERROR",) if role == "FLUX_ERROR" else ()))
                    if col is None:
                        raise ReaderError(path, f"required column missing; columns present: {names}", hdu=hname,
                                          column=role)  # fmt: skip
                    cols[role] = col
                dq_col = find_column(names, "DQ")
                if data is None or len(data) == 0:
                    raise ReaderError(path, "the table has no rows", hdu=hname)
                per_row = np.ndim(data[cols["WAVELENGTH"]][0]) > 0
                rows = range(len(data)) if per_row else [None]
                for r in rows:
                    pick = (lambda c: data[c][r]) if per_row else (lambda c: data[c])
                    ident = self._identity(path, primary, hdu.header, data, names, r, opts, hname)
                    spectra.append(
                        self._spectrum(path, pick, cols, dq_col, ident, resolution, opts, common, hname)
                    )
        # ids: the source id; add the slit when ids repeat; fall back to the file name
        ids = [s.object_id for s in spectra]
        for s in spectra:
            if not s.object_id:
                s.object_id = f"{base or file_stem(path)}#{spectra.index(s) + 1}"
            elif ids.count(s.object_id) > 1 and s.meta.get("slit"):
                s.object_id = f"{s.object_id}#{s.meta['slit']}"
            if base and len(spectra) == 1:
                s.object_id = base
            s.source_object_id = s.object_id
        check_unique_ids(path, (s.object_id for s in spectra), hdu=_EXTNAME)
        sources = [SourceRow(object_id=s.object_id, ra=s.ra, dec=s.dec, z=s.z) for s in spectra]
        return FileContents(reader=self.name, sources=sources, spectra=iter(spectra), meta=common)

    @staticmethod
    def _identity(path, primary, header, data, names, r, opts, hname) -> dict[str, Any]:
        def value(col: str, card: str) -> Any:
            if r is not None and find_column(names, col) is not None:
                return data[find_column(names, col)][r]
            return header.get(card)

        source = _text(value("SOURCE_ID", "SOURCEID"))
        slit = _text(value("SLIT_NAME", "SLTNAME"))
        what = source or slit or hname
        if "ra" in opts or "dec" in opts:
            ra, dec = check_position(path, opts.get("ra"), opts.get("dec"), what=what)
        else:
            ra_v, dec_v = value("SOURCE_RA", "SRCRA"), value("SOURCE_DEC", "SRCDEC")
            ra_f, dec_f = _finite(ra_v), _finite(dec_v)
            if ra_f is None or dec_f is None:
                ra_f, dec_f = header_float(primary, "TARG_RA"), header_float(primary, "TARG_DEC")
            ra, dec = check_position(path, ra_f, dec_f, what=what, hdu=hname)
        return {
            "object_id": source or slit, "slit": slit or None, "ra": ra, "dec": dec,
            "srctype": _text(value("SOURCE_TYPE", "SRCTYPE")) or None,
            "source_name": _text(value("SOURCE_NAME", "SRCNAME")) or None,
        }  # fmt: skip

    @staticmethod
    def _spectrum(path, pick, cols, dq_col, ident, resolution, opts, common, hname) -> SpectrumRow:
        wave_um = np.asarray(pick(cols["WAVELENGTH"]), dtype=np.float64).ravel()
        flux_jy = np.asarray(pick(cols["FLUX"]), dtype=np.float64).ravel()
        err_jy = np.asarray(pick(cols["FLUX_ERROR"]), dtype=np.float64).ravel()
        dq = None if dq_col is None else np.asarray(pick(dq_col)).ravel().astype(np.int64)
        if not (flux_jy.shape == err_jy.shape == wave_um.shape) or (dq is not None and dq.shape != wave_um.shape):
            raise ReaderError(path, f"WAVELENGTH, FLUX, FLUX_ERROR and DQ differ in length in spectrum "
                              f"{ident['object_id']!r}", hdu=hname)  # fmt: skip
        # NaN padding of a row (and NaN wavelengths at the ends of a slit) hold no pixel.
        keep = np.isfinite(wave_um)
        wave_um, flux_jy, err_jy = wave_um[keep], flux_jy[keep], err_jy[keep]
        dq = None if dq is None else dq[keep]
        if np.any(err_jy < 0):
            raise ReaderError(path, f"FLUX_ERROR has {int((err_jy < 0).sum())} negative values", hdu=hname,
                              column=cols["FLUX_ERROR"])  # fmt: skip
        wave = wave_um * 1e4
        factor = jy_to_flambda(wave) if wave.size else wave
        flux = flux_jy * factor
        err = err_jy * factor
        ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
        if dq is not None:
            ok &= (dq & _DO_NOT_USE) == 0
        if wave.size >= 2 and not np.any(ok):
            raise ReaderError(path, f"spectrum {ident['object_id'] or hname!r} has no usable pixel (DO_NOT_USE, "
                              "NaN flux or zero error everywhere)", hdu=hname)  # fmt: skip
        ivar = np.zeros_like(err)
        ivar[ok] = 1.0 / err[ok] ** 2
        row = SpectrumRow(
            object_id=ident["object_id"], source_object_id=ident["object_id"], ra=ident["ra"], dec=ident["dec"],
            z=opts.get("z"), wave=wave, flux=flux.astype(np.float32), ivar=ivar.astype(np.float32),
            mask=None if dq is None else dq.astype(np.int32),
            resolution=None if resolution is None else np.full(wave.shape, float(resolution), np.float32),
            flux_unit=FLUX_UNIT,
            meta={**common, "slit": ident["slit"], "srctype": ident["srctype"], "source_name": ident["source_name"]},
        )  # fmt: skip
        return finalize_spectrum(path, row, hdu=hname)


#: the registered instance
reader = NirspecX1DReader()
