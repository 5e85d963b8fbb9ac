"""`skyledger serve` starts the service as a console script and answers TAP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests
from skyledger.schema.readpath import QUERY_ROLE
from sqlalchemy import make_url


def _env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLEDGER_")}
    env["SKYLEDGER_HOME"] = str(settings.home)
    env["SKYLEDGER_DATABASE_URL"] = settings.database_url
    env["SKYLEDGER_QUERY_URL"] = settings.query_url
    return env



def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_tap_and_stops_on_sigint(fresh_settings):
    port = _port()
    cmd = [sys.executable, "-c", "from skyledger.api.cli import main; main()", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=_env(fresh_settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                r = requests.get(f"http://127.0.0.1:{port}/tap/sync", timeout=30, params={
                    "REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT COUNT(*) AS n FROM catalog.spectra",
                    "RESPONSEFORMAT": "csv"})
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "skyledger serve did not listen within 120 s"
                time.sleep(0.2)  # polling the port, bounded by the deadline
        assert r.status_code == 200 and r.text.splitlines() == ["n", "0"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "TAP at /tap" in out


def test_serve_refuses_the_owner_as_its_reader(fresh_settings):
    # SKYLEDGER_QUERY_URL naming the owner: the read path's refusal, before listening.
    owner = fresh_settings.model_copy(update={"query_url": fresh_settings.database_url})
    proc = subprocess.run([sys.executable, "-c", "from skyledger.api.cli import main; main()", "serve", "--port", str(_port())],
                          check=False, env=_env(owner), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "catalogue reader" in proc.stderr
    assert make_url(owner.query_url).username != QUERY_ROLE, "the check would not test the owner"
