"""What a report holds besides its trace (SPEC §13): the lineage picture and flags on the lineage (the audit
history is in ``history``).

A flag section is a function ``(session, lineage) -> Section`` listed in ``FLAG_SECTIONS``: each returns the
records it flags (holds and quarantines, open look-back cases, donors who turned reactive, deviations). Signatures
and formal holds are one more function each, appended to that list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from ..models import (
    AuditEvent,
    CaseFinding,
    CaseStatus,
    Donation,
    Donor,
    LookbackCase,
    Lot,
    Pool,
    PoolMember,
    PoolTest,
    ResultValue,
    Step,
    StepOutcome,
    TestResult,
    quantity_text,
)
from ..queries.graph import downstream_lots, input_edges, upstream
from ..queries.holds import active_holds
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
    edges = [
        e
        for e in input_edges(session, lot_ids)
        if (e[1] == "pool" and e[2] in pool_ids) or (e[1] == "lot" and e[2] in lot_ids)
    ]
    return sorted(edges, key=lambda e: (e[0], e[1], e[2]))


def lineage_of_lot(session: Session, lot_number: str) -> Lineage:
    graph = upstream(session, get_lot(session, lot_number).id or 0)
    return Lineage(graph.pool_ids, graph.lot_ids, _edges(session, graph.lot_ids, graph.pool_ids))


def lineage_downstream(session: Session, pool_ids: set[int]) -> Lineage:
    lot_ids: set[int] = set()
    for lots in downstream_lots(session, sorted(pool_ids)).values():
        lot_ids |= lots
    return Lineage(set(pool_ids), lot_ids, _edges(session, lot_ids, set(pool_ids)))


def lineage_of_recall(session: Session, lot_ids: set[int], lot_id: int) -> Lineage:
    """A recalled lot back to its pools, and every lot made from it (``lot_ids``, the recall's lots)."""
    graph = upstream(session, lot_id)
    lots = graph.lot_ids | lot_ids
    return Lineage(graph.pool_ids, lots, _edges(session, lots, graph.pool_ids))


def lineage_of_pool(session: Session, pool_number: str) -> Lineage:
    return lineage_downstream(session, {get_pool(session, pool_number).id or 0})


def chunks(values: Iterable[Any]) -> Iterable[list[Any]]:
    items = sorted(values)
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def member_ids(session: Session, lineage: Lineage) -> list[int]:
    if not lineage.pool_ids:
        return []
    return list(
        session.execute(
            select(col(PoolMember.donation_id)).where(col(PoolMember.pool_id).in_(lineage.pool_ids))
        ).scalars()
    )


def corrected_units(session: Session, lineage: Lineage, units: set[str]) -> list[str]:
    """Units on the lineage (or named) whose record was corrected after its original entry (Annex 11 §8.2)."""
    found: set[str] = set()
    for chunk in chunks(member_ids(session, lineage)):
        found.update(
            session.execute(
                select(col(Donation.unit_number)).where(col(Donation.id).in_(chunk), col(Donation.version) > 1)
            ).scalars()
        )
    for chunk in chunks(units):
        found.update(
            session.execute(
                select(col(Donation.unit_number)).where(col(Donation.unit_number).in_(chunk), col(Donation.version) > 1)
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
            select(
                col(PoolMember.pool_id), func.count(func.distinct(col(Donation.donor_id))), func.count(col(Donation.id))
            )
            .join(Donation, col(Donation.id) == col(PoolMember.donation_id))
            .where(col(PoolMember.pool_id).in_(lineage.pool_ids))
            .group_by(col(PoolMember.pool_id))
        )
        counts = {pool_id: (int(d), int(n)) for pool_id, d, n in rows}
    open_case_pools = _open_case_pools(session, lineage)
    reactive = _reactive_donors_by_pool(session, lineage)
    pools = session.execute(select(Pool).where(col(Pool.id).in_(lineage.pool_ids))).scalars().all()
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
    lots = session.execute(select(Lot).where(col(Lot.id).in_(lineage.lot_ids))).scalars().all()
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
        select(func.count(func.distinct(col(Donation.donor_id))), func.count(col(Donation.id)))
        .join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .where(col(PoolMember.pool_id).in_(pool_ids))
    ).one()
    return int(donors), int(donations)


def _current_reactive() -> Any:
    """Current (newest version per marker) reactive results, as a statement of (donation id, donor id)."""
    return (
        select(col(TestResult.donation_id), col(Donation.donor_id))
        .join(Donation, col(Donation.id) == col(TestResult.donation_id))
        .where(col(TestResult.result) == ResultValue.REACTIVE, _current_result())
    )


def _current_result(at: datetime | None = None) -> Any:
    """The condition that a test result is the newest version of its marker (of those recorded by ``at``)."""
    newer = aliased(TestResult)
    return (
        ~select(col(newer.id))
        .where(
            col(newer.donation_id) == col(TestResult.donation_id),
            col(newer.marker) == col(TestResult.marker),
            col(newer.version) > col(TestResult.version),
            *_by(col(newer.created_at), at),
        )
        .exists()
    )


def _reactive_donors_by_pool(session: Session, lineage: Lineage) -> dict[int, int]:
    """For each pool, how many of its donors have a current reactive result on any of their donations."""
    if not lineage.pool_ids:
        return {}
    reactive = _current_reactive().subquery()
    rows = session.execute(
        select(col(PoolMember.pool_id), func.count(func.distinct(col(Donation.donor_id))))
        .join(Donation, col(Donation.id) == col(PoolMember.donation_id))
        .where(col(PoolMember.pool_id).in_(lineage.pool_ids), col(Donation.donor_id).in_(select(reactive.c.donor_id)))
        .group_by(col(PoolMember.pool_id))
    )
    return {pool_id: int(count) for pool_id, count in rows}


def _open_case_pools(session: Session, lineage: Lineage) -> set[int]:
    if not lineage.pool_ids:
        return set()
    return set(
        session.execute(
            select(col(CaseFinding.pool_id))
            .join(LookbackCase, col(LookbackCase.id) == col(CaseFinding.case_id))
            .where(col(CaseFinding.pool_id).in_(lineage.pool_ids), col(LookbackCase.status) == CaseStatus.OPEN)
        ).scalars()
    )


# --- flags -----------------------------------------------------------------------------------------------------


def holds(session: Session, lineage: Lineage) -> Section:
    """Pools and lots on the lineage that are quarantined, rejected or held, with the recorded reason."""
    rows: list[list[Any]] = []
    for pool in session.execute(
        select(Pool).where(col(Pool.id).in_(lineage.pool_ids)).order_by(col(Pool.pool_number))
    ).scalars():
        if pool.status.value in ALERT_STATUSES:
            rows.append(["pool", pool.pool_number, pool.status.value, pool.status_reason or ""])
    for lot in session.execute(
        select(Lot).where(col(Lot.id).in_(lineage.lot_ids)).order_by(col(Lot.lot_number))
    ).scalars():
        if lot.status.value in ALERT_STATUSES:
            rows.append(["lot", lot.lot_number, lot.status.value, lot.status_reason or ""])
    for standing in sorted(active_holds(session, lineage.lot_ids).values(), key=lambda hs: hs[0].lot_number):
        for hold in standing:
            by = f"look-back case {hold.case_number}" if hold.case_number else f"by hand ({hold.placed_by})"
            rows.append(["lot", hold.lot_number, "held", f"{by}: {hold.reason}"])
    return Section("Holds and quarantines", ["kind", "key", "status", "reason"], rows)


def open_cases(session: Session, lineage: Lineage, at: datetime | None = None) -> Section:
    """Open look-back cases with units pooled on the lineage: the case, its donor, the units and their pools; with
    ``at``, the findings recorded by then of the cases not closed by then."""
    columns = ["case", "donor", "opened", "reason", "units on the lineage"]
    if not lineage.pool_ids:
        return Section("Open look-back cases", columns, [])
    rows = session.execute(
        select(
            col(LookbackCase.case_number),
            col(Donor.donor_code),
            col(LookbackCase.created_at),
            col(LookbackCase.reason),
            col(Donation.unit_number),
            col(Pool.pool_number),
        )
        .join(CaseFinding, col(CaseFinding.case_id) == col(LookbackCase.id))
        .join(Donation, col(Donation.id) == col(CaseFinding.donation_id))
        .join(Donor, col(Donor.id) == col(LookbackCase.donor_id))
        .join(Pool, col(Pool.id) == col(CaseFinding.pool_id))
        .where(
            col(CaseFinding.pool_id).in_(lineage.pool_ids),
            *([col(LookbackCase.status) == CaseStatus.OPEN] if at is None else [col(CaseFinding.created_at) <= at]),
        )
        .order_by(col(LookbackCase.case_number), col(Donation.unit_number))
    ).all()
    closed = set() if at is None else _closed_cases_by(session, at)
    cases: dict[str, list[Any]] = {}
    for number, donor, opened, reason, unit, pool in rows:
        if number in closed:
            continue
        case = cases.setdefault(number, [number, donor, opened.isoformat(), reason, []])
        case[4].append(f"{unit} ({pool})")
    lineage.case_numbers |= set(cases)
    return Section("Open look-back cases", columns, [[*c[:4], ", ".join(c[4])] for c in cases.values()])


def _closed_cases_by(session: Session, at: datetime) -> set[str]:
    return set(
        session.execute(
            select(col(AuditEvent.entity_key)).where(
                col(AuditEvent.entity_type) == "lookback_case",
                col(AuditEvent.action) == "lookback.closed",
                col(AuditEvent.occurred_at) <= at,
            )
        ).scalars()
    )


def reactive_donors(session: Session, lineage: Lineage, at: datetime | None = None) -> Section:
    """Donors of the lineage's donations with a current reactive result on any of their donations, pooled or not;
    with ``at``, of the memberships and results recorded by then."""
    columns = ["donor", "unit", "marker", "result version", "tested at", "pooled here"]
    if not lineage.pool_ids:
        return Section("Donors with reactive results", columns, [])
    member = (col(PoolMember.pool_id).in_(lineage.pool_ids), *_by(col(PoolMember.created_at), at))
    donors = (
        select(col(Donation.donor_id)).join(PoolMember, col(PoolMember.donation_id) == col(Donation.id)).where(*member)
    )
    in_lineage = select(col(PoolMember.donation_id)).where(*member)
    rows = session.execute(
        select(
            col(Donor.donor_code),
            col(Donation.unit_number),
            col(TestResult.marker),
            col(TestResult.version),
            col(TestResult.tested_at),
            col(Donation.id).in_(in_lineage),
        )
        .join(Donation, col(Donation.id) == col(TestResult.donation_id))
        .join(Donor, col(Donor.id) == col(Donation.donor_id))
        .where(
            col(TestResult.result) == ResultValue.REACTIVE,
            *_by(col(TestResult.created_at), at),
            col(Donation.donor_id).in_(donors),
            _current_result(at),
        )
        .order_by(col(Donor.donor_code), col(Donation.unit_number), col(TestResult.marker))
    )
    return Section(
        "Donors with reactive results",
        columns,
        [[d, u, m.value, v, t.isoformat(), "yes" if pooled else "no"] for d, u, m, v, t, pooled in rows],
    )


def deviations(session: Session, lineage: Lineage, at: datetime | None = None) -> Section:
    """Steps on the lineage recorded with a deviation or as failed, open or closed with the closure; with ``at``,
    the steps recorded by then, closed only if closed by then."""
    columns = ["step", "on", "method", "outcome", "state", "closure"]
    if not lineage.pool_ids and not lineage.lot_ids:
        return Section("Deviations and failed steps", columns, [])
    pool_names = dict(
        session.execute(select(col(Pool.id), col(Pool.pool_number)).where(col(Pool.id).in_(lineage.pool_ids))).all()
    )
    lot_names = dict(
        session.execute(select(col(Lot.id), col(Lot.lot_number)).where(col(Lot.id).in_(lineage.lot_ids))).all()
    )
    steps = session.execute(
        select(Step)
        .where(
            or_(col(Step.pool_id).in_(lineage.pool_ids), col(Step.lot_id).in_(lineage.lot_ids)),
            col(Step.outcome) != StepOutcome.COMPLETED,
            *_by(col(Step.created_at), at),
        )
        .order_by(col(Step.step_key))
    ).scalars()
    rows = []
    for s in steps:
        closed_at = s.deviation_closed_at if at is None or (s.deviation_closed_at or at) <= at else None
        rows.append(
            [
                s.step_key,
                pool_names[s.pool_id] if s.pool_id else lot_names[s.lot_id],
                s.method.value,
                s.outcome.value,
                "closed " + closed_at.isoformat() if closed_at else "open",
                (s.deviation_closure or "") if at is None or closed_at else "",
            ]
        )
    return Section("Deviations and failed steps", columns, rows)


def _by(column: Any, at: datetime | None) -> list[Any]:
    """The condition "recorded by ``at``" on ``column``, or none for today's records."""
    return [] if at is None else [column <= at]


FLAG_SECTIONS: list[Callable[[Session, Lineage], Section]] = [holds, open_cases, reactive_donors, deviations]


def pool_tests(session: Session, lineage: Lineage, at: datetime | None = None) -> Section:
    """Every pool test on the lineage, every version, with the reason a later version was recorded; with ``at``,
    the versions recorded by then (current is the newest of those)."""
    rows: list[list[Any]] = []
    if lineage.pool_ids:
        tests = session.execute(
            select(PoolTest, col(Pool.pool_number))
            .join(Pool, col(Pool.id) == col(PoolTest.pool_id))
            .where(col(PoolTest.pool_id).in_(lineage.pool_ids), *_by(col(PoolTest.created_at), at))
            .order_by(col(Pool.pool_number), col(PoolTest.marker), col(PoolTest.version))
        ).all()
        newest: dict[tuple[int, str], int] = {}
        for test, _ in tests:
            which = (test.pool_id, test.marker.value)
            newest[which] = max(newest.get(which, 0), test.version)
        for test, pool_number in tests:
            current = newest[(test.pool_id, test.marker.value)] == test.version
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
