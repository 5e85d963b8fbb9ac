"""Alembic owns the DDL: models and migrations must agree, and versions are enforced."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from skyledger.schema.base import Base
from skyledger.schema.database import alembic_config, check_schema_version, connect, head_revision, upgrade
from skyledger.schema.errors import SchemaVersionError
from skyledger.schema.results import declared_views

list(declared_views())  # every result table on the metadata, those of task modules too


def test_models_and_migrations_agree(database):
    with database.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(ctx, Base.metadata)
    assert diff == [], f"models and migrations disagree; write a migration for: {diff}"


def test_every_column_is_documented(database):
    """Descriptions live on the columns (SQL comments), so psql's \\d+ shows them too."""
    insp = inspect(database.engine)
    missing = [
        f"{table}.{col['name']}"
        for table in Base.metadata.tables
        for col in insp.get_columns(table)
        if not col.get("comment")
    ]
    assert missing == []


def test_downgrade_then_upgrade_round_trip(fresh_database):
    engine = fresh_database.engine
    command.downgrade(alembic_config(engine), "base")
    assert "spectrum" not in inspect(engine).get_table_names()
    assert upgrade(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM flag_definition")).scalar_one() > 0
        assert conn.execute(text("SELECT name FROM collection WHERE automatic")).scalar_one() == "current"


def test_refuses_a_database_newer_than_the_code(fresh_settings, fresh_database):
    with fresh_database.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaVersionError, match="newer skyledger"):
        connect(fresh_settings)


def test_refuses_an_external_database_without_schema(fresh_settings, fresh_database):
    command.downgrade(alembic_config(fresh_database.engine), "base")
    with pytest.raises(SchemaVersionError, match="skyledger init"):
        check_schema_version(fresh_database.engine)
    # An external database is never migrated behind the operator's back.
    with pytest.raises(SchemaVersionError):
        connect(fresh_settings)


def test_refuses_an_older_database_and_says_how_to_upgrade(fresh_settings, fresh_database):
    command.downgrade(alembic_config(fresh_database.engine), "0001")
    with pytest.raises(SchemaVersionError, match="skyledger db upgrade"):
        connect(fresh_settings)
    assert upgrade(fresh_database.engine) == head_revision()
    connect(fresh_settings).dispose()
