"""A file's ``source`` and ``spectrum`` rows as COPY tuples, with their flag bits.

The tuples follow :mod:`skyledger.ingest.copy_columns`. Wavelength grids are
content-addressed rows of their own (:class:`WavelengthGrids`), registered on a
separate autocommit connection: a rolled-back file can at most leave an unused grid
behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from skyledger.ingest.records import ERROR_ESTIMATE_KEY, LineMeasurement, SourceRow, SpectrumRow
from skyledger.schema.errors import ReaderError

__all__ = ["LINE_FLAGS", "SOURCE_FLAGS", "SPECTRUM_FLAGS", "WavelengthGrids", "source_rows", "spectrum_rows"]

# Bit values; their meanings are rows of flag_definition (migrations 0001, 0002, 0013, 0016).
SOURCE_FLAGS = {"NO_POSITION": 1 << 0, "POSITION_FROM_CONFIG": 1 << 1}
SPECTRUM_FLAGS = {
    "NO_POSITION": 1 << 0, "POSITION_FROM_CONFIG": 1 << 1, "NO_RESOLUTION": 1 << 2, "AIR_TO_VACUUM": 1 << 3,
    "ZERO_IVAR": 1 << 4, "ERROR_ESTIMATED": 1 << 5,
}  # fmt: skip
LINE_FLAGS = {"DUST_CORRECTED": 1 << 16, "FROM_CATALOGUE": 1 << 17}


def source_rows(
    conn: psycopg.Connection, sources: Sequence[SourceRow], ids: Sequence[int], out: list[tuple[Any, ...]],
    *, survey_id: int, file_id: int, path: Path,
) -> dict[str, int]:  # fmt: skip
    """Append the file's ``source`` rows to ``out``; returns the source ids by object id.

    A ``shared`` source that the survey already holds (from another file: the other arm
    of a two-arm cube) is not added again: the file's spectra join the existing row.
    """
    by_name = {src.object_id: sid for src, sid in zip(sources, ids)}
    if len(by_name) != len(sources):
        raise ReaderError(path, "duplicate source identifiers within the file")
    shared = [src.object_id for src in sources if src.shared]
    existing: dict[str, int] = {}
    if shared:
        existing = dict(conn.execute(
            "SELECT object_id, max(id) FROM source WHERE survey_id = %s AND object_id = ANY(%s) GROUP BY object_id",
            (survey_id, shared),
        ).fetchall())  # fmt: skip
        by_name.update(existing)
    external = {s.parent_object_id for s in sources if s.parent_object_id and s.parent_object_id not in by_name}
    parents = dict(by_name)
    for name in external:
        found = conn.execute(
            "SELECT max(id) FROM source WHERE survey_id = %s AND object_id = %s", (survey_id, name)
        ).fetchone()[0]
        if found is None:
            raise ReaderError(path, f"parent object {name!r} is neither in the file nor already ingested for this survey")
        parents[name] = found

    for src, sid in zip(sources, ids):
        if src.object_id in existing:
            continue
        flags = SOURCE_FLAGS["NO_POSITION"] if src.ra is None else 0
        if src.meta.get("position_from_config"):
            flags |= SOURCE_FLAGS["POSITION_FROM_CONFIG"]
        parent = parents[src.parent_object_id] if src.parent_object_id else None
        out.append((sid, survey_id, file_id, src.object_id, parent, src.ra, src.dec, src.z, flags, src.meta))
    return by_name


def spectrum_rows(
    spectra: Iterator[SpectrumRow],
    source_ids: dict[str, int],
    lines: list[tuple[str, list[LineMeasurement]]],
    *,
    grid_id: Callable[[np.ndarray], int],
    survey_id: int,
    file_id: int,
    path: Path,
    air: bool,
) -> Iterator[tuple[Any, ...]]:
    """The ``spectrum`` rows of ``spectra``; the line measurements they carry are appended
    to ``lines`` (object id, measurements) on the way."""
    for row in spectra:
        try:
            source_id = source_ids[row.source_object_id]
        except KeyError:
            raise ReaderError(path, f"spectrum {row.object_id!r} refers to unknown source {row.source_object_id!r}") from None
        flags = 0
        if row.ra is None:
            flags |= SPECTRUM_FLAGS["NO_POSITION"]
        if row.meta.get("position_from_config"):
            flags |= SPECTRUM_FLAGS["POSITION_FROM_CONFIG"]
        if row.n_pix and (air or row.meta.get("wavelength_medium_in_file") == "air"):
            flags |= SPECTRUM_FLAGS["AIR_TO_VACUUM"]
        if row.n_pix and not row.ivar.any():
            flags |= SPECTRUM_FLAGS["ZERO_IVAR"]  # loaded, but no pixel carries data
        if row.meta.get(ERROR_ESTIMATE_KEY):
            flags |= SPECTRUM_FLAGS["ERROR_ESTIMATED"]  # the file gives no errors: ivar is the reader's estimate
        grid = wave_min = wave_max = resolution = None
        if row.n_pix:
            grid = grid_id(row.wave)
            wave_min, wave_max = float(row.wave[0]), float(row.wave[-1])
            if row.resolution is None:
                flags |= SPECTRUM_FLAGS["NO_RESOLUTION"]
            else:
                resolution = _median_resolution(row.resolution)
        if row.lines:
            lines.append((row.object_id, row.lines))
        yield (
            source_id, survey_id, file_id, row.object_id, row.ra, row.dec, row.z, row.n_pix, grid,
            row.flux, row.ivar, row.mask, row.resolution, row.flux_unit, flags, row.meta, wave_min, wave_max, resolution,
        )


def _median_resolution(resolution: np.ndarray) -> float | None:
    """Median R over the pixels where it is known (finite, > 0; readers set unknown to NaN).

    ``np.median`` costs ~40 us of Python overhead a call (3 % of the SDSS ingest,
    benchmarks/ingest_benchmark.py); one partition does the same work in a few.
    """
    known = resolution[np.isfinite(resolution) & (resolution > 0)]
    n = known.size
    if n == 0:
        return None
    half = n // 2
    if n % 2:
        return float(np.partition(known, half)[half])
    lower, upper = np.partition(known, (half - 1, half))[half - 1 : half + 1]
    return (float(lower) + float(upper)) / 2.0


class WavelengthGrids:
    """Ids of wavelength grids by content, cached for the batch; ``side`` gives the
    autocommit connection that registers new ones."""

    def __init__(self, side: Callable[[], psycopg.Connection]):
        self._side = side
        self._grids: dict[str, int] = {}
        self._recent: dict[tuple[int, float, float], tuple[np.ndarray, int]] = {}

    def id_of(self, wave: np.ndarray) -> int:
        """The id of the grid of these wavelengths, registered if new."""
        values = np.ascontiguousarray(wave, dtype="<f8")
        # Most files of a survey share a few grids: compare with the last grid of the
        # same ends before hashing (sha256 of 32 kB per spectrum shows in a profile).
        probe = (values.size, float(values[0]), float(values[-1])) if values.size else (0, 0.0, 0.0)
        seen = self._recent.get(probe)
        if seen is not None and np.array_equal(seen[0], values):
            return seen[1]
        key = hashlib.sha256(values.tobytes()).hexdigest()
        cached = self._grids.get(key)
        if cached is not None:
            self._recent[probe] = (values, cached)
            return cached
        steps = np.diff(np.log(values))
        log_uniform = bool(values.size > 2 and np.allclose(steps, steps.mean(), rtol=1e-5, atol=0))
        with self._side().cursor() as cur:
            cur.execute(
                "INSERT INTO wavelength_grid (sha256, n_pix, wave, log_uniform) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (sha256) DO NOTHING",
                (key, int(values.size), values.tolist(), log_uniform),
            )
            grid = cur.execute("SELECT id FROM wavelength_grid WHERE sha256 = %s", (key,)).fetchone()
        assert grid is not None
        self._grids[key] = grid[0]
        self._recent[probe] = (values, grid[0])
        return grid[0]
