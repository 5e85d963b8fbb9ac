"""Which ADQL parser handles what: sqlglot (a generic dialect plus TOP) against
queryparser-python3's ADQLQueryTranslator, on tests/api/service/adql_corpus.py, and the
final translator (skyledger.api.service.adql.translate) beside them.

    .venv/bin/python scripts/compare_adql_parsers.py

Prints a Markdown table (docs/adql.md). A valid query scores "ok" when the parser accepts
it (queryparser: when it also produces PostgreSQL; "pgsphere" when that PostgreSQL needs
the pgSphere extension, which skyledger's database does not have); an invalid one scores
"rejected" when the parser refuses it, "ACCEPTED" when it lets it through.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Tokenizer, TokenType

from tests.api.service.adql_corpus import INVALID, VALID


class PlainAdql(Dialect):
    """sqlglot's generic dialect with ADQL's TOP: the parser as it comes, before any of
    skyledger's rewriting."""

    class Tokenizer(Tokenizer):
        KEYWORDS = {**Tokenizer.KEYWORDS, "TOP": TokenType.TOP}  # noqa: RUF012 (sqlglot's API)


def run_sqlglot(adql: str) -> str:
    try:
        parsed = sqlglot.parse(adql, read=PlainAdql)
    except sqlglot.errors.SqlglotError as err:
        return "error: " + str(err).splitlines()[0][:60]
    statements = [p for p in parsed if p is not None]
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        return f"not one query ({len(statements)} statements, {type(statements[0]).__name__})"
    return "ok"


def run_queryparser(adql: str) -> str:
    from queryparser.adql import ADQLQueryTranslator

    try:
        sql = ADQLQueryTranslator(adql).to_postgresql()
    except Exception as err:  # noqa: BLE001 (queryparser raises several unrelated types)
        return f"error: {type(err).__name__} {str(err)[:50]}"
    if any(word in sql.lower() for word in ("spoint", "scircle", "spoly", "sbox", "<@", "&&")):
        return "pgsphere"
    return "ok"


def run_queryparser_renamed(adql: str) -> str:
    # CATALOG is an SQL reserved word in queryparser's grammar: the same query on a schema
    # named "cat" shows what the grammar handles apart from that one word.
    return run_queryparser(re.sub(r"\bcatalog\.", "cat.", adql, flags=re.IGNORECASE))


def run_translate(adql: str) -> str:
    try:
        from skyledger.api.service.adql import AdqlError, translate
    except ImportError:
        return "n/a"
    try:
        translate(adql)
    except AdqlError as err:
        return "error: " + str(err)[:60]
    return "ok"


def main() -> None:
    rows = []
    runners = (
        ("sqlglot", run_sqlglot),
        ("queryparser", run_queryparser),
        ("queryparser_cat", run_queryparser_renamed),
        ("translate", run_translate),
    )
    totals = {key: [0, 0.0] for key, _ in runners}
    for valid, corpus in ((True, VALID), (False, INVALID)):
        for name, adql in corpus:
            cells = []
            for key, fn in runners:
                start = time.perf_counter()
                result = fn(adql)
                totals[key][1] += time.perf_counter() - start
                good = result == "ok" if valid else result not in ("ok", "n/a")
                totals[key][0] += good
                cells.append(result if valid or result == "n/a" else ("rejected" if result != "ok" else "ACCEPTED"))
            rows.append((name, "valid" if valid else "invalid", *cells))
    print("| query | kind | sqlglot + TOP | queryparser → PostgreSQL | queryparser, schema renamed `cat` "
          "| skyledger translate |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    n = len(VALID) + len(INVALID)
    cells = [f"{totals[key][0]} ({totals[key][1] * 1000:.0f} ms)" for key, _ in runners]
    print(f"| **right** (of {n}) | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
