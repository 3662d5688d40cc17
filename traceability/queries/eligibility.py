"""Set-based loading of what the eligibility rules need, for many units at once.

A fixed number of statements per chunk of units, whatever the number of units: the units, the current results,
the donors' qualifying donations and the donors' deferrals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, String, and_, case, func, select, type_coerce
from sqlmodel import Session

from ..models import Deferral, Donation, Donor, Pool, PoolMember, ResultValue, TestResult, UnitStatus
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
    return select(
        TestResult.donation_id,
        type_coerce(TestResult.marker, String),
        type_coerce(TestResult.result, String),
        TestResult.value,
    ).join(
        latest_sq,
        and_(
            TestResult.donation_id == latest_sq.c.donation_id,
            TestResult.marker == latest_sq.c.marker,
            TestResult.version == latest_sq.c.version,
        ),
    )


def _panel_results(
    conn: Any, donation_ids: list[int], policy: Policy, member_select: Select | None
) -> dict[int, dict[str, str]]:
    """Current panel results per donation. Nearly every unit is wholly nonreactive: SQL counts that per donation,
    and only the others are fetched marker by marker."""
    panel = list(policy.panel)
    clean_result = {m: ResultValue.NONREACTIVE.value for m in panel}
    sources: list[Select | Sequence[int]] = (
        [member_select] if member_select is not None else list(_chunks(donation_ids))
    )
    clean: set[int] = set()
    for source in sources:
        cur = current_results_query(source, panel).subquery()
        clean.update(
            conn.execute(
                select(cur.c.donation_id)
                .group_by(cur.c.donation_id)
                .having(func.sum(case((cur.c.result == ResultValue.NONREACTIVE.value, 1), else_=0)) == len(panel))
            ).scalars()
        )
    results: dict[int, dict[str, str]] = defaultdict(dict)
    others = [i for i in donation_ids if i not in clean]
    for chunk in _chunks(others):
        for donation_id, marker, value, _ in conn.execute(current_results_query(chunk, panel)):
            results[donation_id][marker] = value
    for donation_id in clean:
        results[donation_id] = clean_result
    return results


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
        for donor_id, collected_at in session.connection().execute(query):
            result[donor_id].append(collected_at)
    return result


def deferrals_by_donor(session: Session, donor_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Per donor, rows of (donor_id, starts_on, ends_on, lifted_on, reason)."""
    result: dict[int, list[Any]] = defaultdict(list)
    for chunk in _chunks(list(donor_ids)):
        query = select(Deferral.donor_id, Deferral.starts_on, Deferral.ends_on, Deferral.lifted_on, Deferral.reason)
        for row in session.connection().execute(query.where(Deferral.donor_id.in_(chunk))):
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
    conn = session.connection()  # Core rows: no ORM loading for plain column queries
    rows = []
    if pool_id is not None:
        rows = list(conn.execute(base.where(PoolMember.pool_id == pool_id)))
    else:
        for chunk in _chunks(list(unit_numbers or [])):
            rows.extend(conn.execute(base.where(Donation.unit_number.in_(chunk))))
    if not rows:
        return {}

    results = _panel_results(
        conn,
        [r.id for r in rows],
        policy,
        select(PoolMember.donation_id).where(PoolMember.pool_id == pool_id) if pool_id else None,
    )
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
            status=UnitStatus(r.status),
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
            donation_id=r.id,
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
