"""Broken 1-D files of the formats of test_oned_formats: each rejected with the file and the
problem named, and an ingest batch loads nothing of it while the next file loads."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.readers import detect_reader
from tests.ingest import oned_files as F
from tests.ingest.test_readers import assert_rejects


def _edit(src: Path, dst: Path, edit: Callable[[fits.HDUList], None]) -> Path:
    with fits.open(src, memmap=False) as hdul:
        edit(hdul)
        hdul.writeto(dst, overwrite=True, output_verify="silentfix")
    return dst


def _set(**cards):
    def edit(hdul):
        for key, value in cards.items():
            hdul[0].header[key] = value

    return edit


def _osiris(d: Path, name: str, edit) -> Path:
    return _edit(F.OSIRIS, d / f"{name}.fits", edit)


def truncated_image(d: Path) -> Path:
    p = d / "osiris_cut.fits"
    data = F.OSIRIS.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def lying_naxis1(d: Path) -> Path:
    """NAXIS1 = 4000 on a file holding 3199 pixels."""
    p = d / "osiris_naxis.fits"
    data = bytearray(F.OSIRIS.read_bytes())
    card = b"NAXIS1  =                 3199"
    at = data.index(card)
    data[at : at + len(card)] = b"NAXIS1  =                 4000"
    p.write_bytes(bytes(data))
    return p


def zero_flux(d: Path) -> Path:
    def edit(hdul):
        hdul[0].data = np.zeros_like(hdul[0].data)

    return _osiris(d, "zero_flux", edit)


def nan_flux(d: Path) -> Path:
    def edit(hdul):
        hdul[0].data = np.full_like(hdul[0].data, np.nan)

    return _osiris(d, "nan_flux", edit)


def missing_image(d: Path) -> Path:
    p = d / "no_image.fits"
    ext = fits.ImageHDU(np.ones(100, np.float32), name="FLUX")
    ext.header.update(F.linear_cards())
    fits.HDUList([fits.PrimaryHDU(), ext]).writeto(p)
    return p


def negative_sigma(d: Path) -> Path:
    path, _ = F.apall_bands(d / "apall_bad.fits")
    with fits.open(path, mode="update") as hdul:
        hdul[0].data[3, 0, 50] = -1.0
    return path


def text_good(d: Path, name: str = "good.txt", n: int = 200) -> Path:
    wave = np.linspace(4000, 6000, n)
    return F.text_spectrum(d / name, wave, np.ones(n), np.full(n, 0.1))


def _text_edit(d: Path, name: str, line: int, replacement: str) -> Path:
    """Line ``line + 1`` of a good file replaced; ``{w}`` in ``replacement`` is its wavelength."""
    p = text_good(d, name)
    lines = p.read_text().splitlines()
    lines[line] = replacement.format(w=lines[line].split()[0])
    p.write_text("\n".join(lines) + "\n")
    return p


def text_gzip_truncated(d: Path) -> Path:
    """A gzipped text spectrum cut in the middle of its compressed stream."""
    p = text_good(d, "long.txt", n=3000)
    data = gzip.compress(p.read_bytes())
    p.unlink()
    cut = d / "long.txt.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    return cut


def text_non_increasing(d: Path) -> Path:
    return _text_edit(d, "decreasing.txt", 120, "4100.0 1.0 0.1")


def text_non_numeric(d: Path) -> Path:
    return _text_edit(d, "nan_line.txt", 120, "5200.0 n/a 0.1")


def text_columns_change(d: Path) -> Path:
    return _text_edit(d, "columns.txt", 120, "{w} 1.0")


def text_negative_error(d: Path) -> Path:
    return _text_edit(d, "negative.txt", 120, "{w} 1.0 -0.1")


def starlight_negative_variance(d: Path) -> Path:
    p = F.starlight_table(d / "sl_neg.fits")
    with fits.open(p, mode="update") as hdul:
        hdul[1].data["f_var"][5] = -1.0
    return p


def starlight_short_error(d: Path) -> Path:
    p = F.starlight_images(d / "sl_short.fits")
    with fits.open(p) as hdul:
        hdul["F_ERR"] = fits.ImageHDU(hdul["F_ERR"].data[:-5].copy(), name="F_ERR")
        hdul.writeto(d / "sl_short2.fits")
    return d / "sl_short2.fits"


def x1d_no_extract1d(d: Path) -> Path:
    p = F.nirspec_x1d(d / "x1d_tmp.fits")
    return _edit(p, d / "x1d_nohdu.fits", lambda h: [h.__delitem__("EXTRACT1D") for _ in range(2)])


def x1d_no_error_column(d: Path) -> Path:
    def drop(hdul):
        cols = [c for c in hdul[1].columns if c.name != "FLUX_ERROR"]
        hdul[1] = fits.BinTableHDU.from_columns(cols, header=hdul[1].header, name="EXTRACT1D")

    return _edit(F.nirspec_x1d(d / "x1d_tmp2.fits"), d / "x1d_nocol.fits", drop)


def x1d_all_do_not_use(d: Path) -> Path:
    p = F.nirspec_x1d(d / "x1d_dq.fits")
    with fits.open(p, mode="update") as hdul:
        hdul[2].data["DQ"][:] = 1
    return p


def x1d_truncated(d: Path) -> Path:
    p = F.nirspec_x1d(d / "x1d_full.fits")
    data = p.read_bytes()
    (d / "x1d_cut.fits").write_bytes(data[: len(data) - 4000])
    return d / "x1d_cut.fits"


def _multispec(spec: str, n: int = 300, **cards) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        flux = 1.0 + np.random.default_rng(11).normal(0, 0.02, n)
        return F.multispec_image(d / "multispec.fits", flux, [spec], **cards)

    return build


# name -> (builder, reader, expected fragment, reader to force in a batch or None: detected)
CASES: dict[str, tuple[Callable[[Path], Path], str, str, str | None]] = {
    "image_truncated": (truncated_image, "fits_image_1d", "truncated", None),
    "image_naxis1_lies": (lying_naxis1, "fits_image_1d", "overstates", None),
    "image_cdelt_zero": (lambda d: _osiris(d, "cd0", _set(CDELT1=0.0, CD1_1=0.0)), "fits_image_1d",
                         "CD1_1 = 0.0: the wavelength step must be positive", None),
    "image_cdelt_negative": (lambda d: _osiris(d, "cdneg", _set(CD1_1=-2.07)), "fits_image_1d",
                             "CD1_1 = -2.07: the wavelength step must be positive", None),
    "image_crval_text": (lambda d: _osiris(d, "crval", _set(CRVAL1="none")), "fits_image_1d",
                         "CRVAL1 = 'none' is not a finite number", None),
    "image_not_dispersion_corrected": (lambda d: _osiris(d, "dcflag", _set(**{"DC-FLAG": -1})), "fits_image_1d",
                                       "not dispersion corrected", None),
    "image_multispec_no_spec": (lambda d: _osiris(d, "multispec", _set(CTYPE1="MULTISPE")), "fits_image_1d",
                                "WAT2_nnn cards hold no specN", None),
    "multispec_few_fields": (_multispec("1 1 0 4000. 2."), "fits_image_1d",
                             'WAT2 spec1 = "1 1 0 4000. 2." has 5 fields, expected at least 9', None),
    "multispec_unknown_ftype": (_multispec("1 1 2 4000. 2. 300 0. 1. 2. 1. 0. 5 3 1. 2. 3."), "fits_image_1d",
                                "function type 5 (pixel coordinate array) is not read", None),
    "multispec_short_coefficients": (_multispec("1 1 2 4000. 2. 300 0. 1. 2. 1. 0. 1 4 1. 300. 5000. 300."),
                                     "fits_image_1d", "needs 4 coefficients, got 2", None),
    "multispec_decreasing": (_multispec("1 1 0 6000. -2. 300 0. 1. 2."), "fits_image_1d",
                             "aperture 1 (WAT2 spec1): the wavelengths are not finite and strictly increasing", None),
    "multispec_turning_polynomial": (_multispec("1 1 2 4000. 2. 300 0. 1. 2. 1. 0. 2 3 1. 300. 5000. 10. 300."),
                                     "fits_image_1d", "not finite and strictly increasing", None),
    "multispec_missing_line": (_multispec("1 1 0 4000. 2. 300 0. 1. 2.", n=300, LTV2=-1.0), "fits_image_1d",
                               "has no spec2 attribute", None),
    "multispec_not_calibrated": (_multispec("1 1 -1 1. 1. 300 0. 1. 2."), "fits_image_1d",
                                 "not dispersion corrected", None),
    "image_zero_flux": (zero_flux, "fits_image_1d", "all zero or NaN", None),
    "image_nan_flux": (nan_flux, "fits_image_1d", "all zero or NaN", None),
    "image_missing_hdu": (missing_image, "fits_image_1d", "no SCI extension", "fits_image_1d"),
    "image_negative_sigma": (negative_sigma, "fits_image_1d", "sigma band", None),
    "text_gzip_truncated": (text_gzip_truncated, "text_spectrum", "truncated gzip file", None),
    "text_non_increasing": (text_non_increasing, "text_spectrum", "not strictly increasing: line 121 (4100.0)", None),
    "text_non_numeric": (text_non_numeric, "text_spectrum", "line 121 is not numeric: '5200.0 n/a 0.1'", None),
    "text_columns_change": (text_columns_change, "text_spectrum", "line 121 has 2 columns, expected 3", None),
    "text_negative_error": (text_negative_error, "text_spectrum", "1 negative values", None),
    "starlight_negative_variance": (starlight_negative_variance, "starlight", "F_VAR/F_ERR has 1 negative", None),
    "starlight_short_error": (starlight_short_error, "starlight", "F_ERR has shape (295,), F_OBS has (300,)", None),
    "x1d_missing_extract1d": (x1d_no_extract1d, "nirspec_x1d", "required HDU missing", "nirspec_x1d"),
    "x1d_missing_error": (x1d_no_error_column, "nirspec_x1d", "required column missing", None),
    "x1d_all_do_not_use": (x1d_all_do_not_use, "nirspec_x1d", "no usable pixel", None),
    "x1d_truncated": (x1d_truncated, "nirspec_x1d", "truncated", None),
}  # fmt: skip


def good_file(d: Path, reader: str) -> tuple[Path, dict]:
    d.mkdir(exist_ok=True)
    if reader == "fits_image_1d":
        return Path(shutil.copy(F.OSIRIS, d / "good.fits")), {"z": F.OSIRIS_Z}
    if reader == "text_spectrum":
        return text_good(d), {}
    if reader == "starlight":
        return F.starlight_table(d / "good_sl.fits"), {}
    return F.nirspec_x1d(d / "good_x1d.fits"), {}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_file_is_rejected_naming_file_and_problem(tmp_path, case):
    builder, reader, fragment, forced = CASES[case]
    path = builder(tmp_path)
    if forced is None:
        assert detect_reader(path).name == reader  # the damage does not hide the format
    assert_rejects(path, reader, fragment, options={"z": 0.1} if reader == "starlight" else None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_file_loads_nothing_and_the_batch_goes_on(fresh_database, tmp_path, case):
    builder, reader, fragment, forced = CASES[case]
    bad = builder(tmp_path)
    good, options = good_file(tmp_path / "good", reader)
    survey = SurveySpec(name="oned", reader=forced, options=options)
    bad_outcome, good_outcome = ingest_paths(fresh_database, [bad, good], survey=survey).outcomes
    assert bad_outcome.status == "rejected" and fragment.lower() in bad_outcome.reason.lower(), bad_outcome.reason
    assert good_outcome.status == "loaded", good_outcome.reason
    with fresh_database.engine.connect() as conn:
        files = dict(conn.execute(text("SELECT uri, status FROM ingest_file")).all())
        n_spectra = conn.execute(text("SELECT count(*) FROM spectrum")).scalar_one()
    assert files == {str(bad.resolve()): "rejected", str(good.resolve()): "loaded"}
    assert n_spectra == good_outcome.n_spectra
