"""Streaming Parquet writer with the release's metadata.

Each field carries ``unit``, ``ucd`` and ``description`` as Arrow field metadata (read by
any Arrow tool); the schema carries the same ECSV-style YAML header astropy writes
(``table_meta_yaml``) plus string widths, so ``Table.read`` restores units and
descriptions. NULL is Parquet's own null.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .content import ReleaseInfo, TableContent, astropy_unit, header_yaml
from .stream import arrow_type

__all__ = ["parquet_schema", "ParquetTableWriter"]


def parquet_schema(info: ReleaseInfo, content: TableContent) -> pa.Schema:
    fields = []
    for column in content.columns:
        meta = {"description": column.description}
        unit = astropy_unit(column.unit)
        if unit is not None:
            meta["unit"] = unit
        if column.ucd:
            meta["ucd"] = column.ucd
        fields.append(pa.field(column.name, arrow_type(column), metadata=meta))
    schema_meta = {"table_meta_yaml": "\n".join(header_yaml(info, content, delimiter=None))}
    for column in content.columns:
        if column.pg_type == "text":
            # astropy sizes its fixed-width string columns from these.
            schema_meta[f"table::len::{column.name}"] = str(max(1, content.max_bytes.get(column.name, 0)))
    return pa.schema(fields, metadata=schema_meta)


class ParquetTableWriter:
    """One Parquet file, written batch by batch (one row group per batch)."""

    def __init__(self, path: Path, info: ReleaseInfo, content: TableContent) -> None:
        self.path = path
        self.rows = 0
        self._schema = parquet_schema(info, content)
        self._writer = pq.ParquetWriter(str(path), self._schema)

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=self._schema))
        self.rows += batch.num_rows

    def close(self) -> int:
        self._writer.close()
        return self.rows

    def abort(self) -> None:
        self._writer.close()
