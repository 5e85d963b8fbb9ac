"""Binary tables decoded by numpy against astropy: the same values, or astropy as the fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from skyledger.ingest.readers.base import normalise_flux_unit
from skyledger.schema.errors import ReaderError
from tests.ingest.test_readers import LEGAC, NGC3073, NGC3522, assert_rejects, modified_copy, read_all


# --------------------------------------------------------------------------- numpy table decoding


def _as_comparable(values: np.ndarray) -> np.ndarray:
    """Strings as stripped str (numpy gives bytes, astropy str), everything else as is."""
    values = np.asarray(values)
    if values.dtype.kind in "SU":
        return np.array([v.decode("ascii") if isinstance(v, bytes) else v for v in values.ravel()], dtype=object)
    return values


def assert_tables_decode_like_astropy(path: Path, *, expect_numpy: bool = True) -> int:
    """Every binary table of ``path``: read_table equals astropy's decoding, column by column."""
    from skyledger.ingest.readers.fits_access import open_fits
    from skyledger.ingest.readers.fits_tables import read_table

    n_tables = 0
    with open_fits(path) as hdul, fits.open(path, memmap=False) as reference:
        for hdu, ref in zip(hdul[1:], reference[1:]):
            if hdu.header.get("XTENSION") != "BINTABLE":
                continue
            n_tables += 1
            table = read_table(path, hdu)
            expected = ref.data
            assert table is not None and len(table) == len(expected)
            assert isinstance(table._array, np.ndarray) and (type(table._array) is np.ndarray) == expect_numpy
            assert list(table.names) == list(expected.columns.names)
            for name in table.names:
                got, want = _as_comparable(table.column(name)), _as_comparable(expected[name])
                if want.dtype == object:
                    want = np.array([w.rstrip() for w in want], dtype=object)
                    got = np.array([g.rstrip() for g in got], dtype=object)
                assert got.shape == want.shape, (hdu.name, name)
                assert got.dtype == want.dtype or got.dtype.kind == want.dtype.kind == "O", (hdu.name, name)
                np.testing.assert_array_equal(got, want, err_msg=f"{path.name} {hdu.name} {name}")
    return n_tables


@pytest.mark.parametrize("path", [NGC3073, NGC3522, LEGAC], ids=lambda p: p.name)
def test_numpy_table_decoding_equals_astropy_on_real_files(path):
    # The bundled copies of /work/shared/data's SDSS DR18 and LEGA-C files.
    assert assert_tables_decode_like_astropy(path) >= 1


def test_numpy_table_decoding_equals_astropy_on_synthetic_and_lite_files(tmp_path):
    from skyledger.testing.sdss_files import write_sdss_spectra

    synthetic = write_sdss_spectra(tmp_path / "synthetic", 3, seed=5, n_pix=500)
    lite = modified_copy(NGC3073, tmp_path / "lite.fits", lambda h: h.__delitem__(slice(4, None)))
    for path in [*synthetic, lite]:
        assert assert_tables_decode_like_astropy(path) >= 2

    # Logical, byte, complex and multi-element columns, and a gzipped file (astropy path).
    rows = np.zeros(4, dtype=[("ok", "?"), ("b", "u1"), ("c", ">c8"), ("v", ">f8", (3,)), ("s", "S5")])
    rows["ok"] = [True, False, True, False]
    rows["b"] = [0, 1, 254, 255]
    rows["c"] = [1 + 2j, 0, -1j, 3]
    rows["v"] = np.arange(12).reshape(4, 3) / 7
    rows["s"] = [b"a", b"bb ", b"", b"ccccc"]
    mixed = tmp_path / "mixed.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(rows, name="T")]).writeto(mixed)
    assert assert_tables_decode_like_astropy(mixed) == 1
    gz = tmp_path / "mixed.fits.gz"
    import gzip

    gz.write_bytes(gzip.compress(mixed.read_bytes()))
    assert assert_tables_decode_like_astropy(gz, expect_numpy=False) == 1

    # Scaled columns are decoded by astropy, values as astropy gives them.
    scaled = tmp_path / "scaled.fits"
    col = fits.Column(name="u", format="J", bzero=2**31, array=np.array([0, 2**32 - 1], dtype=np.uint32))
    fits.BinTableHDU.from_columns([col], name="U").writeto(scaled)
    assert assert_tables_decode_like_astropy(scaled, expect_numpy=False) == 1


def test_sdss_reads_identically_through_the_astropy_fallback(tmp_path):
    import gzip

    gz = tmp_path / "spec-0945-52652-0470.fits.gz"
    gz.write_bytes(gzip.compress(NGC3073.read_bytes()))
    _, (fast,) = read_all(NGC3073, "sdss")
    _, (slow,) = read_all(gz, "sdss")
    for name in ("wave", "flux", "ivar", "mask", "resolution"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
    assert (fast.object_id, fast.ra, fast.dec, fast.z, fast.meta) == (slow.object_id, slow.ra, slow.dec, slow.z, slow.meta)


def _with_tform(src: Path, dst: Path, tform: str) -> Path:
    data = bytearray(src.read_bytes())
    with fits.open(src) as hdul:
        start = hdul["COADD"].fileinfo()["hdrLoc"]
    card = data.index(b"TFORM1  = ", start)
    data[card : card + 80] = str(fits.Card("TFORM1", tform)).encode("ascii")
    dst.write_bytes(bytes(data))
    return dst


def test_broken_tform_is_rejected_naming_the_hdu_and_column(tmp_path):
    from skyledger.ingest.readers.fits_access import open_fits
    from skyledger.ingest.readers.fits_tables import read_table

    bad = _with_tform(NGC3073, tmp_path / "bad_tform.fits", "8Z")
    with pytest.raises(fits.VerifyError):  # astropy refuses it too
        with fits.open(bad) as hdul:
            _ = hdul["COADD"].data
    with open_fits(bad) as hdul, pytest.raises(ReaderError) as info:
        read_table(bad, hdul["COADD"])
    assert (info.value.hdu, info.value.column) == ("COADD", "flux")
    assert "TFORM1 = '8Z' is not a FITS binary-table format" in str(info.value)
    assert_rejects(bad, "sdss", "TFORM1", "COADD", "flux")
    # A valid code with the wrong width: the row no longer adds up to NAXIS1.
    wide = _with_tform(NGC3073, tmp_path / "wide_tform.fits", "2E")
    assert_rejects(wide, "sdss", "NAXIS1 = 32", "a TFORMn is wrong", "COADD")


def test_flux_unit_normalisation_is_memoised():
    from skyledger.ingest.readers.base import _normalise_unit_text

    _normalise_unit_text.cache_clear()
    for _ in range(3):
        assert normalise_flux_unit(" 1E-17 erg/cm^2/s/Ang ") == "1e-17 erg / (Angstrom s cm2)"
    info = _normalise_unit_text.cache_info()
    assert (info.misses, info.hits) == (1, 2)
