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
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.orm import aliased
from sqlmodel import Session

from ..calendars import DEFAULT_TIMEZONE, local_day, shortest_span_days, start_of_day
from ..db import dialect
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


def zone_of_donation() -> ColumnElement[str]:
    """The time zone of the collection centre of a donation (its own establishment, else its donor's): a scalar
    subquery correlated to ``Donation``, for statements that select donations."""
    site = func.coalesce(
        Donation.establishment_id, select(Donor.establishment_id).where(Donor.id == Donation.donor_id).scalar_subquery()
    )
    return func.coalesce(
        select(Establishment.timezone).where(Establishment.id == site).scalar_subquery(), DEFAULT_TIMEZONE
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
        donations = select(Donation.id).where(Donation.donor_id.in_(chunk))
        cur = current_results_query(donations, panel).subquery()
        query = (
            select(Donation.donor_id, Donation.id, Donation.unit_number, Donation.collected_at, zone_of_donation())
            .join(cur, cur.c.donation_id == Donation.id)
            .group_by(Donation.id, Donation.donor_id, Donation.unit_number, Donation.collected_at)
            .having(func.sum(case((cur.c.result == ResultValue.NONREACTIVE.value, 1), else_=0)) == len(panel))
        )
        for donor_id, donation_id, number, collected_at, tz in session.connection().execute(query):
            result[donor_id].append(QualifyingDonation(donation_id, number, collected_at, local_day(collected_at, tz)))
    for rows in result.values():
        rows.sort(key=lambda q: (q.collected_at, q.donation_id))
    return result


def deferrals_by_donor(session: Session, donor_ids: Sequence[int]) -> dict[int, list[Any]]:
    """Per donor, rows of (donor_id, starts_on, ends_on, lifted_on, reason)."""
    result: dict[int, list[Any]] = defaultdict(list)
    for chunk in _chunks(list(donor_ids)):
        query = select(Deferral.donor_id, Deferral.starts_on, Deferral.ends_on, Deferral.lifted_on, Deferral.reason)
        for row in session.connection().execute(query.where(Deferral.donor_id.in_(chunk))):
            result[row.donor_id].append(row)
    return result


def _open_cases(session: Session, donation_ids: Sequence[int]) -> dict[int, str]:
    """The open look-back case that holds each of the donations, if any."""
    found: dict[int, str] = {}
    for chunk in _chunks(list(donation_ids)):
        query = (
            select(CaseFinding.donation_id, LookbackCase.case_number)
            .join(LookbackCase, LookbackCase.id == CaseFinding.case_id)
            .where(CaseFinding.donation_id.in_(chunk), LookbackCase.status == CaseStatus.OPEN)
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
        cur = current_results_query(select(Donation.id).where(Donation.donor_id.in_(chunk)), panel).subquery()
        query = (
            select(Donation.donor_id, Donation.id, Donation.unit_number, cur.c.marker, Donation.collected_at)
            .join(cur, cur.c.donation_id == Donation.id)
            .where(cur.c.result == ResultValue.REACTIVE.value)
            .order_by(Donation.collected_at)
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
            Donation.id,
            Donation.unit_number,
            Donation.status,
            Donation.collected_at,
            Donation.volume_ml,
            Donation.donor_id,
            Donor.donor_code,
            Pool.pool_number,
            zone_of_donation().label("timezone"),
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
    tz = session.execute(select(zone_of_donation()).where(Donation.id == last.donation_id)).scalar_one()
    return LookbackWindow(starts_on, start_of_day(starts_on, tz), last.unit_number)


def donations_in_window(session: Session, donor_id: int, window: LookbackWindow) -> list[int]:
    """Ids of the donor's donations in the window, oldest first, judged on each collection centre's local day."""
    rows = session.execute(
        select(Donation.id, Donation.collected_at, zone_of_donation())
        .where(Donation.donor_id == donor_id)
        .order_by(Donation.collected_at, Donation.id)
    ).all()
    return [i for i, at, tz in rows if window.includes(local_day(at, tz))]


# --- the screen --------------------------------------------------------------------------------------------------


def _screen_window_days(policy: Policy) -> float:
    """The screen's qualification window in days: the fewest days ``qualification_months`` calendar months can span,
    less two days (two collection centres' time zones can put the local days of two instants up to 26 hours
    further apart than their UTC difference), less a second (SQLite computes with millisecond Julian days). Two
    clean donations closer than this are certainly within the months; anything nearer the edge goes on to the
    exact judgement on local dates in Python."""
    return shortest_span_days(policy.qualification_months) - 2 - 1 / 86_400


def requested_donations(
    session: Session, unit_numbers: Sequence[str], columns: dict[str, Any], *, keep_missing: bool = False
) -> Select:
    """One row per requested unit number: ``unit_number`` and the given expressions over its donation row (NULL
    when there is none, with ``keep_missing``).

    The numbers go as one parameter, each looked up in the unit-number index (see
    :func:`traceability.db.dialect.rows_for_keys`).
    """
    return dialect.rows_for_keys(session, Donation.unit_number, list(unit_numbers), columns, keep_missing=keep_missing)


def _days_between(session: Session, later: Any, earlier: Any) -> ColumnElement[float]:
    """``later - earlier`` in days, for the screen's qualification window (dialect-specific time arithmetic)."""
    return dialect.days_between(session, later, earlier)


def _clearly_clean(donation_id: Any, policy: Policy) -> ColumnElement[bool]:
    """True when the donation has a result for every panel marker and every one of them, in every version, is
    nonreactive: then its current panel is complete and nonreactive. Any repeat or other result: false (not
    necessarily unclean; the exact judgement decides)."""
    panel = list(policy.panel)
    nonreactive = ResultValue.NONREACTIVE.value
    result = type_coerce(TestResult.result, String)
    return (
        select(
            and_(
                func.count(func.distinct(TestResult.marker)) == len(panel),
                func.min(result) == nonreactive,
                func.max(result) == nonreactive,
            )
        )
        .where(TestResult.donation_id == donation_id, TestResult.marker.in_(panel))
        .scalar_subquery()
    )


def _donor_ever_reactive(donor_id: Any, policy: Policy) -> ColumnElement[bool]:
    """Any reactive panel result, in any version, on any donation of the donor (a donor who turned reactive gives
    no more units; the exact judgement looks at current versions only)."""
    donation = aliased(Donation, name="same_donor")
    result = aliased(TestResult, name="donor_result")
    return exists(
        select(literal(1))
        .select_from(donation)
        .join(result, result.donation_id == donation.id)
        .where(
            donation.donor_id == donor_id,
            result.marker.in_(list(policy.panel)),
            type_coerce(result.result, String) == ResultValue.REACTIVE.value,
        )
        .correlate_except(donation, result)
    )


def _qualified_elsewhere(session: Session, unit: Any, policy: Policy) -> ColumnElement[bool]:
    """Another clearly clean donation of the unit's donor, anywhere in the table, within the window either side
    of the unit: then the unit (itself clearly clean) is qualified."""
    window = _screen_window_days(policy)
    other = aliased(Donation, name="other")
    gap = _days_between(session, other.collected_at, unit.collected_at)
    return exists().where(
        other.donor_id == unit.donor_id,
        other.id != unit.id,
        gap <= window,
        gap >= -window,
        _clearly_clean(other.id, policy),
    )


def screen_units(
    session: Session,
    *,
    unit_numbers: Sequence[str] | None = None,
    pool_id: int | None = None,
    policy: Policy = DEFAULT_POLICY,
    now: datetime,
) -> dict[str, bool]:
    """In one statement, the units that are not clearly eligible, each with whether it exists (found or not).

    ``unit_numbers``: units about to be added to a pool, clearly eligible when in inventory and in no pool;
    ``pool_id``: the members of a pool about to close, clearly eligible when pooled (in that pool). Besides, a
    clearly eligible unit is past the hold at ``now``, has a positive volume and a complete panel with nothing but
    nonreactive results (in every version), its donor has no deferral on record at all, and the donor is clearly
    qualified: N such donations within the qualification window, found among the screened units themselves (a
    window function over them: the usual case, a donor gives several units to a pool) or else in the table next
    to this unit. Every unit the rules would refuse fails this test; a unit that fails it may still be eligible (a
    retest, a lifted deferral, a qualification elsewhere in the donor's history): callers judge those few with
    :func:`unit_facts` and the rules.
    """
    hold_cutoff = now - timedelta(days=policy.hold_days)
    if pool_id is not None:
        status_ok: list[ColumnElement[bool]] = [Donation.status == UnitStatus.POOLED]
    else:
        status_ok = [Donation.status == UnitStatus.IN_INVENTORY, ~exists().where(PoolMember.donation_id == Donation.id)]
    clean = and_(
        *status_ok,
        Donation.collected_at <= hold_cutoff,
        Donation.volume_ml > 0,
        ~exists().where(Deferral.donor_id == Donation.donor_id),
        ~exists().where(CaseFinding.donation_id == Donation.id),
        ~_donor_ever_reactive(Donation.donor_id, policy),
        ~exists().where(
            TestResult.donation_id == Donation.id,
            type_coerce(TestResult.result, String) == ResultValue.REACTIVE.value,
        ),
        _clearly_clean(Donation.id, policy),
    )
    columns = {
        "id": Donation.id,
        "donor_id": Donation.donor_id,
        "collected_at": Donation.collected_at,
        # CASE, not the condition itself, here and below: a condition that comes out NULL sends the unit on to the
        # exact judgement.
        "clean": case((clean, 1), else_=0),
    }
    if pool_id is not None:
        source = select(
            Donation.unit_number.label("unit_number"), *(expression.label(name) for name, expression in columns.items())
        )
        source = source.join(PoolMember, PoolMember.donation_id == Donation.id).where(PoolMember.pool_id == pool_id)
    else:
        source = requested_donations(session, unit_numbers or [], columns, keep_missing=True)
    units = source.cte("screened")

    # Qualification belongs to each unit: a clean neighbour of the same donor, just before or just after it among
    # the screened units (the usual case: a donor gives several units to a pool), or else anywhere in the table.
    order = {"partition_by": units.c.donor_id, "order_by": units.c.collected_at}
    neighbours = (
        select(
            units.c.id,
            _days_between(session, units.c.collected_at, func.lag(units.c.collected_at).over(**order)).label("back"),
            _days_between(session, func.lead(units.c.collected_at).over(**order), units.c.collected_at).label("ahead"),
        )
        .where(units.c.clean == 1)
        .subquery("neighbours")
    )
    window = _screen_window_days(policy)
    qualified_here = select(neighbours.c.id).where(or_(neighbours.c.back <= window, neighbours.c.ahead <= window))
    clear: ColumnElement[bool] = and_(
        units.c.clean == 1,
        or_(units.c.id.in_(qualified_here), _qualified_elsewhere(session, units.c, policy)),
    )
    query = select(units.c.unit_number, units.c.id.is_not(None)).where(case((clear, 0), else_=1) == 1)
    connection = session.connection()
    # PostgreSQL compiles a statement to machine code (JIT) when its estimated cost passes jit_above_cost. This one
    # is estimated dear (a correlated subquery per unit) but runs in a fraction of a second; compiling it took
    # 0.7 s of 0.9 s for 20,000 units. Off for this statement only.
    with dialect.without_jit(connection):
        return {unit_number: bool(found) for unit_number, found in connection.execute(query)}
