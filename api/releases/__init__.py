"""Catalogue releases: a collection frozen into a read-only SQL schema and FITS / ECSV / Parquet files.

Modules: ``tables`` (what a release holds), ``units`` (one unit per column: line-flux
factors), ``freeze`` (the release schema), ``digest`` (row digests of its tables),
``stream`` (rows out of PostgreSQL as Arrow batches), ``fits`` / ``ecsv`` / ``parquet``
(one writer per format), ``datamodel``, ``create`` (the whole transaction), ``verify``
(checks and listing), ``demo`` (the release the demo writes).
"""

from .demo import demo_release
from .create import ReleaseFile, ReleaseSummary, check_name, create_release
from .errors import ReleaseError
from .verify import ReleaseListing, VerifyReport, list_releases, verify_release

__all__ = [
    "ReleaseError",
    "ReleaseFile",
    "ReleaseListing",
    "ReleaseSummary",
    "VerifyReport",
    "check_name",
    "create_release",
    "demo_release",
    "list_releases",
    "verify_release",
]
