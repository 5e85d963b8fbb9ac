"""Models of the result tables: what compute tasks (and catalogue ingest) write.

Each is declared once, with :func:`skyledger.schema.results.result_table` naming its
catalog view and how its best run is chosen; the COPY columns, views, release tables
and TAP_SCHEMA rows are derived from it. Alembic migrations own the DDL.

Tables only compute writes could live in their task's module (a new task may declare its
table there); these stay under ``schema`` because ingest writes line measurements too and
because every layer reads them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CheckConstraint, Double, ForeignKey, Index, Integer, SmallInteger, Text, text
from sqlalchemy.orm import Mapped

from . import models as _core  # noqa: F401  (the tables these refer to: run, spectrum, source)
from .base import Base, column, dec_column as _dec, ra_column as _ra
from .results import result_table

__all__ = ["LineMeasurement", "StellarKinematics", "Abundance", "NebulaClass", "RotationFit", "MetallicityGradient"]


@result_table(
    view="stellar_kinematics", description="Stellar kinematics of every fitted spectrum (task lines)", tasks=("lines",)
)
class StellarKinematics(Base):
    """Stellar line-of-sight velocity distribution of one spectrum, from the `lines` task."""

    __tablename__ = "stellar_kinematics"
    __table_args__ = (Index("ix_stellar_kinematics_spectrum_id", "spectrum_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the fit", ucd="meta.id")
    spectrum_id: Mapped[int] = column(ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum fitted", ucd="meta.id")
    z: Mapped[float | None] = column(Double, doc="Fitted redshift of the stars", ucd="src.redshift")
    velocity: Mapped[float | None] = column(
        Double, doc="Stellar line-of-sight velocity relative to the input redshift", unit="km/s", ucd="spect.dopplerVeloc"
    )
    velocity_err: Mapped[float | None] = column(Double, doc="Error of velocity", unit="km/s", ucd="stat.error;spect.dopplerVeloc")
    sigma: Mapped[float | None] = column(
        Double, doc="Stellar velocity dispersion, instrumental broadening removed", unit="km/s", ucd="phys.veloc.dispersion"
    )
    sigma_err: Mapped[float | None] = column(Double, doc="Error of sigma", unit="km/s", ucd="stat.error;phys.veloc.dispersion")
    chi2: Mapped[float | None] = column(Double, doc="Reduced chi-square of the full (stars + gas) fit", ucd="stat.fit.chi2")
    stellar_chi2: Mapped[float | None] = column(
        Double, doc="Reduced chi-square of the stellar fit with emission lines masked", ucd="stat.fit.chi2"
    )
    snr: Mapped[float | None] = column(Double, doc="Median signal-to-noise ratio per pixel over the fitted range", ucd="stat.snr")
    n_pixels: Mapped[int | None] = column(Integer, doc="Pixels used in the final fit")
    flags: Mapped[int] = column(Integer, server_default=text("0"), doc="Fit flag bits (see flag_definition)", ucd="meta.code")
    gas_model: Mapped[str | None] = column(
        Text,
        doc="Gas model chosen by Delta BIC: narrow, narrow+broad (broad Balmer), narrow+outflow ([OIII]) or "
        "narrow+broad+outflow; NULL where second components were not tried (parameter components = none)",
        ucd="meta.code",
    )
    delta_bic_broad: Mapped[float | None] = column(
        Double, doc="BIC decrease from adding the broad Balmer component (kept above the run's threshold, 10 by default); "
        "NULL where not tried", ucd="stat.fit.param",
    )
    delta_bic_outflow: Mapped[float | None] = column(
        Double, doc="BIC decrease from adding the [OIII] outflow component; NULL where not tried", ucd="stat.fit.param",
    )


@result_table(
    view="lines",
    description="Emission lines of every spectrum, fitted (task lines) or read from catalogues (task ingested), "
    "one row per kinematic component",
    order=("line", "component"),
    tasks=("lines", "ingested"),
    per_task=True,
    task_column="source_task",
    spectrum_columns=("flux_unit",),
)
class LineMeasurement(Base):
    """One emission line of one spectrum, as fitted by a task or read from a catalogue.

    Catalogue fluxes are stored as the results of an ``ingested`` run, so downstream
    tasks read fitted and ingested lines the same way.
    """

    __tablename__ = "line_measurement"
    __table_args__ = (Index("ix_line_measurement_spectrum_id", "spectrum_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the measurement", ucd="meta.id")
    spectrum_id: Mapped[int] = column(ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum measured", ucd="meta.id")
    line: Mapped[str] = column(Text, primary_key=True, doc="Line identifier, e.g. HA6563, OIII5007", ucd="meta.id;spect.line")
    z: Mapped[float | None] = column(Double, doc="Redshift of the line", ucd="src.redshift")
    velocity: Mapped[float | None] = column(
        Double, doc="Line-of-sight velocity relative to the stellar (or input) redshift", unit="km/s", ucd="spect.dopplerVeloc"
    )
    velocity_err: Mapped[float | None] = column(Double, doc="Error of velocity", unit="km/s", ucd="stat.error;spect.dopplerVeloc")
    sigma: Mapped[float | None] = column(
        Double, doc="Intrinsic velocity dispersion (instrumental broadening removed)", unit="km/s", ucd="phys.veloc.dispersion"
    )
    sigma_err: Mapped[float | None] = column(Double, doc="Error of sigma", unit="km/s", ucd="stat.error;phys.veloc.dispersion")
    flux: Mapped[float | None] = column(
        Double, doc="Integrated line flux, in the spectrum's flux unit times Angstrom", ucd="phot.flux;spect.line"
    )
    flux_err: Mapped[float | None] = column(Double, doc="Error of flux", ucd="stat.error;phot.flux;spect.line")
    ew: Mapped[float | None] = column(Double, doc="Equivalent width (positive in emission)", unit="Angstrom", ucd="spect.line.eqWidth")
    ew_err: Mapped[float | None] = column(Double, doc="Error of ew", unit="Angstrom", ucd="stat.error;spect.line.eqWidth")
    snr: Mapped[float | None] = column(Double, doc="Signal-to-noise ratio of the flux", ucd="stat.snr")
    flags: Mapped[int] = column(Integer, server_default=text("0"), doc="Line flag bits (see flag_definition)", ucd="meta.code")
    # Added by migration 0018, hence after flags (the view shows component after line).
    component: Mapped[int] = column(
        SmallInteger, primary_key=True, server_default=text("0"),
        doc="Kinematic component: 0 the narrow (or only) one, 1 the second (broad Balmer or [OIII] outflow); "
        "a line's total flux is the sum over its components", ucd="meta.id",
    )
    v10: Mapped[float | None] = column(
        Double, doc="Velocity below which 10 % of the line's total flux (all components) lies, intrinsic profile, "
        "same frame as velocity; on the component 0 row only", unit="km/s", ucd="spect.dopplerVeloc",
    )
    v90: Mapped[float | None] = column(
        Double, doc="Velocity below which 90 % of the line's total flux lies (as v10)", unit="km/s", ucd="spect.dopplerVeloc",
    )
    w80: Mapped[float | None] = column(
        Double, doc="Width containing the central 80 % of the line's total flux, v90 - v10 (2.563 sigma for one "
        "Gaussian); component 0 row only", unit="km/s", ucd="spect.line.width",
    )
    # After component..w80 (migration 0018), as migration 0019 added it (tasks copy columns in table order).
    flux_limit: Mapped[float | None] = column(
        Double,
        doc="Upper limit of flux where the line is not detected (flag NOT_DETECTED): max(flux, 0) + 3 flux_err; NULL where detected",
        ucd="phot.flux;spect.line;stat.max",
    )


def _dex(doc: str, ucd: str) -> Any:
    return column(Double, doc=doc, unit="dex", ucd=ucd)


# Errors are asymmetric Monte Carlo intervals; NULL when the run made no draws.
def _err_lo(of: str, unit: str, ucd: str) -> Any:
    return column(Double, doc=f"Lower error of {of}: median minus 16th percentile of the Monte Carlo draws",
                  unit=unit, ucd=f"stat.error;{ucd}")


def _err_hi(of: str, unit: str, ucd: str) -> Any:
    return column(Double, doc=f"Upper error of {of}: 84th percentile minus median of the Monte Carlo draws",
                  unit=unit, ucd=f"stat.error;{ucd}")


@result_table(
    view="abundances",
    description="Nebular abundances of every spectrum, one row per method (task abundances)",
    order=("method",),
    tasks=("abundances",),
)
class Abundance(Base):
    """Nebular abundances of one spectrum by one method, from the `abundances` task.

    Values are Monte Carlo medians (the nominal value when the run made no draws); the
    direct method fills temperatures, densities and ionic abundances, a strong-line
    calibration only ``oh``.  ``ebv`` is shared by the methods of a spectrum.
    """

    __tablename__ = "abundance"
    __table_args__ = (Index("ix_abundance_spectrum_id", "spectrum_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the abundances", ucd="meta.id")
    spectrum_id: Mapped[int] = column(
        ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum whose emission lines were used", ucd="meta.id"
    )
    method: Mapped[str] = column(
        Text, primary_key=True, doc="Abundance method: direct, or a strong-line calibration such as N2_PP04", ucd="meta.code"
    )
    oh: Mapped[float | None] = _dex("Oxygen abundance 12 + log(O/H)", "phys.abund.Z")
    oh_err_lo: Mapped[float | None] = _err_lo("oh", "dex", "phys.abund.Z")
    oh_err_hi: Mapped[float | None] = _err_hi("oh", "dex", "phys.abund.Z")
    n_o: Mapped[float | None] = _dex("Nitrogen-to-oxygen ratio log(N/O), taken as log(N+/O+) (direct method only)", "phys.abund")
    n_o_err_lo: Mapped[float | None] = _err_lo("n_o", "dex", "phys.abund")
    n_o_err_hi: Mapped[float | None] = _err_hi("n_o", "dex", "phys.abund")
    s_h: Mapped[float | None] = _dex(
        "Sulphur abundance 12 + log(S/H): S+ + S++ with the Stasinska (1978) ionisation correction (direct method only)",
        "phys.abund",
    )
    s_h_err_lo: Mapped[float | None] = _err_lo("s_h", "dex", "phys.abund")
    s_h_err_hi: Mapped[float | None] = _err_hi("s_h", "dex", "phys.abund")
    ebv: Mapped[float | None] = column(
        Double, doc="Colour excess E(B-V) from the Balmer decrement; NULL for dust-corrected input or no decrement",
        unit="mag", ucd="phot.color.excess",
    )
    ebv_err_lo: Mapped[float | None] = _err_lo("ebv", "mag", "phot.color.excess")
    ebv_err_hi: Mapped[float | None] = _err_hi("ebv", "mag", "phot.color.excess")
    te_oiii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [O III] (4959+5007)/4363 ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_oiii_err_lo: Mapped[float | None] = _err_lo("te_oiii", "K", "phys.temperature.electron")
    te_oiii_err_hi: Mapped[float | None] = _err_hi("te_oiii", "K", "phys.temperature.electron")
    te_nii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [N II] (6548+6584)/5755 ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_nii_err_lo: Mapped[float | None] = _err_lo("te_nii", "K", "phys.temperature.electron")
    te_nii_err_hi: Mapped[float | None] = _err_hi("te_nii", "K", "phys.temperature.electron")
    te_siii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [S III] (9069+9532)/6312 ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_siii_err_lo: Mapped[float | None] = _err_lo("te_siii", "K", "phys.temperature.electron")
    te_siii_err_hi: Mapped[float | None] = _err_hi("te_siii", "K", "phys.temperature.electron")
    te_oii: Mapped[float | None] = column(
        Double, doc="Electron temperature from the [O II] (3726+3729)/(7320+7330) ratio", unit="K", ucd="phys.temperature.electron"
    )
    te_oii_err_lo: Mapped[float | None] = _err_lo("te_oii", "K", "phys.temperature.electron")
    te_oii_err_hi: Mapped[float | None] = _err_hi("te_oii", "K", "phys.temperature.electron")
    ne_sii: Mapped[float | None] = column(
        Double, doc="Electron density from the [S II] 6716/6731 ratio", unit="cm-3", ucd="phys.density;phys.electron"
    )
    ne_sii_err_lo: Mapped[float | None] = _err_lo("ne_sii", "cm-3", "phys.density;phys.electron")
    ne_sii_err_hi: Mapped[float | None] = _err_hi("ne_sii", "cm-3", "phys.density;phys.electron")
    ne_oii: Mapped[float | None] = column(
        Double, doc="Electron density from the [O II] 3729/3726 ratio", unit="cm-3", ucd="phys.density;phys.electron"
    )
    ne_oii_err_lo: Mapped[float | None] = _err_lo("ne_oii", "cm-3", "phys.density;phys.electron")
    ne_oii_err_hi: Mapped[float | None] = _err_hi("ne_oii", "cm-3", "phys.density;phys.electron")
    op_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(O+/H+) from [O II] 3726+3729", "phys.abund")
    opp_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(O++/H+) from [O III] 4959+5007", "phys.abund")
    np_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(N+/H+) from [N II] 6548+6584", "phys.abund")
    sp_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(S+/H+) from [S II] 6716+6731", "phys.abund")
    spp_h: Mapped[float | None] = _dex("Ionic abundance 12 + log(S++/H+) from [S III] 9069+9532", "phys.abund")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Abundance flag bits (see flag_definition)", ucd="meta.code"
    )


def _class_p(name: str) -> Any:
    return column(
        Double, doc=f"Probability that the object is {name}; NULL where the method does not model the class", ucd="stat.probability"
    )


@result_table(
    view="nebula_class",
    description="Ionised-nebula class of every spectrum with emission lines, one row per method "
    "(tasks nebula_diagnostic and nebula_nn)",
    order=("method",),
    tasks=("nebula_diagnostic", "nebula_nn"),
    per_task=True,
)
class NebulaClass(Base):
    """The ionised-nebula class of one spectrum by one method (tasks `nebula_diagnostic`, `nebula_nn`).

    ``probability`` is that of ``class``; the class probabilities need not sum to 1, the
    rest being the probability that the method cannot decide (UNKNOWN).
    """

    __tablename__ = "nebula_class"
    __table_args__ = (
        Index("ix_nebula_class_spectrum_id", "spectrum_id"),
        CheckConstraint("class IN ('HII', 'PN', 'SNR', 'DIG', 'AGN', 'UNKNOWN')", name="class_name"),
        CheckConstraint("context IN ('galaxy', 'nebula')", name="context_name"),
    )

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the classification", ucd="meta.id")
    spectrum_id: Mapped[int] = column(
        ForeignKey("spectrum.id"), primary_key=True, doc="Spectrum whose emission lines were classified", ucd="meta.id"
    )
    method: Mapped[str] = column(
        Text, primary_key=True, doc="Classification method: diagnostic (published line-ratio rules) or nn (neural network)",
        ucd="meta.code",
    )
    # `class` is a Python keyword: the attribute is class_, the column keeps the catalogue name.
    class_: Mapped[str] = column(
        "class", Text, doc="Most probable class: HII, PN, SNR, DIG, AGN or UNKNOWN", ucd="src.class"
    )
    probability: Mapped[float | None] = column(
        Double, doc="Probability of the class given in class; NULL when the method gave no probabilities", ucd="stat.probability"
    )
    p_hii: Mapped[float | None] = _class_p("HII")
    p_pn: Mapped[float | None] = _class_p("PN")
    p_snr: Mapped[float | None] = _class_p("SNR")
    p_dig: Mapped[float | None] = _class_p("DIG")
    p_agn: Mapped[float | None] = _class_p("AGN")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Classification flag bits (see flag_definition)", ucd="meta.code"
    )
    # Added by migration 0021 after flags (the physical order). The default backfilled the
    # rows before it with 'galaxy' (the only rule order there was) and stays, so that a row
    # written without a context (older tools) means what such rows always meant; both tasks
    # write the context explicitly.
    context: Mapped[str] = column(
        Text, server_default=text("'galaxy'"),
        doc="Rule context: galaxy (an integrated spectrum: no PN/SNR class, shocks only flagged) or nebula "
        "(a region inside a galaxy, away from its nucleus); from the survey option context, else inferred "
        "(flag CONTEXT_INFERRED)",
        ucd="meta.code",
    )  # fmt: skip


def _kms(doc: str, ucd: str) -> Any:
    return column(Double, doc=doc, unit="km/s", ucd=ucd)


def _curvature_err(of: str, unit: str, ucd: str) -> Any:
    return column(
        Double, doc=f"Error of {of} from the curvature of the fit (Gauss-Newton covariance scaled by the reduced chi-square)",
        unit=unit, ucd=f"stat.error;{ucd}",
    )


def _bootstrap_err(of: str, unit: str, ucd: str) -> Any:
    return column(
        Double, doc=f"Error of {of} from a block bootstrap over the points (cells of bootstrap_block_fwhm PSF FWHM, "
        "single points without a PSF; parameter bootstrap resamples); NULL when not bootstrapped",
        unit=unit, ucd=f"stat.error;{ucd}",
    )


@result_table(
    view="rotation",
    description="Rotating-disk fits of every galaxy with enough velocities, one row per component and "
    "rotation-curve model (task rotation)",
    key="source_id",
    order=("component", "model"),
    tasks=("rotation",),
    with_object_id=True,
)
class RotationFit(Base):
    """A thin rotating disk fitted to one galaxy's line-of-sight velocities (task `rotation`).

    One row per (galaxy, component, rotation-curve model). Velocities are rest-frame,
    relative to the galaxy's redshift ``z_gal``; ``vmax`` is deprojected.
    """

    __tablename__ = "rotation_fit"
    __table_args__ = (
        Index("ix_rotation_fit_source_id", "source_id"),
        CheckConstraint("component IN ('gas', 'stars')", name="component"),
        CheckConstraint("model IN ('arctan', 'freeman')", name="model"),
    )

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the fit", ucd="meta.id")
    source_id: Mapped[int] = column(
        ForeignKey("source.id"), primary_key=True, doc="The galaxy (parent source of the points fitted)", ucd="meta.id"
    )
    component: Mapped[str] = column(
        Text, primary_key=True, doc="Velocities fitted: gas (emission lines) or stars (stellar kinematics)", ucd="meta.code"
    )
    model: Mapped[str] = column(
        Text, primary_key=True,
        doc="Rotation curve: arctan (V_max asymptotic, r_turn turnover radius) or freeman (exponential disk; "
        "V_max peak speed, r_turn radius of the peak = 2.15 scale lengths)",
        ucd="meta.code",
    )
    z_gal: Mapped[float | None] = column(
        Double, doc="Galaxy redshift the velocities are relative to (source.z); NULL when the galaxy has none", ucd="src.redshift"
    )
    ra_center: Mapped[float | None] = _ra("Right ascension of the fitted disk centre (ICRS)")
    dec_center: Mapped[float | None] = _dec("Declination of the fitted disk centre (ICRS)")
    ra_center_err: Mapped[float | None] = _curvature_err("the centre's east offset", "arcsec", "pos.eq.ra")
    dec_center_err: Mapped[float | None] = _curvature_err("the centre's north offset", "arcsec", "pos.eq.dec")
    pa: Mapped[float | None] = column(
        Double, doc="Position angle of the receding major axis, north through east, in [0, 360)", unit="deg", ucd="pos.posAng"
    )
    pa_err: Mapped[float | None] = _curvature_err("pa", "deg", "pos.posAng")
    inc: Mapped[float | None] = column(Double, doc="Disk inclination (0 = face-on)", unit="deg", ucd="src.orbital.inclination")
    inc_err: Mapped[float | None] = _curvature_err("inc", "deg", "src.orbital.inclination")
    vsys: Mapped[float | None] = _kms("Systemic velocity relative to z_gal, rest frame", "spect.dopplerVeloc")
    vsys_err: Mapped[float | None] = _curvature_err("vsys", "km/s", "spect.dopplerVeloc")
    vmax: Mapped[float | None] = _kms("Deprojected rotation speed: asymptotic (arctan) or peak (freeman)", "phys.veloc.rotat")
    vmax_err: Mapped[float | None] = _curvature_err("vmax", "km/s", "phys.veloc.rotat")
    r_turn: Mapped[float | None] = column(
        Double, doc="Turnover radius (arctan) or radius of the peak speed (freeman)", unit="arcsec", ucd="phys.angSize"
    )
    r_turn_err: Mapped[float | None] = _curvature_err("r_turn", "arcsec", "phys.angSize")
    r_turn_kpc: Mapped[float | None] = column(
        Double, doc="r_turn in proper kpc (angular-diameter distance of z_gal, astropy Planck18)", unit="kpc", ucd="phys.size.radius"
    )
    r_turn_kpc_err: Mapped[float | None] = _curvature_err("r_turn_kpc", "kpc", "phys.size.radius")
    sigma0: Mapped[float | None] = _kms(
        "Velocity-dispersion floor: median intrinsic dispersion of the points beyond r_turn, beam smearing removed when a PSF is known",
        "phys.veloc.dispersion",
    )
    sigma0_err: Mapped[float | None] = column(
        Double, doc="Error of sigma0: 1.2533 x 1.4826 x MAD / sqrt(n)", unit="km/s", ucd="stat.error;phys.veloc.dispersion"
    )
    kpc_per_arcsec: Mapped[float | None] = column(
        Double, doc="Proper kpc per arcsec at z_gal (astropy Planck18); NULL without redshift", unit="kpc/arcsec", ucd="arith.factor"
    )
    r_max: Mapped[float | None] = column(
        Double, doc="Deprojected radius of the outermost point used", unit="arcsec", ucd="phys.angSize"
    )
    psf_fwhm: Mapped[float | None] = column(
        Double, doc="FWHM of the Gaussian PSF modelled for beam smearing; NULL when none was", unit="arcsec", ucd="instr.fov"
    )
    chi2: Mapped[float | None] = column(Double, doc="Reduced chi-square of the points kept", ucd="stat.fit.chi2")
    n_points: Mapped[int] = column(Integer, doc="Points used in the fit (after outlier rejection)", ucd="meta.number")
    n_rejected: Mapped[int] = column(Integer, doc="Points rejected as outliers", ucd="meta.number")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Rotation-fit flag bits (see flag_definition)", ucd="meta.code"
    )
    # rotation version 4 (migration 0020) added the columns below after flags: the table's physical
    # order, which tasks copy rows in (catalog.rotation still shows flags last)
    pa_kin: Mapped[float | None] = column(
        Double, doc="Kinematic PA of the velocity field from its symmetry (Krajnovic et al. 2006), receding side, "
        "north through east, in [0, 360): what the fit starts from", unit="deg", ucd="pos.posAng",
    )
    pa_kin_err: Mapped[float | None] = column(
        Double, doc="Error of pa_kin, from the curvature of its chi-square against trial PAs", unit="deg",
        ucd="stat.error;pos.posAng",
    )
    vmax_obs: Mapped[float | None] = _kms(
        "Observed rotation speed: the highest deprojected speed of the beam-smeared model near the major axis "
        "(what the map shows without a PSF model); equals the intrinsic curve's highest speed within the data "
        "when no PSF is modelled",
        "phys.veloc.rotat",
    )
    pa_err_boot: Mapped[float | None] = _bootstrap_err("pa", "deg", "pos.posAng")
    inc_err_boot: Mapped[float | None] = _bootstrap_err("inc", "deg", "src.orbital.inclination")
    vsys_err_boot: Mapped[float | None] = _bootstrap_err("vsys", "km/s", "spect.dopplerVeloc")
    vmax_err_boot: Mapped[float | None] = _bootstrap_err("vmax", "km/s", "phys.veloc.rotat")
    r_turn_err_boot: Mapped[float | None] = _bootstrap_err("r_turn", "arcsec", "phys.angSize")
    n_bootstrap: Mapped[int | None] = column(
        Integer, doc="Bootstrap resamples behind the *_err_boot columns (those that fitted); NULL when not bootstrapped",
        ucd="meta.number",
    )


@result_table(
    view="metallicity_gradients",
    description="Radial 12+log(O/H) gradients of every galaxy with a rotation geometry, one row per abundance "
    "method (task gradients)",
    key="source_id",
    order=("method",),
    tasks=("gradients",),
    with_object_id=True,
)
class MetallicityGradient(Base):
    """Radial 12+log(O/H) gradient of one galaxy by one abundance method (task `gradients`)."""

    __tablename__ = "metallicity_gradient"
    __table_args__ = (Index("ix_metallicity_gradient_source_id", "source_id"),)

    run_id: Mapped[int] = column(ForeignKey("run.id"), primary_key=True, doc="Run that produced the gradient", ucd="meta.id")
    source_id: Mapped[int] = column(ForeignKey("source.id"), primary_key=True, doc="The galaxy", ucd="meta.id")
    method: Mapped[str] = column(
        Text, primary_key=True, doc="Abundance method of the points (abundance.method)", ucd="meta.code"
    )
    rotation_run_id: Mapped[int | None] = column(
        ForeignKey("run.id"), doc="Run of the rotation fit whose centre, PA and inclination deprojected the radii", ucd="meta.id"
    )
    geometry: Mapped[str | None] = column(
        Text, doc="Which rotation fit gave the geometry: component/model, e.g. gas/arctan", ucd="meta.code"
    )
    slope_dex_per_arcsec: Mapped[float | None] = column(
        Double, doc="Slope of 12+log(O/H) against deprojected radius", unit="dex/arcsec", ucd="phys.abund.Z;arith.grad"
    )
    slope_dex_per_arcsec_err: Mapped[float | None] = column(
        Double, doc="Error of slope_dex_per_arcsec (inverse Hessian of the likelihood)", unit="dex/arcsec",
        ucd="stat.error;phys.abund.Z;arith.grad",
    )
    slope_dex_per_kpc: Mapped[float | None] = column(
        Double, doc="Slope per proper kpc (astropy Planck18 at the galaxy redshift); NULL without redshift", unit="dex/kpc",
        ucd="phys.abund.Z;arith.grad",
    )
    slope_dex_per_kpc_err: Mapped[float | None] = column(
        Double, doc="Error of slope_dex_per_kpc", unit="dex/kpc", ucd="stat.error;phys.abund.Z;arith.grad"
    )
    slope_dex_per_re: Mapped[float | None] = column(
        Double, doc="Slope per effective radius r_e; NULL where r_e is not known", unit="dex", ucd="phys.abund.Z;arith.grad"
    )
    slope_dex_per_re_err: Mapped[float | None] = column(
        Double, doc="Error of slope_dex_per_re", unit="dex", ucd="stat.error;phys.abund.Z;arith.grad"
    )
    r_e: Mapped[float | None] = column(
        Double, doc="Effective radius used (source.meta r_e_arcsec)", unit="arcsec", ucd="phys.angSize;src"
    )
    central_oh: Mapped[float | None] = column(Double, doc="12+log(O/H) of the fitted line at radius 0", unit="dex", ucd="phys.abund.Z")
    central_oh_err: Mapped[float | None] = column(Double, doc="Error of central_oh", unit="dex", ucd="stat.error;phys.abund.Z")
    scatter: Mapped[float | None] = column(
        Double, doc="Intrinsic scatter about the line, beyond the abundance errors", unit="dex", ucd="stat.stdev;phys.abund.Z"
    )
    scatter_err: Mapped[float | None] = column(Double, doc="Error of scatter", unit="dex", ucd="stat.error;stat.stdev")
    r_min: Mapped[float | None] = column(Double, doc="Smallest deprojected radius of the points used", unit="arcsec", ucd="phys.angSize")
    r_max: Mapped[float | None] = column(Double, doc="Largest deprojected radius of the points used", unit="arcsec", ucd="phys.angSize")
    n_points: Mapped[int] = column(Integer, doc="Points used (after outlier rejection)", ucd="meta.number")
    n_rejected: Mapped[int] = column(Integer, doc="Points rejected as outliers", ucd="meta.number")
    flags: Mapped[int] = column(
        Integer, server_default=text("0"), doc="Gradient flag bits (see flag_definition)", ucd="meta.code"
    )
