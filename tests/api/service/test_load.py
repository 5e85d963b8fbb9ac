"""The query service under load: 50 sync queries and 10 async jobs at once each complete
or are refused cleanly (HTTP 4xx/503 with an error document, or a job in ERROR that says
why), nothing hangs (one generous bound on the whole batch, no timed assertions), and
afterwards no session of the query login is left and the service still answers."""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor, wait
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.api.service.conftest import start_server, stop_server
from tests.api.service.test_attacks import (
    JOB_BOUND_S,
    REQUEST_TIMEOUT_S,
    SLOW_ADQL,
    TIMED_OUT,
    Outcome,
    admin_connect,
    classify,
    delete_job,
    error_document_message,
    job_url,
    problems,
    query_login,
    sessions,
    sync_post,
    wait_for_final_phase,
)

pytestmark = pytest.mark.slow

N_SYNC = 50
N_ASYNC = 10
#: The whole batch must be over within this; only a hung worker takes longer.
BATCH_BOUND_S = 300.0
#: Sessions of the query login must be gone within this after the batch.
DRAIN_BOUND_S = 60.0

#: Small, different queries (a catalogue view, TAP_SCHEMA, a join): their answers are
#: compared with the same query run alone.
QUERIES = [
    "SELECT TOP 50 spectrum_id, survey, ra, dec FROM catalog.spectra ORDER BY spectrum_id",
    "SELECT table_name, column_name FROM TAP_SCHEMA.columns ORDER BY table_name, column_name",
    "SELECT COUNT(*) AS n FROM catalog.spectra",
    ("SELECT t.table_name, COUNT(*) AS n FROM TAP_SCHEMA.tables AS t JOIN TAP_SCHEMA.columns AS c "
     "ON c.table_name = t.table_name GROUP BY t.table_name ORDER BY t.table_name"),
]


def _clean_refusal(outcome: Outcome) -> list[str]:
    """A refusal under load may be a 503 (busy): fine with an error document that says so."""
    if outcome.status == 503:
        return [] if outcome.refused and outcome.message.strip() else [f"503 without an error document: {outcome.describe()}"]
    return problems(outcome, must_refuse=False)


def _sync(base_url: str, query: str) -> Outcome:
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        return classify("sync", sync_post(client, query, RESPONSEFORMAT="csv"))


def _job(base_url: str, query: str) -> Outcome:
    with httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_S) as client:
        created = client.post("/tap/async", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query,
                                                  "RESPONSEFORMAT": "csv", "PHASE": "RUN"})
        url = job_url(client, created)
        if url is None:
            return classify("async (create)", created)
        try:
            phase = wait_for_final_phase(client, url, JOB_BOUND_S)
            if phase == "COMPLETED":
                return classify("async COMPLETED", client.get(url + "/results/result", follow_redirects=True))
            error = client.get(url + "/error", follow_redirects=True)
            message = error_document_message(error.content) or " ".join(error.text.split())[:300]
            return Outcome(f"async {phase}", error.status_code, error.content, True, message)
        finally:
            delete_job(client, url)


def _reference(base_url: str) -> dict[str, bytes]:
    answers = {}
    for query in QUERIES:
        outcome = _sync(base_url, query)
        assert outcome.status == 200 and not outcome.refused, outcome.describe()
        answers[query] = outcome.body
    return answers


def _query_sessions(settings) -> list[tuple]:
    login = query_login(settings)
    with admin_connect(settings) as admin:
        return [s for s in sessions(admin) if s[1] == login]


def _batch(base: str, sync_queries: list[str], job_queries: list[str]) -> tuple[list[Outcome], list[Outcome]]:
    """All requests at once, in threads; fails when any is still running after the bound."""
    # Not a `with` block: its exit would wait for hung requests instead of failing.
    pool = ThreadPoolExecutor(max_workers=len(sync_queries) + len(job_queries))
    try:
        syncs = [pool.submit(_sync, base, q) for q in sync_queries]
        jobs = [pool.submit(_job, base, q) for q in job_queries]
        _, pending = wait(syncs + jobs, timeout=BATCH_BOUND_S)
        assert not pending, f"{len(pending)} of {len(syncs) + len(jobs)} requests still running after {BATCH_BOUND_S:g} s: hung workers"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [f.result() for f in syncs], [f.result() for f in jobs]


def _check_batch(kind: str, queries: list[str], outcomes: list[Outcome], reference: dict[str, bytes]) -> tuple[int, list[str]]:
    """(answers, problems): every answer equals the same query run alone, every refusal is clean."""
    failures, answered = [], 0
    for i, (query, outcome) in enumerate(zip(queries, outcomes)):
        failures += [f"{kind} #{i}: {p}" for p in _clean_refusal(outcome)]
        if not outcome.refused and outcome.status == 200:
            answered += 1
            if query not in reference:
                failures.append(f"{kind} #{i}: {query[:60]!r} was answered; it only ends by its timeout: {outcome.describe()}")
            elif outcome.body != reference[query]:
                failures.append(f"{kind} #{i}: answer differs from the same query alone: {outcome.describe()}")
    return answered, failures


def _after_the_load(base: str, settings, reference: dict[str, bytes]) -> None:
    """No session of the query login left, the service answers, no slot leaked."""
    deadline = time.monotonic() + DRAIN_BOUND_S
    while (left := _query_sessions(settings)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"sessions of the query login still open {DRAIN_BOUND_S:g} s after the load: {left}"
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        availability = client.get("/tap/availability")
        assert availability.status_code == 200 and b"true" in availability.content.lower(), availability.text
    # As many queries at once as the service runs concurrently all complete now that
    # nothing else runs (a slot kept by a finished request would make one wait, then 503).
    n = settings.tap_sync_concurrency
    after, jobs = _batch(base, [QUERIES[0]] * n, [QUERIES[2]])
    assert [o.status for o in after] == [200] * n and all(o.body == reference[QUERIES[0]] for o in after), [
        o.describe() for o in after if o.status != 200 or o.body != reference[QUERIES[0]]
    ]
    assert jobs[0].status == 200 and not jobs[0].refused and jobs[0].body == reference[QUERIES[2]], jobs[0].describe()


def test_fifty_sync_queries_and_ten_jobs_at_once(tap_server):
    base = tap_server.url
    reference = _reference(base)
    sync_queries = [QUERIES[i % len(QUERIES)] for i in range(N_SYNC)]
    job_queries = [QUERIES[i % len(QUERIES)] for i in range(N_ASYNC)]
    syncs, jobs = _batch(base, sync_queries, job_queries)
    n_sync, sync_failures = _check_batch("sync", sync_queries, syncs, reference)
    n_async, async_failures = _check_batch("async", job_queries, jobs, reference)
    assert sync_failures + async_failures == [], "\n".join(sync_failures + async_failures)
    # Refusals are allowed (the job quota refuses some of the ten), but not of everything.
    assert n_sync >= 1 and n_async >= 1, (n_sync, n_async)
    _after_the_load(base, tap_server.settings, reference)


#: Limits under which the service is busy: slow statements hold every sync slot for
#: their timeout, and others wait a moment, then are refused (503).
BUSY = {"tap_sync_timeout_s": 3.0, "tap_async_duration_s": 3.0, "tap_sync_wait_s": 1.0, "tap_jobs_per_client": 20}


@pytest.fixture(scope="module")
def busy(tap_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("busy") / "home"
    home.mkdir()
    settings = tap_server.settings.model_copy(update=BUSY | {"home": home})
    srv = start_server(settings)
    yield srv
    stop_server(srv)


def test_slow_queries_among_them_end_by_their_timeouts_and_free_everything(busy):
    """One in five statements never ends by itself: those end by the timeouts, those that
    found no slot are refused with a 503, and afterwards nothing is left behind."""
    base = busy.url
    reference = _reference(base)
    sync_queries = [SLOW_ADQL if i % 5 == 0 else QUERIES[i % len(QUERIES)] for i in range(N_SYNC)]
    job_queries = [SLOW_ADQL if i % 2 == 0 else QUERIES[i % len(QUERIES)] for i in range(N_ASYNC)]
    syncs, jobs = _batch(base, sync_queries, job_queries)
    n_sync, sync_failures = _check_batch("sync", sync_queries, syncs, reference)
    n_async, async_failures = _check_batch("async", job_queries, jobs, reference)
    failures = sync_failures + async_failures
    for kind, queries, outcomes in (("sync", sync_queries, syncs), ("async", job_queries, jobs)):
        for i, (query, outcome) in enumerate(zip(queries, outcomes)):
            if query == SLOW_ADQL and outcome.status != 503 and not re.search(TIMED_OUT, outcome.message, re.IGNORECASE):
                failures.append(f"{kind} #{i}: the slow statement did not end by its timeout: {outcome.describe()}")
    assert failures == [], "\n".join(failures)
    assert n_sync >= 1 and n_async >= 1, (n_sync, n_async)
    _after_the_load(base, busy.settings, reference)


#: A client that stops reading must not keep a sync slot longer than this (a generous
#: multiple of the statement timeout below; only a slot held for good takes longer).
STALL_BOUND_S = 90.0
STALLED = {"tap_sync_concurrency": 2, "tap_sync_wait_s": 1.0, "tap_sync_timeout_s": 5.0}


@pytest.fixture(scope="module")
def stall_server(tap_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("stall") / "home"
    home.mkdir()
    srv = start_server(tap_server.settings.model_copy(update=STALLED | {"home": home}))
    yield srv
    stop_server(srv)


def test_clients_that_stop_reading_do_not_hold_the_sync_slots_for_ever(stall_server):
    """As many clients as there are sync slots ask for a large result and never read it,
    keeping their connections open: the responses stall once the socket buffers fill.
    Within a bound (a multiple of the statement timeout), the service answers others again
    — else a handful of idle connections would refuse every sync query for as long as they
    stay open."""
    where = urlsplit(stall_server.url)
    big = ("SELECT a.description, b.description AS d2 FROM TAP_SCHEMA.columns AS a, TAP_SCHEMA.columns AS b")
    body = urlencode({"LANG": "ADQL", "QUERY": big, "MAXREC": "100000", "RESPONSEFORMAT": "csv"}).encode()
    head = (b"POST /tap/sync HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n") % (where.netloc.encode(), len(body))
    stalled = []
    try:
        for _ in range(STALLED["tap_sync_concurrency"]):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((where.hostname, where.port))
            sock.sendall(head + body)
            stalled.append(sock)
        # The stalled responses have started (their first bytes are waiting in our buffers).
        for sock in stalled:
            sock.settimeout(REQUEST_TIMEOUT_S)
            assert sock.recv(12).startswith(b"HTTP/1.1"), "no response started"
        probe = "SELECT TOP 1 table_name FROM TAP_SCHEMA.tables"
        deadline = time.monotonic() + STALL_BOUND_S
        answered = None
        while time.monotonic() < deadline:
            outcome = _sync(stall_server.url, probe)
            assert outcome.status in (200, 503), outcome.describe()
            if outcome.status == 200:
                answered = outcome
                break
            time.sleep(1.0)
        assert answered is not None, (
            f"{len(stalled)} clients that stopped reading still hold every sync slot after {STALL_BOUND_S:g} s "
            f"(sessions of the query login now: {[(s[3], s[4][:60]) for s in _query_sessions(stall_server.settings)]})")
    finally:
        for sock in stalled:
            sock.close()
