"""Errors of the disk fit: the block bootstrap against the curvature errors, and the
rotation-curve panel of the plot (error bars, sides, kpc axis, model band)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skyledger.api.rotation_plots import draw_rotation_curve, rotation_curve_panel
from skyledger.compute.kinematics import (
    DiskData,
    DiskFitConfig,
    DiskFlag,
    fit_disks,
    rotation_curve,
)
from skyledger.compute.kinematics.bootstrap import block_multiplicities, bootstrap_disks
from skyledger.compute.kinematics.disk_problem import _Points
from skyledger.compute.kinematics.sky import kpc_per_arcsec, offsets_to_sky
from skyledger.compute.tasks.rotation import (
    ComponentPoints,
    RotationBatch,
    RotationParams,
)
from skyledger.testing.disk_model import DiskParams, disk_velocity
from skyledger.testing.noisy_maps import (
    FWHM_PER_SIGMA,
    correlated_noise,
    pixel_grid,
    smeared_disk_map,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _maps(n_real: int, psf: float, correlated: bool, seed: int, n: int = 16, pixel: float = 0.25, noise: float = 10.0):
    """``n_real`` noisy maps of one disk seen through the PSF (brute-force convolution)."""
    p = DiskParams(pa=142, inclination=60, v_sys=0, v_max=200, r_turn=0.5)
    x, y = pixel_grid(n, pixel)
    v0 = smeared_disk_map(p, x, y, psf) if psf > 0 else disk_velocity(x, y, p)[0]
    rng = np.random.default_rng(seed)
    sigma_pix = psf / FWHM_PER_SIGMA / pixel if correlated else 0.0
    vs = np.stack([v0 + correlated_noise(rng, x.shape, sigma_pix, noise) for _ in range(n_real)])
    t = lambda a: torch.tensor(np.ascontiguousarray(a), dtype=F64)  # noqa: E731
    data = DiskData(t(np.broadcast_to(x.ravel(), (n_real, x.size))), t(np.broadcast_to(y.ravel(), (n_real, x.size))),
                    t(vs.reshape(n_real, -1)), torch.full((n_real, x.size), noise, dtype=F64),
                    torch.ones(n_real, x.size, dtype=torch.bool),
                    psf_fwhm=torch.full((n_real,), psf, dtype=F64) if psf > 0 else None)  # fmt: skip
    truth = np.array([0, 0, math.radians(p.pa), math.radians(p.inclination), p.v_sys, p.v_max, p.r_turn])
    return data, truth


def _deviations(theta: torch.Tensor, truth: np.ndarray) -> np.ndarray:
    d = theta.numpy() - truth
    d[:, 2] = (d[:, 2] + math.pi) % (2 * math.pi) - math.pi
    return d


@pytest.mark.parametrize("loss", ["soft_l1", "cauchy"])
def test_multiplicity_weights_equal_duplicated_points(loss):
    """A point counted m times in the cost is the point repeated m times (robust loss included)."""
    g = torch.Generator().manual_seed(3)
    n = 30
    x, y = torch.rand(1, n, generator=g, dtype=F64) * 8 - 4, torch.rand(1, n, generator=g, dtype=F64) * 8 - 4
    theta = torch.tensor([[0.1, -0.2, 0.8, 0.9, 5.0, 180.0, 1.2]], dtype=F64)
    p = DiskParams(pa=math.degrees(0.8) + 3, inclination=55, v_sys=0, v_max=170, r_turn=1.0)
    v = torch.as_tensor(disk_velocity(x.numpy(), y.numpy(), p)[0]) + torch.randn(1, n, generator=g, dtype=F64) * 20
    sigma = torch.full_like(v, 8.0)
    mult = torch.randint(0, 4, (1, n), generator=g).to(F64)
    weighted = _Points.build(x, y, v, sigma, torch.ones_like(v, dtype=torch.bool), "arctan", None, None, F64)
    weighted.mult = mult
    idx = torch.repeat_interleave(torch.arange(n), mult[0].long())
    dup = _Points.build(x[:, idx], y[:, idx], v[:, idx], sigma[:, idx], torch.ones(1, idx.numel(), dtype=torch.bool),
                        "arctan", None, None, F64)  # fmt: skip
    for curvature in (False, True):
        for a, b in zip(weighted.evaluate(theta, loss, curvature), dup.evaluate(theta, loss, curvature), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-9)


def test_block_multiplicities_share_a_cell_and_stay_off_rejected_points():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 200, generator=g, dtype=F64) * 10 - 5, torch.rand(3, 200, generator=g, dtype=F64) * 10 - 5
    kept = torch.ones(3, 200, dtype=torch.bool)
    kept[:, :10] = False
    block = torch.tensor([2.0, 0.0, 1.0], dtype=F64)
    mult, n_blocks = block_multiplicities(x, y, kept, block, 40, [11, 12, 13])
    assert mult.shape == (3, 40, 200) and bool((mult[:, :, :10] == 0).all())
    # Mean multiplicity 1 (Poisson(1) per cell), integers.
    assert abs(float(mult[:, :, 10:].mean()) - 1.0) < 0.1 and bool((mult == mult.round()).all())
    # Galaxy 0: points of one 2" cell of a resample's grid share their count; the cells
    # of the other two differ.  Galaxy 1 (no PSF): the points are drawn independently.
    def equal_near_pairs(b: int) -> np.ndarray:
        xs, ys, m = x[b, 10:], y[b, 10:], mult[b, :, 10:]
        near = ((xs[:, None] - xs[None]).abs() < 0.3) & ((ys[:, None] - ys[None]).abs() < 0.3)
        near &= torch.triu(torch.ones_like(near), 1)
        return (m[:, :, None] == m[:, None, :])[:, near].to(F64).numpy()

    same_cell = equal_near_pairs(0)
    assert same_cell.size > 100
    # In one cell at least (1 - 0.3 / 2)^2 = 72 % of the time; else equal by chance (~30 %).
    assert same_cell.mean() > 0.75 and equal_near_pairs(1).mean() < 0.45
    c = np.corrcoef(mult[1, :, 10:].numpy().T)
    assert np.abs(c[np.triu_indices_from(c, 1)]).mean() < 0.2
    assert 10 <= int(n_blocks[0]) <= 36 and int(n_blocks[1]) == 190 and int(n_blocks[2]) > int(n_blocks[0])
    again, _ = block_multiplicities(x[1:], y[1:], kept[1:], block[1:], 40, [12, 13])
    assert torch.equal(again, mult[1:])  # one generator per galaxy: the batch does not matter


def test_bootstrap_and_curvature_errors_agree_on_independent_noise():
    """Independent noise, no PSF: both error estimates match the scatter about the truth."""
    data, truth = _maps(40, psf=0.0, correlated=False, seed=1, n=14, pixel=0.4)
    config = DiskFitConfig(error_floor=0.0)
    fit = fit_disks(data, config)
    boot = bootstrap_disks(data, config, fit, 20, seeds=range(40))
    assert bool((boot.n_resamples == 20).all()) and torch.equal(boot.n_blocks, fit.n_points)  # no PSF: cells = points
    d = _deviations(fit.theta, truth)
    cov, bs = fit.errors.numpy(), boot.errors.numpy()
    for k in (2, 3, 4, 5, 6):  # PA, inclination, V_sys, V_max, r_turn
        ratio = np.median(bs[:, k] / cov[:, k])
        assert 0.8 < ratio < 1.25, (k, ratio)
        assert 0.65 < np.std(d[:, k] / cov[:, k]) < 1.4 and 0.65 < np.std(d[:, k] / bs[:, k]) < 1.4, k
    flagged = ((fit.flags | boot.flags) & int(DiskFlag.ERRORS_UNDERESTIMATED)) != 0
    assert int(flagged.sum()) <= 2


def test_block_bootstrap_sees_psf_correlated_noise_that_the_curvature_misses():
    """PSF-correlated noise: the curvature errors are ~3x too small; the block bootstrap
    grows with the true scatter and flags the galaxies."""
    data, truth = _maps(20, psf=0.55, correlated=True, seed=2, n=16, pixel=0.25)
    config = DiskFitConfig(error_floor=0.0)
    fit = fit_disks(data, config)
    boot = bootstrap_disks(data, config, fit, 16, seeds=range(20), block_fwhm=2.0)
    d = _deviations(fit.theta, truth)
    cov, bs = fit.errors.numpy(), boot.errors.numpy()
    pull_cov = np.array([np.std(d[:, k] / cov[:, k]) for k in (2, 3, 5)])  # PA, inclination, V_max
    pull_boot = np.array([np.std(d[:, k] / bs[:, k]) for k in (2, 3, 5)])
    assert pull_cov.mean() > 2.2, pull_cov  # the test can fail: the curvature errors are too small
    assert pull_boot.mean() < 0.7 * pull_cov.mean() and np.all(pull_boot < pull_cov), (pull_boot, pull_cov)
    assert np.median(bs[:, [2, 3, 5]] / cov[:, [2, 3, 5]]) > 1.6
    flagged = ((boot.flags & int(DiskFlag.ERRORS_UNDERESTIMATED)) != 0).numpy()
    assert flagged.mean() > 0.5
    # The same maps without a PSF in the data (no cells: single pixels) miss the correlation.
    single = DiskData(data.x, data.y, data.v, data.v_err, data.mask, psf_fwhm=torch.full((20,), 1e-6, dtype=F64))
    fit1 = fit_disks(single, config)
    boot1 = bootstrap_disks(single, config, fit1, 16, seeds=range(20))
    assert np.median(boot1.errors.numpy()[:, 5] / fit1.errors.numpy()[:, 5]) < 1.3


def test_rotation_curve_panel_has_error_bars_sides_kpc_axis_and_band():
    """The panel's numbers against the formulas, from a hand-built batch and rows."""
    p = DiskParams(pa=70, inclination=55, v_sys=0, v_max=180, r_turn=1.2)
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-6, 6, (1, 150)), rng.uniform(-6, 6, (1, 150))
    v = disk_velocity(x, y, p)[0] + rng.normal(0, 6, x.shape)
    v_err = np.full(x.shape, 4.0)
    z = 0.05
    ra0, dec0 = 150.0, 2.0
    pts = ComponentPoints(x=x, y=y, v=v, v_err=v_err, sigma=np.full(x.shape, 30.0), flux=np.full(x.shape, np.nan),
                          mask=np.ones(x.shape, dtype=bool), spectrum_id=np.arange(150)[None], n_rows=np.array([150]))  # fmt: skip
    batch = RotationBatch([1], ["HAND"], np.array([ra0]), np.array([dec0]), np.array([z]), np.array([z]), np.array([1.0]),
                          {"gas": pts})  # fmt: skip
    ra_c, dec_c = offsets_to_sky(np.array([0.0]), np.array([0.0]), ra0, dec0)
    scale = float(kpc_per_arcsec(np.array([z]))[0])
    row = {"model": "arctan", "ra_center": float(ra_c[0]), "dec_center": float(dec_c[0]), "pa": 70.0, "inc": 55.0,
           "inc_err": 1.0, "inc_err_boot": 3.0, "vsys": 0.0, "vmax": 180.0, "vmax_err": 4.0, "vmax_err_boot": 9.0,
           "r_turn": 1.2, "r_turn_err": 0.05, "r_turn_err_boot": None, "psf_fwhm": 1.0, "kpc_per_arcsec": scale}  # fmt: skip
    params = RotationParams(error_floor_kms=5.0)
    panel = rotation_curve_panel(batch, "gas", [row], params)

    # Sides and speeds: receding points have v > v_sys; both sides deproject to ~V(r).
    pa, inc = math.radians(70), math.radians(55)
    a = x[0] * math.sin(pa) + y[0] * math.cos(pa)
    radius = np.hypot(a, (-x[0] * math.cos(pa) + y[0] * math.sin(pa)) / math.cos(inc))
    near = np.abs(a / radius) > 0.5
    np.testing.assert_allclose(panel.radius, radius[near], rtol=1e-9)
    assert np.array_equal(panel.receding, a[near] > 0) and panel.receding.any() and (~panel.receding).any()
    assert np.median(v[0, near][panel.receding]) > 50 and np.median(v[0, near][~panel.receding]) < -50
    truth = rotation_curve(torch.as_tensor(panel.radius), torch.tensor(180.0, dtype=F64), torch.tensor(1.2, dtype=F64), "arctan").numpy()
    assert np.median(np.abs(panel.speed - truth)) < 15
    # Error bars: sqrt(v_err^2 + floor^2) / (sin i |cos theta|) and the bootstrap inclination error.
    cos_t = a[near] / radius[near]
    expect = np.hypot(math.hypot(4.0, 5.0) / (math.sin(inc) * np.abs(cos_t)),
                      np.abs(panel.speed) / math.tan(inc) * math.radians(3.0))  # fmt: skip
    np.testing.assert_allclose(panel.speed_err, expect, rtol=1e-9)
    # Band: the bootstrap V_max error (9 km/s) sets its half-width far out.
    c = panel.curves[0]
    assert c.errors_from == "bootstrap" and panel.kpc_per_arcsec == pytest.approx(scale)
    assert np.all(c.lower <= c.curve + 1e-9) and np.all(c.upper >= c.curve - 1e-9)
    half = 0.5 * (c.upper[-1] - c.lower[-1])
    assert 7.0 < half < 11.0, half
    # Beam-smeared curve: below the intrinsic one inside r_turn, close to it far out.
    assert c.observed is not None
    inner = (panel.grid > 0.2) & (panel.grid < 1.2)
    gap = c.curve[inner] - c.observed[inner]
    assert np.all(gap > 0) and gap.max() > 5 and abs(c.observed[-1] - c.curve[-1]) < 0.05 * c.curve[-1]

    fig = draw_rotation_curve(panel)
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert any(lab.startswith("receding side") for lab in labels) and any(lab.startswith("approaching side") for lab in labels)
    assert any("beam-smeared" in lab for lab in labels) and any("1-sigma band (bootstrap" in lab for lab in labels)
    bars = [cont for cont in ax.containers if type(cont).__name__ == "ErrorbarContainer"]
    assert len(bars) == 2
    segs = np.concatenate([b.lines[2][0].get_segments() for b in bars])
    np.testing.assert_allclose(np.sort([s[1, 1] - s[0, 1] for s in segs]), np.sort(2 * panel.speed_err), rtol=1e-9)
    top = [child for child in ax.child_axes if "kpc" in child.get_xlabel()]
    assert len(top) == 1 and "Planck18" in top[0].get_xlabel()
    lo, hi = ax.get_xlim()
    np.testing.assert_allclose(top[0].get_xlim(), (lo * scale, hi * scale), rtol=1e-9)
    import matplotlib.pyplot as plt

    plt.close(fig)
    # Without a redshift there is no kpc axis.
    panel.kpc_per_arcsec = None
    fig = draw_rotation_curve(panel)
    assert not [child for child in fig.axes[0].child_axes if "kpc" in child.get_xlabel()]
    plt.close(fig)


def test_a_batch_mixing_maps_and_scattered_points_is_bootstrapped_as_two():
    """A map galaxy (pixel grid) and scattered points with a PSF in one batch: each is
    resampled with the model its fit used, so the errors are those of each alone."""
    rng = np.random.default_rng(5)
    i, j = np.meshgrid(np.arange(14) - 6.5, np.arange(14) - 6.5)
    x, y = i.ravel() * 0.2, j.ravel() * 0.2
    xr, yr = rng.uniform(-1.3, 1.3, x.size), rng.uniform(-1.3, 1.3, x.size)
    p = DiskParams(pa=46.0, inclination=57.0, v_sys=0.0, v_max=200.0, r_turn=0.3)
    xs, ys = np.stack([x, xr]), np.stack([y, yr])
    vs = np.stack([disk_velocity(x, y, p)[0], disk_velocity(xr, yr, p)[0]]) + rng.normal(0, 5, xs.shape)
    t = lambda a: torch.as_tensor(a, dtype=F64)  # noqa: E731
    data = DiskData(t(xs), t(ys), t(vs), t(np.full(xs.shape, 5.0)), torch.ones(xs.shape, dtype=torch.bool),
                    flux=t(np.exp(-np.hypot(xs, ys) / 0.8)), psf_fwhm=torch.tensor([0.4, 0.4], dtype=F64))  # fmt: skip
    config = DiskFitConfig()
    fit = fit_disks(data, config)
    assert fit.beam_grid.tolist() == [True, False]
    both = bootstrap_disks(data, config, fit, 8, seeds=[11, 12])
    for b in range(2):
        one = DiskData(*(v_[b : b + 1] for v_ in (data.x, data.y, data.v, data.v_err, data.mask, data.flux, data.psf_fwhm)))
        alone = bootstrap_disks(one, config, fit_disks(one, config), 8, seeds=[11 + b])
        assert torch.allclose(both.errors[b], alone.errors[0], atol=1e-6, equal_nan=True), (b, both.errors[b], alone.errors[0])
