"""A lot backward: every upstream pool and lot, distinct donors and donations over the whole lineage, every step,
pool test and shipment, and clearance per path."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from ...models import Donation, Lot, LotInput, Shipment
from ...rules import DEFAULT_POLICY, Policy, final_lot_clearance_problems
from ..clearance import lot_clearance
from ..graph import steps_for, upstream
from ..holds import HoldLine, active_holds
from ..lookup import get_lot
from ..signatures import signatures_for
from . import as_of as then
from .lines import (
    ClearancePathLine,
    DeviationLine,
    InputLine,
    MemberLine,
    PoolLine,
    PoolTestLine,
    ShipmentLine,
    SignedLine,
    StepLine,
    iso,
    trace_json,
)
from .shared import (
    MEMBERS,
    deviations,
    lots,
    member_lines,
    pool_lines,
    pool_tests,
    recorded_steps,
    shipments,
    step_lines,
)


@dataclass
class LotTrace:
    lot_number: str
    product: str
    kind: str
    status: str
    pools: list[PoolLine]
    lots: list[str]
    inputs: list[InputLine]
    donor_count: int
    donation_count: int
    volume_ml: int
    steps: list[StepLine]
    pool_tests: dict[str, list[PoolTestLine]]
    clearance: list[ClearancePathLine]
    clearance_problems: list[str]
    shipments: list[ShipmentLine]
    donations: list[MemberLine] | None = None
    status_reason: str | None = None  # why a lot is quarantined: the pool retest, failed step or deviation upstream
    signatures: list[SignedLine] = field(default_factory=list)  # oldest first
    quantity: int | None = None
    unit: str | None = None
    expires_on: str | None = None
    drawn: int = 0
    shipped: int = 0
    available: int | None = None  # quantity less what later lots drew and what was shipped
    deviations: list[DeviationLine] = field(default_factory=list)  # corrections upstream under a deviation
    holds: list[HoldLine] = field(default_factory=list)  # holds standing on the lot or a lot upstream
    as_of: str | None = None  # the trace as recorded at this time (--as-of), or None for today's records

    def as_json(self) -> dict[str, Any]:
        return trace_json(self, "donations", "as_of")


def trace_lot(
    session: Session,
    lot_number: str,
    *,
    members: bool = False,
    policy: Policy = DEFAULT_POLICY,
    as_of: datetime | None = None,
) -> LotTrace:
    """A lot's whole genealogy: every upstream pool and lot, distinct donors and donations over the whole
    lineage, every step, pool test and shipment, clearance per path, and with ``members`` every donation.

    With ``as_of``, as recorded then: the lineage is the same (a lot's inputs are recorded with it), the pool
    members, steps, pool tests, shipments and signatures are those recorded by then, the statuses those of then."""
    lot = get_lot(session, lot_number)
    lot_id = lot.id or 0
    at = as_of
    if at is not None:
        then.recorded_at_or_refuse(lot.created_at, at, "Lot", lot.lot_number)
    graph = upstream(session, lot_id)
    membership = None
    if at is not None and graph.pool_ids:
        names = pool_lines(session, graph.pool_ids)
        membership = then.members_at(session, {i: p.pool_number for i, p in names.items()}, at)
    pools = pool_lines(session, graph.pool_ids, at=at, members=membership)
    lot_lines = lots(session, graph.lot_ids, at=at)
    totals = (0, 0, 0)
    if graph.pool_ids:
        m = MEMBERS if membership is None else membership
        totals = session.execute(
            select(
                func.count(func.distinct(col(Donation.donor_id))),
                func.count(col(Donation.id)),
                func.coalesce(func.sum(col(Donation.volume_ml)), 0),
            )
            .join(m, m.c.donation_id == col(Donation.id))
            .where(m.c.pool_id.in_(graph.pool_ids))
        ).one()
    steps = recorded_steps(steps_for(session, pool_ids=graph.pool_ids, lot_ids=graph.lot_ids), at)
    pool_names = {i: p.pool_number for i, p in pools.items()}
    lot_names = {i: line.lot_number for i, line in lot_lines.items()}
    clearance = lot_clearance(session, lot, policy, graph=graph, steps=steps)
    tests = pool_tests(session, graph.pool_ids, at=at)
    status, status_reason = lot.status.value, lot.status_reason
    quantity, drawn, shipped = lot.quantity, lot.drawn, lot.shipped
    if at is not None:
        status, status_reason = then.statuses_at(session, "lot", [lot.lot_number], at).get(
            lot.lot_number, (status, status_reason)
        )
        quantity = then.values_before(session, "lot", lot.lot_number, "lot.quantity-recorded", at).get(
            "quantity", quantity
        )
        drawn, shipped = _drawn_and_shipped_at(session, lot, at)
    return LotTrace(
        lot_number=lot.lot_number,
        product=lot.product,
        kind=lot.kind.value,
        status=status,
        pools=sorted(pools.values(), key=lambda p: p.pool_number),
        lots=sorted(n for i, n in lot_names.items() if i != lot_id),
        inputs=sorted(
            (
                InputLine(
                    lot_number=lot_names[target],
                    input_kind=kind,
                    input=pool_names[ident] if kind == "pool" else lot_names[ident],
                    quantity=quantity,
                    quantity_unit=unit,
                )
                for target, edges in graph.inputs.items()
                for kind, ident, quantity, unit in edges
            ),
            key=lambda e: (e.lot_number, e.input),
        ),
        donor_count=int(totals[0]),
        donation_count=int(totals[1]),
        volume_ml=int(totals[2]),
        steps=step_lines(steps, pool_names, lot_names, at=at),
        pool_tests={pool_names[i]: t for i, t in tests.items()},
        clearance=[
            ClearancePathLine(
                path=p.path,
                worst_for=p.worst_for,
                cumulative_log10=p.cumulative,
                effective_mechanisms=p.effective_mechanisms,
                problems=p.problems,
            )
            for p in clearance.paths
        ],
        clearance_problems=(
            final_lot_clearance_problems(clearance, policy.clearance) if lot.kind.value == "final" else []
        ),
        shipments=shipments(session, {lot_id}, at=at),
        donations=member_lines(session, graph.pool_ids, members=membership) if members else None,
        status_reason=status_reason,
        signatures=[
            SignedLine.of(s)
            for s in signatures_for(session, lot.lot_number, entity_type="lot")
            if at is None or s.signed_at <= at
        ],
        quantity=quantity,
        unit=lot.unit.value if lot.unit else None,
        expires_on=iso(lot.expires_on),
        drawn=drawn,
        shipped=shipped,
        available=None if quantity is None else quantity - drawn - shipped,
        deviations=deviations(session, graph.pool_ids, at=at),
        holds=[h for lines in active_holds(session, graph.lot_ids, at=at).values() for h in lines],
        as_of=then.as_of_text(at),
    )


def _drawn_and_shipped_at(session: Session, lot: Lot, at: datetime) -> tuple[int, int]:
    """What later lots had drawn from the lot and what had been shipped of it by ``at``: today's figures less the
    lot inputs and shipments recorded after ``at``."""
    drawn_later = session.execute(
        select(func.coalesce(func.sum(col(LotInput.quantity)), 0)).where(
            col(LotInput.input_lot_id) == lot.id, col(LotInput.created_at) > at
        )
    ).scalar_one()
    shipped_later = session.execute(
        select(func.coalesce(func.sum(col(Shipment.quantity)), 0)).where(
            col(Shipment.lot_id) == lot.id, col(Shipment.created_at) > at
        )
    ).scalar_one()
    return max(0, lot.drawn - int(drawn_later)), max(0, lot.shipped - int(shipped_later))
