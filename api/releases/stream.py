"""Stream a frozen table out of PostgreSQL as Arrow record batches, in bounded memory.

``COPY ... TO STDOUT (FORMAT csv)`` is the cheapest way out of the server; pyarrow's
multithreaded CSV parser turns each chunk of a few MB into typed columns. CSV keeps
NULL (an unquoted empty field) apart from the empty string (``""``), and PostgreSQL
prints doubles in their shortest exact form, so values survive unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from .tables import ReleaseColumn

__all__ = ["ARROW_TYPES", "arrow_type", "stream_batches"]

ARROW_TYPES = {
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "text": pa.string(),
    "bool": pa.bool_(),
}

#: Bytes of CSV parsed at a time: the memory a stream holds, whatever the table's size.
CHUNK_BYTES = 8 << 20


def arrow_type(column: ReleaseColumn) -> pa.DataType:
    return ARROW_TYPES[column.pg_type]


def stream_batches(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    columns: Sequence[ReleaseColumn],
    *,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Every row of ``schema.table`` (in its physical order) as record batches."""
    names = [c.name for c in columns]
    convert = pacsv.ConvertOptions(
        column_types={c.name: arrow_type(c) for c in columns},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    options = dict(
        read_options=pacsv.ReadOptions(column_names=names, use_threads=True),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=convert,
    )
    query = sql.SQL("COPY {}.{} ({}) TO STDOUT (FORMAT csv)").format(
        sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names))
    )

    def parse(buf: bytearray) -> Iterator[pa.RecordBatch]:
        parsed = pacsv.read_csv(pa.py_buffer(bytes(buf)), **options)
        yield from parsed.combine_chunks().to_batches()

    buf = bytearray()
    with conn.cursor() as cur, cur.copy(query) as copy:
        # libpq hands over one row per read; gather them into chunks worth a parser call.
        for row in copy:
            buf += row
            if len(buf) >= chunk_bytes:
                yield from parse(buf)
                buf = bytearray()
    if buf:
        yield from parse(buf)
