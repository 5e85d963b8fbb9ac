"""The real spectra of the gas-line reference: one :class:`SpectraBatch` of one spectrum each.

Both ``ppxf_gas_reference.py`` (pPXF) and ``compare_ppxf_gas.py`` (skyledger) fit exactly
these batches, so the comparison differs only in the fitting code. Spectra come from
the bundled sample data (SDSS, MaNGA, LEGA-C, SAMI) and the test inputs in tests/data
(GMOS, OSIRIS), read with the project's own readers where it has them. Where a file
carries no resolution, the R below is given to both codes (stated per spectrum in the
reference JSON); it scales both codes' sigma_gas alike.

Left out: the DESI EDR fibre (TARGETID 39633300968442591): continuum S/N 0.45 per pixel
and no emission line above 3.5 sigma anywhere, so there is no redshift and nothing to
compare; MaNGA index 5 is fitted and expected to fail in both codes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lines_common import DATA, read_legac, read_manga, read_sdss
from skyledger.compute.fitting import SpectraBatch

__all__ = ["ReferenceInput", "reference_inputs", "TESTS_DATA"]

TESTS_DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
#: SAMI bins fitted: central, intermediate (r ~ 5 spaxels), outer (r ~ 12 spaxels).
SAMI_BINS = {"central": 1, "intermediate": 13, "outer": 29}
#: Assumed R where the file gives none (the grating's nominal resolving power).
R_GMOS = 2000.0  # skyledger's default_resolution; GMOS B600/R400 nominal R ~ 1700-1900
R_OSIRIS = 1000.0  # GTC/OSIRIS R1000B/R1000R nominal R ~ 1000
Z_OSIRIS = 0.19531  # green pea SDSS J121903.98+152608.5 (LiMe example)


@dataclass(slots=True)
class ReferenceInput:
    name: str
    batch: SpectraBatch  # one spectrum
    source: str  # file and selection
    resolution_note: str


def _one(batch: SpectraBatch, i: int) -> SpectraBatch:
    take = lambda a: None if a is None else np.asarray(a)[i : i + 1].copy()  # noqa: E731
    return SpectraBatch(wave=take(batch.wave), flux=take(batch.flux), ivar=take(batch.ivar), redshift=take(batch.redshift),
                        mask=take(batch.mask), resolution=take(batch.resolution))  # fmt: skip


def _from_row(row, z: float | None = None, resolution: float | None = None, flux_scale: float = 1.0) -> SpectraBatch:
    """A reader's SpectrumRow as a one-spectrum batch (flux and errors times ``flux_scale``)."""
    n = row.n_pix
    res = row.resolution if row.resolution is not None else np.full(n, resolution if resolution else np.nan)
    return SpectraBatch(
        wave=np.asarray(row.wave, float)[None], flux=np.asarray(row.flux, float)[None] * flux_scale,
        ivar=np.asarray(row.ivar, float)[None] / flux_scale**2,
        mask=(np.zeros(n, np.int64) if row.mask is None else np.asarray(row.mask, np.int64))[None],
        resolution=np.asarray(res, float)[None], redshift=np.array([row.z if z is None else z], float),
    )  # fmt: skip


def _read(reader: str, path: Path) -> list:
    from skyledger.ingest.readers import get_reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(get_reader(reader).read(str(path), {}).spectra)


def _gmos_cube_centre(path: Path) -> SpectraBatch:
    """Sum of the 3x3 spaxels around the brightest spaxel (H-alpha region), variances added."""
    rows = [r for r in _read("gmos_cube", path) if r.wave is not None]
    total = np.array([np.nansum(r.flux) for r in rows])
    bx, by = rows[int(np.argmax(total))].meta["x"], rows[int(np.argmax(total))].meta["y"]
    near = [r for r in rows if abs(r.meta["x"] - bx) <= 1 and abs(r.meta["y"] - by) <= 1]
    flux = np.sum([np.asarray(r.flux, float) for r in near], axis=0)
    ok = np.all([np.asarray(r.ivar) > 0 for r in near], axis=0)
    var = np.sum([np.where(ok, 1 / np.where(ok, np.asarray(r.ivar, float), 1), 0) for r in near], axis=0)
    mask = np.bitwise_or.reduce([np.zeros(r.n_pix, np.int64) if r.mask is None else np.asarray(r.mask, np.int64) for r in near])
    row = near[0]
    row.flux, row.ivar, row.mask = flux, np.where(ok & (var > 0), 1 / np.where(var > 0, var, 1), 0), mask
    row.meta = {**row.meta, "summed": [(r.meta["x"], r.meta["y"]) for r in near]}
    return _from_row(row, resolution=R_GMOS, flux_scale=1e17)


def reference_inputs(names: list[str] | None = None) -> dict[str, ReferenceInput]:
    """Every reference spectrum by name (or those in ``names``), in a fixed order."""
    out: dict[str, ReferenceInput] = {}

    def want(name: str) -> bool:
        return names is None or name in names or any(name.startswith(n + "[") or name.startswith(n + ":") for n in names)

    for gal in ("NGC3073", "NGC3522"):
        if want(gal):
            out[gal] = ReferenceInput(gal, read_sdss(DATA / f"{gal}_SDSS_DR18.fits"), f"ingest/sample_data/{gal}_SDSS_DR18.fits", "SDSS wdisp per pixel")
    manga = read_manga(DATA / "MaNGA_test_spectra.fits.gz")
    for i in range(len(manga)):
        if want(f"MaNGA[{i}]"):
            out[f"MaNGA[{i}]"] = ReferenceInput(f"MaNGA[{i}]", _one(manga, i), f"ingest/sample_data/MaNGA_test_spectra.fits.gz row {i}", "MaNGA SRES per pixel")
    if want("LEGA-C"):
        out["LEGA-C"] = ReferenceInput("LEGA-C", read_legac(DATA / "legac_M19_56670_v3.0.fits"), "ingest/sample_data/legac_M19_56670_v3.0.fits", "R = 3500 (LEGA-C DR3)")
    if any(want(f"SAMI:{b}:{arm}") for b in SAMI_BINS for arm in ("blue", "red")):
        for arm in ("blue", "red"):
            rows = {r.meta["bin"]: r for r in _read("sami_cube", DATA / f"209807_A_sectors_{arm}.fits.gz")}
            for label, b in SAMI_BINS.items():
                name = f"SAMI:{label}:{arm}"
                if want(name):
                    out[name] = ReferenceInput(name, _from_row(rows[b]), f"ingest/sample_data/209807_A_sectors_{arm}.fits.gz bin {b}",
                                               "sami_cube reader (FWHM 2.65 A blue, 1.61 A red)")  # fmt: skip
    if want("GMOS:NGC6300"):
        row = _read("fits_image_1d", TESTS_DATA / "gmos" / "ngc6300_nuc.fits")[0]
        out["GMOS:NGC6300"] = ReferenceInput("GMOS:NGC6300", _from_row(row, resolution=R_GMOS, flux_scale=1e17),
                                             "tests/data/gmos/ngc6300_nuc.fits (errors: reader's der_snr_local estimate; flux x 1e17)",
                                             f"assumed R = {R_GMOS:g}")  # fmt: skip
    if want("OSIRIS:GP121903"):
        row = _read("fits_image_1d", TESTS_DATA / "osiris" / "gp121903_osiris.fits")[0]
        out["OSIRIS:GP121903"] = ReferenceInput("OSIRIS:GP121903", _from_row(row, z=Z_OSIRIS, resolution=R_OSIRIS, flux_scale=1e17),
                                                "tests/data/osiris/gp121903_osiris.fits (errors: reader's der_snr_local estimate; flux x 1e17)",
                                                f"assumed R = {R_OSIRIS:g}")  # fmt: skip
    if want("GMOS:NGC3081"):
        out["GMOS:NGC3081"] = ReferenceInput("GMOS:NGC3081", _gmos_cube_centre(TESTS_DATA / "gmos" / "ngc3081_cube.fits"),
                                             "tests/data/gmos/ngc3081_cube.fits: 3x3 spaxels round the brightest, summed (flux x 1e17)",
                                             f"assumed R = {R_GMOS:g}")  # fmt: skip
    return out
