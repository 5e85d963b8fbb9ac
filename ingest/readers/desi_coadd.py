"""DESI coadd files (``coadd-PETAL-TILE-thruNIGHT.fits``, ``coadd-SURVEY-PROGRAM-HEALPIX.fits``).

Layout read: ``FIBERMAP`` (one row per fibre: TARGETID, TARGET_RA/TARGET_DEC,
COADD_FIBERSTATUS, COADD_EXPTIME, targeting bits) and, per spectrograph arm ``X`` (B, R,
Z; any arm named ``X_FLUX`` is read, so a camera-combined ``BRZ_`` file reads too):
``X_WAVELENGTH`` (npix,), ``X_FLUX``/``X_IVAR``/``X_MASK`` (nfibre, npix) and
``X_RESOLUTION`` (nfibre, ndiag, npix). ``EXP_FIBERMAP`` and ``SCORES`` are not read.

Choices:

* **One spectrum per usable fibre, the arms merged onto one grid.** DESI arms share one
  linear 0.8 Angstrom vacuum grid, so where they overlap (5760-5800, 7520-7620 Angstrom)
  their pixels coincide; the reader checks that they do (to 1e-4 of a pixel) and rejects a
  file whose arms are on different grids rather than resampling (resampling would
  correlate the noise; desispec never writes such a file). In an overlap pixel, the arms
  that are good there (ivar > 0 and mask 0) are combined: ivar-weighted mean flux, summed
  ivar, mask 0; a pixel good in one arm only takes that arm. Where no arm is good, the
  arms' ivar-weighted (or plain) mean flux, summed ivar and the OR of their masks are kept.
* **Resolution** R = lambda / FWHM per pixel from ``X_RESOLUTION``: column ``j`` of the band
  matrix (diagonal offsets ``ndiag//2 ... -ndiag//2`` as in ``desispec.resolution``) is
  the line-spread kernel of pixel ``j``. Its second moment about its centroid,
  normalised by its sum and taken as given (the small negative wings of the
  spectro-perfectionism extraction included), is the Gaussian sigma in pixels; times the
  local pixel size it is sigma in Angstrom, and FWHM = 2.3548 sigma. On the EDR sample
  this agrees with a Gaussian fit to the kernel to < 1 %. In an arm overlap the merged
  LSF is the ivar-weighted sum of the arms' kernels, whose second moment is the weighted
  mean of their sigma^2: R is computed from that, with the flux's weights.
* **Ids, positions**: object_id = str(TARGETID) for the spectrum and its source (shared
  across the survey's files: one target on several tiles is one source); position
  TARGET_RA/TARGET_DEC (ICRS degrees). Meta: TILEID, PETAL_LOC, FIBER, OBJTYPE,
  COADD_NUMEXP/COADD_EXPTIME and the non-zero targeting bit columns (``*_TARGET``).
* **Dead fibres are not loaded**: TARGETID < 0 (unassigned/sky positioner), COADD_FIBERSTATUS
  != 0, COADD_EXPTIME == 0 or ivar zero in every arm. ``FileContents.meta`` counts them
  per (first) reason; option ``include_dead=True`` loads them instead (flagged ZERO_IVAR by
  the loader when their ivar is zero). A file with no usable fibre is rejected.
* **Mask**: DESI's uint32 bitmask, kept bit for bit as int32 (bit 31 becomes the sign).
* **Redshift**: a coadd carries none. Option ``z`` (a number for every fibre, or a
  mapping TARGETID -> z), else option ``redshifts`` (a redrock/zcatalog FITS file with a
  ``REDSHIFTS`` or ``ZCATALOG`` table: TARGETID, Z, ZWARN), else the sibling
  ``redrock-<suffix>`` of ``coadd-<suffix>`` in the same directory (the standard DESI
  layout) when it exists; otherwise no z. ZWARN != 0 keeps z and records ``zwarn`` in meta.
* **Detection** by content: a FIBERMAP with COADD_* columns (or an EXP_FIBERMAP HDU) and
  an arm with X_WAVELENGTH, X_FLUX, X_IVAR. Per-exposure ``spectra-*`` files (same arms,
  a FIBERMAP row per exposure, no COADD_* columns) are not claimed.
* **Flux unit**: the ``X_FLUX`` BUNIT (10**-17 erg/(s cm2 Angstrom)); option ``flux_unit``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from skyledger.ingest.readers.base import (
    check_options,
    check_position,
    check_unique_ids,
    check_wavelength,
    finalize_spectrum,
    normalise_flux_unit,
)
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, open_fits, require_hdu
from skyledger.ingest.readers.fits_tables import TableData, cell_value, find_column, read_table
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["DesiCoaddReader", "reader", "merge_arms", "sigma_from_resolution", "sibling_redrock"]

_OPTIONS = ("z", "redshifts", "flux_unit", "include_dead")
#: arms' pixels coincide when they agree to this fraction of a pixel
_GRID_TOLERANCE = 1.0e-4
_FWHM_PER_SIGMA = float(2.0 * np.sqrt(2.0 * np.log(2.0)))
_ARM = re.compile(r"^([A-Z0-9]+)_FLUX$")
# Small per-fibre FIBERMAP values worth keeping (upper-case column -> meta key).
_META_COLUMNS = {
    "TILEID": "tileid", "PETAL_LOC": "petal", "FIBER": "fiber", "OBJTYPE": "objtype",
    "COADD_NUMEXP": "coadd_numexp", "COADD_EXPTIME": "coadd_exptime",
}  # fmt: skip


class _Arm:
    """One spectrograph arm of a coadd, the fibres already selected."""

    __slots__ = ("name", "wave", "flux", "ivar", "mask", "sigma2", "offset")

    def __init__(self, name: str, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray,
                 sigma2: np.ndarray | None):  # fmt: skip
        self.name, self.wave, self.flux, self.ivar, self.mask, self.sigma2 = name, wave, flux, ivar, mask, sigma2
        self.offset = 0


# --------------------------------------------------------------------------- resolution


def sigma_from_resolution(band: np.ndarray) -> np.ndarray:
    """Gaussian LSF sigma in pixels, (nfibre, npix), from DESI resolution data (nfibre, ndiag, npix).

    The second moment of each pixel's kernel about its centroid, normalised by its sum;
    NaN where the kernel sums to <= 0 or its variance is <= 0 (a dead fibre's zeros).
    """
    ndiag = band.shape[1]
    offsets = np.arange(ndiag // 2, -(ndiag // 2) - 1, -1, dtype=np.float32)
    # One BLAS call: (3, ndiag) @ (nfibre, ndiag, npix) -> the 0th, 1st, 2nd moments.
    weights = np.stack([np.ones_like(offsets), offsets, offsets * offsets])
    s0, s1, s2 = np.moveaxis(np.matmul(weights, np.asarray(band, dtype=np.float32)), 1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / s0
        var = s2 / s0 - mean * mean
    return np.sqrt(np.where((s0 > 0) & (var > 0), var, np.float32(np.nan)))


# --------------------------------------------------------------------------- merging


def _common_grid(path: object, arms: list[_Arm]) -> np.ndarray:
    """The merged wavelength grid; sets each arm's pixel offset into it. ReaderError if
    overlapping arms' pixels do not coincide."""
    arms.sort(key=lambda a: a.wave[0])
    merged = arms[0].wave
    for arm in arms[1:]:
        w = arm.wave
        step = float(min(np.min(np.diff(merged[-2:])), np.min(np.diff(w[:2]))))
        tol = _GRID_TOLERANCE * step
        if w[0] > merged[-1] + tol:  # no overlap: the grid jumps across the gap
            arm.offset = merged.size
            merged = np.concatenate([merged, w])
            continue
        start = int(np.searchsorted(merged, w[0] - tol))
        n_shared = min(merged.size - start, w.size)
        if start >= merged.size or np.max(np.abs(merged[start : start + n_shared] - w[:n_shared])) > tol:
            raise ReaderError(
                path,
                f"arm {arm.name} ({w[0]:.3f}-{w[-1]:.3f} A, step {np.median(np.diff(w)):.4f}) is not on the "
                f"wavelength grid of the arms before it ({merged[0]:.3f}-{merged[-1]:.3f} A) where they overlap; "
                "this reader merges arms only on a common grid and does not resample",
                hdu=f"{arm.name}_WAVELENGTH",
            )
        arm.offset = start
        merged = np.concatenate([merged, w[n_shared:]])
    return merged


def merge_arms(arms: list[_Arm], n_pix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(flux, ivar, mask, sigma2) on the merged grid, all fibres at once (see module doc).

    Pixels covered by one arm are copied; only the overlap columns are combined.
    ``sigma2`` (LSF variance in Angstrom^2) is None when no arm has a resolution matrix.
    """
    nf = arms[0].flux.shape[0]
    cover = np.zeros(n_pix, dtype=np.int32)
    for arm in arms:
        cover[arm.offset : arm.offset + arm.wave.size] += 1
    flux = np.zeros((nf, n_pix), dtype=np.float32)
    ivar = np.zeros((nf, n_pix), dtype=np.float32)
    mask = np.zeros((nf, n_pix), dtype=np.uint32)
    with_res = any(a.sigma2 is not None for a in arms)
    sigma2 = np.full((nf, n_pix), np.nan, dtype=np.float32) if with_res else None
    multi_cols = np.flatnonzero(cover > 1)
    position = np.full(n_pix, -1, dtype=np.int64)
    position[multi_cols] = np.arange(multi_cols.size)
    shape = (nf, multi_cols.size)
    # good arms (ivar > 0, mask 0) | any arm with ivar > 0 | every arm, unweighted
    acc = {k: np.zeros(shape) for k in ("gw", "gwf", "aw", "awf", "nf", "sf", "gs", "gsw", "as", "asw", "ns", "ss")}
    amask = np.zeros(shape, dtype=np.uint32)
    for arm in arms:
        sl = slice(arm.offset, arm.offset + arm.wave.size)
        single = cover[sl] == 1
        cols = np.flatnonzero(single) + arm.offset
        flux[:, cols] = arm.flux[:, single]
        ivar[:, cols] = arm.ivar[:, single]
        mask[:, cols] = arm.mask[:, single]
        if sigma2 is not None and arm.sigma2 is not None:
            sigma2[:, cols] = arm.sigma2[:, single]
        if multi_cols.size == 0 or single.all():
            continue
        m = ~single
        at = position[np.flatnonzero(m) + arm.offset]
        f = arm.flux[:, m].astype(np.float64)
        iv = arm.ivar[:, m].astype(np.float64)
        mk = arm.mask[:, m]
        finite = np.isfinite(f)
        gw = np.where((iv > 0) & (mk == 0), iv, 0.0)
        aw = np.where(iv > 0, iv, 0.0)
        acc["gw"][:, at] += gw
        acc["gwf"][:, at] += np.where(gw > 0, gw * np.where(finite, f, 0.0), 0.0)
        acc["aw"][:, at] += aw
        acc["awf"][:, at] += np.where(aw > 0, aw * np.where(finite, f, 0.0), 0.0)
        acc["nf"][:, at] += finite
        acc["sf"][:, at] += np.where(finite, f, 0.0)
        amask[:, at] |= mk
        if arm.sigma2 is not None:
            s = arm.sigma2[:, m].astype(np.float64)
            ok = np.isfinite(s)
            s0 = np.where(ok, s, 0.0)
            acc["gs"][:, at] += np.where(ok, gw, 0.0) * s0
            acc["gsw"][:, at] += np.where(ok, gw, 0.0)
            acc["as"][:, at] += np.where(ok, aw, 0.0) * s0
            acc["asw"][:, at] += np.where(ok, aw, 0.0)
            acc["ns"][:, at] += ok
            acc["ss"][:, at] += s0
    if multi_cols.size:
        a = acc
        good, some = a["gw"] > 0, a["aw"] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            mflux = np.where(good, a["gwf"] / a["gw"], np.where(some, a["awf"] / a["aw"], a["sf"] / a["nf"]))
            flux[:, multi_cols] = np.where(np.isfinite(mflux), mflux, 0.0)
            ivar[:, multi_cols] = np.where(good, a["gw"], a["aw"])
            mask[:, multi_cols] = np.where(good, np.uint32(0), amask)
            if sigma2 is not None:
                plain = a["ss"] / a["ns"]
                anyw = np.where(a["asw"] > 0, a["as"] / a["asw"], plain)
                sigma2[:, multi_cols] = np.where(good & (a["gsw"] > 0), a["gs"] / a["gsw"], np.where(some, anyw, plain))
    return flux, ivar, mask, sigma2


# --------------------------------------------------------------------------- redshifts


def sibling_redrock(path: str | os.PathLike[str]) -> Path | None:
    """``redrock-<suffix>`` next to ``coadd-<suffix>`` (the DESI layout), if it exists."""
    p = Path(path)
    if not p.name.startswith("coadd-"):
        return None
    candidate = p.with_name("redrock-" + p.name[len("coadd-") :])
    return candidate if candidate.is_file() else None


def _read_redshifts(path: object, zfile: str | os.PathLike[str]) -> dict[int, tuple[float, int | None, str | None]]:
    """TARGETID -> (Z, ZWARN, SPECTYPE) from a redrock or zcatalog FITS file."""
    where = f"redshift file {os.fspath(zfile)}"
    try:
        with open_fits(zfile) as hdul:
            hdu = next((h for h in hdul if h.name.upper() in ("REDSHIFTS", "ZCATALOG")), None)
            if hdu is None:
                raise ReaderError(path, f"{where} has no REDSHIFTS or ZCATALOG table; HDUs: {[h.name for h in hdul]}")
            table = read_table(zfile, hdu)
    except ReaderError as err:
        if str(path) in str(err):
            raise
        raise ReaderError(path, f"{where} is unreadable: {err}") from err
    if table is None or len(table) == 0:
        return {}
    tid_col, z_col = find_column(table.names, "TARGETID"), find_column(table.names, "Z")
    if tid_col is None or z_col is None:
        raise ReaderError(path, f"{where} lacks a TARGETID or Z column; columns: {list(table.names)}", hdu=hdu.name)
    zwarn_col, type_col = find_column(table.names, "ZWARN"), find_column(table.names, "SPECTYPE")
    tids = np.asarray(table.column(tid_col)).astype(np.int64)
    zs = np.asarray(table.column(z_col), dtype=np.float64)
    zwarn = None if zwarn_col is None else np.asarray(table.column(zwarn_col)).astype(np.int64)
    types = None if type_col is None else table.column(type_col)
    out: dict[int, tuple[float, int | None, str | None]] = {}
    for i, tid in enumerate(tids.tolist()):
        if not np.isfinite(zs[i]):
            continue
        stype = None
        if types is not None:
            raw = types[i]
            stype = (raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)).strip() or None
        out[tid] = (float(zs[i]), None if zwarn is None else int(zwarn[i]), stype)
    return out


def _redshifts(path: object, opts: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(redshift source, how it was found): a float, a TARGETID mapping, or None."""
    if "z" in opts and opts["z"] is not None:
        z = opts["z"]
        if isinstance(z, Mapping):
            try:
                table = {int(k): (float(v), None, None) for k, v in z.items()}
            except (TypeError, ValueError) as err:
                raise ReaderError(path, f"option z: a mapping must be TARGETID -> number ({err})") from err
            return table, "option z (per TARGETID)"
        try:
            return float(z), "option z"
        except (TypeError, ValueError) as err:
            raise ReaderError(path, f"option z must be a number or a TARGETID -> z mapping, got {z!r}") from err
    zfile = opts.get("redshifts")
    if zfile:
        if not Path(zfile).is_file():
            raise ReaderError(path, f"option redshifts: no such file {zfile}")
        return _read_redshifts(path, zfile), f"redshifts file {Path(zfile).name}"
    sibling = sibling_redrock(path)
    if sibling is not None:
        return _read_redshifts(path, sibling), f"redrock sibling {sibling.name}"
    return None, None


# --------------------------------------------------------------------------- the reader


def _column(path: object, table: TableData, name: str, *, required: bool = False) -> np.ndarray | None:
    found = find_column(table.names, name)
    if found is None:
        if required:
            raise ReaderError(path, f"required column missing; columns present: {list(table.names)[:12]} ...",
                              hdu="FIBERMAP", column=name)  # fmt: skip
        return None
    return np.asarray(table.column(found))


def _mask_data(path: object, hdu: Any) -> Any:
    """An X_MASK image as uint32. DESI writes it as int32 with BZERO = 2**31, which astropy
    refuses to scale through a memory map; the raw words are read and the offset applied
    (adding 2**31 modulo 2**32 flips the top bit)."""
    header = hdu.header
    if int(header.get("BITPIX", 0)) == 32 and header.get("BZERO", 0) == 2**31 and header.get("BSCALE", 1) == 1:
        try:
            info = hdu.fileinfo()
            raw = info["file"].readarray(offset=info["datLoc"], dtype=">u4", shape=hdu.shape)
        except (OSError, ValueError, TypeError, EOFError) as err:
            raise ReaderError(path, f"cannot read data: {err}", hdu=hdu.name) from err
        return raw ^ np.uint32(0x80000000)
    return hdu_data(path, hdu)


class DesiCoaddReader:
    """Reader of DESI coadd (and camera-combined) spectra files."""

    name = "desi_coadd"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        summary = fits_summary(path)
        if summary is None:
            return False
        names = set(summary.names())
        fibermap = summary.get("FIBERMAP")
        if fibermap is None:
            return False
        # A coadd, not a per-exposure spectra-* file (same arms, one row per exposure):
        # its FIBERMAP has the COADD_* columns, and EXP_FIBERMAP follows it.
        if "EXP_FIBERMAP" not in names and not any(c.startswith("COADD_") for c in summary.columns(fibermap)):
            return False
        arms = {m.group(1) for n in names if (m := _ARM.match(n))}
        return any({f"{a}_WAVELENGTH", f"{a}_IVAR"} <= names for a in arms)

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        include_dead = opts.get("include_dead", False)
        if not isinstance(include_dead, bool):
            raise ReaderError(path, f"option include_dead must be true or false, got {include_dead!r}")
        with open_fits(path) as hdul:
            primary = hdul[0].header
            names = [h.name.upper() for h in hdul]
            arm_names = [m.group(1) for n in names if (m := _ARM.match(n))]
            if not arm_names:
                raise ReaderError(path, f"no spectrograph arm (X_FLUX HDU); HDUs present: {names}", hdu="B_FLUX")
            fibermap = read_table(path, require_hdu(path, hdul, "FIBERMAP"))
            if fibermap is None or len(fibermap) == 0:
                raise ReaderError(path, "FIBERMAP has no rows", hdu="FIBERMAP")
            n_fibres = len(fibermap)
            targetid = _column(path, fibermap, "TARGETID", required=True).astype(np.int64)
            status = _column(path, fibermap, "COADD_FIBERSTATUS")
            if status is None:
                status = _column(path, fibermap, "FIBERSTATUS")
            exptime = _column(path, fibermap, "COADD_EXPTIME")

            raw = {a: self._arm_arrays(path, hdul, a, n_fibres) for a in arm_names}
            units = {a: str(hdul[f"{a}_FLUX"].header.get("BUNIT", "") or "") for a in arm_names}
            if len(set(units.values())) > 1:
                raise ReaderError(path, f"the arms' flux units differ: {units}", hdu=f"{arm_names[-1]}_FLUX")

            # Usable fibres, each dead one counted under its first reason.
            any_ivar = np.zeros(n_fibres, dtype=bool)
            for _, _, iv, _, _ in raw.values():
                any_ivar |= np.any(iv > 0, axis=1)
            reasons = [
                ("unassigned (TARGETID < 0)", targetid < 0),
                ("COADD_FIBERSTATUS != 0", np.zeros(n_fibres, bool) if status is None else status != 0),
                ("COADD_EXPTIME = 0", np.zeros(n_fibres, bool) if exptime is None else ~(exptime > 0)),
                ("IVAR zero in every arm", ~any_ivar),
            ]
            dead = np.zeros(n_fibres, dtype=bool)
            skipped: dict[str, int] = {}
            why = np.full(n_fibres, "", dtype=object)
            for label, bad in reasons:
                new = bad & ~dead
                if new.any():
                    skipped[label] = int(new.sum())
                    why[new] = label
                dead |= bad
            keep = np.arange(n_fibres) if include_dead else np.flatnonzero(~dead)
            if keep.size == 0:
                detail = ", ".join(f"{n} {label}" for label, n in skipped.items())
                raise ReaderError(path, f"no usable fibre: all {n_fibres} fibres are dead or unassigned ({detail})",
                                  hdu="FIBERMAP")  # fmt: skip

            arms = []
            for a, (wave, flux, ivar, mask, res) in raw.items():
                flux, ivar, mask = flux[keep], ivar[keep], mask[keep]
                self._check_pixels(path, a, flux, ivar, targetid[keep])
                sigma2 = None
                if res is not None:
                    sigma_pix = sigma_from_resolution(np.asarray(res[keep], dtype=np.float32))
                    sigma2 = (sigma_pix * np.gradient(wave).astype(np.float32)[None, :]) ** 2
                arms.append(_Arm(a, wave, flux, ivar, mask, sigma2))
            wave = _common_grid(path, arms)
            flux, ivar, mask, sigma2 = merge_arms(arms, wave.size)
            resolution = None
            if sigma2 is not None:  # resolution_from_sigma, in float32 for the whole file at once
                with np.errstate(divide="ignore", invalid="ignore"):
                    resolution = wave.astype(np.float32)[None, :] / (np.float32(_FWHM_PER_SIGMA) * np.sqrt(sigma2))

            flux_unit = opts.get("flux_unit") or normalise_flux_unit(units[arm_names[0]] or None)
            zsource, zhow = _redshifts(path, opts)
            meta_cols = {key: _column(path, fibermap, col) for col, key in _META_COLUMNS.items()}
            target_cols = {c: np.asarray(fibermap.column(c)) for c in fibermap.names if c.upper().endswith("_TARGET")}
            ra_all = _column(path, fibermap, "TARGET_RA", required=True)
            dec_all = _column(path, fibermap, "TARGET_DEC", required=True)

            file_meta: dict[str, Any] = {
                "n_fibres": n_fibres,
                "n_loaded": int(keep.size),
                "n_skipped": 0 if include_dead else int(dead.sum()),
                "skipped": {} if include_dead else skipped,
                "arms": [a.name for a in arms],
                "tileid": cell_value(primary.get("TILEID")),
                "spgrp": cell_value(primary.get("SPGRP")),
                "redshift_source": zhow,
                "wavelength_medium_in_file": "vacuum",
            }
            if include_dead:
                file_meta["dead_included"] = skipped
            sources: list[SourceRow] = []
            spectra: list[SpectrumRow] = []
            mask_i32 = mask.view(np.int32)
            for k, i in enumerate(keep.tolist()):
                tid = int(targetid[i])
                oid = str(tid)
                ra, dec = check_position(path, ra_all[i], dec_all[i], what=f"TARGETID {tid}", hdu="FIBERMAP",
                                         column="TARGET_RA")  # fmt: skip
                meta: dict[str, Any] = {"targetid": tid}
                for key, col in meta_cols.items():
                    if col is not None:
                        meta[key] = cell_value(col[i])
                for col, values in target_cols.items():
                    if values[i]:
                        meta[col.lower()] = int(values[i])
                if dead[i]:
                    meta["dead"] = why[i]
                z = None
                if isinstance(zsource, float):
                    z = zsource
                elif isinstance(zsource, dict) and tid in zsource:
                    z, zwarn, spectype = zsource[tid]
                    if zwarn:
                        meta["zwarn"] = zwarn
                    if spectype:
                        meta["spectype"] = spectype
                row = SpectrumRow(
                    object_id=oid, source_object_id=oid, ra=ra, dec=dec, z=z, wave=wave, flux=flux[k], ivar=ivar[k],
                    mask=mask_i32[k], resolution=None if resolution is None else resolution[k], flux_unit=flux_unit,
                    meta=meta,
                )  # fmt: skip
                spectra.append(finalize_spectrum(path, row, hdu=f"{arms[0].name}_FLUX"))
                sources.append(SourceRow(object_id=oid, ra=ra, dec=dec, z=z, meta=meta, shared=True))
        check_unique_ids(path, (s.object_id for s in spectra), hdu="FIBERMAP", column="TARGETID")
        return FileContents(reader=self.name, sources=sources, spectra=iter(spectra), meta=file_meta)

    @staticmethod
    def _arm_arrays(path: object, hdul: Any, arm: str, n_fibres: int) -> tuple:
        """(wave, flux, ivar, mask, resolution or None) of one arm, shapes checked."""
        wave_hdu = require_hdu(path, hdul, f"{arm}_WAVELENGTH")
        wave = check_wavelength(path, hdu_data(path, wave_hdu), hdu=wave_hdu.name)
        npix = wave.size
        want = (n_fibres, npix)
        arrays = []
        for part in ("FLUX", "IVAR", "MASK"):
            if part == "MASK" and f"{arm}_MASK" not in hdul:
                arrays.append(np.zeros(want, dtype=np.uint32))
                continue
            hdu = require_hdu(path, hdul, f"{arm}_{part}")
            data = _mask_data(path, hdu) if part == "MASK" else hdu_data(path, hdu)
            if data is None or data.shape != want:
                raise ReaderError(
                    path, f"shape {None if data is None else data.shape} disagrees with {n_fibres} FIBERMAP rows x "
                    f"{npix} {arm}_WAVELENGTH pixels", hdu=hdu.name,
                )  # fmt: skip
            if part == "MASK":
                data = np.asarray(data)
                data = data.astype(np.uint32) if data.dtype.kind in "ui" else data.astype(np.int64).astype(np.uint32)
            arrays.append(data)
        res = None
        if f"{arm}_RESOLUTION" in hdul:
            hdu = hdul[f"{arm}_RESOLUTION"]
            res = hdu_data(path, hdu)
            shape = None if res is None else res.shape
            if shape is None or len(shape) != 3 or shape[0] != n_fibres or shape[2] != npix or shape[1] % 2 != 1:
                raise ReaderError(
                    path, f"resolution data has shape {shape}, expected ({n_fibres}, "
                    f"ndiag (odd), {npix})", hdu=hdu.name,
                )  # fmt: skip
        return (wave, *arrays, res)

    @staticmethod
    def _check_pixels(path: object, arm: str, flux: np.ndarray, ivar: np.ndarray, targetid: np.ndarray) -> None:
        bad_ivar = ~np.isfinite(ivar) | (ivar < 0)
        if bad_ivar.any():
            row = int(np.flatnonzero(bad_ivar.any(axis=1))[0])
            raise ReaderError(path, f"IVAR has {int(bad_ivar.sum())} NaN/inf/negative values (first in TARGETID "
                              f"{targetid[row]})", hdu=f"{arm}_IVAR")  # fmt: skip
        bad_flux = ~np.isfinite(flux) & (ivar > 0)
        if bad_flux.any():
            row = int(np.flatnonzero(bad_flux.any(axis=1))[0])
            raise ReaderError(path, f"flux is NaN/inf at {int(bad_flux.sum())} pixels with ivar > 0 (first in "
                              f"TARGETID {targetid[row]})", hdu=f"{arm}_FLUX")  # fmt: skip


#: the registered instance
reader = DesiCoaddReader()
