"""Look-back cases and their findings."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from .columns import (
    Recorded,
    enum_column,
    utc_column,
)
from .enums import (
    CaseStatus,
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
