"""The query service under test: a real uvicorn server in a thread, on a free port, over
a fresh migrated database holding a few real spectra (the bundled SDSS, LEGA-C and DESI
files, ingested through skyledger.ingest as `skyledger ingest` does) and results (the
`lines` and `abundances` tasks run on them, as `skyledger process` does).

Fixture ``tap_server`` (module scope: one ingest per test module) yields an object with
``.url`` ("http://127.0.0.1:PORT"), ``.settings`` (the service's; ``query_url`` is the
reader login) and ``.owner_settings`` (the same database as the owner, for checks the
reader may not do). Sibling test modules (attacks, load, QA page) use it too.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import uvicorn
from psycopg import sql
from skyledger.compute.framework.registry import get_task
from skyledger.compute.framework.runner import process
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.database import connect
from skyledger.schema.readpath import QUERY_ROLE
from skyledger.schema.settings import Settings
from sqlalchemy import make_url

SAMPLE = sample_data_dir()
#: One-spectrum files of three surveys (SDSS twice: two nearby galaxies to cone-search).
SPECTRA_FILES = [
    SAMPLE / "NGC3073_SDSS_DR18.fits",
    SAMPLE / "NGC3522_SDSS_DR18.fits",
    SAMPLE / "legac_M19_56670_v3.0.fits",
    Path(__file__).resolve().parents[2] / "data" / "desi" / "coadd-5-169-thru20210419.fits",
]
#: Compute tasks run on them, so that the result views (catalog.lines, ...) have rows.
RESULT_TASKS = ("lines", "abundances")


@dataclass
class TapServer:
    url: str
    settings: Settings
    owner_settings: Settings
    server: uvicorn.Server
    thread: threading.Thread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(settings: Settings, owner_settings: Settings | None = None, *, timeout_s: float = 120.0) -> TapServer:
    """Start ``create_app(settings)`` under uvicorn in a daemon thread; returns once it serves."""
    from skyledger.api.service.app import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test server stopped while starting (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the test server did not start within {timeout_s:g} s")
        time.sleep(0.05)  # polling a start flag, bounded by the deadline
    return TapServer(f"http://127.0.0.1:{port}", settings, owner_settings or settings, server, thread)


def stop_server(srv: TapServer, timeout_s: float = 120.0) -> None:
    srv.server.should_exit = True
    srv.thread.join(timeout_s)
    assert not srv.thread.is_alive(), "the test server did not stop"


@pytest.fixture(scope="module")
def tap_database(server, template_url, tmp_path_factory):
    """A fresh migrated database with the sample spectra ingested: (owner settings, reader settings)."""
    name = f"skyledger_test_tap_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name, template=make_url(template_url).database)
    home = tmp_path_factory.mktemp("tap") / "home"
    home.mkdir()
    reader_url = make_url(url).set(username=QUERY_ROLE, password=None).render_as_string(hide_password=False)
    owner = Settings(home=home, database_url=url, query_url=reader_url)
    db = connect(owner)
    try:
        summary = ingest_paths(db, SPECTRA_FILES)
        loaded = [o for o in summary.outcomes if o.status == "loaded"]
        assert len(loaded) == len(SPECTRA_FILES), [(o.status, o.reason) for o in summary.outcomes]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # four spectra: one thread is faster on a busy machine
        try:
            for task in RESULT_TASKS:
                run = process(db, get_task(task), device="cpu", batch_size=16)
                assert run.status == "succeeded", (task, run)
        finally:
            torch.set_num_threads(threads)
    finally:
        db.dispose()
    yield owner
    server.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    server.created.remove(name)


@pytest.fixture(scope="module")
def tap_server(tap_database):
    """The service on a free port over ``tap_database``; stopped (should_exit) afterwards."""
    settings = tap_database.model_copy(update={"home": tap_database.home / "service"})
    settings.home.mkdir(exist_ok=True)
    srv = start_server(settings, tap_database)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def start_tap_server(tap_database):
    """Start more servers over ``tap_database`` with other settings:
    ``start_tap_server(tap_sync_timeout_s=1.0, ...)``; all stopped at the module's end."""
    started: list[TapServer] = []

    def start(**overrides) -> TapServer:
        home = tap_database.home / f"service-{len(started) + 1}"
        home.mkdir()
        settings = tap_database.model_copy(update={"home": home, **overrides})
        srv = start_server(settings, tap_database)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        stop_server(srv)


def owner_conninfo(srv: TapServer) -> str:
    """libpq conninfo of the test database as its owner (for pg_stat_activity checks)."""
    return make_url(srv.owner_settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
