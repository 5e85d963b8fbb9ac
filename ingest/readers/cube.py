"""Shared machinery of the IFU cube readers: spaxel selection, streaming, Voronoi binning.

The cube reader (:mod:`skyledger.ingest.readers.ifu_cube`) describes its file with a
:class:`CubeLayout` (wavelengths, a function that reads a slab of rows, the celestial WCS,
ids) and hands it to :func:`cube_spectra`, which yields either every usable spaxel or, with
``target_snr``, Voronoi bins; or, for a cube that comes with its pipeline's bin map, to
:func:`bin_map_spectra`, which yields one spectrum per bin.

Usable spaxel rule (thresholds are reader options):

* a pixel is *good* when ivar > 0, the flux is finite and no ``bad_mask_bits`` bit is set;
* a spaxel is *usable* when at least ``min_good_fraction`` (default 0.5) of its pixels
  are good and the median per-pixel S/N, flux * sqrt(ivar) over good pixels, exceeds
  ``min_snr`` (default 0, i.e. positive).

Memory stays bounded: the cube is read in slabs of whole rows (``rows_per_chunk``,
default sized to ~64 MB), through a memory map for uncompressed files, and spectra are
generated one at a time.  Binning reads the cube twice (statistics, then sums) and keeps
only the per-bin sums in memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.wcs import WCS
from skyledger.ingest.readers.base import finalize_spectrum
from skyledger.ingest.records import SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = [
    "CUBE_OPTIONS",
    "CubeLayout",
    "Slab",
    "SelectionRule",
    "cube_spectra",
    "parse_target_snr",
    "cube_wcs",
    "spectral_axis",
    "spaxel_positions",
    "voronoi_bins",
    "bin_map_spectra",
]

#: options every cube reader accepts (readers add their own)
CUBE_OPTIONS = (
    "object_id",
    "ra",
    "dec",
    "z",
    "min_good_fraction",
    "min_snr",
    "bad_mask_bits",
    "target_snr",
    "rows_per_chunk",
    "flux_unit",
    # Not used by the reader: the survey's seeing, read by the rotation task for beam smearing.
    "psf_fwhm_arcsec",
)

_SLAB_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class Slab:
    """Rows ``y0:y1`` of a cube, each array shaped (n_wave, y1 - y0, n_x)."""

    flux: np.ndarray  # float32, NaN allowed where ivar == 0
    ivar: np.ndarray  # float32, >= 0
    mask: np.ndarray | None  # int32
    resolution: np.ndarray | None  # float32 R per pixel, or None (then layout.resolution)


@dataclass(slots=True)
class CubeLayout:
    """What :func:`cube_spectra` needs to know about one cube file."""

    path: str
    hdu: str  # the flux HDU, for error messages
    galaxy_id: str
    wave: np.ndarray  # float64 vacuum Angstrom
    n_y: int
    n_x: int
    celestial: WCS | None  # 2-D celestial WCS of the spatial axes; None: spaxels have no position
    read_slab: Callable[[int, int], Slab]
    resolution: np.ndarray | None  # 1-D R shared by all spaxels, if the file gives one
    flux_unit: str | None
    z: float | None
    #: spectrum meta of every row (a two-arm instrument's arm, say)
    meta: dict[str, Any] = field(default_factory=dict)
    #: appended to every spectrum id (``#blue``): the arms of one cube share their spaxel ids
    id_suffix: str = ""


@dataclass(frozen=True, slots=True)
class SelectionRule:
    """Thresholds of the usable-spaxel rule (see module docstring)."""

    min_good_fraction: float = 0.5
    min_snr: float = 0.0
    bad_mask_bits: int = -1  # -1: any set bit makes a pixel bad

    @classmethod
    def from_options(cls, path: object, opts: Mapping[str, Any], default_bad_bits: int) -> SelectionRule:
        try:
            rule = cls(
                min_good_fraction=float(opts.get("min_good_fraction", 0.5)),
                min_snr=float(opts.get("min_snr", 0.0)),
                bad_mask_bits=int(opts.get("bad_mask_bits", default_bad_bits)),
            )
        except (TypeError, ValueError) as err:
            raise ReaderError(path, f"bad spaxel-selection option: {err}") from err
        if not 0.0 < rule.min_good_fraction <= 1.0:
            raise ReaderError(path, f"option min_good_fraction must be in (0, 1], got {rule.min_good_fraction}")
        return rule


def cube_wcs(path: object, header: Any, hdu: str) -> tuple[WCS, WCS]:
    """(full 3-D WCS, celestial 2-D WCS) of a cube header; ReaderError unless RA/Dec + spectral."""
    try:
        with warnings.catch_warnings():
            # FITSFixedWarning about DATE-OBS/MJD-OBS normalisation is noise here.
            warnings.simplefilter("ignore")
            wcs = WCS(header)
    except (ValueError, KeyError, MemoryError) as err:
        raise ReaderError(path, f"cannot build a WCS from the header: {err}", hdu=hdu) from err
    if wcs.naxis != 3:
        raise ReaderError(path, f"expected a 3-axis WCS, header has {wcs.naxis} axes", hdu=hdu)
    celestial = wcs.celestial
    if celestial.naxis != 2 or not wcs.has_celestial:
        raise ReaderError(path, f"no celestial (RA/Dec) axes in CTYPEs {list(wcs.wcs.ctype)}", hdu=hdu)
    if wcs.wcs.lng != 0 or wcs.wcs.lat != 1 or wcs.wcs.spec != 2:
        raise ReaderError(
            path, f"axes must be (RA, Dec, wavelength) in that order; CTYPEs are {list(wcs.wcs.ctype)}", hdu=hdu
        )
    return wcs, celestial


def spectral_axis(path: object, wcs: WCS, n_wave: int, hdu: str) -> tuple[np.ndarray, str]:
    """(wavelength in Angstrom along axis 3, CTYPE3) from the WCS; linear or -LOG axes alike."""
    from astropy import units as u

    spec = wcs.sub([3])
    ctype = str(spec.wcs.ctype[0]).strip().upper()
    if not (ctype.startswith("AWAV") or ctype.startswith("WAVE")):
        raise ReaderError(path, f"spectral axis CTYPE3 = {ctype!r}; expected AWAV or WAVE", hdu=hdu)
    values = np.asarray(spec.pixel_to_world_values(np.arange(n_wave, dtype=np.float64)), dtype=np.float64)
    unit = u.Unit(spec.wcs.cunit[0] or "m")  # astropy.wcs normalises lengths to SI metres
    return (values * unit).to_value(u.AA), ctype


def spaxel_positions(celestial: WCS | None, n_y: int, n_x: int) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees of every spaxel centre, arrays shaped (n_y, n_x); ra in [0, 360).
    Without a celestial WCS every position is NaN (the rows get ``None``)."""
    if celestial is None:
        return np.full((n_y, n_x), np.nan), np.full((n_y, n_x), np.nan)
    yy, xx = np.mgrid[0:n_y, 0:n_x]
    ra, dec = celestial.pixel_to_world_values(xx.astype(np.float64), yy.astype(np.float64))
    return np.mod(np.asarray(ra), 360.0), np.asarray(dec)


def _good_pixels(slab: Slab, rule: SelectionRule) -> np.ndarray:
    good = (slab.ivar > 0) & np.isfinite(slab.flux)
    if slab.mask is not None and rule.bad_mask_bits != 0:
        # bad_mask_bits = -1 has every bit set: any flag makes the pixel bad.
        good &= (slab.mask & np.int64(rule.bad_mask_bits)) == 0
    return good


def _slab_stats(slab: Slab, rule: SelectionRule) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per spaxel of a slab: usable flag, median S/N, median flux (signal), median error (noise)."""
    good = _good_pixels(slab, rule)
    n_wave = good.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        # Spaxels with no good pixel give all-NaN medians: they are simply not usable.
        warnings.simplefilter("ignore", RuntimeWarning)
        sqrt_ivar = np.sqrt(np.where(good, slab.ivar, np.nan))
        snr = np.nanmedian(np.where(good, slab.flux, np.nan) * sqrt_ivar, axis=0)
        signal = np.nanmedian(np.where(good, slab.flux, np.nan), axis=0)
        noise = np.nanmedian(1.0 / sqrt_ivar, axis=0)
    frac = good.sum(axis=0) / n_wave
    usable = (frac >= rule.min_good_fraction) & np.isfinite(snr) & (snr > rule.min_snr)
    return usable, snr, signal, noise


def _chunk_rows(layout: CubeLayout, opts: Mapping[str, Any]) -> int:
    if opts.get("rows_per_chunk"):
        return max(1, int(opts["rows_per_chunk"]))
    # flux + ivar + mask (+ transposed copies) of one row of spaxels
    per_row = layout.wave.size * layout.n_x * 4 * 6
    return int(max(1, min(layout.n_y, _SLAB_BYTES // max(per_row, 1))))


def _iter_slabs(layout: CubeLayout, rows: int) -> Iterator[tuple[int, Slab]]:
    for y0 in range(0, layout.n_y, rows):
        y1 = min(layout.n_y, y0 + rows)
        slab = layout.read_slab(y0, y1)
        # The whole cube must be sound, not only the spaxels that end up used.
        if not np.all(np.isfinite(slab.ivar)) or np.any(slab.ivar < 0):
            raise ReaderError(layout.path, f"negative or non-finite ivar in rows {y0}-{y1 - 1}", hdu=layout.hdu)
        if np.any(~np.isfinite(slab.flux) & (slab.ivar > 0)):
            raise ReaderError(layout.path, f"NaN/inf flux with ivar > 0 in rows {y0}-{y1 - 1}", hdu=layout.hdu)
        yield y0, slab


def parse_target_snr(path: object, opts: Mapping[str, Any]) -> float | None:
    """The ``target_snr`` option as a positive float, None when absent; ReaderError if bad."""
    target = opts.get("target_snr")
    if target is None:
        return None
    try:
        value = float(target)
    except (TypeError, ValueError) as err:
        raise ReaderError(path, f"option target_snr must be a number, got {target!r}") from err
    if not (np.isfinite(value) and value > 0):
        raise ReaderError(path, f"option target_snr must be positive, got {value}")
    return value


def cube_spectra(layout: CubeLayout, opts: Mapping[str, Any], rule: SelectionRule) -> Iterator[SpectrumRow]:
    """Spaxels (default) or Voronoi bins (``opts['target_snr']``) of a cube, as a generator."""
    target = parse_target_snr(layout.path, opts)
    if target is None:
        return _iter_spaxels(layout, opts, rule)
    return _iter_bins(layout, opts, rule, target)


def _iter_spaxels(layout: CubeLayout, opts: Mapping[str, Any], rule: SelectionRule) -> Iterator[SpectrumRow]:
    ra_map, dec_map = spaxel_positions(layout.celestial, layout.n_y, layout.n_x)
    rows = _chunk_rows(layout, opts)
    for y0, slab in _iter_slabs(layout, rows):
        usable, snr, _, _ = _slab_stats(slab, rule)
        if not usable.any():
            continue
        # (n_wave, rows, n_x) -> (rows, n_x, n_wave): each spectrum becomes contiguous.
        flux = np.ascontiguousarray(np.moveaxis(slab.flux, 0, -1))
        ivar = np.ascontiguousarray(np.moveaxis(slab.ivar, 0, -1))
        mask = None if slab.mask is None else np.ascontiguousarray(np.moveaxis(slab.mask, 0, -1))
        res3 = None if slab.resolution is None else np.ascontiguousarray(np.moveaxis(slab.resolution, 0, -1))
        for dy, x in zip(*np.nonzero(usable), strict=False):
            y = y0 + int(dy)
            row = SpectrumRow(
                object_id=f"{layout.galaxy_id}#{int(x)}_{y}{layout.id_suffix}",
                source_object_id=layout.galaxy_id,
                ra=_position(ra_map[y, x]),
                dec=_position(dec_map[y, x]),
                z=layout.z,
                wave=layout.wave,
                flux=flux[dy, x].copy(),
                ivar=ivar[dy, x].copy(),
                mask=None if mask is None else mask[dy, x].copy(),
                resolution=res3[dy, x].copy() if res3 is not None else layout.resolution,
                flux_unit=layout.flux_unit,
                meta={"kind": "spaxel", "x": int(x), "y": y, "median_snr": float(snr[dy, x]), **layout.meta},
            )
            yield finalize_spectrum(layout.path, row, hdu=layout.hdu)


def voronoi_bins(x: np.ndarray, y: np.ndarray, signal: np.ndarray, noise: np.ndarray, target_snr: float) -> np.ndarray:
    """Bin number per spaxel from the ``vorbin`` package (Cappellari & Copin 2003).

    S/N of a bin is sum(signal) / sqrt(sum(noise^2)): the S/N of the summed spectrum whose
    variances add, which is how the bins are then combined.  Spaxels already above the
    target stay single; when no compact bin can reach the target (vorbin's accretion
    finds none, or the whole set is below it) everything goes into one bin.
    """
    if x.size == 1 or np.min(signal / noise) >= target_snr:
        return np.arange(x.size, dtype=np.int64)
    total = signal.sum() / np.sqrt((noise**2).sum())
    if total < target_snr:
        return np.zeros(x.size, dtype=np.int64)
    with warnings.catch_warnings():
        # vorbin announces its deprecation in favour of PowerBin on import and on each call.
        warnings.simplefilter("ignore", UserWarning)
        from vorbin.voronoi_2d_binning import voronoi_2d_binning

        try:
            bin_number, *_ = voronoi_2d_binning(x, y, signal, noise, target_snr, plot=False, quiet=True, pixelsize=1.0)
        except IndexError:
            # vorbin indexes an empty list of bins when accretion reached the target
            # nowhere (S/N falls before it rises enough): the only bin is all spaxels.
            return np.zeros(x.size, dtype=np.int64)
    return np.asarray(bin_number, dtype=np.int64)


def _iter_bins(
    layout: CubeLayout, opts: Mapping[str, Any], rule: SelectionRule, target: float
) -> Iterator[SpectrumRow]:
    rows = _chunk_rows(layout, opts)
    n_y, n_x, n_wave = layout.n_y, layout.n_x, layout.wave.size
    usable = np.zeros((n_y, n_x), dtype=bool)
    signal = np.zeros((n_y, n_x))
    noise = np.zeros((n_y, n_x))
    for y0, slab in _iter_slabs(layout, rows):
        u, _, s, n = _slab_stats(slab, rule)
        y1 = y0 + u.shape[0]
        usable[y0:y1], signal[y0:y1], noise[y0:y1] = u, s, n
    # vorbin needs positive finite noise; a usable spaxel has positive median S/N, and its
    # median flux can still be <= 0 on a faint continuum: such spaxels join no bin.
    usable &= np.isfinite(signal) & np.isfinite(noise) & (noise > 0) & (signal > 0)
    ys, xs = np.nonzero(usable)
    if ys.size == 0:
        return
    bin_of = voronoi_bins(xs.astype(float), ys.astype(float), signal[ys, xs], noise[ys, xs], target)
    n_bins = int(bin_of.max()) + 1
    bin_map = np.full((n_y, n_x), -1, dtype=np.int64)
    bin_map[ys, xs] = bin_of

    flux_sum = np.zeros((n_bins, n_wave))
    var_sum = np.zeros((n_bins, n_wave))
    n_good = np.zeros((n_bins, n_wave), dtype=np.int32)
    mask_and = np.full((n_bins, n_wave), -1, dtype=np.int32)
    inv_r2_sum = np.zeros((n_bins, n_wave))
    has_mask = has_res3 = False
    for y0, slab in _iter_slabs(layout, rows):
        good = _good_pixels(slab, rule)
        sub = bin_map[y0 : y0 + slab.flux.shape[1]]
        for dy, x in zip(*np.nonzero(sub >= 0), strict=False):
            b = sub[dy, x]
            g = good[:, dy, x]
            flux_sum[b, g] += slab.flux[g, dy, x]
            var_sum[b, g] += 1.0 / slab.ivar[g, dy, x]
            n_good[b] += g
            if slab.mask is not None:
                has_mask = True
                mask_and[b] &= slab.mask[:, dy, x]
            if slab.resolution is not None:
                has_res3 = True
                with np.errstate(divide="ignore"):
                    inv_r2_sum[b] += 1.0 / np.asarray(slab.resolution[:, dy, x], dtype=np.float64) ** 2

    for b in range(n_bins):
        members_y, members_x = np.nonzero(bin_map == b)
        n_members = members_y.size
        weights = np.clip(signal[members_y, members_x], 0.0, None)
        if weights.sum() <= 0:
            weights = np.ones(n_members)
        xc = float(np.average(members_x, weights=weights))
        yc = float(np.average(members_y, weights=weights))
        ra_c, dec_c = _world(layout.celestial, xc, yc)
        # Pixels where some members had no data: scale the partial sum up to the full
        # bin (flux x N/n, variance x (N/n)^2); below half coverage the pixel is dropped.
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(n_good[b] > 0, n_members / n_good[b], 0.0)
            flux = flux_sum[b] * scale
            var = var_sum[b] * scale**2
            ivar = np.where((n_good[b] * 2 >= n_members) & (var > 0), 1.0 / var, 0.0)
        resolution = layout.resolution
        if has_res3:
            with np.errstate(divide="ignore", invalid="ignore"):
                resolution = (1.0 / np.sqrt(inv_r2_sum[b] / n_members)).astype(np.float32)
        sn = float(np.median((flux * np.sqrt(ivar))[ivar > 0])) if np.any(ivar > 0) else 0.0
        row = SpectrumRow(
            object_id=f"{layout.galaxy_id}#bin{b}{layout.id_suffix}",
            source_object_id=layout.galaxy_id,
            ra=ra_c,
            dec=dec_c,
            z=layout.z,
            wave=layout.wave,
            flux=flux.astype(np.float32),
            ivar=ivar.astype(np.float32),
            mask=mask_and[b] if has_mask else None,
            resolution=resolution,
            flux_unit=layout.flux_unit,
            meta={
                "kind": "voronoi_bin",
                "bin": b,
                "n_spaxels": int(n_members),
                "x_centroid": xc,
                "y_centroid": yc,
                "target_snr": target,
                "median_snr": sn,
                "spaxels": [[int(x), int(y)] for y, x in zip(members_y, members_x, strict=False)],
                **layout.meta,
            },
        )
        yield finalize_spectrum(layout.path, row, hdu=layout.hdu)


def _position(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _world(celestial: WCS | None, x: float, y: float) -> tuple[float | None, float | None]:
    """(ra in [0, 360), dec) of a pixel position, (None, None) without a celestial WCS."""
    if celestial is None:
        return None, None
    ra, dec = celestial.pixel_to_world_values(x, y)
    return float(np.mod(ra, 360.0)), float(dec)


def bin_map_spectra(
    layout: CubeLayout,
    bin_map: np.ndarray,
    opts: Mapping[str, Any],
    rule: SelectionRule,
    *,
    bin_source: Callable[[int], str] | None = None,
) -> Iterator[SpectrumRow]:
    """One spectrum per bin of a pipeline's bin map, for cubes whose spaxels each hold
    their bin's spectrum (SAMI's binned cubes): the bin's spectrum is taken once, not
    summed over its identical copies, and placed at the bin's centroid (the mean pixel
    position of its members).

    ``bin_map``: (n_y, n_x) integer bin ids, 0 or negative outside every bin.  A member
    whose spectrum differs from its bin's first member means the map does not describe the
    cube: ReaderError.  The usable-spaxel rule is applied to each bin's spectrum.  Ids are
    ``<galaxy>#bin<id>`` + ``layout.id_suffix``; ``bin_source(id)`` names the source a bin's spectrum
    belongs to (default: the galaxy).
    """
    n_y, n_x = layout.n_y, layout.n_x
    if bin_map.shape != (n_y, n_x):
        raise ReaderError(layout.path, f"bin map shape {bin_map.shape} differs from the cube's spatial shape {(n_y, n_x)}")
    ids = [int(b) for b in np.unique(bin_map) if b > 0]
    first: dict[int, tuple[int, int]] = {}
    spectra: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = {}
    for y0, slab in _iter_slabs(layout, _chunk_rows(layout, opts)):
        sub = bin_map[y0 : y0 + slab.flux.shape[1]]
        for dy, x in zip(*np.nonzero(sub > 0), strict=False):
            b, y = int(sub[dy, x]), y0 + int(dy)
            flux, ivar = slab.flux[:, dy, x], slab.ivar[:, dy, x]
            mask = None if slab.mask is None else slab.mask[:, dy, x]
            res = None if slab.resolution is None else slab.resolution[:, dy, x]
            if b not in spectra:
                first[b] = (int(x), y)
                spectra[b] = (flux.copy(), ivar.copy(), None if mask is None else mask.copy(), None if res is None else res.copy())
            elif not (np.array_equal(flux, spectra[b][0], equal_nan=True) and np.array_equal(ivar, spectra[b][1])):
                raise ReaderError(
                    layout.path,
                    f"bin {b}: spaxel ({int(x)}, {y}) holds another spectrum than spaxel {first[b]}; "
                    "the bin map does not describe this cube",
                    hdu=layout.hdu,
                )
    for b in ids:
        flux, ivar, mask, res = spectra[b]
        slab = Slab(flux[:, None, None], ivar[:, None, None], None if mask is None else mask[:, None, None], None)
        usable, snr, _, _ = _slab_stats(slab, rule)
        if not usable[0, 0]:
            continue
        members_y, members_x = np.nonzero(bin_map == b)
        xc, yc = float(members_x.mean()), float(members_y.mean())
        ra_c, dec_c = _world(layout.celestial, xc, yc)
        row = SpectrumRow(
            object_id=f"{layout.galaxy_id}#bin{b}{layout.id_suffix}",
            source_object_id=bin_source(b) if bin_source else layout.galaxy_id,
            ra=ra_c,
            dec=dec_c,
            z=layout.z,
            wave=layout.wave,
            flux=flux,
            ivar=ivar,
            mask=mask,
            resolution=res if res is not None else layout.resolution,
            flux_unit=layout.flux_unit,
            meta={
                "kind": "bin",
                "bin": b,
                "n_spaxels": int(members_y.size),
                "x_centroid": xc,
                "y_centroid": yc,
                "median_snr": float(snr[0, 0]),
                **layout.meta,
            },
        )
        yield finalize_spectrum(layout.path, row, hdu=layout.hdu)
