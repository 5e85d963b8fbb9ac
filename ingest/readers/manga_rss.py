"""MaNGA-style spectra sets: image HDUs WAVE (1-D), FLUX, IVAR, MASK, SRES (2-D), optional Z.

Each row of FLUX is one spectrum (the DAP test files, RSS-like extracts).  MaNGA DRP
wavelengths are vacuum (``options['medium'] = 'air'`` converts); SRES is R = lambda/FWHM
per pixel, 1-D (shared) or 2-D (per spectrum); MASK is the DRP 3-D pixel bitmask, kept.

The files carry no sky position: ra/dec are None unless options give ``ra``/``dec``
(all spectra) or ``positions`` (a list of (ra, dec), one per spectrum).  Object ids are
``<file stem>#<row index>`` unless options give ``object_ids`` or ``id_prefix``.  Each
spectrum is its own source (the test sets mix galaxies) unless ``source_object_id``
groups them all under one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from skyledger.ingest.readers.base import (
    air_to_vacuum,
    check_options,
    check_position,
    check_unique_ids,
    file_stem,
    finalize_spectrum,
    normalise_flux_unit,
)
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, open_fits, require_hdu
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["MangaRssReader", "reader", "MANGA_FLUX_UNIT"]

#: MaNGA DRP flux unit (per fibre / spaxel, which is bookkeeping, not a physical unit)
MANGA_FLUX_UNIT = "1e-17 erg / (Angstrom s cm2)"
_OPTIONS = ("ra", "dec", "positions", "object_ids", "id_prefix", "source_object_id", "medium", "flux_unit")


def _naxis(header: Mapping[str, Any]) -> int:
    return int(header.get("NAXIS", 0) or 0)


class MangaRssReader:
    """Reader of MaNGA-style multi-spectrum files (one spectrum per FLUX row)."""

    name = "manga_rss"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        # Look at two headers first: a gzipped cube must not be decompressed past its
        # FLUX extension just to be told "no".
        first = fits_summary(path, max_hdus=2)
        if first is None or not ({"WAVE", "FLUX"} & set(first.names())):
            return False
        early_flux = first.get("FLUX")
        if early_flux is not None and _naxis(early_flux) != 2:
            return False
        summary = fits_summary(path, max_hdus=6)
        if summary is None:
            return False
        wave, flux, ivar = summary.get("WAVE"), summary.get("FLUX"), summary.get("IVAR")
        if wave is None or flux is None or ivar is None:
            return False
        # 2-D FLUX rows of the same length as WAVE; a 3-D FLUX is a cube (manga_cube).
        return (
            _naxis(wave) == 1
            and _naxis(flux) == 2
            and flux.get("NAXIS1") == wave.get("NAXIS1")
            and str(flux.get("XTENSION", "")).strip() == "IMAGE"
        )

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        with open_fits(path) as hdul:
            wave_raw = hdu_data(path, require_hdu(path, hdul, "WAVE"))
            flux_hdu = require_hdu(path, hdul, "FLUX")
            flux = hdu_data(path, flux_hdu)
            ivar = hdu_data(path, require_hdu(path, hdul, "IVAR"))
            mask = hdu_data(path, hdul["MASK"]) if "MASK" in hdul else None
            sres = hdu_data(path, hdul["SRES"]) if "SRES" in hdul else None
            zs = hdu_data(path, hdul["Z"]) if "Z" in hdul else None
            if wave_raw is None or np.ndim(wave_raw) != 1:
                raise ReaderError(path, f"WAVE must be 1-D, got shape {np.shape(wave_raw)}", hdu="WAVE")
            if flux is None or np.ndim(flux) != 2:
                raise ReaderError(path, f"FLUX must be 2-D (n_spectra, n_wave), got shape {np.shape(flux)}", hdu="FLUX")
            n_spec, n_wave = flux.shape
            if n_wave != len(wave_raw):
                raise ReaderError(path, f"FLUX rows have {n_wave} pixels, WAVE has {len(wave_raw)}", hdu="FLUX")
            for label, arr in (("IVAR", ivar), ("MASK", mask)):
                if arr is not None and np.shape(arr) != flux.shape:
                    raise ReaderError(path, f"shape {np.shape(arr)} differs from FLUX {flux.shape}", hdu=label)
            if sres is not None and np.shape(sres) not in (flux.shape, (n_wave,)):
                raise ReaderError(
                    path, f"shape {np.shape(sres)} is neither FLUX's {flux.shape} nor ({n_wave},)", hdu="SRES"
                )
            if zs is not None and np.shape(zs) != (n_spec,):
                raise ReaderError(path, f"shape {np.shape(zs)} differs from the {n_spec} spectra", hdu="Z")

            wave = np.asarray(wave_raw, dtype=np.float64)
            if str(opts.get("medium", "vacuum")).lower() == "air":
                wave = air_to_vacuum(wave)
            flux_unit = opts.get("flux_unit") or normalise_flux_unit(flux_hdu.header.get("BUNIT")) or MANGA_FLUX_UNIT
            ids = self._ids(path, opts, n_spec)
            positions = self._positions(path, opts, n_spec)
            group = opts.get("source_object_id")

            spectra: list[SpectrumRow] = []
            for i in range(n_spec):
                ra, dec = positions[i]
                z = float(zs[i]) if zs is not None and np.isfinite(zs[i]) else None
                res = None
                if sres is not None:
                    res = np.asarray(sres if sres.ndim == 1 else sres[i], dtype=np.float32)
                row = SpectrumRow(
                    object_id=ids[i],
                    source_object_id=str(group) if group else ids[i],
                    ra=ra,
                    dec=dec,
                    z=z,
                    wave=wave,
                    flux=np.array(flux[i], dtype=np.float32),
                    ivar=np.array(ivar[i], dtype=np.float32),
                    mask=None if mask is None else np.array(mask[i], dtype=np.int32),
                    resolution=res,
                    flux_unit=flux_unit,
                    meta={"index": i, "wavelength_medium_in_file": str(opts.get("medium", "vacuum")).lower(),
                          "position_from_config": ra is not None},
                )
                spectra.append(finalize_spectrum(path, row, hdu="FLUX"))
            drpver = str(hdul[0].header.get("DRPVER", "")).strip() or None
        if group:
            ra_all = {p for p in positions}
            ra0, dec0 = positions[0] if len(ra_all) == 1 else (None, None)
            z0 = spectra[0].z if len({s.z for s in spectra}) == 1 else None
            sources = [SourceRow(object_id=str(group), ra=ra0, dec=dec0, z=z0, meta={"position_from_config": ra0 is not None})]
        else:
            sources = [
                SourceRow(object_id=s.object_id, ra=s.ra, dec=s.dec, z=s.z, meta={"position_from_config": s.ra is not None})
                for s in spectra
            ]
        return FileContents(
            reader=self.name, sources=sources, spectra=iter(spectra), meta={"n_spectra": n_spec, "drpver": drpver}
        )

    @staticmethod
    def _ids(path: object, opts: Mapping[str, Any], n: int) -> list[str]:
        given = opts.get("object_ids")
        if given is not None:
            ids = [str(x) for x in given]
            if len(ids) != n:
                raise ReaderError(path, f"option object_ids has {len(ids)} entries for {n} spectra")
        else:
            prefix = str(opts.get("id_prefix") or file_stem(path))
            ids = [f"{prefix}#{i}" for i in range(n)]
        check_unique_ids(path, ids)
        return ids

    @staticmethod
    def _positions(path: object, opts: Mapping[str, Any], n: int) -> list[tuple[float | None, float | None]]:
        given: Sequence[Sequence[float]] | None = opts.get("positions")
        if given is not None:
            if len(given) != n:
                raise ReaderError(path, f"option positions has {len(given)} entries for {n} spectra")
            return [
                check_position(path, p[0], p[1], what=f"spectrum {i} (option positions)") for i, p in enumerate(given)
            ]
        pos = check_position(path, opts.get("ra"), opts.get("dec"), what="option ra/dec")
        return [pos] * n


#: the registered instance
reader = MangaRssReader()
