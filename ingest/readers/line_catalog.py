"""Emission-line catalogues: FITS binary table, CSV or ECSV, one row per object.

Columns (case-insensitive): ``id``, ``ra``, ``dec``, optional ``z`` and ``parent``, and per
line ``<LINE>_FLUX``, ``<LINE>_FLUX_ERR``, ``<LINE>_VEL``, ``<LINE>_VEL_ERR``,
``<LINE>_SIGMA``, ``<LINE>_SIGMA_ERR`` (velocities in km/s, or any velocity unit the
column declares), where ``<LINE>`` is an id of :mod:`skyledger.schema.linelist`
(``HA6563``, ``OIII5007``, ...).  A line needs at least one of ``_FLUX``, ``_VEL``,
``_SIGMA``; an ``_ERR`` column needs its value column.  Velocities are taken as given,
i.e. relative to the row's ``z``.

Options:

* ``columns``: renames, file name -> canonical name.  A key may be a whole column
  (``{"region_ID": "id", "cen_ra": "ra"}``) or a line prefix
  (``{"HA6562": "HA6563"}`` renames HA6562_FLUX, HA6562_FLUX_ERR, ...).  For the
  scalar fields the reverse spelling ``{"id": "region_ID"}`` is also understood.
* ``dust_corrected`` (bool): the fluxes are already corrected for extinction.
* ``flux_unit``: unit of the line fluxes, when the file's columns carry none.
* ``format``: ``fits``, ``csv`` or ``ecsv`` when the content is ambiguous.
* ``context`` and ``psf_fwhm_arcsec``, which every reader accepts
  (:data:`skyledger.ingest.readers.base.SHARED_OPTIONS`): read by the compute tasks from
  the survey's options, not by the reader.

Each row becomes a source and a pixel-less :class:`SpectrumRow` with ``lines`` filled.
A line is left out of a row when its flux, velocity and sigma are all NaN (or empty):
not measured, not an error.  A line with a velocity or sigma but no flux (a kinematics
catalogue, or a flux that was not measured) is kept with ``flux = None`` (NULL in the
database; the flux-based tasks skip it), and its flux error is then dropped too.
A negative flux error is an error.  Columns that look like lines but name no known
line are ignored and listed in ``FileContents.meta['ignored_columns']``.  A parent named
in the file but not itself a row becomes a position-less source, so that every
``parent_object_id`` resolves within the file.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import ascii as astropy_ascii
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning
from skyledger.schema.linelist import LINES
from skyledger.ingest.readers.base import check_options, check_position, check_unique_ids, normalise_flux_unit
from skyledger.ingest.readers.fits_access import fits_summary, hdu_data, open_fits
from skyledger.ingest.records import FileContents, LineMeasurement, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["LineCatalogReader", "reader", "LINE_COLUMN"]

_OPTIONS = ("columns", "dust_corrected", "flux_unit", "format")
#: a per-line column: LINE id (letters then digits) and one of the quantities
LINE_COLUMN = re.compile(r"^(?P<line>[A-Z]+[0-9]+)_(?P<qty>FLUX_ERR|FLUX|VEL_ERR|VEL|SIGMA_ERR|SIGMA)$", re.IGNORECASE)
_FIELD_CANDIDATES = {
    "id": ("id", "object_id", "objid", "name", "region_id"),
    "ra": ("ra", "ra_deg", "raj2000"),
    "dec": ("dec", "dec_deg", "dej2000", "decj2000"),
    "z": ("z", "redshift"),
    "parent": ("parent", "parent_id", "galaxy", "host"),
}
_SNIFF_BYTES = 65536
#: a table with one of these per-line columns is a line catalogue
_SNIFF_QUANTITIES = ("FLUX", "VEL")
#: a line needs one of these; each error column needs its value column
_VALUE_QUANTITIES = ("FLUX", "VEL", "SIGMA")


def _header_names_from_text(head: str) -> list[str] | None:
    """Column names from the start of an ECSV or CSV file, or None if it is neither."""
    lines = head.splitlines()
    if not lines:
        return None
    if lines[0].startswith("# %ECSV"):
        names = re.findall(r"^#\s*-\s*\{\s*name:\s*([^,}\s]+)", head, flags=re.MULTILINE)
        return names or None
    for line in lines:
        if line.strip() and not line.startswith("#"):
            names = [c.strip().strip('"') for c in line.split(",")]
            return names if len(names) >= 2 else None
    return None


def _kind(path: Path) -> str | None:
    """'fits', 'ecsv', 'csv' or None, from the first bytes of the file."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    if head.startswith(b"SIMPLE  =") or head[:2] == b"\x1f\x8b":
        return "fits"
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", errors="strict")
    return "ecsv" if text.startswith("# %ECSV") else "csv"


class LineCatalogReader:
    """Reader of emission-line catalogues (one row per object, per-line flux columns)."""

    name = "line_catalog"

    def sniff(self, path: str | os.PathLike[str]) -> bool:
        try:
            kind = _kind(Path(path))
            if kind == "fits":
                summary = fits_summary(path, max_hdus=1)
                if summary is None or not summary.extensions:
                    return False
                names = list(summary.columns(summary.extensions[0][1]))
            elif kind in ("ecsv", "csv"):
                with open(path, "rb") as fh:
                    text = fh.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
                names = _header_names_from_text(text) or []
            else:
                return False
        except (OSError, UnicodeDecodeError):
            return False
        return any((m := LINE_COLUMN.match(n)) and m["qty"].upper() in _SNIFF_QUANTITIES for n in names)

    def read(self, path: str | os.PathLike[str], options: Mapping[str, Any]) -> FileContents:
        opts = check_options(path, options, _OPTIONS)
        table = self._load(Path(path), opts.get("format"))
        renames = self._renames(path, table.colnames, opts.get("columns") or {})
        cols: dict[str, str] = {}  # canonical upper-case name -> actual column name
        for name in table.colnames:
            canonical = renames.get(name, name)
            key = canonical.upper()
            if key in cols:
                raise ReaderError(path, f"two columns map to {canonical!r}: {cols[key]!r} and {name!r}", column=name)
            cols[key] = name

        field_col = {f: self._field(cols, f, cands) for f, cands in _FIELD_CANDIDATES.items()}
        for required in ("id", "ra", "dec"):
            if field_col[required] is None:
                raise ReaderError(
                    path,
                    f"required column missing (looked for {list(_FIELD_CANDIDATES[required])}; "
                    f"map yours with options['columns']); columns present: {table.colnames}",
                    column=required,
                )

        lines: dict[str, dict[str, str]] = {}
        ignored: list[str] = []
        for key, actual in cols.items():
            m = LINE_COLUMN.match(key)
            if m is None:
                continue
            if m["line"].upper() not in LINES:
                ignored.append(actual)
                continue
            lines.setdefault(m["line"].upper(), {})[m["qty"].upper()] = actual
        for line_id, qty in lines.items():
            if not any(q in qty for q in _VALUE_QUANTITIES):
                raise ReaderError(
                    path,
                    f"line {line_id} has only {sorted(qty)} columns; it needs at least one of "
                    f"{', '.join(f'{line_id}_{q}' for q in _VALUE_QUANTITIES)}",
                    column=next(iter(qty.values())),
                )
            for q in qty:
                if q.endswith("_ERR") and q[: -len("_ERR")] not in qty:
                    raise ReaderError(
                        path, f"column {qty[q]} has no {line_id}_{q[: -len('_ERR')]} column beside it", column=qty[q]
                    )

        flux_unit = opts.get("flux_unit")
        ref_unit = None
        for qty in lines.values():
            unit = table[qty["FLUX"]].unit if "FLUX" in qty else None
            if unit is not None:
                ref_unit = unit
                break
        if flux_unit is None and ref_unit is not None:
            flux_unit = normalise_flux_unit(ref_unit.to_string())

        ids = [self._text(v) for v in table[field_col["id"]]]
        for i, oid in enumerate(ids):
            if not oid:
                raise ReaderError(path, f"row {i} has an empty object id", column=field_col["id"])
        check_unique_ids(path, ids, column=field_col["id"])

        ra_arr = self._floats(path, table, field_col["ra"])
        dec_arr = self._floats(path, table, field_col["dec"])
        z_arr = self._floats(path, table, field_col["z"]) if field_col["z"] else None
        parents = [self._text(v) or None for v in table[field_col["parent"]]] if field_col["parent"] else None
        values = {
            line_id: {
                q: self._floats(path, table, c, ref_unit if q.startswith("FLUX") else u.km / u.s)
                for q, c in qty.items()
            }
            for line_id, qty in lines.items()
        }
        for line_id, qty in lines.items():
            for q in ("FLUX_ERR", "VEL_ERR", "SIGMA_ERR"):
                if q in values[line_id]:
                    bad = np.nonzero(values[line_id][q] < 0)[0]
                    if bad.size:
                        raise ReaderError(
                            path,
                            f"negative {q.lower().replace('_', ' ')} for object {ids[bad[0]]!r} "
                            f"({values[line_id][q][bad[0]]}); {bad.size} row(s) affected",
                            column=qty[q],
                        )

        def opt(arr: np.ndarray | None, i: int) -> float | None:
            if arr is None or not np.isfinite(arr[i]):
                return None
            return float(arr[i])

        sources: list[SourceRow] = []
        spectra: list[SpectrumRow] = []
        for i, oid in enumerate(ids):
            ra, dec = check_position(
                path, opt(ra_arr, i), opt(dec_arr, i), what=f"object {oid!r}", column=field_col["ra"]
            )
            z = opt(z_arr, i)
            parent = parents[i] if parents else None
            measured: list[LineMeasurement] = []
            for line_id, vals in values.items():
                flux = opt(vals.get("FLUX"), i)
                velocity, sigma = opt(vals.get("VEL"), i), opt(vals.get("SIGMA"), i)
                if flux is None and velocity is None and sigma is None:
                    continue  # not measured: absent, not an error
                measured.append(
                    LineMeasurement(
                        line=line_id,
                        flux=flux,
                        flux_err=None if flux is None else opt(vals.get("FLUX_ERR"), i),
                        velocity=velocity,
                        velocity_err=None if velocity is None else opt(vals.get("VEL_ERR"), i),
                        sigma=sigma,
                        sigma_err=None if sigma is None else opt(vals.get("SIGMA_ERR"), i),
                    )
                )
            sources.append(SourceRow(object_id=oid, ra=ra, dec=dec, z=z, parent_object_id=parent))
            spectra.append(
                SpectrumRow(
                    object_id=oid,
                    source_object_id=oid,
                    ra=ra,
                    dec=dec,
                    z=z,
                    flux_unit=flux_unit,
                    lines=measured,
                    meta={"row": i},
                )
            )
        known = set(ids)
        implied = sorted(
            {s.parent_object_id for s in sources if s.parent_object_id and s.parent_object_id not in known}
        )
        parent_rows = [SourceRow(object_id=p, ra=None, dec=None, meta={"implied_by": "parent column"}) for p in implied]
        meta = {"lines": sorted(lines, key=list(LINES).index), "ignored_columns": ignored, "n_rows": len(ids)}
        return FileContents(
            reader=self.name,
            sources=parent_rows + sources,
            spectra=iter(spectra),
            meta=meta,
            dust_corrected=bool(opts.get("dust_corrected", False)),
        )

    # ------------------------------------------------------------------ helpers

    def _load(self, path: Path, fmt: str | None) -> Table:
        try:
            kind = (fmt or _kind(path) or "").lower()
        except (OSError, UnicodeDecodeError) as err:
            raise ReaderError(path, f"not a FITS, CSV or ECSV file: {err}") from err
        if kind not in ("fits", "csv", "ecsv"):
            raise ReaderError(path, "not a FITS, CSV or ECSV file (binary content)")
        if kind == "fits":
            with open_fits(path) as hdul:
                for hdu in hdul[1:]:
                    if str(hdu.header.get("XTENSION", "")).strip() == "BINTABLE":
                        hdu_data(path, hdu)  # turns a truncated table into ReaderError
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", AstropyWarning)
                            # Table.read on the HDU keeps TUNITs as column units.
                            return Table.read(hdu, format="fits")
            raise ReaderError(path, "no binary table HDU in the file", hdu="1")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyWarning)
                return Table.read(path, format="ascii.ecsv" if kind == "ecsv" else "ascii.csv")
        except (ValueError, astropy_ascii.InconsistentTableError, UnicodeDecodeError, KeyError) as err:
            raise ReaderError(path, f"cannot parse as {kind.upper()}: {err}") from err

    @staticmethod
    def _renames(path: object, colnames: list[str], mapping: Mapping[str, str]) -> dict[str, str]:
        """file column -> canonical name, from the ``columns`` option (see module doc)."""
        by_upper = {c.upper(): c for c in colnames}
        renames: dict[str, str] = {}
        for key, value in mapping.items():
            k, v = str(key), str(value)
            if k.upper() in by_upper:
                renames[by_upper[k.upper()]] = v
                continue
            if k.lower() in _FIELD_CANDIDATES and v.upper() in by_upper:
                renames[by_upper[v.upper()]] = k.lower()
                continue
            prefixed = [c for c in colnames if (m := LINE_COLUMN.match(c)) and m["line"].upper() == k.upper()]
            if not prefixed:
                raise ReaderError(
                    path, f"option columns names {k!r}, which matches no column or line prefix; columns: {colnames}"
                )
            for c in prefixed:
                m = LINE_COLUMN.match(c)
                assert m is not None
                renames[c] = f"{v}_{m['qty']}"
        return renames

    @staticmethod
    def _field(cols: Mapping[str, str], field: str, candidates: tuple[str, ...]) -> str | None:
        for cand in (field, *candidates):
            if cand.upper() in cols:
                return cols[cand.upper()]
        return None

    @staticmethod
    def _text(value: Any) -> str:
        if value is np.ma.masked:
            return ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return str(value).strip()

    @staticmethod
    def _floats(path: object, table: Table, name: str, unit: Any = None) -> np.ndarray:
        col = table[name]
        try:
            data = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan)
        except (TypeError, ValueError) as err:
            raise ReaderError(path, f"column is not numeric: {err}", column=name) from err
        if unit is not None and col.unit is not None and col.unit != unit:
            try:
                data = data * col.unit.to(unit)
            except u.UnitConversionError as err:
                raise ReaderError(path, f"unit {col.unit} does not convert to {unit}", column=name) from err
        return np.asarray(data, dtype=np.float64)


#: the registered instance
reader = LineCatalogReader()
