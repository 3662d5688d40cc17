"""Lots: create from released pools and lots, release on the clearance rule, ship."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlmodel import Session

from .. import audit
from ..errors import (
    DuplicateKey,
    DutiesNotSeparated,
    InputNotReleased,
    InvalidInput,
    LineageCycle,
    LotNotReleasable,
    WrongState,
)
from ..models import Lot, LotInput, LotKind, LotStatus, Pool, PoolStatus, Shipment, StepOutcome, utcnow
from ..queries.clearance import lot_clearance, step_facts
from ..queries.duties import lot_duty_conflicts
from ..queries.graph import steps_for
from ..queries.lookup import get_lot, get_pool
from ..rules import DEFAULT_POLICY, Policy, final_lot_clearance_problems
from .common import check_code, unique_or_conflict


@dataclass(frozen=True)
class InputSpec:
    kind: str  # "pool" or "lot"
    number: str
    quantity: int | None = None


def create_lot(
    session: Session,
    *,
    lot_number: str,
    product: str,
    inputs: list[InputSpec],
    actor: str,
    kind: LotKind = LotKind.FINAL,
) -> Lot:
    """Create a lot from released pools and/or released lots. Raises InputNotReleased, LineageCycle, DuplicateKey."""
    lot_number = check_code(lot_number, "Lot number")
    product = product.strip()
    if not product:
        raise InvalidInput(f"Lot {lot_number} needs a product.")
    if not inputs:
        raise InvalidInput(f"Lot {lot_number} needs at least one input: --pool POOL[=QTY] or --lot LOT[=QTY].")
    seen = set()
    for spec in inputs:
        if (spec.kind, spec.number) in seen:
            raise InvalidInput(f"Lot {lot_number}: {spec.kind} {spec.number} is given twice as an input.")
        seen.add((spec.kind, spec.number))
        if spec.kind == "lot" and spec.number == lot_number:
            raise LineageCycle(f"Lot {lot_number} cannot be made from itself.")
        if spec.quantity is not None and spec.quantity <= 0:
            raise InvalidInput(
                f"Lot {lot_number}: quantity {spec.quantity} of {spec.kind} {spec.number} must be positive."
            )
    if session.execute(select(Lot.id).where(Lot.lot_number == lot_number)).first():
        raise DuplicateKey("Lot", lot_number)
    resolved: list[tuple[InputSpec, Pool | Lot]] = []
    not_released = []
    for spec in inputs:
        source: Pool | Lot = get_pool(session, spec.number) if spec.kind == "pool" else get_lot(session, spec.number)
        if source.status.value != "released":
            not_released.append(f"{spec.kind} {spec.number} is {source.status.value}")
        resolved.append((spec, source))
    if not_released:
        raise InputNotReleased(
            f"Lot {lot_number} can only be made from released pools or lots: " + "; ".join(not_released) + "."
        )
    lot = Lot(lot_number=lot_number, product=product, kind=kind, created_by=actor)
    with unique_or_conflict(session, "Lot", lot_number):
        session.add(lot)
    for spec, source in resolved:
        session.add(
            LotInput(
                lot_id=lot.id,
                quantity=spec.quantity,
                created_by=actor,
                input_pool_id=source.id if spec.kind == "pool" else None,
                input_lot_id=source.id if spec.kind == "lot" else None,
            )
        )
    session.flush()
    audit.record(
        session,
        action="lot.created",
        entity_type="lot",
        entity_key=lot_number,
        actor=actor,
        new={
            "product": product,
            "kind": kind,
            "inputs": [{"kind": s.kind, "number": s.number, "quantity": s.quantity} for s in inputs],
        },
    )
    return lot


def release_lot(session: Session, *, lot_number: str, actor: str, policy: Policy = DEFAULT_POLICY) -> Lot:
    """Release a lot: its inputs released and none of its steps failed or open; a final lot also needs the
    clearance rule on every path. Raises LotNotReleasable listing every problem."""
    lot = get_lot(session, lot_number, for_update=True)
    if lot.status != LotStatus.PENDING:
        raise WrongState(f"Lot {lot.lot_number} is {lot.status.value}; only a pending lot can be released.")
    problems: list[str] = []
    inputs = session.execute(
        select(LotInput.input_pool_id, LotInput.input_lot_id).where(LotInput.lot_id == lot.id)
    ).all()
    pool_ids = [p for p, _ in inputs if p is not None]
    lot_ids = [q for _, q in inputs if q is not None]
    for number, status in session.execute(select(Pool.pool_number, Pool.status).where(Pool.id.in_(pool_ids))):
        if status != PoolStatus.RELEASED:
            problems.append(f"input pool {number} is {status.value}")
    for number, status in session.execute(select(Lot.lot_number, Lot.status).where(Lot.id.in_(lot_ids))):
        if status != LotStatus.RELEASED:
            problems.append(f"input lot {number} is {status.value}")
    for step in steps_for(session, pool_ids=set(), lot_ids={lot.id}):
        facts = step_facts(step)
        if facts.outcome == StepOutcome.FAILED:
            problems.append(f"step {step.step_key} ({step.method.value}) failed")
        elif facts.deviation_open:
            problems.append(f"step {step.step_key} ({step.method.value}) has an open deviation")
    if lot.kind == LotKind.FINAL:
        problems.extend(
            p
            for p in final_lot_clearance_problems(lot_clearance(session, lot, policy), policy.clearance)
            if p not in problems
        )
    if problems:
        raise LotNotReleasable(lot.lot_number, list(dict.fromkeys(problems)))
    if policy.release.separate_duties:
        conflicts = lot_duty_conflicts(session, lot, actor)
        if conflicts:
            raise DutiesNotSeparated("Lot", lot.lot_number, login=actor, conflicts=conflicts)
    lot.status, lot.released_at = LotStatus.RELEASED, utcnow()
    session.flush()
    audit.record(
        session,
        action="lot.released",
        entity_type="lot",
        entity_key=lot.lot_number,
        actor=actor,
        old={"status": LotStatus.PENDING},
        new={"status": LotStatus.RELEASED},
    )
    return lot


def ship_lot(
    session: Session, *, lot_number: str, consignee: str, quantity: int, shipped_on: date, actor: str
) -> Shipment:
    """Record a shipment of a released lot to a consignee."""
    lot = get_lot(session, lot_number, for_update=True)
    if lot.status != LotStatus.RELEASED:
        raise WrongState(f"Lot {lot.lot_number} is {lot.status.value}; only a released lot can be shipped.")
    consignee = consignee.strip()
    if not consignee:
        raise InvalidInput(f"Shipment of lot {lot.lot_number} needs a consignee (--to).")
    if quantity <= 0:
        raise InvalidInput(f"Shipment of lot {lot.lot_number}: quantity {quantity} must be positive.")
    n = (session.execute(select(func.count(Shipment.id)).where(Shipment.lot_id == lot.id)).scalar() or 0) + 1
    row = Shipment(
        shipment_number=f"{lot.lot_number}-SH{n:03d}",
        lot_id=lot.id,
        consignee=consignee,
        quantity=quantity,
        shipped_on=shipped_on,
        created_by=actor,
    )
    with unique_or_conflict(session, "Shipment", row.shipment_number):
        session.add(row)
    audit.record(
        session,
        action="lot.shipped",
        entity_type="lot",
        entity_key=lot.lot_number,
        actor=actor,
        new={"shipment": row.shipment_number, "consignee": consignee, "quantity": quantity, "shipped_on": shipped_on},
    )
    return row
