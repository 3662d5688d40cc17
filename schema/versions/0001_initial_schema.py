"""Initial schema: the lineage tables and the append-only audit trail

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=60), nullable=False),
        sa.Column("entity_type", sa.String(length=40), nullable=False),
        sa.Column("entity_key", sa.String(length=200), nullable=False),
        sa.Column("old_values", sa.Text(), nullable=True),
        sa.Column("new_values", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_event_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_audit_event_prev_hash")),
        sa.UniqueConstraint("seq", name=op.f("uq_audit_event_seq")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_action"), ["action"], unique=False)
        batch_op.create_index("ix_audit_event_entity", ["entity_type", "entity_key"], unique=False)

    op.create_table(
        "establishment",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "collection",
                "testing",
                "fractionation",
                name="establishmentkind",
                native_enum=False,
                create_constraint=True,
                length=17,
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_establishment")),
    )
    with op.batch_alter_table("establishment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_establishment_code"), ["code"], unique=True)

    op.create_table(
        "lot",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_number", sa.String(length=40), nullable=False),
        sa.Column("product", sa.String(length=40), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("intermediate", "final", name="lotkind", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "released",
                "rejected",
                "quarantined",
                name="lotstatus",
                native_enum=False,
                create_constraint=True,
                length=15,
            ),
            nullable=False,
        ),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lot")),
    )
    with op.batch_alter_table("lot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lot_lot_number"), ["lot_number"], unique=True)

    op.create_table(
        "pool",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_number", sa.String(length=40), nullable=False),
        sa.Column("product", sa.String(length=40), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "closed",
                "released",
                "rejected",
                "quarantined",
                name="poolstatus",
                native_enum=False,
                create_constraint=True,
                length=15,
            ),
            nullable=False,
        ),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool")),
    )
    with op.batch_alter_table("pool", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pool_pool_number"), ["pool_number"], unique=True)

    op.create_table(
        "donor",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("donor_code", sa.String(length=40), nullable=False),
        sa.Column("establishment_id", sa.Integer(), nullable=False),
        sa.Column("registered_on", sa.Date(), nullable=True),
        sa.Column("import_event_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["establishment_id"], ["establishment.id"], name=op.f("fk_donor_establishment_id_establishment")
        ),
        sa.ForeignKeyConstraint(
            ["import_event_id"], ["audit_event.id"], name=op.f("fk_donor_import_event_id_audit_event")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donor")),
    )
    with op.batch_alter_table("donor", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_donor_donor_code"), ["donor_code"], unique=True)
        batch_op.create_index(batch_op.f("ix_donor_establishment_id"), ["establishment_id"], unique=False)

    op.create_table(
        "lot_input",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("input_pool_id", sa.Integer(), nullable=True),
        sa.Column("input_lot_id", sa.Integer(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=True),
        sa.CheckConstraint("(input_pool_id IS NULL) <> (input_lot_id IS NULL)", name=op.f("ck_lot_input_one_input")),
        sa.CheckConstraint("input_lot_id IS NULL OR input_lot_id <> lot_id", name=op.f("ck_lot_input_not_itself")),
        sa.CheckConstraint("quantity IS NULL OR quantity > 0", name=op.f("ck_lot_input_quantity_positive")),
        sa.ForeignKeyConstraint(["input_lot_id"], ["lot.id"], name=op.f("fk_lot_input_input_lot_id_lot")),
        sa.ForeignKeyConstraint(["input_pool_id"], ["pool.id"], name=op.f("fk_lot_input_input_pool_id_pool")),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_lot_input_lot_id_lot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lot_input")),
        sa.UniqueConstraint("lot_id", "input_lot_id", name=op.f("uq_lot_input_lot_id_input_lot_id")),
        sa.UniqueConstraint("lot_id", "input_pool_id", name=op.f("uq_lot_input_lot_id_input_pool_id")),
    )
    with op.batch_alter_table("lot_input", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lot_input_input_lot_id"), ["input_lot_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lot_input_input_pool_id"), ["input_pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_lot_input_lot_id"), ["lot_id"], unique=False)

    op.create_table(
        "pool_test",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column(
            "marker",
            sa.Enum(
                "hbsag",
                "anti-hiv",
                "anti-hcv",
                "hiv-rna",
                "hcv-rna",
                "hbv-dna",
                "hav-rna",
                "b19-dna",
                "syphilis",
                name="marker",
                native_enum=False,
                create_constraint=True,
                length=12,
            ),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "result",
            sa.Enum(
                "nonreactive",
                "reactive",
                "invalid",
                name="resultvalue",
                native_enum=False,
                create_constraint=True,
                length=15,
            ),
            nullable=False,
        ),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("value_unit", sa.String(length=20), nullable=True),
        sa.Column("tested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["pool_id"], ["pool.id"], name=op.f("fk_pool_test_pool_id_pool")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_test")),
        sa.UniqueConstraint("pool_id", "marker", "version", name=op.f("uq_pool_test_pool_id_marker_version")),
    )
    op.create_table(
        "shipment",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shipment_number", sa.String(length=60), nullable=False),
        sa.Column("lot_id", sa.Integer(), nullable=False),
        sa.Column("consignee", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("shipped_on", sa.Date(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_shipment_quantity_positive")),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_shipment_lot_id_lot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment")),
    )
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shipment_lot_id"), ["lot_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_shipment_shipment_number"), ["shipment_number"], unique=True)

    op.create_table(
        "step",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("step_key", sa.String(length=60), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=True),
        sa.Column("lot_id", sa.Integer(), nullable=True),
        sa.Column(
            "method",
            sa.Enum(
                "solvent-detergent",
                "pasteurization",
                "low-ph",
                "caprylate",
                "nanofiltration",
                "dry-heat",
                name="stepmethod",
                native_enum=False,
                create_constraint=True,
                length=21,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("lrv_enveloped", sa.Float(), nullable=True),
        sa.Column("lrv_non_enveloped", sa.Float(), nullable=True),
        sa.Column(
            "outcome",
            sa.Enum(
                "completed",
                "deviation",
                "failed",
                name="stepoutcome",
                native_enum=False,
                create_constraint=True,
                length=13,
            ),
            nullable=False,
        ),
        sa.Column("operator", sa.String(length=100), nullable=False),
        sa.Column("deviation_closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deviation_closure", sa.Text(), nullable=True),
        sa.CheckConstraint("(pool_id IS NULL) <> (lot_id IS NULL)", name=op.f("ck_step_one_target")),
        sa.CheckConstraint("ended_at >= started_at", name=op.f("ck_step_ends_after_start")),
        sa.CheckConstraint("lrv_enveloped IS NULL OR lrv_enveloped >= 0", name=op.f("ck_step_lrv_env_not_negative")),
        sa.CheckConstraint(
            "lrv_non_enveloped IS NULL OR lrv_non_enveloped >= 0", name=op.f("ck_step_lrv_nonenv_not_negative")
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_step_lot_id_lot")),
        sa.ForeignKeyConstraint(["pool_id"], ["pool.id"], name=op.f("fk_step_pool_id_pool")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step")),
    )
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_step_lot_id"), ["lot_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_step_pool_id"), ["pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_step_step_key"), ["step_key"], unique=True)

    op.create_table(
        "deferral",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("donor_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "manual",
                "reactive-result",
                "lookback",
                name="deferralsource",
                native_enum=False,
                create_constraint=True,
                length=19,
            ),
            nullable=False,
        ),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("lifted_on", sa.Date(), nullable=True),
        sa.Column("lift_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("ends_on IS NULL OR ends_on > starts_on", name=op.f("ck_deferral_ends_after_start")),
        sa.ForeignKeyConstraint(["donor_id"], ["donor.id"], name=op.f("fk_deferral_donor_id_donor")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deferral")),
        sa.UniqueConstraint("donor_id", "sequence", name=op.f("uq_deferral_donor_id_sequence")),
    )
    with op.batch_alter_table("deferral", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deferral_donor_id"), ["donor_id"], unique=False)

    op.create_table(
        "donation",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("unit_number", sa.String(length=40), nullable=False),
        sa.Column(
            "scheme",
            sa.Enum(
                "isbt128", "codabar", "local", name="unitscheme", native_enum=False, create_constraint=True, length=11
            ),
            nullable=False,
        ),
        sa.Column("flag", sa.String(length=2), nullable=True),
        sa.Column("donor_id", sa.Integer(), nullable=False),
        sa.Column("establishment_id", sa.Integer(), nullable=True),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("volume_ml", sa.Integer(), nullable=False),
        sa.Column(
            "plasma_kind",
            sa.Enum("source", "recovered", name="plasmakind", native_enum=False, create_constraint=True, length=13),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "in-inventory",
                "pooled",
                "interdicted",
                "discarded",
                "rejected",
                name="unitstatus",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("import_event_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "frozen_at IS NULL OR frozen_at >= collected_at", name=op.f("ck_donation_frozen_after_collection")
        ),
        sa.CheckConstraint("volume_ml >= 0", name=op.f("ck_donation_volume_not_negative")),
        sa.ForeignKeyConstraint(["donor_id"], ["donor.id"], name=op.f("fk_donation_donor_id_donor")),
        sa.ForeignKeyConstraint(
            ["establishment_id"], ["establishment.id"], name=op.f("fk_donation_establishment_id_establishment")
        ),
        sa.ForeignKeyConstraint(
            ["import_event_id"], ["audit_event.id"], name=op.f("fk_donation_import_event_id_audit_event")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_donation")),
    )
    with op.batch_alter_table("donation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_donation_collected_at"), ["collected_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_donation_donor_id"), ["donor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_donation_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_donation_unit_number"), ["unit_number"], unique=True)

    op.create_table(
        "lookback_case",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_number", sa.String(length=40), nullable=False),
        sa.Column("donor_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("open", "closed", name="casestatus", native_enum=False, create_constraint=True, length=10),
            nullable=False,
        ),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closure", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["donor_id"], ["donor.id"], name=op.f("fk_lookback_case_donor_id_donor")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lookback_case")),
    )
    with op.batch_alter_table("lookback_case", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lookback_case_case_number"), ["case_number"], unique=True)
        batch_op.create_index(batch_op.f("ix_lookback_case_donor_id"), ["donor_id"], unique=False)

    op.create_table(
        "case_finding",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("donation_id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["lookback_case.id"], name=op.f("fk_case_finding_case_id_lookback_case")),
        sa.ForeignKeyConstraint(["donation_id"], ["donation.id"], name=op.f("fk_case_finding_donation_id_donation")),
        sa.ForeignKeyConstraint(["pool_id"], ["pool.id"], name=op.f("fk_case_finding_pool_id_pool")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_finding")),
        sa.UniqueConstraint("case_id", "donation_id", name=op.f("uq_case_finding_case_id_donation_id")),
    )
    with op.batch_alter_table("case_finding", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_finding_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_case_finding_donation_id"), ["donation_id"], unique=False)

    op.create_table(
        "pool_member",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("donation_id", sa.Integer(), nullable=False),
        sa.Column("import_event_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["donation_id"], ["donation.id"], name=op.f("fk_pool_member_donation_id_donation")),
        sa.ForeignKeyConstraint(
            ["import_event_id"], ["audit_event.id"], name=op.f("fk_pool_member_import_event_id_audit_event")
        ),
        sa.ForeignKeyConstraint(["pool_id"], ["pool.id"], name=op.f("fk_pool_member_pool_id_pool")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_member")),
        sa.UniqueConstraint("donation_id", name=op.f("uq_pool_member_donation_id")),
    )
    with op.batch_alter_table("pool_member", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pool_member_pool_id"), ["pool_id"], unique=False)

    op.create_table(
        "test_result",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("donation_id", sa.Integer(), nullable=False),
        sa.Column(
            "marker",
            sa.Enum(
                "hbsag",
                "anti-hiv",
                "anti-hcv",
                "hiv-rna",
                "hcv-rna",
                "hbv-dna",
                "hav-rna",
                "b19-dna",
                "syphilis",
                name="marker",
                native_enum=False,
                create_constraint=True,
                length=12,
            ),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "result",
            sa.Enum(
                "nonreactive",
                "reactive",
                "invalid",
                name="resultvalue",
                native_enum=False,
                create_constraint=True,
                length=15,
            ),
            nullable=False,
        ),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("value_unit", sa.String(length=20), nullable=True),
        sa.Column(
            "method",
            sa.Enum("serology", "nat", name="testmethod", native_enum=False, create_constraint=True, length=12),
            nullable=True,
        ),
        sa.Column("lab_id", sa.Integer(), nullable=True),
        sa.Column("tested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("import_event_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["donation_id"], ["donation.id"], name=op.f("fk_test_result_donation_id_donation")),
        sa.ForeignKeyConstraint(
            ["import_event_id"], ["audit_event.id"], name=op.f("fk_test_result_import_event_id_audit_event")
        ),
        sa.ForeignKeyConstraint(["lab_id"], ["establishment.id"], name=op.f("fk_test_result_lab_id_establishment")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_result")),
        sa.UniqueConstraint("donation_id", "marker", "version", name=op.f("uq_test_result_donation_id_marker_version")),
    )

    install_audit_guards()


# The audit trail is append-only: the database itself refuses UPDATE and DELETE on audit_event (SPEC §9).
SQLITE_GUARDS = [
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'audit_event is append-only: DELETE refused'); END""",
]
POSTGRES_GUARDS = [
    """CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP; END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE OR DELETE ON audit_event
       FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()""",
    """CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
       FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()""",
]


def install_audit_guards() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_GUARDS if dialect == "sqlite" else POSTGRES_GUARDS if dialect == "postgresql" else []:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
    op.drop_table("test_result")
    with op.batch_alter_table("pool_member", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_member_pool_id"))

    op.drop_table("pool_member")
    with op.batch_alter_table("case_finding", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_case_finding_donation_id"))
        batch_op.drop_index(batch_op.f("ix_case_finding_case_id"))

    op.drop_table("case_finding")
    with op.batch_alter_table("lookback_case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lookback_case_donor_id"))
        batch_op.drop_index(batch_op.f("ix_lookback_case_case_number"))

    op.drop_table("lookback_case")
    with op.batch_alter_table("donation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_donation_unit_number"))
        batch_op.drop_index(batch_op.f("ix_donation_status"))
        batch_op.drop_index(batch_op.f("ix_donation_donor_id"))
        batch_op.drop_index(batch_op.f("ix_donation_collected_at"))

    op.drop_table("donation")
    with op.batch_alter_table("deferral", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deferral_donor_id"))

    op.drop_table("deferral")
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_step_step_key"))
        batch_op.drop_index(batch_op.f("ix_step_pool_id"))
        batch_op.drop_index(batch_op.f("ix_step_lot_id"))

    op.drop_table("step")
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_shipment_number"))
        batch_op.drop_index(batch_op.f("ix_shipment_lot_id"))

    op.drop_table("shipment")
    op.drop_table("pool_test")
    with op.batch_alter_table("lot_input", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lot_input_lot_id"))
        batch_op.drop_index(batch_op.f("ix_lot_input_input_pool_id"))
        batch_op.drop_index(batch_op.f("ix_lot_input_input_lot_id"))

    op.drop_table("lot_input")
    with op.batch_alter_table("donor", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_donor_establishment_id"))
        batch_op.drop_index(batch_op.f("ix_donor_donor_code"))

    op.drop_table("donor")
    with op.batch_alter_table("pool", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_pool_number"))

    op.drop_table("pool")
    with op.batch_alter_table("lot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lot_lot_number"))

    op.drop_table("lot")
    with op.batch_alter_table("establishment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_establishment_code"))

    op.drop_table("establishment")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_event_entity")
        batch_op.drop_index(batch_op.f("ix_audit_event_action"))

    op.drop_table("audit_event")
