"""Set-based eligibility, for many units at once.

Two levels. :func:`screen_units` is one statement over every unit of a pool or a request that returns only the
units it cannot show to be eligible with a simple, strict test (none, in the usual case), so that the rows of
20,000 eligible units never travel to Python. :func:`unit_facts` loads everything the rules need for the units it
is given, in a fixed number of statements per chunk (the units, the current results, the donors' qualifying
donations and the donors' deferrals); :func:`traceability.rules.eligibility_problems` then judges them and words
the reasons. The screen only ever sends units on to that exact judgement; it never refuses one by itself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Select,
    String,
    and_,
    bindparam,
    case,
    exists,
    extract,
    func,
    or_,
    select,
    true,
    type_coerce,
)
from sqlalchemy.orm import aliased
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


# --- the screen --------------------------------------------------------------------------------------------------

_MARGIN_DAYS = 1 / 86_400
"""The screen's qualification window is one second shorter than the policy's: SQLite computes with
millisecond Julian days, so a pair of donations that lies at the very edge of the window is left to the exact
judgement in Python instead of being let through on a rounding."""


def requested_donations(
    session: Session, unit_numbers: Sequence[str], columns: dict[str, Any], *, keep_missing: bool = False
) -> Select:
    """One row per requested unit number: ``unit_number`` and the given expressions over its donation row (NULL
    when there is none, with ``keep_missing``).

    The numbers go as one parameter, not an IN list of 20,000: a JSON array read by ``json_each`` on SQLite, a text
    array read by ``unnest`` on PostgreSQL. Each is looked up in the unit-number index: SQLite does so by itself;
    PostgreSQL, left to choose, hashes the whole donation table instead (0.3 s more at 1,000,000 donations), so
    there the lookup is a LATERAL subquery that OFFSET 0 keeps from being merged into a join.
    """
    numbers = list(unit_numbers)
    if session.get_bind().dialect.name == "postgresql":
        wanted = (
            func.unnest(bindparam(None, numbers, type_=ARRAY(String)))
            .table_valued("value", name="wanted")
            .render_derived()
        )
        unit = (
            select(*(expression.label(name) for name, expression in columns.items()))
            .where(Donation.unit_number == wanted.c.value)
            .offset(0)
            .lateral("unit")
        )
        return (
            select(wanted.c.value.label("unit_number"), *unit.c)
            .select_from(wanted)
            .join(unit, true(), isouter=keep_missing)
        )
    wanted = func.json_each(bindparam(None, json.dumps(numbers), type_=String)).table_valued("value", name="wanted")
    return (
        select(wanted.c.value.label("unit_number"), *(expression.label(name) for name, expression in columns.items()))
        .select_from(wanted)
        .join(Donation, Donation.unit_number == wanted.c.value, isouter=keep_missing)
    )


def _days_between(session: Session, later: Any, earlier: Any) -> ColumnElement[float]:
    """``later - earlier`` in days, for the screen's qualification window (dialect-specific time arithmetic)."""
    if session.get_bind().dialect.name == "postgresql":
        return (extract("epoch", later) - extract("epoch", earlier)) / 86_400.0
    return func.julianday(later) - func.julianday(earlier)


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


def _qualified_elsewhere(session: Session, unit: Any, others: int, policy: Policy) -> ColumnElement[bool]:
    """Enough other clearly clean donations of the unit's donor, anywhere in the table, near the unit: with the
    (clearly clean) unit itself, N such donations within the window. One other: within the window either side;
    more: all on the same side (then they and the unit lie within one window)."""
    window = policy.qualification_window_days - _MARGIN_DAYS
    other = aliased(Donation, name="other")
    near = [other.donor_id == unit.donor_id, other.id != unit.id, _clearly_clean(other.id, policy)]
    if others == 1:
        gap = _days_between(session, other.collected_at, unit.collected_at)
        return exists().where(*near, gap <= window, gap >= -window)
    sides = []
    for later, earlier in ((other.collected_at, unit.collected_at), (unit.collected_at, other.collected_at)):
        gap = _days_between(session, later, earlier)
        count = select(func.count()).where(*near, gap >= -_MARGIN_DAYS, gap <= window).scalar_subquery()
        sides.append(count >= others)
    return or_(*sides)


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

    others = policy.qualification_donations - 1
    if others <= 0:
        clear: ColumnElement[bool] = units.c.clean == 1
    else:
        earlier = func.lag(units.c.collected_at, others).over(
            partition_by=units.c.donor_id, order_by=units.c.collected_at
        )
        spans = (
            select(units.c.donor_id, _days_between(session, units.c.collected_at, earlier).label("span"))
            .where(units.c.clean == 1)
            .subquery("spans")
        )
        window = policy.qualification_window_days - _MARGIN_DAYS
        qualified_here = select(spans.c.donor_id).where(spans.c.span <= window)
        clear = and_(
            units.c.clean == 1,
            or_(units.c.donor_id.in_(qualified_here), _qualified_elsewhere(session, units.c, others, policy)),
        )
    query = select(units.c.unit_number, units.c.id.is_not(None)).where(case((clear, 0), else_=1) == 1)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return {unit_number: bool(found) for unit_number, found in connection.execute(query)}
    # PostgreSQL compiles a statement to machine code (JIT) when its estimated cost passes jit_above_cost. This one
    # is estimated dear (a correlated subquery per unit) but runs in a fraction of a second; compiling it took
    # 0.7 s of 0.9 s for 20,000 units. Off for this statement only; the transaction's setting is put back after.
    previous = connection.execute(select(func.current_setting("jit"))).scalar_one()
    connection.execute(select(func.set_config("jit", "off", True)))
    unclear = {unit_number: bool(found) for unit_number, found in connection.execute(query)}
    connection.execute(select(func.set_config("jit", previous, True)))
    return unclear
