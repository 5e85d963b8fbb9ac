"""`rotation` version 4: geometry, beam smearing and bootstrap errors of the disk fits.

Nine ``rotation_fit`` columns, all NULL in older rows: ``pa_kin``, ``pa_kin_err`` (the
kinematic PA of the velocity field's symmetry, Krajnovic et al. 2006, that every fit now
starts from); ``vmax_obs`` (the highest speed of the beam-smeared model near the major
axis, what the map shows without a PSF model); ``pa_err_boot`` ... ``r_turn_err_boot``
and ``n_bootstrap`` (a block bootstrap over the points checking the curvature errors).
They are added last, after ``flags``, and RotationFit declares them there (the physical
order); catalog.rotation shows them before ``flags``, so the view is re-created, as
printed by ``python -m skyledger.schema.catalog ddl rotation`` (pasted, not imported: a
migration never changes once released).

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

COLUMNS = {
    "pa_kin": (sa.Double(), 'Kinematic PA of the velocity field from its symmetry (Krajnovic et al. 2006), receding side, north through east, in [0, 360): what the fit starts from'),
    "pa_kin_err": (sa.Double(), 'Error of pa_kin, from the curvature of its chi-square against trial PAs'),
    "vmax_obs": (sa.Double(), "Observed rotation speed: the highest deprojected speed of the beam-smeared model near the major axis (what the map shows without a PSF model); equals the intrinsic curve's highest speed within the data when no PSF is modelled"),
    "pa_err_boot": (sa.Double(), 'Error of pa from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'),
    "inc_err_boot": (sa.Double(), 'Error of inc from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'),
    "vsys_err_boot": (sa.Double(), 'Error of vsys from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'),
    "vmax_err_boot": (sa.Double(), 'Error of vmax from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'),
    "r_turn_err_boot": (sa.Double(), 'Error of r_turn from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'),
    "n_bootstrap": (sa.Integer(), 'Bootstrap resamples behind the *_err_boot columns (those that fitted); NULL when not bootstrapped'),
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
       t.psf_fwhm, t.chi2, t.n_points, t.n_rejected, t.pa_kin, t.pa_kin_err, t.vmax_obs, t.pa_err_boot,
       t.inc_err_boot, t.vsys_err_boot, t.vmax_err_boot, t.r_turn_err_boot, t.n_bootstrap, t.flags, t.run_id
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
    "COMMENT ON COLUMN catalog.rotation.vmax_obs IS 'Observed rotation speed: the highest deprojected speed of the beam-smeared model near the major axis (what the map shows without a PSF model); equals the intrinsic curve''s highest speed within the data when no PSF is modelled'",
    "COMMENT ON COLUMN catalog.rotation.pa_err_boot IS 'Error of pa from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'",
    "COMMENT ON COLUMN catalog.rotation.inc_err_boot IS 'Error of inc from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'",
    "COMMENT ON COLUMN catalog.rotation.vsys_err_boot IS 'Error of vsys from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'",
    "COMMENT ON COLUMN catalog.rotation.vmax_err_boot IS 'Error of vmax from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'",
    "COMMENT ON COLUMN catalog.rotation.r_turn_err_boot IS 'Error of r_turn from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped'",
    "COMMENT ON COLUMN catalog.rotation.n_bootstrap IS 'Bootstrap resamples behind the *_err_boot columns (those that fitted); NULL when not bootstrapped'",
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
    for name, (kind, doc) in COLUMNS.items():
        op.add_column("rotation_fit", sa.Column(name, kind, nullable=True, comment=doc))
    _recreate(VIEW, COMMENTS)


def downgrade() -> None:
    # The view of revision 0019: the same select list without the new columns.
    old_view = " ".join(VIEW.split()).replace(", ".join(f"t.{name}" for name in COLUMNS) + ", ", "")
    _recreate(old_view, [c for c in COMMENTS if not any(f"catalog.rotation.{name} " in c for name in COLUMNS)])
    for name in reversed(COLUMNS):
        op.drop_column("rotation_fit", name)
