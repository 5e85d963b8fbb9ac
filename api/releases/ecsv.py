"""Streaming ECSV writer: the astropy-2.0 YAML header, then plain comma-separated rows.

Every header line starts with ``#``, so tools that skip comment lines read the file as
an ordinary CSV with a header row. NULL is an empty field (astropy reads it as masked);
an empty string is written as ``""``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from .content import ReleaseInfo, TableContent, header_yaml

__all__ = ["EcsvWriter"]


class EcsvWriter:
    """ECSV 1.0 with comma delimiter, written batch by batch."""

    def __init__(self, path: Path, info: ReleaseInfo, content: TableContent) -> None:
        self.path = path
        self.rows = 0
        self._bools = [c.name for c in content.columns if c.pg_type == "bool"]
        lines = ["%ECSV 1.0", "---", *header_yaml(info, content, delimiter=",")]
        head = "".join(f"# {line}\n" for line in lines) + ",".join(content.table.column_names) + "\n"
        self._sink = pa.OSFile(str(path), "wb")
        self._sink.write(head.encode("utf-8"))
        self._writer: pacsv.CSVWriter | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._bools:
            # astropy's ECSV reader takes True/False, where Arrow writes true/false.
            names = batch.schema.names
            batch = pa.RecordBatch.from_arrays(
                [pc.if_else(batch.column(n), "True", "False") if n in self._bools else batch.column(n) for n in names],
                names=names,
            )
        if self._writer is None:
            self._writer = pacsv.CSVWriter(self._sink, batch.schema, write_options=pacsv.WriteOptions(include_header=False))
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> int:
        if self._writer is not None:
            self._writer.close()
        self._sink.close()
        return self.rows

    def abort(self) -> None:
        self._sink.close()
