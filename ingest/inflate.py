"""Checking a gzip file to its end, in bounded memory, before any reader opens it.

astropy decompresses a ``.gz`` file as it reads it and stops where the FITS structure
says the data end, so two kinds of bad file went through: a *truncated* one (its CRC
and length trailer, or the end of its last block, missing) loaded whatever came out,
and a *gzip bomb* (a few MB that inflate to GB, e.g. padding after the last HDU, or an
HDU that claims GBs of zeros) was decompressed, or partly skipped, without any limit.

:class:`GzipCheck` is fed the compressed bytes as the ingest reads them to checksum
them (no second read of the file), inflates them in chunks of :data:`CHUNK` bytes that
are counted and dropped, and raises :class:`InflateError` once the output passes the
limit of :class:`InputLimits`, or at the end when the stream is incomplete or corrupt.
zlib checks each member's CRC-32 and length trailer. Memory stays at one chunk
whatever the file holds. Several gzip members and zero padding after the last one are
accepted, as Python's ``gzip`` module (which astropy uses) accepts them.

The cost is one more decompression of each gzip file (astropy decompresses it again
when it reads): docs/ingest_input_checks.md has the measurement.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["CHUNK", "GZIP_MAGIC", "GzipCheck", "InflateError", "InputLimits"]

GZIP_MAGIC = b"\x1f\x8b"
#: Largest piece of inflated output held at once.
CHUNK = 1 << 20


class InflateError(Exception):
    """The compressed file is refused; ``reason`` says why (it becomes the rejection reason)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class InputLimits:
    """How far a compressed file may inflate (``SKYLEDGER_MAX_INFLATE_RATIO`` and
    ``SKYLEDGER_MAX_INFLATED_BYTES``).

    A file may inflate to ``max_inflate_ratio`` times its compressed size, never beyond
    ``max_inflated_bytes``; up to ``free_inflated_bytes`` is always allowed, so that a
    small file of mostly blank data is not refused for its ratio. Survey FITS files
    compress 1.5-5 times (the bundled MaNGA file 1.5 times); a gzip bomb about 1,000 times.
    """

    max_inflate_ratio: float = 100.0
    max_inflated_bytes: int = 4 << 30
    free_inflated_bytes: int = 64 << 20

    def inflated_limit(self, compressed_bytes: int) -> int:
        by_ratio = max(self.free_inflated_bytes, int(self.max_inflate_ratio * compressed_bytes))
        return min(self.max_inflated_bytes, by_ratio)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


class GzipCheck:
    """Inflate a gzip stream fed in pieces, counting and dropping the output."""

    def __init__(self, compressed_bytes: int, limits: InputLimits):
        self._compressed = compressed_bytes
        self._limits = limits
        self._limit = limits.inflated_limit(compressed_bytes)
        self._inflater: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.inflated = 0
        self.members = 1
        self._fed = 0  # compressed bytes consumed, for messages
        self._fresh = True  # nothing of the current member inflated yet

    def feed(self, data: bytes) -> None:
        view = data
        while view:
            if self._inflater is None:
                # Between members: zero padding is skipped, anything else must be another member.
                stripped = view.lstrip(b"\0")
                if not stripped:
                    break
                self._fed += len(view) - len(stripped)
                view = stripped
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self.members += 1
                self._fresh = True
            before = len(view)
            try:
                out = self._inflater.decompress(view, CHUNK)
            except zlib.error as err:
                if self.members > 1 and self._fresh:
                    raise InflateError(
                        f"bytes after the end of the gzip stream (at compressed byte {self._fed}) are not gzip data"
                    ) from err
                raise InflateError(f"corrupt gzip data ({err}): the file is damaged") from err
            self.inflated += len(out)
            self._fresh = False
            if self.inflated > self._limit:
                raise InflateError(self._too_big())
            if self._inflater.eof:
                rest = self._inflater.unused_data
                self._fed += before - len(rest)
                self._inflater = None
                view = rest
            else:
                rest = self._inflater.unconsumed_tail
                self._fed += before - len(rest)
                view = rest

    def finish(self) -> int:
        """The inflated size; InflateError when the stream stopped before its end."""
        if self._inflater is not None:
            raise InflateError(
                f"truncated gzip file: the compressed stream ends before its end marker and checksum "
                f"(after {_size(self._compressed)}, {_size(self.inflated)} inflated); copy the file again"
            )
        return self.inflated

    def _too_big(self) -> str:
        limits = self._limits
        return (
            f"the file inflates to more than {_size(self._limit)} (over "
            f"{self._limit / max(self._compressed, 1):.0f} times its {_size(self._compressed)}): a gzip bomb or "
            f"not a survey product; the limits are SKYLEDGER_MAX_INFLATE_RATIO = {limits.max_inflate_ratio:g} "
            f"and SKYLEDGER_MAX_INFLATED_BYTES = {limits.max_inflated_bytes}"
        )
