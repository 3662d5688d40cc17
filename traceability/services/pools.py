"""Fractionation pools: create, add units, close, test, release."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, String, delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from .. import audit
from ..errors import (
    DuplicateKey,
    IneligibleUnits,
    InvalidInput,
    NotFound,
    PoolNotReleasable,
    UnitAlreadyPooled,
    UnitNotFound,
    UnitsAlreadyPooled,
    WrongState,
)
from ..models import (
    Donation,
    Donor,
    Marker,
    Pool,
    PoolMember,
    PoolStatus,
    PoolTest,
    ResultValue,
    UnitStatus,
    UTCDateTime,
    saved_id,
    utcnow,
)
from ..plausibility import check_pool_test
from ..queries.clearance import current_pool_tests as queried_current_pool_tests
from ..queries.clearance import downstream_of
from ..queries.duties import pool_duty_conflicts
from ..queries.eligibility import unit_facts
from ..queries.lookup import get_pool
from ..queries.screen import requested_donations, screen_units
from ..rules import (
    DEFAULT_POLICY,
    Policy,
    PoolTestFacts,
    check_pool_composition,
    eligibility_problems,
    iu_per_ml,
    pool_release_problems,
    pool_test_problem,
    pool_test_quarantines,
)
from .common import check_code, next_version, record_release, result_values, unique_or_conflict
from .holds import HeldLots, hold_downstream
from .units import parse_unit_list


def create_pool(
    session: Session, *, pool_number: str, product: str, actor: str, policy: Policy = DEFAULT_POLICY
) -> Pool:
    """Open a new pool for a product the policy knows. Raises InvalidInput, DuplicateKey."""
    pool_number = check_code(pool_number, "Pool number")
    policy.product(product)
    if session.execute(select(col(Pool.id)).where(col(Pool.pool_number) == pool_number)).first():
        raise DuplicateKey("Pool", pool_number)
    pool = Pool(pool_number=pool_number, product=product, created_by=actor)
    with unique_or_conflict(session, "Pool", pool_number):
        session.add(pool)
    audit.record(
        session,
        action="pool.created",
        entity_type="pool",
        entity_key=pool_number,
        actor=actor,
        new={"product": product, "status": pool.status, "min_donors": policy.min_donors_for(product)},
    )
    return pool


def _require_status(pool: Pool, *allowed: PoolStatus, doing: str) -> None:
    if pool.status not in allowed:
        need = " or ".join(s.value for s in allowed)
        raise WrongState(f"Pool {pool.pool_number} is {pool.status.value}; {doing} needs a pool that is {need}.")


def add_units(
    session: Session,
    *,
    pool_number: str,
    unit_numbers: list[str],
    actor: str,
    policy: Policy = DEFAULT_POLICY,
    now: datetime | None = None,
    import_event_id: int | None = None,
) -> int:
    """Add eligible units to an open pool, all or none; returns how many were added.

    Raises PoolNotFound, WrongState, InvalidUnitNumber, UnitNotFound, IneligibleUnits (every reason for every
    unit), UnitAlreadyPooled (also when another process pooled a unit at the same moment).
    """
    numbers = parse_unit_list(unit_numbers)
    if not numbers:
        raise InvalidInput(f"Pool {pool_number}: no unit numbers given.")
    pool = get_pool(session, pool_number, for_update=True)
    _require_status(pool, PoolStatus.OPEN, doing="adding units")
    now = now or utcnow()
    # One statement screens every unit; only those it cannot clear (none, usually) are loaded and judged in full.
    unclear = screen_units(session, unit_numbers=numbers, policy=policy, now=now)
    if unclear:
        missing = [n for n in numbers if unclear.get(n) is False]
        if missing:
            if len(missing) == 1:
                raise UnitNotFound(missing[0])
            shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20:,} more" if len(missing) > 20 else "")
            raise NotFound(f"{len(missing):,} units", f"({shown})")
        suspects = [n for n in numbers if n in unclear]
        facts = unit_facts(session, unit_numbers=suspects, policy=policy)
        pooled = [(n, facts[n].already_pooled_in) for n in suspects if facts[n].already_pooled_in is not None]
        if pooled:
            raise UnitAlreadyPooled(pooled[0][0], pooled[0][1]) if len(pooled) == 1 else UnitsAlreadyPooled(pooled)
        reasons = {n: why for n in suspects if (why := eligibility_problems(facts[n], now=now, policy=policy))}
        if reasons:
            raise IneligibleUnits(pool.pool_number, reasons)

    stamp = utcnow()
    connection = session.connection()
    try:
        requested = requested_donations(session, numbers, {"id": col(Donation.id)}).subquery("requested")
        audit.recording.touching_where(
            session, "donation", col(Donation.id).in_(select(requested.c.id)), sets={"status": UnitStatus.POOLED.value}
        )
        inserted = connection.execute(
            insert(PoolMember).from_select(
                ["pool_id", "donation_id", "created_at", "created_by", "import_event_id"],
                select(
                    literal(pool.id),
                    requested.c.id,
                    literal(stamp, UTCDateTime()),
                    literal(actor, String()),
                    literal(import_event_id, Integer()),
                ),
            ),
            execution_options={"preserve_rowcount": True},  # psycopg's INSERT count is not kept otherwise
        ).rowcount
        changed = connection.execute(
            update(Donation)
            # By id: with the unit numbers and the status side by side, SQLite would walk the status index over
            # every unit in inventory.
            .where(col(Donation.id).in_(select(requested.c.id)), col(Donation.status) == UnitStatus.IN_INVENTORY)
            .values(status=UnitStatus.POOLED)
            .execution_options(synchronize_session=False)
        ).rowcount
    except IntegrityError as error:
        # Another transaction pooled one of these units after we read them: the unique key refused ours.
        raise UnitAlreadyPooled(_which(numbers), None) from error
    if inserted != len(numbers) or changed != len(numbers):
        # A unit was removed, or changed status, after the screen (another transaction, on PostgreSQL).
        raise UnitAlreadyPooled(_which(numbers), None)
    audit.recording.touched_new_where(
        session,
        "pool_member",
        (col(PoolMember.pool_id) == pool.id) & col(PoolMember.donation_id).in_(select(requested.c.id)),
    )
    audit.record(
        session,
        action="pool.units_added",
        entity_type="pool",
        entity_key=pool.pool_number,
        actor=actor,
        new={"count": len(numbers), "units": numbers},
        reason=None,
    )
    return len(numbers)


def _which(numbers: list[str]) -> str:
    return numbers[0] if len(numbers) == 1 else f"one of the {len(numbers):,} units"


def remove_units(
    session: Session,
    *,
    pool_number: str,
    unit_numbers: list[str],
    reason: str,
    actor: str,
    policy: Policy = DEFAULT_POLICY,
) -> int:
    """Take units back out of an open pool (e.g. a member that turned reactive), with a reason.

    The pool has not been made yet, so this corrects an allocation; the audit event keeps the old membership.
    A unit with a reactive current result (any marker) goes to rejected; one whose donor has turned reactive or
    that an open look-back case holds goes to interdicted; any other back to inventory.
    """
    reason = audit.require_reason(reason, f"Removing units from pool {pool_number}")
    numbers = parse_unit_list(unit_numbers)
    pool = get_pool(session, pool_number, for_update=True)
    _require_status(pool, PoolStatus.OPEN, doing="removing units")
    facts = unit_facts(session, unit_numbers=numbers, policy=policy)
    strangers = [n for n in numbers if n not in facts or facts[n].already_pooled_in != pool.pool_number]
    if strangers:
        raise InvalidInput(f"Pool {pool.pool_number}: not a member: {', '.join(strangers[:20])}.")
    ids = {n: facts[n].donation_id for n in numbers}
    audit.recording.touching(session, "donation", [i for i in ids.values() if i is not None])
    audit.recording.touching_where(
        session,
        "pool_member",
        (col(PoolMember.pool_id) == pool.id) & col(PoolMember.donation_id).in_(list(ids.values())),
    )
    session.execute(
        delete(PoolMember).where(
            col(PoolMember.pool_id) == pool.id, col(PoolMember.donation_id).in_(list(ids.values()))
        )
    )
    reactive = [
        n for n in numbers if ResultValue.REACTIVE.value in facts[n].current_results.values() or facts[n].other_reactive
    ]
    # A unit of a donor who has turned reactive, or one an open look-back case holds, stays out of inventory.
    interdicted = sorted(n for n in set(numbers) - set(reactive) if facts[n].donor_reactive or facts[n].open_case)
    for status, group in (
        (UnitStatus.REJECTED, reactive),
        (UnitStatus.INTERDICTED, interdicted),
        (UnitStatus.IN_INVENTORY, sorted(set(numbers) - set(reactive) - set(interdicted))),
    ):
        if group:
            session.execute(
                update(Donation)
                .where(col(Donation.id).in_([ids[n] for n in group]))
                .values(status=status, status_reason=f"removed from pool {pool.pool_number}: {reason}")
                .execution_options(synchronize_session=False)
            )
    audit.record(
        session,
        action="pool.units_removed",
        entity_type="pool",
        entity_key=pool.pool_number,
        actor=actor,
        old={"units": numbers},
        new={"count": len(numbers), "rejected": reactive, "interdicted": interdicted},
        reason=reason,
    )
    return len(numbers)


@dataclass(frozen=True)
class Composition:
    donor_count: int
    donation_count: int
    volume_ml: int


def pool_composition(session: Session, pool: Pool) -> Composition:
    """Distinct donors, units and volume of a pool, in one statement."""
    row = session.execute(
        select(
            func.count(func.distinct(col(Donation.donor_id))),
            func.count(col(Donation.id)),
            func.coalesce(func.sum(col(Donation.volume_ml)), 0),
        )
        .join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .where(col(PoolMember.pool_id) == pool.id)
    ).one()
    return Composition(int(row[0]), int(row[1]), int(row[2]))


def close_pool(
    session: Session, *, pool_number: str, actor: str, policy: Policy = DEFAULT_POLICY, now: datetime | None = None
) -> tuple[Pool, Composition]:
    """Seal a pool for fractionation. Raises PoolNotFound, WrongState, IneligibleUnits, NotEnoughDonors."""
    pool = get_pool(session, pool_number, for_update=True)
    _require_status(pool, PoolStatus.OPEN, doing="closing")
    # The members' donors are locked (shared) before they are judged: a reactive result being recorded for one of
    # them (``add_result`` locks its donor) either commits first and is seen here, or waits for this close.
    members_donors = select(col(Donation.donor_id)).join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
    session.execute(
        select(col(Donor.id))
        .where(col(Donor.id).in_(members_donors.where(col(PoolMember.pool_id) == pool.id)))
        .with_for_update(read=True)
    ).all()
    composition = pool_composition(session, pool)
    now = now or utcnow()
    # Every member is judged again, now: results, deferrals and statuses may have changed since it was added.
    unclear = screen_units(session, pool_id=pool.id, policy=policy, now=now)
    if unclear:
        facts = unit_facts(session, unit_numbers=sorted(unclear), policy=policy)
        reasons = {
            n: why
            for n, f in sorted(facts.items())
            if (why := eligibility_problems(f, now=now, policy=policy, pooled_ok_in=pool.pool_number))
        }
        if reasons:
            raise IneligibleUnits(pool.pool_number, reasons, closing=True)
    check_pool_composition(pool.pool_number, composition.donor_count, policy.min_donors_for(pool.product))
    pool.status, pool.closed_at = PoolStatus.CLOSED, now
    session.flush()
    audit.record(
        session,
        action="pool.closed",
        entity_type="pool",
        entity_key=pool.pool_number,
        actor=actor,
        old={"status": PoolStatus.OPEN},
        new={
            "status": PoolStatus.CLOSED,
            "donors": composition.donor_count,
            "units": composition.donation_count,
            "volume_ml": composition.volume_ml,
        },
    )
    return pool, composition


@dataclass(frozen=True)
class PoolTestOutcome:
    """A recorded pool test and what it did: whether it quarantined the pool, what it needs (a retest), the
    lots it held, every lot downstream and their consignees."""

    test: PoolTest
    problem: str | None
    quarantined: bool
    downstream: HeldLots


def test_pool(
    session: Session,
    *,
    pool_number: str,
    marker: Marker,
    result: ResultValue,
    tested_at: datetime,
    actor: str,
    value: float | None = None,
    value_unit: str | None = None,
    policy: Policy = DEFAULT_POLICY,
) -> PoolTestOutcome:
    """Record a manufacturing-pool test; a repeat becomes the newest (current) version.

    A current version that is reactive or over its limit quarantines the pool wherever it is (closed or
    released) and holds every pending or released lot downstream (``hold_downstream``). One that is invalid, or
    lacks its quantity, does not pass either: nothing downstream is released or shipped until a retest passes
    (``lot_blockers``). Raises WrongState, InvalidInput.
    """
    marker, result = Marker(marker), ResultValue(result)
    pool = get_pool(session, pool_number, for_update=True)
    if pool.status == PoolStatus.OPEN:
        raise WrongState(f"Pool {pool.pool_number} is open; pool tests are recorded after it is closed.")
    if (value is None) != (value_unit is None):
        raise InvalidInput(f"Pool {pool.pool_number}: a quantitative result needs both --value and --unit.")
    if value is not None and not 0 <= value < float("inf"):  # NaN fails this too
        raise InvalidInput(f"Pool {pool.pool_number}: value {value:g} is not a number of zero or more.")
    limited = marker in policy.product(pool.product).pool_limits_iu_per_ml
    if limited and value is not None and iu_per_ml(value, value_unit) is None:
        raise InvalidInput(f"Pool {pool.pool_number}: unit {value_unit!r} is not one of IU/mL, IU/\u00b5L (or IU/uL).")
    check_pool_test(
        f"Pool {pool.pool_number}, {marker.value} test", tested_at=tested_at, closed_at=pool.closed_at, now=utcnow()
    )
    version = next_version(
        session, col(PoolTest.version), col(PoolTest.pool_id) == pool.id, col(PoolTest.marker) == marker
    )
    row = PoolTest(
        pool_id=saved_id(pool.id),
        marker=marker,
        version=version,
        result=result,
        value=value,
        value_unit=value_unit,
        tested_at=tested_at,
        created_by=actor,
        reason="repeat test" if version > 1 else None,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        action="pool.tested",
        entity_type="pool",
        entity_key=pool.pool_number,
        actor=actor,
        new=result_values(row),
    )
    product = policy.product(pool.product)
    facts = PoolTestFacts(marker.value, result.value, value, value_unit, version)
    problem = pool_test_problem(
        facts, limit_iu_per_ml=product.pool_limits_iu_per_ml.get(marker), required=marker in product.pool_tests
    )
    quarantines = pool_test_quarantines(facts, product)
    if quarantines and pool.status in (PoolStatus.CLOSED, PoolStatus.RELEASED):
        old = pool.status
        pool.status, pool.status_reason = PoolStatus.QUARANTINED, f"pool test {problem}"
        session.flush()
        audit.record(
            session,
            action="pool.quarantined",
            entity_type="pool",
            entity_key=pool.pool_number,
            actor=actor,
            old={"status": old},
            new={"status": PoolStatus.QUARANTINED},
            reason=pool.status_reason,
        )
    if quarantines:
        held = hold_downstream(
            session, pool_ids=[saved_id(pool.id)], reason=f"pool {pool.pool_number} {problem}", actor=actor
        )
    else:
        affected = downstream_of(session, pool_ids=[saved_id(pool.id)]) if problem else []
        held = HeldLots([], [lot.lot_number for lot in affected], [])
    return PoolTestOutcome(row, problem, quarantines, held)


def current_pool_tests(session: Session, pool_id: int) -> dict[str, PoolTestFacts]:
    """The current version of each of the pool's tests."""
    return queried_current_pool_tests(session, [pool_id]).get(pool_id, {})


def release_pool(session: Session, *, pool_number: str, actor: str, policy: Policy = DEFAULT_POLICY) -> Pool:
    """Release a closed pool whose required pool tests are all present and pass. Raises PoolNotReleasable."""
    pool = get_pool(session, pool_number, for_update=True)
    if pool.status == PoolStatus.QUARANTINED:
        raise WrongState(f"Pool {pool.pool_number} is quarantined ({pool.status_reason}); it cannot be released.")
    _require_status(pool, PoolStatus.CLOSED, doing="release")
    problems = pool_release_problems(current_pool_tests(session, saved_id(pool.id)), policy.product(pool.product))
    if problems:
        raise PoolNotReleasable(pool.pool_number, problems)
    record_release(
        session, pool, conflicts=lambda: pool_duty_conflicts(session, pool, actor), actor=actor, policy=policy
    )
    return pool
