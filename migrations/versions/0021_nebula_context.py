"""`nebula_diagnostic` version 2: the rule ``context`` of every nebula classification.

One ``nebula_class`` column, ``context`` (text NOT NULL, CHECK galaxy|nebula): whether the
rules ran in the order of an integrated galaxy spectrum or of a nebula inside a galaxy
(docs/nebula_classification.md). Rows written before it were classified in the only order
there was, the galaxy one, so they are backfilled 'galaxy' by a server default, which
stays: a row inserted without a context (an older tool) means what such rows always
meant; both tasks write the context explicitly. It is added last, after
``flags``, where NebulaClass declares it (the physical order); catalog.nebula_class shows it
before ``flags``, so the view is re-created, as printed by
``python -m skyledger.schema.catalog ddl nebula_class`` (pasted, not imported: a migration
never changes once released).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

READER_ROLE = "skyledger_reader"

COLUMN_DOC = 'Rule context: galaxy (an integrated spectrum: no PN/SNR class, shocks only flagged) or nebula (a region inside a galaxy, away from its nucleus); from the survey option context, else inferred (flag CONTEXT_INFERRED)'

VIEW = """
CREATE VIEW catalog.nebula_class AS
WITH chosen AS (
    SELECT DISTINCT ON (t.spectrum_id, p.task) t.spectrum_id, t.run_id, p.task
    FROM nebula_class AS t
    JOIN catalog.current_runs AS p ON p.run_id = t.run_id
    WHERE p.task IN ('nebula_diagnostic', 'nebula_nn')
    ORDER BY t.spectrum_id, p.task, p.rank, t.run_id DESC
)
SELECT t.spectrum_id, t.method, t.class, t.probability, t.p_hii, t.p_pn, t.p_snr, t.p_dig, t.p_agn, t.context,
       t.flags, t.run_id
FROM nebula_class AS t
JOIN chosen ON chosen.spectrum_id = t.spectrum_id AND chosen.run_id = t.run_id;
"""

COMMENTS = [
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
    "COMMENT ON COLUMN catalog.nebula_class.context IS 'Rule context: galaxy (an integrated spectrum: no PN/SNR class, shocks only flagged) or nebula (a region inside a galaxy, away from its nucleus); from the survey option context, else inferred (flag CONTEXT_INFERRED)'",
    "COMMENT ON COLUMN catalog.nebula_class.flags IS 'Classification flag bits (see flag_definition)'",
    "COMMENT ON COLUMN catalog.nebula_class.run_id IS 'Run that produced the classification'",
]


def _recreate(ddl: str, comments: list[str]) -> None:
    op.execute("DROP VIEW catalog.nebula_class")
    op.execute(ddl)
    op.execute(f"GRANT SELECT ON catalog.nebula_class TO {READER_ROLE}")
    for statement in comments:
        op.execute(sa.text(statement))


def upgrade() -> None:
    # The default backfills the rows already there (all classified in galaxy order).
    op.add_column(
        "nebula_class",
        sa.Column("context", sa.Text(), nullable=False, server_default=sa.text("'galaxy'"), comment=COLUMN_DOC),
    )
    op.create_check_constraint(op.f("ck_nebula_class_context_name"), "nebula_class", "context IN ('galaxy', 'nebula')")
    _recreate(VIEW, COMMENTS)


def downgrade() -> None:
    # The view of revision 0020: the same select list without context.
    old_view = " ".join(VIEW.split()).replace("t.context, ", "")
    _recreate(old_view, [c for c in COMMENTS if "catalog.nebula_class.context " not in c])
    op.drop_constraint(op.f("ck_nebula_class_context_name"), "nebula_class", type_="check")
    op.drop_column("nebula_class", "context")
