"""Declarative base, naming convention and the one way to declare a documented column."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Double, MetaData
from sqlalchemy.orm import DeclarativeBase, MappedColumn, mapped_column

__all__ = ["Base", "NAMING_CONVENTION", "column", "column_meta", "dec_column", "ra_column"]

# Every constraint and index gets a predictable name, so Alembic can find it again.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def column(
    *args: Any,
    doc: str,
    unit: str | None = None,
    ucd: str | None = None,
    **kwargs: Any,
) -> MappedColumn[Any]:
    """A mapped column that carries its description (as the SQL comment), unit and UCD.

    This is the single declaration the release writer, the data-model document and the
    HTTP schema read their column metadata from.
    """
    info: dict[str, str] = {}
    if unit is not None:
        info["unit"] = unit
    if ucd is not None:
        info["ucd"] = ucd
    return mapped_column(*args, comment=doc, info=info, **kwargs)


def column_meta(col: Any) -> dict[str, str | None]:
    """Unit, UCD and description of a Core column declared with :func:`column`."""
    return {
        "unit": col.info.get("unit"),
        "ucd": col.info.get("ucd"),
        "description": col.comment,
    }


def ra_column(doc: str, *, nullable: bool = True) -> Any:
    return column(Double, doc=doc, unit="deg", ucd="pos.eq.ra;meta.main", nullable=nullable)


def dec_column(doc: str, *, nullable: bool = True) -> Any:
    return column(Double, doc=doc, unit="deg", ucd="pos.eq.dec;meta.main", nullable=nullable)
