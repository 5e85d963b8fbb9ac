"""The embedded server runs with the least privilege the platform allows."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from skyledger.schema import embedded

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("SKYLEDGER_DATABASE_URL")), reason="the tests run against an external server"
)


def _ids(pid: int) -> dict[str, list[int]]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: [int(v) for v in fields[key].split()] for key in ("Uid", "Gid", "Groups")}


def test_listens_only_on_its_socket(server):
    with psycopg.connect(server.admin_conninfo) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
        assert conn.info.host.startswith("/")  # a socket directory, not a host name


@pytest.mark.skipif(os.geteuid() != 0, reason="only root starts the server as another user")
def test_as_root_the_server_has_neither_root_user_nor_root_group(server, test_home):
    postmaster = embedded.status(test_home / "pgdata")
    assert postmaster is not None
    with psycopg.connect(server.admin_conninfo) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for pid in (postmaster.pid, backend):
            ids = _ids(pid)
            assert 0 not in ids["Uid"], ids
            assert 0 not in ids["Gid"], ids
            assert 0 not in ids["Groups"], ids  # no supplementary group root either
        # What that buys: files readable by group root only stay out of reach, even to
        # the server's superuser.
        secret = test_home / "group-root-only"
        secret.write_text("secret")
        secret.chmod(0o640)
        os.chown(secret, 0, 0)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_read_file(%s)", (str(secret),))


def test_running_reads_the_postmaster_pid_file(server, test_home, tmp_path):
    found = embedded.running(test_home / "pgdata")
    assert found is not None and found == embedded.status(test_home / "pgdata")
    assert embedded.running(tmp_path) is None  # no server there
    (tmp_path / "postmaster.pid").write_text("999999999\n/x\n0\n5432\n/tmp\n\n0\nready   \n")
    assert embedded.running(tmp_path) is None  # a pid that no process has
