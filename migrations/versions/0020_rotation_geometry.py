"""Kinematic PA of the velocity field: ``rotation_fit.pa_kin`` and ``pa_kin_err``, shown in catalog.rotation.

The `rotation` task (version 4) starts every disk fit from the kinematic centre, V_sys and
PA of the velocity field's symmetry (Krajnovic et al. 2006) and stores that PA and its
error; flag PA_KIN_DISAGREES marks fits whose PA ends more than max(10 deg, 3 pa_kin_err)
from it. The columns follow ``flags`` in the table (added last, and RotationFit declares them
there, in the physical order); catalog.rotation shows them before ``flags``, so the view is
re-created, as printed by ``python -m skyledger.schema.catalog ddl rotation``.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"
DOCS = {
    "pa_kin": 'Kinematic PA of the velocity field from its symmetry (Krajnovic et al. 2006), receding side, north through east, in [0, 360): what the fit starts from',
    "pa_kin_err": 'Error of pa_kin, from the curvature of its chi-square against trial PAs',
}

VIEW = """
CREATE VIEW catalog.rotation AS
WITH chosen AS (
    SELECT DISTINCT ON (t.source_id) t.source_id, t.run_id, p.task
    FROM rotation_fit AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('rotation')
    ORDER BY t.source_id, p.rank, t.run_id DESC
)
SELECT t.source_id, src.object_id, t.component, t.model, t.z_gal, t.ra_center, t.dec_center, t.ra_center_err,
       t.dec_center_err, t.pa, t.pa_err, t.inc, t.inc_err, t.vsys, t.vsys_err, t.vmax, t.vmax_err, t.r_turn,
       t.r_turn_err, t.r_turn_kpc, t.r_turn_kpc_err, t.sigma0, t.sigma0_err, t.kpc_per_arcsec, t.r_max,
       t.psf_fwhm, t.chi2, t.n_points, t.n_rejected, t.pa_kin, t.pa_kin_err, t.flags, t.run_id
FROM rotation_fit AS t
JOIN chosen ON chosen.source_id = t.source_id AND chosen.run_id = t.run_id
JOIN source AS src ON src.id = t.source_id
"""

COMMENTS = [
    "COMMENT ON VIEW catalog.rotation IS 'Rotating-disk fits of every galaxy with enough velocities, one row per component and rotation-curve model (task rotation)'",
    "COMMENT ON COLUMN catalog.rotation.source_id IS 'The galaxy (parent source of the points fitted)'",
    "COMMENT ON COLUMN catalog.rotation.object_id IS 'The survey''s identifier of the galaxy'",
    "COMMENT ON COLUMN catalog.rotation.component IS 'Velocities fitted: gas (emission lines) or stars (stellar kinematics)'",
    "COMMENT ON COLUMN catalog.rotation.model IS 'Rotation curve: arctan (V_max asymptotic, r_turn turnover radius) or freeman (exponential disk; V_max peak speed, r_turn radius of the peak = 2.15 scale lengths)'",
    "COMMENT ON COLUMN catalog.rotation.z_gal IS 'Galaxy redshift the velocities are relative to (source.z); NULL when the galaxy has none'",
    "COMMENT ON COLUMN catalog.rotation.ra_center IS 'Right ascension of the fitted disk centre (ICRS)'",
    "COMMENT ON COLUMN catalog.rotation.dec_center IS 'Declination of the fitted disk centre (ICRS)'",
    "COMMENT ON COLUMN catalog.rotation.ra_center_err IS 'Error of the centre''s east offset from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.dec_center_err IS 'Error of the centre''s north offset from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.pa IS 'Position angle of the receding major axis, north through east, in [0, 360)'",
    "COMMENT ON COLUMN catalog.rotation.pa_err IS 'Error of pa from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.inc IS 'Disk inclination (0 = face-on)'",
    "COMMENT ON COLUMN catalog.rotation.inc_err IS 'Error of inc from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.vsys IS 'Systemic velocity relative to z_gal, rest frame'",
    "COMMENT ON COLUMN catalog.rotation.vsys_err IS 'Error of vsys from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.vmax IS 'Deprojected rotation speed: asymptotic (arctan) or peak (freeman)'",
    "COMMENT ON COLUMN catalog.rotation.vmax_err IS 'Error of vmax from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.r_turn IS 'Turnover radius (arctan) or radius of the peak speed (freeman)'",
    "COMMENT ON COLUMN catalog.rotation.r_turn_err IS 'Error of r_turn from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.r_turn_kpc IS 'r_turn in proper kpc (angular-diameter distance of z_gal, astropy Planck18)'",
    "COMMENT ON COLUMN catalog.rotation.r_turn_kpc_err IS 'Error of r_turn_kpc from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'",
    "COMMENT ON COLUMN catalog.rotation.sigma0 IS 'Velocity-dispersion floor: median intrinsic dispersion of the points beyond r_turn, beam smearing removed when a PSF is known'",
    "COMMENT ON COLUMN catalog.rotation.sigma0_err IS 'Error of sigma0: 1.2533 x 1.4826 x MAD / sqrt(n)'",
    "COMMENT ON COLUMN catalog.rotation.kpc_per_arcsec IS 'Proper kpc per arcsec at z_gal (astropy Planck18); NULL without redshift'",
    "COMMENT ON COLUMN catalog.rotation.r_max IS 'Deprojected radius of the outermost point used'",
    "COMMENT ON COLUMN catalog.rotation.psf_fwhm IS 'FWHM of the Gaussian PSF modelled for beam smearing; NULL when none was'",
    "COMMENT ON COLUMN catalog.rotation.chi2 IS 'Reduced chi-square of the points kept'",
    "COMMENT ON COLUMN catalog.rotation.n_points IS 'Points used in the fit (after outlier rejection)'",
    "COMMENT ON COLUMN catalog.rotation.n_rejected IS 'Points rejected as outliers'",
    "COMMENT ON COLUMN catalog.rotation.pa_kin IS 'Kinematic PA of the velocity field from its symmetry (Krajnovic et al. 2006), receding side, north through east, in [0, 360): what the fit starts from'",
    "COMMENT ON COLUMN catalog.rotation.pa_kin_err IS 'Error of pa_kin, from the curvature of its chi-square against trial PAs'",
    "COMMENT ON COLUMN catalog.rotation.flags IS 'Rotation-fit flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.rotation.run_id IS 'Run that produced the fit'",
]


def _recreate(ddl: str, comments: list[str]) -> None:
    op.execute("DROP VIEW catalog.rotation")
    op.execute(ddl)
    op.execute(f"GRANT SELECT ON catalog.rotation TO {READER_ROLE}")
    for statement in comments:
        op.execute(sa.text(statement))


def upgrade() -> None:
    for name, doc in DOCS.items():
        op.add_column("rotation_fit", sa.Column(name, sa.Double(), nullable=True, comment=doc))
    _recreate(VIEW, COMMENTS)


def downgrade() -> None:
    old_view = VIEW.replace("t.n_rejected, t.pa_kin, t.pa_kin_err, t.flags", "t.n_rejected, t.flags")
    _recreate(old_view, [c for c in COMMENTS if not any(f"catalog.rotation.{n} " in c for n in DOCS)])
    for name in reversed(DOCS):
        op.drop_column("rotation_fit", name)
