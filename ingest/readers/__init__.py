"""The survey file readers, one module per format, and the registry that picks one.

``READERS`` maps a reader's name to its instance; :func:`get_reader` looks one up by
name and :func:`detect_reader` asks each in turn whether a file is its format (by
content, never by file name).  Specific formats are asked before general ones: a
MaNGA cube is tested before a MaNGA spectra set, a velocity map (2-D ``VEL`` image)
after the cubes, and the line catalogue (which accepts any table with ``<LINE>_FLUX`` or
``<LINE>_VEL`` columns) comes last.
"""

from __future__ import annotations

import os

from skyledger.ingest.readers.base import Reader
from skyledger.ingest.readers.eso_phase3 import reader as _eso_phase3
from skyledger.ingest.readers.line_catalog import reader as _line_catalog
from skyledger.ingest.readers.manga_cube import reader as _manga_cube
from skyledger.ingest.readers.manga_rss import reader as _manga_rss
from skyledger.ingest.readers.muse_cube import reader as _muse_cube
from skyledger.ingest.readers.sdss import reader as _sdss
from skyledger.ingest.readers.velocity_map import reader as _velocity_map
from skyledger.schema.errors import ConfigError, ReaderError

__all__ = ["READERS", "Reader", "get_reader", "detect_reader"]

#: every reader by name, in the order detect_reader tries them
READERS: dict[str, Reader] = {
    r.name: r for r in (_sdss, _eso_phase3, _muse_cube, _manga_cube, _manga_rss, _velocity_map, _line_catalog)
}


def get_reader(name: str) -> Reader:
    """The reader called ``name``; ReaderError listing the known names otherwise."""
    try:
        return READERS[name]
    except KeyError:
        raise ConfigError(f"unknown reader {name!r}; known readers: {', '.join(READERS)}") from None


def detect_reader(path: str | os.PathLike[str]) -> Reader:
    """The first reader whose ``sniff`` recognises the file; ReaderError if none does."""
    if not os.path.isfile(path):
        raise ReaderError(path, "no such file")
    for reader in READERS.values():
        if reader.sniff(path):
            return reader
    raise ReaderError(path, f"no reader recognises this file; use --reader NAME (one of: {', '.join(READERS)})")
