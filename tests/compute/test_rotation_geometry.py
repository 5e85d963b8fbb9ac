"""Starting geometry of the disk fits, several starts and model agreement (issue 22).

The maps (:mod:`skyledger.testing.patchy_velocity_map`) are made as an observation would
make them, not with the fit's model: clumpy, lopsided, brute-force beam-smeared, masked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skyledger.compute.kinematics import DiskData, DiskFitConfig, DiskFlag, fit_disks
from skyledger.compute.kinematics.kinematic_pa import kinematic_geometry
from skyledger.compute.kinematics.model_agreement import agree
from skyledger.testing.disk_model import DiskParams, disk_velocity
from skyledger.testing.patchy_velocity_map import CENTRE, patchy_map, to_data

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def wrap_deg(d: np.ndarray) -> np.ndarray:
    return (np.asarray(d) + 180.0) % 360.0 - 180.0


def test_patchy_beam_smeared_map_gets_the_geometry_or_the_flag():
    """Maps 1, 2 and 14 of this family are ones where rotation version 3 failed (checked on
    main's code before this change, fit_disks with its defaults): its arctan fit (plane
    start, one PA start) ended in minima with V_max 345 km/s (chi^2 5.3), PA 10 deg off
    and V_max 305 km/s (chi^2 5.7), and inclination 84 deg (chi^2 1.8) instead of 62 deg
    and 250 km/s, while its freeman fit was right, and no flag said so."""
    maps = [patchy_map(1), patchy_map(2), patchy_map(14)]
    data = to_data(maps)
    configs = {m: DiskFitConfig(model=m) for m in ("arctan", "freeman")}
    fits = agree(data, {m: fit_disks(data, c) for m, c in configs.items()}, configs)
    for model, fit in fits.items():
        th = fit.theta.numpy()
        for b, m in enumerate(maps):
            p = m["truth"]
            flagged = bool(int(fit.flags[b]) & DiskFlag.MODELS_DISAGREE)
            ok = (abs(wrap_deg(math.degrees(th[b, 2]) - p.pa)) < 10 and abs(math.degrees(th[b, 3]) - p.inclination) < 15
                  and abs(th[b, 5] / p.v_max - 1) < 0.15)  # fmt: skip
            assert ok or flagged, (model, b, np.degrees(th[b, 2:4]), th[b, 4:6])
            # here the geometry is found, not merely flagged
            assert ok and not flagged, (model, b)
            assert abs(th[b, 4] - p.v_sys) < 15 and float(fit.chi2[b]) < 1.5, (model, b)
            assert abs(wrap_deg(math.degrees(float(fit.pa_kin[b])) - p.pa)) < 5


def test_kinematic_geometry_against_truth_on_patchy_maps():
    pas = [322.0, 40.0, 140.0, 230.0]
    maps = [patchy_map(s, pa=pa, inc=inc) for s, (pa, inc) in enumerate(zip(pas, [62.0, 45.0, 70.0, 55.0]))]
    data = to_data(maps)
    geo = kinematic_geometry(data.x, data.y, data.v, torch.full_like(data.x, 15.0), data.mask, data.flux)
    dpa = wrap_deg(np.degrees(geo.pa.numpy()) - np.array(pas))
    assert np.abs(dpa).max() < 3.0, dpa  # receding side included: a 180 deg error would show
    err = np.degrees(geo.pa_err.numpy())
    assert np.all((err > 0.05) & (err < 3.0)), err
    assert np.abs(geo.x0.numpy() - CENTRE[0]).max() < 0.2 and np.abs(geo.y0.numpy() - CENTRE[1]).max() < 0.2
    assert np.abs(geo.vsys.numpy() - 40.0).max() < 12.0, geo.vsys
    # the lopsided coverage is real: the plain median of the velocities is far off
    assert max(abs(float(np.median(m["v"])) - 40.0) for m in maps) > 25


def test_systemic_velocity_of_a_lopsided_map_without_fluxes():
    maps = [patchy_map(s, pa=pa, approaching_kept=0.15) for s, pa in ((3, 322.0), (4, 100.0), (5, 200.0))]
    data = to_data(maps, with_flux=False)  # no fluxes: the centre search starts at the map centre
    geo = kinematic_geometry(data.x, data.y, data.v, torch.full_like(data.x, 15.0), data.mask, None)
    med = np.array([np.median(m["v"]) for m in maps])
    assert np.abs(med - 40.0).min() > 20, med  # the global median follows the receding side
    assert np.abs(geo.vsys.numpy() - 40.0).max() < 12.0, geo.vsys
    dpa = wrap_deg(np.degrees(geo.pa.numpy()) - np.array([322.0, 100.0, 200.0]))
    assert np.abs(dpa).max() < 5.0, dpa


def _clean_disks(n: int, seed: int) -> tuple[DiskData, list[DiskParams]]:
    rng = np.random.default_rng(seed)
    xs, ys, vs, truth = [], [], [], []
    for _ in range(n):
        p = DiskParams(pa=rng.uniform(0, 360), inclination=rng.uniform(35, 65), v_sys=rng.uniform(-30, 30),
                       v_max=rng.uniform(120, 280), r_turn=rng.uniform(1.0, 2.0))
        x, y = rng.uniform(-6, 6, 150), rng.uniform(-6, 6, 150)
        vs.append(disk_velocity(x, y, p)[0] + rng.normal(0, 8.0, 150))
        xs.append(x), ys.append(y), truth.append(p)
    t = lambda a: torch.tensor(np.array(a), dtype=F64)  # noqa: E731
    return DiskData(t(xs), t(ys), t(vs), torch.full((n, 150), 8.0, dtype=F64), torch.ones(n, 150, dtype=torch.bool)), truth


def test_models_disagree_flag_only_where_the_geometries_differ():
    data, truth = _clean_disks(6, seed=21)
    configs = {m: DiskFitConfig(model=m, pa_starts_deg=(0.0,)) for m in ("arctan", "freeman")}
    fits = agree(data, {m: fit_disks(data, c) for m, c in configs.items()}, configs)
    for fit in fits.values():
        assert not (fit.flags.numpy() & int(DiskFlag.MODELS_DISAGREE)).any()
        assert not (fit.flags.numpy() & int(DiskFlag.PA_KIN_DISAGREES)).any()
    # A genuine disagreement: a second "model" confined to inclinations of 75-87 deg
    # cannot reach these 35-65 deg disks, whatever start the other gives it.
    configs = {"free": DiskFitConfig(model="arctan", pa_starts_deg=(0.0,)),
               "steep": DiskFitConfig(model="arctan", pa_starts_deg=(0.0,), inc_bounds_deg=(75.0, 87.0))}
    fits = agree(data, {m: fit_disks(data, c) for m, c in configs.items()}, configs)
    inc = np.array([p.inclination for p in truth])
    expect = inc < 75 - 15  # the inclinations differ by more than 15 deg
    for fit in fits.values():
        assert np.array_equal((fit.flags.numpy() & int(DiskFlag.MODELS_DISAGREE)) != 0, expect), inc
    assert expect.sum() >= 3


def test_refit_from_the_other_model_keeps_the_lower_cost():
    """A start far off (PA + 180 with the inclination starts only) against the refit from
    a good solution: the lower-cost solution is kept, so the bad start cannot win."""
    data, truth = _clean_disks(4, seed=5)
    good = fit_disks(data, DiskFitConfig(model="freeman"))
    bad_config = DiskFitConfig(model="arctan", pa_starts_deg=(180.0,), inc_starts_deg=(87.0,), max_iter=3)
    bad = fit_disks(data, bad_config)
    fits = agree(data, {"arctan": bad, "freeman": good}, {"arctan": bad_config, "freeman": DiskFitConfig(model="freeman")})
    assert (fits["arctan"].cost <= bad.cost).all() and (fits["arctan"].cost < bad.cost).any()
    dpa = wrap_deg(np.degrees(fits["arctan"].theta[:, 2].numpy()) - np.array([p.pa for p in truth]))
    assert np.abs(dpa).max() < 3, dpa
