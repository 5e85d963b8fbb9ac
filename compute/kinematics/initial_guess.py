"""What the disk fit starts from, estimated from the points alone: starting parameters
(centre, PA and V_sys from the field's symmetry, :mod:`.kinematic_pa`) and the
exponential flux scale length that weights the beam-smearing stencil.

No database access here: tensors in, tensors out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .kinematic_pa import KinematicGeometry, kinematic_geometry

if TYPE_CHECKING:
    from .disk import DiskData, DiskFitConfig


def _flux_scale(data: DiskData, mask: torch.Tensor) -> torch.Tensor:
    """Exponential scale length (arcsec) of the points' flux against distance from the
    reference, from a least-squares line through log flux; inf (uniform) where there are
    fewer than 5 positive fluxes or the profile does not fall."""
    nb = data.batch
    inf = torch.full((nb,), float("inf"), dtype=data.x.dtype, device=data.x.device)
    if data.flux is None:
        return inf
    ok = mask & torch.isfinite(data.flux) & (data.flux > 0)
    r = torch.sqrt(data.x**2 + data.y**2)
    lf = torch.log(torch.where(ok, data.flux, torch.ones_like(data.flux)))
    w = ok.to(r.dtype)
    n = w.sum(-1)
    rm = (w * r).sum(-1) / n.clamp_min(1)
    lm = (w * lf).sum(-1) / n.clamp_min(1)
    cov = (w * (r - rm[:, None]) * (lf - lm[:, None])).sum(-1)
    var = (w * (r - rm[:, None]) ** 2).sum(-1)
    slope = cov / var.clamp_min(1e-30)
    h = (-1.0 / slope).clamp(0.05, 1e3)
    return torch.where((n >= 5) & (slope < 0) & torch.isfinite(h), h, inf)


def _initial(data: DiskData, mask: torch.Tensor, config: DiskFitConfig) -> tuple[torch.Tensor, KinematicGeometry]:
    """(starting parameters ``(B, 7)``, inclination not yet set (see :func:`fit_disks`),
    the kinematic geometry of the field they come from).

    Centre, V_sys and PA are those of the velocity field's symmetry
    (:func:`.kinematic_pa.kinematic_geometry`), not of a plane through every point, which
    patchy coverage and beam smearing pull off; where the kinematic PA cannot be measured
    (fewer than 6 occupied cells), the plane's gradient gives the PA.
    """
    dt = data.x.dtype
    sigma = torch.where(mask & torch.isfinite(data.v_err), data.v_err, torch.zeros_like(data.v))
    sigma = torch.sqrt(sigma**2 + max(config.error_floor, 1.0) ** 2)
    geo = kinematic_geometry(data.x, data.y, data.v, sigma, mask, data.flux, data.psf_fwhm)
    vsys = geo.vsys
    # A plane v = c + alpha x + beta y points its gradient at the receding side: PA = atan2(alpha, beta).
    w = mask.to(dt)
    design = torch.stack([w, data.x * w, data.y * w], 1)  # (B, 3, N)
    gram = design @ design.transpose(1, 2) + 1e-9 * torch.eye(3, dtype=dt, device=data.x.device)
    rhs = design @ torch.where(mask, data.v - vsys[:, None], torch.zeros_like(data.v)).unsqueeze(-1)
    coef, _ = torch.linalg.solve_ex(gram, rhs)
    coef = torch.nan_to_num(coef.squeeze(-1))
    pa = torch.where(torch.isfinite(geo.pa), geo.pa, torch.atan2(coef[:, 1], coef[:, 2]))
    r_sky = torch.sqrt(data.x**2 + data.y**2)
    r_max = torch.where(mask, r_sky, torch.zeros_like(r_sky)).amax(-1).clamp_min(0.1)
    dev = torch.where(mask, (data.v - vsys[:, None]).abs(), torch.full_like(data.v, float("nan")))
    amp = torch.nan_to_num(torch.nanquantile(dev, 0.9, dim=-1), nan=50.0).clamp_min(10.0)
    rt = (0.25 if config.model == "arctan" else 0.5) * r_max
    # Column 5 holds V_max sin i here; each inclination start divides by its own sin i.
    return torch.stack([geo.x0, geo.y0, pa, torch.zeros_like(vsys), vsys, amp, rt], -1), geo
