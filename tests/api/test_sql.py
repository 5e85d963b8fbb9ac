"""`run_query`, the owner's fixed queries (`runs`, `demo`): read-only, clear errors, three output formats.

People's SQL takes the read path instead: tests/api/test_read_path_attacks.py."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import text

from skyledger.api.sql import QueryError, format_result, run_query
from skyledger.schema.errors import ReadOnlyViolation


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE survey",
        "INSERT INTO survey (name, reader) VALUES ('x', 'sdss')",
        "CREATE TABLE sneaky (id int)",
        "UPDATE collection SET name = 'old' WHERE name = 'current'",
    ],
)
def test_writes_are_refused_and_nothing_changes(session, statement):
    with pytest.raises(ReadOnlyViolation, match="read-only"):
        run_query(session, statement)
    session.rollback()
    assert session.execute(text("SELECT to_regclass('public.survey') IS NOT NULL")).scalar_one()
    assert session.execute(text("SELECT count(*) FROM collection WHERE name = 'current'")).scalar_one() == 1


def test_select_returns_columns_and_rows(session):
    result = run_query(session, "SELECT 1 AS one, NULL::float8 AS missing, 'a,b' AS text")
    assert result.columns == ["one", "missing", "text"]
    assert result.rows == [(1, None, "a,b")]


def test_bad_sql_names_the_problem(session):
    with pytest.raises(QueryError, match='relation "no_such_table" does not exist'):
        run_query(session, "SELECT * FROM no_such_table")


def test_row_cap_marks_truncation(session):
    result = run_query(session, "SELECT generate_series(1, 10) AS n", max_rows=3)
    assert [r[0] for r in result.rows] == [1, 2, 3]
    assert result.truncated


def test_timeout_cancels_long_queries(session):
    with pytest.raises(QueryError, match="statement timeout"):
        run_query(session, "SELECT pg_sleep(2)", timeout_s=0.2)


def test_formats_round_trip(session):
    result = run_query(session, "SELECT 1.5::float8 AS x, NULL::int AS y, 'q\"uote' AS s")
    rows = list(csv.reader(io.StringIO(format_result(result, "csv"))))
    assert rows == [["x", "y", "s"], ["1.5", "", 'q"uote']]
    assert json.loads(format_result(result, "json")) == [{"x": 1.5, "y": None, "s": 'q"uote'}]
    table = format_result(result, "table")
    assert "NULL" in table.splitlines()[2] and table.endswith("(1 row)")
