"""The columns ingest writes by binary COPY, and their PostgreSQL types, in row order.

The row builders (:mod:`skyledger.ingest.table_rows`, :mod:`skyledger.ingest.catalogue_lines`)
make tuples in this order; the ingest benchmark's ``\\copy`` ceiling copies exactly these
columns. Written out rather than derived from the models because the read-ahead worker
processes import this module and must not load SQLAlchemy (~20 MiB and half a second
each); ``tests/schema/test_declarations.py`` checks every name and type against the
models, so the two cannot drift apart.
"""

from __future__ import annotations

__all__ = ["LINE_COLUMNS", "SOURCE_COLUMNS", "SPECTRUM_COLUMNS"]

SOURCE_COLUMNS = [
    ("id", "int8"), ("survey_id", "int4"), ("ingest_file_id", "int8"), ("object_id", "text"),
    ("parent_id", "int8"), ("ra", "float8"), ("dec", "float8"), ("z", "float8"), ("flags", "int4"), ("meta", "jsonb"),
]
SPECTRUM_COLUMNS = [
    ("source_id", "int8"), ("survey_id", "int4"), ("ingest_file_id", "int8"), ("object_id", "text"),
    ("ra", "float8"), ("dec", "float8"), ("z", "float8"), ("n_pix", "int4"), ("wave_grid_id", "int8"),
    ("flux", "float4[]"), ("ivar", "float4[]"), ("mask", "int4[]"), ("resolution", "float4[]"),
    ("flux_unit", "text"), ("flags", "int4"), ("meta", "jsonb"), ("wave_min", "float8"), ("wave_max", "float8"),
    ("resolution_median", "float4"),
]
LINE_COLUMNS = [
    ("run_id", "int8"), ("spectrum_id", "int8"), ("line", "text"), ("velocity", "float8"), ("velocity_err", "float8"),
    ("sigma", "float8"), ("sigma_err", "float8"), ("flux", "float8"), ("flux_err", "float8"), ("flags", "int4"),
]
