"""SIGKILL in the middle of a command leaves the database as it was before that command.

No hook in the product: the test watches the database until the command holds an open write transaction, then
kills the process. On SQLite the sign is the write lock (BEGIN IMMEDIATE fails); on PostgreSQL, a session of the
command's database with a transaction open.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from tests.factories import ACTOR, APPROVER, NOW, bulk_units, cli_actor, make_establishment
from traceability import audit
from traceability.db import make_engine
from traceability.models import AuditEvent, Donation, Donor, Pool, PoolStatus
from traceability.services import pools

ROOT = Path(__file__).resolve().parents[2]


def in_write_transaction(url: str, watcher: object) -> bool:
    if url.startswith("sqlite"):
        conn: sqlite3.Connection = watcher  # type: ignore[assignment]
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        conn.execute("ROLLBACK")
        return False
    with watcher.connect() as conn:  # type: ignore[attr-defined]
        busy = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND query NOT ILIKE '%pg_stat_activity%'"
            )
        ).scalar()
    return bool(busy)


def run_and_kill(url: str, args: list[str], *, settle: float = 0.0, limit: float = 60.0) -> bool:
    """Start a command, kill -9 it once it is inside its write transaction; True if it was killed there."""
    watcher: object
    if url.startswith("sqlite"):
        watcher = sqlite3.connect(make_url(url).database or "", timeout=0, isolation_level=None)
    else:
        watcher = make_engine(url)
    env = {**os.environ, "PLASMATRACE_DB": url, "PLASMATRACE_ACTOR": cli_actor(url, APPROVER)}
    proc = subprocess.Popen(
        [sys.executable, "cli.py", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed = False
    deadline = time.monotonic() + limit
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if in_write_transaction(url, watcher):
                time.sleep(settle)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
        if url.startswith("sqlite"):
            watcher.close()  # type: ignore[attr-defined]
        else:
            watcher.dispose()  # type: ignore[attr-defined]
    return killed


def counts(url: str) -> dict[str, object]:
    engine = make_engine(url)
    with Session(engine) as session:
        result = {
            "donors": session.execute(select(func.count(Donor.id))).scalar(),
            "donations": session.execute(select(func.count(Donation.id))).scalar(),
            "events": session.execute(select(func.count(AuditEvent.id))).scalar(),
            "pools": dict(session.execute(select(Pool.pool_number, Pool.status)).all()),
            "verify": audit.verify(session).ok,
        }
    engine.dispose()
    return result


def write_donations(path: Path, site_donor: str, rows: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("unit_number,donor_code,collected_at,volume_ml\n")
        for i in range(rows):
            handle.write(f"K{i:09d},{site_donor},{(NOW - timedelta(days=100)).isoformat()},700\n")


def test_a_killed_import_leaves_nothing_and_a_rerun_completes(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        site = make_establishment(session)
        from traceability.services import donors

        donors.add_donor(session, donor_code="D-KILL", establishment=site, registered_on=None, actor=ACTOR)
    engine.dispose()
    file = tmp_path / "donations.csv"
    write_donations(file, "D-KILL", 60_000)
    before = counts(db_url)
    assert run_and_kill(db_url, ["import", "donations", str(file)], settle=1.0)
    after = counts(db_url)
    assert after == before and after["verify"] is True
    env = {**os.environ, "PLASMATRACE_DB": db_url, "PLASMATRACE_ACTOR": cli_actor(db_url)}
    done = subprocess.run(
        [sys.executable, "cli.py", "import", "donations", str(file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    final = counts(db_url)
    assert final["donations"] == 60_000 and final["verify"] is True


@pytest.mark.parametrize("settle", [0.0, 0.05, 0.3])
def test_a_killed_pool_close_leaves_the_pool_open_or_wholly_closed(db_url: str, settle: float) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        numbers = bulk_units(session, donors_count=10_000, units_per_donor=2)
        pools.create_pool(session, pool_number="P-KILL", product="ivig", actor=ACTOR)
        pools.add_units(session, pool_number="P-KILL", unit_numbers=numbers, actor=ACTOR, now=NOW)
    engine.dispose()
    before = counts(db_url)
    killed = run_and_kill(db_url, ["pool", "close", "P-KILL"], settle=settle)
    if settle < 0.1:
        assert killed, "the close finished before it could be killed inside its transaction"
    after = counts(db_url)
    assert after["verify"] is True
    wholly_closed = {**before, "pools": {"P-KILL": PoolStatus.CLOSED}, "events": before["events"] + 1}  # type: ignore[operator]
    # Killed before its commit: nothing changed. Killed after it (while the process was exiting) or not killed:
    # closed with its audit event. Never anything in between.
    assert after in (before, wholly_closed)
    if settle < 0.1:  # start-up alone takes longer than this: the kill came inside the transaction
        assert after == before


def test_a_killed_lot_release_leaves_the_lot_pending_or_wholly_released(db_url: str) -> None:
    from tests.factories import make_lot, make_step
    from traceability.models import Lot, LotStatus, Marker, ResultValue, StepMethod

    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        numbers = bulk_units(session, donors_count=1000)
        pools.create_pool(session, pool_number="P-R", product="ivig", actor=ACTOR)
        pools.add_units(session, pool_number="P-R", unit_numbers=numbers, actor=ACTOR, now=NOW)
        pools.close_pool(session, pool_number="P-R", actor=ACTOR, now=NOW)
        for marker in (Marker.HBSAG, Marker.ANTI_HIV, Marker.HCV_RNA):
            pools.test_pool(
                session, pool_number="P-R", marker=marker, result=ResultValue.NONREACTIVE, tested_at=NOW, actor=ACTOR
            )
        pools.release_pool(session, pool_number="P-R", actor=APPROVER)
        make_step(session, pool="P-R", method=StepMethod.SOLVENT_DETERGENT, enveloped=6)
        lot = make_lot(session, lot_number="L-KILL", inputs=[("pool", "P-R")])
        make_step(session, lot=lot, method=StepMethod.NANOFILTRATION, enveloped=5, non_enveloped=5)
    before = counts(db_url)
    killed = run_and_kill(db_url, ["lot", "release", "L-KILL"])
    after = counts(db_url)
    with Session(engine) as session:
        status = session.execute(select(Lot.status).where(Lot.lot_number == "L-KILL")).scalar_one()
    engine.dispose()
    assert after["verify"] is True
    if killed:
        assert status == LotStatus.PENDING and after == before
    else:
        assert status == LotStatus.RELEASED and after["events"] == before["events"] + 1  # type: ignore[operator]
