"""The astropy-free FITS scan: same HDUs, cards and table cells as astropy, or it declines."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from skyledger.ingest.readers import rawfits
from skyledger.ingest.readers.fits_access import MAX_ARRAY_ELEMENTS, open_tables
from skyledger.ingest.readers.fits_tables import read_table
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.errors import ReaderError

SAMPLE = sample_data_dir()
# The bundled copies of /work/shared/data's SDSS DR18 and LEGA-C files.
REAL = sorted(SAMPLE.glob("*.fits"))
NGC3073 = SAMPLE / "NGC3073_SDSS_DR18.fits"


def scan(path: Path) -> rawfits.RawFits | None:
    return rawfits.scan(path, max_elements=MAX_ARRAY_ELEMENTS)


def assert_like_astropy(path: Path) -> int:
    """Every HDU's name, every keyword's value and every table cell equal astropy's."""
    raw = scan(path)
    assert raw is not None, f"{path.name} should be scanned"
    n_cards = 0
    with fits.open(path, memmap=False) as reference:
        assert len(raw) == len(reference)
        for hdu, ref in zip(raw, reference):
            assert hdu.name == ref.name.upper()
            assert raw[hdu.name] is raw[hdu.index]
            seen: set[str] = set()
            for card in ref.header.cards:
                key = card.keyword
                if key in ("COMMENT", "HISTORY", "", "END") or key in seen:
                    continue
                seen.add(key)
                want = ref.header[key]
                got = hdu.header[key.lower()]  # case-insensitive like astropy
                assert type(got) is type(want) and got == want, (path.name, hdu.name, key, got, want)
                n_cards += 1
            assert set(hdu.header) == seen
            info = ref.fileinfo()
            assert hdu.data_offset == info["datLoc"]
            if ref.header.get("XTENSION") == "BINTABLE" and ref.data is not None:
                table = read_table(path, hdu)
                assert table is not None and list(table.names) == list(ref.columns.names)
                for name in table.names:
                    got, want = table.column(name), ref.data[name]
                    if want.dtype.kind == "U":
                        got = np.char.rstrip(np.char.decode(got, "ascii"))
                        want = np.char.rstrip(want)
                    np.testing.assert_array_equal(got, want, err_msg=f"{path.name} {hdu.name} {name}")
    return n_cards


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_scan_equals_astropy_on_the_real_files(path):
    assert len(REAL) == 3
    assert assert_like_astropy(path) > 20


def test_scan_equals_astropy_on_synthetic_files_and_odd_values(tmp_path):
    from skyledger.testing.sdss_files import write_sdss_spectra

    for path in write_sdss_spectra(tmp_path / "synthetic", 2, seed=3, n_pix=300):
        assert assert_like_astropy(path) > 20

    header = fits.Header()
    header["QUOTE"] = "it's"
    header["LEADING"] = "  padded  "
    header["EMPTYSTR"] = ""
    header["NEGINT"] = -42
    header["BIGINT"] = 2**62
    header["EXP"] = 1.5e-17
    header["DEXP"] = 2.0
    header["FLAG"] = False
    header["lower"] = 3
    header.append(fits.Card("DUP", 1))
    header.append(fits.Card("DUP", 2))  # astropy returns the first; so must the scan
    path = tmp_path / "odd.fits"
    fits.HDUList([fits.PrimaryHDU(np.arange(6, dtype=">i2").reshape(2, 3), header=header)]).writeto(path)
    raw_bytes = bytearray(path.read_bytes())
    at = raw_bytes.index(b"DEXP    = ")
    raw_bytes[at : at + 80] = b"DEXP    =                 2.0D0 / Fortran exponent".ljust(80)
    path.write_bytes(bytes(raw_bytes))
    assert assert_like_astropy(path) >= 12
    raw = scan(path)
    assert raw is not None and raw[0].header["DEXP"] == 2.0 and raw[0].header["LEADING"] == "  padded"


def _edit(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    data = src.read_bytes()
    assert old in data
    dst.write_bytes(data.replace(old, new.ljust(len(old)), 1))
    return dst


def test_scan_declines_what_it_does_not_read_like_astropy(tmp_path):
    real = NGC3073
    assert scan(real) is not None
    data = real.read_bytes()

    gz = tmp_path / "a.fits.gz"
    gz.write_bytes(gzip.compress(data))
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(data[: len(data) - rawfits.BLOCK])
    ragged = tmp_path / "ragged.fits"
    ragged.write_bytes(data[:-100])
    trailing = tmp_path / "trailing.fits"
    trailing.write_bytes(data + b"\0" * rawfits.BLOCK)
    not_fits = tmp_path / "not.fits"
    not_fits.write_bytes(b"hello" * 1000)
    long_string = tmp_path / "continue.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("LONG", "x" * 100)]))]).writeto(long_string)
    hierarch = tmp_path / "hierarch.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("HIERARCH ESO DET CHIP", 1)]))]).writeto(hierarch)
    complex_value = _edit(real, tmp_path / "complex.fits", b"EXTEND  =                    T", b"CPLX    = (1.0, 2.0)")
    non_ascii = _edit(real, tmp_path / "latin1.fits", b"EXTEND  =                    T", "NAME    = 'caf\xe9'".encode("latin-1"))
    huge = _edit(real, tmp_path / "huge.fits", b"NAXIS2  =                 3848", b"NAXIS2  =            900000000")
    for path in (gz, truncated, ragged, trailing, not_fits, long_string, hierarch, complex_value, non_ascii, huge):
        assert scan(path) is None, path.name


@pytest.mark.parametrize("name", ["truncated", "huge", "not_fits"])
def test_declined_broken_files_are_still_rejected_with_astropys_checks(tmp_path, name):
    real = NGC3073
    data = real.read_bytes()
    path = tmp_path / f"{name}.fits"
    if name == "truncated":
        path.write_bytes(data[: len(data) - rawfits.BLOCK])
        expected = "truncated"
    elif name == "huge":
        _edit(real, path, b"NAXIS2  =                 3848", b"NAXIS2  =            900000000")
        expected = "sane limit"
    else:
        path.write_bytes(b"SIMPLE = nonsense" * 200)
        expected = "not a FITS file"
    with pytest.raises(ReaderError) as info:
        with open_tables(path):
            pass
    assert expected in str(info.value) and path.name in str(info.value)


def test_tables_numpy_cannot_decode_alone_come_from_astropy(tmp_path):
    # TZERO-scaled unsigned integers: the scan reads the headers, astropy the rows.
    path = tmp_path / "scaled.fits"
    col = fits.Column(name="u", format="J", bzero=2**31, array=np.array([0, 7, 2**32 - 1], dtype=np.uint32))
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([col], name="U")]).writeto(path)
    with open_tables(path) as hdul:
        assert isinstance(hdul, rawfits.RawFits)
        table = read_table(path, hdul["U"])
    assert table is not None
    np.testing.assert_array_equal(table.column("u"), [0, 7, 2**32 - 1])


def test_preloaded_bytes_are_scanned_instead_of_the_file(tmp_path):
    """The ingest scans the very bytes it checksummed: inside ``preloaded`` the file on
    disk is not read (here it holds other content), outside it is."""
    from skyledger.testing.sdss_files import write_sdss_spectra

    first, second = write_sdss_spectra(tmp_path, 2, seed=11, n_pix=200)
    hashed = first.read_bytes()
    with rawfits.preloaded(second, hashed):
        raw = scan(second)
        assert raw is not None
        assert raw[0].header["FIBERID"] == fits.getheader(first)["FIBERID"]
        other = scan(first)  # a path the block does not name is read from disk
        assert other is not None and other[0].header["FIBERID"] == raw[0].header["FIBERID"]
    assert scan(second)[0].header["FIBERID"] == fits.getheader(second)["FIBERID"] != raw[0].header["FIBERID"]
    # Bytes over the scan's size limit go to astropy (which reads the file), as files do.
    with rawfits.preloaded(second, hashed):
        assert rawfits.scan(second, max_elements=MAX_ARRAY_ELEMENTS, max_bytes=len(hashed) - 1) is None
