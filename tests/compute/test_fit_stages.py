"""Tests of the stages of one chunk's fit (``skyledger.compute.fitting``): work frame,
stellar stage, gas stage and outputs, each on a state built by the stages before it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skyledger.compute.fitting import FitConfig, LineFlag, SpectraBatch, SpectrumFlag, TemplateLibrary
from skyledger.compute.fitting.chunk import ChunkState, prepare_chunk
from skyledger.compute.fitting.gas import fit_gas
from skyledger.compute.fitting.library import entering, on_library, to_subset
from skyledger.compute.fitting.linesetup import line_setup
from skyledger.compute.fitting.outputs import collect_outputs
from skyledger.compute.fitting.prepare import prepare_batch
from skyledger.compute.fitting.stellar import fit_stars
from skyledger.schema.linelist import LINES
from skyledger.testing.spectra import make_synthetic

torch.set_num_threads(2)
C_KMS = 299792.458


@pytest.fixture(scope="module")
def lib() -> TemplateLibrary:
    return TemplateLibrary.mileshc()


def _chunk(batch: SpectraBatch, lib: TemplateLibrary, config: FitConfig) -> tuple[np.ndarray, ChunkState | None]:
    """The whole batch as one chunk (as ``fit_spectra`` builds it for fittable spectra)."""
    spectra = prepare_batch(batch, config)
    assert (spectra.flags == 0).all()
    lt = lib.on_log_grid(spectra.dln, config.n_eigen)
    return prepare_chunk(spectra, np.arange(len(batch)), lt, line_setup(config), config, torch.device("cpu"))


# ---------------------------------------------------------------- work frame and library


def test_chunk_puts_the_data_on_the_template_grid(lib: TemplateLibrary) -> None:
    batch, _ = make_synthetic(2, snr=50, seed=31, templates=lib)
    config = FitConfig()
    flags, st = _chunk(batch, lib, config)
    assert st is not None and (flags == 0).all() and list(st.sel_np) == [0, 1]
    wave, flux = np.asarray(batch.wave), np.asarray(batch.flux)
    for b in range(2):
        on = st.base[b].numpy()
        assert on.sum() > 1000
        # Each fitted work pixel is a data pixel (rest frame), carrying its flux / scale.
        ln_obs = st.u_centre[b].numpy()[on] + np.log1p(st.z[b])
        j = np.rint((ln_obs - np.log(wave[b, 0])) / st.dln).astype(int)
        np.testing.assert_allclose(ln_obs, np.log(wave[b, j]), atol=1e-3 * st.dln)
        np.testing.assert_allclose(st.y[b].numpy()[on] * float(st.scale[b]), flux[b, j], rtol=1e-12)
        # The stellar stage does not see the emission lines: H-alpha's window is masked.
        near_ha = np.abs(st.u_centre[b].numpy() - np.log(LINES["HA6563"].vacuum_wavelength)) < config.line_mask_kms / C_KMS
        assert (on & near_ha).any() and not (st.fit1[b].numpy() & near_ha).any()


def test_chunk_without_enough_pixels_has_no_state(lib: TemplateLibrary) -> None:
    batch, _ = make_synthetic(2, snr=50, seed=32, templates=lib)
    ivar = np.array(batch.ivar)
    ivar[:, 80:] = 0
    flags, st = _chunk(SpectraBatch(wave=batch.wave, flux=batch.flux, ivar=ivar, redshift=batch.redshift,
                                    resolution=batch.resolution), lib, FitConfig())  # fmt: skip
    assert st is None
    assert (flags == SpectrumFlag.TOO_FEW_PIXELS).all()


def test_template_subsets_scatter_back_onto_the_library() -> None:
    gen = torch.Generator().manual_seed(3)
    members = torch.rand(4, 10, generator=gen) < 0.3
    members[0] = False  # an empty subset still has one (padding) column
    sub, sub_on = to_subset(members)
    assert sub.shape == (4, max(int(members.sum(1).max()), 1))
    assert torch.equal(on_library(sub, sub_on, sub_on, 10), members)
    values = torch.arange(1.0, 41.0).view(4, 10)
    picked = torch.gather(values, 1, sub)
    assert torch.equal(on_library(sub, sub_on, picked, 10), torch.where(members, values, torch.zeros_like(values)))
    # KKT: only left-out templates with a large enough positive gradient enter.
    grad = torch.tensor([[1.0, -1.0, 1.0, 1e-12]])
    in_sub = torch.tensor([[False, False, True, False]])
    enter = entering(grad, in_sub, torch.tensor([1.0]), torch.ones(1, 4))
    assert enter.tolist() == [[True, False, False, False]]


# ---------------------------------------------------------------- stellar stage


def test_stellar_stage_recovers_the_kinematics(lib: TemplateLibrary) -> None:
    # Stars built from the templates by direct convolution (not the fit's Fourier
    # route), with emission lines that the stage must mask.
    batch, truth = make_synthetic(3, snr=300, seed=33, templates=lib)
    _, st = _chunk(batch, lib, FitConfig())
    assert st is not None
    fit_stars(st)
    stars = st.stars
    v_err = stars.cov[:, 0, 0].sqrt().numpy()
    s_err = stars.cov[:, 1, 1].sqrt().numpy()
    assert (v_err > 0).all() and (s_err > 0).all()
    assert (np.abs(stars.v_star.numpy() - truth.velocity) < 4 * v_err + 1.0).all(), (stars.v_star, truth.velocity)
    assert (np.abs(stars.s_star.numpy() - truth.sigma) < 4 * s_err + 0.01 * truth.sigma).all(), (stars.s_star, truth.sigma)
    assert bool(stars.conv.all()) and (stars.flags & ~SpectrumFlag.TEMPLATE_RES_WORSE == 0).all()
    # Non-negative template mix, in use where the weights are positive; clipping only
    # ever removes pixels the stage fitted.
    assert bool((stars.coef_t >= 0).all()) and bool((stars.coef_t > 0).any(1).all())
    assert torch.equal(stars.passive_t & (stars.coef_t > 0), stars.coef_t > 0)
    assert not bool((stars.clipped & ~st.fit1).any())
    assert (np.abs(stars.chi2_dof.numpy() - 1) < 0.2).all()


def test_stellar_stage_flags_a_velocity_at_the_search_bound(lib: TemplateLibrary) -> None:
    # Redshift guesses 600 km/s blue of the truth against a +-150 km/s fit window.
    batch, truth = make_synthetic(2, snr=100, seed=34, templates=lib, with_lines=False)
    z_guess = (1 + np.asarray(batch.redshift)) * np.exp((truth.velocity - 600.0) / C_KMS) - 1
    config = FitConfig(v_search=100.0)
    _, st = _chunk(SpectraBatch(wave=batch.wave, flux=batch.flux, ivar=batch.ivar, redshift=z_guess,
                                resolution=batch.resolution), lib, config)  # fmt: skip
    assert st is not None
    fit_stars(st)
    assert (st.stars.flags & SpectrumFlag.VELOCITY_AT_BOUND).all()
    assert (st.stars.v_star.numpy() >= 1.5 * config.v_search - 1.0).all()


# ---------------------------------------------------------------- gas stage


def _lines_only(lib: TemplateLibrary, n: int, seed: int, noise_frac: float) -> tuple[SpectraBatch, object]:
    """Continuum-subtracted spectra: the emission lines of ``make_synthetic`` (same draw
    with and without lines, so the continuum and its noise cancel) plus Gaussian noise
    of ``noise_frac`` of the continuum level."""
    with_lines, truth = make_synthetic(n, snr=1e6, seed=seed, templates=lib)
    stars, _ = make_synthetic(n, snr=1e6, seed=seed, templates=lib, with_lines=False)
    sigma = noise_frac * np.median(np.asarray(stars.flux), axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    flux = np.asarray(with_lines.flux) - np.asarray(stars.flux) + sigma * rng.normal(size=np.shape(stars.flux))
    batch = SpectraBatch(wave=with_lines.wave, flux=flux, ivar=np.broadcast_to(1 / sigma**2, flux.shape),
                         redshift=with_lines.redshift, resolution=with_lines.resolution)  # fmt: skip
    return batch, truth


def test_gas_stage_recovers_line_fluxes_on_a_continuum_subtracted_input(lib: TemplateLibrary) -> None:
    batch, truth = _lines_only(lib, 3, seed=35, noise_frac=0.01)
    _, st = _chunk(batch, lib, FitConfig())
    assert st is not None
    fit_stars(st)
    fit_gas(st)
    gas, setup = st.gas, st.setup
    assert gas.lines is not None and gas.theta is not None
    n0 = gas.cont.cols.shape[-1]
    for lid in ("HB4861", "HA6563", "OIII5007", "NII6584", "SII6716"):
        c = setup.comp[setup.ids.index(lid)]
        flux = (gas.ev.coef[:, n0 + c] * st.scale).numpy()  # component flux, data units x A
        np.testing.assert_allclose(flux, truth.line_flux[lid], rtol=0.02, err_msg=lid)
    # Gas kinematics per group (recombination, forbidden), relative to the input redshift.
    np.testing.assert_allclose(gas.theta[:, 0::2].numpy(), truth.gas_velocity, atol=3.0)
    np.testing.assert_allclose(gas.theta[:, 1::2].numpy(), truth.gas_sigma, rtol=0.05, atol=2.0)
    assert (np.abs(gas.chi2_dof.numpy() - 1) < 0.2).all()


def test_gas_stage_without_lines_fits_the_continuum_only(lib: TemplateLibrary) -> None:
    batch, _ = make_synthetic(2, snr=60, seed=36, templates=lib, with_lines=False)
    _, st = _chunk(batch, lib, FitConfig(fit_gas=False))
    assert st is not None
    fit_stars(st)
    fit_gas(st)
    gas = st.gas
    assert gas.lines is None and gas.theta is None
    assert gas.ev.coef.shape[1] == gas.cont.cols.shape[-1]  # no line components
    # No pixel clipped that the gas stage then fits, and the continuum fits the data.
    assert torch.equal(gas.fit2, st.base & ~st.stars.clipped)
    resid = (st.y - gas.cont_model)[gas.fit2] * st.wfull[gas.fit2].sqrt()
    assert abs(float((resid**2).mean()) - 1) < 0.2
    assert (np.abs(gas.chi2_dof.numpy() - 1) < 0.2).all()


# ---------------------------------------------------------------- outputs stage


def test_outputs_map_the_state_to_chunk_rows_with_flags(lib: TemplateLibrary) -> None:
    batch, _ = make_synthetic(4, snr=40, seed=37, templates=lib)
    ivar, mask = np.array(batch.ivar), np.zeros(np.shape(batch.flux), dtype=np.int64)
    ivar[1, 80:] = 0  # too few pixels: never fitted
    wave_rest = np.asarray(batch.wave) / (1 + np.asarray(batch.redshift))[:, None]
    mask[2, np.abs(wave_rest[2] - LINES["HA6563"].vacuum_wavelength) < 25] = 1  # H-alpha masked out
    config = FitConfig()
    _, st = _chunk(SpectraBatch(wave=batch.wave, flux=batch.flux, ivar=ivar, redshift=batch.redshift, mask=mask,
                                resolution=batch.resolution), lib, config)  # fmt: skip
    assert st is not None and list(st.sel_np) == [0, 2, 3]
    fit_stars(st)
    fit_gas(st)
    st.gas.ev.chi2[2] = float("nan")  # spectrum 3 (fitted row 2): its fit came out non-finite
    out = collect_outputs(st)
    ids = st.setup.ids
    ha, hb, tied, far = (ids.index(x) for x in ("HA6563", "HB4861", "OIII4959", "SIII9532"))
    assert out["velocity"].shape == (4,) and out["line_flux"].shape == (4, len(ids))
    assert out["flags"][1] == SpectrumFlag.TOO_FEW_PIXELS
    assert out["flags"][3] & SpectrumFlag.FIT_FAILED and not (out["flags"][[0, 2]] & SpectrumFlag.FIT_FAILED).any()
    # Fitted spectra land on their own chunk rows; the others are NaN / zero.
    np.testing.assert_array_equal(out["velocity"][[0, 2]], st.stars.v_star[:2].numpy())
    np.testing.assert_array_equal(out["n_pixels"][[0, 2]], st.gas.n_fit[:2].numpy())
    for name in ("velocity", "sigma", "chi2_dof", "snr"):
        assert np.isnan(out[name][[1, 3]]).all(), name
    assert out["n_pixels"][1] == 0 and not out["model_fitmask"][1].any()
    assert np.isnan(out["line_flux"][[1, 3]]).all() and np.isnan(out["model_flux"][3]).all()
    assert (out["line_flags"][3] & LineFlag.SPECTRUM_FAILED).all()
    # Masked line: NO_GOOD_PIXELS and NaN there, the rest of that spectrum measured.
    assert out["line_flags"][2, ha] & LineFlag.NO_GOOD_PIXELS and np.isnan(out["line_flux"][2, ha])
    assert np.isfinite(out["line_flux"][[0, 2], hb]).all() and np.isfinite(out["line_flux"][0, ha])
    assert not out["line_flags"][0, ha] & LineFlag.NO_GOOD_PIXELS
    assert (out["line_flags"][[0, 2], tied] & LineFlag.TIED_FLUX).all()
    assert (out["line_flags"][[0, 2], far] & LineFlag.NOT_IN_RANGE).all()
    # Fluxes are in data units: the scale is put back (stage coefficients x scale).
    n0 = st.gas.cont.cols.shape[-1]
    c = st.setup.comp[hb]
    np.testing.assert_allclose(out["line_flux"][0, hb], float(st.gas.ev.coef[0, n0 + c] * st.scale[0]), rtol=1e-12)
