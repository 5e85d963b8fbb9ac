"""The README's SQL examples run against the real schema as `skyledger sql` runs them: as a reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skyledger.schema.readpath import run_reader_query

README = Path(__file__).resolve().parents[1] / "README.md"


def sql_examples() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", README.read_text(), flags=re.S)
    statements = []
    for block in blocks:
        text = "\n".join(line for line in block.splitlines() if not line.strip().startswith("--"))
        statements += [s.strip() for s in text.split(";") if s.strip()]
    return statements


def test_readme_has_sql_examples():
    assert len(sql_examples()) >= 6


@pytest.mark.parametrize("statement", sql_examples())
def test_readme_sql_runs(settings, statement):
    result = run_reader_query(settings, statement)
    assert result.columns  # every example is a query that returns columns
