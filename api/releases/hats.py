"""HATS/Parquet catalogues of a release (``release create --hats``), for ``lsdb``.

Each release table with sky positions becomes a HATS catalogue collection under
``hats/TABLE/`` in the release directory: the catalogue partitioned by HEALPix pixel
plus its margin cache, which lsdb opens (``lsdb.open_catalog``), cross-matches and
filters (``cone_search``...) one partition at a time, out of core.

Positions: ``spectra`` carries its own ``ra``/``dec``; a table keyed by
``spectrum_id`` gets its spectrum's ``ra``/``dec`` (from the release's own ``spectra``)
appended as its last two columns. A table with neither (e.g. one keyed by
``source_id``) is not written as HATS. Rows whose spectrum has no position cannot be
placed on the sky and are left out; the manifest says how many.

Memory: lsdb builds a catalogue from one in-memory DataFrame (building from chunks,
out of core, needs hats-import, which skyledger does not depend on), so each table is
read whole. Release tables are small beside the spectra (a row per spectrum or line);
a table that does not fit in memory needs hats-import instead of ``--hats``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from .content import TableContent
from .stream import arrow_type, stream_batches

__all__ = ["HATS_DIR", "HATS_FORMAT", "HatsTable", "has_position", "write_hats"]

#: The release subdirectory holding one HATS collection per table.
HATS_DIR = "hats"
#: file_format of every file of a HATS collection (release_file, manifest).
HATS_FORMAT = "hats"
POSITION = ("ra", "dec")
SPECTRUM_KEY = "spectrum_id"


@dataclass(frozen=True)
class HatsTable:
    table: str
    #: Rows in the catalogue, and rows left out for want of a position.
    rows: int
    no_position: int
    #: Files written, relative to the release directory, in a stable order.
    paths: tuple[str, ...]


def has_position(content: TableContent) -> bool:
    names = {c.name for c in content.columns}
    return set(POSITION) <= names or SPECTRUM_KEY in names


def _arrow(conn: psycopg.Connection, release: str, table: str, columns) -> pa.Table:
    """``columns`` of a release table, whole, as an Arrow table."""
    schema = pa.schema([pa.field(c.name, arrow_type(c)) for c in columns])
    return pa.Table.from_batches(list(stream_batches(conn, release, table, columns)), schema=schema)


def _positions(conn: psycopg.Connection, release: str, spectra: TableContent) -> pa.Table:
    return _arrow(conn, release, "spectra", [c for c in spectra.columns if c.name in (SPECTRUM_KEY, *POSITION)])


def _read(conn: psycopg.Connection, release: str, content: TableContent, positions: pa.Table) -> pa.Table:
    table = _arrow(conn, release, content.table.name, content.columns)
    if not set(POSITION) <= set(table.column_names):
        # A left join keeps every row; its order does not matter (HATS sorts by HEALPix pixel).
        names = table.column_names
        table = table.join(positions, SPECTRUM_KEY, join_type="left outer").select([*names, *POSITION])
    return table


def write_hats(conn: psycopg.Connection, release: str, directory: Path, contents: list[TableContent]) -> list[HatsTable]:
    """Write ``directory/hats/TABLE`` for every table of ``contents`` with positions."""
    # Imported here: lsdb pulls in dask, which a release without --hats never needs.
    import lsdb
    import pandas as pd

    spectra = next(c for c in contents if c.table.name == "spectra")
    positions = _positions(conn, release, spectra)
    written = []
    for content in contents:
        if not has_position(content):
            continue
        name = content.table.name
        table = _read(conn, release, content, positions)
        placed = pc.and_(pc.is_valid(table["ra"]), pc.is_valid(table["dec"]))
        kept = table.filter(placed)
        if kept.num_rows == 0:
            continue  # lsdb cannot write an empty catalogue; the manifest lists what was written
        # ArrowDtype keeps integer columns with NULLs integers, and NULL apart from NaN.
        frame = kept.to_pandas(types_mapper=pd.ArrowDtype)
        catalog = lsdb.from_dataframe(frame, ra_column="ra", dec_column="dec", catalog_name=name)
        out = directory / HATS_DIR / name
        catalog.write_catalog(out, catalog_name=name, progress_bar=False)
        paths = tuple(sorted(p.relative_to(directory).as_posix() for p in out.rglob("*") if p.is_file()))
        written.append(HatsTable(name, kept.num_rows, table.num_rows - kept.num_rows, paths))
    return written
