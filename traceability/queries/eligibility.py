"""Set-based eligibility, for many units at once.

Two levels. :func:`screen_units` is one statement over every unit of a pool or a request that returns only the
units it cannot show to be eligible with a simple, strict test (none, in the usual case), so that the rows of
20,000 eligible units never travel to Python. :func:`unit_facts` loads everything the rules need for the units it
is given, in a fixed number of statements per chunk (the units, the current results, the donors' qualifying
donations and the donors' deferrals); :func:`traceability.rules.eligibility_problems` then judges them and words
the reasons. The screen only ever sends units on to that exact judgement; it never refuses one by itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    func,
    select,
    type_coerce,
)
from sqlmodel import Session, col

from ..calendars import DEFAULT_TIMEZONE, local_day, start_of_day
from ..models import (
    CaseFinding,
    CaseStatus,
    Deferral,
    Donation,
    Donor,
    Establishment,
    LookbackCase,
    Marker,
    Pool,
    PoolMember,
    ResultValue,
    TestResult,
    UnitStatus,
    saved_id,
)
from ..rules import (
    DEFAULT_POLICY,
    Policy,
    UnitFacts,
    deferral_covers,
    in_lookback_window,
    lookback_anchor,
    lookback_window_starts_on,
    qualified_for_unit,
)

CHUNK = 10_000
_K = TypeVar("_K", int, str)


def _chunks(items: Sequence[_K], size: int = CHUNK) -> Iterable[Sequence[_K]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def current_results_query(
    donation_ids: Select[*tuple[Any, ...]] | Sequence[int], markers: Sequence[str] | None = None
) -> Select[*tuple[Any, ...]]:
    """(donation_id, marker, result, value) of the latest version of each marker of the given donations."""
    latest = select(
        col(TestResult.donation_id), col(TestResult.marker), func.max(col(TestResult.version)).label("version")
    ).where(col(TestResult.donation_id).in_(donation_ids))
    if markers is not None:
        latest = latest.where(col(TestResult.marker).in_(list(markers)))
    latest_sq = latest.group_by(col(TestResult.donation_id), col(TestResult.marker)).subquery()
    return select(
        col(TestResult.donation_id),
        type_coerce(col(TestResult.marker), String),
        type_coerce(col(TestResult.result), String),
        col(TestResult.value),
    ).join(
        latest_sq,
        and_(
            col(TestResult.donation_id) == latest_sq.c.donation_id,
            col(TestResult.marker) == latest_sq.c.marker,
            col(TestResult.version) == latest_sq.c.version,
        ),
    )


def _panel_results(
    conn: Any, donation_ids: list[int], policy: Policy, member_select: Select[*tuple[Any, ...]] | None
) -> dict[int, dict[str, str]]:
    """Current panel results per donation. Nearly every unit is wholly nonreactive: SQL counts that per donation,
    and only the others are fetched marker by marker."""
    panel = list(policy.panel)
    clean_result = {m: ResultValue.NONREACTIVE.value for m in panel}
    sources: list[Select[*tuple[Any, ...]] | Sequence[int]] = (
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


def zone_of_donation() -> ColumnElement[str]:
    """The time zone of the collection centre of a donation (its own establishment, else its donor's): a scalar
    subquery correlated to ``Donation``, for statements that select donations."""
    site = func.coalesce(
        col(Donation.establishment_id),
        select(col(Donor.establishment_id)).where(col(Donor.id) == col(Donation.donor_id)).scalar_subquery(),
    )
    return func.coalesce(
        select(col(Establishment.timezone)).where(col(Establishment.id) == site).scalar_subquery(), DEFAULT_TIMEZONE
    )


@dataclass(frozen=True)
class QualifyingDonation:
    """A donation whose required panel is complete and wholly nonreactive, with its local day of collection."""

    donation_id: int
    unit_number: str
    collected_at: datetime
    day: date


def qualifying_donations(
    session: Session, donor_ids: Sequence[int], policy: Policy = DEFAULT_POLICY
) -> dict[int, list[QualifyingDonation]]:
    """Per donor, oldest first, the donations whose required panel is complete and wholly nonreactive."""
    panel = [m.value for m in policy.required_panel]
    result: dict[int, list[QualifyingDonation]] = defaultdict(list)
    for chunk in _chunks(list(donor_ids)):
        donations = select(col(Donation.id)).where(col(Donation.donor_id).in_(chunk))
        cur = current_results_query(donations, panel).subquery()
        query = (
            select(
                col(Donation.donor_id),
                col(Donation.id),
                col(Donation.unit_number),
                col(Donation.collected_at),
                zone_of_donation(),
            )
            .join(cur, cur.c.donation_id == col(Donation.id))
            .group_by(col(Donation.id), col(Donation.donor_id), col(Donation.unit_number), col(Donation.collected_at))
            .having(func.sum(case((cur.c.result == ResultValue.NONREACTIVE.value, 1), else_=0)) == len(panel))
        )
        for donor_id, donation_id, number, collected_at, tz in session.connection().execute(query):
            result[donor_id].append(
                QualifyingDonation(saved_id(donation_id), number, collected_at, local_day(collected_at, tz))
            )
    for rows in result.values():
        rows.sort(key=lambda q: (q.collected_at, q.donation_id))
    return result


def deferrals_by_donor(session: Session, donor_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Per donor, rows of (donor_id, starts_on, ends_on, lifted_on, reason)."""
    result: dict[int, list[Any]] = defaultdict(list)
    for chunk in _chunks(list(donor_ids)):
        query = select(
            col(Deferral.donor_id),
            col(Deferral.starts_on),
            col(Deferral.ends_on),
            col(Deferral.lifted_on),
            col(Deferral.reason),
        )
        for row in session.connection().execute(query.where(col(Deferral.donor_id).in_(chunk))):
            result[row.donor_id].append(row)
    return result


def _open_cases(session: Session, donation_ids: Sequence[int]) -> dict[int, str]:
    """The open look-back case that holds each of the donations, if any."""
    found: dict[int, str] = {}
    for chunk in _chunks(list(donation_ids)):
        query = (
            select(col(CaseFinding.donation_id), col(LookbackCase.case_number))
            .join(LookbackCase, col(LookbackCase.id) == col(CaseFinding.case_id))
            .where(col(CaseFinding.donation_id).in_(chunk), col(LookbackCase.status) == CaseStatus.OPEN)
        )
        found.update((d, c) for d, c in session.connection().execute(query))
    return found


def _reactive_donors(
    session: Session, donor_ids: Sequence[int], policy: Policy
) -> dict[int, list[tuple[int, str, datetime]]]:
    """Per donor, the donations with a current reactive result on a required-panel marker, each with what it was:
    a donor who has turned reactive gives no more units to a pool, whenever the unit was collected."""
    panel = [m.value for m in policy.required_panel]
    found: dict[int, list[tuple[int, str, datetime]]] = defaultdict(list)
    for chunk in _chunks(list(donor_ids)):
        cur = current_results_query(select(col(Donation.id)).where(col(Donation.donor_id).in_(chunk)), panel).subquery()
        query = (
            select(
                col(Donation.donor_id),
                col(Donation.id),
                col(Donation.unit_number),
                cur.c.marker,
                col(Donation.collected_at),
            )
            .join(cur, cur.c.donation_id == col(Donation.id))
            .where(cur.c.result == ResultValue.REACTIVE.value)
            .order_by(col(Donation.collected_at))
        )
        for donor_id, donation_id, number, marker, collected_at in session.connection().execute(query):
            found[donor_id].append(
                (donation_id, f"reactive {marker} on unit {number} ({collected_at.date()})", collected_at)
            )
    return found


def _reactive_off_panel(session: Session, donation_ids: Sequence[int], policy: Policy) -> dict[int, set[str]]:
    """Per donation, the markers outside the required panel whose current result is reactive (rare)."""
    others = [m.value for m in Marker if m.value not in policy.panel]
    found: dict[int, set[str]] = defaultdict(set)
    for chunk in _chunks(list(donation_ids)):
        for donation_id, marker, value, _ in session.connection().execute(current_results_query(chunk, others)):
            if value == ResultValue.REACTIVE.value:
                found[donation_id].add(marker)
    return found


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
            col(Donation.id),
            col(Donation.unit_number),
            col(Donation.status),
            col(Donation.collected_at),
            col(Donation.volume_ml),
            col(Donation.donor_id),
            col(Donor.donor_code),
            col(Pool.pool_number),
            zone_of_donation().label("timezone"),
        )
        .join(Donor, col(Donor.id) == col(Donation.donor_id))
        .outerjoin(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .outerjoin(Pool, col(Pool.id) == col(PoolMember.pool_id))
    )
    conn = session.connection()  # Core rows: no ORM loading for plain column queries
    rows = []
    if pool_id is not None:
        rows = list(conn.execute(base.where(col(PoolMember.pool_id) == pool_id)))
    else:
        for chunk in _chunks(list(unit_numbers or [])):
            rows.extend(conn.execute(base.where(col(Donation.unit_number).in_(chunk))))
    if not rows:
        return {}

    results = _panel_results(
        conn,
        [r.id for r in rows],
        policy,
        select(col(PoolMember.donation_id)).where(col(PoolMember.pool_id) == pool_id) if pool_id else None,
    )
    donor_ids = sorted({r.donor_id for r in rows})
    qualifying = qualifying_donations(session, donor_ids, policy)
    deferrals = deferrals_by_donor(session, donor_ids)
    cases = _open_cases(session, [r.id for r in rows])
    reactive = _reactive_donors(session, donor_ids, policy)
    off_panel = _reactive_off_panel(session, [r.id for r in rows], policy)

    facts: dict[str, UnitFacts] = {}
    for r in rows:
        day = local_day(r.collected_at, r.timezone)
        active = next(
            (d for d in deferrals.get(r.donor_id, []) if deferral_covers(d.starts_on, d.ends_on, d.lifted_on, day)),
            None,
        )
        others = [q.day for q in qualifying.get(r.donor_id, []) if q.donation_id != r.id]
        turned = [what for donation_id, what, _ in reactive.get(r.donor_id, []) if donation_id != r.id]
        facts[r.unit_number] = UnitFacts(
            unit_number=r.unit_number,
            status=UnitStatus(r.status),
            collected_at=r.collected_at,
            volume_ml=r.volume_ml,
            current_results=results.get(r.id, {}),
            donor_code=r.donor_code,
            qualified=qualified_for_unit(day, others, policy.qualification_months),
            deferral_at_collection=(
                None
                if active is None
                else f"{active.reason} (from {active.starts_on}"
                + (f" until {active.ends_on})" if active.ends_on else ", permanent)")
            ),
            already_pooled_in=r.pool_number,
            donation_id=r.id,
            timezone=r.timezone,
            open_case=cases.get(r.id),
            donor_reactive="; ".join(turned) or None,
            other_reactive=tuple(sorted(off_panel.get(r.id, ()))),
        )
    return facts


@dataclass(frozen=True)
class LookbackWindow:
    """The look-back window of a donor: from its first local day on (None: every donation is in it)."""

    starts_on: date | None
    starts_at: datetime | None
    """The UTC instant the first day begins at the centre of the last nonreactive donation (for display)."""
    last_nonreactive: str | None

    def includes(self, collection_day: date) -> bool:
        return in_lookback_window(collection_day, self.starts_on)


def lookback_window(
    session: Session, donor_id: int, *, before: datetime | None = None, policy: Policy = DEFAULT_POLICY
) -> LookbackWindow:
    """The donor's look-back window: every donation collected on or after the local day ``lookback_months``
    calendar months before the donor's last nonreactive donation before the first reactive one (``before``, the
    reactive unit, when it is earlier). No nonreactive donation: every donation is in the window."""
    qualifying = qualifying_donations(session, [donor_id], policy).get(donor_id, [])
    reactive = _reactive_donors(session, [donor_id], policy).get(donor_id, [])
    first = min([at for _, _, at in reactive] + ([before] if before is not None else []), default=None)
    anchor = lookback_anchor([(q.collected_at, q.day) for q in qualifying], first)
    if anchor is None:
        return LookbackWindow(None, None, None)
    last = [q for q in qualifying if q.day == anchor and (first is None or q.collected_at < first)][-1]
    starts_on = lookback_window_starts_on(anchor, policy.lookback_months)
    tz = session.execute(select(zone_of_donation()).where(col(Donation.id) == last.donation_id)).scalar_one()
    return LookbackWindow(starts_on, start_of_day(starts_on, tz), last.unit_number)


def donations_in_window(session: Session, donor_id: int, window: LookbackWindow) -> list[int]:
    """Ids of the donor's donations in the window, oldest first, judged on each collection centre's local day."""
    rows = session.execute(
        select(col(Donation.id), col(Donation.collected_at), zone_of_donation())
        .where(col(Donation.donor_id) == donor_id)
        .order_by(col(Donation.collected_at), col(Donation.id))
    ).all()
    return [i for i, at, tz in rows if window.includes(local_day(at, tz))]


# --- the screen --------------------------------------------------------------------------------------------------
