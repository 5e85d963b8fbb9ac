"""The 1-D survey readers on the bundled real files, and their rejection of broken input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from skyledger.ingest.readers import READERS, detect_reader, get_reader
from skyledger.ingest.readers.base import (
    Reader,
    air_to_vacuum,
    check_position,
    check_unique_ids,
    normalise_flux_unit,
    vacuum_to_air,
)
from skyledger.ingest.records import FileContents
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.errors import ConfigError, ReaderError

SAMPLE = sample_data_dir()
NGC3073 = SAMPLE / "NGC3073_SDSS_DR18.fits"
NGC3522 = SAMPLE / "NGC3522_SDSS_DR18.fits"
LEGAC = SAMPLE / "legac_M19_56670_v3.0.fits"
MANGA = SAMPLE / "MaNGA_test_spectra.fits.gz"
MANGA_MULTI = SAMPLE / "MaNGA_multicomp_test_spectra.fits.gz"
DESI = Path(__file__).resolve().parents[1] / "data" / "desi" / "coadd-5-169-thru20210419.fits"


def read_all(path: Path, reader: str, options: dict | None = None) -> tuple[FileContents, list]:
    contents = get_reader(reader).read(path, options or {})
    return contents, list(contents.spectra)


def modified_copy(src: Path, dst: Path, edit) -> Path:
    """Copy a FITS file with ``edit(hdul)`` applied in memory."""
    with fits.open(src, memmap=False) as hdul:
        edit(hdul)
        hdul.writeto(dst, overwrite=True)
    return dst


def assert_rejects(path: Path, reader: str, *fragments: str, options: dict | None = None) -> ReaderError:
    with pytest.raises(ReaderError) as info:
        contents = get_reader(reader).read(path, options or {})
        list(contents.spectra)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return info.value


# --------------------------------------------------------------------------- registry


def test_registry_holds_every_format_and_the_protocol():
    assert set(READERS) == {
        "sdss", "desi_coadd", "eso_phase3", "muse_cube", "manga_cube", "sami_cube", "nirspec_s3d", "gmos_cube",
        "manga_rss", "velocity_map", "nirspec_x1d", "starlight", "fits_image_1d", "text_spectrum", "line_catalog",
        "ifu_cube",
    }  # fmt: skip
    for name, reader in READERS.items():
        assert isinstance(reader, Reader)
        assert reader.name == name
    with pytest.raises(ConfigError, match="unknown reader 'nope'"):
        get_reader("nope")


def test_a_reader_is_imported_only_when_asked_for():
    """A read-ahead worker that reads SDSS files does not import the other readers (and
    astropy.io.ascii, WCS with them): a fresh interpreter, as a worker is."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from skyledger.ingest.read_worker import serve\n"
        "from skyledger.ingest.readers import READERS, get_reader\n"
        "assert get_reader('sdss').name == 'sdss'\n"
        "print(sorted(m for m in sys.modules if m.startswith('skyledger.ingest.readers.')))\n"
        "print('astropy.io.ascii' in sys.modules)\n"
        "assert [r.name for r in READERS.values()] == list(READERS)\n"
        "print('astropy.io.ascii' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == str(["skyledger.ingest.readers.base", "skyledger.ingest.readers.fits_access",
                          "skyledger.ingest.readers.fits_tables", "skyledger.ingest.readers.rawfits",
                          "skyledger.ingest.readers.sdss"])
    assert out[1:] == ["False", "True"]  # iterating the registry's readers loads them all


@pytest.mark.parametrize(
    ("path", "expected"),
    [(NGC3073, "sdss"), (NGC3522, "sdss"), (LEGAC, "eso_phase3"), (MANGA, "manga_rss"), (MANGA_MULTI, "manga_rss"),
     (DESI, "desi_coadd")],
)
def test_detect_reader_on_real_files(path, expected):
    assert detect_reader(path).name == expected
    others = [r for r in READERS.values() if r.name != expected]
    assert not any(r.sniff(path) for r in others)


def test_sniff_ignores_the_file_name(tmp_path):
    disguised = tmp_path / "spec-0945-52652-0470.csv"
    shutil.copy(LEGAC, disguised)
    assert detect_reader(disguised).name == "eso_phase3"


def junk_files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(1)
    files = {
        "random.fits": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "empty.fits": b"",
        "text.fits": b"hello, this is not FITS\n" * 10,
        "notes.csv": b"name,comment\na,b\n",
        "gzip_junk.fits.gz": b"\x1f\x8b" + b"\x00" * 30,
        "half_card.fits": b"SIMPLE  =                    T",
    }
    paths = []
    for name, content in files.items():
        p = tmp_path / name
        p.write_bytes(content)
        paths.append(p)
    image = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(image, overwrite=True)
    paths.append(image)
    return paths


def test_sniff_rejects_junk_without_raising(tmp_path):
    for path in junk_files(tmp_path) + [tmp_path / "missing.fits"]:
        for reader in READERS.values():
            assert reader.sniff(path) is False, (reader.name, path.name)
    # Each says what is wrong, not only that no reader took it.
    expected = {
        "random.fits": "not a FITS file: the content starts with bytes",
        "empty.fits": "the file is empty (0 bytes)",
        "text.fits": "not a FITS file: the content is text, starting 'hello, this is not FITS'",
        "notes.csv": "the content is text, starting 'name,comment'; if its format is one of",
        "gzip_junk.fits.gz": "a damaged gzip file",
        "half_card.fits": "truncated FITS file: the file ends in the middle of a 2880-byte block",
        "image.fits": "a well-formed FITS file; if its format is one of sdss, desi_coadd, eso_phase3",
    }
    paths = junk_files(tmp_path)
    assert sorted(p.name for p in paths) == sorted(expected)
    for path in paths:
        with pytest.raises(ReaderError) as info:
            detect_reader(path)
        assert info.value.detail.startswith("no reader recognises this file: "), info.value.detail
        assert expected[path.name] in info.value.detail, info.value.detail


# --------------------------------------------------------------------------- shared helpers


def test_air_to_vacuum_known_pairs():
    # H-alpha and [O III] 5007: air -> vacuum as tabulated (Morton 2000 / NIST).
    assert air_to_vacuum(6562.80) == pytest.approx(6564.61, abs=0.01)
    assert air_to_vacuum(5006.84) == pytest.approx(5008.24, abs=0.01)
    assert air_to_vacuum(4861.33) == pytest.approx(4862.68, abs=0.01)
    grid = np.linspace(2000.0, 25000.0, 500)
    assert np.max(np.abs(vacuum_to_air(air_to_vacuum(grid)) - grid)) < 1e-8
    # The far UV is quoted in vacuum by convention and passes unchanged.
    assert air_to_vacuum(1215.67) == 1215.67


def test_position_and_id_checks():
    assert check_position("f", None, None) == (None, None)
    assert check_position("f", 0.0, -90.0) == (0.0, -90.0)
    with pytest.raises(ReaderError, match=r"ra = 360.0 is outside \[0, 360\)"):
        check_position("f", 360.0, 0.0)
    with pytest.raises(ReaderError, match="dec = -91.0"):
        check_position("f", 10.0, -91.0)
    with pytest.raises(ReaderError, match="only one of ra/dec"):
        check_position("f", 10.0, None)
    with pytest.raises(ReaderError, match="duplicate object id.*'a'"):
        check_unique_ids("f", ["a", "b", "a"])


def test_flux_units_from_survey_headers_parse():
    assert normalise_flux_unit("1E-17 erg/cm^2/s/Ang") == "1e-17 erg / (Angstrom s cm2)"
    assert normalise_flux_unit("1E-17 erg/s/cm^2/Ang/spaxel") == "1e-17 erg / (Angstrom s cm2)"
    assert normalise_flux_unit("10**(-20)*erg/s/cm**2/Angstrom") == "1e-20 erg / (Angstrom s cm2)"
    assert normalise_flux_unit("10**(-19).erg.cm**(-2).s**(-1).angstrom**(-1)") == "1e-19 erg / (Angstrom s cm2)"
    assert normalise_flux_unit("furlongs per fortnight squared") is None


# --------------------------------------------------------------------------- SDSS


def test_sdss_ngc3073_real_values():
    contents, spectra = read_all(NGC3073, "sdss")
    (spec,) = spectra
    (source,) = contents.sources
    header = fits.getheader(NGC3073, 0)
    assert spec.object_id == source.object_id == "0945-52652-0470"
    assert spec.ra == pytest.approx(header["PLUG_RA"]) and spec.dec == pytest.approx(header["PLUG_DEC"])
    assert spec.ra == pytest.approx(150.21698) and spec.dec == pytest.approx(55.618834)
    assert spec.z == pytest.approx(0.0037626564, rel=1e-6)
    assert spec.n_pix == 3848
    assert spec.wave[0] == pytest.approx(10**3.5793, rel=1e-9)
    assert np.all(np.diff(spec.wave) > 0)
    # Constant log step: the grid is rebuilt exactly from COEFF0/COEFF1.
    assert np.allclose(np.diff(np.log10(spec.wave)), 1e-4, rtol=1e-9)
    assert spec.flux.dtype == np.float32 and spec.ivar.dtype == np.float32 and spec.mask.dtype == np.int32
    # wdisp is the LSF sigma in 1e-4 dex pixels: R = 1 / (2.3548 * wdisp * 1e-4 * ln 10),
    # 1844 for wdisp = 1; SDSS spectra have R ~ 1800-2800.
    wdisp = fits.getdata(NGC3073, "COADD")["wdisp"].astype(np.float64)
    np.testing.assert_allclose(spec.resolution, 1 / (2.35482 * wdisp * 1e-4 * np.log(10)), rtol=1e-4)
    assert 1800 < spec.resolution.min() and spec.resolution.max() < 2900
    assert spec.flux_unit == "1e-17 erg / (Angstrom s cm2)"
    assert spec.meta["specobjid"] == "1064104649075746816"
    assert spec.meta["lite"] is False and spec.meta["n_exposure_hdus"] == 8
    # H-alpha of this star-forming dwarf is the brightest pixel near 6564.61 (1 + z).
    window = (spec.wave > 6560) & (spec.wave < 6600)
    peak = spec.wave[window][np.argmax(spec.flux[window])]
    assert peak == pytest.approx(6564.61 * (1 + spec.z), abs=1.5)


def test_sdss_specobjid_option_and_ngc3522():
    _, (spec,) = read_all(NGC3522, "sdss", {"id_format": "specobjid"})
    assert spec.object_id == "2801239312711051264"
    assert spec.meta["plate_mjd_fiber"] == "2488-54149-0001"
    assert spec.z == pytest.approx(0.004018, abs=1e-5)
    assert spec.meta["class"] == "GALAXY"


def test_sdss_lite_file_reads_like_the_full_one(tmp_path):
    lite = modified_copy(NGC3073, tmp_path / "spec-0945-52652-0470.fits", lambda h: h.__delitem__(slice(4, None)))
    assert len(fits.open(lite)) == 4
    assert detect_reader(lite).name == "sdss"
    _, (full,) = read_all(NGC3073, "sdss")
    _, (thin,) = read_all(lite, "sdss")
    assert thin.meta["lite"] is True
    assert thin.object_id == full.object_id
    np.testing.assert_array_equal(thin.flux, full.flux)
    np.testing.assert_array_equal(thin.wave, full.wave)


def test_unknown_option_is_rejected():
    assert_rejects(NGC3073, "sdss", "unknown reader option", "id_fromat", options={"id_fromat": "x"})


# --------------------------------------------------------------------------- ESO Phase 3 (LEGA-C)


def test_legac_real_values_and_air_to_vacuum():
    contents, (spec,) = read_all(LEGAC, "eso_phase3")
    assert spec.object_id == "M19_56670"
    assert (spec.ra, spec.dec) == (pytest.approx(149.803879), pytest.approx(1.795453))
    assert spec.n_pix == 6166
    with fits.open(LEGAC) as hdul:
        air = hdul[1].data["WAVE"][0].astype(np.float64)
        err = hdul[1].data["ERR"][0]
        qual = hdul[1].data["QUAL"][0]
    np.testing.assert_allclose(spec.wave, air_to_vacuum(air), rtol=0, atol=1e-9)
    assert spec.wave[0] - air[0] == pytest.approx(1.61, abs=0.02)
    assert contents.meta["wavelength_medium_in_file"] == "air"
    assert contents.meta["specsys"] == "TOPOCENT"
    # ERR <= 0 -> ivar 0; elsewhere ivar = 1/ERR^2; QUAL kept as the mask.
    np.testing.assert_array_equal(spec.ivar > 0, err > 0)
    np.testing.assert_allclose(spec.ivar[err > 0], 1 / err[err > 0] ** 2, rtol=1e-6)
    np.testing.assert_array_equal(spec.mask, qual)
    assert np.all(np.isfinite(spec.flux))  # NaN flux at ivar = 0 is carried as 0
    assert np.all(spec.resolution == 2500)
    assert spec.flux_unit == "1e-19 erg / (Angstrom s cm2)"


def test_legac_wavelengths_are_air_by_the_sky_lines():
    """The sky-subtraction residuals in ERR sit at the *air* wavelengths of [O I] 6300/6364."""
    with fits.open(LEGAC) as hdul:
        wave = hdul[1].data["WAVE"][0].astype(np.float64)
        err = hdul[1].data["ERR"][0]
    for sky_air in (6300.304, 6363.776):
        near = np.abs(wave - sky_air) < 6
        peak = wave[near][np.argmax(err[near])]
        assert abs(peak - sky_air) < 0.7  # vacuum would be ~1.75 A (3 pixels) off
        assert abs(peak - air_to_vacuum(sky_air)) > 1.0


# --------------------------------------------------------------------------- MaNGA spectra sets


def test_manga_test_spectra_real_values():
    contents, spectra = read_all(MANGA, "manga_rss")
    assert len(spectra) == 8 and len(contents.sources) == 8
    assert [s.object_id for s in spectra] == [f"MaNGA_test_spectra#{i}" for i in range(8)]
    with fits.open(MANGA) as hdul:
        z = hdul["Z"].data
        wave = hdul["WAVE"].data
    assert [s.z for s in spectra] == pytest.approx(list(z))
    assert all(s.ra is None and s.dec is None for s in spectra)
    for s in spectra:
        assert s.n_pix == 4563
        np.testing.assert_array_equal(s.wave, wave)  # MaNGA DRP wavelengths are vacuum already
    # Index 5 is deliberately unfittable: every pixel masked, SRES partly negative; it
    # still ingests, with R unknown (NaN) where the file's value is not positive.
    bad = spectra[5]
    assert np.all(bad.mask != 0)
    sres = fits.getdata(MANGA, "SRES")[5]
    np.testing.assert_array_equal(np.isnan(bad.resolution), sres <= 0)
    assert np.isnan(bad.resolution[0])
    assert np.nanmedian(spectra[0].resolution) == pytest.approx(2000, rel=0.3)


def test_manga_options_positions_and_ids():
    positions = [(10.0 + i, -5.0) for i in range(3)]
    _, spectra = read_all(MANGA_MULTI, "manga_rss", {"positions": positions, "object_ids": ["a", "b", "c"]})
    assert [(s.object_id, s.ra, s.dec) for s in spectra] == [("a", 10.0, -5.0), ("b", 11.0, -5.0), ("c", 12.0, -5.0)]
    contents, spectra = read_all(MANGA_MULTI, "manga_rss", {"ra": 1.0, "dec": 2.0, "source_object_id": "gal"})
    assert [s.source_object_id for s in spectra] == ["gal"] * 3
    assert [(s.object_id, s.ra, s.dec) for s in contents.sources] == [("gal", 1.0, 2.0)]
    assert_rejects(MANGA_MULTI, "manga_rss", "ra", "outside", options={"ra": 400.0, "dec": 0.0})
    assert_rejects(MANGA_MULTI, "manga_rss", "duplicate", options={"object_ids": ["a", "a", "b"]})
