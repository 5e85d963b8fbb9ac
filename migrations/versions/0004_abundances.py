"""Abundances: the `abundance` results table and its catalog view.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Like catalog.lines: per spectrum, the rows of the best run of task `abundances` on the
# `current` search path (lowest rank, then newest), so a version bump or new parameters
# replace a spectrum's abundances as a whole, never method by method.
VIEW = """
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
"""
VIEW_COMMENT = "Nebular abundances of every spectrum, one row per method, from the current abundances runs"


def upgrade() -> None:
    op.create_table(
        "abundance",
        sa.Column("run_id", sa.BigInteger(), nullable=False, comment="Run that produced the abundances"),
        sa.Column("spectrum_id", sa.BigInteger(), nullable=False, comment="Spectrum whose emission lines were used"),
        sa.Column("method", sa.Text(), nullable=False, comment="Abundance method: direct, or a strong-line calibration such as N2_PP04"),
        sa.Column("oh", sa.Double(), nullable=True, comment="Oxygen abundance 12 + log(O/H)"),
        sa.Column("oh_err_lo", sa.Double(), nullable=True, comment="Lower error of oh: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("oh_err_hi", sa.Double(), nullable=True, comment="Upper error of oh: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("n_o", sa.Double(), nullable=True, comment="Nitrogen-to-oxygen ratio log(N/O), taken as log(N+/O+) (direct method only)"),
        sa.Column("n_o_err_lo", sa.Double(), nullable=True, comment="Lower error of n_o: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("n_o_err_hi", sa.Double(), nullable=True, comment="Upper error of n_o: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("s_h", sa.Double(), nullable=True, comment="Sulphur abundance 12 + log(S/H): S+ + S++ with the Stasinska (1978) ionisation correction (direct method only)"),
        sa.Column("s_h_err_lo", sa.Double(), nullable=True, comment="Lower error of s_h: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("s_h_err_hi", sa.Double(), nullable=True, comment="Upper error of s_h: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("ebv", sa.Double(), nullable=True, comment="Colour excess E(B-V) from the Balmer decrement; NULL for dust-corrected input or no decrement"),
        sa.Column("ebv_err_lo", sa.Double(), nullable=True, comment="Lower error of ebv: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("ebv_err_hi", sa.Double(), nullable=True, comment="Upper error of ebv: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("te_oiii", sa.Double(), nullable=True, comment="Electron temperature from the [O III] (4959+5007)/4363 ratio"),
        sa.Column("te_oiii_err_lo", sa.Double(), nullable=True, comment="Lower error of te_oiii: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("te_oiii_err_hi", sa.Double(), nullable=True, comment="Upper error of te_oiii: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("te_nii", sa.Double(), nullable=True, comment="Electron temperature from the [N II] (6548+6584)/5755 ratio"),
        sa.Column("te_nii_err_lo", sa.Double(), nullable=True, comment="Lower error of te_nii: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("te_nii_err_hi", sa.Double(), nullable=True, comment="Upper error of te_nii: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("te_siii", sa.Double(), nullable=True, comment="Electron temperature from the [S III] (9069+9532)/6312 ratio"),
        sa.Column("te_siii_err_lo", sa.Double(), nullable=True, comment="Lower error of te_siii: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("te_siii_err_hi", sa.Double(), nullable=True, comment="Upper error of te_siii: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("te_oii", sa.Double(), nullable=True, comment="Electron temperature from the [O II] (3726+3729)/(7320+7330) ratio"),
        sa.Column("te_oii_err_lo", sa.Double(), nullable=True, comment="Lower error of te_oii: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("te_oii_err_hi", sa.Double(), nullable=True, comment="Upper error of te_oii: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("ne_sii", sa.Double(), nullable=True, comment="Electron density from the [S II] 6716/6731 ratio"),
        sa.Column("ne_sii_err_lo", sa.Double(), nullable=True, comment="Lower error of ne_sii: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("ne_sii_err_hi", sa.Double(), nullable=True, comment="Upper error of ne_sii: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("ne_oii", sa.Double(), nullable=True, comment="Electron density from the [O II] 3729/3726 ratio"),
        sa.Column("ne_oii_err_lo", sa.Double(), nullable=True, comment="Lower error of ne_oii: median minus 16th percentile of the Monte Carlo draws"),
        sa.Column("ne_oii_err_hi", sa.Double(), nullable=True, comment="Upper error of ne_oii: 84th percentile minus median of the Monte Carlo draws"),
        sa.Column("op_h", sa.Double(), nullable=True, comment="Ionic abundance 12 + log(O+/H+) from [O II] 3726+3729"),
        sa.Column("opp_h", sa.Double(), nullable=True, comment="Ionic abundance 12 + log(O++/H+) from [O III] 4959+5007"),
        sa.Column("np_h", sa.Double(), nullable=True, comment="Ionic abundance 12 + log(N+/H+) from [N II] 6548+6584"),
        sa.Column("sp_h", sa.Double(), nullable=True, comment="Ionic abundance 12 + log(S+/H+) from [S II] 6716+6731"),
        sa.Column("spp_h", sa.Double(), nullable=True, comment="Ionic abundance 12 + log(S++/H+) from [S III] 9069+9532"),
        sa.Column("flags", sa.Integer(), server_default=sa.text("0"), nullable=False, comment="Abundance flag bits (see flag_definition)"),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"], name=op.f("fk_abundance_run_id_run")),
        sa.ForeignKeyConstraint(["spectrum_id"], ["spectrum.id"], name=op.f("fk_abundance_spectrum_id_spectrum")),
        sa.PrimaryKeyConstraint("run_id", "spectrum_id", "method", name=op.f("pk_abundance")),
    )
    op.create_index("ix_abundance_spectrum_id", "abundance", ["spectrum_id"], unique=False)
    op.execute(VIEW)
    op.execute(f"COMMENT ON VIEW catalog.abundances IS '{VIEW_COMMENT}'")


def downgrade() -> None:
    op.execute("DROP VIEW catalog.abundances")
    op.drop_index("ix_abundance_spectrum_id", table_name="abundance")
    op.drop_table("abundance")
