"""Look-back cases that run to their deadlines, and holds on lots

A case records what opened it (its trigger), the local day the reactive test was done or the information came in
(due dates count calendar days from it, in the case's time zone) and who closed it. Each case gets tasks (review
and quarantine, a quarantine request per consignee of every implicated lot, supplemental results per consignee, an
assessment per implicated lot) with due dates and how each ended. A lot hold stops release and shipment of a lot
while it stands: placed by a case on every lot downstream of its pooled units, or by an approver by hand.

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# PostgreSQL: GRANTs let a recorder insert case tasks and holds (a reactive result opens a case by itself), so who may
# end a task or lift a hold is decided by a trigger, as 0004 does for the status changes reserved to a role.
POSTGRES_UP = [
    """CREATE OR REPLACE FUNCTION plasmatrace_guard_casework() RETURNS trigger AS $$
       BEGIN
         IF TG_TABLE_NAME = 'lot_hold' THEN
           IF NEW.lifted_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.lifted_at IS NULL)
              AND NOT (plasmatrace_has_role('plasmatrace_approver')
                       OR plasmatrace_has_role('plasmatrace_investigator')) THEN
             RAISE EXCEPTION 'permission denied: lifting a hold on a lot needs the role plasmatrace_approver'
               USING ERRCODE = 'insufficient_privilege';
           END IF;
         ELSIF TG_TABLE_NAME = 'case_task' THEN
           IF NEW.state <> 'open' AND (TG_OP = 'INSERT' OR OLD.state = 'open')
              AND NOT plasmatrace_has_role('plasmatrace_investigator') THEN
             RAISE EXCEPTION 'permission denied: ending a look-back task needs the role plasmatrace_investigator'
               USING ERRCODE = 'insufficient_privilege';
           END IF;
         END IF;
         RETURN NEW;
       END; $$ LANGUAGE plpgsql""",
    *(
        f"""CREATE TRIGGER {table}_guard_casework BEFORE INSERT OR UPDATE ON {table}
            FOR EACH ROW EXECUTE FUNCTION plasmatrace_guard_casework()"""
        for table in ("lot_hold", "case_task")
    ),
]


def upgrade() -> None:
    op.create_table(
        "case_task",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "review-quarantine",
                "quarantine-request",
                "supplemental-results",
                "assessment",
                name="taskkind",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("lot_id", sa.Integer(), nullable=True),
        sa.Column("consignee_id", sa.Integer(), nullable=True),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column(
            "state",
            sa.Enum("open", "done", "waived", name="taskstate", native_enum=False, create_constraint=True, length=10),
            nullable=False,
        ),
        sa.Column(
            "decision",
            sa.Enum(
                "no-action", "withdraw", "recall", name="decision", native_enum=False, create_constraint=True, length=13
            ),
            nullable=True,
        ),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["lookback_case.id"], name=op.f("fk_case_task_case_id_lookback_case")),
        sa.ForeignKeyConstraint(["consignee_id"], ["consignee.id"], name=op.f("fk_case_task_consignee_id_consignee")),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_case_task_lot_id_lot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_task")),
        sa.UniqueConstraint("case_id", "seq", name=op.f("uq_case_task_case_id_seq")),
    )
    with op.batch_alter_table("case_task", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_task_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_case_task_lot_id"), ["lot_id"], unique=False)

    op.create_table(
        "lot_hold",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=100), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["lookback_case.id"], name=op.f("fk_lot_hold_case_id_lookback_case")),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_lot_hold_lot_id_lot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lot_hold")),
    )
    with op.batch_alter_table("lot_hold", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lot_hold_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lot_hold_lot_id"), ["lot_id"], unique=False)

    with op.batch_alter_table("lookback_case", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "trigger",
                sa.Enum(
                    "reactive-test",
                    "pdi",
                    "recipient-infection",
                    "other",
                    name="casetrigger",
                    native_enum=False,
                    create_constraint=True,
                    length=23,
                ),
                nullable=False,
                server_default="other",
            )
        )
        batch_op.add_column(sa.Column("received_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC"))
        batch_op.add_column(sa.Column("closed_by", sa.String(length=100), nullable=True))

    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("lot_hold", "case_task"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_guard_casework ON {table}")
        op.execute("DROP FUNCTION IF EXISTS plasmatrace_guard_casework()")
    with op.batch_alter_table("lookback_case", schema=None) as batch_op:
        batch_op.drop_column("closed_by")
        batch_op.drop_column("timezone")
        batch_op.drop_column("received_on")
        batch_op.drop_column("trigger")

    with op.batch_alter_table("lot_hold", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lot_hold_lot_id"))
        batch_op.drop_index(batch_op.f("ix_lot_hold_case_id"))

    op.drop_table("lot_hold")
    with op.batch_alter_table("case_task", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_task_lot_id"))
        batch_op.drop_index(batch_op.f("ix_case_task_case_id"))

    op.drop_table("case_task")
