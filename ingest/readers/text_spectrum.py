"""Plain-text 1-D spectra, as LiMe examples, many papers and STARLIGHT input files give them.

Layout read: lines of 2-5 numbers separated by whitespace or commas: wavelength, flux, and
optionally error and mask (STARLIGHT input: ``lambda flux err flag``); ``#`` starts a
comment line; an optional first non-comment line names the columns. Named columns are
recognised case-insensitively (wavelength: ``wave``, ``wavelength``, ``lambda``, ``lam``,
``wl``; flux: ``flux``, ``f``, ``flam``, ``f_obs``; error: ``err``, ``error``, ``sigma``,
``flux_err``, ``e_flux``, ``noise``, ``unc``; mask: ``mask``, ``flag``, ``flags``, ``quality``);
option ``columns`` maps the roles ``wave``/``flux``/``err``/``mask`` to a file's names or
1-based column numbers (``{err = "sig"}``, ``{err = 4}``). Without names the columns are
taken in the order wave, flux, err, mask; a fifth unnamed column is ignored (listed in
``meta["ignored_columns"]``).

Gzip-compressed text (recognised by the gzip magic bytes, whatever the name: ``*.txt.gz``,
``*.dat.gz``, ``*.csv.gz``) is read the same way: sniffing decompresses only the first
16 kB; a truncated or corrupt gzip stream is rejected by ``read`` with a message saying so.

Detected by content: the first few kB hold at least five data lines of 2-5 numeric
columns with a positive, strictly increasing first column, under at most one header line
that names a wavelength and a flux column (names as above). A table with non-numeric
cells (an id column) is not a spectrum: line catalogues (``<LINE>_FLUX`` columns) stay
with the ``line_catalog`` reader, and ECSV files are not claimed.

Values: the wavelength in Angstrom (option ``wave_unit`` for nm or um); the error is the
1-sigma flux error (ivar = 1/err^2, 0 where err is 0 or not finite; a negative error
rejects the file). A non-zero mask is kept as the mask and its pixels get ivar 0.
Without an error column ivar is estimated from the scatter
(:func:`~skyledger.ingest.readers.base.ivar_from_scatter`) and the spectrum flagged
ERROR_ESTIMATED.

Air or vacuum: a text file cannot say, so the default is **vacuum**; a survey of air
spectra (most ground-based long-slit data, LiMe examples) must set option
``medium = "air"``. A comment line that says it, ``# air`` / ``# vacuum`` or
``# medium: air`` (also ``=``), or one that mentions ``air wavelengths`` /
``vacuum wavelengths``, is honoured when the option is not given.

Other options: ``object_id`` (default: the file name without its suffix), ``ra``,
``dec``, ``z``, ``flux_unit`` (none otherwise; a plain cgs f_lambda with tiny values is rescaled
to ``1e<k> erg/s/cm2/A``), ``resolution`` (R; none otherwise: flag
NO_RESOLUTION).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u

from skyledger.ingest.readers.base import air_to_vacuum, check_options, check_position, finalize_spectrum
from skyledger.ingest.readers.oned_common import (
    estimated_ivar,
    flux_unit_option,
    medium_option,
    rescale_flux,
    resolution_option,
)
from skyledger.ingest.records import FileContents, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["TextSpectrumReader", "reader", "ROLE_NAMES"]

_OPTIONS = ("object_id", "ra", "dec", "z", "flux_unit", "medium", "resolution", "columns", "wave_unit")
ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "wave": ("wave", "wavelength", "lambda", "lam", "wl", "wavelength_a", "lambda_a"),
    "flux": ("flux", "f", "flam", "f_lambda", "f_obs", "fobs"),
    "err": ("err", "error", "sigma", "flux_err", "e_flux", "err_flux", "noise", "unc", "uncertainty", "ferr"),
    "mask": ("mask", "flag", "flags", "quality", "qual"),
}
_ROLES = ("wave", "flux", "err", "mask")
_SNIFF_BYTES = 16384
_SNIFF_MIN_LINES = 5
#: a 1-D spectrum in text is a few MB; anything far larger is not one (and is not read whole)
MAX_TEXT_BYTES = 200 * 1024 * 1024
_SPLIT = re.compile(r"[,\s]+")
_MEDIUM_COMMENT = re.compile(
    r"^#\s*(?:(?:medium|wavelengths?)\s*[:=]?\s*)?(air|vacuum|vac)\s*$|\b(air|vacuum)\s+wavelengths?\b", re.IGNORECASE
)
_SUFFIXES = (".txt", ".dat", ".csv", ".tsv", ".ascii", ".asc", ".spec", ".gz")


def _tokens(line: str) -> list[str]:
    return [t for t in _SPLIT.split(line.strip()) if t]


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


_GZIP_MAGIC = b"\x1f\x8b"


def _head_bytes(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The first :data:`_SNIFF_BYTES` of the file's content, decompressed if it is gzip, and
    whether that is the whole content. A truncated gzip file gives what it holds."""
    with open(path, "rb") as fh:
        raw = fh.read(_SNIFF_BYTES)
        if raw[:2] != _GZIP_MAGIC:
            return raw, len(raw) < _SNIFF_BYTES
        decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out = b""
        while len(out) < _SNIFF_BYTES and raw:
            out += decomp.decompress(raw, _SNIFF_BYTES - len(out))
            if decomp.eof:
                return out, True
            raw = decomp.unconsumed_tail or fh.read(_SNIFF_BYTES)
        return out[:_SNIFF_BYTES], False


def _read_content(path: Path) -> bytes:
    """The whole content, decompressed if gzip, at most :data:`MAX_TEXT_BYTES`."""
    with open(path, "rb") as fh:
        compressed = fh.read(2) == _GZIP_MAGIC
    if not compressed:
        size = path.stat().st_size
        if size > MAX_TEXT_BYTES:
            raise ReaderError(path, f"{size} bytes is far beyond a text spectrum (limit {MAX_TEXT_BYTES})")
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as gz:
            data = gz.read(MAX_TEXT_BYTES + 1)
    except EOFError as err:
        raise ReaderError(path, f"truncated gzip file: the compressed stream ends early ({err})") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise ReaderError(path, f"a damaged gzip file: {err}") from err
    if len(data) > MAX_TEXT_BYTES:
        raise ReaderError(path, f"the gzip content exceeds {MAX_TEXT_BYTES} bytes, far beyond a text spectrum")
    return data


def _sniff_text(head: str, complete: bool = True) -> bool:
    if head.startswith("# %ECSV"):
        return False
    lines = head.splitlines() if complete else head.splitlines()[:-1]  # the last line may be cut
    rows: list[list[float]] = []
    seen_header = False
    for line in lines:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        tokens = _tokens(stripped)
        values = _floats(tokens)
        if values is None:
            if rows or seen_header or not 2 <= len(tokens) <= 5:
                return False  # a second text line, or text between numbers: a table, not a spectrum
            lower = [t.lower() for t in tokens]
            if not all(any(n in ROLE_NAMES[role] for n in lower) for role in ("wave", "flux")):
                return False  # named columns, but not a spectrum's (a catalogue's HA6563_FLUX, ...)
            seen_header = True
            continue
        if not 2 <= len(values) <= 5 or (rows and len(values) != len(rows[0])):
            return False
        rows.append(values)
        if len(rows) >= 50:
            break
    if len(rows) < _SNIFF_MIN_LINES:
        return False
    first = np.array([r[0] for r in rows])
    return bool(np.all(np.isfinite(first)) and first[0] > 0 and np.all(np.diff(first) > 0))


def _stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or path.name


class TextSpectrumReader:
    """Reader of plain-text 1-D spectra (see the module doc)."""

    name = "text_spectrum"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        try:
            raw, complete = _head_bytes(path)
            if b"\x00" in raw:
                return False
            # The read may end inside a multi-byte character: drop an incomplete tail only.
            return _sniff_text(raw.decode("utf-8", errors="strict" if complete else "ignore"), complete)
        except (OSError, UnicodeDecodeError, ValueError, EOFError, zlib.error):
            return False

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        path = Path(path)
        opts = check_options(path, options, _OPTIONS)
        try:
            text = _read_content(path).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ReaderError(path, f"not a UTF-8 text file: {err}") from err
        except OSError as err:
            raise ReaderError(path, f"cannot read the file: {err}") from err
        names, rows, line_numbers, medium_comment = self._parse(path, text)
        table = np.array(rows, dtype=np.float64)
        index, ignored = self._columns(path, names, table.shape[1], opts.get("columns") or {})
        label = {role: (names[i] if names else f"column {i + 1}") for role, i in index.items()}
        wave = table[:, index["wave"]]
        flux = table[:, index["flux"]]
        if not np.all(np.isfinite(wave)):
            raise ReaderError(path, "the wavelength column has non-finite values", column=label["wave"])
        steps = np.diff(wave)
        if np.any(steps <= 0):
            bad = int(np.argmax(steps <= 0))
            raise ReaderError(
                path, f"the wavelength column is not strictly increasing: line {line_numbers[bad + 1]} "
                f"({wave[bad + 1]}) follows {wave[bad]}", column=label["wave"],
            )  # fmt: skip
        wave_unit = opts.get("wave_unit")
        if wave_unit:
            try:
                wave = (wave * u.Unit(str(wave_unit))).to_value(u.AA)
            except (ValueError, u.UnitConversionError) as err:
                raise ReaderError(path, f"option wave_unit {wave_unit!r} is not a length unit") from err
        medium = medium_option(path, opts, medium_comment or "vacuum")
        if medium == "air":
            wave = air_to_vacuum(wave)
        scale, flux_unit = rescale_flux(flux, flux_unit_option(path, opts))
        flux = flux * scale
        good = np.isfinite(flux)
        if not np.any(good & (flux != 0)):
            raise ReaderError(path, "the flux column is all zero or NaN", column=label["flux"])
        object_id = str(opts.get("object_id") or _stem(path))
        meta: dict[str, Any] = {
            "wavelength_medium_in_file": medium,
            "medium_from": "options" if opts.get("medium") else ("comment" if medium_comment else "default"),
            "columns": names or None,
            "ignored_columns": ignored or None,
        }
        mask = None
        if "mask" in index:
            mask_f = table[:, index["mask"]]
            if not np.all(np.isfinite(mask_f) & (mask_f == np.round(mask_f))):
                raise ReaderError(path, "the mask column holds non-integer values", column=label["mask"])
            mask = mask_f.astype(np.int32)
        if "err" in index:
            err = table[:, index["err"]] * scale
            if np.any(err < 0):
                raise ReaderError(
                    path, f"the error column has {int((err < 0).sum())} negative values", column=label["err"]
                )
            ok = good & np.isfinite(err) & (err > 0)
            ivar = np.zeros_like(err)
            ivar[ok] = 1.0 / err[ok] ** 2
        else:
            usable = good if mask is None else good & (mask == 0)
            ivar = estimated_ivar(flux, meta, usable).astype(np.float64)
        if mask is not None:
            ivar[mask != 0] = 0.0
        ra, dec = check_position(path, opts.get("ra"), opts.get("dec"), what=object_id)
        z = opts.get("z")
        row = SpectrumRow(
            object_id=object_id, source_object_id=object_id, ra=ra, dec=dec, z=z, wave=wave,
            flux=flux.astype(np.float32), ivar=ivar.astype(np.float32), mask=mask,
            resolution=resolution_option(path, opts, wave.size), flux_unit=flux_unit, meta=meta,
        )  # fmt: skip
        row = finalize_spectrum(path, row)
        source = SourceRow(object_id=object_id, ra=ra, dec=dec, z=z)
        return FileContents(reader=self.name, sources=[source], spectra=iter([row]), meta=dict(meta))

    @staticmethod
    def _parse(path: Path, text: str) -> tuple[list[str] | None, list[list[float]], list[int], str | None]:
        """(column names or None, rows of numbers, their line numbers, medium from a comment or None)."""
        names: list[str] | None = None
        rows: list[list[float]] = []
        numbers: list[int] = []
        medium: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                m = _MEDIUM_COMMENT.search(stripped)
                if m and medium is None:
                    word = (m[1] or m[2]).lower()
                    medium = "air" if word == "air" else "vacuum"
                continue
            tokens = _tokens(stripped)
            values = _floats(tokens)
            if values is None:
                if names is None and not rows:
                    names = tokens
                    continue
                raise ReaderError(path, f"line {number} is not numeric: {stripped[:60]!r}")
            width = len(names) if names else (len(rows[0]) if rows else len(values))
            if len(values) != width:
                raise ReaderError(path, f"line {number} has {len(values)} columns, expected {width}")
            rows.append(values)
            numbers.append(number)
        if len(rows) < 2:
            raise ReaderError(path, f"no spectrum: {len(rows)} numeric data line(s)")
        if not 2 <= len(rows[0]) <= 5:
            raise ReaderError(path, f"a spectrum has 2-5 columns (wave, flux, [err], [mask]), found {len(rows[0])}")
        return names, rows, numbers, medium

    @staticmethod
    def _columns(
        path: Path, names: list[str] | None, n_cols: int, mapping: Mapping[str, Any]
    ) -> tuple[dict[str, int], list[str]]:
        unknown = sorted(set(mapping) - set(_ROLES))
        if unknown:
            raise ReaderError(path, f"option columns: unknown role(s) {unknown}; roles are {list(_ROLES)}")
        lower = [n.lower() for n in names] if names else None
        index: dict[str, int] = {}
        for role, given in mapping.items():
            if isinstance(given, int) and not isinstance(given, bool):
                if not 1 <= given <= n_cols:
                    raise ReaderError(path, f"option columns: {role} = {given} is not a column 1..{n_cols}")
                index[role] = given - 1
            elif lower is not None and str(given).lower() in lower:
                index[role] = lower.index(str(given).lower())
            else:
                raise ReaderError(path, f"option columns: {role} = {given!r} is not a column of the file "
                                  f"(columns: {names or n_cols})")  # fmt: skip
        if lower is not None:
            for role in _ROLES:
                if role not in index:
                    hit = next((i for i, n in enumerate(lower) if n in ROLE_NAMES[role]), None)
                    if hit is not None and hit not in index.values():
                        index[role] = hit
            for role in ("wave", "flux"):
                if role not in index:
                    raise ReaderError(
                        path, f"no {role} column among {names}; name it with option columns = {{{role} = ...}}",
                        column=role,
                    )  # fmt: skip
        else:
            for position, role in enumerate(_ROLES[:n_cols]):
                index.setdefault(role, position)
        ignored = [names[i] if names else f"column {i + 1}" for i in range(n_cols) if i not in index.values()]
        return index, ignored


#: the registered instance
reader = TextSpectrumReader()
