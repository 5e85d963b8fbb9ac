"""Several small, already-read files in one transaction (the read-ahead workers' groups).

For one-spectrum files the per-file statements and commits cost more than the rows, so
new files of a batch are stored up to :data:`GROUP_FILES` per transaction, with one COPY
per table for the group. A group holds whole files only, so a killed process still
leaves every file wholly in or out. :meth:`skyledger.ingest.store.Store.store_group`
drives it: what is already known goes the per-file way, and a group that fails on one
file's rows is retried file by file, so only that file is rejected.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from skyledger.ingest.copy_columns import SOURCE_COLUMNS, SPECTRUM_COLUMNS
from skyledger.ingest.outcomes import ChangedOnDisk, FileOutcome
from skyledger.ingest.prepare import Prepared, changed_on_disk
from skyledger.ingest.records import FileContents, SpectrumRow
from skyledger.ingest.table_rows import source_rows, spectrum_rows
from skyledger.schema.pgcopy import copy_rows

__all__ = ["GROUP_BYTES", "GROUP_FILES", "Member", "fresh_members", "groupable", "insert_group"]

#: Read-ahead files are committed in groups of up to this many files (or bytes of
#: arrays), one transaction per group: per-file statements and commits cost more than
#: the COPY of a one-spectrum file. Every file is still wholly in or wholly out. 32, not
#: 16, since the read-ahead workers store their own groups: 20,000 SDSS files went in at
#: 700-800 against 550-650 spectra/s (docs/benchmarks.md, "Ingest"); 64 was no better.
GROUP_FILES = 32
GROUP_BYTES = 16 << 20
STREAM_CHUNK_BYTES = 256 << 10

# Several files' rows in one statement; versions are looked up first (_GROUP_VERSIONS_SQL)
# so that each lookup is an index probe by uri, not a subquery the planner may misjudge.
_GROUP_FILES_SQL = (
    "INSERT INTO ingest_file (survey_id, uri, sha256, size_bytes, status, reader, batch_id, version, "
    "n_sources, n_spectra, n_lines, finished_at, duration_s) "
    "SELECT s, u, h, size, 'loaded', r, %(b)s, v, na, nb, 0, now(), d FROM unnest(%(s)s::int4[], %(u)s::text[], "
    "%(h)s::text[], %(size)s::int8[], %(r)s::text[], %(v)s::int4[], %(na)s::int4[], %(nb)s::int4[], %(d)s::float8[]) "
    "AS t(s, u, h, size, r, v, na, nb, d) RETURNING id, survey_id, uri"
)
_GROUP_VERSIONS_SQL = (
    "SELECT survey_id, uri, max(version) FROM ingest_file WHERE uri = ANY(%(u)s) AND status = 'loaded' "
    "GROUP BY survey_id, uri"
)
_GROUP_KNOWN_SQL = (
    "SELECT survey_id, sha256, status FROM ingest_file WHERE sha256 = ANY(%(h)s) AND status IN ('loaded', 'rejected')"
)
_SOURCE_IDS_SQL = "SELECT nextval(pg_get_serial_sequence('source', 'id')) FROM generate_series(1, %(n)s)"


@dataclass(slots=True)
class Member:
    """A read file that may share a transaction with others (see :func:`groupable`), its
    spectra materialised. ``position`` orders a group's outcomes (the file's place in
    its batch)."""

    position: int
    prepared: Prepared
    reader: str | None
    started: float
    contents: FileContents
    spectra: list[SpectrumRow]
    nbytes: int = 0
    survey_id: int = 0

    def rewind(self) -> None:
        """Make the file storable alone again after a failed group."""
        self.contents.spectra = iter(self.spectra)


def groupable(prepared: Prepared, reader: str | None, position: int, started: float) -> Member | None:
    """The file as a group member, if it can share a transaction: read without a
    rejection, checksummed, not a line catalogue, no parents outside the file, at least
    one spectrum. None: it is stored alone."""
    contents = prepared.contents
    if prepared.reason is not None or prepared.deferred or contents is None or prepared.sha is None:
        return None
    names = {src.object_id for src in contents.sources}
    if not contents.sources or any(s.parent_object_id and s.parent_object_id not in names for s in contents.sources):
        return None
    spectra = list(contents.spectra)
    contents.spectra = iter(spectra)
    if not spectra or any(row.lines for row in spectra):
        return None
    nbytes = sum(a.nbytes for row in spectra for a in (row.wave, row.flux, row.ivar, row.mask, row.resolution)
                 if a is not None)  # fmt: skip
    return Member(position, prepared, reader, started, contents, spectra, nbytes)


def fresh_members(conn: psycopg.Connection, members: list[Member], *, allow_duplicate_content: bool) -> list[Member]:
    """The members whose content is new to their survey and unique within the group (each
    member's ``survey_id`` already set; ``allow_duplicate_content`` as in ``Store``)."""
    known: set[tuple[int | None, str]] = set()
    for survey_id, sha, status in conn.execute(_GROUP_KNOWN_SQL, {"h": [m.prepared.sha for m in members]}):
        known.add((survey_id, sha))
        if status == "loaded" and not allow_duplicate_content:
            known.add((None, sha))  # stored under some survey: a duplicate in every survey
    fresh: list[Member] = []
    seen: set[tuple[int | None, str | None]] = set()
    uris: set[tuple[int, str]] = set()
    for member in members:
        key = (member.survey_id if allow_duplicate_content else None, member.prepared.sha)
        if (member.survey_id, member.prepared.sha) in known:
            continue
        uri = (member.survey_id, member.prepared.uri)
        if key in known or key in seen or uri in uris:
            continue
        seen.add(key)
        uris.add(uri)
        fresh.append(member)
    return fresh


def insert_group(
    conn: psycopg.Connection, members: list[Member], *, batch_id: str | None, grid_id: Callable[[np.ndarray], int]
) -> dict[int, FileOutcome]:
    """One transaction for several new files: their ``ingest_file`` rows, one COPY of
    all their sources and one of all their spectra, one commit. Returns the outcomes by
    the files' positions."""
    versions = {
        (survey_id, uri): version
        for survey_id, uri, version in conn.execute(_GROUP_VERSIONS_SQL, {"u": [m.prepared.uri for m in members]})
    }
    file_rows = conn.execute(
        _GROUP_FILES_SQL,
        {"s": [m.survey_id for m in members], "u": [m.prepared.uri for m in members],
         "h": [m.prepared.sha for m in members], "size": [m.prepared.size for m in members],
         "r": [m.prepared.reader for m in members],
         "v": [1 + versions.get((m.survey_id, m.prepared.uri), 0) for m in members],
         "na": [len(m.contents.sources) for m in members],
         "nb": [len(m.spectra) for m in members], "d": [time.perf_counter() - m.started for m in members],
         "b": batch_id},
    ).fetchall()  # fmt: skip
    file_ids = {(survey_id, uri): file_id for file_id, survey_id, uri in file_rows}
    source_ids = iter(
        row[0] for row in conn.execute(_SOURCE_IDS_SQL, {"n": sum(len(m.contents.sources) for m in members)})
    )
    sources_out: list[tuple[Any, ...]] = []
    spectra_out: list[Iterator[tuple[Any, ...]]] = []
    outcomes: dict[int, FileOutcome] = {}
    for member in members:
        prepared, contents = member.prepared, member.contents
        file_id = file_ids[(member.survey_id, prepared.uri)]
        path = Path(prepared.uri)
        ids = [next(source_ids) for _ in contents.sources]
        by_name = source_rows(conn, contents.sources, ids, sources_out, survey_id=member.survey_id, file_id=file_id,
                              path=path)  # fmt: skip
        air = contents.meta.get("wavelength_medium_in_file") == "air"
        spectra_out.append(
            spectrum_rows(iter(member.spectra), by_name, [], grid_id=grid_id, survey_id=member.survey_id,
                          file_id=file_id, path=path, air=air)  # fmt: skip
        )
        outcomes[member.position] = FileOutcome(
            path=prepared.path, status="loaded", reader=prepared.reader, ingest_file_id=file_id,
            n_sources=len(by_name), n_spectra=len(member.spectra), size_bytes=prepared.size,
        )  # fmt: skip
    copy_rows(conn, "source", SOURCE_COLUMNS, sources_out)
    # Sent in small chunks so that the server inserts rows while the rest are encoded.
    copy_rows(conn, "spectrum", SPECTRUM_COLUMNS, itertools.chain.from_iterable(spectra_out),
              chunk_bytes=STREAM_CHUNK_BYTES)  # fmt: skip
    for member in members:
        changed = changed_on_disk(member.prepared)
        if changed is not None:  # the group is stored file by file, and this file rejected
            raise ChangedOnDisk(Path(member.prepared.uri), changed)
    conn.commit()
    now = time.perf_counter()
    for member in members:
        outcomes[member.position].seconds = now - member.started
    return outcomes
