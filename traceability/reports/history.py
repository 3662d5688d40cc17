"""The audit history of a report (SPEC §13): every audit event on the lineage, its old and new values laid out
field by field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ..models import AuditEvent, Donation, Lot, Pool, PoolMember, TestResult
from .contents import Lineage, chunks, member_ids

LIST_SHOWN = 12


@dataclass
class HistoryEntry:
    """One audit event, its old and new values laid out as (field, old, new)."""

    seq: int
    at: str
    actor: str
    action: str
    entity: str
    key: str
    reason: str
    fields: list[tuple[str, Any, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "entity": self.entity,
            "key": self.key,
            "reason": self.reason,
            "fields": [{"field": f, "old": o, "new": n} for f, o, n in self.fields],
        }


def _fields(old: str | None, new: str | None) -> list[tuple[str, Any, Any]]:
    before = json.loads(old) if old else {}
    after = json.loads(new) if new else {}
    if not isinstance(before, dict):
        before = {"value": before}
    if not isinstance(after, dict):
        after = {"value": after}
    after.pop("records", None)  # the full state of the rows the event wrote: proven by audit verify, not shown
    return [(name, before.get(name), after.get(name)) for name in sorted(set(before) | set(after))]


def shown(value: Any) -> str:
    """A field value as printed: long lists are counted and cut (the full list is in the JSON report)."""
    if value is None:
        return ""
    if isinstance(value, list) and len(value) > LIST_SHOWN:
        head = ", ".join(str(v) for v in value[:LIST_SHOWN])
        return f"{len(value):,} values: {head}, … (all in the JSON report and the donation list)"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def history(session: Session, lineage: Lineage, *, extra: dict[str, set[str]] | None = None) -> list[HistoryEntry]:
    """Every audit event on the lineage: its pools and lots (steps, tests, releases, shipments), its donations
    (corrections, rejections, interdictions, results), the imports its donations and results came from, and the
    look-back cases that touch it. Oldest first."""
    keys: dict[str, set[str]] = {
        "pool": set(session.execute(select(col(Pool.pool_number)).where(col(Pool.id).in_(lineage.pool_ids))).scalars()),
        "lot": set(session.execute(select(col(Lot.lot_number)).where(col(Lot.id).in_(lineage.lot_ids))).scalars()),
        "lookback_case": set(lineage.case_numbers),
    }
    for entity, more in (extra or {}).items():
        keys.setdefault(entity, set()).update(more)
    ids = member_ids(session, lineage)
    units: set[str] = set()
    import_ids: set[int] = set()
    for chunk in chunks(ids):
        for unit, donation_import in session.execute(
            select(col(Donation.unit_number), col(Donation.import_event_id)).where(col(Donation.id).in_(chunk))
        ):
            units.add(unit)
            if donation_import is not None:
                import_ids.add(donation_import)
        for column, model_id in (
            (col(PoolMember.import_event_id), col(PoolMember.donation_id)),
            (col(TestResult.import_event_id), col(TestResult.donation_id)),
        ):
            import_ids.update(
                i for i in session.execute(select(column).where(model_id.in_(chunk)).distinct()).scalars() if i
            )
    keys.setdefault("donation", set()).update(units)
    events: dict[int, AuditEvent] = {}
    for entity, entity_keys in keys.items():
        for chunk in chunks(entity_keys):
            for event in session.execute(
                select(AuditEvent).where(col(AuditEvent.entity_type) == entity, col(AuditEvent.entity_key).in_(chunk))
            ).scalars():
                events[event.seq] = event
    if import_ids:
        started = list(session.execute(select(AuditEvent).where(col(AuditEvent.id).in_(import_ids))).scalars())
        for event in started:
            events[event.seq] = event
        files = {e.entity_key for e in started}
        for event in session.execute(
            select(AuditEvent).where(
                col(AuditEvent.entity_type) == "import",
                col(AuditEvent.entity_key).in_(files),
                col(AuditEvent.action).like("%.completed"),
            )
        ).scalars():
            if any(event.seq > s.seq for s in started if s.entity_key == event.entity_key):
                events[event.seq] = event
    return [
        HistoryEntry(
            e.seq,
            e.occurred_at.isoformat(),
            e.actor,
            e.action,
            e.entity_type,
            e.entity_key,
            e.reason or "",
            _fields(e.old_values, e.new_values),
        )
        for _, e in sorted(events.items())
    ]
