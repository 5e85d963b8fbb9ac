"""Disk fits of patchy, beam-smeared velocity maps like KMOS3D GS4_43501: how often each
model gets the geometry (PA within 10 deg, inclination within 15 deg, V_max within 15 %
of the truth), and how often a miss is flagged MODELS_DISAGREE.

Maps: :func:`skyledger.testing.patchy_velocity_map.patchy_map` with seeds 0..N-1 (PA 322,
i 62 deg, V_max 250 km/s, V_sys +40 km/s, centre (+0.25", -0.75") from the map centre).
Fits: ``fit_disks`` with the defaults and the PSF given, then (where the code has it) the
`rotation` task's model agreement.  Uses only ``fit_disks`` and ``DiskFitConfig`` besides
that, so it runs on rotation version 3's code too (``git checkout 7bebbc6 --
compute/kinematics/disk.py compute/kinematics/initial_guess.py``) for the "before" row.

    python benchmarks/rotation_patchy_maps.py [--maps 16]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from skyledger.compute.kinematics import DiskFitConfig, DiskFlag, fit_disks
from skyledger.testing.patchy_velocity_map import patchy_map, to_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    maps = [patchy_map(s) for s in range(args.maps)]
    data = to_data(maps)
    configs = {m: DiskFitConfig(model=m) for m in ("arctan", "freeman")}
    fits = {m: fit_disks(data, c) for m, c in configs.items()}
    has_agreement = hasattr(DiskFlag, "MODELS_DISAGREE")  # not in rotation version 3
    if has_agreement:
        from skyledger.compute.kinematics.model_agreement import agree

        fits = agree(data, fits, configs)
    out = {"maps": args.maps, "model_agreement": has_agreement}
    for model, fit in fits.items():
        th = fit.theta.numpy()
        dpa = (np.degrees(th[:, 2]) - 322.0 + 180) % 360 - 180
        dinc = np.degrees(th[:, 3]) - 62.0
        dv = th[:, 5] / 250.0 - 1
        ok = (np.abs(dpa) < 10) & (np.abs(dinc) < 15) & (np.abs(dv) < 0.15)
        flagged = (fit.flags.numpy() & int(getattr(DiskFlag, "MODELS_DISAGREE", 0))) != 0
        out[model] = {
            "geometry_ok": int(ok.sum()), "missed_unflagged": int((~ok & ~flagged).sum()),
            "missed_flagged": int((~ok & flagged).sum()), "flagged_ok": int((ok & flagged).sum()),
            "max_abs_dpa_deg": float(np.abs(dpa).max()), "median_dinc_deg": float(np.median(dinc)),
            "max_abs_dinc_deg": float(np.abs(dinc).max()), "median_dvmax": float(np.median(dv)),
            "max_abs_dvmax": float(np.abs(dv).max()),
            "max_abs_dvsys_kms": float(np.abs(th[:, 4] - 40.0).max()),
            "chi2_above_2": int((fit.chi2.numpy() > 2).sum()),
            "misses": [int(i) for i in np.nonzero(~ok)[0]],
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
