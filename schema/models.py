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

from .base import Base, column

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
    "LineMeasurement",
    "StellarKinematics",
    "Abundance",
    "NebulaClass",
    "RotationFit",
    "MetallicityGradient",
]

# Declination zones of 1 arcmin: with a B-tree on (sky_zone, ra, dec) a cone search is
# a handful of index range scans (one per zone it crosses), with no extension needed.
# The expression is duplicated in the first migration, which must never change.
SKY_ZONE_SQL = "(floor((dec + 90.0) * 60.0))::integer"

_now = func.now()


def _ra(doc: str, *, nullable: bool = True) -> Any:
    return column(Double, doc=doc, unit="deg", ucd="pos.eq.ra;meta.main", nullable=nullable)


def _dec(doc: str, *, nullable: bool = True) -> Any:
    return column(Double, doc=doc, unit="deg", ucd="pos.eq.dec;meta.main", nullable=nullable)


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


class LineMeasurement(Base):
    """One emission line of one spectrum, as fitted by a task or read from a catalogue.

    Catalogue fluxes are stored as the results of an ``ingested`` run, so downstream
    tasks read fitted and ingested lines the same way.
    """

    __tablename__ = "line_measurement"
    __table_args__ = (Index("ix_line_measurement_spectrum_id", "spectrum_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the measurement")
    spectrum_id: Mapped[int] = column(ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum measured")
    line: Mapped[str] = column(Text, primary_key=True, doc="Line identifier, e.g. HA6563, OIII5007", ucd="meta.id;spect.line")
    z: Mapped[float | None] = column(Double, doc="Redshift of the line", ucd="src.redshift")
    velocity: Mapped[float | None] = column(
        Double, doc="Line-of-sight velocity relative to the stellar (or input) redshift", unit="km/s", ucd="spect.dopplerVeloc"
    )
    velocity_err: Mapped[float | None] = column(Double, doc="Error of velocity", unit="km/s", ucd="stat.error;spect.dopplerVeloc")
    sigma: Mapped[float | None] = column(
        Double, doc="Intrinsic velocity dispersion (instrumental broadening removed)", unit="km/s", ucd="phys.veloc.dispersion"
    )
    sigma_err: Mapped[float | None] = column(Double, doc="Error of sigma", unit="km/s", ucd="stat.error;phys.veloc.dispersion")
    flux: Mapped[float | None] = column(
        Double, doc="Integrated line flux, in the spectrum's flux unit times Angstrom", ucd="phot.flux;spect.line"
    )
    flux_err: Mapped[float | None] = column(Double, doc="Error of flux", ucd="stat.error;phot.flux;spect.line")
    ew: Mapped[float | None] = column(Double, doc="Equivalent width (positive in emission)", unit="Angstrom", ucd="spect.line.eqWidth")
    ew_err: Mapped[float | None] = column(Double, doc="Error of ew", unit="Angstrom", ucd="stat.error;spect.line.eqWidth")
    snr: Mapped[float | None] = column(Double, doc="Signal-to-noise ratio of the flux", ucd="stat.snr")
    flags: Mapped[int] = column(Integer, server_default=text("0"), doc="Line flag bits (see flag_definition)", ucd="meta.code")


class StellarKinematics(Base):
    """Stellar line-of-sight velocity distribution of one spectrum, from the `lines` task."""

    __tablename__ = "stellar_kinematics"
    __table_args__ = (Index("ix_stellar_kinematics_spectrum_id", "spectrum_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the fit")
    spectrum_id: Mapped[int] = column(ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum fitted")
    z: Mapped[float | None] = column(Double, doc="Fitted redshift of the stars", ucd="src.redshift")
    velocity: Mapped[float | None] = column(
        Double, doc="Stellar line-of-sight velocity relative to the input redshift", unit="km/s", ucd="spect.dopplerVeloc"
    )
    velocity_err: Mapped[float | None] = column(Double, doc="Error of velocity", unit="km/s", ucd="stat.error;spect.dopplerVeloc")
    sigma: Mapped[float | None] = column(
        Double, doc="Stellar velocity dispersion, instrumental broadening removed", unit="km/s", ucd="phys.veloc.dispersion"
    )
    sigma_err: Mapped[float | None] = column(Double, doc="Error of sigma", unit="km/s", ucd="stat.error;phys.veloc.dispersion")
    chi2: Mapped[float | None] = column(Double, doc="Reduced chi-square of the full (stars + gas) fit", ucd="stat.fit.chi2")
    stellar_chi2: Mapped[float | None] = column(
        Double, doc="Reduced chi-square of the stellar fit with emission lines masked", ucd="stat.fit.chi2"
    )
    snr: Mapped[float | None] = column(Double, doc="Median signal-to-noise ratio per pixel over the fitted range", ucd="stat.snr")
    n_pixels: Mapped[int | None] = column(Integer, doc="Pixels used in the final fit")
    flags: Mapped[int] = column(Integer, server_default=text("0"), doc="Fit flag bits (see flag_definition)", ucd="meta.code")


def _dex(doc: str, ucd: str) -> Any:
    return column(Double, doc=doc, unit="dex", ucd=ucd)


# Errors are asymmetric Monte Carlo intervals; NULL when the run made no draws.
def _err_lo(of: str, unit: str, ucd: str) -> Any:
    return column(Double, doc=f"Lower error of {of}: median minus 16th percentile of the Monte Carlo draws",
                  unit=unit, ucd=f"stat.error;{ucd}")


def _err_hi(of: str, unit: str, ucd: str) -> Any:
    return column(Double, doc=f"Upper error of {of}: 84th percentile minus median of the Monte Carlo draws",
                  unit=unit, ucd=f"stat.error;{ucd}")


class Abundance(Base):
    """Nebular abundances of one spectrum by one method, from the `abundances` task.

    Values are Monte Carlo medians (the nominal value when the run made no draws); the
    direct method fills temperatures, densities and ionic abundances, a strong-line
    calibration only ``oh``.  ``ebv`` is shared by the methods of a spectrum.
    """

    __tablename__ = "abundance"
    __table_args__ = (Index("ix_abundance_spectrum_id", "spectrum_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the abundances", ucd="meta.id")
    spectrum_id: Mapped[int] = column(
        ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum whose emission lines were used", ucd="meta.id"
    )
    method: Mapped[str] = column(
        Text, primary_key=True, doc="Abundance method: direct, or a strong-line calibration such as N2_PP04", ucd="meta.code"
    )
    oh: Mapped[float | None] = _dex("Oxygen abundance 12 + log(O/H)", "phys.abund.Z")
    oh_err_lo: Mapped[float | None] = _err_lo("oh", "dex", "phys.abund.Z")
    oh_err_hi: Mapped[float | None] = _err_hi("oh", "dex", "phys.abund.Z")
    n_o: Mapped[float | None] = _dex("Nitrogen-to-oxygen ratio log(N/O), taken as log(N+/O+) (direct method only)", "phys.abund")
    n_o_err_lo: Mapped[float | None] = _err_lo("n_o", "dex", "phys.abund")
    n_o_err_hi: Mapped[float | None] = _err_hi("n_o", "dex", "phys.abund")
    s_h: Mapped[float | None] = _dex(
        "Sulphur abundance 12 + log(S/H): S+ + S++ with the Stasinska (1978) ionisation correction (direct method only)",
        "phys.abund",
    )
    s_h_err_lo: Mapped[float | None] = _err_lo("s_h", "dex", "phys.abund")
    s_h_err_hi: Mapped[float | None] = _err_hi("s_h", "dex", "phys.abund")
    ebv: Mapped[float | None] = column(
        Double, doc="Colour excess E(B-V) from the Balmer decrement; NULL for dust-corrected input or no decrement",
        unit="mag", ucd="phot.color.excess",
    )
    ebv_err_lo: Mapped[float | None] = _err_lo("ebv", "mag", "phot.color.excess")
    ebv_err_hi: Mapped[float | None] = _err_hi("ebv", "mag", "phot.color.excess")
    te_oiii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [O III] (4959+5007)/4363 ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_oiii_err_lo: Mapped[float | None] = _err_lo("te_oiii", "K", "phys.temperature.electron")
    te_oiii_err_hi: Mapped[float | None] = _err_hi("te_oiii", "K", "phys.temperature.electron")
    te_nii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [N II] (6548+6584)/5755 ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_nii_err_lo: Mapped[float | None] = _err_lo("te_nii", "K", "phys.temperature.electron")
    te_nii_err_hi: Mapped[float | None] = _err_hi("te_nii", "K", "phys.temperature.electron")
    te_siii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [S III] (9069+9532)/6312 ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_siii_err_lo: Mapped[float | None] = _err_lo("te_siii", "K", "phys.temperature.electron")
    te_siii_err_hi: Mapped[float | None] = _err_hi("te_siii", "K", "phys.temperature.electron")
    te_oii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [O II] (3726+3729)/(7320+7330) ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_oii_err_lo: Mapped[float | None] = _err_lo("te_oii", "K", "phys.temperature.electron")
    te_oii_err_hi: Mapped[float | None] = _err_hi("te_oii", "K", "phys.temperature.electron")
    ne_sii: Mapped[float | None] = column(
        Double, doc="Electron density from the [S II] 6716/6731 ratio", unit="cm-3", ucd="phys.density;phys.electron"
    )
    ne_sii_err_lo: Mapped[float | None] = _err_lo("ne_sii", "cm-3", "phys.density;phys.electron")
    ne_sii_err_hi: Mapped[float | None] = _err_hi("ne_sii", "cm-3", "phys.density;phys.electron")
    ne_oii: Mapped[float | None] = column(
        Double, doc="Electron density from the [O II] 3729/3726 ratio", unit="cm-3", ucd="phys.density;phys.electron"
    )
    ne_oii_err_lo: Mapped[float | None] = _err_lo("ne_oii", "cm-3", "phys.density;phys.electron")
    ne_oii_err_hi: Mapped[float | None] = _err_hi("ne_oii", "cm-3", "phys.density;phys.electron")
    op_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(O+/H+) from [O II] 3726+3729", "phys.abund")
    opp_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(O++/H+) from [O III] 4959+5007", "phys.abund")
    np_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(N+/H+) from [N II] 6548+6584", "phys.abund")
    sp_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(S+/H+) from [S II] 6716+6731", "phys.abund")
    spp_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(S++/H+) from [S III] 9069+9532", "phys.abund")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Abundance flag bits (see flag_definition)", ucd="meta.code"
    )


def _class_p(name: str) -> Any:
    return column(
        Double, doc=f"Probability that the object is {name}; NULL where the method does not model the class", ucd="stat.probability"
    )


class NebulaClass(Base):
    """The ionised-nebula class of one spectrum by one method (tasks `nebula_diagnostic`, `nebula_nn`).

    ``probability`` is that of ``class``; the class probabilities need not sum to 1, the
    rest being the probability that the method cannot decide (UNKNOWN).
    """

    __tablename__ = "nebula_class"
    __table_args__ = (
        Index("ix_nebula_class_spectrum_id", "spectrum_id"),
        CheckConstraint("class IN ('HII', 'PN', 'SNR', 'DIG', 'AGN', 'UNKNOWN')", name="class_name"),
    )

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the classification", ucd="meta.id")
    spectrum_id: Mapped[int] = column(
        ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum whose emission lines were classified", ucd="meta.id"
    )
    method: Mapped[str] = column(
        Text, primary_key=True, doc="Classification method: diagnostic (published line-ratio rules) or nn (neural network)",
        ucd="meta.code",
    )
    # `class` is a Python keyword: the attribute is class_, the column keeps the catalogue name.
    class_: Mapped[str] = column(
        "class", Text, doc="Most probable class: HII, PN, SNR, DIG, AGN or UNKNOWN", ucd="src.class"
    )
    probability: Mapped[float | None] = column(
        Double, doc="Probability of the class given in class; NULL when the method gave no probabilities", ucd="stat.probability"
    )
    p_hii: Mapped[float | None] = _class_p("HII")
    p_pn: Mapped[float | None] = _class_p("PN")
    p_snr: Mapped[float | None] = _class_p("SNR")
    p_dig: Mapped[float | None] = _class_p("DIG")
    p_agn: Mapped[float | None] = _class_p("AGN")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Classification flag bits (see flag_definition)", ucd="meta.code"
    )


def _kms(doc: str, ucd: str) -> Any:
    return column(Double, doc=doc, unit="km/s", ucd=ucd)


def _curvature_err(of: str, unit: str, ucd: str) -> Any:
    return column(
        Double, doc=f"Error of {of} from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)",
        unit=unit, ucd=f"stat.error;{ucd}",
    )


class RotationFit(Base):
    """A thin rotating disk fitted to one galaxy's line-of-sight velocities (task `rotation`).

    One row per (galaxy, component, rotation-curve model). Velocities are rest-frame,
    relative to the galaxy's redshift ``z_gal``; ``vmax`` is deprojected.
    """

    __tablename__ = "rotation_fit"
    __table_args__ = (
        Index("ix_rotation_fit_source_id", "source_id"),
        CheckConstraint("component IN ('gas', 'stars')", name="component"),
        CheckConstraint("model IN ('arctan', 'freeman')", name="model"),
    )

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the fit", ucd="meta.id")
    source_id: Mapped[int] = column(
        ForeignKey("source.id"), primary_key=True, doc="The galaxy (parent source of the points fitted)", ucd="meta.id"
    )
    component: Mapped[str] = column(
        Text, primary_key=True, doc="Velocities fitted: gas (emission lines) or stars (stellar kinematics)", ucd="meta.code"
    )
    model: Mapped[str] = column(
        Text, primary_key=True,
        doc="Rotation curve: arctan (V_max asymptotic, r_turn turnover radius) or freeman (exponential disk; "
        "V_max peak speed, r_turn radius of the peak = 2.15 scale lengths)",
        ucd="meta.code",
    )
    z_gal: Mapped[float | None] = column(
        Double, doc="Galaxy redshift the velocities are relative to (source.z); NULL when the galaxy has none", ucd="src.redshift"
    )
    ra_center: Mapped[float | None] = _ra("Right ascension of the fitted disk centre (ICRS)")
    dec_center: Mapped[float | None] = _dec("Declination of the fitted disk centre (ICRS)")
    ra_center_err: Mapped[float | None] = _curvature_err("the centre's east offset", "arcsec", "pos.eq.ra")
    dec_center_err: Mapped[float | None] = _curvature_err("the centre's north offset", "arcsec", "pos.eq.dec")
    pa: Mapped[float | None] = column(
        Double, doc="Position angle of the receding major axis, north through east, in [0, 360)", unit="deg", ucd="pos.posAng"
    )
    pa_err: Mapped[float | None] = _curvature_err("pa", "deg", "pos.posAng")
    inc: Mapped[float | None] = column(Double, doc="Disk inclination (0 = face-on)", unit="deg", ucd="src.orbital.inclination")
    inc_err: Mapped[float | None] = _curvature_err("inc", "deg", "src.orbital.inclination")
    vsys: Mapped[float | None] = _kms("Systemic velocity relative to z_gal, rest frame", "spect.dopplerVeloc")
    vsys_err: Mapped[float | None] = _curvature_err("vsys", "km/s", "spect.dopplerVeloc")
    vmax: Mapped[float | None] = _kms("Deprojected rotation speed: asymptotic (arctan) or peak (freeman)", "phys.veloc.rotat")
    vmax_err: Mapped[float | None] = _curvature_err("vmax", "km/s", "phys.veloc.rotat")
    r_turn: Mapped[float | None] = column(
        Double, doc="Turnover radius (arctan) or radius of the peak speed (freeman)", unit="arcsec", ucd="phys.angSize"
    )
    r_turn_err: Mapped[float | None] = _curvature_err("r_turn", "arcsec", "phys.angSize")
    r_turn_kpc: Mapped[float | None] = column(
        Double, doc="r_turn in proper kpc (angular-diameter distance of z_gal, astropy Planck18)", unit="kpc", ucd="phys.size.radius"
    )
    r_turn_kpc_err: Mapped[float | None] = _curvature_err("r_turn_kpc", "kpc", "phys.size.radius")
    sigma0: Mapped[float | None] = _kms(
        "Velocity-dispersion floor: median intrinsic dispersion of the points beyond r_turn, beam smearing removed when a PSF is known",
        "phys.veloc.dispersion",
    )
    sigma0_err: Mapped[float | None] = column(
        Double, doc="Error of sigma0: 1.2533 x 1.4826 x MAD / sqrt(n)", unit="km/s", ucd="stat.error;phys.veloc.dispersion"
    )
    kpc_per_arcsec: Mapped[float | None] = column(
        Double, doc="Proper kpc per arcsec at z_gal (astropy Planck18); NULL without redshift", unit="kpc/arcsec", ucd="arith.factor"
    )
    r_max: Mapped[float | None] = column(
        Double, doc="Deprojected radius of the outermost point used", unit="arcsec", ucd="phys.angSize"
    )
    psf_fwhm: Mapped[float | None] = column(
        Double, doc="FWHM of the Gaussian PSF modelled for beam smearing; NULL when none was", unit="arcsec", ucd="instr.fov"
    )
    chi2: Mapped[float | None] = column(Double, doc="Reduced chi-square of the points kept", ucd="stat.fit.chi2")
    n_points: Mapped[int] = column(Integer, doc="Points used in the fit (after outlier rejection)", ucd="meta.number")
    n_rejected: Mapped[int] = column(Integer, doc="Points rejected as outliers", ucd="meta.number")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Rotation-fit flag bits (see flag_definition)", ucd="meta.code"
    )


class MetallicityGradient(Base):
    """Radial 12+log(O/H) gradient of one galaxy by one abundance method (task `gradients`)."""

    __tablename__ = "metallicity_gradient"
    __table_args__ = (Index("ix_metallicity_gradient_source_id", "source_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the gradient", ucd="meta.id")
    source_id: Mapped[int] = column(ForeignKey("source.id"), primary_key=True, doc="The galaxy", ucd="meta.id")
    method: Mapped[str] = column(
        Text, primary_key=True, doc="Abundance method of the points (abundance.method)", ucd="meta.code"
    )
    rotation_run_id: Mapped[int | None] = column(
        ForeignKey("run.id"), doc="Run of the rotation fit whose centre, PA and inclination deprojected the radii", ucd="meta.id"
    )
    geometry: Mapped[str | None] = column(
        Text, doc="Which rotation fit gave the geometry: component/model, e.g. gas/arctan", ucd="meta.code"
    )
    slope_dex_per_arcsec: Mapped[float | None] = column(
        Double, doc="Slope of 12+log(O/H) against deprojected radius", unit="dex/arcsec", ucd="phys.abund.Z;arith.grad"
    )
    slope_dex_per_arcsec_err: Mapped[float | None] = column(
        Double, doc="Error of slope_dex_per_arcsec (inverse Hessian of the likelihood)", unit="dex/arcsec",
        ucd="stat.error;phys.abund.Z;arith.grad",
    )
    slope_dex_per_kpc: Mapped[float | None] = column(
        Double, doc="Slope per proper kpc (astropy Planck18 at the galaxy redshift); NULL without redshift", unit="dex/kpc",
        ucd="phys.abund.Z;arith.grad",
    )
    slope_dex_per_kpc_err: Mapped[float | None] = column(
        Double, doc="Error of slope_dex_per_kpc", unit="dex/kpc", ucd="stat.error;phys.abund.Z;arith.grad"
    )
    slope_dex_per_re: Mapped[float | None] = column(
        Double, doc="Slope per effective radius r_e; NULL where r_e is not known", unit="dex", ucd="phys.abund.Z;arith.grad"
    )
    slope_dex_per_re_err: Mapped[float | None] = column(
        Double, doc="Error of slope_dex_per_re", unit="dex", ucd="stat.error;phys.abund.Z;arith.grad"
    )
    r_e: Mapped[float | None] = column(
        Double, doc="Effective radius used (source.meta r_e_arcsec)", unit="arcsec", ucd="phys.angSize;src"
    )
    central_oh: Mapped[float | None] = column(Double, doc="12+log(O/H) of the fitted line at radius 0", unit="dex", ucd="phys.abund.Z")
    central_oh_err: Mapped[float | None] = column(Double, doc="Error of central_oh", unit="dex", ucd="stat.error;phys.abund.Z")
    scatter: Mapped[float | None] = column(
        Double, doc="Intrinsic scatter about the line, beyond the abundance errors", unit="dex", ucd="stat.stdev;phys.abund.Z"
    )
    scatter_err: Mapped[float | None] = column(Double, doc="Error of scatter", unit="dex", ucd="stat.error;stat.stdev")
    r_min: Mapped[float | None] = column(Double, doc="Smallest deprojected radius of the points used", unit="arcsec", ucd="phys.angSize")
    r_max: Mapped[float | None] = column(Double, doc="Largest deprojected radius of the points used", unit="arcsec", ucd="phys.angSize")
    n_points: Mapped[int] = column(Integer, doc="Points used (after outlier rejection)", ucd="meta.number")
    n_rejected: Mapped[int] = column(Integer, doc="Points rejected as outliers", ucd="meta.number")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Gradient flag bits (see flag_definition)", ucd="meta.code"
    )
