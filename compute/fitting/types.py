"""Inputs, settings, outputs and flag bits of the batched spectral fit."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "C_KMS",
    "SpectraBatch",
    "FitConfig",
    "SpectrumFlag",
    "LineFlag",
    "FitResult",
    "DOUBLETS",
    "DEFAULT_GAS_GROUPS",
]

#: Speed of light in km/s.
C_KMS = 299792.458

#: Lines whose flux is fixed relative to a parent line: child -> (parent, child/parent).
#: Both lines of each pair share an upper level, so the ratio is A_child*nu_child /
#: (A_parent*nu_parent), independent of density and temperature. Values: [OIII] 5007/4959
#: = 2.98 and [NII] 6584/6548 = 3.05 (Storey & Zeippen 2000, MNRAS 312, 813); [OI]
#: 6300/6364 = 3.1 (from the same kind of A-value ratio, e.g. Froese Fischer & Tachiev
#: 2004; values in use range 3.0-3.1); [SIII] 9532/9069 = 2.47 (A-values of Froese
#: Fischer, Tachiev & Irimia 2006, ADNDT 92, 607, PyNeb's default S III data: 2.469).
DOUBLETS: dict[str, tuple[str, float]] = {
    "OIII4959": ("OIII5007", 1.0 / 2.98),
    "NII6548": ("NII6584", 1.0 / 3.05),
    "OI6364": ("OI6300", 1.0 / 3.1),
    "SIII9069": ("SIII9532", 1.0 / 2.47),
}

#: Kinematic groups of the gas: every line of a group shares one (V, sigma).
#: Recombination lines (H, He) move together; all collisionally excited lines together.
DEFAULT_GAS_GROUPS: dict[str, tuple[str, ...]] = {
    "recombination": ("balmer", "helium"),
    "forbidden": ("forbidden", "auroral"),
}


@dataclass(slots=True)
class SpectraBatch:
    """A batch of 1-D spectra, padded to a common number of pixels.

    Arrays are ``(B, N)`` numpy arrays or torch tensors. ``wave`` is vacuum Angstrom and
    strictly increasing over each spectrum's real pixels (pad with NaN, or with anything
    plus ``mask != 0``). ``mask`` is the survey bitmask (0 = good). ``resolution`` is
    R = lambda/FWHM per pixel; ``None`` or NaN entries fall back to
    ``FitConfig.default_resolution``. ``redshift`` ``(B,)`` is the guess the fit starts
    from. Flux units are arbitrary; line fluxes come back in flux units times Angstrom.
    """

    wave: np.ndarray | torch.Tensor
    flux: np.ndarray | torch.Tensor
    ivar: np.ndarray | torch.Tensor
    redshift: np.ndarray | torch.Tensor
    mask: np.ndarray | torch.Tensor | None = None
    resolution: np.ndarray | torch.Tensor | None = None

    def __len__(self) -> int:
        return int(np.shape(self.flux)[0])


@dataclass(frozen=True, slots=True)
class FitConfig:
    """Settings of the fit. Velocities and dispersions in km/s."""

    #: Log-lambda step of the fit, km/s; ``None`` keeps the spectra's own step when they
    #: are log-sampled (no resampling, no correlated noise), else c*ln(lmax/lmin)/N.
    velscale: float | None = None
    #: R = lambda/FWHM used where a spectrum gives no resolution.
    default_resolution: float = 2000.0
    #: Continuum model (docs/lines_validation.md, "Continuum model"): the shipped template
    #: library used when ``fit_spectra`` gets none (``emiles``: SSPs; ``mileshc``: stars),
    #: and the polynomials. The default is pPXF's recommendation for gas: SSPs, no
    #: additive polynomial (it can fill Balmer absorption and so bias the Balmer lines),
    #: a multiplicative one for the flux calibration.
    templates: str = "emiles"
    #: Additive Legendre polynomial degree (stellar stage; -1 = none).
    degree: int = -1
    #: Multiplicative Legendre polynomial degree (stellar stage; 0 = none). It multiplies
    #: the template mix (pPXF's convention) and is kept as fitted in the gas stage.
    mdegree: int = 10
    #: Additive Legendre polynomial degree of the gas stage (continuum under the lines).
    gas_degree: int = -1
    #: Refit the multiplicative polynomial (to first order) together with the lines in
    #: the gas stage (:mod:`.gas`). Off by default: the real-spectrum ratios meet the
    #: pPXF targets without it (docs/lines_vs_ppxf_gas.md), and with second components
    #: it let broad Balmer components fit template mismatch at the Balmer absorption
    #: lines (3 of 16 one-component spectra, half of MILESHC fitted with the other half).
    #: On, broad Balmer fluxes are no longer 30-40 % low (docs/lines_validation.md, 8).
    gas_mpoly: bool = False
    #: Half-width of the coarse velocity search around the guess, and its step.
    v_search: float = 1000.0
    v_step: float | None = None  # None: one pixel
    #: Dispersions tried on the coarse grid, and the bounds of the fit.
    sigma_grid: tuple[float, ...] = (60.0, 150.0, 300.0)
    sigma_min: float = 1.0
    sigma_max: float = 1000.0
    #: Gas: coarse velocity grid half-width (around the stellar V) and step, start sigma.
    gas_v_search: float = 300.0
    gas_v_step: float = 40.0
    gas_sigma_start: float = 60.0
    gas_sigma_max: float = 800.0
    gas_groups: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_GAS_GROUPS))
    #: Lines to fit (ids of :mod:`skyledger.schema.linelist`); ``None`` = all.
    lines: tuple[str, ...] | None = None
    #: Half-width (km/s) of the windows around emission lines masked in the stellar stage.
    line_mask_kms: float = 400.0
    #: Outlier clipping on the stellar stage: threshold (in residual rms) and rounds.
    clip_sigma: float = 3.0
    clip_iterations: int = 2
    #: Levenberg-Marquardt iterations and tolerance on the relative chi^2 change.
    max_iter: int = 20
    tol: float = 1e-7
    #: Fewest good pixels a spectrum needs, and a line needs within +-3 sigma of its centre.
    min_pixels: int = 100
    min_line_pixels: int = 3
    #: Spectra per chunk; ``None``: 8 on CPU (the working set then stays in cache, which
    #: measured faster per spectrum than larger chunks), 256 on CUDA. A chunk holds
    #: ~chunk*K*N*40 bytes (K templates, N pixels), ~0.6 GB for 256 MaNGA spectra.
    chunk_size: int | None = None
    #: Number of eigen-templates used on the coarse velocity grid.
    n_eigen: int = 6
    #: Fit emission lines (stage 2); ``False`` gives stellar kinematics only.
    fit_gas: bool = True
    #: A line is detected when flux/flux_err >= this; below it the line is flagged
    #: NOT_DETECTED and gets an upper limit of max(flux, 0) + limit_sigma * flux_err.
    detect_snr: float = 3.0
    limit_sigma: float = 3.0
    #: Lines outside the templates' range but on good pixels (e.g. [SIII]9069, 9532) are
    #: fitted over a local polynomial continuum of this degree within +-local_window_kms
    #: of the line, with their gas group's kinematics (:mod:`.local_lines`); ``False``
    #: leaves them NOT_IN_RANGE.
    local_lines: bool = True
    local_degree: int = 1
    local_window_kms: float = 4000.0
    #: Second kinematic components (:mod:`.components`): "none", or "auto" to try a broad
    #: Balmer and an [OIII] outflow component and keep each where Delta BIC exceeds
    #: ``components_min_delta_bic``.
    components: str = "none"
    components_min_delta_bic: float = 10.0


class SpectrumFlag(enum.IntFlag):
    """Bits of ``FitResult.flags``; any bit but TEMPLATE_RES_WORSE means distrust numbers."""

    NO_GOOD_PIXELS = 1 << 0  #: no pixel survives mask/ivar/finite checks: results NaN
    TOO_FEW_PIXELS = 1 << 1  #: fewer than min_pixels good pixels overlap the templates: NaN
    FIT_FAILED = 1 << 2  #: a linear solve failed or produced non-finite numbers: NaN
    NOT_CONVERGED = 1 << 3  #: the stellar Levenberg-Marquardt hit max_iter
    SIGMA_AT_BOUND = 1 << 4  #: stellar sigma at sigma_min or sigma_max
    VELOCITY_AT_BOUND = 1 << 5  #: stellar V at the edge of the search window
    TEMPLATE_RES_WORSE = 1 << 6  #: templates are coarser than the data over most pixels
    NO_CONTINUUM = 1 << 7  #: all template weights zero (continuum is polynomial only)
    BAD_REDSHIFT = 1 << 8  #: redshift guess missing or not finite: results NaN
    #: set by the `lines` task, not the fit: the input's errors are the reader's estimate
    ERRORS_ESTIMATED = 1 << 9


class LineFlag(enum.IntFlag):
    """Bits of ``FitResult.line_flags``."""

    NOT_IN_RANGE = 1 << 0  #: line outside the fitted range (or not requested): NaN
    NO_GOOD_PIXELS = 1 << 1  #: fewer than min_line_pixels good pixels on the line: NaN
    ZERO_FLUX = 1 << 2  #: non-negativity bound active: flux 0, flux_err an upper-limit scale
    TIED_FLUX = 1 << 3  #: flux fixed by a doublet ratio to its parent line
    SIGMA_AT_BOUND = 1 << 4  #: the group's sigma is at a bound
    KINEMATICS_UNCONSTRAINED = 1 << 5  #: no line of the group has flux: V, sigma NaN
    SPECTRUM_FAILED = 1 << 6  #: the spectrum's fit failed: everything NaN
    NO_CONTINUUM = 1 << 7  #: continuum <= 0 at the line: EW NaN
    #: set by the `lines` task, not the fit: the input's errors are the reader's estimate
    ERRORS_ESTIMATED = 1 << 8
    NOT_DETECTED = 1 << 9  #: flux/flux_err < FitConfig.detect_snr: use line_flux_limit
    LOCAL_CONTINUUM = 1 << 10  #: beyond the templates: fitted over a local polynomial continuum
    #: the chosen model gives the line a second kinematic component (``line2_*``)
    SECOND_COMPONENT = 1 << 11
    #: a second component was tried on the line and rejected by the Delta BIC criterion
    COMPONENT_REJECTED = 1 << 12


@dataclass(slots=True)
class FitResult:
    """Per-spectrum ``(B,)`` and per-line ``(B, L)`` results as float64/int64 numpy arrays.

    Velocities are c*ln((1+z)/(1+z_ref)) ("log velocities", additive and exact on a log
    grid). Stellar V is relative to the input redshift; ``z`` = (1+z_in)*exp(V/c) - 1.
    Line velocities are relative to the stellar z. Sigmas are intrinsic (instrumental
    removed). Line fluxes are in input flux units times Angstrom (observed frame); EW is
    rest-frame Angstrom, positive for emission. Errors are 1-sigma, scaled by
    sqrt(chi2/dof) (by sqrt(max(chi2/dof, 1)) for spectra resampled onto the log grid,
    whose correlated noise alone gives chi2/dof < 1). Missing values are NaN, with a flag
    bit saying why.
    """

    line_ids: tuple[str, ...]
    velocity: np.ndarray
    velocity_err: np.ndarray
    sigma: np.ndarray
    sigma_err: np.ndarray
    z: np.ndarray
    chi2_dof: np.ndarray  #: final (stars + gas) reduced chi^2
    stellar_chi2_dof: np.ndarray  #: stellar stage, emission lines masked
    snr: np.ndarray  #: median flux*sqrt(ivar) over fitted pixels
    n_pixels: np.ndarray  #: pixels in the final fit
    flags: np.ndarray
    line_velocity: np.ndarray
    line_velocity_err: np.ndarray
    line_sigma: np.ndarray
    line_sigma_err: np.ndarray
    line_flux: np.ndarray
    line_flux_err: np.ndarray
    line_ew: np.ndarray
    line_snr: np.ndarray
    line_z: np.ndarray
    line_flags: np.ndarray
    #: Best-fit model on the log grid the fit used (``(B, M)``), for plots and checks.
    model_wave: np.ndarray | None = None
    model_flux: np.ndarray | None = None
    model_stars: np.ndarray | None = None
    model_fitmask: np.ndarray | None = None
    #: Upper limit on the flux where the line is NOT_DETECTED (NaN elsewhere):
    #: max(flux, 0) + FitConfig.limit_sigma * flux_err.
    line_flux_limit: np.ndarray | None = None
    #: Error of line_ew, from the flux and continuum covariance of the fit.
    line_ew_err: np.ndarray | None = None
    #: Second kinematic component of each line ``(B, L)`` (``FitConfig.components``),
    #: at the column of its narrow line; NaN (flags 0) where the chosen model has none.
    #: ``line_*`` then hold the narrow component; the line's total flux is the sum.
    line2_velocity: np.ndarray | None = None
    line2_velocity_err: np.ndarray | None = None
    line2_sigma: np.ndarray | None = None
    line2_sigma_err: np.ndarray | None = None
    line2_flux: np.ndarray | None = None
    line2_flux_err: np.ndarray | None = None
    line2_ew: np.ndarray | None = None
    line2_snr: np.ndarray | None = None
    line2_z: np.ndarray | None = None
    line2_flags: np.ndarray | None = None
    #: Non-parametric velocities of the total line profile ``(B, L)``, km/s, intrinsic:
    #: 10 % and 90 % of the flux lie below v10, v90 (frame of ``line_velocity``); W80 =
    #: v90 - v10 (2.563 sigma for one Gaussian).
    line_v10: np.ndarray | None = None
    line_v90: np.ndarray | None = None
    line_w80: np.ndarray | None = None
    #: Chosen gas model ``(B,)``: -1 components not tried, else bits 1 = broad Balmer
    #: component, 2 = [OIII] outflow component (0: one component).
    gas_model: np.ndarray | None = None
    #: Delta BIC of the broad and outflow components ``(B,)`` (kept where above
    #: ``FitConfig.components_min_delta_bic``); NaN where not tried.
    delta_bic_broad: np.ndarray | None = None
    delta_bic_outflow: np.ndarray | None = None

    def line_index(self, line_id: str) -> int:
        """Column of ``line_id`` in the per-line arrays."""
        return self.line_ids.index(line_id)
