"""The emission-line catalogue reader (FITS, CSV, ECSV) and the shared line list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table
from skyledger.schema.linelist import LINE_IDS, LINES, air_to_vacuum, get_line
from skyledger.ingest.readers import READERS, detect_reader, get_reader
from skyledger.schema.errors import ReaderError

READER = get_reader("line_catalog")


def hii_regions() -> Table:
    """Three HII regions of two galaxies with realistic fluxes (1e-17 erg/s/cm2)."""
    t = Table()
    t["id"] = ["NGC0628_r1", "NGC0628_r2", "NGC1087_r1"]
    t["ra"] = [24.1739, 24.1702, 41.6049] * u.deg
    t["dec"] = [15.7836, 15.7791, -0.4988] * u.deg
    t["z"] = [0.00219, 0.00221, 0.00507]
    t["parent"] = ["NGC0628", "NGC0628", "NGC1087"]
    t["HB4861_FLUX"] = [35.0, 12.1, np.nan] * u.Unit("1e-17 erg / (s cm2)")
    t["HB4861_FLUX_ERR"] = [1.2, 0.9, np.nan] * u.Unit("1e-17 erg / (s cm2)")
    t["OIII5007_FLUX"] = [41.0, 5.5, 9.0] * u.Unit("1e-17 erg / (s cm2)")
    t["OIII5007_FLUX_ERR"] = [1.5, 0.8, 1.1] * u.Unit("1e-17 erg / (s cm2)")
    t["HA6563_FLUX"] = [101.0, 35.2, 60.3] * u.Unit("1e-17 erg / (s cm2)")
    t["HA6563_FLUX_ERR"] = [2.0, 1.1, 1.9] * u.Unit("1e-17 erg / (s cm2)")
    t["HA6563_VEL"] = [655.0, 662.0, 1521.0] * u.km / u.s
    t["HA6563_VEL_ERR"] = [2.0, 3.5, 2.8] * u.km / u.s
    t["HA6563_SIGMA"] = [22.0, 25.0, 30.0] * u.km / u.s
    t["NII6584_FLUX"] = [30.1, 12.0, 20.0] * u.Unit("1e-17 erg / (s cm2)")
    t["NII6584_FLUX_ERR"] = [1.0, 0.7, 1.0] * u.Unit("1e-17 erg / (s cm2)")
    t["XX1234_FLUX"] = [1.0, 2.0, 3.0]  # looks like a line, names none we know
    return t


def phangs_style() -> Table:
    """Column names as in the PHANGS-MUSE nebular catalogues (Groves et al. 2023)."""
    t = Table()
    t["gal_name"] = ["NGC0628", "NGC0628", "NGC0628"]
    t["region_ID"] = [1, 2, 3]
    t["cen_ra"] = [24.17, 24.18, 24.19]
    t["cen_dec"] = [15.78, 15.79, 15.80]
    t["HA6562_FLUX"] = [1.2e4, 3.1e3, 8.0e2]
    t["HA6562_FLUX_ERR"] = [60.0, 40.0, 30.0]
    t["NII6583_FLUX"] = [3.9e3, 1.1e3, np.nan]
    t["NII6583_FLUX_ERR"] = [30.0, 25.0, np.nan]
    t["OIII5006_FLUX"] = [2.2e3, 4.0e2, 1.1e2]
    t["OIII5006_FLUX_ERR"] = [20.0, 18.0, 15.0]
    t["HB4861_FLUX"] = [4.1e3, 1.0e3, 2.7e2]
    t["HB4861_FLUX_ERR"] = [35.0, 20.0, 14.0]
    t["SII6716_FLUX"] = [1.3e3, 5.0e2, 1.9e2]
    t["SII6716_FLUX_ERR"] = [20.0, 15.0, 12.0]
    t["SII6730_FLUX"] = [9.1e2, 3.5e2, 1.4e2]
    t["SII6730_FLUX_ERR"] = [18.0, 14.0, 11.0]
    return t


PHANGS_COLUMNS = {
    "region_ID": "id",
    "cen_ra": "ra",
    "cen_dec": "dec",
    "gal_name": "parent",
    "HA6562": "HA6563",
    "NII6583": "NII6584",
    "OIII5006": "OIII5007",
    "SII6730": "SII6731",
}


@pytest.fixture(params=["ecsv", "csv", "fits"])
def catalogue(request, tmp_path) -> Path:
    path = tmp_path / f"hii_regions.{request.param}"
    table = hii_regions()
    if request.param == "csv":
        table.write(path, format="ascii.csv")
    elif request.param == "ecsv":
        table.write(path, format="ascii.ecsv")
    else:
        table.write(path, format="fits")
    return path


def read(path: Path, options: dict | None = None):
    contents = READER.read(path, options or {})
    return contents, list(contents.spectra)


def test_line_catalogue_in_every_format(catalogue):
    assert detect_reader(catalogue).name == "line_catalog"
    contents, spectra = read(catalogue, {"dust_corrected": True})
    assert contents.dust_corrected is True
    assert [s.object_id for s in spectra] == ["NGC0628_r1", "NGC0628_r2", "NGC1087_r1"]
    r1 = spectra[0]
    assert r1.wave is None and r1.flux is None and r1.n_pix == 0
    assert (r1.ra, r1.dec, r1.z) == (pytest.approx(24.1739), pytest.approx(15.7836), pytest.approx(0.00219))
    lines = {m.line: m for m in r1.lines}
    assert set(lines) == {"HB4861", "OIII5007", "HA6563", "NII6584"}
    assert lines["HA6563"].flux == pytest.approx(101.0) and lines["HA6563"].flux_err == pytest.approx(2.0)
    assert lines["HA6563"].velocity == pytest.approx(655.0) and lines["HA6563"].sigma == pytest.approx(22.0)
    assert lines["HA6563"].sigma_err is None and lines["OIII5007"].velocity is None
    # NaN flux: the line was not measured, so it is absent (not an error).
    assert "HB4861" not in {m.line for m in spectra[2].lines}
    assert contents.meta["ignored_columns"] == ["XX1234_FLUX"]
    # Parents resolve inside the file: galaxies become position-less sources.
    sources = {s.object_id: s for s in contents.sources}
    assert sources["NGC0628_r1"].parent_object_id == "NGC0628"
    assert sources["NGC0628"].ra is None and sources["NGC1087"].parent_object_id is None
    if catalogue.suffix != ".csv":  # CSV carries no units
        assert r1.flux_unit == "1e-17 erg / (s cm2)"


def test_phangs_style_catalogue_with_column_mapping(tmp_path):
    path = tmp_path / "Nebulae_catalogue_v3.fits"
    phangs_style().write(path)
    assert detect_reader(path).name == "line_catalog"
    contents, spectra = read(path, {"columns": PHANGS_COLUMNS, "flux_unit": "1e-20 erg / (s cm2)"})
    assert [s.object_id for s in spectra] == ["1", "2", "3"]
    assert all(s.source_object_id == s.object_id for s in spectra)
    assert contents.sources[0].object_id == "NGC0628" and contents.sources[1].parent_object_id == "NGC0628"
    lines = {m.line: m for m in spectra[0].lines}
    assert set(lines) == {"HA6563", "NII6584", "OIII5007", "HB4861", "SII6716", "SII6731"}
    assert lines["SII6731"].flux == pytest.approx(910.0)
    assert "NII6584" not in {m.line for m in spectra[2].lines}
    assert spectra[0].flux_unit == "1e-20 erg / (s cm2)"
    assert contents.dust_corrected is False
    # The reverse spelling for scalar fields is understood too.
    _, again = read(path, {"columns": {"id": "region_ID", "ra": "cen_ra", "dec": "cen_dec", "HA6562": "HA6563"}})
    assert {m.line for m in again[0].lines} >= {"HA6563"}


def test_phangs_without_mapping_names_the_missing_column(tmp_path):
    path = tmp_path / "phangs.csv"
    phangs_style().write(path, format="ascii.csv")
    with pytest.raises(ReaderError, match="required column missing") as info:
        READER.read(path, {})
    # region_ID is a known spelling of the id; the centre columns are not.
    assert info.value.column == "ra" and str(path) in str(info.value)
    assert "options['columns']" in str(info.value)


def test_duplicate_objects_are_rejected(tmp_path):
    t = hii_regions()
    t["id"][2] = "NGC0628_r1"
    path = tmp_path / "dups.ecsv"
    t.write(path)
    with pytest.raises(ReaderError, match="duplicate object id.*NGC0628_r1") as info:
        READER.read(path, {})
    assert info.value.column == "id" and str(path) in str(info.value)


def test_negative_flux_error_is_rejected(tmp_path):
    t = hii_regions()
    t["OIII5007_FLUX_ERR"][1] = -0.8
    path = tmp_path / "negerr.csv"
    t.write(path, format="ascii.csv")
    with pytest.raises(ReaderError, match="negative flux err for object 'NGC0628_r2'") as info:
        READER.read(path, {})
    assert info.value.column == "OIII5007_FLUX_ERR"


def test_coordinates_out_of_range_are_rejected(tmp_path):
    t = hii_regions()
    t["ra"][0] = 400.0
    path = tmp_path / "badra.ecsv"
    t.write(path)
    with pytest.raises(ReaderError, match=r"ra of object 'NGC0628_r1' = 400.0 is outside \[0, 360\)"):
        READER.read(path, {})


def test_bad_mapping_and_junk_are_reported(tmp_path):
    path = tmp_path / "ok.ecsv"
    hii_regions().write(path)
    with pytest.raises(ReaderError, match="matches no column"):
        READER.read(path, {"columns": {"NOPE": "HA6563"}})
    junk = tmp_path / "junk.csv"
    junk.write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(ReaderError, match="not a FITS, CSV or ECSV"):
        READER.read(junk, {})
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,ra,dec,HA6563_FLUX\na,1,2,3\nb,1,2,3,4,5\n")
    with pytest.raises(ReaderError, match="cannot parse as CSV"):
        READER.read(ragged, {})


def test_sniff_wants_line_flux_columns(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("id,ra,dec,mag\na,1,2,3\n")
    assert not any(r.sniff(plain) for r in READERS.values())
    lower = tmp_path / "lower.csv"
    lower.write_text("id,ra,dec,ha6563_flux\na,1,2,3\n")  # case-insensitive
    assert READER.sniff(lower)
    _, (s,) = read(lower)
    assert s.lines[0].line == "HA6563" and s.lines[0].flux_err is None


# --------------------------------------------------------------------------- line list


def test_line_list_is_complete_and_consistent():
    assert len(LINE_IDS) == 26
    assert LINE_IDS[0] == "OII3726" and LINE_IDS[-1] == "SIII9532"
    airs = [LINES[i].air_wavelength for i in LINE_IDS]
    assert airs == sorted(airs)
    ha = get_line("ha6563")
    assert (ha.ion, ha.kind, ha.air_wavelength) == ("H I", "balmer", 6562.80)
    assert ha.vacuum_wavelength == pytest.approx(6564.61, abs=0.01)
    assert get_line("OIII4363").kind == "auroral" and get_line("HEII4686").kind == "helium"
    for line in LINES.values():
        assert line.vacuum_wavelength == pytest.approx(air_to_vacuum(line.air_wavelength))
        assert 0.9 < line.vacuum_wavelength - line.air_wavelength < 2.7
    with pytest.raises(KeyError, match="unknown emission line"):
        get_line("HA6562")


# --------------------------------------------------------------------------- kinematics columns


def kinematics_table() -> Table:
    """Per-line kinematics in mixed case, one velocity in m/s, one line renamed by mapping."""
    t = Table()
    t["id"] = ["r1", "r2", "r3"]
    t["ra"] = [10.0, 10.001, 10.002]
    t["dec"] = [-5.0, -5.0, -5.0]
    t["z"] = [0.01, 0.01, 0.01]
    t["Ha6562_flux"] = [50.0, np.nan, 20.0]
    t["Ha6562_flux_err"] = [1.0, 1.5, 0.8]  # r2: an error without a flux is dropped with it
    t["ha6562_vel"] = [12_000.0, -35_000.0, np.nan] * u.m / u.s
    t["HA6562_VEL_ERR"] = [2_000.0, 3_000.0, np.nan] * u.m / u.s
    t["HA6562_Sigma"] = [25.0, 30.0, np.nan] * u.km / u.s
    t["HA6562_SIGMA_ERR"] = [2.0, 2.5, np.nan] * u.km / u.s
    t["v_oiii"] = [14.0, np.nan, np.nan] * u.km / u.s  # mapped as a whole column
    t["OIII5007_VEL_ERR"] = [3.0, np.nan, np.nan] * u.km / u.s
    t["nii6584_vel"] = [9.0, np.nan, 4.0]  # velocity-only line, no unit: km/s
    return t


@pytest.mark.parametrize("fmt", ["ecsv", "fits"])
def test_velocity_and_sigma_columns_per_line(tmp_path, fmt):
    path = tmp_path / f"kin.{fmt}"
    kinematics_table().write(path, format="ascii.ecsv" if fmt == "ecsv" else "fits")
    assert detect_reader(path).name == "line_catalog"
    _, spectra = read(path, {"columns": {"HA6562": "HA6563", "v_oiii": "OIII5007_VEL"}})
    lines = [{m.line: m for m in s.lines} for s in spectra]
    ha = lines[0]["HA6563"]
    assert (ha.flux, ha.flux_err) == (pytest.approx(50.0), pytest.approx(1.0))
    assert (ha.velocity, ha.velocity_err) == (pytest.approx(12.0), pytest.approx(2.0))  # m/s -> km/s
    assert (ha.sigma, ha.sigma_err) == (pytest.approx(25.0), pytest.approx(2.0))
    oiii = lines[0]["OIII5007"]
    assert oiii.flux is None and oiii.velocity == pytest.approx(14.0) and oiii.velocity_err == pytest.approx(3.0)
    assert lines[0]["NII6584"].velocity == pytest.approx(9.0) and lines[0]["NII6584"].flux is None
    # r2: velocity but no flux -> kept with flux (and its error) None.
    ha2 = lines[1]["HA6563"]
    assert ha2.flux is None and ha2.flux_err is None and ha2.velocity == pytest.approx(-35.0)
    assert set(lines[1]) == {"HA6563"}  # OIII and NII are NaN everywhere in r2: absent
    # r3: a flux but no kinematics.
    ha3 = lines[2]["HA6563"]
    assert ha3.flux == pytest.approx(20.0) and ha3.velocity is None and ha3.velocity_err is None and ha3.sigma is None
    assert set(lines[2]) == {"HA6563", "NII6584"}


def test_velocity_only_catalogue_is_sniffed_and_read(tmp_path):
    path = tmp_path / "kinematics.csv"
    path.write_text("ID,RA,DEC,z,HA6563_VEL,HA6563_VEL_ERR\na,1.0,2.0,0.01,-40.5,3.0\nb,1.1,2.0,0.01,,\n")
    assert detect_reader(path).name == "line_catalog"
    _, (a, b) = read(path)
    (m,) = a.lines
    assert (m.line, m.flux, m.flux_err, m.velocity, m.velocity_err) == ("HA6563", None, None, -40.5, 3.0)
    assert b.lines == []


def test_error_columns_need_their_value_column(tmp_path):
    path = tmp_path / "orphan.csv"
    path.write_text("id,ra,dec,HA6563_FLUX,HA6563_VEL_ERR\na,1,2,3,4\n")
    with pytest.raises(ReaderError, match="column HA6563_VEL_ERR has no HA6563_VEL column beside it") as info:
        READER.read(path, {})
    assert info.value.column == "HA6563_VEL_ERR" and str(path) in str(info.value)
    only_err = tmp_path / "only_err.csv"
    only_err.write_text("id,ra,dec,HA6563_FLUX,HB4861_SIGMA_ERR\na,1,2,3,4\n")
    with pytest.raises(ReaderError, match=r"line HB4861 has only \['SIGMA_ERR'\] columns; it needs at least one of"):
        READER.read(only_err, {})
    bad_unit = tmp_path / "bad_unit.ecsv"
    t = kinematics_table()
    t["ha6562_vel"] = [1.0, 2.0, 3.0] * u.AA
    t.write(bad_unit)
    with pytest.raises(ReaderError, match="does not convert to km / s") as info:
        READER.read(bad_unit, {"columns": {"HA6562": "HA6563", "v_oiii": "OIII5007_VEL"}})
    assert info.value.column == "ha6562_vel"
