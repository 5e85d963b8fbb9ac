"""TAP_SCHEMA (IVOA TAP 1.1, section 4) for the catalog views, the release tables and itself.

Generated from the same column declarations as the views' comments and the release
files, so a TAP service (issue: query service) never keeps a metadata copy of its own.
Rows are plain dicts with the TAP_SCHEMA column names.

The rows live in the database, in schema ``tap_schema`` (migration 0023), where readers
and ADQL queries see them like any other table. The owner rewrites them with
:func:`refresh_tap_schema` after migrations (:func:`skyledger.schema.database.upgrade`)
and after a release is created; the query service only ever reads them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, text

from .catalog import catalog_views
from .results import ViewColumn

__all__ = [
    "VOTABLE_TYPES",
    "LINKS",
    "SCHEMA",
    "TAP_SCHEMA_TABLES",
    "TapTable",
    "tap_datatype",
    "catalog_tap_tables",
    "refresh_tap_schema",
    "tap_schema_ddl",
    "tap_schema_rows",
]

#: The schema the TAP_SCHEMA tables live in (ADQL's TAP_SCHEMA, case-insensitive).
SCHEMA = "tap_schema"

#: ADQL datatype of each PostgreSQL type the views and releases use (TAP 1.1, 4.3).
#: Arrays are listed in both spellings: ``float4[]`` (:func:`skyledger.schema.results.pg_type`)
#: and ``_float4`` (PostgreSQL's own type name, what a result's type OID resolves to).
VOTABLE_TYPES = {
    "int2": "short", "int4": "int", "int8": "long", "float4": "float", "float8": "double",
    "text": "char", "bool": "boolean", "timestamptz": "char",
}  # fmt: skip
# TAP 1.1 (section 4.3) describes columns in the VOTable type system: datatype,
# arraysize and the DALI xtype (TAP 1.0 used ADQL type names such as VARCHAR).


def tap_datatype(pg_type: str) -> tuple[str, str | None, str | None]:
    """(datatype, arraysize, xtype) of a PostgreSQL type as TAP_SCHEMA.columns lists it:
    text, timestamps and arrays (``_float8`` or ``float8[]``) are variable-length (``*``)."""
    element = pg_type[1:] if pg_type.startswith("_") else pg_type.removesuffix("[]")
    is_array = element != pg_type
    if is_array and element not in ("int2", "int4", "int8", "float4", "float8"):
        raise KeyError(f"no TAP datatype for PostgreSQL type {pg_type}")
    variable = is_array or element in ("text", "timestamptz")
    return VOTABLE_TYPES[element], "*" if variable else None, "timestamp" if element == "timestamptz" else None


class TapTable:
    """A table as TAP_SCHEMA lists it: schema, name, description and columns
    (objects with name, pg_type, description, unit, ucd), and the columns to index.

    ``foreign_keys`` are links (column, target table, target column) beyond those
    :data:`LINKS` derives from column names."""

    def __init__(self, schema: str, name: str, description: str, columns: Sequence[Any], key: Iterable[str] = (),
                 table_type: str = "view", foreign_keys: Iterable[tuple[str, str, str]] = ()) -> None:
        self.schema, self.name, self.description = schema, name, description
        self.columns, self.key, self.table_type = tuple(columns), tuple(key), table_type
        self.foreign_keys = tuple(foreign_keys)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def restricted(self, names: set[str]) -> TapTable:
        """The table with only the columns in ``names`` (those the database has)."""
        return TapTable(self.schema, self.name, self.description, [c for c in self.columns if c.name in names],
                        self.key, self.table_type, [fk for fk in self.foreign_keys if fk[0] in names])


def catalog_tap_tables() -> list[TapTable]:
    """Every view of the catalog schema."""
    out = []
    for view in catalog_views():
        key = view.result.release_key if view.result is not None else (view.columns[0].name,)
        out.append(TapTable("catalog", view.name, view.description, view.columns, key))
    return out


def _col(name: str, pg_type: str, description: str, ucd: str | None = None) -> ViewColumn:
    return ViewColumn(name, pg_type, description, ucd=ucd)


def _tap(name: str, description: str, key: tuple[str, ...], columns: Sequence[ViewColumn],
         foreign_keys: Iterable[tuple[str, str, str]] = ()) -> TapTable:
    return TapTable(SCHEMA, name, description, columns, key, table_type="table", foreign_keys=foreign_keys)


_UTYPE = _col("utype", "text", "Utype (data-model reference), if any")
_DESCRIPTION = "description"

#: The TAP_SCHEMA tables, as TAP 1.1 section 4 defines them; migration 0023 creates them
#: (its DDL was printed by :func:`tap_schema_ddl`) and TAP_SCHEMA lists them too.
TAP_SCHEMA_TABLES: tuple[TapTable, ...] = (
    _tap("schemas", "The schemas of this service", ("schema_name",), (
        _col("schema_name", "text", "Schema name, as queries write it", "meta.id;meta.main"),
        _UTYPE,
        _col(_DESCRIPTION, "text", "What the schema holds"),
        _col("schema_index", "int4", "Suggested order of the schemas"),
    )),
    _tap("tables", "The tables and views of this service", ("table_name",), (
        _col("schema_name", "text", "Schema the table belongs to", "meta.id"),
        _col("table_name", "text", "Table name, schema-qualified, as queries write it", "meta.id;meta.main"),
        _col("table_type", "text", "table or view"),
        _UTYPE,
        _col(_DESCRIPTION, "text", "What the table holds"),
        _col("table_index", "int4", "Suggested order of the tables"),
    ), foreign_keys=[("schema_name", "schemas", "schema_name")]),
    _tap("columns", "The columns of every table of this service", ("table_name", "column_name"), (
        _col("table_name", "text", "Table the column belongs to (schema-qualified)", "meta.id"),
        _col("column_name", "text", "Column name", "meta.id;meta.main"),
        _col("datatype", "text", "ADQL datatype"),
        _col("arraysize", "text", "Array size: * for text and arrays of any length, else empty"),
        _col("xtype", "text", "Extended type (DALI), e.g. timestamp or point"),
        _col("size", "int4", "Length of fixed-length values (deprecated by TAP 1.1: see arraysize)"),
        _col(_DESCRIPTION, "text", "What the column holds"),
        _UTYPE,
        _col("unit", "text", "Unit (VOUnit string)"),
        _col("ucd", "text", "Unified Content Descriptor"),
        _col("indexed", "int4", "1 when the column is indexed, else 0"),
        _col("principal", "int4", "1 when the column is one of the table's principal columns, else 0"),
        _col("std", "int4", "1 when the column is defined by a standard, else 0"),
        _col("column_index", "int4", "Position of the column in its table, from 0"),
    ), foreign_keys=[("table_name", "tables", "table_name")]),
    _tap("keys", "Links between tables (column values that identify rows of another table)", ("key_id",), (
        _col("key_id", "text", "Key identifier", "meta.id;meta.main"),
        _col("from_table", "text", "Table the link starts from (schema-qualified)", "meta.id"),
        _col("target_table", "text", "Table the link points to (schema-qualified)", "meta.id"),
        _UTYPE,
        _col(_DESCRIPTION, "text", "What the link means"),
    ), foreign_keys=[("from_table", "tables", "table_name"), ("target_table", "tables", "table_name")]),
    _tap("key_columns", "The columns of every link", ("key_id", "from_column"), (
        _col("key_id", "text", "Key the columns belong to", "meta.id;meta.main"),
        _col("from_column", "text", "Column of the from_table"),
        _col("target_column", "text", "Column of the target_table"),
    ), foreign_keys=[("key_id", "keys", "key_id")]),
)

#: Links a TOPCAT user follows, derived from column names: a column of this name in any
#: table of a schema points at (table, column) of the same schema, when that schema lists
#: the target (releases have no ``runs`` in TAP_SCHEMA, so their run_id links nowhere).
LINKS: dict[str, tuple[str, str]] = {
    "spectrum_id": ("spectra", "spectrum_id"),
    "source_id": ("spectra", "source_id"),
    "run_id": ("runs", "run_id"),
}

_SCHEMA_DESCRIPTIONS = {
    "catalog": "The live catalogue: every ingested spectrum and the results of the best run of the current collection",
    SCHEMA: "This service's tables and columns (IVOA TAP 1.1)",
}


def _links(tables: Sequence[TapTable]) -> list[tuple[TapTable, str, TapTable, str]]:
    """(from table, column, target table, column) of every link among ``tables``."""
    by_name = {t.qualified: t for t in tables}
    out = []
    for table in tables:
        names = {c.name for c in table.columns}
        wanted = {c: (table.schema + "." + t, tc) for c, t, tc in table.foreign_keys}
        for c in table.columns:
            if c.name in LINKS and c.name not in wanted:  # a declared link wins over the naming rule
                wanted[c.name] = (f"{table.schema}.{LINKS[c.name][0]}", LINKS[c.name][1])
        for column, (target_name, target_column) in wanted.items():
            target = by_name.get(target_name)
            if (column in names and target is not None and target is not table
                    and target_column in {c.name for c in target.columns}):
                out.append((table, column, target, target_column))
    return out


def tap_schema_rows(tables: Sequence[TapTable], schema_descriptions: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Rows of every TAP_SCHEMA table (schemas, tables, columns, keys, key_columns) for ``tables``."""
    schemas = list(dict.fromkeys(t.schema for t in tables))
    rows: dict[str, list[dict[str, Any]]] = {
        "schemas": [{"schema_name": s, "description": schema_descriptions.get(s, ""), "utype": None,
                     "schema_index": i} for i, s in enumerate(schemas)],
        "tables": [],
        "columns": [],
        "keys": [],
        "key_columns": [],
    }
    for index, table in enumerate(tables):
        rows["tables"].append({
            "schema_name": table.schema, "table_name": table.qualified, "table_type": table.table_type,
            "description": table.description, "utype": None, "table_index": index,
        })
        for position, col in enumerate(table.columns):
            datatype, arraysize, xtype = tap_datatype(col.pg_type)
            rows["columns"].append({
                "table_name": table.qualified, "column_name": col.name, "datatype": datatype,
                "arraysize": arraysize, "xtype": xtype, "size": None,
                "description": col.description, "unit": col.unit, "ucd": col.ucd, "utype": None,
                "principal": int(col.name in table.key or (col.ucd or "").endswith("meta.main")),
                "indexed": int(col.name == (table.key or ("",))[0]), "std": int(table.schema == SCHEMA),
                "column_index": position,
            })
    for source, column, target, target_column in _links(tables):
        key_id = f"{source.qualified}.{column}"
        rows["keys"].append({
            "key_id": key_id, "from_table": source.qualified, "target_table": target.qualified, "utype": None,
            "description": f"{source.qualified}.{column} is the {target_column} of {target.qualified}",
        })
        rows["key_columns"].append({"key_id": key_id, "from_column": column, "target_column": target_column})
    return rows


# -- the database side --------------------------------------------------------------------

#: The order rows are written in (and deleted in reverse): targets before their references.
_TABLE_ORDER = ("schemas", "tables", "columns", "keys", "key_columns")

_PG_NAMES = {"text": "text", "int4": "integer"}


def _ident(name: str) -> str:
    # TAP 1.1 names a column "size", which ADQL reserves; the SQL is quoted alike.
    return f'"{name}"' if name == "size" else name


def tap_schema_ddl() -> list[str]:
    """CREATE statements of schema tap_schema and its tables, with comments and primary and
    foreign keys (pasted into migration 0023; a test compares the database with them)."""
    out = [f"CREATE SCHEMA {SCHEMA}",
           f"COMMENT ON SCHEMA {SCHEMA} IS {_quote(_SCHEMA_DESCRIPTIONS[SCHEMA])}"]
    for table in TAP_SCHEMA_TABLES:
        lines = [f"    {_ident(c.name)} {_PG_NAMES[c.pg_type]}"
                 + (" NOT NULL" if c.name in table.key or c.name in ("principal", "indexed", "std") else "")
                 for c in table.columns]
        lines.append(f"    PRIMARY KEY ({', '.join(table.key)})")
        lines += [f"    FOREIGN KEY ({c}) REFERENCES {SCHEMA}.{t} ({tc})" for c, t, tc in table.foreign_keys]
        out.append(f"CREATE TABLE {SCHEMA}.{table.name} (\n" + ",\n".join(lines) + "\n)")
        out.append(f"COMMENT ON TABLE {SCHEMA}.{table.name} IS {_quote(table.description)}")
        out += [f"COMMENT ON COLUMN {SCHEMA}.{table.name}.{_ident(c.name)} IS {_quote(c.description)}"
                for c in table.columns]
    return out


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _existing_columns(conn: Connection, tables: Sequence[TapTable]) -> dict[str, set[str]]:
    """The columns each of ``tables`` has in the database (absent: the relation is missing)."""
    found: dict[str, set[str]] = {}
    result = conn.execute(text(
        "SELECT n.nspname || '.' || c.relname, a.attname FROM pg_attribute AS a "
        "JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(:schemas) AND a.attnum > 0 AND NOT a.attisdropped"),
        {"schemas": sorted({t.schema for t in tables})})
    for relation, column in result:
        found.setdefault(relation, set()).add(column)
    return found


def _release_descriptions(conn: Connection) -> dict[str, str]:
    return {name: f"Release {name}: the collection {collection} frozen on {created:%Y-%m-%d}; it never changes"
                  + (f". {notes}" if notes else "")
            for name, collection, created, notes in conn.execute(text(
                "SELECT r.name, c.name, r.created_at, r.notes FROM release AS r "
                "JOIN collection AS c ON c.id = r.collection_id ORDER BY r.created_at, r.name"))}


def refresh_tap_schema(conn: Connection) -> dict[str, int]:
    """Rewrite every TAP_SCHEMA row from the declarations, in the caller's transaction.

    ``conn`` is a SQLAlchemy connection of the database *owner* (readers may only read
    tap_schema). Lists the catalog views, the tables of every release of ``release``, and
    the TAP_SCHEMA tables; each table with only the columns the database has, so a view
    not yet created or a release written by older code never shows a missing column.
    Concurrent refreshes queue on the table lock; readers keep reading the old rows until
    the transaction commits. Returns the number of rows written per table.
    """
    # The release tables are declared by the release writer, a layer above: imported by
    # name at run time, like the task modules (docs/architecture.md).
    release_tap_tables = importlib.import_module("skyledger.api.releases.tables").release_tap_tables
    conn.execute(text("LOCK TABLE " + ", ".join(f"{SCHEMA}.{t}" for t in _TABLE_ORDER) + " IN EXCLUSIVE MODE"))
    releases = _release_descriptions(conn)
    tables = [*catalog_tap_tables(), *(t for name in releases for t in release_tap_tables(name)),
              *TAP_SCHEMA_TABLES]
    existing = _existing_columns(conn, tables)
    tables = [t.restricted(existing[t.qualified]) for t in tables if existing.get(t.qualified)]
    rows = tap_schema_rows(tables, {**_SCHEMA_DESCRIPTIONS, **releases})
    for table in reversed(_TABLE_ORDER):
        conn.execute(text(f"DELETE FROM {SCHEMA}.{table}"))
    for table in _TABLE_ORDER:
        if rows[table]:
            names = list(rows[table][0])
            conn.execute(text(f"INSERT INTO {SCHEMA}.{table} ({', '.join(map(_ident, names))}) "
                              f"VALUES ({', '.join(':' + n for n in names)})"), rows[table])
    return {table: len(rows[table]) for table in _TABLE_ORDER}
