"""The append-only, hash-chained audit trail.

Every write records an event in the same transaction as the change: who, what (action, entity type and business
key), when, old and new values and the reason. Each event carries the hash of the one before it; ``seq`` is
contiguous, so a removed event leaves a gap and an inserted or edited one breaks the chain. The database refuses
UPDATE and DELETE on ``audit_event`` (triggers installed by the migrations).

The package: the chain (here); ``catalogue``, the audit events; and the record proof, which shows every row of
every regulated table is what the trail says was written: ``canonical`` (a row's canonical form, its hash, digests),
``selects`` and ``tables`` (one SELECT and one declaration per regulated table), ``recording`` (which rows a write
touched, kept in its event; import digests; the baseline) and ``proof`` (``verify_records``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import event, exists, func, select
from sqlmodel import Session, SQLModel, col

from ..db import database_login, lock_audit_chain
from ..errors import InvalidInput
from ..models import IMPORT_EVENT_POINTERS, AuditEvent, utcnow
from . import catalogue, recording
from .canonical import RECORDS_KEY
from .proof import RecordProof, verify_records

GENESIS_HASH = "0" * 64
_HEAD_KEY = "plasmatrace.audit_head"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def to_json(values: dict[str, Any] | None) -> str | None:
    if values is None:
        return None
    return json.dumps(_plain(values), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _new_values(new: dict[str, Any] | None, written: dict[str, Any] | None) -> str | None:
    """The new values as canonical JSON, with the rows the event wrote under ``records`` (already plain: they go
    to the encoder as they are, which matters for an event that writes 20,000 rows)."""
    if written is None:
        return to_json(new)
    values = {str(k): _plain(v) for k, v in (new or {}).items()} | {RECORDS_KEY: written}
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(fields: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of every field of an event except its own hash and surrogate id."""
    body = {k: _plain(v) for k, v in fields.items() if k not in ("hash", "id")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _hashed_fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at,
        "actor": event.actor,
        "action": event.action,
        "entity_type": event.entity_type,
        "entity_key": event.entity_key,
        "old_values": event.old_values,
        "new_values": event.new_values,
        "reason": event.reason,
        "prev_hash": event.prev_hash,
    }


@event.listens_for(Session, "after_transaction_end")
def _forget_head(session: Session, _transaction: Any) -> None:
    """Any transaction or savepoint that ends may have rolled back the cached head: read it afresh next time."""
    session.info.pop(_HEAD_KEY, None)


def _head(session: Session) -> tuple[int, str, bool]:
    """The chain's head (seq, hash) and whether the trail has a baseline event (in the same statement)."""
    transaction = session.get_transaction()
    cached = session.info.get(_HEAD_KEY)
    if cached is not None and cached[0] is transaction:
        return cached[1], cached[2], cached[3]
    lock_audit_chain(session)
    baseline = exists().where(col(AuditEvent.action) == recording.BASELINE_ACTION)
    row = session.execute(
        select(col(AuditEvent.seq), col(AuditEvent.hash), baseline.label("baseline"))
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    ).first()
    return (row[0], row[1], bool(row[2])) if row else (0, GENESIS_HASH, False)


def record(
    session: Session,
    *,
    action: str,
    entity_type: str,
    entity_key: str,
    actor: str,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction. On PostgreSQL the actor is the login
    (``session_user``), whatever ``actor`` says: a trigger refuses any other, and the hash covers the login.

    The action must be in the catalogue (``audit.catalogue``) with this entity type. The complete state of every
    row of a regulated table written since the last event is added to ``new`` under ``records``."""
    catalogue.check(action, entity_type, old, new)
    session.flush()
    seq, prev_hash, baseline = _head(session)
    written = recording.capture(session, baseline=baseline)
    actor = database_login(session) or actor
    event = AuditEvent(
        seq=seq + 1,
        occurred_at=utcnow(),
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_key=entity_key,
        old_values=to_json(old),
        new_values=_new_values(new, written),
        reason=reason,
        prev_hash=prev_hash,
        hash="",
    )
    event.hash = event_hash(_hashed_fields(event))
    session.add(event)
    session.flush()
    session.info[_HEAD_KEY] = (
        session.get_transaction(),
        event.seq,
        event.hash,
        baseline or action == recording.BASELINE_ACTION,
    )
    return event


def require_reason(reason: str | None, what: str) -> str:
    if reason is None or not reason.strip():
        raise InvalidInput(f"{what} needs a reason (--reason).")
    return reason.strip()


# --- verification ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    ok: bool
    events: int
    head_seq: int
    head_hash: str
    problem: str | None = None
    records: RecordProof | None = None

    @property
    def checkpoint(self) -> str:
        return f"{self.head_seq}:{self.head_hash}"


def _events(session: Session, batch: int = 5_000, after: int | None = None) -> Iterator[AuditEvent]:
    last = after
    while True:
        query = select(AuditEvent).order_by(col(AuditEvent.seq)).limit(batch)
        if last is not None:
            query = query.where(col(AuditEvent.seq) > last)
        rows = session.execute(query).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def parse_checkpoint(token: str) -> tuple[int, str]:
    seq, _, digest = token.strip().partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidInput(f"Checkpoint {token!r} is not of the form SEQ:SHA256 (as printed by `audit checkpoint`).")
    return int(seq), digest


def verify(
    session: Session, *, checkpoint: str | None = None, since: str | None = None, prove_records: bool = True
) -> Verification:
    """Recompute the chain and name the first event that was changed, removed, inserted or reordered; then prove
    the records (``proof.verify_records``). With ``since`` (a checkpoint token), only the events after it and
    the rows they (and the imports after it) wrote."""
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    wanted = parse_checkpoint(checkpoint) if checkpoint else None
    seen_checkpoint = False
    start = None
    if since:
        start_seq, start_hash = parse_checkpoint(since)
        found = session.execute(select(col(AuditEvent.hash)).where(col(AuditEvent.seq) == start_seq)).scalar()
        if found != start_hash:
            return Verification(
                False,
                0,
                start_seq,
                start_hash,
                f"event {start_seq} does not match the checkpoint given to --since: the chain was rewritten"
                if found
                else f"the checkpoint given to --since names event {start_seq}, which is not in the trail",
            )
        start, expected_seq, prev_hash = start_seq, start_seq + 1, start_hash
        if wanted and wanted[0] <= start_seq:
            wanted = None
    for entry in _events(session, after=start):
        at = f"{entry.occurred_at:%Y-%m-%d %H:%M:%S} UTC"
        where = f"event {entry.seq} ({entry.action} {entry.entity_type} {entry.entity_key}, {at})"
        if entry.seq != expected_seq:
            problem = (
                f"event {expected_seq} is missing (the chain jumps to {where}): an event was removed"
                if entry.seq > expected_seq
                else f"{where} is out of sequence: an event was inserted or reordered"
            )
            return Verification(False, count, expected_seq - 1, prev_hash, problem)
        if entry.prev_hash != prev_hash:
            return Verification(
                False,
                count,
                entry.seq - 1,
                prev_hash,
                f"{where} does not follow the event before it: an event was inserted, removed or reordered here",
            )
        if event_hash(_hashed_fields(entry)) != entry.hash:
            return Verification(False, count, entry.seq - 1, prev_hash, f"{where} was changed after it was recorded")
        if wanted and entry.seq == wanted[0]:
            seen_checkpoint = True
            if entry.hash != wanted[1]:
                return Verification(
                    False,
                    count,
                    entry.seq,
                    entry.hash,
                    f"{where} does not match the checkpoint: the chain was rewritten from here or earlier",
                )
        prev_hash, expected_seq, count = entry.hash, expected_seq + 1, count + 1
    if wanted and not seen_checkpoint:
        return Verification(
            False,
            count,
            expected_seq - 1,
            prev_hash,
            f"the chain ends at event {expected_seq - 1} but the checkpoint names event {wanted[0]}: "
            "events after it were removed",
        )
    pointer_problem = _import_pointer_problem(session)
    if pointer_problem is not None:
        return Verification(False, count, expected_seq - 1, prev_hash, pointer_problem)
    if prove_records:
        proof = verify_records(session, since_seq=start or 0)
        if not proof.ok:
            shown = len(proof.differences) + proof.more
            return Verification(
                False,
                count,
                expected_seq - 1,
                prev_hash,
                f"{shown:,} record(s) differ from what the audit trail says was written",
                proof,
            )
        return Verification(True, count, expected_seq - 1, prev_hash, None, proof)
    return Verification(True, count, expected_seq - 1, prev_hash)


def _import_pointer_problem(session: Session) -> str | None:
    """The first imported row whose import_event_id does not name an import event of its kind (one query per
    table; see models.IMPORT_EVENT_POINTERS for why the database does not check this itself)."""
    events = SQLModel.metadata.tables[AuditEvent.__tablename__]
    for name, action in IMPORT_EVENT_POINTERS.items():
        table = SQLModel.metadata.tables[name]
        pointer = table.c.import_event_id
        named = exists().where(events.c.id == pointer, events.c.action == action)
        found = session.execute(
            select(pointer, func.count()).where(pointer.is_not(None), ~named).group_by(pointer).limit(1)
        ).first()
        if found is not None:
            rows = f"{found[1]:,} {name} row names" if found[1] == 1 else f"{found[1]:,} {name} rows name"
            return (
                f"{rows} audit event id {found[0]} as its import, which is not an {action} event: "
                "the link from imported rows to their import was changed"
            )
    return None


def head_checkpoint(session: Session) -> str:
    row = session.execute(
        select(col(AuditEvent.seq), col(AuditEvent.hash)).order_by(col(AuditEvent.seq).desc()).limit(1)
    ).first()
    seq, digest = (row[0], row[1]) if row else (0, GENESIS_HASH)
    return f"{seq}:{digest}"
