"""Each case a regulatory reviewer found pooled or released although the regulation stops it (issue "The rules,
exact at their edges"), at its exact boundary, through the services, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    make_donor,
    make_establishment,
    make_lot,
    make_released_pool,
    make_unit,
)
from traceability.errors import IneligibleUnits, InvalidInput, WrongProduct
from traceability.models import Deferral, DeferralSource, Donation, LotKind, Marker, ResultValue, UnitStatus
from traceability.services import donors, lookback, pools, units


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def status(session: Session, unit_number: str) -> str:
    return session.execute(select(Donation.status).where(Donation.unit_number == unit_number)).scalar_one()


def reactive(session: Session, unit_number: str, marker: Marker = Marker.ANTI_HIV) -> units.ResultOutcome:
    collected = session.execute(select(Donation.collected_at).where(Donation.unit_number == unit_number)).scalar_one()
    return units.add_result(
        session,
        unit_number=unit_number,
        marker=marker,
        result=ResultValue.REACTIVE,
        tested_at=collected + timedelta(days=1),
        actor=ACTOR,
    )


# --- look-back window: twelve calendar months on local dates -------------------------------------------------------


def test_the_lookback_window_counts_twelve_calendar_months_and_takes_the_whole_first_day(session: Session) -> None:
    donor = make_donor(session)
    day_before = make_unit(session, donor=donor, collected_at=at("2023-02-28T23:00:00+00:00"))
    first_day = make_unit(session, donor=donor, collected_at=at("2023-03-01T00:30:00+00:00"))
    next_day = make_unit(session, donor=donor, collected_at=at("2023-03-02T08:00:00+00:00"))
    last = make_unit(session, donor=donor, collected_at=at("2024-03-01T10:00:00+00:00"))  # last nonreactive
    turned = make_unit(session, donor=donor, collected_at=at("2024-04-01T10:00:00+00:00"), panel=None)
    outcome = reactive(session, turned.unit_number)
    # 365 days before 2024-03-01 10:00 is 2023-03-02 10:00 (2024 holds 29 February): the unit of 08:00 that day, and
    # the whole of 2023-03-01, were missed by a window counted in hours.
    assert outcome.interdicted == sorted([first_day.unit_number, next_day.unit_number, last.unit_number])
    assert status(session, next_day.unit_number) == UnitStatus.INTERDICTED
    assert status(session, first_day.unit_number) == UnitStatus.INTERDICTED
    assert status(session, day_before.unit_number) == UnitStatus.IN_INVENTORY


def test_the_lookback_window_is_counted_on_the_collection_centres_local_day(session: Session) -> None:
    site = make_establishment(session, timezone="America/New_York")
    donor = make_donor(session, establishment=site)
    # 2023-03-01 03:00 UTC is 22:00 on 28 February in New York: outside a window that starts on 1 March.
    evening_before = make_unit(session, donor=donor, collected_at=at("2023-02-28T22:00:00-05:00"))
    morning_of = make_unit(session, donor=donor, collected_at=at("2023-03-01T07:00:00-05:00"))
    last = make_unit(session, donor=donor, collected_at=at("2024-03-01T10:00:00-05:00"))
    turned = make_unit(session, donor=donor, collected_at=at("2024-04-01T10:00:00-05:00"), panel=None)
    outcome = reactive(session, turned.unit_number)
    assert outcome.interdicted == sorted([morning_of.unit_number, last.unit_number])
    assert status(session, evening_before.unit_number) == UnitStatus.IN_INVENTORY


def test_a_lookback_case_finds_the_units_of_the_calendar_month_window(session: Session) -> None:
    donor = make_donor(session)
    outside = make_unit(session, donor=donor, collected_at=at("2025-02-27T12:00:00+00:00"))
    edge = make_unit(session, donor=donor, collected_at=at("2025-02-28T00:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at("2026-02-28T12:00:00+00:00"))
    opened = lookback.open_case(session, donor_code=donor.donor_code, reason="PDI: HCV RNA elsewhere", actor=ACTOR)
    assert edge.unit_number in opened.interdicted and outside.unit_number not in opened.interdicted


# --- qualification belongs to each unit -----------------------------------------------------------------------------


def open_pool(session: Session, number: str) -> str:
    pools.create_pool(session, pool_number=number, product="ivig", actor=ACTOR)
    return number


def refusal(session: Session, pool: str, unit_number: str) -> list[str]:
    with pytest.raises(IneligibleUnits) as refused:
        pools.add_units(session, pool_number=pool, unit_numbers=[unit_number], actor=ACTOR, now=NOW)
    return refused.value.reasons[unit_number]


def test_a_donor_back_after_700_days_is_an_applicant_again(session: Session) -> None:
    donor = make_donor(session)
    make_unit(session, donor=donor, collected_at=at("2023-01-10T09:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at("2023-02-10T09:00:00+00:00"))
    back = make_unit(session, donor=donor, collected_at=at("2025-01-10T09:00:00+00:00"))  # 700 days later
    pool = open_pool(session, "P-LAPSED")
    assert any("not qualified for this unit" in r for r in refusal(session, pool, back.unit_number))
    make_unit(session, donor=donor, collected_at=at("2025-02-10T09:00:00+00:00"))  # the next visit qualifies it
    assert pools.add_units(session, pool_number=pool, unit_numbers=[back.unit_number], actor=ACTOR, now=NOW) == 1


def test_an_applicant_whose_second_visit_came_200_days_later_never_has_the_first_unit_pooled(session: Session) -> None:
    donor = make_donor(session)
    first = make_unit(session, donor=donor, collected_at=at("2025-06-01T09:00:00+00:00"))
    second = make_unit(session, donor=donor, collected_at=at("2025-12-18T09:00:00+00:00"))  # 200 days later
    make_unit(session, donor=donor, collected_at=at("2026-01-17T09:00:00+00:00"))
    pool = open_pool(session, "P-APPLICANT")
    assert any("not qualified for this unit" in r for r in refusal(session, pool, first.unit_number))
    assert pools.add_units(session, pool_number=pool, unit_numbers=[second.unit_number], actor=ACTOR, now=NOW) == 1


@pytest.mark.parametrize(("second", "qualified"), [("2026-01-15", True), ("2026-01-16", False)])
def test_six_calendar_months_qualify_and_a_day_more_does_not(session: Session, second: str, qualified: bool) -> None:
    donor = make_donor(session)
    first = make_unit(session, donor=donor, collected_at=at("2025-07-15T23:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at(f"{second}T01:00:00+00:00"))
    pool = open_pool(session, "P-SIX")
    if qualified:
        assert pools.add_units(session, pool_number=pool, unit_numbers=[first.unit_number], actor=ACTOR, now=NOW) == 1
    else:
        assert any("not qualified" in r for r in refusal(session, pool, first.unit_number))


# --- deferral days are local days -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("collected", "deferred"),
    [("2026-03-01T20:00:00-05:00", True), ("2026-03-02T00:30:00-05:00", False)],
)
def test_a_deferral_covers_the_last_deferred_day_in_the_centres_time_zone(
    session: Session, collected: str, deferred: bool
) -> None:
    site = make_establishment(session, timezone="America/New_York")
    donor = make_donor(session, establishment=site)
    donors.defer_donor(
        session,
        donor_code=donor.donor_code,
        reason="travel",
        starts_on=date(2026, 1, 1),
        ends_on=date(2026, 3, 2),  # the first day the donor may donate again
        actor=ACTOR,
    )
    unit = make_unit(session, donor=donor, collected_at=at(collected))
    make_unit(session, donor=donor, collected_at=at("2026-03-20T10:00:00-05:00"))
    pool = open_pool(session, "P-TZ")
    now = at("2026-06-01T12:00:00+00:00")
    if deferred:  # 20:00 in New York on 1 March is 01:00 UTC on 2 March: still the last deferred day there
        with pytest.raises(IneligibleUnits, match="deferred at collection: travel"):
            pools.add_units(session, pool_number=pool, unit_numbers=[unit.unit_number], actor=ACTOR, now=now)
    else:
        assert pools.add_units(session, pool_number=pool, unit_numbers=[unit.unit_number], actor=ACTOR, now=now) == 1


def test_an_establishment_in_an_unknown_time_zone_is_refused(session: Session) -> None:
    with pytest.raises(InvalidInput, match="Establishment C-MARS: Time zone 'Mars/Olympus' is not an IANA"):
        donors.add_establishment(
            session, code="C-MARS", name="Mars", kind="collection", timezone="Mars/Olympus", actor=ACTOR
        )  # type: ignore[arg-type]


# --- a reactive syphilis test defers until a later nonreactive test ------------------------------------------------


def test_a_reactive_syphilis_test_defers_the_donor_until_a_later_donation_tests_nonreactive(session: Session) -> None:
    donor = make_donor(session)
    before = make_unit(session, donor=donor, collected_at=at("2026-01-05T09:00:00+00:00"))
    syphilis = make_unit(session, donor=donor, collected_at=at("2026-01-12T09:00:00+00:00"))
    outcome = reactive(session, syphilis.unit_number, Marker.SYPHILIS)
    assert outcome.rejected and outcome.deferred
    deferral = session.execute(select(Deferral).where(Deferral.donor_id == donor.id)).scalar_one()
    assert (deferral.source, deferral.marker, deferral.starts_on) == (
        DeferralSource.UNTIL_NONREACTIVE,
        Marker.SYPHILIS,
        date(2026, 1, 12),
    )
    assert status(session, before.unit_number) == UnitStatus.IN_INVENTORY  # no look-back for syphilis
    during = make_unit(session, donor=donor, collected_at=at("2026-01-19T09:00:00+00:00"))
    pool = open_pool(session, "P-SYPH")
    assert any("deferred at collection" in r for r in refusal(session, pool, during.unit_number))
    # The next donation tests nonreactive for syphilis: the deferral ends the day after it (it was itself collected
    # while deferred), and the donor's later units are usable again.
    units.add_result(
        session,
        unit_number=during.unit_number,
        marker=Marker.SYPHILIS,
        result=ResultValue.NONREACTIVE,
        tested_at=at("2026-01-20T09:00:00+00:00"),
        actor=ACTOR,
    )
    session.refresh(deferral)
    assert deferral.lifted_on == date(2026, 1, 20)
    after = make_unit(session, donor=donor, collected_at=at("2026-01-26T09:00:00+00:00"))
    assert any("deferred at collection" in r for r in refusal(session, pool, during.unit_number))
    assert pools.add_units(session, pool_number=pool, unit_numbers=[after.unit_number], actor=ACTOR, now=NOW) == 1


def test_a_nonreactive_syphilis_retest_of_the_same_day_does_not_end_the_deferral(session: Session) -> None:
    donor = make_donor(session)
    unit = make_unit(session, donor=donor, collected_at=at("2026-01-12T09:00:00+00:00"))
    reactive(session, unit.unit_number, Marker.SYPHILIS)
    units.add_result(
        session,
        unit_number=unit.unit_number,
        marker=Marker.SYPHILIS,
        result=ResultValue.NONREACTIVE,
        tested_at=at("2026-01-14T09:00:00+00:00"),
        actor=ACTOR,
    )
    deferral = session.execute(select(Deferral).where(Deferral.donor_id == donor.id)).scalar_one()
    assert deferral.lifted_on is None


# --- pool close re-checks each member's donor ----------------------------------------------------------------------


def test_a_member_whose_donor_just_turned_reactive_blocks_the_close_and_pool_remove_is_suggested(
    session: Session,
) -> None:
    donor = make_donor(session)
    member = make_unit(session, donor=donor, collected_at=at("2026-01-05T09:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at("2026-01-12T09:00:00+00:00"))
    pool = open_pool(session, "P-TURNED")
    pools.add_units(session, pool_number=pool, unit_numbers=[member.unit_number], actor=ACTOR, now=NOW)
    later = make_unit(session, donor=donor, collected_at=at("2026-05-20T09:00:00+00:00"), panel=None)
    reactive(session, later.unit_number)  # the member is pooled: not interdicted, only reported
    with pytest.raises(IneligibleUnits) as refused:
        pools.close_pool(session, pool_number=pool, actor=ACTOR, now=NOW)
    reasons = refused.value.reasons[member.unit_number]
    assert any(f"reactive anti-hiv on unit {later.unit_number}" in r for r in reasons)
    assert f"plasmatrace pool remove P-TURNED {member.unit_number} --reason" in str(refused.value)


def test_a_member_held_by_an_open_lookback_case_blocks_the_close(session: Session) -> None:
    donor = make_donor(session)
    member = make_unit(session, donor=donor, collected_at=at("2026-01-05T09:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at("2026-01-12T09:00:00+00:00"))
    pool = open_pool(session, "P-CASE")
    pools.add_units(session, pool_number=pool, unit_numbers=[member.unit_number], actor=ACTOR, now=NOW)
    opened = lookback.open_case(session, donor_code=donor.donor_code, reason="PDI: travel", actor=ACTOR)
    with pytest.raises(IneligibleUnits, match=f"held by open look-back case {opened.case_number}"):
        pools.close_pool(session, pool_number=pool, actor=ACTOR, now=NOW)


# --- products -------------------------------------------------------------------------------------------------------


def test_a_lot_of_a_product_the_policy_does_not_know_is_refused(session: Session) -> None:
    pool = make_released_pool(session, pool_number="P-PRODUCT", bulk=True)
    with pytest.raises(InvalidInput, match="Lot L-SNAKE: product 'snake-oil' is not a final product"):
        make_lot(session, inputs=[("pool", pool)], lot_number="L-SNAKE", product="snake-oil")
    with pytest.raises(InvalidInput, match="'snake-oil' is not in the policy"):
        make_lot(session, inputs=[("pool", pool)], lot_number="L-SNAKE", product="snake-oil", kind=LotKind.INTERMEDIATE)


def test_an_anti_d_final_lot_cannot_be_made_from_ivig_pools_even_through_an_intermediate(session: Session) -> None:
    ivig_pool = make_released_pool(session, pool_number="P-IVIG", bulk=True)
    with pytest.raises(WrongProduct, match=f"pool {ivig_pool} was made for ivig, not anti-d"):
        make_lot(session, inputs=[("pool", ivig_pool)], lot_number="AD-1", product="anti-d")
    paste = make_lot(
        session,
        inputs=[("pool", ivig_pool)],
        lot_number="PASTE-1",
        product="fraction-ii-paste",
        kind=LotKind.INTERMEDIATE,
    )
    from traceability.services import lots

    lots.release_lot(session, lot_number=paste, actor=APPROVER)
    with pytest.raises(WrongProduct, match=f"pool {ivig_pool} was made for ivig"):
        make_lot(session, inputs=[("lot", paste)], lot_number="AD-2", product="anti-d")
    assert make_lot(session, inputs=[("lot", paste)], lot_number="IVG-OK", product="ivig")


def test_every_release_records_the_sha256_of_the_policy_in_force(session: Session) -> None:
    import json

    from traceability.models import AuditEvent
    from traceability.rules import DEFAULT_POLICY, policy_digest

    pool = make_released_pool(session, pool_number="P-SHA", bulk=True)
    event = session.execute(
        select(AuditEvent).where(AuditEvent.action == "pool.released", AuditEvent.entity_key == pool)
    ).scalar_one()
    assert json.loads(event.new_values or "{}")["policy_sha256"] == policy_digest(DEFAULT_POLICY)
