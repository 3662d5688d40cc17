"""The audit trail: every write leaves an event; the database refuses edits; verify catches what gets past."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from tests.factories import make_donor, make_establishment
from traceability import audit
from traceability.db import make_engine
from traceability.services import donors


def guard_off(conn, dialect: str) -> None:  # type: ignore[no-untyped-def]
    """What an attacker with the database owner's rights would do first."""
    if dialect == "sqlite":
        conn.execute(text("DROP TRIGGER audit_event_no_update"))
        conn.execute(text("DROP TRIGGER audit_event_no_delete"))
    else:
        conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))


def seeded(url: str, events: int = 5) -> None:
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        site = make_establishment(session)
        for _ in range(events - 1):
            make_donor(session, establishment=site)
    engine.dispose()


def verify(url: str, checkpoint: str | None = None) -> audit.Verification:
    engine = make_engine(url)
    with Session(engine) as session:
        result = audit.verify(session, checkpoint=checkpoint)
    engine.dispose()
    return result


def tamper(url: str, *statements: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        guard_off(conn, engine.dialect.name)
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def test_every_write_is_recorded_with_who_and_the_chain_verifies(session: Session) -> None:
    site = make_establishment(session)
    donors.defer_donor(
        session,
        donor_code=make_donor(session, establishment=site).donor_code,
        reason="travel",
        starts_on=__import__("datetime").date(2026, 1, 1),
        ends_on=None,
        actor="qa.other",
    )
    result = audit.verify(session)
    assert result.ok and result.events == 3
    assert result.checkpoint == audit.head_checkpoint(session)


def test_the_database_refuses_update_and_delete_of_audit_events(db_url: str) -> None:
    seeded(db_url)
    engine = make_engine(db_url)
    for statement in ("UPDATE audit_event SET actor = 'mallory'", "DELETE FROM audit_event"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    engine.dispose()
    assert verify(db_url).ok


def test_an_edited_event_is_named(db_url: str) -> None:
    seeded(db_url)
    tamper(db_url, "UPDATE audit_event SET actor = 'mallory' WHERE seq = 3")
    result = verify(db_url)
    assert not result.ok
    assert result.problem is not None and result.problem.startswith("event 3 (donor.added")
    assert "was changed after it was recorded" in result.problem


def test_a_removed_event_is_named(db_url: str) -> None:
    seeded(db_url)
    tamper(db_url, "DELETE FROM audit_event WHERE seq = 2")
    result = verify(db_url)
    assert not result.ok and result.problem is not None
    assert result.problem.startswith("event 2 is missing")


def test_a_forked_chain_is_refused_by_the_database(db_url: str) -> None:
    seeded(db_url)
    with pytest.raises(DBAPIError, match="(?i)unique|duplicate"):
        tamper(
            db_url,
            "INSERT INTO audit_event (seq, occurred_at, actor, action, entity_type, entity_key, prev_hash, "
            f"hash) SELECT 99, occurred_at, 'mallory', 'x', 'donor', 'FAKE', prev_hash, '{'ab' * 32}' "
            "FROM audit_event WHERE seq = 3",
        )


def test_an_inserted_event_is_named(db_url: str) -> None:
    seeded(db_url)
    tamper(
        db_url,
        "UPDATE audit_event SET seq = seq + 100 WHERE seq >= 3",
        "INSERT INTO audit_event (seq, occurred_at, actor, action, entity_type, entity_key, prev_hash, hash) "
        f"SELECT 3, occurred_at, 'mallory', 'donor.added', 'donor', 'FAKE', '{'cd' * 32}', '{'ab' * 32}' "
        "FROM audit_event WHERE seq = 2",
    )
    result = verify(db_url)
    assert not result.ok and result.problem is not None
    assert result.problem.startswith("event 3 (donor.added donor FAKE")


def test_reordered_events_are_caught(db_url: str) -> None:
    seeded(db_url)
    tamper(
        db_url,
        "UPDATE audit_event SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_event SET seq = 2 WHERE seq = 3",
        "UPDATE audit_event SET seq = 3 WHERE seq = 1000",
    )
    result = verify(db_url)
    assert not result.ok and result.problem is not None
    assert result.problem.startswith("event 2 (") and "does not follow the event before it" in result.problem


def test_a_cut_tail_is_caught_with_a_checkpoint(db_url: str) -> None:
    seeded(db_url)
    token = verify(db_url).checkpoint
    assert token.startswith("5:")
    tamper(db_url, "DELETE FROM audit_event WHERE seq >= 4")
    # Without a checkpoint the shorter chain is a valid chain, but the rows its cut events wrote have no event now.
    cut = verify(db_url)
    assert not cut.ok and cut.records is not None
    assert {d.table for d in cut.records.differences} == {"donor"} and len(cut.records.differences) == 2
    result = verify(db_url, checkpoint=token)
    assert not result.ok and result.problem is not None
    assert "the chain ends at event 3 but the checkpoint names event 5" in result.problem


def test_an_imported_row_pointing_elsewhere_than_its_import_is_caught(db_url: str, tmp_path: Path) -> None:
    from traceability.db import transaction
    from traceability.importers.load import import_file

    seeded(db_url)
    path = tmp_path / "donors.csv"
    engine = make_engine(db_url)
    with transaction(engine) as session:
        site = session.execute(text("SELECT code FROM establishment ORDER BY id LIMIT 1")).scalar_one()
    path.write_text(f"donor_code,establishment\nIMP-1,{site}\nIMP-2,{site}\n", encoding="utf-8")
    with transaction(engine) as session:
        import_file(session, "donors", path, actor="qa.import")
    engine.dispose()
    assert verify(db_url).ok

    tamper(db_url, "UPDATE donor SET import_event_id = (SELECT min(id) FROM audit_event) WHERE donor_code = 'IMP-2'")
    result = verify(db_url)
    assert not result.ok and result.problem is not None
    assert result.problem.startswith("1 donor row names audit event id ")
    assert "not an import.donors event" in result.problem
