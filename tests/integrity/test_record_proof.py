"""audit verify proves the records: a row changed, deleted or inserted behind the application's back is named with
its table and business key (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlmodel import Session, SQLModel

from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    make_consignee,
    make_donor,
    make_lot,
    make_released_pool,
    make_step,
    make_unit,
)
from traceability import audit
from traceability.audit import catalogue
from traceability.audit.tables import NOT_REGULATED, REGULATED
from traceability.models import LotKind, Marker, RecallClass, ResultValue, StepMethod
from traceability.services import donors, lots, recalls, units


def world(session: Session) -> dict[str, str]:
    pool = make_released_pool(session, bulk=True)
    make_step(session, pool=pool, method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
    lot = make_lot(session, inputs=[("pool", pool)], kind=LotKind.INTERMEDIATE)
    lots.release_lot(session, lot_number=lot, actor=APPROVER)
    to = make_consignee(session)
    shipment = lots.ship_lot(
        session, lot_number=lot, consignee=to, quantity=10, shipped_on=datetime.now(UTC).date(), actor=ACTOR
    )
    donor = make_donor(session)
    unit = make_unit(session, donor=donor, collected_at=NOW - timedelta(days=30))
    donors.defer_donor(
        session,
        donor_code=donor.donor_code,
        reason="travel",
        starts_on=(NOW - timedelta(days=10)).date(),
        ends_on=(NOW + timedelta(days=10)).date(),
        actor=ACTOR,
    )
    member = session.execute(
        text(
            "SELECT d.unit_number FROM pool_member m JOIN donation d ON d.id = m.donation_id "
            "JOIN pool p ON p.id = m.pool_id WHERE p.pool_number = :p ORDER BY d.unit_number LIMIT 1"
        ),
        {"p": pool},
    ).scalar_one()
    return {
        "pool": pool,
        "lot": lot,
        "shipment": shipment.shipment_number,
        "unit": unit.unit_number,
        "donor": donor.donor_code,
        "member": member,
    }


Tamper = Callable[[dict[str, str]], tuple[str, list[tuple[str, dict[str, str]]]]]

TAMPERS: dict[str, Tamper] = {
    "result updated": lambda w: (
        f"test_result {w['unit']}/hbsag/1, field result",
        [
            (
                "UPDATE test_result SET result = 'reactive' WHERE marker = 'hbsag' AND donation_id = "
                "(SELECT id FROM donation WHERE unit_number = :unit)",
                w,
            )
        ],
    ),
    "donation volume updated": lambda w: (
        f"donation {w['unit']}, field volume_ml",
        [("UPDATE donation SET volume_ml = 600 WHERE unit_number = :unit", w)],
    ),
    "lot status updated": lambda w: (
        f"lot {w['lot']}, field status",
        [("UPDATE lot SET status = 'pending' WHERE lot_number = :lot", w)],
    ),
    "shipment deleted": lambda w: (
        f"shipment {w['shipment']}: the trail says (a row",
        [("DELETE FROM shipment WHERE shipment_number = :shipment", w)],
    ),
    "pool member deleted": lambda w: (
        f"pool_member {w['member']}: the trail says (a row",
        [
            (
                "DELETE FROM pool_member WHERE donation_id = (SELECT id FROM donation WHERE unit_number = :member)",
                w,
            )
        ],
    ),
    "deferral deleted": lambda w: (
        f"deferral {w['donor']}/1: the trail says (a row",
        [("DELETE FROM deferral WHERE donor_id = (SELECT id FROM donor WHERE donor_code = :donor)", w)],
    ),
    "donation inserted": lambda w: (
        "donation A999926999999: the trail says (no event wrote this row)",
        [
            (
                "INSERT INTO donation (unit_number, scheme, donor_id, collected_at, volume_ml, plasma_kind, status, "
                "version, created_at, created_by) SELECT 'A999926999999', 'isbt128', id, created_at, 700, 'source', "
                "'in-inventory', 1, created_at, 'someone' FROM donor WHERE donor_code = :donor",
                w,
            )
        ],
    ),
    "lot input inserted": lambda w: (
        f"lot_input {w['lot']}/-/{w['lot']}X: the trail says (no event wrote this row)",
        [
            (
                "INSERT INTO lot (lot_number, product, kind, status, drawn, shipped, created_at, created_by) "
                "SELECT lot_number || 'X', product, kind, 'pending', 0, 0, created_at, 'someone' FROM lot "
                "WHERE lot_number = :lot",
                w,
            ),
            (
                "INSERT INTO lot_input (lot_id, input_lot_id, quantity, quantity_unit, created_at, created_by) "
                "SELECT a.id, b.id, 1, 'vials', a.created_at, 'someone' FROM lot a, lot b "
                "WHERE a.lot_number = :lot AND b.lot_number = :lot || 'X'",
                w,
            ),
        ],
    ),
}


def test_every_tampering_is_named_with_its_table_and_key(session: Session) -> None:
    w = world(session)
    untouched = audit.verify(session)
    assert untouched.ok, untouched.records and [d.render() for d in untouched.records.differences]
    assert untouched.records is not None and untouched.records.rows > 2000
    for name, tamper in TAMPERS.items():
        expected, statements = tamper(w)
        savepoint = session.begin_nested()
        for sql, params in statements:
            session.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
        result = audit.verify(session)
        shown = [d.render() for d in (result.records.differences if result.records else [])]
        savepoint.rollback()
        assert not result.ok, name
        assert any(s.startswith(expected) for s in shown), (name, expected, shown)
    assert audit.verify(session).ok


def test_since_a_checkpoint_verifies_what_changed_after_it(session: Session) -> None:
    w = world(session)
    token = audit.head_checkpoint(session)
    lots.release_lot  # noqa: B018 - the lot is released already; a later write:
    make_consignee(session)
    assert audit.verify(session, since=token).ok
    session.execute(text("UPDATE consignee SET name = 'Elsewhere' WHERE id = (SELECT max(id) FROM consignee)"))
    result = audit.verify(session, since=token)
    assert not result.ok and result.records is not None
    assert "consignee" in result.records.differences[0].render()
    assert w  # the world before the checkpoint is not read again


def test_every_table_is_proven_or_said_not_to_be() -> None:
    tables = set(SQLModel.metadata.tables)
    proven = {spec.table for spec in REGULATED}
    assert tables - proven - set(NOT_REGULATED) == set()
    assert proven & set(NOT_REGULATED) == set()


def test_record_refuses_an_action_outside_the_catalogue(session: Session) -> None:
    with pytest.raises(Exception, match="not in the catalogue"):
        audit.record(session, action="pool.painted", entity_type="pool", entity_key="P", actor=ACTOR)
    with pytest.raises(Exception, match="records a pool"):
        audit.record(session, action="pool.closed", entity_type="lot", entity_key="P", actor=ACTOR)
    assert "pool.closed" in catalogue.catalogue()


def test_a_database_from_before_the_record_proof_is_proven_by_its_baseline(db_url: str) -> None:
    from alembic import command

    from traceability.db import make_engine
    from traceability.migrate import alembic_config, head_revision, upgrade

    engine = make_engine(db_url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    with Session(engine) as session, session.begin():
        donor = make_donor(session)
        number = make_unit(session, donor=donor, collected_at=NOW - timedelta(days=30)).unit_number
        # Written before the upgrade without an event: the baseline takes the database as it finds it.
        session.execute(text("UPDATE donation SET volume_ml = 700 WHERE unit_number = :u"), {"u": number})
    before, after = upgrade(engine)
    assert before == "0005" and after == head_revision()
    with Session(engine) as session:
        assert audit.verify(session).ok
        session.execute(text("UPDATE donation SET volume_ml = 650 WHERE unit_number = :u"), {"u": number})
        changed = audit.verify(session)
        session.rollback()
        session.execute(
            text(
                "INSERT INTO donor (donor_code, establishment_id, created_at, created_by) "
                "SELECT 'LATE-1', establishment_id, created_at, 'someone' FROM donor LIMIT 1"
            )
        )
        inserted = audit.verify(session)
        session.rollback()
    engine.dispose()
    assert changed.records is not None and inserted.records is not None
    assert (
        [d.render() for d in changed.records.differences]
        == [d.render() for d in changed.records.differences if d.table == "donation" and "baseline" in d.key]
        != []
    )
    assert any(d.render().startswith("donor LATE-1: the trail says (no event") for d in inserted.records.differences)


def test_cases_their_tasks_and_holds_and_recalls_are_proven_too(session: Session) -> None:
    w = world(session)
    opened = units.add_result(
        session,
        unit_number=w["member"],
        marker=Marker.HCV_RNA,
        result=ResultValue.REACTIVE,
        tested_at=NOW,
        actor=ACTOR,
    )
    assert opened.case is not None and opened.case.held == [w["lot"]]
    case = opened.case.case_number
    recall, listed = recalls.open_recall(
        session, lot_number=w["lot"], recall_class=RecallClass.II, reason="HCV RNA reactive donor", actor=ACTOR
    )
    consignee = session.execute(
        text("SELECT code FROM consignee WHERE id = :i"), {"i": listed[0].consignee_id}
    ).scalar_one()
    recalls.notify(session, recall_number=recall.recall_number, consignee_code=consignee, actor=ACTOR)
    untouched = audit.verify(session)
    assert untouched.ok, untouched.records and [d.render() for d in untouched.records.differences]
    tampers = {
        f"case_task {case}/1, field state": "UPDATE case_task SET state = 'done' WHERE seq = 1",
        f"lot_hold {w['lot']}/": "UPDATE lot_hold SET lifted_at = created_at, lifted_by = 'someone'",
        f"recall {recall.recall_number}, field status": "UPDATE recall SET status = 'closed'",
        f"recall_consignee {recall.recall_number}/{consignee}, field returned": (
            "UPDATE recall_consignee SET returned = 1"
        ),
        f"lookback_case {case}, field status": "UPDATE lookback_case SET status = 'closed'",
    }
    for expected, sql in tampers.items():
        savepoint = session.begin_nested()
        session.execute(text(sql))
        result = audit.verify(session)
        shown = [d.render() for d in (result.records.differences if result.records else [])]
        savepoint.rollback()
        assert not result.ok and any(s.startswith(expected) for s in shown), (expected, shown)
