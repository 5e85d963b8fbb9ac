"""Make ``sami_209807_bins.ecsv``: the diagnostic lines of every bin of SAMI DR3 209807,
measured by skyledger's own chain (ingest -> `lines`) on the real binned cubes, written in
the layout of the ``line_catalog`` reader (ingest/readers/line_catalog.py).

The two cubes (blue and red arm, 5.6 MB) are too large to ship, and `lines` on them takes
about half a minute; the catalogue is 39 rows.  Each bin is one spectrum per arm in the
database (``209807#bin<n>#blue`` / ``#red``), and the nebula tasks read the lines of one
spectrum, so the real chain would classify each bin on its red-arm lines only.  Here both
arms' lines of a bin go into one row: every ratio the diagnostics use ([OIII]/Hbeta,
[NII]/Halpha, [SII]/Halpha, [OI]/Halpha) is within one arm, so no cross-arm flux
calibration enters them.

Run from the repository root (needs /work/shared/data/cubes/sami, see tests/data/nebula/README.md):

    .venv/bin/python tests/data/nebula/make_sami_catalogue.py [--cubes DIR] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from astropy import units as u
from astropy.table import Table
from sqlalchemy import text

from skyledger.compute.classification.diagnostic import DIAGNOSTIC_LINES
from skyledger.compute.fitting import LineFlag
from skyledger.compute.framework.runner import process
from skyledger.compute.tasks.lines import LinesTask
from skyledger.ingest.batch import ingest_paths
from skyledger.ingest.config import SurveySpec
from skyledger.testing.private_database import private_database

HERE = Path(__file__).resolve().parent
OUT = HERE / "sami_209807_bins.ecsv"
COMMAND = ".venv/bin/python tests/data/nebula/make_sami_catalogue.py"
GLOB = "209807_A_sectors_*.fits.gz"
#: the DR3 PSF FWHM of these cubes (PSFFWHM card 2.507"), as api/demo.py and the rotation maps use it
PSF_FWHM_ARCSEC = 2.51
#: fits `lines` could not make: the nebula tasks drop these too (compute/tasks/nebula.py, _UNUSABLE_FIT)
UNUSABLE = int(LineFlag.NO_GOOD_PIXELS | LineFlag.ZERO_FLUX | LineFlag.SPECTRUM_FAILED | LineFlag.NOT_IN_RANGE)

LINES_SQL = """
SELECT src.object_id AS bin_id, src.ra, src.dec, src.meta AS bin_meta, g.object_id AS galaxy, g.ra AS g_ra,
       g.dec AS g_dec, g.z AS g_z, sp.flux_unit, m.line, m.flux, m.flux_err, m.ew, m.ew_err, m.flags
FROM line_measurement AS m
JOIN catalog.current_runs AS cr ON cr.run_id = m.run_id AND cr.task = 'lines'
JOIN spectrum AS sp ON sp.id = m.spectrum_id
JOIN source AS src ON src.id = sp.source_id
JOIN source AS g ON g.id = src.parent_id
WHERE m.component = 0 AND m.line = ANY(:lines)
"""




def measure(cubes: Path, work: Path) -> list:
    db = private_database(work, "nebula_sami")
    try:
        spec = SurveySpec(name="sami", location=cubes, glob=GLOB, options={"psf_fwhm_arcsec": PSF_FWHM_ARCSEC})
        summary = ingest_paths(db, spec.files(), survey=spec)
        assert [o.status for o in summary.outcomes] == ["loaded", "loaded"], summary.outcomes
        run = process(db, LinesTask())
        assert run.status == "succeeded", run
        with db.engine.connect() as conn:
            return list(conn.execute(text(LINES_SQL), {"lines": list(DIAGNOSTIC_LINES)}))
    finally:
        db.dispose()


def bin_number(bin_id: str) -> int:
    return int(bin_id.rsplit("#bin", 1)[1])


def write_catalogue(rows: list, out: Path) -> Table:
    bins: dict[str, dict] = {}
    for r in rows:
        b = bins.setdefault(r.bin_id, {"row": r, "lines": {}})
        b["lines"][r.line] = r
    order = sorted(bins, key=bin_number)
    first = rows[0]
    (flux_unit,) = {r.flux_unit for r in rows}
    line_unit = u.Unit(flux_unit) * u.AA  # a line flux is the flux density unit times Angstrom
    t = Table()
    t["id"] = order
    t["ra"] = [bins[k]["row"].ra for k in order] * u.deg
    t["dec"] = [bins[k]["row"].dec for k in order] * u.deg
    t["z"] = [first.g_z] * len(order)  # the galaxy's redshift (Z_SPEC), as the reader gave every bin
    t["parent"] = [first.galaxy] * len(order)
    t["bin"] = [bin_number(k) for k in order]
    t["n_spaxels"] = [int(bins[k]["row"].bin_meta["n_spaxels"]) for k in order]
    cosd = math.cos(math.radians(first.g_dec))
    t["r_arcsec"] = [
        round(3600.0 * math.hypot((bins[k]["row"].ra - first.g_ra) * cosd, bins[k]["row"].dec - first.g_dec), 3)
        for k in order
    ] * u.arcsec
    # The cube's PSF, which decides which bins see the nucleus; the line_catalog reader does
    # not read it today (neither column nor option): here for when it does.
    t["psf_fwhm_arcsec"] = [PSF_FWHM_ARCSEC] * len(order) * u.arcsec
    for line in DIAGNOSTIC_LINES:
        flux, err, flags = [], [], []
        for k in order:
            m = bins[k]["lines"].get(line)
            usable = m is not None and m.flux is not None and not (m.flags & UNUSABLE)
            flux.append(m.flux if usable else np.nan)
            err.append(m.flux_err if usable and m.flux_err is not None else np.nan)
            flags.append(-1 if m is None else int(m.flags))
        t[f"{line}_FLUX"] = np.array(flux) * line_unit
        t[f"{line}_FLUX_ERR"] = np.array(err) * line_unit
        t[f"{line}_LINEFLAGS"] = flags  # `lines` LineFlag bits (-1: no row); not read by the reader
    # EW(Halpha) from `lines` (Angstrom, emission positive): the line_catalog reader has no EW
    # column today, so it ignores these two; they are here for the DIG rule if it gets one.
    for col, attr in (("HA6563_EW", "ew"), ("HA6563_EW_ERR", "ew_err")):
        t[col] = [np.nan if (m := bins[k]["lines"].get("HA6563")) is None or getattr(m, attr) is None
                  else getattr(m, attr) for k in order] * u.AA  # fmt: skip
    # The galaxy itself as the first row (its catalogue position and Z_SPEC, no lines), so
    # that every bin's parent is a source with a position: the nucleus is then known to the
    # database, for a context rule that asks whether a bin sees it.
    galaxy = {c: (np.nan if t[c].dtype.kind == "f" else -1) for c in t.colnames}
    galaxy.update(id=first.galaxy, ra=first.g_ra, dec=first.g_dec, z=first.g_z, parent="", bin=0, n_spaxels=0, r_arcsec=0.0,
                  psf_fwhm_arcsec=PSF_FWHM_ARCSEC)
    t.insert_row(0, [galaxy[c] for c in t.colnames])
    t.meta["comments"] = [
        "SAMI DR3 CATID 209807 (z = 0.05386), binned 'sectors' cubes 209807_A_sectors_blue/red.fits.gz:",
        "narrow-component (0) line fluxes of each bin measured by skyledger `lines` "
        f"version {LinesTask.version} (default parameters), blue and red arm of a bin in one row.",
        "A bin's flux is the mean per spaxel of its spaxels (ingest/readers/ifu_cube.py); n_spaxels of 0.5\" x 0.5\".",
        f"r_arcsec: distance of the bin centroid from the cube's catalogue position (CATARA/CATADEC); PSF FWHM {PSF_FWHM_ARCSEC}\".",
        f"Row 1 is the galaxy (no lines). Made by: {COMMAND}. Provenance and licence: tests/data/nebula/README.md.",
    ]
    t.write(out, format="ascii.ecsv", overwrite=True)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cubes", type=Path, default=Path("/work/shared/data/cubes/sami"))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.cubes, args.workdir or Path(tmp))
    t = write_catalogue(rows, args.out)
    print(f"wrote {args.out} ({len(t) - 1} bins and the galaxy, `lines` version {LinesTask.version})")


if __name__ == "__main__":
    main()
