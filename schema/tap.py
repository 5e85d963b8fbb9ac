"""TAP_SCHEMA rows (IVOA TAP 1.1, section 4) for the catalog views and the release tables.

Generated from the same column declarations as the views' comments and the release
files, so a TAP service (issue: query service) never keeps a metadata copy of its own.
Rows are plain dicts with the TAP_SCHEMA column names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .catalog import catalog_views

__all__ = ["ADQL_TYPES", "TapTable", "catalog_tap_tables", "tap_schema_rows"]

#: ADQL datatype of each PostgreSQL type the views and releases use (TAP 1.1, 4.3).
ADQL_TYPES = {
    "int2": "SMALLINT", "int4": "INTEGER", "int8": "BIGINT", "float4": "REAL", "float8": "DOUBLE",
    "text": "VARCHAR", "bool": "BOOLEAN", "timestamptz": "TIMESTAMP",
}  # fmt: skip


class TapTable:
    """A table as TAP_SCHEMA lists it: schema, name, description and columns
    (objects with name, pg_type, description, unit, ucd), and the columns to index."""

    def __init__(self, schema: str, name: str, description: str, columns: Sequence[Any], key: Iterable[str] = (),
                 table_type: str = "view") -> None:
        self.schema, self.name, self.description = schema, name, description
        self.columns, self.key, self.table_type = tuple(columns), tuple(key), table_type


def catalog_tap_tables() -> list[TapTable]:
    """Every view of the catalog schema."""
    out = []
    for view in catalog_views():
        key = view.result.release_key if view.result is not None else (view.columns[0].name,)
        out.append(TapTable("catalog", view.name, view.description, view.columns, key))
    return out


def tap_schema_rows(tables: Sequence[TapTable], schema_descriptions: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Rows of TAP_SCHEMA.schemas, .tables and .columns for ``tables``."""
    schemas = sorted({t.schema for t in tables})
    rows: dict[str, list[dict[str, Any]]] = {
        "schemas": [{"schema_name": s, "description": schema_descriptions.get(s, ""), "utype": None} for s in schemas],
        "tables": [],
        "columns": [],
    }
    for index, table in enumerate(tables):
        qualified = f"{table.schema}.{table.name}"
        rows["tables"].append({
            "schema_name": table.schema, "table_name": qualified, "table_type": table.table_type,
            "description": table.description, "utype": None, "table_index": index,
        })
        for position, col in enumerate(table.columns):
            rows["columns"].append({
                "table_name": qualified, "column_name": col.name, "datatype": ADQL_TYPES[col.pg_type],
                "arraysize": "*" if col.pg_type == "text" else None, "xtype": None, "size": None,
                "description": col.description, "unit": col.unit, "ucd": col.ucd, "utype": None,
                "principal": int(col.name in table.key or (col.ucd or "").endswith("meta.main")),
                "indexed": int(col.name == (table.key or ("",))[0]), "std": 0, "column_index": position,
            })
    return rows
