"""schema.readpath.stream_statement: the read path's protections, streaming."""

from __future__ import annotations

import pytest
from skyledger.schema.errors import QueryError, ReadOnlyViolation
from skyledger.schema.readpath import Limits, connect_reader, stream_statement


@pytest.fixture
def reader(settings):
    limits = Limits(max_rows=5, statement_timeout_s=30)
    with connect_reader(settings, limits) as conn:
        yield conn, limits


def test_rows_come_in_chunks_up_to_the_cap_with_their_types(reader):
    conn, limits = reader
    sql = "SELECT g AS n, g::float8 * 2 AS x, ARRAY[g::float4] AS a, 'x'::text AS t FROM generate_series(1, 12) AS g"
    with stream_statement(conn, sql, limits, chunk_rows=2) as stream:
        assert stream.columns == ["n", "x", "a", "t"]
        assert stream.types == ["int4", "float8", "_float4", "text"]
        chunks = list(stream.chunks)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert chunks[0][0] == (1, 2.0, [1.0], "x")
    assert stream.rows == 5 and stream.truncated


def test_an_exact_fit_is_not_truncated_and_no_rows_still_describe_the_columns(reader):
    conn, limits = reader
    with stream_statement(conn, "SELECT g FROM generate_series(1, 5) AS g", limits) as stream:
        assert sum(map(len, stream.chunks)) == 5
    assert not stream.truncated
    with stream_statement(conn, "SELECT 1 AS a, now() AS b WHERE false", limits) as stream:
        assert list(stream.chunks) == [] and stream.columns == ["a", "b"] and stream.types == ["int4", "timestamptz"]


@pytest.mark.parametrize("statement, error, fragment", [
    ("SELECT 1; SELECT 2", QueryError, "more than one SQL statement"),
    # Refused as two statements, never run one after the other (the second would meet
    # only the read-only transaction and the reader's privileges).
    ("COMMIT; DROP TABLE survey", QueryError, "more than one SQL statement"),
    ("SET default_transaction_read_only = off; CREATE TABLE catalog.x (a int)", QueryError, "more than one SQL statement"),
    ("SELEC 1", QueryError, "syntax error"),
    ("CREATE TABLE catalog.x (a int)", QueryError, ""),
    ("SELECT 1 FROM pg_catalog.pg_authid", QueryError, "catalogue reader"),
    ("SELECT 1/0", QueryError, "division by zero"),
    ("SELECT 'a\x00'", QueryError, "NUL"),
])
def test_refusals_are_query_errors_and_leave_the_connection_usable(reader, statement, error, fragment):
    conn, limits = reader
    with pytest.raises(error) as err, stream_statement(conn, statement, limits) as stream:
        list(stream.chunks)
    assert fragment in str(err.value)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    conn.rollback()


def test_writes_are_refused_read_only(reader):
    conn, limits = reader
    with pytest.raises(ReadOnlyViolation), stream_statement(conn, "DELETE FROM tap_schema.columns", limits) as stream:
        list(stream.chunks)


def test_leaving_early_cancels_the_rest_and_the_connection_goes_on(reader):
    conn, limits = reader
    # A billion rows made as they are read (a single generate_series would be materialised first).
    huge = "SELECT a FROM generate_series(1, 1000) AS a, generate_series(1, 1000) AS b, generate_series(1, 1000) AS c"
    with stream_statement(conn, huge, limits, chunk_rows=2) as stream:
        assert len(next(stream.chunks)) == 2
    assert conn.execute("SELECT 2").fetchone() == (2,)
    conn.rollback()


@pytest.mark.parametrize("statement, timeout_s, fragment", [
    # Row 8 divides by zero: rows 1 to 7 leave the server first.
    ("SELECT 1 / (g - 8) AS v FROM generate_series(1, 10) AS g", 30, "division by zero"),
    # Each row sleeps a tenth of a second: the timeout fires with rows sent, the rest not made.
    ("SELECT g, pg_sleep(0.1)::text AS s FROM generate_series(1, 1000) AS g", 2, "cancelled"),
])
def test_failing_part_way_raises_after_rows_and_is_kept_on_the_stream(settings, statement, timeout_s, fragment):
    """A statement failing after rows came (a later row's error, the statement timeout): the
    chunks raise QueryError, and ``stream.error`` keeps it for whoever sees only the rows."""
    limits = Limits(max_rows=10_000, statement_timeout_s=timeout_s)
    with connect_reader(settings, limits) as conn:
        received = []
        with pytest.raises(QueryError, match=fragment), stream_statement(conn, statement, limits, chunk_rows=1) as stream:
            for chunk in stream.chunks:
                received += chunk
        assert received and stream.error is not None and fragment in str(stream.error)
        assert conn.execute("SELECT 1").fetchone() == (1,)
