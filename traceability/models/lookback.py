"""Look-back cases and their findings."""

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
    CaseStatus,
    CaseTrigger,
    Decision,
    TaskKind,
    TaskState,
)


class LookbackCase(Recorded, table=True):
    """An investigation opened from post-donation information about a donor."""

    __tablename__ = "lookback_case"

    id: int | None = Field(default=None, primary_key=True)
    case_number: str = Field(max_length=40, unique=True, index=True)
    donor_id: int = Field(foreign_key="donor.id", index=True)
    reason: str = Field(sa_type=sa.Text)
    status: CaseStatus = enum_column(CaseStatus, default=CaseStatus.OPEN)
    window_start: datetime | None = utc_column(nullable=True)
    closed_at: datetime | None = utc_column(nullable=True)
    closure: str | None = Field(default=None, sa_type=sa.Text)
    trigger: CaseTrigger = enum_column(CaseTrigger, default=CaseTrigger.OTHER)
    received_on: date | None = None
    """The local day the reactive test was done or the information came in: the tasks' due dates count from it."""
    timezone: str = Field(default="UTC", max_length=64, sa_column_kwargs={"server_default": "UTC"})
    closed_by: str | None = Field(default=None, max_length=100)

    __table_args__ = (
        # One open case per donor, kept by the database: two concurrent `lookback open` cannot both succeed.
        sa.Index(
            "uq_lookback_case_open_donor",
            "donor_id",
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
    )


class CaseFinding(Recorded, table=True):
    """A unit implicated by a look-back case, with what was done about it."""

    __tablename__ = "case_finding"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="lookback_case.id", index=True)
    donation_id: int = Field(foreign_key="donation.id", index=True)
    pool_id: int | None = Field(default=None, foreign_key="pool.id")
    action: str = Field(max_length=40)

    __table_args__ = (sa.UniqueConstraint("case_id", "donation_id"),)


class CaseTask(Recorded, table=True):
    """One duty of a look-back case, with its due date (calendar days, the case's local day) and how it ended."""

    __tablename__ = "case_task"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="lookback_case.id", index=True)
    seq: int  # the task's number within its case
    kind: TaskKind = enum_column(TaskKind)
    lot_id: int | None = Field(default=None, foreign_key="lot.id", index=True)
    consignee_id: int | None = Field(default=None, foreign_key="consignee.id")
    due_on: date | None = None
    state: TaskState = enum_column(TaskState, default=TaskState.OPEN)
    decision: Decision | None = enum_column(Decision, nullable=True)
    note: str | None = Field(default=None, sa_type=sa.Text)
    done_at: datetime | None = utc_column(nullable=True)
    done_by: str | None = Field(default=None, max_length=100)

    __table_args__ = (sa.UniqueConstraint("case_id", "seq"),)


class LotHold(Recorded, table=True):
    """A hold on a lot: no release, no shipment while it stands. Placed by a look-back case on every lot downstream
    of its pooled units (``case_id``) or by an approver by hand; lifted by a no-action assessment or an approver."""

    __tablename__ = "lot_hold"

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(foreign_key="lot.id", index=True)
    case_id: int | None = Field(default=None, foreign_key="lookback_case.id", index=True)
    reason: str = Field(sa_type=sa.Text)
    lifted_at: datetime | None = utc_column(nullable=True)
    lifted_by: str | None = Field(default=None, max_length=100)
    lift_reason: str | None = Field(default=None, sa_type=sa.Text)
