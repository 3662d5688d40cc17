"""Look-back cases: each implicated unit, its pool, every lot downstream and every shipment."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from ...errors import CaseNotFound
from ...models import CaseFinding, Donation, Donor, LookbackCase, Pool
from ..graph import downstream_lots
from .lines import FindingLine, ShipmentLine, iso
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

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def trace_case(session: Session, case_number: str) -> CaseTrace:
    """A look-back case with each implicated unit, its pool, every lot downstream and every shipment."""
    case = session.execute(select(LookbackCase).where(LookbackCase.case_number == case_number)).scalar_one_or_none()
    if case is None:
        raise CaseNotFound(case_number)
    donor_code = session.execute(select(Donor.donor_code).where(Donor.id == case.donor_id)).scalar_one()
    rows = session.execute(
        select(
            Donation.unit_number,
            Donation.collected_at,
            Donation.status,
            CaseFinding.action,
            Pool.id.label("pool_id"),
            Pool.pool_number,
            Pool.status.label("pool_status"),
        )
        .join(CaseFinding, CaseFinding.donation_id == Donation.id)
        .outerjoin(Pool, Pool.id == CaseFinding.pool_id)
        .where(CaseFinding.case_id == case.id)
        .order_by(Donation.collected_at)
    ).all()
    pool_ids = sorted({r.pool_id for r in rows if r.pool_id is not None})
    lots_by_pool = downstream_lots(session, pool_ids)
    lot_ids = set().union(*lots_by_pool.values()) if lots_by_pool else set()
    lot_lines = lots(session, lot_ids)
    return CaseTrace(
        case_number=case.case_number,
        status=case.status.value,
        donor_code=donor_code,
        reason=case.reason,
        opened_at=case.created_at.isoformat(),
        opened_by=case.created_by,
        window_start=iso(case.window_start),
        closed_at=iso(case.closed_at),
        closure=case.closure,
        findings=[
            FindingLine(
                unit_number=r.unit_number,
                collected_at=r.collected_at.isoformat(),
                status=r.status.value,
                action=r.action,
                pool_number=r.pool_number,
                pool_status=r.pool_status.value if r.pool_status else None,
                lot_numbers=sorted(lot_lines[i].lot_number for i in lots_by_pool.get(r.pool_id, ())),
            )
            for r in rows
        ],
        pools=sorted({r.pool_number for r in rows if r.pool_number}),
        lots=sorted(x.lot_number for x in lot_lines.values()),
        shipments=shipments(session, lot_ids),
    )


def list_cases(session: Session) -> tuple[list[str], list[list[Any]]]:
    counts = select(CaseFinding.case_id, func.count(CaseFinding.id).label("n")).group_by(CaseFinding.case_id).subquery()
    rows = session.execute(
        select(
            LookbackCase.case_number,
            LookbackCase.status,
            Donor.donor_code,
            LookbackCase.created_at,
            func.coalesce(counts.c.n, 0),
            LookbackCase.reason,
        )
        .join(Donor, Donor.id == LookbackCase.donor_id)
        .outerjoin(counts, counts.c.case_id == LookbackCase.id)
        .order_by(LookbackCase.case_number)
    )
    return (
        ["case", "status", "donor", "opened at", "units", "reason"],
        [[n, s.value, d, o, c, r] for n, s, d, o, c, r in rows],
    )
