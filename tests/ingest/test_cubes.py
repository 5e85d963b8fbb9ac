"""IFU cube readers on synthetic MUSE and MaNGA cubes with known truth, and the generators."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from skyledger.schema.linelist import LINES, vacuum_to_air
from skyledger.ingest.readers import READERS, detect_reader, get_reader
from skyledger.testing.disk_model import C_KMS, DiskParams, disk_velocity
from skyledger.testing.ifu_cubes import write_manga_cube, write_muse_cube
from skyledger.testing.sdss_files import write_sdss_spectra
from skyledger.schema.errors import ReaderError

# Small cubes keep the file fast: 15 x 13 spaxels, wavelength ranges that hold H-alpha.
MUSE_KW = dict(n_x=15, n_y=13, wave_start=6400.0, n_wave=600, rotation=25.0)
MANGA_KW = dict(n_x=17, n_y=17, n_wave=2900)


@pytest.fixture(scope="module")
def muse(tmp_path_factory):
    params = DiskParams(ra=201.365, dec=-43.019, v_sys=1500.0, centre_offset=(0.3, -0.2), snr=40.0)
    return write_muse_cube(tmp_path_factory.mktemp("muse") / "DATACUBE_FINAL.fits", params, seed=3, **MUSE_KW)


@pytest.fixture(scope="module")
def manga(tmp_path_factory):
    params = DiskParams(ra=184.6, dec=45.1, v_sys=5400.0, snr=10.0, oh_gradient=-0.05)
    return write_manga_cube(
        tmp_path_factory.mktemp("manga") / "manga-8485-1901-LOGCUBE.fits", params, seed=5, **MANGA_KW
    )


def by_xy(spectra):
    return {(s.meta["x"], s.meta["y"]): s for s in spectra}


# --------------------------------------------------------------------------- generators


def test_muse_generator_headers_look_like_the_pipeline_product(muse):
    path, _ = muse
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "STAT"]
        primary, data, stat = hdul[0].header, hdul["DATA"].header, hdul["STAT"].header
        assert primary["INSTRUME"] == "MUSE" and primary["TELESCOP"] == "ESO-VLT-U4"
        assert primary["HIERARCH ESO PRO CATG"] == "DATACUBE_FINAL"
        assert hdul[0].data is None
        assert data["BUNIT"] == "10**(-20)*erg/s/cm**2/Angstrom"
        assert (data["CTYPE1"], data["CTYPE2"], data["CTYPE3"]) == ("RA---TAN", "DEC--TAN", "AWAV")
        assert data["CD3_3"] == 1.25 and data["CUNIT3"] == "Angstrom"
        assert data["HDUCLAS2"] == "DATA" and data["ERRDATA"] == "STAT"
        assert stat["HDUCLAS2"] == "ERROR" and stat["HDUCLAS3"] == "MSE" and stat["SCIDATA"] == "DATA"
        assert hdul["DATA"].data.shape == (600, 13, 15)
        assert np.isnan(hdul["DATA"].data[:, 0, :]).all()  # unexposed border


def test_manga_generator_headers_look_like_the_drp_product(manga):
    path, truth = manga
    with fits.open(path) as hdul:
        names = [h.name for h in hdul]
        for required in (
            "FLUX",
            "IVAR",
            "MASK",
            "DISP",
            "PREDISP",
            "WAVE",
            "SPECRES",
            "SPECRESD",
            "PRESPECRES",
            "RIMG",
        ):
            assert required in names
        primary, flux = hdul[0].header, hdul["FLUX"].header
        assert primary["PLATEIFU"] == "8485-1901" and primary["MANGAID"] == "1-209232"
        assert (primary["OBJRA"], primary["OBJDEC"]) == (184.6, 45.1)
        assert flux["CTYPE3"] == "WAVE-LOG" and flux["CTYPE1"] == "RA---TAN" and flux["CTYPE2"] == "DEC--TAN"
        assert flux["BUNIT"] == "1E-17 erg/s/cm^2/Ang/spaxel"
        assert flux["HDUCLAS1"] == "CUBE" and flux["ERRDATA"] == "IVAR" and flux["QUALDATA"] == "MASK"
        wave = hdul["WAVE"].data
        assert wave[0] == pytest.approx(3621.596, abs=1e-3)
        np.testing.assert_allclose(np.diff(np.log10(wave)), 1e-4, rtol=1e-9)
        assert hdul["FLUX"].data.shape == (2900, 17, 17)
        # Outside the bundle: no data, NOCOV | DONOTUSE.
        assert hdul["MASK"].data[0, 0, 0] == 1 | 1024 and hdul["IVAR"].data[0, 0, 0] == 0
    assert truth.covered.sum() < truth.covered.size


def test_generators_are_deterministic(tmp_path):
    a, _ = write_muse_cube(tmp_path / "a.fits", n_x=6, n_y=6, n_wave=50, seed=9)
    b, _ = write_muse_cube(tmp_path / "b.fits", n_x=6, n_y=6, n_wave=50, seed=9)
    assert a.read_bytes() == b.read_bytes()


def test_disk_velocity_field_geometry():
    p = DiskParams(pa=90.0, inclination=60.0, v_sys=1000.0, v_max=200.0, r_turn=1.0)
    # PA 90: the receding major axis points east (+xi).
    v, r = disk_velocity(np.array([10.0, -10.0, 0.0]), np.array([0.0, 0.0, 5.0]), p)
    assert v[0] > 1000 > v[1]
    assert v[0] - 1000 == pytest.approx(1000 - v[1])
    assert v[2] == pytest.approx(1000.0)  # minor axis: systemic
    assert r[2] == pytest.approx(10.0)  # deprojected by 1 / cos 60


# --------------------------------------------------------------------------- MUSE reader


def test_muse_spaxels_recover_truth_positions_and_wavelengths(muse):
    path, truth = muse
    reader = detect_reader(path)
    assert reader.name == "muse_cube"
    contents = reader.read(path, {})
    assert isinstance(contents.spectra, types.GeneratorType)  # streamed, not a list
    (galaxy,) = contents.sources
    assert galaxy.object_id == "NGC0000"
    spectra = by_xy(contents.spectra)
    assert set(spectra) == {(x, y) for y, x in zip(*np.nonzero(truth.covered), strict=False)}
    for (x, y), s in spectra.items():
        assert s.source_object_id == "NGC0000" and s.object_id == f"NGC0000#{x}_{y}"
        assert abs(s.ra - truth.ra[y, x]) * np.cos(np.radians(s.dec)) * 3600 < 1e-6
        assert abs(s.dec - truth.dec[y, x]) * 3600 < 1e-6
    s = spectra[(7, 6)]
    np.testing.assert_allclose(s.wave, truth.wave_vacuum, atol=1e-9)  # AWAV -> vacuum
    assert s.flux_unit == "1e-20 erg / (Angstrom s cm2)"
    # Bacon et al. 2017 LSF: R ~ 2900 near H-alpha.
    assert np.interp(6700, s.wave, s.resolution) == pytest.approx(2900, rel=0.1)
    assert contents.meta["wavelength_medium_in_file"] == "air"


def test_muse_halpha_sits_at_the_true_velocity(muse):
    path, truth = muse
    spectra = by_xy(get_reader("muse_cube").read(path, {}).spectra)
    rest = LINES["HA6563"].vacuum_wavelength
    for x, y in [(7, 6), (3, 6), (11, 6), (7, 2)]:
        s = spectra[(x, y)]
        expect = rest * (1 + truth.velocity[y, x] / C_KMS)
        near = np.abs(s.wave - expect) < 8
        cont = np.median(s.flux[(np.abs(s.wave - expect) > 15) & (np.abs(s.wave - expect) < 40)])
        line = np.clip(s.flux[near] - cont, 0, None)
        centroid = np.sum(s.wave[near] * line) / np.sum(line)
        assert (centroid / rest - 1) * C_KMS == pytest.approx(truth.velocity[y, x], abs=15.0)


def test_muse_streams_in_any_chunk_size(muse):
    path, _ = muse
    one = by_xy(get_reader("muse_cube").read(path, {"rows_per_chunk": 1}).spectra)
    many = by_xy(get_reader("muse_cube").read(path, {"rows_per_chunk": 5}).spectra)
    assert one.keys() == many.keys()
    for key in one:
        np.testing.assert_array_equal(one[key].flux, many[key].flux)


def test_usable_spaxel_thresholds_are_options(muse):
    path, truth = muse
    reader = get_reader("muse_cube")
    everything = list(reader.read(path, {}).spectra)
    bright = list(reader.read(path, {"min_snr": 20.0}).spectra)
    assert 0 < len(bright) < len(everything) == truth.covered.sum()
    assert all(s.meta["median_snr"] > 20.0 for s in bright)
    with pytest.raises(ReaderError, match="min_good_fraction"):
        reader.read(path, {"min_good_fraction": 1.5})


def test_muse_options_override_header(muse):
    path, _ = muse
    contents = get_reader("muse_cube").read(
        path, {"object_id": "NGC5128", "ra": 201.0, "dec": -43.0, "z": 0.0018, "resolution": "none"}
    )
    (galaxy,) = contents.sources
    assert (galaxy.object_id, galaxy.ra, galaxy.dec, galaxy.z) == ("NGC5128", 201.0, -43.0, 0.0018)
    first = next(contents.spectra)
    assert first.source_object_id == "NGC5128" and first.resolution is None and first.z == 0.0018


# --------------------------------------------------------------------------- MaNGA cube reader


def test_manga_cube_spaxels(manga):
    path, truth = manga
    assert detect_reader(path).name == "manga_cube"
    contents = get_reader("manga_cube").read(path, {})
    (galaxy,) = contents.sources
    assert (galaxy.object_id, galaxy.ra, galaxy.dec) == ("8485-1901", 184.6, 45.1)
    assert contents.meta["resolution_hdu"] == "SPECRES"
    spectra = by_xy(contents.spectra)
    # Uncovered spaxels (NOCOV) never appear; covered ones do unless their S/N is <= 0.
    assert spectra and all(truth.covered[y, x] for x, y in spectra)
    assert len(spectra) >= 0.9 * truth.covered.sum()
    for (x, y), s in spectra.items():
        assert abs(s.ra - truth.ra[y, x]) * np.cos(np.radians(s.dec)) * 3600 < 1e-6
        assert abs(s.dec - truth.dec[y, x]) * 3600 < 1e-6
    s = spectra[(8, 8)]
    np.testing.assert_allclose(s.wave, truth.wave_vacuum)
    assert s.flux_unit == "1e-17 erg / (Angstrom s cm2)"
    assert np.nanmedian(s.resolution) == pytest.approx(2000, rel=0.3)


def test_manga_cube_per_spaxel_lsf(manga):
    path, truth = manga
    s = next(iter(get_reader("manga_cube").read(path, {"resolution_hdu": "DISP"}).spectra))
    sigma_a = s.wave * truth.sigma_instrument_kms / C_KMS
    np.testing.assert_allclose(s.resolution, s.wave / (2.35482 * sigma_a), rtol=1e-3)
    with pytest.raises(ReaderError, match="resolution_hdu"):
        get_reader("manga_cube").read(path, {"resolution_hdu": "LSFPOST"})


def test_voronoi_bins_reach_the_target_snr(manga):
    path, truth = manga
    target = 10.0  # the brightest spaxels have S/N ~ 10, the faintest ~ 2
    contents = get_reader("manga_cube").read(path, {"target_snr": target})
    bins = list(contents.spectra)
    assert len(bins) > 3
    members = [tuple(xy) for b in bins for xy in b.meta["spaxels"]]
    assert len(members) == len(set(members))  # every spaxel in at most one bin
    spaxels = by_xy(get_reader("manga_cube").read(path, {}).spectra)
    for b in bins:
        assert b.object_id == f"8485-1901#bin{b.meta['bin']}" and b.source_object_id == "8485-1901"
        good = b.ivar > 0
        snr = np.median(b.flux[good] * np.sqrt(b.ivar[good]))
        # vorbin's outermost bins may stay a little short of the target.
        assert snr >= 0.6 * target, (b.meta["n_spaxels"], snr)
        # Flux summed over members, variances added.
        xs, ys = zip(*b.meta["spaxels"], strict=False)
        flux_sum = np.sum([spaxels[(x, y)].flux for x, y in zip(xs, ys, strict=False)], axis=0)
        np.testing.assert_allclose(b.flux, flux_sum, rtol=1e-4, atol=1e-4)
        # Position: flux-weighted centroid of its spaxels, inside their extent.
        assert min(xs) <= b.meta["x_centroid"] <= max(xs) and min(ys) <= b.meta["y_centroid"] <= max(ys)
        ras = [truth.ra[y, x] for x, y in zip(xs, ys, strict=False)]
        assert min(ras) - 1e-9 <= b.ra <= max(ras) + 1e-9
    assert np.median([b.meta["median_snr"] for b in bins]) == pytest.approx(target, rel=0.15)
    assert sum(b.meta["n_spaxels"] for b in bins) > len(bins)  # faint spaxels were combined


def test_bad_target_snr_is_rejected_at_read(manga):
    path, _ = manga
    with pytest.raises(ReaderError, match="target_snr must be positive"):
        get_reader("manga_cube").read(path, {"target_snr": -1})


# --------------------------------------------------------------------------- broken cubes


def test_cube_missing_stat_and_wrong_shapes(tmp_path, muse, manga):
    muse_path, _ = muse
    with fits.open(muse_path) as hdul:
        fits.HDUList([hdul[0].copy(), hdul["DATA"].copy()]).writeto(tmp_path / "nostat.fits")
    with pytest.raises(ReaderError, match="required HDU missing") as info:
        get_reader("muse_cube").read(tmp_path / "nostat.fits", {})
    assert info.value.hdu == "STAT"

    manga_path, _ = manga
    with fits.open(manga_path) as hdul:
        hdul["IVAR"].data = hdul["IVAR"].data[:, :-1, :].copy()
        hdul.writeto(tmp_path / "shape.fits")
    with pytest.raises(ReaderError, match="differs from FLUX") as info:
        get_reader("manga_cube").read(tmp_path / "shape.fits", {})
    assert info.value.hdu == "IVAR"


def test_cube_negative_ivar_anywhere_is_rejected(tmp_path, manga):
    manga_path, _ = manga
    with fits.open(manga_path) as hdul:
        hdul["IVAR"].data[100, 0, 0] = -1.0  # even in an uncovered spaxel
        hdul.writeto(tmp_path / "neg.fits")
    with pytest.raises(ReaderError, match="negative or non-finite ivar") as info:
        list(get_reader("manga_cube").read(tmp_path / "neg.fits", {}).spectra)
    assert str(tmp_path / "neg.fits") in str(info.value)


def test_truncated_cube(tmp_path, muse):
    path, _ = muse
    data = path.read_bytes()
    (tmp_path / "cut.fits").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReaderError, match="truncated"):
        get_reader("muse_cube").read(tmp_path / "cut.fits", {})


# --------------------------------------------------------------------------- SDSS generator


def test_sdss_generator_files_read_back(tmp_path):
    paths = write_sdss_spectra(tmp_path, 12, seed=2, batch=5)
    assert len(paths) == 12 and len({p.name for p in paths}) == 12
    assert paths[0].name == "spec-3000-55000-0001.fits"
    for path in paths[:4]:
        assert detect_reader(path).name == "sdss"
        contents = get_reader("sdss").read(path, {})
        (s,) = list(contents.spectra)
        assert s.object_id == path.name[5:-5]
        assert s.n_pix == 3850 and s.meta["lite"] is True
        assert 0.01 <= s.z <= 0.25
        specobj = fits.getdata(path, "SPECOBJ")[0]
        assert s.ra == pytest.approx(specobj["PLUG_RA"]) and s.z == pytest.approx(specobj["Z"])
        # The strongest emission line is H-alpha at the catalogued redshift.
        ha = LINES["HA6563"].vacuum_wavelength * (1 + s.z)
        near = np.abs(s.wave - ha) < 10
        assert s.wave[near][np.argmax(s.flux[near])] == pytest.approx(ha, abs=2.0)
    # Same seed, same bytes, whatever the batching or the split into calls.
    again = write_sdss_spectra(tmp_path / "again", 5, seed=2, batch=7)
    again += write_sdss_spectra(tmp_path / "again", 7, seed=2, batch=3, start=5)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_every_reader_sniffs_its_synthetic_file(muse, manga, tmp_path):
    (sdss,) = write_sdss_spectra(tmp_path, 1)
    expected = {muse[0]: "muse_cube", manga[0]: "manga_cube", sdss: "sdss"}
    for path, name in expected.items():
        assert [r.name for r in READERS.values() if r.sniff(path)] == [name]


def test_air_vacuum_consistency_of_the_muse_grid(muse):
    path, truth = muse
    with fits.open(path) as hdul:
        h = hdul["DATA"].header
        air = h["CRVAL3"] + h["CD3_3"] * np.arange(h["NAXIS3"])
    np.testing.assert_allclose(vacuum_to_air(truth.wave_vacuum), air, atol=1e-8)
    assert isinstance(path, Path)


def test_gzipped_manga_cube_reads_like_the_plain_one(tmp_path, manga):
    import gzip

    path, _ = manga
    gz = tmp_path / "manga-8485-1901-LOGCUBE.fits.gz"
    gz.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    assert detect_reader(gz).name == "manga_cube"
    plain = by_xy(get_reader("manga_cube").read(path, {}).spectra)
    packed = by_xy(get_reader("manga_cube").read(gz, {}).spectra)
    assert plain.keys() == packed.keys()
    np.testing.assert_array_equal(plain[(8, 8)].flux, packed[(8, 8)].flux)
