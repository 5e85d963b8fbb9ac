"""Async TAP jobs (IVOA UWS 1.1), kept on disk under ``settings.tap_jobs_dir``.

One folder per job: ``job.json`` (phase, parameters, times, error) and the result file,
written as the statement streams (memory stays one chunk). Jobs run in a bounded thread
pool; each one on a reader connection of its own, with the job's execution duration as
its statement_timeout and as a wall-clock bound checked between chunks, and with
``tap_async_max_bytes`` on its result. Nothing is written to the database.

The job list survives a restart of the service; jobs that were queued or running when
it stopped end in ERROR, since their thread is gone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from skyledger.schema.errors import QueryError, SkyledgerError
from skyledger.schema.settings import Settings

from .query import lower_keys, open_result, parse_tap_params

__all__ = ["ACTIVE", "Job", "JobManager", "JobRefused", "job_xml", "jobs_xml"]

log = logging.getLogger(__name__)

PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD", "SUSPENDED", "ARCHIVED")
ACTIVE = ("PENDING", "QUEUED", "EXECUTING")
UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"


class JobRefused(SkyledgerError):
    """A job the service will not take (quota, capacity); ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    id: str
    owner: str
    params: dict[str, str]
    created: float
    destruction: float
    duration_s: float
    phase: str = "PENDING"
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    result_file: str | None = None
    result_type: str | None = None
    rows: int | None = None
    overflow: bool = False
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value: str) -> float:
    text = value.strip().replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    except (ValueError, OverflowError):
        raise QueryError(f"{value[:40]!r} is not an ISO 8601 time such as 2026-12-31T12:00:00Z") from None


class JobManager:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.tap_jobs_dir
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=settings.tap_async_workers, thread_name_prefix="tap-job")
        self._aborts: dict[str, threading.Event] = {}
        self._conns: dict[str, Any] = {}
        self._recover()

    # ------------------------------------------------------------------ storage

    def _dir(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise KeyError(job_id)
        return self.root / job_id

    def _save(self, job: Job) -> None:
        d = self._dir(job.id)
        tmp = d / "job.json.tmp"
        tmp.write_text(json.dumps(asdict(job)))
        os.replace(tmp, d / "job.json")

    def get(self, job_id: str) -> Job:
        """The job; KeyError when there is none (or it was destroyed)."""
        try:
            data = json.loads((self._dir(job_id) / "job.json").read_text())
        except (OSError, ValueError):
            raise KeyError(job_id) from None
        return Job(**data)

    def jobs(self) -> list[Job]:
        out = []
        for d in self.root.iterdir() if self.root.exists() else ():
            try:
                out.append(self.get(d.name))
            except KeyError:
                continue
        return sorted(out, key=lambda j: j.created)

    def result_path(self, job: Job) -> Path | None:
        return self._dir(job.id) / job.result_file if job.result_file else None

    def _recover(self) -> None:
        with self._lock:
            for job in self.jobs():
                if job.phase in ("QUEUED", "EXECUTING"):
                    job.phase, job.ended = "ERROR", time.time()
                    job.error = "the service restarted while this job was queued or running; submit it again"
                    self._save(job)

    # ------------------------------------------------------------------ lifecycle

    def sweep(self) -> None:
        """Destroy jobs past their destruction time."""
        now = time.time()
        for job in self.jobs():
            if job.destruction <= now:
                self.delete(job.id)

    def create(self, params: dict[str, str], owner: str, datalink_url: str | None = None) -> Job:
        """A PENDING job; ``datalink_url``: the DataLink endpoint its VOTable result points to."""
        s = self.settings
        self.sweep()
        with self._lock:
            jobs = self.jobs()
            active = [j for j in jobs if j.phase in ACTIVE and j.owner == owner]
            if len(active) >= s.tap_jobs_per_client:
                raise JobRefused(
                    f"client {owner} already has {len(active)} active jobs (PENDING, QUEUED or EXECUTING), the most "
                    f"allowed (SKYLEDGER_TAP_JOBS_PER_CLIENT={s.tap_jobs_per_client}); wait for one to finish or "
                    "DELETE one, then submit again",
                    429,
                )
            finished = [j for j in jobs if j.phase not in ACTIVE]
            excess = len(jobs) + 1 - s.tap_max_jobs
            if excess > len(finished):
                raise JobRefused(
                    f"the service holds {len(jobs)} jobs, all active, the most it keeps (SKYLEDGER_TAP_MAX_JOBS="
                    f"{s.tap_max_jobs}); try again later",
                    503,
                )
            for old in finished[: max(0, excess)]:
                self.delete(old.id)
            now = time.time()
            job = Job(
                id=secrets.token_hex(16), owner=owner, params=lower_keys(params), created=now,
                destruction=now + s.tap_job_lifetime_s, duration_s=s.tap_async_duration_s,
            )
            job.run_id = job.params.pop("runid", None)
            job.extra["datalink_url"] = datalink_url
            job.params.pop("phase", None)
            self._dir(job.id).mkdir(parents=True)
            self._save(job)
            return job

    def set_params(self, job_id: str, params: dict[str, str]) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job.phase != "PENDING":
                raise JobRefused(f"job {job_id} is {job.phase}; parameters can only change while it is PENDING", 409)
            p = lower_keys(params)
            if "runid" in p:
                job.run_id = p.pop("runid")
            job.params.update(p)
            self._save(job)
            return job

    def set_duration(self, job_id: str, value: str) -> Job:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds):
            raise QueryError(f"EXECUTIONDURATION={value[:40]!r} is not a number of seconds (0: the longest allowed)")
        with self._lock:
            job = self.get(job_id)
            if job.phase != "PENDING":
                raise JobRefused(f"job {job_id} is {job.phase}; its execution duration can only change while PENDING", 409)
            # 0 asks for no limit; the service's limit stays the most a job gets.
            limit = self.settings.tap_async_duration_s
            job.duration_s = limit if seconds <= 0 else min(seconds, limit)
            self._save(job)
            return job

    def set_destruction(self, job_id: str, value: str) -> Job:
        when = parse_iso(value)
        with self._lock:
            job = self.get(job_id)
            job.destruction = min(when, job.created + self.settings.tap_job_lifetime_s)
            self._save(job)
            return job

    def run(self, job_id: str) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job.phase != "PENDING":
                return job  # UWS: RUN on a job that left PENDING changes nothing
            job.phase = "QUEUED"
            self._aborts[job.id] = threading.Event()
            self._save(job)
        self._pool.submit(self._execute, job.id)
        return job

    def abort(self, job_id: str) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job.phase not in ACTIVE:
                return job
            job.phase, job.ended = "ABORTED", time.time()
            self._save(job)
            event = self._aborts.get(job_id)
            conn = self._conns.get(job_id)
        if event is not None:
            event.set()
        if conn is not None:
            try:
                conn.cancel_safe()  # stops the statement on the server now, not at the next chunk
            except Exception as err:  # noqa: BLE001 - the connection may be closing on its own
                log.warning("cancelling job %s: %s", job_id, err)
        return job

    def delete(self, job_id: str) -> None:
        try:
            self.abort(job_id)
        except KeyError:
            return
        with self._lock:
            shutil.rmtree(self._dir(job_id), ignore_errors=True)

    def shutdown(self) -> None:
        for job in self.jobs():
            if job.phase in ("QUEUED", "EXECUTING"):
                self.abort(job.id)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ running

    def _update(self, job_id: str, **changes: Any) -> Job | None:
        """Apply changes unless the job was aborted or deleted meanwhile."""
        with self._lock:
            try:
                job = self.get(job_id)
            except KeyError:
                return None
            if job.phase == "ABORTED":
                return None
            for k, v in changes.items():
                setattr(job, k, v)
            self._save(job)
            return job

    def _execute(self, job_id: str) -> None:
        event = self._aborts.get(job_id) or threading.Event()
        try:
            job = self._update(job_id, phase="EXECUTING", started=time.time())
            if job is None or event.is_set():
                return
            self._run(job, event)
        except Exception as err:
            message = str(err) if isinstance(err, SkyledgerError) else f"internal error: {type(err).__name__}: {err}"
            if not isinstance(err, SkyledgerError):
                log.exception("async job %s failed", job_id)
            self._update(job_id, phase="ERROR", ended=time.time(), error=message)
        finally:
            with self._lock:
                self._aborts.pop(job_id, None)
                self._conns.pop(job_id, None)

    def _run(self, job: Job, event: threading.Event) -> None:
        s = self.settings
        req = parse_tap_params(job.params, default_maxrec=s.tap_default_maxrec, max_rows=s.tap_async_max_rows)

        def remember(conn):
            with self._lock:
                self._conns[job.id] = conn

        started = time.monotonic()
        name = f"result.{req.format.extension}"
        path = self._dir(job.id) / name
        written = 0
        try:
            with open_result(s, req, timeout_s=job.duration_s, cancel_hook=remember,
                             datalink_url=job.extra.get("datalink_url")) as result, open(path, "wb") as out:
                for chunk in result.body:
                    if event.is_set():
                        return
                    if time.monotonic() - started > job.duration_s:
                        raise QueryError(
                            f"the job ran longer than its execution duration of {job.duration_s:g} s and was stopped"
                        )
                    written += len(chunk)
                    if written > s.tap_async_max_bytes:
                        raise QueryError(
                            f"the result grew beyond {s.tap_async_max_bytes:,} bytes (SKYLEDGER_TAP_ASYNC_MAX_BYTES); "
                            "ask for fewer rows (MAXREC, TOP) or fewer columns"
                        )
                    out.write(chunk)
                if result.stream.error is not None:
                    # The statement failed part-way; the writer ended the file with QUERY_STATUS
                    # ERROR, but a job's result is whole or absent: the job ends in ERROR.
                    raise result.stream.error
                rows, overflow = result.stream.rows, bool(result.stream.truncated)
        except BaseException:
            path.unlink(missing_ok=True)
            if event.is_set():
                return
            raise
        self._update(job.id, phase="COMPLETED", ended=time.time(), result_file=name,
                     result_type=req.format.media_type, rows=rows, overflow=overflow)


# ---------------------------------------------------------------------- XML


#: Characters XML 1.0 cannot carry, even escaped (C0 controls but tab, newline and
#: carriage return; surrogates; U+FFFE, U+FFFF).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: Any) -> str:
    """``value`` as XML character data: escaped, and what XML cannot hold replaced by U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _el(tag: str, value: Any) -> str:
    if value is None:
        return f'<uws:{tag} xsi:nil="true"/>'
    return f"<uws:{tag}>{xml_text(value)}</uws:{tag}>"


def job_xml(job: Job, base: str) -> str:
    """The UWS 1.1 job document; ``base`` is the job's URL."""
    params = "".join(
        f"<uws:parameter id={quoteattr(_NOT_XML.sub(chr(0xFFFD), k))}>{xml_text(v)}</uws:parameter>"
        for k, v in sorted(job.params.items())
    )
    results = ""
    if job.phase == "COMPLETED" and job.result_file:
        results = f'<uws:result id="result" xlink:href={quoteattr(base + "/results/result")} mime-type={quoteattr(job.result_type or "")}/>'
    error = ""
    if job.phase == "ERROR":
        error = (f'<uws:errorSummary type="fatal" hasDetail="true"><uws:message>{xml_text(job.error or "")}'
                 "</uws:message></uws:errorSummary>")
    info = ""
    if job.rows is not None:
        info = f"<uws:jobInfo><rows>{job.rows}</rows><overflow>{str(job.overflow).lower()}</overflow></uws:jobInfo>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<uws:job xmlns:uws="{UWS_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1">'
        f"{_el('jobId', job.id)}{_el('runId', job.run_id)}{_el('ownerId', None)}{_el('phase', job.phase)}"
        f"{_el('quote', None)}{_el('creationTime', _iso(job.created))}{_el('startTime', _iso(job.started))}"
        f"{_el('endTime', _iso(job.ended))}{_el('executionDuration', int(job.duration_s))}"
        f"{_el('destruction', _iso(job.destruction))}<uws:parameters>{params}</uws:parameters>"
        f"<uws:results>{results}</uws:results>{error}{info}</uws:job>\n"
    )


def jobs_xml(jobs: list[Job], base: str) -> str:
    refs = "".join(
        f'<uws:jobref id={quoteattr(j.id)} xlink:href={quoteattr(base + "/" + j.id)}>{_el("phase", j.phase)}'
        f"{_el('runId', j.run_id) if j.run_id else ''}{_el('creationTime', _iso(j.created))}</uws:jobref>"
        for j in jobs
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<uws:jobs xmlns:uws="{UWS_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1">{refs}</uws:jobs>\n'
    )
