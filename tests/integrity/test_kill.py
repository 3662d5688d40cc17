"""SIGKILL in the middle of a command leaves the database as it was before that command.

No hook in the product: the test watches the database from a connection of its own and kills the process when the
command is where it should be killed, whatever the speed of the machine:

- inside its write transaction: on SQLite the write lock is held (BEGIN IMMEDIATE fails); on PostgreSQL a session of
  the command's database has a transaction id (``backend_xid``: given at its first write, a row lock included);
- while rows are being written (the import): that, and the table's storage growing. On SQLite the WAL grows (the
  transaction's pages spill there long before its commit; the WAL is truncated before the command starts); on
  PostgreSQL the table's relation grows (pg_relation_size sees what another session's COPY has added, uncommitted).

The import's file is sized from the rate measured on this machine just before (an import run to its end under the
same watch), so that writing it lasts seconds whether the machine is idle or loaded, and the kill lands after a
given number of rows' worth of storage, not after a given time.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
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
POLL_S = 0.002

CALIBRATION_ROWS = 20_000
"""Rows of the import timed first, to learn how fast this machine writes donations right now."""
WRITE_SECONDS = 3.0
"""How long writing the killed import's file should take at the measured rate."""
MIN_ROWS, MAX_ROWS = 5 * CALIBRATION_ROWS, 1_000_000


class Watcher:
    """The database seen from outside the command, through a connection of its own."""

    def __init__(self, url: str, *, tables: tuple[str, ...] = ()) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.path = Path(make_url(url).database or "")
            self.conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
            # Whatever an earlier writer left in the WAL goes into the database and the WAL starts empty: from now
            # on it grows only by what the command writes (it does not shrink while this connection is open).
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.execute("PRAGMA busy_timeout = 0")
        else:
            self.engine = make_engine(url)
        self.start = {table: self.stored_bytes(table) for table in tables}

    def close(self) -> None:
        if self.sqlite:
            self.conn.close()
        else:
            self.engine.dispose()

    def in_write_transaction(self) -> bool:
        if self.sqlite:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return True
            self.conn.execute("ROLLBACK")
            return False
        with self.engine.connect() as conn:
            return bool(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
                    )
                ).scalar()
            )

    def stored_bytes(self, table: str) -> int:
        """What the database holds for ``table`` so far, written but perhaps not committed: the WAL on SQLite (the
        command writes only there), the table's main relation on PostgreSQL."""
        if self.sqlite:
            wal = self.path.with_name(self.path.name + "-wal")
            return wal.stat().st_size if wal.exists() else 0
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_relation_size(CAST(:t AS regclass))"), {"t": table}).scalar_one())

    def grown(self, table: str) -> int:
        """Bytes stored for ``table`` since this watcher started (one of its ``tables``)."""
        return self.stored_bytes(table) - self.start[table]


def command_env(url: str) -> dict[str, str]:
    return {**os.environ, "PLASMATRACE_DB": url, "PLASMATRACE_ACTOR": cli_actor(url, APPROVER)}


def run_and_kill(
    url: str,
    args: list[str],
    *,
    when: Callable[[Watcher], bool] = Watcher.in_write_transaction,
    tables: tuple[str, ...] = (),
    settle: float = 0.0,
    limit: float = 120.0,
) -> bool:
    """Start a command and kill -9 it once ``when`` holds (after ``settle`` seconds more); True if it was still
    running when the signal was sent. ``tables``: those whose growth ``when`` looks at."""
    watcher = Watcher(url, tables=tables)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=command_env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    killed = False
    deadline = time.monotonic() + limit
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if when(watcher):
                if settle:
                    time.sleep(settle)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None and not killed:
            proc.kill()
        proc.wait()
        watcher.close()
    return killed


def writing_rows_of(table: str, *, past: int) -> Callable[[Watcher], bool]:
    """The command is inside its write transaction and has stored more than ``past`` bytes for ``table`` since the
    watch began."""

    def writing(watcher: Watcher) -> bool:
        # Storage first: seen grown while the transaction is still open means grown before the commit.
        return watcher.grown(table) > past and watcher.in_write_transaction()

    return writing


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


def write_donations(path: Path, site_donor: str, rows: int, *, prefix: str = "K") -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("unit_number,donor_code,collected_at,volume_ml\n")
        collected = (NOW - timedelta(days=100)).isoformat()
        for i in range(rows):
            handle.write(f"{prefix}{i:09d},{site_donor},{collected},700\n")


def timed_import(url: str, file: Path, *, table: str) -> tuple[float, int]:
    """Import ``file`` to its end under watch: (rows of it written per second, bytes stored for ``table``).

    The rate comes from how fast the table's storage grew while the rows were being written (from its first growth
    to its last), so neither the command's start-up and exit nor the machine's page cache count in it."""
    watcher = Watcher(url, tables=(table,))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "import", "donations", str(file)],
        cwd=ROOT,
        env=command_env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[tuple[float, int]] = []  # (when, bytes) each time the storage was seen to have grown
    try:
        while proc.poll() is None:
            grown = watcher.grown(table)
            if grown > (seen[-1][1] if seen else 0):
                seen.append((time.monotonic(), grown))
            time.sleep(POLL_S)
        stored = watcher.grown(table)
    finally:
        _, stderr = proc.communicate()
        watcher.close()
    assert proc.returncode == 0, stderr
    assert seen and stored > 0, "the import stored nothing that could be seen while it ran"
    rows = sum(1 for _ in file.open(encoding="utf-8")) - 1
    (first, first_bytes), (last, last_bytes) = seen[0], seen[-1]
    if last_bytes == first_bytes:  # all stored at once: too fast to be timed, as fast as can be for this test
        return math.inf, stored
    bytes_per_s = (last_bytes - first_bytes) / max(last - first, POLL_S)
    return bytes_per_s / (stored / rows), stored


def test_a_killed_import_leaves_nothing_and_a_rerun_completes(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        site = make_establishment(session)
        from traceability.services import donors

        donors.add_donor(session, donor_code="D-KILL", establishment=site, registered_on=None, actor=ACTOR)
    engine.dispose()
    # How fast this machine writes donations right now, and how much storage a number of them takes.
    calibration = tmp_path / "calibration.csv"
    write_donations(calibration, "D-KILL", CALIBRATION_ROWS, prefix="C")
    rate, calibration_bytes = timed_import(db_url, calibration, table="donation")
    rows = max(MIN_ROWS, math.ceil(min(MAX_ROWS, rate * WRITE_SECONDS)))
    file = tmp_path / "donations.csv"
    write_donations(file, "D-KILL", rows)
    before = counts(db_url)
    # Killed once as much has been stored as for the whole calibration file: a fifth of the file at most, seconds
    # before its commit at the rate just measured.
    writing = writing_rows_of("donation", past=calibration_bytes)
    assert run_and_kill(db_url, ["import", "donations", str(file)], when=writing, tables=("donation",)), (
        f"the import of {rows:,} rows ({rate:,.0f} rows/s measured) ended before it could be killed while writing"
    )
    after = counts(db_url)
    assert after == before and after["verify"] is True
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "import", "donations", str(file)],
        cwd=ROOT,
        env=command_env(db_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    print(  # shown with -s: what the file was sized from, and how long the re-run took
        f"measured {rate:,.0f} rows/s; killed import of {rows:,} rows; re-run {time.monotonic() - started:.2f} s"
    )
    final = counts(db_url)
    assert final["donations"] == before["donations"] + rows and final["verify"] is True  # type: ignore[operator]


@pytest.mark.parametrize("settle", [0.0, 0.05, 0.3])
def test_a_killed_pool_close_leaves_the_pool_open_or_wholly_closed(db_url: str, settle: float) -> None:
    """Killed the moment its write transaction is seen, the close changes nothing (its transaction, checking 10,000
    units, lasts a hundred times longer than the watch takes to see it). Killed ``settle`` seconds later, it may
    have committed, on a fast machine: then the pool is wholly closed, with its audit event."""
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        numbers = bulk_units(session, donors_count=5_000, units_per_donor=2)
        pools.create_pool(session, pool_number="P-KILL", product="ivig", actor=ACTOR)
        pools.add_units(session, pool_number="P-KILL", unit_numbers=numbers, actor=ACTOR, now=NOW)
    engine.dispose()
    before = counts(db_url)
    killed = run_and_kill(db_url, ["pool", "close", "P-KILL"], settle=settle)
    after = counts(db_url)
    assert after["verify"] is True
    wholly_closed = {**before, "pools": {"P-KILL": PoolStatus.CLOSED}, "events": before["events"] + 1}  # type: ignore[operator]
    # Killed before its commit: nothing changed. Killed after it (while the process was exiting) or not killed:
    # closed with its audit event. Never anything in between.
    assert after in (before, wholly_closed)
    if settle == 0.0:
        assert killed and after == before, "the close was not killed inside its write transaction"


def test_a_killed_lot_release_leaves_the_lot_pending_or_wholly_released(db_url: str) -> None:
    """Killed the moment its write transaction is seen: the lot stays pending, or (on a fast machine, the
    transaction being short) is wholly released."""
    from tests.factories import make_lot, make_released_pool, make_step
    from traceability.models import Lot, LotStatus, StepMethod

    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        make_released_pool(session, pool_number="P-R", members=bulk_units(session, donors_count=1000))
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
    wholly_released = {**before, "events": before["events"] + 1}  # type: ignore[operator]
    # Killed before its commit: nothing changed. A release is quick: on a fast machine it may have committed before
    # the kill (which then came while the process was exiting, or not at all): released with its audit event.
    assert (status, after) in ((LotStatus.PENDING, before), (LotStatus.RELEASED, wholly_released))
    if not killed:
        assert status == LotStatus.RELEASED
