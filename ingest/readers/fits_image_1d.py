"""IRAF-style 1-D spectra as FITS images (GMOS, GTC/OSIRIS, WHT/ISIS and many archives).

Layout read: the flux is the primary image (or, with an empty primary, the ``SCI``
extension). Its wavelength axis is axis 1 with a linear WCS (or IRAF multispec, below):
``lambda(p) = CRVAL1 + (p - CRPIX1) * CD1_1`` for 1-based pixel p (``CDELT1`` when there
is no ``CD1_1``; ``CRPIX1`` defaults to 1), ``CTYPE1`` one of ``LINEAR``, ``LAMBDA``,
``WAVE``, ``AWAV``, ``WAVELENGTH`` or absent, in Angstrom unless ``CUNIT1`` (or the
``units=`` word of ``WAT1_001``) says otherwise. ``DC-FLAG = 1`` means the axis is
log10(lambda) (IRAF's log-linear dispersion); ``DC-FLAG = -1`` (not dispersion corrected)
is rejected. A zero, negative or non-finite step is rejected: IRAF writes increasing
wavelengths, and a reversed axis is more likely a broken header than a real product.

Shapes (numpy order):

* ``(n,)``: one spectrum;
* ``(n_ap, n)``: IRAF multi-aperture output (``APNUMi`` cards, or a multispec WCS): one
  spectrum per row, id ``<object>#ap<N>`` with N the aperture number of ``APNUMi`` (else
  the row, 1-based; for multispec the ``ap`` of the row's ``specN``);
* ``(n_band, n_ap, n)``: IRAF ``apall`` output with bands described by ``BANDIDk``
  (``spectrum``, ``raw``, ``background``, ``sigma``): the first ``spectrum`` band is
  the flux, the ``sigma`` band (if any) the 1-sigma error, the others are dropped.

Leftover IRAF cards of a cube the spectrum was cut from (``WCSDIM = 3``, ``LTMi_j``,
``LTVi``, ``WAT3_*``, ``DISPAXIS``) are ignored by the linear WCS; only axis-1 cards define
wavelengths. IRAF's ``equispec`` system (``WAT0_001 = 'system=equispec'``: apertures sharing
one linear dispersion) is this linear WCS.

IRAF ``multispec`` WCS (``CTYPE1 = MULTISPE``, ``WAT0_001 = 'system=multispec'``), written by
apall/dispcor/scopy when apertures have their own or non-linear dispersions. Layout as in
"The IRAF/NOAO Spectral World Coordinate Systems" (onedspec ``specwcs`` help) and IRAF's
multispec function driver (``sys/mwcs/wfmspec.x``):

* the ``WAT2_001``, ``WAT2_002``, ... values are 68-character pieces of one string, joined
  **unstripped** (a space at a card's end separates two numbers; astropy strips trailing
  spaces, so the raw card images are read); it holds ``specN = "..."`` for physical image
  line N: ``ap beam dtype w1 dw nw z aplow aphigh [functions]``;
* physical pixel p = (logical pixel - ``LTV1``) / ``LTM1_1`` (1-based; ``LTV1 = 0``,
  ``LTM1_1 = 1`` when absent), physical line likewise with ``LTV2``/``LTM2_2``;
* dtype 0: ``w1 + dw (p - 1)``; dtype 1: ``10**(w1 + dw (p - 1))``; dtype 2: the weighted
  mean ``sum(weight_i (zeropoint_i + f_i(p))) / sum(weight_i)`` of functions
  ``weight zeropoint ftype order pmin pmax c...``: ftype 1 Chebyshev and 2 Legendre
  (``order`` coefficients, x = (2p - (pmax + pmin)) / (pmax - pmin)), 3 cubic spline
  (``order`` = pieces, pieces + 3 coefficients) and 4 linear spline (pieces + 1), with
  IRAF's basis functions; ftypes 5/6 (pixel/sampled arrays) are rejected; dtype -1 (not
  dispersion corrected) is rejected;
* every dtype is divided by 1 + z (IRAF's stored Doppler factor);
* pixels outside 1..nw (IRAF pads a spectrum shorter than the image, and maps those pixels
  to the end wavelength) are **dropped**, so such a row is shorter than NAXIS1; nw larger
  than the image (a trimmed image) is fine;
* wavelengths that are not strictly increasing (a broken or reversed solution) reject the file;
* unit from ``units=`` of ``WAT1_001`` (Angstrom by default); the aperture number of the id
  is the spec string's ``ap`` (recorded in ``meta["iraf_aperture"]``, dtype in
  ``meta["iraf_dtype"]``); medium as for ``LINEAR`` (air by default).

Errors: from the sigma band (ivar = 1/sigma^2; 0 where sigma is 0 or NaN; a negative
sigma rejects the file). Without one, ivar is estimated from the pixel scatter
(:func:`~skyledger.ingest.readers.base.ivar_from_scatter`, exact zeros - IRAF's padding
beyond the data - excluded) and the row says so (spectrum flag ERROR_ESTIMATED).

Air or vacuum (FITS WCS paper III, Greisen et al. 2006): ``CTYPE1 = 'AWAV'`` is air,
``'WAVE'`` vacuum. ``LINEAR``, ``LAMBDA``, ``MULTISPE`` or no CTYPE1 says nothing; such files come from
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
    normalise_flux_unit,
)
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, header_float, open_fits
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
        return True  # IRAF multispec WCS: per-aperture dispersion in WAT2_* (read() checks it)
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
    match = re.search(r"units=(\w+)", _wat_string(header, 1))
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


# --------------------------------------------------------------------------- IRAF multispec WCS

_FTYPES = {1: "Chebyshev", 2: "Legendre", 3: "cubic spline", 4: "linear spline", 5: "pixel coordinate array",
           6: "sampled coordinate array"}  # fmt: skip
_SPEC_FIELDS = "ap beam dtype w1 dw nw z aplow aphigh"


def _card_string(header: Any, key: str) -> str:
    """A string card's value with its trailing spaces (astropy strips them; IRAF's WAT cards are
    68-character pieces of one long string, so a space at a card's end is part of the string)."""
    try:
        image = header.cards[key].image
    except (AttributeError, KeyError, IndexError):
        return str(header.get(key, "") or "")
    match = re.match(r"\s*'((?:[^']|'')*)'", image[10:])
    return match[1].replace("''", "'") if match else str(header.get(key, "") or "")


def _wat_string(header: Any, axis: int) -> str:
    """The WATn_001, WATn_002, ... cards joined into IRAF's attribute string."""
    parts = []
    i = 1
    while f"WAT{axis}_{i:03d}" in header:
        parts.append(_card_string(header, f"WAT{axis}_{i:03d}"))
        i += 1
    return "".join(parts)


def _multispec_specs(path: object, header: Any, hname: str) -> dict[int, str]:
    """``specN = "..."`` attributes of WAT2_*, by physical line N."""
    wat2 = _wat_string(header, 2)
    specs = {int(m[1]): m[2] for m in re.finditer(r'spec(\d+)\s*=\s*"([^"]*)"', wat2)}
    if not specs:
        raise ReaderError(
            path, 'CTYPE1 = MULTISPE but the WAT2_nnn cards hold no specN = "..." attribute (the '
            "per-aperture dispersion of IRAF's multispec WCS)", hdu=hname,
        )  # fmt: skip
    return specs


def _nonlinear(path: object, what: str, coeffs: list[float], p: np.ndarray, hname: str) -> np.ndarray:
    """IRAF's nonlinear dispersion (dtype 2): the weighted mean of the functions
    ``weight zeropoint ftype order pmin pmax c...``, each ``zeropoint + f(p)``."""
    ysum = np.zeros_like(p)
    wsum = 0.0
    j = 0
    while j < len(coeffs):
        if len(coeffs) - j < 6:
            raise ReaderError(path, f"{what}: a nonlinear function needs weight zeropoint ftype order pmin "
                              f"pmax, got {coeffs[j:]}", hdu=hname)  # fmt: skip
        weight, zero, ftype, order, pmin, pmax = coeffs[j : j + 6]
        ftype, order = int(round(ftype)), int(round(order))
        n_coef = {1: order, 2: order, 3: order + 3, 4: order + 1}.get(ftype)
        if n_coef is None:
            name = _FTYPES.get(ftype, "unknown")
            raise ReaderError(
                path, f"{what}: nonlinear dispersion function type {ftype} ({name}) is not read (only 1 "
                "Chebyshev, 2 Legendre, 3 cubic spline, 4 linear spline)", hdu=hname,
            )  # fmt: skip
        c = coeffs[j + 6 : j + 6 + n_coef]
        if order < 1 or len(c) < n_coef or pmax == pmin:
            raise ReaderError(
                path, f"{what}: {_FTYPES[ftype]} of order/pieces {order} over pixels {pmin}-{pmax} needs "
                f"{n_coef} coefficients, got {len(c)}", hdu=hname,
            )  # fmt: skip
        if ftype in (1, 2):
            x = (2.0 * p - (pmax + pmin)) / (pmax - pmin)
            y = np.full_like(p, c[0])
            prev, cur = np.ones_like(p), x
            if order > 1:
                y += c[1] * x
            for i in range(3, order + 1):  # IRAF's recurrences (curfit), term i of 1..order
                if ftype == 1:
                    nxt = 2.0 * x * cur - prev
                else:
                    nxt = ((2 * i - 3) * x * cur - (i - 2) * prev) / (i - 1)
                y += c[i - 1] * nxt
                prev, cur = cur, nxt
        else:
            s = (p - pmin) * order / (pmax - pmin)
            k = np.clip(np.floor(s), 0, order - 1).astype(int)
            b = s - k
            a = 1.0 - b
            ca = np.asarray(c)
            if ftype == 3:
                y = (a**3 * ca[k] + (1 + 3 * a * (1 + a * b)) * ca[k + 1] + (1 + 3 * b * (1 + a * b)) * ca[k + 2]
                     + b**3 * ca[k + 3])  # fmt: skip
            else:
                y = a * ca[k] + b * ca[k + 1]
        ysum += weight * (zero + y)
        wsum += weight
        j += 6 + n_coef
    if wsum == 0:
        raise ReaderError(path, f"{what}: the nonlinear dispersion has no function with a non-zero weight", hdu=hname)
    return ysum / wsum


def _multispec_wave(
    path: object, spec: str, line: int, p: np.ndarray, hname: str
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(aperture number, dtype, wavelengths in the file's unit, kept-pixel mask) of one specN
    string at physical pixels ``p``; pixels beyond 1..nw (IRAF's padding) are dropped."""
    what = f"WAT2 spec{line}"
    words = spec.split()
    if len(words) < 9:
        raise ReaderError(path, f'{what} = "{spec}" has {len(words)} fields, expected at least 9 ({_SPEC_FIELDS})',
                          hdu=hname)  # fmt: skip
    try:
        values = [float(w) for w in words]
    except ValueError as err:
        raise ReaderError(path, f'{what} = "{spec}" is not all numbers ({err})', hdu=hname) from None
    ap, dtype, w1, dw, nw, z = int(values[0]), int(values[2]), values[3], values[4], int(values[5]), values[6]
    if nw <= 0:
        raise ReaderError(path, f"{what}: nw = {nw}, no dispersion function (IRAF: not dispersion corrected)",
                          hdu=hname)  # fmt: skip
    if not np.isfinite(1.0 + z) or 1.0 + z <= 0:
        raise ReaderError(path, f"{what}: z = {z} gives no Doppler factor 1 + z > 0", hdu=hname)
    keep = (p >= 0.5) & (p <= nw + 0.5)
    pk = p[keep]
    if dtype == 0:
        wave = w1 + dw * (pk - 1.0)
    elif dtype == 1:
        wave = 10.0 ** (w1 + dw * (pk - 1.0))
    elif dtype == 2:
        wave = _nonlinear(path, what, values[9:], pk, hname)
    elif dtype == -1:
        raise ReaderError(path, f"{what}: dtype = -1, the spectrum is not dispersion corrected", hdu=hname)
    else:
        raise ReaderError(path, f"{what}: dtype = {dtype} (0 linear, 1 log-linear, 2 nonlinear expected)", hdu=hname)
    return ap, dtype, wave / (1.0 + z), keep


def _lt(path: object, header: Any, key: str, default: float, hname: str) -> float:
    if key not in header:
        return default
    value = header_float(header, key)
    if value is None or (key.startswith("LTM") and value == 0):
        raise ReaderError(path, f"{key} = {header.get(key)!r} is not a usable logical-to-physical term", hdu=hname)
    return value


def _multispec_apertures(
    path: object, header: Any, n_ap: int, n: int, hname: str
) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
    """(aperture number, wavelengths in Angstrom, kept-pixel mask, dtype) of each image line."""
    specs = _multispec_specs(path, header, hname)
    ltv1, ltm1 = _lt(path, header, "LTV1", 0.0, hname), _lt(path, header, "LTM1_1", 1.0, hname)
    ltv2, ltm2 = _lt(path, header, "LTV2", 0.0, hname), _lt(path, header, "LTM2_2", 1.0, hname)
    p = (np.arange(1, n + 1, dtype=np.float64) - ltv1) / ltm1  # logical -> physical pixel
    unit = _wave_unit(path, header, hname)
    out = []
    for i in range(n_ap):
        line = int(round((i + 1 - ltv2) / ltm2))
        spec = specs.get(line)
        if spec is None:
            raise ReaderError(
                path, f"image line {i + 1} (physical line {line}) has no spec{line} attribute in WAT2_* "
                f"(found spec{', spec'.join(str(k) for k in sorted(specs))})", hdu=hname,
            )  # fmt: skip
        ap, dtype, wave, keep = _multispec_wave(path, spec, line, p, hname)
        if not keep.any():
            raise ReaderError(path, f"WAT2 spec{line}: no image pixel lies in the dispersion's pixels 1..nw",
                              hdu=hname)  # fmt: skip
        if unit != u.AA:
            wave = (wave * unit).to_value(u.AA)
        if not (np.all(np.isfinite(wave)) and np.all(np.diff(wave) > 0)):
            raise ReaderError(
                path, f"aperture {ap} (WAT2 spec{line}): the wavelengths are not finite and strictly increasing "
                f"({wave[0]:.6g} to {wave[-1]:.6g}); a broken dispersion solution", hdu=hname,
            )  # fmt: skip
        out.append((ap, wave, keep, dtype))
    return out


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
            multispec = _ctype(header, 1).startswith(_MULTISPEC)
            data = hdu_data(path, hdu)
            if data is None or not 1 <= np.ndim(data) <= 3:
                raise ReaderError(path, f"expected a 1-3 dimensional image, got {np.shape(data)}", hdu=hname)
            cube = np.asarray(data, dtype=np.float64)
            cube = cube.reshape((1,) * (3 - cube.ndim) + cube.shape)  # (band, aperture, pixel)
            n_bands, n_ap, n = cube.shape
            if n_ap > 1 and not multispec and "APNUM1" not in header:
                raise ReaderError(
                    path, f"a 2-D image {cube.shape[1:]} without APNUMn cards is a frame, not extracted "
                    "apertures", hdu=hname,
                )  # fmt: skip
            ctype = _ctype(header, 1)
            medium = medium_option(path, opts, "vacuum" if ctype == "WAVE" else "air")
            if multispec:
                apertures = _multispec_apertures(path, header, n_ap, n, hname)
            else:
                wave, log = _wavelength(path, header, n, hname)
                apertures = [(number, wave, None, int(log)) for number in _aperture_numbers(header, n_ap)]
            if medium == "air":
                apertures = [(ap, air_to_vacuum(w), keep, dt) for ap, w, keep, dt in apertures]
            flux_band, sigma_band, band_names = _bands(header, n_bands)

            base_id = str(opts.get("object_id") or header.get("OBJECT") or file_stem(path)).strip() or file_stem(path)
            ra, dec, position_from = header_position(path, header, opts, what=base_id, hdu=hname)
            z = opts.get("z", header_float(header, "REDSHIFT", "Z"))
            flux_unit = flux_unit_option(path, opts) or normalise_flux_unit(header.get("BUNIT"))
            scale, flux_unit = rescale_flux(cube[flux_band], flux_unit)
            if scale != 1.0:
                cube = cube * scale  # the sigma band too
            meta = {
                "wavelength_medium_in_file": medium,
                "instrument": str(header.get("INSTRUME", "")).strip() or None,
                "flux_unit_in_file": str(header.get("BUNIT", "")).strip() or None,
                "log_wavelength": all(dt == 1 for *_, dt in apertures),
                "iraf_wcs": "multispec" if multispec else "linear",
                "position_from": position_from,
                "iraf_bands": band_names if n_bands > 1 else None,
            }
            spectra = []
            for i, (number, wave, keep, dtype) in enumerate(apertures):
                object_id = base_id if n_ap == 1 else f"{base_id}#ap{number}"
                flux = cube[flux_band, i] if keep is None else cube[flux_band, i][keep]
                good = np.isfinite(flux)
                if not np.any(good & (flux != 0)):
                    raise ReaderError(path, f"spectrum {object_id!r}: the flux is all zero or NaN", hdu=hname)
                row_meta = dict(meta)
                if multispec:
                    row_meta.update(iraf_dtype=dtype, iraf_aperture=number)
                if sigma_band is not None:
                    sigma = cube[sigma_band, i] if keep is None else cube[sigma_band, i][keep]
                    if np.any(sigma < 0):
                        raise ReaderError(
                            path, f"spectrum {object_id!r}: the sigma band ({band_names[sigma_band]!r}) has "
                            f"{int((sigma < 0).sum())} negative values", hdu=hname,
                        )  # fmt: skip
                    ok = good & np.isfinite(sigma) & (sigma > 0)
                    ivar = np.zeros(flux.size)
                    ivar[ok] = 1.0 / sigma[ok] ** 2
                else:
                    ivar = estimated_ivar(flux, row_meta, good & (flux != 0))
                row = SpectrumRow(
                    object_id=object_id, source_object_id=object_id, ra=ra, dec=dec, z=z, wave=wave,
                    flux=flux.astype(np.float32), ivar=np.asarray(ivar, np.float32),
                    resolution=resolution_option(path, opts, flux.size),
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
