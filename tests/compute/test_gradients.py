"""The `gradients` task: the line-with-scatter fit against synthetic truth, and the task on
real PostgreSQL with hand-made rotation and abundance rows (the full chain from cubes is
in test_rotation.py)."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest
import torch
from sqlalchemy import text

from skyledger.schema import runs
from skyledger.compute.tasks.gradients import Geometry, GradientsParams, GradientsTask, deprojected_radius
from skyledger.compute.kinematics.gradient import GradientFitConfig, GradientFlag, fit_gradients
from skyledger.compute.kinematics.sky import offsets_to_sky
from skyledger.compute.framework.runner import process

F64 = torch.float64


def test_fit_recovers_slope_central_and_scatter_with_calibrated_errors():
    rng = np.random.default_rng(4)
    g, n = 300, 50
    r = rng.uniform(0, 10, (g, n))
    e = rng.uniform(0.03, 0.08, (g, n))
    y = 8.6 - 0.04 * r + rng.normal(0, 1, (g, n)) * np.sqrt(e**2 + 0.06**2)
    y[:, :2] += 0.8  # two gross outliers per galaxy
    t = lambda a: torch.tensor(a, dtype=F64)  # noqa: E731
    fit = fit_gradients(t(r), t(y), t(e), torch.ones(g, n, dtype=torch.bool), GradientFitConfig())
    slope, err = fit.slope.numpy(), fit.errors.numpy()
    assert abs(slope.mean() + 0.04) < 0.001 and abs(fit.central.numpy().mean() - 8.6) < 0.005
    assert abs(fit.scatter.numpy().mean() - 0.06) < 0.008
    # The Hessian errors match the scatter of the estimates across the 300 realisations.
    for k, est in enumerate((fit.central.numpy(), slope, fit.scatter.numpy())):
        assert 0.8 < est.std() / err[:, k].mean() < 1.25, k
    assert (fit.n_rejected.numpy() >= 2).all() and (fit.flags.numpy() == 0).mean() > 0.9


def test_too_few_points_short_range_and_zero_scatter_are_flagged():
    r = torch.tensor([[1.0, 2, 3, 4, 5, 6], [1.0, 1.1, 1.2, 1.3, 1.4, 1.5], [0.0, 2, 4, 6, 8, 10], [1.0, 2, 3, 4, 5, 6]], dtype=F64)
    y = 8.5 - 0.05 * r
    y[3] = float("nan")
    y[3, :2] = 8.4
    err = torch.full_like(r, 0.05)
    mask = torch.ones_like(r, dtype=torch.bool)
    mask[0, 4:] = False
    fit = fit_gradients(r, y, err, mask, GradientFitConfig(min_points=5))
    flags = fit.flags.numpy()
    assert flags[0] & GradientFlag.TOO_FEW_POINTS and math.isnan(fit.slope[0])
    assert flags[1] & GradientFlag.SHORT_RADIAL_RANGE and not flags[1] & GradientFlag.TOO_FEW_POINTS
    assert flags[2] & GradientFlag.SCATTER_UNRESOLVED and fit.scatter[2] == 0 and abs(fit.slope[2] + 0.05) < 1e-9
    assert flags[3] & GradientFlag.TOO_FEW_POINTS  # NaN abundances do not count


def test_deprojected_radius_matches_the_disk_geometry():
    geo = Geometry("gas/arctan", 150.0, 2.0, pa=30.0, inc=60.0, kpc_per_arcsec=0.5, flags=0, run_id=1, r_e=math.nan)
    pa = math.radians(30)
    # 2" along the major axis and 1" along the minor axis (deprojected: 2").
    xi = np.array([2 * math.sin(pa), -math.cos(pa)])
    eta = np.array([2 * math.cos(pa), math.sin(pa)])
    ra, dec = offsets_to_sky(xi, eta, 150.0, 2.0)
    np.testing.assert_allclose(deprojected_radius(ra, dec, geo), [2.0, 2.0], atol=1e-6)


def _galaxy_with_rows(session, *, survey_id: int, file_id: int, rot_run: int, ab_run: int, name: str, r_e: float | None,
                      kpc: float | None, n: int, slope: float, rng) -> int:
    meta = "{}" if r_e is None else f'{{"r_e_arcsec": {r_e}}}'
    gid = session.execute(
        text("INSERT INTO source (survey_id, ingest_file_id, object_id, ra, dec, z, meta) "
             "VALUES (:s, :f, :o, 150, 2, 0.02, CAST(:m AS jsonb)) RETURNING id"),
        {"s": survey_id, "f": file_id, "o": name, "m": meta},
    ).scalar_one()
    session.execute(
        text("INSERT INTO rotation_fit (run_id, source_id, component, model, ra_center, dec_center, pa, inc, "
             "kpc_per_arcsec, n_points, n_rejected, flags) VALUES (:r, :g, 'gas', 'arctan', 150, 2, 30, 60, :k, 50, 0, 0)"),
        {"r": rot_run, "g": gid, "k": kpc},
    )
    pa = math.radians(30)
    radius = rng.uniform(0.5, 8, n)
    phi = rng.uniform(0, 2 * math.pi, n)
    a, b = radius * np.cos(phi), radius * np.sin(phi) * 0.5  # cos 60 deg
    ra, dec = offsets_to_sky(a * math.sin(pa) - b * math.cos(pa), a * math.cos(pa) + b * math.sin(pa), 150.0, 2.0)
    for k in range(n):
        sid = session.execute(
            text("INSERT INTO spectrum (source_id, survey_id, ingest_file_id, object_id, ra, dec, n_pix) "
                 "VALUES (:g, :s, :f, :o, :ra, :dec, 0) RETURNING id"),
            {"g": gid, "s": survey_id, "f": file_id, "o": f"{name}#{k}", "ra": float(ra[k]), "dec": float(dec[k])},
        ).scalar_one()
        oh = 8.7 + slope * radius[k] + rng.normal(0, 0.03)
        session.execute(
            text("INSERT INTO abundance (run_id, spectrum_id, method, oh, oh_err_lo, oh_err_hi) VALUES (:r, :s, 'N2_PP04', :oh, 0.03, 0.03)"),
            {"r": ab_run, "s": sid, "oh": oh},
        )
    return gid


def test_task_reads_geometry_and_abundances_and_writes_catalog_rows(fresh_database):
    db = fresh_database
    rng = np.random.default_rng(8)

    def run(session, task: str) -> int:
        return runs.start_run(session, task=task, version=1, params={"hand": True}, model_sha256={}, upstream_run_ids=[],
                              device=None, prefect_flow_run_id=None).id

    with db.session() as session:
        survey_id = session.execute(text("INSERT INTO survey (name, reader) VALUES ('hand', 'line_catalog') RETURNING id")).scalar_one()
        file_id = session.execute(
            text("INSERT INTO ingest_file (survey_id, uri, sha256, status) VALUES (:s, '/hand', :h, 'loaded') RETURNING id"),
            {"s": survey_id, "h": uuid.uuid4().hex * 2},
        ).scalar_one()
        rot_run, ab_run = run(session, "rotation"), run(session, "abundances")
        kw = dict(survey_id=survey_id, file_id=file_id, rot_run=rot_run, ab_run=ab_run, rng=rng)
        _galaxy_with_rows(session, name="G1", r_e=4.0, kpc=0.5, n=40, slope=-0.02, **kw)
        _galaxy_with_rows(session, name="G2", r_e=None, kpc=None, n=40, slope=0.01, **kw)
        _galaxy_with_rows(session, name="G3", r_e=None, kpc=0.5, n=3, slope=0.0, **kw)  # too few: not an input
        runs.finish_run(session, rot_run)
        runs.finish_run(session, ab_run)

    summary = process(db, GradientsTask())
    assert summary.status == "succeeded" and summary.n_inputs == 2 and summary.n_flagged == 0
    with db.engine.connect() as conn:
        rows = {r["object_id"]: dict(r) for r in conn.execute(text("SELECT * FROM catalog.metallicity_gradients")).mappings()}
        upstream = conn.execute(text("SELECT upstream_run_ids FROM run WHERE id = :i"), {"i": summary.run_id}).scalar_one()
    assert set(rows) == {"G1", "G2"} and sorted(upstream) == sorted([rot_run, ab_run])
    g1, g2 = rows["G1"], rows["G2"]
    assert abs(g1["slope_dex_per_arcsec"] + 0.02) < 3 * g1["slope_dex_per_arcsec_err"] < 0.01
    assert g1["slope_dex_per_kpc"] == pytest.approx(g1["slope_dex_per_arcsec"] / 0.5)
    assert g1["slope_dex_per_re"] == pytest.approx(g1["slope_dex_per_arcsec"] * 4.0) and g1["r_e"] == 4.0
    assert g1["geometry"] == "gas/arctan" and g1["rotation_run_id"] == rot_run and g1["n_points"] + g1["n_rejected"] == 40
    assert abs(g1["central_oh"] - 8.7) < 0.05 and g1["r_max"] <= 8.0 + 1e-6 and g1["r_min"] >= 0.5 - 1e-6
    assert g2["slope_dex_per_kpc"] is None and g2["flags"] & GradientFlag.NO_DISTANCE and g2["slope_dex_per_arcsec"] > 0
    assert process(db, GradientsTask()).status == "nothing to do"


def test_gradients_params_reject_a_bad_geometry():
    with pytest.raises(ValueError, match="gas\\|stars/arctan\\|freeman"):
        GradientsParams(geometry=("gas/tanh",))
