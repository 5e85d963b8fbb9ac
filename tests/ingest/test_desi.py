"""The DESI coadd reader on the real EDR sample, its redshift sources, its rejection of
broken files, and an end-to-end ingest into the database."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.loader import SPECTRUM_FLAGS
from skyledger.ingest.readers import detect_reader, get_reader
from tests.ingest.test_readers import DESI, assert_rejects, modified_copy, read_all

TARGET = 39633300968442591
ARMS = {"B": (3600.0, 5800.0, 2751), "R": (5760.0, 7620.0, 2326), "Z": (7520.0, 9824.0, 2881)}


def write_redrock(path: Path, rows: list[tuple[int, float, int]]) -> Path:
    """A minimal redrock file: REDSHIFTS with TARGETID, Z, ZWARN, SPECTYPE."""
    cols = [
        fits.Column("TARGETID", "K", array=np.array([r[0] for r in rows], np.int64)),
        fits.Column("Z", "D", array=np.array([r[1] for r in rows])),
        fits.Column("ZERR", "D", array=np.full(len(rows), 1e-5)),
        fits.Column("ZWARN", "K", array=np.array([r[2] for r in rows], np.int64)),
        fits.Column("SPECTYPE", "6A", array=np.array(["GALAXY"] * len(rows))),
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols, name="REDSHIFTS")]).writeto(path)
    return path


@pytest.fixture(scope="module")
def desi():
    contents, spectra = read_all(DESI, "desi_coadd")
    return contents, spectra


# --------------------------------------------------------------------------- the real file


def test_detected_by_content(tmp_path):
    disguised = tmp_path / "spectra.fits"
    shutil.copy(DESI, disguised)
    assert detect_reader(disguised).name == "desi_coadd"


def test_a_per_exposure_spectra_file_is_not_claimed(tmp_path):
    def as_spectra_file(h):
        del h["EXP_FIBERMAP"]
        cols = [c for c in h["FIBERMAP"].columns if not c.name.startswith("COADD_")]
        h["FIBERMAP"] = fits.BinTableHDU.from_columns(cols, name="FIBERMAP")

    path = modified_copy(DESI, tmp_path / "spectra-5-169-thru20210419.fits", as_spectra_file)
    assert not get_reader("desi_coadd").sniff(path)


def test_one_usable_fibre_with_arms_merged_on_the_common_grid(desi):
    contents, spectra = desi
    (spec,) = spectra
    assert spec.object_id == spec.source_object_id == str(TARGET)
    # Arms overlap by 51 (5760-5800) and 126 (7520-7620) pixels, which coincide.
    assert spec.n_pix == sum(n for *_, n in ARMS.values()) - 51 - 126 == 7781
    assert np.all(np.diff(spec.wave) > 0)
    np.testing.assert_allclose(spec.wave, 3600.0 + 0.8 * np.arange(7781), atol=1e-6)
    assert contents.meta["arms"] == ["B", "R", "Z"]
    assert contents.meta["wavelength_medium_in_file"] == "vacuum"
    assert spec.flux_unit == "1e-17 erg / (Angstrom s cm2)"
    assert spec.mask.dtype == np.int32 and spec.ivar.min() >= 0


def test_overlap_pixels_are_the_inverse_variance_weighted_mean(desi):
    _, (spec,) = desi
    with fits.open(DESI) as h:
        arm = {a: (h[f"{a}_WAVELENGTH"].data, h[f"{a}_FLUX"].data[4], h[f"{a}_IVAR"].data[4]) for a in "BRZ"}
    for lo, hi in (("B", "R"), ("R", "Z")):
        w_lo, f_lo, i_lo = arm[lo]
        w_hi, f_hi, i_hi = arm[hi]
        n = int(np.sum(w_lo >= w_hi[0] - 1e-6))
        at = np.searchsorted(spec.wave, w_hi[0] - 1e-6) + np.arange(n)
        np.testing.assert_allclose(spec.wave[at], w_hi[:n], atol=1e-6)
        expected = (f_lo[-n:] * i_lo[-n:] + f_hi[:n] * i_hi[:n]) / (i_lo[-n:] + i_hi[:n])
        np.testing.assert_allclose(spec.flux[at], expected, rtol=1e-5)
        np.testing.assert_allclose(spec.ivar[at], i_lo[-n:] + i_hi[:n], rtol=1e-6)
        # Just outside the overlap each side is its own arm's pixel.
        assert spec.flux[at[0] - 1] == f_lo[-n - 1] and spec.flux[at[-1] + 1] == f_hi[n]


def test_resolution_in_the_documented_ranges(desi):
    """DESI design R: B 2000-3200, R 3200-4100, Z 4100-5100 (the EDR matrices are a little
    sharper than the design at the red ends of R and Z, up to ~5500-6200)."""
    _, (spec,) = desi
    res, w = spec.resolution, spec.wave
    assert np.all(np.isfinite(res))
    median = {a: float(np.median(res[(w > lo + 50) & (w < hi - 50)])) for a, (lo, hi, _) in ARMS.items()}
    assert 2000 < median["B"] < 3200
    assert 3200 < median["R"] < 4100 * 1.1
    assert 4100 < median["Z"] < 5100 * 1.1
    assert 2000 < res.min() and res.max() < 6500
    # FWHM = lambda / R stays near DESI's ~1.8 A (1.3-2.1 A, the widest at the arms' ends).
    fwhm = w / res
    assert 1.3 < fwhm.min() and fwhm.max() < 2.2
    # In the B/R overlap R lies between the two arms' values next to it.
    at = np.flatnonzero((w >= 5760) & (w <= 5800))
    lo, hi = sorted((res[at[0] - 1], res[at[-1] + 1]))
    assert np.all((res[at] > lo * 0.98) & (res[at] < hi * 1.02))


def test_position_ids_and_meta_from_the_fibermap(desi):
    _, (spec,) = desi
    with fits.open(DESI) as h:
        row = h["FIBERMAP"].data[4]
        assert row["TARGETID"] == TARGET
        assert (spec.ra, spec.dec) == (float(row["TARGET_RA"]), float(row["TARGET_DEC"]))
    assert spec.meta["tileid"] == 169 and spec.meta["petal"] == 5 and spec.meta["fiber"] == 2504
    assert spec.meta["sv3_desi_target"] == 4674 and "desi_target" not in spec.meta  # zero bits are left out
    assert spec.z is None


def test_dead_fibres_are_skipped_with_their_reasons(desi):
    contents, _ = desi
    assert contents.meta["n_fibres"] == 5 and contents.meta["n_skipped"] == 4
    assert contents.meta["skipped"] == {"unassigned (TARGETID < 0)": 3, "COADD_FIBERSTATUS != 0": 1}
    assert [s.object_id for s in contents.sources] == [str(TARGET)]
    assert contents.sources[0].shared


def test_include_dead_loads_every_fibre():
    contents, spectra = read_all(DESI, "desi_coadd", {"include_dead": True})
    assert len(spectra) == 5
    dead = [s for s in spectra if "dead" in s.meta]
    assert len(dead) == 4 and all(not np.any(s.ivar) for s in dead)


# --------------------------------------------------------------------------- redshifts


def test_redshift_from_options_and_files(tmp_path):
    (spec,) = read_all(DESI, "desi_coadd", {"z": 0.25})[1]
    assert spec.z == 0.25
    (spec,) = read_all(DESI, "desi_coadd", {"z": {str(TARGET): 0.5}})[1]
    assert spec.z == 0.5
    zfile = write_redrock(tmp_path / "zcat.fits", [(TARGET, 0.123, 4), (1, 0.9, 0)])
    contents, (spec,) = read_all(DESI, "desi_coadd", {"redshifts": str(zfile)})
    assert spec.z == 0.123 and spec.meta["zwarn"] == 4 and spec.meta["spectype"] == "GALAXY"
    assert contents.meta["redshift_source"] == "redshifts file zcat.fits"
    # The sibling redrock file of the standard DESI layout is used without an option.
    coadd = Path(shutil.copy(DESI, tmp_path / DESI.name))
    write_redrock(tmp_path / DESI.name.replace("coadd-", "redrock-"), [(TARGET, 0.0712, 0)])
    contents, (spec,) = read_all(coadd, "desi_coadd")
    assert spec.z == 0.0712 and "zwarn" not in spec.meta
    assert contents.meta["redshift_source"] == "redrock sibling redrock-5-169-thru20210419.fits"
    assert_rejects(DESI, "desi_coadd", "option z must be a number", options={"z": "high"})
    assert_rejects(DESI, "desi_coadd", "unknown reader option", options={"object_id": "x"})
    assert_rejects(DESI, "desi_coadd", "include_dead must be true or false", options={"include_dead": "no"})
    assert_rejects(DESI, "desi_coadd", "no REDSHIFTS or ZCATALOG", options={"redshifts": str(DESI)})


# --------------------------------------------------------------------------- broken files


def _set(hdu: str, edit):
    def apply(h):
        data = h[hdu].data.copy()
        edit(data)
        h[hdu].data = data

    return apply


def broken_files(d: Path) -> dict[str, tuple[Path, str, str | None]]:
    """name -> (file, fragment of the error, HDU named)."""
    d.mkdir(parents=True, exist_ok=True)
    out: dict[str, tuple[Path, str, str | None]] = {}
    cut = d / "truncated.fits"
    cut.write_bytes(DESI.read_bytes()[: 1_000_000])
    out["truncated"] = (cut, "truncated", None)
    out["missing_r_ivar"] = (modified_copy(DESI, d / "no_r_ivar.fits", lambda h: h.__delitem__("R_IVAR")),
                             "required HDU missing", "R_IVAR")  # fmt: skip
    def short(h):
        h["R_IVAR"].data = h["R_IVAR"].data[:, :-10].copy()
    out["arm_shapes"] = (modified_copy(DESI, d / "short_r_ivar.fits", short), "disagrees with 5 FIBERMAP rows", "R_IVAR")
    def bad_res(h):
        h["Z_RESOLUTION"].data = h["Z_RESOLUTION"].data[:, :10, :].copy()
    out["resolution_shape"] = (modified_copy(DESI, d / "bad_res.fits", bad_res), "resolution data has shape", "Z_RESOLUTION")
    out["nan_flux"] = (modified_copy(DESI, d / "nan_flux.fits", _set("B_FLUX", lambda a: a.__setitem__((4, 100), np.nan))),
                       "flux is NaN/inf at 1 pixels with ivar > 0", "B_FLUX")  # fmt: skip
    def all_dead(h):
        h["FIBERMAP"].data["COADD_FIBERSTATUS"][4] = 2
    out["all_dead"] = (modified_copy(DESI, d / "all_dead.fits", all_dead),
                       "no usable fibre: all 5 fibres are dead or unassigned (3 unassigned", "FIBERMAP")  # fmt: skip
    def shifted(h):
        h["R_WAVELENGTH"].data = h["R_WAVELENGTH"].data + 0.3
    out["off_grid"] = (modified_copy(DESI, d / "off_grid.fits", shifted), "not on the wavelength grid", "R_WAVELENGTH")
    return out


def test_broken_files_are_rejected_naming_the_problem(tmp_path):
    for name, (path, fragment, hdu) in broken_files(tmp_path).items():
        err = assert_rejects(path, "desi_coadd", fragment)
        if hdu is not None:
            assert err.hdu == hdu, (name, err.hdu)


# --------------------------------------------------------------------------- database


def test_ingest_by_detection_with_redrock_sibling(fresh_database, tmp_path):
    data = tmp_path / "tile169"
    data.mkdir()
    coadd = Path(shutil.copy(DESI, data / DESI.name))
    write_redrock(data / DESI.name.replace("coadd-", "redrock-"), [(TARGET, 0.0712, 0)])
    summary = ingest_paths(fresh_database, [coadd])
    (outcome,) = summary.outcomes
    assert (outcome.status, outcome.reader, outcome.n_spectra) == ("loaded", "desi_coadd", 1), outcome.reason
    with fresh_database.engine.connect() as conn:
        row = conn.execute(text("SELECT survey, object_id, ra, dec, z, n_pix, flags FROM catalog.spectra")).one()
        wave, res = conn.execute(
            text("SELECT g.wave, s.resolution FROM spectrum s JOIN wavelength_grid g ON g.id = s.wave_grid_id")
        ).one()
        src = conn.execute(text("SELECT object_id, ra, z FROM source")).one()
    survey, object_id, ra, dec, z, n_pix, flags = row
    assert (survey, object_id, n_pix) == ("desi_coadd", str(TARGET), 7781)
    assert ra == pytest.approx(215.4975770476502, abs=1e-12) and dec == pytest.approx(53.460324212678316, abs=1e-12)
    assert z == pytest.approx(0.0712) and src == (str(TARGET), ra, z)
    # Vacuum in the file: the grid is DESI's own, nothing converted or flagged.
    np.testing.assert_allclose(np.asarray(wave), 3600.0 + 0.8 * np.arange(7781), atol=1e-6)
    assert not flags & SPECTRUM_FLAGS["AIR_TO_VACUUM"]
    assert not flags & (SPECTRUM_FLAGS["NO_RESOLUTION"] | SPECTRUM_FLAGS["ZERO_IVAR"] | SPECTRUM_FLAGS["NO_POSITION"])
    assert res is not None and np.all(np.isfinite(np.asarray(res, dtype=float)))


def test_broken_files_load_nothing_and_the_batch_goes_on(fresh_database, tmp_path):
    broken = broken_files(tmp_path / "broken")
    good = Path(shutil.copy(DESI, tmp_path / "good.fits"))
    paths = [p for p, _, _ in broken.values()] + [good]
    summary = ingest_paths(fresh_database, paths)
    by_path = {Path(o.path).name: o for o in summary.outcomes}
    for name, (path, fragment, _) in broken.items():
        outcome = by_path[path.name]
        assert outcome.status == "rejected", (name, outcome)
        assert fragment.lower() in outcome.reason.lower(), (name, outcome.reason)
    assert by_path["good.fits"].status == "loaded"
    with fresh_database.engine.connect() as conn:
        files = conn.execute(text("SELECT f.uri, count(s.id) FROM ingest_file f LEFT JOIN spectrum s "
                                  "ON s.ingest_file_id = f.id GROUP BY 1")).all()  # fmt: skip
    counts = {Path(uri).name: n for uri, n in files}
    assert counts.pop("good.fits") == 1
    assert set(counts) == {p.name for p, _, _ in broken.values()} and set(counts.values()) == {0}
