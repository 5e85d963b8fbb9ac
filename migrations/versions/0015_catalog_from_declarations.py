"""Catalog result views derived from the result-table declarations; comments on every view column.

The six result views are re-created from ``skyledger.schema.results`` (one best-run rule,
:func:`~skyledger.schema.results.chosen_sql`), with the same rows as before. Columns follow
the model order (catalog.metallicity_gradients changes its column order to that of the
table and of the releases). Every column of every catalog view gets the comment of the
column it shows, so ``\\d+ catalog.lines`` gives descriptions.

The SQL below was printed by ``python -m skyledger.schema.catalog ddl`` and
``... comments`` and is pasted, not imported: a migration never changes once released.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"

VIEWS = {
    "lines": """
CREATE VIEW catalog.lines AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id, p.task) t.spectrum_id, t.run_id, p.task
    FROM line_measurement AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lines', 'ingested')
    ORDER BY t.spectrum_id, p.task, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.line, t.z, t.velocity, t.velocity_err, t.sigma, t.sigma_err, t.flux, t.flux_err, t.ew,
       t.ew_err, t.snr, t.flags, sp.flux_unit, chosen.task AS source_task, t.run_id
FROM line_measurement AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
JOIN spectrum AS sp ON sp.id = t.spectrum_id
""",
    "stellar_kinematics": """
CREATE VIEW catalog.stellar_kinematics AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id) t.spectrum_id, t.run_id, p.task
    FROM stellar_kinematics AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('lines')
    ORDER BY t.spectrum_id, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.z, t.velocity, t.velocity_err, t.sigma, t.sigma_err, t.chi2, t.stellar_chi2, t.snr,
       t.n_pixels, t.flags, t.run_id
FROM stellar_kinematics AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
""",
    "abundances": """
CREATE VIEW catalog.abundances AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id) t.spectrum_id, t.run_id, p.task
    FROM abundance AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('abundances')
    ORDER BY t.spectrum_id, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.method, t.oh, t.oh_err_lo, t.oh_err_hi, t.n_o, t.n_o_err_lo, t.n_o_err_hi, t.s_h,
       t.s_h_err_lo, t.s_h_err_hi, t.ebv, t.ebv_err_lo, t.ebv_err_hi, t.te_oiii, t.te_oiii_err_lo,
       t.te_oiii_err_hi, t.te_nii, t.te_nii_err_lo, t.te_nii_err_hi, t.te_siii, t.te_siii_err_lo,
       t.te_siii_err_hi, t.te_oii, t.te_oii_err_lo, t.te_oii_err_hi, t.ne_sii, t.ne_sii_err_lo,
       t.ne_sii_err_hi, t.ne_oii, t.ne_oii_err_lo, t.ne_oii_err_hi, t.op_h, t.opp_h, t.np_h, t.sp_h, t.spp_h,
       t.flags, t.run_id
FROM abundance AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
""",
    "nebula_class": """
CREATE VIEW catalog.nebula_class AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id, p.task) t.spectrum_id, t.run_id, p.task
    FROM nebula_class AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('nebula_diagnostic', 'nebula_nn')
    ORDER BY t.spectrum_id, p.task, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.method, t.class, t.probability, t.p_hii, t.p_pn, t.p_snr, t.p_dig, t.p_agn, t.flags,
       t.run_id
FROM nebula_class AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id
""",
    "rotation": """
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
       t.psf_fwhm, t.chi2, t.n_points, t.n_rejected, t.flags, t.run_id
FROM rotation_fit AS t
JOIN chosen ON chosen.source_id = t.source_id AND chosen.run_id = t.run_id
JOIN source AS src ON src.id = t.source_id
""",
    "metallicity_gradients": """
CREATE VIEW catalog.metallicity_gradients AS
WITH chosen AS (
    SELECT DISTINCT ON (t.source_id) t.source_id, t.run_id, p.task
    FROM metallicity_gradient AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('gradients')
    ORDER BY t.source_id, p.rank, t.run_id DESC
)
SELECT t.source_id, src.object_id, t.method, t.rotation_run_id, t.geometry, t.slope_dex_per_arcsec,
       t.slope_dex_per_arcsec_err, t.slope_dex_per_kpc, t.slope_dex_per_kpc_err, t.slope_dex_per_re,
       t.slope_dex_per_re_err, t.r_e, t.central_oh, t.central_oh_err, t.scatter, t.scatter_err, t.r_min,
       t.r_max, t.n_points, t.n_rejected, t.flags, t.run_id
FROM metallicity_gradient AS t
JOIN chosen ON chosen.source_id = t.source_id AND chosen.run_id = t.run_id
JOIN source AS src ON src.id = t.source_id
""",
}

COMMENTS = [
    "COMMENT ON VIEW catalog.spectra IS 'Every ingested spectrum (IFU spaxels and bins included) of the newest version of each file, with its source and file'",
    "COMMENT ON COLUMN catalog.spectra.spectrum_id IS 'Spectrum identifier'",
    "COMMENT ON COLUMN catalog.spectra.survey IS 'Survey name'",
    "COMMENT ON COLUMN catalog.spectra.object_id IS 'The survey''s own identifier of the spectrum'",
    "COMMENT ON COLUMN catalog.spectra.ra IS 'Right ascension of the spectrum (ICRS); a spaxel or bin has its own'",
    "COMMENT ON COLUMN catalog.spectra.dec IS 'Declination of the spectrum (ICRS)'",
    "COMMENT ON COLUMN catalog.spectra.z IS 'Input redshift given by the survey'",
    "COMMENT ON COLUMN catalog.spectra.file IS 'File the spectrum was read from'",
    "COMMENT ON COLUMN catalog.spectra.file_version IS 'Version of that file (1 for the first content seen under its name)'",
    "COMMENT ON COLUMN catalog.spectra.n_pix IS 'Number of pixels; 0 for a catalogue entry without pixels'",
    "COMMENT ON COLUMN catalog.spectra.source_id IS 'Source the spectrum belongs to'",
    "COMMENT ON COLUMN catalog.spectra.source_object_id IS 'The survey''s identifier of that source'",
    "COMMENT ON COLUMN catalog.spectra.parent_source_id IS 'Parent source (the galaxy of a spaxel, bin or region)'",
    "COMMENT ON COLUMN catalog.spectra.flux_unit IS 'Unit of flux (astropy string)'",
    "COMMENT ON COLUMN catalog.spectra.flags IS 'Spectrum flag bits (see flag_definition)'",
    "COMMENT ON VIEW catalog.current_runs IS 'Runs in the current collection, best first per task'",
    "COMMENT ON COLUMN catalog.current_runs.run_id IS 'Run identifier'",
    "COMMENT ON COLUMN catalog.current_runs.task IS 'Task name, e.g. lines, abundances, ingested'",
    "COMMENT ON COLUMN catalog.current_runs.version IS 'Task version (bumped by hand when results change)'",
    "COMMENT ON COLUMN catalog.current_runs.params_hash IS 'SHA-256 of the canonical JSON of params'",
    "COMMENT ON COLUMN catalog.current_runs.code_version IS 'skyledger package version, plus git commit when known'",
    "COMMENT ON COLUMN catalog.current_runs.finished_at IS 'End time'",
    "COMMENT ON COLUMN catalog.current_runs.rank IS 'Search order: lower ranks win'",
    "COMMENT ON VIEW catalog.releases IS 'Every catalogue release; each is an SQL schema of its own name'",
    "COMMENT ON COLUMN catalog.releases.name IS 'Release name, also its SQL schema (SELECT ... FROM <name>.lines)'",
    "COMMENT ON COLUMN catalog.releases.created_at IS 'Creation time'",
    "COMMENT ON COLUMN catalog.releases.collection IS 'Collection the release froze'",
    "COMMENT ON COLUMN catalog.releases.notes IS 'Release notes'",
    "COMMENT ON COLUMN catalog.releases.code_version IS 'skyledger version that wrote the release'",
    "COMMENT ON COLUMN catalog.releases.schema_version IS 'Database schema revision at release time'",
    "COMMENT ON COLUMN catalog.releases.n_runs IS 'Runs whose results the release holds'",
    "COMMENT ON VIEW catalog.flag_definitions IS 'What every bit of every flags column means'",
    "COMMENT ON COLUMN catalog.flag_definitions.table_name IS 'Table (or catalog view) holding the flags column'",
    "COMMENT ON COLUMN catalog.flag_definitions.column_name IS 'Name of the flags column'",
    "COMMENT ON COLUMN catalog.flag_definitions.bit IS 'Bit number (value 2**bit)'",
    "COMMENT ON COLUMN catalog.flag_definitions.name IS 'Short upper-case name of the flag'",
    "COMMENT ON COLUMN catalog.flag_definitions.description IS 'What the flag means'",
    "COMMENT ON VIEW catalog.lines IS 'Emission lines of every spectrum, fitted (task lines) or read from catalogues (task ingested)'",
    "COMMENT ON COLUMN catalog.lines.spectrum_id IS 'Spectrum measured'",
    "COMMENT ON COLUMN catalog.lines.line IS 'Line identifier, e.g. HA6563, OIII5007'",
    "COMMENT ON COLUMN catalog.lines.z IS 'Redshift of the line'",
    "COMMENT ON COLUMN catalog.lines.velocity IS 'Line-of-sight velocity relative to the stellar (or input) redshift'",
    "COMMENT ON COLUMN catalog.lines.velocity_err IS 'Error of velocity'",
    "COMMENT ON COLUMN catalog.lines.sigma IS 'Intrinsic velocity dispersion (instrumental broadening removed)'",
    "COMMENT ON COLUMN catalog.lines.sigma_err IS 'Error of sigma'",
    "COMMENT ON COLUMN catalog.lines.flux IS 'Integrated line flux, in the spectrum''s flux unit times Angstrom'",
    "COMMENT ON COLUMN catalog.lines.flux_err IS 'Error of flux'",
    "COMMENT ON COLUMN catalog.lines.ew IS 'Equivalent width (positive in emission)'",
    "COMMENT ON COLUMN catalog.lines.ew_err IS 'Error of ew'",
    "COMMENT ON COLUMN catalog.lines.snr IS 'Signal-to-noise ratio of the flux'",
    "COMMENT ON COLUMN catalog.lines.flags IS 'Line flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.lines.flux_unit IS 'Unit of flux (astropy string)'",
    "COMMENT ON COLUMN catalog.lines.source_task IS 'Task that produced the row: lines or ingested'",
    "COMMENT ON COLUMN catalog.lines.run_id IS 'Run that produced the measurement'",
    "COMMENT ON VIEW catalog.stellar_kinematics IS 'Stellar kinematics of every fitted spectrum (task lines)'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.spectrum_id IS 'Spectrum fitted'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.z IS 'Fitted redshift of the stars'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.velocity IS 'Stellar line-of-sight velocity relative to the input redshift'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.velocity_err IS 'Error of velocity'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.sigma IS 'Stellar velocity dispersion, instrumental broadening removed'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.sigma_err IS 'Error of sigma'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.chi2 IS 'Reduced chi-square of the full (stars + gas) fit'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.stellar_chi2 IS 'Reduced chi-square of the stellar fit with emission lines masked'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.snr IS 'Median signal-to-noise ratio per pixel over the fitted range'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.n_pixels IS 'Pixels used in the final fit'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.flags IS 'Fit flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.stellar_kinematics.run_id IS 'Run that produced the fit'",
    "COMMENT ON VIEW catalog.abundances IS 'Nebular abundances of every spectrum, one row per method (task abundances)'",
    "COMMENT ON COLUMN catalog.abundances.spectrum_id IS 'Spectrum whose emission lines were used'",
    "COMMENT ON COLUMN catalog.abundances.method IS 'Abundance method: direct, or a strong-line calibration such as N2_PP04'",
    "COMMENT ON COLUMN catalog.abundances.oh IS 'Oxygen abundance 12 + log(O/H)'",
    "COMMENT ON COLUMN catalog.abundances.oh_err_lo IS 'Lower error of oh: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.oh_err_hi IS 'Upper error of oh: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.n_o IS 'Nitrogen-to-oxygen ratio log(N/O), taken as log(N+/O+) (direct method only)'",
    "COMMENT ON COLUMN catalog.abundances.n_o_err_lo IS 'Lower error of n_o: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.n_o_err_hi IS 'Upper error of n_o: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.s_h IS 'Sulphur abundance 12 + log(S/H): S+ + S++ with the Stasinska (1978) ionisation correction (direct method only)'",
    "COMMENT ON COLUMN catalog.abundances.s_h_err_lo IS 'Lower error of s_h: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.s_h_err_hi IS 'Upper error of s_h: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.ebv IS 'Colour excess E(B-V) from the Balmer decrement; NULL for dust-corrected input or no decrement'",
    "COMMENT ON COLUMN catalog.abundances.ebv_err_lo IS 'Lower error of ebv: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.ebv_err_hi IS 'Upper error of ebv: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_oiii IS 'Electron temperature from the [O III] (4959+5007)/4363 ratio'",
    "COMMENT ON COLUMN catalog.abundances.te_oiii_err_lo IS 'Lower error of te_oiii: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_oiii_err_hi IS 'Upper error of te_oiii: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_nii IS 'Electron temperature from the [N II] (6548+6584)/5755 ratio'",
    "COMMENT ON COLUMN catalog.abundances.te_nii_err_lo IS 'Lower error of te_nii: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_nii_err_hi IS 'Upper error of te_nii: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_siii IS 'Electron temperature from the [S III] (9069+9532)/6312 ratio'",
    "COMMENT ON COLUMN catalog.abundances.te_siii_err_lo IS 'Lower error of te_siii: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_siii_err_hi IS 'Upper error of te_siii: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_oii IS 'Electron temperature from the [O II] (3726+3729)/(7320+7330) ratio'",
    "COMMENT ON COLUMN catalog.abundances.te_oii_err_lo IS 'Lower error of te_oii: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.te_oii_err_hi IS 'Upper error of te_oii: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.ne_sii IS 'Electron density from the [S II] 6716/6731 ratio'",
    "COMMENT ON COLUMN catalog.abundances.ne_sii_err_lo IS 'Lower error of ne_sii: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.ne_sii_err_hi IS 'Upper error of ne_sii: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.ne_oii IS 'Electron density from the [O II] 3729/3726 ratio'",
    "COMMENT ON COLUMN catalog.abundances.ne_oii_err_lo IS 'Lower error of ne_oii: median minus 16th percentile of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.ne_oii_err_hi IS 'Upper error of ne_oii: 84th percentile minus median of the Monte Carlo draws'",
    "COMMENT ON COLUMN catalog.abundances.op_h IS 'Ionic abundance 12 + log(O+/H+) from [O II] 3726+3729'",
    "COMMENT ON COLUMN catalog.abundances.opp_h IS 'Ionic abundance 12 + log(O++/H+) from [O III] 4959+5007'",
    "COMMENT ON COLUMN catalog.abundances.np_h IS 'Ionic abundance 12 + log(N+/H+) from [N II] 6548+6584'",
    "COMMENT ON COLUMN catalog.abundances.sp_h IS 'Ionic abundance 12 + log(S+/H+) from [S II] 6716+6731'",
    "COMMENT ON COLUMN catalog.abundances.spp_h IS 'Ionic abundance 12 + log(S++/H+) from [S III] 9069+9532'",
    "COMMENT ON COLUMN catalog.abundances.flags IS 'Abundance flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.abundances.run_id IS 'Run that produced the abundances'",
    "COMMENT ON VIEW catalog.nebula_class IS 'Ionised-nebula class of every spectrum with emission lines, one row per method (tasks nebula_diagnostic and nebula_nn)'",
    "COMMENT ON COLUMN catalog.nebula_class.spectrum_id IS 'Spectrum whose emission lines were classified'",
    "COMMENT ON COLUMN catalog.nebula_class.method IS 'Classification method: diagnostic (published line-ratio rules) or nn (neural network)'",
    "COMMENT ON COLUMN catalog.nebula_class.class IS 'Most probable class: HII, PN, SNR, DIG, AGN or UNKNOWN'",
    "COMMENT ON COLUMN catalog.nebula_class.probability IS 'Probability of the class given in class; NULL when the method gave no probabilities'",
    "COMMENT ON COLUMN catalog.nebula_class.p_hii IS 'Probability that the object is HII; NULL where the method does not model the class'",
    "COMMENT ON COLUMN catalog.nebula_class.p_pn IS 'Probability that the object is PN; NULL where the method does not model the class'",
    "COMMENT ON COLUMN catalog.nebula_class.p_snr IS 'Probability that the object is SNR; NULL where the method does not model the class'",
    "COMMENT ON COLUMN catalog.nebula_class.p_dig IS 'Probability that the object is DIG; NULL where the method does not model the class'",
    "COMMENT ON COLUMN catalog.nebula_class.p_agn IS 'Probability that the object is AGN; NULL where the method does not model the class'",
    "COMMENT ON COLUMN catalog.nebula_class.flags IS 'Classification flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.nebula_class.run_id IS 'Run that produced the classification'",
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
    "COMMENT ON COLUMN catalog.rotation.flags IS 'Rotation-fit flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.rotation.run_id IS 'Run that produced the fit'",
    "COMMENT ON VIEW catalog.metallicity_gradients IS 'Radial 12+log(O/H) gradients of every galaxy with a rotation geometry, one row per abundance method (task gradients)'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.source_id IS 'The galaxy'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.object_id IS 'The survey''s identifier of the galaxy'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.method IS 'Abundance method of the points (abundance.method)'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.rotation_run_id IS 'Run of the rotation fit whose centre, PA and inclination deprojected the radii'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.geometry IS 'Which rotation fit gave the geometry: component/model, e.g. gas/arctan'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.slope_dex_per_arcsec IS 'Slope of 12+log(O/H) against deprojected radius'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.slope_dex_per_arcsec_err IS 'Error of slope_dex_per_arcsec (inverse Hessian of the likelihood)'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.slope_dex_per_kpc IS 'Slope per proper kpc (astropy Planck18 at the galaxy redshift); NULL without redshift'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.slope_dex_per_kpc_err IS 'Error of slope_dex_per_kpc'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.slope_dex_per_re IS 'Slope per effective radius r_e; NULL where r_e is not known'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.slope_dex_per_re_err IS 'Error of slope_dex_per_re'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.r_e IS 'Effective radius used (source.meta r_e_arcsec)'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.central_oh IS '12+log(O/H) of the fitted line at radius 0'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.central_oh_err IS 'Error of central_oh'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.scatter IS 'Intrinsic scatter about the line, beyond the abundance errors'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.scatter_err IS 'Error of scatter'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.r_min IS 'Smallest deprojected radius of the points used'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.r_max IS 'Largest deprojected radius of the points used'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.n_points IS 'Points used (after outlier rejection)'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.n_rejected IS 'Points rejected as outliers'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.flags IS 'Gradient flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.metallicity_gradients.run_id IS 'Run that produced the gradient'",
]

#: The views as migrations 0003, 0004, 0006 and 0008 created them, for the downgrade.
OLD_VIEWS = {
    "stellar_kinematics": ("""
CREATE VIEW catalog.stellar_kinematics AS
SELECT DISTINCT ON (k.spectrum_id)
       k.spectrum_id, k.z, k.velocity, k.velocity_err, k.sigma, k.sigma_err, k.chi2, k.stellar_chi2,
       k.snr, k.n_pixels, k.flags, k.run_id
FROM stellar_kinematics AS k
JOIN catalog.current_runs AS cr ON cr.run_id = k.run_id
ORDER BY k.spectrum_id, cr.rank, k.run_id DESC
""", 'Stellar kinematics of every spectrum, from the current runs'),
    "lines": ("""
CREATE VIEW catalog.lines AS
WITH chosen AS (
    SELECT DISTINCT ON (m.spectrum_id, cr.task) m.spectrum_id, m.run_id, cr.task
    FROM line_measurement AS m
    JOIN catalog.current_runs AS cr ON cr.run_id = m.run_id
    ORDER BY m.spectrum_id, cr.task, cr.rank, m.run_id DESC
)
SELECT m.spectrum_id, m.line, m.z, m.velocity, m.velocity_err, m.sigma, m.sigma_err, m.flux, m.flux_err,
       m.ew, m.ew_err, m.snr, m.flags, s.flux_unit, chosen.task AS source_task, m.run_id
FROM line_measurement AS m
JOIN chosen ON chosen.spectrum_id = m.spectrum_id AND chosen.run_id = m.run_id
JOIN spectrum AS s ON s.id = m.spectrum_id
""", 'Emission lines of every spectrum, fitted (task lines) or from catalogues (task ingested)'),
    "abundances": ("""
CREATE VIEW catalog.abundances AS
WITH chosen AS (
    SELECT DISTINCT ON (a.spectrum_id) a.spectrum_id, a.run_id
    FROM abundance AS a
    JOIN catalog.current_runs AS cr ON cr.run_id = a.run_id
    WHERE cr.task = 'abundances'
    ORDER BY a.spectrum_id, cr.rank, a.run_id DESC
)
SELECT a.spectrum_id, a.method, a.oh, a.oh_err_lo, a.oh_err_hi, a.n_o, a.n_o_err_lo, a.n_o_err_hi,
       a.s_h, a.s_h_err_lo, a.s_h_err_hi, a.ebv, a.ebv_err_lo, a.ebv_err_hi,
       a.te_oiii, a.te_oiii_err_lo, a.te_oiii_err_hi, a.te_nii, a.te_nii_err_lo, a.te_nii_err_hi,
       a.te_siii, a.te_siii_err_lo, a.te_siii_err_hi, a.te_oii, a.te_oii_err_lo, a.te_oii_err_hi,
       a.ne_sii, a.ne_sii_err_lo, a.ne_sii_err_hi, a.ne_oii, a.ne_oii_err_lo, a.ne_oii_err_hi,
       a.op_h, a.opp_h, a.np_h, a.sp_h, a.spp_h, a.flags, a.run_id
FROM abundance AS a
JOIN chosen ON chosen.spectrum_id = a.spectrum_id AND chosen.run_id = a.run_id
""", 'Nebular abundances of every spectrum, one row per method, from the current abundances runs'),
    "nebula_class": ("""
CREATE VIEW catalog.nebula_class AS
WITH chosen AS (
    SELECT DISTINCT ON (n.spectrum_id, cr.task) n.spectrum_id, n.run_id
    FROM nebula_class AS n
    JOIN catalog.current_runs AS cr ON cr.run_id = n.run_id
    WHERE cr.task IN ('nebula_diagnostic', 'nebula_nn')
    ORDER BY n.spectrum_id, cr.task, cr.rank, n.run_id DESC
)
SELECT n.spectrum_id, n.method, n.class, n.probability, n.p_hii, n.p_pn, n.p_snr, n.p_dig, n.p_agn,
       n.flags, n.run_id
FROM nebula_class AS n
JOIN chosen ON chosen.spectrum_id = n.spectrum_id AND chosen.run_id = n.run_id
""", 'Ionised-nebula class of every spectrum with emission lines, one row per method, from the current runs'),
    "rotation": ("""
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
""", 'Rotating-disk fits of every galaxy with enough velocities: one row per component and rotation-curve model, from the current rotation runs'),
    "metallicity_gradients": ("""
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
""", 'Radial 12+log(O/H) gradients of every galaxy with a rotation geometry, one row per abundance method, from the current gradients runs'),
}


def upgrade() -> None:
    for name, ddl in VIEWS.items():
        op.execute(f"DROP VIEW catalog.{name}")
        op.execute(ddl)
        op.execute(f"GRANT SELECT ON catalog.{name} TO {READER_ROLE}")
    for statement in COMMENTS:
        op.execute(statement)


def downgrade() -> None:
    for name, (ddl, comment) in OLD_VIEWS.items():
        op.execute(f"DROP VIEW catalog.{name}")
        op.execute(ddl)
        op.execute(f"GRANT SELECT ON catalog.{name} TO {READER_ROLE}")
        op.execute(f"COMMENT ON VIEW catalog.{name} IS '{comment}'")
