"""Holds on lots: a quarantine of everything made from a finding, and formal holds placed and lifted by hand or by
a look-back case (each one ``lot.held`` / ``lot.unheld`` audit event with the hold row in full)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlmodel import Session, col

from .. import audit
from ..errors import WrongState
from ..models import LookbackCase, Lot, LotHold, LotStatus, Shipment, utcnow
from ..queries.graph import downstream_lot_ids
from ..queries.holds import active_holds
from ..queries.lookup import get_lot
from .common import row_values


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
    wanted = col(Lot.id).in_(list(itself)) if ids is None else or_(col(Lot.id).in_(ids), col(Lot.id).in_(list(itself)))
    lots = list(session.execute(select(Lot).where(wanted).order_by(col(Lot.lot_number)).with_for_update()).scalars())
    holdable = [lot for lot in lots if lot.status in (LotStatus.PENDING, LotStatus.RELEASED)]
    old = {lot.id: lot.status for lot in holdable}
    if holdable:
        audit.recording.touching(session, "lot", [lot.id for lot in holdable if lot.id is not None])
        session.execute(
            update(Lot)
            .where(col(Lot.id).in_([lot.id for lot in holdable]))
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
        select(col(Shipment.consignee)).where(col(Shipment.lot_id).in_([lot.id for lot in lots])).distinct()
    ).scalars()
    return HeldLots([lot.lot_number for lot in holdable], [lot.lot_number for lot in lots], sorted(consignees))


def place_hold(session: Session, lot: Lot, *, reason: str, actor: str, case: LookbackCase | None = None) -> LotHold:
    """Record a hold on a lot, by hand or by a look-back case, with its ``lot.held`` audit event."""
    hold = LotHold(lot_id=lot.id or 0, case_id=case.id if case else None, reason=reason, created_by=actor)
    session.add(hold)
    session.flush()
    audit.record(
        session,
        action="lot.held",
        entity_type="lot",
        entity_key=lot.lot_number,
        actor=actor,
        new={**row_values(hold), "case": case.case_number} if case else row_values(hold),
        reason=reason,
    )
    return hold


def lift_hold(session: Session, hold: LotHold, lot_number: str, *, reason: str, actor: str) -> None:
    """Lift one standing hold with the reason, with its ``lot.unheld`` audit event."""
    hold.lifted_at, hold.lifted_by, hold.lift_reason = utcnow(), actor, reason
    session.flush()
    audit.record(
        session,
        action="lot.unheld",
        entity_type="lot",
        entity_key=lot_number,
        actor=actor,
        old={"lifted_at": None},
        new=row_values(hold),
        reason=reason,
    )


def hold_lot(session: Session, *, lot_number: str, reason: str, actor: str) -> LotHold:
    """Hold a lot by hand (approvers): no release and no shipment of it, or of any lot made from it, until it is
    unheld. A lot's status does not change; the hold is one more thing that blocks it (``lot_blockers``)."""
    reason = audit.require_reason(reason, f"A hold on lot {lot_number}")
    lot = get_lot(session, lot_number, for_update=True)
    return place_hold(session, lot, reason=reason, actor=actor)


def unhold_lot(session: Session, *, lot_number: str, reason: str, actor: str) -> list[str]:
    """Lift every hold standing on a lot, by hand or by a look-back case (approvers), with the reason. Returns
    what each lifted hold was. Raises WrongState when no hold stands on it."""
    reason = audit.require_reason(reason, f"Lifting the holds on lot {lot_number}")
    lot = get_lot(session, lot_number, for_update=True)
    standing = active_holds(session, [lot.id or 0]).get(lot.id or 0, [])
    if not standing:
        raise WrongState(f"Lot {lot.lot_number} is not held.")
    rows = session.execute(
        select(LotHold).where(col(LotHold.lot_id) == lot.id, col(LotHold.lifted_at).is_(None)).order_by(col(LotHold.id))
    ).scalars()
    for hold in rows:
        lift_hold(session, hold, lot.lot_number, reason=reason, actor=actor)
    return [h.text() for h in standing]
