"""Look-back cases: from post-donation information about a donor to every implicated unit, lot and consignee, with
tasks that run to their deadlines (21 CFR 610.46/610.47: 3 and 45 calendar days) and holds on every lot downstream.

One open case per donor: a later finding (another reactive result, information received) joins the open case, adding
the units, lots, consignees and tasks it brings. What a case implicates comes from ``queries.impact.case_impact``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from .. import audit
from ..calendars import local_day
from ..db import lock_audit_chain
from ..errors import CaseNotFound, InvalidInput, NotPermitted, WrongState
from ..models import (
    CaseFinding,
    CaseStatus,
    CaseTask,
    CaseTrigger,
    Decision,
    Donation,
    Donor,
    Establishment,
    LookbackCase,
    Lot,
    LotHold,
    TaskKind,
    TaskState,
    UnitStatus,
    saved_id,
    utcnow,
)
from ..queries.eligibility import LookbackWindow, lookback_window
from ..queries.holds import active_holds
from ..queries.impact import Impact, case_impact
from ..queries.lookup import get_donor, get_lot
from ..rules import DEFAULT_POLICY, Policy, case_due_on
from .common import record_interdicted, row_values, unique_or_conflict
from .holds import lift_hold, place_hold


@dataclass(frozen=True)
class CaseOpened:
    case_number: str
    donor_code: str
    interdicted: list[str]
    pooled: list[str]
    other: list[str]
    joined: bool = False  # the donor had an open case: this finding joined it
    held: list[str] = field(default_factory=list)  # lots newly held by the case
    tasks: int = 0  # tasks added
    first_due: date | None = None


def _next_case_number(session: Session, year: int) -> str:
    prefix = f"LB-{year}-"
    count = (
        session.execute(
            select(func.count(col(LookbackCase.id))).where(col(LookbackCase.case_number).like(f"{prefix}%"))
        ).scalar()
        or 0
    )
    return f"{prefix}{count + 1:04d}"


def _donor_zone(session: Session, donor: Donor) -> str:
    zone: str = session.execute(
        select(col(Establishment.timezone)).where(col(Establishment.id) == donor.establishment_id)
    ).scalar_one()
    return zone


def open_case(
    session: Session,
    *,
    donor_code: str,
    reason: str,
    actor: str,
    policy: Policy = DEFAULT_POLICY,
    trigger: CaseTrigger = CaseTrigger.OTHER,
    received_at: datetime | None = None,
    window: LookbackWindow | None = None,
    timezone: str | None = None,
) -> CaseOpened:
    """Open a case, or join the donor's open case: every donation in the window becomes a finding; those still in
    inventory are interdicted; every lot downstream of the pooled units is held; tasks fall due ``policy``'s
    calendar days after the local day of ``received_at`` (the reactive test, or now: the information received)."""
    reason = audit.require_reason(reason, f"A look-back case for donor {donor_code}")
    donor = get_donor(session, donor_code)
    # Two findings about one donor at once: a reactive result locks the donor first (apply_reactive), so the second
    # waits and joins the case the first opened; two `lookback open` at once meet at the partial unique index.
    # The audit chain's lock, taken now rather than at the first event: case numbers are counted, so two cases
    # opened at once (for different donors) are numbered one after the other instead of colliding.
    lock_audit_chain(session)
    window = window or lookback_window(session, saved_id(donor.id), policy=policy)
    tz = timezone or _donor_zone(session, donor)
    received_on = local_day(received_at or utcnow(), tz)
    case = session.execute(
        select(LookbackCase)
        .where(col(LookbackCase.donor_id) == donor.id, col(LookbackCase.status) == CaseStatus.OPEN)
        .with_for_update()
    ).scalar_one_or_none()
    joined = case is not None
    if case is None:
        case = LookbackCase(
            case_number=_next_case_number(session, utcnow().year),
            donor_id=saved_id(donor.id),
            reason=reason,
            window_start=window.starts_at,
            created_by=actor,
            trigger=trigger,
            received_on=received_on,
            timezone=tz,
        )
        with unique_or_conflict(
            session, "Look-back case", f"{case.case_number} (or an open case of donor {donor.donor_code})"
        ):
            session.add(case)
    assert case.id is not None
    impact = case_impact(session, saved_id(donor.id), window)
    known = set(
        session.execute(select(col(CaseFinding.donation_id)).where(col(CaseFinding.case_id) == case.id)).scalars()
    )
    pooled_ids = {p.donation_id: p for p in impact.pooled}
    numbers = dict(
        session.execute(
            select(col(Donation.id), col(Donation.unit_number)).where(col(Donation.id).in_(impact.donation_ids))
        ).all()
    )
    statuses = dict(
        session.execute(
            select(col(Donation.id), col(Donation.status)).where(col(Donation.id).in_(impact.donation_ids))
        ).all()
    )
    interdicted, pooled, other, stopped = [], [], [], []
    findings: list[CaseFinding] = []
    for donation_id in impact.donation_ids:
        if donation_id in known:
            continue
        status, number = statuses[donation_id], numbers[donation_id]
        found = pooled_ids.get(donation_id)
        if found is not None:
            action = "pooled"
            pooled.append(number)
        elif status in (UnitStatus.IN_INVENTORY, UnitStatus.INTERDICTED):
            action = "interdicted"
            interdicted.append(number)
            if status == UnitStatus.IN_INVENTORY:
                stopped.append(number)
        else:
            action = f"already {status.value}"
            other.append(number)
        finding = CaseFinding(
            case_id=case.id,
            donation_id=donation_id,
            pool_id=found.pool_id if found else None,
            action=action,
            created_by=actor,
        )
        session.add(finding)
        findings.append(finding)
    if stopped:
        audit.recording.touching_where(
            session,
            "donation",
            col(Donation.unit_number).in_(stopped) & (col(Donation.status) == UnitStatus.IN_INVENTORY),
        )
        session.execute(
            update(Donation)
            .where(col(Donation.unit_number).in_(stopped), col(Donation.status) == UnitStatus.IN_INVENTORY)
            .values(status=UnitStatus.INTERDICTED, status_reason=f"look-back case {case.case_number}")
            .execution_options(synchronize_session=False)
        )
    session.flush()
    audit.record(
        session,
        action="lookback.joined" if joined else "lookback.opened",
        entity_type="lookback_case",
        entity_key=case.case_number,
        actor=actor,
        new={
            **row_values(case),
            "donor": donor.donor_code,
            "window_starts_on": window.starts_on,
            "last_nonreactive": window.last_nonreactive,
            "interdicted": interdicted,
            "pooled": pooled,
            "other": other,
            "findings": [row_values(f) for f in findings],  # every case_finding row added, in full
        },
        reason=reason,
    )
    record_interdicted(session, stopped, actor=actor, reason=f"look-back case {case.case_number}")
    held = _hold_lots(session, case, impact, donor_code=donor.donor_code, actor=actor)
    if held:  # a shipment that committed while the holds waited for it is among the consignees now
        impact = case_impact(session, saved_id(donor.id), window)
    tasks = _add_tasks(session, case, impact, received_on=received_on, actor=actor, policy=policy)
    first_due = min((t.due_on for t in tasks if t.due_on is not None), default=None)
    return CaseOpened(
        case.case_number, donor.donor_code, interdicted, pooled, other, joined, held, len(tasks), first_due
    )


def _add_tasks(
    session: Session, case: LookbackCase, impact: Impact, *, received_on: date, actor: str, policy: Policy
) -> list[CaseTask]:
    """The tasks the case does not have yet: a review and quarantine when none is open, a quarantine request per
    consignee of every implicated lot, supplemental results per consignee, an assessment per implicated lot."""
    existing = list(session.execute(select(CaseTask).where(col(CaseTask.case_id) == case.id)).scalars())
    have = {(t.kind, t.lot_id, t.consignee_id) for t in existing}
    seq = max((t.seq for t in existing), default=0)
    quarantine_due = case_due_on(received_on, policy.lookback_quarantine_days)
    supplemental_due = case_due_on(received_on, policy.lookback_supplemental_days)
    wanted: list[tuple[TaskKind, int | None, int | None, date | None]] = []
    if not any(t.kind == TaskKind.REVIEW_QUARANTINE and t.state == TaskState.OPEN for t in existing):
        wanted.append((TaskKind.REVIEW_QUARANTINE, None, None, quarantine_due))
    for line in impact.consignees:
        wanted.append((TaskKind.QUARANTINE_REQUEST, line.lot_id, line.consignee_id, quarantine_due))
    for receiver in impact.consignee_ids():
        wanted.append((TaskKind.SUPPLEMENTAL_RESULTS, None, receiver, supplemental_due))
    for assessed, _ in impact.lots_by_number():
        wanted.append((TaskKind.ASSESSMENT, assessed, None, None))
    added = []
    for kind, lot_id, consignee_id, due_on in wanted:
        if kind != TaskKind.REVIEW_QUARANTINE and (kind, lot_id, consignee_id) in have:
            continue
        seq += 1
        task = CaseTask(
            case_id=case.id or 0,
            seq=seq,
            kind=kind,
            lot_id=lot_id,
            consignee_id=consignee_id,
            due_on=due_on,
            created_by=actor,
        )
        session.add(task)
        added.append(task)
    session.flush()
    for task in added:
        audit.record(
            session,
            action="lookback.task_added",
            entity_type="case_task",
            entity_key=f"{case.case_number}#{task.seq}",
            actor=actor,
            new=row_values(task),
        )
    return added


def _hold_lots(session: Session, case: LookbackCase, impact: Impact, *, donor_code: str, actor: str) -> list[str]:
    """Hold every implicated lot the case has not held yet. Each hold row's foreign key locks its lot (KEY SHARE)
    against a `lot ship` or `lot release` under way (FOR UPDATE): whichever comes second waits and then sees the
    other (an investigator holds no UPDATE right on lots, so no explicit lock is taken here)."""
    if not impact.lots:
        return []
    lots = list(session.execute(select(Lot).where(col(Lot.id).in_(list(impact.lots))).order_by(col(Lot.id))).scalars())
    already = set(session.execute(select(col(LotHold.lot_id)).where(col(LotHold.case_id) == case.id)).scalars())
    held = []
    for lot in sorted(lots, key=lambda x: x.lot_number):
        if lot.id in already:
            continue
        place_hold(
            session,
            lot,
            reason=f"made from pool(s) {', '.join(sorted(impact.pools.values()))} with units of donor {donor_code} "
            "in the look-back window",
            actor=actor,
            case=case,
        )
        held.append(lot.lot_number)
    return held


def get_case(session: Session, case_number: str, *, for_update: bool = False) -> LookbackCase:
    query = select(LookbackCase).where(col(LookbackCase.case_number) == case_number.strip())
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    case: LookbackCase | None = session.execute(query).scalar_one_or_none()
    if case is None:
        raise CaseNotFound(case_number)
    return case


def _open_case(session: Session, case_number: str) -> LookbackCase:
    case = get_case(session, case_number, for_update=True)
    if case.status != CaseStatus.OPEN:
        raise WrongState(f"Look-back case {case.case_number} is closed; its tasks can no longer change.")
    return case


def _task(session: Session, case: LookbackCase, seq: int) -> CaseTask:
    task: CaseTask | None = session.execute(
        select(CaseTask).where(col(CaseTask.case_id) == case.id, col(CaseTask.seq) == seq).with_for_update()
    ).scalar_one_or_none()
    if task is None:
        raise InvalidInput(
            f"Look-back case {case.case_number} has no task {seq}; see plasmatrace lookback show {case.case_number}."
        )
    if task.state != TaskState.OPEN:
        raise WrongState(f"Task {seq} of look-back case {case.case_number} is already {task.state.value}.")
    return task


def _finish(
    session: Session,
    case: LookbackCase,
    task: CaseTask,
    *,
    state: TaskState,
    note: str,
    actor: str,
    decision: Decision | None = None,
) -> None:
    task.state, task.note, task.decision = state, note, decision
    task.done_at, task.done_by = utcnow(), actor
    session.flush()
    audit.record(
        session,
        action=f"lookback.task_{state.value}",
        entity_type="case_task",
        entity_key=f"{case.case_number}#{task.seq}",
        actor=actor,
        old={"state": TaskState.OPEN},
        new=row_values(task),
        reason=note,
    )


def finish_task(
    session: Session, *, case_number: str, seq: int, actor: str, note: str | None = None, waive: str | None = None
) -> CaseTask:
    """Mark a task done with a note, or waive it with a reason. An assessment is done by ``assess``."""
    case = _open_case(session, case_number)
    task = _task(session, case, seq)
    if waive is not None:
        reason = audit.require_reason(waive, f"Waiving task {seq} of look-back case {case.case_number}")
        _finish(session, case, task, state=TaskState.WAIVED, note=reason, actor=actor)
        return task
    if task.kind == TaskKind.ASSESSMENT:
        lot = session.get_one(Lot, task.lot_id)
        raise InvalidInput(
            f"Task {seq} of look-back case {case.case_number} is the assessment of lot {lot.lot_number}: "
            f"plasmatrace lookback assess {case.case_number} {lot.lot_number} --decision no-action|withdraw|recall "
            "--reason TEXT."
        )
    text = audit.require_reason(note or "", f"Task {seq} of look-back case {case.case_number} (--note)")
    _finish(session, case, task, state=TaskState.DONE, note=text, actor=actor)
    return task


@dataclass(frozen=True)
class Assessed:
    lot_number: str
    decision: Decision
    lifted: bool  # the case's hold on the lot was lifted (no-action)
    still_held: list[str]  # other holds that stand on the lot


def assess_lot(
    session: Session, *, case_number: str, lot_number: str, decision: Decision, reason: str, actor: str
) -> Assessed:
    """Record the assessment of an implicated lot. No action lifts the case's hold on it; withdraw and recall keep
    it held (an approver unholds it, or a recall takes over)."""
    case = _open_case(session, case_number)
    lot = get_lot(session, lot_number)
    reason = audit.require_reason(reason, f"The assessment of lot {lot.lot_number} in case {case.case_number}")
    seq = session.execute(
        select(col(CaseTask.seq)).where(
            col(CaseTask.case_id) == case.id, col(CaseTask.kind) == TaskKind.ASSESSMENT, col(CaseTask.lot_id) == lot.id
        )
    ).scalar()
    if seq is None:
        raise InvalidInput(f"Lot {lot.lot_number} is not implicated by look-back case {case.case_number}.")
    task = _task(session, case, seq)
    _finish(session, case, task, state=TaskState.DONE, note=reason, actor=actor, decision=decision)
    lifted = False
    if decision == Decision.NO_ACTION:
        for hold in session.execute(
            select(LotHold).where(
                col(LotHold.lot_id) == lot.id, col(LotHold.case_id) == case.id, col(LotHold.lifted_at).is_(None)
            )
        ).scalars():
            lift_hold(
                session, hold, lot.lot_number, reason=f"assessed no-action in {case.case_number}: {reason}", actor=actor
            )
            lifted = True
    still = [h.text() for h in active_holds(session, [lot.id or 0]).get(lot.id or 0, [])]
    return Assessed(lot.lot_number, decision, lifted, still)


def close_case(
    session: Session, *, case_number: str, reason: str, actor: str, policy: Policy = DEFAULT_POLICY
) -> LookbackCase:
    """Close a case with its conclusion, once every task is done or waived with a reason. With separation of
    duties on (``release.separate_duties``), not by the person who opened it."""
    reason = audit.require_reason(reason, f"Closing look-back case {case_number}")
    case = get_case(session, case_number, for_update=True)
    if case.status != CaseStatus.OPEN:
        raise WrongState(f"Look-back case {case.case_number} is already closed.")
    open_tasks = list(
        session.execute(
            select(CaseTask)
            .where(col(CaseTask.case_id) == case.id, col(CaseTask.state) == TaskState.OPEN)
            .order_by(col(CaseTask.seq))
        ).scalars()
    )
    if open_tasks:
        listed = ", ".join(f"{t.seq} ({t.kind.value})" for t in open_tasks[:10])
        more = f" and {len(open_tasks) - 10} more" if len(open_tasks) > 10 else ""
        raise WrongState(
            f"Look-back case {case.case_number} has {len(open_tasks)} open task(s): {listed}{more}; each must be "
            "done or waived with a reason before the case closes."
        )
    if policy.release.separate_duties and case.created_by == actor:
        raise NotPermitted(
            f"Look-back case {case.case_number} was opened by {actor}, who may not close it too (policy "
            "release.separate_duties); another investigator must close it."
        )
    case.status, case.closed_at, case.closure, case.closed_by = CaseStatus.CLOSED, utcnow(), reason, actor
    session.flush()
    audit.record(
        session,
        action="lookback.closed",
        entity_type="lookback_case",
        entity_key=case.case_number,
        actor=actor,
        old={"status": CaseStatus.OPEN},
        new=row_values(case),
        reason=reason,
    )
    return case
