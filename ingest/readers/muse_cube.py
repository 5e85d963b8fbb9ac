"""MUSE data cubes (ESO ``DATACUBE_FINAL`` / Phase-3 ``SCIENCE.CUBE.IFS``).

Layout read: a data-less primary header, extension ``DATA`` (flux, BUNIT such as
``10**(-20)*erg/s/cm**2/Angstrom``) and ``STAT`` (its variance), optional ``DQ``; a
3-D WCS with RA---TAN / DEC--TAN and a linear spectral axis, ``AWAV`` (air, converted
to vacuum here) or ``WAVE`` (vacuum), in CD3_3 or CDELT3 steps.

ivar = 1 / STAT where STAT > 0 and both DATA and STAT are finite, else 0 (MUSE marks
missing data with NaN).  The cube header gives no spectral resolution: by default R is
taken from the MUSE WFM line-spread function of Bacon et al. (2017, A&A 608, A1, eq. 8),
FWHM(lambda) = 5.866e-8 lambda^2 - 9.187e-4 lambda + 6.040 A; ``resolution = 'none'``
leaves it unknown.  Spaxels, or Voronoi bins with ``target_snr``, are produced by
:mod:`skyledger.ingest.readers.cube` (the usable-spaxel rule is documented there).
The galaxy is the cube's OBJECT (``object_id`` overrides) at the primary RA/DEC
(``ra``/``dec`` override).
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

__all__ = ["MuseCubeReader", "reader", "muse_lsf_fwhm"]

_OPTIONS = CUBE_OPTIONS + ("resolution",)


def muse_lsf_fwhm(wave: np.ndarray) -> np.ndarray:
    """MUSE WFM line-spread FWHM in Angstrom at ``wave`` (Angstrom), Bacon et al. 2017 eq. 8."""
    w = np.asarray(wave, dtype=np.float64)
    return 5.866e-8 * w**2 - 9.187e-4 * w + 6.040


class MuseCubeReader:
    """Reader of MUSE-format cubes (DATA + STAT extensions, 3-D WCS)."""

    name = "muse_cube"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        return looks_like_cube(path, "DATA", "STAT")

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        rule = SelectionRule.from_options(path, opts, default_bad_bits=-1)
        parse_target_snr(path, opts)
        res_choice = str(opts.get("resolution", "bacon2017")).lower()
        if res_choice not in ("bacon2017", "none"):
            raise ReaderError(path, f"option resolution must be 'bacon2017' or 'none', got {res_choice!r}")
        with open_fits(path, streamed=True) as hdul:
            primary = hdul[0].header
            data_hdu = require_hdu(path, hdul, "DATA")
            stat_hdu = require_hdu(path, hdul, "STAT")
            header = data_hdu.header
            shape = tuple(int(header.get(f"NAXIS{i}", 0) or 0) for i in (3, 2, 1))
            if int(header.get("NAXIS", 0) or 0) != 3 or min(shape) < 1:
                raise ReaderError(path, f"DATA must be a 3-D cube, header NAXIS = {header.get('NAXIS')}", hdu="DATA")
            stat_shape = tuple(int(stat_hdu.header.get(f"NAXIS{i}", 0) or 0) for i in (3, 2, 1))
            if stat_shape != shape:
                raise ReaderError(path, f"STAT shape {stat_shape} differs from DATA shape {shape}", hdu="STAT")
            if "DQ" in hdul:
                dq_shape = tuple(int(hdul["DQ"].header.get(f"NAXIS{i}", 0) or 0) for i in (3, 2, 1))
                if dq_shape != shape:
                    raise ReaderError(path, f"DQ shape {dq_shape} differs from DATA shape {shape}", hdu="DQ")
            n_wave, n_y, n_x = shape
            wcs, celestial = cube_wcs(path, header, "DATA")
            wave, ctype3 = spectral_axis(path, wcs, n_wave, "DATA")
            medium = "air" if ctype3.startswith("AWAV") else "vacuum"
            vac = check_wavelength(path, air_to_vacuum(wave) if medium == "air" else wave, hdu="DATA")
            galaxy_id = str(
                opts.get("object_id") or primary.get("OBJECT") or header.get("OBJECT") or file_stem(path)
            ).strip()
            ra, dec = check_position(
                path,
                opts.get("ra", header_float(primary, "RA")),
                opts.get("dec", header_float(primary, "DEC")),
                what=galaxy_id,
                hdu="PRIMARY",
            )
            z = opts.get("z", header_float(primary, "Z", "REDSHIFT"))
            flux_unit = opts.get("flux_unit") or normalise_flux_unit(header.get("BUNIT"))
            resolution = None
            if res_choice == "bacon2017":
                # The LSF is defined on MUSE's own (air) wavelength scale.
                resolution = (wave / muse_lsf_fwhm(wave)).astype(np.float32)
            meta = {
                "instrument": str(primary.get("INSTRUME", "")).strip() or None,
                "wavelength_medium_in_file": medium,
                "shape": [n_wave, n_y, n_x],
                "resolution_source": "Bacon et al. 2017 eq. 8" if resolution is not None else None,
                "flux_unit_in_file": str(header.get("BUNIT", "")).strip() or None,
            }
        source = SourceRow(object_id=galaxy_id, ra=ra, dec=dec, z=z, meta={"kind": "ifu_target", **meta})
        spectra = self._stream(str(path), galaxy_id, vac, (n_y, n_x), celestial, resolution, flux_unit, z, opts, rule)
        return FileContents(reader=self.name, sources=[source], spectra=spectra, meta=meta)

    @staticmethod
    def _stream(
        path: str,
        galaxy_id: str,
        wave: np.ndarray,
        shape_yx: tuple[int, int],
        celestial: Any,
        resolution: np.ndarray | None,
        flux_unit: str | None,
        z: float | None,
        opts: Mapping[str, Any],
        rule: SelectionRule,
    ) -> Iterator[SpectrumRow]:
        # Re-opened here so that the file is open exactly as long as the loader iterates.
        with open_fits(path, streamed=True) as hdul:
            data = hdu_data(path, hdul["DATA"])
            stat = hdu_data(path, hdul["STAT"])
            dq = hdu_data(path, hdul["DQ"]) if "DQ" in hdul else None

            def read_slab(y0: int, y1: int) -> Slab:
                flux = np.asarray(data[:, y0:y1, :], dtype=np.float32)
                var = np.asarray(stat[:, y0:y1, :], dtype=np.float32)
                if np.any(var < 0):
                    raise ReaderError(path, f"negative variance in rows {y0}-{y1 - 1}", hdu="STAT")
                ok = np.isfinite(flux) & np.isfinite(var) & (var > 0)
                with np.errstate(divide="ignore"):
                    ivar = np.where(ok, 1.0 / var, 0.0).astype(np.float32)
                mask = None if dq is None else np.asarray(dq[:, y0:y1, :]).astype(np.int32)
                return Slab(flux=flux, ivar=ivar, mask=mask, resolution=None)

            layout = CubeLayout(
                path=path,
                hdu="DATA",
                galaxy_id=galaxy_id,
                wave=wave,
                n_y=shape_yx[0],
                n_x=shape_yx[1],
                celestial=celestial,
                read_slab=read_slab,
                resolution=resolution,
                flux_unit=flux_unit,
                z=z,
            )
            yield from cube_spectra(layout, opts, rule)


#: the registered instance
reader = MuseCubeReader()
