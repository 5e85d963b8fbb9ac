"""Broken survey files, made from the real sample files: one builder per kind of damage.

Each builder writes a file under a directory and returns (path, expected fragment of the
rejection reason). ``FORCED_READER`` names the reader for files whose damage leaves
nothing to detect the format by. The loader tests use them to check that nothing of a bad file
reaches the database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

from skyledger.ingest.sample_data import sample_data_dir

SAMPLE = sample_data_dir()
NGC3073 = SAMPLE / "NGC3073_SDSS_DR18.fits"
LEGAC = SAMPLE / "legac_M19_56670_v3.0.fits"
MANGA = SAMPLE / "MaNGA_test_spectra.fits.gz"

Builder = Callable[[Path], tuple[Path, str]]


def modified_copy(src: Path, dst: Path, edit: Callable[[fits.HDUList], None]) -> Path:
    with fits.open(src, memmap=False) as hdul:
        edit(hdul)
        hdul.writeto(dst, overwrite=True)
    return dst


def _raw_header(cards: dict) -> bytes:
    text = "".join(str(fits.Card(k, v)) for k, v in cards.items()) + "END".ljust(80)
    return text.encode("ascii").ljust(2880 * (len(text) // 2880 + 1), b" ")


def not_fits(d: Path) -> tuple[Path, str]:
    p = d / "spec-0001-50000-0001.fits"
    p.write_text("this is not a FITS file\n")
    return p, "no reader recognises this file: not a FITS file: the content is text"


def empty(d: Path) -> tuple[Path, str]:
    p = d / "spec-0001-50000-0002.fits"
    p.write_bytes(b"")
    return p, "the file is empty (0 bytes)"


def truncated(d: Path) -> tuple[Path, str]:
    p = d / "spec-0945-52652-0470-cut.fits"
    data = NGC3073.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p, "truncated"


def truncated_mid_block(d: Path) -> tuple[Path, str]:
    p = d / "spec-0945-52652-0470-cut-mid-block.fits"
    data = NGC3073.read_bytes()
    p.write_bytes(data[: len(data) // 2 + 1000])
    return p, "in the middle of a 2880-byte block"


def lying_size(d: Path) -> tuple[Path, str]:
    """The last HDU's header claims more rows than the file holds; the file is otherwise whole."""
    p = d / "spec-0945-52652-0470-lying.fits"
    data = bytearray(NGC3073.read_bytes())
    with fits.open(NGC3073) as hdul:
        info, rows = hdul[-1].fileinfo(), hdul[-1].header["NAXIS2"]
    for i in range(info["hdrLoc"], info["datLoc"], 80):
        if data[i : i + 8] == b"NAXIS2  ":
            data[i : i + 80] = str(fits.Card("NAXIS2", rows + 1000)).encode()
    p.write_bytes(bytes(data))
    return p, "overstates the data size"


def truncated_gzip(d: Path) -> tuple[Path, str]:
    """A gzip file without its last bytes (CRC and length trailer): astropy read it whole."""
    p = d / "manga-cut.fits.gz"
    p.write_bytes(MANGA.read_bytes()[:-6])
    return p, "truncated gzip file"


def negative_error(d: Path) -> tuple[Path, str]:
    def poison(h):
        h[1].data["ERR"][0][300] = -0.5

    return modified_copy(LEGAC, d / "legac-negative-err.fits", poison), "ERR has 1 negative values"


def gzip_bomb(d: Path, inflated_mib: int = 2700) -> Path:
    """A valid gzip file of a few MB that inflates to ``inflated_mib`` MiB: a small FITS
    file followed by gzip members of zeros, made without writing the zeros anywhere
    (2.7 MB -> 2.7 GiB by default)."""
    import gzip

    p = d / "bomb.fits.gz"
    member = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    with open(p, "wb") as fh:
        fh.write(gzip.compress(gzip.decompress(MANGA.read_bytes()), mtime=0))
        for _ in range(inflated_mib):
            fh.write(member)
    return p


def missing_hdu(d: Path) -> tuple[Path, str]:
    return modified_copy(MANGA, d / "manga-no-ivar.fits", lambda h: h.__delitem__("IVAR")), "required HDU missing"


def missing_column(d: Path) -> tuple[Path, str]:
    def drop_ivar(h):
        h["COADD"] = fits.BinTableHDU(fits.FITS_rec.from_columns([c for c in h["COADD"].columns if c.name != "ivar"]), name="COADD")

    return modified_copy(NGC3073, d / "sdss-no-ivar.fits", drop_ivar), "required column missing"


def wrong_shape(d: Path) -> tuple[Path, str]:
    def shrink(h):
        h["IVAR"].data = h["IVAR"].data[:, :-10].copy()

    return modified_copy(MANGA, d / "manga-short-ivar.fits", shrink), "differs from FLUX"


def nan_flux(d: Path) -> tuple[Path, str]:
    def poison(h):
        h["COADD"].data["flux"][100] = np.nan

    return modified_copy(NGC3073, d / "sdss-nan.fits", poison), "NaN/inf"


def negative_ivar(d: Path) -> tuple[Path, str]:
    def poison(h):
        h["IVAR"].data[7, 50] = -2.0  # the last spectrum of the file

    return modified_copy(MANGA, d / "manga-neg-ivar.fits", poison), "negative"


def non_monotonic(d: Path) -> tuple[Path, str]:
    def swap(h):
        wave = h[1].data["WAVE"][0]
        wave[200], wave[201] = wave[201], wave[200]

    return modified_copy(LEGAC, d / "legac-swapped.fits", swap), "not strictly increasing"


def absurd_size(d: Path) -> tuple[Path, str]:
    """A header that claims a 1e10-element image: rejected before any allocation."""
    p = d / "huge-manga.fits"
    primary = _raw_header({"SIMPLE": True, "BITPIX": 8, "NAXIS": 0, "EXTEND": True})
    flux = _raw_header(
        {"XTENSION": "IMAGE", "BITPIX": -32, "NAXIS": 2, "NAXIS1": 100_000, "NAXIS2": 100_000,
         "PCOUNT": 0, "GCOUNT": 1, "EXTNAME": "FLUX"}
    )
    p.write_bytes(primary + flux + b"\0" * 2880)
    return p, "sane limit"


def dec_out_of_range(d: Path) -> tuple[Path, str]:
    def move(h):
        h["SPECOBJ"].data["PLUG_DEC"][0] = 95.0

    return modified_copy(NGC3073, d / "sdss-dec95.fits", move), "outside [-90, 90]"


def duplicate_objects(d: Path) -> tuple[Path, str]:
    p = d / "lines-dup.ecsv"
    p.write_text(
        "id,ra,dec,HA6563_FLUX,HA6563_FLUX_ERR,HB4861_FLUX,HB4861_FLUX_ERR\n"
        "r1,10.0,-5.0,100.0,1.0,35.0,1.0\n"
        "r1,10.001,-5.0,90.0,1.0,31.0,1.0\n"
    )
    return p, "duplicate"


FORCED_READER = {"absurd_size": "manga_rss", "missing_hdu": "manga_rss", "missing_column": "sdss"}

BROKEN: dict[str, Builder] = {
    "not_fits": not_fits,
    "empty": empty,
    "truncated": truncated,
    "truncated_mid_block": truncated_mid_block,
    "lying_size": lying_size,
    "truncated_gzip": truncated_gzip,
    "negative_error": negative_error,
    "missing_hdu": missing_hdu,
    "missing_column": missing_column,
    "wrong_shape": wrong_shape,
    "nan_flux_positive_ivar": nan_flux,
    "negative_ivar": negative_ivar,
    "non_monotonic_wavelength": non_monotonic,
    "absurd_size": absurd_size,
    "coordinates_out_of_range": dec_out_of_range,
    "duplicate_objects": duplicate_objects,
}
