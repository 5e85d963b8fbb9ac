"""MaNGA DRP ``manga-PLATE-IFU-LOGCUBE.fits[.gz]`` data cubes.

Layout read: primary header (MANGAID, PLATEIFU, OBJRA/OBJDEC, IFURA/IFUDEC, DRPVER);
``FLUX``, ``IVAR``, ``MASK`` (3-D, NAXIS3 = wavelength; 3-D WCS RA---TAN, DEC--TAN,
WAVE-LOG), ``WAVE`` (1-D vacuum Angstrom), and resolution either as 1-D R vectors
(``SPECRES``, ``PRESPECRES``, DR15+) or as 3-D LSF sigma in Angstrom per spaxel
(``DISP``/``PREDISP`` in DR15, ``LSFPOST``/``LSFPRE`` in DR17).

* wavelengths: vacuum (the MaNGA DRP convention); the WAVE extension is used, the WCS
  only when WAVE is absent.
* resolution: ``options['resolution_hdu']`` names the extension; by default the first
  present of SPECRES, PRESPECRES, DISP, LSFPOST, PREDISP, LSFPRE (``'none'`` disables).
* the galaxy is PLATEIFU (else MANGAID, OBJECT, file stem) at OBJRA/OBJDEC (else
  IFURA/IFUDEC); spaxel ids ``<PLATEIFU>#<x>_<y>`` (0-based pixel column, row).
* bad pixels for the usable-spaxel rule: DRP3PIXMASK bits NOCOV (0), DEADFIBER (2),
  FORESTAR (3) and DONOTUSE (10); LOWCOV (1) pixels still count as data.  The mask
  itself is stored unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from skyledger.ingest.readers.base import (
    air_to_vacuum,
    check_options,
    check_position,
    check_wavelength,
    file_stem,
    normalise_flux_unit,
    resolution_from_sigma,
)
from skyledger.ingest.readers.fits_access import hdu_data, header_float, open_fits, require_hdu
from skyledger.ingest.readers.cube import (
    CUBE_OPTIONS,
    CubeLayout,
    SelectionRule,
    Slab,
    cube_spectra,
    cube_wcs,
    looks_like_cube,
    parse_target_snr,
    spectral_axis,
)
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["MangaCubeReader", "reader", "DRP3PIXMASK_BAD"]

#: DRP3PIXMASK bits that make a pixel unusable: NOCOV | DEADFIBER | FORESTAR | DONOTUSE
DRP3PIXMASK_BAD = (1 << 0) | (1 << 2) | (1 << 3) | (1 << 10)
_R_1D = ("SPECRES", "PRESPECRES")
_SIGMA_3D = ("DISP", "LSFPOST", "PREDISP", "LSFPRE")
_RESOLUTION_ORDER = ("SPECRES", "PRESPECRES", "DISP", "LSFPOST", "PREDISP", "LSFPRE")
_OPTIONS = CUBE_OPTIONS + ("resolution_hdu", "medium")


def _shape(header: Mapping[str, Any]) -> tuple[int, ...]:
    n = int(header.get("NAXIS", 0) or 0)
    return tuple(int(header.get(f"NAXIS{i}", 0) or 0) for i in range(n, 0, -1))


class MangaCubeReader:
    """Reader of MaNGA DRP LOGCUBE/LINCUBE files."""

    name = "manga_cube"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        return looks_like_cube(path, "FLUX", "IVAR")  # HDUs 1 and 2 of a LOGCUBE

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        rule = SelectionRule.from_options(path, opts, default_bad_bits=DRP3PIXMASK_BAD)
        parse_target_snr(path, opts)
        with open_fits(path, streamed=True) as hdul:
            primary = hdul[0].header
            flux_hdu = require_hdu(path, hdul, "FLUX")
            ivar_hdu = require_hdu(path, hdul, "IVAR")
            shape = _shape(flux_hdu.header)
            if len(shape) != 3 or min(shape) < 1:
                raise ReaderError(path, f"FLUX must be a 3-D cube, shape is {shape}", hdu="FLUX")
            if _shape(ivar_hdu.header) != shape:
                raise ReaderError(path, f"IVAR shape {_shape(ivar_hdu.header)} differs from FLUX {shape}", hdu="IVAR")
            if "MASK" in hdul and _shape(hdul["MASK"].header) != shape:
                raise ReaderError(
                    path, f"MASK shape {_shape(hdul['MASK'].header)} differs from FLUX {shape}", hdu="MASK"
                )
            n_wave, n_y, n_x = shape
            wcs, celestial = cube_wcs(path, flux_hdu.header, "FLUX")
            if "WAVE" in hdul:
                wave = np.asarray(hdu_data(path, hdul["WAVE"]), dtype=np.float64)
                if wave.shape != (n_wave,):
                    raise ReaderError(path, f"WAVE has shape {wave.shape}, FLUX has {n_wave} wavelengths", hdu="WAVE")
            else:
                wave, _ = spectral_axis(path, wcs, n_wave, "FLUX")
            if str(opts.get("medium", "vacuum")).lower() == "air":
                wave = air_to_vacuum(wave)
            wave = check_wavelength(path, wave, hdu="WAVE")

            res_hdu = self._resolution_hdu(path, hdul, opts)
            resolution_1d = None
            if res_hdu in _R_1D:
                resolution_1d = np.asarray(hdu_data(path, hdul[res_hdu]), dtype=np.float32)
                if resolution_1d.shape != (n_wave,):
                    raise ReaderError(path, f"shape {resolution_1d.shape} differs from ({n_wave},)", hdu=res_hdu)
            elif res_hdu is not None and _shape(hdul[res_hdu].header) != shape:
                raise ReaderError(path, f"shape {_shape(hdul[res_hdu].header)} differs from FLUX {shape}", hdu=res_hdu)

            galaxy_id = str(
                opts.get("object_id")
                or primary.get("PLATEIFU")
                or primary.get("MANGAID")
                or primary.get("OBJECT")
                or file_stem(path)
            ).strip()
            ra, dec = check_position(
                path,
                opts.get("ra", header_float(primary, "OBJRA", "IFURA")),
                opts.get("dec", header_float(primary, "OBJDEC", "IFUDEC")),
                what=galaxy_id,
                hdu="PRIMARY",
            )
            z = opts.get("z", header_float(primary, "Z"))
            flux_unit = opts.get("flux_unit") or normalise_flux_unit(flux_hdu.header.get("BUNIT"))
            meta = {
                "mangaid": str(primary.get("MANGAID", "")).strip() or None,
                "plateifu": str(primary.get("PLATEIFU", "")).strip() or None,
                "drpver": str(primary.get("VERSDRP3", primary.get("DRPVER", ""))).strip() or None,
                "drp3qual": int(primary["DRP3QUAL"]) if "DRP3QUAL" in primary else None,
                "shape": [n_wave, n_y, n_x],
                "resolution_hdu": res_hdu,
                "flux_unit_in_file": str(flux_hdu.header.get("BUNIT", "")).strip() or None,
            }
        source = SourceRow(object_id=galaxy_id, ra=ra, dec=dec, z=z, meta={"kind": "ifu_target", **meta})
        spectra = self._stream(
            str(path), galaxy_id, wave, (n_y, n_x), celestial, res_hdu, resolution_1d, flux_unit, z, opts, rule
        )
        return FileContents(reader=self.name, sources=[source], spectra=spectra, meta=meta)

    @staticmethod
    def _resolution_hdu(path: object, hdul: Any, opts: Mapping[str, Any]) -> str | None:
        choice = opts.get("resolution_hdu")
        if choice is not None:
            name = str(choice).upper()
            if name == "NONE":
                return None
            if name not in _RESOLUTION_ORDER:
                raise ReaderError(
                    path, f"option resolution_hdu must be one of {_RESOLUTION_ORDER} or 'none', got {choice!r}"
                )
            if name not in hdul:
                raise ReaderError(path, "resolution HDU named by option resolution_hdu is missing", hdu=name)
            return name
        return next((n for n in _RESOLUTION_ORDER if n in hdul), None)

    @staticmethod
    def _stream(
        path: str,
        galaxy_id: str,
        wave: np.ndarray,
        shape_yx: tuple[int, int],
        celestial: Any,
        res_hdu: str | None,
        resolution_1d: np.ndarray | None,
        flux_unit: str | None,
        z: float | None,
        opts: Mapping[str, Any],
        rule: SelectionRule,
    ) -> Iterator[SpectrumRow]:
        with open_fits(path, streamed=True) as hdul:
            flux = hdu_data(path, hdul["FLUX"])
            ivar = hdu_data(path, hdul["IVAR"])
            mask = hdu_data(path, hdul["MASK"]) if "MASK" in hdul else None
            sigma = hdu_data(path, hdul[res_hdu]) if res_hdu in _SIGMA_3D else None

            def read_slab(y0: int, y1: int) -> Slab:
                res3 = None
                if sigma is not None:
                    res3 = resolution_from_sigma(wave[:, None, None], sigma[:, y0:y1, :])
                return Slab(
                    flux=np.asarray(flux[:, y0:y1, :], dtype=np.float32),
                    ivar=np.asarray(ivar[:, y0:y1, :], dtype=np.float32),
                    mask=None if mask is None else np.asarray(mask[:, y0:y1, :]).astype(np.int32),
                    resolution=res3,
                )

            layout = CubeLayout(
                path=path,
                hdu="FLUX",
                galaxy_id=galaxy_id,
                wave=wave,
                n_y=shape_yx[0],
                n_x=shape_yx[1],
                celestial=celestial,
                read_slab=read_slab,
                resolution=resolution_1d,
                flux_unit=flux_unit,
                z=z,
            )
            yield from cube_spectra(layout, opts, rule)


#: the registered instance
reader = MangaCubeReader()
