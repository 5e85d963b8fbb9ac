"""What is wrong with a file that no reader recognises: empty, not FITS, truncated, or
a header that claims more data than the file holds.

Readers only say yes or no when they sniff a file, so a file none of them takes needs
its own explanation; "no reader recognises this file" alone sends the operator looking
for a missing reader when the file is damaged. :func:`describe` walks the FITS
structure (header blocks, and the data size each header claims) without parsing
values, through gzip when the file is compressed. It runs only for files already
refused, so its cost does not matter; the checksum step has already bounded how far a
gzip file inflates (:mod:`skyledger.ingest.inflate`).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

__all__ = ["WELL_FORMED", "describe"]

#: What :func:`describe` says of a file with nothing wrong in its structure.
WELL_FORMED = "a well-formed FITS file"
BLOCK = 2880
_CARD = 80


def _printable(head: bytes) -> bool:
    text = head[:200]
    return bool(text) and all(32 <= b < 127 or b in (9, 10, 13) for b in text)


def _snippet(head: bytes) -> str:
    line = head[:60].decode("ascii", "replace").splitlines()[0] if head.strip() else ""
    return line.strip()


def _int(cards: dict[str, str], key: str) -> int | None:
    try:
        return int(cards[key].split("/", 1)[0].strip())
    except (KeyError, ValueError):
        return None


def _read_header(fh: BinaryIO) -> tuple[dict[str, str], int, bool]:
    """Cards of the header at the stream's position: (cards, bytes read, END found)."""
    cards: dict[str, str] = {}
    read = 0
    while True:
        block = fh.read(BLOCK)
        read += len(block)
        if len(block) < BLOCK:
            return cards, read, False
        for i in range(0, BLOCK, _CARD):
            card = block[i : i + _CARD].decode("ascii", "replace")
            key = card[:8].strip().upper()
            if key == "END":
                return cards, read, True
            if card[8:10] == "= " and key not in cards:
                cards[key] = card[10:]


def _data_bytes(cards: dict[str, str], primary: bool) -> int | None:
    bitpix, naxis = _int(cards, "BITPIX"), _int(cards, "NAXIS")
    if bitpix is None or naxis is None or naxis < 0:
        return None
    dims = [_int(cards, f"NAXIS{i}") for i in range(1, naxis + 1)]
    if any(d is None or d < 0 for d in dims):
        return None
    if naxis == 0:
        return 0
    pcount = 0 if primary else (_int(cards, "PCOUNT") or 0)
    gcount = 1 if primary else (_int(cards, "GCOUNT") or 1)
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(d for d in dims if d is not None))


def _name(cards: dict[str, str], index: int) -> str:
    value = cards.get("EXTNAME", "").split("/", 1)[0].strip().strip("'").strip()
    return value or ("PRIMARY" if index == 0 else f"#{index}")


def _skip(fh: BinaryIO, n: int) -> int:
    """Move ``n`` bytes on (reading through gzip); returns how many there were."""
    if not isinstance(fh, gzip.GzipFile):
        here = fh.tell()
        end = fh.seek(0, os.SEEK_END)
        fh.seek(min(here + n, end))
        return min(n, end - here)
    moved = 0
    while moved < n:
        chunk = fh.read(min(1 << 20, n - moved))
        if not chunk:
            break
        moved += len(chunk)
    return moved


def _walk(fh: BinaryIO, compressed: bool) -> str | None:
    """The structural problem of a stream that starts with ``SIMPLE = T``, or None."""
    what = "the decompressed file" if compressed else "the file"
    pos = 0
    index = 0
    while True:
        cards, read, ended = _read_header(fh)
        if read == 0:
            return None  # ends cleanly after the last HDU
        name = _name(cards, index)
        if not ended:
            if read % BLOCK:
                return (f"truncated FITS file: {what} ends in the middle of a 2880-byte block, inside the header "
                        f"of HDU {name} (at byte {pos + read})")  # fmt: skip
            if index > 0 and not cards:
                return f"{what} has {read} bytes after its last HDU that are not a FITS header"
            return f"truncated FITS file: the header of HDU {name} has no END card before {what} ends (byte {pos + read})"
        pos += read
        n_bytes = _data_bytes(cards, index == 0)
        if n_bytes is None:
            return f"the header of HDU {name} has missing or malformed BITPIX/NAXISn cards"
        padded = -(-n_bytes // BLOCK) * BLOCK
        present = _skip(fh, padded)
        if present < padded:
            axes = ", ".join(f"NAXIS{i} = {cards[f'NAXIS{i}'].split('/', 1)[0].strip()}" for i in range(1, 10)
                             if f"NAXIS{i}" in cards)  # fmt: skip
            if present % BLOCK:
                return (f"truncated FITS file: the header of HDU {name} claims {n_bytes} data bytes ({axes}) but "
                        f"{what} ends {present} bytes after it, in the middle of a 2880-byte block")  # fmt: skip
            return (f"the header of HDU {name} claims more data than {what} holds: {n_bytes} bytes ({axes}), "
                    f"{present} present; the header overstates the data size (or the file was truncated at a "
                    "block boundary)")  # fmt: skip
        pos += padded
        index += 1


def describe(path: str | os.PathLike[str]) -> str:
    """One phrase for what the file is, as far as its structure goes: ``"the file is empty
    (0 bytes)"``, ``"not a FITS file ..."``, ``"truncated FITS file ..."``, ``"the header
    of HDU X claims more data ..."``, or :data:`WELL_FORMED` (no reader knows its layout)."""
    p = Path(path)
    compressed = False
    try:
        size = p.stat().st_size
        if size == 0:
            return "the file is empty (0 bytes)"
        with open(p, "rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            fh: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw  # type: ignore[assignment]
            head = fh.read(BLOCK)
            if compressed and not head:
                return "an empty gzip file (nothing inside)"
            if not (head.startswith(b"SIMPLE  =") and head[10:30].strip() == b"T"):
                inside = " inside the gzip file" if compressed else ""
                if _printable(head):
                    return f"not a FITS file: the content{inside} is text, starting {_snippet(head)!r}"
                return f"not a FITS file: the content{inside} starts with bytes {head[:8].hex(' ')}, not 'SIMPLE  ='"
            fh.seek(0)
            problem = _walk(fh, compressed)
    except (OSError, EOFError, zlib.error) as err:
        if compressed:
            return f"a damaged gzip file ({type(err).__name__}: {err})"
        return f"unreadable ({type(err).__name__}: {err})"
    return problem or WELL_FORMED
