"""The query service end to end through pyvo (and plain HTTP where pyvo has no client):
TAP sync and async, VOSI tables, JOIN and CONTAINS equal to the same query in SQL on the
read path, MAXREC overflow, every RESPONSEFORMAT, cone search, spectrum download and
DataLink, and the errors a client sees."""

from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
import pyvo
import requests
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.table import Table
from pyvo.io.vosi.exceptions import VOSIWarning
from skyledger.schema.readpath import run_reader_query

ORDERED = "SELECT spectrum_id, survey, object_id, ra, dec, n_pix FROM catalog.spectra ORDER BY spectrum_id"


@pytest.fixture(scope="module")
def tap(tap_server):
    return pyvo.dal.TAPService(tap_server.url + "/tap")


def sql_rows(srv, statement):
    return run_reader_query(srv.settings, statement).rows


def table_rows(table, columns):
    return [tuple(_plain(row[c]) for c in columns) for row in table]


def _plain(value):
    if value is np.ma.masked:
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def test_sync_search_equals_the_same_query_in_sql(tap, tap_server):
    result = tap.search(ORDERED)
    expected = sql_rows(tap_server, ORDERED)
    assert len(expected) == 4
    assert table_rows(result.to_table(), ["spectrum_id", "survey", "object_id", "ra", "dec", "n_pix"]) == expected


def test_fields_carry_units_ucds_and_descriptions_from_tap_schema(tap):
    result = tap.search(ORDERED + " ")
    fields = {f.name: f for f in result.fielddescs}
    assert (fields["ra"].ucd, str(fields["ra"].unit)) == ("pos.eq.ra;meta.main", "deg")
    assert fields["spectrum_id"].ucd == "meta.id;meta.main" and fields["spectrum_id"].description
    # A computed column has no source: its type only.
    computed = {f.name: f for f in tap.search("SELECT ra * 2 AS twice FROM catalog.spectra").fielddescs}
    assert computed["twice"].ucd is None and computed["twice"].datatype == "double"



def test_run_async_equals_sync(tap, tap_server):
    result = tap.run_async(ORDERED)
    assert table_rows(result.to_table(), ["spectrum_id", "survey", "ra"]) == [
        (r[0], r[1], r[3]) for r in sql_rows(tap_server, ORDERED)
    ]


def test_tables_lists_the_catalog_views_with_units(tap):
    with warnings.catch_warnings():
        # pyvo warns (W02 ...) about a tableset that breaks VODataService: none may.
        warnings.simplefilter("error", VOSIWarning)
        tables = tap.tables
        names = set(tables.keys())
    columns = {c.name: c for c in tables["catalog.spectrum_pixels"].columns}
    assert (columns["wave"].datatype.content, columns["wave"].datatype.arraysize) == ("double", "*")
    assert {"catalog.spectra", "catalog.spectrum_pixels", "catalog.ingest_files", "catalog.runs"} <= names
    columns = {c.name: c for c in tables["catalog.spectra"].columns}
    assert columns["ra"].unit == "deg" and columns["ra"].ucd == "pos.eq.ra;meta.main"
    assert columns["spectrum_id"].description


def test_tap_schema_is_queryable(tap):
    result = tap.search("SELECT table_name FROM TAP_SCHEMA.tables WHERE schema_name = 'catalog'")
    assert "catalog.spectra" in {_plain(r["table_name"]) for r in result}


def test_join_equals_sql(tap, tap_server):
    adql = (
        "SELECT s.spectrum_id, f.reader, f.n_spectra FROM catalog.spectra AS s "
        "JOIN catalog.ingest_files AS f ON f.file = s.file AND f.survey = s.survey ORDER BY s.spectrum_id"
    )
    result = tap.search(adql)
    assert table_rows(result.to_table(), ["spectrum_id", "reader", "n_spectra"]) == sql_rows(tap_server, adql)
    assert len(result) == 4


def test_results_join_spectra_with_group_by_equals_sql(tap, tap_server):
    # The pipeline's results (catalog.lines from the `lines` run) joined to the spectra,
    # grouped and ordered: the same text through TAP and in SQL on the read path.
    adql = (
        "SELECT s.survey, COUNT(*) AS n_lines, MAX(l.snr) AS best_snr FROM catalog.lines AS l "
        "JOIN catalog.spectra AS s ON s.spectrum_id = l.spectrum_id GROUP BY s.survey ORDER BY s.survey"
    )
    expected = sql_rows(tap_server, adql)
    assert expected and sum(r[1] for r in expected) > 0
    got = table_rows(tap.search(adql).to_table(), ["survey", "n_lines", "best_snr"])
    assert [r[:2] for r in got] == [r[:2] for r in expected]
    for g, e in zip(got, expected):
        assert (g[2] is None and e[2] is None) or g[2] == pytest.approx(e[2])
    sub = tap.search("SELECT spectrum_id FROM catalog.spectra WHERE spectrum_id IN "
                     "(SELECT spectrum_id FROM catalog.abundances) ORDER BY spectrum_id")
    assert table_rows(sub.to_table(), ["spectrum_id"]) == sql_rows(
        tap_server, "SELECT DISTINCT spectrum_id FROM catalog.abundances ORDER BY spectrum_id")


def test_contains_equals_the_cone_search_in_sql(tap, tap_server):
    # LEGA-C's galaxy is at (149.80, 1.80); a 1-degree circle around (150, 1.8) holds it alone.
    adql = (
        "SELECT spectrum_id FROM catalog.spectra "
        "WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.0, 1.8, 1.0)) ORDER BY spectrum_id"
    )
    result = tap.search(adql)
    expected = sql_rows(
        tap_server, "SELECT spectrum_id FROM catalog.cone_search_spectra(150.0, 1.8, 3600.0) ORDER BY spectrum_id"
    )
    assert len(expected) == 1
    assert table_rows(result.to_table(), ["spectrum_id"]) == expected


@pytest.mark.filterwarnings("ignore::pyvo.dal.exceptions.DALOverflowWarning")
def test_maxrec_overflow(tap):
    result = tap.search(ORDERED, maxrec=2)
    assert len(result) == 2
    assert result.query_status == "OVERFLOW"
    exact = tap.search(ORDERED, maxrec=4)
    assert len(exact) == 4 and exact.query_status == "OK"
    # TOP below MAXREC is the query's own cut, not an overflow; MAXREC below TOP is.
    top = tap.search(ORDERED.replace("SELECT", "SELECT TOP 3", 1), maxrec=10)
    assert len(top) == 3 and top.query_status == "OK"
    top = tap.search(ORDERED.replace("SELECT", "SELECT TOP 3", 1), maxrec=1)
    assert len(top) == 1 and top.query_status == "OVERFLOW"


def test_maxrec_zero_returns_the_metadata_alone(tap_server):
    r = requests.get(tap_server.url + "/tap/sync",
                     params={"request": "doQuery", "lang": "ADQL", "query": ORDERED, "maxrec": "0"}, timeout=60)
    table = parse_single_table(io.BytesIO(r.content)).to_table()
    assert len(table) == 0 and table.colnames == ["spectrum_id", "survey", "object_id", "ra", "dec", "n_pix"]


@pytest.mark.parametrize("fmt", ["votable", "votable/td", "application/x-votable+xml", "csv", "tsv", "json", "fits",
                                 "application/fits", "text/csv"])
def test_every_responseformat_parses(tap_server, fmt):
    r = requests.post(tap_server.url + "/tap/sync",
                      data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": ORDERED, "RESPONSEFORMAT": fmt}, timeout=60)
    assert r.status_code == 200, r.text
    expected = [row[0] for row in sql_rows(tap_server, ORDERED)]
    if "votable" in fmt:
        ids = list(parse_single_table(io.BytesIO(r.content)).to_table()["spectrum_id"])
    elif "fits" in fmt:
        with fits.open(io.BytesIO(r.content)) as hdul:
            ids = list(hdul[1].data["spectrum_id"])
    elif fmt == "json":
        doc = json.loads(r.content)
        names = [m["name"] for m in doc["metadata"]]
        ids = [row[names.index("spectrum_id")] for row in doc["data"]]
    else:
        table = Table.read(r.text, format="ascii.csv" if "csv" in fmt else "ascii.tab")
        ids = list(table["spectrum_id"])
    assert [int(i) for i in ids] == expected


def test_unknown_responseformat_is_a_clear_error(tap_server):
    r = requests.get(tap_server.url + "/tap/sync",
                     params={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": ORDERED, "FORMAT": "excel"}, timeout=60)
    assert b'value="ERROR"' in r.content and b"excel" in r.content


def test_bad_adql_raises_in_pyvo_with_the_message(tap):
    with pytest.raises(pyvo.dal.DALQueryError) as err:
        tap.search("SELECT no_such_column FROM catalog.spectra")
    assert "no_such_column" in str(err.value)


def test_async_error_and_job_lifecycle(tap, tap_server):
    with pytest.raises(pyvo.dal.DALQueryError) as err:
        tap.run_async("SELECT no_such_column FROM catalog.spectra")
    assert "no_such_column" in str(err.value)

    job = tap.submit_job(ORDERED, maxrec=1)
    assert job.phase == "PENDING"
    job.run()
    job.wait(phases=["COMPLETED", "ERROR", "ABORTED"], timeout=120)
    assert job.phase == "COMPLETED"
    result = job.fetch_result()
    assert len(result) == 1 and result.query_status == "OVERFLOW"
    base = f"{tap_server.url}/tap/async/{job.job_id}"
    assert requests.get(base + "/phase", timeout=30).text == "COMPLETED"
    assert requests.get(base + "/executionduration", timeout=30).text == str(int(tap_server.settings.tap_async_duration_s))
    assert job.job_id in requests.get(tap_server.url + "/tap/async", timeout=30).text
    job.delete()
    assert requests.get(base, timeout=30).status_code == 404


def test_job_quota_per_client_refuses_cleanly(tap_server):
    limit = tap_server.settings.tap_jobs_per_client
    created = []
    try:
        for _ in range(limit):
            r = requests.post(tap_server.url + "/tap/async", data={"LANG": "ADQL", "QUERY": ORDERED},
                              allow_redirects=False, timeout=30)
            assert r.status_code == 303, r.text
            created.append(r.headers["location"])
        r = requests.post(tap_server.url + "/tap/async", data={"LANG": "ADQL", "QUERY": ORDERED},
                          allow_redirects=False, timeout=30)
        assert r.status_code == 429
        assert b'value="ERROR"' in r.content and b"active jobs" in r.content
    finally:
        for url in created:
            assert requests.post(url, data={"ACTION": "DELETE"}, allow_redirects=False, timeout=30).status_code == 303


def test_scs_via_pyvo(tap_server):
    result = pyvo.dal.SCSService(tap_server.url + "/scs").search(pos=(150.0, 1.8), radius=1.0)
    assert len(result) == 1
    record = result[0]
    expected = sql_rows(tap_server, "SELECT spectrum_id, ra, dec FROM catalog.cone_search_spectra(150.0, 1.8, 3600.0)")
    assert (int(record.id), record.pos.ra.deg, record.pos.dec.deg) == pytest.approx(expected[0])
    (this,) = [r for r in record.getdatalink().bysemantics("#this", include_narrower=False)
               if r.content_type == "application/fits"]
    assert this.access_url.endswith(f"/spectra/{expected[0][0]}?format=fits")


def test_scs_error_document(tap_server):
    r = requests.get(tap_server.url + "/scs", params={"RA": "150", "DEC": "95", "SR": "1"}, timeout=30)
    assert r.status_code == 200 and b'name="Error"' in r.content and b"DEC" in r.content


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_spectrum_download(tap_server, fmt):
    (spectrum_id, n_pix), = sql_rows(
        tap_server, "SELECT spectrum_id, n_pix FROM catalog.spectra WHERE survey = 'desi_coadd'")
    r = requests.get(f"{tap_server.url}/spectra/{spectrum_id}", params={"format": fmt}, timeout=60)
    assert r.status_code == 200, r.text
    if fmt == "fits":
        table = Table.read(io.BytesIO(r.content), format="fits")
    else:
        table = parse_single_table(io.BytesIO(r.content)).to_table()
    assert table.colnames == ["WAVE", "FLUX", "IVAR", "MASK", "RESOLUTION"]
    assert len(table) == n_pix
    assert str(table["WAVE"].unit) == "Angstrom"
    (wave,), = sql_rows(tap_server, f"SELECT wave FROM catalog.spectrum_pixels WHERE spectrum_id = {spectrum_id}")
    np.testing.assert_allclose(np.asarray(table["WAVE"]), np.asarray(wave))


def test_unknown_spectrum_is_404_with_a_message(tap_server):
    r = requests.get(f"{tap_server.url}/spectra/987654321", timeout=30)
    assert r.status_code == 404 and b"no spectrum 987654321" in r.content


def test_datalink_via_pyvo_leads_to_the_spectrum(tap_server):
    (spectrum_id, n_pix), = sql_rows(tap_server, "SELECT spectrum_id, n_pix FROM catalog.spectra WHERE survey = 'sdss' "
                                                 "ORDER BY spectrum_id LIMIT 1")
    links = pyvo.dal.adhoc.DatalinkService(tap_server.url + "/datalink").run_sync(str(spectrum_id))
    this = [row for row in links.bysemantics("#this", include_narrower=False) if row.content_type == "application/fits"]
    assert len(this) == 1
    with fits.open(io.BytesIO(requests.get(this[0].access_url, timeout=60).content)) as hdul:
        assert len(hdul[1].data) == n_pix and hdul[1].header["SPEC_ID"] == spectrum_id
    missing = pyvo.dal.adhoc.DatalinkService(tap_server.url + "/datalink").run_sync("987654321")
    assert "NotFoundFault" in missing[0].error_message


def test_results_with_spectrum_id_link_to_their_spectra(tap, tap_server):
    # The service descriptor in the VOTable: pyvo (and TOPCAT) follow it without configuration.
    result = tap.search("SELECT spectrum_id, n_pix FROM catalog.spectra WHERE survey = 'sdss' ORDER BY spectrum_id")
    assert len(result) == 2
    for row in result:
        links = row.getdatalink()
        (fits_link,) = [r for r in links.bysemantics("#this", include_narrower=False) if r.content_type == "application/fits"]
        with fits.open(io.BytesIO(requests.get(fits_link.access_url, timeout=60).content)) as hdul:
            assert hdul[1].header["SPEC_ID"] == row["spectrum_id"] and len(hdul[1].data) == row["n_pix"]


def test_capabilities_and_availability(tap, tap_server):
    caps = tap.capabilities
    tap_cap = next(c for c in caps if c.standardid and c.standardid.startswith("ivo://ivoa.net/std/TAP"))
    assert {v.content for lang in tap_cap.languages for v in lang.versions} >= {"2.0", "2.1"}
    assert tap.hardlimit == tap_server.settings.tap_async_max_rows
    assert tap.maxrec == tap_server.settings.tap_default_maxrec
    r = requests.get(tap_server.url + "/tap/availability", timeout=30)
    assert b"<vosi:available>true</vosi:available>" in r.content
