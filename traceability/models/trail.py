"""Who did what: the audit trail, the users, their signatures and corrections under a deviation."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from .columns import (
    Recorded,
    enum_column,
    utc_column,
    utcnow,
)
from .enums import (
    SignatureMeaning,
)


class AuditEvent(SQLModel, table=True):
    """One entry of the append-only, hash-chained audit trail."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(unique=True)
    occurred_at: datetime = utc_column(default_factory=utcnow)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=60, index=True)
    entity_type: str = Field(max_length=40)
    entity_key: str = Field(max_length=200)
    old_values: str | None = Field(default=None, sa_type=sa.Text)
    new_values: str | None = Field(default=None, sa_type=sa.Text)
    reason: str | None = Field(default=None, sa_type=sa.Text)
    prev_hash: str = Field(max_length=64, unique=True)
    hash: str = Field(max_length=64, unique=True)

    __table_args__ = (sa.Index("ix_audit_event_entity", "entity_type", "entity_key"),)


class AppUser(Recorded, table=True):
    """A person who may use plasmatrace: login, printed name and roles (on PostgreSQL the login is a database role)."""

    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(max_length=100, unique=True, index=True)
    full_name: str = Field(max_length=200)
    roles: str = Field(max_length=200)  # space-separated role names, as granted
    password_hash: str | None = Field(default=None, max_length=200)  # SQLite only: Argon2id signing password
    disabled_at: datetime | None = utc_column(nullable=True)
    disabled_by: str | None = Field(default=None, max_length=100)


class Signature(Recorded, table=True):
    """An electronic signature: who signed which record, meaning what, when, over which content."""

    __tablename__ = "signature"

    id: int | None = Field(default=None, primary_key=True)
    audit_event_id: int = Field(foreign_key="audit_event.id", unique=True)
    entity_type: str = Field(max_length=40)
    entity_key: str = Field(max_length=200)
    login: str = Field(max_length=100, index=True)
    full_name: str = Field(max_length=200)
    meaning: SignatureMeaning = enum_column(SignatureMeaning)
    signed_at: datetime = utc_column()
    content_sha256: str = Field(max_length=64)

    __table_args__ = (sa.Index("ix_signature_entity", "entity_type", "entity_key"),)


class CorrectionDeviation(Recorded, table=True):
    """A correction to a unit in a closed or released pool, under a named deviation (shown on the pool and lots)."""

    __tablename__ = "correction_deviation"

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=40, index=True)
    pool_id: int = Field(foreign_key="pool.id", index=True)
    donation_id: int = Field(foreign_key="donation.id", index=True)
    donation_version: int
    changes: str = Field(sa_type=sa.Text)
    reason: str = Field(sa_type=sa.Text)

    __table_args__ = (sa.UniqueConstraint("donation_id", "donation_version"),)


IMPORT_EVENT_POINTERS: dict[str, str] = {
    "donor": "import.donors",
    "donation": "import.donations",
    "test_result": "import.results",
    "pool_member": "import.pool-members",
    "consignee": "import.consignees",
}
"""Tables whose imported rows name their import's audit event (``import_event_id``), and that event's action.

The pointer has no foreign-key constraint, on purpose: the database would check it row by row on every insert
(on PostgreSQL a locking lookup per row, half the cost of loading a results file again), while the events it
points at can neither change nor go (audit_event is append-only, enforced by triggers) and the import writes the
event in the same transaction as its rows. ``audit verify`` checks, set-based, that every pointer names an
import event of the right kind.
"""
