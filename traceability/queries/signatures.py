"""Signed records: the canonical content a signature covers, the signatures of a record, and whether the record
changed after it was signed (21 CFR 11.70: a signature stays linked to the content it was given to)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, SQLModel, col

from ..audit import to_json
from ..errors import InvalidInput, NotFound
from ..models import (
    AuditEvent,
    CaseFinding,
    Deferral,
    Donation,
    Donor,
    LookbackCase,
    LotInput,
    PoolMember,
    PoolTest,
    Signature,
    Step,
)
from .lookup import get_lot, get_pool

SIGNED_KINDS = ("pool", "lot", "lookback_case", "deferral")
LOCK_AFTER_FAILURES = 3
LOCK_FOR = timedelta(minutes=15)


def _row(obj: SQLModel, *drop: str) -> dict[str, Any]:
    """A row's columns by name, without its surrogate keys; null columns are left out, so that a column added by
    a later migration does not change the content of rows signed before it."""
    table = obj.__table__  # type: ignore[attr-defined]
    skip = {"id", *drop}
    return {
        c.name: getattr(obj, c.name) for c in table.columns if c.name not in skip and getattr(obj, c.name) is not None
    }


def _rows(session: Session, model: type[SQLModel], *where: Any, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    found = session.execute(select(model).where(*where)).scalars().all()
    return sorted((_row(r, *drop) for r in found), key=lambda r: to_json(r) or "")


def record_content(session: Session, entity_type: str, entity_key: str) -> dict[str, Any]:
    """What a signature on this record covers: the row and the rows that decided it (a lot's inputs and steps, a
    pool's members and tests, a case's findings). Raises NotFound."""
    if entity_type == "lot":
        lot = get_lot(session, entity_key)
        return {
            "lot": _row(lot),
            "inputs": _rows(session, LotInput, col(LotInput.lot_id) == lot.id, drop=("lot_id",)),
            "steps": _rows(session, Step, col(Step.lot_id) == lot.id, drop=("lot_id",)),
        }
    if entity_type == "pool":
        pool = get_pool(session, entity_key)
        members = session.execute(
            select(col(Donation.unit_number))
            .join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
            .where(col(PoolMember.pool_id) == pool.id)
            .order_by(col(Donation.unit_number))
        ).scalars()
        return {
            "pool": _row(pool),
            "members": list(members),
            "tests": _rows(session, PoolTest, col(PoolTest.pool_id) == pool.id, drop=("pool_id",)),
            "steps": _rows(session, Step, col(Step.pool_id) == pool.id, drop=("pool_id",)),
        }
    if entity_type == "lookback_case":
        case = session.execute(
            select(LookbackCase).where(col(LookbackCase.case_number) == entity_key)
        ).scalar_one_or_none()
        if case is None:
            raise NotFound("Look-back case", entity_key)
        return {"case": _row(case), "findings": _rows(session, CaseFinding, col(CaseFinding.case_id) == case.id)}
    if entity_type == "deferral":
        donor_code, _, sequence = entity_key.rpartition("#")
        row = session.execute(
            select(Deferral)
            .join(Donor, col(Donor.id) == col(Deferral.donor_id))
            .where(col(Donor.donor_code) == donor_code, col(Deferral.sequence) == int(sequence or 0))
        ).scalar_one_or_none()
        if row is None:
            raise NotFound("Deferral", entity_key)
        return {"donor_code": donor_code, "deferral": _row(row, "donor_id")}
    raise InvalidInput(f"A {entity_type} cannot be signed; signed records are {', '.join(SIGNED_KINDS)}.")


def content_sha256(session: Session, entity_type: str, entity_key: str) -> str:
    """SHA-256 of the canonical JSON of what a signature on this record covers."""
    canonical = to_json(record_content(session, entity_type, entity_key)) or ""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SignatureLine:
    """One signature as every human-readable form shows it (21 CFR 11.50): printed name, meaning, time."""

    entity_type: str
    entity_key: str
    login: str
    full_name: str
    meaning: str
    signed_at: datetime
    content_sha256: str
    audit_seq: int
    changed_since_signing: bool

    @property
    def summary(self) -> str:
        flag = " — RECORD CHANGED SINCE SIGNING" if self.changed_since_signing else ""
        return f"{self.full_name} ({self.login}), {self.meaning}, {self.signed_at:%Y-%m-%d %H:%M:%S} UTC{flag}"

    def as_json(self) -> dict[str, Any]:
        return {
            "entity_type": self.entity_type,
            "entity_key": self.entity_key,
            "login": self.login,
            "full_name": self.full_name,
            "meaning": self.meaning,
            "signed_at": self.signed_at.isoformat(),
            "content_sha256": self.content_sha256,
            "audit_seq": self.audit_seq,
            "changed_since_signing": self.changed_since_signing,
        }


def signatures_for(session: Session, key: str | None = None, *, entity_type: str | None = None) -> list[SignatureLine]:
    """The signatures on a record (every signature when ``key`` is None), oldest first, each flagged when the
    record's content no longer hashes to what was signed."""
    query = (
        select(Signature, col(AuditEvent.seq))
        .join(AuditEvent, col(AuditEvent.id) == col(Signature.audit_event_id))
        .order_by(col(AuditEvent.seq))
    )
    if key is not None:
        query = query.where(col(Signature.entity_key) == key)
    if entity_type is not None:
        query = query.where(col(Signature.entity_type) == entity_type)
    current: dict[tuple[str, str], str] = {}
    lines = []
    for sig, seq in session.execute(query).all():
        where = (sig.entity_type, sig.entity_key)
        if where not in current:
            current[where] = content_sha256(session, *where)
        lines.append(
            SignatureLine(
                entity_type=sig.entity_type,
                entity_key=sig.entity_key,
                login=sig.login,
                full_name=sig.full_name,
                meaning=sig.meaning.value,
                signed_at=sig.signed_at,
                content_sha256=sig.content_sha256,
                audit_seq=seq,
                changed_since_signing=current[where] != sig.content_sha256,
            )
        )
    return lines


@dataclass(frozen=True)
class SigningState:
    failures_in_row: int
    locked_until: datetime | None


def signing_state(session: Session, login: str, *, now: datetime) -> SigningState:
    """Failed signature attempts in a row since the login's last signature; three lock signing for 15 minutes
    (21 CFR 11.300(d)), after which the count starts again."""
    last_signed = session.execute(
        select(col(AuditEvent.seq))
        .join(Signature, col(Signature.audit_event_id) == col(AuditEvent.id))
        .where(col(Signature.login) == login)
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    ).scalar()
    failures = session.execute(
        select(col(AuditEvent.occurred_at))
        .where(
            col(AuditEvent.action) == "signature.failed",
            col(AuditEvent.entity_type) == "user",
            col(AuditEvent.entity_key) == login,
            col(AuditEvent.seq) > (last_signed or 0),
        )
        .order_by(col(AuditEvent.seq))
    ).scalars()
    count, locked_until = 0, None
    for at in failures:
        if locked_until is not None and at < locked_until:
            continue
        count += 1
        if count == LOCK_AFTER_FAILURES:
            locked_until, count = at + LOCK_FOR, 0
    if locked_until is not None and now >= locked_until:
        locked_until = None
    return SigningState(count, locked_until)
