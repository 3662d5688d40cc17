"""Pools, their members and tests, lots and their inputs and steps, consignees and shipments."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field

from .columns import (
    Recorded,
    enum_column,
    utc_column,
)
from .enums import (
    LotKind,
    LotStatus,
    LotUnit,
    Marker,
    PoolStatus,
    ResultValue,
    StepMethod,
    StepOutcome,
)


class Pool(Recorded, table=True):
    """A fractionation pool for one product."""

    __tablename__ = "pool"

    id: int | None = Field(default=None, primary_key=True)
    pool_number: str = Field(max_length=40, unique=True, index=True)
    product: str = Field(max_length=40)
    status: PoolStatus = enum_column(PoolStatus, default=PoolStatus.OPEN)
    closed_at: datetime | None = utc_column(nullable=True)
    released_at: datetime | None = utc_column(nullable=True)
    status_reason: str | None = Field(default=None, sa_type=sa.Text)
    drawn_ml: int = 0  # taken by lots

    __table_args__ = (sa.CheckConstraint("drawn_ml >= 0", name="drawn_not_negative"),)


class PoolMember(Recorded, table=True):
    """A unit in a pool; the unique donation_id is what keeps a unit in one pool only."""

    __tablename__ = "pool_member"

    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="pool.id", index=True)
    donation_id: int = Field(foreign_key="donation.id", unique=True)
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS


class PoolTest(Recorded, table=True):
    """A test on a manufacturing pool sample; a repeat is a new version."""

    __tablename__ = "pool_test"

    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="pool.id")
    marker: Marker = enum_column(Marker)
    version: int = 1
    result: ResultValue = enum_column(ResultValue)
    value: float | None = None
    value_unit: str | None = Field(default=None, max_length=20)
    tested_at: datetime = utc_column()
    reason: str | None = Field(default=None, sa_type=sa.Text)

    __table_args__ = (sa.UniqueConstraint("pool_id", "marker", "version"),)


class Lot(Recorded, table=True):
    """An intermediate (paste, fraction) or final product lot."""

    __tablename__ = "lot"

    id: int | None = Field(default=None, primary_key=True)
    lot_number: str = Field(max_length=40, unique=True, index=True)
    product: str = Field(max_length=40)
    kind: LotKind = enum_column(LotKind, default=LotKind.FINAL)
    status: LotStatus = enum_column(LotStatus, default=LotStatus.PENDING)
    released_at: datetime | None = utc_column(nullable=True)
    status_reason: str | None = Field(default=None, sa_type=sa.Text)
    quantity: int | None = None
    unit: LotUnit | None = enum_column(LotUnit, nullable=True)
    expires_on: date | None = None
    drawn: int = 0  # taken by later lots, in this lot's unit
    shipped: int = 0

    __table_args__ = (
        sa.CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("(quantity IS NULL) = (unit IS NULL)", name="quantity_has_unit"),
        sa.CheckConstraint("drawn >= 0 AND shipped >= 0", name="balance_not_negative"),
        sa.CheckConstraint("quantity IS NULL OR drawn + shipped <= quantity", name="balance_within_quantity"),
    )


def quantity_text(quantity: int | None, unit: str | None) -> str:
    """A drawn quantity as people read it: a pool's millilitres in litres ("700 L"), a lot's in its unit ("40 kg")."""
    if quantity is None:
        return ""
    if unit == "mL":
        return f"{quantity / 1000:,.3f}".rstrip("0").rstrip(".") + " L"
    return f"{quantity:,}" + (f" {unit}" if unit else "")


class LotInput(Recorded, table=True):
    """An edge of the lineage graph: a pool or an earlier lot that went into a lot, with its quantity."""

    __tablename__ = "lot_input"

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(foreign_key="lot.id", index=True)
    input_pool_id: int | None = Field(default=None, foreign_key="pool.id", index=True)
    input_lot_id: int | None = Field(default=None, foreign_key="lot.id", index=True)
    quantity: int | None = None
    quantity_unit: str | None = Field(default=None, max_length=10)  # mL for a pool; the input lot's unit

    __table_args__ = (
        sa.CheckConstraint("(input_pool_id IS NULL) <> (input_lot_id IS NULL)", name="one_input"),
        sa.CheckConstraint("input_lot_id IS NULL OR input_lot_id <> lot_id", name="not_itself"),
        sa.CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity_positive"),
        sa.UniqueConstraint("lot_id", "input_pool_id"),
        sa.UniqueConstraint("lot_id", "input_lot_id"),
    )


class Step(Recorded, table=True):
    """A viral inactivation or removal step applied to a pool or a lot, with its validated log reductions."""

    __tablename__ = "step"

    id: int | None = Field(default=None, primary_key=True)
    step_key: str = Field(max_length=60, unique=True, index=True)
    pool_id: int | None = Field(default=None, foreign_key="pool.id", index=True)
    lot_id: int | None = Field(default=None, foreign_key="lot.id", index=True)
    method: StepMethod = enum_column(StepMethod)
    started_at: datetime = utc_column()
    ended_at: datetime = utc_column()
    parameters: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)
    lrv_enveloped: float | None = None
    lrv_non_enveloped: float | None = None
    outcome: StepOutcome = enum_column(StepOutcome, default=StepOutcome.COMPLETED)
    operator: str = Field(max_length=100)
    deviation_closed_at: datetime | None = utc_column(nullable=True)
    deviation_closure: str | None = Field(default=None, sa_type=sa.Text)

    __table_args__ = (
        sa.CheckConstraint("(pool_id IS NULL) <> (lot_id IS NULL)", name="one_target"),
        sa.CheckConstraint("ended_at >= started_at", name="ends_after_start"),
        sa.CheckConstraint("lrv_enveloped IS NULL OR lrv_enveloped >= 0", name="lrv_env_not_negative"),
        sa.CheckConstraint("lrv_non_enveloped IS NULL OR lrv_non_enveloped >= 0", name="lrv_nonenv_not_negative"),
    )


class Consignee(Recorded, table=True):
    """A hospital, distributor or manufacturer a lot is shipped to, with its address (21 CFR 606.165)."""

    __tablename__ = "consignee"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200)
    address: str = Field(max_length=500)
    country: str | None = Field(default=None, max_length=2)
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS


class Shipment(Recorded, table=True):
    """A quantity of a lot sent to a consignee on a date."""

    __tablename__ = "shipment"

    id: int | None = Field(default=None, primary_key=True)
    shipment_number: str = Field(max_length=60, unique=True, index=True)
    lot_id: int = Field(foreign_key="lot.id", index=True)
    consignee_id: int = Field(foreign_key="consignee.id", index=True)
    consignee: str = Field(max_length=200)  # the consignee's name as shipped
    quantity: int
    shipped_on: date

    __table_args__ = (sa.CheckConstraint("quantity > 0", name="quantity_positive"),)
