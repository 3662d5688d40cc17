"""Records that add up: consignees, lot quantities and expiry, balances, deviations on corrections, one open case

Consignees become records (code, name, address, country). Every free-text consignee already on a shipment gets a
consignee row of its own (one per distinct name, address "unknown", code LEGACY-0001...), and the shipment points
at it; the name stays on the shipment as shipped. Lots get a quantity, a unit and an expiry, and running totals
of what was drawn from and shipped out of them (CHECKed against the quantity; earlier shipments and draws are
counted); pools a running total of what lots drew (mL; earlier draws had no unit and are not counted). A
correction to a unit in a closed or released pool is kept with its deviation reference. One open look-back case
per donor, by a partial unique index.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels = None
depends_on = None

LOT_UNITS = ("vials", "bottles", "g", "kg", "L")


def upgrade() -> None:
    op.create_table(
        "consignee",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("import_event_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consignee")),
    )
    with op.batch_alter_table("consignee", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consignee_code"), ["code"], unique=True)

    # Carry the free-text consignees over: one consignee per distinct name, in name order.
    conn = op.get_bind()
    names = [row[0] for row in conn.execute(sa.text("SELECT DISTINCT consignee FROM shipment ORDER BY consignee"))]
    for n, name in enumerate(names, start=1):
        conn.execute(
            sa.text(
                "INSERT INTO consignee (created_at, created_by, code, name, address, country) "
                "VALUES (CURRENT_TIMESTAMP, 'migration-0005', :code, :name, 'unknown', NULL)"
            ),
            {"code": f"LEGACY-{n:04d}", "name": name[:200]},
        )
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("consignee_id", sa.Integer(), nullable=True))
    conn.execute(
        sa.text("UPDATE shipment SET consignee_id = (SELECT c.id FROM consignee c WHERE c.name = shipment.consignee)")
    )
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.alter_column("consignee_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(batch_op.f("ix_shipment_consignee_id"), ["consignee_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_shipment_consignee_id_consignee"), "consignee", ["consignee_id"], ["id"]
        )

    with op.batch_alter_table("lot", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quantity", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "unit",
                sa.Enum(*LOT_UNITS, name="lotunit", native_enum=False, create_constraint=True, length=11),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("expires_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("drawn", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("shipped", sa.Integer(), nullable=False, server_default="0"))
    # What was already shipped from and drawn from each lot counts in its running totals (its quantity is unknown
    # until recorded, so the totals bind nothing yet, but they stay true).
    conn.execute(
        sa.text(
            "UPDATE lot SET shipped = COALESCE((SELECT SUM(s.quantity) FROM shipment s WHERE s.lot_id = lot.id), 0), "
            "drawn = COALESCE((SELECT SUM(i.quantity) FROM lot_input i WHERE i.input_lot_id = lot.id), 0)"
        )
    )
    with op.batch_alter_table("lot", schema=None) as batch_op:
        batch_op.alter_column("drawn", server_default=None)
        batch_op.alter_column("shipped", server_default=None)
        batch_op.create_check_constraint(op.f("ck_lot_quantity_positive"), "quantity IS NULL OR quantity > 0")
        batch_op.create_check_constraint(op.f("ck_lot_quantity_has_unit"), "(quantity IS NULL) = (unit IS NULL)")
        batch_op.create_check_constraint(op.f("ck_lot_balance_not_negative"), "drawn >= 0 AND shipped >= 0")
        batch_op.create_check_constraint(
            op.f("ck_lot_balance_within_quantity"), "quantity IS NULL OR drawn + shipped <= quantity"
        )

    with op.batch_alter_table("lot_input", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quantity_unit", sa.String(length=10), nullable=True))

    with op.batch_alter_table("pool", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drawn_ml", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("pool", schema=None) as batch_op:
        batch_op.alter_column("drawn_ml", server_default=None)
        batch_op.create_check_constraint(op.f("ck_pool_drawn_not_negative"), "drawn_ml >= 0")

    op.create_table(
        "correction_deviation",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=40), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("donation_id", sa.Integer(), nullable=False),
        sa.Column("donation_version", sa.Integer(), nullable=False),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["donation_id"], ["donation.id"], name=op.f("fk_correction_deviation_donation_id_donation")
        ),
        sa.ForeignKeyConstraint(["pool_id"], ["pool.id"], name=op.f("fk_correction_deviation_pool_id_pool")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_correction_deviation")),
        sa.UniqueConstraint(
            "donation_id", "donation_version", name=op.f("uq_correction_deviation_donation_id_donation_version")
        ),
    )
    with op.batch_alter_table("correction_deviation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_correction_deviation_donation_id"), ["donation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_correction_deviation_pool_id"), ["pool_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_correction_deviation_reference"), ["reference"], unique=False)

    op.create_index(
        "uq_lookback_case_open_donor",
        "lookback_case",
        ["donor_id"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("uq_lookback_case_open_donor", table_name="lookback_case")
    op.drop_table("correction_deviation")
    with op.batch_alter_table("pool", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_pool_drawn_not_negative"), type_="check")
        batch_op.drop_column("drawn_ml")
    with op.batch_alter_table("lot_input", schema=None) as batch_op:
        batch_op.drop_column("quantity_unit")
    with op.batch_alter_table("lot", schema=None) as batch_op:
        for name in ("balance_within_quantity", "balance_not_negative", "quantity_has_unit", "quantity_positive"):
            batch_op.drop_constraint(op.f(f"ck_lot_{name}"), type_="check")
        for column in ("shipped", "drawn", "expires_on", "unit", "quantity"):
            batch_op.drop_column(column)
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_shipment_consignee_id_consignee"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_shipment_consignee_id"))
        batch_op.drop_column("consignee_id")
    op.drop_table("consignee")
