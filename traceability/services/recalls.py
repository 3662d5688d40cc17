"""Recalls (SPEC §12): a lot and every lot made from it, every consignee they reached, notices and returns.

A recall lists, when it opens, each consignee shipped any of its lots with the quantity shipped; it then records
the day each was notified, its acknowledgement and what it returned (never above what it was shipped), and closes
only when every consignee was notified and acknowledged. Every write is an audit event with the row's new state.
Drills (``record_drill``) are kept outside the audit chain: a drill changes no regulated record.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, SQLModel, col

from .. import audit
from ..errors import (
    Conflict,
    InvalidInput,
    NotAConsigneeOfRecall,
    RecallIncomplete,
    RecallNotFound,
    WrongState,
)
from ..models import (
    Consignee,
    DrillSubject,
    Lot,
    Recall,
    RecallClass,
    RecallConsignee,
    RecallDrill,
    RecallStatus,
    Shipment,
    utcnow,
)
from ..queries.drill import DrillAnswer, recall_lot_ids
from ..queries.lookup import get_consignee, get_lot
from .common import check_count, unique_or_conflict


def row_state(row: SQLModel) -> dict[str, Any]:
    """Every column of a row, keyed by column name: what the audit event keeps as its new state."""
    table: Any = type(row).__table__  # type: ignore[attr-defined]
    return {column.name: getattr(row, column.name) for column in table.columns}


def _next_recall_number(session: Session, year: int) -> str:
    prefix = f"RC-{year}-"
    count = session.execute(
        select(func.count(col(Recall.id))).where(col(Recall.recall_number).like(f"{prefix}%"))
    ).scalar()
    return f"{prefix}{(count or 0) + 1:04d}"


def get_recall(session: Session, recall_number: str, *, for_update: bool = False) -> Recall:
    query = select(Recall).where(col(Recall.recall_number) == recall_number.strip())
    if for_update:
        query = query.with_for_update()
    recall: Recall | None = session.execute(query).scalar_one_or_none()
    if recall is None:
        raise RecallNotFound(recall_number)
    return recall


def open_recall(
    session: Session, *, lot_number: str, recall_class: RecallClass, reason: str, actor: str
) -> tuple[Recall, list[RecallConsignee]]:
    """Open a recall of a lot: every consignee of it and of every lot made from it is listed with the quantity
    it was shipped. One open recall per lot (Conflict). Raises LotNotFound, InvalidInput."""
    reason = audit.require_reason(reason, f"A recall of lot {lot_number}")
    lot = get_lot(session, lot_number)
    already = session.execute(
        select(col(Recall.recall_number)).where(col(Recall.lot_id) == lot.id, col(Recall.status) == RecallStatus.OPEN)
    ).scalar()
    if already is not None:
        raise Conflict(f"Lot {lot.lot_number} already has an open recall, {already}.")
    lot_ids = recall_lot_ids(session, lot.id or 0)
    shipped: dict[int, int] = defaultdict(int)
    for consignee_id, quantity in session.execute(
        select(col(Shipment.consignee_id), col(Shipment.quantity)).where(col(Shipment.lot_id).in_(sorted(lot_ids)))
    ):
        shipped[consignee_id] += quantity
    now = utcnow()
    recall = Recall(
        recall_number=_next_recall_number(session, now.year),
        lot_id=lot.id or 0,
        recall_class=recall_class,
        reason=reason,
        created_at=now,
        created_by=actor,
    )
    with unique_or_conflict(session, "Recall", recall.recall_number):
        session.add(recall)
    audit.record(
        session,
        action="recall.opened",
        entity_type="recall",
        entity_key=recall.recall_number,
        actor=actor,
        new={**row_state(recall), "lot": lot.lot_number},
        reason=reason,
    )
    codes: dict[int, str] = {
        i: code
        for i, code in session.execute(
            select(col(Consignee.id), col(Consignee.code)).where(col(Consignee.id).in_(sorted(shipped)))
        )
    }
    listed: list[RecallConsignee] = []
    for consignee_id in sorted(shipped, key=lambda i: codes[i]):
        row = RecallConsignee(
            recall_id=recall.id or 0,
            consignee_id=consignee_id,
            shipped=shipped[consignee_id],
            created_at=now,
            created_by=actor,
        )
        session.add(row)
        session.flush()
        listed.append(row)
        audit.record(
            session,
            action="recall.consignee_listed",
            entity_type="recall_consignee",
            entity_key=f"{recall.recall_number}/{codes[consignee_id]}",
            actor=actor,
            new={**row_state(row), "consignee": codes[consignee_id]},
        )
    return recall, listed


def _consignee_row(session: Session, recall: Recall, code: str) -> tuple[RecallConsignee, Consignee]:
    consignee = get_consignee(session, code)
    row = session.execute(
        select(RecallConsignee)
        .where(col(RecallConsignee.recall_id) == recall.id, col(RecallConsignee.consignee_id) == consignee.id)
        .with_for_update()
    ).scalar_one_or_none()
    if row is None:
        raise NotAConsigneeOfRecall(recall.recall_number, consignee.code)
    return row, consignee


def _require_open(recall: Recall) -> None:
    if recall.status != RecallStatus.OPEN:
        raise WrongState(f"Recall {recall.recall_number} is closed; nothing more can be recorded on it.")


def notify(
    session: Session, *, recall_number: str, consignee_code: str, actor: str, on: date | None = None
) -> RecallConsignee:
    """Record that a consignee was notified (on a day, default today): not in the future, not before the recall
    opened (InvalidInput); once per consignee (WrongState)."""
    recall = get_recall(session, recall_number, for_update=True)
    _require_open(recall)
    row, consignee = _consignee_row(session, recall, consignee_code)
    today = utcnow().date()
    day = on or today
    if day > today:
        raise InvalidInput(f"Recall {recall.recall_number}: notification day {day} is in the future (today {today}).")
    opened = recall.created_at.date()
    if day < opened:
        raise InvalidInput(
            f"Recall {recall.recall_number}: notification day {day} is before the recall was opened ({opened})."
        )
    if row.notified_on is not None:
        raise WrongState(
            f"Consignee {consignee.code} was already notified of recall {recall.recall_number} on {row.notified_on}."
        )
    old = row_state(row)
    row.notified_on, row.notified_by = day, actor
    session.flush()
    audit.record(
        session,
        action="recall.notified",
        entity_type="recall_consignee",
        entity_key=f"{recall.recall_number}/{consignee.code}",
        actor=actor,
        old=old,
        new={**row_state(row), "consignee": consignee.code},
    )
    return row


def acknowledge(
    session: Session, *, recall_number: str, consignee_code: str, actor: str, returned: int | None = None
) -> RecallConsignee:
    """Record a consignee's acknowledgement and, optionally, the quantity it returned (the total so far; a later
    acknowledgement may raise it). Needs a notification first (WrongState); returned never above what the consignee
    was shipped (InvalidInput)."""
    recall = get_recall(session, recall_number, for_update=True)
    _require_open(recall)
    row, consignee = _consignee_row(session, recall, consignee_code)
    if row.notified_on is None:
        raise WrongState(
            f"Consignee {consignee.code} has not been notified of recall {recall.recall_number}; "
            f"record the notification first (recall notify {recall.recall_number} {consignee.code})."
        )
    if returned is not None:
        check_count(returned, f"Recall {recall.recall_number}: quantity returned by {consignee.code}", allow_zero=True)
        if returned > row.shipped:
            raise InvalidInput(
                f"Recall {recall.recall_number}: {consignee.code} returned {returned:,}, more than the {row.shipped:,} "
                "it was shipped of the recalled lots."
            )
    if row.acknowledged_at is not None and (returned is None or returned == row.returned):
        raise WrongState(
            f"Consignee {consignee.code} already acknowledged recall {recall.recall_number} "
            f"at {row.acknowledged_at.isoformat()}."
        )
    old = row_state(row)
    if row.acknowledged_at is None:
        row.acknowledged_at, row.acknowledged_by = utcnow(), actor
    if returned is not None:
        row.returned = returned
    session.flush()
    audit.record(
        session,
        action="recall.acknowledged",
        entity_type="recall_consignee",
        entity_key=f"{recall.recall_number}/{consignee.code}",
        actor=actor,
        old=old,
        new={**row_state(row), "consignee": consignee.code},
    )
    return row


def close_recall(session: Session, *, recall_number: str, actor: str) -> Recall:
    """Close a recall once every consignee was notified and acknowledged (RecallIncomplete names who is not)."""
    recall = get_recall(session, recall_number, for_update=True)
    _require_open(recall)
    rows = session.execute(
        select(col(Consignee.code), col(RecallConsignee.notified_on), col(RecallConsignee.acknowledged_at))
        .join(Consignee, col(Consignee.id) == col(RecallConsignee.consignee_id))
        .where(col(RecallConsignee.recall_id) == recall.id)
        .order_by(col(Consignee.code))
    ).all()
    missing = [
        f"{code}: not notified" if notified is None else f"{code}: notified on {notified}, not acknowledged"
        for code, notified, acknowledged in rows
        if notified is None or acknowledged is None
    ]
    if missing:
        raise RecallIncomplete(recall.recall_number, missing)
    old = row_state(recall)
    recall.status, recall.closed_at, recall.closed_by = RecallStatus.CLOSED, utcnow(), actor
    session.flush()
    lot_number = session.execute(select(col(Lot.lot_number)).where(col(Lot.id) == recall.lot_id)).scalar_one()
    audit.record(
        session,
        action="recall.closed",
        entity_type="recall",
        entity_key=recall.recall_number,
        actor=actor,
        old=old,
        new={**row_state(recall), "lot": lot_number},
    )
    return recall


def record_drill(session: Session, *, answer: DrillAnswer, checkpoint: str, actor: str) -> RecallDrill:
    """Keep a drill: who ran it, when, what it asked, how long the answer took and the answer's SHA-256, with the
    audit checkpoint it was read at. Not an audit event: the drill changed nothing."""
    drill = RecallDrill(
        subject=DrillSubject(answer.subject),
        subject_key=answer.key[:40],
        duration_ms=round(answer.duration_ms, 3),
        answer_sha256=answer.digest(),
        units=len(answer.units),
        pools=len(answer.pools),
        lots=len(answer.lots),
        consignees=len(answer.consignees),
        audit_checkpoint=checkpoint,
        created_by=actor,
    )
    session.add(drill)
    session.flush()
    return drill
