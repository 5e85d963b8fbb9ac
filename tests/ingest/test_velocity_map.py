"""The velocity-map reader: synthetic disks with known truth, messy headers, bad files, the loader."""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.readers import READERS, detect_reader, get_reader
from skyledger.ingest.readers.velocity_map import C_KMS, STELLAR_LINE
from skyledger.testing.disk_model import DiskParams
from skyledger.testing.velocity_maps import VelocityMapTruth, write_velocity_map
from skyledger.schema.errors import ReaderError

READER = get_reader("velocity_map")
PARAMS = DiskParams(centre_offset=(1.0, -0.5))


def read(path: Path, options: dict | None = None):
    contents = READER.read(path, options or {})
    return contents, list(contents.spectra)


def by_pixel(spectra) -> dict[tuple[int, int], object]:
    return {(s.meta["x"], s.meta["y"]): s for s in spectra}


def sky_offset_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    return np.hypot((np.asarray(ra1) - ra2) * np.cos(np.radians(dec2)), np.asarray(dec1) - dec2) * 3600.0


def check_against_truth(spectra, truth: VelocityMapTruth, *, atol_velocity: float = 1e-3) -> None:
    """Every valid pixel, and only those, with the truth's position and velocity."""
    pixels = by_pixel(spectra)
    assert set(pixels) == {(int(x), int(y)) for y, x in zip(*np.nonzero(truth.valid), strict=True)}
    xs = np.array([x for x, _ in pixels])
    ys = np.array([y for _, y in pixels])
    rows = list(pixels.values())
    ra = np.array([s.ra for s in rows])
    dec = np.array([s.dec for s in rows])
    # Positions from astropy.wcs against the generator's own gnomonic projection.
    assert sky_offset_arcsec(ra, dec, truth.ra[ys, xs], truth.dec[ys, xs]).max() < 1e-6
    v = np.array([s.lines[0].velocity for s in rows])
    verr = np.array([s.lines[0].velocity_err for s in rows])
    np.testing.assert_allclose(v, truth.velocity_measured[ys, xs], atol=atol_velocity)
    np.testing.assert_allclose(verr, truth.velocity_err[ys, xs], rtol=1e-5)
    # The noise is what the errors say it is: chi2 per pixel about the noise-free disk ~ 1.
    chi2 = np.mean(((v - truth.velocity[ys, xs]) / verr) ** 2)
    assert 0.8 < chi2 < 1.25


# --------------------------------------------------------------------------- synthetic truth


@pytest.mark.parametrize(
    ("wcs", "rotation"), [("cd", 0.0), ("cd", 35.0), ("cdelt", 0.0), ("cdelt", -25.0)], ids=["cd", "cd-rot", "cdelt", "cdelt-crota"]
)
def test_messy_synthetic_map_reads_back_its_truth(tmp_path, wcs, rotation):
    path, truth = write_velocity_map(tmp_path / "map.fits", PARAMS, wcs=wcs, rotation=rotation, seed=3)
    assert detect_reader(path).name == "velocity_map"
    contents, spectra = read(path)
    check_against_truth(spectra, truth)

    galaxy, *children = contents.sources
    assert galaxy.object_id == "NGC0000" and galaxy.parent_object_id is None
    # OBJRA/OBJDEC (the galaxy centre) wins over CRVAL (the field centre, 1" away here).
    assert (galaxy.ra, galaxy.dec) == (pytest.approx(PARAMS.ra), pytest.approx(PARAMS.dec))
    assert galaxy.meta["position_source"] == "cards OBJRA/OBJDEC"
    assert galaxy.z == pytest.approx(PARAMS.v_sys / C_KMS) and galaxy.meta["z_source"] == "card Z"
    assert len(children) == len(spectra) == int(truth.valid.sum()) == contents.meta["n_valid_pixels"]
    assert all(c.parent_object_id == "NGC0000" and c.z == galaxy.z for c in children)
    first = spectra[0]
    assert first.source_object_id == first.object_id == f"NGC0000#{first.meta['x']}_{first.meta['y']}"
    assert first.wave is None and first.n_pix == 0 and first.z == galaxy.z

    pixels = by_pixel(spectra)
    for (x, y), s in pixels.items():
        (m,) = s.lines
        assert m.line == "HA6563"
        if np.isnan(truth.sigma[y, x]):  # a failed dispersion fit: velocity kept, sigma absent
            assert m.sigma is None and m.sigma_err is None
        else:
            assert m.sigma == pytest.approx(truth.sigma[y, x], rel=1e-6)
            assert m.sigma_err == pytest.approx(truth.sigma_err[y, x], rel=1e-6)
        assert m.flux == pytest.approx(truth.flux[y, x], rel=1e-6, abs=1e-3)
        assert m.flux_err == pytest.approx(truth.flux_err[y, x], rel=1e-6)
    assert sum(s.lines[0].sigma is None for s in spectra) > 0  # the generator did fail some
    assert first.flux_unit == "1e-17 erg / (s cm2)"

    fixes = "\n".join(contents.meta["header_fixes"])
    assert fixes == "\n".join(galaxy.meta["header_fixes"])
    for name in ("VEL", "VEL_ERR", "SIGMA", "FLUX"):
        assert f"HDU {name}: removed 'BLANK = NaN'" in fixes
    assert "RADECSYS" in fixes and "'DEGREE' -> 'deg'" in fixes
    assert ("CDELT1 = '" in fixes) is (wcs == "cdelt")
    assert contents.meta["velocity_reference_source"] == "card VELREF"


def test_clean_map_needs_no_fixes_and_gzip_reads_the_same(tmp_path):
    path, truth = write_velocity_map(tmp_path / "clean.fits", PARAMS, messy=False, with_sigma=False, with_flux=False)
    contents, spectra = read(path)
    assert contents.meta["header_fixes"] == []
    check_against_truth(spectra, truth)
    assert all(s.lines[0].flux is None and s.lines[0].sigma is None and s.flux_unit is None for s in spectra)
    gz = tmp_path / "clean.fits.gz"
    gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    assert detect_reader(gz).name == "velocity_map"
    _, again = read(gz)
    assert [(s.object_id, s.lines[0].velocity) for s in again] == [(s.object_id, s.lines[0].velocity) for s in spectra]


def test_only_the_velocity_map_reader_sniffs_a_map(tmp_path):
    path, _ = write_velocity_map(tmp_path / "map.fits", PARAMS)
    assert [r.name for r in READERS.values() if r.sniff(path)] == ["velocity_map"]
    image = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.float32), name="FLUX")]).writeto(image)
    assert not READER.sniff(image)


# --------------------------------------------------------------------------- velocity conventions


def test_absolute_cz_map_is_converted_to_the_galaxy_frame(tmp_path):
    path, truth = write_velocity_map(tmp_path / "cz.fits", PARAMS, velocity_reference="cz", seed=5)
    assert np.nanmedian(truth.velocity_written) == pytest.approx(PARAMS.v_sys, abs=50)
    contents, spectra = read(path)
    assert contents.meta["velocity_reference"] == "cz"
    # float32 cz of ~6000 km/s keeps ~1e-3 km/s
    check_against_truth(spectra, truth, atol_velocity=5e-3)

    # Without the card the convention comes from the survey options ...
    bare, truth = write_velocity_map(tmp_path / "bare.fits", PARAMS, velocity_reference="cz", velref_card=False)
    contents, spectra = read(bare, {"velocity_reference": "cz"})
    assert contents.meta["velocity_reference_source"] == "option velocity_reference"
    check_against_truth(spectra, truth, atol_velocity=5e-3)
    # ... and without either, absolute velocities are refused rather than stored as offsets.
    with pytest.raises(ReaderError, match=r"median velocity is \d+ km/s.*velocity_reference = 'cz'") as info:
        READER.read(bare, {})
    assert str(bare) in str(info.value) and info.value.hdu == "VEL"


def dap_like_map(tmp_path: Path, truth_path: Path, *, z_ref: float) -> tuple[Path, VelocityMapTruth]:
    """A MaNGA-DAP-like MAPS file: 3-D EMLINE_GVEL with channel cards, IVAR and MASK planes,
    velocities relative to the input redshift SCINPVEL / c, no Z card."""
    _, truth = write_velocity_map(truth_path, PARAMS, messy=False, with_sigma=False, with_flux=False, seed=11)
    with fits.open(truth_path) as hdul:
        wcs_cards = {k: hdul["VEL"].header[k] for k in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CTYPE1", "CTYPE2",
                                                       "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CUNIT1", "CUNIT2")}  # fmt: skip
    # Observed redshift of each pixel, then the DAP-style velocity about z_ref.
    z_obs = truth.z + truth.velocity_measured / C_KMS * (1 + truth.z)
    v_dap = C_KMS * (z_obs - z_ref) / (1 + z_ref)
    err_dap = truth.velocity_err * (1 + truth.z) / (1 + z_ref)
    n_y, n_x = v_dap.shape
    vel = np.zeros((3, n_y, n_x), np.float32)
    ivar = np.zeros_like(vel)
    mask = np.zeros((3, n_y, n_x), np.int32)
    good = truth.valid
    vel[2] = np.where(good, v_dap, 0.0)  # the DAP writes 0 with a mask bit, not NaN
    ivar[2] = np.where(good, 1.0 / np.where(good, err_dap, 1.0) ** 2, 0.0)
    mask[2] = np.where(good, 0, 1 << 30)
    mask[2, 0, 0] = 4  # a pixel the mask alone rejects (its value and ivar look fine)
    vel[2, 0, 0], ivar[2, 0, 0] = 10.0, 1.0
    primary = fits.Header({"PLATEIFU": "8485-1901", "OBJRA": PARAMS.ra, "OBJDEC": PARAMS.dec,
                           "SCINPVEL": C_KMS * z_ref})  # fmt: skip
    channels = {"C01": "Hb-4862", "C02": "OIII-5008", "C03": "Ha-6564"}
    hdus = [fits.PrimaryHDU(header=primary)]
    for name, data, bunit in (("EMLINE_GVEL", vel, "km/s"), ("EMLINE_GVEL_IVAR", ivar, "(km/s)^{-2}"),
                              ("EMLINE_GVEL_MASK", mask, None)):  # fmt: skip
        h = fits.Header({**wcs_cards, **channels})
        if bunit:
            h["BUNIT"] = bunit
        hdus.append(fits.ImageHDU(data, header=h, name=name))
    path = tmp_path / "manga-8485-1901-MAPS.fits"
    fits.HDUList(hdus).writeto(path)
    return path, truth


def test_dap_style_maps_with_channels_ivar_mask_and_reference_redshift(tmp_path):
    path, truth = dap_like_map(tmp_path, tmp_path / "truth.fits", z_ref=0.0195)
    assert not READER.sniff(path)  # no VEL extension: named through the survey options
    options = {
        "z": truth.z,
        "extensions": {"VEL": "EMLINE_GVEL:Ha-6564", "vel_ivar": "EMLINE_GVEL_IVAR:3", "MASK": "emline_gvel_mask:ha-6564"},
    }
    contents, spectra = read(path, options)
    assert contents.meta["velocity_reference"] == "reference"
    assert contents.meta["reference_z"] == pytest.approx(0.0195)
    assert contents.sources[0].object_id == "8485-1901"
    assert contents.meta["extensions"]["VEL"] == "EMLINE_GVEL:Ha-6564"
    check_against_truth(spectra, truth)
    # Without the z option the galaxy redshift is the input redshift itself.
    contents, spectra = read(path, {k: v for k, v in options.items() if k != "z"})
    assert contents.sources[0].z == pytest.approx(0.0195) and contents.meta["z_source"] == "card SCINPVEL / c"
    with pytest.raises(ReaderError, match=r"no channel 'Ha-6563'.*'HA-6564'") as info:
        READER.read(path, {**options, "extensions": {**options["extensions"], "VEL": "EMLINE_GVEL:Ha-6563"}})
    assert info.value.hdu == "EMLINE_GVEL"
    with pytest.raises(ReaderError, match=r"must be a 2-D image.*EMLINE_GVEL:CHANNEL"):
        READER.read(path, {**options, "extensions": {**options["extensions"], "VEL": "EMLINE_GVEL"}})


def test_reference_redshift_option_and_stellar_component(tmp_path):
    path, truth = dap_like_map(tmp_path, tmp_path / "truth.fits", z_ref=0.021)
    options = {"z": truth.z, "velocity_reference": 0.021, "component": "stars",
               "extensions": {"VEL": "EMLINE_GVEL:3", "VEL_IVAR": "EMLINE_GVEL_IVAR:3", "MASK": "EMLINE_GVEL_MASK:3"}}  # fmt: skip
    contents, spectra = read(path, options)
    assert contents.meta["velocity_reference_source"] == "option velocity_reference"
    assert {s.lines[0].line for s in spectra} == {STELLAR_LINE} and contents.meta["component"] == "stars"
    check_against_truth(spectra, truth)
    _, hb = read(path, {**options, "component": "gas", "line": "hb4861"})
    assert {s.lines[0].line for s in hb} == {"HB4861"}
    with pytest.raises(ReaderError, match="contradicts component = 'stars'"):
        READER.read(path, {**options, "line": "HB4861"})
    with pytest.raises(ReaderError, match="option line = 'HA6562' is not a known line id"):
        READER.read(path, {**options, "component": "gas", "line": "HA6562"})
    with pytest.raises(ReaderError, match="'systemic', 'cz' or a reference redshift"):
        READER.read(path, {**options, "velocity_reference": "barycentric"})


# --------------------------------------------------------------------------- lenient headers


def edited(src: Path, dst: Path, edit: Callable[[fits.HDUList], None]) -> Path:
    with fits.open(src) as hdul:
        edit(hdul)
        hdul.writeto(dst, overwrite=True)
    return dst


def test_integer_map_with_blank_malformed_ctype_and_sexagesimal_centre(tmp_path):
    clean, truth = write_velocity_map(tmp_path / "clean.fits", PARAMS, messy=False, with_sigma=False, with_flux=False)

    def edit(hdul):
        vel = hdul["VEL"]
        as_int = np.where(np.isfinite(vel.data), np.round(vel.data), -32768).astype(np.int16)
        header = vel.header.copy()
        header["CTYPE1"], header["CTYPE2"] = "RA--TAN", "DEC"
        hdul["VEL"] = fits.ImageHDU(as_int, header=header, name="VEL")
        hdul["VEL"].header["BLANK"] = -32768
        del hdul[0].header["OBJRA"], hdul[0].header["OBJDEC"]
        hdul[0].header["RA_OBJ"] = SkyCoord(PARAMS.ra, PARAMS.dec, unit="deg").ra.to_string(unit="hourangle", sep=":")
        hdul[0].header["DEC_OBJ"] = SkyCoord(PARAMS.ra, PARAMS.dec, unit="deg").dec.to_string(sep=":")

    path = edited(clean, tmp_path / "int.fits", edit)
    contents, spectra = read(path)
    assert len(spectra) == int(truth.valid.sum())  # BLANK pixels are holes, not -32768 km/s
    v = np.array([s.lines[0].velocity for s in spectra])
    assert np.abs(v - np.array([truth.velocity_measured[s.meta["y"], s.meta["x"]] for s in spectra])).max() <= 0.5
    fixes = "\n".join(contents.meta["header_fixes"])
    assert "CTYPE1 = 'RA--TAN'" in fixes and "'RA---TAN'" in fixes and "'DEC--TAN'" in fixes
    galaxy = contents.sources[0]
    assert galaxy.meta["position_source"] == "cards RA_OBJ/DEC_OBJ"
    assert sky_offset_arcsec(galaxy.ra, galaxy.dec, PARAMS.ra, PARAMS.dec) < 0.01


def test_galactic_wcs_gives_icrs_positions_and_crval_centre(tmp_path):
    clean, truth = write_velocity_map(tmp_path / "clean.fits", PARAMS, messy=False, with_sigma=False, with_flux=False)
    centre = SkyCoord(150.0, 2.0, unit="deg").galactic

    def edit(hdul):
        h = hdul["VEL"].header
        h["CTYPE1"], h["CTYPE2"] = "GLON-TAN", "GLAT-TAN"
        h["CRVAL1"], h["CRVAL2"] = centre.l.deg, centre.b.deg
        del h["RADESYS"], hdul[0].header["OBJRA"], hdul[0].header["OBJDEC"]

    path = edited(clean, tmp_path / "galactic.fits", edit)
    contents, spectra = read(path)
    galaxy = contents.sources[0]
    assert galaxy.meta["position_source"] == "WCS reference point (CRVAL)"
    assert sky_offset_arcsec(galaxy.ra, galaxy.dec, 150.0, 2.0) < 1e-3
    # Every pixel is within the field (20" across) of the ICRS centre, not at (l, b).
    ra = np.array([s.ra for s in spectra])
    dec = np.array([s.dec for s in spectra])
    assert sky_offset_arcsec(ra, dec, 150.0, 2.0).max() < 20 * math.sqrt(2)


# --------------------------------------------------------------------------- bad files


def _no_vel(h):
    del h["VEL"]


def _no_wcs(h):
    for key in ("CTYPE1", "CTYPE2"):
        del h["VEL"].header[key]


def _no_scale(h):
    for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        del h["VEL"].header[key]


def _shape_mismatch(h):
    h["VEL_ERR"] = fits.ImageHDU(h["VEL_ERR"].data[:-3], header=h["VEL_ERR"].header, name="VEL_ERR")


def _all_nan(h):
    h["VEL"].data[:] = np.nan


def _no_redshift(h):
    del h[0].header["Z"]


def _text_table(h):
    table = fits.BinTableHDU(Table({"v": ["fast", "slow"]}), name="VEL")
    table.header["CTYPE1"] = "RA---TAN"
    h["VEL"] = table


def _negative_error(h):
    h["VEL_ERR"].data[5, 5] = -2.0


def _bad_velref(h):
    h["VEL"].header["VELREF"] = "LSRK"


def _bunit_not_velocity(h):
    h["VEL"].header["BUNIT"] = "Angstrom"


BAD_FILES = {
    "missing VEL": (_no_vel, "no velocity extension", "VEL"),
    "no celestial WCS": (_no_wcs, "no celestial WCS", "VEL"),
    "no pixel scale": (_no_scale, "deg per pixel", "VEL"),
    "shape mismatch": (_shape_mismatch, r"VEL_ERR has shape \(37, 40\), VEL has \(40, 40\)", "VEL_ERR"),
    "all NaN": (_all_nan, "no valid pixel", "VEL"),
    "no redshift": (_no_redshift, "no galaxy redshift.*set option z", None),
    "non-numeric": (_text_table, "VEL must be an image, this HDU is a BinTableHDU", "VEL"),
    "negative error": (_negative_error, "negative error at 1 pixels", "VEL_ERR"),
    "unknown VELREF": (_bad_velref, "VELREF = 'LSRK' is not understood", None),
    "BUNIT not a velocity": (_bunit_not_velocity, "BUNIT = 'Angstrom' is not a velocity unit", "VEL"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_maps_are_rejected_naming_file_and_hdu(tmp_path, case):
    edit, message, hdu = BAD_FILES[case]
    clean, _ = write_velocity_map(tmp_path / "clean.fits", PARAMS, messy=False)
    path = edited(clean, tmp_path / "bad.fits", edit)
    with pytest.raises(ReaderError, match=message) as info:
        READER.read(path, {})
    assert str(path) in str(info.value)
    assert info.value.hdu == hdu


def test_bad_options_and_broken_bytes(tmp_path):
    path, _ = write_velocity_map(tmp_path / "map.fits", PARAMS)
    with pytest.raises(ReaderError, match=r"unknown reader option\(s\) \['colour'\]"):
        READER.read(path, {"colour": "red"})
    with pytest.raises(ReaderError, match="unknown role 'VELOCITY_ERR'"):
        READER.read(path, {"extensions": {"VELOCITY_ERR": "VEL_ERR"}})
    with pytest.raises(ReaderError, match=r"the VEL extension is not in the file; HDUs present: \['PRIMARY', 'VEL'") as info:
        READER.read(path, {"extensions": {"VEL": "HA_VEL"}})
    assert info.value.hdu == "HA_VEL"
    with pytest.raises(ReaderError, match="component must be 'gas' or 'stars'"):
        READER.read(path, {"component": "dust"})
    with pytest.raises(ReaderError, match="psf_fwhm_arcsec must be a positive number"):
        READER.read(path, {"psf_fwhm_arcsec": -1.0})
    assert READER.read(path, {"psf_fwhm_arcsec": 1.1}).meta["n_valid_pixels"] > 0  # for the rotation task
    cut = tmp_path / "cut.fits"
    cut.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(ReaderError, match="truncated"):
        READER.read(cut, {})
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a FITS file at all" * 10)
    with pytest.raises(ReaderError, match="not a FITS file") as info:
        READER.read(junk, {})
    assert str(junk) in str(info.value)
    assert not READER.sniff(junk) and not READER.sniff(tmp_path / "missing.fits")


# --------------------------------------------------------------------------- the loader


def test_map_loads_as_children_of_the_galaxy_with_null_fluxes(fresh_database, tmp_path):
    path, truth = write_velocity_map(tmp_path / "map.fits", PARAMS, with_flux=False, seed=7)
    spec = SurveySpec(name="maps", reader=None, options={})
    (outcome,) = ingest_paths(fresh_database, [path], survey=spec).outcomes
    assert outcome.status == "loaded", outcome.reason
    assert outcome.reader == "velocity_map"
    n = int(truth.valid.sum())
    assert (outcome.n_sources, outcome.n_spectra, outcome.n_lines) == (n + 1, n, n)
    with fresh_database.engine.connect() as conn:
        galaxy = conn.execute(
            text("SELECT id, ra, dec, z, meta FROM source WHERE object_id = 'NGC0000' AND parent_id IS NULL")
        ).one()
        assert galaxy.z == pytest.approx(PARAMS.v_sys / C_KMS)
        assert any("BLANK = NaN" in fix for fix in galaxy.meta["header_fixes"])
        children = conn.execute(text("SELECT count(*) FROM source WHERE parent_id = :g"), {"g": galaxy.id}).scalar_one()
        assert children == n
        rows = conn.execute(
            text(
                "SELECT s.object_id, s.ra, s.dec, s.z, s.n_pix, src.parent_id, m.line, m.velocity, m.velocity_err, "
                "m.sigma, m.flux, m.flux_err FROM spectrum s JOIN source src ON src.id = s.source_id "
                "JOIN line_measurement m ON m.spectrum_id = s.id JOIN run r ON r.id = m.run_id "
                "JOIN catalog.current_runs cr ON cr.run_id = r.id WHERE r.task = 'ingested'"
            )
        ).all()
    assert len(rows) == n
    assert {(r.line, r.parent_id, r.n_pix) for r in rows} == {("HA6563", galaxy.id, 0)}
    assert all(r.flux is None and r.flux_err is None for r in rows)  # NULL, not 0 or NaN
    assert all(r.z == pytest.approx(galaxy.z) for r in rows)
    for r in rows[:50]:
        x, y = (int(v) for v in r.object_id.split("#")[1].split("_"))
        assert r.velocity == pytest.approx(truth.velocity_measured[y, x], abs=1e-3)
        assert sky_offset_arcsec(r.ra, r.dec, truth.ra[y, x], truth.dec[y, x]) < 1e-6


# --------------------------------------------------------------------------- downstream tasks


def test_flux_tasks_ignore_null_flux_lines(fresh_database, tmp_path):
    """Velocity-only lines (NULL flux) change no abundance or class, and a velocity map
    without fluxes gives the flux-based tasks nothing to do."""
    from skyledger.compute.tasks.abundances import AbundancesParams, AbundancesTask
    from skyledger.compute.tasks.nebula import NebulaDiagnosticParams, NebulaDiagnosticTask
    from skyledger.compute.framework.runner import process

    fluxes = {"OII3726": 120.0, "OII3729": 160.0, "HB4861": 100.0, "OIII5007": 390.0, "HA6563": 300.0,
              "NII6584": 30.0, "SII6716": 20.0, "SII6731": 15.0}  # fmt: skip
    table = Table()
    table["id"] = ["plain", "with_kinematics"]
    table["ra"], table["dec"], table["z"] = [150.0, 150.01], [2.0, 2.0], [0.01, 0.01]
    for line, flux in fluxes.items():
        table[f"{line}_FLUX"] = [flux, flux]
        table[f"{line}_FLUX_ERR"] = [0.03 * flux + 0.5] * 2
    for line in ("HG4340", "OIII4363", "NII5755"):  # measured kinematically only
        table[f"{line}_VEL"] = [np.nan, 12.0]
    catalogue = tmp_path / "regions.ecsv"
    table.write(catalogue)
    map_path, truth = write_velocity_map(tmp_path / "map.fits", PARAMS, n_x=6, n_y=6, pixel_scale=1.0, with_flux=False)
    for path in (catalogue, map_path):
        (outcome,) = ingest_paths(fresh_database, [path], survey=SurveySpec(name="s", options={})).outcomes
        assert outcome.status == "loaded", outcome.reason
    with fresh_database.engine.connect() as conn:
        n_null = conn.execute(text("SELECT count(*) FROM line_measurement WHERE flux IS NULL")).scalar_one()
    assert n_null == 3 + int(truth.valid.sum())

    abundances = process(fresh_database, AbundancesTask(), AbundancesParams(n_draws=0))
    nebula = process(fresh_database, NebulaDiagnosticTask(), NebulaDiagnosticParams(n_draws=0))
    assert abundances.n_inputs == nebula.n_inputs == 2  # the catalogue regions, not the map pixels
    with fresh_database.engine.connect() as conn:
        results = {}
        for table_name in ("abundance", "nebula_class"):
            rows = conn.execute(
                text(f"SELECT s.object_id, r.* FROM {table_name} r JOIN spectrum s ON s.id = r.spectrum_id")
            ).mappings()
            for r in rows:
                key = (table_name, r["object_id"], r["method"])
                results[key] = {k: v for k, v in r.items() if k not in ("object_id", "spectrum_id", "run_id")}
    plain = {k[0::2]: v for k, v in results.items() if k[1] == "plain"}
    kinematic = {k[0::2]: v for k, v in results.items() if k[1] == "with_kinematics"}
    assert plain and plain == kinematic
    assert any(v.get("oh") is not None for v in plain.values())
