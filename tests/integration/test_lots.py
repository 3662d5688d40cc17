"""Lots: a DAG of pools and lots, release on clearance judged per path, shipments, traces across levels."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    backdate_release,
    bulk_units,
    make_consignee,
    make_lot,
    make_released_pool,
    make_step,
)
from traceability.errors import InputNotReleased, LineageCycle, LotNotReleasable, WrongState
from traceability.models import LotKind, StepMethod, StepOutcome
from traceability.queries.lineage import trace_donor, trace_lot, trace_pool
from traceability.reports import json_schemas
from traceability.services import inactivation, lots, pools


def test_a_final_lot_from_an_intermediate_of_two_pools_traces_every_donation_once(session: Session) -> None:
    a = bulk_units(session, donors_count=1000)
    make_released_pool(session, pool_number="P-A", members=a)
    b = bulk_units(session, donors_count=1000)
    make_released_pool(session, pool_number="P-B", members=b)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    make_step(session, pool="P-B", method=StepMethod.SOLVENT_DETERGENT, enveloped=5.5)
    paste = make_lot(
        session, lot_number="PASTE-1", inputs=[("pool", "P-A"), ("pool", "P-B")], kind=LotKind.INTERMEDIATE
    )
    lots.release_lot(session, lot_number=paste, actor=APPROVER)
    final = make_lot(session, lot_number="IVG-1", inputs=[("lot", paste)])
    make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.2)
    lots.release_lot(session, lot_number=final, actor=APPROVER)
    backdate_release(session, final)
    to = make_consignee(session, name="Hospital A")
    lots.ship_lot(session, lot_number=final, consignee=to, quantity=40, shipped_on=NOW.date(), actor=ACTOR)

    trace = trace_lot(session, final, members=True)
    assert [p.pool_number for p in trace.pools] == ["P-A", "P-B"]
    assert [(p.donor_count, p.donation_count) for p in trace.pools] == [(1000, 2000), (1000, 2000)]
    assert (trace.donor_count, trace.donation_count) == (2000, 4000)
    assert trace.lots == ["PASTE-1"]
    assert len(trace.donations or []) == 4000
    assert {d.unit_number for d in trace.donations or []} == set(a) | set(b)
    assert [s.step_key for s in trace.steps] == ["P-A-S1", "P-B-S1", "IVG-1-S1"]
    assert trace.clearance_problems == []
    assert [s.consignee for s in trace.shipments] == ["Hospital A"]

    json = trace.as_json()
    assert {"lot_number", "pools", "lots", "donor_count", "donation_count", "steps", "shipments", "donations"} <= set(
        json
    )
    json_schemas.validate("trace-lot", json)
    donor_code = trace.donations[0].donor_code  # type: ignore[index]
    forward = trace_donor(session, donor_code)
    json_schemas.validate("trace-donor", forward.as_json())
    json_schemas.validate("trace-pool", trace_pool(session, "P-A", members=True).as_json())
    assert forward.pools == ["P-A"] and forward.lots == ["IVG-1", "PASTE-1"]
    assert forward.donations[0].lot_numbers == ["IVG-1", "PASTE-1"]
    assert [(s.lot_number, s.consignee, s.quantity) for s in forward.shipments] == [("IVG-1", "Hospital A", 40)]
    assert trace_pool(session, "P-B").lots == ["IVG-1", "PASTE-1"]


def test_the_worst_path_decides_a_lot_made_partly_from_material_that_skipped_a_step(session: Session) -> None:
    make_released_pool(session, pool_number="P-A", bulk=True, units_per_donor=2)
    make_released_pool(session, pool_number="P-B", bulk=True, units_per_donor=2)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    final = make_lot(session, lot_number="IVG-2", inputs=[("pool", "P-A"), ("pool", "P-B")])
    make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.5)
    with pytest.raises(LotNotReleasable) as refused:
        lots.release_lot(session, lot_number=final, actor=APPROVER)
    assert "path P-B -> IVG-2: 1 effective step(s) of different mechanisms against enveloped viruses" in str(
        refused.value
    )
    assert "P-A -> IVG-2" not in str(refused.value)


def test_two_steps_of_one_mechanism_do_not_make_two_effective_steps(session: Session) -> None:
    make_released_pool(session, pool_number="P-A", bulk=True, units_per_donor=2)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    final = make_lot(session, lot_number="IVG-3", inputs=[("pool", "P-A")])
    make_step(session, lot=final, method=StepMethod.CAPRYLATE, enveloped=5.0, non_enveloped=0.5)
    make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=0.5, non_enveloped=4.0)
    with pytest.raises(LotNotReleasable, match="1 effective step"):
        lots.release_lot(session, lot_number=final, actor=APPROVER)
    make_step(session, lot=final, method=StepMethod.LOW_PH, enveloped=4.0)
    lots.release_lot(session, lot_number=final, actor=APPROVER)


def test_an_open_deviation_blocks_release_until_closed(session: Session) -> None:
    make_released_pool(session, pool_number="P-A", bulk=True, units_per_donor=2)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    lot = make_lot(session, lot_number="INT-1", inputs=[("pool", "P-A")], kind=LotKind.INTERMEDIATE)
    key = make_step(session, lot=lot, method=StepMethod.LOW_PH, enveloped=4.0, outcome=StepOutcome.DEVIATION)
    with pytest.raises(LotNotReleasable, match=f"step {key} \\(low-ph\\) has an open deviation"):
        lots.release_lot(session, lot_number=lot, actor=APPROVER)
    inactivation.close_deviation(session, step_key=key, reason="within validated range", actor=ACTOR)
    lots.release_lot(session, lot_number=lot, actor=APPROVER)
    with pytest.raises(WrongState, match="Lot INT-1 is released"):
        make_step(session, lot=lot, method=StepMethod.LOW_PH, enveloped=4.0)


def test_lots_are_made_only_from_released_inputs_and_never_from_themselves(session: Session) -> None:
    units = bulk_units(session, donors_count=1000)
    pools.create_pool(session, pool_number="P-OPEN", product="ivig", actor=ACTOR)
    pools.add_units(session, pool_number="P-OPEN", unit_numbers=units[::2], actor=ACTOR, now=NOW)
    with pytest.raises(InputNotReleased, match="pool P-OPEN is open"):
        make_lot(session, lot_number="L-1", inputs=[("pool", "P-OPEN")])
    with pytest.raises(LineageCycle, match="Lot L-1 cannot be made from itself"):
        make_lot(session, lot_number="L-1", inputs=[("lot", "L-1")])
    make_released_pool(session, pool_number="P-A", bulk=True, units_per_donor=2)
    make_lot(session, lot_number="L-2", inputs=[("pool", "P-A")])
    with pytest.raises(InputNotReleased, match="lot L-2 is pending"):
        make_lot(session, lot_number="L-3", inputs=[("lot", "L-2")])


def test_only_a_released_lot_ships(session: Session) -> None:
    make_released_pool(session, pool_number="P-A", bulk=True, units_per_donor=2)
    lot = make_lot(session, lot_number="L-9", inputs=[("pool", "P-A")])
    with pytest.raises(WrongState, match="only a released lot can be shipped"):
        lots.ship_lot(
            session, lot_number=lot, consignee=make_consignee(session), quantity=1, shipped_on=NOW.date(), actor=ACTOR
        )
