"""What a look-back case or a recall would touch, read without changing anything (SPEC §12, ``recall drill``).

A donor drill takes the implicated set from the function a case takes it from (``impact.case_impact`` on the
donor's look-back window, ``eligibility.lookback_window``): the donations in the window, the pools of the pooled
ones, every lot downstream of those pools and every shipment of those lots. A recall of a lot covers
that lot and every lot made from it (``graph.downstream_lot_ids``). ``distribution`` lists the consignees of a set
of lots with addresses and quantities; recalls use it too.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ..models import Consignee, Donation, Lot, Pool, PoolMember, Shipment, UnitStatus, saved_id
from ..rules import DEFAULT_POLICY, Policy
from .eligibility import lookback_window
from .graph import downstream_lot_ids, upstream
from .impact import Impact, case_impact
from .lookup import get_donor, get_lot


@dataclass(frozen=True)
class DrillUnit:
    """A donation in the look-back window and what a case would do with it."""

    unit_number: str
    collected_at: str
    status: str
    pool_number: str | None
    action: str  # "stop" (in inventory: a case interdicts it), "pooled", or "already <status>"


@dataclass(frozen=True)
class DrillLot:
    """A lot a case or recall would touch, with its quantity balance."""

    lot_number: str
    product: str
    kind: str
    status: str
    quantity: int | None
    unit: str | None
    drawn: int
    shipped: int
    in_stock: int | None  # quantity less drawn and shipped; None when no quantity is recorded


@dataclass(frozen=True)
class DistributionLine:
    """One shipment of an implicated lot: what a distribution record holds (21 CFR 606.165)."""

    shipment_number: str
    lot_number: str
    consignee_code: str
    consignee: str
    address: str
    shipped_on: str
    quantity: int
    unit: str | None


@dataclass
class DrillAnswer:
    subject: str  # "donor" or "lot"
    key: str
    window_start: str | None
    units: list[DrillUnit]
    pools: list[str]
    lots: list[DrillLot]
    shipments: list[DistributionLine]
    duration_ms: float = field(default=0.0, compare=False)

    @property
    def units_to_stop(self) -> list[str]:
        return [u.unit_number for u in self.units if u.action == "stop"]

    @property
    def consignees(self) -> list[str]:
        return sorted({s.consignee_code for s in self.shipments})

    def totals(self) -> dict[str, dict[str, int]]:
        """Per lot unit: quantity made, drawn by other lots, shipped and in stock (lots with a quantity)."""
        result: dict[str, dict[str, int]] = {}
        for lot in self.lots:
            if lot.quantity is None or lot.unit is None:
                continue
            t = result.setdefault(lot.unit, {"quantity": 0, "drawn": 0, "shipped": 0, "in_stock": 0})
            t["quantity"] += lot.quantity
            t["drawn"] += lot.drawn
            t["shipped"] += lot.shipped
            t["in_stock"] += lot.in_stock or 0
        return result

    def content(self) -> dict[str, Any]:
        """The answer without its timing: what the digest covers."""
        data = asdict(self)
        data.pop("duration_ms")
        data["units_to_stop"] = self.units_to_stop
        data["consignees"] = self.consignees
        data["totals"] = self.totals()
        return data

    def digest(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def as_json(self) -> dict[str, Any]:
        return {**self.content(), "duration_ms": round(self.duration_ms, 3), "answer_sha256": self.digest()}


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def lot_balances(session: Session, lot_ids: set[int]) -> list[DrillLot]:
    """Each lot with its quantity, what later lots drew from it, what was shipped and what is left, by number."""
    if not lot_ids:
        return []
    rows = session.execute(
        select(
            col(Lot.lot_number),
            col(Lot.product),
            col(Lot.kind),
            col(Lot.status),
            col(Lot.quantity),
            col(Lot.unit),
            col(Lot.drawn),
            col(Lot.shipped),
        )
        .where(col(Lot.id).in_(sorted(lot_ids)))
        .order_by(col(Lot.lot_number))
    )
    return [
        DrillLot(
            number,
            product,
            kind.value,
            status.value,
            quantity,
            unit.value if unit else None,
            drawn,
            shipped,
            None if quantity is None else quantity - drawn - shipped,
        )
        for number, product, kind, status, quantity, unit, drawn, shipped in rows
    ]


def distribution(session: Session, lot_ids: set[int]) -> list[DistributionLine]:
    """Every shipment of the lots with its consignee's code, name as shipped and address, oldest first."""
    if not lot_ids:
        return []
    rows = session.execute(
        select(
            col(Shipment.shipment_number),
            col(Lot.lot_number),
            col(Consignee.code),
            col(Shipment.consignee),
            col(Consignee.address),
            col(Shipment.shipped_on),
            col(Shipment.quantity),
            col(Lot.unit),
        )
        .join(Lot, col(Lot.id) == col(Shipment.lot_id))
        .join(Consignee, col(Consignee.id) == col(Shipment.consignee_id))
        .where(col(Shipment.lot_id).in_(sorted(lot_ids)))
        .order_by(col(Shipment.shipped_on), col(Shipment.shipment_number))
    )
    return [
        DistributionLine(n, lot, code, name, address, on.isoformat(), q, unit.value if unit else None)
        for n, lot, code, name, address, on, q, unit in rows
    ]


def recall_lot_ids(session: Session, lot_id: int) -> set[int]:
    """A recalled lot and every lot made from it, directly or through other lots."""
    statement = downstream_lot_ids(lot_ids=[lot_id])
    found = set(session.execute(statement).scalars()) if statement is not None else set()
    return {lot_id} | found


def _drill_units(session: Session, impact: Impact) -> list[DrillUnit]:
    """The donations the case would find, each with what a case would do with it (as ``lookback.open_case``)."""
    if not impact.donation_ids:
        return []
    rows = session.execute(
        select(
            col(Donation.unit_number),
            col(Donation.collected_at),
            col(Donation.status),
            col(Pool.id),
            col(Pool.pool_number),
        )
        .outerjoin(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .outerjoin(Pool, col(Pool.id) == col(PoolMember.pool_id))
        .where(col(Donation.id).in_(impact.donation_ids))
        .order_by(col(Donation.collected_at), col(Donation.id))
    ).all()
    units: list[DrillUnit] = []
    for number, collected_at, status, pool_id, pool_number in rows:
        if status == UnitStatus.IN_INVENTORY:
            action = "stop"
        elif pool_id is not None:
            action = "pooled"
        else:
            action = f"already {status.value}"
        units.append(DrillUnit(number, collected_at.isoformat(), status.value, pool_number, action))
    return units


def drill_donor(session: Session, donor_code: str, *, policy: Policy = DEFAULT_POLICY) -> DrillAnswer:
    """What a look-back case opened now for the donor would touch: the case's own answer (``impact.case_impact``
    on ``eligibility.lookback_window``), so a drill and the case opened after it name the same units, pools, lots
    and consignees. Raises DonorNotFound."""
    started = time.perf_counter()
    donor = get_donor(session, donor_code)
    window = lookback_window(session, saved_id(donor.id), policy=policy)
    impact = case_impact(session, saved_id(donor.id), window)
    lot_ids = set(impact.lots)
    answer = DrillAnswer(
        subject="donor",
        key=donor.donor_code,
        window_start=_iso(window.starts_on),
        units=_drill_units(session, impact),
        pools=sorted(set(impact.pools.values())),
        lots=lot_balances(session, lot_ids),
        shipments=distribution(session, lot_ids),
    )
    answer.duration_ms = (time.perf_counter() - started) * 1000
    return answer


def drill_lot(session: Session, lot_number: str) -> DrillAnswer:
    """What a recall of the lot would touch: it and every lot made from it, their shipments and balances, and the
    pools upstream of it. Raises LotNotFound."""
    started = time.perf_counter()
    lot = get_lot(session, lot_number)
    lot_ids = recall_lot_ids(session, lot.id or 0)
    pool_ids = upstream(session, lot.id or 0).pool_ids
    pools = (
        sorted(session.execute(select(col(Pool.pool_number)).where(col(Pool.id).in_(sorted(pool_ids)))).scalars())
        if pool_ids
        else []
    )
    answer = DrillAnswer(
        subject="lot",
        key=lot.lot_number,
        window_start=None,
        units=[],
        pools=pools,
        lots=lot_balances(session, lot_ids),
        shipments=distribution(session, lot_ids),
    )
    answer.duration_ms = (time.perf_counter() - started) * 1000
    return answer
