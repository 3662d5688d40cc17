"""A report as recorded at a past time (``report ... --as-of T``): the parts ``contents`` builds from today's
records, rebuilt from what was recorded by T (see ``queries.lineage.as_of`` for how statuses and memberships of
that time are read back from the versions and the audit trail)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ..models import (
    AuditEvent,
    Lot,
    Pool,
)
from ..queries.lineage import as_of as then
from ..queries.lineage.shared import lots as lot_lines
from ..queries.lineage.shared import pool_lines
from .contents import Lineage, deviations, open_cases, reactive_donors
from .history import HistoryEntry
from .lineage_graph import ALERT_STATUSES, LineageGraph
from .sections import Section


@dataclass(frozen=True)
class Checkpoint:
    """The audit head at the as-of time: the last event recorded at or before it."""

    seq: int
    token: str
    time: str


def checkpoint_at(session: Session, at: datetime) -> Checkpoint:
    row = session.execute(
        select(col(AuditEvent.seq), col(AuditEvent.hash), col(AuditEvent.occurred_at))
        .where(col(AuditEvent.occurred_at) <= at)
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    ).one()
    return Checkpoint(int(row.seq), f"{row.seq}:{row.hash}", row.occurred_at.isoformat())


def recorded_lineage(session: Session, lineage: Lineage, at: datetime) -> Lineage:
    """The lineage without the lots recorded after ``at`` (and their edges)."""
    if not lineage.lot_ids:
        return lineage
    kept = set(
        session.execute(
            select(col(Lot.id)).where(col(Lot.id).in_(lineage.lot_ids), col(Lot.created_at) <= at)
        ).scalars()
    )
    edges = [e for e in lineage.edges if e[0] in kept and (e[1] == "pool" or e[2] in kept)]
    return Lineage(set(lineage.pool_ids), kept, edges, set(lineage.case_numbers))


def graph_at(session: Session, graph: LineageGraph, lineage: Lineage, at: datetime) -> LineageGraph:
    """Today's picture with each pool's counts and status and each lot's status as they were at ``at``. The notes
    on open cases and reactive donors are left out: the flag sections say what was known then."""
    members = None
    pools = pool_lines(session, lineage.pool_ids)
    if lineage.pool_ids:
        members = then.members_at(session, {i: p.pool_number for i, p in pools.items()}, at)
    pools_then = {p.pool_number: p for p in pool_lines(session, lineage.pool_ids, at=at, members=members).values()}
    lots_then = {line.lot_number: line for line in lot_lines(session, lineage.lot_ids, at=at).values()}
    for node in graph.nodes:
        if node.kind == "pool" and node.key in pools_then:
            p = pools_then[node.key]
            node.lines = [p.product, f"{p.donor_count:,} donors, {p.donation_count:,} donations", f"status: {p.status}"]
            node.alert = p.status in ALERT_STATUSES
        elif node.kind == "lot" and node.key in lots_then:
            status = lots_then[node.key].status
            node.lines = [*node.lines[:2], f"status: {status}"]
            node.alert = status in ALERT_STATUSES
    return graph


def history_at(history: list[HistoryEntry], checkpoint: Checkpoint) -> list[HistoryEntry]:
    return [h for h in history if h.seq <= checkpoint.seq]


def corrected_by(session: Session, units: list[str], at: datetime) -> list[str]:
    """Of the corrected units, those whose first correction was recorded by ``at``."""
    if not units:
        return []
    rows = session.execute(
        select(col(AuditEvent.entity_key))
        .where(
            col(AuditEvent.entity_type) == "donation",
            col(AuditEvent.entity_key).in_(units),
            col(AuditEvent.action) == "donation.corrected",
            col(AuditEvent.occurred_at) <= at,
        )
        .distinct()
    )
    return sorted(rows.scalars())


def flags_at(session: Session, lineage: Lineage, at: datetime) -> list[Section]:
    """The flag sections (holds, open cases, reactive donors, deviations) as they stood at ``at``."""
    return [build(session, lineage, at) for build in (_holds, open_cases, reactive_donors, deviations)]


def _holds(session: Session, lineage: Lineage, at: datetime) -> Section:
    rows: list[list[Any]] = []
    pools = {p.pool_number: p for p in pool_lines(session, lineage.pool_ids, at=at).values()}
    lots = {line.lot_number: line for line in lot_lines(session, lineage.lot_ids, at=at).values()}
    reasons_pool = then.statuses_at(session, "pool", list(pools), at)
    reasons_lot = then.statuses_at(session, "lot", list(lots), at)
    now_pool = dict(
        session.execute(
            select(col(Pool.pool_number), col(Pool.status_reason)).where(col(Pool.pool_number).in_(list(pools)))
        ).all()
    )
    now_lot = dict(
        session.execute(
            select(col(Lot.lot_number), col(Lot.status_reason)).where(col(Lot.lot_number).in_(list(lots)))
        ).all()
    )
    for number in sorted(pools):
        if pools[number].status in ALERT_STATUSES:
            reason = reasons_pool[number][1] if number in reasons_pool else now_pool.get(number)
            rows.append(["pool", number, pools[number].status, reason or ""])
    for number in sorted(lots):
        if lots[number].status in ALERT_STATUSES:
            reason = reasons_lot[number][1] if number in reasons_lot else now_lot.get(number)
            rows.append(["lot", number, lots[number].status, reason or ""])
    return Section("Holds and quarantines", ["kind", "key", "status", "reason"], rows)
