"""Recalls of lots, the consignees they must reach, and recall drills."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field

from .columns import (
    Recorded,
    enum_column,
    utc_column,
)
from .enums import StrEnum


class RecallClass(StrEnum):
    """FDA recall classes (21 CFR 7.3(m)): I a reasonable probability of serious harm, II temporary or remote
    harm, III unlikely to cause harm."""

    I = "I"  # noqa: E741
    II = "II"
    III = "III"


class RecallStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class DrillSubject(StrEnum):
    DONOR = "donor"
    LOT = "lot"


class Recall(Recorded, table=True):
    """A recall of a lot and of every lot made from it (SPEC §12)."""

    __tablename__ = "recall"

    id: int | None = Field(default=None, primary_key=True)
    recall_number: str = Field(max_length=40, unique=True, index=True)
    lot_id: int = Field(foreign_key="lot.id", index=True)
    recall_class: RecallClass = enum_column(RecallClass)
    reason: str = Field(sa_type=sa.Text)
    status: RecallStatus = enum_column(RecallStatus, default=RecallStatus.OPEN)
    closed_at: datetime | None = utc_column(nullable=True)
    closed_by: str | None = Field(default=None, max_length=100)


class RecallConsignee(Recorded, table=True):
    """A consignee a recall must reach: what it was shipped of the recalled lots (when the recall opened), when it
    was notified, when it acknowledged, and how much it returned."""

    __tablename__ = "recall_consignee"

    id: int | None = Field(default=None, primary_key=True)
    recall_id: int = Field(foreign_key="recall.id", index=True)
    consignee_id: int = Field(foreign_key="consignee.id", index=True)
    shipped: int
    notified_on: date | None = None
    notified_by: str | None = Field(default=None, max_length=100)
    acknowledged_at: datetime | None = utc_column(nullable=True)
    acknowledged_by: str | None = Field(default=None, max_length=100)
    returned: int | None = None

    __table_args__ = (
        sa.UniqueConstraint("recall_id", "consignee_id"),
        sa.CheckConstraint("shipped >= 0", name="shipped_not_negative"),
        sa.CheckConstraint("returned IS NULL OR (returned >= 0 AND returned <= shipped)", name="returned_within"),
        sa.CheckConstraint("acknowledged_at IS NULL OR notified_on IS NOT NULL", name="ack_after_notice"),
    )


class RecallDrill(Recorded, table=True):
    """A mock recall kept for inspectors: what was asked, when, by whom, how long the answer took and its digest.
    Not a regulated record: a drill changes nothing, so it is kept outside the audit chain."""

    __tablename__ = "recall_drill"

    id: int | None = Field(default=None, primary_key=True)
    subject: DrillSubject = enum_column(DrillSubject)
    subject_key: str = Field(max_length=40)
    duration_ms: float
    answer_sha256: str = Field(max_length=64)
    units: int
    pools: int
    lots: int
    consignees: int
    audit_checkpoint: str = Field(max_length=100)
