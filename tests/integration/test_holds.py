"""Clearance on every path of a deep lineage, and what a later finding upstream (a reactive or failing pool retest,
a failed step, an open deviation) does downstream: every lot held, refused at release and at shipment."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    backdate_release,
    make_closed_pool,
    make_consignee,
    make_lot,
    make_released_pool,
    make_step,
)
from traceability.errors import InputNotReleased, LotNotReleasable, LotNotShippable, WrongState
from traceability.models import (
    AuditEvent,
    Consignee,
    Lot,
    LotKind,
    LotStatus,
    Marker,
    Pool,
    PoolStatus,
    ResultValue,
    StepMethod,
)
from traceability.models import StepOutcome as Outcome
from traceability.queries.clearance import lot_blockers
from traceability.queries.lineage import trace_lot
from traceability.queries.lookup import get_lot
from traceability.rules import ClearancePolicy, Policy
from traceability.services import inactivation, lots, pools


def anti_d_pool(session: Session, number: str, *, b19: tuple[float, str]) -> None:
    """An anti-D pool whose B19 DNA test (its first) finds ``b19`` (value, unit); released unless over the limit."""
    make_closed_pool(session, pool_number=number, product="anti-d")
    for marker in (Marker.HBSAG, Marker.ANTI_HIV, Marker.HCV_RNA):
        pools.test_pool(
            session, pool_number=number, marker=marker, result=ResultValue.NONREACTIVE, tested_at=NOW, actor=ACTOR
        )
    outcome = pools.test_pool(
        session,
        pool_number=number,
        marker=Marker.B19_DNA,
        result=ResultValue.REACTIVE,
        tested_at=NOW,
        actor=ACTOR,
        value=b19[0],
        value_unit=b19[1],
    )
    if not outcome.quarantined:
        pools.release_pool(session, pool_number=number, actor=APPROVER)


def status(session: Session, lot_number: str) -> tuple[LotStatus, str | None]:
    session.expire_all()
    lot = get_lot(session, lot_number)
    return lot.status, lot.status_reason


def ship(session: Session, lot_number: str, consignee: str = "Hospital B") -> None:
    backdate_release(session, lot_number)  # released "yesterday": the records are dated as of NOW
    known = session.execute(select(Consignee.code).where(Consignee.name == consignee)).scalar()
    to = known or make_consignee(session, name=consignee)
    lots.ship_lot(session, lot_number=lot_number, consignee=to, quantity=1, shipped_on=NOW.date(), actor=ACTOR)


def lineage(session: Session) -> tuple[str, str, str]:
    """P-A (S/D) -> INT-A (released) -> FIN-A (nanofiltration; released, shipped to Hospital A); FIN-P pending."""
    make_released_pool(session, pool_number="P-A", bulk=True)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    intermediate = make_lot(session, lot_number="INT-A", inputs=[("pool", "P-A")], kind=LotKind.INTERMEDIATE)
    lots.release_lot(session, lot_number=intermediate, actor=APPROVER)
    final = make_lot(session, lot_number="FIN-A", inputs=[("lot", intermediate)])
    make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.5)
    lots.release_lot(session, lot_number=final, actor=APPROVER)
    ship(session, final, "Hospital A")
    pending = make_lot(session, lot_number="FIN-P", inputs=[("lot", intermediate)])
    make_step(session, lot=pending, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.5)
    return intermediate, final, pending


# --- clearance on every path -------------------------------------------------------------------------------------


def ladder(session: Session, depth: int) -> tuple[str, str]:
    """Two intermediate lots per level, each made from both lots of the level below, ``depth`` levels on P-T
    (S/D 6 log): 2^depth paths from P-T to the top. Beside it, INT-U from P-U, which never had an enveloped step."""
    make_released_pool(session, pool_number="P-T", bulk=True)
    make_step(session, pool="P-T", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    below: list[str] = []
    for level in range(depth):
        here = []
        for side in "AB":
            number = f"LAD-{level:02d}{side}"
            inputs = [("pool", "P-T")] if level == 0 else [("lot", n) for n in below]
            make_lot(session, lot_number=number, inputs=inputs, kind=LotKind.INTERMEDIATE)
            lots.release_lot(session, lot_number=number, actor=APPROVER)
            here.append(number)
        below = here
    make_released_pool(session, pool_number="P-U", bulk=True)
    make_step(session, pool="P-U", method=StepMethod.NANOFILTRATION, non_enveloped=5.0)
    make_lot(session, lot_number="INT-U", inputs=[("pool", "P-U")], kind=LotKind.INTERMEDIATE)
    lots.release_lot(session, lot_number="INT-U", actor=APPROVER)
    return below[0], below[1]


def final_from(session: Session, number: str, inputs: list[str]) -> str:
    make_lot(session, lot_number=number, inputs=[("lot", n) for n in inputs])
    make_step(session, lot=number, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=5.0)
    return number


def test_the_clearance_check_covers_every_one_of_2_to_the_20_paths_and_names_the_untreated_one(
    session: Session,
) -> None:
    top_a, top_b = ladder(session, 20)
    started = time.perf_counter()
    mixed = final_from(session, "FIN-MIX", [top_a, top_b, "INT-U"])
    with pytest.raises(LotNotReleasable) as refused:
        lots.release_lot(session, lot_number=mixed, actor=APPROVER)
    assert refused.value.problems == [
        "path P-U -> INT-U -> FIN-MIX: 1 effective step(s) of different mechanisms against enveloped viruses "
        "(at least 4 log; cumulative 5 log); 2 are required"
    ]
    # Marked released by hand, it still does not ship: shipment runs the same check.
    session.execute(update(Lot).where(Lot.lot_number == mixed).values(status=LotStatus.RELEASED))
    session.expire_all()
    with pytest.raises(LotNotShippable, match="path P-U -> INT-U -> FIN-MIX"):
        ship(session, mixed)

    treated = final_from(session, "FIN-LAD", [top_a, top_b])
    lots.release_lot(session, lot_number=treated, actor=APPROVER)
    ship(session, treated)
    trace = trace_lot(session, treated)
    assert trace.clearance_problems == []
    assert [(c.worst_for, c.cumulative_log10) for c in trace.clearance] == [
        (["enveloped", "non-enveloped"], {"enveloped": 11.0, "non-enveloped": 5.0})
    ]
    assert len(trace.clearance[0].path) == 22 and trace.clearance[0].path[0] == "P-T"

    untreated = final_from(session, "FIN-U", ["INT-U"])
    with pytest.raises(LotNotReleasable, match="path P-U -> INT-U -> FIN-U: 1 effective step"):
        lots.release_lot(session, lot_number=untreated, actor=APPROVER)
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize(("claimed", "releasable"), [(4.0, False), (4.01, True)])
def test_a_step_of_exactly_min_step_log_is_not_counted_and_one_just_above_is(
    session: Session, claimed: float, releasable: bool
) -> None:
    make_released_pool(session, pool_number="P-A", bulk=True)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    final = make_lot(session, lot_number="FIN-1", inputs=[("pool", "P-A")])
    make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=claimed, non_enveloped=5.0)
    # A site that counts only steps of more than 4 log (min_step_log raised to the effective level)
    strict = Policy(clearance=ClearancePolicy(min_step_log=4.0))
    if releasable:
        lots.release_lot(session, lot_number=final, actor=APPROVER, policy=strict)
        return
    with pytest.raises(LotNotReleasable, match="path P-A -> FIN-1: 1 effective step"):
        lots.release_lot(session, lot_number=final, actor=APPROVER, policy=strict)


@pytest.mark.parametrize(("claimed", "cumulative"), [(1.0, 11.0), (1.01, 12.01)])
def test_a_step_of_exactly_1_log_is_not_added_to_the_cumulative_clearance(
    session: Session, claimed: float, cumulative: float
) -> None:
    make_released_pool(session, pool_number="P-A", bulk=True)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    make_step(session, pool="P-A", method=StepMethod.LOW_PH, enveloped=claimed)
    final = make_lot(session, lot_number="FIN-1", inputs=[("pool", "P-A")])
    make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=5.0)
    lots.release_lot(session, lot_number=final, actor=APPROVER)
    assert trace_lot(session, final).clearance[0].cumulative_log10["enveloped"] == cumulative


# --- pool tests after release ------------------------------------------------------------------------------------


def test_a_reactive_hcv_rna_retest_of_a_released_pool_quarantines_it_and_holds_every_lot_downstream(
    session: Session,
) -> None:
    intermediate, final, pending = lineage(session)
    outcome = pools.test_pool(
        session, pool_number="P-A", marker=Marker.HCV_RNA, result=ResultValue.REACTIVE, tested_at=NOW, actor=ACTOR
    )
    assert outcome.test.version == 2 and outcome.quarantined
    assert outcome.downstream.held == ["FIN-A", "FIN-P", "INT-A"]
    assert outcome.downstream.consignees == ["Hospital A"]
    session.expire_all()
    pool = session.execute(select(Pool).where(Pool.pool_number == "P-A")).scalar_one()
    assert (pool.status, pool.status_reason) == (PoolStatus.QUARANTINED, "pool test hcv-rna: reactive (version 2)")
    for number in (intermediate, final, pending):
        assert status(session, number) == (LotStatus.QUARANTINED, "pool P-A hcv-rna: reactive (version 2)")
    events = session.execute(
        select(AuditEvent.entity_key, AuditEvent.old_values, AuditEvent.new_values)
        .where(AuditEvent.action == "lot.quarantined")
        .order_by(AuditEvent.seq)
    ).all()
    assert [(k, json.loads(o)["status"], json.loads(n)["status"]) for k, o, n in events] == [
        ("FIN-A", "released", "quarantined"),
        ("FIN-P", "pending", "quarantined"),
        ("INT-A", "released", "quarantined"),
    ]
    with pytest.raises(WrongState, match="Lot FIN-A is quarantined \\(pool P-A hcv-rna: reactive \\(version 2\\)\\)"):
        ship(session, final)
    with pytest.raises(WrongState, match="Lot FIN-P is quarantined"):
        lots.release_lot(session, lot_number=pending, actor=APPROVER)
    with pytest.raises(InputNotReleased, match="pool P-A is quarantined"):
        make_lot(session, lot_number="FIN-NEW", inputs=[("pool", "P-A")])


def test_release_and_shipment_recheck_the_current_tests_of_every_pool_upstream_even_if_no_status_changed(
    session: Session,
) -> None:
    intermediate, final, pending = lineage(session)
    # Statuses put back by hand (or never updated): the one check still refuses, naming pool, marker and version.
    pools.test_pool(
        session, pool_number="P-A", marker=Marker.HCV_RNA, result=ResultValue.REACTIVE, tested_at=NOW, actor=ACTOR
    )
    session.execute(update(Pool).where(Pool.pool_number == "P-A").values(status=PoolStatus.RELEASED))
    session.execute(update(Lot).where(Lot.lot_number.in_([intermediate, final])).values(status=LotStatus.RELEASED))
    session.execute(update(Lot).where(Lot.lot_number == pending).values(status=LotStatus.PENDING))
    session.expire_all()
    make_consignee(session, name="Hospital B")
    backdate_release(session, final)
    audit_before = session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq.desc())).scalars().first()
    with pytest.raises(LotNotShippable) as refused:
        ship(session, final)
    assert refused.value.problems == ["pool P-A: hcv-rna: reactive (version 2)"]
    with pytest.raises(LotNotReleasable, match="pool P-A: hcv-rna: reactive \\(version 2\\)"):
        lots.release_lot(session, lot_number=pending, actor=APPROVER)
    assert session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq.desc())).scalars().first() == audit_before


def test_an_invalid_current_pool_test_holds_release_and_shipment_until_a_retest_passes(session: Session) -> None:
    _, final, pending = lineage(session)
    outcome = pools.test_pool(
        session, pool_number="P-A", marker=Marker.HCV_RNA, result=ResultValue.INVALID, tested_at=NOW, actor=ACTOR
    )
    assert not outcome.quarantined and outcome.problem == "hcv-rna: result invalid (version 2), retest needed"
    assert outcome.downstream.affected == ["FIN-A", "FIN-P", "INT-A"] and outcome.downstream.held == []
    assert status(session, final) == (LotStatus.RELEASED, None)
    with pytest.raises(LotNotShippable, match="pool P-A: hcv-rna: result invalid \\(version 2\\), retest needed"):
        ship(session, final)
    with pytest.raises(LotNotReleasable, match="retest needed"):
        lots.release_lot(session, lot_number=pending, actor=APPROVER)
    pools.test_pool(
        session, pool_number="P-A", marker=Marker.HCV_RNA, result=ResultValue.NONREACTIVE, tested_at=NOW, actor=ACTOR
    )
    ship(session, final)
    lots.release_lot(session, lot_number=pending, actor=APPROVER)


@pytest.mark.parametrize(
    ("value", "unit", "released"),
    [(10.0, "IU/\u00b5L", True), (10.01, "IU/\u00b5L", False), (10_000, "IU/mL", True), (10_001, "IU/mL", False)],
)
def test_the_b19_dna_limit_of_an_anti_d_pool_takes_iu_per_microlitre_and_iu_per_ml_at_the_edge(
    session: Session, value: float, unit: str, released: bool
) -> None:
    anti_d_pool(session, "P-D", b19=(value, unit))
    pool = session.execute(select(Pool).where(Pool.pool_number == "P-D")).scalar_one()
    assert pool.status == (PoolStatus.RELEASED if released else PoolStatus.QUARANTINED)
    if not released:
        assert pool.status_reason is not None and "exceeds the limit of 10,000 IU/mL (version 1)" in pool.status_reason


# --- failed steps and deviations upstream ------------------------------------------------------------------------


@pytest.mark.parametrize(("outcome", "why"), [(Outcome.FAILED, "failed"), (Outcome.DEVIATION, "has an open deviation")])
def test_a_failed_step_or_deviation_recorded_later_on_an_upstream_pool_holds_every_lot_downstream(
    session: Session, outcome: Outcome, why: str
) -> None:
    intermediate, final, pending = lineage(session)
    key = make_step(session, pool="P-A", method=StepMethod.LOW_PH, enveloped=4.0, outcome=outcome)
    reason = f"step {key} (low-ph) {why} on pool P-A"
    for number in (intermediate, final, pending):
        assert status(session, number) == (LotStatus.QUARANTINED, reason)
    with pytest.raises(WrongState, match="Lot FIN-A is quarantined"):
        ship(session, final)
    # Even with the statuses put back, the one check refuses: release and shipment name the step.
    session.execute(update(Lot).where(Lot.lot_number.in_([intermediate, final])).values(status=LotStatus.RELEASED))
    session.execute(update(Lot).where(Lot.lot_number == pending).values(status=LotStatus.PENDING))
    session.expire_all()
    with pytest.raises(LotNotShippable, match=f"step {key} \\(low-ph\\) {why}"):
        ship(session, final)
    with pytest.raises(LotNotReleasable, match=f"step {key} \\(low-ph\\) {why}"):
        lots.release_lot(session, lot_number=pending, actor=APPROVER)


def test_a_completed_step_added_to_a_released_pool_holds_nothing(session: Session) -> None:
    _, final, _ = lineage(session)
    make_step(session, pool="P-A", method=StepMethod.PASTEURIZATION, enveloped=5.0)
    assert status(session, final) == (LotStatus.RELEASED, None)
    assert lot_blockers(session, get_lot(session, final)) == []
    ship(session, final)


def test_closing_the_deviation_lifts_the_holds_it_caused_unless_something_else_blocks(session: Session) -> None:
    intermediate, final, pending = lineage(session)
    key = make_step(session, pool="P-A", method=StepMethod.LOW_PH, enveloped=4.0, outcome=Outcome.DEVIATION)
    assert status(session, final)[0] == LotStatus.QUARANTINED
    closed = inactivation.close_deviation(session, step_key=key, reason="CAPA-9: within validated range", actor=ACTOR)
    assert closed.lifted == ["FIN-A", "FIN-P", "INT-A"]
    assert [status(session, n) for n in (intermediate, final, pending)] == [
        (LotStatus.RELEASED, None),
        (LotStatus.RELEASED, None),
        (LotStatus.PENDING, None),
    ]
    ship(session, final)
    lots.release_lot(session, lot_number=pending, actor=APPROVER)

    other = make_step(session, pool="P-A", method=StepMethod.LOW_PH, enveloped=4.0, outcome=Outcome.DEVIATION)
    make_step(session, pool="P-A", method=StepMethod.PASTEURIZATION, enveloped=4.0, outcome=Outcome.FAILED)
    closed = inactivation.close_deviation(session, step_key=other, reason="CAPA-10", actor=ACTOR)
    assert closed.lifted == []
    assert status(session, final)[0] == LotStatus.QUARANTINED


def test_a_lot_put_back_to_released_by_hand_is_refused_for_every_pool_and_lot_upstream_not_released(
    session: Session,
) -> None:
    intermediate, final, _ = lineage(session)
    pools.test_pool(
        session, pool_number="P-A", marker=Marker.ANTI_HIV, result=ResultValue.REACTIVE, tested_at=NOW, actor=ACTOR
    )
    session.execute(update(Lot).where(Lot.lot_number == final).values(status=LotStatus.RELEASED))
    session.expire_all()
    with pytest.raises(LotNotShippable) as refused:
        ship(session, final)
    assert refused.value.problems == [
        "pool P-A is quarantined (pool test anti-hiv: reactive (version 2))",
        "pool P-A: anti-hiv: reactive (version 2)",
        f"lot {intermediate} is quarantined (pool P-A anti-hiv: reactive (version 2))",
    ]
    assert str(refused.value).startswith("Lot FIN-A cannot be shipped:")
