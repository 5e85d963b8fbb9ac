"""Reader conformance: every registered reader passes the same checks on a sample of its format.

A new reader is not done until it has a :class:`Sample` here (the registry test fails
otherwise). Each sample is a real file where one exists (``origin`` says where it comes
from) and a file written by :mod:`skyledger.testing` otherwise. The expectations are read
from the file itself with astropy (first wavelength, position), or are the instrument's
documented values (resolution ranges), never from the reader under test.

Checks, for every reader:

* detection by content picks it (the generic ``ifu_cube`` is configured, never detected);
* ids are unique and every spectrum names a source of the file;
* wavelengths are vacuum Angstrom, strictly increasing: pixel 0 equals the file's first
  wavelength after the air -> vacuum conversion when the file is in air;
* resolution is present within the instrument's range, or absent when the file has none;
* the flux unit is a flux density (per Angstrom, per frequency, per solid angle) or, for
  line catalogues, a line flux;
* position and redshift as the file (or the survey options) give them;
* broken input: a truncated or garbled copy, and a copy without the format's essential
  HDU, raise ReaderError naming the file; in a batch the broken file loads nothing and the
  good file beside it still loads.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from sqlalchemy import text

from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.readers import READERS, detect_reader, get_reader
from skyledger.ingest.readers.base import vacuum_to_air
from skyledger.ingest.records import ERROR_ESTIMATE_KEY
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.errors import ReaderError
from skyledger.testing.disk_model import DiskParams
from skyledger.testing.ifu_cubes import write_manga_cube, write_muse_cube
from skyledger.testing.velocity_maps import write_velocity_map
from tests.ingest import oned_files
from tests.ingest.test_ifu_formats import GMOS_GENERIC, write_nirspec_s3d

SAMPLE = sample_data_dir()
DATA = Path(__file__).resolve().parents[1] / "data"

#: units a reader's flux may have: flux densities per wavelength or frequency, per solid
#: angle or not, and (line catalogues) integrated line fluxes
_FLUX_UNITS = (
    u.erg / u.s / u.cm**2 / u.AA,
    u.erg / u.s / u.cm**2 / u.AA / u.arcsec**2,
    u.Jy,
    u.MJy / u.sr,
    u.erg / u.s / u.cm**2,
)


@dataclass(frozen=True)
class Sample:
    """A file of a reader's format and what the file itself says about it."""

    origin: str  # "real: <provenance>" or "synthetic: <generator>"
    make: Callable[[Path], Path]  # puts the file into a directory, returns its path
    object_id: str  # a spectrum the file must give
    n_spectra: int | None  # None: at least one (a cube's usable spaxels depend on its noise)
    kind: str = "fits"  # or "text": how to break it
    options: dict[str, Any] = field(default_factory=dict)
    detected: bool = True
    medium: str = "vacuum"  # of the file: 'air', 'vacuum', or 'none' (no pixels)
    first_wave: Callable[[Path], float] | None = None  # pixel 0 of object_id, in the file's medium
    resolution: tuple[float, float] | None = None  # documented R range; None: the file gives none
    #: (ra, dec) of object_id in degrees, or read from the file; None: the file gives none
    position: tuple[float, float] | Callable[[Path], tuple[float, float]] | None = None
    position_tol_arcsec: float = 0.5
    z: float | None = None
    error_estimated: bool = False
    essential_hdu: str | None = None  # removing it must be reported by name


def _copy(src: Path) -> Callable[[Path], Path]:
    def make(directory: Path) -> Path:
        return Path(shutil.copy(src, directory / src.name))

    return make


def _muse(directory: Path) -> Path:
    params = DiskParams(ra=201.365, dec=-43.019, v_sys=1500.0, snr=40.0)
    return write_muse_cube(directory / "DATACUBE_FINAL.fits", params, seed=3, n_x=6, n_y=5, n_wave=300)[0]


def _manga(directory: Path) -> Path:
    params = DiskParams(ra=184.6, dec=45.1, v_sys=5400.0, snr=10.0)
    return write_manga_cube(directory / "manga-8485-1901-LOGCUBE.fits", params, seed=5, n_x=7, n_y=7, n_wave=500)[0]


def _velocity_map(directory: Path) -> Path:
    params = DiskParams(ra=150.1, dec=2.2, v_sys=1200.0)
    return write_velocity_map(directory / "map.fits", params, seed=3)[0]


def _catalogue(directory: Path) -> Path:
    t = Table()
    t["id"] = ["NGC0628_r1", "NGC0628_r2"]
    t["ra"] = [24.1739, 24.1702] * u.deg
    t["dec"] = [15.7836, 15.7791] * u.deg
    t["z"] = [0.00219, 0.00221]
    t["HA6563_FLUX"] = [101.0, 35.2] * u.Unit("1e-17 erg / (s cm2)")
    t["HA6563_FLUX_ERR"] = [2.0, 1.1] * u.Unit("1e-17 erg / (s cm2)")
    t["NII6584_FLUX"] = [30.1, 12.0] * u.Unit("1e-17 erg / (s cm2)")
    t["NII6584_FLUX_ERR"] = [1.0, 0.7] * u.Unit("1e-17 erg / (s cm2)")
    path = directory / "hii_regions.ecsv"
    t.write(path, format="ascii.ecsv")
    return path


def _fibermap_position(path: Path, targetid: int) -> tuple[float, float]:
    fibermap = fits.getdata(path, "FIBERMAP")
    row = fibermap[fibermap["TARGETID"] == targetid][0]
    return float(row["TARGET_RA"]), float(row["TARGET_DEC"])


def _text_spectrum(directory: Path) -> Path:
    wave = np.linspace(4000.0, 7000.0, 3000)
    flux = 10.0 + np.random.default_rng(1).normal(0.0, 1.0, wave.size)
    return oned_files.text_spectrum(directory / "spectrum.txt", wave, flux, np.ones(wave.size))


def _iraf_wave(path: Path) -> float:
    header = fits.getheader(path)
    return float(header["CRVAL1"] + (1.0 - header.get("CRPIX1", 1.0)) * header.get("CDELT1", header.get("CD1_1")))


def _header_sexagesimal(path: Path) -> tuple[float, float]:
    from astropy.coordinates import SkyCoord

    header = fits.getheader(path)
    c = SkyCoord(header["RA"], header["DEC"], unit=(u.hourangle, u.deg))
    return float(c.ra.deg), float(c.dec.deg)


def _cube_first_wave(hdu: str | int) -> Callable[[Path], float]:
    """Pixel 0 of a cube's linear spectral axis, in Angstrom, from the header cards."""

    def first(path: Path) -> float:
        h = fits.getheader(path, hdu)
        step = h.get("CDELT3", h.get("CD3_3"))
        value = h["CRVAL3"] + (1.0 - h.get("CRPIX3", 1.0)) * step
        return float(value * u.Unit(h.get("CUNIT3", "Angstrom")).to(u.AA))

    return first


def _header_wave(hdu: str, key: str = "CRVAL3") -> Callable[[Path], float]:
    return lambda p: float(fits.getheader(p, hdu)[key])


SAMPLES: dict[str, Sample] = {
    "sdss": Sample(
        origin="real: SDSS DR18 spec-0945-52652-0470 (NGC 3073), bundled",
        make=_copy(SAMPLE / "NGC3073_SDSS_DR18.fits"),
        object_id="0945-52652-0470", n_spectra=1,
        first_wave=lambda p: float(10 ** fits.getdata(p, "COADD")["loglam"][0]),
        resolution=(1500.0, 3000.0),  # BOSS/SDSS spectrographs: R ~ 1500-2500 (Smee et al. 2013)
        position=(150.21698, 55.618834), z=0.0037627, essential_hdu="COADD",
    ),  # fmt: skip
    "desi_coadd": Sample(
        origin="real: DESI EDR coadd, tile 169 petal 5, 5 fibres (specutils test file), tests/data/desi",
        make=_copy(DATA / "desi" / "coadd-5-169-thru20210419.fits"),
        object_id="39633300968442591", n_spectra=1,  # the other 4 fibres are unassigned or broken
        first_wave=lambda p: float(fits.getdata(p, "B_WAVELENGTH")[0]),
        resolution=(2000.0, 5500.0),  # DESI B/R/Z arms together (DESI Collaboration 2022, instrument overview)
        position=lambda p: _fibermap_position(p, 39633300968442591), essential_hdu="R_IVAR",
    ),  # fmt: skip
    "eso_phase3": Sample(
        origin="real: LEGA-C DR3 M19_56670 (VIMOS), bundled",
        make=_copy(SAMPLE / "legac_M19_56670_v3.0.fits"),
        object_id="M19_56670", n_spectra=1, options={"z": 0.6686}, medium="air",
        first_wave=lambda p: float(fits.getdata(p, 1)["WAVE"][0][0]),
        resolution=(2000.0, 3500.0),  # VIMOS HR-red, R ~ 2500 (SPEC_RES)
        position=(149.803879, 1.795453), z=0.6686, essential_hdu="PHASE3SPECTRA",
    ),  # fmt: skip
    "sami_cube": Sample(
        origin="real: SAMI DR3 sectors-binned cube of CATID 209807, red arm (spaxelsleuth test data), bundled",
        make=_copy(SAMPLE / "209807_A_sectors_red.fits.gz"),
        object_id="209807#bin1#red", n_spectra=39, medium="air", first_wave=_cube_first_wave(0),
        resolution=(3800.0, 4800.0),  # 1000R grating, R = 4304 (Croom et al. 2021)
        z=0.05386, essential_hdu="VARIANCE",
    ),  # fmt: skip
    "gmos_cube": Sample(
        origin="real: Gemini GMOS IFU cube of NGC 3081 (ifscube examples), tests/data/gmos",
        make=_copy(DATA / "gmos" / "ngc3081_cube.fits"),
        object_id="NGC 3081#2_0", n_spectra=46, medium="air", first_wave=_cube_first_wave("SCI"),
        resolution=None, z=0.007976, essential_hdu="ERR",  # GMOS R depends on the grating: a survey option
    ),  # fmt: skip
    "nirspec_s3d": Sample(
        origin="synthetic: a JWST NIRSpec IFU s3d cube from the IFUCubeModel layout (no public file installable)",
        make=lambda d: write_nirspec_s3d(d / "jw01234-o001_t001_nirspec_g235h-f170lp_s3d.fits"), object_id="",
        n_spectra=None, first_wave=_cube_first_wave("SCI"),
        resolution=(2000.0, 3700.0),  # G235H, nominal R ~ 2700 (JWST user documentation)
        essential_hdu="ERR",
    ),  # fmt: skip
    "ifu_cube": Sample(
        origin="real: the GMOS cube above, every role given by survey options (never detected)",
        make=_copy(DATA / "gmos" / "ngc3081_cube.fits"), options=GMOS_GENERIC, detected=False,
        object_id="", n_spectra=46, medium="air", first_wave=_cube_first_wave("SCI"), essential_hdu="ERR",
    ),  # fmt: skip
    "manga_rss": Sample(
        origin="real: MaNGA DAP test spectra (8 spaxels), bundled",
        make=_copy(SAMPLE / "MaNGA_test_spectra.fits.gz"),
        object_id="MaNGA_test_spectra#0", n_spectra=8,
        first_wave=lambda p: float(fits.getdata(p, "WAVE")[0]),
        resolution=(1200.0, 2800.0),  # BOSS spectrographs behind MaNGA (Yan et al. 2016)
        z=0.0495282, essential_hdu="IVAR",
    ),  # fmt: skip
    "muse_cube": Sample(
        origin="synthetic: skyledger.testing.ifu_cubes.write_muse_cube (no public cube small enough)",
        make=_muse, object_id="", n_spectra=None, medium="air",
        first_wave=_header_wave("DATA"),
        resolution=(1600.0, 3600.0),  # MUSE WFM, Bacon et al. 2017
        essential_hdu="STAT",
    ),  # fmt: skip
    "manga_cube": Sample(
        origin="synthetic: skyledger.testing.ifu_cubes.write_manga_cube",
        make=_manga, object_id="", n_spectra=None,
        first_wave=lambda p: float(fits.getdata(p, "WAVE")[0]),
        resolution=(1200.0, 2800.0), essential_hdu="IVAR",
    ),  # fmt: skip
    "velocity_map": Sample(
        origin="synthetic: skyledger.testing.velocity_maps.write_velocity_map",
        make=_velocity_map, object_id="", n_spectra=None, medium="none",
    ),  # fmt: skip
    "fits_image_1d": Sample(
        origin="real: GTC/OSIRIS long-slit spectrum of a green pea (LiMe examples), tests/data/osiris",
        make=_copy(DATA / "osiris" / "gp121903_osiris.fits"),
        object_id="SDSS_J121903.98+152608.5", n_spectra=1, options={"z": 0.19531}, medium="air",
        first_wave=_iraf_wave, resolution=None, position=_header_sexagesimal, z=0.19531, error_estimated=True,
    ),  # fmt: skip
    "text_spectrum": Sample(
        origin="synthetic: a 'wave flux err' text file as LiMe and papers publish them",
        make=_text_spectrum, object_id="spectrum", n_spectra=1, kind="text",
        options={"flux_unit": "1e-17 erg/s/cm2/Angstrom"}, first_wave=lambda p: 4000.0,
    ),  # fmt: skip
    "starlight": Sample(
        origin="synthetic: a STARLIGHT/PyCASSO-style table (l_obs, f_obs, f_var, f_flag, f_syn), rest frame",
        make=lambda d: oned_files.starlight_table(d / "starlight.fits"), object_id="K0001", n_spectra=1,
        medium="air", first_wave=lambda p: float(fits.getdata(p, "SPECTRA")["l_obs"][0]) * 1.05,
        position=(150.25, 2.5), z=0.05, essential_hdu="SPECTRA",
    ),  # fmt: skip
    "nirspec_x1d": Sample(
        origin="synthetic: JWST NIRSpec MSA x1d (two EXTRACT1D spectra), from the MultiSpecModel layout",
        make=lambda d: oned_files.nirspec_x1d(d / "jw01234_x1d.fits"), object_id="1001", n_spectra=2,
        first_wave=lambda p: float(fits.getdata(p, "EXTRACT1D")["WAVELENGTH"][0]) * 1e4,
        resolution=(700.0, 1500.0),  # G395M, nominal R ~ 1000 (JWST user documentation)
        position=(53.1601, -27.7802), essential_hdu="EXTRACT1D",
    ),  # fmt: skip
    "line_catalog": Sample(
        origin="synthetic: two HII regions with PHANGS-like fluxes",
        make=_catalogue, object_id="NGC0628_r1", n_spectra=2, kind="text", medium="none",
        position=(24.1739, 15.7836), z=0.00219,
    ),  # fmt: skip
}


def test_every_registered_reader_has_a_conformance_sample():
    assert set(SAMPLES) == set(READERS), "a reader needs a Sample in this file; SAMPLES and READERS differ"


@pytest.fixture(params=sorted(SAMPLES), ids=str)
def case(request, tmp_path) -> tuple[str, Sample, Path]:
    sample = SAMPLES[request.param]
    return request.param, sample, sample.make(tmp_path)


def _read(name: str, sample: Sample, path: Path):
    contents = get_reader(name).read(path, sample.options)
    return contents, list(contents.spectra)


def test_detection_by_content(case, tmp_path):
    name, sample, path = case
    # A neutral file name: detection must look at the content only.
    renamed = path.rename(path.with_name("upload" + ("".join(path.suffixes[-1:]) if sample.kind == "text" else ".fits")))
    if path.name.endswith(".gz"):
        renamed = renamed.rename(renamed.with_name(renamed.name + ".gz"))
    found = None
    try:
        found = detect_reader(renamed).name
    except ReaderError:
        pass
    if sample.detected:
        assert found == name
    else:
        assert found != name


def test_detection_by_content_fits_image_1d_multispec(tmp_path):
    """The IRAF multispec variants of fits_image_1d (one aperture, apertures with apall bands)
    are found by their content under a neutral name, and by no other reader."""
    one = oned_files.multispec_image(tmp_path / "a.ms.fits", np.ones(300), ["1 1 0 4000. 2. 300 0. 1. 2."])
    specs = ["1 1 0 4000. 2. 300 0. 1. 2.", "2 2 2 4000. 2. 300 0. 3. 4. 1. 0. 1 2 1. 300. 4300. 299."]
    two = oned_files.multispec_image(tmp_path / "b.ms.fits", np.ones((2, 2, 300)), specs, WCSDIM=3,
                                     BANDID1="spectrum", BANDID2="sigma")  # fmt: skip
    for path in (one, two):
        renamed = path.rename(path.with_name(f"upload_{path.name[0]}.fits"))
        assert detect_reader(renamed).name == "fits_image_1d"
        assert [n for n, r in READERS.items() if r.sniff(renamed)] == ["fits_image_1d"]
        contents = get_reader("fits_image_1d").read(renamed, {})
        assert all(np.all(np.diff(s.wave) > 0) for s in contents.spectra)

def test_ids_wavelengths_resolution_units_positions(case):
    name, sample, path = case
    contents, spectra = _read(name, sample, path)
    assert contents.reader == name
    assert len(spectra) == sample.n_spectra if sample.n_spectra is not None else spectra
    ids = [s.object_id for s in spectra]
    assert len(set(ids)) == len(ids)
    sources = {s.object_id for s in contents.sources}
    assert all(s.source_object_id in sources for s in spectra)
    pixel_spectra = [s for s in spectra if s.n_pix]
    for s in pixel_spectra:
        assert s.wave.dtype == np.float64 and np.all(np.diff(s.wave) > 0)
        assert 500.0 < s.wave[0] and s.wave[-1] < 300_000.0  # Angstrom, UV to mid-IR
        assert s.flux.shape == s.ivar.shape == s.wave.shape and np.all(s.ivar >= 0)
        estimated = bool(s.meta.get(ERROR_ESTIMATE_KEY))
        assert estimated == sample.error_estimated
    for s in spectra:
        unit = s.flux_unit or (s.lines and contents.meta.get("flux_unit"))
        if s.n_pix:
            assert unit, f"{s.object_id}: no flux unit"
        if unit:
            parsed = u.Unit(unit)
            assert any(parsed.is_equivalent(ok) for ok in _FLUX_UNITS), unit
    if sample.medium == "none":
        assert not pixel_spectra
        chosen = next(s for s in spectra if s.object_id == sample.object_id) if sample.object_id else None
    else:
        chosen = next(s for s in spectra if s.object_id == sample.object_id) if sample.object_id else pixel_spectra[0]
        # The chosen spectrum only: a real file may hold a deliberately broken one
        # (MaNGA test spectrum 5 has a nonsense SRES ramp).
        if sample.resolution is None:
            assert chosen.resolution is None or np.all(np.isnan(chosen.resolution))
        else:
            lo, hi = sample.resolution
            r = chosen.resolution[np.isfinite(chosen.resolution)]
            # Half the pixels at least: MaNGA's SRES is 0 (unknown) beyond the covered range.
            assert r.size > 0.5 * chosen.n_pix and lo <= np.median(r) <= hi and np.all((r > 0.5 * lo) & (r < 2 * hi))
        in_file = sample.first_wave(path)
        medium = chosen.meta.get("wavelength_medium_in_file") or contents.meta.get("wavelength_medium_in_file")
        if sample.medium == "air":
            assert medium == "air"
            assert chosen.wave[0] > in_file and vacuum_to_air(chosen.wave[:1])[0] == pytest.approx(in_file, abs=1e-3)
        else:
            assert medium in (None, "vacuum")
            assert chosen.wave[0] == pytest.approx(in_file, abs=1e-6 * in_file)
    if chosen is not None:
        if sample.position is None:
            pass
        else:
            ra, dec = sample.position(path) if callable(sample.position) else sample.position
            assert chosen.ra is not None
            sep = np.hypot((chosen.ra - ra) * np.cos(np.radians(dec)), chosen.dec - dec) * 3600.0
            assert sep < sample.position_tol_arcsec
        if sample.z is not None:
            assert chosen.z == pytest.approx(sample.z, abs=1e-6)


def _break(sample: Sample, path: Path, out: Path) -> Path:
    if sample.kind == "text":
        lines = path.read_text().splitlines()
        data = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
        lines[data[-1]] = "12.5 not-a-number ???"
        out.write_text("\n".join(lines) + "\n")
        return out
    raw = path.read_bytes()
    out.write_bytes(raw[: len(raw) // 2])
    return out


def test_truncated_or_garbled_copy_is_rejected_naming_the_file(case, tmp_path):
    name, sample, path = case
    broken = _break(sample, path, tmp_path / ("broken_" + path.name))
    with pytest.raises(ReaderError) as info:
        _read(name, sample, broken)
    assert str(broken) in str(info.value)


@pytest.mark.parametrize("name", sorted(n for n, s in SAMPLES.items() if s.essential_hdu), ids=str)
def test_missing_essential_hdu_is_named(name, tmp_path):
    sample = SAMPLES[name]
    path = sample.make(tmp_path)
    out = tmp_path / ("no_hdu_" + path.name)
    with fits.open(path) as hdul:
        assert sample.essential_hdu in [h.name for h in hdul]
        fits.HDUList([h.copy() for h in hdul if h.name != sample.essential_hdu]).writeto(out)
    with pytest.raises(ReaderError) as info:
        _read(name, sample, out)
    assert str(out) in str(info.value)
    assert sample.essential_hdu in str(info.value) or info.value.hdu is not None


def test_a_broken_file_loads_nothing_and_the_batch_goes_on(case, tmp_path, fresh_database):
    name, sample, path = case
    broken = _break(sample, path, tmp_path / ("broken_" + path.name))
    from skyledger.ingest.config import SurveySpec

    survey = SurveySpec(name=f"conformance-{name}", reader=name, options=sample.options)
    summary = ingest_paths(fresh_database, [broken, path], survey=survey, read_workers=0)
    status = {Path(o.path).name: o for o in summary.outcomes}
    assert status[broken.name].status == "rejected" and status[broken.name].reason
    assert status[path.name].status == "loaded"
    with fresh_database.engine.connect() as conn:
        per_file = dict(conn.execute(text(
            "SELECT f.uri, count(sp.id) FROM ingest_file f LEFT JOIN spectrum sp ON sp.ingest_file_id = f.id "
            "GROUP BY f.uri"
        )).all())  # fmt: skip
    assert not any(uri.endswith(broken.name) and n for uri, n in per_file.items())
    assert any(uri.endswith(path.name) for uri in per_file)
