"""One unit per release column: line fluxes converted from each spectrum's own unit.

The database keeps every line flux in the unit of its spectrum (``spectrum.flux_unit``:
a flux density for a fitted spectrum, whose line flux is then in that unit times
Angstrom; a flux for a line catalogue). A release column has one unit for all its rows,
so the release query multiplies ``flux`` and ``flux_err`` by a factor per spectrum unit,
computed here with astropy and handed to the query in a temporary table; the database is
left as it is. A unit that is unknown (NULL, empty, unparsable) or that is no flux
(density) per wavelength (``Jy``, counts) has no factor: those fluxes are NULL in the
release, and ``spectra.flux_unit`` still says why.
"""

from __future__ import annotations

import warnings

import astropy.units as u
import psycopg
from psycopg import sql

__all__ = ["LINE_FLUX_UNIT", "FLUX_SCALE_TABLE", "line_flux_scale", "load_flux_scales"]

#: Unit of ``flux`` and ``flux_err`` in release ``lines``: what most bundled and survey
#: spectra (SDSS, MaNGA) are in, so most values are copied unchanged (factor 1).
LINE_FLUX_UNIT = "1e-17 erg / (s cm2)"

#: Temporary table (flux_unit, scale) the ``lines`` query reads the factors from.
FLUX_SCALE_TABLE = "release_flux_scale"


def line_flux_scale(flux_unit: str | None) -> float | None:
    """Factor from a line flux stored for a spectrum in ``flux_unit`` to :data:`LINE_FLUX_UNIT`,
    or None when there is none."""
    if flux_unit is None or not flux_unit.strip():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", u.UnitsWarning)
            unit = u.Unit(flux_unit, parse_strict="raise")
    except (ValueError, TypeError):
        return None
    target = u.Unit(LINE_FLUX_UNIT)
    # A flux density per wavelength times Angstrom is a flux; a flux is one already.
    for candidate in (unit * u.AA, unit):
        try:
            return float(candidate.to(target))
        except u.UnitConversionError:
            continue
    return None


def load_flux_scales(conn: psycopg.Connection) -> None:
    """Fill the temporary table of factors for every flux unit a spectrum has."""
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (flux_unit text PRIMARY KEY, scale double precision NOT NULL) "
                "ON COMMIT DROP").format(sql.Identifier(FLUX_SCALE_TABLE))
    )
    units = [r[0] for r in conn.execute("SELECT DISTINCT flux_unit FROM spectrum WHERE flux_unit IS NOT NULL")]
    rows = [(unit, scale) for unit in units if (scale := line_flux_scale(unit)) is not None]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} (flux_unit, scale) VALUES (%s, %s)").format(sql.Identifier(FLUX_SCALE_TABLE)),
                rows,
            )
