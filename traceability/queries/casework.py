"""The work of look-back cases as read: tasks with their due dates and lateness, what is due across open cases,
the notification list (consignee, address, lot, quantity, shipped on, task state) and the holds a case placed."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlmodel import Session, col

from ..calendars import local_day
from ..models import (
    CaseStatus,
    CaseTask,
    Consignee,
    Donation,
    LookbackCase,
    Lot,
    LotHold,
    LotKind,
    Shipment,
    TaskKind,
    TaskState,
    utcnow,
)
from ..rules import DEFAULT_POLICY, Policy, days_late, final_lot_clearance_problems
from .clearance import lot_clearance
from .lookup import get_lot


@dataclass(frozen=True)
class TaskLine:
    case_number: str
    task: int
    kind: str
    lot_number: str | None
    consignee_code: str | None
    consignee: str | None
    due_on: str | None
    state: str
    days_late: int  # on the case's local day today; 0 unless open and past its due day
    decision: str | None
    note: str | None
    done_by: str | None
    done_at: str | None
    clearance: str | None = None  # an assessment's lot: cumulative log10 on its worst path per virus class

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _lines(session: Session, where: ColumnElement[bool], *, now: datetime) -> list[TaskLine]:
    rows = session.execute(
        select(
            CaseTask,
            col(LookbackCase.case_number),
            col(LookbackCase.timezone),
            col(Lot.lot_number),
            col(Consignee.code),
            col(Consignee.name),
        )
        .join(LookbackCase, col(LookbackCase.id) == col(CaseTask.case_id))
        .outerjoin(Lot, col(Lot.id) == col(CaseTask.lot_id))
        .outerjoin(Consignee, col(Consignee.id) == col(CaseTask.consignee_id))
        .where(where)
    ).all()
    lines = []
    for task, number, tz, lot_number, code, name in rows:
        late = days_late(task.due_on, local_day(now, tz)) if task.state == TaskState.OPEN else 0
        lines.append(
            TaskLine(
                case_number=number,
                task=task.seq,
                kind=task.kind.value,
                lot_number=lot_number,
                consignee_code=code,
                consignee=name,
                due_on=task.due_on.isoformat() if task.due_on else None,
                state=task.state.value,
                days_late=late,
                decision=task.decision.value if task.decision else None,
                note=task.note,
                done_by=task.done_by,
                done_at=task.done_at.isoformat() if task.done_at else None,
            )
        )
    return lines


def case_tasks(
    session: Session, case_id: int, *, now: datetime | None = None, policy: Policy = DEFAULT_POLICY
) -> list[TaskLine]:
    """Every task of a case, by number; an assessment with its lot's clearance (what the decision rests on)."""
    lines = sorted(_lines(session, col(CaseTask.case_id) == case_id, now=now or utcnow()), key=lambda t: t.task)
    return [
        replace(t, clearance=lot_clearance_text(session, t.lot_number, policy))
        if t.kind == TaskKind.ASSESSMENT.value and t.lot_number
        else t
        for t in lines
    ]


def lot_clearance_text(session: Session, lot_number: str, policy: Policy = DEFAULT_POLICY) -> str:
    """A lot's clearance in a line: cumulative log10 per virus class on its worst path (each class its own
    worst path), and for a final lot whether it meets the rule."""
    lot = get_lot(session, lot_number)
    clearance = lot_clearance(session, lot, policy)
    parts = [f"{virus}: {path.cumulative.get(virus, 0.0):g} log" for virus, path in clearance.worst.items()]
    text = ", ".join(parts) or "no step recorded"
    if lot.kind == LotKind.FINAL:
        problems = final_lot_clearance_problems(clearance, policy.clearance)
        text += "; meets the rule" if not problems else "; " + "; ".join(problems)
    return text


def due_tasks(session: Session, *, overdue: bool = False, now: datetime | None = None) -> list[TaskLine]:
    """Open tasks with a due date in open cases, oldest due date first; with ``overdue`` only those late on their
    case's local day today."""
    where = (
        (col(CaseTask.state) == TaskState.OPEN)
        & col(CaseTask.due_on).is_not(None)
        & (col(LookbackCase.status) == CaseStatus.OPEN)
    )
    lines = _lines(session, where, now=now or utcnow())
    if overdue:
        lines = [t for t in lines if t.days_late > 0]
    return sorted(lines, key=lambda t: (t.due_on or "", t.case_number, t.task))


NOTIFICATION_COLUMNS = [
    "consignee",
    "address",
    "lot",
    "quantity",
    "shipped on",
    "quarantine request",
    "supplemental results",
]


@dataclass(frozen=True)
class NotificationLine:
    """One consignee of one implicated lot: what it was shipped and where its notifications stand."""

    consignee_code: str
    consignee: str
    address: str
    lot_number: str
    quantity: int
    unit: str
    shipped_on: list[str]
    quarantine_request: str  # "task state"
    supplemental_results: str  # "task state", or "" when there is none


@dataclass(frozen=True)
class CaseHoldLine:
    """A hold a case placed, standing or lifted."""

    lot_number: str
    reason: str
    held_at: str
    lifted_at: str | None
    lifted_by: str | None


def notification_list(session: Session, case_id: int) -> list[NotificationLine]:
    """Per consignee and implicated lot: name, address, lot, quantity shipped (with unit), the days shipped, and
    the state of the quarantine request and of the consignee's supplemental results (task number, state)."""
    tasks = list(session.execute(select(CaseTask).where(col(CaseTask.case_id) == case_id)).scalars())
    requests = [t for t in tasks if t.kind == TaskKind.QUARANTINE_REQUEST]
    supplemental = {t.consignee_id: t for t in tasks if t.kind == TaskKind.SUPPLEMENTAL_RESULTS}
    if not requests:
        return []
    lot_ids = {t.lot_id for t in requests}
    shipped: dict[tuple[int, int], list[tuple[int, date]]] = defaultdict(list)
    for lot_id, consignee_id, quantity, on in session.execute(
        select(col(Shipment.lot_id), col(Shipment.consignee_id), col(Shipment.quantity), col(Shipment.shipped_on))
        .where(col(Shipment.lot_id).in_(lot_ids))
        .order_by(col(Shipment.shipped_on), col(Shipment.id))
    ):
        shipped[(lot_id, consignee_id)].append((quantity, on))
    lots = {
        i: (n, u.value if u else "")
        for i, n, u in session.execute(
            select(col(Lot.id), col(Lot.lot_number), col(Lot.unit)).where(col(Lot.id).in_(lot_ids))
        )
    }
    consignees = {
        i: (code, name, address)
        for i, code, name, address in session.execute(
            select(col(Consignee.id), col(Consignee.code), col(Consignee.name), col(Consignee.address)).where(
                col(Consignee.id).in_({t.consignee_id for t in requests})
            )
        )
    }
    rows = []
    for task in requests:
        assert task.lot_id is not None and task.consignee_id is not None
        code, name, address = consignees[task.consignee_id]
        lot_number, unit = lots[task.lot_id]
        lines = shipped.get((task.lot_id, task.consignee_id), [])
        later = supplemental.get(task.consignee_id)
        rows.append(
            NotificationLine(
                consignee_code=code,
                consignee=name,
                address=address,
                lot_number=lot_number,
                quantity=sum(q for q, _ in lines),
                unit=unit,
                shipped_on=[on.isoformat() for _, on in lines],
                quarantine_request=f"{task.seq} {task.state.value}",
                supplemental_results=f"{later.seq} {later.state.value}" if later else "",
            )
        )
    return sorted(rows, key=lambda r: (r.consignee, r.lot_number))


def notification_rows(notifications: list[NotificationLine]) -> list[list[Any]]:
    """The notification list as table rows under NOTIFICATION_COLUMNS."""
    return [
        [
            n.consignee,
            n.address,
            n.lot_number,
            f"{n.quantity:,} {n.unit}".strip(),
            ", ".join(n.shipped_on),
            n.quarantine_request,
            n.supplemental_results,
        ]
        for n in notifications
    ]


def case_holds(session: Session, case_id: int) -> list[CaseHoldLine]:
    """Every hold the case placed, standing or lifted, by lot number."""
    rows = session.execute(
        select(
            col(Lot.lot_number),
            col(LotHold.reason),
            col(LotHold.created_at),
            col(LotHold.lifted_at),
            col(LotHold.lifted_by),
        )
        .join(Lot, col(Lot.id) == col(LotHold.lot_id))
        .where(col(LotHold.case_id) == case_id)
        .order_by(col(Lot.lot_number), col(LotHold.id))
    ).all()
    return [
        CaseHoldLine(n, r, at.isoformat(), lifted.isoformat() if lifted else None, by) for n, r, at, lifted, by in rows
    ]


def open_cases_of_units(session: Session, unit_numbers: list[str]) -> list[str]:
    """The open look-back cases of the donors of these units (what a results import opened or joined)."""
    if not unit_numbers:
        return []
    donors = select(col(Donation.donor_id)).where(col(Donation.unit_number).in_(unit_numbers))
    return list(
        session.execute(
            select(col(LookbackCase.case_number))
            .where(col(LookbackCase.donor_id).in_(donors), col(LookbackCase.status) == CaseStatus.OPEN)
            .order_by(col(LookbackCase.case_number))
        ).scalars()
    )
