"""Look-back cases: from post-donation information about a donor to every implicated unit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlmodel import Session

from .. import audit
from ..errors import CaseNotFound, Conflict, WrongState
from ..models import CaseFinding, CaseStatus, Donation, LookbackCase, PoolMember, UnitStatus, utcnow
from ..queries.eligibility import donations_in_window, lookback_window
from ..queries.lookup import get_donor
from ..rules import DEFAULT_POLICY, Policy
from .common import unique_or_conflict


@dataclass(frozen=True)
class CaseOpened:
    case_number: str
    donor_code: str
    interdicted: list[str]
    pooled: list[str]
    other: list[str]


def _next_case_number(session: Session, year: int) -> str:
    prefix = f"LB-{year}-"
    count = (
        session.execute(select(func.count(LookbackCase.id)).where(LookbackCase.case_number.like(f"{prefix}%"))).scalar()
        or 0
    )
    return f"{prefix}{count + 1:04d}"


def open_case(
    session: Session, *, donor_code: str, reason: str, actor: str, policy: Policy = DEFAULT_POLICY
) -> CaseOpened:
    """Open a case: every donation in the window becomes a finding; those still in inventory are interdicted."""
    reason = audit.require_reason(reason, f"A look-back case for donor {donor_code}")
    donor = get_donor(session, donor_code)
    already = session.execute(
        select(LookbackCase.case_number).where(
            LookbackCase.donor_id == donor.id, LookbackCase.status == CaseStatus.OPEN
        )
    ).scalar()
    if already is not None:
        raise Conflict(
            f"Donor {donor.donor_code} already has an open look-back case, {already}; one open case per donor."
        )
    window = lookback_window(session, donor.id, policy=policy)
    in_window = donations_in_window(session, donor.id, window)
    now = utcnow()
    case = LookbackCase(
        case_number=_next_case_number(session, now.year),
        donor_id=donor.id,
        reason=reason,
        window_start=window.starts_at,
        created_by=actor,
    )
    with unique_or_conflict(
        session, "Look-back case", f"{case.case_number} (or an open case of donor {donor.donor_code})"
    ):
        session.add(case)
    query = (
        select(Donation.id, Donation.unit_number, Donation.status, PoolMember.pool_id)
        .outerjoin(PoolMember, PoolMember.donation_id == Donation.id)
        .where(Donation.id.in_(in_window))
        .order_by(Donation.collected_at)
    )
    rows = session.execute(query).all()
    interdicted, pooled, other = [], [], []
    for donation_id, number, status, pool_id in rows:
        if status == UnitStatus.IN_INVENTORY:
            action = "interdicted"
            interdicted.append(number)
        elif pool_id is not None:
            action = "pooled"
            pooled.append(number)
        else:
            action = f"already {status.value}"
            other.append(number)
        session.add(
            CaseFinding(case_id=case.id, donation_id=donation_id, pool_id=pool_id, action=action, created_by=actor)
        )
    if interdicted:
        audit.records.touching_where(
            session, "donation", Donation.unit_number.in_(interdicted) & (Donation.status == UnitStatus.IN_INVENTORY)
        )
        session.execute(
            update(Donation)
            .where(Donation.unit_number.in_(interdicted), Donation.status == UnitStatus.IN_INVENTORY)
            .values(status=UnitStatus.INTERDICTED, status_reason=f"look-back case {case.case_number}")
            .execution_options(synchronize_session=False)
        )
    session.flush()
    audit.record(
        session,
        action="lookback.opened",
        entity_type="lookback_case",
        entity_key=case.case_number,
        actor=actor,
        new={
            "donor": donor_code,
            "window_starts_on": window.starts_on,
            "last_nonreactive": window.last_nonreactive,
            "interdicted": interdicted,
            "pooled": pooled,
            "other": other,
        },
        reason=reason,
    )
    for number in interdicted:
        audit.record(
            session,
            action="donation.interdicted",
            entity_type="donation",
            entity_key=number,
            actor=actor,
            old={"status": UnitStatus.IN_INVENTORY},
            new={"status": UnitStatus.INTERDICTED},
            reason=f"look-back case {case.case_number}",
        )
    return CaseOpened(case.case_number, donor_code, interdicted, pooled, other)


def close_case(session: Session, *, case_number: str, reason: str, actor: str) -> LookbackCase:
    """Close a case with its conclusion."""
    reason = audit.require_reason(reason, f"Closing look-back case {case_number}")
    case = session.execute(
        select(LookbackCase).where(LookbackCase.case_number == case_number).with_for_update()
    ).scalar_one_or_none()
    if case is None:
        raise CaseNotFound(case_number)
    if case.status != CaseStatus.OPEN:
        raise WrongState(f"Look-back case {case_number} is already closed.")
    case.status, case.closed_at, case.closure = CaseStatus.CLOSED, utcnow(), reason
    session.flush()
    audit.record(
        session,
        action="lookback.closed",
        entity_type="lookback_case",
        entity_key=case_number,
        actor=actor,
        old={"status": CaseStatus.OPEN},
        new={"status": CaseStatus.CLOSED},
        reason=reason,
    )
    return case
