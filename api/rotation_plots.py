"""Velocity-field and rotation-curve plots of one galaxy from its current `rotation` rows.

Two PNGs per fitted component (gas, stars): ``<object>_<component>_velocity_field.png``
(the points coloured by observed velocity, the model of the first fitted curve at the
same points, and the residuals; the centre and the receding major axis are marked) and
``<object>_<component>_rotation_curve.png`` (deprojected rotation speeds of the points
within 60 degrees of the major axis, (V - V_sys) / (sin i cos theta), against deprojected
radius, with every fitted curve).  The points are read exactly as the task read them
(:meth:`RotationTask.load` with the run's own parameters).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import text
from sqlalchemy.orm import Session

from skyledger.schema.errors import SkyledgerError

from skyledger.compute.kinematics.disk import disk_coordinates, los_velocity, rotation_curve
from skyledger.compute.kinematics.sky import sky_offsets
from skyledger.compute.tasks.rotation import RotationBatch, RotationParams, RotationTask

__all__ = ["find_galaxy", "rotation_plots"]


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

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        radius, a, _ = disk_coordinates(theta, tx, ty)
        radius, cos_t = radius.squeeze(0).numpy(), (a / radius).squeeze(0).numpy()
        sin_i = math.sin(math.radians(first["inc"]))
        near = np.abs(cos_t) > 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            vrot = (v - first["vsys"]) / (sin_i * cos_t)
        ax.scatter(radius[near], vrot[near], s=10, c="0.4", label="points within 60 deg of the major axis")
        grid = torch.linspace(0.0, float(np.nanmax(radius)) * 1.05, 200, dtype=torch.float64)
        for r in comp_rows:
            curve = rotation_curve(grid, torch.tensor(r["vmax"]), torch.tensor(r["r_turn"]), r["model"]).numpy()
            ax.plot(grid.numpy(), curve, lw=2, label=f"{r['model']}: V_max {r['vmax']:.0f} km/s, r_turn {r['r_turn']:.2f}\"")
        ax.set_xlabel("deprojected radius (arcsec)")
        ax.set_ylabel("rotation speed (km/s)")
        ax.set_title(f"{batch.object_ids[0]} ({component})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{stem}_{component}_rotation_curve.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
