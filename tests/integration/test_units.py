"""Units and results: versions, reactive consequences and the look-back window, corrections and discards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from tests.factories import ACTOR, NOW, bulk_units, make_donor, make_establishment, make_unit
from traceability.errors import DuplicateKey, InvalidInput, InvalidUnitNumber, UnitNotFound, WrongState
from traceability.models import Deferral, Donation, Marker, ResultValue, TestResult
from traceability.queries.lineage import trace_donor, trace_unit
from traceability.services import pools, units


def status(session: Session, number: str) -> str:
    return session.execute(select(Donation.status).where(Donation.unit_number == number)).scalar_one().value


def test_any_printed_form_of_a_din_is_stored_canonical_and_found_again(session: Session) -> None:
    donor = make_donor(session)
    row = units.add_donation(
        session,
        unit_number="=G12341765432170",
        donor_code=donor.donor_code,
        collected_at=NOW,
        volume_ml=700,
        actor=ACTOR,
    )
    assert (row.unit_number, row.scheme.value, row.flag) == ("G123417654321", "isbt128", "70")
    assert trace_unit(session, "G1234 17 654321 A").unit_number == "G123417654321"
    with pytest.raises(DuplicateKey, match="Unit G123417654321 already exists"):
        units.add_donation(
            session,
            unit_number="G123417654321A",
            donor_code=donor.donor_code,
            collected_at=NOW,
            volume_ml=700,
            actor=ACTOR,
        )


def test_a_wrong_check_character_is_refused_and_nothing_is_written(session: Session) -> None:
    donor = make_donor(session)
    with pytest.raises(InvalidUnitNumber, match="check character B does not match A"):
        units.add_donation(
            session,
            unit_number="G123417654321B",
            donor_code=donor.donor_code,
            collected_at=NOW,
            volume_ml=700,
            actor=ACTOR,
        )
    assert session.execute(select(Donation.id)).first() is None


def test_bad_values_are_refused_with_the_unit_named(session: Session) -> None:
    donor = make_donor(session)
    with pytest.raises(InvalidInput, match="Unit A999926000009: volume -1 mL is negative"):
        units.add_donation(
            session,
            unit_number="A999926000009",
            donor_code=donor.donor_code,
            collected_at=NOW,
            volume_ml=-1,
            actor=ACTOR,
        )
    with pytest.raises(InvalidInput, match="frozen at .* before it was collected"):
        units.add_donation(
            session,
            unit_number="A999926000009",
            donor_code=donor.donor_code,
            collected_at=NOW,
            frozen_at=NOW - timedelta(hours=1),
            volume_ml=700,
            actor=ACTOR,
        )
    unit = make_unit(session, donor=donor, panel=None)
    with pytest.raises(InvalidInput, match="tested at .* before it was collected"):
        units.add_result(
            session,
            unit_number=unit.unit_number,
            marker=Marker.HBSAG,
            result=ResultValue.NONREACTIVE,
            tested_at=unit.collected_at - timedelta(days=1),
            actor=ACTOR,
        )
    with pytest.raises(UnitNotFound):
        units.add_result(
            session,
            unit_number="A999926999999",
            marker=Marker.HBSAG,
            result=ResultValue.NONREACTIVE,
            tested_at=NOW,
            actor=ACTOR,
        )


def test_a_repeat_test_is_a_new_version_and_the_old_one_stays_readable(session: Session) -> None:
    donor = make_donor(session)
    unit = make_unit(session, donor=donor, panel=None)
    units.add_result(
        session,
        unit_number=unit.unit_number,
        marker=Marker.HIV_RNA,
        result=ResultValue.INVALID,
        tested_at=unit.collected_at + timedelta(days=1),
        actor=ACTOR,
    )
    units.add_result(
        session,
        unit_number=unit.unit_number,
        marker=Marker.HIV_RNA,
        result=ResultValue.NONREACTIVE,
        tested_at=unit.collected_at + timedelta(days=2),
        actor=ACTOR,
    )
    rows = session.execute(
        select(TestResult.version, TestResult.result)
        .where(TestResult.donation_id == unit.id)
        .order_by(TestResult.version)
    ).all()
    assert [(v, r.value) for v, r in rows] == [(1, "invalid"), (2, "nonreactive")]
    results = trace_unit(session, unit.unit_number).results
    assert [(r.version, r.current) for r in results] == [(1, False), (2, True)]


def test_a_reactive_result_rejects_the_unit_defers_the_donor_and_interdicts_the_window(session: Session) -> None:
    site = make_establishment(session)
    donor = make_donor(session, establishment=site)
    t = NOW - timedelta(days=600)
    old = make_unit(session, donor=donor, collected_at=t)  # outside the window
    edge = make_unit(session, donor=donor, collected_at=t + timedelta(days=100))  # exactly 365 days before
    last_clean = make_unit(session, donor=donor, collected_at=t + timedelta(days=465))  # last nonreactive
    positive = make_unit(session, donor=donor, collected_at=t + timedelta(days=480), panel=None)
    outcome = units.add_result(
        session,
        unit_number=positive.unit_number,
        marker=Marker.ANTI_HIV,
        result=ResultValue.REACTIVE,
        tested_at=positive.collected_at + timedelta(days=1),
        actor=ACTOR,
    )
    assert outcome.rejected and outcome.deferred
    assert outcome.interdicted == sorted([edge.unit_number, last_clean.unit_number])
    assert status(session, positive.unit_number) == "rejected"
    assert status(session, old.unit_number) == "in-inventory"
    deferral = session.execute(select(Deferral).where(Deferral.donor_id == donor.id)).scalar_one()
    assert deferral.ends_on is None and deferral.source.value == "reactive-result"
    assert deferral.starts_on == positive.collected_at.date()


def test_the_day_before_the_windows_first_day_is_not_interdicted(session: Session) -> None:
    donor = make_donor(session)
    last = datetime(2025, 11, 13, 12, 0, tzinfo=UTC)
    outside = make_unit(session, donor=donor, collected_at=datetime(2024, 11, 12, 23, 59, 59, tzinfo=UTC))
    first_day = make_unit(session, donor=donor, collected_at=datetime(2024, 11, 13, 0, 0, tzinfo=UTC))
    make_unit(session, donor=donor, collected_at=last)
    positive = make_unit(session, donor=donor, collected_at=last + timedelta(days=10), panel=None)
    outcome = units.add_result(
        session,
        unit_number=positive.unit_number,
        marker=Marker.HBSAG,
        result=ResultValue.REACTIVE,
        tested_at=NOW - timedelta(days=100),
        actor=ACTOR,
    )
    assert outside.unit_number not in outcome.interdicted
    assert first_day.unit_number in outcome.interdicted
    assert status(session, outside.unit_number) == "in-inventory"


def test_pooled_units_in_the_window_are_reported_not_touched(session: Session) -> None:
    numbers = bulk_units(session, donors_count=1, units_per_donor=2)
    pools.create_pool(session, pool_number="P-1", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-1", unit_numbers=numbers[:1], actor=ACTOR, now=NOW)
    outcome = units.add_result(
        session, unit_number=numbers[1], marker=Marker.HCV_RNA, result=ResultValue.REACTIVE, tested_at=NOW, actor=ACTOR
    )
    assert outcome.pooled_in_window == [(numbers[0], "P-1")]
    assert status(session, numbers[0]) == "pooled"
    trace = trace_donor(session, outcome.donor_code)
    assert [d.pool_number for d in trace.donations] == ["P-1", None]
    assert [d.status for d in trace.donations] == ["pooled", "rejected"]


def test_a_donation_correction_needs_a_reason_and_keeps_the_old_value(session: Session) -> None:
    from traceability.queries.listings import audit_log

    donor = make_donor(session)
    unit = make_unit(session, donor=donor, panel=None)
    with pytest.raises(InvalidInput, match="needs a reason"):
        units.correct_donation(
            session, unit_number=unit.unit_number, changes={"volume_ml": "700"}, reason=" ", actor=ACTOR
        )
    with pytest.raises(InvalidInput, match="donor_code cannot be corrected"):
        units.correct_donation(
            session, unit_number=unit.unit_number, changes={"donor_code": "X"}, reason="typo", actor=ACTOR
        )
    units.correct_donation(
        session, unit_number=unit.unit_number, changes={"volume_ml": "640"}, reason="scale", actor=ACTOR
    )
    assert unit.volume_ml == 640 and unit.version == 2
    _, rows = audit_log(session, key=unit.unit_number)
    corrected = [r for r in rows if r[3] == "donation.corrected"][0]
    assert corrected[6] == {"version": 1, "volume_ml": 750} and corrected[7] == {"version": 2, "volume_ml": 640}
    assert corrected[8] == "scale"
    assert trace_donor(session, donor.donor_code).donations[0].changed is True


def test_a_pooled_unit_cannot_be_discarded(session: Session) -> None:
    numbers = bulk_units(session, donors_count=1, units_per_donor=2)
    pools.create_pool(session, pool_number="P-1", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-1", unit_numbers=numbers[:1], actor=ACTOR, now=NOW)
    with pytest.raises(WrongState, match="is pooled; it cannot be discarded"):
        units.discard_donation(session, unit_number=numbers[0], reason="leak", actor=ACTOR)
    units.discard_donation(session, unit_number=numbers[1], reason="leak", actor=ACTOR)
    assert status(session, numbers[1]) == "discarded"
