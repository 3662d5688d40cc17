"""A lot backward: every upstream pool and lot, distinct donors and donations over the whole lineage, every step,
pool test and shipment, and clearance per path."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from ...models import Donation, PoolMember
from ...rules import DEFAULT_POLICY, Policy, final_lot_clearance_problems
from ..clearance import lot_clearance
from ..graph import steps_for, upstream
from ..lookup import get_lot
from ..signatures import signatures_for
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
)
from .shared import deviations, lots, member_lines, pool_lines, pool_tests, shipments, step_lines


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

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.donations is None:
            data.pop("donations")
        return data


def trace_lot(session: Session, lot_number: str, *, members: bool = False, policy: Policy = DEFAULT_POLICY) -> LotTrace:
    """A lot's whole genealogy: every upstream pool and lot, distinct donors and donations over the whole
    lineage, every step, pool test and shipment, clearance per path, and with ``members`` every donation."""
    lot = get_lot(session, lot_number)
    graph = upstream(session, lot.id)
    pools = pool_lines(session, graph.pool_ids)
    lot_lines = lots(session, graph.lot_ids)
    totals = (0, 0, 0)
    if graph.pool_ids:
        totals = session.execute(
            select(
                func.count(func.distinct(Donation.donor_id)),
                func.count(Donation.id),
                func.coalesce(func.sum(Donation.volume_ml), 0),
            )
            .join(PoolMember, PoolMember.donation_id == Donation.id)
            .where(PoolMember.pool_id.in_(graph.pool_ids))
        ).one()
    steps = steps_for(session, pool_ids=graph.pool_ids, lot_ids=graph.lot_ids)
    pool_names = {i: p.pool_number for i, p in pools.items()}
    lot_names = {i: line.lot_number for i, line in lot_lines.items()}
    clearance = lot_clearance(session, lot, policy, graph=graph, steps=steps)
    tests = pool_tests(session, graph.pool_ids)
    return LotTrace(
        lot_number=lot.lot_number,
        product=lot.product,
        kind=lot.kind.value,
        status=lot.status.value,
        pools=sorted(pools.values(), key=lambda p: p.pool_number),
        lots=sorted(n for i, n in lot_names.items() if i != lot.id),
        inputs=sorted(
            (
                InputLine(
                    lot_number=lot_names[target],
                    input_kind=kind,
                    input=pool_names[ident] if kind == "pool" else lot_names[ident],
                    quantity=quantity,
                )
                for target, edges in graph.inputs.items()
                for kind, ident, quantity in edges
            ),
            key=lambda e: (e.lot_number, e.input),
        ),
        donor_count=int(totals[0]),
        donation_count=int(totals[1]),
        volume_ml=int(totals[2]),
        steps=step_lines(steps, pool_names, lot_names),
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
        shipments=shipments(session, {lot.id}),
        donations=member_lines(session, graph.pool_ids) if members else None,
        status_reason=lot.status_reason,
        signatures=[SignedLine.of(s) for s in signatures_for(session, lot.lot_number, entity_type="lot")],
        quantity=lot.quantity,
        unit=lot.unit.value if lot.unit else None,
        expires_on=iso(lot.expires_on),
        drawn=lot.drawn,
        shipped=lot.shipped,
        available=None if lot.quantity is None else lot.quantity - lot.drawn - lot.shipped,
        deviations=deviations(session, graph.pool_ids),
    )
