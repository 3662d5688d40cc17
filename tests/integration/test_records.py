"""Records that add up (SPEC §10): consignees, quantities and balances, plausible times, corrections under a
deviation, one open look-back case per donor. Each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    backdate_release,
    bulk_units,
    make_consignee,
    make_donor,
    make_establishment,
    make_lot,
    make_released_pool,
    make_step,
    make_unit,
)
from traceability.errors import (
    ConsigneeNotFound,
    CorrectionNeedsDeviation,
    InvalidInput,
    OverBalance,
    QuantityNotRecorded,
    WrongState,
)
from traceability.models import Lot, LotKind, LotUnit, Marker, Pool, ResultValue, Shipment, StepMethod
from traceability.plausibility import ImplausibleTime
from traceability.queries.lineage import trace_lot, trace_pool
from traceability.services import consignees, donors, inactivation, lookback, lots, pools, units


def released_pool(session: Session, number: str, *, donors_count: int = 1000, volume_ml: int = 780) -> list[str]:
    """A released pool of ``donors_count`` units of ``volume_ml`` each (780 L for 1,000 units of 780 mL)."""
    members = bulk_units(session, donors_count=donors_count, units_per_donor=2)[::2]
    session.execute(update(units.Donation).values(volume_ml=volume_ml))
    make_released_pool(session, pool_number=number, members=members)
    return members


def released_final_lot(session: Session, pool: str, lot: str = "IVG-1", quantity: int = 100) -> str:
    make_step(session, pool=pool, method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    number = make_lot(session, lot_number=lot, inputs=[("pool", pool)], quantity=quantity)
    make_step(session, lot=number, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.2)
    lots.release_lot(session, lot_number=number, actor=APPROVER)
    backdate_release(session, number)
    return number


# --- consignees ------------------------------------------------------------------------------------------------


def test_a_consignee_is_a_record_with_an_address_and_a_shipment_names_it_by_code(session: Session) -> None:
    released_pool(session, "P-C")
    lot = released_final_lot(session, "P-C")
    consignees.add_consignee(
        session, code="H-STM", name="St Mary's Hospital", address="Greenhill Road, Leeds", country="gb", actor=ACTOR
    )
    row = lots.ship_lot(session, lot_number=lot, consignee="H-STM", quantity=10, shipped_on=NOW.date(), actor=ACTOR)
    assert (row.consignee, row.quantity) == ("St Mary's Hospital", 10)
    line = trace_lot(session, lot).shipments[0]
    assert (line.consignee, line.consignee_address, line.quantity, line.unit) == (
        "St Mary's Hospital",
        "Greenhill Road, Leeds",
        10,
        "vials",
    )
    with pytest.raises(ConsigneeNotFound, match="Consignee St Mary's Hospital not found"):
        lots.ship_lot(
            session, lot_number=lot, consignee="St Mary's Hospital", quantity=1, shipped_on=NOW.date(), actor=ACTOR
        )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"code": "H 1"}, "spaces or control"),
        ({"name": "Hosp\x1b]52;c;aGk=\x07"}, "control or escape"),
        ({"name": "x" * 100_000}, "100,000 characters"),
        ({"address": ""}, "address is empty"),
        ({"country": "USA"}, "two-letter"),
    ],
)
def test_a_consignee_with_a_bad_field_is_refused_by_name(
    session: Session, fields: dict[str, str], problem: str
) -> None:
    values = {"code": "H-1", "name": "Hospital", "address": "1 Road", "country": "US", **fields}
    with pytest.raises(InvalidInput, match=problem):
        consignees.add_consignee(session, actor=ACTOR, **values)


# --- quantities and balances -----------------------------------------------------------------------------------


def test_all_lots_together_draw_at_most_the_pools_volume(session: Session) -> None:
    released_pool(session, "P-V")  # 1,000 units of 780 mL: 780 L
    lots.create_lot(
        session,
        lot_number="PASTE-1",
        product="ivig",
        kind=LotKind.INTERMEDIATE,
        inputs=[lots.InputSpec("pool", "P-V", 500, "L")],
        actor=ACTOR,
    )
    with pytest.raises(OverBalance, match=r"Pool P-V has 280,000 mL left .*PASTE-2 cannot draw 280,001 mL"):
        lots.create_lot(
            session,
            lot_number="PASTE-2",
            product="ivig",
            kind=LotKind.INTERMEDIATE,
            inputs=[lots.InputSpec("pool", "P-V", 280_001, "mL")],
            actor=ACTOR,
        )
    lots.create_lot(
        session,
        lot_number="PASTE-2",
        product="ivig",
        kind=LotKind.INTERMEDIATE,
        inputs=[lots.InputSpec("pool", "P-V", 280_000, "mL")],
        actor=ACTOR,
    )
    assert trace_pool(session, "P-V").drawn_ml == 780_000


def test_a_draw_from_a_pool_needs_a_volume_with_its_unit(session: Session) -> None:
    released_pool(session, "P-U", donors_count=1000)
    with pytest.raises(InvalidInput, match="give the volume drawn from pool P-U"):
        lots.create_lot(session, lot_number="L-1", product="ivig", inputs=[lots.InputSpec("pool", "P-U")], actor=ACTOR)
    with pytest.raises(InvalidInput, match="in L or mL, not 'kg'"):
        lots.create_lot(
            session, lot_number="L-1", product="ivig", inputs=[lots.InputSpec("pool", "P-U", 5, "kg")], actor=ACTOR
        )


def test_draws_from_a_lot_are_in_its_unit_and_stay_within_its_quantity(session: Session) -> None:
    released_pool(session, "P-L")
    make_step(session, pool="P-L", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    paste = make_lot(
        session,
        lot_number="PASTE-L",
        inputs=[("pool", "P-L")],
        kind=LotKind.INTERMEDIATE,
        quantity=120,
        unit=LotUnit.KG,
    )
    lots.release_lot(session, lot_number=paste, actor=APPROVER)
    make_lot(session, lot_number="IVG-A", inputs=[("lot", paste)], draw=100)
    with pytest.raises(OverBalance, match=r"Lot PASTE-L has 20 kg left \(120 kg, 100 drawn, 0 shipped\)"):
        make_lot(session, lot_number="IVG-B", inputs=[("lot", paste)], draw=21)
    with pytest.raises(InvalidInput, match="counted in kg, not vials"):
        lots.create_lot(
            session, lot_number="IVG-B", product="ivig", inputs=[lots.InputSpec("lot", paste, 1, "vials")], actor=ACTOR
        )
    make_lot(session, lot_number="IVG-B", inputs=[("lot", paste)], draw=20)
    assert session.execute(select(Lot.drawn).where(Lot.lot_number == paste)).scalar() == 120


def test_shipments_stay_within_the_quantity_less_draws_and_earlier_shipments(session: Session) -> None:
    released_pool(session, "P-S")
    lot = released_final_lot(session, "P-S", quantity=100)
    to = make_consignee(session)
    lots.ship_lot(session, lot_number=lot, consignee=to, quantity=60, shipped_on=NOW.date(), actor=ACTOR)
    with pytest.raises(OverBalance, match=r"Lot IVG-1 has 40 vials left \(100 made, 0 drawn, 60 shipped\); 41 cannot"):
        lots.ship_lot(session, lot_number=lot, consignee=to, quantity=41, shipped_on=NOW.date(), actor=ACTOR)
    lots.ship_lot(session, lot_number=lot, consignee=to, quantity=40, shipped_on=NOW.date(), actor=ACTOR)
    with pytest.raises(OverBalance, match="0 vials left"):
        lots.ship_lot(session, lot_number=lot, consignee=to, quantity=1, shipped_on=NOW.date(), actor=ACTOR)
    trace = trace_lot(session, lot)
    assert (trace.quantity, trace.shipped, trace.available) == (100, 100, 0)


def test_a_lot_without_a_recorded_quantity_is_neither_shipped_nor_drawn_from(session: Session) -> None:
    released_pool(session, "P-Q")
    lot = released_final_lot(session, "P-Q")
    session.execute(update(Lot).where(Lot.lot_number == lot).values(quantity=None, unit=None))
    session.expire_all()
    with pytest.raises(QuantityNotRecorded, match="Lot IVG-1 has no recorded quantity"):
        lots.ship_lot(
            session, lot_number=lot, consignee=make_consignee(session), quantity=1, shipped_on=NOW.date(), actor=ACTOR
        )
    with pytest.raises(QuantityNotRecorded, match="Lot IVG-1 has no recorded quantity"):
        make_lot(session, lot_number="IVG-2", inputs=[("lot", lot)])
    lots.record_quantity(session, lot_number=lot, quantity=50, unit=LotUnit.VIALS, reason="batch record", actor=ACTOR)
    with pytest.raises(WrongState, match="already has a quantity"):
        lots.record_quantity(session, lot_number=lot, quantity=60, unit=LotUnit.VIALS, reason="again", actor=ACTOR)
    lots.ship_lot(
        session, lot_number=lot, consignee=make_consignee(session), quantity=50, shipped_on=NOW.date(), actor=ACTOR
    )


def test_the_database_refuses_a_lot_balance_beyond_its_quantity(session: Session) -> None:
    released_pool(session, "P-D")
    lot = released_final_lot(session, "P-D", quantity=10)
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(text("UPDATE lot SET shipped = 11 WHERE lot_number = :n"), {"n": lot})


def test_a_lot_does_not_ship_after_its_expiry(session: Session) -> None:
    released_pool(session, "P-X")
    lot = released_final_lot(session, "P-X")
    session.execute(update(Lot).where(Lot.lot_number == lot).values(expires_on=NOW.date() - timedelta(days=1)))
    session.expire_all()
    with pytest.raises(WrongState, match="Lot IVG-1 expired on"):
        lots.ship_lot(
            session, lot_number=lot, consignee=make_consignee(session), quantity=1, shipped_on=NOW.date(), actor=ACTOR
        )


# --- plausible times -------------------------------------------------------------------------------------------


def test_shipments_dated_before_the_release_or_in_the_future_are_refused(session: Session) -> None:
    released_pool(session, "P-T")
    lot = released_final_lot(session, "P-T")  # released NOW - 1 day
    to = make_consignee(session)
    released_day = (NOW - timedelta(days=1)).date()
    for day in (date(1999, 1, 1), released_day - timedelta(days=2), date(2031, 1, 1)):
        with pytest.raises(ImplausibleTime, match=f"shipped on {day.isoformat()}"):
            lots.ship_lot(session, lot_number=lot, consignee=to, quantity=1, shipped_on=day, actor=ACTOR)
    assert session.execute(select(Shipment.id)).first() is None
    lots.ship_lot(session, lot_number=lot, consignee=to, quantity=1, shipped_on=released_day, actor=ACTOR)


def test_pool_tests_before_the_close_or_in_the_future_are_refused(session: Session) -> None:
    released_pool(session, "P-PT")  # closed at NOW
    for when in (datetime(2020, 1, 1, tzinfo=UTC), NOW - timedelta(seconds=1), datetime(2031, 1, 1, tzinfo=UTC)):
        with pytest.raises(ImplausibleTime, match="Pool P-PT, hbsag test"):
            pools.test_pool(
                session,
                pool_number="P-PT",
                marker=Marker.HBSAG,
                result=ResultValue.NONREACTIVE,
                tested_at=when,
                actor=ACTOR,
            )
    pools.test_pool(
        session, pool_number="P-PT", marker=Marker.HBSAG, result=ResultValue.NONREACTIVE, tested_at=NOW, actor=ACTOR
    )


def test_a_step_before_its_pools_units_were_collected_is_refused(session: Session) -> None:
    released_pool(session, "P-ST")
    with pytest.raises(ImplausibleTime, match="a step lies within the life of its pool or lot"):
        inactivation.add_step(
            session,
            pool_number="P-ST",
            method=StepMethod.SOLVENT_DETERGENT,
            started_at=datetime(2019, 5, 1, 8, tzinfo=UTC),
            ended_at=datetime(2019, 5, 1, 14, tzinfo=UTC),
            actor=ACTOR,
        )


def test_a_donor_registered_in_the_future_and_a_collection_before_registration_are_refused(session: Session) -> None:
    code = make_establishment(session)
    with pytest.raises(ImplausibleTime, match="Donor D-FUT: registered on 2031-01-01 is in the future"):
        donors.add_donor(session, donor_code="D-FUT", establishment=code, registered_on=date(2031, 1, 1), actor=ACTOR)
    donor = donors.add_donor(
        session, donor_code="D-REG", establishment=code, registered_on=date(2026, 3, 10), actor=ACTOR
    )
    with pytest.raises(ImplausibleTime, match="before the donor was registered on 2026-03-10"):
        make_unit(session, donor=donor, collected_at=datetime(2026, 3, 8, 12, tzinfo=UTC), panel=None)
    with pytest.raises(ImplausibleTime, match="is before 1940"):
        make_unit(session, donor=make_donor(session), collected_at=datetime(1850, 1, 1, tzinfo=UTC), panel=None)
    # The registration day counts in any time zone: 10:00 UTC on the day before is already the 10th at UTC+14.
    make_unit(session, donor=donor, collected_at=datetime(2026, 3, 9, 10, tzinfo=UTC), panel=None)


# --- corrections in released lineage ---------------------------------------------------------------------------


def test_a_correction_in_a_released_pool_needs_a_deviation_which_then_shows_downstream(session: Session) -> None:
    members = released_pool(session, "P-DV")
    lot = released_final_lot(session, "P-DV")
    with pytest.raises(CorrectionNeedsDeviation, match=f"Unit {members[0]} is in pool P-DV, which is released"):
        units.correct_donation(
            session, unit_number=members[0], changes={"volume_ml": "100"}, reason="scale misread", actor=ACTOR
        )
    assert (
        session.execute(select(units.Donation.volume_ml).where(units.Donation.unit_number == members[0])).scalar()
        == 780
    )
    units.correct_donation(
        session,
        unit_number=members[0],
        changes={"volume_ml": "100"},
        reason="scale misread",
        actor=ACTOR,
        deviation="DEV-2026-014",
    )
    assert [d.reference for d in trace_pool(session, "P-DV").deviations] == ["DEV-2026-014"]
    lot_trace = trace_lot(session, lot)
    assert [(d.reference, d.unit_number, d.changes) for d in lot_trace.deviations] == [
        ("DEV-2026-014", members[0], "volume_ml=100")
    ]
    assert lot_trace.as_json()["deviations"][0]["reference"] == "DEV-2026-014"


def test_a_unit_in_an_open_pool_is_corrected_without_a_deviation(session: Session) -> None:
    unit = make_unit(session, donor=make_donor(session))
    pools.create_pool(session, pool_number="P-OPEN", product="ivig", actor=ACTOR)
    session.execute(update(Pool).where(Pool.pool_number == "P-OPEN").values(status="open"))
    units.correct_donation(session, unit_number=unit.unit_number, changes={"volume_ml": "700"}, reason="r", actor=ACTOR)


# --- look-back -------------------------------------------------------------------------------------------------


def test_a_donor_has_one_open_look_back_case(session: Session) -> None:
    donor = make_donor(session)
    make_unit(session, donor=donor)
    first = lookback.open_case(session, donor_code=donor.donor_code, reason="PDI", actor=ACTOR)
    again = lookback.open_case(session, donor_code=donor.donor_code, reason="PDI again", actor=ACTOR)
    assert (again.case_number, again.joined, first.joined) == (first.case_number, True, False)


def test_the_database_keeps_one_open_case_per_donor(session: Session) -> None:
    donor = make_donor(session)
    lookback.open_case(session, donor_code=donor.donor_code, reason="PDI", actor=ACTOR)
    with pytest.raises(IntegrityError), session.begin_nested():
        session.execute(
            text(
                "INSERT INTO lookback_case (created_at, created_by, case_number, donor_id, reason, status) "
                "VALUES (CURRENT_TIMESTAMP, 'x', 'LB-X', :d, 'r', 'open')"
            ),
            {"d": donor.id},
        )
