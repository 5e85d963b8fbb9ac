"""Alembic environment: runs against the engine skyledger hands over, online only."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from skyledger.schema import models, result_models  # noqa: F401  (registers the tables on the metadata)
from skyledger.schema.base import Base

# Tables a task declares in its own module are not imported here: upgrades need no
# metadata, and importing the tasks would load torch into every `skyledger init`.
# tests/schema/test_migrations.py imports them before comparing models and migrations.
target_metadata = Base.metadata

# Arbitrary but fixed: the advisory-lock key that serialises migrations.
MIGRATION_LOCK_KEY = 0x736B796C6564  # "skyled"


def run_migrations_online() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        raise RuntimeError("skyledger migrations run through skyledger.schema.database.upgrade()")
    with engine.begin() as connection:
        # Two processes may upgrade at once (e.g. two commands on a fresh embedded
        # database): the second waits here, then finds nothing left to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            transaction_per_migration=False,
        )
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
