"""What a release holds: its tables, their columns' metadata and the SQL that freezes them.

Column metadata (type, unit, UCD, description) comes from the model columns declared
with :func:`skyledger.schema.base.column`; a release column that has no model column of
its own (a joined name, a renamed task) says so with an explicit description. This one
list feeds the SQL comments of the release schema, the FITS, ECSV and Parquet headers
and ``datamodel.md``.

Every numeric column has one unit for all its rows: line fluxes, stored in each
spectrum's own unit, are converted by the query (factors in the temporary table
``release_flux_scale``, :mod:`.units`).

The queries resolve results through a *search path*: the succeeded runs of the named
collection with their rank, in the temporary table ``release_search_path``. They pick
rows exactly like the catalog views (migrations 0003-0006) pick them through
``catalog.current_runs``; a test checks that a release of ``current`` equals the views.
A task that adds a results table adds its :class:`ReleaseTable` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Double, Integer, SmallInteger, Text
from sqlalchemy.dialects.postgresql import REAL

from skyledger.schema import models as m
from skyledger.schema.base import column_meta

from .units import FLUX_SCALE_TABLE, LINE_FLUX_UNIT

__all__ = ["ReleaseColumn", "ReleaseTable", "RELEASE_TABLES", "SEARCH_PATH_TABLE", "PG_TYPES", "release_table"]

#: The temporary table (run_id, task, rank) the queries read the collection's runs from.
SEARCH_PATH_TABLE = "release_search_path"

#: PostgreSQL types a release table column may have.
PG_TYPES = ("int2", "int4", "int8", "float4", "float8", "text", "bool")


@dataclass(frozen=True)
class ReleaseColumn:
    name: str
    pg_type: str
    description: str
    unit: str | None = None
    ucd: str | None = None

    def __post_init__(self) -> None:
        if self.pg_type not in PG_TYPES:
            raise ValueError(f"release column {self.name}: type {self.pg_type} is not one of {PG_TYPES}")


def _pg_type(sa_type: Any) -> str:
    # Order matters: BigInteger and SmallInteger are Integer subclasses.
    for cls, name in ((BigInteger, "int8"), (SmallInteger, "int2"), (Integer, "int4"), (REAL, "float4"),
                      (Double, "float8"), (Text, "text"), (Boolean, "bool")):
        if isinstance(sa_type, cls):
            return name
    raise TypeError(f"no release type for SQL type {sa_type!r}")


def col(name: str, source: Any, *, doc: str | None = None, unit: str | None = None, ucd: str | None = None) -> ReleaseColumn:
    """A release column taking its type, unit, UCD and description from a model column.

    ``doc``/``unit``/``ucd`` override the model's where the release column means something
    narrower or different (e.g. ``survey`` is the survey's name, not its id).
    """
    base = source.property.columns[0] if hasattr(source, "property") else source
    meta = column_meta(base)
    return ReleaseColumn(
        name=name,
        pg_type=_pg_type(base.type),
        description=doc or meta["description"] or "",
        unit=unit if unit is not None else meta["unit"],
        ucd=ucd if ucd is not None else meta["ucd"],
    )


@dataclass(frozen=True)
class ReleaseTable:
    name: str
    description: str
    #: SELECT producing the columns in order; may read ``release_search_path``.
    query: str
    columns: tuple[ReleaseColumn, ...]
    #: Primary key of the frozen table (also the order its rows are written in).
    key: tuple[str, ...]
    #: flag_definition.table_name of the flags column's bits.
    flags_of: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def has_runs(self) -> bool:
        return "run_id" in self.column_names


_RUN_ID = ReleaseColumn("run_id", "int8", "Run that produced the row (see the release's runs)", ucd="meta.id")
_SPECTRUM_ID = ReleaseColumn("spectrum_id", "int8", "Spectrum identifier (spectra.spectrum_id)", ucd="meta.id")

SPECTRA = ReleaseTable(
    name="spectra",
    description="Every ingested spectrum (IFU spaxels and bins included), with its source and file",
    # Spectra are not run results: the release freezes what catalog.spectra lists.
    query="""
SELECT spectrum_id, survey, object_id, ra, dec, z, file, file_version, n_pix, source_id, source_object_id,
       parent_source_id, flux_unit, flags
FROM catalog.spectra ORDER BY spectrum_id
""",
    columns=(
        col("spectrum_id", m.Spectrum.id),
        col("survey", m.Survey.name, doc="Survey name"),
        col("object_id", m.Spectrum.object_id),
        col("ra", m.Spectrum.ra),
        col("dec", m.Spectrum.dec),
        col("z", m.Spectrum.z),
        col("file", m.IngestFile.uri, doc="File the spectrum was read from"),
        col("file_version", m.IngestFile.version, doc="Version of that file (1 for the first content seen under its name)"),
        col("n_pix", m.Spectrum.n_pix),
        col("source_id", m.Spectrum.source_id, ucd="meta.id"),
        col("source_object_id", m.Source.object_id, doc="The survey's identifier of that source"),
        col("parent_source_id", m.Source.parent_id, doc="Parent source (the galaxy of a spaxel, bin or region)",
            ucd="meta.id"),
        col("flux_unit", m.Spectrum.flux_unit),
        col("flags", m.Spectrum.flags),
    ),
    key=("spectrum_id",),
    flags_of="spectrum",
)

STELLAR_KINEMATICS = ReleaseTable(
    name="stellar_kinematics",
    description="Stellar kinematics of every fitted spectrum (task lines)",
    query=f"""
SELECT DISTINCT ON (k.spectrum_id)
       k.spectrum_id, k.z, k.velocity, k.velocity_err, k.sigma, k.sigma_err, k.chi2, k.stellar_chi2,
       k.snr, k.n_pixels, k.flags, k.run_id
FROM stellar_kinematics AS k
JOIN {SEARCH_PATH_TABLE} AS p ON p.run_id = k.run_id
ORDER BY k.spectrum_id, p.rank, k.run_id DESC
""",
    columns=(
        _SPECTRUM_ID,
        *(col(c, getattr(m.StellarKinematics, c)) for c in
          ("z", "velocity", "velocity_err", "sigma", "sigma_err", "chi2", "stellar_chi2", "snr", "n_pixels", "flags")),
        _RUN_ID,
    ),
    key=("spectrum_id",),
    flags_of="stellar_kinematics",
)

LINES = ReleaseTable(
    name="lines",
    description="Emission lines of every spectrum, fitted (task lines) or read from catalogues (task ingested)",
    query=f"""
WITH chosen AS (
    SELECT DISTINCT ON (lm.spectrum_id, p.task) lm.spectrum_id, lm.run_id, p.task
    FROM line_measurement AS lm
    JOIN {SEARCH_PATH_TABLE} AS p ON p.run_id = lm.run_id
    ORDER BY lm.spectrum_id, p.task, p.rank, lm.run_id DESC
)
SELECT lm.spectrum_id, lm.line, lm.z, lm.velocity, lm.velocity_err, lm.sigma, lm.sigma_err,
       lm.flux * fs.scale AS flux, lm.flux_err * fs.scale AS flux_err,
       lm.ew, lm.ew_err, lm.snr, lm.flags, chosen.task AS source_task, lm.run_id
FROM line_measurement AS lm
JOIN chosen ON chosen.spectrum_id = lm.spectrum_id AND chosen.run_id = lm.run_id
JOIN spectrum AS s ON s.id = lm.spectrum_id
LEFT JOIN {FLUX_SCALE_TABLE} AS fs ON fs.flux_unit = s.flux_unit
ORDER BY lm.spectrum_id, chosen.task, lm.line
""",
    columns=(
        _SPECTRUM_ID,
        *(col(c, getattr(m.LineMeasurement, c)) for c in ("line", "z", "velocity", "velocity_err", "sigma", "sigma_err")),
        col("flux", m.LineMeasurement.flux, unit=LINE_FLUX_UNIT,
            doc="Integrated line flux, converted from the spectrum's flux unit (NULL where that unit is unknown "
                "or no flux density per wavelength; see spectra.flux_unit)"),
        col("flux_err", m.LineMeasurement.flux_err, unit=LINE_FLUX_UNIT, doc="Error of flux"),
        *(col(c, getattr(m.LineMeasurement, c)) for c in ("ew", "ew_err", "snr", "flags")),
        col("source_task", m.Run.task, doc="Task that produced the line: lines (fitted) or ingested (from a catalogue)",
            ucd="meta.code"),
        _RUN_ID,
    ),
    key=("spectrum_id", "source_task", "line"),
    flags_of="line_measurement",
)

_ABUNDANCE_VALUES = tuple(
    c.name for c in m.Abundance.__table__.columns if c.name not in ("run_id", "spectrum_id", "method", "flags")
)

ABUNDANCES = ReleaseTable(
    name="abundances",
    description="Nebular abundances of every spectrum, one row per method (task abundances)",
    query=f"""
WITH chosen AS (
    SELECT DISTINCT ON (a.spectrum_id) a.spectrum_id, a.run_id
    FROM abundance AS a
    JOIN {SEARCH_PATH_TABLE} AS p ON p.run_id = a.run_id
    WHERE p.task = 'abundances'
    ORDER BY a.spectrum_id, p.rank, a.run_id DESC
)
SELECT a.spectrum_id, a.method, {", ".join("a." + c for c in _ABUNDANCE_VALUES)}, a.flags, a.run_id
FROM abundance AS a
JOIN chosen ON chosen.spectrum_id = a.spectrum_id AND chosen.run_id = a.run_id
ORDER BY a.spectrum_id, a.method
""",
    columns=(
        _SPECTRUM_ID,
        col("method", m.Abundance.method),
        *(col(c, getattr(m.Abundance, c)) for c in _ABUNDANCE_VALUES),
        col("flags", m.Abundance.flags),
        _RUN_ID,
    ),
    key=("spectrum_id", "method"),
    flags_of="abundance",
)

NEBULA_CLASS = ReleaseTable(
    name="nebula_class",
    description="Ionised-nebula class of every spectrum with emission lines, one row per method",
    query=f"""
WITH chosen AS (
    SELECT DISTINCT ON (n.spectrum_id, p.task) n.spectrum_id, n.run_id
    FROM nebula_class AS n
    JOIN {SEARCH_PATH_TABLE} AS p ON p.run_id = n.run_id
    WHERE p.task IN ('nebula_diagnostic', 'nebula_nn')
    ORDER BY n.spectrum_id, p.task, p.rank, n.run_id DESC
)
SELECT n.spectrum_id, n.method, n.class, n.probability, n.p_hii, n.p_pn, n.p_snr, n.p_dig, n.p_agn, n.flags, n.run_id
FROM nebula_class AS n
JOIN chosen ON chosen.spectrum_id = n.spectrum_id AND chosen.run_id = n.run_id
ORDER BY n.spectrum_id, n.method
""",
    columns=(
        _SPECTRUM_ID,
        col("method", m.NebulaClass.method),
        col("class", m.NebulaClass.class_),
        *(col(c, getattr(m.NebulaClass, c)) for c in ("probability", "p_hii", "p_pn", "p_snr", "p_dig", "p_agn", "flags")),
        _RUN_ID,
    ),
    key=("spectrum_id", "method"),
    flags_of="nebula_class",
)

_SOURCE_ID = ReleaseColumn("source_id", "int8", "The galaxy (spectra.source_id / parent_source_id)", ucd="meta.id")
_OBJECT_ID = col("object_id", m.Source.object_id, doc="The survey's identifier of the galaxy")


def _per_galaxy(task: str, table: str, order: tuple[str, ...], values: tuple[str, ...]) -> str:
    """Rows of the best run of ``task`` per galaxy on the search path, like the catalog views (0008)."""
    return f"""
WITH chosen AS (
    SELECT DISTINCT ON (r.source_id) r.source_id, r.run_id
    FROM {table} AS r
    JOIN {SEARCH_PATH_TABLE} AS p ON p.run_id = r.run_id
    WHERE p.task = '{task}'
    ORDER BY r.source_id, p.rank, r.run_id DESC
)
SELECT r.source_id, s.object_id, {", ".join("r." + c for c in (*order, *values))}, r.flags, r.run_id
FROM {table} AS r
JOIN chosen ON chosen.source_id = r.source_id AND chosen.run_id = r.run_id
JOIN source AS s ON s.id = r.source_id
ORDER BY r.source_id, {", ".join("r." + c for c in order)}
"""


def _values(model: Any, skip: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c.name for c in model.__table__.columns if c.name not in ("run_id", "source_id", "flags", *skip))


_ROTATION_VALUES = _values(m.RotationFit, ("component", "model"))
ROTATION = ReleaseTable(
    name="rotation",
    description="Rotating-disk fits of every galaxy with enough velocities, per component and rotation-curve model (task rotation)",
    query=_per_galaxy("rotation", "rotation_fit", ("component", "model"), _ROTATION_VALUES),
    columns=(
        _SOURCE_ID,
        _OBJECT_ID,
        col("component", m.RotationFit.component),
        col("model", m.RotationFit.model),
        *(col(c, getattr(m.RotationFit, c)) for c in _ROTATION_VALUES),
        col("flags", m.RotationFit.flags),
        _RUN_ID,
    ),
    key=("source_id", "component", "model"),
    flags_of="rotation_fit",
)

_GRADIENT_VALUES = _values(m.MetallicityGradient, ("method",))
METALLICITY_GRADIENTS = ReleaseTable(
    name="metallicity_gradients",
    description="Radial 12+log(O/H) gradients of every galaxy with a rotation geometry, per abundance method (task gradients)",
    query=_per_galaxy("gradients", "metallicity_gradient", ("method",), _GRADIENT_VALUES),
    columns=(
        _SOURCE_ID,
        _OBJECT_ID,
        col("method", m.MetallicityGradient.method),
        *(col(c, getattr(m.MetallicityGradient, c)) for c in _GRADIENT_VALUES),
        col("flags", m.MetallicityGradient.flags),
        _RUN_ID,
    ),
    key=("source_id", "method"),
    flags_of="metallicity_gradient",
)

#: Every table a release holds, in the order they are written.
RELEASE_TABLES: tuple[ReleaseTable, ...] = (
    SPECTRA, STELLAR_KINEMATICS, LINES, ABUNDANCES, NEBULA_CLASS, ROTATION, METALLICITY_GRADIENTS,
)  # fmt: skip


def release_table(name: str) -> ReleaseTable:
    for table in RELEASE_TABLES:
        if table.name == name:
            return table
    raise KeyError(name)
