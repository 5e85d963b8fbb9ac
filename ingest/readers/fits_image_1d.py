"""IRAF-style 1-D spectra as FITS images (GMOS, GTC/OSIRIS, WHT/ISIS and many archives).

Layout read: the flux is the primary image (or, with an empty primary, the ``SCI``
extension). Its wavelength axis is axis 1 with a linear WCS:
``lambda(p) = CRVAL1 + (p - CRPIX1) * CD1_1`` for 1-based pixel p (``CDELT1`` when there
is no ``CD1_1``; ``CRPIX1`` defaults to 1), ``CTYPE1`` one of ``LINEAR``, ``LAMBDA``,
``WAVE``, ``AWAV``, ``WAVELENGTH`` or absent, in Angstrom unless ``CUNIT1`` (or the
``units=`` word of ``WAT1_001``) says otherwise. ``DC-FLAG = 1`` means the axis is
log10(lambda) (IRAF's log-linear dispersion); ``DC-FLAG = -1`` (not dispersion corrected)
is rejected. A zero, negative or non-finite step is rejected: IRAF writes increasing
wavelengths, and a reversed axis is more likely a broken header than a real product.

Shapes (numpy order):

* ``(n,)``: one spectrum;
* ``(n_ap, n)``: IRAF multi-aperture output (``APNUMi`` cards): one spectrum per row, id
  ``<object>#ap<N>`` with N the aperture number of ``APNUMi`` (else the row, 1-based);
* ``(n_band, n_ap, n)``: IRAF ``apall`` output with bands described by ``BANDIDk``
  (``spectrum``, ``raw``, ``background``, ``sigma``): the first ``spectrum`` band is
  the flux, the ``sigma`` band (if any) the 1-sigma error, the others are dropped.

Leftover IRAF cards of a cube the spectrum was cut from (``WCSDIM = 3``, ``LTMi_j``,
``LTVi``, ``WAT3_*``, ``DISPAXIS``) are ignored; only axis-1 cards define wavelengths.
IRAF ``multispec`` WCS (``CTYPE1 = MULTISPE``: per-aperture, possibly non-linear
dispersion in ``WAT2_*``) is recognised and rejected with a message saying so.

Errors: from the sigma band (ivar = 1/sigma^2; 0 where sigma is 0 or NaN; a negative
sigma rejects the file). Without one, ivar is estimated from the pixel scatter
(:func:`~skyledger.ingest.readers.base.ivar_from_scatter`, exact zeros - IRAF's padding
beyond the data - excluded) and the row says so (spectrum flag ERROR_ESTIMATED).

Air or vacuum (FITS WCS paper III, Greisen et al. 2006): ``CTYPE1 = 'AWAV'`` is air,
``'WAVE'`` vacuum. ``LINEAR``, ``LAMBDA`` or no CTYPE1 says nothing; such files come from
IRAF reductions calibrated with air arc-line lists, so they are read as **air** by
default; option ``medium = "vacuum"`` (or ``"air"``) overrides any header.

Object and metadata: id from option ``object_id``, else ``OBJECT``, else the file name.
Position from options ``ra``/``dec``, else ``OBJRA``/``OBJDEC``, ``RA_OBJ``/``DEC_OBJ``
or ``RA``/``DEC`` (degrees or sexagesimal strings, RA in hours); note that at some
telescopes RA/DEC is the pointing, not the slit target (GTC/OSIRIS: 3.4' off in the
sample file), so give ``ra``/``dec`` where it matters. Redshift from option ``z``, else
``REDSHIFT`` or ``Z``. Flux unit from option ``flux_unit``, else ``BUNIT`` (``A`` read as
Angstrom); a plain cgs f_lambda with tiny values is rescaled to ``1e<k> erg/s/cm2/A``
(:func:`~.oned_common.rescale_flux`) so that ivar fits float32. Resolution: option
``resolution`` (R), else none (flag NO_RESOLUTION). With several apertures, each is a
source whose parent is the object (given the object's position: an aperture's offset
along the slit is not in the header).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy import units as u

from skyledger.ingest.readers.base import (
    air_to_vacuum,
    check_options,
    check_unique_ids,
    file_stem,
    finalize_spectrum,
)
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, header_float, open_fits
from skyledger.ingest.readers.oned_common import (
    estimated_ivar,
    flux_unit_from_text,
    flux_unit_option,
    header_position,
    medium_option,
    rescale_flux,
    resolution_option,
)
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["FitsImage1DReader", "reader", "SPECTRAL_CTYPES"]

_OPTIONS = ("object_id", "ra", "dec", "z", "flux_unit", "medium", "resolution")
#: CTYPE1 values of a linear wavelength axis ("" = absent)
SPECTRAL_CTYPES = ("", "LINEAR", "LAMBDA", "WAVE", "AWAV", "WAVELENGTH")
_MULTISPEC = "MULTISPE"
_CELESTIAL = ("RA", "DEC", "GLON", "GLAT", "ELON", "ELAT")
_MIN_PIXELS = 16
_MAX_BANDS = 8
_WAT_UNITS = {"angstroms": u.AA, "angstrom": u.AA, "nanometers": u.nm, "nm": u.nm, "microns": u.um,
              "micrometers": u.um}  # fmt: skip


def _ctype(header: Mapping[str, Any], axis: int) -> str:
    return str(header.get(f"CTYPE{axis}", "") or "").strip().upper()


def _looks_like_1d_image(header: Mapping[str, Any]) -> bool:
    """The sniffing rule (see the module doc): a linear spectral axis 1 on an image whose
    other axes are IRAF apertures/bands, not sky or wavelength."""
    try:
        naxis = int(header.get("NAXIS", 0) or 0)
        dims = [int(header.get(f"NAXIS{i}", 0) or 0) for i in range(1, naxis + 1)]
    except (TypeError, ValueError):
        return False
    if not 1 <= naxis <= 3 or dims[0] < _MIN_PIXELS:
        return False
    ctype1 = _ctype(header, 1)
    if ctype1.startswith(_MULTISPEC):
        return True  # read() says it is not supported
    if ctype1 not in SPECTRAL_CTYPES or "CRVAL1" not in header or not ("CDELT1" in header or "CD1_1" in header):
        return False
    for axis in range(2, 4):
        other = _ctype(header, axis)
        if other.startswith(_CELESTIAL) or other[:4] in ("WAVE", "AWAV", "FREQ", "VELO", "VRAD"):
            return False
    if naxis >= 2 and dims[1] > 1 and "APNUM1" not in header:
        return False  # a 2-D frame (long slit, image), not extracted apertures
    if naxis == 3 and (dims[2] > _MAX_BANDS or "BANDID1" not in header):
        return False
    return True


def _image_header(summary: Any) -> tuple[str | None, Any]:
    if int(summary.primary.get("NAXIS", 0) or 0) > 0:
        return None, summary.primary
    header = summary.get("SCI")
    return ("SCI", header) if header is not None else (None, None)


def _wave_unit(path: object, header: Mapping[str, Any], hname: str) -> u.UnitBase:
    cunit = str(header.get("CUNIT1", "") or "").strip()
    if cunit:
        try:
            unit = u.Unit(cunit)
            unit.to(u.AA)
            return unit
        except (ValueError, u.UnitConversionError) as err:
            raise ReaderError(path, f"CUNIT1 = {cunit!r} is not a length", hdu=hname) from err
    match = re.search(r"units=(\w+)", str(header.get("WAT1_001", "")))
    if match:
        unit = _WAT_UNITS.get(match[1].lower())
        if unit is None:
            raise ReaderError(path, f"WAT1_001 units={match[1]!r} is not a wavelength unit read here", hdu=hname)
        return unit
    return u.AA


def _wavelength(path: object, header: Mapping[str, Any], n: int, hname: str) -> tuple[np.ndarray, bool]:
    """Wavelengths in Angstrom as the file gives them (air or vacuum); True if log-linear."""
    crval = header_float(header, "CRVAL1")
    step_key = "CD1_1" if "CD1_1" in header else "CDELT1"
    step = header_float(header, step_key)
    crpix = header_float(header, "CRPIX1") if "CRPIX1" in header else 1.0
    for key, value in (("CRVAL1", crval), (step_key, step), ("CRPIX1", crpix)):
        if value is None:
            raise ReaderError(
                path, f"wavelength WCS card {key} = {header.get(key)!r} is not a finite number", hdu=hname
            )
    if step <= 0:  # type: ignore[operator]
        raise ReaderError(
            path, f"{step_key} = {step}: the wavelength step must be positive (a broken WCS header)", hdu=hname
        )
    try:
        dc_flag = int(header.get("DC-FLAG", 0) or 0)
    except (TypeError, ValueError):
        raise ReaderError(path, f"DC-FLAG = {header.get('DC-FLAG')!r} is not an integer", hdu=hname) from None
    if dc_flag not in (0, 1):
        raise ReaderError(
            path, f"DC-FLAG = {dc_flag}: the spectrum is not dispersion corrected (no wavelength scale)", hdu=hname
        )
    coord = crval + (np.arange(1, n + 1, dtype=np.float64) - crpix) * step  # type: ignore[operator]
    log = dc_flag == 1
    if log:
        if coord[-1] > 10:  # log10 of a wavelength in Angstrom or nm, never above 10
            raise ReaderError(path, f"DC-FLAG = 1 but CRVAL1 = {crval} is not a log10 wavelength", hdu=hname)
        coord = 10.0**coord
    unit = _wave_unit(path, header, hname)
    if unit != u.AA:
        coord = (coord * unit).to_value(u.AA)
    return coord, log


def _bands(header: Mapping[str, Any], n_bands: int) -> tuple[int, int | None, list[str]]:
    """(flux band, sigma band or None, band descriptions), 0-based, from BANDIDk cards."""
    names = [str(header.get(f"BANDID{k}", "") or "").strip() for k in range(1, n_bands + 1)]
    words = [re.split(r"[\s:\-]", n.lower(), maxsplit=1)[0] if n else "" for n in names]
    flux = next((k for k, w in enumerate(words) if w == "spectrum"), 0)
    sigma = next((k for k, w in enumerate(words) if w == "sigma"), None)
    return flux, sigma, names


def _aperture_numbers(header: Mapping[str, Any], n_ap: int) -> list[int]:
    numbers = []
    for i in range(1, n_ap + 1):
        words = str(header.get(f"APNUM{i}", "") or "").split()
        try:
            numbers.append(int(words[0]))
        except (IndexError, ValueError):
            numbers.append(i)
    return numbers


class FitsImage1DReader:
    """Reader of IRAF-style 1-D spectrum images (see the module doc)."""

    name = "fits_image_1d"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        summary = fits_summary(path, max_hdus=2)
        if summary is None:
            return False
        _, header = _image_header(summary)
        return header is not None and _looks_like_1d_image(header)

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        with open_fits(path) as hdul:
            if int(hdul[0].header.get("NAXIS", 0) or 0) > 0:
                hdu = hdul[0]
            elif "SCI" in hdul:
                hdu = hdul["SCI"]
            else:
                raise ReaderError(
                    path, f"no spectrum image: the primary HDU is empty and there is no SCI extension; "
                    f"HDUs: {[h.name for h in hdul]}", hdu="PRIMARY/SCI",
                )  # fmt: skip
            hname = hdu.name or "PRIMARY"
            header = hdu.header
            if _ctype(header, 1).startswith(_MULTISPEC):
                raise ReaderError(
                    path, "IRAF multispec WCS (CTYPE1 = MULTISPE, dispersion per aperture in WAT2_*) is not "
                    "supported; write a linear spectrum first (IRAF scopy/dispcor linearize=yes)", hdu=hname,
                )  # fmt: skip
            data = hdu_data(path, hdu)
            if data is None or not 1 <= np.ndim(data) <= 3:
                raise ReaderError(path, f"expected a 1-3 dimensional image, got {np.shape(data)}", hdu=hname)
            cube = np.asarray(data, dtype=np.float64)
            cube = cube.reshape((1,) * (3 - cube.ndim) + cube.shape)  # (band, aperture, pixel)
            n_bands, n_ap, n = cube.shape
            if n_ap > 1 and "APNUM1" not in header:
                raise ReaderError(
                    path, f"a 2-D image {cube.shape[1:]} without APNUMn cards is a frame, not extracted "
                    "apertures", hdu=hname,
                )  # fmt: skip
            wave, log = _wavelength(path, header, n, hname)
            ctype = _ctype(header, 1)
            medium = medium_option(path, opts, "vacuum" if ctype == "WAVE" else "air")
            if medium == "air":
                wave = air_to_vacuum(wave)
            flux_band, sigma_band, band_names = _bands(header, n_bands)

            base_id = str(opts.get("object_id") or header.get("OBJECT") or file_stem(path)).strip() or file_stem(path)
            ra, dec, position_from = header_position(path, header, opts, what=base_id, hdu=hname)
            z = opts.get("z", header_float(header, "REDSHIFT", "Z"))
            flux_unit = flux_unit_option(path, opts) or flux_unit_from_text(header.get("BUNIT"))
            scale, flux_unit = rescale_flux(cube[flux_band], flux_unit)
            if scale != 1.0:
                cube = cube * scale  # the sigma band too
            resolution = resolution_option(path, opts, n)
            meta = {
                "wavelength_medium_in_file": medium,
                "instrument": str(header.get("INSTRUME", "")).strip() or None,
                "flux_unit_in_file": str(header.get("BUNIT", "")).strip() or None,
                "log_wavelength": log,
                "position_from": position_from,
                "iraf_bands": band_names if n_bands > 1 else None,
            }
            numbers = _aperture_numbers(header, n_ap)
            spectra = []
            for i in range(n_ap):
                object_id = base_id if n_ap == 1 else f"{base_id}#ap{numbers[i]}"
                flux = cube[flux_band, i]
                good = np.isfinite(flux)
                if not np.any(good & (flux != 0)):
                    raise ReaderError(path, f"spectrum {object_id!r}: the flux is all zero or NaN", hdu=hname)
                row_meta = dict(meta)
                if sigma_band is not None:
                    sigma = cube[sigma_band, i]
                    if np.any(sigma < 0):
                        raise ReaderError(
                            path, f"spectrum {object_id!r}: the sigma band ({band_names[sigma_band]!r}) has "
                            f"{int((sigma < 0).sum())} negative values", hdu=hname,
                        )  # fmt: skip
                    ok = good & np.isfinite(sigma) & (sigma > 0)
                    ivar = np.zeros(n)
                    ivar[ok] = 1.0 / sigma[ok] ** 2
                else:
                    ivar = estimated_ivar(flux, row_meta, good & (flux != 0))
                row = SpectrumRow(
                    object_id=object_id, source_object_id=object_id, ra=ra, dec=dec, z=z, wave=wave,
                    flux=flux.astype(np.float32), ivar=np.asarray(ivar, np.float32), resolution=resolution,
                    flux_unit=flux_unit, meta=row_meta,
                )  # fmt: skip
                spectra.append(finalize_spectrum(path, row, hdu=hname))
        check_unique_ids(path, (s.object_id for s in spectra), hdu=hname)
        if n_ap == 1:
            sources = [SourceRow(object_id=base_id, ra=ra, dec=dec, z=z)]
        else:
            sources = [SourceRow(object_id=base_id, ra=ra, dec=dec, z=z)] + [
                SourceRow(object_id=s.object_id, ra=ra, dec=dec, z=z, parent_object_id=base_id) for s in spectra
            ]
        return FileContents(reader=self.name, sources=sources, spectra=iter(spectra), meta=meta)


#: the registered instance
reader = FitsImage1DReader()
