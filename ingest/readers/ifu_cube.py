"""IFU data cubes of any instrument, described by a :class:`CubeFormat`: a configuration.

One reader, :class:`IfuCubeReader`, reads every cube format; a format says which HDU holds
what (data, uncertainty and its kind, mask, bin map, wavelengths, resolution), which header
keys give the galaxy's id, position and redshift, how to recognise the file, and what to do
with an unusable celestial WCS.  A new IFU instrument is a new :class:`CubeFormat` here (or,
without code, the ``ifu_cube`` reader with every role named in the survey's options).
Spaxels, Voronoi bins (``target_snr``) and a pipeline's own bins are produced by
:mod:`skyledger.ingest.readers.cube` (the usable-spaxel rule is documented there).

Common choices:

* uncertainty: ``variance`` -> ivar = 1 / var, ``error`` -> 1 / err**2, ``ivar`` as given;
  ivar = 0 where the uncertainty is not positive or flux/uncertainty are not finite.
  Negative variance/error is an error; so is a NaN uncertainty beside a finite flux for
  formats with ``strict_uncertainty`` (all but MUSE, whose pipeline writes such pixels),
  and a cube whose uncertainty holds no positive value at all.
* wavelengths: the format's wavelength HDU when present, else the WCS (``WAVE``/``AWAV``,
  linear or ``-LOG``), else the IRAF linear keywords (CTYPE3 ``LAMBDA``/``LINEAR``,
  CRVAL3/CRPIX3/CD3_3 or CDELT3, Angstrom unless CUNIT3 says otherwise).  Medium: option
  ``medium``, else the format's fixed medium, else CTYPE3 (``AWAV`` air, ``WAVE`` vacuum);
  air is converted to vacuum and flagged AIR_TO_VACUUM.
* mask: 3-D per pixel, or 2-D per spaxel (then every pixel of the spaxel carries it); kept
  unchanged, ``bad_mask_bits`` (default: the format's) decides which bits make a pixel bad.
* an unusable celestial WCS (``celestial = 'pixel_grid'``): a warning in the file's and
  the source's meta (``warnings``) and in the log, and spaxels on a square grid of
  ``pixel_scale_arcsec`` centred on the galaxy position (header or options ``ra``/``dec``),
  north up and east left; without a centre the spaxels have no position.

The formats (names registered in :mod:`skyledger.ingest.readers`):

``muse_cube``
    MUSE ``DATACUBE_FINAL`` / Phase-3 ``SCIENCE.CUBE.IFS``: data-less primary, ``DATA``
    (flux, BUNIT e.g. ``10**(-20)*erg/s/cm**2/Angstrom``), ``STAT`` (variance), optional
    ``DQ`` (any bit bad); 3-D WCS, ``AWAV`` or ``WAVE``.  MUSE marks missing data with NaN
    in DATA and STAT (ivar 0 there).  R from the WFM line-spread function of Bacon et al.
    (2017, A&A 608, A1, eq. 8), FWHM = 5.866e-8 l^2 - 9.187e-4 l + 6.040 A on the air
    scale (option ``resolution``: ``'bacon2017'``, ``'none'`` or a number R).  Galaxy:
    OBJECT at the primary RA/DEC, z from Z/REDSHIFT.
``manga_cube``
    MaNGA DRP ``LOGCUBE``/``LINCUBE``: ``FLUX``, ``IVAR``, ``MASK`` (3-D), ``WAVE`` (1-D
    vacuum; the WCS only when absent), resolution from the first present of ``SPECRES``,
    ``PRESPECRES`` (1-D R), ``DISP``, ``LSFPOST``, ``PREDISP``, ``LSFPRE`` (3-D LSF sigma in
    Angstrom) or option ``resolution_hdu``.  Bad bits: DRP3PIXMASK NOCOV (0), DEADFIBER
    (2), FORESTAR (3), DONOTUSE (10); LOWCOV (1) pixels still count.  Galaxy PLATEIFU (else
    MANGAID, OBJECT) at OBJRA/OBJDEC (else IFURA/IFUDEC).
``sami_cube``
    SAMI Galaxy Survey DR3 cubes (Croom et al. 2021), one file per arm: flux in the
    PRIMARY (1e-16 erg/s/cm2/A/pixel), ``VARIANCE``, optional ``BIN_MASK`` (the binned
    "sectors"/"adaptive"/"annular" cubes: bin ids, 0 outside), ``QC`` table, ``DUST``
    vector; ``AWAV`` (air) with CUNIT3 Angstrom (the [m] in the CRVAL3/CDELT3 comments is
    wrong; CUNIT3 is what counts).  With a bin map every spaxel of a bin holds the bin's
    spectrum: one spectrum per bin, taken once (not summed), at the bin's centroid; each
    bin is a source ``<CATID>#bin<n>`` under the galaxy ``<CATID>`` (NAME), both shared
    between the two arm files, and the spectra are ``<CATID>#bin<n>#blue``/``#red`` (arm
    from SPECTID BL/RD, else the grating).  A bin's spectrum is its spaxels' mean, per
    spaxel (its variance falls as 1/n with the bin's size; meta ``bin_flux =
    'mean_per_spaxel'``, ``n_spaxels``: multiply for the bin's total).  Without a bin map: spaxels
    ``<CATID>#<x>_<y>#blue``.  Position: CATARA/CATADEC (the nominal IFU centre); z:
    Z_SPEC; the source meta holds ``psf_fwhm_arcsec`` (PSFFWHM, the Moffat FWHM).
    Resolution: the survey's instrumental FWHM, constant in wavelength: 2.65 A for the
    580V (blue) and 1.61 A for the 1000R (red) grating (van de Sande et al. 2017, ApJ 835,
    104, sect. 2; Scott et al. 2018, MNRAS 481, 2299; DR3 quotes R = 1808 and 4304), R =
    lambda / FWHM on the air scale.  DUST: the cubes are *not* corrected for Milky Way
    extinction; DUST holds the multiplicative correction curve (E(B-V) in EBVPLNCK and
    EBVSFD98).  It is not applied (the catalogue keeps observed fluxes); the E(B-V) values
    are kept in the source and file meta.
``gmos_cube``
    Gemini GMOS IFU cubes as written by the IRAF ``gemini`` package (``gfcube``): data-less
    primary, ``SCI`` (surface brightness, BUNIT ``erg/cm2/s/A/arcsec2``, the ``A`` read as
    Angstrom), ``ERR``, optional 2-D ``MASK`` per spaxel (non-zero = bad); IRAF linear
    spectral keywords (CTYPE3 ``LAMBDA``), air.  ``ERR`` holds the *variance*: its IMCMBnnn
    cards name extension [2] of the reduced exposures, the ``VAR`` extension of a Gemini
    reduced frame (SCI=1, VAR=2, DQ=3); an HDUCLAS3 of MSE/RMSE or option ``uncertainty``
    overrides.  (On the NGC 3081 sample SCI/sqrt(ERR) gives a median S/N of 3, SCI/ERR 8e16.)
    The celestial WCS is CTYPE ``LINEAR`` (offsets, not sky): warning, 0.1" pixels (option
    ``pixel_scale_arcsec``) centred on RA/DEC (header or options).  z: REDSHIFT.  No
    resolution in the header: option ``resolution`` (R) or none.
``nirspec_s3d``
    JWST NIRSpec IFU ``s3d`` cubes (jwst ``IFUCubeModel``): primary with TELESCOP JWST,
    INSTRUME NIRSPEC, EXP_TYPE NRS_IFU, GRATING, FILTER, TARGPROP/TARGNAME, TARG_RA/TARG_DEC;
    ``SCI`` (surface brightness, BUNIT MJy/sr, kept as given), ``ERR`` (error), ``DQ`` (JWST
    DQ bits; DO_NOT_USE, bit 0, makes a pixel bad), ``WMAP`` (not read); 3-D WCS with
    ``WAVE`` in um (vacuum).  Resolution: the grating's nominal R, constant in wavelength
    (JWST User Documentation, NIRSpec dispersers: PRISM 100, G140M/G235M/G395M 1000,
    G140H/G235H/G395H 2700); option ``resolution`` overrides.  No redshift in the file.
``ifu_cube`` (never detected)
    Every role from the options: ``data`` (HDU name or PRIMARY), one of ``variance``,
    ``error``, ``ivar``, and optionally ``mask``, ``bin_map``, ``wave_hdu``, ``medium``,
    ``resolution`` (R, or 'none'), ``resolution_hdu`` (1-D R or 3-D LSF sigma in A),
    ``pixel_scale_arcsec`` (used when the celestial WCS is unusable), ``id_key``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from skyledger.ingest.readers.base import (
    air_to_vacuum,
    check_medium,
    check_options,
    check_position,
    check_wavelength,
    file_stem,
    normalise_flux_unit,
    resolution_from_sigma,
)
from skyledger.ingest.readers.cube import (
    CUBE_OPTIONS,
    CubeLayout,
    SelectionRule,
    Slab,
    bin_map_spectra,
    cube_spectra,
    cube_wcs,
    parse_target_snr,
    spectral_axis,
)
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, header_float, open_fits, require_hdu
from skyledger.ingest.readers.nirspec_x1d import NOMINAL_R as NIRSPEC_GRATING_R
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = [
    "CubeFormat",
    "ResolutionRule",
    "IfuCubeReader",
    "muse_lsf_fwhm",
    "DRP3PIXMASK_BAD",
    "JWST_DO_NOT_USE",
    "SAMI_FWHM_ANGSTROM",
    "NIRSPEC_NOMINAL_R",
    "MUSE",
    "MANGA",
    "SAMI",
    "GMOS",
    "NIRSPEC_S3D",
    "GENERIC",
    "muse_cube",
    "manga_cube",
    "sami_cube",
    "gmos_cube",
    "nirspec_s3d",
    "ifu_cube",
]

log = logging.getLogger(__name__)

UNCERTAINTY_KINDS = ("variance", "error", "ivar")
#: DRP3PIXMASK bits that make a MaNGA pixel unusable: NOCOV | DEADFIBER | FORESTAR | DONOTUSE
DRP3PIXMASK_BAD = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 10)
#: JWST DQ bit 0: DO_NOT_USE
JWST_DO_NOT_USE = 1
#: SAMI instrumental FWHM in Angstrom per grating (van de Sande et al. 2017, sect. 2)
SAMI_FWHM_ANGSTROM = {"580V": 2.65, "1000R": 1.61}
#: nominal resolving power of the NIRSpec dispersers: the gratings' as for x1d spectra,
#: and the PRISM's nominal 100 (JWST User Documentation)
NIRSPEC_NOMINAL_R = {"PRISM": 100.0, **NIRSPEC_GRATING_R}

Header = Mapping[str, Any]


def muse_lsf_fwhm(wave: np.ndarray) -> np.ndarray:
    """MUSE WFM line-spread FWHM in Angstrom at ``wave`` (Angstrom), Bacon et al. 2017 eq. 8."""
    w = np.asarray(wave, dtype=np.float64)
    return 5.866e-8 * w**2 - 9.187e-4 * w + 6.040


@dataclass(frozen=True, slots=True)
class ResolutionRule:
    """Where a format's resolution comes from.

    ``kind``: ``'none'``; ``'constant'`` (``value`` = R); ``'function'`` (``function(wave,
    primary)`` -> R per pixel or None, ``wave`` in Angstrom on the file's own medium);
    ``'hdu'`` (the first present of ``hdus``: 1-D = R per pixel, 3-D = LSF sigma in Angstrom
    per pixel).  ``name``: the value of option ``resolution`` that selects this default
    (MUSE: ``'bacon2017'``); ``source``: the citation put into the meta.
    """

    kind: str = "none"
    value: float | None = None
    function: Callable[[np.ndarray, Header], np.ndarray | None] | None = None
    hdus: tuple[str, ...] = ()
    name: str = ""
    source: str | None = None


@dataclass(frozen=True, slots=True)
class CubeFormat:
    """How one instrument's cube file is laid out (see the module docstring for the rules)."""

    name: str
    data_hdu: str  # "PRIMARY" for a cube in the primary HDU
    uncertainty_hdu: str
    uncertainty_kind: str  # 'variance' | 'error' | 'ivar'
    #: decides the kind from the uncertainty HDU's header (None: not said there)
    uncertainty_rule: Callable[[Header], str | None] | None = None
    mask_hdu: str | None = None  # optional when absent from the file; 3-D or 2-D per spaxel
    default_bad_bits: int = -1
    bin_map_hdu: str | None = None  # optional when absent from the file
    bin_flux: str | None = None  # what a bin's spectrum is (SAMI: 'mean_per_spaxel'), into its meta
    wave_hdu: str | None = None  # used when present, else the header
    resolution: ResolutionRule = ResolutionRule()
    medium: str | None = None  # fixed 'air'/'vacuum'; None: from CTYPE3
    id_keys: tuple[str, ...] = ("OBJECT",)  # primary header, then the data header
    ra_keys: tuple[str, ...] = ("RA",)
    dec_keys: tuple[str, ...] = ("DEC",)
    z_keys: tuple[str, ...] = ("Z", "REDSHIFT")
    psf_key: str | None = None  # seeing FWHM in arcsec -> source meta psf_fwhm_arcsec
    #: sniffing: these HDUs among the first ``sniff_max_hdus`` extensions, the data HDU 3-D,
    #: and each (hdu, key, accepted value prefixes) condition true; no HDUs: never detected
    sniff_hdus: tuple[str, ...] = ()
    sniff_headers: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    sniff_max_hdus: int = 2
    celestial: str = "error"  # unusable celestial WCS: 'error' | 'pixel_grid'
    pixel_scale_arcsec: float | None = None  # for 'pixel_grid'
    strict_uncertainty: bool = True  # NaN uncertainty beside finite flux is an error
    shared_sources: bool = False  # sources shared with the survey's other files (arms)
    arm: Callable[[Header], str | None] | None = None  # spectrum id suffix '#<arm>'
    meta: Callable[[Any], dict[str, Any]] | None = None  # extra meta from the open HDU list
    options: tuple[str, ...] = ()  # accepted beyond CUBE_OPTIONS

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        if not self.sniff_hdus:
            return False
        summary = fits_summary(path, max_hdus=self.sniff_max_hdus)
        if summary is None:
            return False
        headers = {"PRIMARY": summary.primary}
        for name in self.sniff_hdus:
            if name != "PRIMARY":
                found = summary.get(name)
                if found is None:
                    return False
                headers[name] = found
        data = headers.get(self.data_hdu) if self.data_hdu in headers else summary.get(self.data_hdu)
        if data is None or int(data.get("NAXIS", 0) or 0) != 3:
            return False
        for hdu, key, accepted in self.sniff_headers:
            header = headers.get(hdu) if hdu in headers else summary.get(hdu)
            value = str(header.get(key, "")).strip().upper() if header is not None else ""
            if not any(value.startswith(a) for a in accepted):
                return False
        return True


def _shape(header: Header) -> tuple[int, ...]:
    n = int(header.get("NAXIS", 0) or 0)
    return tuple(int(header.get(f"NAXIS{i}", 0) or 0) for i in range(n, 0, -1))


def _text(header: Header, key: str) -> str | None:
    value = header.get(key)
    return str(value).strip() or None if value is not None else None


def _hdu(hdul: Any, name: str) -> Any:
    return hdul[0] if name.upper() == "PRIMARY" else hdul[name]


def _has(hdul: Any, name: str | None) -> bool:
    return name is not None and (name.upper() == "PRIMARY" or name in hdul)


def _linear_spectral_axis(path: object, header: Header, n_wave: int, hdu: str) -> np.ndarray:
    """Wavelengths in Angstrom from IRAF-style linear keywords (CTYPE3 LAMBDA/LINEAR)."""
    from astropy import units as u

    ctype = str(header.get("CTYPE3", "")).strip().upper()
    if ctype not in ("LAMBDA", "LINEAR", "WAVELENGTH", ""):
        raise ReaderError(path, f"spectral axis CTYPE3 = {ctype!r}; expected AWAV, WAVE or LAMBDA", hdu=hdu)
    start = header_float(header, "CRVAL3")
    step = header_float(header, "CD3_3", "CDELT3")
    if start is None or step is None or step <= 0:
        raise ReaderError(path, f"no linear wavelength axis: CRVAL3 = {start}, CD3_3/CDELT3 = {step}", hdu=hdu)
    ref = header_float(header, "CRPIX3") or 1.0
    try:
        unit = u.Unit(str(header.get("CUNIT3", "") or "Angstrom").strip())
        factor = (1.0 * unit).to_value(u.AA)
    except (ValueError, u.UnitConversionError) as err:
        raise ReaderError(path, f"CUNIT3 {header.get('CUNIT3')!r} is not a length: {err}", hdu=hdu) from err
    return (start + (np.arange(n_wave) + 1.0 - ref) * step) * factor


def _grid_wcs(ra: float, dec: float, n_y: int, n_x: int, scale_arcsec: float) -> Any:
    """A north-up, east-left TAN WCS of ``scale_arcsec`` pixels centred on (ra, dec)."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [(n_x + 1) / 2.0, (n_y + 1) / 2.0]
    wcs.wcs.cdelt = [-scale_arcsec / 3600.0, scale_arcsec / 3600.0]
    return wcs


class IfuCubeReader:
    """The reader of every :class:`CubeFormat`; ``generic``: the roles come from the options."""

    def __init__(self, fmt: CubeFormat, *, generic: bool = False):
        self.format = fmt
        self.name = fmt.name
        self._generic = generic

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        try:
            return self.format.sniff(path)
        except Exception:  # noqa: BLE001 - sniffing answers yes/no on arbitrary bytes
            return False

    # ------------------------------------------------------------------ options

    def _format_from_options(self, path: object, opts: dict[str, Any]) -> CubeFormat:
        fmt = self.format
        if not self._generic:
            return fmt
        if not opts.get("data"):
            raise ReaderError(path, "reader ifu_cube needs option data (the flux HDU name, or PRIMARY)")
        given = [k for k in UNCERTAINTY_KINDS if opts.get(k)]
        if len(given) != 1:
            raise ReaderError(path, f"reader ifu_cube needs exactly one of options variance, error, ivar; got {given}")
        res = ResolutionRule()
        if opts.get("resolution_hdu"):
            res = ResolutionRule(kind="hdu", hdus=(str(opts["resolution_hdu"]).upper(),), source="file")
        return replace(
            fmt,
            data_hdu=str(opts["data"]).upper(),
            uncertainty_hdu=str(opts[given[0]]).upper(),
            uncertainty_kind=given[0],
            mask_hdu=str(opts["mask"]).upper() if opts.get("mask") else None,
            bin_map_hdu=str(opts["bin_map"]).upper() if opts.get("bin_map") else None,
            wave_hdu=str(opts["wave_hdu"]).upper() if opts.get("wave_hdu") else None,
            id_keys=(str(opts["id_key"]).upper(), *fmt.id_keys) if opts.get("id_key") else fmt.id_keys,
            resolution=res,
        )

    @staticmethod
    def _uncertainty_kind(path: object, fmt: CubeFormat, header: Header, opts: Mapping[str, Any]) -> str:
        kind = opts.get("uncertainty")
        if kind is None and fmt.uncertainty_rule is not None:
            kind = fmt.uncertainty_rule(header)
        kind = str(kind or fmt.uncertainty_kind).lower()
        if kind not in UNCERTAINTY_KINDS:
            raise ReaderError(path, f"uncertainty kind must be one of {UNCERTAINTY_KINDS}, got {kind!r}")
        return kind

    @staticmethod
    def _medium(path: object, fmt: CubeFormat, ctype3: str, opts: Mapping[str, Any]) -> str:
        medium = opts.get("medium") or fmt.medium
        if medium is None:
            if ctype3.startswith("AWAV"):
                medium = "air"
            elif ctype3.startswith("WAVE"):
                medium = "vacuum"
            else:
                raise ReaderError(path, f"CTYPE3 {ctype3!r} does not say air or vacuum: give option medium")
        return check_medium(path, medium)

    @staticmethod
    def _resolution_choice(path: object, fmt: CubeFormat, hdul: Any, opts: Mapping[str, Any]) -> ResolutionRule:
        rule = fmt.resolution
        if "resolution_hdu" in opts and opts["resolution_hdu"] is not None:
            name = str(opts["resolution_hdu"]).upper()
            if name == "NONE":
                return ResolutionRule()
            if rule.hdus and name not in rule.hdus:
                raise ReaderError(path, f"option resolution_hdu must be one of {rule.hdus} or 'none', got {opts['resolution_hdu']!r}")
            if name not in hdul:
                raise ReaderError(path, "resolution HDU named by option resolution_hdu is missing", hdu=name)
            return replace(rule, kind="hdu", hdus=(name,))
        if "resolution" in opts and opts["resolution"] is not None:
            choice = opts["resolution"]
            if str(choice).lower() == "none":
                return ResolutionRule()
            if rule.name and str(choice).lower() == rule.name:
                return rule
            try:
                value = float(choice)
            except (TypeError, ValueError):
                value = float("nan")
            if not (np.isfinite(value) and value > 0):
                named = f"'{rule.name}', " if rule.name else ""
                raise ReaderError(path, f"option resolution must be {named}'none' or a positive R, got {choice!r}")
            return ResolutionRule(kind="constant", value=value, source="option resolution")
        if rule.kind == "hdu":
            present = next((n for n in rule.hdus if n in hdul), None)
            return replace(rule, hdus=(present,)) if present else ResolutionRule()
        return rule

    # ------------------------------------------------------------------ reading

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        fmt = self.format
        opts = check_options(path, options, CUBE_OPTIONS + fmt.options)
        fmt = self._format_from_options(path, opts)
        rule = SelectionRule.from_options(path, opts, default_bad_bits=fmt.default_bad_bits)
        parse_target_snr(path, opts)
        warn: list[str] = []
        with open_fits(path, streamed=True) as hdul:
            primary = hdul[0].header
            data_hdu = hdul[0] if fmt.data_hdu == "PRIMARY" else require_hdu(path, hdul, fmt.data_hdu)
            unc_hdu = require_hdu(path, hdul, fmt.uncertainty_hdu)
            header = data_hdu.header
            data_name = fmt.data_hdu
            shape = _shape(header)
            if len(shape) != 3 or min(shape) < 1:
                raise ReaderError(path, f"{data_name} must be a 3-D cube, its shape is {shape}", hdu=data_name)
            n_wave, n_y, n_x = shape
            if _shape(unc_hdu.header) != shape:
                raise ReaderError(
                    path, f"{fmt.uncertainty_hdu} shape {_shape(unc_hdu.header)} differs from {data_name} {shape}",
                    hdu=fmt.uncertainty_hdu,
                )  # fmt: skip
            kind = self._uncertainty_kind(path, fmt, unc_hdu.header, opts)
            mask_name = fmt.mask_hdu if _has(hdul, fmt.mask_hdu) else None
            if mask_name is not None and _shape(hdul[mask_name].header) not in (shape, (n_y, n_x)):
                raise ReaderError(
                    path, f"{mask_name} shape {_shape(hdul[mask_name].header)} differs from {data_name} {shape} "
                    f"and from its spatial shape {(n_y, n_x)}", hdu=mask_name,
                )  # fmt: skip
            if fmt.mask_hdu and mask_name is None and self._generic:
                raise ReaderError(path, "mask HDU named by option mask is missing", hdu=fmt.mask_hdu)
            bin_map = None
            if _has(hdul, fmt.bin_map_hdu):
                bin_map = np.asarray(hdu_data(path, hdul[fmt.bin_map_hdu]))
                if bin_map.shape != (n_y, n_x):
                    raise ReaderError(
                        path, f"{fmt.bin_map_hdu} shape {bin_map.shape} differs from the cube's spatial shape {(n_y, n_x)}",
                        hdu=fmt.bin_map_hdu,
                    )  # fmt: skip
                if not np.issubdtype(bin_map.dtype, np.integer) and (
                    not np.all(np.isfinite(bin_map)) or np.any(bin_map != np.round(bin_map))
                ):
                    raise ReaderError(path, "bin map holds non-integer bin ids", hdu=fmt.bin_map_hdu)
                bin_map = bin_map.astype(np.int64)
                if not np.any(bin_map > 0):
                    raise ReaderError(path, "bin map holds no bin (every id is 0 or negative)", hdu=fmt.bin_map_hdu)
            elif fmt.bin_map_hdu and self._generic:
                raise ReaderError(path, "bin map HDU named by option bin_map is missing", hdu=fmt.bin_map_hdu)

            # Celestial WCS (with the spectral axis when the WCS has a standard one).
            wcs = celestial = None
            try:
                wcs, celestial = cube_wcs(path, header, data_name)
            except ReaderError as err:
                if fmt.celestial != "pixel_grid":
                    raise
                warn.append(f"unusable celestial WCS ({err.problem}); spaxels placed on a "
                            "square grid centred on the galaxy position")  # fmt: skip
            ctype3 = str(header.get("CTYPE3", "")).strip().upper()
            if fmt.wave_hdu and not _has(hdul, fmt.wave_hdu) and self._generic:
                raise ReaderError(path, "wavelength HDU named by option wave_hdu is missing", hdu=fmt.wave_hdu)
            if _has(hdul, fmt.wave_hdu) and fmt.wave_hdu != "PRIMARY":
                wave = np.asarray(hdu_data(path, hdul[fmt.wave_hdu]), dtype=np.float64)
                if wave.shape != (n_wave,):
                    raise ReaderError(
                        path, f"{fmt.wave_hdu} has shape {wave.shape}, {data_name} has {n_wave} wavelengths", hdu=fmt.wave_hdu
                    )  # fmt: skip
            elif ctype3.startswith(("WAVE", "AWAV")):
                if wcs is None:
                    from astropy.wcs import WCS

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        wcs = WCS(header)
                wave, ctype3 = spectral_axis(path, wcs, n_wave, data_name)
            else:
                wave = _linear_spectral_axis(path, header, n_wave, data_name)
            medium = self._medium(path, fmt, ctype3, opts)
            wave_file = check_wavelength(path, wave, hdu=fmt.wave_hdu if _has(hdul, fmt.wave_hdu) else data_name)
            vac = check_wavelength(path, air_to_vacuum(wave_file) if medium == "air" else wave_file, hdu=data_name)

            res = self._resolution_choice(path, fmt, hdul, opts)
            resolution_1d = None
            sigma_hdu = None
            if res.kind == "constant":
                resolution_1d = np.full(n_wave, res.value, dtype=np.float32)
            elif res.kind == "function" and res.function is not None:
                out = res.function(wave_file, primary)
                resolution_1d = None if out is None else np.asarray(out, dtype=np.float32)
                if resolution_1d is None:
                    warn.append("no resolution known for this set-up")
            elif res.kind == "hdu":
                (res_name,) = res.hdus
                res_shape = _shape(hdul[res_name].header)
                if len(res_shape) == 1:
                    resolution_1d = np.asarray(hdu_data(path, hdul[res_name]), dtype=np.float32)
                    if resolution_1d.shape != (n_wave,):
                        raise ReaderError(path, f"shape {resolution_1d.shape} differs from ({n_wave},)", hdu=res_name)
                elif res_shape == shape:
                    sigma_hdu = res_name
                else:
                    raise ReaderError(path, f"shape {res_shape} differs from {data_name} {shape}", hdu=res_name)

            galaxy_id = str(
                opts.get("object_id")
                or next((primary[k] for k in fmt.id_keys if _text(primary, k)), None)
                or next((header[k] for k in fmt.id_keys if _text(header, k)), None)
                or file_stem(path)
            ).strip()
            ra, dec = check_position(
                path,
                opts.get("ra", header_float(primary, *fmt.ra_keys)),
                opts.get("dec", header_float(primary, *fmt.dec_keys)),
                what=galaxy_id,
                hdu="PRIMARY",
            )
            z = opts.get("z", header_float(primary, *fmt.z_keys))
            if celestial is None:
                scale = opts.get("pixel_scale_arcsec", fmt.pixel_scale_arcsec)
                if ra is None or scale is None:
                    warn.append("no galaxy position or pixel scale: spaxels have no position")
                else:
                    try:
                        scale = float(scale)
                    except (TypeError, ValueError):
                        scale = float("nan")
                    if not (np.isfinite(scale) and scale > 0):
                        raise ReaderError(path, f"option pixel_scale_arcsec must be positive, got {opts['pixel_scale_arcsec']!r}")
                    celestial = _grid_wcs(ra, dec, n_y, n_x, scale)
                    warn.append(f"pixel scale {scale} arcsec assumed")
            bunit = str(header.get("BUNIT", "")).strip() or None
            # normalise_flux_unit drops SAMI's "/pixel" and reads GMOS's "A" as Angstrom.
            flux_unit = opts.get("flux_unit") or normalise_flux_unit(bunit)
            arm = fmt.arm(primary) if fmt.arm else None
            meta: dict[str, Any] = {
                "instrument": _text(primary, "INSTRUME"),
                "wavelength_medium_in_file": medium,
                "shape": [n_wave, n_y, n_x],
                "uncertainty": f"{fmt.uncertainty_hdu} ({kind})",
                "resolution_source": res.source if (resolution_1d is not None or sigma_hdu) else None,
                "flux_unit_in_file": bunit,
            }
            if fmt.resolution.kind == "hdu" or res.kind == "hdu":
                meta["resolution_hdu"] = res.hdus[0] if res.kind == "hdu" else None
            if fmt.meta is not None:
                meta.update(fmt.meta(hdul))
            if arm:
                meta["arm"] = arm
            if warn:
                meta["warnings"] = warn
                for text in warn:
                    log.warning("%s: %s", path, text)
        source_meta = {k: v for k, v in meta.items() if k not in ("arm", "shape", "resolution_source")}
        source_meta["kind"] = "ifu_target"
        if fmt.psf_key and header_float(primary, fmt.psf_key) is not None:
            source_meta["psf_fwhm_arcsec"] = header_float(primary, fmt.psf_key)
        sources = [SourceRow(galaxy_id, ra, dec, z, meta=source_meta, shared=fmt.shared_sources)]
        bin_source = None
        if bin_map is not None:
            sources += self._bin_sources(galaxy_id, bin_map, celestial, z, fmt.shared_sources)

            def bin_source(b: int) -> str:
                return f"{galaxy_id}#bin{b}"

        layout_meta: dict[str, Any] = {"arm": arm} if arm else {}
        if bin_map is not None and fmt.bin_flux:
            layout_meta["bin_flux"] = fmt.bin_flux
        spectra = self._stream(
            str(path), fmt, kind, mask_name, sigma_hdu, bin_map, bin_source,
            CubeLayout(
                path=str(path), hdu=data_name, galaxy_id=galaxy_id, wave=vac, n_y=n_y, n_x=n_x,
                celestial=celestial, read_slab=_unset, resolution=resolution_1d, flux_unit=flux_unit, z=z,
                meta=layout_meta, id_suffix=f"#{arm}" if arm else "",
            ),
            opts, rule,
        )  # fmt: skip
        return FileContents(reader=self.name, sources=sources, spectra=spectra, meta=meta)

    @staticmethod
    def _bin_sources(galaxy_id: str, bin_map: np.ndarray, celestial: Any, z: Any, shared: bool) -> list[SourceRow]:
        rows = []
        for b in (int(v) for v in np.unique(bin_map) if v > 0):
            ys, xs = np.nonzero(bin_map == b)
            ra = dec = None
            if celestial is not None:
                r, d = celestial.pixel_to_world_values(float(xs.mean()), float(ys.mean()))
                ra, dec = float(np.mod(r, 360.0)), float(d)
            meta = {"kind": "bin", "bin": b, "n_spaxels": int(ys.size),
                    "x_centroid": float(xs.mean()), "y_centroid": float(ys.mean())}  # fmt: skip
            rows.append(SourceRow(f"{galaxy_id}#bin{b}", ra, dec, z, parent_object_id=galaxy_id, meta=meta, shared=shared))
        return rows

    @staticmethod
    def _stream(
        path: str,
        fmt: CubeFormat,
        kind: str,
        mask_name: str | None,
        sigma_hdu: str | None,
        bin_map: np.ndarray | None,
        bin_source: Callable[[int], str] | None,
        layout: CubeLayout,
        opts: Mapping[str, Any],
        rule: SelectionRule,
    ) -> Iterator[SpectrumRow]:
        # Re-opened here so that the file is open exactly as long as the loader iterates.
        with open_fits(path, streamed=True) as hdul:
            data = _array(path, _hdu(hdul, fmt.data_hdu))
            unc = _array(path, hdul[fmt.uncertainty_hdu])
            mask = _array(path, hdul[mask_name]) if mask_name else None
            sigma = _array(path, hdul[sigma_hdu]) if sigma_hdu else None
            positive = [False]

            def read_slab(y0: int, y1: int) -> Slab:
                flux = np.asarray(data[:, y0:y1, :], dtype=np.float32)
                u = np.asarray(unc[:, y0:y1, :], dtype=np.float32)
                m = None
                if mask is not None:
                    m = np.asarray(mask[:, y0:y1, :] if mask.ndim == 3 else
                                   np.broadcast_to(np.asarray(mask[y0:y1, :])[None], flux.shape)).astype(np.int32)  # fmt: skip
                where = f"rows {y0}-{y1 - 1}"
                if fmt.strict_uncertainty:
                    # A pixel with a flux but no uncertainty is damage, unless the mask
                    # already marks it bad (JWST may leave SCI in DO_NOT_USE pixels).
                    unexplained = np.isfinite(flux) & ~np.isfinite(u)
                    if m is not None and rule.bad_mask_bits != 0:
                        unexplained &= (m & np.int64(rule.bad_mask_bits)) == 0
                    if np.any(unexplained):
                        raise ReaderError(path, f"NaN/inf {kind} where the flux is finite in {where}", hdu=fmt.uncertainty_hdu)
                if kind != "ivar":
                    if np.any(u < 0):
                        raise ReaderError(path, f"negative {kind} in {where}", hdu=fmt.uncertainty_hdu)
                    ok = np.isfinite(flux) & np.isfinite(u) & (u > 0)
                    with np.errstate(divide="ignore", over="ignore"):
                        ivar = np.where(ok, 1.0 / (u if kind == "variance" else u * u), 0.0).astype(np.float32)
                    ivar[~np.isfinite(ivar)] = 0.0  # an error so small that 1/err^2 overflows float32
                else:
                    ivar = np.where(np.isfinite(u), u, np.float32(0.0)) if fmt.strict_uncertainty else u
                positive[0] = positive[0] or bool(np.any(ivar > 0))
                res3 = None
                if sigma is not None:
                    res3 = resolution_from_sigma(layout.wave[:, None, None], sigma[:, y0:y1, :])
                return Slab(flux=flux, ivar=ivar, mask=m, resolution=res3)

            layout.read_slab = read_slab
            if bin_map is not None and parse_target_snr(path, opts) is None:
                yield from bin_map_spectra(layout, bin_map, opts, rule, bin_source=bin_source)
            else:
                yield from cube_spectra(layout, opts, rule)
            if fmt.strict_uncertainty and not positive[0]:
                raise ReaderError(path, f"{fmt.uncertainty_hdu} holds no positive {kind}: no pixel has data", hdu=fmt.uncertainty_hdu)


class _Scaled:
    """Rows of a memory-mapped integer image stored with BZERO/BSCALE, scaled on slicing
    (astropy refuses to memory-map such an image; JWST writes its uint32 DQ this way)."""

    def __init__(self, raw: np.ndarray, bzero: float, bscale: float):
        self.raw, self.bzero, self.bscale, self.ndim = raw, bzero, bscale, raw.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        part = np.asarray(self.raw[key], dtype=np.int64)
        if self.bscale == 1 and float(self.bzero).is_integer():
            return part + int(self.bzero)
        return part * self.bscale + self.bzero


def _array(path: object, hdu: Any) -> Any:
    """An HDU's data for slicing; a scaled integer image of a memory-mapped file is mapped raw."""
    header = hdu.header
    scaled = ("BZERO" in header or "BSCALE" in header) and int(header.get("BITPIX", 0)) > 0
    info = hdu.fileinfo() if scaled else None
    if not scaled or info is None or not isinstance(getattr(info["file"], "name", None), str) or not info["file"].memmap:
        return hdu_data(path, hdu)
    dims = tuple(int(header[f"NAXIS{i}"]) for i in range(int(header["NAXIS"]), 0, -1))
    raw = np.memmap(info["file"].name, dtype=f">i{int(header['BITPIX']) // 8}", mode="r", offset=info["datLoc"], shape=dims)
    return _Scaled(raw, float(header.get("BZERO", 0.0)), float(header.get("BSCALE", 1.0)))


def _unset(y0: int, y1: int) -> Slab:
    raise RuntimeError("read_slab is set when the cube is streamed")


# --------------------------------------------------------------------------- the formats


def _muse_resolution(wave: np.ndarray, primary: Header) -> np.ndarray:
    # The LSF is defined on MUSE's own (air) wavelength scale.
    return wave / muse_lsf_fwhm(wave)


MUSE = CubeFormat(
    name="muse_cube",
    data_hdu="DATA",
    uncertainty_hdu="STAT",
    uncertainty_kind="variance",
    mask_hdu="DQ",
    default_bad_bits=-1,
    resolution=ResolutionRule("function", function=_muse_resolution, name="bacon2017", source="Bacon et al. 2017 eq. 8"),
    id_keys=("OBJECT",),
    ra_keys=("RA",),
    dec_keys=("DEC",),
    z_keys=("Z", "REDSHIFT"),
    sniff_hdus=("DATA", "STAT"),
    sniff_headers=(("DATA", "CTYPE3", ("WAVE", "AWAV")),),
    strict_uncertainty=False,  # the pipeline writes NaN where it has no data
    options=("resolution",),
)


def _manga_meta(hdul: Any) -> dict[str, Any]:
    primary = hdul[0].header
    return {
        "mangaid": _text(primary, "MANGAID"),
        "plateifu": _text(primary, "PLATEIFU"),
        "drpver": str(primary.get("VERSDRP3", primary.get("DRPVER", ""))).strip() or None,
        "drp3qual": int(primary["DRP3QUAL"]) if "DRP3QUAL" in primary else None,
    }


MANGA = CubeFormat(
    name="manga_cube",
    data_hdu="FLUX",
    uncertainty_hdu="IVAR",
    uncertainty_kind="ivar",
    mask_hdu="MASK",
    default_bad_bits=DRP3PIXMASK_BAD,
    wave_hdu="WAVE",
    resolution=ResolutionRule("hdu", hdus=("SPECRES", "PRESPECRES", "DISP", "LSFPOST", "PREDISP", "LSFPRE"), source="file"),
    medium="vacuum",
    id_keys=("PLATEIFU", "MANGAID", "OBJECT"),
    ra_keys=("OBJRA", "IFURA"),
    dec_keys=("OBJDEC", "IFUDEC"),
    z_keys=("Z",),
    sniff_hdus=("FLUX", "IVAR"),  # HDUs 1 and 2 of a LOGCUBE
    sniff_headers=(("FLUX", "CTYPE3", ("WAVE", "AWAV")),),
    strict_uncertainty=False,
    meta=_manga_meta,
    options=("resolution_hdu", "medium"),
)


def _sami_arm(primary: Header) -> str | None:
    spectid = str(primary.get("SPECTID", "")).strip().upper()
    grating = str(primary.get("GRATID", "")).strip().upper()
    if spectid == "BL" or grating == "580V":
        return "blue"
    if spectid == "RD" or grating == "1000R":
        return "red"
    return None


def _sami_resolution(wave: np.ndarray, primary: Header) -> np.ndarray | None:
    fwhm = SAMI_FWHM_ANGSTROM.get(str(primary.get("GRATID", "")).strip().upper())
    return None if fwhm is None else wave / fwhm


def _sami_meta(hdul: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"grating": _text(hdul[0].header, "GRATID")}
    if "DUST" in hdul:
        dust = hdul["DUST"].header
        meta["dust"] = {
            "applied": False,
            "ebv_planck": header_float(dust, "EBVPLNCK"),
            "ebv_sfd98": header_float(dust, "EBVSFD98"),
            "note": "flux not corrected for Milky Way extinction; DUST holds the multiplicative correction",
        }
    return meta


SAMI = CubeFormat(
    name="sami_cube",
    data_hdu="PRIMARY",
    uncertainty_hdu="VARIANCE",
    uncertainty_kind="variance",
    bin_map_hdu="BIN_MASK",
    bin_flux="mean_per_spaxel",
    resolution=ResolutionRule(
        "function", function=_sami_resolution, name="sami", source="van de Sande et al. 2017 (FWHM 2.65 A blue, 1.61 A red)"
    ),
    id_keys=("NAME", "OBJECT"),
    ra_keys=("CATARA", "CRVAL1"),
    dec_keys=("CATADEC", "CRVAL2"),
    z_keys=("Z_SPEC",),
    psf_key="PSFFWHM",
    # "/pixel" is per spaxel (0.5" x 0.5"), bookkeeping like MaNGA's "/spaxel"
    sniff_hdus=("PRIMARY", "VARIANCE"),
    sniff_headers=(("PRIMARY", "INSTRUME", ("AAOMEGA-SAMI",)), ("PRIMARY", "CTYPE3", ("AWAV", "WAVE"))),
    shared_sources=True,
    arm=_sami_arm,
    meta=_sami_meta,
    options=("resolution", "medium"),
)


def _gmos_uncertainty(header: Header) -> str | None:
    hduclas3 = str(header.get("HDUCLAS3", "")).strip().upper()
    if hduclas3 in ("MSE", "VARIANCE"):
        return "variance"
    if hduclas3 in ("RMSE", "ERROR"):
        return "error"
    # gfcube combines extension [2] of the reduced frames: their VAR extension.
    if str(header.get("IMCMB001", "")).strip().endswith("[2]"):
        return "variance"
    return None


GMOS = CubeFormat(
    name="gmos_cube",
    data_hdu="SCI",
    uncertainty_hdu="ERR",
    uncertainty_kind="variance",
    uncertainty_rule=_gmos_uncertainty,
    mask_hdu="MASK",
    default_bad_bits=-1,
    medium="air",
    id_keys=("OBJECT",),
    ra_keys=("RA",),
    dec_keys=("DEC",),
    z_keys=("REDSHIFT", "Z"),
    sniff_hdus=("SCI", "ERR"),
    sniff_headers=(("SCI", "CTYPE3", ("LAMBDA",)),),
    celestial="pixel_grid",
    pixel_scale_arcsec=0.1,
    options=("resolution", "medium", "uncertainty", "pixel_scale_arcsec"),
)


def _nirspec_resolution(wave: np.ndarray, primary: Header) -> np.ndarray | None:
    r = NIRSPEC_NOMINAL_R.get(str(primary.get("GRATING", "")).strip().upper())
    return None if r is None else np.full(wave.shape, r)


def _nirspec_meta(hdul: Any) -> dict[str, Any]:
    p = hdul[0].header
    return {"grating": _text(p, "GRATING"), "filter": _text(p, "FILTER"), "exp_type": _text(p, "EXP_TYPE")}


NIRSPEC_S3D = CubeFormat(
    name="nirspec_s3d",
    data_hdu="SCI",
    uncertainty_hdu="ERR",
    uncertainty_kind="error",
    mask_hdu="DQ",
    default_bad_bits=JWST_DO_NOT_USE,
    resolution=ResolutionRule(
        "function", function=_nirspec_resolution, name="nominal", source="JWST User Documentation: NIRSpec nominal R per grating"
    ),
    id_keys=("TARGPROP", "TARGNAME"),
    ra_keys=("TARG_RA",),
    dec_keys=("TARG_DEC",),
    z_keys=(),
    sniff_hdus=("PRIMARY", "SCI", "ERR"),
    sniff_headers=(
        ("PRIMARY", "TELESCOP", ("JWST",)),
        ("PRIMARY", "INSTRUME", ("NIRSPEC",)),
        ("PRIMARY", "EXP_TYPE", ("NRS_IFU",)),
    ),
    meta=_nirspec_meta,
    options=("resolution",),
)

GENERIC = CubeFormat(
    name="ifu_cube",
    data_hdu="PRIMARY",
    uncertainty_hdu="",
    uncertainty_kind="variance",
    id_keys=("OBJECT",),
    celestial="pixel_grid",
    options=(
        "data", "variance", "error", "ivar", "mask", "bin_map", "wave_hdu", "medium",
        "resolution", "resolution_hdu", "pixel_scale_arcsec", "id_key",
    ),
)  # fmt: skip

#: the registered instances
muse_cube = IfuCubeReader(MUSE)
manga_cube = IfuCubeReader(MANGA)
sami_cube = IfuCubeReader(SAMI)
gmos_cube = IfuCubeReader(GMOS)
nirspec_s3d = IfuCubeReader(NIRSPEC_S3D)
ifu_cube = IfuCubeReader(GENERIC, generic=True)
