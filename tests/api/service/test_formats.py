"""The TAP service's result writers: every format read back by astropy, pyvo, csv and json
equal to what was written (NULLs, NaN, non-ASCII text, arrays, geometries, empty
results, the OVERFLOW status), and memory that does not grow with the row count."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import tracemalloc
import warnings
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from astropy.io import ascii as astropy_ascii
from astropy.io import fits
from astropy.io.votable import parse
from astropy.io.votable.exceptions import VOWarning
from astropy.table import Table
from skyledger.api.service.formats import FORMATS, Field, resolve_format, stream_result
from skyledger.api.service.formats import error_document as service_error_document
from skyledger.schema.errors import QueryError

FIELDS = [
    Field("source_id", "int8", None, "meta.id;meta.main", "Source identifier"),
    Field("ra", "float8", "deg", "pos.eq.ra;meta.main", "Right ascension & <ICRS>"),
    Field("z", "float4", None, "src.redshift", "Redshift"),
    Field("n_pix", "int4", "pix", None, "Pixels"),
    Field("flags", "int2", None, "meta.code", None),
    Field("good", "bool", None, None, "Passed QA"),
    Field("name", "text", None, "meta.id", "Name, any Unicode"),
    Field("observed", "timestamptz", None, "time.epoch", "When"),
    Field("wave", "_float8", "Angstrom", "em.wl", "Wavelengths"),
    Field("mask", "_int4", None, "meta.code.qual", "Pixel mask"),
    Field("pos", "_float8", "deg", "pos.eq", "A point", xtype="point"),
    Field("area", "_float8", "deg", "pos.outline", "A circle", xtype="circle"),
    Field("outline", "_float8", "deg", "pos.outline", "A polygon", xtype="polygon"),
]
T0 = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
ROWS = [
    (1, 150.25, 0.5, 4000, 3, True, "plain", T0, [3600.0, 3601.5], [0, 1], (150.25, 2.5), (1.0, 2.0, 0.5),
     [1.0, 1.0, 2.0, 1.0, 2.0, 2.0]),
    (None, None, None, None, None, None, None, None, None, None, None, None, None),
    (3, float("nan"), float("nan"), 0, -7, False, "héllo ✓ 𝄞 日本", T0.astimezone(timezone(timedelta(hours=2))),
     [1.0, float("nan"), 3.0], [5, None, 7], "(10.5,-20.25)", "<(1,2),0.5>", []),
    (2**62, -0.0, 1e-30, -(2**31) + 1, 2**15 - 1, True, "", datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
     [], [], (0.0, 0.0), (0.0, 0.0, 0.0), [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]),
    (5, 1e300, 3.4e38, 5, 0, False, 'quote " apostrophe \' <tag> & amp\nnew line\ttab', T0,
     [float("inf"), float("-inf")], [2**31 - 1], (359.9, -89.9), (359.9, -89.9, 1e-6),
     [1.5, -1.5, 2.5, -2.5, 3.5, 0.0]),
]  # fmt: skip
INFOS = {
    "QUERY": 'SELECT TOP 5 * FROM catalog.sources WHERE name = "x" AND ra < 3',
    "request_id": "r-123",
}
ISO = [
    "2024-05-06T07:08:09",
    None,
    "2024-05-06T07:08:09",
    "2024-05-06T07:08:09.123456",
    "2024-05-06T07:08:09",
]
POINTS = [(150.25, 2.5), None, (10.5, -20.25), (0.0, 0.0), (359.9, -89.9)]
CIRCLES = [
    (1.0, 2.0, 0.5),
    None,
    (1.0, 2.0, 0.5),
    (0.0, 0.0, 0.0),
    (359.9, -89.9, 1e-6),
]


def write(fmt: str, rows=ROWS, *, chunk_sizes=(2, 0, 1, 2), overflow=False, fields=FIELDS) -> bytes:
    """``rows`` written in ``fmt``, given to the writer in chunks of ``chunk_sizes`` rows (an empty one too)."""
    chunks, start = [], 0
    for size in chunk_sizes:
        chunks.append(list(rows[start : start + size]))
        start += size
    chunks.append(list(rows[start:]))
    return b"".join(stream_result(resolve_format(fmt), fields, iter(chunks), overflow=overflow, infos=INFOS))


def read_votable(data: bytes):
    """The VOTable parsed by astropy with every VOTable warning an error (a well-formed document)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", VOWarning)
        return parse(io.BytesIO(data))


def statuses(votable) -> list[str]:
    return [info.value for info in votable.resources[0].infos if info.name == "QUERY_STATUS"]


def masked(column, i) -> bool:
    return bool(np.ma.getmaskarray(column)[i].all())


def float_list(values) -> list[float]:
    """An array cell as floats, NaN where masked."""
    return np.ma.filled(np.ma.asarray(values, dtype=float), np.nan).tolist()


def same_floats(a, b) -> bool:
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b))


# -- RESPONSEFORMAT ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "votable"),
        ("", "votable"),
        ("votable", "votable"),
        ("VOTable", "votable"),
        ("application/x-votable+xml", "votable"),
        ("votable/b2", "votable"),
        ("application/x-votable+xml;serialization=BINARY2", "votable"),
        ("votable/td", "votable/td"),
        ("application/x-votable+xml; serialization=TABLEDATA", "votable/td"),
        ("CSV", "csv"),
        ("text/csv", "csv"),
        ("tsv", "tsv"),
        ("text/tab-separated-values", "tsv"),
        ("json", "json"),
        ("application/json", "json"),
        ("fits", "fits"),
        ("application/FITS", "fits"),
    ],
)
def test_resolve_format_accepts_tap_values_and_mime_types(value, name):
    assert resolve_format(value).name == name


def test_resolve_format_serializations_media_types_and_extensions():
    assert resolve_format(None).serialization == "BINARY2"
    assert resolve_format("votable/td").serialization == "TABLEDATA"
    assert resolve_format("votable").media_type == "application/x-votable+xml"
    assert resolve_format("csv").media_type.startswith("text/csv")
    assert resolve_format("fits").media_type == "application/fits"
    assert {f.name: f.extension for f in FORMATS} == {
        "votable": "xml", "votable/td": "xml", "csv": "csv", "tsv": "tsv", "json": "json", "fits": "fits",
    }  # fmt: skip


def test_unknown_format_names_the_accepted_values():
    with pytest.raises(QueryError) as err:
        resolve_format("parquet")
    message = str(err.value)
    assert "'parquet'" in message
    for accepted in (
        "votable",
        "votable/td",
        "csv",
        "json",
        "fits",
        "application/x-votable+xml",
    ):
        assert accepted in message


# -- VOTable -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_votable_round_trip_with_astropy(fmt):
    data = write(fmt)
    assert (b"<BINARY2>" in data, b"<TABLEDATA>" in data) == (
        fmt == "votable",
        fmt == "votable/td",
    )
    votable = read_votable(data)
    resource = votable.resources[0]
    assert resource.type == "results"
    assert statuses(votable) == ["OK"]
    infos = {info.name: info.value for info in resource.infos}
    assert infos["QUERY"] == INFOS["QUERY"] and infos["request_id"] == "r-123"
    table = resource.tables[0]
    fields = {f.name: f for f in table.fields}
    assert list(fields) == [f.name for f in FIELDS]
    assert fields["ra"].unit == "deg" and fields["ra"].ucd == "pos.eq.ra;meta.main"
    assert fields["ra"].description == "Right ascension & <ICRS>"
    assert (
        fields["source_id"].datatype,
        fields["z"].datatype,
        fields["flags"].datatype,
    ) == ("long", "float", "short")
    assert (fields["good"].datatype, fields["name"].datatype) == (
        "boolean",
        "unicodeChar",
    )
    assert (fields["observed"].datatype, fields["observed"].xtype) == (
        "char",
        "timestamp",
    )
    assert (fields["wave"].datatype, fields["wave"].arraysize) == ("double", "*")
    assert (fields["pos"].xtype, fields["pos"].arraysize) == ("point", "2")
    assert (fields["area"].xtype, fields["area"].arraysize) == ("circle", "3")
    assert (fields["outline"].xtype, fields["outline"].arraysize) == ("polygon", "*")

    t = table.to_table()
    assert len(t) == len(ROWS)
    # Integers and booleans: NULL is masked, the rest exact.
    for name, j in (("source_id", 0), ("n_pix", 3), ("flags", 4), ("good", 5)):
        for i, row in enumerate(ROWS):
            assert masked(t[name], i) == (row[j] is None), (name, i)
            if row[j] is not None:
                assert t[name][i] == row[j], (name, i)
    # Floats: NULL and NaN both read as masked NaN (astropy's reading of a float NaN); the rest exact.
    for name, j in (("ra", 1), ("z", 2)):
        for i, row in enumerate(ROWS):
            value = row[j]
            if value is None or math.isnan(value):
                assert masked(t[name], i) and math.isnan(t[name].data[i])
            else:
                assert not masked(t[name], i)
                assert t[name][i] == (value if name == "ra" else np.float32(value))
    assert math.copysign(1, t["ra"][3]) == -1  # -0.0 kept
    # Text: Unicode beyond the BMP and markup survive; astropy reads NULL text as "".
    assert list(t["name"]) == ["plain", "", ROWS[2][6], "", ROWS[4][6]]
    assert [None if v == "" else v for v in t["observed"]] == ISO
    # Arrays: NaN elements and NULL integer elements are masked; NULL arrays are empty.
    assert same_floats(float_list(t["wave"][0]), [3600.0, 3601.5])
    assert same_floats(float_list(t["wave"][2]), [1.0, math.nan, 3.0])
    assert float_list(t["wave"][4]) == [math.inf, -math.inf]
    assert len(t["wave"][1]) == 0 and len(t["wave"][3]) == 0
    assert list(np.ma.getmaskarray(t["mask"][2])) == [False, True, False]
    assert np.ma.filled(t["mask"][2], 0).tolist() == [5, 0, 7]
    assert t["mask"][4].tolist() == [2**31 - 1]
    for i, point in enumerate(POINTS):
        assert masked(t["pos"], i) == (point is None)
        if point is not None:
            assert tuple(t["pos"][i]) == point
    for i, circle in enumerate(CIRCLES):
        if circle is not None:
            assert tuple(t["area"][i]) == circle
    assert float_list(t["outline"][0]) == list(ROWS[0][12])
    assert len(t["outline"][2]) == 0


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_overflow_info_follows_the_table(fmt):
    data = write(fmt, overflow=True)
    votable = read_votable(data)
    assert statuses(votable) == ["OK", "OVERFLOW"]
    assert data.index(b'value="OVERFLOW"') > data.index(b"</TABLE>")
    assert statuses(read_votable(write(fmt, overflow=False))) == ["OK"]


def test_overflow_may_be_decided_after_the_last_chunk():
    pulled = []

    def chunks():
        for row in ROWS:
            pulled.append(row)
            yield [row]

    def overflow():
        return len(pulled) == len(ROWS)  # asked only once every row was written

    out = stream_result(resolve_format("votable"), FIELDS, chunks(), overflow=overflow, infos={})
    assert statuses(read_votable(b"".join(out))) == ["OK", "OVERFLOW"]


@pytest.mark.parametrize("fmt", ["votable", "votable/td", "csv", "tsv", "json"])
def test_rows_are_written_as_they_come(fmt):
    """The writer yields bytes for a chunk before it pulls the next one (a stream, not a buffer)."""
    pulled = []

    def chunks():
        for i in range(3):
            pulled.append(i)
            yield [ROWS[0]]

    out = stream_result(resolve_format(fmt), FIELDS, chunks(), overflow=False, infos={})
    next(out)  # the header
    assert pulled == []
    next(out)
    assert pulled == [0]


def test_binary2_base64_is_one_continuous_stream():
    """Chunks whose encoded size is not a multiple of 3 bytes still decode as one stream, and
    the rows are the same however the result is cut into chunks."""
    whole = write("votable", chunk_sizes=(len(ROWS),))
    for sizes in [(1, 1, 1, 1), (2, 2), (3,), (1, 3)]:
        data = write("votable", chunk_sizes=sizes)
        text = re.search(rb"<STREAM[^>]*>(.*)</STREAM>", data, re.DOTALL).group(1)
        assert b"=" not in text.rstrip(b"=\n"), "padding only at the very end"
        assert base64.b64decode(text) == base64.b64decode(
            re.search(rb"<STREAM[^>]*>(.*)</STREAM>", whole, re.DOTALL)[1]
        )


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_pyvo_reads_the_votable(fmt):
    from pyvo.dal import TAPResults
    from pyvo.dal.exceptions import DALOverflowWarning

    results = TAPResults(read_votable(write(fmt)))
    assert results.query_status == "OK"
    assert len(results) == len(ROWS)
    assert results.fieldnames == tuple(f.name for f in FIELDS)
    assert results.getdesc("ra").unit == "deg" and results.getdesc("ra").ucd == "pos.eq.ra;meta.main"
    table = results.to_table()
    assert table["name"][2] == ROWS[2][6]
    assert table["source_id"][3] == 2**62
    overflowed = TAPResults(read_votable(write(fmt, overflow=True)))
    assert overflowed.query_status == "OVERFLOW"
    assert len(overflowed) == len(ROWS)
    with pytest.warns(DALOverflowWarning, match="truncated"):  # as TAPQuery.execute checks it
        overflowed.check_overflow_warning(client_set_maxrec=None)


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_empty_result_votable(fmt):
    from pyvo.dal import TAPResults

    votable = read_votable(write(fmt, rows=[], chunk_sizes=()))
    table = votable.get_first_table().to_table()
    assert len(table) == 0 and table.colnames == [f.name for f in FIELDS]
    assert len(TAPResults(votable)) == 0


def test_error_document_is_read_by_pyvo_as_a_query_error():
    from pyvo.dal import DALResults
    from pyvo.dal.exceptions import DALQueryError

    message = 'ADQL error at line 1, column 8: unknown column "rra" <did you mean ra?> & fix it'
    document = service_error_document(message)
    votable = read_votable(document)
    assert statuses(votable) == ["ERROR"]
    with pytest.raises(DALQueryError) as err:
        DALResults(votable)
    assert err.value.reason == message


@pytest.mark.parametrize(
    ("pg_type", "datatype", "arraysize", "xtype"),
    [
        ("double precision[]", "double", "*", None),
        ("float8[]", "double", "*", None),
        ("BIGINT", "long", None, None),
        ("SMALLINT", "short", None, None),
        ("REAL", "float", None, None),
        ("numeric", "double", None, None),
        ("timestamp with time zone", "char", "*", "timestamp"),
        ("date", "char", "*", "timestamp"),
        ("VARCHAR", "unicodeChar", "*", None),
        ("boolean", "boolean", None, None),
        ("point", "double", "2", "point"),
        ("circle", "double", "3", "circle"),
        ("polygon", "double", "*", "polygon"),
        ("interval", "unicodeChar", "*", None),
    ],
)
def test_type_spellings(pg_type, datatype, arraysize, xtype):
    from skyledger.api.service.columns import encoding

    enc = encoding(Field("x", pg_type))
    assert (enc.datatype, enc.arraysize, enc.xtype) == (datatype, arraysize, xtype)


def test_postgresql_geometry_text_and_other_values():
    """PostgreSQL's own geometric types arrive as text; numeric as Decimal; a date alone."""
    from datetime import date
    from decimal import Decimal

    fields = [Field("p", "point"), Field("c", "circle"), Field("g", "polygon"), Field("n", "numeric"),
              Field("d", "date"), Field("i", "interval")]  # fmt: skip
    rows = [("(1.5,-2)", "<(10,20),0.5>", "((0,0),(1,0),(1,1))", Decimal("1.25"), date(2024, 2, 29),
             timedelta(hours=1))]  # fmt: skip
    for fmt in ("votable", "votable/td"):
        data = b"".join(stream_result(resolve_format(fmt), fields, [rows], overflow=False, infos={}))
        t = read_votable(data).get_first_table().to_table()
        assert tuple(t["p"][0]) == (1.5, -2.0) and tuple(t["c"][0]) == (10.0, 20.0, 0.5)
        assert float_list(t["g"][0]) == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
        assert t["n"][0] == 1.25 and t["d"][0] == "2024-02-29" and t["i"][0] == "1:00:00"


@pytest.mark.parametrize("fmt", [f.name for f in FORMATS])
def test_a_row_without_one_value_per_field_is_an_error(fmt):
    short = [ROWS[0], ROWS[0][:-1]]
    with pytest.raises(ValueError, match="values for 13 fields"):
        b"".join(stream_result(resolve_format(fmt), FIELDS, [short], overflow=False, infos={}))


# -- CSV, TSV ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "delimiter"), [("csv", ","), ("tsv", "\t")])
def test_delimited_round_trip(fmt, delimiter):
    rows = list(csv.reader(io.StringIO(write(fmt).decode("utf-8")), delimiter=delimiter))
    assert rows[0] == [f.name for f in FIELDS]
    body = rows[1:]
    assert len(body) == len(ROWS)
    assert body[1] == [""] * len(FIELDS)  # NULL: empty
    assert body[0][:8] == ["1", "150.25", "0.5", "4000", "3", "true", "plain", ISO[0]]
    assert body[2][1] == "NaN" and body[2][6] == ROWS[2][6]
    assert body[4][6] == ROWS[4][6]  # quotes, delimiters and newlines quoted
    assert body[3][0] == str(2**62)
    assert body[0][8] == "3600.0 3601.5" and body[2][8] == "1.0 NaN 3.0" and body[3][8] == ""
    assert body[2][9] == "5 null 7"
    assert body[2][10] == "10.5 -20.25"


def test_csv_read_by_astropy():
    table = astropy_ascii.read(write("csv").decode("utf-8"), format="csv")
    assert table.colnames == [f.name for f in FIELDS]
    assert table["source_id"].dtype.kind == "i" and table["source_id"][3] == 2**62
    assert table["source_id"].mask.tolist() == [False, True, False, False, False]
    assert table["ra"][0] == 150.25 and math.isnan(table["ra"][2])
    assert table["name"][2] == ROWS[2][6]


def test_csv_empty_result_has_the_header():
    assert write("csv", rows=[], chunk_sizes=()).decode() == ",".join(f.name for f in FIELDS) + "\r\n"


# -- JSON --------------------------------------------------------------------------------------------


def test_json_round_trip():
    document = json.loads(write("json", overflow=True))
    assert [m["name"] for m in document["metadata"]] == [f.name for f in FIELDS]
    ra = document["metadata"][1]
    assert (ra["datatype"], ra["unit"], ra["ucd"]) == (
        "double",
        "deg",
        "pos.eq.ra;meta.main",
    )
    assert document["metadata"][10]["xtype"] == "point"
    data = document["data"]
    assert len(data) == len(ROWS)
    assert data[1] == [None] * len(FIELDS)
    assert data[0][:8] == [1, 150.25, 0.5, 4000, 3, True, "plain", ISO[0]]
    assert data[2][1] is None  # NaN: JSON has none
    assert data[2][6] == ROWS[2][6]
    assert data[2][8] == [1.0, None, 3.0] and data[2][9] == [5, None, 7]
    assert data[2][10] == [10.5, -20.25] and data[4][8] == [None, None]
    assert data[3][0] == 2**62
    assert document["query_status"] == "OVERFLOW" and document["infos"] == INFOS
    assert json.loads(write("json"))["query_status"] == "OK"


def test_json_empty_result():
    document = json.loads(write("json", rows=[], chunk_sizes=()))
    assert document["data"] == [] and len(document["metadata"]) == len(FIELDS)


# -- FITS --------------------------------------------------------------------------------------------


def test_fits_round_trip():
    data = write("fits", chunk_sizes=(1, 0, 2))
    assert len(data) % 2880 == 0
    with fits.open(io.BytesIO(data)) as hdus:
        hdus.verify("exception")
        header = hdus[1].header
        assert header["NAXIS2"] == len(ROWS) and header["EXTNAME"] == "RESULTS"
        names = [header[f"TTYPE{i}"] for i in range(1, len(FIELDS) + 1)]
        assert names == [f.name for f in FIELDS]
        assert header["TUNIT2"] == "deg" and header["TUCD2"] == "pos.eq.ra;meta.main"
        assert header["TCOMM2"] == "Right ascension & <ICRS>"
        assert header["TUNIT9"] == "Angstrom"
        assert hdus[0].header["QSTATUS"] == "OK"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # units outside the FITS standard, undefined logicals
        t = Table.read(io.BytesIO(data), hdu=1)
    assert str(t["ra"].unit) == "deg" and t["wave"].unit is not None
    assert t["source_id"].mask.tolist() == [False, True, False, False, False]
    assert t["source_id"][3] == 2**62 and t["flags"][3] == 2**15 - 1 and t["n_pix"][3] == -(2**31) + 1
    assert t["ra"][0] == 150.25 and math.isnan(t["ra"][1]) and math.isnan(t["ra"][2])
    assert list(t["name"].filled("")) == ["plain", "", ROWS[2][6], "", ROWS[4][6]]
    assert [v or None for v in t["observed"].filled("")] == ISO
    # Variable-length arrays in the heap, across chunks.
    assert same_floats(list(t["wave"][0]), [3600.0, 3601.5])
    assert same_floats(list(t["wave"][2]), [1.0, math.nan, 3.0])
    assert list(t["wave"][4]) == [math.inf, -math.inf] and len(t["wave"][1]) == 0
    assert list(t["mask"][4]) == [2**31 - 1] and list(t["mask"][0]) == [0, 1]
    assert list(t["outline"][4]) == list(ROWS[4][12])
    assert tuple(t["pos"][2]) == (10.5, -20.25) and np.isnan(t["pos"].filled(np.nan)[1]).all()
    # Logicals keep NULL as undefined (astropy shows it when asked for the bytes).
    with fits.open(io.BytesIO(data), logical_as_bytes=True) as hdus:
        assert list(hdus[1].data["good"]) == [
            b"T",
            b"",
            b"F",
            b"T",
            b"F",
        ]  # b"\x00": numpy strips it


def test_fits_overflow_infos_and_empty_result():
    with fits.open(io.BytesIO(write("fits", overflow=True))) as hdus:
        assert hdus[0].header["QSTATUS"] == "OVERFLOW"
        assert any("r-123" in str(c) for c in hdus[0].header["COMMENT"])
    with fits.open(io.BytesIO(write("fits", rows=[], chunk_sizes=()))) as hdus:
        assert hdus[1].header["NAXIS2"] == 0 and len(hdus[1].data) == 0


# -- memory ------------------------------------------------------------------------------------------

WIDE = [
    Field("source_id", "int8"), Field("ra", "float8", "deg"), Field("z", "float4"), Field("good", "bool"),
    Field("name", "text"), Field("observed", "timestamptz"), Field("wave", "_float4"),
]  # fmt: skip


def peak_bytes(fmt: str, n_rows: int, chunk: int = 2000) -> tuple[int, int]:
    """Peak traced memory while writing ``n_rows`` generated rows (never all in memory), and the output size."""

    def chunks():
        for start in range(0, n_rows, chunk):
            yield [
                (i, i * 1e-3, 0.5, i % 2 == 0, f"source-{i}", T0, [1.0, 2.0, 3.0]) if i % 11 else (i,) + (None,) * 6
                for i in range(start, min(start + chunk, n_rows))
            ]

    size = 0
    tracemalloc.start()
    try:
        for piece in stream_result(resolve_format(fmt), WIDE, chunks(), overflow=False, infos={}):
            size += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, size


@pytest.mark.parametrize(("fmt", "small", "large"), [
    ("votable", 50_000, 300_000),
    ("votable/td", 10_000, 60_000),
    ("csv", 10_000, 60_000),
    ("json", 10_000, 60_000),
    ("fits", 10_000, 60_000),
])  # fmt: skip
def test_memory_does_not_grow_with_the_row_count(fmt, small, large):
    small_peak, small_size = peak_bytes(fmt, small)
    large_peak, large_size = peak_bytes(fmt, large)
    assert large_size > 5 * small_size  # the output did grow six-fold...
    assert large_peak < 1.3 * small_peak + 1_000_000  # ...the memory did not


# -- a statement failing part-way ------------------------------------------------------------------

FAILURE = 'division by zero <in row 4> & "more"'


def failing_chunks(n_ok: int = 3):
    """The first ``n_ok`` rows in chunks of one row, then the QueryError the read path raises
    when the statement fails on a later row (or its timeout fires) after rows were sent."""
    for row in ROWS[:n_ok]:
        yield [row]
    raise QueryError(FAILURE)


def write_failing(fmt: str, *, overflow=False) -> bytes:
    return b"".join(stream_result(resolve_format(fmt), FIELDS, failing_chunks(), overflow=overflow, infos=INFOS))


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_votable_failing_part_way_ends_with_an_error_info(fmt):
    data = write_failing(fmt, overflow=True)  # an error outranks an overflow
    votable = read_votable(data)  # well-formed: the data, the TABLE and the document are closed
    assert statuses(votable) == ["OK", "ERROR"]
    assert data.index(b'value="ERROR"') > data.index(b"</TABLE>")
    assert votable.resources[0].infos[-1].content == FAILURE
    table = votable.get_first_table().to_table()
    assert table["source_id"][0] == ROWS[0][0] and len(table) == 3  # the rows before the failure, whole


@pytest.mark.parametrize("fmt", ["votable", "votable/td"])
def test_pyvo_raises_the_error_of_a_votable_failing_part_way(fmt):
    from pyvo.dal import TAPResults
    from pyvo.dal.exceptions import DALQueryError

    # pyvo takes the last QUERY_STATUS of the results RESOURCE: the ERROR after the TABLE.
    with pytest.raises(DALQueryError) as err:
        TAPResults(read_votable(write_failing(fmt)))
    assert err.value.reason == FAILURE


def test_json_failing_part_way_says_error_with_the_message():
    doc = json.loads(write_failing("json", overflow=True))  # still valid JSON
    assert doc["query_status"] == "ERROR" and doc["message"] == FAILURE
    assert [row[0] for row in doc["data"]] == [ROWS[0][0], None, 3]
    assert doc["infos"] == INFOS
    assert "message" not in json.loads(write("json"))


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_delimited_failing_part_way_raises_after_the_rows_sent(fmt):
    """CSV and TSV have no place for a status: the writer raises, after the header and the
    rows before the failure, and the HTTP layer aborts the response."""
    out = stream_result(resolve_format(fmt), FIELDS, failing_chunks(), overflow=False, infos=INFOS)
    sent = [next(out) for _ in range(4)]  # the header, then one chunk per row
    assert sent[0].startswith(b"source_id")
    with pytest.raises(QueryError, match="division by zero"):
        next(out)


def test_fits_failing_part_way_raises_before_any_byte():
    out = stream_result(resolve_format("fits"), FIELDS, failing_chunks(), overflow=False, infos=INFOS)
    with pytest.raises(QueryError, match="division by zero"):
        next(out)  # the rows are spooled before the header: nothing was written


# -- schema ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["votable", "votable/td", "error", "votable failing", "votable/td failing"])
def test_votable_is_valid_against_the_votable_1_4_schema(fmt):
    from importlib.resources import files

    from lxml import etree

    xsd = files("astropy.io.votable") / "data" / "VOTable.v1.4.xsd"
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    if fmt == "error":
        data = service_error_document("no such table")
    elif fmt.endswith(" failing"):
        data = write_failing(fmt.split()[0])
    else:
        data = write(fmt, overflow=True)
    document = etree.parse(io.BytesIO(data))
    assert schema.validate(document), schema.error_log
