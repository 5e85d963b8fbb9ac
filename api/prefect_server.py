"""A private Prefect server for `skyledger schedule` when no PREFECT_API_URL is set.

Prefect's ephemeral mode has no scheduler, so a served cron would never fire without a
server. This starts `prefect server start` on a free loopback port, with its state under
SKYLEDGER_HOME/prefect, and stops it when the block exits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skyledger.schema.errors import ConfigError

__all__ = ["local_prefect_server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def local_prefect_server(home: Path, *, timeout_s: float = 600.0) -> Iterator[str]:
    """Run a Prefect server for the block's duration; yields its API URL.

    ``timeout_s`` is generous: a first start (a fresh database to migrate) took 267 s at
    load ~12 on 2 cores (docs/operations.md).
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    prefect_home = home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(prefect_home / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(f"the local Prefect server did not start; see {prefect_home / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()
