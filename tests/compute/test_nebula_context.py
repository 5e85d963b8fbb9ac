"""The rule context of the nebula classification: inference rules, and the database path
(parent, positions, option) through the real task runner; migration 0021's backfill."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from alembic import command
from astropy.table import Table
from sqlalchemy import text

from skyledger.compute.classification.context import angular_offset_arcsec, infer_context
from skyledger.compute.classification.diagnostic import DIAGNOSTIC_LINES, NebulaFlag
from skyledger.compute.framework.runner import process
from skyledger.compute.tasks.nebula import NebulaDiagnosticParams, NebulaDiagnosticTask
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.schema.database import alembic_config, upgrade

F = NebulaFlag
PARAMS = NebulaDiagnosticParams(n_draws=200)
# The textbook SNR: [S II]/Ha 0.9, [O I]/Ha 0.3, [N II]/Ha 0.8, [O III]/Hb 3 (Hb = 100, Ha = 286).
SNR_LINES = {"HB4861": 100, "OIII5007": 300, "OI6300": 85.8, "HA6563": 286, "NII6584": 228.8, "SII6716": 143, "SII6731": 114.4}
ARCSEC = 1 / 3600


# --------------------------------------------------------------------------- inference rules


def test_the_survey_option_wins():
    assert infer_context(option="nebula", has_parent=False) == ("nebula", False)
    assert infer_context(option="galaxy", has_parent=True, offset_arcsec=30.0) == ("galaxy", False)
    with pytest.raises(ValueError, match="context must be one of"):
        infer_context(option="disc", has_parent=False)


def test_a_spectrum_without_parent_is_an_integrated_galaxy():
    assert infer_context(option=None, has_parent=False) == ("galaxy", True)
    assert infer_context(option=None, has_parent=False, offset_arcsec=30.0) == ("galaxy", True)


@pytest.mark.parametrize(
    ("offset", "psf", "aperture", "expected"),
    [
        (0.0, None, None, "galaxy"),  # on the nucleus
        (0.9, None, None, "galaxy"),  # within the 1" floor when no PSF is known
        (1.1, None, None, "nebula"),
        (1.1, 2.5, None, "galaxy"),  # within the PSF FWHM: still sees nuclear light
        (2.6, 2.5, None, "nebula"),
        (2.6, math.nan, None, "nebula"),  # a NaN PSF is no PSF
        (10.0, None, 1.5, "galaxy"),  # a >= 1 kpc aperture integrates a galaxy's worth
        (10.0, None, 0.2, "nebula"),
        (None, None, None, "nebula"),  # a child without position: a region of its parent
    ],
)
def test_a_child_is_a_galaxy_when_it_sees_the_nucleus_or_is_wide(offset, psf, aperture, expected):
    got = infer_context(option=None, has_parent=True, offset_arcsec=offset, psf_fwhm_arcsec=psf, aperture_kpc=aperture)
    assert got == (expected, True)


def test_angular_offset():
    got = angular_offset_arcsec(np.array([10.0, 10.0, 0.0]), np.array([20.0, 89.9, 0.0]),
                                np.array([10.0, 190.0, np.nan]), np.array([20.0 + ARCSEC, 89.9, 0.0]))  # fmt: skip
    assert got[0] == pytest.approx(1.0, rel=1e-6)
    assert got[1] == pytest.approx(0.2 * 3600, rel=1e-6)  # across the pole
    assert math.isnan(got[2])


# --------------------------------------------------------------------------- database


def _catalog(path: Path, rows: list[tuple[str, float, float, str | None]]) -> Path:
    table = Table()
    table["id"] = [r[0] for r in rows]
    table["ra"] = [r[1] for r in rows]
    table["dec"] = [r[2] for r in rows]
    table["parent"] = [r[3] or "" for r in rows]
    for line in DIAGNOSTIC_LINES:
        table[f"{line}_FLUX"] = [SNR_LINES[line]] * len(rows)
        table[f"{line}_FLUX_ERR"] = [0.05 * SNR_LINES[line] + 1.0] * len(rows)
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


def _rows(db) -> dict[tuple[str, str], dict]:
    with db.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT sv.name AS survey, s.object_id, n.* FROM catalog.nebula_class n JOIN spectrum s ON s.id = n.spectrum_id "
            "JOIN survey sv ON sv.id = s.survey_id"
        )).mappings()  # fmt: skip
        return {(r["survey"], r["object_id"]): dict(r) for r in rows}


def test_context_from_option_and_inferred_through_the_task(fresh_database, tmp_path):
    db = fresh_database
    ra, dec = 150.0, 2.0
    # A galaxy (no parent) and two of its regions: one 0.5" from its centre (sees the
    # nucleus), one 10" away; all with the textbook SNR lines.
    inferred = _catalog(tmp_path / "regions.ecsv", [
        ("gal", ra, dec, None), ("near", ra, dec + 0.5 * ARCSEC, "gal"), ("far", ra, dec + 10 * ARCSEC, "gal"),
    ])  # fmt: skip
    # A survey that says its (parentless) rows are nebulae.
    told = _catalog(tmp_path / "nebulae.ecsv", [("lone", 200.0, -5.0, None)])
    for path, spec in ((inferred, SurveySpec(name="ifs", reader="line_catalog")),
                       (told, SurveySpec(name="snrs", reader="line_catalog", options={"context": "nebula"}))):  # fmt: skip
        outcome = ingest_paths(db, [path], survey=spec).outcomes[0]
        assert outcome.status == "loaded", outcome.reason

    run = process(db, NebulaDiagnosticTask(), PARAMS)
    assert run.status == "succeeded" and run.n_inputs == 4
    rows = _rows(db)
    got = {k: (r["context"], r["class"], bool(r["flags"] & F.CONTEXT_INFERRED)) for k, r in rows.items()}
    assert got == {
        ("ifs", "gal"): ("galaxy", "AGN", True),
        ("ifs", "near"): ("galaxy", "AGN", True),
        ("ifs", "far"): ("nebula", "SNR", True),
        ("snrs", "lone"): ("nebula", "SNR", False),
    }
    # In a galaxy the shock shows as a flag; in a nebula the AGN-like ratios do.
    assert rows["ifs", "gal"]["flags"] & F.SHOCK_LIKE and not rows["ifs", "gal"]["flags"] & F.AGN_LIKE
    assert rows["ifs", "far"]["flags"] & F.AGN_LIKE and not rows["ifs", "far"]["flags"] & F.SHOCK_LIKE
    assert rows["ifs", "gal"]["p_snr"] == 0.0 and rows["ifs", "gal"]["p_pn"] == 0.0


def test_rows_before_migration_0021_are_galaxy_and_stay(fresh_database, tmp_path):
    db = fresh_database
    path = _catalog(tmp_path / "nebulae.ecsv", [("lone", 200.0, -5.0, None)])
    spec = SurveySpec(name="snrs", reader="line_catalog", options={"context": "nebula"})
    assert ingest_paths(db, [path], survey=spec).outcomes[0].status == "loaded"

    class DiagnosticV1(NebulaDiagnosticTask):
        version = 1

    old = process(db, DiagnosticV1(), PARAMS)
    command.downgrade(alembic_config(db.engine), "0020")
    with db.engine.connect() as conn:
        assert "context" not in conn.execute(text("SELECT * FROM catalog.nebula_class")).keys()
    upgrade(db.engine)
    # The backfill says what version 1 did: the galaxy order, whatever the survey says now.
    assert _rows(db)["snrs", "lone"]["context"] == "galaxy"
    new = process(db, NebulaDiagnosticTask(), PARAMS)
    assert new.version == 2 and new.n_inputs == 1
    with db.engine.connect() as conn:
        per_run = dict(conn.execute(text("SELECT run_id, context FROM nebula_class")).all())
    assert per_run == {old.run_id: "galaxy", new.run_id: "nebula"}
    assert _rows(db)["snrs", "lone"]["class"] == "SNR"
