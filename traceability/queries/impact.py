"""What a look-back case implicates: the one answer a case (and anything that must agree with it) takes its units,
pools, lots and consignees from.

The window and its donations come from ``eligibility.lookback_window`` / ``donations_in_window``; the lots from the
lineage graph (``graph.downstream_lots``); the consignees from the shipments of those lots (21 CFR 606.165:
name, address, lot, quantity, date shipped).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import func, select
from sqlmodel import Session, col

from ..models import Consignee, Donation, Lot, Pool, PoolMember, Shipment, UnitStatus
from .eligibility import LookbackWindow, donations_in_window
from .graph import downstream_lots


@dataclass(frozen=True)
class ConsigneeShipment:
    """What one consignee received of one implicated lot (its shipments of that lot added up)."""

    lot_id: int
    lot_number: str
    consignee_id: int
    consignee_code: str
    consignee: str
    address: str
    quantity: int
    unit: str | None
    shipped_on: list[date]


@dataclass(frozen=True)
class PooledUnit:
    donation_id: int
    unit_number: str
    pool_id: int
    pool_number: str


@dataclass
class Impact:
    """Everything a case on a donor's look-back window implicates, each list in a stable order."""

    donation_ids: list[int] = field(default_factory=list)  # every donation in the window, oldest first
    units_to_stop: list[str] = field(default_factory=list)  # still in inventory (or already interdicted)
    pooled: list[PooledUnit] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # out of inventory, not pooled (rejected, discarded)
    pools: dict[int, str] = field(default_factory=dict)  # pool id -> pool number
    lots: dict[int, str] = field(default_factory=dict)  # lot id -> lot number, every lot downstream of the pools
    consignees: list[ConsigneeShipment] = field(default_factory=list)  # by lot number, then consignee code

    def lots_by_number(self) -> list[tuple[int, str]]:
        return sorted(self.lots.items(), key=lambda item: item[1])

    def consignee_ids(self) -> dict[int, ConsigneeShipment]:
        """Each consignee of any implicated lot once (its first line)."""
        seen: dict[int, ConsigneeShipment] = {}
        for line in self.consignees:
            seen.setdefault(line.consignee_id, line)
        return seen


def case_impact(session: Session, donor_id: int, window: LookbackWindow) -> Impact:
    """Units to stop, pooled units, pools, every lot downstream of those pools and every consignee of those lots
    (with address, quantity and the days shipped), for the donor's donations in ``window``. Reads only."""
    impact = Impact(donation_ids=donations_in_window(session, donor_id, window))
    if not impact.donation_ids:
        return impact
    rows = session.execute(
        select(col(Donation.id), col(Donation.unit_number), col(Donation.status), col(Pool.id), col(Pool.pool_number))
        .outerjoin(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .outerjoin(Pool, col(Pool.id) == col(PoolMember.pool_id))
        .where(col(Donation.id).in_(impact.donation_ids))
        .order_by(col(Donation.collected_at), col(Donation.id))
    ).all()
    for donation_id, number, status, pool_id, pool_number in rows:
        if pool_id is not None:
            impact.pooled.append(PooledUnit(donation_id, number, pool_id, pool_number))
            impact.pools[pool_id] = pool_number
        elif status in (UnitStatus.IN_INVENTORY, UnitStatus.INTERDICTED):
            impact.units_to_stop.append(number)
        else:
            impact.other.append(number)
    by_pool = downstream_lots(session, sorted(impact.pools))
    lot_ids = sorted(set().union(*by_pool.values())) if by_pool else []
    if not lot_ids:
        return impact
    impact.lots = dict(session.execute(select(col(Lot.id), col(Lot.lot_number)).where(col(Lot.id).in_(lot_ids))).all())
    shipped = session.execute(
        select(
            col(Shipment.lot_id),
            col(Lot.lot_number),
            col(Lot.unit),
            col(Consignee.id),
            col(Consignee.code),
            col(Consignee.name),
            col(Consignee.address),
            func.sum(col(Shipment.quantity)),
        )
        .join(Lot, col(Lot.id) == col(Shipment.lot_id))
        .join(Consignee, col(Consignee.id) == col(Shipment.consignee_id))
        .where(col(Shipment.lot_id).in_(lot_ids))
        .group_by(
            col(Shipment.lot_id),
            col(Lot.lot_number),
            col(Lot.unit),
            col(Consignee.id),
            col(Consignee.code),
            col(Consignee.name),
        )
        .group_by(col(Consignee.address))
        .order_by(col(Lot.lot_number), col(Consignee.code))
    ).all()
    days: dict[tuple[int, int], list[date]] = defaultdict(list)
    for lot_id, consignee_id, on in session.execute(
        select(col(Shipment.lot_id), col(Shipment.consignee_id), col(Shipment.shipped_on))
        .where(col(Shipment.lot_id).in_(lot_ids))
        .order_by(col(Shipment.shipped_on), col(Shipment.id))
    ):
        days[(lot_id, consignee_id)].append(on)
    impact.consignees = [
        ConsigneeShipment(
            lot_id=lot_id,
            lot_number=lot_number,
            consignee_id=consignee_id,
            consignee_code=code,
            consignee=name,
            address=address,
            quantity=int(quantity),
            unit=unit.value if unit is not None else None,
            shipped_on=days[(lot_id, consignee_id)],
        )
        for lot_id, lot_number, unit, consignee_id, code, name, address, quantity in shipped
    ]
    return impact
