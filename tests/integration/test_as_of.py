"""Traces as recorded at a past time (``--as-of``): statuses, current result versions, pool members, lots and
shipments at four moments of one history, rebuilt from the versions and the audit trail."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlmodel import Session

from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    backdate_release,
    bulk_units,
    make_consignee,
    make_lot,
    make_qualified_donor_units,
    make_step,
)
from traceability.errors import InvalidInput, NotYetRecorded
from traceability.models import Donation, Donor, LotKind, Marker, ResultValue, StepMethod, utcnow
from traceability.queries.lineage import trace_donor, trace_lot, trace_pool, trace_unit
from traceability.queries.lineage.as_of import checked_as_of, parse_as_of
from traceability.reports import json_schemas
from traceability.services import lots, pools, units


def moment() -> datetime:
    """A time strictly between what was recorded before it and what is recorded after it."""
    time.sleep(0.005)
    at = utcnow()
    time.sleep(0.005)
    return at


def test_a_trace_as_of_four_moments_shows_what_was_recorded_then(session: Session) -> None:
    # T1: a pool is open with its first batch of units; a donor elsewhere has two units in inventory.
    members = bulk_units(session, donors_count=1000, units_per_donor=2)
    first, second = members[:1000], members[1000:]
    pools.create_pool(session, pool_number="P-ASOF", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-ASOF", unit_numbers=first, actor=ACTOR, now=NOW)
    donor, (early, late) = make_qualified_donor_units(session, count=2)
    pooled_later = session.execute(
        select(Donor.donor_code).join(Donation, Donation.donor_id == Donor.id).where(Donation.unit_number == second[1])
    ).scalar_one()
    t1 = moment()

    # T2: the rest added and the pool closed; the late unit's HBsAg result superseded by a reactive retest, which
    # rejects it, defers the donor and interdicts the earlier unit.
    pools.add_units(session, pool_number="P-ASOF", unit_numbers=second, actor=ACTOR, now=NOW)
    pools.close_pool(session, pool_number="P-ASOF", actor=ACTOR, now=NOW)
    units.add_result(
        session,
        unit_number=late.unit_number,
        marker=Marker.HBSAG,
        result=ResultValue.REACTIVE,
        tested_at=late.collected_at + timedelta(days=3),
        actor=ACTOR,
        reason="repeat test",
    )
    t2 = moment()

    # T3: the pool tested and released, a paste lot and a final lot made and released.
    for marker in (Marker.HBSAG, Marker.ANTI_HIV, Marker.HCV_RNA):
        pools.test_pool(
            session, pool_number="P-ASOF", marker=marker, result=ResultValue.NONREACTIVE, tested_at=NOW, actor=ACTOR
        )
    pools.release_pool(session, pool_number="P-ASOF", actor=APPROVER)
    make_step(session, pool="P-ASOF", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    paste = make_lot(session, lot_number="PASTE-ASOF", inputs=[("pool", "P-ASOF")], kind=LotKind.INTERMEDIATE)
    lots.release_lot(session, lot_number=paste, actor=APPROVER)
    final = make_lot(session, lot_number="IVG-ASOF", inputs=[("lot", paste)])
    make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.2)
    lots.release_lot(session, lot_number=final, actor=APPROVER)
    backdate_release(session, final)
    t3 = moment()

    # After T3: a shipment. T4 is now.
    to = make_consignee(session, name="Hospital A")
    lots.ship_lot(session, lot_number=final, consignee=to, quantity=40, shipped_on=NOW.date(), actor=ACTOR)
    t4 = moment()

    # The donor whose later unit turned reactive.
    seen = {at: trace_donor(session, donor.donor_code, as_of=at) for at in (t1, t2, t3, t4)}
    assert [(d.unit_number, d.status) for d in seen[t1].donations] == [
        (early.unit_number, "in-inventory"),
        (late.unit_number, "in-inventory"),
    ]
    assert seen[t1].donations[1].results[Marker.HBSAG.value] == "nonreactive"
    assert seen[t1].deferrals == []
    for at in (t2, t3, t4):
        assert [d.status for d in seen[at].donations] == ["interdicted", "rejected"]
        assert seen[at].donations[1].results[Marker.HBSAG.value] == "reactive"
        assert len(seen[at].deferrals) == 1
    assert seen[t4].as_json() == {**trace_donor(session, donor.donor_code).as_json(), "as_of": t4.isoformat()}

    # Its late unit: the first HBsAg version is current until the retest supersedes it.
    def hbsag(at: datetime) -> list[tuple[int, bool, str]]:
        trace = trace_unit(session, late.unit_number, as_of=at)
        return [(r.version, r.current, r.result) for r in trace.results if r.marker == Marker.HBSAG.value]

    assert hbsag(t1) == [(1, True, "nonreactive")]
    assert hbsag(t2) == hbsag(t4) == [(1, False, "nonreactive"), (2, True, "reactive")]
    assert trace_unit(session, late.unit_number, as_of=t1).status == "in-inventory"
    assert trace_unit(session, late.unit_number, as_of=t2).status == "rejected"
    assert trace_unit(session, early.unit_number, as_of=t1).status == "in-inventory"
    assert trace_unit(session, early.unit_number, as_of=t2).status == "interdicted"

    # The pool: open with half its members, closed with all, released with its lots, then the shipment.
    pool = {at: trace_pool(session, "P-ASOF", members=True, as_of=at) for at in (t1, t2, t3, t4)}
    assert [(p.status, p.donation_count, p.closed_at is None, p.released_at is None) for p in pool.values()] == [
        ("open", 1000, True, True),
        ("closed", 2000, False, True),
        ("released", 2000, False, False),
        ("released", 2000, False, False),
    ]
    assert {m.unit_number for m in pool[t1].donations or []} == set(first)
    assert [p.lots for p in pool.values()] == [[], [], ["IVG-ASOF", "PASTE-ASOF"], ["IVG-ASOF", "PASTE-ASOF"]]
    assert [len(p.tests) for p in pool.values()] == [0, 0, 3, 3]
    assert [len(p.shipments) for p in pool.values()] == [0, 0, 0, 1]

    # A donor of the second batch: not pooled at T1, in the pool and its lots at T3, shipped at T4.
    forward = {at: trace_donor(session, pooled_later, as_of=at) for at in (t1, t2, t3, t4)}
    assert [(f.donations[1].pool_number, f.donations[1].status) for f in forward.values()] == [
        (None, "in-inventory"),
        ("P-ASOF", "pooled"),
        ("P-ASOF", "pooled"),
        ("P-ASOF", "pooled"),
    ]
    assert [f.lots for f in forward.values()] == [[], [], ["IVG-ASOF", "PASTE-ASOF"], ["IVG-ASOF", "PASTE-ASOF"]]
    assert [len(f.shipments) for f in forward.values()] == [0, 0, 0, 1]

    # The final lot did not exist at T1 or T2; released at T3 with nothing shipped; shipped at T4.
    for at in (t1, t2):
        with pytest.raises(NotYetRecorded):
            trace_lot(session, final, as_of=at)
    released, shipped = trace_lot(session, final, members=True, as_of=t3), trace_lot(session, final, as_of=t4)
    assert (released.status, released.shipped, released.shipments, released.donation_count) == ("released", 0, [], 2000)
    assert [(i.lot_number, i.input) for i in released.inputs] == [("IVG-ASOF", "PASTE-ASOF"), ("PASTE-ASOF", "P-ASOF")]
    assert (shipped.shipped, [s.quantity for s in shipped.shipments]) == (40, [40])
    json = released.as_json()
    assert json["as_of"] == t3.isoformat() and json_schemas.validate("trace-lot", json) is None
    assert "as_of" not in trace_lot(session, final).as_json()


def test_as_of_a_date_alone_is_the_end_of_that_day_in_utc() -> None:
    assert parse_as_of("2026-05-04") == datetime(2026, 5, 4, 23, 59, 59, 999999, tzinfo=UTC)
    assert parse_as_of("2026-05-04T10:00:00+02:00") == datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    assert parse_as_of("2026-05-04T08:00:00") == datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="not an ISO 8601"):
        parse_as_of("yesterday")


def test_as_of_refuses_the_future_and_a_time_before_the_first_event(session: Session) -> None:
    make_qualified_donor_units(session, count=1)
    first = session.execute(select(Donor.created_at)).scalars().first()
    assert first is not None
    now = utcnow()
    assert checked_as_of(session, now, now=now) == now  # now itself is allowed
    with pytest.raises(InvalidInput, match="in the future"):
        checked_as_of(session, now + timedelta(seconds=1), now=now)
    with pytest.raises(InvalidInput, match="before the first audit event"):
        checked_as_of(session, first - timedelta(days=1), now=now)


def test_a_unit_taken_out_of_an_open_pool_after_t_is_still_a_member_as_of_t(session: Session) -> None:
    units = bulk_units(session, donors_count=3, units_per_donor=2)
    pools.create_pool(session, pool_number="P-OUT", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-OUT", unit_numbers=units[:4], actor=ACTOR, now=NOW)
    before = moment()
    pools.remove_units(session, pool_number="P-OUT", unit_numbers=[units[1]], reason="label damaged", actor=ACTOR)
    pools.add_units(session, pool_number="P-OUT", unit_numbers=units[4:], actor=ACTOR, now=NOW)
    after = moment()

    then = trace_pool(session, "P-OUT", members=True, as_of=before)
    assert sorted(m.unit_number for m in then.donations or []) == sorted(units[:4])
    assert (then.donation_count, then.donor_count) == (4, 2)
    now = trace_pool(session, "P-OUT", members=True, as_of=after)
    assert sorted(m.unit_number for m in now.donations or []) == sorted([units[0], *units[2:]])
    assert now.as_json() == {**trace_pool(session, "P-OUT", members=True).as_json(), "as_of": after.isoformat()}

    # The unit's own traces: in the pool (pooled) at T, back in inventory now.
    out = units[1]
    assert (trace_unit(session, out, as_of=before).pool_number, trace_unit(session, out, as_of=before).status) == (
        "P-OUT",
        "pooled",
    )
    assert (trace_unit(session, out, as_of=after).pool_number, trace_unit(session, out, as_of=after).status) == (
        None,
        "in-inventory",
    )
    donor = session.execute(
        select(Donor.donor_code).join(Donation, Donation.donor_id == Donor.id).where(Donation.unit_number == out)
    ).scalar_one()
    lines = {d.unit_number: (d.pool_number, d.status) for d in trace_donor(session, donor, as_of=before).donations}
    assert lines[out] == ("P-OUT", "pooled") and lines[units[0]] == ("P-OUT", "pooled")
    assert {d.unit_number: d.pool_number for d in trace_donor(session, donor).donations}[out] is None
