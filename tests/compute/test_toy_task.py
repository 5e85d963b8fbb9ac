"""Adding a task takes one module and one migration: a toy task, end to end.

``toy_task/toy.py`` declares the table and the task; ``toy_task/versions/`` holds its
migration. Nothing else is edited: the registry orders it, the runner COPYs its rows,
the catalog view, the release table and the TAP_SCHEMA rows come from its declaration.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest
from alembic import command
from astropy.cosmology import Planck18
from astropy.table import Table
from sqlalchemy import text

from skyledger.api.releases import create_release
from skyledger.api.releases.tables import release_table, release_tap_tables
from skyledger.compute.framework import registry
from skyledger.compute.framework.runner import process
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.catalog import catalog_views
from skyledger.schema.database import alembic_config, head_revision
from skyledger.schema.results import RESULT_VIEWS
from skyledger.schema.tap import catalog_tap_tables, tap_schema_rows
from tests.schema.test_declarations import assert_view_matches_declaration

TOY = Path(__file__).parent / "toy_task"


@pytest.fixture
def toy():
    """The toy module, imported (which registers it) and forgotten afterwards, so that no
    other test sees a task whose table only this test's database has."""
    module = importlib.import_module("tests.compute.toy_task.toy")
    try:
        yield module
    finally:
        registry.unregister("lookback")
        RESULT_VIEWS.pop("lookback", None)
        sys.modules.pop("tests.compute.toy_task.toy", None)


def _migrate_toy(db) -> None:
    cfg = alembic_config(db.engine)
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join([f"{cfg.get_main_option('script_location')}/versions",
                                                              str(TOY / "versions")]))
    command.upgrade(cfg, "toy_0001")


def test_a_toy_task_needs_one_module_and_one_migration(toy, fresh_database, tmp_path):
    db = fresh_database
    files = [shutil.copy(p, tmp_path / p.name) for p in sorted(sample_data_dir().glob("*_SDSS_DR18.fits"))]
    assert {o.status for o in ingest_paths(db, files).outcomes} == {"loaded"}
    _migrate_toy(db)

    # The registry found it and runs it after the task it reads from.
    names = registry.task_names()
    assert "lookback" in names and names.index("lookback") > names.index("lines")

    summary = process(db, registry.get_task("lookback"))
    assert summary.status == "succeeded" and summary.n_inputs == 2
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT s.z, v.lookback_gyr, v.flags FROM catalog.lookback AS v "
                                 "JOIN spectrum AS s ON s.id = v.spectrum_id ORDER BY v.spectrum_id")).all()
        flag_names = set(conn.execute(text("SELECT name FROM flag_definition WHERE table_name = 'lookback'")).scalars())
        assert_view_matches_declaration(conn, RESULT_VIEWS["lookback"])
        conn.rollback()
    assert len(rows) == 2 and flag_names == {"NO_REDSHIFT"}
    for z, gyr, flags in rows:
        assert flags == 0 and gyr == pytest.approx(Planck18.lookback_time(z).to_value("Gyr"), rel=1e-12)

    # A new version replaces the toy's rows in the view; the old rows stay in the table.
    class LookbackV2(toy.LookbackTask):
        version = 2

        def compute(self, batch, params, device, workers=1):
            out = super().compute(batch, params, device, workers)
            out.rows["lookback"] = [(sid, None, int(toy.LookbackFlag.NO_REDSHIFT)) for sid, _, _ in out.rows["lookback"]]
            return out

    v2 = process(db, LookbackV2())
    with db.engine.connect() as conn:
        shown = set(conn.execute(text("SELECT run_id FROM catalog.lookback")).scalars())
        kept = conn.execute(text("SELECT count(*) FROM lookback")).scalar_one()
    assert shown == {v2.run_id} and kept == 4

    # Its catalog view, release table and TAP_SCHEMA rows come from the declaration.
    assert "lookback" in {v.name for v in catalog_views()}
    table = release_table("lookback")
    assert table.column_names == ["spectrum_id", "lookback_gyr", "flags", "run_id"]
    assert table.columns[1].unit == "Gyr" and table.columns[1].ucd == "time.age"
    tap = tap_schema_rows(catalog_tap_tables() + release_tap_tables("dr_toy"), {})
    assert {"catalog.lookback", "dr_toy.lookback"} <= {t["table_name"] for t in tap["tables"]}

    # A release freezes it like every other table (the views are queried as the reader).
    release = create_release(db, "dr_toy", out_dir=tmp_path / "dr_toy")
    assert release.tables["lookback"] == 2
    frozen = Table.read(release.out_dir / "lookback.fits", hdu=1)
    assert list(frozen.colnames) == table.column_names and set(frozen["run_id"]) == {v2.run_id}
    with db.engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert version == "toy_0001" and head_revision() != "toy_0001"


def test_a_class_that_misses_the_protocol_is_refused_at_registration(toy):
    from skyledger.schema.errors import ConfigError

    class NoVersion(toy.LookbackTask):
        version = 0

    class NoCompute:
        name = "broken"
        version = 1
        after = ()
        Params = toy.LookbackParams
        result_tables = toy.LookbackTask.result_tables
        flags = ()

    with pytest.raises(ConfigError, match="version must be an int"):
        registry.register(NoVersion)
    with pytest.raises(ConfigError, match=r"method (compute|load|pending)\(\) is missing"):
        registry.register(NoCompute)
    assert "broken" not in registry.task_names()


def test_every_registered_task_follows_the_protocol():
    from skyledger.compute.framework.task import Task

    names = registry.task_names()
    assert names[0] == "lines" and names.index("gradients") > max(names.index("abundances"), names.index("rotation"))
    for name in names:
        task = registry.get_task(name)
        assert isinstance(task, Task) and registry._check(type(task)) == [], name
        assert all(a in names for a in task.after), name
