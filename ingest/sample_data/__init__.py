"""Small real survey files shipped with skyledger for the demo and the tests.

Provenance and licences are in README.md beside this module.
"""

from importlib.resources import files
from pathlib import Path

__all__ = ["sample_data_dir"]


def sample_data_dir() -> Path:
    """Directory holding the bundled real spectra."""
    return Path(str(files(__name__)))
