"""Set-based loading of what the eligibility rules need, for many units at once.

A fixed number of statements per chunk of units, whatever the number of units: the units, the current results,
the donors' qualifying donations and the donors' deferrals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, case, func, select
from sqlmodel import Session

from ..models import Deferral, Donation, Donor, Pool, PoolMember, ResultValue, TestResult
from ..rules import DEFAULT_POLICY, Policy, UnitFacts, deferral_covers, donor_is_qualified

CHUNK = 10_000


def _chunks(items: Sequence[int] | Sequence[str], size: int = CHUNK) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def current_results_query(donation_ids: Select | Sequence[int], markers: Sequence[str] | None = None) -> Select:
    """(donation_id, marker, result, value) of the latest version of each marker of the given donations."""
    latest = select(TestResult.donation_id, TestResult.marker, func.max(TestResult.version).label("version")).where(
        TestResult.donation_id.in_(donation_ids)
    )
    if markers is not None:
        latest = latest.where(TestResult.marker.in_(list(markers)))
    latest_sq = latest.group_by(TestResult.donation_id, TestResult.marker).subquery()
    return select(TestResult.donation_id, TestResult.marker, TestResult.result, TestResult.value).join(
        latest_sq,
        and_(
            TestResult.donation_id == latest_sq.c.donation_id,
            TestResult.marker == latest_sq.c.marker,
            TestResult.version == latest_sq.c.version,
        ),
    )


def qualifying_collections(
    session: Session, donor_ids: Sequence[int], policy: Policy = DEFAULT_POLICY
) -> dict[int, list[datetime]]:
    """Per donor, the collection times of donations whose required panel is complete and wholly nonreactive."""
    panel = [m.value for m in policy.required_panel]
    result: dict[int, list[datetime]] = defaultdict(list)
    for chunk in _chunks(list(donor_ids)):
        donations = select(Donation.id).where(Donation.donor_id.in_(chunk))
        cur = current_results_query(donations, panel).subquery()
        query = (
            select(Donation.donor_id, Donation.collected_at)
            .join(cur, cur.c.donation_id == Donation.id)
            .group_by(Donation.id, Donation.donor_id, Donation.collected_at)
            .having(func.sum(case((cur.c.result == ResultValue.NONREACTIVE.value, 1), else_=0)) == len(panel))
        )
        for donor_id, collected_at in session.execute(query):
            result[donor_id].append(collected_at)
    return result


def deferrals_by_donor(session: Session, donor_ids: Sequence[int]) -> dict[int, list[Deferral]]:
    result: dict[int, list[Deferral]] = defaultdict(list)
    for chunk in _chunks(list(donor_ids)):
        for row in session.execute(select(Deferral).where(Deferral.donor_id.in_(chunk))).scalars():
            result[row.donor_id].append(row)
    return result


def unit_facts(
    session: Session,
    *,
    unit_numbers: Sequence[str] | None = None,
    pool_id: int | None = None,
    policy: Policy = DEFAULT_POLICY,
) -> dict[str, UnitFacts]:
    """Eligibility facts for the named units, or for every member of a pool, keyed by unit number."""
    base = (
        select(
            Donation.id,
            Donation.unit_number,
            Donation.status,
            Donation.collected_at,
            Donation.volume_ml,
            Donation.donor_id,
            Donor.donor_code,
            Pool.pool_number,
        )
        .join(Donor, Donor.id == Donation.donor_id)
        .outerjoin(PoolMember, PoolMember.donation_id == Donation.id)
        .outerjoin(Pool, Pool.id == PoolMember.pool_id)
    )
    rows = []
    if pool_id is not None:
        rows = list(session.execute(base.where(PoolMember.pool_id == pool_id)))
    else:
        for chunk in _chunks(list(unit_numbers or [])):
            rows.extend(session.execute(base.where(Donation.unit_number.in_(chunk))))
    if not rows:
        return {}

    results: dict[int, dict[str, str]] = defaultdict(dict)
    if pool_id is not None:
        member_ids = select(PoolMember.donation_id).where(PoolMember.pool_id == pool_id)
        for donation_id, marker, value, _ in session.execute(current_results_query(member_ids)):
            results[donation_id][marker.value] = value.value
    else:
        for chunk in _chunks([r.id for r in rows]):
            for donation_id, marker, value, _ in session.execute(current_results_query(chunk)):
                results[donation_id][marker.value] = value.value

    donor_ids = sorted({r.donor_id for r in rows})
    qualifying = qualifying_collections(session, donor_ids, policy)
    deferrals = deferrals_by_donor(session, donor_ids)
    qualified = {donor_id: donor_is_qualified(qualifying.get(donor_id, []), policy) for donor_id in donor_ids}

    facts: dict[str, UnitFacts] = {}
    for r in rows:
        day = r.collected_at.date()
        active = next(
            (d for d in deferrals.get(r.donor_id, []) if deferral_covers(d.starts_on, d.ends_on, d.lifted_on, day)),
            None,
        )
        facts[r.unit_number] = UnitFacts(
            unit_number=r.unit_number,
            status=r.status,
            collected_at=r.collected_at,
            volume_ml=r.volume_ml,
            current_results=results.get(r.id, {}),
            donor_code=r.donor_code,
            donor_qualified=qualified[r.donor_id],
            deferral_at_collection=(
                None
                if active is None
                else f"{active.reason} (from {active.starts_on}"
                + (f" until {active.ends_on})" if active.ends_on else ", permanent)")
            ),
            already_pooled_in=r.pool_number,
        )
    return facts


def lookback_window_start(
    session: Session, donor_id: int, *, before: datetime | None = None, policy: Policy = DEFAULT_POLICY
) -> datetime | None:
    """Start of the look-back window: lookback_days before the donor's last nonreactive donation.

    ``before`` limits the search to donations collected before it (the reactive one). None when the donor has no
    nonreactive donation: then every donation is in the window.
    """
    times = qualifying_collections(session, [donor_id], policy).get(donor_id, [])
    if before is not None:
        times = [t for t in times if t < before]
    if not times:
        return None
    return max(times) - timedelta(days=policy.lookback_days)
