"""The HTTP query service under attack, through every endpoint of the real running server.

Every statement of ``tests/api/read_path_attacks.ATTACKS`` goes in as raw text (QUERY with
LANG=ADQL) to /tap/sync (GET and POST) and /tap/async (create, run, poll to the end), and
as ADQL where that means something (the function call inside a SELECT ... FROM); SQL
injection payloads go into the other endpoints' parameters (cone search, spectrum download,
DataLink, VOSI tables, the UWS job parameters). What must hold, whatever the route:

- a clean refusal: HTTP 4xx, or a TAP/DALI error document (INFO QUERY_STATUS=ERROR with a
  message), or a UWS job in phase ERROR whose error document says why; never a 5xx, never
  a traceback;
- no data from outside the catalogue (a secret planted in a base table, /etc/passwd, role
  passwords, other sessions' statements);
- the database byte-for-byte the same (the digest of tests/api/test_read_path_attacks.py)
  and no file written where the attacks aim (/tmp/skyledger-attack-*);
- every database session the service opens is the reader login's, never the owner's.
"""

from __future__ import annotations

import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import urljoin

import httpx
import psycopg
import pytest
from psycopg import sql
from skyledger.schema.readpath import QUERY_ROLE
from sqlalchemy import make_url

from tests.api.read_path_attacks import ATTACKS, Attack
from tests.api.service.conftest import start_server, stop_server
from tests.api.test_read_path_attacks import (
    FILES_AN_ATTACK_MIGHT_WRITE,
    database_digest,
    owner_conninfo,
)

pytestmark = pytest.mark.slow

#: Bound on one request, and on one async job reaching a final phase: generous (a busy
#: 2-core machine), only there so that a hung worker fails the test instead of hanging it.
REQUEST_TIMEOUT_S = 180.0
JOB_BOUND_S = 240.0
#: Application name of the test's own superuser sessions, so the watch leaves them out.
ADMIN_APP = "skyledger attack test (admin)"
#: A value only the owner may read; it must never come back from the service.
CANARY_SECRET = "canary-7f3c1e9a-secret-of-the-owner"
CANARY_TABLE = "attack_canary"
#: What a leak would look like in a response body.
LEAK_MARKERS = (CANARY_SECRET, "root:x:0:0", "root:*:0:0", "SCRAM-SHA-256$", "Traceback (most recent call last)")
FINAL_PHASES = {"COMPLETED", "ERROR", "ABORTED"}


# ---------------------------------------------------------------------------------------
# Responses: what a clean refusal is


@dataclass
class Outcome:
    """What one request came to: a refusal (with its message) or an answer (with its body)."""

    route: str
    status: int
    body: bytes
    refused: bool
    message: str = ""

    def describe(self) -> str:
        text = self.body[:300].decode("utf-8", "replace")
        return f"{self.route}: HTTP {self.status} refused={self.refused} message={self.message!r} body={text!r}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def error_document_message(body: bytes) -> str | None:
    """The message of a VOTable error document (TAP 1.1 / DALI: INFO name=QUERY_STATUS
    value=ERROR; SCS 1.03: INFO name=Error), None when ``body`` is not one."""
    if b"VOTABLE" not in body[:2000].upper():
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for el in root.iter():
        if _local(el.tag) not in ("INFO", "PARAM"):
            continue
        name, value = (el.get("name") or ""), (el.get("value") or "")
        if (name.upper() == "QUERY_STATUS" and value.upper() == "ERROR") or name.lower() == "error":
            text = " ".join((el.text or "").split()) or value
            return text if text.upper() != "ERROR" else ""
    return None


def classify(route: str, resp: httpx.Response) -> Outcome:
    body = resp.content
    status = resp.status_code
    message = error_document_message(body)
    if 400 <= status < 500:
        if message is None:
            text = body.decode("utf-8", "replace")
            ctype = resp.headers.get("content-type", "")
            if "json" in ctype:
                try:
                    detail = resp.json().get("detail", text)
                    text = detail if isinstance(detail, str) else str(detail)
                except ValueError:
                    pass
            message = " ".join(text.split())
        return Outcome(route, status, body, True, message)
    if status in (200, 503) and message is not None:  # 503: busy, said in an error document
        return Outcome(route, status, body, True, message)
    return Outcome(route, status, body, False)


def problems(outcome: Outcome, *, must_refuse: bool, settings=None) -> list[str]:
    """What is wrong with an outcome ([] when nothing): 5xx, traceback, leak, an answer
    where a refusal was due, a refusal without a message."""
    found = []
    text = outcome.body.decode("utf-8", "replace")
    if outcome.status >= 500:
        found.append(f"server error: {outcome.describe()}")
    for marker in LEAK_MARKERS:
        if marker in text:
            found.append(f"body holds {marker!r}: {outcome.describe()}")
    if settings is not None and settings.database_url:
        url = make_url(settings.database_url)
        if url.password and url.password in text:
            found.append(f"body holds the database password: {outcome.describe()}")
    if outcome.refused and not outcome.message.strip():
        found.append(f"refused without saying why: {outcome.describe()}")
    if outcome.refused and re.search(r"internal error|Internal Server Error", outcome.message):
        found.append(f"refused by an internal error, not with a reason: {outcome.describe()}")
    if must_refuse and not outcome.refused and outcome.status < 500:
        found.append(f"answered instead of refused: {outcome.describe()}")
    return found


# ---------------------------------------------------------------------------------------
# TAP requests


#: Answers come as CSV unless a test asks otherwise: the default (VOTable BINARY2) is
#: base64, in which a leaked value would not be seen.
READABLE = {"RESPONSEFORMAT": "csv"}


def sync_post(client: httpx.Client, query: str, **extra: str) -> httpx.Response:
    return client.post("/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, **READABLE, **extra})


def sync_get(client: httpx.Client, query: str, **extra: str) -> httpx.Response:
    return client.get("/tap/sync", params={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, **READABLE, **extra})


def job_url(client: httpx.Client, resp: httpx.Response) -> str | None:
    """The job a POST to /tap/async created (UWS: 303 See Other to the job), else None."""
    location = resp.headers.get("location")
    if resp.status_code in (200, 201, 302, 303) and location:
        return urljoin(str(client.base_url) + "/tap/async", location)
    return None


def wait_for_final_phase(client: httpx.Client, url: str, bound_s: float = JOB_BOUND_S) -> str:
    """Poll the job's phase until it is final; fails when it is not within the bound."""
    deadline = time.monotonic() + bound_s
    phase = ""
    while time.monotonic() < deadline:
        resp = client.get(url + "/phase")
        assert resp.status_code == 200, (url, resp.status_code, resp.text[:300])
        phase = resp.text.strip().upper()
        if phase in FINAL_PHASES:
            return phase
        time.sleep(0.1)
    raise AssertionError(f"job {url} still in phase {phase} after {bound_s:g} s: a hung worker")


def delete_job(client: httpx.Client, url: str) -> None:
    resp = client.delete(url)
    if resp.status_code >= 400:  # UWS's other way: POST ACTION=DELETE
        resp = client.post(url, data={"ACTION": "DELETE"})
    assert resp.status_code < 500, (url, resp.status_code, resp.text[:300])


def run_async(client: httpx.Client, params: dict[str, str], route: str = "async") -> Outcome:
    """Create a job with PHASE=RUN, wait for it to end, return its error or its result;
    the job is deleted afterwards (the per-client quota stays free)."""
    created = client.post("/tap/async", data={"REQUEST": "doQuery", "LANG": "ADQL", **READABLE, **params, "PHASE": "RUN"})
    url = job_url(client, created)
    if url is None:
        return classify(route + " (create)", created)
    try:
        phase = wait_for_final_phase(client, url)
        if phase == "COMPLETED":
            result = client.get(url + "/results/result", follow_redirects=True)
            outcome = classify(route, result)
            if result.status_code != 200:
                outcome.route += " (COMPLETED, result not readable)"
            return outcome
        error = client.get(url + "/error", follow_redirects=True)
        message = error_document_message(error.content)
        if message is None:
            message = " ".join(error.text.split())
        # A job that ended in ERROR/ABORTED is a refusal; the error endpoint answers 200.
        return Outcome(f"{route} ({phase})", error.status_code, error.content, True, message)
    finally:
        delete_job(client, url)


# ---------------------------------------------------------------------------------------
# Who is connected: every session the service opens must be the reader login's


def query_login(settings) -> str:
    return make_url(settings.query_url).username if settings.query_url else QUERY_ROLE


def admin_connect(settings) -> psycopg.Connection:
    return psycopg.connect(owner_conninfo(settings), autocommit=True, application_name=ADMIN_APP)


SESSIONS = """
SELECT pid, usename, coalesce(application_name, ''), coalesce(state, ''), coalesce(query, '')
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid() AND coalesce(application_name, '') <> %s
"""


def sessions(admin: psycopg.Connection) -> list[tuple]:
    return admin.execute(SESSIONS, (ADMIN_APP,)).fetchall()


@dataclass
class SessionWatch:
    """Polls pg_stat_activity (as the superuser) in a thread, recording who is connected
    to the service's database while the service works."""

    settings: object
    seen: dict[str, set[str]] = field(default_factory=dict)  # usename -> queries seen
    polls: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with admin_connect(self.settings) as admin:
            while not self._stop.is_set():
                for _pid, user, _app, _state, query in sessions(admin):
                    self.seen.setdefault(user, set()).add(query[:200])
                self.polls += 1
                self._stop.wait(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=60)


# ---------------------------------------------------------------------------------------
# Fixtures


@contextmanager
def serve(settings) -> Iterator[str]:
    """The service of ``settings`` (other limits than the shared server's) on a free port;
    yields its base URL."""
    srv = start_server(settings)
    try:
        yield srv.url
    finally:
        stop_server(srv)


@dataclass
class Served:
    url: str
    settings: object


#: The attacks that would run for minutes (pg_sleep(600), a cross join) end at these.
ATTACK_LIMITS = {"tap_sync_timeout_s": 3.0, "tap_async_duration_s": 3.0}


@pytest.fixture(scope="module")
def attacked(tap_server, tmp_path_factory) -> Iterator[Served]:
    """The service on tap_server's database, with short timeouts and a home of its own
    (its jobs); the shared server is used as it is when its timeouts are short already."""
    s = tap_server.settings
    if s.tap_sync_timeout_s <= ATTACK_LIMITS["tap_sync_timeout_s"] and s.tap_async_duration_s <= ATTACK_LIMITS["tap_async_duration_s"]:
        yield Served(tap_server.url, s)
        return
    home = tmp_path_factory.mktemp("attacked") / "home"
    home.mkdir()
    settings = s.model_copy(update=ATTACK_LIMITS | {"home": home})
    with serve(settings) as url:
        yield Served(url, settings)


def http_client(url: str) -> httpx.Client:
    # A connection per request: after a 500 the server closes a kept-alive connection, and
    # the next request on it would fail with a reset that hides what the next attack did.
    return httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, follow_redirects=False, headers={"connection": "close"})


@pytest.fixture
def client(attacked) -> Iterator[httpx.Client]:
    with http_client(attacked.url) as c:
        yield c


@pytest.fixture
def canary(attacked) -> Iterator[str]:
    """A base table only the owner may read, holding a secret (created before the digest)."""
    with admin_connect(attacked.settings) as admin:
        admin.execute(sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(CANARY_TABLE)))
        admin.execute(sql.SQL("CREATE TABLE public.{} (secret text)").format(sql.Identifier(CANARY_TABLE)))
        admin.execute(sql.SQL("INSERT INTO public.{} VALUES (%s)").format(sql.Identifier(CANARY_TABLE)), (CANARY_SECRET,))
    yield CANARY_TABLE
    with admin_connect(attacked.settings) as admin:
        admin.execute(sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(CANARY_TABLE)))


@pytest.fixture
def unchanged(attacked, canary) -> Iterator[None]:
    """The database digest and the attack files are the same after the test as before."""
    for path in FILES_AN_ATTACK_MIGHT_WRITE:
        path.unlink(missing_ok=True)
    files_before = set(Path("/tmp").glob("skyledger-attack-*"))
    before = database_digest(attacked.settings)
    yield
    after = database_digest(attacked.settings)
    assert {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v} == {}
    assert after == before
    assert [p for p in FILES_AN_ATTACK_MIGHT_WRITE if p.exists()] == []
    assert set(Path("/tmp").glob("skyledger-attack-*")) - files_before == set()


def assert_only_the_reader(watch: SessionWatch, settings) -> None:
    login = query_login(settings)
    assert watch.polls > 0 and login in watch.seen, f"the watch never saw the service's sessions: {watch.seen}"
    others = {user: sorted(queries)[:5] for user, queries in watch.seen.items() if user != login}
    assert others == {}, f"sessions of logins other than {login!r} on the service's database: {others}"


# ---------------------------------------------------------------------------------------
# The attack list as raw text


def _attack_outcomes(client: httpx.Client, attack: Attack) -> list[Outcome]:
    outcomes = [classify("sync POST", sync_post(client, attack.statement))]
    # A URL of more than ~16 kB is refused by the HTTP layer (431/414/400): sent below, once.
    if len(attack.statement) < 8000:
        outcomes.append(classify("sync GET", sync_get(client, attack.statement)))
    outcomes.append(run_async(client, {"QUERY": attack.statement}))
    return outcomes


def test_every_attack_as_raw_text_is_refused_on_sync_and_async(attacked, client, unchanged):
    failures = []
    with SessionWatch(attacked.settings) as watch:
        # One statement that surely runs long enough to be seen (until the short timeout).
        failures += problems(classify("slow", sync_post(client, SLOW_ADQL)), must_refuse=True)
        for attack in ATTACKS:
            for outcome in _attack_outcomes(client, attack):
                # Statements the read path answers harmlessly (LISTEN, text with ':x') may
                # be answered or refused by ADQL; every other one must be refused.
                found = problems(outcome, must_refuse=attack.refused is not None, settings=attacked.settings)
                failures += [f"{attack.name}: {p}" for p in found]
    assert failures == [], "\n".join(failures)
    assert_only_the_reader(watch, attacked.settings)


def test_a_very_long_query_in_the_url_is_refused(attacked, client):
    import http.client
    from urllib.parse import urlencode, urlsplit

    long = next(a for a in ATTACKS if a.name == "very_long_text").statement
    # httpx refuses to send a URL over 64 kB; http.client sends anything.
    where = urlsplit(attacked.url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", "/tap/sync?" + urlencode({"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": long}))
        answer = conn.getresponse()
        resp = httpx.Response(answer.status, headers=answer.getheaders(), content=answer.read())
    except (ConnectionError, http.client.HTTPException):
        resp = None  # the HTTP layer hung up on it: refused too
    finally:
        conn.close()
    if resp is not None:
        assert problems(classify("sync GET (120 kB URL)", resp), must_refuse=True) == []
    # And the service is still there.
    assert client.get("/tap/availability").status_code == 200


# ---------------------------------------------------------------------------------------
# The attacks as ADQL: the same function calls and tables inside SELECT ... FROM


def wrapped(attack: Attack) -> str | None:
    """``SELECT f(...) FROM catalog.spectra`` for an attack that is a bare SELECT of calls."""
    text = attack.statement.strip()
    if not text.upper().startswith("SELECT ") or " FROM " in text.upper() or ";" in text or len(text) > 8000:
        return None
    return f"{text} FROM catalog.spectra"


WRAPPED = [(a.name, q, a.refused is not None) for a in ATTACKS if (q := wrapped(a))]

#: Hand-written ADQL: (name, query, must be refused). Those not refused must only show
#: catalogue data (the leak markers are checked on every answer).
ADQL_ATTACKS: list[tuple[str, str, bool]] = [
    ("subquery_read_file", ("SELECT spectrum_id FROM catalog.spectra WHERE survey IN "
                            "(SELECT pg_read_file('/etc/passwd') FROM catalog.spectra)"), True),
    ("order_by_read_file", "SELECT spectrum_id FROM catalog.spectra ORDER BY pg_read_file('/etc/passwd')", True),
    ("where_sleep", "SELECT spectrum_id FROM catalog.spectra WHERE pg_sleep(600) IS NULL", True),
    ("quoted_function_name", "SELECT \"pg_read_file\"('/etc/passwd') FROM catalog.spectra", True),
    ("schema_qualified_function", "SELECT pg_catalog.pg_read_file('/etc/passwd') FROM catalog.spectra", True),
    ("lo_import_in_select", "SELECT TOP 1 lo_import('/etc/passwd') AS oid FROM catalog.spectra", True),
    ("set_config_role", "SELECT set_config('role', 'postgres', false) FROM catalog.spectra", True),
    ("terminate_others", "SELECT pg_terminate_backend(spectrum_id) FROM catalog.spectra", True),
    ("base_table_unqualified", "SELECT * FROM ingest_file", True),
    ("base_table_public", "SELECT * FROM public.ingest_file", True),
    ("canary_table", f"SELECT secret FROM public.{CANARY_TABLE}", True),
    ("canary_join", f"SELECT s.spectrum_id, c.secret FROM catalog.spectra AS s JOIN public.{CANARY_TABLE} AS c ON 1 = 1", True),
    ("canary_union", f"SELECT survey FROM catalog.spectra UNION SELECT secret FROM public.{CANARY_TABLE}", True),
    ("canary_subquery", f"SELECT spectrum_id FROM catalog.spectra WHERE survey IN (SELECT secret FROM public.{CANARY_TABLE})", True),
    ("pg_authid", "SELECT rolname, rolpassword FROM pg_catalog.pg_authid", True),
    ("pg_shadow", "SELECT usename, passwd FROM pg_shadow", True),
    # Readable by PUBLIC in PostgreSQL, but not the catalogue: TAP serves the tables of
    # TAP_SCHEMA. pg_stat_activity would show other people's statements (same login).
    ("pg_stat_activity", "SELECT usename, query FROM pg_catalog.pg_stat_activity", True),
    ("pg_settings", "SELECT name, setting FROM pg_settings", True),
    ("pg_roles", "SELECT rolname FROM pg_roles", True),
    ("information_schema", "SELECT table_schema, table_name FROM information_schema.tables", True),
    ("alembic_version", "SELECT version_num FROM public.alembic_version", True),
    # The same tables reached from every place a table may stand.
    ("system_table_in_derived_table", "SELECT * FROM (SELECT usename, query FROM pg_catalog.pg_stat_activity) AS x", True),
    ("system_table_in_exists", ("SELECT spectrum_id FROM catalog.spectra AS s WHERE EXISTS "
                                "(SELECT 1 FROM pg_catalog.pg_stat_activity AS a WHERE a.query LIKE '%')"), True),
    ("system_table_in_in", "SELECT spectrum_id FROM catalog.spectra WHERE survey IN (SELECT query FROM pg_catalog.pg_stat_activity)", True),
    ("system_table_in_union", "SELECT table_name FROM TAP_SCHEMA.tables UNION SELECT query FROM pg_catalog.pg_stat_activity", True),
    ("system_table_in_join", "SELECT s.spectrum_id, a.query FROM catalog.spectra AS s JOIN pg_catalog.pg_stat_activity AS a ON 1 = 1", True),
    ("system_table_in_cte", "WITH x AS (SELECT query FROM pg_catalog.pg_stat_activity) SELECT * FROM x", True),
    ("system_table_lateral", ("SELECT s.spectrum_id, x.query FROM catalog.spectra AS s, "
                              "LATERAL (SELECT query FROM pg_catalog.pg_stat_activity) AS x"), True),
    ("system_table_scalar_subquery", "SELECT (SELECT MAX(query) FROM pg_catalog.pg_stat_activity) AS q FROM catalog.spectra", True),
    ("system_table_mixed_case", "SELECT query FROM Pg_Catalog.PG_STAT_ACTIVITY", True),
    ("system_table_quoted", 'SELECT "query" FROM "pg_catalog"."pg_stat_activity"', True),
    ("system_table_unqualified", "SELECT query FROM pg_stat_activity", True),
    ("cte_named_like_a_listed_table", ("WITH spectra AS (SELECT query AS survey FROM pg_catalog.pg_stat_activity) "
                                       "SELECT survey FROM spectra"), True),
    ("table_function", "SELECT * FROM pg_catalog.pg_stat_get_activity(NULL)", True),
    ("settings_function", "SELECT current_setting('data_directory') AS d FROM catalog.spectra", True),
    ("version_function", "SELECT version() AS v FROM catalog.spectra", True),
    ("current_query", "SELECT current_query() AS q FROM catalog.spectra", True),
    ("base_table_through_catalog_name", "SELECT * FROM catalog.ingest_file", True),
    ("select_into", "SELECT * INTO public.evil FROM catalog.spectra", True),
    ("for_update", "SELECT * FROM catalog.spectra FOR UPDATE", True),
    ("stacked_after_select", "SELECT spectrum_id FROM catalog.spectra; DROP TABLE survey", True),
    ("stacked_after_comment", "SELECT spectrum_id FROM catalog.spectra -- x\n; DROP TABLE survey", True),
    ("stacked_in_quoted_identifier", 'SELECT "spectrum_id; DROP TABLE survey; --" FROM catalog.spectra', True),
    ("stacked_in_geometry", ("SELECT * FROM catalog.spectra WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
                             "CIRCLE('ICRS', 10, 10, 1); DROP TABLE survey --))"), True),
    ("negative_top", "SELECT TOP -1 * FROM catalog.spectra", True),
    ("nul_in_adql", "SELECT spectrum_id FROM catalog.spectra\x00; DROP TABLE survey", True),
    ("fullwidth_semicolon", "SELECT spectrum_id FROM catalog.spectra\uff1b DROP TABLE survey", True),
    ("cast_regclass", "SELECT CAST('pg_authid' AS regclass) FROM catalog.spectra", True),
    ("dollar_quoted", "SELECT $$x$$ FROM catalog.spectra; DROP TABLE survey", True),
    # Strings that only look like SQL: answered (as catalogue data) or refused, never run.
    ("doubled_quote", "SELECT spectrum_id FROM catalog.spectra WHERE survey = 'x'' OR 1=1; DROP TABLE survey; --'", False),
    ("backslash_quote", "SELECT spectrum_id FROM catalog.spectra WHERE survey = 'x\\' OR 1=1 --'", False),
    ("comment_block", "SELECT spectrum_id FROM catalog.spectra /* ; DROP TABLE survey */", False),
    ("huge_top", "SELECT TOP 99999999999999999999 spectrum_id FROM catalog.spectra", False),
    ("unicode_literal", "SELECT spectrum_id FROM catalog.spectra WHERE survey = '\u202e\u01c5\U0001f600'", False),
    ("tap_schema_tables", "SELECT table_name FROM TAP_SCHEMA.tables", False),
]


def test_every_attack_as_adql_is_refused(attacked, client, unchanged):
    failures = []
    with SessionWatch(attacked.settings) as watch:
        # One statement that surely runs long enough to be seen (until the short timeout).
        failures += problems(classify("slow", sync_post(client, SLOW_ADQL)), must_refuse=True)
        for name, query, must_refuse in WRAPPED + ADQL_ATTACKS:
            for outcome in (classify("sync POST", sync_post(client, query)), run_async(client, {"QUERY": query})):
                failures += [f"{name}: {p}" for p in problems(outcome, must_refuse=must_refuse, settings=attacked.settings)]
    assert failures == [], "\n".join(failures)
    assert_only_the_reader(watch, attacked.settings)


def test_one_persons_running_query_is_not_shown_to_another(attacked, client):
    """Every TAP request runs as the same login, and PostgreSQL shows a login its own
    sessions' statements in pg_stat_activity: readable there, one person's query (with
    whatever it names) would be readable by everyone while it runs."""
    marker = "alice-private-target-5b1d"
    slow = SLOW_ADQL + f" WHERE a.table_name <> '{marker}'"
    answer: dict[str, httpx.Response] = {}
    alice = threading.Thread(target=lambda: answer.setdefault("r", sync_post(http_client(attacked.url), slow)))
    seen_running = False
    bodies = []
    with admin_connect(attacked.settings) as admin:
        alice.start()
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while alice.is_alive() and time.monotonic() < deadline:
            if any(marker in s[4] for s in sessions(admin) if s[3] == "active"):
                seen_running = True
                for query in ("SELECT query FROM pg_catalog.pg_stat_activity", "SELECT query FROM pg_stat_activity"):
                    bodies.append(sync_post(client, query).content)
                break
            time.sleep(0.01)
    alice.join(timeout=REQUEST_TIMEOUT_S)
    assert seen_running, "the slow query was never seen running"
    assert [b[:300] for b in bodies if marker.encode() in b] == []


def test_other_query_languages_are_refused(attacked, client, unchanged):
    failures = []
    for lang in ("SQL", "PostgreSQL", "PQL", "ADQL; DROP TABLE survey", ""):
        for statement in ("SELECT pg_read_file('/etc/passwd')", f"SELECT secret FROM public.{CANARY_TABLE}", "DROP TABLE survey"):
            outcome = classify(f"sync LANG={lang!r}", sync_post(client, statement, LANG=lang))
            failures += problems(outcome, must_refuse=True, settings=attacked.settings)
    assert failures == [], "\n".join(failures)


# ---------------------------------------------------------------------------------------
# Payloads for the other endpoints' parameters

#: Never a valid value anywhere: must be refused.
BAD_VALUES = [
    "1; DROP TABLE survey",
    "' OR 1=1 --",
    "1' OR '1'='1",
    "1 OR 1=1",
    "1); DROP TABLE survey; --",
    "NaN",
    "nan",
    "inf",
    "-Infinity",
    "1e999",
    "",
    " ",
    "abc",
    "0x1F",
    "1\x00; DROP TABLE survey",
    "\u202e1",
    "\U0001f600",
    "../../../../etc/passwd",
    "%00",
    "$(id > /tmp/skyledger-attack-program)",
    "x" * 1_000_000,
]
#: Numbers at the edges: refused or answered, never a server error.
EDGE_VALUES = ["99999999999999999999999999", "-99999999999999999999999999", "1e308", "-1e308", "-0", "1_000", "\u0661", "\uff11"]
ALL_VALUES = [(v, True) for v in BAD_VALUES] + [(v, False) for v in EDGE_VALUES]


def _short(value: str) -> str:
    return repr(value if len(value) < 40 else value[:20] + f"...({len(value)} chars)")


def test_cone_search_parameters_refuse_injections(attacked, client, unchanged):
    valid = {"RA": "150.0", "DEC": "2.0", "SR": "0.1"}
    failures = []
    for param in ("RA", "DEC", "SR", "VERB", "MAXREC", "RESPONSEFORMAT"):
        for value, must_refuse in ALL_VALUES:
            # SCS 1.03 has RA, DEC, SR and VERB; other parameters may be ignored.
            strict = must_refuse and param in ("RA", "DEC", "SR", "VERB")
            params = valid | {param: value}
            if len(value) > 8000:
                outcome = classify(f"scs POST {param}={_short(value)}", client.post("/scs", data=params))
            else:
                outcome = classify(f"scs GET {param}={_short(value)}", client.get("/scs", params=params))
            failures += problems(outcome, must_refuse=strict, settings=attacked.settings)
    # Out of the sky: refused.
    for params in ({"RA": "150", "DEC": "91", "SR": "0.1"}, {"RA": "150", "DEC": "-1e308", "SR": "0.1"},
                   {"RA": "150", "DEC": "2", "SR": "-1"}, {"DEC": "2", "SR": "0.1"}, {"RA": "150", "SR": "0.1"}):
        outcome = classify(f"scs GET {params}", client.get("/scs", params=params))
        failures += problems(outcome, must_refuse=True, settings=attacked.settings)
    assert failures == [], "\n".join(failures)


def test_spectrum_download_ids_refuse_injections(attacked, client, unchanged):
    failures = []
    for value, must_refuse in ALL_VALUES + [("-1", True), ("0", True), ("99999999999", True)]:
        if len(value) > 8000:
            continue  # a path of 1 MB is refused by the HTTP layer: see the URL test
        for fmt in (None, "fits", "votable", "'; DROP TABLE survey --"):
            params = {} if fmt is None else {"format": fmt, "RESPONSEFORMAT": fmt}
            resp = client.get("/spectra/" + httpx_path(value), params=params)
            outcome = classify(f"spectra/{_short(value)} format={fmt}", resp)
            failures += problems(outcome, must_refuse=must_refuse or fmt not in (None, "fits", "votable"),
                                 settings=attacked.settings)
    assert failures == [], "\n".join(failures)


def httpx_path(value: str) -> str:
    """A path segment with everything but unreserved characters percent-encoded (a raw
    '/' or '?' would make another URL, not an attack on this one)."""
    from urllib.parse import quote

    return quote(value, safe="")


def test_datalink_ids_refuse_injections(attacked, client, unchanged):
    failures = []
    for value, must_refuse in ALL_VALUES + [("ivo://evil/?1; DROP TABLE survey", True), ("file:///etc/passwd", True)]:
        if len(value) > 8000:
            outcome = classify(f"datalink POST ID={_short(value)}", client.post("/datalink", data={"ID": value}))
        else:
            outcome = classify(f"datalink ID={_short(value)}", client.get("/datalink", params={"ID": value}))
        # DataLink answers an unknown ID with a row whose error_message is a fault: a refusal.
        if not outcome.refused and b"Fault" in outcome.body:
            outcome.refused, outcome.message = True, "DataLink fault row"
        failures += problems(outcome, must_refuse=must_refuse, settings=attacked.settings)
    # DataLink takes several IDs at once: ten thousand (one request, 100 kB) are answered
    # or refused, never a server error or a hang (the request bound).
    from urllib.parse import urlencode

    many = urlencode([("ID", str(n)) for n in range(10_000)])
    resp = client.post("/datalink", content=many, headers={"content-type": "application/x-www-form-urlencoded"})
    outcome = classify("datalink 10000 IDs", resp)
    failures += problems(outcome, must_refuse=False, settings=attacked.settings)
    assert failures == [], "\n".join(failures)


def test_vosi_table_names_refuse_injections(attacked, client, unchanged):
    names = [
        "catalog.spectra; DROP TABLE survey",
        "' OR 1=1 --",
        "public.ingest_file",
        f"public.{CANARY_TABLE}",
        "pg_catalog.pg_authid",
        "../../../../etc/passwd",
        "catalog.spectra\x00",
        "\U0001f600",
        "x" * 5000,
    ]
    failures = []
    for name in names:
        outcome = classify(f"tables/{_short(name)}", client.get("/tap/tables/" + httpx_path(name)))
        failures += problems(outcome, must_refuse=True, settings=attacked.settings)
    assert failures == [], "\n".join(failures)


def test_paths_that_climb_out_are_refused(attacked, client, unchanged):
    """Jobs live on disk under the service's home: a job id is never a path."""
    failures = []
    for path in ("/tap/async/..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/tap/async/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/tap/async/..%2Fjobs", "/tap/async/..%2F..%2Fpgdata%2FPG_VERSION/phase",
                 "/tap/async/%00/phase", "/tap/async/x%2F..%2F..%2F/results/result",
                 "/tap/async/nonexistent/results/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                 "/spectra/..%2F..%2F..%2Fetc%2Fpasswd", "/tap/tables/..%2F..%2Fetc%2Fpasswd"):
        resp = client.get(path)
        outcome = classify(f"GET {path}", resp)
        failures += problems(outcome, must_refuse=True, settings=attacked.settings)
        for method in ("DELETE", "POST"):
            resp = client.request(method, path, data={"PHASE": "RUN"} if method == "POST" else None)
            outcome = classify(f"{method} {path}", resp)
            failures += problems(outcome, must_refuse=True, settings=attacked.settings)
    assert failures == [], "\n".join(failures)


UWS_PAYLOADS = {
    "PHASE": ["RUN; DROP TABLE survey", "' OR 1=1 --", "EXECUTING", "COMPLETED", "DELETE", "", "\x00RUN"],
    "DESTRUCTION": ["not a date", "' OR 1=1 --", "9999-99-99T99:99:99Z", "1e999", "2026-01-01T00:00:00Z; DROP TABLE survey", ""],
    "EXECUTIONDURATION": ["-1", "NaN", "abc", "1; DROP TABLE survey", "' OR 1=1 --", "1e999", ""],
    "MAXREC": ["-1", "NaN", "abc", "1; DROP TABLE survey", "' OR 1=1 --", "1e999", "1.5"],
    "RESPONSEFORMAT": ["'; DROP TABLE survey --", "../../../../etc/passwd", "text/html<script>", "x" * 10_000, "\x00"],
}


def _request(client: httpx.Client, method: str, url: str, **kwargs) -> httpx.Response | str:
    """The response, or what went wrong on the wire (a reset is no clean refusal)."""
    try:
        return client.request(method, url, **kwargs)
    except httpx.TransportError as err:
        return f"{method} {url}: {type(err).__name__}: {err}"


def job_problems(client: httpx.Client, url: str, settings, what: str) -> list[str]:
    """What is wrong with a job's own resources after an attack on them ([] when sane):
    every resource answers, its execution duration is a number within the service's limit
    (never 0, which UWS reads as unlimited), and it runs to a final phase."""
    found = []
    for resource in ("", "/phase", "/executionduration", "/destruction", "/parameters", "/error", "/results"):
        resp = _request(client, "GET", url + resource)
        if isinstance(resp, str) or resp.status_code >= 500:
            found.append(f"{what}: GET job{resource}: {resp if isinstance(resp, str) else resp.status_code} "
                         f"{'' if isinstance(resp, str) else resp.text[:200]!r}")
    listing = _request(client, "GET", "/tap/async")
    if isinstance(listing, str) or listing.status_code != 200:
        found.append(f"{what}: the job list no longer answers: {listing if isinstance(listing, str) else listing.status_code}")
    duration = _request(client, "GET", url + "/executionduration")
    if not isinstance(duration, str) and duration.status_code == 200:
        try:
            value = float(duration.text.strip())
        except ValueError:
            value = float("nan")
        if not 0 < value <= settings.tap_async_duration_s:
            found.append(f"{what}: executionduration {duration.text.strip()!r}, not within (0, {settings.tap_async_duration_s:g}]")
    return found


def test_uws_parameters_refuse_injections(attacked, client, unchanged):
    failures = []
    valid = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT TOP 1 spectrum_id FROM catalog.spectra"}
    resources = {"PHASE": "phase", "DESTRUCTION": "destruction", "EXECUTIONDURATION": "executionduration"}
    for param, values in UWS_PAYLOADS.items():
        for value in values:
            what = f"{param}={_short(value)}"
            # At creation: refused, or a sane job (a TAP parameter that is wrong makes it end in ERROR).
            created = _request(client, "POST", "/tap/async", data=valid | {param: value})
            if isinstance(created, str):
                failures.append(f"create {what}: {created}")
                continue
            url = job_url(client, created)
            if url is None:
                failures += problems(classify(f"create {what}", created), must_refuse=True, settings=attacked.settings)
            else:
                try:
                    failures += job_problems(client, url, attacked.settings, f"create {what}")
                    client.post(url + "/phase", data={"PHASE": "RUN"})
                    phase = wait_for_final_phase(client, url)
                    if param in ("MAXREC", "RESPONSEFORMAT") and phase != "ERROR":
                        failures.append(f"create {what}: the job ended {phase}, not ERROR")
                finally:
                    delete_job(client, url)
            # On a pending job's own resources: refused, and the job stays sane.
            pending = job_url(client, client.post("/tap/async", data=valid))
            assert pending is not None
            try:
                target = f"{pending}/{resources[param]}" if param in resources else f"{pending}/parameters"
                resp = _request(client, "POST", target, data={param: value})
                if isinstance(resp, str):
                    failures.append(f"POST {what}: {resp}")
                    continue
                outcome = classify(f"POST {target.rsplit('/', 1)[-1]} {what}", resp)
                if not outcome.refused and outcome.status < 500 and param in ("PHASE", "DESTRUCTION") or (
                    param == "EXECUTIONDURATION" and value not in ("-1", "1e999") and not outcome.refused
                ):
                    failures.append(f"{outcome.describe()}: accepted")
                failures += problems(outcome, must_refuse=False, settings=attacked.settings)
                failures += job_problems(client, pending, attacked.settings, f"POST {what}")
            finally:
                delete_job(client, pending)
    assert failures == [], "\n".join(failures)


def test_a_nan_execution_duration_is_refused(attacked):
    """float("NaN") parses, is not <= 0 and min(nan, limit) is nan: a job whose duration
    is NaN answers 500 on every read of it and errors when run."""
    with http_client(attacked.url) as client:
        url = job_url(client, client.post("/tap/async", data={"LANG": "ADQL", "QUERY": "SELECT TOP 1 table_name FROM TAP_SCHEMA.tables"}))
        assert url is not None
        try:
            for value in ("NaN", "nan", "-nan"):
                outcome = classify(f"POST executionduration={value}", client.post(url + "/executionduration", data={"EXECUTIONDURATION": value}))
                assert outcome.refused, outcome.describe()
                assert job_problems(client, url, attacked.settings, value) == []
        finally:
            delete_job(client, url)


def test_sync_parameters_refuse_injections(attacked, client, unchanged):
    failures = []
    query = "SELECT TOP 1 spectrum_id FROM catalog.spectra"
    cases = [("MAXREC", v) for v in UWS_PAYLOADS["MAXREC"]] + [("RESPONSEFORMAT", v) for v in UWS_PAYLOADS["RESPONSEFORMAT"]]
    cases += [("FORMAT", "'; DROP TABLE survey --"), ("REQUEST", "doQuery; DROP TABLE survey"), ("REQUEST", "")]
    for param, value in cases:
        # FORMAT is read only without RESPONSEFORMAT.
        extra = {param: value} | ({"RESPONSEFORMAT": ""} if param == "FORMAT" else {})
        outcome = classify(f"sync {param}={_short(value)}", sync_post(client, query, **extra))
        failures += problems(outcome, must_refuse=True, settings=attacked.settings)
    assert failures == [], "\n".join(failures)


def test_upload_never_makes_the_service_fetch_a_url(attacked, client, unchanged):
    """TAP UPLOAD names a URL the service would fetch: a way to make it reach the network
    (or its own files). The service is upload-free: it may ignore or refuse UPLOAD, but it
    never connects (a listener here would see it) and never reads a file."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    query = "SELECT TOP 1 spectrum_id FROM TAP_UPLOAD.t"
    failures = []
    try:
        for upload in (f"t,http://127.0.0.1:{port}/evil.xml", "t,file:///etc/passwd", "t,param:t", f"t,ftp://127.0.0.1:{port}/x"):
            for route in ("sync", "async"):
                params = {"QUERY": query, "UPLOAD": upload}
                if route == "sync":
                    outcome = classify(f"sync UPLOAD={upload}", sync_post(client, query, UPLOAD=upload))
                else:
                    outcome = run_async(client, params, route=f"async UPLOAD={upload}")
                failures += problems(outcome, must_refuse=True, settings=attacked.settings)
        try:
            conn, _ = listener.accept()
            conn.close()
            failures.append("the service connected to the URL named in UPLOAD")
        except TimeoutError:
            pass
    finally:
        listener.close()
    assert failures == [], "\n".join(failures)


def test_bodies_that_are_not_forms_are_refused(attacked, client, unchanged):
    failures = []
    bodies = [
        ("1 MB of form noise", b"QUERY=" + b"%FF" * 350_000, "application/x-www-form-urlencoded"),
        ("latin-1 bytes", b"LANG=ADQL&QUERY=SELECT \xff\xfe FROM catalog.spectra", "application/x-www-form-urlencoded"),
        ("json", b'{"QUERY": "SELECT pg_read_file(\'/etc/passwd\')"}', "application/json"),
        ("xml bomb", (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                      b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><q>&c;</q>'), "application/xml"),
        ("broken multipart", b"--x\r\nContent-Disposition: form-data; name=\"QUERY\"\r\n\r\nSELECT 1", "multipart/form-data; boundary=x"),
        ("no boundary", b"garbage", "multipart/form-data"),
        ("nul bytes", b"\x00" * 1000, "application/x-www-form-urlencoded"),
    ]
    for name, body, ctype in bodies:
        for path in ("/tap/sync", "/tap/async"):
            resp = client.post(path, content=body, headers={"content-type": ctype})
            url = job_url(client, resp) if path == "/tap/async" else None
            if url is not None:
                # A job may be created without parameters (UWS lets them come later); it
                # must not run anything.
                client.post(url + "/phase", data={"PHASE": "RUN"})
                phase = wait_for_final_phase(client, url)
                delete_job(client, url)
                if phase != "ERROR":
                    failures.append(f"{name} {path}: the job made from it ended {phase}, not ERROR")
                continue
            failures += problems(classify(f"{name} {path}", resp), must_refuse=True, settings=attacked.settings)
    assert failures == [], "\n".join(failures)


# ---------------------------------------------------------------------------------------
# Limits: the reader login, timeouts, quota, result size

#: Never ends by itself (300^5 rows of TAP_SCHEMA.columns): only a timeout or a cancel stops it.
SLOW_ADQL = (
    "SELECT COUNT(*) AS n FROM TAP_SCHEMA.columns AS a, TAP_SCHEMA.columns AS b, TAP_SCHEMA.columns AS c, "
    "TAP_SCHEMA.columns AS d, TAP_SCHEMA.columns AS e"
)
TIMED_OUT = r"statement_timeout|longer than|timed? ?out|execution ?duration"
#: The limits of the service under test in this section: small, so that they are reached.
LIMITED = {
    "tap_sync_timeout_s": 2.0,
    "tap_async_duration_s": 2.0,
    "tap_sync_max_rows": 5,
    "tap_async_max_bytes": 4000,
    "tap_jobs_per_client": 3,
}


@pytest.fixture(scope="module")
def limited(tap_server, tmp_path_factory):
    """The same database served with small limits (and a home of its own for the jobs)."""
    home = tmp_path_factory.mktemp("limited") / "home"
    home.mkdir()
    settings = tap_server.settings.model_copy(update=LIMITED | {"home": home})
    with serve(settings) as url:
        yield Served(url, settings)


@pytest.fixture
def limited_client(limited) -> Iterator[httpx.Client]:
    with http_client(limited.url) as c:
        yield c


def test_a_slow_query_runs_as_the_reader_and_is_cancelled_by_the_sync_timeout(limited, limited_client):
    answer: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: answer.setdefault("r", sync_post(limited_client, SLOW_ADQL)))
    seen: list[tuple] = []
    with admin_connect(limited.settings) as admin:
        thread.start()
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while thread.is_alive() and time.monotonic() < deadline:
            active = [s for s in sessions(admin) if s[3] == "active"]
            seen += active
            if any("columns" in s[4].lower() for s in active):
                break
            time.sleep(0.01)
    thread.join(timeout=REQUEST_TIMEOUT_S)
    assert not thread.is_alive(), "the slow query was not cancelled"
    assert any("columns" in s[4].lower() for s in seen), f"the statement was never seen running: {seen}"
    assert {s[1] for s in seen} == {query_login(limited.settings)}, seen
    outcome = classify("sync slow", answer["r"])
    assert problems(outcome, must_refuse=True) == []
    assert re.search(TIMED_OUT, outcome.message, re.IGNORECASE), outcome.describe()


def test_a_slow_job_ends_in_error_after_its_execution_duration(limited, limited_client):
    outcome = run_async(limited_client, {"QUERY": SLOW_ADQL})
    assert outcome.refused and outcome.route == "async (ERROR)", outcome.describe()
    assert re.search(TIMED_OUT, outcome.message, re.IGNORECASE), outcome.describe()
    assert problems(outcome, must_refuse=True) == []


def test_a_job_cannot_extend_its_execution_duration(limited, limited_client):
    url = job_url(limited_client, limited_client.post("/tap/async", data={"LANG": "ADQL", "QUERY": SLOW_ADQL}))
    assert url is not None
    try:
        for value in ("0", "99999999", str(10**30)):
            limited_client.post(url + "/executionduration", data={"EXECUTIONDURATION": value})
            shown = limited_client.get(url + "/executionduration").text.strip()
            # 0 would mean "unlimited" in UWS: never granted.
            assert 0 < float(shown) <= LIMITED["tap_async_duration_s"], (value, shown)
        limited_client.post(url + "/phase", data={"PHASE": "RUN"})
        assert wait_for_final_phase(limited_client, url) == "ERROR"
    finally:
        delete_job(limited_client, url)


def test_more_active_jobs_than_the_quota_are_refused_cleanly(limited, limited_client):
    quota = LIMITED["tap_jobs_per_client"]
    created = []
    try:
        for _ in range(quota):
            url = job_url(limited_client, limited_client.post("/tap/async", data={"LANG": "ADQL", "QUERY": SLOW_ADQL}))
            assert url is not None
            created.append(url)
        over = limited_client.post("/tap/async", data={"LANG": "ADQL", "QUERY": SLOW_ADQL, "PHASE": "RUN"})
        extra = job_url(limited_client, over)
        if extra is not None:
            created.append(extra)
        outcome = classify("async over quota", over)
        assert extra is None and (outcome.refused or over.status_code == 503), outcome.describe()
        assert over.status_code in (403, 429, 503), outcome.describe()
        assert re.search(r"quota|at most|jobs", outcome.message, re.IGNORECASE) and "Traceback" not in outcome.message, outcome.describe()
        # A finished (deleted) job frees its place.
        delete_job(limited_client, created.pop())
        url = job_url(limited_client, limited_client.post("/tap/async", data={"LANG": "ADQL", "QUERY": SLOW_ADQL}))
        assert url is not None
        created.append(url)
    finally:
        for url in created:
            delete_job(limited_client, url)


def test_a_job_over_the_result_size_limit_ends_in_error(limited, limited_client):
    query = "SELECT table_name, column_name, description, unit, ucd FROM TAP_SCHEMA.columns"
    outcome = run_async(limited_client, {"QUERY": query, "RESPONSEFORMAT": "votable"})
    assert outcome.route == "async (ERROR)", outcome.describe()
    assert re.search(r"bytes|size", outcome.message, re.IGNORECASE), outcome.describe()
    # A small result of the same job kind completes.
    small = run_async(limited_client, {"QUERY": "SELECT TOP 1 table_name FROM TAP_SCHEMA.tables", "RESPONSEFORMAT": "csv"})
    assert small.status == 200 and not small.refused, small.describe()


def test_sync_rows_are_capped_with_the_overflow_info(limited, limited_client):
    query = "SELECT table_name, column_name FROM TAP_SCHEMA.columns"
    resp = sync_post(limited_client, query, MAXREC="1000", RESPONSEFORMAT="votable/td")
    assert resp.status_code == 200, resp.text[:500]
    root = ET.fromstring(resp.content)
    rows = [el for el in root.iter() if _local(el.tag) == "TR"]
    statuses = [el.get("value") for el in root.iter() if _local(el.tag) == "INFO" and el.get("name") == "QUERY_STATUS"]
    assert statuses[-1] == "OVERFLOW", statuses
    assert len(rows) == LIMITED["tap_sync_max_rows"]
    # MAXREC below the cap is honoured the same way.
    resp = sync_post(limited_client, query, MAXREC="2", RESPONSEFORMAT="votable/td")
    assert len([el for el in ET.fromstring(resp.content).iter() if _local(el.tag) == "TR"]) == 2


def client_from(url: str, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (all of 127.0.0.0/8 is this
    machine): to the service, another person."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, follow_redirects=False, transport=transport,
                        headers={"connection": "close"})


def test_the_job_quota_is_per_client(limited):
    quota = LIMITED["tap_jobs_per_client"]
    created = []
    with client_from(limited.url, "127.0.0.2") as alice, client_from(limited.url, "127.0.0.3") as bob:
        try:
            for _ in range(quota):
                url = job_url(alice, alice.post("/tap/async", data={"LANG": "ADQL", "QUERY": SLOW_ADQL}))
                assert url is not None
                created.append((alice, url))
            assert job_url(alice, alice.post("/tap/async", data={"LANG": "ADQL", "QUERY": SLOW_ADQL})) is None
            url = job_url(bob, bob.post("/tap/async", data={"LANG": "ADQL", "QUERY": SLOW_ADQL}))
            assert url is not None, "a full quota of one client refused another"
            created.append((bob, url))
        finally:
            for who, url in created:
                delete_job(who, url)


def test_one_persons_jobs_are_not_listed_to_or_deleted_by_another(limited):
    """Jobs are anonymous; a job id is all that gives access to a job's query and result.
    The job list must not hand those ids to everyone, nor may another client delete or
    abort a job that is not theirs."""
    marker = "bob-must-not-see-this-9e2a"
    query = f"SELECT TOP 1 table_name FROM TAP_SCHEMA.tables WHERE table_name <> '{marker}'"
    with client_from(limited.url, "127.0.0.2") as alice, client_from(limited.url, "127.0.0.3") as bob:
        url = job_url(alice, alice.post("/tap/async", data={"LANG": "ADQL", "QUERY": query}))
        assert url is not None
        job_id = url.rstrip("/").rsplit("/", 1)[-1]
        try:
            listing = bob.get("/tap/async")
            assert listing.status_code == 200
            failures = []
            if job_id in listing.text:
                failures.append(f"another client's job list shows job {job_id}")
            for method, target, data in (("DELETE", url, None), ("POST", url, {"ACTION": "DELETE"}),
                                         ("POST", url + "/phase", {"PHASE": "ABORT"}),
                                         ("POST", url + "/parameters", {"QUERY": "SELECT TOP 1 * FROM catalog.spectra"})):
                bob.request(method, target, data=data)
                mine = alice.get(url)
                if mine.status_code != 200:
                    failures.append(f"{method} {target.rsplit('/', 1)[-1]} {data} by another client removed the job")
                    break
                if "<uws:phase>PENDING</uws:phase>" not in mine.text or marker not in mine.text:
                    failures.append(f"{method} {target.rsplit('/', 1)[-1]} {data} by another client changed the job")
            assert failures == [], "\n".join(failures)
        finally:
            delete_job(alice, url)


#: Text that breaks XML written by hand: markup, an attribute's end, CDATA's end, control characters.
XML_BREAKERS = ['</uws:runId><uws:phase>COMPLETED</uws:phase>', '" onload="x', "]]><x/>", "&amp;&#0;&bogus;",
                "a\x01b\x08c\x1bd", "\ufffe\uffff", "\ud800"]


def test_documents_stay_well_formed_xml_whatever_was_sent(attacked, client, unchanged):
    """Job documents repeat RUNID, parameter names and values; error documents repeat the
    query: escaped or refused, they must stay XML a client can parse."""
    failures = []
    for text in XML_BREAKERS:
        what = _short(text)
        params = {"LANG": "ADQL", "QUERY": f"SELECT TOP 1 table_name FROM TAP_SCHEMA.tables WHERE table_name = '{text}'",
                  "RUNID": text, f"x{text}": "1"}
        try:
            created = client.post("/tap/async", data=params)
        except UnicodeEncodeError:
            continue  # a lone surrogate cannot even be sent as UTF-8
        url = job_url(client, created)
        if url is None:
            outcome = classify(f"create {what}", created)
            failures += problems(outcome, must_refuse=True, settings=attacked.settings)
            if error_document_message(created.content) is None and created.status_code != 400:
                failures.append(f"create {what}: the refusal is no parseable error document: {created.text[:200]!r}")
        else:
            try:
                for resource in ("", "/parameters"):
                    doc = client.get(url + resource)
                    try:
                        ET.fromstring(doc.content)
                    except ET.ParseError as err:
                        failures.append(f"job{resource} after {what}: not well-formed XML ({err}): {doc.text[:200]!r}")
                client.post(url + "/phase", data={"PHASE": "RUN"})
                wait_for_final_phase(client, url)
                error = client.get(url + "/error")
                if error.status_code == 200 and error.content.strip():
                    try:
                        ET.fromstring(error.content)
                    except ET.ParseError as err:
                        failures.append(f"job/error after {what}: not well-formed XML ({err}): {error.text[:200]!r}")
            finally:
                delete_job(client, url)
        sync = sync_post(client, f"SELECT '{text}' FROM", RESPONSEFORMAT="votable/td")
        if sync.status_code < 500:
            try:
                ET.fromstring(sync.content)
            except ET.ParseError as err:
                failures.append(f"sync error after {what}: not well-formed XML ({err}): {sync.text[:200]!r}")
        else:
            failures.append(f"sync {what}: HTTP {sync.status_code}")
    assert failures == [], "\n".join(failures)
