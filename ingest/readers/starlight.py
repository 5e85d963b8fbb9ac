"""STARLIGHT-style 1-D spectra in FITS: the observed spectrum of a stellar-population fit.

STARLIGHT (Cid Fernandes et al. 2005) fits a spectrum with a base of stellar populations
and writes per pixel the observed flux ``f_obs``, its error, a flag and the synthetic
spectrum ``f_syn``; the FITS forms of these products (PyCASSO for CALIFA/MaNGA, and the
FITS outputs of STARLIGHT wrappers) name the arrays ``F_OBS``, ``F_VAR`` (or ``F_ERR``),
``F_FLAG`` and ``F_SYN``. Two layouts are read:

* a binary table (the first extension holding the columns) with columns ``L_OBS`` (or
  ``WAVE``/``LAMBDA``), ``F_OBS``, ``F_SYN`` and optionally ``F_VAR`` or ``F_ERR``,
  ``F_FLAG`` (case-insensitive);
* image extensions named ``F_OBS``, ``F_SYN``, ``F_VAR``/``F_ERR``, ``F_FLAG`` (1-D), the
  wavelengths from an ``L_OBS`` image or from the linear WCS of ``F_OBS``
  (CRVAL1/CDELT1 or CD1_1/CRPIX1).

Detected by content: ``F_OBS`` and ``F_SYN`` together (as HDU names or columns).

Read: the observed spectrum only. ``F_VAR`` is a variance (ivar = 1/F_VAR), ``F_ERR`` a
1-sigma error; without either, ivar is estimated from the scatter (flag
ERROR_ESTIMATED). ``F_FLAG > 0`` (masked, clipped or bad in STARLIGHT's convention) is
kept as the mask and gives ivar 0. ``F_SYN`` is a model, not data: it is not stored; its
presence is noted in ``meta["model_not_read"]``. A ``FOBS_NORM`` (HIERARCH) or ``FOBSNORM``
card (STARLIGHT's normalisation of the fluxes) multiplies flux and error back to physical units.

Frame and medium: STARLIGHT works in the rest frame, so by default (option
``frame = "rest"``) the wavelengths are taken as rest frame and moved to the observed
frame with the redshift (option ``z`` or a ``REDSHIFT``/``Z`` card; none is an error):
lambda_obs = lambda (1 + z), f_obs / (1 + z), ivar (1 + z)^2. ``frame = "observed"``
takes them as they are. The base libraries STARLIGHT is run with (BC03/STELIB, MILES)
use air wavelengths, so the default medium is **air**; option ``medium`` overrides.

Other options: ``object_id`` (else OBJECT, else the file name), ``ra``/``dec`` (else
RA/DEC-type cards), ``flux_unit`` (else BUNIT), ``resolution`` (R; else none).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from skyledger.ingest.readers.base import air_to_vacuum, check_options, file_stem, finalize_spectrum, normalise_flux_unit
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, header_float, open_fits
from skyledger.ingest.readers.fits_tables import find_column
from skyledger.ingest.readers.oned_common import (
    estimated_ivar,
    flux_unit_option,
    header_position,
    medium_option,
    rescale_flux,
    resolution_option,
)
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["StarlightReader", "reader"]

_OPTIONS = ("object_id", "ra", "dec", "z", "flux_unit", "medium", "resolution", "frame")
_NORM_CARDS = ("FOBS_NORM", "FOBSNORM")  # the first only as a HIERARCH card (9 characters)
_WAVE_NAMES = ("L_OBS", "WAVE", "LAMBDA", "WAVELENGTH")
_ROLES = {"flux": ("F_OBS",), "var": ("F_VAR",), "err": ("F_ERR", "F_ERROR"), "flag": ("F_FLAG",),
          "model": ("F_SYN",)}  # fmt: skip


class StarlightReader:
    """Reader of STARLIGHT-style FITS spectra (see the module doc)."""

    name = "starlight"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        summary = fits_summary(path, max_hdus=8)
        if summary is None:
            return False
        names = set(summary.names())
        if {"F_OBS", "F_SYN"} <= names:
            return True
        for _, header in summary.extensions:
            if str(header.get("XTENSION", "")).strip() == "BINTABLE" and {"F_OBS", "F_SYN"} <= summary.columns(header):
                return True
        return False

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        frame = str(opts.get("frame", "rest")).lower()
        if frame not in ("rest", "observed"):
            raise ReaderError(path, f"option frame must be 'rest' or 'observed', got {opts['frame']!r}")
        with open_fits(path) as hdul:
            primary = hdul[0].header
            arrays, header, hname = self._arrays(path, hdul)
        flux = arrays["flux"]
        n = flux.size
        for role, arr in arrays.items():
            if arr is not None and arr.shape != (n,):
                raise ReaderError(path, f"{_ROLES.get(role, ('L_OBS',))[0]} has shape {arr.shape}, F_OBS has ({n},)",
                                  hdu=hname)  # fmt: skip
        wave = arrays["wave"]
        if not np.any(np.isfinite(flux) & (flux != 0)):
            raise ReaderError(path, "F_OBS is all zero or NaN", hdu=hname)
        norm = header_float(header, *_NORM_CARDS) or header_float(primary, *_NORM_CARDS) or 1.0
        flux = flux * norm
        flux_unit = flux_unit_option(path, opts) or normalise_flux_unit(header.get("BUNIT") or primary.get("BUNIT"))
        scale, flux_unit = rescale_flux(flux, flux_unit)
        flux = flux * scale
        base_id = str(opts.get("object_id") or primary.get("OBJECT") or file_stem(path)).strip()
        z = opts.get("z", header_float(primary, "REDSHIFT", "Z"))
        meta: dict[str, Any] = {"model_not_read": "F_SYN", "frame_in_file": frame, "fobs_norm": norm}
        medium = medium_option(path, opts, "air")
        meta["wavelength_medium_in_file"] = medium
        flag = arrays["flag"]
        mask = None
        if flag is not None:
            flag = np.where(np.isfinite(flag), flag, 1)
            mask = np.where(flag > 0, np.maximum(np.round(flag), 1), 0).astype(np.int32)
        good = np.isfinite(flux) & (mask == 0 if mask is not None else True)
        if arrays["var"] is not None or arrays["err"] is not None:
            var = arrays["var"] if arrays["var"] is not None else arrays["err"] ** 2
            var = var * (norm * scale) ** 2
            if np.any(var < 0):
                raise ReaderError(path, f"F_VAR/F_ERR has {int((var < 0).sum())} negative values", hdu=hname)
            ok = good & np.isfinite(var) & (var > 0)
            ivar = np.zeros(n)
            ivar[ok] = 1.0 / var[ok]
        else:
            ivar = estimated_ivar(flux, meta, good).astype(np.float64)
        if frame == "rest":
            if z is None:
                raise ReaderError(path, "rest-frame STARLIGHT spectrum without a redshift: give option z, or "
                                  "frame = 'observed' if the wavelengths are observed")  # fmt: skip
            wave, flux, ivar = wave * (1 + z), flux / (1 + z), ivar * (1 + z) ** 2
        if medium == "air":
            # After the shift: the refractive index belongs to the wavelength as observed.
            wave = air_to_vacuum(wave)
        ra, dec, position_from = header_position(path, primary, opts, what=base_id)
        meta["position_from"] = position_from
        row = SpectrumRow(
            object_id=base_id, source_object_id=base_id, ra=ra, dec=dec, z=z, wave=wave,
            flux=flux.astype(np.float32), ivar=ivar.astype(np.float32), mask=mask,
            resolution=resolution_option(path, opts, n), flux_unit=flux_unit, meta=meta,
        )  # fmt: skip
        row = finalize_spectrum(path, row, hdu=hname)
        source = SourceRow(object_id=base_id, ra=ra, dec=dec, z=z)
        return FileContents(reader=self.name, sources=[source], spectra=iter([row]), meta=dict(meta))

    @staticmethod
    def _arrays(path: object, hdul: Any) -> tuple[dict[str, np.ndarray | None], Any, str]:
        names = [h.name for h in hdul]
        if "F_OBS" in names and "F_SYN" in names:
            out: dict[str, np.ndarray | None] = {}
            for role, candidates in _ROLES.items():
                hdu = next((hdul[c] for c in candidates if c in names), None)
                data = None if hdu is None else hdu_data(path, hdu)
                out[role] = None if data is None else np.asarray(data, dtype=np.float64).ravel()
            header = hdul["F_OBS"].header
            if "L_OBS" in names:
                out["wave"] = np.asarray(hdu_data(path, hdul["L_OBS"]), dtype=np.float64).ravel()
            else:
                crval = header_float(header, "CRVAL1")
                step = header_float(header, "CD1_1", "CDELT1")
                crpix = header_float(header, "CRPIX1") or 1.0
                if crval is None or step is None:
                    raise ReaderError(path, "no wavelengths: neither an L_OBS extension nor CRVAL1/CDELT1 on F_OBS",
                                      hdu="F_OBS")  # fmt: skip
                n = 0 if out["flux"] is None else out["flux"].size
                out["wave"] = crval + (np.arange(1, n + 1) - crpix) * step
            if out["flux"] is None:
                raise ReaderError(path, "F_OBS holds no data", hdu="F_OBS")
            return out, header, "F_OBS"
        for hdu in hdul[1:]:
            if hdu.header.get("XTENSION", "").strip() != "BINTABLE":
                continue
            cols = list(hdu.columns.names)
            if find_column(cols, "F_OBS") is None or find_column(cols, "F_SYN") is None:
                continue
            data = hdu_data(path, hdu)
            wave_col = find_column(cols, *_WAVE_NAMES)
            if wave_col is None:
                raise ReaderError(path, f"required column missing; columns present: {cols}", hdu=hdu.name,
                                  column="L_OBS")  # fmt: skip
            if data is None or len(data) < 2:
                raise ReaderError(path, "the spectrum table has fewer than 2 rows", hdu=hdu.name)
            out = {"wave": np.asarray(data[wave_col], dtype=np.float64).ravel()}
            for role, candidates in _ROLES.items():
                col = find_column(cols, *candidates)
                out[role] = None if col is None else np.asarray(data[col], dtype=np.float64).ravel()
            return out, hdu.header, hdu.name
        raise ReaderError(path, f"no F_OBS and F_SYN (as extensions or table columns); HDUs: {names}", hdu="F_OBS")


#: the registered instance
reader = StarlightReader()
