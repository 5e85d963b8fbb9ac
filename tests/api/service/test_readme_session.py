"""The README's pyvo session runs, as written, against the real service."""

from __future__ import annotations

import re
from pathlib import Path

import pyvo

README = Path(__file__).resolve().parents[3] / "README.md"


def _session() -> str:
    text = README.read_text()
    section = text[text.index("## Querying over HTTP"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_pyvo_session_runs_against_the_service(tap_server):
    code = _session().replace("http://127.0.0.1:8000", tap_server.url)
    assert tap_server.url in code  # the session names the service it talks to
    names: dict = {}
    exec(compile(code, str(README), "exec"), names)  # noqa: S102 - the README's own example
    assert "catalog.spectra" in names["tap"].tables.keys()
    assert isinstance(names["job"], pyvo.dal.TAPResults) and len(names["job"]) > 0
    assert set(names["hii"].colnames) == {"spectrum_id", "survey", "ra", "dec", "class", "p_hii"}
    assert names["pixels"].fieldnames == ("wave", "flux", "ivar") or list(names["pixels"].fieldnames) == ["wave", "flux", "ivar"]
