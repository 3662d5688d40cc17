"""Recalls, the consignees each must reach, and recall drills

``recall`` is a recall of a lot (and of every lot made from it) with its class and reason; ``recall_consignee``
one row per consignee shipped any of those lots, with the quantity shipped when the recall opened, the day it was
notified, its acknowledgement and the quantity it returned (never above what it was shipped). ``recall_drill``
keeps each mock recall (who, when, what was asked, the answer's digest and how long it took); it is not a
regulated record and is kept outside the audit chain. On PostgreSQL the investigators write these tables.

Revision ID: 0008
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None

TABLES = ("recall", "recall_consignee", "recall_drill")


def _enum(*values: str, name: str) -> sa.Enum:
    return sa.Enum(
        *values, name=name, native_enum=False, create_constraint=True, length=max(len(v) for v in values) + 4
    )


def upgrade() -> None:
    op.create_table(
        "recall",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recall_number", sa.String(length=40), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("recall_class", _enum("I", "II", "III", name="recallclass"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", _enum("open", "closed", name="recallstatus"), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=100), nullable=True),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_recall_lot_id_lot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recall")),
    )
    with op.batch_alter_table("recall", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recall_recall_number"), ["recall_number"], unique=True)
        batch_op.create_index(batch_op.f("ix_recall_lot_id"), ["lot_id"], unique=False)

    op.create_table(
        "recall_consignee",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recall_id", sa.Integer(), nullable=False),
        sa.Column("consignee_id", sa.Integer(), nullable=False),
        sa.Column("shipped", sa.Integer(), nullable=False),
        sa.Column("notified_on", sa.Date(), nullable=True),
        sa.Column("notified_by", sa.String(length=100), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=100), nullable=True),
        sa.Column("returned", sa.Integer(), nullable=True),
        sa.CheckConstraint("shipped >= 0", name=op.f("ck_recall_consignee_shipped_not_negative")),
        sa.CheckConstraint(
            "returned IS NULL OR (returned >= 0 AND returned <= shipped)",
            name=op.f("ck_recall_consignee_returned_within"),
        ),
        sa.CheckConstraint(
            "acknowledged_at IS NULL OR notified_on IS NOT NULL", name=op.f("ck_recall_consignee_ack_after_notice")
        ),
        sa.ForeignKeyConstraint(
            ["consignee_id"], ["consignee.id"], name=op.f("fk_recall_consignee_consignee_id_consignee")
        ),
        sa.ForeignKeyConstraint(["recall_id"], ["recall.id"], name=op.f("fk_recall_consignee_recall_id_recall")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recall_consignee")),
        sa.UniqueConstraint("recall_id", "consignee_id", name=op.f("uq_recall_consignee_recall_id_consignee_id")),
    )
    with op.batch_alter_table("recall_consignee", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recall_consignee_recall_id"), ["recall_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_recall_consignee_consignee_id"), ["consignee_id"], unique=False)

    op.create_table(
        "recall_drill",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject", _enum("donor", "lot", name="drillsubject"), nullable=False),
        sa.Column("subject_key", sa.String(length=40), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("answer_sha256", sa.String(length=64), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("pools", sa.Integer(), nullable=False),
        sa.Column("lots", sa.Integer(), nullable=False),
        sa.Column("consignees", sa.Integer(), nullable=False),
        sa.Column("audit_checkpoint", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recall_drill")),
    )

    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        # Databases whose roles `init` already created get the rights on the new tables now (a new database gets
        # them from `init`): everyone reads, the investigators write.
        roles = set(conn.execute(sa.text("SELECT rolname FROM pg_roles WHERE rolname LIKE 'plasmatrace%'")).scalars())
        for role in sorted(roles):
            for table in TABLES:
                op.execute(f"GRANT SELECT ON {table} TO {role}")
        if "plasmatrace_investigator" in roles:
            for table in TABLES:
                op.execute(f"GRANT INSERT, UPDATE ON {table} TO plasmatrace_investigator")
            op.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO plasmatrace_investigator")


def downgrade() -> None:
    op.drop_table("recall_drill")
    op.drop_table("recall_consignee")
    op.drop_table("recall")
