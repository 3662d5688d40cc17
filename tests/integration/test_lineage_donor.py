"""The donor forward trace (SPEC §5) against a plain reference built from ORM queries, on SQLite and PostgreSQL.

trace_donor answers in one statement read through the driver's cursor; these tests pin its whole answer: donor and
deferrals in order, donations in collection order with their latest result per marker, pool, every lot downstream,
shipments, the look-back window, and the errors.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exc, select, text
from sqlmodel import Session

from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    backdate_release,
    bulk_units,
    make_consignee,
    make_donor,
    make_lot,
    make_released_pool,
    make_step,
    make_unit,
)
from traceability.calendars import add_months
from traceability.db import make_engine
from traceability.errors import DonorNotFound
from traceability.models import (
    Consignee,
    Deferral,
    Donation,
    Donor,
    Establishment,
    LotInput,
    LotKind,
    Marker,
    Pool,
    PoolMember,
    ResultValue,
    Shipment,
    StepMethod,
    TestResult,
)
from traceability.models import Lot as LotRow
from traceability.queries.lineage import trace_donor
from traceability.reports import json_schemas
from traceability.rules import DEFAULT_POLICY, panel_complete_and_nonreactive
from traceability.services import donors, lots, units


def reference(session: Session, donor_code: str) -> dict[str, Any]:
    """The same answer the slow, obvious way: one ORM query per thing, lots walked level by level."""
    donor = session.execute(select(Donor).where(Donor.donor_code == donor_code)).scalar_one()
    site = session.execute(select(Establishment.code).where(Establishment.id == donor.establishment_id)).scalar_one()
    deferrals = session.execute(
        select(Deferral).where(Deferral.donor_id == donor.id).order_by(Deferral.sequence)
    ).scalars()
    donations = session.execute(
        select(Donation).where(Donation.donor_id == donor.id).order_by(Donation.collected_at, Donation.id)
    ).scalars()
    lines: list[dict[str, Any]] = []
    for unit in donations:
        latest: dict[str, tuple[int, str]] = {}
        for r in session.execute(select(TestResult).where(TestResult.donation_id == unit.id)).scalars():
            if r.marker.value not in latest or latest[r.marker.value][0] < r.version:
                latest[r.marker.value] = (r.version, r.result.value)
        pool = session.execute(
            select(Pool).join(PoolMember, PoolMember.pool_id == Pool.id).where(PoolMember.donation_id == unit.id)
        ).scalar_one_or_none()
        downstream: set[int] = set()
        level = set(
            session.execute(select(LotInput.lot_id).where(LotInput.input_pool_id == pool.id)).scalars() if pool else []
        )
        while level:
            downstream |= level
            level = set(session.execute(select(LotInput.lot_id).where(LotInput.input_lot_id.in_(level))).scalars())
        lines.append(
            {
                "unit": unit,
                "pool_number": pool.pool_number if pool else None,
                "lot_ids": downstream,
                "results": {m: value for m, (_, value) in sorted(latest.items())},
            }
        )
    lot_ids = set().union(*(line["lot_ids"] for line in lines))
    names = dict(session.execute(select(LotRow.id, LotRow.lot_number).where(LotRow.id.in_(lot_ids))).all())
    shipments = session.execute(
        select(Shipment).where(Shipment.lot_id.in_(lot_ids)).order_by(Shipment.shipped_on, Shipment.shipment_number)
    ).scalars()
    # The establishments of these tests are in UTC: the local day is the UTC date.
    clean = [line["unit"].collected_at.date() for line in lines if panel_complete_and_nonreactive(line["results"])]
    start = add_months(max(clean), -DEFAULT_POLICY.lookback_months) if clean else None
    return {
        "donor_code": donor.donor_code,
        "establishment": site,
        "registered_on": donor.registered_on.isoformat() if donor.registered_on else None,
        "deferrals": [
            {
                "sequence": d.sequence,
                "reason": d.reason,
                "source": d.source.value,
                "starts_on": d.starts_on.isoformat(),
                "ends_on": d.ends_on.isoformat() if d.ends_on else None,
                "lifted_on": d.lifted_on.isoformat() if d.lifted_on else None,
            }
            for d in deferrals
        ],
        "lookback_window_start": start.isoformat() if start else None,
        "donations": [
            {
                "unit_number": line["unit"].unit_number,
                "collected_at": line["unit"].collected_at.isoformat(),
                "volume_ml": line["unit"].volume_ml,
                "status": line["unit"].status.value,
                "pool_number": line["pool_number"],
                "lot_numbers": sorted(names[i] for i in line["lot_ids"]),
                "results": line["results"],
                "in_lookback_window": start is None or line["unit"].collected_at.date() >= start,
                "changed": line["unit"].version > 1,
            }
            for line in lines
        ],
        "pools": sorted({line["pool_number"] for line in lines if line["pool_number"]}),
        "lots": sorted(names.values()),
        "shipments": [
            {
                "shipment_number": s.shipment_number,
                "lot_number": names[s.lot_id],
                "consignee": s.consignee,
                "shipped_on": s.shipped_on.isoformat(),
                "quantity": s.quantity,
                "consignee_address": session.get_one(Consignee, s.consignee_id).address,
                "unit": unit_of(session.get_one(LotRow, s.lot_id)),
                "expires_on": expiry_of(session.get_one(LotRow, s.lot_id)),
            }
            for s in shipments
        ],
    }


def unit_of(lot: LotRow) -> str | None:
    return lot.unit.value if lot.unit else None


def expiry_of(lot: LotRow) -> str | None:
    return lot.expires_on.isoformat() if lot.expires_on else None


def released_pool(session: Session, number: str) -> list[str]:
    numbers = bulk_units(session, donors_count=1000, units_per_donor=2)
    make_released_pool(session, pool_number=number, members=numbers[::2])
    return numbers


def donor_of(session: Session, unit_number: str) -> Donor:
    return session.execute(
        select(Donor).join(Donation, Donation.donor_id == Donor.id).where(Donation.unit_number == unit_number)
    ).scalar_one()


def test_a_pooled_donor_with_deferrals_and_a_repeat_test_is_traced_in_full(session: Session) -> None:
    numbers = released_pool(session, "P-T1")
    make_step(session, pool="P-T1", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    paste = make_lot(session, lot_number="PASTE-T1", inputs=[("pool", "P-T1")], kind=LotKind.INTERMEDIATE)
    lots.release_lot(session, lot_number=paste, actor=APPROVER)
    shipped = make_lot(session, lot_number="IVG-T1", inputs=[("lot", paste)])
    make_step(session, lot=shipped, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.2)
    lots.release_lot(session, lot_number=shipped, actor=APPROVER)
    make_lot(session, lot_number="IVG-T2", inputs=[("lot", paste)])  # never released, never shipped
    backdate_release(session, shipped)
    for consignee, day in (("Hospital B", date(2026, 6, 3)), ("Hospital A", date(2026, 6, 2))):
        code = make_consignee(session, name=consignee)
        lots.ship_lot(session, lot_number=shipped, consignee=code, quantity=10, shipped_on=day, actor=ACTOR)

    donor = donor_of(session, numbers[0])  # numbers[0] is pooled, numbers[1] (a week later) is not
    donors.defer_donor(
        session,
        donor_code=donor.donor_code,
        reason="travel",
        starts_on=date(2026, 1, 5),
        ends_on=date(2026, 2, 5),
        actor=ACTOR,
    )
    donors.lift_deferral(
        session, donor_code=donor.donor_code, sequence=1, lifted_on=date(2026, 1, 20), reason="returned", actor=ACTOR
    )
    later = make_unit(session, donor=donor, collected_at=NOW - timedelta(days=30))
    # a repeat test: version 2 of one marker, reactive, so the unit is rejected and the donor deferred
    units.add_result(
        session,
        unit_number=later.unit_number,
        marker=Marker.HBSAG,
        result=ResultValue.REACTIVE,
        tested_at=NOW - timedelta(days=27),
        actor=ACTOR,
    )

    trace = trace_donor(session, donor.donor_code)
    answer = trace.as_json()
    assert answer == reference(session, donor.donor_code)
    json_schemas.validate("trace-donor", answer)
    assert [d.unit_number for d in trace.donations] == [numbers[0], numbers[1], later.unit_number]
    assert [d.pool_number for d in trace.donations] == ["P-T1", None, None]
    assert trace.donations[0].lot_numbers == ["IVG-T1", "IVG-T2", "PASTE-T1"]
    assert trace.donations[2].results[Marker.HBSAG.value] == "reactive"  # the latest version, not the first
    assert trace.donations[2].status == "rejected"
    assert trace.pools == ["P-T1"] and trace.lots == ["IVG-T1", "IVG-T2", "PASTE-T1"]
    assert [(s.consignee, s.shipped_on) for s in trace.shipments] == [
        ("Hospital A", "2026-06-02"),
        ("Hospital B", "2026-06-03"),
    ]
    assert [(d.sequence, d.source, d.lifted_on) for d in trace.deferrals] == [
        (1, "manual", "2026-01-20"),
        (2, "reactive-result", None),
    ]
    last_clean = NOW - timedelta(days=150 - 7)  # the unpooled unit: the later one is reactive
    assert trace.lookback_window_start == add_months(last_clean.date(), -12).isoformat()
    assert all(d.collected_at.endswith("+00:00") for d in trace.donations)


def test_a_donor_without_donations_and_an_unknown_donor(session: Session) -> None:
    donor = make_donor(session)
    trace = trace_donor(session, donor.donor_code)
    assert trace.as_json() == reference(session, donor.donor_code)
    assert (trace.donations, trace.pools, trace.lots, trace.shipments, trace.deferrals) == ([], [], [], [], [])
    assert trace.lookback_window_start is None
    with pytest.raises(DonorNotFound):
        trace_donor(session, "NO-SUCH-DONOR")


def test_incomplete_panels_and_units_collected_at_the_same_time(session: Session, engine_name: str) -> None:
    if engine_name == "postgresql":  # the answer is in UTC whatever the session's time zone
        session.execute(text("SET LOCAL TIME ZONE 'America/New_York'"))
    donor = make_donor(session)
    at = NOW - timedelta(days=60)
    first = make_unit(session, donor=donor, collected_at=at, panel={Marker.HBSAG: ResultValue.NONREACTIVE})
    second = make_unit(session, donor=donor, collected_at=at)
    make_unit(session, donor=donor, collected_at=NOW - timedelta(days=500), panel=None)
    trace = trace_donor(session, donor.donor_code)
    assert trace.as_json() == reference(session, donor.donor_code)
    assert [d.unit_number for d in trace.donations][1:] == [first.unit_number, second.unit_number]
    assert trace.donations[1].results == {"hbsag": "nonreactive"}
    assert trace.lookback_window_start == add_months(at.date(), -12).isoformat()
    assert [d.in_lookback_window for d in trace.donations] == [False, True, True]
    assert trace.donations[1].collected_at == at.isoformat()


def test_a_database_error_is_raised_as_sqlalchemys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema
    try:
        with Session(engine) as session, pytest.raises(exc.OperationalError, match="no such table"):
            trace_donor(session, "D1")
    finally:
        engine.dispose()
