"""Lots: create from released pools and lots, release on the clearance rule, ship."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, or_, select, update
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
    OverBalance,
    QuantityNotRecorded,
    WrongProduct,
    WrongState,
)
from ..models import (
    Donation,
    Lot,
    LotInput,
    LotKind,
    LotStatus,
    LotUnit,
    Pool,
    PoolMember,
    Shipment,
    utcnow,
)
from ..plausibility import check_shipment
from ..queries.clearance import lock_lineage, lot_blockers
from ..queries.duties import lot_duty_conflicts
from ..queries.graph import downstream_lot_ids, upstream
from ..queries.lookup import get_consignee, get_lot, get_pool
from ..rules import (
    DEFAULT_POLICY,
    Policy,
    lot_product_problem,
    policy_digest,
    upstream_product_problems,
)
from .common import check_code, check_count, unique_or_conflict


@dataclass(frozen=True)
class InputSpec:
    """One input of a new lot. ``quantity`` is in mL for a pool (``unit`` "L" multiplies by 1,000) and in the
    input lot's own unit for a lot (``unit``, when given, must be that unit)."""

    kind: str  # "pool" or "lot"
    number: str
    quantity: int | None = None
    unit: str | None = None


@dataclass(frozen=True)
class Balance:
    """What is left of a pool (mL) or a lot (in its unit): quantity less what was drawn and shipped."""

    quantity: int | None
    unit: str | None
    drawn: int
    shipped: int

    @property
    def available(self) -> int | None:
        return None if self.quantity is None else self.quantity - self.drawn - self.shipped


def pool_volume_ml(session: Session, pool_id: int) -> int:
    """A pool's volume now: the sum of its members' volumes."""
    total = session.execute(
        select(func.coalesce(func.sum(Donation.volume_ml), 0))
        .join(PoolMember, PoolMember.donation_id == Donation.id)
        .where(PoolMember.pool_id == pool_id)
    ).scalar()
    return int(total or 0)


def pool_balance(session: Session, pool: Pool) -> Balance:
    return Balance(pool_volume_ml(session, pool.id or 0), "mL", pool.drawn_ml, 0)


def lot_balance(lot: Lot) -> Balance:
    return Balance(lot.quantity, lot.unit.value if lot.unit else None, lot.drawn, lot.shipped)


def _ml(spec: InputSpec, lot_number: str) -> int:
    """A draw from a pool in mL."""
    if spec.quantity is None:
        raise InvalidInput(
            f"Lot {lot_number}: give the volume drawn from pool {spec.number}, e.g. --pool {spec.number}=1200L."
        )
    unit = (spec.unit or "mL").strip()
    if unit not in ("mL", "ml", "L", "l"):
        raise InvalidInput(f"Lot {lot_number}: a draw from pool {spec.number} is in L or mL, not {unit!r}.")
    return check_count(
        spec.quantity * (1000 if unit in ("L", "l") else 1),
        f"Lot {lot_number}: volume (mL) drawn from pool {spec.number}",
    )


def _lot_amount(spec: InputSpec, source: Lot, lot_number: str) -> int:
    if spec.quantity is None:
        raise InvalidInput(
            f"Lot {lot_number}: give the quantity drawn from lot {spec.number}, e.g. --lot {spec.number}=120."
        )
    if source.quantity is None or source.unit is None:
        raise QuantityNotRecorded(
            f"Lot {source.lot_number} has no recorded quantity, so nothing can be drawn from it; record it first: "
            f"plasmatrace lot quantity {source.lot_number} --quantity N --unit U --reason TEXT."
        )
    if spec.unit is not None and spec.unit != source.unit.value:
        raise InvalidInput(
            f"Lot {lot_number}: lot {source.lot_number} is counted in {source.unit.value}, not {spec.unit}."
        )
    return check_count(spec.quantity, f"Lot {lot_number}: quantity drawn from lot {source.lot_number}")


def create_lot(
    session: Session,
    *,
    lot_number: str,
    product: str,
    inputs: list[InputSpec],
    actor: str,
    kind: LotKind = LotKind.FINAL,
    policy: Policy = DEFAULT_POLICY,
    quantity: int | None = None,
    unit: LotUnit | None = None,
    expires_on: date | None = None,
    now: datetime | None = None,
) -> Lot:
    """Create a lot of a product the policy knows from released pools and/or released lots (every pool upstream
    of a final lot made for its product), drawing each input's quantity from its balance (the source rows are
    locked, so two lots drawing at once cannot both take the last of it). Raises InvalidInput, InputNotReleased,
    WrongProduct, LineageCycle, DuplicateKey, OverBalance, QuantityNotRecorded."""
    lot_number = check_code(lot_number, "Lot number")
    kind = LotKind(kind)
    product = product.strip()
    if not product:
        raise InvalidInput(f"Lot {lot_number} needs a product.")
    if problem := lot_product_problem(product, kind.value, policy):
        raise InvalidInput(f"Lot {lot_number}: {problem}.")
    if (quantity is None) != (unit is None):
        raise InvalidInput(f"Lot {lot_number}: give --quantity and --unit together.")
    if quantity is not None:
        check_count(quantity, f"Lot {lot_number}: quantity")
    now = now or utcnow()
    if expires_on is not None and expires_on <= now.date():
        raise InvalidInput(f"Lot {lot_number}: expiry {expires_on.isoformat()} is not after today ({now.date()}).")
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
    # Lock the sources in one order (pools, then lots, by number), so two lots drawing at once cannot deadlock.
    for spec in sorted(inputs, key=lambda s: (s.kind != "pool", s.number)):
        source: Pool | Lot = (
            get_pool(session, spec.number, for_update=True)
            if spec.kind == "pool"
            else get_lot(session, spec.number, for_update=True)
        )
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
    draws: list[tuple[InputSpec, Pool | Lot, int, str]] = []
    for spec, source in resolved:
        if isinstance(source, Pool):
            amount, in_unit = _ml(spec, lot_number), "mL"
            balance = pool_balance(session, source)
            what = f"Pool {source.pool_number}"
        else:
            amount = _lot_amount(spec, source, lot_number)
            in_unit = source.unit.value if source.unit else ""
            balance = lot_balance(source)
            what = f"Lot {source.lot_number}"
        available = balance.available or 0
        if amount > available:
            raise OverBalance(
                f"{what} has {available:,} {in_unit} left ({balance.quantity:,} {in_unit}, {balance.drawn:,} drawn, "
                f"{balance.shipped:,} shipped); lot {lot_number} cannot draw {amount:,} {in_unit}."
            )
        draws.append((spec, source, amount, in_unit))
    lot = Lot(
        lot_number=lot_number,
        product=product,
        kind=kind,
        quantity=quantity,
        unit=unit,
        expires_on=expires_on,
        created_by=actor,
    )
    with unique_or_conflict(session, "Lot", lot_number):
        session.add(lot)
    for spec, source, amount, in_unit in draws:
        if isinstance(source, Pool):
            source.drawn_ml += amount
        else:
            source.drawn += amount
        session.add(
            LotInput(
                lot_id=lot.id,
                quantity=amount,
                quantity_unit=in_unit,
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
            "inputs": [
                {"kind": spec.kind, "number": spec.number, "quantity": amount, "unit": in_unit}
                for spec, _, amount, in_unit in draws
            ],
            "quantity": quantity,
            "unit": unit,
            "expires_on": expires_on,
        },
    )
    return lot


def record_quantity(
    session: Session,
    *,
    lot_number: str,
    quantity: int,
    unit: LotUnit,
    reason: str,
    actor: str,
    expires_on: date | None = None,
) -> Lot:
    """Record the quantity (and expiry) of a lot created without one, e.g. before quantities were kept, so that it
    can be shipped and drawn from. What it already shipped and gave counts against it. A quantity once recorded
    is not changed here. Raises WrongState, OverBalance, InvalidInput."""
    reason = audit.require_reason(reason, f"Recording the quantity of lot {lot_number}")
    lot = get_lot(session, lot_number, for_update=True)
    if lot.quantity is not None:
        raise WrongState(f"Lot {lot.lot_number} already has a quantity, {lot.quantity:,} {lot.unit}.")
    check_count(quantity, f"Lot {lot.lot_number}: quantity")
    if quantity < lot.drawn + lot.shipped:
        raise OverBalance(
            f"Lot {lot.lot_number} already gave {lot.drawn:,} to later lots and shipped {lot.shipped:,}; "
            f"its quantity cannot be {quantity:,}."
        )
    lot.quantity, lot.unit = quantity, unit
    if expires_on is not None:
        lot.expires_on = expires_on
    session.flush()
    audit.record(
        session,
        action="lot.quantity-recorded",
        entity_type="lot",
        entity_key=lot.lot_number,
        actor=actor,
        old={"quantity": None},
        new={"quantity": quantity, "unit": unit, "expires_on": lot.expires_on},
        reason=reason,
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
    session: Session,
    *,
    pool_ids: Sequence[int] = (),
    lot_ids: Sequence[int] = (),
    reason: str,
    actor: str,
    itself: Sequence[int] = (),
) -> HeldLots:
    """Quarantine every pending or released lot made from the given pools or lots (at any depth), and the lots
    ``itself`` names (a released lot whose own step failed), with the reason, one ``lot.quarantined`` audit event
    per lot. Set-based: one statement finds and locks the lots."""
    ids = downstream_lot_ids(pool_ids=pool_ids, lot_ids=lot_ids)
    if ids is None and not itself:
        return HeldLots([], [], [])
    wanted = Lot.id.in_(list(itself)) if ids is None else or_(Lot.id.in_(ids), Lot.id.in_(list(itself)))
    lots = list(session.execute(select(Lot).where(wanted).order_by(Lot.lot_number).with_for_update()).scalars())
    holdable = [lot for lot in lots if lot.status in (LotStatus.PENDING, LotStatus.RELEASED)]
    old = {lot.id: lot.status for lot in holdable}
    if holdable:
        audit.records.touching(session, "lot", [lot.id for lot in holdable if lot.id is not None])
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
    now: datetime | None = None,
) -> Shipment:
    """Record a shipment of a released lot to a consignee (by code), within the lot's balance (its quantity less
    what was drawn from it and already shipped), when nothing upstream blocks it now (``lot_blockers``: a pool
    retest, a failed step or a deviation recorded after the release). Raises WrongState, LotNotShippable,
    ConsigneeNotFound, QuantityNotRecorded, OverBalance, ImplausibleTime."""
    lot = lock_lineage(session, lot_number)
    if lot.status != LotStatus.RELEASED:
        why = f" ({lot.status_reason})" if lot.status_reason else ""
        raise WrongState(f"Lot {lot.lot_number} is {lot.status.value}{why}; only a released lot can be shipped.")
    problems = lot_blockers(session, lot, policy)
    if problems:
        raise LotNotShippable(lot.lot_number, problems)
    if not consignee.strip():
        raise InvalidInput(f"Shipment of lot {lot.lot_number} needs a consignee (--to CODE).")
    check_count(quantity, f"Shipment of lot {lot.lot_number}: quantity")
    n = (session.execute(select(func.count(Shipment.id)).where(Shipment.lot_id == lot.id)).scalar() or 0) + 1
    number = f"{lot.lot_number}-SH{n:03d}"
    # Quantities, consignee and dates (SPEC §10): checked together, before anything is written.
    to = get_consignee(session, consignee)
    check_shipment(
        f"Shipment {number} of lot {lot.lot_number}",
        shipped_on=shipped_on,
        released_at=lot.released_at,
        now=now or utcnow(),
    )
    if lot.expires_on is not None and shipped_on > lot.expires_on:
        raise WrongState(
            f"Lot {lot.lot_number} expired on {lot.expires_on.isoformat()}; it cannot ship on {shipped_on}."
        )
    balance = lot_balance(lot)
    if balance.available is None:
        raise QuantityNotRecorded(
            f"Lot {lot.lot_number} has no recorded quantity, so its balance is unknown and it cannot be shipped; "
            f"record it first: plasmatrace lot quantity {lot.lot_number} --quantity N --unit U --reason TEXT."
        )
    if quantity > balance.available:
        raise OverBalance(
            f"Lot {lot.lot_number} has {balance.available:,} {balance.unit} left ({balance.quantity:,} made, "
            f"{balance.drawn:,} drawn, {balance.shipped:,} shipped); {quantity:,} cannot be shipped."
        )
    lot.shipped += quantity
    row = Shipment(
        shipment_number=number,
        lot_id=lot.id,
        consignee_id=to.id,
        consignee=to.name,
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
        new={
            "shipment": row.shipment_number,
            "consignee": to.code,
            "quantity": quantity,
            "unit": balance.unit,
            "shipped_on": shipped_on,
        },
    )
    return row
