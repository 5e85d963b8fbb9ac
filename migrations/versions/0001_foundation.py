"""Foundation: surveys, files, sources, spectra, runs, collections, releases, flags; cone search.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy import BigInteger, Double, Integer, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import REAL

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Cone search without extensions, after the zones idea of Gray, Nieto-Santisteban &
# Szalay (2006, MSR-TR-2006-52): declination zones of 1 arcmin (the generated column
# sky_zone), one B-tree range scan on (sky_zone, ra, dec) per zone and RA interval, then
# the exact great-circle distance. Near a pole the RA half-width grows to 180 deg; across
# RA = 0/360 the interval splits in two.
SKY_FUNCTIONS = r"""
CREATE FUNCTION angular_distance_deg(ra1 double precision, dec1 double precision,
                                     ra2 double precision, dec2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    -- Vincenty's form of the great-circle distance: accurate at all separations.
    -- PostgreSQL raises on float underflow, so angles below 1e-300 deg (far below any
    -- astrometric meaning) are taken as zero before they are converted to radians.
    SELECT degrees(atan2(
        sqrt((cos(d2) * sin(dra)) ^ 2 + (cos(d1) * sin(d2) - sin(d1) * cos(d2) * cos(dra)) ^ 2),
        sin(d1) * sin(d2) + cos(d1) * cos(d2) * cos(dra)))
    FROM (SELECT CASE WHEN abs(dec1) < 1e-300 THEN 0 ELSE radians(dec1) END AS d1,
                 CASE WHEN abs(dec2) < 1e-300 THEN 0 ELSE radians(dec2) END AS d2,
                 CASE WHEN abs(ra2 - ra1) < 1e-300 THEN 0 ELSE radians(ra2 - ra1) END AS dra) AS r
$$;
COMMENT ON FUNCTION angular_distance_deg(double precision, double precision, double precision, double precision)
    IS 'Great-circle distance in degrees between two ICRS positions given in degrees';

CREATE FUNCTION sky_zone_ranges(ra_deg double precision, dec_deg double precision, radius_deg double precision)
RETURNS TABLE (zone integer, ra_min double precision, ra_max double precision,
               dec_min double precision, dec_max double precision)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE ROWS 8 AS $$
DECLARE
    -- A margin far above double rounding and far below any real astrometric error,
    -- so that the index pre-selection is never narrower than the exact test.
    eps constant double precision := 1e-9;
    lo double precision;
    hi double precision;
    alpha double precision;
    z integer;
BEGIN
    IF ra_deg IS NULL OR dec_deg IS NULL OR radius_deg IS NULL THEN
        RAISE EXCEPTION 'cone search needs ra, dec and radius (got %, %, %)', ra_deg, dec_deg, radius_deg;
    END IF;
    IF NOT (ra_deg >= 0 AND ra_deg <= 360) THEN
        RAISE EXCEPTION 'cone search: ra = % deg is outside [0, 360]', ra_deg;
    END IF;
    IF NOT (dec_deg >= -90 AND dec_deg <= 90) THEN
        RAISE EXCEPTION 'cone search: dec = % deg is outside [-90, 90]', dec_deg;
    END IF;
    IF NOT (radius_deg > 0 AND radius_deg <= 180) THEN
        RAISE EXCEPTION 'cone search: radius = % deg must be in (0, 180]', radius_deg;
    END IF;
    dec_min := greatest(dec_deg - radius_deg - eps, -90);
    dec_max := least(dec_deg + radius_deg + eps, 90);
    IF dec_min <= -90 OR dec_max >= 90 OR radius_deg >= 90 THEN
        alpha := 180;  -- the cap holds a pole: every RA is inside
    ELSE
        -- Largest RA offset of a cap of radius r centred at dec d:
        -- atan(sin r / sqrt(|cos(d - r) cos(d + r)|)).
        alpha := degrees(atan(sin(radians(radius_deg))
                 / sqrt(abs(cos(radians(dec_deg - radius_deg)) * cos(radians(dec_deg + radius_deg)))))) + eps;
    END IF;
    IF ra_deg >= 360 THEN
        ra_deg := ra_deg - 360;
    END IF;
    -- A FOR loop variable would shadow the OUT column, hence z.
    FOR z IN floor((dec_min + 90.0) * 60.0)::integer .. floor((dec_max + 90.0) * 60.0)::integer LOOP
        zone := z;
        IF alpha >= 180 THEN
            ra_min := 0; ra_max := 360; RETURN NEXT;
        ELSE
            lo := ra_deg - alpha;
            hi := ra_deg + alpha;
            IF lo < 0 THEN
                ra_min := lo + 360; ra_max := 360; RETURN NEXT;
                ra_min := 0; ra_max := hi; RETURN NEXT;
            ELSIF hi >= 360 THEN
                ra_min := lo; ra_max := 360; RETURN NEXT;
                ra_min := 0; ra_max := hi - 360; RETURN NEXT;
            ELSE
                ra_min := lo; ra_max := hi; RETURN NEXT;
            END IF;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION sky_zone_ranges(double precision, double precision, double precision)
    IS 'Index ranges (declination zone, RA interval) that cover a cone; used by cone_search';

CREATE FUNCTION cone_search(ra_deg double precision, dec_deg double precision, radius_arcsec double precision)
RETURNS TABLE (source_id bigint, ra double precision, "dec" double precision, distance_arcsec double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT s.id, s.ra, s.dec, d.deg * 3600.0
    FROM sky_zone_ranges(ra_deg, dec_deg, radius_arcsec / 3600.0) AS r
    JOIN source AS s
      ON s.sky_zone = r.zone AND s.ra BETWEEN r.ra_min AND r.ra_max AND s.dec BETWEEN r.dec_min AND r.dec_max
    CROSS JOIN LATERAL (SELECT angular_distance_deg(ra_deg, dec_deg, s.ra, s.dec) AS deg) AS d
    WHERE d.deg <= radius_arcsec / 3600.0
    ORDER BY d.deg, s.id
$$;
COMMENT ON FUNCTION cone_search(double precision, double precision, double precision)
    IS 'Sources within radius_arcsec of (ra_deg, dec_deg), nearest first';

CREATE FUNCTION cone_search_spectra(ra_deg double precision, dec_deg double precision, radius_arcsec double precision)
RETURNS TABLE (spectrum_id bigint, ra double precision, "dec" double precision, distance_arcsec double precision)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT s.id, s.ra, s.dec, d.deg * 3600.0
    FROM sky_zone_ranges(ra_deg, dec_deg, radius_arcsec / 3600.0) AS r
    JOIN spectrum AS s
      ON s.sky_zone = r.zone AND s.ra BETWEEN r.ra_min AND r.ra_max AND s.dec BETWEEN r.dec_min AND r.dec_max
    CROSS JOIN LATERAL (SELECT angular_distance_deg(ra_deg, dec_deg, s.ra, s.dec) AS deg) AS d
    WHERE d.deg <= radius_arcsec / 3600.0
    ORDER BY d.deg, s.id
$$;
COMMENT ON FUNCTION cone_search_spectra(double precision, double precision, double precision)
    IS 'Spectra (spaxels and bins included) within radius_arcsec of (ra_deg, dec_deg), nearest first';
"""

DROP_SKY_FUNCTIONS = """
DROP FUNCTION cone_search_spectra(double precision, double precision, double precision);
DROP FUNCTION cone_search(double precision, double precision, double precision);
DROP FUNCTION sky_zone_ranges(double precision, double precision, double precision);
DROP FUNCTION angular_distance_deg(double precision, double precision, double precision, double precision);
"""

FLAGS = [
    ("source", "flags", 0, "NO_POSITION", "The file gives no sky position for the object"),
    ("source", "flags", 1, "POSITION_FROM_CONFIG", "The position comes from the survey configuration, not the file"),
    ("spectrum", "flags", 0, "NO_POSITION", "The file gives no sky position for the spectrum"),
    ("spectrum", "flags", 1, "POSITION_FROM_CONFIG", "The position comes from the survey configuration, not the file"),
    ("spectrum", "flags", 2, "NO_RESOLUTION", "The file gives no instrumental resolution"),
    ("spectrum", "flags", 3, "AIR_TO_VACUUM", "Wavelengths were converted from air to vacuum on ingest"),
]


def upgrade() -> None:
    op.create_table('collection',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False, comment='Collection identifier'),
    sa.Column('name', sa.Text(), nullable=False, comment='Collection name, e.g. current or dr1-candidate'),
    sa.Column('description', sa.Text(), nullable=True, comment='What the collection is for'),
    sa.Column('automatic', sa.Boolean(), server_default=sa.text('false'), nullable=False, comment='Maintained by skyledger (current: newest successful run per task)'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False, comment='Creation time'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_collection')),
    sa.UniqueConstraint('name', name=op.f('uq_collection_name'))
    )
    op.create_table('flag_definition',
    sa.Column('table_name', sa.Text(), nullable=False, comment='Table (or catalog view) holding the flags column'),
    sa.Column('column_name', sa.Text(), nullable=False, comment='Name of the flags column'),
    sa.Column('bit', sa.SmallInteger(), nullable=False, comment='Bit number (value 2**bit)'),
    sa.Column('name', sa.Text(), nullable=False, comment='Short upper-case name of the flag'),
    sa.Column('description', sa.Text(), nullable=False, comment='What the flag means'),
    sa.CheckConstraint('bit >= 0 AND bit < 63', name=op.f('ck_flag_definition_bit_range')),
    sa.PrimaryKeyConstraint('table_name', 'column_name', 'bit', name=op.f('pk_flag_definition')),
    sa.UniqueConstraint('table_name', 'column_name', 'name', name=op.f('uq_flag_definition_table_name_column_name_name'))
    )
    op.create_table('run',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False, comment='Run identifier'),
    sa.Column('task', sa.Text(), nullable=False, comment='Task name, e.g. lines, abundances, ingested'),
    sa.Column('version', sa.Integer(), nullable=False, comment='Task version (bumped by hand when results change)'),
    sa.Column('params', postgresql.JSONB(astext_type=Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='Task parameters'),
    sa.Column('params_hash', sa.Text(), nullable=False, comment='SHA-256 of the canonical JSON of params'),
    sa.Column('code_version', sa.Text(), nullable=False, comment='skyledger package version, plus git commit when known'),
    sa.Column('model_sha256', postgresql.JSONB(astext_type=Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='SHA-256 of each model file or template used'),
    sa.Column('upstream_run_ids', postgresql.ARRAY(BigInteger()), server_default=sa.text("'{}'::bigint[]"), nullable=False, comment='Runs whose results this run read'),
    sa.Column('device', sa.Text(), nullable=True, comment='Torch device, e.g. cpu or cuda:0'),
    sa.Column('host', sa.Text(), nullable=True, comment='Host name that executed the run'),
    sa.Column('status', sa.Text(), server_default=sa.text("'running'"), nullable=False, comment='running, succeeded or failed'),
    sa.Column('error', sa.Text(), nullable=True, comment='Error message of a failed run'),
    sa.Column('n_inputs', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Inputs processed'),
    sa.Column('n_results', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Result rows written'),
    sa.Column('n_flagged', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Inputs whose result carries a failure flag'),
    sa.Column('prefect_flow_run_id', sa.Text(), nullable=True, comment='Prefect flow-run id, when run inside a flow'),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False, comment='Start time'),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True, comment='Last sign of life of a running run'),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True, comment='End time'),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f('ck_run_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run'))
    )
    op.create_index('ix_run_task_version_params_hash', 'run', ['task', 'version', 'params_hash'], unique=False)
    op.create_table('survey',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False, comment='Survey identifier'),
    sa.Column('name', sa.Text(), nullable=False, comment='Short unique survey name, e.g. sdss-dr18'),
    sa.Column('reader', sa.Text(), nullable=False, comment="Name of the reader that parses this survey's files"),
    sa.Column('location', sa.Text(), nullable=True, comment="Directory (and glob) the survey's files are found in"),
    sa.Column('options', postgresql.JSONB(astext_type=Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='Reader options from the survey configuration'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False, comment='When the survey was first registered'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_survey')),
    sa.UniqueConstraint('name', name=op.f('uq_survey_name'))
    )
    op.create_table('collection_run',
    sa.Column('collection_id', sa.Integer(), nullable=False, comment='Collection'),
    sa.Column('run_id', sa.BigInteger(), nullable=False, comment='Run in the collection'),
    sa.Column('rank', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Search order: lower ranks win'),
    sa.ForeignKeyConstraint(['collection_id'], ['collection.id'], name=op.f('fk_collection_run_collection_id_collection')),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], name=op.f('fk_collection_run_run_id_run')),
    sa.PrimaryKeyConstraint('collection_id', 'run_id', name=op.f('pk_collection_run'))
    )
    op.create_table('ingest_file',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False, comment='Ingest record identifier'),
    sa.Column('survey_id', sa.Integer(), nullable=False, comment='Survey the file belongs to'),
    sa.Column('uri', sa.Text(), nullable=False, comment='Absolute path or URI of the file as seen by the ingest'),
    sa.Column('sha256', sa.Text(), nullable=True, comment='SHA-256 of the file content (hex); NULL if it could not be read'),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True, comment='File size'),
    sa.Column('status', sa.Text(), nullable=False, comment='loaded, rejected or duplicate'),
    sa.Column('reason', sa.Text(), nullable=True, comment='Why the file was rejected, or what it duplicates'),
    sa.Column('reader', sa.Text(), nullable=True, comment='Reader used (or attempted)'),
    sa.Column('version', sa.Integer(), server_default=sa.text('1'), nullable=False, comment='1 for the first loaded content of a URI, +1 for each changed version'),
    sa.Column('n_sources', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Source rows written'),
    sa.Column('n_spectra', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Spectrum rows written'),
    sa.Column('n_lines', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Line measurement rows written'),
    sa.Column('batch_id', sa.Text(), nullable=True, comment='Identifier of the ingest batch (e.g. one nightly run)'),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False, comment='Start of the load'),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True, comment='End of the load'),
    sa.Column('duration_s', sa.Double(), nullable=True, comment='Wall-clock time spent on the file'),
    sa.CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name=op.f('ck_ingest_file_sha256_hex')),
    sa.CheckConstraint("status IN ('loaded', 'rejected', 'duplicate')", name=op.f('ck_ingest_file_status')),
    sa.ForeignKeyConstraint(['survey_id'], ['survey.id'], name=op.f('fk_ingest_file_survey_id_survey')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_file'))
    )
    op.create_index('ix_ingest_file_uri', 'ingest_file', ['uri'], unique=False)
    op.create_index('uq_ingest_file_loaded_content', 'ingest_file', ['survey_id', 'sha256'], unique=True, postgresql_where=sa.text("status = 'loaded'"))
    op.create_table('release',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False, comment='Release identifier'),
    sa.Column('name', sa.Text(), nullable=False, comment='Release name, also its SQL schema name (e.g. dr1)'),
    sa.Column('collection_id', sa.Integer(), nullable=False, comment='Collection the release froze'),
    sa.Column('notes', sa.Text(), nullable=True, comment='Release notes'),
    sa.Column('code_version', sa.Text(), nullable=False, comment='skyledger version that wrote the release'),
    sa.Column('schema_version', sa.Text(), nullable=False, comment='Database schema revision at release time'),
    sa.Column('out_dir', sa.Text(), nullable=True, comment='Directory the release files were written to'),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False, comment='Creation time'),
    sa.CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,62}$'", name=op.f('ck_release_name_identifier')),
    sa.ForeignKeyConstraint(['collection_id'], ['collection.id'], name=op.f('fk_release_collection_id_collection')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_release')),
    sa.UniqueConstraint('name', name=op.f('uq_release_name'))
    )
    op.create_table('release_file',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False, comment='Release file identifier'),
    sa.Column('release_id', sa.Integer(), nullable=False, comment='Release the file belongs to'),
    sa.Column('path', sa.Text(), nullable=False, comment='Path relative to the release directory'),
    sa.Column('table_name', sa.Text(), nullable=True, comment='Catalogue table the file holds'),
    sa.Column('file_format', sa.Text(), nullable=False, comment='fits, ecsv, parquet, json or md'),
    sa.Column('sha256', sa.Text(), nullable=False, comment='SHA-256 of the file (hex)'),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False, comment='File size'),
    sa.Column('n_rows', sa.BigInteger(), nullable=True, comment='Rows in the table file'),
    sa.ForeignKeyConstraint(['release_id'], ['release.id'], name=op.f('fk_release_file_release_id_release')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_release_file')),
    sa.UniqueConstraint('release_id', 'path', name=op.f('uq_release_file_release_id_path'))
    )
    op.create_table('release_run',
    sa.Column('release_id', sa.Integer(), nullable=False, comment='Release'),
    sa.Column('run_id', sa.BigInteger(), nullable=False, comment='Run frozen into the release'),
    sa.ForeignKeyConstraint(['release_id'], ['release.id'], name=op.f('fk_release_run_release_id_release')),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], name=op.f('fk_release_run_run_id_run')),
    sa.PrimaryKeyConstraint('release_id', 'run_id', name=op.f('pk_release_run'))
    )
    op.create_table('source',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False, comment='Source identifier'),
    sa.Column('survey_id', sa.Integer(), nullable=False, comment='Survey that observed the source'),
    sa.Column('ingest_file_id', sa.BigInteger(), nullable=False, comment='File the source was read from'),
    sa.Column('object_id', sa.Text(), nullable=False, comment="The survey's own identifier of the object"),
    sa.Column('parent_id', sa.BigInteger(), nullable=True, comment='Parent object (the galaxy of a spaxel, bin or HII region)'),
    sa.Column('ra', sa.Double(), nullable=True, comment='Right ascension (ICRS)'),
    sa.Column('dec', sa.Double(), nullable=True, comment='Declination (ICRS)'),
    sa.Column('sky_zone', sa.Integer(), sa.Computed('(floor((dec + 90.0) * 60.0))::integer', persisted=True), nullable=True, comment='Declination zone (1 arcmin) used by cone search'),
    sa.Column('z', sa.Double(), nullable=True, comment='Input redshift guess'),
    sa.Column('flags', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Source flag bits (see flag_definition)'),
    sa.Column('meta', postgresql.JSONB(astext_type=Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='Other header values kept from the file'),
    sa.CheckConstraint('dec >= -90 AND dec <= 90', name=op.f('ck_source_dec_range')),
    sa.CheckConstraint('ra >= 0 AND ra < 360', name=op.f('ck_source_ra_range')),
    sa.ForeignKeyConstraint(['ingest_file_id'], ['ingest_file.id'], name=op.f('fk_source_ingest_file_id_ingest_file')),
    sa.ForeignKeyConstraint(['parent_id'], ['source.id'], name=op.f('fk_source_parent_id_source')),
    sa.ForeignKeyConstraint(['survey_id'], ['survey.id'], name=op.f('fk_source_survey_id_survey')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_source')),
    sa.UniqueConstraint('ingest_file_id', 'object_id', name=op.f('uq_source_ingest_file_id_object_id'))
    )
    op.create_index('ix_source_parent_id', 'source', ['parent_id'], unique=False)
    op.create_index('ix_source_sky', 'source', ['sky_zone', 'ra', 'dec'], unique=False)
    op.create_index('ix_source_survey_id_object_id', 'source', ['survey_id', 'object_id'], unique=False)
    op.create_table('wavelength_grid',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False, comment='Wavelength grid identifier'),
    sa.Column('sha256', sa.Text(), nullable=False, comment="SHA-256 of the grid's float64 values (little-endian)"),
    sa.Column('n_pix', sa.Integer(), nullable=False, comment='Number of pixels'),
    sa.Column('wave', postgresql.ARRAY(Double()), nullable=False, comment='Vacuum wavelength of each pixel'),
    sa.Column('log_uniform', sa.Boolean(), nullable=False, comment='True when the pixels are equally spaced in log wavelength'),
    sa.CheckConstraint('n_pix > 0', name=op.f('ck_wavelength_grid_n_pix')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wavelength_grid')),
    sa.UniqueConstraint('sha256', name=op.f('uq_wavelength_grid_sha256'))
    )
    op.create_table('spectrum',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False, comment='Spectrum identifier'),
    sa.Column('source_id', sa.BigInteger(), nullable=False, comment='Source the spectrum belongs to'),
    sa.Column('survey_id', sa.Integer(), nullable=False, comment='Survey that took the spectrum'),
    sa.Column('ingest_file_id', sa.BigInteger(), nullable=False, comment='File the spectrum was read from'),
    sa.Column('object_id', sa.Text(), nullable=False, comment="The survey's own identifier of the spectrum"),
    sa.Column('ra', sa.Double(), nullable=True, comment='Right ascension of the spectrum (ICRS); a spaxel or bin has its own'),
    sa.Column('dec', sa.Double(), nullable=True, comment='Declination of the spectrum (ICRS)'),
    sa.Column('sky_zone', sa.Integer(), sa.Computed('(floor((dec + 90.0) * 60.0))::integer', persisted=True), nullable=True, comment='Declination zone (1 arcmin) used by cone search'),
    sa.Column('z', sa.Double(), nullable=True, comment='Input redshift given by the survey'),
    sa.Column('n_pix', sa.Integer(), nullable=False, comment='Number of pixels; 0 for a catalogue entry without pixels'),
    sa.Column('wave_grid_id', sa.BigInteger(), nullable=True, comment='Wavelength grid of the pixels; NULL without pixels'),
    sa.Column('flux', postgresql.ARRAY(REAL()), nullable=True, comment='Flux density per pixel, in flux_unit'),
    sa.Column('ivar', postgresql.ARRAY(REAL()), nullable=True, comment='Inverse variance of flux; 0 where there is no data'),
    sa.Column('mask', postgresql.ARRAY(Integer()), nullable=True, comment="The survey's pixel bitmask, 0 = good"),
    sa.Column('resolution', postgresql.ARRAY(REAL()), nullable=True, comment='Instrumental resolving power lambda/FWHM per pixel'),
    sa.Column('flux_unit', sa.Text(), nullable=True, comment='Unit of flux (astropy string)'),
    sa.Column('flags', sa.Integer(), server_default=sa.text('0'), nullable=False, comment='Spectrum flag bits (see flag_definition)'),
    sa.Column('meta', postgresql.JSONB(astext_type=Text()), server_default=sa.text("'{}'::jsonb"), nullable=False, comment='Other header values kept from the file'),
    sa.CheckConstraint('dec >= -90 AND dec <= 90', name=op.f('ck_spectrum_dec_range')),
    sa.CheckConstraint('n_pix >= 0', name=op.f('ck_spectrum_n_pix')),
    sa.CheckConstraint('(n_pix = 0) = (wave_grid_id IS NULL)', name=op.f('ck_spectrum_pixels_have_grid')),
    sa.ForeignKeyConstraint(['wave_grid_id'], ['wavelength_grid.id'], name=op.f('fk_spectrum_wave_grid_id_wavelength_grid')),
    sa.CheckConstraint('ra >= 0 AND ra < 360', name=op.f('ck_spectrum_ra_range')),
    sa.ForeignKeyConstraint(['ingest_file_id'], ['ingest_file.id'], name=op.f('fk_spectrum_ingest_file_id_ingest_file')),
    sa.ForeignKeyConstraint(['source_id'], ['source.id'], name=op.f('fk_spectrum_source_id_source')),
    sa.ForeignKeyConstraint(['survey_id'], ['survey.id'], name=op.f('fk_spectrum_survey_id_survey')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_spectrum')),
    sa.UniqueConstraint('ingest_file_id', 'object_id', name=op.f('uq_spectrum_ingest_file_id_object_id'))
    )
    op.create_index('ix_spectrum_sky', 'spectrum', ['sky_zone', 'ra', 'dec'], unique=False)
    op.create_index('ix_spectrum_source_id', 'spectrum', ['source_id'], unique=False)
    op.create_index('ix_spectrum_survey_id_object_id', 'spectrum', ['survey_id', 'object_id'], unique=False)
    op.create_index('ix_spectrum_wave_grid_id', 'spectrum', ['wave_grid_id'], unique=False)

    # Pixel arrays are floats that pglz barely compresses: store them out of line
    # uncompressed, which makes COPY and reads cheaper.
    for name in ("flux", "ivar", "mask", "resolution"):
        op.execute(f"ALTER TABLE spectrum ALTER COLUMN {name} SET STORAGE EXTERNAL")
    op.execute(SKY_FUNCTIONS)
    op.execute("CREATE SCHEMA catalog")
    op.execute("COMMENT ON SCHEMA catalog IS 'Stable views of the current catalogue'")
    flag_table = sa.table(
        "flag_definition",
        sa.column("table_name", sa.Text),
        sa.column("column_name", sa.Text),
        sa.column("bit", sa.SmallInteger),
        sa.column("name", sa.Text),
        sa.column("description", sa.Text),
    )
    op.bulk_insert(flag_table, [dict(zip(("table_name", "column_name", "bit", "name", "description"), f)) for f in FLAGS])
    op.execute(
        "INSERT INTO collection (name, description, automatic) VALUES "
        "('current', 'The newest successful run of every task; maintained by skyledger', true)"
    )


def downgrade() -> None:
    op.execute("DROP SCHEMA catalog CASCADE")
    op.execute(DROP_SKY_FUNCTIONS)
    for table in ("spectrum", "wavelength_grid", "source", "release_run", "release_file", "release", "ingest_file",
                  "collection_run", "survey", "run", "flag_definition", "collection"):
        op.drop_table(table)
