"""Holes a review of the rules found, each closed and kept closed: a way to pool, release or ship what the regulation
stops, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

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
    make_step,
    make_unit,
)
from traceability import calendars
from traceability.errors import IneligibleUnits, InvalidInput, InvalidPolicy
from traceability.importers.load import import_file
from traceability.models import (
    Deferral,
    DeferralSource,
    Donation,
    LotKind,
    LotStatus,
    Marker,
    Pool,
    PoolStatus,
    ResultValue,
    StepMethod,
    StepOutcome,
    UnitStatus,
    utcnow,
)
from traceability.queries.eligibility import donations_in_window, lookback_window
from traceability.queries.lineage import trace_case, trace_donor
from traceability.queries.lookup import get_lot
from traceability.rules import DEFAULT_POLICY, OnReactive, Policy, load_policy
from traceability.services import donors, inactivation, lookback, pools, units


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def result(session: Session, unit: str, marker: Marker, value: ResultValue, when: datetime) -> units.ResultOutcome:
    return units.add_result(session, unit_number=unit, marker=marker, result=value, tested_at=when, actor=ACTOR)


def status(session: Session, unit_number: str) -> str:
    session.expire_all()
    return session.execute(select(Donation.status).where(Donation.unit_number == unit_number)).scalar_one()


# --- the policy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[products.ivig]\npool_limits_iu_per_ml = { "hbsag" = 1e12 }\n', "only b19-dna takes a quantitative limit"),
        ('[products.ivig]\npool_limits_iu_per_ml = { "hcv-rna" = 100 }\n', "only b19-dna"),
        ('[markers.syphilis]\non_reactive = "reject-unit"\n', "markers.syphilis.on_reactive"),
        ('[markers.hiv-rna]\non_reactive = "reject-unit"\n', "markers.hiv-rna.on_reactive"),
        ("hold_days = 1000000000\n", "hold_days"),
        ("lookback_months = 30000\n", "lookback_months"),
    ],
)
def test_a_policy_that_lets_a_reactive_law_marker_pass_or_overflows_is_refused_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidPolicy, match=key):
        load_policy(path)


def test_hiv_hbv_and_hcv_markers_defer_permanently_even_off_the_panel() -> None:
    lax = Policy(required_panel=[Marker.HBSAG, Marker.ANTI_HIV, Marker.ANTI_HCV])
    for marker in (Marker.HIV_RNA, Marker.HCV_RNA, Marker.HBV_DNA):
        assert lax.on_reactive(marker) == OnReactive.DEFER_PERMANENTLY


def test_a_b19_value_that_is_not_a_number_is_refused(session: Session) -> None:
    pool = make_released_pool(session, pool_number="P-NAN", bulk=True)
    with pytest.raises(InvalidInput, match="is not a number of zero or more"):
        pools.test_pool(
            session,
            pool_number=pool,
            marker=Marker.B19_DNA,
            result=ResultValue.NONREACTIVE,
            tested_at=NOW,
            actor=ACTOR,
            value=float("nan"),
            value_unit="IU/mL",
        )


# --- the look-back window has one anchor ---------------------------------------------------------------------


def test_a_nonreactive_donation_after_the_reactive_one_does_not_move_the_window_later(session: Session) -> None:
    donor = make_donor(session)
    old = make_unit(session, donor=donor, collected_at=at("2025-01-05T09:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at("2025-12-20T09:00:00+00:00"))  # last nonreactive before
    turned = make_unit(session, donor=donor, collected_at=at("2026-01-10T09:00:00+00:00"), panel=None)
    result(session, turned.unit_number, Marker.HCV_RNA, ResultValue.REACTIVE, at("2026-01-15T09:00:00+00:00"))
    # Collected three days after the reactive one, before its result came back, and tested nonreactive.
    make_unit(session, donor=donor, collected_at=at("2026-01-13T09:00:00+00:00"))
    window = lookback_window(session, donor.id)
    assert window.starts_on == date(2024, 12, 20)
    assert old.id in donations_in_window(session, donor.id, window)
    # The reactive result opened the case by itself with the old unit in it; opening by hand joins that case.
    opened = lookback.open_case(session, donor_code=donor.donor_code, reason="HCV RNA reactive", actor=ACTOR)
    assert opened.joined
    findings = trace_case(session, opened.case_number).findings
    assert {f.unit_number: f.action for f in findings}[old.unit_number] == "interdicted"
    trace = trace_donor(session, donor.donor_code)
    assert trace.lookback_window_start == "2024-12-20"
    assert next(d for d in trace.donations if d.unit_number == old.unit_number).in_lookback_window


# --- deferrals: syphilis through imports, lifts, manual ones ---------------------------------------------------


def test_a_syphilis_retest_that_turns_reactive_again_in_the_same_file_keeps_the_donor_deferred(
    session: Session, tmp_path: Path
) -> None:
    donor = make_donor(session)
    first = make_unit(session, donor=donor, collected_at=at("2026-01-05T09:00:00+00:00"))
    result(session, first.unit_number, Marker.SYPHILIS, ResultValue.REACTIVE, at("2026-01-06T09:00:00+00:00"))
    later = make_unit(session, donor=donor, collected_at=at("2026-01-12T09:00:00+00:00"))
    path = tmp_path / "results.csv"
    path.write_text(
        "unit_number,marker,result,tested_at\n"
        f"{later.unit_number},syphilis,NR,2026-01-13T09:00:00+00:00\n"
        f"{later.unit_number},syphilis,R,2026-01-14T09:00:00+00:00\n",
        encoding="utf-8",
    )
    import_file(session, "results", path, actor=ACTOR)
    deferral = session.execute(
        select(Deferral).where(Deferral.donor_id == donor.id, Deferral.source == DeferralSource.UNTIL_NONREACTIVE)
    ).scalar_one()
    assert deferral.lifted_on is None


def test_a_deferral_is_not_lifted_back_to_its_first_day_and_a_syphilis_one_not_by_hand(session: Session) -> None:
    donor = make_donor(session)
    travel = donors.defer_donor(
        session, donor_code=donor.donor_code, reason="travel", starts_on=date(2026, 1, 1), ends_on=None, actor=ACTOR
    )
    with pytest.raises(InvalidInput, match="from the day after at the earliest"):
        donors.lift_deferral(
            session,
            donor_code=donor.donor_code,
            sequence=travel.sequence,
            lifted_on=date(2026, 1, 1),
            reason="x",
            actor=ACTOR,
        )
    donors.lift_deferral(
        session,
        donor_code=donor.donor_code,
        sequence=travel.sequence,
        lifted_on=date(2026, 1, 2),
        reason="x",
        actor=ACTOR,
    )
    unit = make_unit(session, donor=donor, collected_at=at("2026-02-01T09:00:00+00:00"))
    result(session, unit.unit_number, Marker.SYPHILIS, ResultValue.REACTIVE, at("2026-02-02T09:00:00+00:00"))
    waiting = session.execute(
        select(Deferral).where(Deferral.donor_id == donor.id, Deferral.source == DeferralSource.UNTIL_NONREACTIVE)
    ).scalar_one()
    with pytest.raises(InvalidInput, match="ends only when a later donation tests nonreactive"):
        donors.lift_deferral(
            session, donor_code=donor.donor_code, sequence=waiting.sequence, lifted_on=None, reason="x", actor=ACTOR
        )


def test_a_reactive_result_records_its_own_permanent_deferral_even_when_a_manual_one_exists(session: Session) -> None:
    donor = make_donor(session)
    donors.defer_donor(
        session, donor_code=donor.donor_code, reason="physician", starts_on=date(2026, 1, 1), ends_on=None, actor=ACTOR
    )
    unit = make_unit(session, donor=donor, collected_at=at("2026-02-01T09:00:00+00:00"), panel=None)
    result(session, unit.unit_number, Marker.ANTI_HIV, ResultValue.REACTIVE, at("2026-02-02T09:00:00+00:00"))
    sources = session.execute(select(Deferral.source).where(Deferral.donor_id == donor.id)).scalars().all()
    assert sorted(sources) == [DeferralSource.MANUAL, DeferralSource.REACTIVE_RESULT]


def test_a_deferral_without_a_first_day_starts_on_the_centres_local_today(session: Session) -> None:
    site = make_establishment(session, timezone="Pacific/Pago_Pago")
    donor = make_donor(session, establishment=site)
    row = donors.defer_donor(
        session, donor_code=donor.donor_code, reason="travel", starts_on=None, ends_on=None, actor=ACTOR
    )
    assert row.starts_on == calendars.local_day(utcnow(), "Pacific/Pago_Pago")


# --- a reactive result on any marker keeps a unit out of a pool ---------------------------------------------


def test_a_member_reactive_on_a_marker_off_the_panel_blocks_the_close_and_pool_remove_rejects_it(
    session: Session,
) -> None:
    donor = make_donor(session)
    member = make_unit(session, donor=donor, collected_at=at("2026-01-05T09:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at("2026-01-12T09:00:00+00:00"))
    pools.create_pool(session, pool_number="P-HAV", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-HAV", unit_numbers=[member.unit_number], actor=ACTOR, now=NOW)
    result(session, member.unit_number, Marker.HAV_RNA, ResultValue.REACTIVE, at("2026-01-20T09:00:00+00:00"))
    with pytest.raises(IneligibleUnits, match="reactive: hav-rna"):
        pools.close_pool(session, pool_number="P-HAV", actor=ACTOR, now=NOW)
    pools.remove_units(
        session, pool_number="P-HAV", unit_numbers=[member.unit_number], reason="HAV RNA reactive", actor=ACTOR
    )
    assert status(session, member.unit_number) == UnitStatus.REJECTED
    pools.create_pool(session, pool_number="P-AGAIN", product="ivig", actor=ACTOR)
    with pytest.raises(IneligibleUnits):
        pools.add_units(session, pool_number="P-AGAIN", unit_numbers=[member.unit_number], actor=ACTOR, now=NOW)


def test_pool_remove_interdicts_a_member_whose_donor_has_turned_reactive(session: Session) -> None:
    donor = make_donor(session)
    member = make_unit(session, donor=donor, collected_at=at("2026-01-05T09:00:00+00:00"))
    make_unit(session, donor=donor, collected_at=at("2026-01-12T09:00:00+00:00"))
    pools.create_pool(session, pool_number="P-OUT", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-OUT", unit_numbers=[member.unit_number], actor=ACTOR, now=NOW)
    later = make_unit(session, donor=donor, collected_at=at("2026-03-01T09:00:00+00:00"), panel=None)
    result(session, later.unit_number, Marker.ANTI_HCV, ResultValue.REACTIVE, at("2026-03-02T09:00:00+00:00"))
    pools.remove_units(session, pool_number="P-OUT", unit_numbers=[member.unit_number], reason="donor", actor=ACTOR)
    assert status(session, member.unit_number) == UnitStatus.INTERDICTED


# --- a failed step found later on a released intermediate lot ---------------------------------------------------


def test_a_failed_step_recorded_on_a_released_intermediate_lot_holds_it_and_every_lot_made_from_it(
    session: Session,
) -> None:
    pool = make_released_pool(session, pool_number="P-INT", bulk=True)
    make_step(session, pool=pool, method=StepMethod.SOLVENT_DETERGENT, enveloped=6)
    paste = make_lot(session, lot_number="PASTE-F", inputs=[("pool", pool)], kind=LotKind.INTERMEDIATE)
    from traceability.services import lots

    lots.release_lot(session, lot_number=paste, actor=APPROVER)
    final = make_lot(session, lot_number="FIN-F", inputs=[("lot", paste)])
    recorded = inactivation.add_step(
        session,
        lot_number=paste,
        method=StepMethod.LOW_PH,
        started_at=NOW,
        ended_at=NOW + timedelta(hours=2),
        lrv={"enveloped": 4.5},
        outcome=StepOutcome.FAILED,
        actor=ACTOR,
    )
    assert set(recorded.held.held) == {paste, final}
    session.expire_all()
    assert get_lot(session, paste).status == LotStatus.QUARANTINED
    assert get_lot(session, final).status == LotStatus.QUARANTINED
    pool_status = session.execute(select(Pool.status).where(Pool.pool_number == pool)).scalar_one()
    assert pool_status == PoolStatus.RELEASED  # a lot's step says nothing about the pool


def test_the_default_policy_still_accepts_what_the_law_allows() -> None:
    assert DEFAULT_POLICY.on_reactive(Marker.SYPHILIS) == OnReactive.DEFER_UNTIL_NONREACTIVE
