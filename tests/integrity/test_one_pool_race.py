"""Two processes pooling the same unit at once: the database lets exactly one win."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import Session

from tests.factories import ACTOR, bulk_units, cli_actor
from traceability.db import make_engine
from traceability.errors import ExitCode
from traceability.services import pools

ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_adding_one_unit_to_two_pools_one_wins(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        unit = bulk_units(session, donors_count=1)[0]
        for number in ("P-1", "P-2"):
            pools.create_pool(session, pool_number=number, product="ivig", actor=ACTOR)
    engine.dispose()
    env = {**os.environ, "PLASMATRACE_DB": db_url, "PLASMATRACE_ACTOR": cli_actor(db_url)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", "pool", "add", pool, unit],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pool in ("P-1", "P-2")
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    codes = sorted(code for code, _ in outcomes)
    assert codes == [ExitCode.OK, ExitCode.CONFLICT], outcomes
    loser = next(text for code, text in outcomes if code == ExitCode.CONFLICT)
    assert unit in loser and "one pool only" in loser
    assert "Traceback" not in loser
