"""Establishments, donors, their deferrals, donations and test results."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field

from ..identifiers import UnitScheme
from .columns import (
    Recorded,
    enum_column,
    utc_column,
)
from .enums import (
    DeferralSource,
    EstablishmentKind,
    Marker,
    PlasmaKind,
    ResultValue,
    TestMethod,
    UnitStatus,
)


class Establishment(Recorded, table=True):
    """A collection centre, testing laboratory or fractionation site."""

    __tablename__ = "establishment"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200)
    kind: EstablishmentKind = enum_column(EstablishmentKind)
    timezone: str = Field(default="UTC", max_length=64, sa_column_kwargs={"server_default": "UTC"})
    """IANA time zone: the rules count this establishment's local days (deferrals, look-back and qualification)."""


class Donor(Recorded, table=True):
    """A donor, known only by a pseudonymous code."""

    __tablename__ = "donor"

    id: int | None = Field(default=None, primary_key=True)
    donor_code: str = Field(max_length=40, unique=True, index=True)
    establishment_id: int = Field(foreign_key="establishment.id", index=True)
    registered_on: date | None = None
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS


class Deferral(Recorded, table=True):
    """A period in which a donor may not donate; no end date means permanent."""

    __tablename__ = "deferral"

    id: int | None = Field(default=None, primary_key=True)
    donor_id: int = Field(foreign_key="donor.id", index=True)
    sequence: int
    reason: str = Field(sa_type=sa.Text)
    source: DeferralSource = enum_column(DeferralSource, default=DeferralSource.MANUAL)
    starts_on: date
    ends_on: date | None = None  # first day the donor may donate again; None = permanent
    lifted_on: date | None = None
    lift_reason: str | None = Field(default=None, sa_type=sa.Text)
    marker: Marker | None = enum_column(Marker, nullable=True)  # the marker whose nonreactive retest ends it

    __table_args__ = (
        sa.UniqueConstraint("donor_id", "sequence"),
        sa.CheckConstraint("ends_on IS NULL OR ends_on > starts_on", name="ends_after_start"),
    )


class Donation(Recorded, table=True):
    """One plasma collection in one container, by unit number (the canonical DIN for ISBT 128)."""

    __tablename__ = "donation"

    id: int | None = Field(default=None, primary_key=True)
    unit_number: str = Field(max_length=40, unique=True, index=True)
    scheme: UnitScheme = enum_column(UnitScheme, default=UnitScheme.ISBT128)
    flag: str | None = Field(default=None, max_length=2)
    donor_id: int = Field(foreign_key="donor.id", index=True)
    establishment_id: int | None = Field(default=None, foreign_key="establishment.id")
    collected_at: datetime = utc_column(index=True)
    frozen_at: datetime | None = utc_column(nullable=True)
    volume_ml: int
    plasma_kind: PlasmaKind = enum_column(PlasmaKind, default=PlasmaKind.SOURCE)
    status: UnitStatus = enum_column(UnitStatus, default=UnitStatus.IN_INVENTORY, index=True)
    status_reason: str | None = Field(default=None, sa_type=sa.Text)
    version: int = 1
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS

    __table_args__ = (
        sa.CheckConstraint("volume_ml >= 0", name="volume_not_negative"),
        sa.CheckConstraint("frozen_at IS NULL OR frozen_at >= collected_at", name="frozen_after_collection"),
    )


class TestResult(Recorded, table=True):
    """A screening result for one marker on one unit; a repeat or correction is a new version."""

    __tablename__ = "test_result"
    __test__ = False  # not a pytest test class

    id: int | None = Field(default=None, primary_key=True)
    donation_id: int = Field(foreign_key="donation.id")
    marker: Marker = enum_column(Marker)
    version: int = 1
    result: ResultValue = enum_column(ResultValue)
    value: float | None = None
    value_unit: str | None = Field(default=None, max_length=20)
    method: TestMethod | None = enum_column(TestMethod, nullable=True)
    lab_id: int | None = Field(default=None, foreign_key="establishment.id")
    tested_at: datetime = utc_column()
    reason: str | None = Field(default=None, sa_type=sa.Text)
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS

    __table_args__ = (sa.UniqueConstraint("donation_id", "marker", "version"),)
