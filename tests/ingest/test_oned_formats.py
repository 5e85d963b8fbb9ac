"""The 1-D formats without a survey layout: IRAF-style FITS images (GMOS, GTC/OSIRIS),
plain-text spectra, STARLIGHT F_OBS/F_SYN files and JWST NIRSpec x1d products."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.readers import READERS, detect_reader
from skyledger.ingest.readers.base import SCATTER_METHOD, air_to_vacuum
from skyledger.ingest.readers.nirspec_x1d import FLUX_UNIT, jy_to_flambda
from skyledger.ingest.records import ERROR_ESTIMATE_KEY
from skyledger.ingest.table_rows import SPECTRUM_FLAGS
from tests.ingest import oned_files as F
from tests.ingest.test_readers import LEGAC, MANGA, NGC3073, read_all

ONED_READERS = ("nirspec_x1d", "starlight", "fits_image_1d", "text_spectrum")


def only_reader(path: Path, expected: str) -> None:
    assert detect_reader(path).name == expected
    claimed = [name for name, r in READERS.items() if r.sniff(path)]
    assert claimed == [expected], claimed


def oiii_centroid(wave: np.ndarray, flux: np.ndarray, expected: float) -> float:
    i = int(np.argmin(np.abs(wave - expected)))
    j = i - 8 + int(np.argmax(flux[i - 8 : i + 9]))
    s = slice(j - 3, j + 4)
    f = flux[s] - np.median(flux[j - 30 : j - 15])
    return float((wave[s] * f).sum() / f.sum())


# --------------------------------------------------------------------------- registry


def test_registry_order_puts_the_1d_formats_between_the_maps_and_the_catalogue():
    names = list(READERS)
    assert names.index("velocity_map") < min(names.index(n) for n in ONED_READERS)
    assert max(names.index(n) for n in ONED_READERS) < names.index("line_catalog")
    assert names.index("starlight") < names.index("fits_image_1d") < names.index("text_spectrum")


@pytest.mark.parametrize(("path", "expected"), [(NGC3073, "sdss"), (LEGAC, "eso_phase3"), (MANGA, "manga_rss")])
def test_the_1d_readers_claim_no_bundled_sample(path, expected):
    only_reader(path, expected)


# --------------------------------------------------------------------------- IRAF 1-D images, real files


def test_osiris_oiii_lands_at_its_vacuum_wavelength():
    contents, (row,) = read_all(F.OSIRIS, "fits_image_1d", {"z": F.OSIRIS_Z})
    only_reader(F.OSIRIS, "fits_image_1d")
    assert row.object_id == "SDSS_J121903.98+152608.5"
    assert contents.meta["wavelength_medium_in_file"] == "air"
    # The WCS, then air -> vacuum, exactly.
    header = fits.getheader(F.OSIRIS)
    pix = np.arange(1, header["NAXIS1"] + 1)
    np.testing.assert_allclose(row.wave, air_to_vacuum(header["CRVAL1"] + (pix - 1) * header["CD1_1"]), rtol=1e-12)
    step = float(np.median(np.diff(row.wave)))
    assert step == pytest.approx(2.0687, abs=2e-3)
    # [OIII]5007 (vacuum 5008.24) at z: its centroid within a pixel.
    expected = 5008.24 * (1 + F.OSIRIS_Z)
    assert abs(oiii_centroid(row.wave, row.flux, expected) - expected) < step
    # The RA/DEC cards are sexagesimal strings (RA in hours).
    assert (row.ra, row.dec) == pytest.approx((184.8233167, 15.3987861), abs=1e-6)
    assert row.resolution is None
    assert row.flux_unit == "1e-17 erg / (Angstrom s cm2)"


def test_osiris_error_estimate_is_flagged_and_close_to_the_scatter():
    _, (row,) = read_all(F.OSIRIS, "fits_image_1d", {"z": F.OSIRIS_Z})
    assert row.meta[ERROR_ESTIMATE_KEY] == SCATTER_METHOD
    assert np.all(row.ivar > 0)
    # A line-free continuum stretch (rest 5100-5500 A): the scatter about a smooth fit.
    sel = (row.wave > 5100 * (1 + F.OSIRIS_Z)) & (row.wave < 5500 * (1 + F.OSIRIS_Z))
    x, y = row.wave[sel], row.flux[sel].astype(float)
    rms = np.std(y - np.polyval(np.polyfit(x, y, 3), x))
    estimate = float(np.median(1 / np.sqrt(row.ivar[sel])))
    # The IRAF resampling correlates neighbouring pixels (lag-1 correlation 0.8): DER_SNR at
    # its usual 2-pixel lag gives half the scatter (0.49); at the decorrelation lag the
    # estimate is 0.65 of this rms, which itself holds real structure of the spectrum
    # besides noise (an upper bound).
    assert 0.55 < estimate / rms < 1.3


def test_gmos_redshift_from_the_header_and_leftover_3d_cards():
    contents, (row,) = read_all(F.GMOS, "fits_image_1d")
    only_reader(F.GMOS, "fits_image_1d")
    assert row.object_id == "NGC 6300" and row.z == pytest.approx(0.003699)
    assert (row.ra, row.dec) == (None, None)
    assert row.n_pix == 5555
    assert row.wave[0] == pytest.approx(air_to_vacuum(np.array([4415.392]))[0])
    assert np.diff(row.wave).min() > 0.46
    assert row.meta[ERROR_ESTIMATE_KEY] == SCATTER_METHOD
    # IRAF's zero padding beyond the data gets no weight.
    assert np.all(row.ivar[row.flux == 0] == 0) and np.count_nonzero(row.ivar) > 5000


def test_osiris_ingests_with_flags(fresh_database, tmp_path):
    path = Path(shutil.copy(F.OSIRIS, tmp_path / F.OSIRIS.name))
    spec = SurveySpec(name="gp", options={"z": F.OSIRIS_Z, "ra": 184.76658, "dec": 15.43569})
    (outcome,) = ingest_paths(fresh_database, [path], survey=spec).outcomes
    assert outcome.status == "loaded", outcome.reason
    assert outcome.reader == "fits_image_1d"
    with fresh_database.engine.connect() as conn:
        flags, ra, z, n_pix = conn.execute(text("SELECT flags, ra, z, n_pix FROM spectrum")).one()
    assert flags & SPECTRUM_FLAGS["ERROR_ESTIMATED"]
    assert flags & SPECTRUM_FLAGS["NO_RESOLUTION"]
    assert flags & SPECTRUM_FLAGS["AIR_TO_VACUUM"]
    assert (ra, z, n_pix) == (pytest.approx(184.76658), pytest.approx(F.OSIRIS_Z), 3199)


# --------------------------------------------------------------------------- IRAF 1-D images, synthesised


def test_multi_aperture_image(tmp_path):
    path, centres = F.multi_aperture(tmp_path / "slit.fits")
    only_reader(path, "fits_image_1d")
    contents, rows = read_all(path, "fits_image_1d")
    assert [r.object_id for r in rows] == ["SYNTH#ap3", "SYNTH#ap5", "SYNTH#ap7"]
    assert [s.parent_object_id for s in contents.sources] == [None, "SYNTH", "SYNTH", "SYNTH"]
    for row, centre in zip(rows, centres):
        assert row.wave[int(np.argmax(row.flux))] == pytest.approx(air_to_vacuum(np.array([4000 + 2 * centre]))[0])
        assert row.meta[ERROR_ESTIMATE_KEY] == SCATTER_METHOD
        # white noise of 0.05 x 1e-16: the estimate is right
        assert np.median(1 / np.sqrt(row.ivar)) == pytest.approx(0.05, rel=0.2)
        assert row.flux_unit == "1e-16 erg / (Angstrom s cm2)"
        assert (row.ra, row.dec, row.z) == (pytest.approx(150.0), pytest.approx(-20.0), 0.01)


def test_apall_bands_take_the_sigma_band_as_error(tmp_path):
    path, sigma = F.apall_bands(tmp_path / "apall.fits")
    only_reader(path, "fits_image_1d")
    contents, (row,) = read_all(path, "fits_image_1d", {"medium": "vacuum"})
    assert row.object_id == "SYNTH"
    np.testing.assert_allclose(row.ivar, 1 / sigma.astype(np.float32) ** 2, rtol=1e-5)
    assert ERROR_ESTIMATE_KEY not in row.meta
    assert contents.meta["iraf_bands"][3].startswith("sigma")
    np.testing.assert_allclose(row.wave, 4000 + 2 * np.arange(400))  # vacuum: as given
    assert row.flux_unit == "1e-17 erg / (Angstrom s cm2)"


def test_log_wavelength_and_cd_matrix(tmp_path):
    n = 300
    flux = 1.0 + np.random.default_rng(4).normal(0, 0.01, n)
    log = F.iraf_image(tmp_path / "log.fits", flux, F.linear_cards(crval=np.log10(4000), cdelt=1e-4, **{"DC-FLAG": 1}))
    (row,) = read_all(log, "fits_image_1d", {"medium": "air"})[1]
    np.testing.assert_allclose(row.wave, air_to_vacuum(10 ** (np.log10(4000) + 1e-4 * np.arange(n))), rtol=1e-12)
    assert row.meta["log_wavelength"] is True
    cards = F.linear_cards(crval=5000.0)
    del cards["CDELT1"]
    cd = F.iraf_image(tmp_path / "cd.fits", flux, {**cards, "CD1_1": 1.25, "CRPIX1": 11.0, "CTYPE1": "WAVE"})
    only_reader(cd, "fits_image_1d")
    (row,) = read_all(cd, "fits_image_1d")[1]
    np.testing.assert_allclose(row.wave, 5000 + 1.25 * (np.arange(1, n + 1) - 11.0))  # WAVE: vacuum
    awav = F.iraf_image(tmp_path / "awav.fits", flux, {**cards, "CD1_1": 1.25, "CTYPE1": "AWAV", "CUNIT1": "nm"})
    contents, (row,) = read_all(awav, "fits_image_1d")
    assert contents.meta["wavelength_medium_in_file"] == "air"
    assert row.wave[0] == pytest.approx(air_to_vacuum(np.array([50000.0]))[0])


def test_images_that_are_not_1d_spectra_are_not_claimed(tmp_path):
    frame = F.iraf_image(tmp_path / "frame.fits", np.ones((50, 200)), F.linear_cards())  # no APNUM: a 2-D frame
    sky = F.iraf_image(tmp_path / "sky.fits", np.ones(200), {**F.linear_cards(), "CTYPE1": "RA---TAN"})
    cube = F.iraf_image(tmp_path / "cube.fits", np.ones((30, 5, 200)), {**F.linear_cards(), "APNUM1": "1 1"})
    no_wcs = F.iraf_image(tmp_path / "plain.fits", np.ones(200), {})
    for path in (frame, sky, cube, no_wcs):
        assert not any(r.sniff(path) for r in READERS.values()), path.name


# --------------------------------------------------------------------------- text spectra


def test_text_spectrum_with_errors_and_header(tmp_path):
    wave = np.linspace(3700, 7000, 400)
    flux = 1.0 + F.gaussian(wave, 5008.24, 2.0, 10.0)
    path = F.text_spectrum(tmp_path / "spec.txt", wave, flux, np.full(400, 0.1), comments=("# LiMe example",))
    only_reader(path, "text_spectrum")
    contents, (row,) = read_all(path, "text_spectrum", {"z": 0.0, "ra": 10.0, "dec": 5.0, "resolution": 2000})
    assert row.object_id == "spec"
    np.testing.assert_allclose(row.wave, wave, rtol=1e-7)  # vacuum by default
    np.testing.assert_allclose(row.ivar, 100.0, rtol=1e-5)
    assert contents.meta["medium_from"] == "default"
    assert row.resolution[0] == 2000.0 and (row.ra, row.dec) == (10.0, 5.0)


def test_text_spectrum_without_errors_comma_separated_air_comment(tmp_path):
    rng = np.random.default_rng(5)
    wave = np.linspace(4000, 6000, 500)
    flux = 5.0 + rng.normal(0, 0.2, 500)
    path = F.text_spectrum(tmp_path / "spec.csv", wave, flux, None, header="wavelength,flux", sep=",",
                           comments=("# air wavelengths, flux in 1e-17 erg/s/cm2/A",))  # fmt: skip
    only_reader(path, "text_spectrum")
    contents, (row,) = read_all(path, "text_spectrum", {"flux_unit": "1e-17 erg/s/cm2/Angstrom"})
    assert contents.meta["wavelength_medium_in_file"] == "air" and contents.meta["medium_from"] == "comment"
    np.testing.assert_allclose(row.wave, air_to_vacuum(wave), rtol=1e-7)
    assert row.meta[ERROR_ESTIMATE_KEY] == SCATTER_METHOD
    assert np.median(1 / np.sqrt(row.ivar)) == pytest.approx(0.2, rel=0.2)
    # The option overrides the comment.
    assert read_all(path, "text_spectrum", {"medium": "vacuum"})[0].meta["wavelength_medium_in_file"] == "vacuum"


@pytest.mark.parametrize("suffix", [".txt.gz", ".dat.gz", ".csv.gz", ".bin"])
def test_gzipped_text_spectrum_detected_by_content(tmp_path, suffix):
    n = 3000  # more than the 16 kB sniffed, compressed or not
    wave = np.linspace(3700, 7000, n)
    flux = 1.0 + F.gaussian(wave, 5008.24, 2.0, 10.0)
    plain = F.text_spectrum(tmp_path / "plain.txt", wave, flux, np.full(n, 0.1), comments=("# air",))
    path = tmp_path / f"spec{suffix}"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    assert len(gzip.decompress(path.read_bytes())) > 16384
    only_reader(path, "text_spectrum")
    contents, (row,) = read_all(path, "text_spectrum")
    assert row.object_id == ("spec" if suffix != ".bin" else "spec.bin")
    np.testing.assert_allclose(row.wave, air_to_vacuum(wave), rtol=1e-7)
    np.testing.assert_allclose(row.ivar, 100.0, rtol=1e-5)
    assert contents.meta["medium_from"] == "comment"


def test_gzipped_fits_and_gzipped_tables_are_not_text_spectra(tmp_path):
    table = tmp_path / "cat.csv.gz"
    table.write_bytes(gzip.compress(b"id,wave,flux\n" + b"".join(b"g%d,%d,1.0\n" % (i, 4000 + i) for i in range(50))))
    assert not READERS["text_spectrum"].sniff(table)
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.arange(5000, dtype=np.float32)).writeto(image)
    packed = tmp_path / "image.fits.gz"
    packed.write_bytes(gzip.compress(image.read_bytes()))
    assert not READERS["text_spectrum"].sniff(packed)

def test_starlight_input_file_four_columns_with_flags(tmp_path):
    wave = np.arange(3700.0, 4000.0, 1.0)
    lines = [f"{w:.1f} {1.0:.4f} {0.05:.4f} {2 if 3800 <= w < 3810 else 0}" for w in wave]
    path = tmp_path / "K0001.in"
    path.write_text("\n".join(lines) + "\n")
    only_reader(path, "text_spectrum")
    _, (row,) = read_all(path, "text_spectrum", {"columns": {"mask": 4}})
    assert row.object_id == "K0001.in"
    masked = (wave >= 3800) & (wave < 3810)
    assert np.all(row.mask[masked] == 2) and np.all(row.ivar[masked] == 0)
    assert np.all(row.ivar[~masked] == pytest.approx(400.0))


def test_line_catalogues_and_tables_stay_with_their_readers(tmp_path):
    catalogue = tmp_path / "regions.csv"
    catalogue.write_text("id,ra,dec,z,HA6563_FLUX,HA6563_FLUX_ERR\nr1,10.0,-5.0,0.01,100.0,1.0\n")
    assert detect_reader(catalogue).name == "line_catalog"
    numeric_catalogue = tmp_path / "numeric.csv"  # numeric ids, but named line columns
    numeric_catalogue.write_text("id,ra,dec,HA6563_FLUX\n" + "".join(f"{i},10.{i},-5.0,1.0\n" for i in range(1, 9)))
    assert detect_reader(numeric_catalogue).name == "line_catalog"
    unsorted = tmp_path / "photometry.txt"  # numbers, but no wavelength axis
    unsorted.write_text("".join(f"{v} 1.0\n" for v in (5, 3, 9, 1, 7, 2)))
    too_wide = tmp_path / "wide.txt"
    too_wide.write_text("".join(" ".join(str(i + k) for k in range(7)) + "\n" for i in range(1, 9)))
    for path in (unsorted, too_wide):
        assert not any(r.sniff(path) for r in READERS.values()), path.name


# --------------------------------------------------------------------------- STARLIGHT FITS


def test_starlight_table_layout(tmp_path):
    path = F.starlight_table(tmp_path / "K0001.fits", z=0.05)
    only_reader(path, "starlight")
    contents, (row,) = read_all(path, "starlight")
    assert row.object_id == "K0001" and row.z == 0.05 and (row.ra, row.dec) == (150.25, 2.5)
    wave = np.linspace(3700.0, 6800.0, 300)
    np.testing.assert_allclose(row.wave, air_to_vacuum(wave * 1.05), rtol=1e-12)  # rest air -> observed air -> vacuum
    f_obs = 1.0 + 0.1 * np.sin(wave / 100.0)
    np.testing.assert_allclose(row.flux, f_obs * 2.5 / 1.05, rtol=1e-6)  # FOBS_NORM, then (1+z)
    assert np.all(row.ivar[10:20] == 0) and np.all(row.mask[10:20] == 2)
    np.testing.assert_allclose(row.ivar[30], 1 / (0.01 * 2.5**2) * 1.05**2, rtol=1e-6)
    assert contents.meta["model_not_read"] == "F_SYN"
    assert row.flux_unit == "1e-17 erg / (Angstrom s cm2)"


def test_starlight_image_layout_observed_frame(tmp_path):
    path = F.starlight_images(tmp_path / "sl.fits")
    only_reader(path, "starlight")
    with pytest.raises(Exception, match="without a redshift"):
        read_all(path, "starlight")
    _, (row,) = read_all(path, "starlight", {"frame": "observed", "medium": "vacuum"})
    np.testing.assert_allclose(row.wave, 3800.0 + np.arange(300))
    np.testing.assert_allclose(row.ivar, 25.0, rtol=1e-5)
    assert ERROR_ESTIMATE_KEY not in row.meta


# --------------------------------------------------------------------------- JWST NIRSpec x1d


def test_nirspec_x1d_two_sources_fnu_to_flambda(tmp_path):
    path = F.nirspec_x1d(tmp_path / "jw01234_x1d.fits")
    only_reader(path, "nirspec_x1d")
    contents, rows = read_all(path, "nirspec_x1d", {"z": F.LRD_Z})
    assert [r.object_id for r in rows] == ["1001", "1002"]
    lrd = rows[0]
    assert (lrd.ra, lrd.dec) == (53.1601, -27.7802) and lrd.z == F.LRD_Z
    assert lrd.n_pix == 1300 and np.all(lrd.ivar[-10:] == 0) and np.all(lrd.flux[-10:] == 0)  # NaN: no data
    with fits.open(path) as hdul:
        table = hdul[1].data
        np.testing.assert_allclose(lrd.wave, table["WAVELENGTH"] * 1e4)
        expected = table["FLUX"] * 1e-23 * 2.99792458e18 / lrd.wave**2 / 1e-20
        np.testing.assert_allclose(lrd.flux[:-10], expected[:-10], rtol=1e-6)
        np.testing.assert_allclose(lrd.ivar[:10], (1 / (3e-7 * jy_to_flambda(lrd.wave[:10]))) ** 2, rtol=1e-5)
    assert np.all(lrd.ivar[500:505] == 0) and lrd.ivar[600] > 0 and lrd.mask[600] == 4
    assert lrd.flux_unit == FLUX_UNIT
    assert lrd.resolution[0] == 1000.0  # G395M nominal
    # The broad H-alpha peaks at its redshifted vacuum wavelength.
    peak = lrd.wave[int(np.argmax(lrd.flux))]
    assert peak == pytest.approx(F.HA_VAC * (1 + F.LRD_Z), abs=60)
    assert rows[1].meta["srctype"] == "EXTENDED"


def test_nirspec_prism_has_no_resolution(tmp_path):
    path = F.nirspec_x1d(tmp_path / "x1d.fits")
    with fits.open(path, mode="update") as hdul:
        hdul[0].header["GRATING"] = "PRISM"
        hdul[0].header["FILTER"] = "CLEAR"
    _, rows = read_all(path, "nirspec_x1d")
    assert all(r.resolution is None for r in rows)
    assert read_all(path, "nirspec_x1d", {"resolution": 100})[1][0].resolution[0] == 100.0


# --------------------------------------------------------------------------- IRAF multispec WCS (WAT2 specN)


def _wat2_pieces(specs: list[str]) -> list[str]:
    wat2 = "wtype=multispec" + "".join(f' spec{i} = "{s}"' for i, s in enumerate(specs, 1))
    return list(F.wat_cards(2, wat2).values())


def _noise(n: int, seed: int = 5) -> np.ndarray:
    return 1.0 + np.random.default_rng(seed).normal(0, 0.02, n)


def test_multispec_linear_single_aperture(tmp_path):
    spec = "7 7 0 4000.123456789 1.5 500 0. 10.5 20.5"
    path = F.multispec_image(tmp_path / "ms_lin.fits", _noise(500), [spec])
    only_reader(path, "fits_image_1d")
    contents, (row,) = read_all(path, "fits_image_1d")
    assert row.object_id == "MSPEC"  # one aperture: the object itself
    assert contents.meta["iraf_wcs"] == "multispec" and contents.meta["wavelength_medium_in_file"] == "air"
    assert row.meta["iraf_aperture"] == 7 and row.meta["iraf_dtype"] == 0
    np.testing.assert_allclose(row.wave, air_to_vacuum(4000.123456789 + 1.5 * np.arange(500)), rtol=1e-13)
    (row,) = read_all(path, "fits_image_1d", {"medium": "vacuum"})[1]
    np.testing.assert_allclose(row.wave, 4000.123456789 + 1.5 * np.arange(500), rtol=1e-13)


def test_multispec_log_linear_with_doppler_factor_and_a_number_split_across_cards(tmp_path):
    spec = "1 1 1 3.6020599913 1.0E-4 500 0.0012 10.5 20.5"
    pieces = _wat2_pieces([spec])
    assert pieces[0].endswith('"1 1 1 3.6020599913 1.0E-4 500 0.0012 10.5 2') and pieces[1].startswith("0.5")
    path = F.multispec_image(tmp_path / "ms_log.fits", _noise(500), [spec], units="nanometers")
    only_reader(path, "fits_image_1d")
    (row,) = read_all(path, "fits_image_1d", {"medium": "vacuum"})[1]
    expected_nm = 10 ** (3.6020599913 + 1e-4 * np.arange(500)) / 1.0012  # IRAF divides by 1 + z
    np.testing.assert_allclose(row.wave, expected_nm * 10, rtol=1e-12)
    assert row.meta["log_wavelength"] is True


@pytest.mark.parametrize(("ftype", "evaluate"), [(1, np.polynomial.chebyshev.chebval),
                                                 (2, np.polynomial.legendre.legval)])  # fmt: skip
def test_multispec_nonlinear_polynomials_match_numpy(tmp_path, ftype, evaluate):
    n = 600
    coef = [4449.25, 448.5, -3.25, 0.75]
    spec = f"1 1 2 4000. 1.5 {n} 0. 10.5 20.5 1. 0. {ftype} 4 1. {n}. " + " ".join(map(str, coef))
    # the first card ends with the space between the order (4) and pmin (1.): stripping it would read 41.
    assert _wat2_pieces([spec])[0].endswith(f" {ftype} 4 ")
    path = F.multispec_image(tmp_path / f"ms_poly{ftype}.fits", _noise(n), [spec])
    only_reader(path, "fits_image_1d")
    (row,) = read_all(path, "fits_image_1d", {"medium": "vacuum"})[1]
    p = np.arange(1, n + 1, dtype=float)
    x = (2 * p - (n + 1.0)) / (n - 1.0)
    np.testing.assert_allclose(row.wave, evaluate(x, coef), rtol=1e-12)
    assert row.meta["iraf_dtype"] == 2


def test_multispec_splines_and_weighted_functions(tmp_path):
    n, pieces = 300, 3
    # linear spline with c_k = 4000 + 100 k: lambda = 4000 + 100 s, s = (p - 1) * 3 / 299
    lin = f"1. 0. 4 {pieces} 1. {n}. " + " ".join(str(4000.0 + 100 * k) for k in range(pieces + 1))
    # IRAF's cubic spline basis sums to 6; c_k = k gives 6 (s + 1); zeropoint 4000
    cub = f"1. 4000. 3 {pieces} 1. {n}. " + " ".join(str(float(k)) for k in range(pieces + 3))
    s = (np.arange(1, n + 1) - 1.0) * pieces / (n - 1.0)
    for name, funcs, expected in (("lin", lin, 4000 + 100 * s), ("cub", cub, 4000 + 6 * (s + 1)),
                                  ("both", f"{lin} {cub.replace('1. 4000.', '3. 4000.', 1)}",
                                   (1 * (4000 + 100 * s) + 3 * (4000 + 6 * (s + 1))) / 4)):  # fmt: skip
        path = F.multispec_image(tmp_path / f"ms_{name}.fits", _noise(n), [f"1 1 2 4000. 1. {n} 0. 1. 2. {funcs}"])
        (row,) = read_all(path, "fits_image_1d", {"medium": "vacuum"})[1]
        np.testing.assert_allclose(row.wave, expected, rtol=1e-12, err_msg=name)


def test_multispec_two_apertures_with_bands_sigma_and_short_nw(tmp_path):
    n = 400
    sigma = np.full((2, n), 0.05)
    flux = np.stack([_noise(n, 6), _noise(n, 7)])
    flux[1, 380:] = 0.0  # IRAF's padding beyond nw = 380
    specs = ["3 3 0 4000.1234567890 2. 400 0. 10.5 20.5",
             "4 4 2 4500. 1.2 380 0. 30.5 40.5 1. 0. 2 4 1. 400. 4738.5 238.125 -3.25 0.75"]  # fmt: skip
    assert _wat2_pieces(specs)[0].endswith(" ") and _wat2_pieces(specs)[1].endswith(" 2")  # "2|38.125"
    path = F.multispec_image(
        tmp_path / "ms_two.fits", np.stack([flux, sigma]), specs, WCSDIM=3, LTM3_3=1.0,
        BANDID1="spectrum - background fit, weights variance, clean yes",
        BANDID2="sigma - background fit, weights variance, clean yes", APNUM1="3 3 10.5 20.5", APNUM2="4 4 30.5 40.5",
    )  # fmt: skip
    only_reader(path, "fits_image_1d")
    contents, rows = read_all(path, "fits_image_1d", {"medium": "vacuum"})
    assert [r.object_id for r in rows] == ["MSPEC#ap3", "MSPEC#ap4"]
    assert [s.parent_object_id for s in contents.sources] == [None, "MSPEC", "MSPEC"]
    np.testing.assert_allclose(rows[0].wave, 4000.123456789 + 2 * np.arange(n), rtol=1e-13)
    # nw = 380 < NAXIS1 = 400: the 20 padding pixels beyond nw are dropped
    p = np.arange(1, 381, dtype=float)
    x = (2 * p - 401.0) / 399.0
    np.testing.assert_allclose(rows[1].wave, np.polynomial.legendre.legval(x, [4738.5, 238.125, -3.25, 0.75]))
    assert rows[1].flux.size == 380 and np.all(rows[1].flux != 0)
    for row in rows:
        np.testing.assert_allclose(row.ivar, 1 / np.float32(0.05) ** 2, rtol=1e-5)
        assert ERROR_ESTIMATE_KEY not in row.meta


def test_multispec_ingests_by_detection_with_vacuum_wavelengths(fresh_database, tmp_path):
    n = 400
    specs = ["3 3 0 6000. 1. 400 0. 10.5 20.5",
             "4 4 2 4500. 1.2 380 0. 30.5 40.5 1. 0. 1 3 1. 400. 6200. 200. 1.5"]  # fmt: skip
    flux = np.stack([_noise(n, 10), _noise(n, 11)])
    path = F.multispec_image(tmp_path / "upload.fits", flux, specs, RA="12:00:00", DEC="+10:00:00", REDSHIFT=0.02)
    (outcome,) = ingest_paths(fresh_database, [path], survey=SurveySpec(name="ms")).outcomes
    assert outcome.status == "loaded" and outcome.reader == "fits_image_1d", outcome.reason
    with fresh_database.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT s.object_id, s.flags, s.ra, s.z, g.wave FROM spectrum s "
                 "JOIN wavelength_grid g ON g.id = s.wave_grid_id ORDER BY s.object_id")
        ).all()  # fmt: skip
    assert [r.object_id for r in rows] == ["MSPEC#ap3", "MSPEC#ap4"]
    p = np.arange(1, 381, dtype=float)
    cheb = 6200.0 + 200.0 * ((2 * p - 401.0) / 399.0) + 1.5 * (2 * ((2 * p - 401.0) / 399.0) ** 2 - 1)
    for row, air in zip(rows, (6000.0 + np.arange(n), cheb)):
        assert row.flags & SPECTRUM_FLAGS["AIR_TO_VACUUM"] and row.flags & SPECTRUM_FLAGS["ERROR_ESTIMATED"]
        assert (row.ra, row.z) == (pytest.approx(180.0), pytest.approx(0.02))
        np.testing.assert_allclose(np.asarray(row.wave, float), air_to_vacuum(air), rtol=1e-9)

def test_multispec_logical_pixels_of_a_trimmed_image(tmp_path):
    """imcopy [101:400] keeps the physical WCS: LTV1 = -100, pixel 1 is physical pixel 101."""
    path = F.multispec_image(tmp_path / "ms_cut.fits", _noise(300), ["1 1 0 4000. 2. 500 0. 1. 2."], LTV1=-100.0)
    (row,) = read_all(path, "fits_image_1d", {"medium": "vacuum"})[1]
    np.testing.assert_allclose(row.wave, 4000 + 2 * (np.arange(101, 401) - 1.0))


def test_equispec_apertures_share_the_linear_dispersion(tmp_path):
    cards = F.linear_cards(APNUM1="1 1 10. 20.", APNUM2="2 2 30. 40.", WAT0_001="system=equispec",
                           WAT1_001="wtype=linear label=Wavelength units=angstroms", WCSDIM=2)  # fmt: skip
    path = F.iraf_image(tmp_path / "equispec.fits", np.stack([_noise(200, 8), _noise(200, 9)]), cards)
    only_reader(path, "fits_image_1d")
    contents, rows = read_all(path, "fits_image_1d", {"medium": "vacuum"})
    assert [r.object_id for r in rows] == ["SYNTH#ap1", "SYNTH#ap2"]
    for row in rows:
        np.testing.assert_allclose(row.wave, 4000 + 2 * np.arange(200))
