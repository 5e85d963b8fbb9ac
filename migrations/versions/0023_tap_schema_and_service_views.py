"""TAP_SCHEMA for the query service, and three catalog views it serves.

Schema ``tap_schema`` holds the IVOA TAP 1.1 tables (section 4: schemas, tables, columns,
keys, key_columns), readable by the reader role and by ADQL as ``TAP_SCHEMA.*``. This
migration creates them empty; their rows are generated from the column declarations by
``skyledger.schema.tap.refresh_tap_schema``, which runs after every upgrade and after
every release is created (a migration's rows would go stale with the next release).

The three views:

- ``catalog.runs``: every run of every task, with ``is_current`` (in catalog.current_runs);
- ``catalog.ingest_files``: every file the ingest has seen, every version and status;
- ``catalog.spectrum_pixels``: the pixel arrays of the spectra of catalog.spectra (the
  newest loaded version of each file, the rule of migration 0017) that have pixels, with
  the wavelengths of their grid.

The DDL below was printed by ``skyledger.schema.tap.tap_schema_ddl`` and
``python -m skyledger.schema.catalog comments`` and is pasted, not imported: a migration
never changes once released.

Revision ID: 0023
Revises: 0021
Create Date: 2026-12-07
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"

TAP_SCHEMA = [
    'CREATE SCHEMA tap_schema',
    "COMMENT ON SCHEMA tap_schema IS 'This service''s tables and columns (IVOA TAP 1.1)'",
    """
CREATE TABLE tap_schema.schemas (
    schema_name text NOT NULL,
    utype text,
    description text,
    schema_index integer,
    PRIMARY KEY (schema_name)
)
""",
    "COMMENT ON TABLE tap_schema.schemas IS 'The schemas of this service'",
    "COMMENT ON COLUMN tap_schema.schemas.schema_name IS 'Schema name, as queries write it'",
    "COMMENT ON COLUMN tap_schema.schemas.utype IS 'Utype (data-model reference), if any'",
    "COMMENT ON COLUMN tap_schema.schemas.description IS 'What the schema holds'",
    "COMMENT ON COLUMN tap_schema.schemas.schema_index IS 'Suggested order of the schemas'",
    """
CREATE TABLE tap_schema.tables (
    schema_name text,
    table_name text NOT NULL,
    table_type text,
    utype text,
    description text,
    table_index integer,
    PRIMARY KEY (table_name),
    FOREIGN KEY (schema_name) REFERENCES tap_schema.schemas (schema_name)
)
""",
    "COMMENT ON TABLE tap_schema.tables IS 'The tables and views of this service'",
    "COMMENT ON COLUMN tap_schema.tables.schema_name IS 'Schema the table belongs to'",
    "COMMENT ON COLUMN tap_schema.tables.table_name IS 'Table name, schema-qualified, as queries write it'",
    "COMMENT ON COLUMN tap_schema.tables.table_type IS 'table or view'",
    "COMMENT ON COLUMN tap_schema.tables.utype IS 'Utype (data-model reference), if any'",
    "COMMENT ON COLUMN tap_schema.tables.description IS 'What the table holds'",
    "COMMENT ON COLUMN tap_schema.tables.table_index IS 'Suggested order of the tables'",
    """
CREATE TABLE tap_schema.columns (
    table_name text NOT NULL,
    column_name text NOT NULL,
    datatype text,
    arraysize text,
    xtype text,
    "size" integer,
    description text,
    utype text,
    unit text,
    ucd text,
    indexed integer NOT NULL,
    principal integer NOT NULL,
    std integer NOT NULL,
    column_index integer,
    PRIMARY KEY (table_name, column_name),
    FOREIGN KEY (table_name) REFERENCES tap_schema.tables (table_name)
)
""",
    "COMMENT ON TABLE tap_schema.columns IS 'The columns of every table of this service'",
    "COMMENT ON COLUMN tap_schema.columns.table_name IS 'Table the column belongs to (schema-qualified)'",
    "COMMENT ON COLUMN tap_schema.columns.column_name IS 'Column name'",
    "COMMENT ON COLUMN tap_schema.columns.datatype IS 'ADQL datatype'",
    "COMMENT ON COLUMN tap_schema.columns.arraysize IS 'Array size: * for text and arrays of any length, else empty'",
    "COMMENT ON COLUMN tap_schema.columns.xtype IS 'Extended type (DALI), e.g. timestamp or point'",
    'COMMENT ON COLUMN tap_schema.columns."size" IS \'Length of fixed-length values (deprecated by TAP 1.1: see arraysize)\'',
    "COMMENT ON COLUMN tap_schema.columns.description IS 'What the column holds'",
    "COMMENT ON COLUMN tap_schema.columns.utype IS 'Utype (data-model reference), if any'",
    "COMMENT ON COLUMN tap_schema.columns.unit IS 'Unit (VOUnit string)'",
    "COMMENT ON COLUMN tap_schema.columns.ucd IS 'Unified Content Descriptor'",
    "COMMENT ON COLUMN tap_schema.columns.indexed IS '1 when the column is indexed, else 0'",
    "COMMENT ON COLUMN tap_schema.columns.principal IS '1 when the column is one of the table''s principal columns, else 0'",
    "COMMENT ON COLUMN tap_schema.columns.std IS '1 when the column is defined by a standard, else 0'",
    "COMMENT ON COLUMN tap_schema.columns.column_index IS 'Position of the column in its table, from 0'",
    """
CREATE TABLE tap_schema.keys (
    key_id text NOT NULL,
    from_table text,
    target_table text,
    utype text,
    description text,
    PRIMARY KEY (key_id),
    FOREIGN KEY (from_table) REFERENCES tap_schema.tables (table_name),
    FOREIGN KEY (target_table) REFERENCES tap_schema.tables (table_name)
)
""",
    "COMMENT ON TABLE tap_schema.keys IS 'Links between tables (column values that identify rows of another table)'",
    "COMMENT ON COLUMN tap_schema.keys.key_id IS 'Key identifier'",
    "COMMENT ON COLUMN tap_schema.keys.from_table IS 'Table the link starts from (schema-qualified)'",
    "COMMENT ON COLUMN tap_schema.keys.target_table IS 'Table the link points to (schema-qualified)'",
    "COMMENT ON COLUMN tap_schema.keys.utype IS 'Utype (data-model reference), if any'",
    "COMMENT ON COLUMN tap_schema.keys.description IS 'What the link means'",
    """
CREATE TABLE tap_schema.key_columns (
    key_id text NOT NULL,
    from_column text NOT NULL,
    target_column text,
    PRIMARY KEY (key_id, from_column),
    FOREIGN KEY (key_id) REFERENCES tap_schema.keys (key_id)
)
""",
    "COMMENT ON TABLE tap_schema.key_columns IS 'The columns of every link'",
    "COMMENT ON COLUMN tap_schema.key_columns.key_id IS 'Key the columns belong to'",
    "COMMENT ON COLUMN tap_schema.key_columns.from_column IS 'Column of the from_table'",
    "COMMENT ON COLUMN tap_schema.key_columns.target_column IS 'Column of the target_table'",
]

VIEWS = [
    """
CREATE VIEW catalog.runs AS
SELECT r.id AS run_id, r.task, r.version, r.status, r.n_inputs, r.n_results, r.n_flagged, r.error, r.device,
       r.started_at, r.finished_at,
       EXISTS (SELECT 1 FROM catalog.current_runs AS cr WHERE cr.run_id = r.id) AS is_current
FROM run AS r
""",
    """
CREATE VIEW catalog.ingest_files AS
SELECT f.id AS file_id, sv.name AS survey, f.uri AS file, f.version AS file_version, f.status, f.reason, f.reader,
       f.n_sources, f.n_spectra, f.n_lines, f.batch_id, f.started_at, f.finished_at, f.duration_s
FROM ingest_file AS f
JOIN survey AS sv ON sv.id = f.survey_id
""",
    # The spectra of catalog.spectra (same file rule, migration 0017) with pixels; written
    # on the base tables rather than on catalog.spectra so that view can still be replaced.
    """
CREATE VIEW catalog.spectrum_pixels AS
SELECT sp.id AS spectrum_id, g.wave, sp.flux, sp.ivar, sp.mask, sp.resolution, sp.flux_unit
FROM spectrum AS sp
JOIN wavelength_grid AS g ON g.id = sp.wave_grid_id
JOIN ingest_file AS f ON f.id = sp.ingest_file_id
WHERE sp.n_pix > 0
  AND f.status = 'loaded'
  AND NOT EXISTS (
      SELECT 1 FROM ingest_file AS newer
      WHERE newer.survey_id = f.survey_id AND newer.uri = f.uri
        AND newer.status = 'loaded' AND newer.version > f.version)
""",
]

COMMENTS = [
    "COMMENT ON VIEW catalog.runs IS 'Every run of every task (succeeded, failed or running), with its counts and whether the current collection holds it'",
    "COMMENT ON COLUMN catalog.runs.run_id IS 'Run identifier'",
    "COMMENT ON COLUMN catalog.runs.task IS 'Task name, e.g. lines, abundances, ingested'",
    "COMMENT ON COLUMN catalog.runs.version IS 'Task version (bumped by hand when results change)'",
    "COMMENT ON COLUMN catalog.runs.status IS 'running, succeeded or failed'",
    "COMMENT ON COLUMN catalog.runs.n_inputs IS 'Inputs processed'",
    "COMMENT ON COLUMN catalog.runs.n_results IS 'Result rows written'",
    "COMMENT ON COLUMN catalog.runs.n_flagged IS 'Inputs whose result carries a failure flag'",
    "COMMENT ON COLUMN catalog.runs.error IS 'Error message of a failed run'",
    "COMMENT ON COLUMN catalog.runs.device IS 'Torch device, e.g. cpu or cuda:0'",
    "COMMENT ON COLUMN catalog.runs.started_at IS 'Start time'",
    "COMMENT ON COLUMN catalog.runs.finished_at IS 'End time'",
    "COMMENT ON COLUMN catalog.runs.is_current IS 'True when the run is in the collection current, whose runs the result views choose from'",
    "COMMENT ON VIEW catalog.ingest_files IS 'Every file the ingest has seen (loaded, rejected or duplicate), every version, with what it wrote'",
    "COMMENT ON COLUMN catalog.ingest_files.file_id IS 'Ingest record identifier'",
    "COMMENT ON COLUMN catalog.ingest_files.survey IS 'Survey name'",
    "COMMENT ON COLUMN catalog.ingest_files.file IS 'Absolute path or URI of the file as seen by the ingest'",
    "COMMENT ON COLUMN catalog.ingest_files.file_version IS '1 for the first loaded content of a URI, +1 for each changed version'",
    "COMMENT ON COLUMN catalog.ingest_files.status IS 'loaded, rejected or duplicate'",
    "COMMENT ON COLUMN catalog.ingest_files.reason IS 'Why the file was rejected, or what it duplicates'",
    "COMMENT ON COLUMN catalog.ingest_files.reader IS 'Reader used (or attempted)'",
    "COMMENT ON COLUMN catalog.ingest_files.n_sources IS 'Source rows written'",
    "COMMENT ON COLUMN catalog.ingest_files.n_spectra IS 'Spectrum rows written'",
    "COMMENT ON COLUMN catalog.ingest_files.n_lines IS 'Line measurement rows written'",
    "COMMENT ON COLUMN catalog.ingest_files.batch_id IS 'Identifier of the ingest batch (e.g. one nightly run)'",
    "COMMENT ON COLUMN catalog.ingest_files.started_at IS 'Start of the load'",
    "COMMENT ON COLUMN catalog.ingest_files.finished_at IS 'End of the load'",
    "COMMENT ON COLUMN catalog.ingest_files.duration_s IS 'Wall-clock time spent on the file'",
    "COMMENT ON VIEW catalog.spectrum_pixels IS 'The pixels of every spectrum of catalog.spectra that has any: one row per spectrum, one array element per pixel'",
    "COMMENT ON COLUMN catalog.spectrum_pixels.spectrum_id IS 'Spectrum identifier'",
    "COMMENT ON COLUMN catalog.spectrum_pixels.wave IS 'Vacuum wavelength of each pixel'",
    "COMMENT ON COLUMN catalog.spectrum_pixels.flux IS 'Flux density per pixel, in flux_unit'",
    "COMMENT ON COLUMN catalog.spectrum_pixels.ivar IS 'Inverse variance of flux; 0 where there is no data'",
    "COMMENT ON COLUMN catalog.spectrum_pixels.mask IS 'The survey''s pixel bitmask, 0 = good'",
    "COMMENT ON COLUMN catalog.spectrum_pixels.resolution IS 'Instrumental resolving power lambda/FWHM per pixel'",
    "COMMENT ON COLUMN catalog.spectrum_pixels.flux_unit IS 'Unit of flux (astropy string)'",
]


def upgrade() -> None:
    # Through the driver: comments hold colons (cuda:0) that text() would take for binds.
    bind = op.get_bind()
    for statement in (*TAP_SCHEMA, *VIEWS, *COMMENTS):
        bind.exec_driver_sql(statement)
    # The owner writes the rows (refresh_tap_schema); readers, and so the service, only read.
    bind.exec_driver_sql(f"GRANT USAGE ON SCHEMA tap_schema TO {READER_ROLE}")
    bind.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA tap_schema TO {READER_ROLE}")
    bind.exec_driver_sql(f"GRANT SELECT ON catalog.runs, catalog.ingest_files, catalog.spectrum_pixels TO {READER_ROLE}")


def downgrade() -> None:
    op.execute("DROP VIEW catalog.spectrum_pixels")
    op.execute("DROP VIEW catalog.ingest_files")
    op.execute("DROP VIEW catalog.runs")
    op.execute("DROP SCHEMA tap_schema CASCADE")
