"""Donations (units), their screening results, corrections and discards."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col

from .. import audit, plausibility
from ..calendars import local_day
from ..errors import CorrectionNeedsDeviation, DuplicateKey, InvalidInput, WrongState
from ..identifiers import parse_unit_number
from ..models import (
    CaseTrigger,
    CorrectionDeviation,
    Deferral,
    DeferralSource,
    Donation,
    Donor,
    Marker,
    PlasmaKind,
    Pool,
    PoolMember,
    PoolStatus,
    ResultValue,
    TestMethod,
    TestResult,
    UnitStatus,
    saved_id,
    utcnow,
)
from ..parsing import parse_choice, parse_positive_int, parse_timestamp
from ..plausibility import check_collection, check_not_future, check_result
from ..queries.eligibility import current_results_query, donations_in_window, lookback_window, zone_of_donation
from ..queries.lookup import canonical_unit_number, get_donor, get_establishment, get_unit
from ..rules import DEFAULT_POLICY, OnReactive, Policy
from .common import check_code, check_count, next_version, record_interdicted, result_values, unique_or_conflict
from .donors import defer_donor, end_deferral
from .lookback import CaseOpened, open_case

CLOCK_SKEW = plausibility.CLOCK_SKEW


def add_donation(
    session: Session,
    *,
    unit_number: str,
    donor_code: str,
    collected_at: datetime,
    volume_ml: int,
    actor: str,
    establishment: str | None = None,
    plasma_kind: PlasmaKind = PlasmaKind.SOURCE,
    frozen_at: datetime | None = None,
) -> Donation:
    """Record a collection. Raises InvalidUnitNumber, DonorNotFound, EstablishmentNotFound, DuplicateKey."""
    number = parse_unit_number(unit_number)
    key = f"Unit {number.value}"
    if volume_ml < 0:
        raise InvalidInput(f"{key}: volume {volume_ml} mL is negative.")
    check_count(volume_ml, f"{key}: volume (mL)", allow_zero=True)
    if frozen_at is not None and frozen_at < collected_at:
        raise InvalidInput(f"{key}: frozen at {frozen_at.isoformat()}, before it was collected.")
    donor = get_donor(session, donor_code)
    now = utcnow()
    check_collection(key, collected_at=collected_at, registered_on=donor.registered_on, now=now)
    check_not_future(key, "frozen at", frozen_at, now=now)
    site_id = get_establishment(session, establishment).id if establishment else donor.establishment_id
    if session.execute(select(col(Donation.id)).where(col(Donation.unit_number) == number.value)).first():
        raise DuplicateKey("Unit", number.value)
    row = Donation(
        unit_number=number.value,
        scheme=number.scheme,
        flag=number.flag,
        donor_id=saved_id(donor.id),
        establishment_id=site_id,
        collected_at=collected_at,
        frozen_at=frozen_at,
        volume_ml=volume_ml,
        plasma_kind=plasma_kind,
        created_by=actor,
    )
    with unique_or_conflict(session, "Unit", number.value):
        session.add(row)
    audit.record(
        session,
        action="donation.added",
        entity_type="donation",
        entity_key=number.value,
        actor=actor,
        new={
            "donor": donor_code,
            "collected_at": collected_at,
            "volume_ml": volume_ml,
            "scheme": number.scheme.value,
            "plasma_kind": plasma_kind,
        },
    )
    return row


def _plain(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value.value if hasattr(value, "value") else value)


CORRECTABLE = ("collected_at", "frozen_at", "volume_ml", "plasma_kind", "establishment")


def correct_donation(
    session: Session,
    *,
    unit_number: str,
    changes: dict[str, str],
    reason: str,
    actor: str,
    deviation: str | None = None,
) -> Donation:
    """Correct recorded fields of a donation; the old values stay in the audit trail with the reason.

    A unit in a closed or released pool (released lineage) is corrected only under a named deviation
    (``deviation``, e.g. DEV-2026-014); the deviation is then kept with the pool and shows on every lot downstream.
    Raises CorrectionNeedsDeviation, InvalidInput, ImplausibleTime."""
    reason = audit.require_reason(reason, f"Correcting unit {unit_number}")
    unit = get_unit(session, unit_number, for_update=True)
    pool = session.execute(
        select(Pool)
        .join(PoolMember, col(PoolMember.pool_id) == col(Pool.id))
        .where(col(PoolMember.donation_id) == unit.id)
    ).scalar_one_or_none()
    reference = check_code(deviation, "Deviation reference") if deviation is not None else None
    if pool is not None and pool.status != PoolStatus.OPEN and reference is None:
        raise CorrectionNeedsDeviation(
            f"Unit {unit.unit_number} is in pool {pool.pool_number}, which is {pool.status.value}; a correction "
            "to released lineage must name a deviation: --deviation REF."
        )
    if not changes:
        raise InvalidInput(f"Unit {unit.unit_number}: nothing to correct; give --set FIELD=VALUE.")
    unknown = sorted(set(changes) - set(CORRECTABLE))
    if unknown:
        raise InvalidInput(
            f"Unit {unit.unit_number}: {', '.join(unknown)} cannot be corrected; correctable fields: "
            f"{', '.join(CORRECTABLE)}."
        )
    key = f"Unit {unit.unit_number}"
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for name, text in changes.items():
        value: Any
        if name in ("collected_at", "frozen_at"):
            value = parse_timestamp(text, f"{key}: {name}")
        elif name == "volume_ml":
            value = check_count(
                parse_positive_int(text, f"{key}: volume_ml", allow_zero=True), f"{key}: volume_ml", allow_zero=True
            )
        elif name == "plasma_kind":
            value = parse_choice(PlasmaKind, text, f"{key}: plasma_kind")
        else:
            site = get_establishment(session, text)
            old["establishment_id"], new["establishment_id"] = unit.establishment_id, site.id
            unit.establishment_id = site.id
            continue
        old[name], new[name] = getattr(unit, name), value
        setattr(unit, name, value)
    if unit.frozen_at is not None and unit.frozen_at < unit.collected_at:
        raise InvalidInput(f"{key}: frozen at {unit.frozen_at.isoformat()}, before it was collected.")
    donor = session.get_one(Donor, unit.donor_id)
    check_collection(key, collected_at=unit.collected_at, registered_on=donor.registered_on, now=utcnow())
    old["version"], unit.version = unit.version, unit.version + 1
    new["version"] = unit.version
    if reference is not None:
        new["deviation"] = reference
    if pool is not None and reference is not None:
        session.add(
            CorrectionDeviation(
                reference=reference,
                pool_id=pool.id,
                donation_id=saved_id(unit.id),
                donation_version=unit.version,
                changes=", ".join(f"{k}={_plain(v)}" for k, v in new.items() if k not in ("version", "deviation")),
                reason=reason,
                created_by=actor,
            )
        )
    session.flush()
    audit.record(
        session,
        action="donation.corrected",
        entity_type="donation",
        entity_key=unit.unit_number,
        actor=actor,
        old=old,
        new=new,
        reason=reason,
    )
    return unit


def discard_donation(session: Session, *, unit_number: str, reason: str, actor: str) -> Donation:
    """Mark a unit discarded (destroyed). A pooled unit cannot be discarded."""
    reason = audit.require_reason(reason, f"Discarding unit {unit_number}")
    unit = get_unit(session, unit_number, for_update=True)
    if unit.status in (UnitStatus.POOLED, UnitStatus.DISCARDED):
        raise WrongState(f"Unit {unit.unit_number} is {unit.status.value}; it cannot be discarded.")
    old = unit.status
    unit.status, unit.status_reason = UnitStatus.DISCARDED, reason
    session.flush()
    audit.record(
        session,
        action="donation.discarded",
        entity_type="donation",
        entity_key=unit.unit_number,
        actor=actor,
        old={"status": old},
        new={"status": unit.status},
        reason=reason,
    )
    return unit


@dataclass
class ResultOutcome:
    """A recorded result and what it set off."""

    result: TestResult
    unit_number: str
    donor_code: str
    rejected: bool = False
    deferred: bool = False
    interdicted: list[str] = field(default_factory=list)
    pooled_in_window: list[tuple[str, str]] = field(default_factory=list)
    still_pooled: str | None = None
    deferral_ended: bool = False
    case: CaseOpened | None = None  # the look-back case it opened or joined


def add_result(
    session: Session,
    *,
    unit_number: str,
    marker: Marker,
    result: ResultValue,
    tested_at: datetime,
    actor: str,
    method: TestMethod | None = None,
    lab: str | None = None,
    value: float | None = None,
    value_unit: str | None = None,
    reason: str | None = None,
    policy: Policy = DEFAULT_POLICY,
) -> ResultOutcome:
    """Record a screening result as the newest version for its marker.

    A reactive result on a required-panel marker rejects the unit, defers the donor permanently and interdicts
    the donor's units still in inventory within the look-back window.
    """
    if result == ResultValue.REACTIVE:
        # A reactive result may interdict the donor's other units and open or join the donor's case: take the donor
        # before the unit, as every writer about that donor does, so two reactive results for one donor queue
        # instead of each holding its own unit while waiting for the other's.
        _lock_donor_of_unit(session, unit_number)
    unit = get_unit(session, unit_number, for_update=True)
    key = f"Unit {unit.unit_number}"
    if (value is None) != (value_unit is None):
        raise InvalidInput(f"{key}: a quantitative result needs both --value and --unit.")
    check_result(f"{key}, {marker.value} result", tested_at=tested_at, collected_at=unit.collected_at, now=utcnow())
    lab_id = get_establishment(session, lab).id if lab else None
    version = next_version(
        session, col(TestResult.version), col(TestResult.donation_id) == unit.id, col(TestResult.marker) == marker
    )
    if version > 1 and reason is None:
        reason = "repeat test"
    row = TestResult(
        donation_id=saved_id(unit.id),
        marker=marker,
        version=version,
        result=result,
        value=value,
        value_unit=value_unit,
        method=method,
        lab_id=lab_id,
        tested_at=tested_at,
        reason=reason,
        created_by=actor,
    )
    session.add(row)
    session.flush()
    donor = session.get_one(Donor, unit.donor_id)
    outcome = ResultOutcome(result=row, unit_number=unit.unit_number, donor_code=donor.donor_code)
    audit.record(
        session,
        action="result.added",
        entity_type="donation",
        entity_key=unit.unit_number,
        actor=actor,
        new=result_values(row),
        reason=reason,
    )
    if result == ResultValue.REACTIVE:
        apply_reactive(session, unit, marker, outcome, actor=actor, policy=policy)
    elif result == ResultValue.NONREACTIVE:
        outcome.deferral_ended = bool(
            end_deferrals_on_nonreactive(session, [saved_id(unit.id)], marker, actor=actor, policy=policy)
        )
    return outcome


def _lock_donor_of_unit(session: Session, unit_number: str) -> None:
    donor_id = select(col(Donation.donor_id)).where(col(Donation.unit_number) == canonical_unit_number(unit_number))
    session.execute(select(col(Donor.id)).where(col(Donor.id).in_(donor_id.scalar_subquery())).with_for_update()).all()


def apply_reactive(
    session: Session, unit: Donation, marker: Marker, outcome: ResultOutcome, *, actor: str, policy: Policy
) -> None:
    """What a reactive result sets off (``markers.<marker>.on_reactive``; the required panel always defers
    permanently): reject the unit; defer the donor until a later nonreactive test, or permanently and then also
    interdict the donor's units still in inventory within the look-back window. Fills ``outcome``."""
    # A pool closing with this donor's units waits for this transaction, or this one for the close (close_pool).
    session.execute(select(col(Donor.id)).where(col(Donor.id) == unit.donor_id).with_for_update()).all()
    why = f"reactive {marker.value} on unit {unit.unit_number}"
    if unit.status in (UnitStatus.IN_INVENTORY, UnitStatus.INTERDICTED):
        old = unit.status
        unit.status, unit.status_reason = UnitStatus.REJECTED, why
        session.flush()
        outcome.rejected = True
        audit.record(
            session,
            action="donation.rejected",
            entity_type="donation",
            entity_key=unit.unit_number,
            actor=actor,
            old={"status": old},
            new={"status": UnitStatus.REJECTED},
            reason=why,
        )
    elif unit.status == UnitStatus.POOLED:
        outcome.still_pooled = session.execute(
            select(col(Pool.pool_number))
            .join(PoolMember, col(PoolMember.pool_id) == col(Pool.id))
            .where(col(PoolMember.donation_id) == unit.id)
        ).scalar()
    action = policy.on_reactive(marker)
    if action == OnReactive.REJECT_UNIT:
        return
    day = local_day(unit.collected_at, _zone_of(session, unit))
    if action == OnReactive.DEFER_UNTIL_NONREACTIVE:
        waiting = session.execute(
            select(col(Deferral.id)).where(
                col(Deferral.donor_id) == unit.donor_id,
                col(Deferral.source) == DeferralSource.UNTIL_NONREACTIVE,
                col(Deferral.marker) == marker,
                col(Deferral.lifted_on).is_(None),
                col(Deferral.starts_on) <= day,
            )
        ).first()
        if waiting is None:
            defer_donor(
                session,
                donor_code=outcome.donor_code,
                reason=f"{why}: deferred until a later donation tests nonreactive for {marker.value}",
                starts_on=day,
                ends_on=None,
                actor=actor,
                source=DeferralSource.UNTIL_NONREACTIVE,
                marker=marker,
            )
            outcome.deferred = True
        return
    permanent = session.execute(
        select(col(Deferral.id)).where(
            col(Deferral.donor_id) == unit.donor_id,
            col(Deferral.ends_on).is_(None),
            col(Deferral.lifted_on).is_(None),
            # Only a deferral for a reactive result itself: a manual permanent deferral can be lifted by hand.
            col(Deferral.source) == DeferralSource.REACTIVE_RESULT,
            col(Deferral.starts_on) <= day,
        )
    ).first()
    if permanent is None:
        defer_donor(
            session,
            donor_code=outcome.donor_code,
            reason=why,
            starts_on=day,
            ends_on=None,
            actor=actor,
            source=DeferralSource.REACTIVE_RESULT,
        )
        outcome.deferred = True
    window = lookback_window(session, unit.donor_id, before=unit.collected_at, policy=policy)
    in_window = [i for i in donations_in_window(session, unit.donor_id, window) if i != unit.id]
    audit.recording.touching_where(
        session, "donation", col(Donation.id).in_(in_window) & (col(Donation.status) == UnitStatus.IN_INVENTORY)
    )
    interdicted = (
        session.execute(
            update(Donation)
            .where(col(Donation.id).in_(in_window), col(Donation.status) == UnitStatus.IN_INVENTORY)
            .values(status=UnitStatus.INTERDICTED, status_reason=f"look-back: {why}")
            .returning(col(Donation.unit_number))
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    outcome.interdicted = sorted(interdicted)
    record_interdicted(
        session, outcome.interdicted, actor=actor, reason=f"look-back: {why}", window_starts_on=window.starts_on
    )
    outcome.pooled_in_window = [
        (u, p)
        for u, p in session.execute(
            select(col(Donation.unit_number), col(Pool.pool_number))
            .join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
            .join(Pool, col(Pool.id) == col(PoolMember.pool_id))
            .where(col(Donation.id).in_(in_window))
            .order_by(col(Donation.collected_at))
        )
    ]
    # The look-back case opens by itself (or the finding joins the donor's open case), due from the test's local day.
    outcome.case = open_case(
        session,
        donor_code=outcome.donor_code,
        reason=why,
        actor=actor,
        policy=policy,
        trigger=CaseTrigger.REACTIVE_TEST,
        received_at=outcome.result.tested_at,
        window=window,
        timezone=_zone_of(session, unit),
    )


def _zone_of(session: Session, unit: Donation) -> str:
    zone: str = session.execute(select(zone_of_donation()).where(col(Donation.id) == unit.id)).scalar_one()
    return zone


def end_deferrals_on_nonreactive(
    session: Session, donation_ids: list[int], marker: Marker, *, actor: str, policy: Policy
) -> list[str]:
    """A nonreactive result on a later donation ends the donor's deferral that waits for it (21 CFR
    640.65(b)(2)(ii): not plasmapheresed again until tested nonreactive). The donation that brought the
    nonreactive result was itself collected while deferred and stays covered: the deferral is lifted from the day
    after its collection. Returns the donor codes whose deferral ended. Set-based over the given donations."""
    if policy.on_reactive(marker) != OnReactive.DEFER_UNTIL_NONREACTIVE or not donation_ids:
        return []
    # Only a donation whose current result for the marker is nonreactive counts: a reactive retest of it (later in
    # the same file, or by hand) keeps the donor deferred.
    donation_ids = [
        donation_id
        for donation_id, _, value, _ in session.execute(current_results_query(donation_ids, [marker.value]))
        if value == ResultValue.NONREACTIVE.value
    ]
    if not donation_ids:
        return []
    rows = session.execute(
        select(
            Deferral, col(Donor.donor_code), col(Donation.unit_number), col(Donation.collected_at), zone_of_donation()
        )
        .join(Donation, col(Donation.donor_id) == col(Deferral.donor_id))
        .join(Donor, col(Donor.id) == col(Deferral.donor_id))
        .where(
            col(Donation.id).in_(donation_ids),
            col(Deferral.source) == DeferralSource.UNTIL_NONREACTIVE,
            col(Deferral.marker) == marker,
            col(Deferral.lifted_on).is_(None),
        )
        .order_by(col(Donation.collected_at))
    ).all()
    ended = []
    for deferral, donor_code, number, collected_at, tz in rows:
        day = local_day(collected_at, tz)
        if deferral.lifted_on is not None or day <= deferral.starts_on:
            continue  # already ended by an earlier row, or the same day's (or an earlier) donation
        why = f"nonreactive {marker.value} on unit {number}, collected {day}"
        end_deferral(
            session, deferral, donor_code=donor_code, lifted_on=day + timedelta(days=1), reason=why, actor=actor
        )
        ended.append(donor_code)
    return ended


def parse_unit_list(texts: list[str]) -> list[str]:
    """Canonical unit numbers in the given order, each once. Raises InvalidInput naming every bad one."""
    seen: dict[str, None] = {}
    problems = []
    for text in texts:
        try:
            seen[parse_unit_number(text).value] = None
        except InvalidInput as error:
            problems.append(str(error))
    if problems:
        raise InvalidInput(
            "\n".join(problems[:50]) + (f"\n... and {len(problems) - 50:,} more." if len(problems) > 50 else "")
        )
    return list(seen)
