"""The survey configuration file (``skyledger.toml``).

Example::

    # Every survey location, and every file found in it, must lie under this root
    # (relative paths resolve against this file's directory; default: that directory).
    root = "/data/surveys"

    [[survey]]
    name = "sdss-dr18"          # unique; becomes survey.name in the database
    reader = "sdss"             # one of skyledger.ingest.readers.READERS
    location = "sdss"           # directory, relative to root
    glob = "**/spec-*.fits"     # default "*"
    options = { }               # passed to the reader

    [[survey]]
    name = "phangs-muse-hii"
    reader = "line_catalog"
    location = "phangs"
    glob = "*.fits"
    options = { dust_corrected = true, columns = { HA6562_FLUX = "HA6563_FLUX" } }
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyledger.ingest.readers import READERS
from skyledger.schema.errors import ConfigError

__all__ = ["SurveySpec", "IngestConfig", "load_config"]


@dataclass(frozen=True)
class SurveySpec:
    name: str
    reader: str | None = None  # None: detect each file's format
    location: Path | None = None
    glob: str = "*"
    options: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[Path]:
        """Files of the survey, sorted; directories and hidden files are skipped."""
        if self.location is None:
            return []
        if not self.location.is_dir():
            raise ConfigError(f"survey {self.name!r}: location {self.location} is not a directory")
        return sorted(p for p in self.location.glob(self.glob) if p.is_file() and not p.name.startswith("."))


@dataclass(frozen=True)
class IngestConfig:
    path: Path | None
    root: Path | None
    surveys: tuple[SurveySpec, ...]

    def survey(self, name: str) -> SurveySpec:
        for spec in self.surveys:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.surveys) or "none"
        raise ConfigError(f"survey {name!r} is not in {self.path}; configured surveys: {known}")


def load_config(path: Path) -> IngestConfig:
    """Parse and check a survey configuration file."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"no survey configuration at {path}; create it or set SKYLEDGER_CONFIG") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    base = path.resolve().parent
    unknown = set(raw) - {"root", "survey"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected 'root' and [[survey]]")
    root = (base / raw["root"]).resolve() if "root" in raw else base
    surveys = []
    seen: set[str] = set()
    for i, entry in enumerate(raw.get("survey", [])):
        where = f"{path}: survey #{i + 1}"
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{where}: every [[survey]] needs a name")
        extra = set(entry) - {"name", "reader", "location", "glob", "options"}
        if extra:
            raise ConfigError(f"{where} ({entry['name']}): unknown key(s) {sorted(extra)}")
        name = str(entry["name"])
        if name in seen:
            raise ConfigError(f"{where}: survey name {name!r} appears twice")
        seen.add(name)
        location = None
        if "location" in entry:
            location = (root / entry["location"]).resolve()
            if not location.is_relative_to(root):
                raise ConfigError(f"{where} ({name}): location {location} is outside the configured root {root}")
        reader = entry.get("reader")
        if reader is not None and reader not in READERS:
            raise ConfigError(f"{where} ({name}): unknown reader {reader!r}; known readers: {', '.join(READERS)}")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"{where} ({name}): options must be a table")
        surveys.append(
            SurveySpec(name=name, reader=reader, location=location, glob=entry.get("glob", "*"), options=options)
        )
    return IngestConfig(path=path, root=root, surveys=tuple(surveys))
