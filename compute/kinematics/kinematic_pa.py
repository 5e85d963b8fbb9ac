"""The kinematic geometry of a velocity field, read from the field itself: centre,
systemic velocity and kinematic position angle, batched over galaxies.

What the disk fit starts from (:mod:`.initial_guess`) and what it is checked against
(``pa_kin``, flag PA_KIN_DISAGREES).  A plane through all points, the start used before,
is pulled by patchy coverage and by beam smearing, and the global median velocity by a
map with more pixels on one side than the other; the estimates here use symmetry instead.

* Centre: first the flux-weighted centroid of the brightest fifth of the points where
  fluxes are known (at least 5 positive), else the reference (0, 0); then the kinematic
  centre: the trial centre (5 x 5 within 0.3 half-widths of the map around the first,
  then 3 x 3 at half the step around the best) about which the field is most nearly point-antisymmetric, V(p) + V(2c - p) = 2 V_sys,
  since clumps pull the flux centroid off the dynamical centre.
* Systemic velocity: the weighted median of the pair means (V(p) + V(2c - p)) / 2 about
  that centre, or, with fewer than 6 pairs, the weighted (1 / sigma^2) median velocity of
  the points nearest the centre (the closest tenth, at least 5).  On a lopsided map the
  global median follows the side with more pixels; pairs and the centre do not.
* Kinematic PA: the symmetric-model method of Krajnovic et al. (2006, MNRAS 366, 787,
  appendix C).  A thin rotating disk is symmetric about its major axis (V(a, b) = V(a, -b))
  and antisymmetric about its minor axis (V(a, b) - V_sys = -(V(-a, b) - V_sys)).  For each
  trial PA the field is compared with its two mirror images; the PA where they agree best
  (least chi^2) is the kinematic major axis, and the receding side is the half-plane where
  V > V_sys.  The points are scattered, so the field is first binned on a G x G grid
  centred on the centre (G ~ sqrt(points), 8 to 32) and smoothed by a normalised
  convolution with a 3 x 3 Gaussian (sigma 0.6 cell), which fills gaps of about a cell;
  the mirror images are bilinear samples of that grid, and cells without data within that
  radius do not count.  Trial PAs: every 10 deg over 180 deg, then every 1 deg within 5 deg
  of the best, and a parabola through the three around the minimum.  The minor-axis mirror
  takes the V_sys that best fits its own pairs at each trial PA, so the PA does not depend
  on the V_sys estimate; the major-axis mirror does not involve V_sys at all.
* Error of the PA: the chi^2 curve is scaled so that its minimum is one per occupied cell
  (the scatter about the symmetric model sets the unit), and the error is where the
  parabola of the scaled chi^2 rises by 1.  Independent cells, not points, are counted,
  since neighbouring points of a beam-smeared map are not independent: a quarter of the
  occupied cells, as the 3 x 3 smoothing shares each value among about 2 x 2 cells, or
  one per PSF area (1.133 FWHM^2) where the PSF is known and larger.

The implementation is this project's own (no code from ``pafit``); benchmarks/
rotation_kinematic_pa.py compares it with Cappellari's ``fit_kinematic_pa``.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["KinematicGeometry", "kinematic_geometry"]

_COARSE_STEP_DEG = 10.0
_FINE_HALF_DEG = 5
_MIN_CELLS = 6  # occupied cells needed for a PA
_CELLS_PER_INDEPENDENT = 4.0
_CENTRE_SEARCH = 0.3  # kinematic-centre search, in half-widths of the grid


@dataclass
class KinematicGeometry:
    """Per galaxy ``(B,)``: centre offsets (arcsec), V_sys (km/s), receding kinematic PA
    (radians, [0, 2 pi); NaN where it cannot be measured) and its error (radians)."""

    x0: torch.Tensor
    y0: torch.Tensor
    vsys: torch.Tensor
    pa: torch.Tensor
    pa_err: torch.Tensor


def _weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted median per row; weights 0 mark points that do not count (NaN if none)."""
    order = torch.argsort(torch.where(weights > 0, values, torch.full_like(values, float("inf"))), dim=-1)
    v = torch.gather(values, -1, order)
    w = torch.gather(weights, -1, order)
    cum = w.cumsum(-1)
    total = cum[:, -1:]
    idx = (cum < 0.5 * total).sum(-1, keepdim=True).clamp_max(values.shape[-1] - 1)
    out = torch.gather(v, -1, idx).squeeze(-1)
    return torch.where(total.squeeze(-1) > 0, out, torch.full_like(out, float("nan")))


def _centre(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, flux: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    zeros = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if flux is None:
        return zeros, zeros
    ok = mask & torch.isfinite(flux) & (flux > 0)
    f = torch.where(ok, flux, torch.zeros_like(flux))
    n_ok = ok.sum(-1)
    # the brightest fifth (at least 5) of the points with a positive flux
    k = (n_ok.to(x.dtype) * 0.2).ceil().clamp_min(5)
    rank = torch.argsort(torch.argsort(-f, dim=-1), dim=-1)
    top = ok & (rank < k.unsqueeze(-1))
    w = torch.where(top, f, torch.zeros_like(f))
    sw = w.sum(-1).clamp_min(1e-30)
    use = n_ok >= 5
    return (torch.where(use, (w * x).sum(-1) / sw, zeros), torch.where(use, (w * y).sum(-1) / sw, zeros))


def _central_vsys(x, y, v, weight, mask, x0, y0) -> torch.Tensor:  # type: ignore[no-untyped-def]
    r2 = torch.where(mask, (x - x0[:, None]) ** 2 + (y - y0[:, None]) ** 2, torch.full_like(x, float("inf")))
    n = mask.sum(-1)
    k = (n.to(x.dtype) * 0.1).ceil().clamp_min(5)
    rank = torch.argsort(torch.argsort(r2, dim=-1), dim=-1)
    near = mask & (rank < k.unsqueeze(-1))
    return _weighted_median(v, torch.where(near, weight, torch.zeros_like(weight)))


def _grid(x, y, v, weight, mask, x0, y0, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
    """(smoothed field ``(B, 2, G, G)`` = [sum w v, sum w] after the normalised convolution,
    half-width L ``(B,)``, occupied cells ``(B, G, G)``)."""
    nb = x.shape[0]
    dx, dy = x - x0[:, None], y - y0[:, None]
    half = torch.where(mask, torch.maximum(dx.abs(), dy.abs()), torch.zeros_like(dx)).amax(-1).clamp_min(1e-3) * (1 + 1e-6)
    col = ((dx / half[:, None] + 1) * 0.5 * size).floor().clamp(0, size - 1).long()
    row = ((dy / half[:, None] + 1) * 0.5 * size).floor().clamp(0, size - 1).long()
    idx = torch.where(mask, row * size + col, torch.zeros_like(row))
    w = torch.where(mask, weight, torch.zeros_like(weight))
    sums = torch.zeros(nb, 2, size * size, dtype=x.dtype, device=x.device)
    sums[:, 0].scatter_add_(-1, idx, w * torch.where(mask, v, torch.zeros_like(v)))
    sums[:, 1].scatter_add_(-1, idx, w)
    sums = sums.view(nb, 2, size, size)
    occupied = sums[:, 1] > 0
    g = torch.tensor([math.exp(-0.5 / 0.36), 1.0, math.exp(-0.5 / 0.36)], dtype=x.dtype, device=x.device)
    kernel = (g[:, None] * g[None, :]).expand(2, 1, 3, 3).contiguous()
    smooth = F.conv2d(sums, kernel, padding=1, groups=2)
    return smooth, half, occupied


def _cells(size: int, dt: torch.dtype, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres ``(1, 1, G^2)`` in grid units [-1, 1] (x: columns, y: rows)."""
    c = (torch.arange(size, dtype=dt, device=dev) * 2 + 1) / size - 1
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    return cx.reshape(1, 1, -1), cy.reshape(1, 1, -1)


def _sample(smooth: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(velocity, coverage) ``(B, K, G^2)`` of the smoothed field at grid positions
    ``gx``, ``gy`` ``(B, K, G^2)``; coverage is False where no data lie within about a cell."""
    nb = smooth.shape[0]
    sampled = F.grid_sample(smooth, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros", align_corners=False)
    ref_w = sampled[:, 1]
    have = ref_w > 0.05 * smooth[:, 1].amax((-1, -2)).view(nb, 1, 1)
    return sampled[:, 0] / ref_w.clamp_min(1e-30), have


def _own(smooth: torch.Tensor, occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    nb = smooth.shape[0]
    value = smooth[:, 0] / smooth[:, 1].clamp_min(1e-30)
    return value.reshape(nb, 1, -1), occupied.reshape(nb, 1, -1)


def _point_symmetry(smooth: torch.Tensor, occupied: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chi^2, cells compared) ``(B, K)`` of V(p) + V(2c - p) = 2 V_sys about trial centres
    ``centres`` ``(B, K, 2)`` (grid units), each with the V_sys its pairs prefer."""
    cx, cy = _cells(smooth.shape[-1], smooth.dtype, smooth.device)
    ox, oy = centres[..., 0:1], centres[..., 1:2]
    ref, have = _sample(smooth, 2 * ox - cx, 2 * oy - cy)
    v_own, own = _own(smooth, occupied)
    m = (own & have).to(smooth.dtype)
    total = v_own + ref
    n = m.sum(-1)
    mean = (m * total).sum(-1) / n.clamp_min(1)
    return (m * (total - mean.unsqueeze(-1)) ** 2).sum(-1), n


def _mirror_chi2(
    smooth: torch.Tensor, occupied: torch.Tensor, angles: torch.Tensor, centre: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chi^2 ``(B, T)`` of the field against its two mirror images at trial PAs ``angles``
    ``(B, T)`` about ``centre`` ``(B, 2)`` (grid units), cells compared ``(B, T)``)."""
    nt = angles.shape[1]
    cx, cy = _cells(smooth.shape[-1], smooth.dtype, smooth.device)
    ox, oy = centre[:, 0:1, None], centre[:, 1:2, None]
    px, py = cx - ox, cy - oy
    s, co = torch.sin(angles).unsqueeze(-1), torch.cos(angles).unsqueeze(-1)
    a = px * s + py * co  # major-axis coordinate of each cell
    # mirror about the major axis: (a, b) -> (a, -b), i.e. p -> 2 a u - p; about the minor
    # axis: (a, b) -> (-a, b), the point reflection of that
    mx, my = 2 * a * s - px, 2 * a * co - py
    ref, have = _sample(smooth, torch.cat([ox + mx, ox - mx], 1), torch.cat([oy + my, oy - my], 1))
    v_own, own = _own(smooth, occupied)
    m_maj = (own & have[:, :nt]).to(smooth.dtype)
    m_min = (own & have[:, nt:]).to(smooth.dtype)
    d_major = (v_own - ref[:, :nt]) ** 2
    # the minor-axis mirror: V + V_mirror = 2 V_sys, with the V_sys its own pairs prefer
    total = v_own + ref[:, nt:]
    n_min = m_min.sum(-1)
    mean = (m_min * total).sum(-1) / n_min.clamp_min(1)
    d_minor = (total - mean.unsqueeze(-1)) ** 2
    chi2 = (m_maj * d_major).sum(-1) + (m_min * d_minor).sum(-1)
    return chi2, m_maj.sum(-1) + n_min


def _mean_chi2(chi2: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    # Trial PAs that compare far fewer cells than the best-covered one would win by having
    # less to fit: they do not count.
    enough = n >= 0.6 * n.amax(-1, keepdim=True)
    return torch.where(enough & (n > 0), chi2 / n.clamp_min(1), torch.full_like(chi2, float("inf")))


def kinematic_geometry(
    x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor,
    flux: torch.Tensor | None = None, psf_fwhm: torch.Tensor | None = None,
) -> KinematicGeometry:
    """Centre, V_sys and kinematic PA of each galaxy of a padded ``(B, N)`` batch (see the
    module docstring); ``sigma`` are the velocity errors (floor included, > 0), ``psf_fwhm``
    ``(B,)`` arcsec (0 or NaN: none) sets the independent area behind ``pa_err``."""
    nb = x.shape[0]
    dt, dev = x.dtype, x.device
    mask = mask & torch.isfinite(x) & torch.isfinite(y) & torch.isfinite(v)
    zero = lambda t: torch.where(mask, t, torch.zeros_like(t))  # noqa: E731
    x, y, v = zero(x), zero(y), zero(v)
    sigma = torch.where(mask & torch.isfinite(sigma), sigma, torch.ones_like(sigma))
    weight = torch.where(mask, 1.0 / sigma.clamp_min(1e-6) ** 2, torch.zeros_like(sigma))
    x0, y0 = _centre(x, y, mask, flux)
    n_used = mask.sum(-1)
    nan = torch.full((nb,), float("nan"), dtype=dt, device=dev)
    if nb == 0 or int(n_used.max()) < _MIN_CELLS:
        vsys = torch.nan_to_num(_central_vsys(x, y, v, weight, mask, x0, y0))
        return KinematicGeometry(x0, y0, vsys, nan, nan)

    size = int(min(32, max(8, round(math.sqrt(float(n_used.float().median().clamp_min(1)))))))
    # equal weights within a cell's average: the 1 / sigma^2 weights pick the velocity of
    # a cell; each cell then counts once in chi^2 (unit scale set below)
    smooth, half, occupied = _grid(x, y, v, weight, mask, x0, y0, size)
    # The symmetry search in float32 (the velocities are known to far worse than 1e-7
    # relative), so that its (B, trials, cells) arrays cost half.
    work = torch.float32 if dt == torch.float64 else dt
    smooth = smooth.to(work)

    # Kinematic centre: the trial centre about which the field is most nearly point-
    # antisymmetric, searched within 0.3 half-widths of the first centre on a 5 x 5 grid,
    # then on a 3 x 3 grid of half the step around the best.
    centre = torch.zeros(nb, 2, dtype=work, device=dev)
    for half_range in (_CENTRE_SEARCH, 0.5 * _CENTRE_SEARCH / 2):
        steps = torch.linspace(-half_range, half_range, 5 if half_range == _CENTRE_SEARCH else 3, dtype=work, device=dev)
        oy, ox = torch.meshgrid(steps, steps, indexing="ij")
        trial = centre.unsqueeze(1) + torch.stack([ox.reshape(-1), oy.reshape(-1)], -1)
        chi2_k, n_k = _point_symmetry(smooth, occupied, trial)
        best_k = _mean_chi2(chi2_k, n_k).argmin(-1)
        centre = trial[torch.arange(nb, device=dev), best_k]  # (B, 2) grid units
    paired = n_k.gather(1, best_k.unsqueeze(-1)).squeeze(-1) >= _MIN_CELLS
    centre_dt = centre.to(dt)
    x_k = torch.where(paired, x0 + centre_dt[:, 0] * half, x0)
    y_k = torch.where(paired, y0 + centre_dt[:, 1] * half, y0)
    centre = torch.where(paired.unsqueeze(-1), centre, torch.zeros_like(centre))
    # V_sys: the weighted median of the pair means (V(p) + V(2c - p)) / 2 about that centre,
    # which a lopsided map does not bias; without pairs, the points nearest the centre.
    cx, cy = _cells(size, work, dev)
    ref, have = _sample(smooth, 2 * centre[:, 0:1, None] - cx, 2 * centre[:, 1:2, None] - cy)
    v_own, own = _own(smooth, occupied)
    pair_w = torch.where(own & have, smooth[:, 1].reshape(nb, 1, -1), torch.zeros_like(ref)).squeeze(1)
    vsys_pairs = _weighted_median((0.5 * (v_own + ref)).squeeze(1), pair_w).to(dt)
    vsys_near = torch.nan_to_num(_central_vsys(x, y, v, weight, mask, x_k, y_k))
    vsys = torch.where(paired & torch.isfinite(vsys_pairs), vsys_pairs, vsys_near)
    x0, y0 = x_k, y_k

    coarse = torch.deg2rad(torch.arange(0.0, 180.0, _COARSE_STEP_DEG, dtype=work, device=dev)).expand(nb, -1)
    chi2_c, n_c = _mirror_chi2(smooth, occupied, coarse, centre)
    best = _mean_chi2(chi2_c, n_c).argmin(-1)
    offsets = torch.deg2rad(torch.arange(-_FINE_HALF_DEG, _FINE_HALF_DEG + 1, dtype=work, device=dev))
    fine = coarse.gather(1, best.unsqueeze(-1)) + offsets
    chi2_f, n_f = _mirror_chi2(smooth, occupied, fine, centre)
    mean_f = _mean_chi2(chi2_f, n_f).to(dt)
    fine = fine.to(dt)
    k = mean_f.argmin(-1).clamp(1, offsets.numel() - 2)
    y_m, y_0, y_p = (mean_f.gather(1, (k + d).unsqueeze(-1)).squeeze(-1) for d in (-1, 0, 1))
    step = math.radians(1.0)
    curv = (y_p - 2 * y_0 + y_m) / step**2
    shift = torch.where(curv > 0, 0.5 * (y_m - y_p) / (y_p - 2 * y_0 + y_m).clamp_min(1e-30), torch.zeros_like(curv))
    shift = torch.nan_to_num(shift).clamp(-1.0, 1.0) * step
    pa = fine.gather(1, k.unsqueeze(-1)).squeeze(-1) + shift
    # Scaled chi^2: its minimum is one per independent cell, so a rise of 1 is one sigma.
    # The 3 x 3 smoothing correlates neighbours: (sum k)^2 / sum k^2 = 2.0 cells per axis
    # share one independent value, so a quarter of the occupied cells are independent.
    per_independent = torch.full_like(half, _CELLS_PER_INDEPENDENT)
    if psf_fwhm is not None:
        # A beam-smeared map has one independent value per PSF area, 1.133 FWHM^2.
        beam = 1.1331 * torch.nan_to_num(psf_fwhm.to(dt), nan=0.0) ** 2
        per_independent = torch.maximum(per_independent, beam / (2 * half / size) ** 2)
    n_occupied = occupied.sum((-1, -2)).to(dt)
    n_cells = n_occupied / per_independent
    chi2_min = (y_0 - 0.25 * (y_m - y_p) * shift / step).clamp_min(1e-12)
    pa_err = torch.where(curv > 0, torch.sqrt(2.0 * chi2_min / (curv * n_cells).clamp_min(1e-30)), torch.full_like(curv, math.pi / 2))
    pa_err = torch.nan_to_num(pa_err, nan=math.pi / 2).clamp(max=math.pi / 2)

    # The receding side: the half-plane where the field lies above V_sys.
    s, c = torch.sin(pa).unsqueeze(-1), torch.cos(pa).unsqueeze(-1)
    a = (x - x0[:, None]) * s + (y - y0[:, None]) * c
    side = (weight * (torch.where(mask, v, torch.zeros_like(v)) - vsys[:, None]) * a).sum(-1)
    pa = torch.remainder(pa + torch.where(side < 0, math.pi, 0.0), 2 * math.pi)
    ok = (n_occupied >= _MIN_CELLS) & torch.isfinite(pa) & torch.isfinite(y_0)
    return KinematicGeometry(x0, y0, vsys, torch.where(ok, pa, nan), torch.where(ok, pa_err, nan))
