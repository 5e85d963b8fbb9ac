"""2-D velocity maps (FITS images): one child source per valid pixel, the galaxy as parent.

Layout read: image extensions ``VEL`` and ``VEL_ERR`` (or ``VEL_IVAR``), optionally
``SIGMA``, ``SIGMA_ERR`` (or ``_IVAR``), ``FLUX``, ``FLUX_ERR`` (or ``_IVAR``) and
``MASK`` (non-zero = bad pixel), all of one shape, NaN where a pixel has no value.  The
``VEL`` header holds a celestial WCS (CD matrix, or CDELT with PC or CROTA2); pixel
positions are the centres of the pixels, converted to ICRS from the WCS's frame.
Velocities are in km/s unless the extension's BUNIT says otherwise (m/s ...).

A pixel is *valid* when VEL is finite, its error is finite and > 0 and MASK (if any) is
0.  Each valid pixel becomes a source ``<galaxy>#<x>_<y>`` (0-based pixel indices, as for
cube spaxels) whose parent is the galaxy, and a pixel-less spectrum at the pixel's
position with ``z`` = the galaxy redshift and one :class:`LineMeasurement`: ``line`` =
option ``line`` (default ``HA6563``), or ``STELLAR`` with ``component = "stars"``;
``velocity`` relative to the galaxy redshift; ``sigma`` (None where SIGMA is NaN or
negative); ``flux``/``flux_err`` (None without a FLUX extension).  Sigma is stored as
the file gives it (a dispersion in km/s is the same in every frame; no instrumental
correction is applied here).

Velocity conventions recognised, in this order:

1. option ``velocity_reference``: ``"systemic"`` (already relative to the galaxy
   redshift), ``"cz"`` (absolute c z_obs) or a number z_ref (relative to that redshift);
2. a string ``VELREF`` card in the VEL or primary header: ``SYSTEMIC`` (also
   ``GALAXY``, ``REST``, ``SYSTEM``) or ``CZ`` (also ``ABSOLUTE``, ``OBSERVED``,
   ``BARYCENTRIC``, ``HELIOCENTRIC``); an integer VELREF is the AIPS spectral-frame code,
   which says nothing about the zero point, and is ignored;
3. a ``SCINPVEL`` card (MaNGA DAP MAPS: c z of the input redshift the velocities are
   measured from): relative to z_ref = SCINPVEL / c;
4. otherwise ``systemic``, unless the map's median velocity exceeds 1000 km/s, which no
   rotating disk gives relative to its own redshift: then the file is rejected and the
   error says to set ``velocity_reference``.

Conversion to the galaxy frame, with z the galaxy redshift: an observed redshift
z_obs = v / c (cz) or z_ref + (v / c)(1 + z_ref) (relative to z_ref) becomes
v = c (z_obs - z) / (1 + z); errors scale by the same factor.

The galaxy: ``object_id`` option, else OBJECT or PLATEIFU card, else the file name; its
position the ``ra``/``dec`` options, else OBJRA/OBJDEC (or RA_OBJ/DEC_OBJ, OBJ_RA/OBJ_DEC;
degrees or sexagesimal strings), else the WCS reference point (CRVAL); its redshift the
``z`` option, else a Z (REDSHIFT, Z_GAL, Z_SYS, NSA_Z) card, else a c z card (VSYS, CZ,
SCINPVEL) divided by c.  No redshift anywhere rejects the file.

Other options: ``extensions`` maps roles to the file's HDU names
(``{ VEL = "HA_V", VEL_ERR = "HA_EV" }``); a 3-D HDU is read one plane at a time with
``"NAME:CHANNEL"``, CHANNEL a 1-based index or a name from the HDU's ``Cnn`` cards
(``{ VEL = "EMLINE_GVEL:Ha-6564", VEL_IVAR = "EMLINE_GVEL_IVAR:Ha-6564" }``).
``flux_unit`` when the FLUX extension has no usable BUNIT.  ``psf_fwhm_arcsec`` (the
seeing of the survey's maps) is not used here but read by the ``rotation`` task from the
survey's options; it must be a positive number.

The PSF of one map, when its header gives it (VEL header first, then the primary), goes
into the galaxy source's meta as ``psf_fwhm_arcsec`` (with ``psf_source``, the card),
where the ``rotation`` task takes it before the survey option: the first of PSFFWHM,
PSF_FWHM, FWHM_PSF, SEEING (FWHM in arcsec) and BMAJ (a radio-style beam in degrees:
with BMIN the geometric mean sqrt(BMAJ BMIN), the FWHM of the circular beam of the same
area, else BMAJ).  A card that is not a positive number is ignored with a note in
``header_fixes`` (the velocities stay usable; the survey option, if any, applies).

Messy headers are read leniently and every repair is listed in
``FileContents.meta["header_fixes"]`` (and in the galaxy source's meta): a ``BLANK``
card on a float image or with a non-integer value (``BLANK = nan``, which astropy
refuses to open) is removed; string-valued WCS numbers (``CDELT1 = '-5.5E-5'``) become
numbers; malformed celestial CTYPEs (``RA--TAN``, ``RA``) are rebuilt; whatever
astropy.wcs repairs itself (``RADECSYS``, ``DEGREE`` units, ...) is reported.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS
from astropy.wcs.utils import wcs_to_celestial_frame

from skyledger.schema.linelist import LINES
from skyledger.ingest.readers.base import check_options, check_position, file_stem, normalise_flux_unit
from skyledger.ingest.readers.fits_access import check_hdu_size
from skyledger.ingest.readers.lenient_fits import (
    celestial_wcs,
    fix_blank_cards,
    fix_wcs_header,
    header_lookup,
    is_gzip,
    lenient_angle,
    lenient_float,
    read_fits_bytes,
    scan_headers,
    starts_like_fits,
)
from skyledger.ingest.readers.map_images import Image, error_map, read_image, velocity_errors, velocity_factor
from skyledger.ingest.records import FileContents, LineMeasurement, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["VelocityMapReader", "reader", "ROLES", "STELLAR_LINE", "C_KMS"]

C_KMS = 299_792.458
#: line id of the measurements of a stellar velocity map (``component = "stars"``)
STELLAR_LINE = "STELLAR"
#: every role an extension can play, with the EXTNAMEs looked for by default
ROLES: dict[str, tuple[str, ...]] = {
    "VEL": ("VEL", "VELOCITY"),
    "VEL_ERR": ("VEL_ERR", "VEL_ERROR", "EVEL", "E_VEL"),
    "VEL_IVAR": ("VEL_IVAR",),
    "SIGMA": ("SIGMA", "DISP", "VDISP"),
    "SIGMA_ERR": ("SIGMA_ERR", "SIGMA_ERROR", "ESIGMA", "E_SIGMA"),
    "SIGMA_IVAR": ("SIGMA_IVAR",),
    "FLUX": ("FLUX",),
    "FLUX_ERR": ("FLUX_ERR", "FLUX_ERROR", "EFLUX", "E_FLUX"),
    "FLUX_IVAR": ("FLUX_IVAR",),
    "MASK": ("MASK",),
}
_OPTIONS = (
    "object_id", "ra", "dec", "z", "line", "component", "velocity_reference", "extensions", "flux_unit",
    "psf_fwhm_arcsec",
)  # fmt: skip
#: sniffing a gzipped file decompresses it up to here at most
_SNIFF_GZIP_BYTES = 64 * 1024**2
_SNIFF_HDUS = 16
#: |median velocity| beyond which "relative to the galaxy" cannot be right
_SYSTEMIC_LIMIT_KMS = 1000.0
_SYSTEMIC_WORDS = ("SYSTEMIC", "GALAXY", "REST", "SYSTEM")
_CZ_WORDS = ("CZ", "ABSOLUTE", "OBSERVED", "BARYCENTRIC", "HELIOCENTRIC")
_Z_CARDS = ("Z", "REDSHIFT", "Z_GAL", "ZGAL", "Z_SYS", "ZSYS", "NSA_Z")
_CZ_CARDS = ("VSYS", "CZ", "SCINPVEL")
#: cards giving the PSF FWHM in arcsec, in order of preference; BMAJ/BMIN (degrees) after them
_PSF_CARDS = ("PSFFWHM", "PSF_FWHM", "FWHM_PSF", "SEEING")
_POSITION_CARDS = (("OBJRA", "OBJDEC"), ("RA_OBJ", "DEC_OBJ"), ("OBJ_RA", "OBJ_DEC"))


@dataclass(slots=True)
class _Convention:
    name: str  # systemic, cz, reference
    source: str  # where it came from
    z_ref: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the reader


class VelocityMapReader:
    """Reader of 2-D velocity maps (VEL, VEL_ERR, ... image extensions with a celestial WCS)."""

    name = "velocity_map"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        try:
            p = Path(path)
            gz = is_gzip(p)
            opener = gzip.open if gz else open
            with opener(p, "rb") as fh:
                if not starts_like_fits(fh.read(80)):
                    return False
                hdus = scan_headers(fh, max_hdus=_SNIFF_HDUS, max_offset=_SNIFF_GZIP_BYTES if gz else None)
        except (OSError, EOFError, zlib.error, ValueError):
            return False
        for hdu in hdus:
            dims = tuple(d for d in hdu.naxis if d != 1)
            if hdu.is_image and hdu.extname in ROLES["VEL"] and len(dims) == 2:
                return True
        return False

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        path = Path(path)
        opts = check_options(path, options, _OPTIONS)
        line = self._line(path, opts)
        specs = self._extension_specs(path, opts.get("extensions") or {})
        raw, fixes = fix_blank_cards(read_fits_bytes(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyWarning)
            try:
                hdul = fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False)
            except (OSError, ValueError, EOFError, TypeError, IndexError, KeyError) as err:
                raise ReaderError(path, f"not a readable FITS file: {err}") from err
        with hdul:
            for hdu in hdul:
                check_hdu_size(path, hdu, file_size=len(raw))
            if len(raw) % 2880 != 0:
                raise ReaderError(
                    path, f"length {len(raw)} is not a whole number of 2880-byte FITS blocks: truncated file"
                )
            images = self._images(path, hdul, specs, fixes)
            primary = hdul[0].header
        vel = images["VEL"]
        headers = [vel.header, primary]
        celestial = celestial_wcs(path, fix_wcs_header(vel.header, vel.hdu_name, fixes), vel.hdu_name, fixes)

        galaxy_id = str(
            opts.get("object_id") or (header_lookup(headers, ("OBJECT", "PLATEIFU")) or (None, file_stem(path)))[1]
        ).strip() or file_stem(path)
        z, z_source = self._redshift(path, opts, headers)
        convention = self._convention(path, opts, headers)
        ra, dec, position_source = self._galaxy_position(path, opts, headers, celestial, galaxy_id)

        v_factor = velocity_factor(path, vel.header, vel.hdu_name, fixes)
        velocity = vel.data * v_factor
        velocity_err = velocity_errors(path, images.get("VEL_ERR") or images["VEL_IVAR"], v_factor, fixes)
        valid = np.isfinite(velocity) & np.isfinite(velocity_err)
        if "MASK" in images:
            mask = images["MASK"].data
            valid &= np.isfinite(mask) & (mask == 0)
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise ReaderError(
                path,
                "no valid pixel: VEL (with a finite error > 0 and MASK = 0) is missing everywhere",
                hdu=vel.hdu_name,
            )
        velocity, velocity_err = self._to_galaxy_frame(path, convention, z, velocity, velocity_err, valid, vel.hdu_name)

        sigma = sigma_err = None
        if "SIGMA" in images:
            s_img = images["SIGMA"]
            s_factor = velocity_factor(path, s_img.header, s_img.hdu_name, fixes)
            sigma = s_img.data * s_factor
            sigma = np.where(np.isfinite(sigma) & (sigma >= 0), sigma, np.nan)
            se_img = images.get("SIGMA_ERR") or images.get("SIGMA_IVAR")
            if se_img is not None:
                sigma_err = velocity_errors(path, se_img, s_factor, fixes)
        flux = flux_err = None
        flux_unit = opts.get("flux_unit")
        if "FLUX" in images:
            flux = images["FLUX"].data
            flux_unit = flux_unit or normalise_flux_unit(images["FLUX"].header.get("BUNIT"))
            fe_img = images.get("FLUX_ERR") or images.get("FLUX_IVAR")
            if fe_img is not None:
                flux_err = error_map(path, fe_img, ivar=fe_img.role.endswith("IVAR"))

        ys, xs = np.nonzero(valid)
        ra_pix, dec_pix = self._pixel_positions(path, celestial, xs, ys, vel.hdu_name)
        sources: list[SourceRow] = []
        spectra: list[SpectrumRow] = []

        def value(arr: np.ndarray | None, y: int, x: int) -> float | None:
            if arr is None:
                return None
            v = float(arr[y, x])
            return v if math.isfinite(v) else None

        for k, (y, x) in enumerate(zip(ys.tolist(), xs.tolist(), strict=True)):
            oid = f"{galaxy_id}#{x}_{y}"
            s = value(sigma, y, x)
            f = value(flux, y, x)
            measurement = LineMeasurement(
                line=line,
                flux=f,
                flux_err=None if f is None else value(flux_err, y, x),
                velocity=float(velocity[y, x]),
                velocity_err=float(velocity_err[y, x]),
                sigma=s,
                sigma_err=None if s is None else value(sigma_err, y, x),
            )
            pixel_meta = {"kind": "map_pixel", "x": x, "y": y}
            p_ra, p_dec = float(ra_pix[k]), float(dec_pix[k])
            sources.append(SourceRow(oid, p_ra, p_dec, z=z, parent_object_id=galaxy_id, meta=pixel_meta))
            spectra.append(
                SpectrumRow(
                    object_id=oid, source_object_id=oid, ra=p_ra, dec=p_dec, z=z,
                    flux_unit=flux_unit if flux is not None else None, lines=[measurement], meta=dict(pixel_meta),
                )
            )  # fmt: skip
        meta: dict[str, Any] = {
            "kind": "velocity_map",
            "line": line,
            "component": "stars" if line == STELLAR_LINE else "gas",
            "shape": list(vel.data.shape),
            "n_valid_pixels": n_valid,
            "extensions": {role: img.hdu_name for role, img in images.items()},
            "velocity_reference": convention.name,
            "velocity_reference_source": convention.source,
            "reference_z": convention.z_ref,
            "z_source": z_source,
            "position_source": position_source,
            "header_fixes": fixes,
        }
        psf = self._psf(headers, fixes)
        if psf is not None:
            meta["psf_fwhm_arcsec"], meta["psf_source"] = psf
        galaxy = SourceRow(galaxy_id, ra, dec, z=z, meta={**meta, "kind": "velocity_map_target"})
        return FileContents(reader=self.name, sources=[galaxy, *sources], spectra=iter(spectra), meta=meta)

    # ------------------------------------------------------------------ options

    @staticmethod
    def _line(path: Path, opts: Mapping[str, Any]) -> str:
        component = str(opts.get("component", "gas")).strip().lower()
        if component not in ("gas", "stars"):
            raise ReaderError(path, f"option component must be 'gas' or 'stars', got {component!r}")
        if component == "stars":
            if "line" in opts:
                raise ReaderError(
                    path, f"option line = {opts['line']!r} contradicts component = 'stars' (stored as {STELLAR_LINE})"
                )
            return STELLAR_LINE
        line = str(opts.get("line", "HA6563")).strip().upper()
        if line not in LINES:
            raise ReaderError(path, f"option line = {line!r} is not a known line id; known: {', '.join(LINES)}")
        return line

    @staticmethod
    def _extension_specs(path: Path, mapping: Any) -> dict[str, str]:
        if not isinstance(mapping, Mapping):
            raise ReaderError(path, f"option extensions must be a table of role = HDU name, got {mapping!r}")
        specs: dict[str, str] = {}
        for role, spec in mapping.items():
            key = str(role).strip().upper()
            if key not in ROLES:
                raise ReaderError(path, f"option extensions names an unknown role {role!r}; roles: {', '.join(ROLES)}")
            if not isinstance(spec, str) or not spec.strip():
                raise ReaderError(path, f"option extensions: {role} must name an HDU, got {spec!r}")
            specs[key] = spec.strip()
        return specs

    @staticmethod
    def _images(path: Path, hdul: fits.HDUList, specs: dict[str, str], fixes: list[str]) -> dict[str, Image]:
        images: dict[str, Image] = {}
        for role, defaults in ROLES.items():
            spec = specs.get(role) or next((name for name in defaults if name in hdul), None)
            if spec is not None:
                images[role] = read_image(path, hdul, role, spec, fixes)
        if "VEL" not in images:
            present = [h.name for h in hdul]
            raise ReaderError(
                path,
                f"no velocity extension (looked for {list(ROLES['VEL'])}); HDUs present: {present}; "
                "name yours with extensions = { VEL = \"NAME\" }",
                hdu="VEL",
            )
        if "VEL_ERR" not in images and "VEL_IVAR" not in images:
            raise ReaderError(
                path,
                f"no velocity error extension (looked for {list(ROLES['VEL_ERR'] + ROLES['VEL_IVAR'])}); "
                "name yours with extensions = { VEL_ERR = \"NAME\" }",
                hdu="VEL_ERR",
            )
        shape = images["VEL"].data.shape
        for image in images.values():
            if image.data.shape != shape:
                raise ReaderError(
                    path, f"{image.role} has shape {image.data.shape}, VEL has {shape}", hdu=image.hdu_name
                )
        return images

    @staticmethod
    def _psf(headers: list[fits.Header], fixes: list[str]) -> tuple[float, str] | None:
        """(PSF FWHM in arcsec, the card it came from) from the header, or None (see the module docstring)."""
        found = header_lookup(headers, _PSF_CARDS)
        if found is not None:
            value = lenient_float(found[1])
            if value is not None and value > 0:
                return value, f"card {found[0]}"
            fixes.append(f"PSF card {found[0]} = {found[1]!r} is not a positive FWHM in arcsec; ignored")
            return None
        found = header_lookup(headers, ("BMAJ",))
        if found is None:
            return None
        bmaj = lenient_float(found[1])
        if bmaj is None or bmaj <= 0:
            fixes.append(f"PSF card BMAJ = {found[1]!r} is not a positive beam size in degrees; ignored")
            return None
        bmin_card = header_lookup(headers, ("BMIN",))
        bmin = None if bmin_card is None else lenient_float(bmin_card[1])
        if bmin is not None and bmin > 0:
            return math.sqrt(bmaj * bmin) * 3600.0, "cards BMAJ, BMIN (degrees; geometric mean)"
        return bmaj * 3600.0, "card BMAJ (degrees)"

    @staticmethod
    def _redshift(path: Path, opts: Mapping[str, Any], headers: list[fits.Header]) -> tuple[float, str]:
        if "z" in opts:
            z, source = lenient_float(opts["z"]), "option z"
        elif (found := header_lookup(headers, _Z_CARDS)) is not None and lenient_float(found[1]) is not None:
            z, source = lenient_float(found[1]), f"card {found[0]}"
        elif (found := header_lookup(headers, _CZ_CARDS)) is not None and lenient_float(found[1]) is not None:
            z, source = float(lenient_float(found[1]) or 0.0) / C_KMS, f"card {found[0]} / c"
        else:
            raise ReaderError(
                path,
                f"no galaxy redshift: none of the cards {list(_Z_CARDS + _CZ_CARDS)} in the VEL or primary header; "
                "set option z in the survey config",
            )
        if z is None or not -0.01 < z < 20:
            raise ReaderError(path, f"galaxy redshift from {source} is {z!r}, outside (-0.01, 20)")
        return z, source

    @staticmethod
    def _convention(path: Path, opts: Mapping[str, Any], headers: list[fits.Header]) -> _Convention:
        if "velocity_reference" in opts:
            choice = opts["velocity_reference"]
            if isinstance(choice, str) and choice.strip().lower() in ("systemic", "cz"):
                return _Convention(choice.strip().lower(), "option velocity_reference")
            z_ref = lenient_float(choice)
            if z_ref is None or not -0.01 < z_ref < 20:
                raise ReaderError(
                    path, f"option velocity_reference must be 'systemic', 'cz' or a reference redshift, got {choice!r}"
                )
            return _Convention("reference", "option velocity_reference", z_ref)
        found = header_lookup(headers, ("VELREF",))
        # An integer VELREF is the AIPS spectral-frame code (LSR, heliocentric, ...): it
        # does not say what the velocities are relative to.
        if found is not None and isinstance(found[1], str):
            word = str(found[1]).strip().upper()
            if word in _SYSTEMIC_WORDS:
                return _Convention("systemic", "card VELREF")
            if word in _CZ_WORDS:
                return _Convention("cz", "card VELREF")
            raise ReaderError(
                path,
                f"VELREF = '{found[1]}' is not understood (known: {', '.join(_SYSTEMIC_WORDS + _CZ_WORDS)}); "
                "set option velocity_reference",
            )
        found = header_lookup(headers, ("SCINPVEL",))
        if found is not None and (cz := lenient_float(found[1])) is not None:
            return _Convention("reference", "card SCINPVEL", cz / C_KMS)
        return _Convention("systemic", "default")

    @staticmethod
    def _to_galaxy_frame(
        path: Path, conv: _Convention, z: float, v: np.ndarray, err: np.ndarray, valid: np.ndarray, hdu: str
    ) -> tuple[np.ndarray, np.ndarray]:
        if conv.name == "cz":
            return (v - C_KMS * z) / (1 + z), err / (1 + z)
        if conv.name == "reference":
            assert conv.z_ref is not None
            scale = (1 + conv.z_ref) / (1 + z)
            return (C_KMS * (conv.z_ref - z) / (1 + z) + v * scale), err * scale
        median = float(np.median(v[valid]))
        if conv.source == "default" and abs(median) > _SYSTEMIC_LIMIT_KMS:
            raise ReaderError(
                path,
                f"the median velocity is {median:.0f} km/s (c z of the galaxy: {C_KMS * z:.0f} km/s): these are not "
                "velocities relative to the galaxy; set velocity_reference = 'cz' (or a reference redshift) in the "
                "survey options, or add a VELREF card",
                hdu=hdu,
            )
        return v, err

    @staticmethod
    def _galaxy_position(
        path: Path, opts: Mapping[str, Any], headers: list[fits.Header], celestial: WCS, galaxy_id: str
    ) -> tuple[float | None, float | None, str]:
        if "ra" in opts or "dec" in opts:
            ra, dec = check_position(path, opts.get("ra"), opts.get("dec"), what=f"{galaxy_id} (options)")
            return ra, dec, "options ra/dec"
        for ra_key, dec_key in _POSITION_CARDS:
            for header in headers:
                if ra_key in header and dec_key in header:
                    ra = lenient_angle(header[ra_key], u.hourangle)
                    dec = lenient_angle(header[dec_key], u.deg)
                    ra_ok, dec_ok = check_position(path, ra, dec, what=galaxy_id, hdu="header")
                    if ra_ok is not None:
                        return ra_ok, dec_ok, f"cards {ra_key}/{dec_key}"
        crpix = celestial.wcs.crpix - 1.0  # the reference pixel, 0-based
        ra_c, dec_c = VelocityMapReader._pixel_positions(
            path, celestial, np.array([crpix[0]]), np.array([crpix[1]]), "VEL"
        )
        ra, dec = check_position(path, float(ra_c[0]), float(dec_c[0]), what=galaxy_id, hdu="VEL")
        return ra, dec, "WCS reference point (CRVAL)"

    @staticmethod
    def _pixel_positions(
        path: Path, celestial: WCS, xs: np.ndarray, ys: np.ndarray, hdu: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """ICRS (ra, dec) in degrees of pixel centres (0-based x, y)."""
        try:
            frame = wcs_to_celestial_frame(celestial)
        except ValueError as err:
            raise ReaderError(path, f"the WCS names no celestial frame astropy knows: {err}", hdu=hdu) from err
        lon, lat = celestial.pixel_to_world_values(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
        lon, lat = np.atleast_1d(lon), np.atleast_1d(lat)
        if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
            raise ReaderError(path, "the WCS gives no position for some pixels", hdu=hdu)
        if frame.name == "icrs":
            return np.mod(lon, 360.0), lat
        coords = SkyCoord(lon * u.deg, lat * u.deg, frame=frame).icrs
        return np.mod(coords.ra.deg, 360.0), coords.dec.deg


#: the registered instance
reader = VelocityMapReader()
