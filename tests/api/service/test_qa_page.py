"""The QA page in a real browser: headless Chromium on a page served by a real uvicorn server.

The catalogue is made by the pipeline itself: two bundled SDSS spectra and the bundled SAMI
cube (39 bins, two arms) ingested, one broken file rejected, then lines, abundances,
nebula_diagnostic, rotation and gradients run (about 30 s on a quiet machine). Every plot
must show as many marks as its ADQL returns rows (the same ADQL, run through the read path
here), every block must link to its ADQL, and the browser must log no error. An empty
catalogue must say "no data" in every block instead of drawing empty frames.
"""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import fastapi
import pytest
import torch
import uvicorn
from skyledger.api.service.plots import Figure, Series, nice_ticks, render_svg
from skyledger.api.service.qa import QUERIES, router, tap_url
from skyledger.compute.framework.registry import get_task
from skyledger.compute.framework.runner import process
from skyledger.ingest.batch import ingest_paths, ingest_surveys
from skyledger.ingest.config import IngestConfig, SurveySpec
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.database import connect
from skyledger.schema.readpath import QUERY_ROLE, run_reader_query
from skyledger.schema.settings import Settings
from sqlalchemy import make_url, text

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path("/tmp/qa_page.png")
TASKS = ("lines", "abundances", "nebula_diagnostic", "rotation", "gradients")
FAILED_RUN_ERROR = "ComputeInputError: <model> file missing & more"
PLOTS = [q for q in QUERIES if q.is_plot]
#: which SVG element one result row of each plot becomes
MARK_PER_ROW = {"bpt": "circle.mark", "histogram": "rect.mark", "rotation_curves": "path.mark",
                "gradients": "path.mark"}


def _reader_settings(url: str, home: Path) -> Settings:
    reader = make_url(url).set(username=QUERY_ROLE, password=None).render_as_string(hide_password=False)
    return Settings(home=home, database_url=url, query_url=reader)


@pytest.fixture(scope="module")
def catalogue(server, template_url, tmp_path_factory) -> Settings:
    """A database filled by the pipeline from the bundled files, plus one rejected file."""
    url = server.create_database(f"skyledger_qa_{uuid.uuid4().hex[:8]}", template=make_url(template_url).database)
    settings = _reader_settings(url, tmp_path_factory.mktemp("qa") / "home")
    root = sample_data_dir()
    config = IngestConfig(path=None, root=root, surveys=(
        SurveySpec(name="sdss-dr18", reader="sdss", location=root, glob="*_SDSS_DR18.fits"),
        SurveySpec(name="sami-dr3", location=root, glob="209807_A_sectors_*.fits.gz", options={"psf_fwhm_arcsec": 2.51}),
    ))
    broken = tmp_path_factory.mktemp("broken") / "truncated_SDSS_DR18.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the disk fits are small; one thread is faster on a busy machine
    db = connect(settings)
    try:
        assert all(o.status == "loaded" for o in ingest_surveys(db, config).outcomes)
        rejected = ingest_paths(db, [broken], survey=SurveySpec(name="sdss-dr18", reader="sdss")).outcomes[0]
        assert rejected.status == "rejected", rejected
        for name in TASKS:
            assert process(db, get_task(name), device="cpu", batch_size=16).status == "succeeded", name
        # A failed run as the runner records one (a task that raised), to be reported.
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO run (task, version, params_hash, code_version, status, error, finished_at) "
                "VALUES ('nebula_nn', 1, 'x', 'test', 'failed', :e, now())"), {"e": FAILED_RUN_ERROR})
    finally:
        db.dispose()
        torch.set_num_threads(threads)
    return settings


@contextmanager
def serve(settings: Settings, app: fastapi.FastAPI | None = None) -> Iterator[str]:
    """The QA router alone in an app (or ``app``), served by uvicorn in a thread on a free port."""
    if app is None:
        app = fastapi.FastAPI()
        app.state.settings = settings
        app.include_router(router)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:  # poll with a generous bound: the machine may be busy
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the QA page tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, url: str, screenshot: Path | None = None):
    """The page loaded in Chromium, with every console message and page error it caused."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    messages, errors = [], []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: errors.append(str(e)))
    response = page.goto(url, wait_until="load")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    return page, response, messages, errors


def test_page_draws_every_plot_from_its_adql_without_browser_errors(catalogue, browser):
    with serve(catalogue) as url:
        page, response, messages, errors = open_page(browser, url + "/", SCREENSHOT)
        try:
            assert response.status == 200
            assert [m for m in messages if m[0] == "error"] == [] and errors == []
            assert page.locator(".query-error, .no-data, .banner").count() == 0, page.locator(
                ".query-error, .no-data, .banner").all_inner_texts()
            for q in QUERIES:
                block = page.locator(f"article#{q.key}")
                link = block.locator("a.adql")
                assert link.count() == 1, q.key
                href = link.get_attribute("href")
                assert href == tap_url(q.adql)
                params = parse_qs(urlsplit(href).query)
                assert urlsplit(href).path == "/tap/sync"
                assert params == {"REQUEST": ["doQuery"], "LANG": ["ADQL"], "RESPONSEFORMAT": ["csv"], "QUERY": [q.adql]}
                assert block.locator("pre.adql-text").inner_text() == q.adql
            for q in PLOTS:
                rows = run_reader_query(catalogue, q.adql).rows
                assert rows, f"the fixture gives no rows for {q.key}"
                svgs = page.locator(f"article#{q.key} svg.qa-plot")
                assert svgs.count() >= 1, q.key
                marks = page.locator(f"article#{q.key} svg.qa-plot {MARK_PER_ROW[q.kind]}").count()
                assert marks == len(rows), (q.key, marks, len(rows))
            # the BPT diagram draws both demarcations
            assert page.locator("article#bpt svg path.reference").count() == 2
        finally:
            page.close()


def test_nightly_status_and_counts_show_runs_files_and_rejections(catalogue, browser):
    with serve(catalogue) as url:
        page, _, messages, errors = open_page(browser, url + "/")
        try:
            assert [m for m in messages if m[0] == "error"] == [] and errors == []
            runs = page.locator("article#runs tbody tr")
            tasks = [runs.nth(i).locator("td").first.inner_text() for i in range(runs.count())]
            assert sorted(tasks) == sorted([*TASKS, "nebula_nn"])
            assert page.locator("article#runs .status-succeeded").count() == len(TASKS)
            failed = page.locator("article#runs tr", has=page.locator(".status-failed"))
            assert failed.count() == 1 and failed.locator("td.message").inner_text() == FAILED_RUN_ERROR
            assert page.locator("article#runs .summary.bad").inner_text() == (
                "Newest run not succeeded: nebula_nn (failed).")
            assert page.locator("article#ingest_files .summary.bad").inner_text() == (
                "Rejected: 1 of the 5 files shown.")
            files = page.locator("article#ingest_files tbody tr")
            assert files.count() == 5  # two SDSS spectra, two SAMI arms, the broken file
            newest = files.first.inner_text()  # newest first: the broken file came last
            assert "truncated_SDSS_DR18.fits" in newest and "rejected" in newest
            assert files.first.locator("td.message").inner_text().strip() != ""  # its reason
            counts = {
                row.locator("td").first.inner_text(): [c.inner_text() for c in row.locator("td").all()[1:]]
                for row in page.locator("article#counts tbody tr").all()
            }
            assert set(counts) == {"sami-dr3", "sdss-dr18", "all surveys"}
            assert counts["sdss-dr18"][:2] == ["2", "2"]  # spectra, sources
            assert counts["sami-dr3"][0] == "78"  # 39 bins x 2 arms
            assert counts["sami-dr3"][6] != "0"  # rotation fits of the galaxy
        finally:
            page.close()


def test_empty_catalogue_says_no_data_in_every_block(fresh_settings, browser):
    with serve(fresh_settings) as url:
        page, response, messages, errors = open_page(browser, url + "/", Path("/tmp/qa_page_empty.png"))
        try:
            assert response.status == 200
            assert [m for m in messages if m[0] == "error"] == [] and errors == []
            assert page.locator("article .no-data").count() == len(QUERIES)
            assert page.locator("svg").count() == 0
            assert page.locator("a.adql").count() == len(QUERIES)
        finally:
            page.close()


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.status, r.headers["content-type"], r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["content-type"], err.read().decode()


def test_one_plot_is_served_as_svg(catalogue):
    with serve(catalogue) as url:
        status, ctype, body = _get(url + "/qa/bpt.svg")
        assert status == 200 and ctype.startswith("image/svg+xml")
        assert body.startswith("<svg") and 'class="mark"' in body
        status, _, body = _get(url + "/qa/gradients.svg?index=1")
        assert status == 404 and "1 figure" in body
        status, _, body = _get(url + "/qa/runs.svg")
        assert status == 404 and "bpt" in body


def test_adql_links_run_on_the_query_service(catalogue):
    """In the whole service (create_app), the page is at / and every link gives the rows of
    its block."""
    from skyledger.api.service.app import create_app

    with serve(catalogue, create_app(catalogue)) as url:
        status, ctype, page = _get(url + "/")
        assert status == 200 and ctype.startswith("text/html") and 'class="query-error"' not in page
        for q in QUERIES:
            status, ctype, body = _get(url + tap_url(q.adql))
            assert status == 200 and ctype.startswith("text/csv"), (q.key, body[:500])
            records = list(csv.reader(io.StringIO(body)))
            assert len(records) - 1 == len(run_reader_query(catalogue, q.adql).rows), q.key  # one header line


def test_page_refuses_to_read_as_the_owner(fresh_settings):
    """Without a reader login the page would run as the database owner: it says so instead."""
    owner_only = Settings(home=fresh_settings.home, database_url=fresh_settings.database_url)
    with serve(owner_only) as url:
        status, _, body = _get(url + "/")
    assert status == 503
    assert "catalogue reader" in body and 'class="banner"' in body
    assert "<svg" not in body


# --------------------------------------------------------------------------- SVG


def test_ticks_are_round_and_inside_the_range():
    assert nice_ticks(-1.6, 0.7) == [-1.5, -1.0, -0.5, 0.0, 0.5]
    assert nice_ticks(-0.1, 2.1, integer=True) == [0.0, 1.0, 2.0]
    assert nice_ticks(0.0, 10.8) == [0.0, 2.5, 5.0, 7.5, 10.0]


def test_svg_escapes_text_and_breaks_lines_at_gaps():
    fig = Figure(title="<script>alert(1)</script>", xlabel="x & y", ylabel="y", series=[
        Series("a<b", [0.0, 1.0, None, 2.0, 3.0], [0.0, 1.0, 5.0, 2.0, 3.0], style="line"),
        Series("points", [0.5, float("nan")], [0.5, 1.0]),
    ])
    svg = render_svg(fig)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "x &amp; y" in svg
    path = next(line for line in svg.splitlines() if line.startswith('<path class="mark"'))
    assert path.count("M") == 2  # two pieces: the None breaks the curve
    assert svg.count('<circle class="mark"') == 1  # the NaN point is left out


def test_every_query_means_the_same_through_the_adql_translator(catalogue):
    """The page runs its ADQL as PostgreSQL; /tap/sync, where its links go, translates it
    first: both must give the same rows."""
    from skyledger.api.service import adql

    for q in QUERIES:
        direct = run_reader_query(catalogue, q.adql)
        translated = run_reader_query(catalogue, adql.translate(q.adql).sql)
        assert sorted(map(repr, translated.rows)) == sorted(map(repr, direct.rows)), q.key
