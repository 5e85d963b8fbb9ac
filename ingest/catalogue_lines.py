"""A line catalogue's measurements, recorded under an ``ingested`` run of their own.

Each loaded file that carries line measurements gets one run (task ``ingested``), made
through the run service (:mod:`skyledger.schema.runs`) on the file's own connection:
the run starts, holds the rows, succeeds and joins ``current`` inside the transaction
that loads the file, so the lines are current exactly when the file is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from skyledger.ingest.copy_columns import LINE_COLUMNS
from skyledger.ingest.records import FileContents, LineMeasurement
from skyledger.ingest.table_rows import LINE_FLAGS
from skyledger.schema.pgcopy import copy_rows

__all__ = ["INGESTED_TASK", "INGESTED_VERSION", "copy_lines"]

INGESTED_TASK = "ingested"
INGESTED_VERSION = 1


def copy_lines(
    conn: psycopg.Connection,
    lines: list[tuple[str, list[LineMeasurement]]],
    contents: FileContents,
    *,
    file_id: int,
    uri: str,
) -> int:
    """COPY the file's line measurements (by spectrum object id) under a new run; returns
    how many rows went in. The caller's transaction commits or rolls back the lot."""
    # Imported here, not at the top: the run service needs SQLAlchemy (a third of a second
    # to import), and read-ahead workers, which import the store but never write line
    # catalogues (they are not groupable), start once per batch.
    from skyledger.schema import runs

    params = {"ingest_file_id": file_id, "file": uri, "dust_corrected": contents.dust_corrected}
    run = runs.start_run(
        conn, task=INGESTED_TASK, version=INGESTED_VERSION, params=params, model_sha256={}, upstream_run_ids=[],
        device=None, prefect_flow_run_id=None,
    )  # fmt: skip
    spectrum_ids = dict(conn.execute("SELECT object_id, id FROM spectrum WHERE ingest_file_id = %s", (file_id,)))
    base_flags = LINE_FLAGS["FROM_CATALOGUE"] | (LINE_FLAGS["DUST_CORRECTED"] if contents.dust_corrected else 0)

    def rows() -> Iterator[tuple[Any, ...]]:
        for object_id, measured in lines:
            sid = spectrum_ids[object_id]
            for m in measured:
                yield (run.id, sid, m.line, m.velocity, m.velocity_err, m.sigma, m.sigma_err, m.flux, m.flux_err, base_flags)

    n = copy_rows(conn, "line_measurement", LINE_COLUMNS, rows())
    runs.heartbeat(conn, run.id, inputs=len(lines), results=n, flagged=0)
    # Catalogue lines are current as soon as the file is: the run joins `current` in the
    # same transaction that makes it succeed.
    runs.finish_run(conn, run.id)
    return n
