"""Look-back cases that run to their deadlines (SPEC §12): opened by a reactive panel result (one per donor, later
findings join it), tasks due in calendar days on the case's local day, holds on every lot downstream until each is
assessed, and no close while a task is open."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import ACTOR, APPROVER, NOW, backdate_release, bulk_units, make_consignee, make_lot, make_step
from traceability.errors import InvalidInput, LotNotReleasable, LotNotShippable, NotPermitted, WrongState
from traceability.models import (
    CaseStatus,
    Decision,
    Donation,
    Donor,
    LookbackCase,
    LotKind,
    Marker,
    PoolMember,
    ResultValue,
    StepMethod,
)
from traceability.queries import casework
from traceability.queries.eligibility import lookback_window
from traceability.queries.impact import case_impact
from traceability.queries.lineage import trace_lot
from traceability.services import holds, lookback, lots, pools, units

INVESTIGATOR = "qa.investigator"


def lineage(session: Session) -> tuple[str, str]:
    """P-C (S/D) -> INT-C (released) -> FIN-C (released, shipped to Hospital C) and FIN-D (pending); returns the
    unit number of a pooled donor's second unit (in inventory) and that donor's code."""
    numbers = bulk_units(session, donors_count=1000, units_per_donor=2)
    pools.create_pool(session, pool_number="P-C", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-C", unit_numbers=numbers[::2], actor=ACTOR, now=NOW)
    pools.close_pool(session, pool_number="P-C", actor=ACTOR, now=NOW)
    for marker in (Marker.HBSAG, Marker.ANTI_HIV, Marker.HCV_RNA):
        pools.test_pool(
            session, pool_number="P-C", marker=marker, result=ResultValue.NONREACTIVE, tested_at=NOW, actor=ACTOR
        )
    pools.release_pool(session, pool_number="P-C", actor=APPROVER)
    make_step(session, pool="P-C", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    make_lot(session, lot_number="INT-C", inputs=[("pool", "P-C")], kind=LotKind.INTERMEDIATE)
    lots.release_lot(session, lot_number="INT-C", actor=APPROVER)
    for number in ("FIN-C", "FIN-D"):
        make_lot(session, lot_number=number, inputs=[("lot", "INT-C")])
        make_step(session, lot=number, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.5)
    lots.release_lot(session, lot_number="FIN-C", actor=APPROVER)
    backdate_release(session, "FIN-C")
    to = make_consignee(session, "H-C", name="Hospital C", address="1 Harbour Road, Portsmouth")
    lots.ship_lot(session, lot_number="FIN-C", consignee=to, quantity=40, shipped_on=NOW.date(), actor=ACTOR)
    donor = session.execute(
        select(Donor.donor_code).join(Donation, Donation.donor_id == Donor.id).where(Donation.unit_number == numbers[0])
    ).scalar_one()
    return numbers[1], donor


def reactive(session: Session, unit: str, marker: Marker = Marker.ANTI_HCV, at: datetime = NOW) -> units.ResultOutcome:
    return units.add_result(
        session, unit_number=unit, marker=marker, result=ResultValue.REACTIVE, tested_at=at, actor=ACTOR
    )


def open_cases(session: Session, donor: str) -> int:
    return session.execute(
        select(func.count(LookbackCase.id))
        .join(Donor, Donor.id == LookbackCase.donor_id)
        .where(Donor.donor_code == donor, LookbackCase.status == CaseStatus.OPEN)
    ).scalar_one()


def test_a_reactive_panel_result_opens_exactly_one_case_and_a_second_joins_it(session: Session) -> None:
    unit, donor = lineage(session)
    first = reactive(session, unit)
    assert first.case is not None and not first.case.joined
    assert first.case.held == ["FIN-C", "FIN-D", "INT-C"]
    tasks = casework.case_tasks(session, lookback.get_case(session, first.case.case_number).id or 0)
    assert [(t.kind, t.lot_number, t.consignee, t.due_on) for t in tasks] == [
        ("review-quarantine", None, None, "2026-06-04"),
        ("quarantine-request", "FIN-C", "Hospital C", "2026-06-04"),
        ("supplemental-results", None, "Hospital C", "2026-07-16"),
        ("assessment", "FIN-C", None, None),
        ("assessment", "FIN-D", None, None),
        ("assessment", "INT-C", None, None),
    ]
    second = reactive(session, unit, Marker.HBSAG, NOW + timedelta(hours=2))
    assert second.case is not None and second.case.joined
    assert second.case.case_number == first.case.case_number and second.case.held == []
    assert second.case.tasks == 0  # the review of the first finding is still open; nothing new downstream
    assert open_cases(session, donor) == 1
    # What the case implicates is what case_impact answers for the same window.
    donor_id = session.execute(select(Donor.id).where(Donor.donor_code == donor)).scalar_one()
    at = session.execute(select(Donation.collected_at).where(Donation.unit_number == unit)).scalar_one()
    impact = case_impact(session, donor_id, lookback_window(session, donor_id, before=at))
    assert sorted(impact.lots.values()) == first.case.held
    assert [(c.consignee, c.address, c.quantity) for c in impact.consignees] == [
        ("Hospital C", "1 Harbour Road, Portsmouth", 40)
    ]
    assert [p.pool_number for p in impact.pooled] == ["P-C"]


def test_due_dates_fall_on_the_right_calendar_day_across_a_month_end(session: Session) -> None:
    unit, donor = lineage(session)
    # Tested on 30 April at 22:30 UTC: still 30 April in UTC, where the centre is.
    outcome = reactive(session, unit, at=datetime(2026, 4, 30, 22, 30, tzinfo=UTC))
    assert outcome.case is not None and outcome.case.first_due == date(2026, 5, 3)
    due = casework.due_tasks(session, now=datetime(2026, 5, 3, 23, 59, tzinfo=UTC))  # the day of: on time
    assert [(t.kind, t.due_on, t.days_late) for t in due[:3]] == [
        ("review-quarantine", "2026-05-03", 0),
        ("quarantine-request", "2026-05-03", 0),
        ("supplemental-results", "2026-06-14", 0),
    ]
    assert casework.due_tasks(session, overdue=True, now=datetime(2026, 5, 3, 23, 59, tzinfo=UTC)) == []
    late = casework.due_tasks(session, overdue=True, now=datetime(2026, 5, 4, 0, 0, tzinfo=UTC))  # the day after
    assert [(t.task, t.days_late) for t in late] == [(1, 1), (2, 1)]
    late = casework.due_tasks(session, overdue=True, now=datetime(2026, 6, 15, 8, 0, tzinfo=UTC))
    assert [(t.kind, t.days_late) for t in late] == [
        ("review-quarantine", 43),
        ("quarantine-request", 43),
        ("supplemental-results", 1),
    ]


def test_information_received_counts_from_the_local_day_of_the_case(session: Session) -> None:
    _, donor = lineage(session)
    # 30 November 23:30 UTC is 1 December in Vienna: due 4 December there, not 3 December.
    opened = lookback.open_case(
        session,
        donor_code=donor,
        reason="PDI: HCV RNA reactive at another centre",
        actor=INVESTIGATOR,
        received_at=datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
        timezone="Europe/Vienna",
    )
    assert opened.first_due == date(2026, 12, 4)
    on_time = casework.due_tasks(session, overdue=True, now=datetime(2026, 12, 4, 22, 59, tzinfo=UTC))
    assert on_time == []  # 23:59 on 4 December in Vienna
    late = casework.due_tasks(session, overdue=True, now=datetime(2026, 12, 4, 23, 0, tzinfo=UTC))
    assert {t.days_late for t in late} == {1}  # midnight in Vienna: 5 December


def test_a_held_lot_cannot_ship_or_be_released_until_assessed_no_action(session: Session) -> None:
    unit, _ = lineage(session)
    case = reactive(session, unit).case
    assert case is not None
    with pytest.raises(LotNotShippable, match=f"held by look-back case {case.case_number}"):
        lots.ship_lot(session, lot_number="FIN-C", consignee="H-C", quantity=1, shipped_on=NOW.date(), actor=ACTOR)
    with pytest.raises(LotNotReleasable, match=f"lot FIN-D is held by look-back case {case.case_number}"):
        lots.release_lot(session, lot_number="FIN-D", actor=APPROVER)
    assert [h.case_number for h in trace_lot(session, "FIN-C").holds] == [case.case_number] * 2  # INT-C, FIN-C
    done = lookback.assess_lot(
        session,
        case_number=case.case_number,
        lot_number="INT-C",
        decision=Decision.NO_ACTION,
        reason="S/D 6 log",
        actor=INVESTIGATOR,
    )
    assert done.lifted and done.still_held == []
    with pytest.raises(LotNotShippable, match="lot FIN-C is held"):  # its own hold stands
        lots.ship_lot(session, lot_number="FIN-C", consignee="H-C", quantity=1, shipped_on=NOW.date(), actor=ACTOR)
    withdrawn = lookback.assess_lot(
        session,
        case_number=case.case_number,
        lot_number="FIN-D",
        decision=Decision.WITHDRAW,
        reason="not needed",
        actor=INVESTIGATOR,
    )
    assert not withdrawn.lifted and len(withdrawn.still_held) == 1
    lookback.assess_lot(
        session,
        case_number=case.case_number,
        lot_number="FIN-C",
        decision=Decision.NO_ACTION,
        reason="11 log enveloped",
        actor=INVESTIGATOR,
    )
    lots.ship_lot(session, lot_number="FIN-C", consignee="H-C", quantity=1, shipped_on=NOW.date(), actor=ACTOR)
    with pytest.raises(WrongState, match="already done"):
        lookback.assess_lot(
            session,
            case_number=case.case_number,
            lot_number="FIN-C",
            decision=Decision.RECALL,
            reason="again",
            actor=INVESTIGATOR,
        )


def test_a_lot_held_by_hand_ships_again_once_unheld(session: Session) -> None:
    lineage(session)
    holds.hold_lot(session, lot_number="INT-C", reason="complaint", actor=APPROVER)
    with pytest.raises(LotNotShippable, match=r"lot INT-C is held by hand \(qa.approver\): complaint"):
        lots.ship_lot(session, lot_number="FIN-C", consignee="H-C", quantity=1, shipped_on=NOW.date(), actor=ACTOR)
    assert holds.unhold_lot(session, lot_number="INT-C", reason="unfounded", actor=APPROVER) == [
        "lot INT-C is held by hand (qa.approver): complaint"
    ]
    lots.ship_lot(session, lot_number="FIN-C", consignee="H-C", quantity=1, shipped_on=NOW.date(), actor=ACTOR)
    with pytest.raises(WrongState, match="not held"):
        holds.unhold_lot(session, lot_number="INT-C", reason="again", actor=APPROVER)


def test_a_case_with_an_open_task_cannot_close_nor_by_its_opener(session: Session) -> None:
    unit, _ = lineage(session)
    case = reactive(session, unit).case
    assert case is not None
    number = case.case_number
    with pytest.raises(WrongState, match="6 open task"):
        lookback.close_case(session, case_number=number, reason="done", actor=INVESTIGATOR)
    lookback.finish_task(session, case_number=number, seq=1, actor=INVESTIGATOR, note="records reviewed")
    lookback.finish_task(session, case_number=number, seq=2, actor=INVESTIGATOR, note="phoned Hospital C")
    lookback.finish_task(session, case_number=number, seq=3, actor=INVESTIGATOR, waive="anti-HCV not confirmed")
    for lot in ("FIN-C", "FIN-D"):
        lookback.assess_lot(
            session, case_number=number, lot_number=lot, decision=Decision.NO_ACTION, reason="ok", actor=INVESTIGATOR
        )
    with pytest.raises(WrongState, match=r"1 open task\(s\): 6 \(assessment\)"):
        lookback.close_case(session, case_number=number, reason="done", actor=INVESTIGATOR)
    with pytest.raises(InvalidInput, match="needs a reason"):
        lookback.finish_task(session, case_number=number, seq=6, actor=INVESTIGATOR, waive=" ")
    lookback.finish_task(session, case_number=number, seq=6, actor=INVESTIGATOR, waive="intermediate used up")
    with pytest.raises(NotPermitted, match="opened by qa.tester"):
        lookback.close_case(session, case_number=number, reason="done", actor=ACTOR)
    closed = lookback.close_case(session, case_number=number, reason="no action needed", actor=INVESTIGATOR)
    assert (closed.status, closed.closed_by) == (CaseStatus.CLOSED, INVESTIGATOR)
    with pytest.raises(WrongState, match="closed"):
        lookback.finish_task(session, case_number=number, seq=6, actor=INVESTIGATOR, note="late")


def test_units_and_pooled_units_in_the_window_are_findings(session: Session) -> None:
    unit, donor = lineage(session)
    case = reactive(session, unit).case
    assert case is not None
    assert case.pooled and case.other == [unit]  # the reactive unit itself was rejected
    pooled = session.execute(
        select(func.count(PoolMember.id))
        .join(Donation, Donation.id == PoolMember.donation_id)
        .join(Donor, Donor.id == Donation.donor_id)
        .where(Donor.donor_code == donor)
    ).scalar_one()
    assert len(case.pooled) == pooled == 1
