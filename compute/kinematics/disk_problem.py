"""The batch of disk least-squares problems the Levenberg-Marquardt of :mod:`.robust_lm`
solves: the points of each fitted problem, their weights, and the normal equations of
the robust cost in blocks of rows small enough to stay in the CPU cache.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .beam_grid import PixelGrid, grid_velocity
from .robust_lm import cost_of, weight_factors
from .rotation_curves import Model
from .velocity_field import _GH_NODES, _disk_fast, _model_and_jacobian

#: points (stencil points with a PSF) per block of one evaluation: a few hundred kB of
#: float32 per array, so that the arrays of one evaluation stay in the CPU cache
_CHUNK_POINTS = 50_000
#: the same for the pixel-grid model (sub-pixels x channels per block)
_CHUNK_POINTS_GRID = 500_000


@dataclass
class _Points:
    """The points the fit sees, one row per fitted problem; ``w`` is 1 / sigma on the
    points that count and 0 elsewhere, so the normalised residual is (model - v) w."""

    x: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor
    w: torch.Tensor
    model: Model
    psf_sigma: torch.Tensor | None
    flux_scale: torch.Tensor | None
    #: every row on its pixel grid (the PSF-convolved model of :mod:`.beam_grid`), or None
    grid: PixelGrid | None = None
    # Jacobian buffers reused from call to call, shared by the subsets taken: a fresh
    # megabyte-sized array per evaluation is mapped and page-faulted in anew each time.
    scratch: dict[tuple[int, torch.dtype], torch.Tensor] = field(default_factory=dict)
    #: (B, N) how many times each point counts in the cost (a bootstrap resample, see
    #: :mod:`.bootstrap`); None = once.  The cost is sum mult rho(z^2), not rho(mult z^2).
    mult: torch.Tensor | None = None

    @classmethod
    def build(cls, x, y, v, sigma, mask, model, psf_sigma, flux_scale, dtype, grid=None) -> _Points:  # type: ignore[no-untyped-def]
        cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
        w = torch.where(mask, 1.0 / sigma, torch.zeros_like(sigma))
        if psf_sigma is not None and not bool((psf_sigma > 0).any()):
            psf_sigma = None
        return cls(cast(x), cast(y), cast(v), cast(w), model, cast(psf_sigma), cast(flux_scale),  # type: ignore[arg-type]
                   None if grid is None else grid.to(dtype))  # fmt: skip

    def take(self, rows: torch.Tensor) -> _Points:
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return _Points(self.x[rows], self.y[rows], self.v[rows], self.w[rows], self.model, pick(self.psf_sigma),
                       pick(self.flux_scale), None if self.grid is None else self.grid.take(rows), self.scratch,
                       pick(self.mult))  # fmt: skip

    def rows(self, lo: int, hi: int) -> _Points:
        if lo == 0 and hi == self.x.shape[0]:
            return self
        part = lambda t: None if t is None else t[lo:hi]  # noqa: E731
        return _Points(self.x[lo:hi], self.y[lo:hi], self.v[lo:hi], self.w[lo:hi], self.model, part(self.psf_sigma),
                       part(self.flux_scale), None if self.grid is None else self.grid.take(slice(lo, hi)),
                       self.scratch, part(self.mult))  # fmt: skip

    def model_and_jacobian(self, theta: torch.Tensor, jacobian: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(V_los ``(B, N)``, Jacobian ``(B, 7, N)`` or None): on the pixel grid where there
        is one, else the point (or stencil) model."""
        if self.grid is not None:
            return grid_velocity(theta, self.grid, self.model, jacobian)
        return _model_and_jacobian(theta, self.x, self.y, self.model, self.psf_sigma, self.flux_scale, jacobian)

    def buffer(self, rows: int) -> torch.Tensor:
        key = (self.x.shape[1], self.x.dtype)
        buf = self.scratch.get(key)
        if buf is None or buf.shape[0] < rows:
            buf = self.scratch[key] = self.x.new_empty((rows, 8, self.x.shape[1]))
        return buf[:rows]

    def chunks(self) -> list[tuple[int, int]]:
        # Blocks of rows small enough that the point arrays of one evaluation stay in the
        # CPU cache: a 1,500-row batch computed whole runs 2-4x slower per point here.
        nb = self.x.shape[0]
        if self.grid is not None:
            # Seven channels per sub-pixel; the matrix products gain from larger blocks and a
            # row per block would be Python overhead (tens of small calls per row).
            per_row = self.grid.sub_points * 7
            budget = _CHUNK_POINTS_GRID
        else:
            per_row = self.x.shape[1] * (1 if self.psf_sigma is None else _GH_NODES.size**2)
            budget = _CHUNK_POINTS
        step = max(1, budget // max(1, per_row))
        return [(lo, min(nb, lo + step)) for lo in range(0, nb, step)]

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        """Normalised residuals (model - v) w ``(B, N)``."""
        parts = []
        for lo, hi in self.chunks():
            p = self.rows(lo, hi)
            model, _ = p.model_and_jacobian(theta[lo:hi], False)
            parts.append(model.sub_(p.v).mul_(p.w))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def normal_equations(
        self, theta: torch.Tensor, loss: str | None, curvature: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gauss-Newton (J^T diag(k) J, J^T rho' z) of the robust cost (k: see
        :func:`~.robust_lm.weight_factors`), float64 ``(B, 7, 7)``, ``(B, 7)``; ``loss``
        None: (J^T J, J^T z) of the plain chi^2 (the covariance)."""
        return self._products(theta, loss, curvature, None)

    def evaluate(self, theta: torch.Tensor, loss: str, curvature: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cost ``(B,)``, normal equations, gradient) at ``theta``, in one pass."""
        costs: list[torch.Tensor] = []
        hess, grad = self._products(theta, loss, curvature, costs)
        return (costs[0] if len(costs) == 1 else torch.cat(costs)), hess, grad

    def _products(
        self, theta: torch.Tensor, loss: str | None, curvature: bool, costs: list[torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ``costs`` (a list) receives the cost of each block of rows.
        hess, grad = [], []
        for lo, hi in self.chunks():
            p = self.rows(lo, hi)

            def weigh(model: torch.Tensor, factor: torch.Tensor, row: torch.Tensor, p: _Points = p) -> None:
                # J^T diag(k w^2) J and J^T (rho' w z) (k the curvature weight) as J' J'^T
                # with J' = sqrt(k) w J and the residual row rho' z / sqrt(k).
                z = torch.sub(model, p.v, out=row).mul_(p.w)
                if loss is None:
                    factor.copy_(p.w)
                    return
                if costs is not None:
                    costs.append(cost_of(z, loss, p.mult))
                f_jac, f_row = weight_factors(z * z, loss, curvature)
                torch.mul(f_jac, p.w, out=factor)
                z.mul_(f_row)
                if p.mult is not None:
                    # A point counted m times: m k w^2 in J^T J and m rho' z in J^T z.
                    root = torch.sqrt(p.mult)
                    factor.mul_(root)
                    z.mul_(root)

            th = theta[lo:hi]
            if p.psf_sigma is None and p.grid is None:
                _, jac = _disk_fast(th, p.x, p.y, p.model, True, weigh, self.buffer(hi - lo))
                assert jac is not None
            else:
                model, j7 = p.model_and_jacobian(th, True)
                assert j7 is not None
                factor, last = torch.empty_like(model), torch.empty_like(model)
                weigh(model, factor, last)
                jac = torch.cat([j7 * factor.unsqueeze(1), last.unsqueeze(1)], 1)
            m = torch.bmm(jac, jac.transpose(1, 2)).to(torch.float64)
            hess.append(m[:, :7, :7])
            grad.append(m[:, :7, 7])
        if len(hess) == 1:
            return hess[0], grad[0]
        return torch.cat(hess), torch.cat(grad)
