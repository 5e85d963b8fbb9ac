"""Spectrum download (FITS or VOTable binary table) and its IVOA DataLink 1.1 service.

Pixels come from ``catalog.spectrum_pixels`` through the read path, so a download sees
exactly what a query may see. ``/datalink?ID=<spectrum_id>`` answers the {links} table
whose ``#this`` rows point at the download, which TOPCAT's DataLink activation plots.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from xml.sax.saxutils import escape

import numpy as np

from skyledger.schema.errors import QueryError
from skyledger.schema.readpath import Limits, run_reader_query
from skyledger.schema.settings import Settings

__all__ = ["SpectrumNotFound", "read_spectrum", "spectrum_fits", "spectrum_votable", "datalink_xml", "DOWNLOAD_FORMATS"]

#: format= value -> media type.
DOWNLOAD_FORMATS = {"fits": "application/fits", "votable": "application/x-votable+xml"}

#: Pixel columns: (name, view column, unit (None: the flux unit's), UCD, description).
_COLUMNS = [
    ("WAVE", "wave", "Angstrom", "em.wl", "Vacuum wavelength"),
    ("FLUX", "flux", "flux", "phot.flux.density;em.wl", "Flux density"),
    ("IVAR", "ivar", "ivar", "stat.weight;phot.flux.density", "Inverse variance of the flux"),
    ("MASK", "mask", "", "meta.code.qual", "The survey's pixel bitmask, 0 = good"),
    ("RESOLUTION", "resolution", "", "spect.resolution", "Instrumental resolving power lambda/FWHM"),
]


class SpectrumNotFound(QueryError):
    pass


def parse_id(value: str) -> int:
    text = value.strip().rsplit("/", 1)[-1].rsplit("?", 1)[-1]
    try:
        spectrum_id = int(text)
    except ValueError:
        raise QueryError(f"{value!r} is not a spectrum id (the spectrum_id column of catalog.spectra, a whole number)") from None
    if not 0 < spectrum_id < 2**63:
        raise SpectrumNotFound(f"there is no spectrum {spectrum_id}")
    return spectrum_id


def read_spectrum(settings: Settings, spectrum_id: int) -> dict:
    """Pixels and the spectrum's catalog row; :class:`SpectrumNotFound` when there is none."""
    # spectrum_id is an int (parse_id), so the literal is safe.
    sql = (
        "SELECT p.wave, p.flux, p.ivar, p.mask, p.resolution, p.flux_unit, s.survey, s.object_id, s.ra, s.dec, s.z, "
        f"s.file FROM catalog.spectrum_pixels AS p JOIN catalog.spectra AS s USING (spectrum_id) WHERE spectrum_id = {spectrum_id}"
    )
    result = run_reader_query(settings, sql, Limits(statement_timeout_s=settings.tap_sync_timeout_s, max_rows=1))
    if not result.rows:
        raise SpectrumNotFound(
            f"there is no spectrum {spectrum_id} with pixels in catalog.spectra (see catalog.spectra.spectrum_id)"
        )
    return dict(zip(result.columns, result.rows[0]))


def _arrays(spec: dict) -> list[np.ndarray]:
    n = len(spec["wave"])
    out = []
    for _, col, *_ in _COLUMNS:
        values = spec[col]
        dtype = {"wave": np.float64, "mask": np.int32}.get(col, np.float32)
        if values is None:
            arr = np.zeros(n, dtype) if col == "mask" else np.full(n, np.nan, dtype)
        else:
            arr = np.asarray([np.nan if v is None else v for v in values] if col != "mask" else
                             [0 if v is None else v for v in values], dtype=dtype)
        out.append(arr)
    return out


def _units(spec: dict) -> list[str | None]:
    flux = spec.get("flux_unit") or None
    units = []
    for _, _, unit, *_ in _COLUMNS:
        if unit == "flux":
            units.append(flux)
        elif unit == "ivar":
            units.append(_inverse_square(flux))
        else:
            units.append(unit or None)
    return units


def _inverse_square(unit: str | None) -> str | None:
    """The unit of an inverse variance: ``unit`` to the power -2, as astropy writes it."""
    if not unit:
        return None
    import astropy.units as u

    try:
        return (u.Unit(unit) ** -2).to_string()
    except ValueError:
        return None


def _table(spec: dict):
    from astropy.table import Table

    table = Table(_arrays(spec), names=[c[0] for c in _COLUMNS])
    for (name, _, _, ucd, desc), unit in zip(_COLUMNS, _units(spec)):
        if unit:
            try:
                table[name].unit = unit
            except ValueError:
                pass  # a unit astropy does not parse stays in the description
        table[name].description = desc
        table[name].meta["ucd"] = ucd
    return table


def spectrum_fits(spectrum_id: int, spec: dict) -> bytes:
    from astropy.io import fits

    table = _table(spec)
    hdu = fits.table_to_hdu(table)
    hdu.name = "SPECTRUM"
    header = hdu.header
    header["SPEC_ID"] = (spectrum_id, "catalog.spectra.spectrum_id")
    for key, col, comment in (("SURVEY", "survey", "Survey"), ("OBJECT", "object_id", "The survey's object id"),
                              ("RA", "ra", "[deg] ICRS"), ("DEC", "dec", "[deg] ICRS"), ("Z", "z", "Redshift")):
        if spec.get(col) is not None:
            header[key] = (spec[col], comment)
    header["FLUXUNIT"] = (spec.get("flux_unit") or "", "Unit of FLUX")
    header["VACUUM"] = (True, "WAVE is in vacuum")
    for i, (_, _, _, ucd, _) in enumerate(_COLUMNS, start=1):
        header[f"TUCD{i}"] = ucd
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def spectrum_votable(spectrum_id: int, spec: dict) -> bytes:
    from astropy.io.votable import from_table

    table = _table(spec)
    vot = from_table(table)
    resource = vot.resources[0]
    t = resource.tables[0]
    t.name = f"spectrum_{spectrum_id}"
    for fld, (_, _, _, ucd, _) in zip(t.fields, _COLUMNS):
        fld.ucd = ucd
    buf = io.BytesIO()
    vot.to_xml(buf, tabledata_format="binary2")
    return buf.getvalue()


def datalink_xml(base: str, ids: Sequence[str], found: dict[str, int | None]) -> bytes:
    """DataLink 1.1 {links}: per ID, #this rows to the FITS and VOTable downloads, or an error row.
    ``found``: ID -> spectrum_id (None: unknown)."""
    rows = []
    for ident in ids:
        spectrum_id = found.get(ident)
        if spectrum_id is None:
            rows.append((ident, "", "", f"NotFoundFault: there is no spectrum {ident}", "", "", "", ""))
            continue
        for fmt, mime in DOWNLOAD_FORMATS.items():
            rows.append((ident, f"{base}/spectra/{spectrum_id}?format={fmt}", "", "", "#this",
                         f"Spectrum {spectrum_id} ({fmt.upper()})", mime, ""))
    fields = [
        ("ID", "meta.id;meta.main", "char", ""), ("access_url", "meta.ref.url", "char", ""),
        ("service_def", "meta.ref", "char", ""), ("error_message", "meta.code.error", "char", ""),
        ("semantics", "meta.code", "char", ""), ("description", "meta.note", "char", ""),
        ("content_type", "meta.code.mime", "char", ""), ("content_length", "phys.size;meta.file", "long", "byte"),
    ]
    head = "".join(
        f'<FIELD name="{n}" ucd="{u}" datatype="{d}"' + (' arraysize="*"' if d == "char" else "")
        + (f' unit="{unit}"' if unit else "") + "/>"
        for n, u, d, unit in fields
    )
    body = "".join("<TR>" + "".join(f"<TD>{escape(str(v))}</TD>" for v in row) + "</TR>" for row in rows)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE type="results">'
        '<INFO name="standardID" value="ivo://ivoa.net/std/DataLink#links-1.1"/>'
        f'<TABLE name="links">{head}<DATA><TABLEDATA>{body}</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>\n'
    ).encode()


def datalink_error(message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE type="results">'
        f'<INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO></RESOURCE></VOTABLE>\n'
    ).encode()


def existing_ids(settings: Settings, ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` have pixels to download."""
    if not ids:
        return set()
    listed = ", ".join(str(int(i)) for i in ids)
    result = run_reader_query(
        settings, f"SELECT spectrum_id FROM catalog.spectra WHERE n_pix > 0 AND spectrum_id IN ({listed})",
        Limits(statement_timeout_s=settings.tap_sync_timeout_s, max_rows=len(ids)),
    )
    return {row[0] for row in result.rows}


