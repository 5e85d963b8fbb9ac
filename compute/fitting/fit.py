"""Batched full-spectrum fit: stellar kinematics, then tied Gaussian emission lines.

Each chunk of spectra goes through three stages over one :class:`.chunk.ChunkState`
(:func:`.chunk.prepare_chunk` puts it on the templates' log grid):

- :mod:`.stellar` fits the stellar continuum (non-negative template mix convolved with a
  Gaussian LOSVD, plus an additive Legendre polynomial) with the emission-line windows
  masked: a coarse (V, sigma) grid with a few eigen-templates finds the basin,
  Levenberg-Marquardt by variable projection converges, outliers are clipped and the fit
  repeated;
- :mod:`.gas` keeps the stellar kinematics, refits the template weights together with the
  emission lines (non-negative fluxes, doublets at fixed ratios) and a polynomial, and
  optimises one (V, sigma) per gas group;
- :mod:`.components` (``FitConfig.components = "auto"``) tries a broad Balmer and an
  [OIII] outflow component on top of the gas stage's lines and keeps each where the
  Bayesian information criterion says so;
- :mod:`.outputs` turns the fitted state into the result arrays and flags;
- :mod:`.local_lines` fits the lines beyond the templates' range (e.g. [SIII]9069) over
  a local polynomial continuum with their group's kinematics.

Both fitting stages work on the templates in use; every left-out template is checked
against the NNLS optimality (KKT) conditions and joins when it fails them
(:mod:`.library`), so the answer is the full library's at a fraction of the cost.
Everything is float64 (see :mod:`.chunk`).
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

import numpy as np
import torch

from .chunk import prepare_chunk
from .components import LINE_FIELDS, fit_components, nonparametric_widths
from .gas import fit_gas
from .linesetup import LineSetup, line_setup
from .local_lines import fit_local_lines
from .outputs import collect_outputs
from .prepare import LogSpectra, prepare_batch
from .stellar import fit_stars
from .templates import LogTemplates, TemplateLibrary
from .types import C_KMS, FitConfig, FitResult, LineFlag, SpectraBatch, SpectrumFlag
from .workers import shutdown_pool, worker_pool

__all__ = ["fit_spectra"]


def fit_spectra(
    batch: SpectraBatch,
    templates: TemplateLibrary | None = None,
    config: FitConfig | None = None,
    device: str | torch.device = "cpu",
    workers: int = 1,
) -> FitResult:
    """Fit stellar kinematics and emission lines of every spectrum in ``batch``.

    Spectra that cannot be fitted come back as NaN with :class:`SpectrumFlag` bits set;
    they never stop the rest of the batch. ``templates`` defaults to the shipped library
    ``config.templates`` names.
    ``workers`` > 1 fits the chunks in that many single-thread processes (CPU only; the
    results are the same as in one process).
    """
    config = config or FitConfig()
    if config.components not in ("none", "auto"):
        raise ValueError(f"FitConfig.components is {config.components!r}; use 'none' or 'auto'")
    templates = templates or TemplateLibrary.named(config.templates)
    dev = torch.device(device)
    spectra = prepare_batch(batch, config)
    lt = _covering(templates.on_log_grid(spectra.dln, config.n_eigen), spectra, config)
    setup = line_setup(config)
    nb, nl = len(spectra.redshift), len(setup.ids)
    res = _empty_result(nb, setup.ids, lt.size)
    res.flags[:] = spectra.flags
    fittable = np.flatnonzero(spectra.flags == 0)
    chunk = config.chunk_size or (256 if dev.type == "cuda" else 8)
    chunks = [fittable[start : start + chunk] for start in range(0, len(fittable), chunk)]
    if workers > 1 and dev.type == "cpu" and len(chunks) > 1:
        # One job per chunk, so a slow chunk does not hold a whole share back.
        jobs = [(spectra.take(idx), lt, setup, config) for idx in chunks]
        try:
            outs = list(worker_pool(workers).map(_fit_job, jobs))
        except BrokenProcessPool:
            shutdown_pool()  # a worker died (killed, out of memory): the next fit starts afresh
            raise
    else:
        outs = (_fit_chunk(spectra, idx, lt, setup, config, dev) for idx in chunks)
    for idx, out in zip(chunks, outs):
        for name, values in out.items():
            getattr(res, name)[idx] = values
    # A spectrum that failed before the line stage gets every line flagged.
    failed = (res.flags & (SpectrumFlag.NO_GOOD_PIXELS | SpectrumFlag.TOO_FEW_PIXELS | SpectrumFlag.FIT_FAILED | SpectrumFlag.BAD_REDSHIFT)) != 0
    res.line_flags[failed] |= LineFlag.SPECTRUM_FAILED
    if nl:
        for name in LINE_FIELDS:
            getattr(res, f"line_{name}")[failed] = np.nan
            getattr(res, f"line2_{name}")[failed] = np.nan
        res.line_flux_limit[failed] = np.nan
        res.line_ew_err[failed] = np.nan
        res.line2_flags[failed] = 0
    nonparametric_widths(res)
    return res


def _covering(lt: LogTemplates, spectra: LogSpectra, config: FitConfig) -> LogTemplates:
    """The templates' grid cut to the batch's rest-frame pixels plus twice the margin the
    fit keeps from the template edges (:func:`.chunk.prepare_chunk`).

    The work frame is the templates' grid, so every transform and product runs over it:
    a library wider than the data (E-MILES' 3540-8950 A against a SAMI red arm's
    1200 A) would otherwise cost in proportion to the library, not to the data.
    """
    fittable = spectra.flags == 0
    if not fittable.any():
        return lt
    good = spectra.good[fittable]
    cols = np.arange(good.shape[1])
    first = np.where(good.any(1), np.argmax(good, axis=1), 0)
    last = np.where(good.any(1), good.shape[1] - 1 - np.argmax(good[:, ::-1], axis=1), cols[-1])
    rest0 = spectra.ln0[fittable] - np.log1p(spectra.redshift[fittable])
    margin = 2.0 * (1.5 * config.v_search + 3.0 * max(config.sigma_grid)) / C_KMS + 4 * spectra.dln
    return lt.window(float((rest0 + first * spectra.dln).min() - margin), float((rest0 + last * spectra.dln).max() + margin))


def _fit_job(job: tuple[LogSpectra, LogTemplates, LineSetup, FitConfig]) -> dict[str, np.ndarray]:
    """One chunk (all of ``spectra``) in a worker process."""
    spectra, lt, setup, config = job
    return _fit_chunk(spectra, np.arange(len(spectra.redshift)), lt, setup, config, torch.device("cpu"))


def _empty_result(nb: int, ids: tuple[str, ...], nmod: int) -> FitResult:
    def nan(*shape: int) -> np.ndarray:
        return np.full(shape, np.nan)

    nl = len(ids)
    return FitResult(
        line_ids=ids,
        velocity=nan(nb), velocity_err=nan(nb), sigma=nan(nb), sigma_err=nan(nb), z=nan(nb),
        chi2_dof=nan(nb), stellar_chi2_dof=nan(nb), snr=nan(nb),
        n_pixels=np.zeros(nb, dtype=np.int64), flags=np.zeros(nb, dtype=np.int64),
        line_velocity=nan(nb, nl), line_velocity_err=nan(nb, nl), line_sigma=nan(nb, nl),
        line_sigma_err=nan(nb, nl), line_flux=nan(nb, nl), line_flux_err=nan(nb, nl),
        line_ew=nan(nb, nl), line_snr=nan(nb, nl), line_z=nan(nb, nl),
        line_flags=np.zeros((nb, nl), dtype=np.int64),
        model_wave=nan(nb, nmod), model_flux=nan(nb, nmod), model_stars=nan(nb, nmod),
        model_fitmask=np.zeros((nb, nmod), dtype=bool), line_flux_limit=nan(nb, nl), line_ew_err=nan(nb, nl),
        line2_velocity=nan(nb, nl), line2_velocity_err=nan(nb, nl), line2_sigma=nan(nb, nl),
        line2_sigma_err=nan(nb, nl), line2_flux=nan(nb, nl), line2_flux_err=nan(nb, nl),
        line2_ew=nan(nb, nl), line2_snr=nan(nb, nl), line2_z=nan(nb, nl),
        line2_flags=np.zeros((nb, nl), dtype=np.int64), line_v10=nan(nb, nl), line_v90=nan(nb, nl),
        line_w80=nan(nb, nl), gas_model=np.full(nb, -1, dtype=np.int64), delta_bic_broad=nan(nb),
        delta_bic_outflow=nan(nb),
    )  # fmt: skip


def _fit_chunk(
    spectra: LogSpectra,
    idx: np.ndarray,
    lt: LogTemplates,
    setup: LineSetup,
    config: FitConfig,
    dev: torch.device,
) -> dict[str, np.ndarray]:
    """Fit one chunk; returns per-field arrays for the spectra ``idx``."""
    flags, state = prepare_chunk(spectra, idx, lt, setup, config, dev)
    if state is None:
        return {"flags": flags}
    fit_stars(state)
    fit_gas(state)
    out = fit_components(state) if config.components == "auto" else collect_outputs(state)
    fit_local_lines(state, spectra, idx, out)
    return out
