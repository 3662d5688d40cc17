"""What a report holds besides its trace (SPEC §13): the lineage picture, flags on the lineage, the audit history.

A flag section is a function ``(session, lineage) -> Section`` listed in ``FLAG_SECTIONS``: each returns the
records it flags (holds and quarantines, open look-back cases, donors who turned reactive, deviations). Signatures
and formal holds are one more function each, appended to that list.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session

from ..models import (
    AuditEvent,
    CaseFinding,
    CaseStatus,
    Donation,
    Donor,
    LookbackCase,
    Lot,
    LotInput,
    Pool,
    PoolMember,
    PoolTest,
    ResultValue,
    Step,
    StepOutcome,
    TestResult,
    quantity_text,
)
from ..queries.graph import downstream_lots, upstream
from ..queries.lookup import get_lot, get_pool
from .lineage_graph import ALERT_STATUSES, Edge, LineageGraph, Node
from .sections import Section

CHUNK = 5_000


@dataclass
class Lineage:
    """The pools and lots a report covers, and the input edges between them (lot id, kind, input id, quantity)."""

    pool_ids: set[int]
    lot_ids: set[int]
    edges: list[tuple[int, str, int, int | None, str | None]] = field(default_factory=list)
    case_numbers: set[str] = field(default_factory=set)


def _edges(
    session: Session, lot_ids: set[int], pool_ids: set[int]
) -> list[tuple[int, str, int, int | None, str | None]]:
    if not lot_ids:
        return []
    rows = session.execute(
        select(
            LotInput.lot_id, LotInput.input_pool_id, LotInput.input_lot_id, LotInput.quantity, LotInput.quantity_unit
        ).where(LotInput.lot_id.in_(lot_ids))
    )
    edges = []
    for lot_id, pool_id, input_lot, quantity, unit in rows:
        if pool_id is not None and pool_id in pool_ids:
            edges.append((lot_id, "pool", pool_id, quantity, unit))
        elif input_lot is not None and input_lot in lot_ids:
            edges.append((lot_id, "lot", input_lot, quantity, unit))
    return sorted(edges, key=lambda e: (e[0], e[1], e[2]))


def lineage_of_lot(session: Session, lot_number: str) -> Lineage:
    graph = upstream(session, get_lot(session, lot_number).id or 0)
    return Lineage(graph.pool_ids, graph.lot_ids, _edges(session, graph.lot_ids, graph.pool_ids))


def lineage_downstream(session: Session, pool_ids: set[int]) -> Lineage:
    lot_ids: set[int] = set()
    for lots in downstream_lots(session, sorted(pool_ids)).values():
        lot_ids |= lots
    return Lineage(set(pool_ids), lot_ids, _edges(session, lot_ids, set(pool_ids)))


def lineage_of_pool(session: Session, pool_number: str) -> Lineage:
    return lineage_downstream(session, {get_pool(session, pool_number).id or 0})


def _chunks(values: Iterable[Any]) -> Iterable[list[Any]]:
    items = sorted(values)
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _member_ids(session: Session, lineage: Lineage) -> list[int]:
    if not lineage.pool_ids:
        return []
    return list(
        session.execute(select(PoolMember.donation_id).where(PoolMember.pool_id.in_(lineage.pool_ids))).scalars()
    )


def corrected_units(session: Session, lineage: Lineage, units: set[str]) -> list[str]:
    """Units on the lineage (or named) whose record was corrected after its original entry (Annex 11 §8.2)."""
    found: set[str] = set()
    for chunk in _chunks(_member_ids(session, lineage)):
        found.update(
            session.execute(select(Donation.unit_number).where(Donation.id.in_(chunk), Donation.version > 1)).scalars()
        )
    for chunk in _chunks(units):
        found.update(
            session.execute(
                select(Donation.unit_number).where(Donation.unit_number.in_(chunk), Donation.version > 1)
            ).scalars()
        )
    return sorted(found)


# --- the picture -----------------------------------------------------------------------------------------------


def lineage_graph(session: Session, lineage: Lineage) -> LineageGraph:
    """Pools and lots with distinct donor and donation counts (a lot: over its whole upstream), status and holds."""
    graph = LineageGraph()
    counts: dict[int, tuple[int, int]] = {}
    if lineage.pool_ids:
        rows = session.execute(
            select(PoolMember.pool_id, func.count(func.distinct(Donation.donor_id)), func.count(Donation.id))
            .join(Donation, Donation.id == PoolMember.donation_id)
            .where(PoolMember.pool_id.in_(lineage.pool_ids))
            .group_by(PoolMember.pool_id)
        )
        counts = {pool_id: (int(d), int(n)) for pool_id, d, n in rows}
    open_case_pools = _open_case_pools(session, lineage)
    reactive = _reactive_donors_by_pool(session, lineage)
    pools = session.execute(select(Pool).where(Pool.id.in_(lineage.pool_ids))).scalars().all()
    for pool in sorted(pools, key=lambda p: p.pool_number):
        donors, donations = counts.get(pool.id or 0, (0, 0))
        status = pool.status.value
        lines = [pool.product, f"{donors:,} donors, {donations:,} donations", f"status: {status}"]
        if pool.id in open_case_pools:
            lines.append("open look-back case")
        if reactive.get(pool.id or 0):
            lines.append(f"{reactive[pool.id or 0]:,} donor(s) now reactive")
        alert = status in ALERT_STATUSES or pool.id in open_case_pools or bool(reactive.get(pool.id or 0))
        graph.nodes.append(Node(f"pool:{pool.pool_number}", "pool", pool.pool_number, lines, alert))
    lots = session.execute(select(Lot).where(Lot.id.in_(lineage.lot_ids))).scalars().all()
    names = {lot.id: lot.lot_number for lot in lots}
    pool_names = {pool.id: pool.pool_number for pool in pools}
    feeding = {lot.id: upstream(session, lot.id or 0).pool_ids for lot in lots}  # also beyond this report
    held_pools = _open_case_pools(session, Lineage(set().union(*feeding.values()), set())) if lots else set()
    for lot in sorted(lots, key=lambda item: item.lot_number):
        donors, donations = _lot_counts(session, feeding[lot.id])
        status = lot.status.value
        held = bool(feeding[lot.id] & held_pools)
        lines = [f"{lot.kind.value} {lot.product}", f"{donors:,} donors, {donations:,} donations", f"status: {status}"]
        if held:
            lines.append("held: open look-back case")
        graph.nodes.append(
            Node(f"lot:{lot.lot_number}", "lot", lot.lot_number, lines, status in ALERT_STATUSES or held)
        )
    for lot_id, kind, source, quantity, unit in lineage.edges:
        source_id = f"pool:{pool_names[source]}" if kind == "pool" else f"lot:{names[source]}"
        graph.edges.append(Edge(source_id, f"lot:{names[lot_id]}", quantity_text(quantity, unit)))
    return graph


def _lot_counts(session: Session, pool_ids: set[int]) -> tuple[int, int]:
    if not pool_ids:
        return 0, 0
    donors, donations = session.execute(
        select(func.count(func.distinct(Donation.donor_id)), func.count(Donation.id))
        .join(PoolMember, PoolMember.donation_id == Donation.id)
        .where(PoolMember.pool_id.in_(pool_ids))
    ).one()
    return int(donors), int(donations)


def _current_reactive() -> Any:
    """Current (newest version per marker) reactive results, as a statement of (donation id, donor id)."""
    newer = aliased(TestResult)
    return (
        select(TestResult.donation_id, Donation.donor_id)
        .join(Donation, Donation.id == TestResult.donation_id)
        .where(
            TestResult.result == ResultValue.REACTIVE,
            ~select(newer.id)
            .where(
                newer.donation_id == TestResult.donation_id,
                newer.marker == TestResult.marker,
                newer.version > TestResult.version,
            )
            .exists(),
        )
    )


def _reactive_donors_by_pool(session: Session, lineage: Lineage) -> dict[int, int]:
    """For each pool, how many of its donors have a current reactive result on any of their donations."""
    if not lineage.pool_ids:
        return {}
    reactive = _current_reactive().subquery()
    rows = session.execute(
        select(PoolMember.pool_id, func.count(func.distinct(Donation.donor_id)))
        .join(Donation, Donation.id == PoolMember.donation_id)
        .where(PoolMember.pool_id.in_(lineage.pool_ids), Donation.donor_id.in_(select(reactive.c.donor_id)))
        .group_by(PoolMember.pool_id)
    )
    return {pool_id: int(count) for pool_id, count in rows}


def _open_case_pools(session: Session, lineage: Lineage) -> set[int]:
    if not lineage.pool_ids:
        return set()
    return set(
        session.execute(
            select(CaseFinding.pool_id)
            .join(LookbackCase, LookbackCase.id == CaseFinding.case_id)
            .where(CaseFinding.pool_id.in_(lineage.pool_ids), LookbackCase.status == CaseStatus.OPEN)
        ).scalars()
    )


# --- flags -----------------------------------------------------------------------------------------------------


def holds(session: Session, lineage: Lineage) -> Section:
    """Pools and lots on the lineage that are quarantined, rejected or held, with the recorded reason."""
    rows: list[list[Any]] = []
    for pool in session.execute(select(Pool).where(Pool.id.in_(lineage.pool_ids)).order_by(Pool.pool_number)).scalars():
        if pool.status.value in ALERT_STATUSES:
            rows.append(["pool", pool.pool_number, pool.status.value, pool.status_reason or ""])
    for lot in session.execute(select(Lot).where(Lot.id.in_(lineage.lot_ids)).order_by(Lot.lot_number)).scalars():
        if lot.status.value in ALERT_STATUSES:
            rows.append(["lot", lot.lot_number, lot.status.value, lot.status_reason or ""])
    return Section("Holds and quarantines", ["kind", "key", "status", "reason"], rows)


def open_cases(session: Session, lineage: Lineage) -> Section:
    """Open look-back cases with units pooled on the lineage: the case, its donor, the units and their pools."""
    if not lineage.pool_ids:
        return Section("Open look-back cases", ["case", "donor", "opened", "reason", "units on the lineage"], [])
    rows = session.execute(
        select(
            LookbackCase.case_number,
            Donor.donor_code,
            LookbackCase.created_at,
            LookbackCase.reason,
            Donation.unit_number,
            Pool.pool_number,
        )
        .join(CaseFinding, CaseFinding.case_id == LookbackCase.id)
        .join(Donation, Donation.id == CaseFinding.donation_id)
        .join(Donor, Donor.id == LookbackCase.donor_id)
        .join(Pool, Pool.id == CaseFinding.pool_id)
        .where(LookbackCase.status == CaseStatus.OPEN, CaseFinding.pool_id.in_(lineage.pool_ids))
        .order_by(LookbackCase.case_number, Donation.unit_number)
    )
    cases: dict[str, list[Any]] = {}
    for number, donor, opened, reason, unit, pool in rows:
        case = cases.setdefault(number, [number, donor, opened.isoformat(), reason, []])
        case[4].append(f"{unit} ({pool})")
    lineage.case_numbers |= set(cases)
    return Section(
        "Open look-back cases",
        ["case", "donor", "opened", "reason", "units on the lineage"],
        [[*c[:4], ", ".join(c[4])] for c in cases.values()],
    )


def reactive_donors(session: Session, lineage: Lineage) -> Section:
    """Donors of the lineage's donations with a current reactive result on any of their donations, pooled or not."""
    columns = ["donor", "unit", "marker", "result version", "tested at", "pooled here"]
    if not lineage.pool_ids:
        return Section("Donors with reactive results", columns, [])
    members = select(Donation.donor_id).join(PoolMember, PoolMember.donation_id == Donation.id)
    members = members.where(PoolMember.pool_id.in_(lineage.pool_ids))
    newer = aliased(TestResult)
    in_lineage = select(PoolMember.donation_id).where(PoolMember.pool_id.in_(lineage.pool_ids))
    rows = session.execute(
        select(
            Donor.donor_code,
            Donation.unit_number,
            TestResult.marker,
            TestResult.version,
            TestResult.tested_at,
            Donation.id.in_(in_lineage),
        )
        .join(Donation, Donation.id == TestResult.donation_id)
        .join(Donor, Donor.id == Donation.donor_id)
        .where(
            TestResult.result == ResultValue.REACTIVE,
            Donation.donor_id.in_(members),
            ~select(newer.id)
            .where(
                newer.donation_id == TestResult.donation_id,
                newer.marker == TestResult.marker,
                newer.version > TestResult.version,
            )
            .exists(),
        )
        .order_by(Donor.donor_code, Donation.unit_number, TestResult.marker)
    )
    return Section(
        "Donors with reactive results",
        columns,
        [[d, u, m.value, v, t.isoformat(), "yes" if pooled else "no"] for d, u, m, v, t, pooled in rows],
    )


def deviations(session: Session, lineage: Lineage) -> Section:
    """Steps on the lineage recorded with a deviation or as failed, open or closed with the closure."""
    columns = ["step", "on", "method", "outcome", "state", "closure"]
    if not lineage.pool_ids and not lineage.lot_ids:
        return Section("Deviations and failed steps", columns, [])
    pool_names = dict(session.execute(select(Pool.id, Pool.pool_number).where(Pool.id.in_(lineage.pool_ids))).all())
    lot_names = dict(session.execute(select(Lot.id, Lot.lot_number).where(Lot.id.in_(lineage.lot_ids))).all())
    steps = session.execute(
        select(Step)
        .where(
            or_(Step.pool_id.in_(lineage.pool_ids), Step.lot_id.in_(lineage.lot_ids)),
            Step.outcome != StepOutcome.COMPLETED,
        )
        .order_by(Step.step_key)
    ).scalars()
    return Section(
        "Deviations and failed steps",
        columns,
        [
            [
                s.step_key,
                pool_names[s.pool_id] if s.pool_id else lot_names[s.lot_id],
                s.method.value,
                s.outcome.value,
                "closed " + s.deviation_closed_at.isoformat() if s.deviation_closed_at else "open",
                s.deviation_closure or "",
            ]
            for s in steps
        ],
    )


FLAG_SECTIONS: list[Callable[[Session, Lineage], Section]] = [holds, open_cases, reactive_donors, deviations]


def pool_tests(session: Session, lineage: Lineage) -> Section:
    """Every pool test on the lineage, every version, with the reason a later version was recorded."""
    rows: list[list[Any]] = []
    if lineage.pool_ids:
        newest = {
            (p, m): v
            for p, m, v in session.execute(
                select(PoolTest.pool_id, PoolTest.marker, func.max(PoolTest.version))
                .where(PoolTest.pool_id.in_(lineage.pool_ids))
                .group_by(PoolTest.pool_id, PoolTest.marker)
            )
        }
        for test, pool_number in session.execute(
            select(PoolTest, Pool.pool_number)
            .join(Pool, Pool.id == PoolTest.pool_id)
            .where(PoolTest.pool_id.in_(lineage.pool_ids))
            .order_by(Pool.pool_number, PoolTest.marker, PoolTest.version)
        ):
            current = newest[(test.pool_id, test.marker)] == test.version
            rows.append(
                [
                    pool_number,
                    test.marker.value,
                    test.version,
                    "current" if current else "superseded",
                    test.result.value,
                    f"{test.value:g} {test.value_unit or ''}".strip() if test.value is not None else "",
                    test.tested_at.isoformat(),
                    test.reason or "",
                ]
            )
    return Section(
        "Pool tests (every version)",
        ["pool", "marker", "version", "state", "result", "value", "tested at", "reason"],
        rows,
    )


# --- audit history ---------------------------------------------------------------------------------------------

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
        "pool": set(session.execute(select(Pool.pool_number).where(Pool.id.in_(lineage.pool_ids))).scalars()),
        "lot": set(session.execute(select(Lot.lot_number).where(Lot.id.in_(lineage.lot_ids))).scalars()),
        "lookback_case": set(lineage.case_numbers),
    }
    for entity, more in (extra or {}).items():
        keys.setdefault(entity, set()).update(more)
    member_ids = _member_ids(session, lineage)
    units: set[str] = set()
    import_ids: set[int] = set()
    for chunk in _chunks(member_ids):
        for unit, donation_import in session.execute(
            select(Donation.unit_number, Donation.import_event_id).where(Donation.id.in_(chunk))
        ):
            units.add(unit)
            if donation_import is not None:
                import_ids.add(donation_import)
        for column, model_id in (
            (PoolMember.import_event_id, PoolMember.donation_id),
            (TestResult.import_event_id, TestResult.donation_id),
        ):
            import_ids.update(
                i for i in session.execute(select(column).where(model_id.in_(chunk)).distinct()).scalars() if i
            )
    keys.setdefault("donation", set()).update(units)
    events: dict[int, AuditEvent] = {}
    for entity, entity_keys in keys.items():
        for chunk in _chunks(entity_keys):
            for event in session.execute(
                select(AuditEvent).where(AuditEvent.entity_type == entity, AuditEvent.entity_key.in_(chunk))
            ).scalars():
                events[event.seq] = event
    if import_ids:
        started = list(session.execute(select(AuditEvent).where(AuditEvent.id.in_(import_ids))).scalars())
        for event in started:
            events[event.seq] = event
        files = {e.entity_key for e in started}
        for event in session.execute(
            select(AuditEvent).where(
                AuditEvent.entity_type == "import",
                AuditEvent.entity_key.in_(files),
                AuditEvent.action.like("%.completed"),
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
