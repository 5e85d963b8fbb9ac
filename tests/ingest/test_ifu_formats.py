"""The cube formats configured in ifu_cube: SAMI and GMOS on real files, JWST NIRSpec s3d on a
synthetic file built from the documented layout, the generic ``ifu_cube`` reader configured
by options, and their rejection of broken input."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths, ingest_surveys
from skyledger.ingest.config import IngestConfig, SurveySpec
from skyledger.ingest.loader import SPECTRUM_FLAGS
from skyledger.ingest.readers import READERS, get_reader
from skyledger.ingest.readers.base import air_to_vacuum
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.errors import ReaderError
from skyledger.schema.linelist import LINES

SAMPLE = sample_data_dir()
SAMI_BLUE = SAMPLE / "209807_A_sectors_blue.fits.gz"
SAMI_RED = SAMPLE / "209807_A_sectors_red.fits.gz"
GMOS = Path(__file__).resolve().parents[1] / "data" / "gmos" / "ngc3081_cube.fits"
NGC3081 = {"ra": 149.8731, "dec": -22.8263}  # NED; the GMOS file gives no sky position
GMOS_GENERIC = {"data": "SCI", "variance": "ERR", "mask": "MASK", "medium": "air", "pixel_scale_arcsec": 0.1, **NGC3081}


def sniffers(path: Path) -> list[str]:
    return [r.name for r in READERS.values() if r.sniff(path)]


def rejects(path: Path, reader: str, *fragments: str, options: dict | None = None) -> ReaderError:
    with pytest.raises(ReaderError) as info:
        list(get_reader(reader).read(path, options or {}).spectra)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return info.value


def edited(src: Path, dst: Path, edit) -> Path:
    with fits.open(src, memmap=False) as hdul:
        edit(hdul)
        hdul.writeto(dst, overwrite=True)
    return dst


# --------------------------------------------------------------------------- NIRSpec s3d (synthetic)


def write_nirspec_s3d(path: Path, *, n_wave: int = 300, n_y: int = 7, n_x: int = 6, grating: str = "G235H") -> Path:
    """A small s3d file as the jwst pipeline writes it (IFUCubeModel: SCI, ERR, DQ, WMAP)."""
    rng = np.random.default_rng(4)
    primary = fits.Header()
    for key, value in {
        "TELESCOP": "JWST", "INSTRUME": "NIRSPEC", "EXP_TYPE": "NRS_IFU", "GRATING": grating, "FILTER": "F170LP",
        "DETECTOR": "NRS1", "TARGPROP": "SYNTH-1", "TARGNAME": "SYNTH 1", "TARG_RA": 53.1625, "TARG_DEC": -27.7914,
        "FILETYPE": "calibrated", "DATAMODL": "IFUCubeModel",
    }.items():  # fmt: skip
        primary[key] = value
    wcs = {
        "WCSAXES": 3, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CTYPE3": "WAVE", "CUNIT1": "deg", "CUNIT2": "deg",
        "CUNIT3": "um", "CRPIX1": (n_x + 1) / 2, "CRPIX2": (n_y + 1) / 2, "CRPIX3": 1.0, "CRVAL1": 53.1625,
        "CRVAL2": -27.7914, "CRVAL3": 1.70, "CDELT1": -0.1 / 3600, "CDELT2": 0.1 / 3600, "CDELT3": 0.000395,
        "PC1_1": -1.0, "PC1_2": 0.0, "PC2_1": 0.0, "PC2_2": 1.0, "PC3_3": 1.0,
    }  # fmt: skip
    # PC1_1 = -1 with CDELT1 < 0 would flip east; the pipeline writes CDELT1 > 0 with PC1_1 = -1.
    wcs["CDELT1"] = 0.1 / 3600
    wave = 1.70 + 0.000395 * np.arange(n_wave)
    flux = (10.0 + rng.normal(0, 0.5, (n_wave, n_y, n_x))).astype(np.float32)
    flux[np.abs(wave - 1.90)[:, None, None].repeat(n_y, 1).repeat(n_x, 2) < 0.001] += 40.0  # an emission line
    err = np.full(flux.shape, 0.5, dtype=np.float32)
    dq = np.zeros(flux.shape, dtype=np.uint32)
    flux[:, 0, 0] = np.nan  # outside the field: NaN and DO_NOT_USE | NON_SCIENCE
    err[:, 0, 0] = np.nan
    dq[:, 0, 0] = 1 | 512
    dq[10:20, 3, 3] = 1  # a few bad pixels
    sci = fits.ImageHDU(flux, name="SCI")
    sci.header.update(wcs)
    sci.header["BUNIT"] = "MJy/sr"
    err_hdu = fits.ImageHDU(err, name="ERR")
    err_hdu.header.update(wcs)
    err_hdu.header["BUNIT"] = "MJy/sr"
    hdul = fits.HDUList([fits.PrimaryHDU(header=primary), sci, err_hdu, fits.ImageHDU(dq, name="DQ"),
                         fits.ImageHDU(np.ones(flux.shape, np.float32), name="WMAP")])  # fmt: skip
    hdul.writeto(path, overwrite=True)
    return path


@pytest.fixture(scope="module")
def s3d(tmp_path_factory) -> Path:
    return write_nirspec_s3d(tmp_path_factory.mktemp("nirspec") / "jw01234-o001_t001_nirspec_g235h-f170lp_s3d.fits")


def test_nirspec_s3d_reads_the_documented_layout(s3d):
    assert sniffers(s3d) == ["nirspec_s3d"]
    contents = get_reader("nirspec_s3d").read(s3d, {})
    (galaxy,) = contents.sources
    assert (galaxy.object_id, galaxy.ra, galaxy.dec, galaxy.z) == ("SYNTH-1", 53.1625, -27.7914, None)
    spectra = {(s.meta["x"], s.meta["y"]): s for s in contents.spectra}
    assert len(spectra) == 7 * 6 - 1  # the NaN spaxel is not usable
    s = spectra[(3, 3)]
    np.testing.assert_allclose(s.wave, (1.70 + 0.000395 * np.arange(300)) * 1e4, rtol=1e-12)  # um -> A, vacuum
    assert contents.meta["wavelength_medium_in_file"] == "vacuum"
    np.testing.assert_allclose(s.resolution, 2700.0)  # G235H nominal R
    np.testing.assert_allclose(s.ivar[s.ivar > 0], 4.0)  # ERR is an error: 1 / 0.5**2
    assert (s.mask[10:20] == 1).all() and s.mask[0] == 0
    assert s.flux_unit == "MJy / sr"
    centre = spectra[(2, 3)]
    assert abs(centre.ra - 53.1625) * np.cos(np.radians(centre.dec)) * 3600 == pytest.approx(0.05, abs=0.01)
    assert spectra[(3, 3)].ra < spectra[(2, 3)].ra  # east to the left
    assert contents.meta["grating"] == "G235H"


def test_nirspec_nan_error_in_a_do_not_use_pixel_is_no_damage(tmp_path, s3d):
    def edit(hdul):
        hdul["ERR"].data[15, 3, 3] = np.nan  # DQ has DO_NOT_USE there
        hdul["SCI"].data[15, 3, 3] = 12.0

    path = edited(s3d, tmp_path / "dnu_s3d.fits", edit)
    s = next(r for r in get_reader("nirspec_s3d").read(path, {}).spectra if (r.meta["x"], r.meta["y"]) == (3, 3))
    assert s.ivar[15] == 0 and s.mask[15] == 1


def test_nirspec_resolution_option_and_unknown_grating(tmp_path):
    path = write_nirspec_s3d(tmp_path / "x_s3d.fits", grating="G999X")
    contents = get_reader("nirspec_s3d").read(path, {})
    assert next(contents.spectra).resolution is None and "no resolution" in contents.meta["warnings"][0]
    first = next(get_reader("nirspec_s3d").read(path, {"resolution": 1500}).spectra)
    np.testing.assert_allclose(first.resolution, 1500.0)


# --------------------------------------------------------------------------- SAMI (real)


def test_sami_arms_detected_and_read_one_spectrum_per_bin():
    assert sniffers(SAMI_BLUE) == ["sami_cube"] and sniffers(SAMI_RED) == ["sami_cube"]
    blue = get_reader("sami_cube").read(SAMI_BLUE, {})
    spectra = list(blue.spectra)
    bins = {s.meta["bin"]: s for s in spectra}
    with fits.open(SAMI_BLUE) as hdul:
        bin_map = hdul["BIN_MASK"].data
        flux = hdul[0].data
        var = hdul["VARIANCE"].data
    ids = {int(b) for b in np.unique(bin_map) if b > 0}
    assert set(bins) == ids and len(ids) == 39
    b = bins[12]
    ys, xs = np.nonzero(bin_map == 12)
    assert b.object_id == "209807#bin12#blue" and b.source_object_id == "209807#bin12"
    assert b.meta["n_spaxels"] == ys.size and b.meta["arm"] == "blue" and b.meta["bin_flux"] == "mean_per_spaxel"
    # The bin's spectrum, taken once, not summed over its identical copies.
    good = b.ivar > 0
    np.testing.assert_allclose(b.flux[good], flux[good, ys[0], xs[0]], rtol=1e-6)
    np.testing.assert_allclose(b.ivar[good], 1 / var[good, ys[0], xs[0]], rtol=1e-5)
    assert (b.meta["x_centroid"], b.meta["y_centroid"]) == (xs.mean(), ys.mean())
    # AWAV with CRPIX3 = 1024 and CUNIT3 Angstrom, converted to vacuum.
    with fits.open(SAMI_BLUE) as hdul:
        h = hdul[0].header
        air = h["CRVAL3"] + (np.arange(2048) + 1 - h["CRPIX3"]) * h["CDELT3"]
    np.testing.assert_allclose(b.wave, air_to_vacuum(air), rtol=1e-10)
    np.testing.assert_allclose(b.resolution, air / 2.65, rtol=1e-5)
    assert b.flux_unit == "1e-16 erg / (Angstrom s cm2)"
    galaxy, *bin_sources = blue.sources
    assert galaxy.object_id == "209807" and galaxy.shared and galaxy.meta["psf_fwhm_arcsec"] == pytest.approx(2.5075, abs=1e-4)
    assert galaxy.meta["dust"]["applied"] is False and galaxy.meta["dust"]["ebv_sfd98"] == pytest.approx(0.0302, abs=1e-4)
    assert all(s.parent_object_id == "209807" and s.shared for s in bin_sources) and len(bin_sources) == 39
    red = next(get_reader("sami_cube").read(SAMI_RED, {}).spectra)
    assert red.object_id.endswith("#red") and np.nanmedian(red.resolution) == pytest.approx(6850 / 1.61, rel=0.01)


def test_sami_both_arms_ingest_into_one_survey(fresh_database, tmp_path):
    files = [Path(shutil.copy(p, tmp_path / p.name)) for p in (SAMI_BLUE, SAMI_RED)]
    summary = ingest_paths(fresh_database, files)
    assert [o.status for o in summary.outcomes] == ["loaded", "loaded"], [o.reason for o in summary.outcomes]
    with fresh_database.engine.connect() as conn:
        sources = conn.execute(text(
            "SELECT s.object_id, s.ra, s.dec, s.z, p.object_id, count(sp.id), array_agg(sp.object_id ORDER BY sp.object_id) "
            "FROM source s LEFT JOIN source p ON p.id = s.parent_id LEFT JOIN spectrum sp ON sp.source_id = s.id "
            "GROUP BY s.id, p.object_id"
        )).all()  # fmt: skip
        galaxy = [r for r in sources if r[0] == "209807"]
        bins = [r for r in sources if r[0].startswith("209807#bin")]
        assert len(galaxy) == 1 and galaxy[0][5] == 0 and len(bins) == 39 and len(sources) == 40
        for oid, ra, dec, z, parent, n, ids in bins:
            assert parent == "209807" and n == 2 and ids == [f"{oid}#blue", f"{oid}#red"]
            assert z == pytest.approx(0.05386, abs=1e-6)
            assert abs(ra - 135.021042) * 3600 < 15 and abs(dec - 0.079667) * 3600 < 15  # within the 15" bundle
        rows = conn.execute(text(
            "SELECT s.object_id, s.flags, s.resolution IS NOT NULL, g.wave[1], g.wave[array_length(g.wave, 1)] "
            "FROM spectrum s JOIN wavelength_grid g ON g.id = s.wave_grid_id"
        )).all()  # fmt: skip
        assert {r[0].rsplit("#", 1)[1] for r in rows} == {"blue", "red"} and len(rows) == 78
        for oid, flags, has_res, w0, w1 in rows:
            assert flags & SPECTRUM_FLAGS["AIR_TO_VACUUM"] and has_res
            assert not flags & SPECTRUM_FLAGS["NO_RESOLUTION"]
            if oid.endswith("#red"):
                ha = LINES["HA6563"].vacuum_wavelength * (1 + 0.05386)
                assert w0 < ha < w1 and w0 == pytest.approx(air_to_vacuum(np.array([6240.6]))[0], abs=2.0)
        survey = conn.execute(text("SELECT DISTINCT v.name FROM spectrum s JOIN survey v ON v.id = s.survey_id")).scalars().all()
        assert survey == ["sami_cube"]


# --------------------------------------------------------------------------- GMOS (real) and the generic reader


def test_gmos_cube_real_file():
    assert sniffers(GMOS) == ["gmos_cube"]
    contents = get_reader("gmos_cube").read(GMOS, NGC3081)
    assert contents.meta["uncertainty"] == "ERR (variance)"  # decided by the IMCMB cards ([2] = VAR)
    assert "unusable celestial WCS" in contents.meta["warnings"][0]
    (galaxy,) = contents.sources
    assert galaxy.object_id == "NGC 3081" and galaxy.z == pytest.approx(0.007976)
    spectra = {(s.meta["x"], s.meta["y"]): s for s in contents.spectra}
    assert len(spectra) == 46 and (0, 0) not in spectra and (1, 0) not in spectra  # MASK = 1
    with fits.open(GMOS) as hdul:
        sci, err = hdul["SCI"].data, hdul["ERR"].data
    s = spectra[(3, 4)]
    np.testing.assert_allclose(s.ivar, 1 / err[:, 4, 3], rtol=1e-6)
    assert np.median(s.flux * np.sqrt(s.ivar)) == pytest.approx(np.median(sci[:, 4, 3] / np.sqrt(err[:, 4, 3])), rel=1e-4)
    air = 5627.89 + 0.678294 * np.arange(1800)
    np.testing.assert_allclose(s.wave, air_to_vacuum(air), rtol=1e-10)
    assert s.flux_unit == "erg / (Angstrom s arcsec2 cm2)" and s.resolution is None
    # 0.1" pixels centred on the given position, east to the left.
    dx = (spectra[(2, 4)].ra - spectra[(3, 4)].ra) * np.cos(np.radians(s.dec)) * 3600
    assert dx == pytest.approx(0.1, rel=1e-3)
    assert abs(np.mean([v.dec for v in spectra.values()]) - NGC3081["dec"]) * 3600 < 0.1
    # Without a position the spaxels have none, and say so.
    bare = get_reader("gmos_cube").read(GMOS, {})
    assert next(bare.spectra).ra is None and any("no position" in w for w in bare.meta["warnings"])


def test_generic_reader_configured_by_options_reads_gmos_as_gmos_cube():
    assert "ifu_cube" not in sniffers(GMOS)
    generic = {(s.meta["x"], s.meta["y"]): s for s in get_reader("ifu_cube").read(GMOS, GMOS_GENERIC).spectra}
    special = {(s.meta["x"], s.meta["y"]): s for s in get_reader("gmos_cube").read(GMOS, NGC3081).spectra}
    assert generic.keys() == special.keys()
    for key, want in special.items():
        got = generic[key]
        np.testing.assert_array_equal(got.flux, want.flux)
        np.testing.assert_array_equal(got.ivar, want.ivar)
        np.testing.assert_array_equal(got.wave, want.wave)
        assert (got.ra, got.dec) == (want.ra, want.dec)
    first = next(get_reader("ifu_cube").read(GMOS, {**GMOS_GENERIC, "resolution": 1700}).spectra)
    np.testing.assert_allclose(first.resolution, 1700.0)
    with pytest.raises(ReaderError, match="exactly one of options variance, error, ivar"):
        get_reader("ifu_cube").read(GMOS, {"data": "SCI"})
    with pytest.raises(ReaderError, match="unknown reader option"):
        get_reader("ifu_cube").read(GMOS, {**GMOS_GENERIC, "varience": "ERR"})
    rejects(GMOS, "ifu_cube", "mask HDU named by option mask is missing", options={**GMOS_GENERIC, "mask": "DQ"})
    rejects(GMOS, "ifu_cube", "bin map HDU named by option bin_map is missing", options={**GMOS_GENERIC, "bin_map": "BINS"})
    rejects(GMOS, "ifu_cube", "option wave_hdu is missing", options={**GMOS_GENERIC, "wave_hdu": "WAVE"})
    rejects(GMOS, "ifu_cube", "does not say air or vacuum", options={k: v for k, v in GMOS_GENERIC.items() if k != "medium"})
    # Read as an error instead of a variance, 1 / ERR**2 (~1e65) is beyond float32: no data at all.
    as_error = {**{k: v for k, v in GMOS_GENERIC.items() if k != "variance"}, "error": "ERR"}
    rejects(GMOS, "ifu_cube", "ERR holds no positive error", options=as_error)


def test_gmos_and_generic_ingest_end_to_end(fresh_database, tmp_path):
    path = Path(shutil.copy(GMOS, tmp_path / GMOS.name))
    first = ingest_paths(fresh_database, [path], survey=SurveySpec(name="gmos", reader=None, options=NGC3081))
    assert first.outcomes[0].status == "loaded" and first.outcomes[0].reader == "gmos_cube", first.outcomes[0].reason
    other = tmp_path / "generic" / GMOS.name
    other.parent.mkdir()
    shutil.copy(GMOS, other)
    second = ingest_paths(
        fresh_database, [other], survey=SurveySpec(name="new_instrument", reader="ifu_cube", options=GMOS_GENERIC),
        allow_duplicate_content=True,
    )  # fmt: skip
    assert second.outcomes[0].status == "loaded", second.outcomes[0].reason
    with fresh_database.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT v.name, count(*), bool_and(s.flags & :air > 0), bool_and(s.flags & :nores > 0), min(s.z), "
            "avg(s.dec), min(g.wave[1]) FROM spectrum s JOIN survey v ON v.id = s.survey_id "
            "JOIN wavelength_grid g ON g.id = s.wave_grid_id GROUP BY v.name ORDER BY v.name"
        ), {"air": SPECTRUM_FLAGS["AIR_TO_VACUUM"], "nores": SPECTRUM_FLAGS["NO_RESOLUTION"]}).all()  # fmt: skip
    assert [r[:4] for r in rows] == [("gmos", 46, True, True), ("new_instrument", 46, True, True)]
    for *_, z, dec, w0 in rows:
        assert z == pytest.approx(0.007976) and dec == pytest.approx(NGC3081["dec"], abs=1e-4)
        assert w0 == pytest.approx(air_to_vacuum(np.array([5627.89]))[0], abs=1e-6)


# --------------------------------------------------------------------------- broken input


def _sami_small(d: Path) -> Path:
    """An uncompressed copy of the blue SAMI cube (fast to edit)."""
    path = d / "sami_blue.fits"
    path.write_bytes(gzip.decompress(SAMI_BLUE.read_bytes()))
    return path


BROKEN = {
    # name: (reader, builder(dir) -> path, fragments of the rejection)
    "sami_truncated": ("sami_cube", lambda d: _cut(_sami_small(d)), ("truncated",)),
    "sami_no_variance": ("sami_cube", lambda d: edited(_sami_small(d), d / "nv.fits", lambda h: h.__delitem__("VARIANCE")),
                         ("required HDU missing", "VARIANCE")),
    "sami_variance_shape": ("sami_cube", lambda d: edited(_sami_small(d), d / "vs.fits", _shrink("VARIANCE")),
                            ("VARIANCE shape", "differs from PRIMARY")),
    "sami_bin_mask_shape": ("sami_cube", lambda d: edited(_sami_small(d), d / "bm.fits", _bin_mask_shape),
                            ("BIN_MASK shape (49, 50) differs from the cube's spatial shape (50, 50)",)),
    "sami_bin_mask_lies": ("sami_cube", lambda d: edited(_sami_small(d), d / "bl.fits", _bin_mask_lies),
                           ("bin 1", "holds another spectrum", "bin map does not describe")),
    "sami_negative_variance": ("sami_cube", lambda d: edited(_sami_small(d), d / "neg.fits", _set("VARIANCE", -1.0)),
                               ("negative variance",)),
    "sami_nan_variance": ("sami_cube", lambda d: edited(_sami_small(d), d / "nan.fits", _set("VARIANCE", np.nan)),
                          ("NaN/inf variance where the flux is finite",)),
    "sami_zero_variance": ("sami_cube", lambda d: edited(_sami_small(d), d / "zero.fits", _zero("VARIANCE")),
                           ("holds no positive variance",)),
    "gmos_truncated": ("gmos_cube", lambda d: _cut(Path(shutil.copy(GMOS, d / "g.fits"))), ("truncated",)),
    "gmos_no_err": ("gmos_cube", lambda d: edited(GMOS, d / "ne.fits", lambda h: h.__delitem__("ERR")),
                    ("required HDU missing", "ERR")),
    "gmos_err_shape": ("gmos_cube", lambda d: edited(GMOS, d / "es.fits", _shrink("ERR")), ("ERR shape", "differs from SCI")),
    "gmos_mask_shape": ("gmos_cube", lambda d: edited(GMOS, d / "ms.fits", _mask_shape), ("MASK shape (7, 6)",)),
    "gmos_negative_variance": ("gmos_cube", lambda d: edited(GMOS, d / "gn.fits", _set("ERR", -1.0)), ("negative variance",)),
    "gmos_nan_variance": ("gmos_cube", lambda d: edited(GMOS, d / "gnan.fits", _set("ERR", np.nan)),
                          ("NaN/inf variance where the flux is finite",)),
    "gmos_no_wavelength": ("gmos_cube", lambda d: edited(GMOS, d / "gw.fits", _drop_key("SCI", "CD3_3")),
                           ("no linear wavelength axis",)),
    "s3d_truncated": ("nirspec_s3d", lambda d: _cut(write_nirspec_s3d(d / "s.fits")), ("truncated",)),
    "s3d_no_err": ("nirspec_s3d", lambda d: edited(write_nirspec_s3d(d / "s.fits"), d / "se.fits",
                                                   lambda h: h.__delitem__("ERR")), ("required HDU missing", "ERR")),
    "s3d_err_shape": ("nirspec_s3d", lambda d: edited(write_nirspec_s3d(d / "s.fits"), d / "ss.fits", _shrink("ERR")),
                      ("ERR shape", "differs from SCI")),
    "s3d_negative_error": ("nirspec_s3d", lambda d: edited(write_nirspec_s3d(d / "s.fits"), d / "sn.fits", _set("ERR", -0.1)),
                           ("negative error",)),
    "s3d_nan_error": ("nirspec_s3d", lambda d: edited(write_nirspec_s3d(d / "s.fits"), d / "snan.fits", _set("ERR", np.nan, y=2)),
                      ("NaN/inf error where the flux is finite",)),
    "s3d_dq_shape": ("nirspec_s3d", lambda d: edited(write_nirspec_s3d(d / "s.fits"), d / "sd.fits", _shrink("DQ")),
                     ("DQ shape",)),
}  # fmt: skip


def _cut(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    return path


def _shrink(name: str):
    def edit(hdul):
        hdul[name].data = hdul[name].data[:, :-1, :].copy()

    return edit


def _set(name: str, value: float, y: int | None = None):
    def edit(hdul):
        data = hdul[name].data.copy()
        data[100, data.shape[1] // 2 if y is None else y, data.shape[2] // 2] = value
        hdul[name].data = data

    return edit


def _zero(name: str):
    def edit(hdul):
        hdul[name].data = np.zeros_like(hdul[name].data)

    return edit


def _drop_key(name: str, key: str):
    def edit(hdul):
        del hdul[name].header[key]

    return edit


def _bin_mask_shape(hdul):
    hdul["BIN_MASK"].data = hdul["BIN_MASK"].data[:-1].copy()


def _bin_mask_lies(hdul):
    # Claim that a spaxel of bin 2 belongs to bin 1.
    bins = hdul["BIN_MASK"].data.copy()
    ys, xs = np.nonzero(bins == 2)
    bins[ys[0], xs[0]] = 1
    hdul["BIN_MASK"].data = bins


def _mask_shape(hdul):
    hdul["MASK"].data = hdul["MASK"].data[:-1].copy()


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_cubes_are_rejected_with_the_reason(tmp_path, case):
    reader, build, fragments = BROKEN[case]
    path = build(tmp_path)
    options = NGC3081 if reader == "gmos_cube" else {}
    rejects(path, reader, *fragments, options=options)


@pytest.mark.parametrize("case", ["sami_bin_mask_lies", "sami_nan_variance", "gmos_err_shape", "s3d_no_err"])
def test_broken_cube_loads_nothing_and_the_batch_goes_on(fresh_database, tmp_path, case):
    reader, build, fragments = BROKEN[case]
    (tmp_path / "bad").mkdir()
    (tmp_path / "good").mkdir()
    bad = build(tmp_path / "bad")
    for other in (tmp_path / "bad").iterdir():  # the intact file a builder started from
        if other != bad:
            other.unlink()
    shutil.copy(GMOS, tmp_path / "good" / "good.fits")
    # One batch, as from a skyledger.toml with two surveys: the bad file first, then a good one.
    config = IngestConfig(path=None, root=tmp_path, surveys=(
        SurveySpec(name="cubes", reader=reader, location=tmp_path / "bad", options=NGC3081 if reader == "gmos_cube" else {}),
        SurveySpec(name="gmos", reader="gmos_cube", location=tmp_path / "good", options=NGC3081),
    ))  # fmt: skip
    summary = ingest_surveys(fresh_database, config)
    status = {Path(o.path).name: (o.status, o.reason) for o in summary.outcomes}
    assert status[bad.name][0] == "rejected" and fragments[0].lower() in status[bad.name][1].lower()
    assert status["good.fits"][0] == "loaded"
    with fresh_database.engine.connect() as conn:
        by_survey = dict(conn.execute(text(
            "SELECT v.name, count(s.id) FROM survey v LEFT JOIN spectrum s ON s.survey_id = v.id GROUP BY v.name"
        )).all())  # fmt: skip
        n_sources = conn.execute(text("SELECT count(*) FROM source s JOIN survey v ON v.id = s.survey_id "
                                      "WHERE v.name = 'cubes'")).scalar_one()  # fmt: skip
    assert by_survey.get("cubes", 0) == 0 and n_sources == 0 and by_survey["gmos"] == 46
