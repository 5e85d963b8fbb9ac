"""The survey file readers, one module per format, and the registry that picks one.

``READERS`` maps a reader's name to its instance; :func:`get_reader` looks one up by
name and :func:`detect_reader` asks each in turn whether a file is its format (by
content, never by file name).  Specific formats are asked before general ones: a
MaNGA cube is tested before a MaNGA spectra set, a velocity map (2-D ``VEL`` image)
after the cubes; then the 1-D formats, those named by their headers (JWST NIRSpec x1d,
STARLIGHT F_OBS/F_SYN) before the generic IRAF-style 1-D image and plain-text spectrum;
and the line catalogue (which accepts any table with ``<LINE>_FLUX`` or
``<LINE>_VEL`` columns) comes last.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping

from skyledger.ingest.readers.base import Reader
from skyledger.ingest.diagnose import WELL_FORMED, describe
from skyledger.schema.errors import ConfigError, ReaderError

__all__ = ["READERS", "Reader", "get_reader", "detect_reader"]


class _Registry(Mapping[str, Reader]):
    """Reader name -> instance, each reader module imported when first asked for.

    A read-ahead worker is a fresh interpreter that needs one reader; importing all of
    them (astropy.io.ascii, WCS, the cube code) cost it ~0.3 s of its ~1 s start, paid
    by every batch. Iteration order is the detection order.
    """

    def __init__(self, modules: dict[str, str]):
        self._modules = modules
        self._loaded: dict[str, Reader] = {}

    def __getitem__(self, name: str) -> Reader:
        reader = self._loaded.get(name)
        if reader is None:
            # "module" registers the module's ``reader``; "module:attr" one of several
            # readers a module defines (the cube formats are configurations of one reader).
            module, _, attr = self._modules[name].partition(":")  # KeyError for an unknown name, as a dict
            reader = getattr(importlib.import_module(f"skyledger.ingest.readers.{module}"), attr or "reader")
            if reader.name != name:
                raise RuntimeError(f"reader {self._modules[name]} registers {reader.name!r}, not {name!r}")
            self._loaded[name] = reader
        return reader

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __contains__(self, name: object) -> bool:
        return name in self._modules


#: every reader by name ("module" or "module:attr"), in the order detect_reader tries them
READERS: Mapping[str, Reader] = _Registry({
    "sdss": "sdss",
    "desi_coadd": "desi_coadd",
    "eso_phase3": "eso_phase3",
    "muse_cube": "ifu_cube:muse_cube",
    "manga_cube": "ifu_cube:manga_cube",
    "sami_cube": "ifu_cube:sami_cube",
    "nirspec_s3d": "ifu_cube:nirspec_s3d",
    "gmos_cube": "ifu_cube:gmos_cube",
    "manga_rss": "manga_rss",
    "velocity_map": "velocity_map",
    "nirspec_x1d": "nirspec_x1d",
    "starlight": "starlight",
    "fits_image_1d": "fits_image_1d",
    "text_spectrum": "text_spectrum",
    "line_catalog": "line_catalog",
    # Every role from the survey options; its sniff never claims a file.
    "ifu_cube": "ifu_cube:ifu_cube",
})


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
    # Say what the file is: damaged (empty, truncated, a header that overstates its
    # data) needs another copy, not another reader.
    what = describe(path)
    if what == WELL_FORMED or "content is text" in what:
        what += f"; if its format is one of {', '.join(READERS)}, name it with --reader NAME"
    raise ReaderError(path, f"no reader recognises this file: {what}")
