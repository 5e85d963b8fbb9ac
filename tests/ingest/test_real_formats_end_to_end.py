"""Real files of other surveys, as a new user drops them in: detected, ingested, fitted.

DESI, GTC/OSIRIS and GMOS files (1-D and IFU) go in by auto-detection with only what
the files cannot say as survey options, then `lines` and `abundances` run on them. What
is checked comes from the files and from the objects' known nature, never from a run of
the same code: the vacuum wavelength of the first pixel (header WCS, converted from
air), resolution present only where a file gives it, the errors-estimated mark carried
from the spectrum to its lines and abundances, and line ratios a green pea and a
Seyfert 2 must show.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from astropy.io import fits
from sqlalchemy import text

from skyledger.compute.abundances import AbundanceFlag
from skyledger.compute.fitting import LineFlag, SpectrumFlag
from skyledger.compute.framework.runner import process
from skyledger.compute.tasks.abundances import AbundancesTask
from skyledger.compute.tasks.lines import LinesTask
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.ingest.readers.base import air_to_vacuum
from skyledger.ingest.table_rows import SPECTRUM_FLAGS

DATA = Path(__file__).resolve().parents[1] / "data"
#: (survey, file, options the file cannot give)
FILES = (
    ("desi-edr", DATA / "desi" / "coadd-5-169-thru20210419.fits", {}),
    # The OSIRIS header's RA/DEC are the telescope pointing: the survey gives the target
    # (SDSS J121903.98+152608.5) and its redshift (LiMe example).
    ("gtc-osiris", DATA / "osiris" / "gp121903_osiris.fits", {"z": 0.19531, "ra": 184.766583, "dec": 15.435694}),
    ("gmos-nuclei", DATA / "gmos" / "ngc6300_nuc.fits", {}),
    # The GMOS cube has no usable sky WCS and no position: NGC 3081 from NED.
    ("gmos-ifu", DATA / "gmos" / "ngc3081_cube.fits", {"ra": 149.8731, "dec": -22.8263}),
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, fresh_database_module):
    db = fresh_database_module
    work = tmp_path_factory.mktemp("real-formats")
    readers = {}
    for survey, src, options in FILES:
        path = Path(shutil.copy(src, work / src.name))
        summary = ingest_paths(db, [path], survey=SurveySpec(name=survey, options=options), read_workers=0)
        (outcome,) = summary.outcomes
        assert outcome.status == "loaded", outcome.reason
        readers[survey] = outcome.reader
    process(db, LinesTask())
    process(db, AbundancesTask())
    return db, readers


def _rows(db, sql: str, **bind) -> list:
    with db.engine.connect() as conn:
        return conn.execute(text(sql), bind).mappings().all()


def test_each_file_is_detected_by_its_content(fitted):
    _, readers = fitted
    assert readers == {
        "desi-edr": "desi_coadd", "gtc-osiris": "fits_image_1d", "gmos-nuclei": "fits_image_1d", "gmos-ifu": "gmos_cube",
    }  # fmt: skip


def test_catalog_spectra_show_position_redshift_vacuum_coverage_and_resolution(fitted):
    db, _ = fitted
    rows = {r["survey"]: r for r in _rows(db, "SELECT DISTINCT ON (survey) * FROM catalog.spectra ORDER BY survey, spectrum_id")}
    counts = dict((r["survey"], r["n"]) for r in _rows(db, "SELECT survey, count(*) AS n FROM catalog.spectra GROUP BY 1"))
    assert counts == {"desi-edr": 1, "gtc-osiris": 1, "gmos-nuclei": 1, "gmos-ifu": 46}

    desi = rows["desi-edr"]
    fibermap = fits.getdata(DATA / "desi" / "coadd-5-169-thru20210419.fits", "FIBERMAP")
    target = fibermap[fibermap["TARGETID"] == int(desi["object_id"])][0]
    assert (desi["ra"], desi["dec"]) == pytest.approx((target["TARGET_RA"], target["TARGET_DEC"]), abs=1e-9)
    b_wave = fits.getdata(DATA / "desi" / "coadd-5-169-thru20210419.fits", "B_WAVELENGTH")
    assert desi["wave_min"] == pytest.approx(b_wave[0], abs=1e-6)  # DESI is in vacuum already
    assert 2000 < desi["resolution_median"] < 5500 and not desi["flags"] & SPECTRUM_FLAGS["AIR_TO_VACUUM"]

    osiris = rows["gtc-osiris"]
    header = fits.getheader(DATA / "osiris" / "gp121903_osiris.fits")
    first_air = header["CRVAL1"] + (1 - header.get("CRPIX1", 1.0)) * header["CDELT1"]
    assert osiris["wave_min"] == pytest.approx(air_to_vacuum(first_air), abs=1e-6)
    assert osiris["z"] == pytest.approx(0.19531) and osiris["ra"] == pytest.approx(184.766583)
    assert osiris["resolution_median"] is None
    for flag in ("AIR_TO_VACUUM", "ERROR_ESTIMATED", "NO_RESOLUTION"):
        assert osiris["flags"] & SPECTRUM_FLAGS[flag], flag

    gmos = rows["gmos-nuclei"]
    assert gmos["z"] == pytest.approx(fits.getheader(DATA / "gmos" / "ngc6300_nuc.fits")["REDSHIFT"])
    assert gmos["flags"] & SPECTRUM_FLAGS["ERROR_ESTIMATED"]

    ifu = rows["gmos-ifu"]
    assert ifu["z"] == pytest.approx(0.007976) and ifu["flags"] & SPECTRUM_FLAGS["AIR_TO_VACUUM"]
    assert abs(ifu["ra"] - 149.8731) * 3600 < 2 and abs(ifu["dec"] + 22.8263) * 3600 < 2  # 8 x 6 spaxels of 0.1"


def _lines(db, survey: str) -> dict[str, dict]:
    rows = _rows(db, "SELECT l.* FROM catalog.lines AS l JOIN catalog.spectra AS s USING (spectrum_id) "
                     "WHERE s.survey = :s AND l.source_task = 'lines'", s=survey)  # fmt: skip
    return {r["line"]: r for r in rows}


def test_the_green_pea_fits_with_estimated_errors_marked(fitted):
    db, _ = fitted
    lines = _lines(db, "gtc-osiris")
    for line in ("HB4861", "OIII5007", "HA6563"):
        assert lines[line]["snr"] > 10, line
        # The LiMe redshift, within a fraction of a 2 A pixel (velocities are relative to the
        # stellar fit, which a green pea's faint continuum leaves loose: compare line redshifts).
        assert abs(lines[line]["z"] - 0.19531) * 299_792.458 / 1.19531 < 150, (line, lines[line]["z"])
        assert lines[line]["flags"] & LineFlag.ERRORS_ESTIMATED
    # Green peas are extreme starbursts: [O III]5007/Hbeta ~ 4-8 (Cardamone et al. 2009), and
    # little dust (Halpha/Hbeta near the case-B 2.86).
    assert 3.0 < lines["OIII5007"]["flux"] / lines["HB4861"]["flux"] < 10.0
    assert 2.5 < lines["HA6563"]["flux"] / lines["HB4861"]["flux"] < 4.0
    (kin,) = _rows(db, "SELECT k.flags FROM catalog.stellar_kinematics AS k JOIN catalog.spectra AS s USING (spectrum_id) "
                       "WHERE s.survey = 'gtc-osiris'")  # fmt: skip
    assert kin["flags"] & SpectrumFlag.ERRORS_ESTIMATED
    abundances = _rows(db, "SELECT a.method, a.oh, a.flags FROM catalog.abundances AS a "
                           "JOIN catalog.spectra AS s USING (spectrum_id) WHERE s.survey = 'gtc-osiris'")  # fmt: skip
    assert abundances and all(a["flags"] & AbundanceFlag.ERRORS_ESTIMATED for a in abundances)


def test_the_seyfert_nucleus_and_the_ifu_cube_fit(fitted):
    db, _ = fitted
    nucleus = _lines(db, "gmos-nuclei")
    assert nucleus["HA6563"]["snr"] > 5 and nucleus["NII6584"]["snr"] > 5
    # A Seyfert 2: [N II]6584/Halpha above the star-forming locus (log > -0.3; Kewley et al. 2006).
    assert nucleus["NII6584"]["flux"] / nucleus["HA6563"]["flux"] > 0.5
    spaxels = _rows(
        db, "SELECT l.spectrum_id, l.line, l.flux, l.snr FROM catalog.lines AS l JOIN catalog.spectra AS s "
            "USING (spectrum_id) WHERE s.survey = 'gmos-ifu' AND l.line IN ('HA6563', 'NII6584')",
    )  # fmt: skip
    ha = {r["spectrum_id"]: r for r in spaxels if r["line"] == "HA6563"}
    nii = {r["spectrum_id"]: r for r in spaxels if r["line"] == "NII6584"}
    # The cube's ERR is the mean of its 6 exposures' variances (IMCOMBINE of their VAR
    # planes), about 6 times the variance of the combined flux: the fit's chi2/dof is ~0.07
    # and S/N comes out low. Halpha still stands out in the central half of the field.
    assert sum(r["snr"] is not None and r["snr"] > 5 for r in ha.values()) >= 20
    brightest = max(ha, key=lambda i: ha[i]["flux"] or 0.0)
    assert nii[brightest]["flux"] / ha[brightest]["flux"] > 0.5  # the Seyfert 2 nucleus


def test_a_spectrum_without_redshift_is_fitted_as_flagged(fitted):
    db, _ = fitted
    (desi,) = _rows(db, "SELECT k.flags, k.velocity FROM catalog.stellar_kinematics AS k "
                        "JOIN catalog.spectra AS s USING (spectrum_id) WHERE s.survey = 'desi-edr'")  # fmt: skip
    # DESI coadds carry no redshift (redrock files do; none ships with this sample).
    assert desi["flags"] & SpectrumFlag.BAD_REDSHIFT and desi["velocity"] is None
