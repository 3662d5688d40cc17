"""Two processes recording reactive results for one donor at once: one opens the look-back case, the other joins it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import bulk_units, cli_actor
from traceability.db import make_engine
from traceability.errors import ExitCode
from traceability.models import CaseStatus, LookbackCase

ROOT = Path(__file__).resolve().parents[2]


def test_two_reactive_results_for_one_donor_at_once_make_one_case(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        first, second = bulk_units(session, donors_count=1, units_per_donor=2)
    env = {**os.environ, "PLASMATRACE_DB": db_url, "PLASMATRACE_ACTOR": cli_actor(db_url)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", "result", "add", unit, "--marker", marker, "--result", "R"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for unit, marker in ((first, "anti-hcv"), (second, "hbsag"))
    ]
    outcomes = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in outcomes] == [ExitCode.OK, ExitCode.OK], outcomes
    said = sorted("opened" if " opened for donor " in text else "joined" for _, text in outcomes)
    assert said == ["joined", "opened"], outcomes
    with Session(engine) as session:
        cases = session.execute(
            select(func.count(LookbackCase.id)).where(LookbackCase.status == CaseStatus.OPEN)
        ).scalar_one()
    engine.dispose()
    assert cases == 1
