"""The columns ingest writes by binary COPY, in the order its rows are built.

The row builders (:mod:`skyledger.ingest.table_rows`, :mod:`skyledger.ingest.catalogue_lines`)
make tuples in this order; the types come from the models
(:func:`skyledger.schema.results.copy_columns`), so a column can be neither mistyped nor
missing from its table. The ingest benchmark's ``\\copy`` ceiling copies exactly these
columns.
"""

from __future__ import annotations

from skyledger.schema.models import Source, Spectrum
from skyledger.schema.result_models import LineMeasurement
from skyledger.schema.results import copy_columns

__all__ = ["LINE_COLUMNS", "SOURCE_COLUMNS", "SPECTRUM_COLUMNS"]

SOURCE_COLUMNS = copy_columns(
    Source, ("id", "survey_id", "ingest_file_id", "object_id", "parent_id", "ra", "dec", "z", "flags", "meta")
)
SPECTRUM_COLUMNS = copy_columns(
    Spectrum,
    ("source_id", "survey_id", "ingest_file_id", "object_id", "ra", "dec", "z", "n_pix", "wave_grid_id",
     "flux", "ivar", "mask", "resolution", "flux_unit", "flags", "meta"),
)
#: Catalogue lines: what a line catalogue gives (no redshift, equivalent width or S/N).
LINE_COLUMNS = copy_columns(
    LineMeasurement,
    ("run_id", "spectrum_id", "line", "velocity", "velocity_err", "sigma", "sigma_err", "flux", "flux_err", "flags"),
)
