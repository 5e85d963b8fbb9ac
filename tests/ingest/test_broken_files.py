"""The 1-D survey readers on broken input: truncated, damaged and absurd files are rejected
with the reason, and a gzip stream is checked to its end."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from skyledger.ingest.readers import detect_reader
from skyledger.ingest.readers.fits_access import MAX_ARRAY_ELEMENTS
from tests.ingest.test_readers import LEGAC, MANGA, NGC3073, assert_rejects, modified_copy, read_all


# --------------------------------------------------------------------------- broken input


def test_not_fits(tmp_path):
    path = tmp_path / "spec-0001-50000-0001.fits"
    path.write_text("SIMPLE? no, a text file\n")
    for name in ("sdss", "eso_phase3", "manga_rss", "muse_cube", "manga_cube"):
        assert_rejects(path, name, "not a FITS file")


@pytest.mark.parametrize(("src", "reader"), [(NGC3073, "sdss"), (LEGAC, "eso_phase3")])
def test_truncated_fits(tmp_path, src, reader):
    cut = tmp_path / src.name
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_rejects(cut, reader, "truncated")


def test_truncated_at_a_block_boundary(tmp_path):
    cut = tmp_path / "legac_cut.fits"
    data = LEGAC.read_bytes()
    cut.write_bytes(data[: 2880 * 30])
    assert_rejects(cut, "eso_phase3", "truncated", "PHASE3SPECTRA")


def test_truncated_gzip(tmp_path):
    cut = tmp_path / "manga_cut.fits.gz"
    data = MANGA.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert_rejects(cut, "manga_rss", "")


def test_missing_hdu(tmp_path):
    path = modified_copy(NGC3073, tmp_path / "no_specobj.fits", lambda h: h.__delitem__("SPECOBJ"))
    err = assert_rejects(path, "sdss", "required HDU missing")
    assert err.hdu == "SPECOBJ/SPALL"
    path = modified_copy(MANGA, tmp_path / "no_ivar.fits", lambda h: h.__delitem__("IVAR"))
    assert assert_rejects(path, "manga_rss", "required HDU missing").hdu == "IVAR"


def test_missing_column(tmp_path):
    def drop_ivar(hdul):
        hdul["COADD"] = fits.BinTableHDU(
            fits.FITS_rec.from_columns([c for c in hdul["COADD"].columns if c.name != "ivar"]), name="COADD"
        )

    path = modified_copy(NGC3073, tmp_path / "no_ivar.fits", drop_ivar)
    err = assert_rejects(path, "sdss", "required column missing")
    assert err.hdu == "COADD" and err.column == "ivar"

    def drop_err(hdul):
        hdul[1] = fits.BinTableHDU(
            fits.FITS_rec.from_columns([c for c in hdul[1].columns if c.name != "ERR"]), header=hdul[1].header
        )

    path = modified_copy(LEGAC, tmp_path / "no_err.fits", drop_err)
    assert assert_rejects(path, "eso_phase3", "required column missing").column == "ERR"


def test_wrong_shapes(tmp_path):
    def shrink(hdul):
        hdul["IVAR"].data = hdul["IVAR"].data[:, :-10].copy()

    path = modified_copy(MANGA, tmp_path / "short_ivar.fits", shrink)
    assert assert_rejects(path, "manga_rss", "differs from FLUX").hdu == "IVAR"

    def short_wave(hdul):
        hdul["WAVE"].data = hdul["WAVE"].data[:-1].copy()

    path = modified_copy(MANGA, tmp_path / "short_wave.fits", short_wave)
    assert_rejects(path, "manga_rss", "4563 pixels, WAVE has 4562")


def test_nan_flux_with_positive_ivar(tmp_path):
    def poison(hdul):
        hdul["COADD"].data["flux"][100] = np.nan

    path = modified_copy(NGC3073, tmp_path / "nan_flux.fits", poison)
    assert_rejects(path, "sdss", "NaN/inf", "ivar > 0")


def test_negative_ivar(tmp_path):
    def poison(hdul):
        hdul["COADD"].data["ivar"][10] = -1.0

    path = modified_copy(NGC3073, tmp_path / "neg_ivar.fits", poison)
    assert_rejects(path, "sdss", "negative")

    def poison_manga(hdul):
        hdul["IVAR"].data[3, 50] = -2.0

    path = modified_copy(MANGA, tmp_path / "neg_ivar_manga.fits", poison_manga)
    assert_rejects(path, "manga_rss", "ivar has 1 negative")


def test_non_monotonic_wavelength(tmp_path):
    def swap(hdul):
        wave = hdul[1].data["WAVE"][0]
        wave[200], wave[201] = wave[201], wave[200]

    path = modified_copy(LEGAC, tmp_path / "swapped.fits", swap)
    assert_rejects(path, "eso_phase3", "not strictly increasing", "pixel 201")

    def swap_manga(hdul):
        hdul["WAVE"].data[[10, 11]] = hdul["WAVE"].data[[11, 10]]

    path = modified_copy(MANGA, tmp_path / "swapped_manga.fits", swap_manga)
    assert_rejects(path, "manga_rss", "not strictly increasing")


def _raw_header(cards: dict) -> bytes:
    text = "".join(str(fits.Card(k, v)) for k, v in cards.items()) + "END".ljust(80)
    return text.encode("ascii").ljust(2880 * (len(text) // 2880 + 1), b" ")


def test_absurd_size_header_is_rejected_before_allocating(tmp_path):
    path = tmp_path / "huge.fits"
    primary = _raw_header({"SIMPLE": True, "BITPIX": 8, "NAXIS": 0, "EXTEND": True})
    flux = _raw_header(
        {
            "XTENSION": "IMAGE",
            "BITPIX": -32,
            "NAXIS": 2,
            "NAXIS1": 100_000,
            "NAXIS2": 100_000,
            "PCOUNT": 0,
            "GCOUNT": 1,
            "EXTNAME": "FLUX",
        }
    )
    path.write_bytes(primary + flux + b"\0" * 2880)
    assert 100_000 * 100_000 > MAX_ARRAY_ELEMENTS
    err = assert_rejects(path, "manga_rss", "sane limit")
    assert err.hdu == "FLUX"


def test_header_claiming_more_data_than_the_file_holds(tmp_path):
    path = tmp_path / "claims.fits"
    primary = _raw_header({"SIMPLE": True, "BITPIX": 8, "NAXIS": 0, "EXTEND": True})
    table = _raw_header(
        {
            "XTENSION": "BINTABLE",
            "BITPIX": 8,
            "NAXIS": 2,
            "NAXIS1": 32,
            "NAXIS2": 10_000_000,
            "PCOUNT": 0,
            "GCOUNT": 1,
            "TFIELDS": 1,
            "TTYPE1": "flux",
            "TFORM1": "8E",
            "EXTNAME": "COADD",
        }
    )
    path.write_bytes(primary + table + b"\0" * 2880)
    assert_rejects(path, "sdss", "truncated", "COADD")


def test_coordinates_out_of_range(tmp_path):
    def move(hdul):
        hdul["SPECOBJ"].data["PLUG_DEC"][0] = 95.0

    path = modified_copy(NGC3073, tmp_path / "dec95.fits", move)
    assert_rejects(path, "sdss", "dec of", "95.0", "outside [-90, 90]")

    def move_ra(hdul):
        hdul[1].header["RA"] = -3.0

    path = modified_copy(LEGAC, tmp_path / "ra_neg.fits", move_ra)
    assert_rejects(path, "eso_phase3", "ra of", "outside [0, 360)")


def test_boss_spall_metadata_hdu_is_accepted(tmp_path):
    def rename(hdul):
        hdul["SPECOBJ"].name = "SPALL"
        del hdul[4:]

    path = modified_copy(NGC3073, tmp_path / "spec-boss.fits", rename)
    assert detect_reader(path).name == "sdss"
    _, (spec,) = read_all(path, "sdss")
    assert spec.object_id == "0945-52652-0470" and spec.z == pytest.approx(0.0037626564, rel=1e-6)


# --------------------------------------------------------------------------- gzip checked to its end


def test_gzip_check_reads_to_the_trailer_in_pieces():
    import gzip

    from skyledger.ingest.inflate import GzipCheck, InflateError, InputLimits

    data = MANGA.read_bytes()
    inflated = len(gzip.decompress(data))

    def check(blob: bytes, pieces: int = 7, limits: InputLimits = InputLimits()) -> int | str:
        c = GzipCheck(len(blob), limits)
        step = len(blob) // pieces + 1
        try:
            for i in range(0, len(blob), step):
                c.feed(blob[i : i + step])
            return c.finish()
        except InflateError as err:
            return err.reason

    assert check(data) == check(data, pieces=1) == inflated
    assert check(data + b"\0" * 4000) == inflated  # zero padding, as Python's gzip accepts
    assert check(data + gzip.compress(b"more")) == inflated + 4  # a second member
    assert "truncated gzip file" in check(data[:-4])  # only the length trailer missing
    assert "truncated gzip file" in check(data[: len(data) // 2])
    assert "not gzip data" in check(data + b"trailing junk")
    flipped = bytearray(data)
    flipped[-8] ^= 1  # the CRC
    assert "incorrect data check" in check(bytes(flipped))
    tight = InputLimits(max_inflate_ratio=1.2, max_inflated_bytes=1 << 30, free_inflated_bytes=0)
    assert "gzip bomb" in check(data, limits=tight)
    assert "gzip bomb" in check(data, limits=InputLimits(max_inflated_bytes=inflated - 1))
    assert InputLimits().inflated_limit(1000) == 64 << 20  # small files: the free allowance
    assert InputLimits().inflated_limit(1 << 30) == 4 << 30  # the absolute cap
