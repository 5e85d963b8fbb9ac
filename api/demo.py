"""`skyledger demo`: the whole pipeline on the real files bundled with the package."""

from __future__ import annotations

from pathlib import Path

from skyledger.compute.framework.registry import get_task, task_names
from skyledger.compute.framework.runner import RunSummary, process
from skyledger.compute.tasks.lines import LinesParams
from skyledger.ingest.batch import BatchSummary, ingest_surveys
from skyledger.ingest.config import IngestConfig, SurveySpec
from skyledger.ingest.sample_data import sample_data_dir
from skyledger.schema.database import Database

from .releases import ReleaseSummary, demo_release

__all__ = ["CUBE_SUMMARY_SQL", "DEMO_CUBE_GALAXY", "NEBULA_SUMMARY_SQL", "demo_config", "process_demo", "release_demo", "run_demo"]


def demo_config() -> IngestConfig:
    """The bundled files as four surveys, as an operator would configure them."""
    root = sample_data_dir()
    return IngestConfig(
        path=None,
        root=root,
        surveys=(
            SurveySpec(name="sdss-dr18", reader="sdss", location=root, glob="*_SDSS_DR18.fits"),
            # The LEGA-C file carries no redshift: the survey's value for M19_56670 (as used
            # in the pPXF LEGA-C example) goes in the configuration, as an operator would.
            SurveySpec(name="legac-dr3", reader="eso_phase3", location=root, glob="legac_*.fits", options={"z": 0.6686}),
            SurveySpec(name="manga-dap-test", reader="manga_rss", location=root, glob="MaNGA_*.fits.gz"),
            # Both arms of one SAMI DR3 galaxy, formats detected from the content. The
            # survey's seeing (DR3 PSF FWHM of this cube) lets the rotation fit model
            # beam smearing.
            SurveySpec(
                name="sami-dr3", location=root, glob="209807_A_sectors_*.fits.gz", options={"psf_fwhm_arcsec": 2.51}
            ),
        ),
    )


#: the IFU galaxy of the demo, whose rotation curve and gradient the demo shows
DEMO_CUBE_GALAXY = "209807"

#: what the demo prints about the cube galaxy: its rotation fits (V_max with its curvature
#: and bootstrap errors) and metallicity gradients
CUBE_SUMMARY_SQL = f"""
SELECT 'rotation ' || component || ' ' || model AS fit, round(pa::numeric, 1) AS pa_deg,
       round(inc::numeric, 1) AS inc_deg, round(vmax::numeric, 1) AS vmax_kms,
       round(vmax_err::numeric, 1) AS vmax_err, round(vmax_err_boot::numeric, 1) AS vmax_err_boot,
       NULL::numeric AS dex_per_kpc, n_points AS points
FROM catalog.rotation WHERE object_id = '{DEMO_CUBE_GALAXY}' AND pa IS NOT NULL
UNION ALL
SELECT 'gradient ' || method, NULL, NULL, NULL, NULL, NULL, round(slope_dex_per_kpc::numeric, 3), n_points
FROM catalog.metallicity_gradients WHERE object_id = '{DEMO_CUBE_GALAXY}' AND slope_dex_per_kpc IS NOT NULL
ORDER BY 1
"""


#: what the demo prints about the nebula classes: per survey, method, context and class
#: (the SAMI bins are `galaxy`: its 2.51" seeing is 2.7 kpc at z = 0.054)
NEBULA_SUMMARY_SQL = """
SELECT s.survey, n.method, n.context, n.class, count(*) AS spectra, round(avg(n.probability)::numeric, 2) AS mean_p
FROM catalog.nebula_class AS n JOIN catalog.spectra AS s ON s.spectrum_id = n.spectrum_id
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""


def run_demo(db: Database) -> BatchSummary:
    """Ingest the bundled data (a no-op when it is already in)."""
    return ingest_surveys(db, demo_config())


def process_demo(db: Database, device: str, workers: int = 1, on_task=None) -> list[RunSummary]:
    """Run every compute task on what is pending (nothing, the second time)."""
    # The lines fit tries second kinematic components (broad Balmer, [OIII] outflow), so
    # the release shows them on the MaNGA multi-component spectra; the task's default
    # (one component) is the fast survey setting.
    params = {"lines": LinesParams(components="auto")}
    summaries = []
    for name in task_names():
        summary = process(db, get_task(name), params.get(name), device=device, workers=workers, batch_size=16)
        summaries.append(summary)
        if on_task is not None:
            on_task(summary)
    return summaries


def release_demo(db: Database, releases_dir: Path) -> tuple[str, Path, ReleaseSummary | None]:
    """Freeze `current` as the next release ``drN`` unless the newest one already holds it."""
    return demo_release(db, releases_dir)
