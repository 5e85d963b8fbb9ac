"""Well-formed, uncompressed FITS files scanned without astropy: HDU layout and header cards.

Why: astropy's ``fits.open`` builds a ``Card`` per header card and parses each value
through its configuration system; for a one-spectrum SDSS file that is about 1.9 ms of
the ~3 ms it takes to read it, more than decoding the rows. A survey of a million such
files spends most of its ingest there.

The scan is deliberately narrow. It accepts only files it reads exactly as astropy
does: a ``SIMPLE = T`` primary, ``XTENSION`` extensions, fixed-format ``KEY = value``
cards of printable ASCII, sizes within the readers' limits and a file that ends where
its last HDU's padded data ends. Anything else (gzip, ``CONTINUE`` long strings,
``HIERARCH`` keywords, random groups, complex or malformed values, truncation, trailing
bytes) makes :func:`scan` return None and the reader falls back to
:func:`skyledger.ingest.readers.fits_access.open_fits`, which is also what words the error for
a broken file. So this path never decides that a file is bad, and never disagrees with
astropy about a file it accepts (``tests/ingest/test_rawfits.py`` compares every card
and table cell on the real and synthetic files).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

__all__ = ["BLOCK", "RawHeader", "RawHdu", "RawFits", "preloaded", "preloaded_bytes", "scan"]

BLOCK = 2880
_CARD = 80

#: Files above this size are left to astropy's memory map rather than read into memory.
MAX_SCAN_BYTES = 64 << 20

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?$")
_STRING = re.compile(r"^'((?:[^']|'')*)'\s*(/.*)?$")
_PRINTABLE = re.compile(rb"^[\x20-\x7e]*$")


class _Decline(Exception):
    """The file is outside what the scan reads exactly as astropy does."""


def _value(text: str) -> tuple[Any, str]:
    """(typed value, value text as the table-layout code wants it) of a card's value field."""
    stripped = text.strip()
    if stripped.startswith("'"):
        match = _STRING.match(stripped)
        if match is None:
            raise _Decline("unterminated string")
        # FITS: trailing blanks of a string are not significant, leading ones are.
        value = match.group(1).replace("''", "'").rstrip()
        return value, value
    field = stripped.split("/", 1)[0].strip()
    if field == "":
        return None, ""
    if field == "T":
        return True, field
    if field == "F":
        return False, field
    if _INT.match(field):
        return int(field), field
    if _FLOAT.match(field):
        return float(field.replace("D", "E").replace("d", "e")), field
    raise _Decline(f"value {field!r}")


class RawHeader(Mapping[str, Any]):
    """A header's ``KEY = value`` cards: typed values, keys case-insensitive, first card wins."""

    __slots__ = ("_cards", "_texts", "memo")

    def __init__(self, cards: dict[str, Any], texts: dict[str, str]):
        self._cards = cards
        self._texts = texts
        #: values derived from this header alone (a table's dtype), kept with it
        self.memo: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self._cards[key.upper()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.upper() in self._cards

    def __iter__(self) -> Iterator[str]:
        return iter(self._cards)

    def __len__(self) -> int:
        return len(self._cards)

    @property
    def texts(self) -> Mapping[str, str]:
        """Keyword -> value text (strings unquoted), the form ``fits_tables._table_dtype`` reads."""
        return self._texts


# Files of one survey repeat the same extension headers byte for byte (an SDSS file's
# COADD and SPECOBJ headers differ only where the data differ): a header already parsed
# is reused. RawHeader is read-only, so sharing one is safe.
_HEADER_CACHE: dict[bytes, RawHeader] = {}
_HEADER_CACHE_SIZE = 64


def _parse_header(buf: bytes, start: int, size: int) -> tuple[RawHeader, int]:
    """The header starting at ``start``; returns it and the offset of its data."""
    end = _header_end(buf, start, size)
    blocks = buf[start:end]
    header = _HEADER_CACHE.get(blocks)
    if header is None:
        header = _parse_cards(blocks)
        if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
            _HEADER_CACHE.pop(next(iter(_HEADER_CACHE)))
        _HEADER_CACHE[blocks] = header
    return header, end


def _header_end(buf: bytes, start: int, size: int) -> int:
    """Offset just past the block holding the END card."""
    pos = start
    while True:
        if pos + BLOCK > size:
            raise _Decline("header runs past the end of the file")
        for i in range(pos, pos + BLOCK, _CARD):
            if buf[i : i + 8] == b"END     ":
                return pos + BLOCK
        pos += BLOCK


def _parse_cards(blocks: bytes) -> RawHeader:
    """The cards of one header (``blocks`` end with the block holding its END card)."""
    if not _PRINTABLE.match(blocks):
        raise _Decline("non-ASCII header bytes")
    text = blocks.decode("ascii")
    cards: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for i in range(0, len(text), _CARD):
        if text[i : i + 8] == "END     ":  # the same test as _header_end's
            break
        keyword = text[i : i + 8].rstrip().upper()
        if keyword in ("CONTINUE", "HIERARCH", "END"):  # END: a malformed one (trailing text, lower case)
            raise _Decline(keyword)
        if text[i + 8 : i + 10] != "= " or keyword in ("COMMENT", "HISTORY", ""):
            continue
        if keyword not in cards:
            cards[keyword], texts[keyword] = _value(text[i + 10 : i + _CARD])
    return RawHeader(cards, texts)


def _data_bytes(header: RawHeader, primary: bool, max_elements: int) -> int:
    try:
        bitpix = int(header["BITPIX"])
        naxis = int(header["NAXIS"])
        dims = [int(header[f"NAXIS{i}"]) for i in range(1, naxis + 1)]
        pcount = 0 if primary else int(header.get("PCOUNT", 0))
        gcount = 1 if primary else int(header.get("GCOUNT", 1))
    except (KeyError, TypeError, ValueError) as err:
        raise _Decline("structural keyword missing or not an integer") from err
    if bitpix not in (8, 16, 32, 64, -32, -64) or naxis < 0 or any(d < 0 for d in dims) or pcount < 0 or gcount != 1:
        raise _Decline("unusual structure")
    if primary and header.get("GROUPS") is True:
        raise _Decline("random groups")
    if naxis == 0:
        return 0
    elements = math.prod(dims)
    is_table = not primary and header.get("XTENSION") == "BINTABLE"
    if (elements + pcount > 4 * max_elements) if is_table else elements > max_elements:
        raise _Decline("beyond the sane size limit")  # fits_access.check_hdu_size words the rejection
    return abs(bitpix) // 8 * (pcount + elements)


@dataclass(frozen=True, slots=True)
class RawHdu:
    """One HDU: its header and where its data lie in the file's bytes."""

    index: int
    name: str  # EXTNAME upper-cased, PRIMARY for the first HDU without one
    header: RawHeader
    data_offset: int
    buffer: bytes  # the whole file's bytes


class RawFits:
    """The HDUs of a scanned file: by index, slice or EXTNAME (case-insensitive, first wins)."""

    def __init__(self, hdus: list[RawHdu]):
        self._hdus = hdus
        self._by_name: dict[str, RawHdu] = {}
        for hdu in hdus:
            self._by_name.setdefault(hdu.name, hdu)

    @overload
    def __getitem__(self, key: int | str) -> RawHdu: ...
    @overload
    def __getitem__(self, key: slice) -> list[RawHdu]: ...
    def __getitem__(self, key: int | str | slice) -> RawHdu | list[RawHdu]:
        if isinstance(key, str):
            return self._by_name[key.upper()]
        return self._hdus[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self._by_name

    def __iter__(self) -> Iterator[RawHdu]:
        return iter(self._hdus)

    def __len__(self) -> int:
        return len(self._hdus)


_PRELOADED: ContextVar[tuple[str, bytes] | None] = ContextVar("rawfits_preloaded", default=None)


@contextmanager
def preloaded(path: str | os.PathLike[str], data: bytes | None) -> Iterator[None]:
    """Within the block, :func:`scan` of ``path`` reads ``data`` instead of the file, and
    so do ``fits_access.open_fits``, ``fits_tables.read_table`` and ``lenient_fits.read_fits_bytes``
    (through :func:`preloaded_bytes`).

    The ingest has already read the whole file to checksum it: parsing those very bytes
    saves a second read, and what is parsed is then exactly the content whose sha256 is
    recorded, even if the file changes in between. Readers that open the file after the
    block (cube readers stream their spectra later) read the file on disk; the ingest
    checks that it did not change (``prepare.changed_on_disk``). ``data=None``
    changes nothing.
    """
    token = _PRELOADED.set(None if data is None else (os.fspath(path), data))
    try:
        yield
    finally:
        _PRELOADED.reset(token)


def preloaded_bytes(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes :func:`preloaded` gives for ``path`` here, or None (read the file)."""
    pre = _PRELOADED.get()
    if pre is not None and pre[0] == os.fspath(path):
        return pre[1]
    return None


def scan(path: str | os.PathLike[str], *, max_elements: int, max_bytes: int = MAX_SCAN_BYTES) -> RawFits | None:
    """The file's HDUs, or None wherever astropy should read it instead (see the module doc).

    Raises only what opening and reading the file raise (``OSError``); the callers treat
    those as they treat them from astropy.
    """
    pre = preloaded_bytes(path)
    if pre is not None:
        buf = pre
        if len(buf) > max_bytes:
            return None
    else:
        p = Path(path)
        if p.stat().st_size > max_bytes:
            return None
        buf = p.read_bytes()
    size = len(buf)
    if size == 0 or size % BLOCK or not buf.startswith(b"SIMPLE  =") or buf[10:30].strip() != b"T":
        return None
    hdus: list[RawHdu] = []
    pos = 0
    try:
        while pos < size:
            primary = pos == 0
            header, data_offset = _parse_header(buf, pos, size)
            if not primary and header.get("XTENSION") not in ("BINTABLE", "IMAGE", "TABLE"):
                raise _Decline("unknown extension type")
            n_bytes = _data_bytes(header, primary, max_elements)
            end = data_offset + -(-n_bytes // BLOCK) * BLOCK
            if end > size:
                raise _Decline("data run past the end of the file")
            name = header.get("EXTNAME")
            name = str(name).strip().upper() if name not in (None, "") else ("PRIMARY" if primary else "")
            hdus.append(RawHdu(len(hdus), name, header, data_offset, buf))
            pos = end
    except _Decline:
        return None
    return RawFits(hdus)
