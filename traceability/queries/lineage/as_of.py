"""What the records said at a past time T (``trace ... --as-of T``, ``report ... --as-of T``; SPEC §13).

Built from what is kept, never from a copy: rows recorded at or before T (every regulated row carries its
``created_at``; result and pool-test corrections are new versions), and for what changes in place (statuses,
pool membership, a lifted deferral, a recorded quantity) the audit trail after T, undone from the newest change
back: every such event keeps the value it replaced in ``old_values``. So the state at T is today's state with the
changes recorded after T taken back, which also holds for rows loaded by an import (one event per file).

T is inclusive: an event at exactly T is known at T.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import FromClause, Integer, Select, func, literal, or_, select, union_all
from sqlmodel import Session, col

from ...errors import InvalidInput, NotYetRecorded
from ...models import AuditEvent, Donation, PoolMember, UnitStatus, utcnow

_REMOVED = "pool.units_removed"
_ADDED = "pool.units_added"


def parse_as_of(text: str) -> datetime:
    """ISO 8601 with an offset (UTC when none is given); a date alone is the end of that day in UTC, so that
    ``--as-of 2026-05-04`` shows everything recorded on 4 May (UTC)."""
    value = text.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day, time.max, tzinfo=UTC)
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidInput(
            f"--as-of {text[:60]!r} is not an ISO 8601 time or date, e.g. 2026-03-01T09:30:00Z or 2026-03-01."
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def checked_as_of(session: Session, at: datetime, *, now: datetime | None = None) -> datetime:
    """Refuse a time in the future (nothing is known about it yet) and a time before the first audit event (the
    database held nothing then): both exit 5 with what the valid range is."""
    now = now or utcnow()
    if at > now:
        raise InvalidInput(
            f"--as-of {at.isoformat()} is in the future (now is {now.isoformat(timespec='seconds')}); "
            "leave out --as-of for the records as they are now."
        )
    first = session.execute(select(func.min(col(AuditEvent.occurred_at)))).scalar()
    if first is None or at < first:
        since = f"the first audit event, at {first.isoformat()}" if first else "any audit event (there is none yet)"
        raise InvalidInput(f"--as-of {at.isoformat()} is before {since}: nothing was recorded then.")
    return at


def _values(text: str | None) -> dict[str, Any]:
    return dict(json.loads(text)) if text else {}


def statuses_at(
    session: Session, entity_type: str, keys: Collection[str], at: datetime
) -> dict[str, tuple[str, str | None]]:
    """For each key whose status changed after ``at``: its status and status reason at ``at`` (the value the first
    change after ``at`` replaced). Keys absent from the answer have today's status."""
    if not keys:
        return {}
    rows = session.execute(
        select(col(AuditEvent.entity_key), col(AuditEvent.old_values))
        .where(
            col(AuditEvent.entity_type) == entity_type,
            col(AuditEvent.entity_key).in_(list(keys)),
            col(AuditEvent.occurred_at) > at,
        )
        .order_by(col(AuditEvent.seq))
    )
    found: dict[str, tuple[str, str | None]] = {}
    for key, old in rows:
        values = _values(old)
        if key not in found and "status" in values:
            found[key] = (str(values["status"]), values.get("status_reason"))
    return found


def unit_statuses_at(session: Session, units: dict[str, str], pools: Collection[str], at: datetime) -> dict[str, str]:
    """The status at ``at`` of each unit (unit number -> status now) whose status changed after ``at``: by its own
    events, or by being added to or taken out of one of ``pools`` (the pool's event lists the units)."""
    changes: list[tuple[int, str, str]] = []  # (seq, unit, status before the change)
    own = session.execute(
        select(col(AuditEvent.seq), col(AuditEvent.entity_key), col(AuditEvent.old_values)).where(
            col(AuditEvent.entity_type) == "donation",
            col(AuditEvent.entity_key).in_(list(units)),
            col(AuditEvent.occurred_at) > at,
        )
    )
    for seq, unit, old in own:
        values = _values(old)
        if "status" in values:
            changes.append((seq, unit, str(values["status"])))
    if pools:
        pooled = session.execute(
            select(
                col(AuditEvent.seq), col(AuditEvent.action), col(AuditEvent.old_values), col(AuditEvent.new_values)
            ).where(
                col(AuditEvent.entity_type) == "pool",
                col(AuditEvent.entity_key).in_(list(pools)),
                col(AuditEvent.action).in_([_ADDED, _REMOVED]),
                col(AuditEvent.occurred_at) > at,
            )
        )
        for seq, action, old, new in pooled:
            listed = _values(new if action == _ADDED else old).get("units", [])
            before = UnitStatus.IN_INVENTORY.value if action == _ADDED else UnitStatus.POOLED.value
            changes.extend((seq, unit, before) for unit in listed if unit in units)
    answer: dict[str, str] = {}
    for _, unit, before in sorted(changes):
        answer.setdefault(unit, before)
    return answer


def members_at(session: Session, pools: dict[int, str], at: datetime) -> FromClause:
    """The members of the given pools (id -> number) at ``at``, as rows of (pool_id, donation_id): the member rows
    recorded by then, and the units taken out of an open pool after ``at`` (their rows are gone; the pool's add
    and remove events say they were in it at ``at``)."""
    recorded: Select[Any, Any] = select(
        col(PoolMember.pool_id).label("pool_id"), col(PoolMember.donation_id).label("donation_id")
    ).where(col(PoolMember.pool_id).in_(list(pools)), col(PoolMember.created_at) <= at)
    removed_later: dict[str, set[str]] = defaultdict(set)
    events = session.execute(
        select(col(AuditEvent.entity_key), col(AuditEvent.old_values)).where(
            col(AuditEvent.entity_type) == "pool",
            col(AuditEvent.entity_key).in_(list(pools.values())),
            col(AuditEvent.action) == _REMOVED,
            col(AuditEvent.occurred_at) > at,
        )
    )
    for pool_number, old in events:
        removed_later[pool_number].update(_values(old).get("units", []))
    if not removed_later:
        return recorded.subquery("members_at")
    id_of = {number: pool for pool, number in pools.items()}
    extra: list[Select[Any, Any]] = [
        select(literal(id_of[number], Integer).label("pool_id"), col(Donation.id).label("donation_id")).where(
            col(Donation.unit_number).in_(sorted(_inside_at(session, number, units, at)))
        )
        for number, units in removed_later.items()
    ]
    return union_all(recorded, *extra).subquery("members_at")


def pools_left_after(session: Session, units: Collection[str], at: datetime) -> dict[str, str]:
    """Of ``units``, those taken out of an open pool after ``at`` that were in it at ``at``: unit -> pool number.
    (Their member rows are gone; the pool's ``pool.units_removed`` event lists them.)"""
    if not units:
        return {}
    rows = session.execute(
        select(col(AuditEvent.entity_key), col(AuditEvent.old_values))
        .where(
            col(AuditEvent.entity_type) == "pool",
            col(AuditEvent.action) == _REMOVED,
            col(AuditEvent.occurred_at) > at,
            or_(*(col(AuditEvent.old_values).contains(f'"{unit}"') for unit in units)),
        )
        .order_by(col(AuditEvent.seq))
    )
    found: dict[str, str] = {}
    for pool_number, old in rows:
        for unit in sorted(set(_values(old).get("units", [])) & set(units) - set(found)):
            if _inside_at(session, pool_number, {unit}, at):
                found[unit] = pool_number
    return found


def _inside_at(session: Session, pool_number: str, units: set[str], at: datetime) -> set[str]:
    """Of ``units``, those the pool's add and remove events up to ``at`` leave inside it."""
    inside: set[str] = set()
    events = session.execute(
        select(col(AuditEvent.action), col(AuditEvent.old_values), col(AuditEvent.new_values))
        .where(
            col(AuditEvent.entity_type) == "pool",
            col(AuditEvent.entity_key) == pool_number,
            col(AuditEvent.action).in_([_ADDED, _REMOVED]),
            col(AuditEvent.occurred_at) <= at,
        )
        .order_by(col(AuditEvent.seq))
    )
    for action, old, new in events:
        if action == _ADDED:
            inside |= units & set(_values(new).get("units", []))
        else:
            inside -= set(_values(old).get("units", []))
    return inside


def lifted_after(session: Session, donor_code: str, at: datetime) -> set[int]:
    """The sequences of the donor's deferrals lifted after ``at`` (so not yet lifted at ``at``)."""
    rows = session.execute(
        select(col(AuditEvent.new_values)).where(
            col(AuditEvent.entity_type) == "donor",
            col(AuditEvent.entity_key) == donor_code,
            col(AuditEvent.action) == "donor.deferral_lifted",
            col(AuditEvent.occurred_at) > at,
        )
    )
    return {int(_values(new)["deferral"]) for (new,) in rows if "deferral" in _values(new)}


def values_before(session: Session, entity_type: str, key: str, action: str, at: datetime) -> dict[str, Any]:
    """The fields an event of ``action`` changed after ``at``, with the values they had at ``at``."""
    rows = session.execute(
        select(col(AuditEvent.old_values))
        .where(
            col(AuditEvent.entity_type) == entity_type,
            col(AuditEvent.entity_key) == key,
            col(AuditEvent.action) == action,
            col(AuditEvent.occurred_at) > at,
        )
        .order_by(col(AuditEvent.seq).desc())
    )
    before: dict[str, Any] = {}
    for (old,) in rows:  # newest first, so the first change after ``at`` is applied last and wins
        before.update(_values(old))
    return before


def as_of_text(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def corrections_after(session: Session, units: Collection[str], at: datetime) -> dict[str, int]:
    """How many times each unit's record was corrected after ``at`` (its version at ``at`` is that many lower)."""
    if not units:
        return {}
    rows = session.execute(
        select(col(AuditEvent.entity_key), func.count())
        .where(
            col(AuditEvent.entity_type) == "donation",
            col(AuditEvent.entity_key).in_(list(units)),
            col(AuditEvent.action) == "donation.corrected",
            col(AuditEvent.occurred_at) > at,
        )
        .group_by(col(AuditEvent.entity_key))
    )
    return {unit: int(n) for unit, n in rows}


def recorded_at_or_refuse(created_at: datetime, at: datetime, kind: str, key: str) -> None:
    """Refuse (exit 4) a trace as of a time before its record was made."""
    if created_at > at:
        raise NotYetRecorded(kind, key, created_at, at)


def done_by(session: Session, entity_type: str, key: str, actions: Collection[str], at: datetime) -> set[str]:
    """Which of ``actions`` the audit trail records for the entity at or before ``at`` (a pool's ``closed_at`` is
    the time of the closing as entered, which may be earlier than its recording, so the event is what tells)."""
    rows = session.execute(
        select(col(AuditEvent.action)).where(
            col(AuditEvent.entity_type) == entity_type,
            col(AuditEvent.entity_key) == key,
            col(AuditEvent.action).in_(list(actions)),
            col(AuditEvent.occurred_at) <= at,
        )
    )
    return {action for (action,) in rows}
