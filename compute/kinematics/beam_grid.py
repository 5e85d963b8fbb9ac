"""Beam smearing on the data's pixel grid: the disk convolved with the PSF, then sampled.

Where the points of a galaxy are the pixels of a map or the spaxels of a cube, the
observed first moment of the line is

    V_obs = [(Sigma V) * PSF] / [Sigma * PSF]

(the approach of DysmalPy and 3DBarolo), ``*`` a 2-D convolution, Sigma the surface
brightness and V the disk's line-of-sight velocity.  Both are evaluated on a grid
``OVERSAMPLE`` times finer than the pixels, covering the map and a margin of 3.5 PSF
sigmas (light from beyond the footprint smears in), convolved with the Gaussian PSF and
averaged over each pixel (the pixel's own size is modelled too).  The Gaussian is
separable, so the convolution and the pixel average are two small matrix products per
map, ``K_y A K_x^T``, batched over galaxies, and only the pixels of the map are formed.

Sigma does not depend on the fitted parameters: the observed line flux of a pixel where
it is known (clumps and holes as they are); elsewhere (masked pixels, the margin) the
exponential profile fitted to the fluxes against distance from the reference, capped at
the faintest detected pixel (a masked pixel is below the S/N threshold); uniform without
fluxes.  The observed flux is itself beam-smeared, and used as it is would spread light
by the PSF twice, so the map is first deconvolved by ten Richardson-Lucy iterations with
the same Gaussian.  docs/rotation_validation.md ("Beam smearing") measures the bias that
remains, and that of the exponential alone (``use_map`` False).  Because Sigma is
fixed, the convolution is linear in V and the Jacobian is the convolved Jacobian, as
analytic as the rest (checked against forward-mode AD in the tests).

Scattered points (HII-region catalogues, Voronoi bins) have no grid: :func:`detect_grids`
leaves them to the Gauss-Hermite stencil of :mod:`.velocity_field`.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import ndtr

from .rotation_curves import Model
from .velocity_field import _disk_fast, _intrinsic

__all__ = ["OVERSAMPLE", "PixelGrid", "detect_grids", "grid_moments", "grid_velocity"]

#: sub-pixels per pixel side: the velocity field varies on the scale of the PSF and of
#: r_turn, both usually >= 1 pixel; 3 keeps the pixel-averaged model within ~1 km/s of
#: a 9x-oversampled one on the benchmark disks
OVERSAMPLE = 3
#: margin around the map, in PSF sigmas, whose light is smeared into the map
_MARGIN_SIGMAS = 3.5
#: a point is on the grid when its offset from the nearest node is below this fraction
#: of a pixel (the tangent-plane projection bends a 1' field by far less)
_GRID_TOLERANCE = 0.08
#: Richardson-Lucy iterations deconvolving the observed flux map before it weights the model
_RL_ITERATIONS = 10
#: maps larger than this many pixels a side are left to the stencil (memory)
_MAX_SIDE = 400


@dataclass
class PixelGrid:
    """The oversampled grids of a batch of galaxies, padded to common sizes.

    ``gx``, ``gy`` ``(B, H * W)``: sky offsets (arcsec) of the sub-pixel centres;
    ``ky`` ``(B, P, H)``, ``kx`` ``(B, Q, W)``: PSF convolution and pixel average along each
    grid axis, for the P x Q pixels of the map; ``bright`` ``(B, H, W)``: Sigma;
    ``norm`` ``(B, P, Q)``: Sigma * PSF on the pixels; ``index`` ``(B, N)``: the pixel of
    each point in the flattened P x Q map (0 for points off the grid or masked).
    """

    gx: torch.Tensor
    gy: torch.Tensor
    ky: torch.Tensor
    kx: torch.Tensor
    bright: torch.Tensor
    norm: torch.Tensor
    index: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.ky.shape[2]), int(self.kx.shape[2])

    @property
    def sub_points(self) -> int:
        h, w = self.shape
        return h * w

    def take(self, rows: torch.Tensor | slice) -> PixelGrid:
        return PixelGrid(*(t[rows] for t in (self.gx, self.gy, self.ky, self.kx, self.bright, self.norm, self.index)))

    def to(self, dtype: torch.dtype) -> PixelGrid:
        f = lambda t: t.to(dtype)
        return PixelGrid(f(self.gx), f(self.gy), f(self.ky), f(self.kx), f(self.bright), f(self.norm), self.index)

    def repeat(self, n: int) -> PixelGrid:
        rep = lambda t: t.repeat((n,) + (1,) * (t.dim() - 1))
        return PixelGrid(*(rep(t) for t in (self.gx, self.gy, self.ky, self.kx, self.bright, self.norm, self.index)))


@dataclass
class _Lattice:
    angle: float  # grid axes rotated by this from east/north, radians
    pixel: float  # arcsec
    origin: tuple[float, float]  # grid-frame coordinates of pixel (0, 0)
    iu: np.ndarray  # pixel column of each point (grid frame)
    iw: np.ndarray  # pixel row


def _lattice(x: np.ndarray, y: np.ndarray) -> _Lattice | None:
    """The regular square lattice the points sit on, or None (see :func:`detect_grids`)."""
    from scipy.spatial import cKDTree

    n = x.size
    if n < 8:
        return None
    pts = np.column_stack([x, y])
    dist, nearest = cKDTree(pts).query(pts, k=2)
    d = dist[:, 1]
    if not np.all(d > 0):
        return None  # two points at one position: not one map
    # The pixel: the shortest spacing that recurs (a sparse map's median neighbour can be a
    # diagonal or two pixels away); the residual test below rejects a wrong guess.
    pixel = float(np.quantile(d, 0.1))
    vec = (pts[nearest[:, 1]] - pts)[d < 1.05 * pixel]
    # The axes' direction modulo 90 degrees: the mean of exp(4 i phi) of the neighbour vectors.
    phi = np.arctan2(vec[:, 1], vec[:, 0])
    angle = float(np.angle(np.mean(np.exp(4j * phi))) / 4.0)
    ca, sa = math.cos(angle), math.sin(angle)
    u = (ca * x + sa * y) / pixel
    w = (-sa * x + ca * y) / pixel
    ou = float(np.angle(np.mean(np.exp(2j * math.pi * u))) / (2 * math.pi))
    ow = float(np.angle(np.mean(np.exp(2j * math.pi * w))) / (2 * math.pi))
    iu, iw = np.rint(u - ou), np.rint(w - ow)
    if np.max(np.hypot(u - ou - iu, w - ow - iw)) > _GRID_TOLERANCE:
        return None
    if np.ptp(iu) + 1 > _MAX_SIDE or np.ptp(iw) + 1 > _MAX_SIDE:
        return None
    i0, j0 = iu.min(), iw.min()
    return _Lattice(angle, pixel, ((ou + i0) * pixel, (ow + j0) * pixel), (iu - i0).astype(np.int64),
                    (iw - j0).astype(np.int64))  # fmt: skip


def _axis_kernel(n_pix: int, margin: int, sigma_pix: float, oversample: int) -> np.ndarray:
    """(n_pix, (n_pix + 2 margin) oversample): pixel i's average over its sub-pixels of a
    Gaussian of ``sigma_pix`` (pixels) integrated over each grid cell, along one axis."""
    n_sub = (n_pix + 2 * margin) * oversample
    cell = (np.arange(n_sub) + 0.5) / oversample - margin  # grid-cell centres, pixel units
    half = 0.5 / oversample
    sub = np.arange(n_pix)[:, None] + (np.arange(oversample) + 0.5) / oversample  # (n_pix, os) sub-pixel centres
    delta = cell[None, None, :] - sub[:, :, None]
    if sigma_pix <= 0:
        k = (np.abs(delta) < half * 1.0001).astype(float)
    else:
        k = ndtr((delta + half) / sigma_pix) - ndtr((delta - half) / sigma_pix)
    return k.mean(1)


def detect_grids(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, psf_sigma: torch.Tensor, flux: torch.Tensor | None,
    flux_scale: torch.Tensor, use_map: bool = True, oversample: int = OVERSAMPLE,
) -> tuple[torch.Tensor, PixelGrid | None]:
    """(on_grid ``(B,)`` bool, the :class:`PixelGrid` of those rows or None).

    A galaxy is on a grid when its PSF sigma is positive and its usable points (``mask``)
    are, to 8 % of a pixel, nodes of one square lattice (any orientation; pixel = the 10th
    percentile of the nearest-neighbour distances) no more than 400 pixels a side.  Masked pixels and holes
    are fine: the lattice is not required to be full.  ``use_map`` False: Sigma is the
    exponential alone, the observed fluxes only set its scale.
    """
    nb, n = x.shape
    xs, ys, ms = x.detach().cpu().double().numpy(), y.detach().cpu().double().numpy(), mask.cpu().numpy()
    sig = psf_sigma.detach().cpu().double().numpy()
    fl = None if flux is None else flux.detach().cpu().double().numpy()
    hs = flux_scale.detach().cpu().double().numpy()
    lattices: dict[int, _Lattice] = {}
    for b in range(nb):
        if sig[b] > 0:
            lat = _lattice(xs[b][ms[b]], ys[b][ms[b]])
            if lat is not None:
                lattices[b] = lat
    on = torch.zeros(nb, dtype=torch.bool, device=x.device)
    if not lattices:
        return on, None
    rows = sorted(lattices)
    on[rows] = True
    geo = []
    for b in rows:
        lat = lattices[b]
        margin = math.ceil(_MARGIN_SIGMAS * sig[b] / lat.pixel) + 1
        geo.append((lat, margin, int(lat.iu.max()) + 1, int(lat.iw.max()) + 1))
    p_max = max(g[3] for g in geo)
    q_max = max(g[2] for g in geo)
    h_max = max((g[3] + 2 * g[1]) * oversample for g in geo)
    w_max = max((g[2] + 2 * g[1]) * oversample for g in geo)
    m = len(rows)
    gx, gy = np.zeros((m, h_max, w_max)), np.zeros((m, h_max, w_max))
    ky, kx = np.zeros((m, p_max, h_max)), np.zeros((m, q_max, w_max))
    bright = np.zeros((m, h_max, w_max))
    index = np.zeros((m, n), dtype=np.int64)
    for r, (b, (lat, margin, nq, np_)) in enumerate(zip(rows, geo, strict=True)):
        hh, ww = (np_ + 2 * margin) * oversample, (nq + 2 * margin) * oversample
        # Sub-pixel centres in the grid frame, then rotated back to east/north offsets.
        cu = lat.origin[0] + ((np.arange(ww) + 0.5) / oversample - margin - 0.5) * lat.pixel
        cw = lat.origin[1] + ((np.arange(hh) + 0.5) / oversample - margin - 0.5) * lat.pixel
        uu, wv = np.meshgrid(cu, cw)
        ca, sa = math.cos(lat.angle), math.sin(lat.angle)
        gx[r, :hh, :ww] = ca * uu - sa * wv
        gy[r, :hh, :ww] = sa * uu + ca * wv
        ky[r, :np_, :hh] = _axis_kernel(np_, margin, sig[b] / lat.pixel, oversample)
        kx[r, :nq, :ww] = _axis_kernel(nq, margin, sig[b] / lat.pixel, oversample)
        index[r, ms[b]] = lat.iw * q_max + lat.iu
        bright[r, :hh, :ww] = _brightness(lat, margin, oversample, gx[r, :hh, :ww], gy[r, :hh, :ww],
                                          None if fl is None else fl[b][ms[b]], xs[b][ms[b]], ys[b][ms[b]], hs[b], use_map, sig[b] / lat.pixel)  # fmt: skip
    dt, dev = x.dtype, x.device
    t = lambda a: torch.as_tensor(a, dtype=dt, device=dev)
    tb = t(bright)
    tky, tkx = t(ky), t(kx)
    norm = tky @ tb @ tkx.transpose(1, 2)
    grid = PixelGrid(t(gx).reshape(m, -1), t(gy).reshape(m, -1), tky, tkx, tb,
                     norm.clamp_min(torch.finfo(dt).tiny), torch.as_tensor(index, device=dev))  # fmt: skip
    return on, grid


def _brightness(
    lat: _Lattice, margin: int, oversample: int, gx: np.ndarray, gy: np.ndarray, flux: np.ndarray | None,
    x: np.ndarray, y: np.ndarray, h: float, use_map: bool, sigma_pix: float,
) -> np.ndarray:
    """Sigma on one galaxy's sub-pixels: the observed flux on the pixels that have a positive
    one, the exponential exp(-r / h) (r from the reference, h from
    :func:`~.initial_guess._flux_scale`, scaled to the fluxes) capped at the faintest of
    them elsewhere, deconvolved (see the module docstring); uniform without fluxes, and
    the exponential alone when not ``use_map``."""
    r = np.hypot(gx, gy)
    ok = None if flux is None else np.isfinite(flux) & (flux > 0)
    if ok is None or not ok.any():
        return np.ones_like(gx)
    rp = np.hypot(x[ok], y[ok])
    if math.isfinite(h):
        amp = float(np.median(flux[ok] * np.exp(rp / h)))
        model = amp * np.exp(-r / h)
    else:
        model = np.full_like(gx, float(np.median(flux[ok])))
    if not use_map:
        return model
    # Pixel-level map: the observed fluxes, the exponential (pixel means) elsewhere ...
    hh, ww = model.shape
    pix = model.reshape(hh // oversample, oversample, ww // oversample, oversample).mean((1, 3))
    # A pixel without a flux was masked below the S/N threshold (or lies beyond the map):
    # no brighter than the faintest detected pixel. Left at the exponential, which is
    # circular on the sky, the masked pixels of an inclined disk would weigh in far too
    # bright (at i = 70 deg this alone biased the inclination by -8 deg).
    np.minimum(pix, np.min(flux[ok]), out=pix)
    pix[lat.iw[ok] + margin, lat.iu[ok] + margin] = flux[ok]
    # ... deconvolved by a few Richardson-Lucy iterations: the observed map is already
    # smeared, and used as it is, its light would be spread by the PSF twice.
    if _RL_ITERATIONS and sigma_pix > 0:
        ky = _axis_kernel(pix.shape[0], 0, sigma_pix, 1)
        kx = _axis_kernel(pix.shape[1], 0, sigma_pix, 1)
        est = pix.copy()
        for _ in range(_RL_ITERATIONS):
            ratio = pix / np.maximum(ky @ est @ kx.T, 1e-300)
            est *= ky.T @ ratio @ kx
        pix = est
    return np.repeat(np.repeat(pix, oversample, 0), oversample, 1)


def _convolve(grid: PixelGrid, maps: torch.Tensor) -> torch.Tensor:
    """(B, C, P * Q): ``maps`` ``(B, C, H * W)`` convolved with the PSF and averaged over
    each pixel: K_y A K_x^T per channel."""
    nb, nc, _ = maps.shape
    h, w = grid.shape
    a = maps.reshape(nb, nc, h, w)
    out = torch.matmul(torch.matmul(grid.ky.unsqueeze(1), a), grid.kx.transpose(1, 2).unsqueeze(1))
    return out.reshape(nb, nc, -1)


def _sample(grid: PixelGrid, maps: torch.Tensor) -> torch.Tensor:
    """(B, C, N): the pixel maps ``(B, C, P * Q)`` at each point's pixel."""
    idx = grid.index.unsqueeze(1).expand(-1, maps.shape[1], -1)
    return torch.gather(maps, 2, idx)


def grid_velocity(
    theta: torch.Tensor, grid: PixelGrid, model: Model, jacobian: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(V_obs ``(B, N)``, dV_obs/dtheta parameter-major ``(B, 7, N)`` or None) at the points."""
    nb = theta.shape[0]
    vsys = theta[:, 4:5]
    if jacobian:
        v, jac = _disk_fast(theta, grid.gx, grid.gy, model, True)
        assert jac is not None
        # V - V_sys keeps float32 sums accurate; dV_obs/dV_sys is exactly 1 (the weights
        # sum to one), so that channel is not convolved.
        jac[:, 4] = v - vsys
        chans = jac
    else:
        v = _intrinsic(theta, grid.gx, grid.gy, model)[0]
        chans = (v - vsys).unsqueeze(1)
    chans = chans * grid.bright.reshape(nb, 1, -1)
    pix = _convolve(grid, chans) / grid.norm.reshape(nb, 1, -1)
    at = _sample(grid, pix)
    if not jacobian:
        return at[:, 0] + vsys, None
    vobs = at[:, 4] + vsys
    at[:, 4] = 1.0
    return vobs, at


def grid_moments(theta: torch.Tensor, grid: PixelGrid, model: Model) -> tuple[torch.Tensor, torch.Tensor]:
    """(V_obs, sigma_beam) ``(B, N)``: the first moment and the dispersion that beam-smeared
    rotation adds, sigma_beam^2 = [(Sigma V^2) * PSF] / [Sigma * PSF] - V_obs^2."""
    nb = theta.shape[0]
    vsys = theta[:, 4:5]
    v = _intrinsic(theta, grid.gx, grid.gy, model)[0] - vsys
    chans = torch.stack([v, v * v], 1) * grid.bright.reshape(nb, 1, -1)
    at = _sample(grid, _convolve(grid, chans) / grid.norm.reshape(nb, 1, -1))
    m1, m2 = at[:, 0], at[:, 1]
    return m1 + vsys, torch.sqrt((m2 - m1 * m1).clamp_min(0.0))
