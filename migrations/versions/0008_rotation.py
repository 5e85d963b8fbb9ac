"""Rotation curves and metallicity gradients: `rotation_fit`, `metallicity_gradient` and their catalog views.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from alembic import op
import sqlalchemy as sa

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Per galaxy, the rows of the best run on the `current` search path (lowest rank, then
# newest), as the other catalog views; the galaxy's object_id is joined in for users.
VIEWS = {
    "catalog.rotation": """
CREATE VIEW catalog.rotation AS
WITH chosen AS (
    SELECT DISTINCT ON (f.source_id) f.source_id, f.run_id
    FROM rotation_fit AS f
    JOIN catalog.current_runs AS cr ON cr.run_id = f.run_id
    WHERE cr.task = 'rotation'
    ORDER BY f.source_id, cr.rank, f.run_id DESC
)
SELECT f.source_id, s.object_id, f.component, f.model, f.z_gal, f.ra_center, f.dec_center, f.ra_center_err,
       f.dec_center_err, f.pa, f.pa_err, f.inc, f.inc_err, f.vsys, f.vsys_err, f.vmax, f.vmax_err,
       f.r_turn, f.r_turn_err, f.r_turn_kpc, f.r_turn_kpc_err, f.sigma0, f.sigma0_err, f.kpc_per_arcsec,
       f.r_max, f.psf_fwhm, f.chi2, f.n_points, f.n_rejected, f.flags, f.run_id
FROM rotation_fit AS f
JOIN chosen ON chosen.source_id = f.source_id AND chosen.run_id = f.run_id
JOIN source AS s ON s.id = f.source_id
""",
    "catalog.metallicity_gradients": """
CREATE VIEW catalog.metallicity_gradients AS
WITH chosen AS (
    SELECT DISTINCT ON (g.source_id) g.source_id, g.run_id
    FROM metallicity_gradient AS g
    JOIN catalog.current_runs AS cr ON cr.run_id = g.run_id
    WHERE cr.task = 'gradients'
    ORDER BY g.source_id, cr.rank, g.run_id DESC
)
SELECT g.source_id, s.object_id, g.method, g.slope_dex_per_kpc, g.slope_dex_per_kpc_err,
       g.slope_dex_per_arcsec, g.slope_dex_per_arcsec_err, g.slope_dex_per_re, g.slope_dex_per_re_err, g.r_e,
       g.central_oh, g.central_oh_err, g.scatter, g.scatter_err, g.r_min, g.r_max, g.n_points, g.n_rejected,
       g.geometry, g.rotation_run_id, g.flags, g.run_id
FROM metallicity_gradient AS g
JOIN chosen ON chosen.source_id = g.source_id AND chosen.run_id = g.run_id
JOIN source AS s ON s.id = g.source_id
""",
}
COMMENTS = {
    "catalog.rotation": "Rotating-disk fits of every galaxy with enough velocities: one row per component and rotation-curve model, from the current rotation runs",
    "catalog.metallicity_gradients": "Radial 12+log(O/H) gradients of every galaxy with a rotation geometry, one row per abundance method, from the current gradients runs",
}


def upgrade() -> None:
    op.create_table(
        "rotation_fit",
        sa.Column("run_id", sa.BigInteger(), nullable=False, comment='Run that produced the fit'),
        sa.Column("source_id", sa.BigInteger(), nullable=False, comment='The galaxy (parent source of the points fitted)'),
        sa.Column("component", sa.Text(), nullable=False, comment='Velocities fitted: gas (emission lines) or stars (stellar kinematics)'),
        sa.Column("model", sa.Text(), nullable=False, comment='Rotation curve: arctan (V_max asymptotic, r_turn turnover radius) or freeman (exponential disk; V_max peak speed, r_turn radius of the peak = 2.15 scale lengths)'),
        sa.Column("z_gal", sa.Double(), nullable=True, comment='Galaxy redshift the velocities are relative to (source.z); NULL when the galaxy has none'),
        sa.Column("ra_center", sa.Double(), nullable=True, comment='Right ascension of the fitted disk centre (ICRS)'),
        sa.Column("dec_center", sa.Double(), nullable=True, comment='Declination of the fitted disk centre (ICRS)'),
        sa.Column("ra_center_err", sa.Double(), nullable=True, comment="Error of the centre's east offset from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)"),
        sa.Column("dec_center_err", sa.Double(), nullable=True, comment="Error of the centre's north offset from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)"),
        sa.Column("pa", sa.Double(), nullable=True, comment='Position angle of the receding major axis, north through east, in [0, 360)'),
        sa.Column("pa_err", sa.Double(), nullable=True, comment='Error of pa from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'),
        sa.Column("inc", sa.Double(), nullable=True, comment='Disk inclination (0 = face-on)'),
        sa.Column("inc_err", sa.Double(), nullable=True, comment='Error of inc from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'),
        sa.Column("vsys", sa.Double(), nullable=True, comment='Systemic velocity relative to z_gal, rest frame'),
        sa.Column("vsys_err", sa.Double(), nullable=True, comment='Error of vsys from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'),
        sa.Column("vmax", sa.Double(), nullable=True, comment='Deprojected rotation speed: asymptotic (arctan) or peak (freeman)'),
        sa.Column("vmax_err", sa.Double(), nullable=True, comment='Error of vmax from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'),
        sa.Column("r_turn", sa.Double(), nullable=True, comment='Turnover radius (arctan) or radius of the peak speed (freeman)'),
        sa.Column("r_turn_err", sa.Double(), nullable=True, comment='Error of r_turn from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'),
        sa.Column("r_turn_kpc", sa.Double(), nullable=True, comment='r_turn in proper kpc (angular-diameter distance of z_gal, astropy Planck18)'),
        sa.Column("r_turn_kpc_err", sa.Double(), nullable=True, comment='Error of r_turn_kpc from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)'),
        sa.Column("sigma0", sa.Double(), nullable=True, comment='Velocity-dispersion floor: median intrinsic dispersion of the points beyond r_turn, beam smearing removed when a PSF is known'),
        sa.Column("sigma0_err", sa.Double(), nullable=True, comment='Error of sigma0: 1.2533 x 1.4826 x MAD / sqrt(n)'),
        sa.Column("kpc_per_arcsec", sa.Double(), nullable=True, comment='Proper kpc per arcsec at z_gal (astropy Planck18); NULL without redshift'),
        sa.Column("r_max", sa.Double(), nullable=True, comment='Deprojected radius of the outermost point used'),
        sa.Column("psf_fwhm", sa.Double(), nullable=True, comment='FWHM of the Gaussian PSF modelled for beam smearing; NULL when none was'),
        sa.Column("chi2", sa.Double(), nullable=True, comment='Reduced chi-square of the points kept'),
        sa.Column("n_points", sa.Integer(), nullable=False, comment='Points used in the fit (after outlier rejection)'),
        sa.Column("n_rejected", sa.Integer(), nullable=False, comment='Points rejected as outliers'),
        sa.Column("flags", sa.Integer(), nullable=False, server_default=sa.text("0"), comment='Rotation-fit flag bits (see flag_definition)'),
        sa.CheckConstraint("component IN ('gas', 'stars')", name=op.f("ck_rotation_fit_component")),
        sa.CheckConstraint("model IN ('arctan', 'freeman')", name=op.f("ck_rotation_fit_model")),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_rotation_fit_run_id_run")),
        sa.ForeignKeyConstraint(["source_id"], ["source.id"], name=op.f("fk_rotation_fit_source_id_source")),
        sa.PrimaryKeyConstraint("run_id", "source_id", "component", "model", name=op.f("pk_rotation_fit")),
    )
    op.create_index("ix_rotation_fit_source_id", "rotation_fit", ["source_id"], unique=False)
    op.create_table(
        "metallicity_gradient",
        sa.Column("run_id", sa.BigInteger(), nullable=False, comment='Run that produced the gradient'),
        sa.Column("source_id", sa.BigInteger(), nullable=False, comment='The galaxy'),
        sa.Column("method", sa.Text(), nullable=False, comment='Abundance method of the points (abundance.method)'),
        sa.Column("rotation_run_id", sa.BigInteger(), nullable=True, comment='Run of the rotation fit whose centre, PA and inclination deprojected the radii'),
        sa.Column("geometry", sa.Text(), nullable=True, comment='Which rotation fit gave the geometry: component/model, e.g. gas/arctan'),
        sa.Column("slope_dex_per_arcsec", sa.Double(), nullable=True, comment='Slope of 12+log(O/H) against deprojected radius'),
        sa.Column("slope_dex_per_arcsec_err", sa.Double(), nullable=True, comment='Error of slope_dex_per_arcsec (inverse Hessian of the likelihood)'),
        sa.Column("slope_dex_per_kpc", sa.Double(), nullable=True, comment='Slope per proper kpc (astropy Planck18 at the galaxy redshift); NULL without redshift'),
        sa.Column("slope_dex_per_kpc_err", sa.Double(), nullable=True, comment='Error of slope_dex_per_kpc'),
        sa.Column("slope_dex_per_re", sa.Double(), nullable=True, comment='Slope per effective radius r_e; NULL where r_e is not known'),
        sa.Column("slope_dex_per_re_err", sa.Double(), nullable=True, comment='Error of slope_dex_per_re'),
        sa.Column("r_e", sa.Double(), nullable=True, comment='Effective radius used (source.meta r_e_arcsec)'),
        sa.Column("central_oh", sa.Double(), nullable=True, comment='12+log(O/H) of the fitted line at radius 0'),
        sa.Column("central_oh_err", sa.Double(), nullable=True, comment='Error of central_oh'),
        sa.Column("scatter", sa.Double(), nullable=True, comment='Intrinsic scatter about the line, beyond the abundance errors'),
        sa.Column("scatter_err", sa.Double(), nullable=True, comment='Error of scatter'),
        sa.Column("r_min", sa.Double(), nullable=True, comment='Smallest deprojected radius of the points used'),
        sa.Column("r_max", sa.Double(), nullable=True, comment='Largest deprojected radius of the points used'),
        sa.Column("n_points", sa.Integer(), nullable=False, comment='Points used (after outlier rejection)'),
        sa.Column("n_rejected", sa.Integer(), nullable=False, comment='Points rejected as outliers'),
        sa.Column("flags", sa.Integer(), nullable=False, server_default=sa.text("0"), comment='Gradient flag bits (see flag_definition)'),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_metallicity_gradient_run_id_run")),
        sa.ForeignKeyConstraint(["rotation_run_id"], ["run.id"], name=op.f("fk_metallicity_gradient_rotation_run_id_run")),
        sa.ForeignKeyConstraint(["source_id"], ["source.id"], name=op.f("fk_metallicity_gradient_source_id_source")),
        sa.PrimaryKeyConstraint("run_id", "source_id", "method", name=op.f("pk_metallicity_gradient")),
    )
    op.create_index("ix_metallicity_gradient_source_id", "metallicity_gradient", ["source_id"], unique=False)
    for view in VIEWS.values():
        op.execute(view)
    for name, doc in COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {name} IS '{doc}'")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_index("ix_metallicity_gradient_source_id", table_name="metallicity_gradient")
    op.drop_table("metallicity_gradient")
    op.drop_index("ix_rotation_fit_source_id", table_name="rotation_fit")
    op.drop_table("rotation_fit")
