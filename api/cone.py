"""Cone search from Python: a thin call of the SQL functions the migrations create."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["ConeMatch", "cone_search", "cone_search_spectra"]


@dataclass(frozen=True)
class ConeMatch:
    id: int
    ra: float
    dec: float
    distance_arcsec: float


def cone_search(session: Session, ra: float, dec: float, radius_arcsec: float) -> list[ConeMatch]:
    """Sources within ``radius_arcsec`` of (ra, dec) in ICRS degrees, nearest first."""
    rows = session.execute(
        text("SELECT source_id, ra, dec, distance_arcsec FROM cone_search(:ra, :dec, :r)"),
        {"ra": ra, "dec": dec, "r": radius_arcsec},
    )
    return [ConeMatch(*row) for row in rows]


def cone_search_spectra(session: Session, ra: float, dec: float, radius_arcsec: float) -> list[ConeMatch]:
    """Spectra (including IFU spaxels and bins) within ``radius_arcsec``, nearest first."""
    rows = session.execute(
        text("SELECT spectrum_id, ra, dec, distance_arcsec FROM cone_search_spectra(:ra, :dec, :r)"),
        {"ra": ra, "dec": dec, "r": radius_arcsec},
    )
    return [ConeMatch(*row) for row in rows]
