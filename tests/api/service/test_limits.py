"""The service's limits answer with clean error documents and leave nothing running:
sync timeout, sync concurrency, async result size, async execution duration, abort, and
the reader login's sessions all gone afterwards."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import requests
from sqlalchemy import make_url

from tests.api.service.conftest import SPECTRA_FILES

#: Four spectra joined with themselves 14 times: 4**14 rows to count, far longer than
#: any limit below (each test's limit cancels it).
SLOW = "SELECT COUNT(*) AS n FROM " + ", ".join(f"catalog.spectra AS t{i}" for i in range(14))
QUERY = "SELECT spectrum_id, survey, ra, dec FROM catalog.spectra ORDER BY spectrum_id"


def _owner(srv) -> str:
    return make_url(srv.owner_settings.database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def reader_sessions(srv, *, running: bool = False) -> int:
    """Sessions of the reader login on the test database (running: with a statement active)."""
    with psycopg.connect(_owner(srv), autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = 'skyledger_query'"
            + (" AND state = 'active' AND query ILIKE '%%count(*)%%'" if running else "")
        ).fetchone()[0]


def wait_until(condition, timeout_s: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s:g} s"
        time.sleep(0.1)  # polling the database, bounded by the deadline


def sync(srv, query: str, **extra) -> requests.Response:
    return requests.post(srv.url + "/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, **extra},
                         timeout=300)


def test_sync_timeout_is_an_error_document_and_ends_the_statement(start_tap_server):
    srv = start_tap_server(tap_sync_timeout_s=1.0)
    r = sync(srv, SLOW)
    assert r.status_code == 200 and b'value="ERROR"' in r.content
    assert b"statement_timeout" in r.content and b"cancelled" in r.content
    wait_until(lambda: reader_sessions(srv) == 0, what="no reader session left")


def test_sync_beyond_the_concurrency_is_refused_not_queued_forever(start_tap_server):
    srv = start_tap_server(tap_sync_concurrency=1, tap_sync_wait_s=0.5, tap_sync_timeout_s=20.0)
    slow = threading.Thread(target=sync, args=(srv, SLOW))
    slow.start()
    try:
        wait_until(lambda: reader_sessions(srv, running=True) == 1, what="the slow query running")
        r = sync(srv, QUERY)
        assert r.status_code == 503 and b"busy" in r.content and r.headers["retry-after"]
    finally:
        slow.join(300)
    assert sync(srv, QUERY).status_code == 200  # the slot came back
    wait_until(lambda: reader_sessions(srv) == 0, what="no reader session left")


def _job(srv, query: str, **extra) -> str:
    r = requests.post(srv.url + "/tap/async", data={"LANG": "ADQL", "QUERY": query, "PHASE": "RUN", **extra},
                      allow_redirects=False, timeout=60)
    assert r.status_code == 303, r.text
    return r.headers["location"]


def _finished(url: str) -> str:
    doc = requests.get(url, params={"WAIT": "30"}, timeout=120).text
    phase = doc.split("<uws:phase>")[1].split("</uws:phase>")[0]
    return phase if phase not in ("PENDING", "QUEUED", "EXECUTING") else ""


def test_async_result_larger_than_allowed_ends_in_error(start_tap_server):
    srv = start_tap_server(tap_async_max_bytes=300)
    url = _job(srv, QUERY, RESPONSEFORMAT="votable/td")
    wait_until(lambda: _finished(url), what="the job ending")
    doc = requests.get(url, timeout=30).text
    assert "<uws:phase>ERROR</uws:phase>" in doc and "300 bytes" in doc
    assert requests.get(url + "/results/result", timeout=30).status_code == 404
    assert b'value="ERROR"' in requests.get(url + "/error", timeout=30).content


def test_async_execution_duration_cancels_the_statement(start_tap_server):
    srv = start_tap_server(tap_async_duration_s=1.0)
    url = _job(srv, SLOW)
    wait_until(lambda: _finished(url), what="the job ending")
    doc = requests.get(url, timeout=30).text
    assert "<uws:phase>ERROR</uws:phase>" in doc and "cancelled" in doc
    wait_until(lambda: reader_sessions(srv) == 0, what="no reader session left")


def test_abort_stops_a_running_job_on_the_server(start_tap_server):
    srv = start_tap_server(tap_async_duration_s=300.0)
    url = _job(srv, SLOW)
    wait_until(lambda: reader_sessions(srv, running=True) == 1, what="the job's statement running")
    r = requests.post(url + "/phase", data={"PHASE": "ABORT"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    assert "<uws:phase>ABORTED</uws:phase>" in requests.get(url, timeout=30).text
    wait_until(lambda: reader_sessions(srv) == 0, what="the aborted statement gone")


def test_execution_duration_and_destruction_can_be_lowered_not_raised(start_tap_server):
    srv = start_tap_server(tap_async_duration_s=100.0)
    r = requests.post(srv.url + "/tap/async", data={"LANG": "ADQL", "QUERY": QUERY}, allow_redirects=False, timeout=30)
    url = r.headers["location"]
    requests.post(url + "/executionduration", data={"EXECUTIONDURATION": "5000"}, timeout=30)
    assert requests.get(url + "/executionduration", timeout=30).text == "100"
    requests.post(url + "/executionduration", data={"EXECUTIONDURATION": "7"}, timeout=30)
    assert requests.get(url + "/executionduration", timeout=30).text == "7"
    requests.post(url + "/destruction", data={"DESTRUCTION": "2000-01-01T00:00:00Z"}, timeout=30)
    # A destruction time in the past destroys the job at the next sweep (a list or a creation).
    requests.get(srv.url + "/tap/async", timeout=30)
    assert requests.get(url, timeout=30).status_code == 404


@pytest.mark.parametrize("params, message", [
    ({"REQUEST": "doQuery", "LANG": "SQL", "QUERY": QUERY}, b"LANG"),
    ({"REQUEST": "getCapabilities", "LANG": "ADQL", "QUERY": QUERY}, b"REQUEST"),
    ({"REQUEST": "doQuery", "LANG": "ADQL"}, b"QUERY"),
    ({"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": QUERY, "MAXREC": "many"}, b"MAXREC"),
])
def test_bad_parameters_are_error_documents(tap_server, params, message):
    r = requests.post(tap_server.url + "/tap/sync", data=params, timeout=30)
    assert r.status_code == 200 and b'value="ERROR"' in r.content and message in r.content


# -- a statement failing after the first chunk of rows -----------------------------------------------

#: 4**6 = 4,096 rows in the order of k, the sum of six spectrum ids; only the last row, every
#: id the largest, divides by zero. The rows before it leave the database first, several of
#: readpath's 1,000-row chunks of them, and the response has begun when the statement fails.
_SUM = " + ".join(f"t{i}.spectrum_id" for i in range(1, 7))
_SIX = ", ".join(f"catalog.spectra AS t{i}" for i in range(1, 7))
FAILS_LATE = (
    f"SELECT s.k, 1 / (s.k - 6 * m.top_id) AS v FROM (SELECT TOP 5000 {_SUM} AS k FROM {_SIX} ORDER BY k) AS s, "
    "(SELECT MAX(spectrum_id) AS top_id FROM catalog.spectra) AS m"
)


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_sync_votable_failing_part_way_ends_with_an_error_info(tap_server, fmt):
    import io
    import warnings

    from astropy.io.votable import parse
    from astropy.io.votable.exceptions import VOWarning

    r = sync(tap_server, FAILS_LATE, RESPONSEFORMAT=fmt)
    assert r.status_code == 200
    with warnings.catch_warnings():
        warnings.simplefilter("error", VOWarning)
        votable = parse(io.BytesIO(r.content))  # a whole, well-formed document
    infos = [i for i in votable.resources[0].infos if i.name == "QUERY_STATUS"]
    assert [i.value for i in infos] == ["OK", "ERROR"] and "division by zero" in infos[-1].content
    rows = votable.get_first_table().to_table()
    assert 1000 < len(rows) < 4**6  # more than the first chunk was sent before the failure
    wait_until(lambda: reader_sessions(tap_server) == 0, what="no reader session left")


def test_pyvo_raises_a_failure_part_way(tap_server):
    import pyvo
    from pyvo.dal.exceptions import DALQueryError

    with pytest.raises(DALQueryError, match="division by zero"):
        pyvo.dal.TAPService(tap_server.url + "/tap").run_sync(FAILS_LATE)


def test_sync_json_failing_part_way_says_error(tap_server):
    doc = sync(tap_server, FAILS_LATE, RESPONSEFORMAT="json").json()
    assert doc["query_status"] == "ERROR" and "division by zero" in doc["message"]
    assert len(doc["data"]) > 1000


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_sync_csv_failing_part_way_is_an_incomplete_transfer(start_tap_server, fmt):
    """CSV has no place for a status: the response is aborted (no final chunk), and the
    client's HTTP library raises instead of handing over a short table that looks whole."""
    import httpx

    srv = start_tap_server(tap_sync_concurrency=1)
    params = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": FAILS_LATE, "RESPONSEFORMAT": fmt}
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        httpx.stream("POST", srv.url + "/tap/sync", data=params, timeout=300) as r,
    ):
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        for part in r.iter_bytes():
            received += part
    assert received.count(b"\n") > 1000  # rows had arrived before the failure
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        sync(srv, FAILS_LATE, RESPONSEFORMAT=fmt)
    # The statement, its connection and the one sync slot were given back.
    assert sync(srv, QUERY, RESPONSEFORMAT=fmt).status_code == 200
    wait_until(lambda: reader_sessions(srv) == 0, what="no reader session left")


def test_sync_fits_failing_part_way_is_an_error_document(tap_server):
    """FITS spools every row before its first byte: the failure comes before the response."""
    r = sync(tap_server, FAILS_LATE, RESPONSEFORMAT="fits")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-votable+xml")
    assert b'value="ERROR"' in r.content and b"division by zero" in r.content
    # A query that does not fail is still FITS, all of it (its first bytes made before the response).
    import io

    from astropy.io import fits

    r = sync(tap_server, QUERY, RESPONSEFORMAT="fits")
    assert r.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(r.content)) as hdul:
        assert len(hdul["RESULTS"].data) == len(SPECTRA_FILES) and hdul[0].header["QSTATUS"] == "OK"


@pytest.mark.parametrize("fmt", ["votable", "csv"])
def test_async_failing_part_way_ends_in_error_without_a_result(tap_server, fmt):
    url = _job(tap_server, FAILS_LATE, RESPONSEFORMAT=fmt)
    wait_until(lambda: _finished(url), what="the job ending")
    doc = requests.get(url, timeout=30).text
    assert "<uws:phase>ERROR</uws:phase>" in doc and "division by zero" in doc
    assert "<uws:result " not in doc  # the partial file is not offered...
    assert requests.get(url + "/results/result", timeout=30).status_code == 404  # ...nor served
    assert b"division by zero" in requests.get(url + "/error", timeout=30).content
