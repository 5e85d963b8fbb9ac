"""Typed SQLAlchemy models of the core tables (see DESIGN.md, "Database").

Alembic migrations own the DDL; these models must match them exactly, which
``tests/schema/test_migrations.py`` checks with autogenerate.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL
from sqlalchemy.orm import Mapped

from .base import Base, column, dec_column as _dec, ra_column as _ra

__all__ = [
    "SKY_ZONE_SQL",
    "Survey",
    "IngestFile",
    "Source",
    "WavelengthGrid",
    "Spectrum",
    "Run",
    "TaskClaim",
    "Collection",
    "CollectionRun",
    "Release",
    "ReleaseRun",
    "ReleaseFile",
    "ReleaseTableDigest",
    "FlagDefinition",
]

# Declination zones of 1 arcmin: with a B-tree on (sky_zone, ra, dec) a cone search is
# a handful of index range scans (one per zone it crosses), with no extension needed.
# The expression is duplicated in the first migration, which must never change.
SKY_ZONE_SQL = "(floor((dec + 90.0) * 60.0))::integer"

_now = func.now()


class Survey(Base):
    __tablename__ = "survey"

    id: Mapped[int] = column(Integer, Identity(), primary_key=True, doc="Survey identifier", ucd="meta.id")
    name: Mapped[str] = column(Text, unique=True, doc="Short unique survey name, e.g. sdss-dr18", ucd="meta.id")
    reader: Mapped[str] = column(Text, doc="Name of the reader that parses this survey's files")
    location: Mapped[str | None] = column(Text, doc="Directory (and glob) the survey's files are found in")
    options: Mapped[dict[str, Any]] = column(
        JSONB, server_default=text("'{}'::jsonb"), doc="Reader options from the survey configuration"
    )
    created_at: Mapped[dt.datetime] = column(
        DateTime(timezone=True), server_default=_now, doc="When the survey was first registered"
    )


class IngestFile(Base):
    __tablename__ = "ingest_file"
    __table_args__ = (
        CheckConstraint("status IN ('loaded', 'rejected', 'duplicate')", name="status"),
        CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),
        # One loaded copy of any content per survey: re-ingesting it is a no-op.
        Index(
            "uq_ingest_file_loaded_content",
            "survey_id",
            "sha256",
            unique=True,
            postgresql_where=text("status = 'loaded'"),
        ),
        Index("ix_ingest_file_uri", "uri"),
        # The re-ingest check looks up loaded *and* rejected content (migration 0009).
        Index("ix_ingest_file_sha256", "sha256"),
    )

    id: Mapped[int] = column(BigInteger, Identity(), primary_key=True, doc="Ingest record identifier", ucd="meta.id")
    survey_id: Mapped[int] = column(ForeignKey("survey.id"), doc="Survey the file belongs to")
    uri: Mapped[str] = column(Text, doc="Absolute path or URI of the file as seen by the ingest", ucd="meta.ref.url")
    sha256: Mapped[str | None] = column(Text, doc="SHA-256 of the file content (hex); NULL if it could not be read")
    size_bytes: Mapped[int | None] = column(BigInteger, doc="File size", unit="byte")
    status: Mapped[str] = column(Text, doc="loaded, rejected or duplicate")
    reason: Mapped[str | None] = column(Text, doc="Why the file was rejected, or what it duplicates")
    reader: Mapped[str | None] = column(Text, doc="Reader used (or attempted)")
    version: Mapped[int] = column(
        Integer, server_default=text("1"), doc="1 for the first loaded content of a URI, +1 for each changed version"
    )
    n_sources: Mapped[int] = column(Integer, server_default=text("0"), doc="Source rows written")
    n_spectra: Mapped[int] = column(Integer, server_default=text("0"), doc="Spectrum rows written")
    n_lines: Mapped[int] = column(Integer, server_default=text("0"), doc="Line measurement rows written")
    batch_id: Mapped[str | None] = column(Text, doc="Identifier of the ingest batch (e.g. one nightly run)")
    started_at: Mapped[dt.datetime] = column(DateTime(timezone=True), server_default=_now, doc="Start of the load")
    finished_at: Mapped[dt.datetime | None] = column(DateTime(timezone=True), doc="End of the load")
    duration_s: Mapped[float | None] = column(Double, doc="Wall-clock time spent on the file", unit="s")


class Source(Base):
    __tablename__ = "source"
    __table_args__ = (
        UniqueConstraint("ingest_file_id", "object_id"),
        CheckConstraint("ra >= 0 AND ra < 360", name="ra_range"),
        CheckConstraint("dec >= -90 AND dec <= 90", name="dec_range"),
        Index("ix_source_sky", "sky_zone", "ra", "dec"),
        Index("ix_source_survey_id_object_id", "survey_id", "object_id"),
        Index("ix_source_parent_id", "parent_id"),
    )

    id: Mapped[int] = column(BigInteger, Identity(), primary_key=True, doc="Source identifier", ucd="meta.id;meta.main")
    survey_id: Mapped[int] = column(ForeignKey("survey.id"), doc="Survey that observed the source")
    ingest_file_id: Mapped[int] = column(ForeignKey("ingest_file.id"), doc="File the source was read from")
    object_id: Mapped[str] = column(Text, doc="The survey's own identifier of the object", ucd="meta.id")
    parent_id: Mapped[int | None] = column(
        ForeignKey("source.id"), doc="Parent object (the galaxy of a spaxel, bin or HII region)"
    )
    ra: Mapped[float | None] = _ra("Right ascension (ICRS)")
    dec: Mapped[float | None] = _dec("Declination (ICRS)")
    sky_zone: Mapped[int | None] = column(
        Integer, Computed(SKY_ZONE_SQL, persisted=True), doc="Declination zone (1 arcmin) used by cone search"
    )
    z: Mapped[float | None] = column(Double, doc="Input redshift guess", ucd="src.redshift")
    flags: Mapped[int] = column(Integer, server_default=text("0"), doc="Source flag bits (see flag_definition)", ucd="meta.code")
    meta: Mapped[dict[str, Any]] = column(
        JSONB, server_default=text("'{}'::jsonb"), doc="Other header values kept from the file"
    )


class WavelengthGrid(Base):
    """A wavelength grid shared by many spectra (all spaxels of a cube, a plate's fibres).

    Spectra point at their grid instead of each carrying a float64 copy: a third less
    storage and I/O, and compute tasks batch spectra that share a grid without rebinning.
    """

    __tablename__ = "wavelength_grid"
    __table_args__ = (CheckConstraint("n_pix > 0", name="n_pix"),)

    id: Mapped[int] = column(BigInteger, Identity(), primary_key=True, doc="Wavelength grid identifier", ucd="meta.id")
    sha256: Mapped[str] = column(Text, unique=True, doc="SHA-256 of the grid's float64 values (little-endian)")
    n_pix: Mapped[int] = column(Integer, doc="Number of pixels")
    wave: Mapped[list[float]] = column(ARRAY(Double), doc="Vacuum wavelength of each pixel", unit="Angstrom", ucd="em.wl")
    log_uniform: Mapped[bool] = column(doc="True when the pixels are equally spaced in log wavelength")


class Spectrum(Base):
    __tablename__ = "spectrum"
    __table_args__ = (
        UniqueConstraint("ingest_file_id", "object_id"),
        CheckConstraint("ra >= 0 AND ra < 360", name="ra_range"),
        CheckConstraint("dec >= -90 AND dec <= 90", name="dec_range"),
        CheckConstraint("n_pix >= 0", name="n_pix"),
        Index("ix_spectrum_sky", "sky_zone", "ra", "dec"),
        Index("ix_spectrum_source_id", "source_id"),
        Index("ix_spectrum_survey_id_object_id", "survey_id", "object_id"),
        Index("ix_spectrum_wave_grid_id", "wave_grid_id"),
        CheckConstraint("(n_pix = 0) = (wave_grid_id IS NULL)", name="pixels_have_grid"),
    )

    id: Mapped[int] = column(BigInteger, Identity(), primary_key=True, doc="Spectrum identifier", ucd="meta.id;meta.main")
    source_id: Mapped[int] = column(ForeignKey("source.id"), doc="Source the spectrum belongs to")
    survey_id: Mapped[int] = column(ForeignKey("survey.id"), doc="Survey that took the spectrum")
    ingest_file_id: Mapped[int] = column(ForeignKey("ingest_file.id"), doc="File the spectrum was read from")
    object_id: Mapped[str] = column(Text, doc="The survey's own identifier of the spectrum", ucd="meta.id")
    ra: Mapped[float | None] = _ra("Right ascension of the spectrum (ICRS); a spaxel or bin has its own")
    dec: Mapped[float | None] = _dec("Declination of the spectrum (ICRS)")
    sky_zone: Mapped[int | None] = column(
        Integer, Computed(SKY_ZONE_SQL, persisted=True), doc="Declination zone (1 arcmin) used by cone search"
    )
    z: Mapped[float | None] = column(Double, doc="Input redshift given by the survey", ucd="src.redshift")
    n_pix: Mapped[int] = column(Integer, doc="Number of pixels; 0 for a catalogue entry without pixels")
    wave_grid_id: Mapped[int | None] = column(
        ForeignKey("wavelength_grid.id"), doc="Wavelength grid of the pixels; NULL without pixels"
    )
    flux: Mapped[list[float] | None] = column(
        ARRAY(REAL), doc="Flux density per pixel, in flux_unit", ucd="phot.flux.density;em.wl"
    )
    ivar: Mapped[list[float] | None] = column(
        ARRAY(REAL), doc="Inverse variance of flux; 0 where there is no data", ucd="stat.weight"
    )
    mask: Mapped[list[int] | None] = column(ARRAY(Integer), doc="The survey's pixel bitmask, 0 = good", ucd="meta.code.qual")
    resolution: Mapped[list[float] | None] = column(
        ARRAY(REAL), doc="Instrumental resolving power lambda/FWHM per pixel", ucd="spect.resolution"
    )
    flux_unit: Mapped[str | None] = column(Text, doc="Unit of flux (astropy string)")
    flags: Mapped[int] = column(Integer, server_default=text("0"), doc="Spectrum flag bits (see flag_definition)", ucd="meta.code")
    meta: Mapped[dict[str, Any]] = column(
        JSONB, server_default=text("'{}'::jsonb"), doc="Other header values kept from the file"
    )
    wave_min: Mapped[float | None] = column(
        Double, doc="Wavelength of the first pixel, vacuum; NULL without pixels", unit="Angstrom", ucd="em.wl;stat.min"
    )
    wave_max: Mapped[float | None] = column(
        Double, doc="Wavelength of the last pixel, vacuum; NULL without pixels", unit="Angstrom", ucd="em.wl;stat.max"
    )
    resolution_median: Mapped[float | None] = column(
        REAL, doc="Median resolving power lambda/FWHM over the pixels; NULL when the file gives none",
        ucd="spect.resolution;stat.median",
    )


class Run(Base):
    __tablename__ = "run"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        Index("ix_run_task_version_params_hash", "task", "version", "params_hash"),
    )

    id: Mapped[int] = column(BigInteger, Identity(), primary_key=True, doc="Run identifier", ucd="meta.id")
    task: Mapped[str] = column(Text, doc="Task name, e.g. lines, abundances, ingested")
    version: Mapped[int] = column(Integer, doc="Task version (bumped by hand when results change)")
    params: Mapped[dict[str, Any]] = column(JSONB, server_default=text("'{}'::jsonb"), doc="Task parameters")
    params_hash: Mapped[str] = column(Text, doc="SHA-256 of the canonical JSON of params")
    code_version: Mapped[str] = column(Text, doc="skyledger package version, plus git commit when known")
    model_sha256: Mapped[dict[str, Any]] = column(
        JSONB, server_default=text("'{}'::jsonb"), doc="SHA-256 of each model file or template used"
    )
    upstream_run_ids: Mapped[list[int]] = column(
        ARRAY(BigInteger), server_default=text("'{}'::bigint[]"), doc="Runs whose results this run read"
    )
    device: Mapped[str | None] = column(Text, doc="Torch device, e.g. cpu or cuda:0")
    host: Mapped[str | None] = column(Text, doc="Host name that executed the run")
    status: Mapped[str] = column(Text, server_default=text("'running'"), doc="running, succeeded or failed")
    error: Mapped[str | None] = column(Text, doc="Error message of a failed run")
    n_inputs: Mapped[int] = column(Integer, server_default=text("0"), doc="Inputs processed")
    n_results: Mapped[int] = column(Integer, server_default=text("0"), doc="Result rows written")
    n_flagged: Mapped[int] = column(Integer, server_default=text("0"), doc="Inputs whose result carries a failure flag")
    prefect_flow_run_id: Mapped[str | None] = column(Text, doc="Prefect flow-run id, when run inside a flow")
    started_at: Mapped[dt.datetime] = column(DateTime(timezone=True), server_default=_now, doc="Start time")
    heartbeat_at: Mapped[dt.datetime | None] = column(DateTime(timezone=True), doc="Last sign of life of a running run")
    finished_at: Mapped[dt.datetime | None] = column(DateTime(timezone=True), doc="End time")


class TaskClaim(Base):
    """An input a running run has taken to compute, so that concurrent runs share the work.

    A run claims each batch in a short transaction before computing it; another run of the
    same task version and parameters skips claimed inputs. Claims are deleted when their
    run succeeds, fails or is reaped as abandoned, so the inputs of a dead run become
    pending again (see compute/framework/runner.py).
    """

    __tablename__ = "task_claim"
    __table_args__ = (Index("ix_task_claim_run_id", "run_id"),)

    task: Mapped[str] = column(Text, primary_key=True, doc="Task name")
    version: Mapped[int] = column(Integer, primary_key=True, doc="Task version")
    params_hash: Mapped[str] = column(Text, primary_key=True, doc="SHA-256 of the run's parameters")
    input_id: Mapped[int] = column(BigInteger, primary_key=True, doc="Input claimed (spectrum or source id)")
    run_id: Mapped[int] = column(ForeignKey("run.id", ondelete="CASCADE"), doc="Run that claimed the input")
    claimed_at: Mapped[dt.datetime] = column(DateTime(timezone=True), server_default=_now, doc="Claim time")


class Collection(Base):
    __tablename__ = "collection"

    id: Mapped[int] = column(Integer, Identity(), primary_key=True, doc="Collection identifier", ucd="meta.id")
    name: Mapped[str] = column(Text, unique=True, doc="Collection name, e.g. current or dr1-candidate")
    description: Mapped[str | None] = column(Text, doc="What the collection is for")
    automatic: Mapped[bool] = column(
        server_default=text("false"), doc="Maintained by skyledger (current: newest successful run per task)"
    )
    created_at: Mapped[dt.datetime] = column(DateTime(timezone=True), server_default=_now, doc="Creation time")


class CollectionRun(Base):
    __tablename__ = "collection_run"

    collection_id: Mapped[int] = column(ForeignKey("collection.id"), primary_key=True, doc="Collection")
    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run in the collection")
    rank: Mapped[int] = column(Integer, server_default=text("0"), doc="Search order: lower ranks win")


class Release(Base):
    __tablename__ = "release"
    __table_args__ = (CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,62}$'", name="name_identifier"),)

    id: Mapped[int] = column(Integer, Identity(), primary_key=True, doc="Release identifier", ucd="meta.id")
    name: Mapped[str] = column(Text, unique=True, doc="Release name, also its SQL schema name (e.g. dr1)")
    collection_id: Mapped[int] = column(ForeignKey("collection.id"), doc="Collection the release froze")
    notes: Mapped[str | None] = column(Text, doc="Release notes")
    code_version: Mapped[str] = column(Text, doc="skyledger version that wrote the release")
    schema_version: Mapped[str] = column(Text, doc="Database schema revision at release time")
    out_dir: Mapped[str | None] = column(Text, doc="Directory the release files were written to")
    created_at: Mapped[dt.datetime] = column(DateTime(timezone=True), server_default=_now, doc="Creation time")


class ReleaseRun(Base):
    __tablename__ = "release_run"

    release_id: Mapped[int] = column(ForeignKey("release.id"), primary_key=True, doc="Release")
    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run frozen into the release")


class ReleaseFile(Base):
    __tablename__ = "release_file"
    __table_args__ = (UniqueConstraint("release_id", "path"),)

    id: Mapped[int] = column(Integer, Identity(), primary_key=True, doc="Release file identifier", ucd="meta.id")
    release_id: Mapped[int] = column(ForeignKey("release.id"), doc="Release the file belongs to")
    path: Mapped[str] = column(Text, doc="Path relative to the release directory")
    table_name: Mapped[str | None] = column(Text, doc="Catalogue table the file holds")
    file_format: Mapped[str] = column(Text, doc="fits, ecsv, parquet, json or md")
    sha256: Mapped[str] = column(Text, doc="SHA-256 of the file (hex)")
    size_bytes: Mapped[int] = column(BigInteger, doc="File size", unit="byte")
    n_rows: Mapped[int | None] = column(BigInteger, doc="Rows in the table file")


class ReleaseTableDigest(Base):
    """What every table of a release schema held when it was frozen (migration 0012).

    ``release verify`` recomputes the digest: the read-only triggers stop ordinary writes,
    but an owner or superuser can bypass them, and a digest catches what a count would not.
    """

    __tablename__ = "release_table"
    __table_args__ = {"comment": "Content digest of every table of a release schema, recorded when it was frozen"}

    release_id: Mapped[int] = column(ForeignKey("release.id"), primary_key=True, doc="Release the table belongs to")
    table_name: Mapped[str] = column(Text, primary_key=True, doc="Table of the release schema")
    n_rows: Mapped[int] = column(BigInteger, doc="Rows of the table when it was frozen")
    sha256: Mapped[str] = column(
        Text, doc="SHA-256 (hex) of the table's columns and rows in key order, as release verify recomputes it"
    )


class FlagDefinition(Base):
    __tablename__ = "flag_definition"
    __table_args__ = (
        CheckConstraint("bit >= 0 AND bit < 63", name="bit_range"),
        UniqueConstraint("table_name", "column_name", "name"),
    )

    table_name: Mapped[str] = column(Text, primary_key=True, doc="Table (or catalog view) holding the flags column")
    column_name: Mapped[str] = column(Text, primary_key=True, doc="Name of the flags column")
    bit: Mapped[int] = column(SmallInteger, primary_key=True, doc="Bit number (value 2**bit)")
    name: Mapped[str] = column(Text, doc="Short upper-case name of the flag")
    description: Mapped[str] = column(Text, doc="What the flag means")


# The result tables live in result_models, which needs these tables first; they are
# re-exported lazily (PEP 562) so that ``models`` still names every table.
_RESULT_MODELS = ("Abundance", "LineMeasurement", "MetallicityGradient", "NebulaClass", "RotationFit", "StellarKinematics")


def __getattr__(name: str) -> Any:
    if name in _RESULT_MODELS:
        from . import result_models

        return getattr(result_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
