"""Look-back cases: each implicated unit, its pool, every lot downstream and every shipment."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from ...errors import CaseNotFound
from ...models import CaseFinding, Donation, Donor, LookbackCase, Pool
from ...rules import DEFAULT_POLICY, Policy
from .. import casework
from ..casework import CaseHoldLine, NotificationLine, TaskLine
from ..graph import downstream_lots
from . import as_of as then
from .lines import FindingLine, ShipmentLine, iso, trace_json
from .shared import lots, shipments


@dataclass
class CaseTrace:
    case_number: str
    status: str
    donor_code: str
    reason: str
    opened_at: str
    opened_by: str
    window_start: str | None
    closed_at: str | None
    closure: str | None
    findings: list[FindingLine]
    pools: list[str]
    lots: list[str]
    shipments: list[ShipmentLine]
    trigger: str = "other"
    received_on: str | None = None  # the local day the tasks' due dates count from
    closed_by: str | None = None
    tasks: list[TaskLine] = field(default_factory=list)  # by number
    notifications: list[NotificationLine] = field(default_factory=list)  # per consignee and implicated lot
    holds: list[CaseHoldLine] = field(default_factory=list)  # every hold the case placed, standing or lifted
    as_of: str | None = None  # the case as recorded at this time (--as-of), or None for today's records

    def as_json(self) -> dict[str, Any]:
        return trace_json(self, "as_of")


def trace_case(
    session: Session, case_number: str, *, as_of: datetime | None = None, policy: Policy = DEFAULT_POLICY
) -> CaseTrace:
    """A look-back case with each implicated unit, its pool, every lot downstream and every shipment; with
    ``as_of`` as recorded then (findings, lots and shipments recorded by then, the statuses of then)."""
    case = session.execute(
        select(LookbackCase).where(col(LookbackCase.case_number) == case_number)
    ).scalar_one_or_none()
    if case is None:
        raise CaseNotFound(case_number)
    at = as_of
    if at is not None:
        then.recorded_at_or_refuse(case.created_at, at, "Look-back case", case.case_number)
    donor_code = session.execute(select(col(Donor.donor_code)).where(col(Donor.id) == case.donor_id)).scalar_one()
    recorded = [] if at is None else [col(CaseFinding.created_at) <= at]
    rows = session.execute(
        select(
            col(Donation.unit_number),
            col(Donation.collected_at),
            col(Donation.status),
            col(CaseFinding.action),
            col(Pool.id).label("pool_id"),
            col(Pool.pool_number),
            col(Pool.status).label("pool_status"),
        )
        .join(CaseFinding, col(CaseFinding.donation_id) == col(Donation.id))
        .outerjoin(Pool, col(Pool.id) == col(CaseFinding.pool_id))
        .where(col(CaseFinding.case_id) == case.id, *recorded)
        .order_by(col(Donation.collected_at))
    ).all()
    units: dict[str, str] = {r.unit_number: r.status.value for r in rows}
    pool_status: dict[str, str] = {r.pool_number: r.pool_status.value for r in rows if r.pool_number}
    status, closed_at, closure = case.status.value, case.closed_at, case.closure
    if at is not None:
        units.update(then.unit_statuses_at(session, units, list(pool_status), at))
        pool_status.update({k: v for k, (v, _) in then.statuses_at(session, "pool", list(pool_status), at).items()})
        status = then.statuses_at(session, "lookback_case", [case.case_number], at).get(
            case.case_number, (status, None)
        )[0]
        if "lookback.closed" not in then.done_by(session, "lookback_case", case.case_number, ["lookback.closed"], at):
            closed_at, closure = None, None
    pool_ids = sorted({r.pool_id for r in rows if r.pool_id is not None})
    lots_by_pool = downstream_lots(session, pool_ids)
    lot_ids = set().union(*lots_by_pool.values()) if lots_by_pool else set()
    lot_lines = lots(session, lot_ids, at=at)
    return CaseTrace(
        case_number=case.case_number,
        status=status,
        donor_code=donor_code,
        reason=case.reason,
        opened_at=case.created_at.isoformat(),
        opened_by=case.created_by,
        window_start=iso(case.window_start),
        closed_at=iso(closed_at),
        closure=closure,
        findings=[
            FindingLine(
                unit_number=r.unit_number,
                collected_at=r.collected_at.isoformat(),
                status=units[r.unit_number],
                action=r.action,
                pool_number=r.pool_number,
                pool_status=pool_status.get(r.pool_number) if r.pool_number else None,
                lot_numbers=sorted(lot_lines[i].lot_number for i in lots_by_pool.get(r.pool_id, ()) if i in lot_lines),
            )
            for r in rows
        ],
        pools=sorted({r.pool_number for r in rows if r.pool_number}),
        lots=sorted(x.lot_number for x in lot_lines.values()),
        shipments=shipments(session, set(lot_lines), at=at),
        trigger=case.trigger.value,
        received_on=iso(case.received_on),
        closed_by=case.closed_by if closed_at is not None else None,
        tasks=casework.case_tasks(session, case.id or 0, policy=policy) if at is None else [],
        notifications=casework.notification_list(session, case.id or 0) if at is None else [],
        holds=casework.case_holds(session, case.id or 0) if at is None else [],
        as_of=then.as_of_text(at),
    )


def list_cases(session: Session) -> tuple[list[str], list[list[Any]]]:
    counts = (
        select(col(CaseFinding.case_id), func.count(col(CaseFinding.id)).label("n"))
        .group_by(col(CaseFinding.case_id))
        .subquery()
    )
    rows = session.execute(
        select(
            col(LookbackCase.case_number),
            col(LookbackCase.status),
            col(Donor.donor_code),
            col(LookbackCase.created_at),
            func.coalesce(counts.c.n, 0),
            col(LookbackCase.reason),
        )
        .join(Donor, col(Donor.id) == col(LookbackCase.donor_id))
        .outerjoin(counts, counts.c.case_id == col(LookbackCase.id))
        .order_by(col(LookbackCase.case_number))
    )
    return (
        ["case", "status", "donor", "opened at", "units", "reason"],
        [[n, s.value, d, o, c, r] for n, s, d, o, c, r in rows],
    )
