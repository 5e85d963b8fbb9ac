"""Ingest: line measurements (catalogue fluxes as an `ingested` run) and catalog.spectra.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Only the newest loaded version of each file is listed; older versions stay in the
# tables (and in releases that froze them) but drop out of the catalogue.
SPECTRA_VIEW = """
CREATE VIEW catalog.spectra AS
SELECT sp.id AS spectrum_id,
       sv.name AS survey,
       sp.object_id,
       sp.ra,
       sp.dec,
       sp.z,
       f.uri AS file,
       f.version AS file_version,
       sp.n_pix,
       sp.source_id,
       src.object_id AS source_object_id,
       src.parent_id AS parent_source_id,
       sp.flux_unit,
       sp.flags
FROM spectrum AS sp
JOIN survey AS sv ON sv.id = sp.survey_id
JOIN ingest_file AS f ON f.id = sp.ingest_file_id
JOIN source AS src ON src.id = sp.source_id
WHERE f.status = 'loaded'
  AND NOT EXISTS (
      SELECT 1 FROM ingest_file AS newer
      WHERE newer.survey_id = f.survey_id AND newer.uri = f.uri
        AND newer.status = 'loaded' AND newer.version > f.version)
"""

VIEW_COMMENTS = {
    "spectrum_id": "Spectrum identifier",
    "survey": "Survey name",
    "object_id": "The survey's own identifier of the spectrum",
    "ra": "Right ascension of the spectrum (ICRS), deg",
    "dec": "Declination of the spectrum (ICRS), deg",
    "z": "Input redshift given by the survey",
    "file": "File the spectrum was read from",
    "file_version": "Version of that file (1 for the first content seen under its name)",
    "n_pix": "Number of pixels; 0 for a catalogue entry without pixels",
    "source_id": "Source the spectrum belongs to",
    "source_object_id": "The survey's identifier of that source",
    "parent_source_id": "Parent source (the galaxy of a spaxel, bin or region)",
    "flux_unit": "Unit of the flux (astropy string)",
    "flags": "Spectrum flag bits (see flag_definition)",
}

# Bits 0-15 of line_measurement.flags belong to the fitting tasks; catalogue facts
# live from bit 16 up so that the two never collide.
FLAGS = [
    ("line_measurement", "flags", 16, "DUST_CORRECTED", "The flux is already corrected for dust (catalogue says so)"),
    ("line_measurement", "flags", 17, "FROM_CATALOGUE", "Read from an emission-line catalogue, not fitted by skyledger"),
]


def upgrade() -> None:
    op.create_table(
        "line_measurement",
        sa.Column("run_id", sa.BigInteger(), nullable=False, comment="Run that produced the measurement"),
        sa.Column("spectrum_id", sa.BigInteger(), nullable=False, comment="Spectrum measured"),
        sa.Column("line", sa.Text(), nullable=False, comment="Line identifier, e.g. HA6563, OIII5007"),
        sa.Column("z", sa.Double(), nullable=True, comment="Redshift of the line"),
        sa.Column("velocity", sa.Double(), nullable=True,
                  comment="Line-of-sight velocity relative to the stellar (or input) redshift"),
        sa.Column("velocity_err", sa.Double(), nullable=True, comment="Error of velocity"),
        sa.Column("sigma", sa.Double(), nullable=True,
                  comment="Intrinsic velocity dispersion (instrumental broadening removed)"),
        sa.Column("sigma_err", sa.Double(), nullable=True, comment="Error of sigma"),
        sa.Column("flux", sa.Double(), nullable=True,
                  comment="Integrated line flux, in the spectrum's flux unit times Angstrom"),
        sa.Column("flux_err", sa.Double(), nullable=True, comment="Error of flux"),
        sa.Column("ew", sa.Double(), nullable=True, comment="Equivalent width (positive in emission)"),
        sa.Column("ew_err", sa.Double(), nullable=True, comment="Error of ew"),
        sa.Column("snr", sa.Double(), nullable=True, comment="Signal-to-noise ratio of the flux"),
        sa.Column("flags", sa.Integer(), server_default=sa.text("0"), nullable=False,
                  comment="Line flag bits (see flag_definition)"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_line_measurement_run_id_run")),
        sa.ForeignKeyConstraint(["spectrum_id"], ["spectrum.id"], name=op.f("fk_line_measurement_spectrum_id_spectrum")),
        sa.PrimaryKeyConstraint("run_id", "spectrum_id", "line", name=op.f("pk_line_measurement")),
    )
    op.create_index("ix_line_measurement_spectrum_id", "line_measurement", ["spectrum_id"], unique=False)
    op.execute(SPECTRA_VIEW)
    op.execute("COMMENT ON VIEW catalog.spectra IS 'Every ingested spectrum, with and without pixels'")
    for name, doc in VIEW_COMMENTS.items():
        op.execute(f"COMMENT ON COLUMN catalog.spectra.{name} IS '{doc.replace(chr(39), chr(39) * 2)}'")
    flag_table = sa.table(
        "flag_definition",
        sa.column("table_name", sa.Text), sa.column("column_name", sa.Text), sa.column("bit", sa.SmallInteger),
        sa.column("name", sa.Text), sa.column("description", sa.Text),
    )
    op.bulk_insert(flag_table, [dict(zip(("table_name", "column_name", "bit", "name", "description"), f)) for f in FLAGS])


def downgrade() -> None:
    op.execute("DELETE FROM flag_definition WHERE table_name = 'line_measurement' AND bit >= 16")
    op.execute("DROP VIEW catalog.spectra")
    op.drop_index("ix_line_measurement_spectrum_id", table_name="line_measurement")
    op.drop_table("line_measurement")
