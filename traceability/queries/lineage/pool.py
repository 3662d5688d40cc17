"""A pool: back to its donations, forward to every lot made from it and every shipment of those lots."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlmodel import Session

from ...rules import DEFAULT_POLICY, Policy
from ..graph import downstream_lots, steps_for
from ..lookup import get_pool
from ..signatures import signatures_for
from .lines import DeviationLine, MemberLine, PoolTestLine, ShipmentLine, SignedLine, StepLine, iso
from .shared import deviations, lots, member_lines, pool_lines, pool_tests, shipments, step_lines


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

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.donations is None:
            data.pop("donations")
        return data


def trace_pool(
    session: Session, pool_number: str, *, members: bool = False, policy: Policy = DEFAULT_POLICY
) -> PoolTrace:
    """A pool: its composition, tests and steps, every lot made from it and every shipment of those lots."""
    pool = get_pool(session, pool_number)
    line = pool_lines(session, {pool.id})[pool.id]
    lot_ids = downstream_lots(session, [pool.id]).get(pool.id, set())
    lot_lines = lots(session, lot_ids)
    steps = steps_for(session, pool_ids={pool.id}, lot_ids=set())
    return PoolTrace(
        pool_number=pool.pool_number,
        product=pool.product,
        status=pool.status.value,
        created_at=pool.created_at.isoformat(),
        closed_at=iso(pool.closed_at),
        released_at=iso(pool.released_at),
        donor_count=line.donor_count,
        donation_count=line.donation_count,
        volume_ml=line.volume_ml,
        min_donors=policy.min_donors_for(pool.product),
        tests=pool_tests(session, {pool.id}).get(pool.id, []),
        steps=step_lines(steps, {pool.id: pool.pool_number}, {}),
        lots=sorted(x.lot_number for x in lot_lines.values()),
        shipments=shipments(session, lot_ids),
        donations=member_lines(session, {pool.id}) if members else None,
        status_reason=pool.status_reason,
        signatures=[SignedLine.of(s) for s in signatures_for(session, pool.pool_number, entity_type="pool")],
        drawn_ml=pool.drawn_ml,
        deviations=deviations(session, {pool.id}),
    )
