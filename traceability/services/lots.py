"""Lots: create from released pools and lots, release on the clearance rule, ship."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select, update
from sqlmodel import Session

from .. import audit
from ..errors import (
    DuplicateKey,
    DutiesNotSeparated,
    InputNotReleased,
    InvalidInput,
    LineageCycle,
    LotNotReleasable,
    LotNotShippable,
    WrongProduct,
    WrongState,
)
from ..models import Lot, LotInput, LotKind, LotStatus, Pool, Shipment, utcnow
from ..queries.clearance import lock_lineage, lot_blockers
from ..queries.duties import lot_duty_conflicts
from ..queries.graph import downstream_lot_ids, upstream
from ..queries.lookup import get_lot, get_pool
from ..rules import DEFAULT_POLICY, Policy, lot_product_problem, policy_digest, upstream_product_problems
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
    policy: Policy = DEFAULT_POLICY,
) -> Lot:
    """Create a lot of a product the policy knows from released pools and/or released lots; every pool upstream of
    a final lot was made for its product. Raises InvalidInput, InputNotReleased, WrongProduct, LineageCycle,
    DuplicateKey."""
    lot_number = check_code(lot_number, "Lot number")
    product = product.strip()
    if not product:
        raise InvalidInput(f"Lot {lot_number} needs a product.")
    if problem := lot_product_problem(product, kind.value, policy):
        raise InvalidInput(f"Lot {lot_number}: {problem}.")
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
    if kind == LotKind.FINAL:
        pool_ids = {source.id for spec, source in resolved if spec.kind == "pool"}
        for spec, source in resolved:
            if spec.kind == "lot" and source.id is not None:
                pool_ids |= upstream(session, source.id).pool_ids
        made_for = [
            (n, p) for n, p in session.execute(select(Pool.pool_number, Pool.product).where(Pool.id.in_(pool_ids)))
        ]
        wrong = upstream_product_problems(product, made_for)
        if wrong:
            raise WrongProduct(f"Final lot {lot_number} of {product} cannot be made from it: " + "; ".join(wrong) + ".")
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
    """Release a pending lot when nothing on its whole upstream lineage blocks it (``lot_blockers``: every pool
    released with passing current tests, every lot released, no failed step or open deviation, and for a final
    lot the clearance rule on every path). Raises WrongState, LotNotReleasable listing every problem."""
    lot = lock_lineage(session, lot_number)
    if lot.status != LotStatus.PENDING:
        why = f" ({lot.status_reason})" if lot.status_reason else ""
        raise WrongState(f"Lot {lot.lot_number} is {lot.status.value}{why}; only a pending lot can be released.")
    problems = lot_blockers(session, lot, policy)
    if problems:
        raise LotNotReleasable(lot.lot_number, problems)
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
        new={"status": LotStatus.RELEASED, "policy_sha256": policy_digest(policy)},
    )
    return lot


@dataclass(frozen=True)
class HeldLots:
    """What a finding upstream did downstream: the lots it put on hold now, every lot downstream (whatever its
    status) and the consignees those lots were shipped to."""

    held: list[str]
    affected: list[str]
    consignees: list[str]


def hold_downstream(
    session: Session, *, pool_ids: Sequence[int] = (), lot_ids: Sequence[int] = (), reason: str, actor: str
) -> HeldLots:
    """Quarantine every pending or released lot made from the given pools or lots (at any depth), with the
    reason, one ``lot.quarantined`` audit event per lot. Set-based: one statement finds and locks the lots."""
    ids = downstream_lot_ids(pool_ids=pool_ids, lot_ids=lot_ids)
    if ids is None:
        return HeldLots([], [], [])
    lots = list(
        session.execute(select(Lot).where(Lot.id.in_(ids)).order_by(Lot.lot_number).with_for_update()).scalars()
    )
    holdable = [lot for lot in lots if lot.status in (LotStatus.PENDING, LotStatus.RELEASED)]
    old = {lot.id: lot.status for lot in holdable}
    if holdable:
        session.execute(
            update(Lot)
            .where(Lot.id.in_([lot.id for lot in holdable]))
            .values(status=LotStatus.QUARANTINED, status_reason=reason)
        )
        for lot in holdable:
            audit.record(
                session,
                action="lot.quarantined",
                entity_type="lot",
                entity_key=lot.lot_number,
                actor=actor,
                old={"status": old[lot.id]},
                new={"status": LotStatus.QUARANTINED},
                reason=reason,
            )
    consignees = session.execute(
        select(Shipment.consignee).where(Shipment.lot_id.in_([lot.id for lot in lots])).distinct()
    ).scalars()
    return HeldLots([lot.lot_number for lot in holdable], [lot.lot_number for lot in lots], sorted(consignees))


def ship_lot(
    session: Session,
    *,
    lot_number: str,
    consignee: str,
    quantity: int,
    shipped_on: date,
    actor: str,
    policy: Policy = DEFAULT_POLICY,
) -> Shipment:
    """Record a shipment of a released lot to a consignee, when nothing upstream blocks it now (``lot_blockers``:
    a pool retest, a failed step or a deviation recorded after the release). Raises WrongState, LotNotShippable."""
    lot = lock_lineage(session, lot_number)
    if lot.status != LotStatus.RELEASED:
        why = f" ({lot.status_reason})" if lot.status_reason else ""
        raise WrongState(f"Lot {lot.lot_number} is {lot.status.value}{why}; only a released lot can be shipped.")
    problems = lot_blockers(session, lot, policy)
    if problems:
        raise LotNotShippable(lot.lot_number, problems)
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
