"""The `abundances` task end to end: a line catalogue in, catalog.abundances out (real PostgreSQL)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from astropy.table import Table
from sqlalchemy import text

from skyledger.compute.tasks.abundances import LINES_SQL, AbundancesParams, AbundancesTask, batch_seed
from skyledger.schema.linelist import LINE_IDS
from skyledger.compute.abundances import ALL_METHODS, AbundanceFlag, derive_abundances
from skyledger.compute.abundances.dust import extinction_k, intrinsic_balmer_ratios
from skyledger.compute.framework.runner import process
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from tests.conftest import cli_env

CLI = [sys.executable, "-c", "from skyledger.api.cli import main; main()"]
F = AbundanceFlag
EBV = 0.25

# A typical HII region (intensities relative to Hbeta = 100; Te ~ 1e4 K, ne ~ 100 cm^-3),
# with Halpha/Hbeta and Hgamma/Hbeta exactly case B so the Balmer decrement gives E(B-V) = EBV.
HA_HB, HG_HB = intrinsic_balmer_ratios(1.0e4, 1.0e2)
INTRINSIC = {
    "OII3726": 120.0, "OII3729": 160.0, "NEIII3869": 30.0, "HG4340": 100 * HG_HB, "OIII4363": 3.0,
    "HB4861": 100.0, "OIII4959": 130.0, "OIII5007": 390.0, "NII5755": 0.5, "HEI5876": 12.0,
    "SIII6312": 1.5, "NII6548": 10.0, "HA6563": 100 * HA_HB, "NII6584": 30.0, "SII6716": 20.0,
    "SII6731": 15.0, "OII7320": 2.0, "OII7330": 1.6, "SIII9069": 15.0, "SIII9532": 37.0,
}  # fmt: skip
_K = dict(zip(INTRINSIC, extinction_k("F99", 3.1, tuple(INTRINSIC), torch.device("cpu"), torch.float64).tolist(), strict=True))
OBSERVED = {line: v * 10 ** (-0.4 * EBV * _K[line]) for line, v in INTRINSIC.items()}
STRONG = ("OII3726", "OII3729", "HB4861", "OIII5007", "HA6563", "NII6584", "SII6716", "SII6731")
NO_HB = ("OIII4363", "OIII4959", "OIII5007", "HA6563", "NII6584", "SII6716", "SII6731")
#: the catalogue rows: every line / strong lines only / no Hbeta / Balmer lines only
OBJECTS: dict[str, dict[str, float]] = {
    "full": dict(OBSERVED),
    "strong": {k: OBSERVED[k] for k in STRONG},
    "nohb": {k: OBSERVED[k] for k in NO_HB},
    "balmer": {k: OBSERVED[k] for k in ("HB4861", "HA6563")},
}
# Methods that need no Hbeta: the [N II]/Halpha and [S II]/Halpha based ones (plus direct's Te).
NO_HB_METHODS = {"direct", "N2_PP04", "N2_M13", "N2S2HA_D16", "C20", "N2_C20", "S2_C20"}
PARAMS = AbundancesParams(n_draws=40)  # enough for percentiles; the default 200 is for science


def flux_err(flux: float) -> float:
    return 0.03 * flux + 0.02  # 3 % calibration plus a noise floor: auroral lines at S/N ~ 10-30


def write_catalog(path: Path, prefix: str) -> Path:
    """An ECSV line catalogue (the `line_catalog` reader's format); NaN = line not measured."""
    table = Table()
    table["id"] = [f"{prefix}-{name}" for name in OBJECTS]
    table["ra"] = [150.0 + 0.001 * i for i in range(len(OBJECTS))]
    table["dec"] = [2.0] * len(OBJECTS)
    for line in INTRINSIC:
        table[f"{line}_FLUX"] = [obj.get(line, math.nan) for obj in OBJECTS.values()]
        table[f"{line}_FLUX_ERR"] = [flux_err(obj[line]) if line in obj else math.nan for obj in OBJECTS.values()]
    table.write(path, format="ascii.ecsv", overwrite=True)
    return path


def ingest(db, path: Path, *, survey: str, dust_corrected: bool) -> int:
    """Ingest one catalogue; returns its `ingested` run id."""
    spec = SurveySpec(name=survey, reader="line_catalog", options={"dust_corrected": dust_corrected})
    outcome = ingest_paths(db, [path], survey=spec).outcomes[0]
    assert outcome.status == "loaded", outcome.reason
    return scalar(db, "SELECT max(id) FROM run WHERE task = 'ingested'")


def scalar(db, sql: str, **params: Any) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def view_rows(db) -> dict[tuple[str, str], dict[str, Any]]:
    """catalog.abundances keyed by (object id, method)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT s.object_id, a.* FROM catalog.abundances a JOIN spectrum s ON s.id = a.spectrum_id")
        ).mappings()
        return {(r["object_id"], r["method"]): dict(r) for r in rows}


def direct_call(ids: list[int], objects: list[dict[str, float]], corrected: list[bool], params: AbundancesParams):
    """derive_abundances on the catalogue numbers, as one batch with the task's seed."""
    fluxes = torch.full((len(objects), len(LINE_IDS)), math.nan, dtype=torch.float64)
    errors = fluxes.clone()
    for i, obj in enumerate(objects):
        for line, v in obj.items():
            fluxes[i, LINE_IDS.index(line)] = v
            errors[i, LINE_IDS.index(line)] = flux_err(v)
    gen = torch.Generator().manual_seed(batch_seed(params.seed, ids))
    return derive_abundances(fluxes, errors, torch.tensor(corrected), params, "cpu", gen, LINE_IDS)


class AbundancesV2(AbundancesTask):
    """The task after a hand-bumped version."""

    version = AbundancesTask.version + 1


def test_catalogue_to_catalog_abundances(fresh_database, tmp_path):
    db = fresh_database
    run_a = ingest(db, write_catalog(tmp_path / "a.ecsv", "a"), survey="hii", dust_corrected=False)
    # The same observed (reddened) numbers, but declared already dust-corrected.
    run_b = ingest(db, write_catalog(tmp_path / "b.ecsv", "b"), survey="hii-corrected", dust_corrected=True)

    summary = process(db, AbundancesTask(), PARAMS)
    assert summary.status == "succeeded" and summary.n_inputs == 8
    # Flagged inputs: the two with no O/H from any method (Balmer lines only), and of the
    # two without Hbeta only the one that needed a decrement (the other is corrected).
    assert summary.n_flagged == 3
    rows = view_rows(db)
    methods = {obj: {m for (o, m) in rows if o == obj} for obj, _ in rows}

    # Every method has the lines of the full region; strong lines give every calibration.
    assert methods["a-full"] == set(ALL_METHODS)
    assert all(rows["a-full", m]["oh"] is not None for m in ALL_METHODS)
    assert {m for m in methods["a-strong"] if rows["a-strong", m]["oh"] is not None} == set(ALL_METHODS) - {"direct"}
    assert methods["a-nohb"] == NO_HB_METHODS  # no row for the methods that need Hbeta

    d = rows["a-full", "direct"]
    assert 9_000 < d["te_oiii"] < 12_500 and 8_000 < d["te_nii"] < 14_000
    assert 8_000 < d["te_siii"] < 15_000 and 6_000 < d["te_oii"] < 14_000
    assert 30 < d["ne_sii"] < 300 and 30 < d["ne_oii"] < 300
    assert 8.0 < d["oh"] < 8.6 and -1.6 < d["n_o"] < -0.8 and 6.0 < d["s_h"] < 7.2
    assert d["oh"] == pytest.approx(math.log10(10 ** (d["op_h"] - 12) + 10 ** (d["opp_h"] - 12)) + 12, abs=0.02)
    assert all(7.0 < d[c] < 8.5 for c in ("op_h", "opp_h")) and all(5.0 < d[c] < 7.5 for c in ("np_h", "sp_h", "spp_h"))
    assert d["ebv"] == pytest.approx(EBV, abs=0.03)  # the Balmer decrement recovers the reddening
    assert 0 < d["oh_err_lo"] < 0.2 and 0 < d["oh_err_hi"] < 0.2 and 0 < d["te_oiii_err_lo"] < 2_000
    assert d["flags"] & (F.NO_TE_OIII | F.MISSING_LINES | F.NO_BALMER_DECREMENT) == 0

    # Strong lines only: the direct row keeps the densities, O/H is NULL and says why.
    s = rows["a-strong", "direct"]
    assert s["oh"] is None and s["te_oiii"] is None and s["ne_sii"] is not None
    assert s["flags"] & F.NO_TE_OIII and s["flags"] & F.MISSING_LINES

    # No Hbeta: no crash, no E(B-V), every row says the fluxes were not dust-corrected.
    assert all(rows["a-nohb", m]["ebv"] is None and rows["a-nohb", m]["flags"] & F.NO_BALMER_DECREMENT for m in NO_HB_METHODS)
    assert rows["a-nohb", "direct"]["te_oiii"] is not None and rows["a-nohb", "direct"]["oh"] is None
    assert rows["a-nohb", "N2_PP04"]["oh"] == pytest.approx(rows["a-full", "N2_PP04"]["oh"], abs=0.01)

    # Balmer lines only: no method gives anything, yet the spectrum has its one row (so it
    # is not pending forever) with E(B-V) and the reason.
    assert methods["a-balmer"] == {"direct"}
    b = rows["a-balmer", "direct"]
    assert b["oh"] is None and b["te_oiii"] is None and b["flags"] & F.MISSING_LINES
    assert b["ebv"] == pytest.approx(EBV, abs=0.03)

    # Dust-corrected input is not dereddened again: no E(B-V), the flag, and [O III]/[O II]
    # stays as observed (higher than after dereddening by E(B-V) = 0.25, which lifts the
    # bluer [O II]), so the O3O2 metallicity is lower than for the dereddened numbers.
    c = rows["b-full", "direct"]
    assert c["ebv"] is None and c["flags"] & F.ALREADY_DUST_CORRECTED and not c["flags"] & F.NO_BALMER_DECREMENT
    o3o2 = "O3O2_C20"  # [O III] 5007/[O II] 3727 falls as O/H rises
    assert rows["a-full", o3o2]["oh"] - rows["b-full", o3o2]["oh"] > 0.03
    assert not any(rows["b-nohb", m]["flags"] & F.NO_BALMER_DECREMENT for m in methods["b-nohb"])

    # The rows are exactly derive_abundances on the same numbers, same seed, same batch.
    with db.engine.connect() as conn:
        ids = conn.execute(text("SELECT id, object_id FROM spectrum ORDER BY id")).all()
    objects = [OBJECTS[oid.split("-", 1)[1]] for _, oid in ids]
    ref = direct_call([i for i, _ in ids], objects, [oid.startswith("b-") for _, oid in ids], PARAMS)
    for k, (sid, oid) in enumerate(ids):
        for m, res in ref.methods.items():
            med, p16, p84 = (float(getattr(res.values["oh"], s)[k]) for s in ("median", "p16", "p84"))
            if (oid, m) not in rows:
                continue
            row = rows[oid, m]
            assert row["flags"] == int(res.flags[k]), (oid, m)
            if math.isnan(med):
                assert row["oh"] is None, (oid, m)
            else:
                assert row["oh"] == pytest.approx(med, rel=1e-12)
                assert row["oh_err_lo"] == pytest.approx(med - p16, rel=1e-9, abs=1e-12)
                assert row["oh_err_hi"] == pytest.approx(p84 - med, rel=1e-9, abs=1e-12)
        if (oid, "direct") in rows and not math.isnan(float(ref.methods["direct"].values["te_oiii"].median[k])):
            assert rows[oid, "direct"]["te_oiii"] == pytest.approx(float(ref.methods["direct"].values["te_oiii"].median[k]), rel=1e-12)

    with db.engine.connect() as conn:
        run = conn.execute(text("SELECT * FROM run WHERE id = :i"), {"i": summary.run_id}).mappings().one()
        documented = conn.execute(text("SELECT count(*) FROM flag_definition WHERE table_name = 'abundance'")).scalar_one()
    assert sorted(run["upstream_run_ids"]) == sorted([run_a, run_b])  # both catalogues were read
    assert run["params"] == PARAMS.model_dump(mode="json") and len(run["model_sha256"]["nebular/atomic_data.json"]) == 64
    assert documented == len(AbundanceFlag)
    assert run["n_results"] == len(rows)


def test_upstream_runs_version_bump_and_reruns(fresh_database, tmp_path):
    db = fresh_database
    params = AbundancesParams(n_draws=4)
    run_a = ingest(db, write_catalog(tmp_path / "a.ecsv", "a"), survey="hii", dust_corrected=False)
    first = process(db, AbundancesTask(), params)
    assert process(db, AbundancesTask(), params).status == "nothing to do"  # the anti-join sees the rows

    # A new catalogue: the next run does only its spectra and records only its run as
    # upstream (per batch, not "every current run of the upstream tasks").
    run_b = ingest(db, write_catalog(tmp_path / "b.ecsv", "b"), survey="hii-2", dust_corrected=False)
    second = process(db, AbundancesTask(), params, batch_size=2)
    assert (first.n_inputs, second.n_inputs) == (4, 4)
    ups = {
        r: scalar(db, "SELECT upstream_run_ids FROM run WHERE id = :r", r=r) for r in (first.run_id, second.run_id)
    }
    assert ups == {first.run_id: [run_a], second.run_id: [run_b]}

    v1_rows = scalar(db, "SELECT count(*) FROM abundance")
    v2 = process(db, AbundancesV2(), params)
    assert v2.run_id not in (first.run_id, second.run_id) and v2.n_inputs == 8
    assert scalar(db, "SELECT upstream_run_ids FROM run WHERE id = :r", r=v2.run_id) == sorted([run_a, run_b])
    # Nothing overwritten: the v1 rows are still there; the view shows the v2 run only.
    assert scalar(db, "SELECT count(*) FROM abundance WHERE run_id <> :r", r=v2.run_id) == v1_rows
    assert scalar(db, "SELECT array_agg(DISTINCT run_id) FROM catalog.abundances") == [v2.run_id]
    assert scalar(db, "SELECT count(*) FROM catalog.abundances") == v1_rows
    # New parameters are new work too, even at the same version.
    assert process(db, AbundancesV2(), params.model_copy(update={"seed": 7}), limit=1).n_inputs == 1


def test_line_sources_prefer_fitted_lines_and_can_be_restricted(fresh_database, tmp_path):
    db = fresh_database
    run_a = ingest(db, write_catalog(tmp_path / "a.ecsv", "a"), survey="hii", dust_corrected=False)
    # A `lines` run (as the fit would write it) for a-strong, with 5007 ten times brighter,
    # one unusable line (ZERO_FLUX = 4) and current like any succeeded run.
    with db.engine.begin() as conn:
        sid = conn.execute(text("SELECT id FROM spectrum WHERE object_id = 'a-strong'")).scalar_one()
        fit_run = conn.execute(
            text("INSERT INTO run (task, version, params_hash, code_version, status) "
                 "VALUES ('lines', 1, 'x', 'test', 'succeeded') RETURNING id")
        ).scalar_one()
        conn.execute(text("INSERT INTO collection_run (collection_id, run_id) SELECT id, :r FROM collection WHERE name = 'current'"), {"r": fit_run})
        for line in STRONG + ("OIII4363",):
            flux = OBSERVED[line] * (10 if line == "OIII5007" else 1)
            conn.execute(
                text("INSERT INTO line_measurement (run_id, spectrum_id, line, flux, flux_err, flags) VALUES (:r, :s, :l, :f, :e, :g)"),
                {"r": fit_run, "s": sid, "l": line, "f": 0.0 if line == "OIII4363" else flux, "e": flux_err(flux),
                 "g": 4 if line == "OIII4363" else 0},
            )
    fitted = process(db, AbundancesTask(), AbundancesParams(n_draws=0))
    # What the task reads is what catalog.lines shows for each spectrum's preferred task.
    cols = "spectrum_id, line, flux, flux_err, flags, source_task, run_id"
    with db.engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM spectrum")).scalars())
        read = set(conn.execute(text(LINES_SQL), {"ids": ids, "sources": ["lines", "ingested"]}).tuples())
        shown = set(conn.execute(text(
            f"SELECT {cols} FROM catalog.lines AS l WHERE l.source_task = CASE WHEN EXISTS (SELECT 1 FROM "
            "catalog.lines f WHERE f.spectrum_id = l.spectrum_id AND f.source_task = 'lines') THEN 'lines' ELSE 'ingested' END"
        )).tuples())
    assert read == shown and len(read) == len(OBJECTS["full"]) + len(NO_HB) + 2 + len(STRONG) + 1
    assert scalar(db, "SELECT upstream_run_ids FROM run WHERE id = :r", r=fitted.run_id) == sorted([run_a, fit_run])
    rows = view_rows(db)
    # The fitted lines won for a-strong (O3N2 moves with 5007), and the zero-flux 4363 is
    # a missing line (no Te, no NONPOSITIVE_FLUX), not a zero.
    assert rows["a-strong", "O3N2_PP04"]["oh"] < rows["a-full", "O3N2_PP04"]["oh"] - 0.2
    assert rows["a-strong", "direct"]["flags"] & F.NO_TE_OIII and not rows["a-strong", "direct"]["flags"] & F.NONPOSITIVE_FLUX

    only_catalogue = process(db, AbundancesTask(), AbundancesParams(n_draws=0, line_sources=("ingested",)))
    assert only_catalogue.n_inputs == 4
    with db.engine.connect() as conn:
        oh = conn.execute(
            text("SELECT oh FROM abundance WHERE run_id = :r AND spectrum_id = :s AND method = 'O3N2_PP04'"),
            {"r": only_catalogue.run_id, "s": sid},
        ).scalar_one()
    assert oh == pytest.approx(rows["a-full", "O3N2_PP04"]["oh"], abs=0.01)


def test_cli_process_abundances(fresh_settings, fresh_database, tmp_path):
    ingest(fresh_database, write_catalog(tmp_path / "a.ecsv", "a"), survey="hii", dust_corrected=False)
    done = subprocess.run(
        [*CLI, "process", "--task", "abundances"], env=cli_env(fresh_settings), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"abundances v{AbundancesTask.version}: run" in done.stdout and "succeeded, 4 inputs" in done.stdout
    # The CLI runs the default parameters (200 draws): errors are there, and positive.
    assert scalar(fresh_database, "SELECT count(DISTINCT spectrum_id) FROM catalog.abundances") == 4
    assert scalar(fresh_database, "SELECT bool_and(oh_err_lo > 0 AND oh_err_hi > 0) FROM catalog.abundances WHERE oh IS NOT NULL")
    assert scalar(fresh_database, "SELECT params->>'n_draws' FROM run WHERE task = 'abundances'") == "200"
    again = subprocess.run(
        [*CLI, "process", "--task", "abundances"], env=cli_env(fresh_settings), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0 and f"abundances v{AbundancesTask.version}: nothing to do" in again.stdout
