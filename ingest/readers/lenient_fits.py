"""Reading the headers of real instrument FITS files leniently, and saying what was fixed.

Survey products are often written by hand-rolled code: ``BLANK = nan`` on float images
(which astropy refuses to open at all), numbers in quoted strings, ``RA--TAN``,
``RADECSYS``, ``DEGREE``.  The helpers here repair what can be repaired without
guessing, append one human-readable line per repair to a ``fixes`` list the caller
stores with the file's rows, and raise :class:`ReaderError` for what cannot be repaired.
"""

from __future__ import annotations

import gzip
import io
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from astropy import units as u
from astropy.coordinates import Angle
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from skyledger.ingest.readers import rawfits
from skyledger.schema.errors import ReaderError

__all__ = [
    "RawHdu",
    "card_value",
    "scan_headers",
    "is_gzip",
    "starts_like_fits",
    "read_fits_bytes",
    "fix_blank_cards",
    "lenient_float",
    "lenient_angle",
    "header_lookup",
    "fix_wcs_header",
    "celestial_wcs",
]

#: files are read whole (the repairs work on the bytes); anything bigger is refused
MAX_BYTES = 2 * 1024**3
#: a map pixel wider than this (degrees) means the WCS lost its scale (CDELT ignored ...)
MAX_PIXEL_DEG = 0.1
_WCS_NUMBER = re.compile(r"^(CRPIX\d|CRVAL\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d|EQUINOX|EPOCH)$")
_CELESTIAL_CTYPE = re.compile(r"^(RA|DEC|GLON|GLAT|ELON|ELAT)[-_ ]*([A-Z]{3})?$")

# --------------------------------------------------------------------------- raw headers


@dataclass(slots=True)
class RawHdu:
    """One HDU as found by scanning the header blocks, before astropy sees the file."""

    extname: str
    naxis: tuple[int, ...]
    is_image: bool
    cards: dict[str, tuple[int, str]]  # keyword -> (byte offset of the card, raw value text)
    data_end: int


def card_value(text: str) -> str:
    """A card's value without its comment; a string without its quotes."""
    text = text.strip()
    if text.startswith("'"):
        m = re.match(r"'((?:[^']|'')*)'", text)
        return (m.group(1) if m else text[1:]).replace("''", "'").strip()
    return text.split("/", 1)[0].strip()


def scan_headers(fh: BinaryIO, *, max_hdus: int, max_offset: int | None) -> list[RawHdu]:
    """Walk the header blocks of a FITS stream; stops quietly at anything it cannot follow."""
    hdus: list[RawHdu] = []
    pos = 0
    while len(hdus) < max_hdus and (max_offset is None or pos <= max_offset):
        fh.seek(pos)
        cards: dict[str, tuple[int, str]] = {}
        ended = False
        while not ended:
            block = fh.read(2880)
            if len(block) < 2880:
                return hdus
            for k in range(36):
                card = block[80 * k : 80 * (k + 1)].decode("ascii", errors="replace")
                key = card[:8].strip().upper()
                if key == "END":
                    ended = True
                    break
                if card[8:10] == "= " and key not in cards:
                    cards[key] = (pos + 80 * k, card[10:])
            pos += 2880
        try:
            bitpix = int(card_value(cards["BITPIX"][1]))
            naxis = tuple(
                int(card_value(cards[f"NAXIS{i}"][1])) for i in range(1, int(card_value(cards["NAXIS"][1])) + 1)
            )
            pcount = int(card_value(cards["PCOUNT"][1])) if "PCOUNT" in cards else 0
            gcount = int(card_value(cards["GCOUNT"][1])) if "GCOUNT" in cards else 1
        except (KeyError, ValueError):
            return hdus
        n = math.prod(naxis) if naxis else 0
        size = abs(bitpix) // 8 * gcount * (pcount + n) if naxis else 0
        xtension = card_value(cards["XTENSION"][1]).upper() if "XTENSION" in cards else ("" if hdus else "PRIMARY")
        extname = card_value(cards["EXTNAME"][1]).upper() if "EXTNAME" in cards else ("PRIMARY" if not hdus else "")
        pos += -(-size // 2880) * 2880
        hdus.append(RawHdu(extname, naxis, xtension in ("IMAGE", "PRIMARY"), cards, pos))
    return hdus


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def starts_like_fits(head: bytes) -> bool:
    return head.startswith(b"SIMPLE  =") and head[10:30].strip() == b"T"


def read_fits_bytes(path: Path) -> bytes:
    """The whole (decompressed) file; maps are small, and the header fixes need the bytes."""
    too_big = f"larger than {MAX_BYTES / 1024**3:.0f} GiB: too big to read whole"
    data = rawfits.preloaded_bytes(path)  # the checksummed bytes, during an ingest
    try:
        if data is not None and data[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as gz:
                raw = gz.read(MAX_BYTES + 1)
        elif data is not None:
            raw = data
        elif is_gzip(path):
            with gzip.open(path, "rb") as gz:
                raw = gz.read(MAX_BYTES + 1)
        elif path.stat().st_size > MAX_BYTES:
            raise ReaderError(path, too_big)
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise ReaderError(path, f"cannot read the file: {err}") from err
    if len(raw) > MAX_BYTES:
        raise ReaderError(path, too_big)
    if not starts_like_fits(raw[:80]):
        raise ReaderError(path, "not a FITS file (no 'SIMPLE = T' card at the start)")
    return raw


def fix_blank_cards(raw: bytes) -> tuple[bytes, list[str]]:
    """Replace BLANK cards that astropy refuses (or that mean nothing) with COMMENT cards."""
    buf = bytearray(raw)
    fixes: list[str] = []
    for i, hdu in enumerate(scan_headers(io.BytesIO(raw), max_hdus=1000, max_offset=None)):
        if "BLANK" not in hdu.cards:
            continue
        offset, text = hdu.cards["BLANK"]
        value = card_value(text)
        bitpix = int(card_value(hdu.cards["BITPIX"][1]))
        try:
            int(value)
            valid = bitpix > 0
        except ValueError:
            valid = False
        if valid:
            continue
        note = f"COMMENT BLANK = {value} removed by skyledger (BITPIX = {bitpix})"
        buf[offset : offset + 80] = note[:80].ljust(80).encode("ascii", errors="replace")
        name = hdu.extname or f"#{i}"
        fixes.append(
            f"HDU {name}: removed 'BLANK = {value}' (BLANK applies only to integer images; NaN marks missing pixels)"
        )
    return bytes(buf), fixes


# --------------------------------------------------------------------------- header fixes


def lenient_float(value: Any) -> float | None:
    """A finite float from a number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    try:
        f = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fix_wcs_header(header: fits.Header, hdu: str, fixes: list[str]) -> fits.Header:
    """A copy of ``header`` with string-valued WCS numbers and malformed celestial CTYPEs repaired."""
    h = header.copy()
    for card in list(h.cards):
        key = card.keyword
        if _WCS_NUMBER.match(key) and isinstance(card.value, str):
            number = lenient_float(card.value)
            if number is not None:
                h[key] = number
                fixes.append(f"HDU {hdu}: {key} = '{card.value}' was a string; read as the number {number}")
    for i in (1, 2):
        key = f"CTYPE{i}"
        value = h.get(key)
        if not isinstance(value, str):
            continue
        m = _CELESTIAL_CTYPE.match(value.strip().upper())
        if m is None:
            continue
        fixed = f"{m.group(1).ljust(4, '-')}-{m.group(2) or 'TAN'}"
        if fixed != value.strip():
            h[key] = fixed
            fixes.append(f"HDU {hdu}: {key} = '{value}' is not a FITS celestial type; read as '{fixed}'")
    return h


def celestial_wcs(path: Path, header: fits.Header, hdu: str, fixes: list[str]) -> WCS:
    """The 2-D celestial WCS of a map header, with astropy's own repairs reported."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wcs = WCS(header, naxis=None)
        except (ValueError, KeyError, MemoryError, TypeError) as err:
            raise ReaderError(path, f"cannot build a WCS from the header: {err}", hdu=hdu) from err
    for w in caught:
        if not issubclass(w.category, (FITSFixedWarning, AstropyWarning)):
            continue
        message = " ".join(str(w.message).split())
        # Dates and observatory positions do not enter a map's positions, and VELREF is
        # read here (as a string) rather than as the AIPS integer wcslib expects.
        if message.startswith(("'datfix'", "'obsfix'", "VELREF")) or "MJD-OBS" in message or "DATE-OBS" in message:
            continue
        fixes.append(f"HDU {hdu}: WCS: {message}")
    if not wcs.has_celestial or wcs.celestial.naxis != 2:
        raise ReaderError(
            path, f"no celestial WCS (RA/Dec axes) in the header; CTYPEs are {list(wcs.wcs.ctype) or 'absent'}", hdu=hdu
        )
    if wcs.wcs.lng != 0 or wcs.wcs.lat != 1:
        raise ReaderError(
            path, f"the celestial axes must be image axes 1 and 2 (RA, Dec); CTYPEs are {list(wcs.wcs.ctype)}", hdu=hdu
        )
    celestial = wcs.celestial
    scale = float(np.max(proj_plane_pixel_scales(celestial)))
    if not (0 < scale <= MAX_PIXEL_DEG):
        raise ReaderError(
            path,
            f"the WCS gives {scale:.3g} deg per pixel, not a galaxy map's scale: the CD/CDELT cards "
            "are missing or unreadable",
            hdu=hdu,
        )
    return celestial


def header_lookup(headers: list[fits.Header], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    """(key, value) of the first of ``keys`` present in the first header that has one."""
    for header in headers:
        for key in keys:
            if key in header and header[key] not in (None, ""):
                return key, header[key]
    return None


def lenient_angle(value: Any, unit: u.UnitBase) -> float | None:
    """Degrees from a number or a sexagesimal string (RA strings in hours)."""
    number = lenient_float(value)
    if number is not None:
        return number
    if isinstance(value, str) and value.strip():
        try:
            return float(Angle(value.strip(), unit=unit).to_value(u.deg))
        except (ValueError, u.UnitsError):
            return None
    return None
