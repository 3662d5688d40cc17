"""A pool: back to its donations, forward to every lot made from it and every shipment of those lots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from ...models import LotInput, Pool
from ...rules import DEFAULT_POLICY, Policy
from ..graph import downstream_lots, steps_for
from ..lookup import get_pool
from ..signatures import signatures_for
from . import as_of as then
from .lines import DeviationLine, MemberLine, PoolTestLine, ShipmentLine, SignedLine, StepLine, iso, trace_json
from .shared import deviations, lots, member_lines, pool_lines, pool_tests, recorded_steps, shipments, step_lines


@dataclass
class PoolTrace:
    pool_number: str
    product: str
    status: str
    created_at: str
    closed_at: str | None
    released_at: str | None
    donor_count: int
    donation_count: int
    volume_ml: int
    min_donors: int
    tests: list[PoolTestLine]
    steps: list[StepLine]
    lots: list[str]
    shipments: list[ShipmentLine]
    donations: list[MemberLine] | None = None
    status_reason: str | None = None  # why a pool is quarantined: the pool test, marker and version
    signatures: list[SignedLine] = field(default_factory=list)  # oldest first
    drawn_ml: int = 0  # taken by lots
    deviations: list[DeviationLine] = field(default_factory=list)
    as_of: str | None = None  # the trace as recorded at this time (--as-of), or None for today's records

    def as_json(self) -> dict[str, Any]:
        return trace_json(self, "donations", "as_of")


def trace_pool(
    session: Session,
    pool_number: str,
    *,
    members: bool = False,
    policy: Policy = DEFAULT_POLICY,
    as_of: datetime | None = None,
) -> PoolTrace:
    """A pool: its composition, tests and steps, every lot made from it and every shipment of those lots; with
    ``as_of`` as recorded then (members, tests, steps, lots, shipments and signatures recorded by then, the
    statuses of then)."""
    pool = get_pool(session, pool_number)
    pool_id = pool.id or 0
    at = as_of
    membership = None
    if at is not None:
        then.recorded_at_or_refuse(pool.created_at, at, "Pool", pool.pool_number)
        membership = then.members_at(session, {pool_id: pool.pool_number}, at)
    line = pool_lines(session, {pool_id}, at=at, members=membership)[pool_id]
    lot_ids = downstream_lots(session, [pool_id]).get(pool_id, set())
    lot_lines = lots(session, lot_ids, at=at)
    steps = recorded_steps(steps_for(session, pool_ids={pool_id}, lot_ids=set()), at)
    status_reason, drawn_ml = pool.status_reason, pool.drawn_ml
    closed_at, released_at = pool.closed_at, pool.released_at
    if at is not None:
        done = then.done_by(session, "pool", pool.pool_number, ("pool.closed", "pool.released"), at)
        closed_at = closed_at if "pool.closed" in done else None
        released_at = released_at if "pool.released" in done else None
        status_reason = then.statuses_at(session, "pool", [pool.pool_number], at).get(
            pool.pool_number, (line.status, pool.status_reason)
        )[1]
        drawn_ml = _drawn_ml_at(session, pool, at)
    signed = signatures_for(session, pool.pool_number, entity_type="pool")
    return PoolTrace(
        pool_number=pool.pool_number,
        product=pool.product,
        status=line.status,
        created_at=pool.created_at.isoformat(),
        closed_at=iso(closed_at),
        released_at=iso(released_at),
        donor_count=line.donor_count,
        donation_count=line.donation_count,
        volume_ml=line.volume_ml,
        min_donors=policy.min_donors_for(pool.product),
        tests=pool_tests(session, {pool_id}, at=at).get(pool_id, []),
        steps=step_lines(steps, {pool_id: pool.pool_number}, {}, at=at),
        lots=sorted(x.lot_number for x in lot_lines.values()),
        shipments=shipments(session, set(lot_lines), at=at),
        donations=member_lines(session, {pool_id}, members=membership) if members else None,
        status_reason=status_reason,
        signatures=[SignedLine.of(s) for s in signed if at is None or s.signed_at <= at],
        drawn_ml=drawn_ml,
        deviations=deviations(session, {pool_id}, at=at),
        as_of=then.as_of_text(at),
    )


def _drawn_ml_at(session: Session, pool: Pool, at: datetime) -> int:
    """What lots had drawn from the pool by ``at``: today's figure less the draws of lot inputs recorded later."""
    later = session.execute(
        select(func.coalesce(func.sum(col(LotInput.quantity)), 0)).where(
            col(LotInput.input_pool_id) == pool.id, col(LotInput.created_at) > at
        )
    ).scalar_one()
    return max(0, pool.drawn_ml - int(later))
