"""A task's pending inputs are only those that carry what it needs: an H-alpha velocity
map (one line per pixel) makes no `abundances` or `nebula_class` rows, while spectra
with real line measurements get exactly the results they got before."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sqlalchemy import text

from skyledger.compute.tasks.abundances import AbundancesParams, AbundancesTask, batch_seed
from skyledger.schema.linelist import LINE_IDS
from skyledger.compute.tasks.nebula import NebulaDiagnosticParams, NebulaDiagnosticTask, NebulaNNParams, NebulaNNTask
from skyledger.compute.classification.diagnostic import CLASSES, DIAGNOSTIC_LINES, classify_diagnostic
from skyledger.compute.classification.nn import classify_nn
from skyledger.compute.abundances import derive_abundances
from skyledger.compute.framework.runner import process
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.testing.disk_model import DiskParams
from skyledger.testing.velocity_maps import write_velocity_map
from tests.compute.test_abundances_task import OBJECTS, direct_call, ingest, write_catalog

NAN = math.nan
UNKNOWN = CLASSES.index("UNKNOWN")
PARAMS = AbundancesParams(n_draws=20)


# ------------------------------------------------------------ what the pending queries assume


@pytest.mark.parametrize("dust_corrected", [False, True])
def test_one_line_alone_gives_no_abundance_at_all(dust_corrected):
    """Every quantity is a ratio of two lines: a spectrum with one line only ever gets an
    all-NULL row, so `abundances` may leave it out of its inputs."""
    n = len(LINE_IDS)
    fluxes = torch.full((n, n), NAN, dtype=torch.float64)
    errors = fluxes.clone()
    for i in range(n):
        fluxes[i, i], errors[i, i] = 100.0, 3.0
    ids = list(range(1, n + 1))
    gen = torch.Generator().manual_seed(batch_seed(PARAMS.seed, ids))
    result = derive_abundances(fluxes, errors, torch.full((n,), dust_corrected), PARAMS, "cpu", gen, LINE_IDS)
    rows, _ = AbundancesTask.rows(ids, result, PARAMS)
    assert len(rows) == n  # one fallback row each, and nothing in it
    assert all(v is None for row in rows for v in row[2:-1]), [r for r in rows if any(v is not None for v in r[2:-1])]


def nebula_batch(objects: list[dict[str, float]], ew: list[float]):
    fluxes = torch.full((len(objects), len(DIAGNOSTIC_LINES)), NAN, dtype=torch.float64)
    for i, obj in enumerate(objects):
        for line, v in obj.items():
            fluxes[i, DIAGNOSTIC_LINES.index(line)] = v
    return fluxes, 0.05 * fluxes, torch.tensor(ew, dtype=torch.float64)


def classes(objects: list[dict[str, float]], ew: list[float]) -> tuple[list[int], list[int]]:
    """Classes of the diagnostic and the nn method."""
    f, e, w = nebula_batch(objects, ew)
    gen = torch.Generator().manual_seed(1)
    diag = classify_diagnostic(f, e, w, 0.1 * w, NebulaDiagnosticParams(n_draws=20), gen)
    nn = classify_nn(f, e, w, NebulaNNParams().min_snr, "cpu")
    return diag.classes.tolist(), nn.classes.tolist()


def test_no_class_without_halpha_and_a_ratio_to_it():
    """The nebula pending query keeps only spectra with Halpha and a second diagnostic line
    (or, for the diagnostic method, Halpha's EW): nothing else can be classified."""
    full = {"HB4861": 100.0, "OIII5007": 300.0, "OI6300": 5.0, "HA6563": 290.0, "NII6584": 90.0,
            "SII6716": 30.0, "SII6731": 22.0}  # fmt: skip
    singles = [{line: full[line]} for line in DIAGNOSTIC_LINES]
    no_halpha = {k: v for k, v in full.items() if k != "HA6563"}
    diag, nn = classes([*singles, no_halpha, no_halpha], [NAN] * len(singles) + [NAN, 1.0])
    assert diag == nn == [UNKNOWN] * (len(singles) + 2)
    # Halpha with an EW: the DIG rule decides for the diagnostic method, the network cannot.
    diag, nn = classes([{"HA6563": 290.0}], [1.0])
    assert diag != [UNKNOWN] and nn == [UNKNOWN]
    # The pending queries' premise holds for real lines: these are classified.
    diag, nn = classes([full], [NAN])
    assert diag != [UNKNOWN] and nn != [UNKNOWN]


# ------------------------------------------------------------ on a real database


def table_rows(db, table: str) -> dict[int, int]:
    """spectrum id -> rows of ``table``."""
    with db.engine.connect() as conn:
        return dict(conn.execute(text(f"SELECT spectrum_id, count(*) FROM {table} GROUP BY 1")).tuples().all())


def test_velocity_map_pixels_are_not_inputs_of_abundances_or_nebula_class(fresh_database, tmp_path):
    db = fresh_database
    # The map first, so that on ids alone its pixels would share batches with the catalogue.
    path, truth = write_velocity_map(tmp_path / "map.fits", DiskParams(), n_x=20, n_y=20, seed=3)
    (outcome,) = ingest_paths(db, [path], survey=SurveySpec(name="maps", options={})).outcomes
    assert outcome.status == "loaded" and outcome.n_spectra == int(truth.valid.sum()) > 100
    with db.engine.connect() as conn:
        with_flux = conn.execute(text("SELECT count(*) FROM line_measurement WHERE flux IS NOT NULL")).scalar_one()
    assert with_flux == outcome.n_spectra  # every pixel carries an Halpha flux, and nothing else
    ingest(db, write_catalog(tmp_path / "a.ecsv", "a"), survey="hii", dust_corrected=False)
    with db.engine.connect() as conn:
        catalogue = conn.execute(
            text("SELECT id, object_id FROM spectrum WHERE object_id LIKE 'a-%' ORDER BY id")
        ).all()

    abundances = process(db, AbundancesTask(), PARAMS)
    diagnostic = process(db, NebulaDiagnosticTask(), NebulaDiagnosticParams(n_draws=20))
    nn = process(db, NebulaNNTask(), NebulaNNParams())
    assert abundances.n_inputs == diagnostic.n_inputs == nn.n_inputs == len(catalogue) == 4
    ids = [sid for sid, _ in catalogue]
    assert set(table_rows(db, "abundance")) == set(ids)  # no row for any pixel
    assert table_rows(db, "nebula_class") == {sid: 2 for sid in ids}  # one per method, catalogue only
    # Nothing left pending: the pixels are not inputs, not failures waiting for a retry.
    assert process(db, AbundancesTask(), PARAMS).status == "nothing to do"

    # The catalogue's rows are exactly the numerics on its own batch (same ids, same seed):
    # the map's pixels no longer share (and re-seed) its batch.
    ref = direct_call(ids, [OBJECTS[oid.split("-", 1)[1]] for _, oid in catalogue], [False] * 4, PARAMS)
    with db.engine.connect() as conn:
        got = {(r.spectrum_id, r.method): r for r in conn.execute(text("SELECT * FROM abundance"))}
    for k, sid in enumerate(ids):
        for method, res in ref.methods.items():
            med = float(res.values["oh"].median[k])
            if (sid, method) in got and not np.isnan(med):
                assert got[sid, method].oh == pytest.approx(med, rel=1e-12), (sid, method)
                assert got[sid, method].flags == int(res.flags[k])
