"""An empty or rebuilt trail is not intact, and checkpoints kept in a file catch a chain rewritten from the start.

Each attack is made with raw SQL by someone holding the database owner's rights (the append-only guards out of the
way), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from sqlalchemy import Connection, select, text
from sqlmodel import Session, SQLModel

from tests.cli.conftest import Cli, seeded
from tests.factories import (
    ACTOR,
    make_consignee,
    make_donor,
    make_establishment,
    make_lot,
    make_qualified_donor_units,
    make_released_pool,
)
from traceability import audit
from traceability.audit_checkpoints import records_without_events
from traceability.db import make_engine
from traceability.errors import ExitCode
from traceability.models import AuditEvent
from traceability.services import donors

BROKEN = ExitCode.RULE_VIOLATION


def a_site(db_url: str) -> dict[str, str]:
    """Records in most regulated tables: establishments, donors (one deferred), units and results recorded by hand
    and imported, a released pool with its members and tests, a lot drawing from it, a consignee."""
    with seeded(db_url) as session:
        site = make_establishment(session, code="C-0001")
        donor = make_donor(session, establishment=site, donor_code="AD-0000001")
        donors.defer_donor(
            session, donor_code=donor.donor_code, reason="travel", starts_on=date(2026, 1, 5), ends_on=None, actor=ACTOR
        )
        _, units = make_qualified_donor_units(session, establishment=site, count=1)
        pool = make_released_pool(session, bulk=True, pool_number="P-0001")
        lot = make_lot(session, inputs=[("pool", pool)], lot_number="L-0001")
        consignee = make_consignee(session, code="H-0001")
    return {"unit": units[0].unit_number, "pool": pool, "lot": lot, "consignee": consignee}


def owner_sql(db_url: str, *statements: str) -> None:
    """Raw SQL as the database's owner, with the append-only guards of audit_event out of the way."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            _guards_off(conn)
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def _guards_off(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.execute(text("DROP TRIGGER IF EXISTS audit_event_no_update"))
        conn.execute(text("DROP TRIGGER IF EXISTS audit_event_no_delete"))
    else:
        conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))


def rebuild_trail(db_url: str) -> None:
    """Drop audit_event and create it again, empty (SQLite: the signature table's reference is not enforced on a
    drop; PostgreSQL: CASCADE drops that foreign key)."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            cascade = "" if conn.dialect.name == "sqlite" else " CASCADE"
            conn.execute(text(f"DROP TABLE audit_event{cascade}"))
            SQLModel.metadata.tables["audit_event"].create(conn)
    finally:
        engine.dispose()


def rehash_chain(db_url: str) -> int:
    """Rewrite the first event (its actor becomes mallory), then every event's prev_hash and hash in order, so that
    the chain is valid again from its first event, with raw SQL; returns how many events were rewritten."""
    engine = make_engine(db_url)
    try:
        with Session(engine) as session:
            events = [
                audit._hashed_fields(e) for e in session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars()
            ]
        with engine.begin() as conn:
            _guards_off(conn)
            previous = audit.GENESIS_HASH
            for fields in events:
                if fields["seq"] == 1:
                    fields["actor"] = "mallory"
                fields["prev_hash"] = previous
                rewritten = audit.event_hash(fields)
                conn.execute(
                    text("UPDATE audit_event SET actor = :actor, prev_hash = :prev, hash = :hash WHERE seq = :seq"),
                    {"actor": fields["actor"], "prev": previous, "hash": rewritten, "seq": fields["seq"]},
                )
                previous = rewritten
        return len(events)
    finally:
        engine.dispose()


# --- an empty or rebuilt trail ---------------------------------------------------------------------------------


def test_an_untouched_site_verifies_and_a_dropped_and_recreated_trail_names_the_records_without_events(
    run: Cli,
) -> None:
    keys = a_site(run.db_url)
    assert "Audit trail intact" in run("audit", "verify").stderr

    rebuild_trail(run.db_url)
    broken = run("audit", "verify", code=BROKEN).stderr
    assert "Audit trail intact" not in broken
    for table, key in [
        ("establishment", "C-0001"),
        ("donor", "AD-0000001"),
        ("deferral", "AD-0000001 1"),
        ("donation", keys["unit"]),
        ("test_result", f"{keys['unit']} anti-hcv 1"),
        ("pool", keys["pool"]),
        ("pool_member", keys["pool"]),
        ("pool_test", keys["pool"]),
        ("lot", keys["lot"]),
        ("lot_input", keys["lot"]),
        ("consignee", keys["consignee"]),
    ]:
        line = next((x for x in broken.splitlines() if f"broken: {table}: " in x), None)
        assert line is not None, f"{table} not named:\n{broken}"
        assert key in line, line
    assert "donor: 1,002 rows have no audit event" in broken  # 1,000 imported (their import is gone) and 2 by hand


def test_a_trail_that_starts_after_the_records_were_written_is_not_intact(run: Cli) -> None:
    a_site(run.db_url)
    rebuild_trail(run.db_url)
    # Work goes on after the rebuild: new events, some of them about records written before it.
    run("donor", "defer", "AD-0000001", "--reason", "tattoo", "--from", "2026-03-01", "--until", "2026-09-01")
    run("donor", "add", "AD-0000002", "--establishment", "C-0001")
    assert run.json("audit", "log")[0]["seq"] == 1  # the new trail is a valid chain of its own
    broken = run("audit", "verify", code=BROKEN).stderr
    # The donor deferred after the rebuild has events now, but not the one that recorded it: it is named with the
    # records written before the rebuild; the donor added after it is proven.
    donors_named = next(x for x in broken.splitlines() if "broken: donor: " in x)
    assert "donor: 1,002 rows have no audit event" in donors_named and "AD-0000001" in donors_named, broken
    assert "AD-0000002" not in broken
    assert "establishment: 2 rows have no audit event recording them (C-0001, " in broken


# --- checkpoints kept in a file --------------------------------------------------------------------------------


def test_checkpoints_appended_to_a_file_verify_and_a_rehashed_chain_is_caught_at_the_first_one(
    run: Cli, tmp_path: Path
) -> None:
    a_site(run.db_url)
    kept = tmp_path / "elsewhere" / "plasmatrace.checkpoints"
    kept.parent.mkdir()
    first = run("audit", "checkpoint", "--to", str(kept))
    token = first.stdout.strip()
    assert re.fullmatch(r"\d+:[0-9a-f]{64}", token) and f"appended to {kept} (line 1)" in first.stderr
    run("donor", "add", "AD-0000002", "--establishment", "C-0001")
    run("audit", "checkpoint", "--to", str(kept))
    lines = kept.read_text().splitlines()
    assert len(lines) == 2 and lines[0].startswith(token + " ")
    assert re.fullmatch(r"\d+:[0-9a-f]{64} \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [0-9a-f]{64}", lines[1])
    good = run("audit", "verify", "--checkpoints", str(kept))
    assert "Audit trail intact" in good.stderr and "2 checkpoints" in good.stderr
    run("audit", "verify", "--checkpoint", token)  # the token form still works

    # Every event rewritten consistently (the first event's actor changed, then each hash recomputed in order):
    # the chain alone verifies, the checkpoints do not.
    assert rehash_chain(run.db_url) > 5
    assert "Audit trail intact" in run("audit", "verify").stderr
    caught = run("audit", "verify", "--checkpoints", str(kept), code=BROKEN).stderr
    problems = [x for x in caught.splitlines() if x.startswith("Audit trail broken")]
    assert f"{kept} line 1 (event {token.split(':')[0]}" in problems[0], caught
    assert "the chain was rewritten at or before event" in problems[0]
    assert len(problems) == 2  # line 2 too
    run("audit", "verify", "--checkpoint", token, code=BROKEN)


def test_a_checkpoint_file_with_a_bad_line_is_invalid_input_naming_the_line(run: Cli, tmp_path: Path) -> None:
    run("establishment", "add", "C-0001", "--name", "Centre", "--kind", "collection")
    kept = tmp_path / "cp"
    for code in ("AD-0000001", "AD-0000002"):
        run("donor", "add", code, "--establishment", "C-0001")
        run("audit", "checkpoint", "--to", str(kept))
    lines = kept.read_text().splitlines()

    def verify_with(content: str, code: int = ExitCode.INVALID_INPUT) -> str:
        path = tmp_path / "edited"
        path.write_text(content)
        return run("audit", "verify", "--checkpoints", str(path), code=code).stderr

    assert "2 checkpoints" in verify_with("# taken by the night job\n\n" + "\n".join(lines) + "\n", ExitCode.OK)
    said = verify_with(lines[0] + "\nnot a checkpoint\n")
    assert "line 2 is not a checkpoint" in said and "'not a checkpoint'" in said
    seq, rest = lines[1].split(":", 1)
    edited = f"{seq}:{'1' if rest[0] == '0' else '0'}{rest[1:]}"  # one character of the head's hash changed
    said = verify_with(lines[0] + "\n" + edited + "\n")
    assert "line 2 does not carry the digest" in said
    said = verify_with(lines[1] + "\n")  # the first line removed: the second no longer follows the file's start
    assert "line 1 does not carry the digest" in said
    assert "holds no checkpoint" in verify_with("# nothing yet\n")
    assert "not found" in run("audit", "verify", "--checkpoints", str(tmp_path / "missing"), code=4).stderr
    # Nothing is appended to a file whose lines do not check.
    bad = tmp_path / "bad"
    bad.write_text("garbage\n")
    assert "line 1 is not a checkpoint" in run("audit", "checkpoint", "--to", str(bad), code=5).stderr
    assert bad.read_text() == "garbage\n"


def test_consignees_carried_over_by_migration_0005_get_their_event_and_rows_made_by_hand_stay_named(
    engine_name: str, tmp_path: Path
) -> None:
    from alembic import command

    from tests.conftest import create_postgres_database, drop_postgres_database
    from traceability.migrate import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'old.db'}" if engine_name == "sqlite" else create_postgres_database()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0002")
            conn.execute(
                text(
                    "INSERT INTO lot (created_at, created_by, lot_number, product, kind, status) "
                    "VALUES (CURRENT_TIMESTAMP, 'qa', 'IVG-OLD', 'ivig', 'final', 'released')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO shipment (created_at, created_by, shipment_number, lot_id, consignee, quantity, "
                    "shipped_on) SELECT CURRENT_TIMESTAMP, 'qa', 'IVG-OLD-SH001', id, 'Clinic B', 5, '2026-01-05' "
                    "FROM lot"
                )
            )
        upgrade(engine)
        upgrade(engine)  # a second run adds nothing
        with Session(engine) as session:
            assert audit.verify(session).ok
            named = {u.table: u.keys for u in records_without_events(session)}
            events = session.execute(
                select(AuditEvent.entity_key, AuditEvent.reason).where(AuditEvent.action != "audit.baseline")
            ).all()
        assert [(key, "migration 0005" in (reason or "")) for key, reason in events] == [("LEGACY-0001", True)]
        assert named == {"lot": ("IVG-OLD",), "shipment": ("IVG-OLD-SH001",)}  # written without events, by hand
    finally:
        engine.dispose()
        if engine_name == "postgresql":
            drop_postgres_database(url)


def test_every_table_has_a_rule_naming_the_event_that_creates_its_rows() -> None:
    from traceability.audit_checkpoints import UNCHECKED, proven_tables

    tables = set(SQLModel.metadata.tables) - UNCHECKED
    # A new table needs its creating event in traceability/audit_checkpoints.py (_proofs), or `audit verify`
    # would not notice its rows on an empty or rebuilt trail.
    assert tables - proven_tables() == set()
