"""Velocity-field and rotation-curve plots of one galaxy from its current `rotation` rows.

Two PNGs per fitted component (gas, stars): ``<object>_<component>_velocity_field.png``
(the points coloured by observed velocity, the model of the first fitted curve at the
same points, and the residuals; the centre and the receding major axis are marked) and
``<object>_<component>_rotation_curve.png``.  The points are read exactly as the task
read them (:meth:`RotationTask.load` with the run's own parameters).

The rotation-curve panel (:func:`rotation_curve_panel` computes what it shows,
:func:`draw_rotation_curve` draws it):

* points: deprojected rotation speeds (V - V_sys) / (sin i cos theta) of the points within
  60 degrees of the major axis, against deprojected radius (geometry of the first fitted
  model); receding side (cos theta > 0, red circles) and approaching side (blue
  triangles) apart (the division by cos theta makes both positive for a regular disk);
* error bars: the point's velocity error as the fit used it (v_err and the run's
  error_floor_kms in quadrature) divided by sin i |cos theta|, and the inclination error
  (the bootstrap one where the row has it, else the curvature one) propagated as
  |V_rot| cot i sigma_i, in quadrature;
* every fitted curve with its 1-sigma band: the 16th-84th percentiles of 400 curves
  whose (V_max, r_turn) are drawn from a Gaussian with the row's errors (bootstrap where
  present, else curvature) and the correlation of the fit's Gauss-Newton covariance at
  the row's parameters;
* where the fit modelled a PSF (``psf_fwhm``), the observed curve: the beam-smeared model
  (:func:`~skyledger.compute.kinematics.disk.los_velocity` with the PSF stencil) sampled
  along the receding major axis, (V_obs - V_sys) / sin i, dashed;
* a top axis in proper kpc from the row's kpc_per_arcsec (astropy Planck18), absent
  when the galaxy has no redshift.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skyledger.compute.kinematics.disk import (
    _covariance,
    _prepare,
    disk_coordinates,
    los_velocity,
    rotation_curve,
)
from skyledger.compute.kinematics.sky import sky_offsets
from skyledger.compute.tasks.rotation import RotationBatch, RotationParams, RotationTask
from skyledger.schema.errors import SkyledgerError
from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["CurveBand", "RotationCurvePanel", "draw_rotation_curve", "find_galaxy", "rotation_curve_panel", "rotation_plots"]


def find_galaxy(session: Session, key: str) -> int:
    """The source id of a galaxy given as a source id or an object id; SkyledgerError if unknown or ambiguous."""
    # The object id first: survey ids are often numbers too (a SAMI CATID, a DESI TARGETID).
    found = session.execute(
        text("SELECT id FROM source WHERE object_id = :o AND parent_id IS NULL ORDER BY id"), {"o": key}
    ).scalars().all()
    if not found and key.isdigit():
        found = session.execute(text("SELECT id FROM source WHERE id = :i"), {"i": int(key)}).scalars().all()
    if not found:
        raise SkyledgerError(f"no galaxy {key!r}: give a source id or the object_id of a source without parent")
    if len(found) > 1:
        raise SkyledgerError(f"object_id {key!r} names {len(found)} sources ({', '.join(map(str, found))}); give the source id")
    return int(found[0])


def _theta(row: dict[str, Any], batch: RotationBatch) -> np.ndarray:
    x0, y0 = sky_offsets(np.array([row["ra_center"]]), np.array([row["dec_center"]]), batch.ref_ra[0], batch.ref_dec[0])
    return np.array([x0[0], y0[0], math.radians(row["pa"]), math.radians(row["inc"]), row["vsys"], row["vmax"], row["r_turn"]])


#: parameter draws behind a model band
_BAND_DRAWS = 400
_MODEL_COLOURS = ("tab:green", "tab:purple", "tab:orange")


@dataclass
class CurveBand:
    """One fitted curve on the panel: the intrinsic curve, its 1-sigma band, and the
    beam-smeared curve along the major axis (None without a PSF)."""

    model: str
    label: str
    curve: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    errors_from: str  # "bootstrap" or "curvature"
    observed: np.ndarray | None = None


@dataclass
class RotationCurvePanel:
    """What the rotation-curve panel shows (see the module docstring); radii in arcsec."""

    title: str
    radius: np.ndarray  # points within 60 deg of the major axis
    speed: np.ndarray  # deprojected rotation speed, positive on both sides for a regular disk
    speed_err: np.ndarray
    receding: np.ndarray  # bool
    grid: np.ndarray
    curves: list[CurveBand] = field(default_factory=list)
    kpc_per_arcsec: float | None = None


def _err(row: dict[str, Any], name: str) -> tuple[float, str]:
    """The row's error of ``name``: the bootstrap one where present, else the curvature one (NaN if neither)."""
    boot = row.get(f"{name}_err_boot")
    if boot is not None and math.isfinite(boot):
        return float(boot), "bootstrap"
    cov = row.get(f"{name}_err")
    return (float(cov) if cov is not None else math.nan), "curvature"


def rotation_curve_panel(batch: RotationBatch, component: str, rows: list[dict[str, Any]], params: RotationParams,
                         n_draws: int = _BAND_DRAWS, seed: int = 0) -> RotationCurvePanel:  # fmt: skip
    """The panel of ``rows`` (the fitted rows of one component of the one galaxy of ``batch``)."""
    pts = batch.components[component]
    m = pts.mask[0] & np.isfinite(pts.v[0])
    x, y, v = pts.x[0, m], pts.y[0, m], pts.v[0, m]
    v_err = np.nan_to_num(pts.v_err[0, m], nan=0.0)
    sigma_v = np.sqrt(v_err**2 + params.error_floor_kms**2)  # the errors the fit used
    first = rows[0]
    theta = torch.as_tensor(_theta(first, batch)).unsqueeze(0)
    tx, ty = torch.as_tensor(x).unsqueeze(0), torch.as_tensor(y).unsqueeze(0)
    radius_t, a, _ = disk_coordinates(theta, tx, ty)
    radius = radius_t.squeeze(0).numpy()
    cos_t = (a / radius_t).squeeze(0).numpy()
    inc = math.radians(first["inc"])
    sin_i = math.sin(inc)
    near = np.abs(cos_t) > 0.5
    speed = (v - first["vsys"]) / (sin_i * cos_t)
    inc_err = math.radians(_err(first, "inc")[0])
    inc_term = np.abs(speed) / math.tan(inc) * (inc_err if math.isfinite(inc_err) else 0.0)
    speed_err = np.hypot(sigma_v / (sin_i * np.abs(cos_t)), inc_term)
    kpc = first.get("kpc_per_arcsec")
    panel = RotationCurvePanel(
        title=f"{batch.object_ids[0]} ({component})", radius=radius[near], speed=speed[near], speed_err=speed_err[near],
        receding=cos_t[near] > 0, grid=np.linspace(0.0, float(np.nanmax(radius)) * 1.05, 200),
        kpc_per_arcsec=float(kpc) if kpc is not None and math.isfinite(kpc) else None,
    )
    grid = torch.as_tensor(panel.grid)
    rows_of = np.array([0])
    data, _ = RotationTask.tensors(batch, component, rows_of, "cpu")
    gen = np.random.default_rng(seed)
    for r in rows:
        th = torch.as_tensor(_theta(r, batch)).unsqueeze(0)
        curve = rotation_curve(grid, th[0, 5], th[0, 6], r["model"]).numpy()
        # Correlation of (V_max, r_turn) from the curvature at the row's parameters, on all usable points.
        b = _prepare(data, params.fit_config(r["model"]))
        cov = _covariance(b, b.fitted, th)[0][0, 5:7, 5:7].numpy()
        rho = cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]) if np.all(np.isfinite(cov)) and cov[0, 0] > 0 and cov[1, 1] > 0 else 0.0
        (s_v, src), (s_r, _) = _err(r, "vmax"), _err(r, "r_turn")
        s_v, s_r = (s if math.isfinite(s) else 0.0 for s in (s_v, s_r))
        c2 = np.array([[s_v * s_v, rho * s_v * s_r], [rho * s_v * s_r, s_r * s_r]])
        draws = gen.multivariate_normal([r["vmax"], r["r_turn"]], c2, size=n_draws)
        draws[:, 1] = np.maximum(draws[:, 1], params.fit_config(r["model"]).r_turn_min)
        curves = rotation_curve(grid.unsqueeze(0), torch.as_tensor(draws[:, :1]), torch.as_tensor(draws[:, 1:]), r["model"]).numpy()
        lower, upper = np.percentile(curves, [15.865, 84.135], axis=0)
        observed = None
        psf = r.get("psf_fwhm")
        if psf is not None and math.isfinite(psf) and psf > 0:
            # The beam-smeared model along the receding major axis, as the fit saw it.
            pa = th[0, 2]
            gx = (th[0, 0] + grid * torch.sin(pa)).unsqueeze(0)
            gy = (th[0, 1] + grid * torch.cos(pa)).unsqueeze(0)
            psf_sigma = torch.tensor([psf / (2.0 * math.sqrt(2.0 * math.log(2.0)))], dtype=th.dtype)
            v_obs = los_velocity(th, gx, gy, r["model"], psf_sigma, b.flux_scale).squeeze(0).numpy()
            observed = (v_obs - r["vsys"]) / math.sin(math.radians(r["inc"]))
        label = f"{r['model']}: V_max {r['vmax']:.0f} km/s, r_turn {r['r_turn']:.2f}\""
        panel.curves.append(CurveBand(r["model"], label, curve, lower, upper, src, observed))
    return panel


def draw_rotation_curve(panel: RotationCurvePanel) -> Any:
    """The matplotlib figure of ``panel``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.0, 4.8))
    for side, colour, marker, label in ((True, "tab:red", "o", "receding side"), (False, "tab:blue", "^", "approaching side")):
        sel = panel.receding == side
        ax.errorbar(panel.radius[sel], panel.speed[sel], yerr=panel.speed_err[sel], fmt=marker, ms=3.5, color=colour,
                    ecolor=colour, elinewidth=0.6, alpha=0.75, label=f"{label} (within 60 deg of the major axis)")  # fmt: skip
    for k, c in enumerate(panel.curves):
        colour = _MODEL_COLOURS[k % len(_MODEL_COLOURS)]  # none red or blue: those are the sides
        ax.plot(panel.grid, c.curve, lw=2, color=colour, label=c.label)
        ax.fill_between(panel.grid, c.lower, c.upper, color=colour, alpha=0.25, lw=0,
                        label=f"{c.model} 1-sigma band ({c.errors_from} errors)")  # fmt: skip
        if c.observed is not None:
            ax.plot(panel.grid, c.observed, lw=1.5, ls="--", color=colour, label=f"{c.model} beam-smeared, major axis")
    ax.set_xlabel("deprojected radius (arcsec)")
    ax.set_ylabel("rotation speed (km/s)")
    ax.set_xlim(0.0, float(panel.grid[-1]))
    if panel.kpc_per_arcsec is not None:
        k = panel.kpc_per_arcsec
        top = ax.secondary_xaxis("top", functions=(lambda r: r * k, lambda d: d / k))
        top.set_xlabel("deprojected radius (proper kpc, astropy Planck18)")
    ax.set_title(panel.title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))  # outside: the bands cover the panel
    fig.tight_layout()
    return fig


def rotation_plots(session: Session, key: str, out_dir: Path) -> list[Path]:
    """Write the plots of galaxy ``key`` into ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source_id = find_galaxy(session, key)
    rows = [dict(r) for r in session.execute(
        text("SELECT f.*, r.params FROM catalog.rotation AS f JOIN run AS r ON r.id = f.run_id "
             "WHERE f.source_id = :s ORDER BY f.component, f.model"), {"s": source_id},
    ).mappings()]
    fitted = [r for r in rows if r["pa"] is not None]
    if not fitted:
        why = "no rotation fit" if not rows else "only failed rotation fits (flags " + ", ".join(str(r["flags"]) for r in rows) + ")"
        raise SkyledgerError(f"galaxy {key!r} (source {source_id}) has {why}; run `skyledger process --task rotation` first")
    params = RotationParams(**fitted[0]["params"])
    batch = RotationTask().load(session, [source_id], params)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.+-]+", "_", batch.object_ids[0]) or str(source_id)
    written: list[Path] = []
    for component in ("gas", "stars"):
        comp_rows = [r for r in fitted if r["component"] == component]
        pts = batch.components.get(component)
        if not comp_rows or pts is None:
            continue
        m = pts.mask[0]
        x, y, v = pts.x[0, m], pts.y[0, m], pts.v[0, m]
        first = comp_rows[0]
        theta = torch.as_tensor(_theta(first, batch)).unsqueeze(0)
        tx, ty = torch.as_tensor(x).unsqueeze(0), torch.as_tensor(y).unsqueeze(0)
        model_v = los_velocity(theta, tx, ty, first["model"]).squeeze(0).numpy()

        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharex=True, sharey=True)
        lim = np.nanpercentile(np.abs(v - first["vsys"]), 98) or 1.0
        for ax, values, title, center, span in (
            (axes[0], v, "observed", first["vsys"], lim),
            (axes[1], model_v, f"model ({first['model']})", first["vsys"], lim),
            (axes[2], v - model_v, "residual", 0.0, max(np.nanpercentile(np.abs(v - model_v), 98), 1.0)),
        ):
            sc = ax.scatter(x, y, c=values, cmap="RdBu_r", vmin=center - span, vmax=center + span, s=18, marker="s")
            fig.colorbar(sc, ax=ax, label="km/s")
            ax.set_title(title)
            x0, y0 = float(theta[0, 0]), float(theta[0, 1])
            pa = math.radians(first["pa"])
            r = float(np.nanmax(np.hypot(x - x0, y - y0)))
            ax.plot([x0, x0 + r * math.sin(pa)], [y0, y0 + r * math.cos(pa)], "k-", lw=1)
            ax.plot([x0], [y0], "k+", ms=10)
            ax.set_xlabel("east offset (arcsec)")
        axes[0].set_ylabel("north offset (arcsec)")
        axes[0].invert_xaxis()  # east to the left, as on the sky
        fig.suptitle(f"{batch.object_ids[0]} ({component}): PA {first['pa']:.1f} deg, i {first['inc']:.1f} deg")
        fig.tight_layout()
        path = out_dir / f"{stem}_{component}_velocity_field.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

        fig = draw_rotation_curve(rotation_curve_panel(batch, component, comp_rows, params))
        path = out_dir / f"{stem}_{component}_rotation_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
