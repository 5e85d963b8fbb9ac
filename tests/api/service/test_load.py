"""The query service under load: 50 sync queries and 10 async jobs at once each complete
or are refused cleanly (HTTP 4xx/503 with an error document, or a job in ERROR that says
why), nothing hangs (one generous bound on the whole batch, no timed assertions), and
afterwards no session of the query login is left and the service still answers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, wait

import httpx
import pytest

from tests.api.service.test_attacks import (
    JOB_BOUND_S,
    REQUEST_TIMEOUT_S,
    Outcome,
    admin_connect,
    classify,
    delete_job,
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
    """A refusal under load may be a 503 (busy): fine with an error document."""
    if outcome.status == 503:
        return [] if outcome.message.strip() or b"QUERY_STATUS" in outcome.body else [f"503 without a message: {outcome.describe()}"]
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
            outcome = classify("async (create)", created)
            if created.status_code == 503:
                outcome.refused = True
            return outcome
        try:
            phase = wait_for_final_phase(client, url, JOB_BOUND_S)
            if phase == "COMPLETED":
                return classify("async COMPLETED", client.get(url + "/results/result", follow_redirects=True))
            error = client.get(url + "/error", follow_redirects=True)
            return Outcome(f"async {phase}", error.status_code, error.content, True, " ".join(error.text.split())[:300])
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


def test_fifty_sync_queries_and_ten_jobs_at_once(tap_server):
    base = tap_server.url
    reference = _reference(base)
    # Not a `with` block: its exit would wait for hung requests instead of failing.
    pool = ThreadPoolExecutor(max_workers=N_SYNC + N_ASYNC)
    try:
        syncs = [pool.submit(_sync, base, QUERIES[i % len(QUERIES)]) for i in range(N_SYNC)]
        jobs = [pool.submit(_job, base, QUERIES[i % len(QUERIES)]) for i in range(N_ASYNC)]
        _, pending = wait(syncs + jobs, timeout=BATCH_BOUND_S)
        assert not pending, f"{len(pending)} of {N_SYNC + N_ASYNC} requests still running after {BATCH_BOUND_S:g} s: hung workers"
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    failures = []
    answered = {"sync": 0, "async": 0}
    for kind, futures in (("sync", syncs), ("async", jobs)):
        for i, future in enumerate(futures):
            outcome = future.result()
            failures += [f"{kind} #{i}: {p}" for p in _clean_refusal(outcome)]
            if not outcome.refused and outcome.status == 200:
                answered[kind] += 1
                if outcome.body != reference[QUERIES[i % len(QUERIES)]]:
                    failures.append(f"{kind} #{i}: answer differs from the same query alone: {outcome.describe()}")
    assert failures == [], "\n".join(failures)
    # Refusals are allowed, but not of everything: the service did work under load.
    assert answered["sync"] >= 1 and answered["async"] >= 1, answered

    # No session of the query login left (connections are closed after each statement).
    deadline = time.monotonic() + DRAIN_BOUND_S
    while (left := _query_sessions(tap_server.settings)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"sessions of the query login still open {DRAIN_BOUND_S:g} s after the load: {left}"

    # The service still answers, and no slot leaked: as many queries at once as it runs
    # concurrently all complete now that nothing else runs.
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as client:
        availability = client.get("/tap/availability")
        assert availability.status_code == 200 and b"true" in availability.content.lower(), availability.text
    n = tap_server.settings.tap_sync_concurrency
    with ThreadPoolExecutor(max_workers=n) as pool:
        after = list(pool.map(lambda q: _sync(base, q), [QUERIES[0]] * n, timeout=BATCH_BOUND_S))
    assert [o.status for o in after] == [200] * n and all(o.body == reference[QUERIES[0]] for o in after), [
        o.describe() for o in after if o.status != 200
    ]
    job = _job(base, QUERIES[2])
    assert job.status == 200 and not job.refused and job.body == reference[QUERIES[2]], job.describe()
