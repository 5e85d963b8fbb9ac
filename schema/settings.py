"""Runtime settings, read from ``SKYLEDGER_*`` environment variables.

Build a :class:`Settings` at an entry point (CLI command, flow, HTTP app) and pass it
down; nothing in the library reads the environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "default_home"]


def default_home() -> Path:
    """Per-user data directory (``~/.local/share/skyledger`` on Linux).

    For root it is ``/var/lib/skyledger``: the embedded server then runs as an
    unprivileged user, which cannot enter ``/root``.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/skyledger")
    return Path(platformdirs.user_data_dir("skyledger", appauthor=False))


class Settings(BaseSettings):
    """Where skyledger keeps its data and which database it talks to."""

    model_config = SettingsConfigDict(env_prefix="SKYLEDGER_", extra="ignore")

    #: Root of everything skyledger writes: the embedded server's data, releases, logs.
    home: Path = Field(default_factory=default_home)
    #: An external PostgreSQL (>= 14). When unset, the embedded server under ``home`` is used.
    database_url: str | None = None
    #: Survey configuration file; relative paths resolve against the working directory.
    config: Path = Path("skyledger.toml")
    #: Torch device for compute tasks: "auto" picks cuda when available, else cpu.
    device: str = "auto"
    #: Worker processes (one torch thread each) a CPU task may use; on two cores the
    #: `lines` fit measured 1.35x faster with one per core than in one process with threads.
    cpu_workers: int = Field(1, ge=1)
    #: Where `process` computes (docs/compute.md, "Running on Dask"). Unset: in this
    #: process (the embedded demo). "local": a LocalCluster of cpu_workers processes.
    #: "tcp://host:8786": that running Dask scheduler; its workers reach the database
    #: themselves, with these settings.
    dask_scheduler: str | None = None
    #: The login people's queries (`skyledger sql`) use on an external database: a member
    #: of skyledger_reader only. Unset: SKYLEDGER_DATABASE_URL's login, which is refused
    #: when it is more than a reader. The embedded server uses its own `skyledger_query`.
    query_url: str | None = None
    #: Run people's queries as a login with more rights than a reader (the owner); still
    #: read-only, one statement, with the limits. For a private database only.
    allow_owner_queries: bool = False
    #: statement_timeout of people's queries, seconds.
    query_timeout_s: float = Field(60.0, gt=0)
    #: At most this many rows of a query come back (the rest is cut, and marked so).
    query_max_rows: int = Field(10_000, ge=1)
    #: A compressed (gzip) survey file may inflate to this many times its size (at least
    #: to 64 MiB) and never beyond max_inflated_bytes; beyond, it is rejected as a gzip bomb.
    max_inflate_ratio: float = Field(100.0, gt=0)
    max_inflated_bytes: int = Field(4 << 30, gt=0)

    # The query service (`skyledger serve`, docs/query_service.md has the table). Every
    # statement also gets the read path's protections; these bound what one request or job
    # may take, so that a refusal is an answer and never a hang.
    #: MAXREC of a TAP query that names none (sync and async).
    tap_default_maxrec: int = Field(10_000, ge=0)
    #: Most rows a sync query returns, whatever MAXREC asks (the hard limit capabilities lists).
    tap_sync_max_rows: int = Field(100_000, ge=1)
    #: statement_timeout of a sync query, seconds.
    tap_sync_timeout_s: float = Field(60.0, gt=0)
    #: Sync queries running at once; more wait up to tap_sync_wait_s, then are refused
    #: (the reader login has a connection limit of its own).
    tap_sync_concurrency: int = Field(8, ge=1)
    tap_sync_wait_s: float = Field(30.0, ge=0)
    #: Most rows an async job returns (its hard MAXREC).
    tap_async_max_rows: int = Field(1_000_000, ge=1)
    #: Largest result file of an async job; a job writing more ends in ERROR.
    tap_async_max_bytes: int = Field(1 << 30, gt=0)
    #: Execution duration of an async job (its statement_timeout and wall-clock limit), seconds.
    tap_async_duration_s: float = Field(600.0, gt=0)
    #: Async jobs executing at once (the job thread pool); more wait in QUEUED.
    tap_async_workers: int = Field(2, ge=1)
    #: Active (PENDING, QUEUED, EXECUTING) jobs one client address may have.
    tap_jobs_per_client: int = Field(5, ge=1)
    #: Jobs kept on disk; the oldest finished ones go first, and creation is refused when
    #: all are active.
    tap_max_jobs: int = Field(1_000, ge=1)
    #: A job and its result are destroyed this long after creation, seconds (7 days).
    tap_job_lifetime_s: float = Field(7 * 86_400.0, gt=0)

    @field_validator("dask_scheduler", mode="after")
    @classmethod
    def _dask_scheduler(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty variable means unset: compute in-process
        if value != "local" and "://" not in value:
            raise ValueError(f"SKYLEDGER_DASK_SCHEDULER={value!r}: use 'local' or a scheduler address such as tcp://host:8786")
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def embedded_data_dir(self) -> Path:
        return self.home / "pgdata"

    @property
    def releases_dir(self) -> Path:
        return self.home / "releases"

    @property
    def tap_jobs_dir(self) -> Path:
        return self.home / "tap" / "jobs"
