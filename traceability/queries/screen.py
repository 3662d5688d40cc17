"""The screen before the exact eligibility judgement: one statement over every unit of a pool or a request that
returns only the units it cannot show to be eligible with a simple, strict test (none, in the usual case), so that
the rows of 20,000 eligible units never travel to Python. It only ever sends units on to
:func:`traceability.queries.eligibility.unit_facts` and the rules; it never refuses one by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
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
from sqlmodel import Session, col

from ..calendars import shortest_span_days
from ..db import dialect
from ..models import (
    CaseFinding,
    Deferral,
    Donation,
    PoolMember,
    ResultValue,
    TestResult,
    UnitStatus,
)
from ..rules import (
    DEFAULT_POLICY,
    Policy,
)


def _screen_window_days(policy: Policy) -> float:
    """The screen's qualification window in days: the fewest days ``qualification_months`` calendar months can span,
    less two days (two collection centres' time zones can put the local days of two instants up to 26 hours
    further apart than their UTC difference), less a second (SQLite computes with millisecond Julian days). Two
    clean donations closer than this are certainly within the months; anything nearer the edge goes on to the
    exact judgement on local dates in Python."""
    return shortest_span_days(policy.qualification_months) - 2 - 1 / 86_400


def requested_donations(
    session: Session, unit_numbers: Sequence[str], columns: dict[str, Any], *, keep_missing: bool = False
) -> Select[*tuple[Any, ...]]:
    """One row per requested unit number: ``unit_number`` and the given expressions over its donation row (NULL
    when there is none, with ``keep_missing``).

    The numbers go as one parameter, each looked up in the unit-number index (see
    :func:`traceability.db.dialect.rows_for_keys`).
    """
    return dialect.rows_for_keys(session, Donation.unit_number, list(unit_numbers), columns, keep_missing=keep_missing)


def _days_between(session: Session, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in days, for the screen's qualification window (dialect-specific time arithmetic)."""
    return dialect.days_between(session, later, earlier)


def _clearly_clean(donation_id: Any, policy: Policy) -> ColumnElement[bool]:
    """True when the donation has a result for every panel marker and every one of them, in every version, is
    nonreactive: then its current panel is complete and nonreactive. Any repeat or other result: false (not
    necessarily unclean; the exact judgement decides)."""
    panel = list(policy.panel)
    nonreactive = ResultValue.NONREACTIVE.value
    result = type_coerce(col(TestResult.result), String)
    return (
        select(
            and_(
                func.count(func.distinct(col(TestResult.marker))) == len(panel),
                func.min(result) == nonreactive,
                func.max(result) == nonreactive,
            )
        )
        .where(col(TestResult.donation_id) == donation_id, col(TestResult.marker).in_(panel))
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
        .join(result, col(result.donation_id) == col(donation.id))
        .where(
            col(donation.donor_id) == donor_id,
            col(result.marker).in_(list(policy.panel)),
            type_coerce(result.result, String) == ResultValue.REACTIVE.value,
        )
        .correlate_except(donation, result)
    )


def _qualified_elsewhere(session: Session, unit: Any, policy: Policy) -> ColumnElement[bool]:
    """Another clearly clean donation of the unit's donor, anywhere in the table, within the window either side
    of the unit: then the unit (itself clearly clean) is qualified."""
    window = _screen_window_days(policy)
    other = aliased(Donation, name="other")
    gap = _days_between(session, col(other.collected_at), unit.collected_at)
    return exists().where(
        col(other.donor_id) == unit.donor_id,
        col(other.id) != unit.id,
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
        status_ok: list[ColumnElement[bool]] = [col(Donation.status) == UnitStatus.POOLED]
    else:
        status_ok = [
            col(Donation.status) == UnitStatus.IN_INVENTORY,
            ~exists().where(col(PoolMember.donation_id) == col(Donation.id)),
        ]
    clean = and_(
        *status_ok,
        col(Donation.collected_at) <= hold_cutoff,
        col(Donation.volume_ml) > 0,
        ~exists().where(col(Deferral.donor_id) == col(Donation.donor_id)),
        ~exists().where(col(CaseFinding.donation_id) == col(Donation.id)),
        ~_donor_ever_reactive(col(Donation.donor_id), policy),
        ~exists().where(
            col(TestResult.donation_id) == col(Donation.id),
            type_coerce(col(TestResult.result), String) == ResultValue.REACTIVE.value,
        ),
        _clearly_clean(col(Donation.id), policy),
    )
    columns = {
        "id": col(Donation.id),
        "donor_id": col(Donation.donor_id),
        "collected_at": col(Donation.collected_at),
        # CASE, not the condition itself, here and below: a condition that comes out NULL sends the unit on to the
        # exact judgement.
        "clean": case((clean, 1), else_=0),
    }
    source: Select[*tuple[Any, ...]]
    if pool_id is not None:
        source = select(
            col(Donation.unit_number).label("unit_number"),
            *(expression.label(name) for name, expression in columns.items()),
        )
        source = source.join(PoolMember, col(PoolMember.donation_id) == col(Donation.id)).where(
            col(PoolMember.pool_id) == pool_id
        )
    else:
        source = requested_donations(session, unit_numbers or [], columns, keep_missing=True)
    units = source.cte("screened")

    # Qualification belongs to each unit: a clean neighbour of the same donor, just before or just after it among
    # the screened units (the usual case: a donor gives several units to a pool), or else anywhere in the table.
    order: dict[str, Any] = {"partition_by": units.c.donor_id, "order_by": units.c.collected_at}
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
    # 0.7 s of 0.9 s for 20,000 units. Off for this statement only; the transaction's setting is put back after.
    with dialect.without_jit(connection):
        return {unit_number: bool(found) for unit_number, found in connection.execute(query)}
