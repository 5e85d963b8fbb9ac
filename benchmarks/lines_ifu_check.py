"""Per-spaxel check of the `lines` fit on the synthetic MUSE cubes of the rotation validation.

No database: each cube (``ingest.synthetic.write_muse_cube``, the parameters of
``benchmarks/rotation_validation.py``) is read with the ``muse_cube`` reader, its spaxels
are fitted with ``fit_spectra`` and the task's own ``FitConfig``, and every spaxel is
compared with the generator's truth (``CubeTruth``):

* gas velocity from the H-alpha line redshift: the generator puts a line at
  rest * (1 + V/c), so its true redshift is V/c and the velocity error is
  c (z_fit - z_true) / (1 + z_true), in the line's rest frame;
* stellar velocity against c ln((1 + z_true) / (1 + z_input)), the fit's convention;
* pulls (fit - truth) / error of the gas V and of the H-alpha and [N II] 6584 fluxes,
  and the scatter of log([N II]/H-alpha) about the truth (what N2_PP04 uses).

    python benchmarks/lines_ifu_check.py [--galaxies 0 3] [--snr 10] [--size 14]

prints one Markdown row per cube (docs/lines_validation.md, section 4).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from skyledger.compute.fitting import SpectraBatch, SpectrumFlag, TemplateLibrary, fit_spectra
from skyledger.compute.tasks.lines import LinesParams, LinesTask
from skyledger.ingest.readers.ifu_cube import muse_cube as muse_reader
from skyledger.testing.disk_model import C_KMS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rotation_validation import GALAXIES, validation_cube  # noqa: E402

def _robust_sd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def check_cube(k: int, work: Path, snr: float, size: int, scale: float) -> dict[str, float]:
    p, path, truth = validation_cube(k, work, snr, size, scale)
    z_in = p.v_sys / C_KMS
    rows = [r for r in muse_reader.read(path, {"z": z_in}).spectra if r.wave is not None]
    # Spaxel of each row: nearest true position (the reader's WCS against the generator's own).
    cos_d = np.cos(np.radians(p.dec))
    iy, ix = [], []
    for r in rows:
        d2 = ((truth.ra - r.ra) * cos_d) ** 2 + (truth.dec - r.dec) ** 2
        y, x = np.unravel_index(np.argmin(d2), d2.shape)
        iy.append(y)
        ix.append(x)
    iy_a, ix_a = np.array(iy), np.array(ix)
    batch = SpectraBatch(
        wave=np.stack([r.wave for r in rows]), flux=np.stack([r.flux for r in rows]),
        ivar=np.stack([r.ivar for r in rows]), redshift=np.full(len(rows), z_in),
        resolution=np.stack([r.resolution for r in rows]),
    )  # fmt: skip
    started = time.perf_counter()
    res = fit_spectra(batch, TemplateLibrary.mileshc(), LinesTask.fit_config(LinesParams()))
    seconds = time.perf_counter() - started

    ha, n2 = res.line_index("HA6563"), res.line_index("NII6584")
    z_true = truth.velocity[iy_a, ix_a] / C_KMS
    dv = C_KMS * (res.line_z[:, ha] - z_true) / (1.0 + z_true)
    sd = max(_robust_sd(dv), 1e-3)
    outliers = np.abs(dv - np.nanmedian(dv)) > 4.0 * sd
    f_ha, f_n2 = truth.line_flux["HA6563"][iy_a, ix_a], truth.line_flux["NII6584"][iy_a, ix_a]
    pulls = {
        "V": dv / res.line_velocity_err[:, ha],
        "Ha": (res.line_flux[:, ha] - f_ha) / res.line_flux_err[:, ha],
        "N2": (res.line_flux[:, n2] - f_n2) / res.line_flux_err[:, n2],
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        dn2 = np.log10(res.line_flux[:, n2] / res.line_flux[:, ha]) - np.log10(f_n2 / f_ha)
    dn2_ok = np.isfinite(dn2)
    dv_star = res.velocity - C_KMS * np.log((1.0 + z_true) / (1.0 + z_in))
    return {
        "galaxy": k, "n": len(rows), "seconds": seconds, "outliers": int(outliers.sum()),
        "dv_median": float(np.nanmedian(dv)), "dv_rsd": _robust_sd(dv), "dv_max": float(np.nanmax(np.abs(dv))),
        "ha_snr_min": float(np.nanmin(res.line_snr[:, ha])),
        **{f"pull_{n}_mean": float(np.nanmean(v)) for n, v in pulls.items()},
        **{f"pull_{n}_sd": float(np.nanstd(v)) for n, v in pulls.items()},
        "n2_scatter_dex": float(np.std(dn2[dn2_ok])), "n2_off": int(np.count_nonzero(~dn2_ok | (np.abs(dn2) > 0.1))), "chi2_median": float(np.nanmedian(res.chi2_dof)),
        "gas_sigma_median": float(np.nanmedian(res.line_sigma[:, ha])),
        "star_dv_rsd": _robust_sd(dv_star),
        "star_sigma_at_bound": int(np.count_nonzero(res.flags & SpectrumFlag.SIGMA_AT_BOUND)),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, nargs="+", default=list(range(len(GALAXIES))))
    ap.add_argument("--snr", type=float, default=10.0, help="continuum S/N per pixel at the centre")
    ap.add_argument("--size", type=int, default=14, help="spaxels per side (one NaN border)")
    ap.add_argument("--scale", type=float, default=0.5, help="arcsec per spaxel")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| cube | spaxels | gas V outliers (> 4 robust sd) | gas V - truth: median / robust sd / max (km/s) "
          "| min Ha S/N | pulls V, Ha, [NII] (mean / sd) | log [NII]/Ha - truth: sd (dex) / n off by > 0.1 dex | chi2/dof (median) "
          "| gas sigma (true 40) | stellar V robust sd (km/s) | stellar SIGMA_AT_BOUND | fit (s) |")
    print("|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="lines-ifu-") as tmp:
        for k in args.galaxies:
            r = check_cube(k, Path(tmp), args.snr, args.size, args.scale)
            pulls = ", ".join(f"{r[f'pull_{n}_mean']:.2f} / {r[f'pull_{n}_sd']:.2f}" for n in ("V", "Ha", "N2"))
            print(f"| VAL{k} | {r['n']} | {r['outliers']} | {r['dv_median']:.2f} / {r['dv_rsd']:.2f} / {r['dv_max']:.1f} "
                  f"| {r['ha_snr_min']:.0f} | {pulls} | {r['n2_scatter_dex']:.4f} / {r['n2_off']} | {r['chi2_median']:.2f} "
                  f"| {r['gas_sigma_median']:.1f} | {r['star_dv_rsd']:.0f} | {r['star_sigma_at_bound']} "
                  f"| {r['seconds']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
