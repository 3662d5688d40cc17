"""Processes that collide: two draws or shipments where only one fits, eight look-back cases or deferrals for
one donor at once. Exactly one wins where only one may; every loser gets a message and a SPEC exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from tests.factories import cli_actor, make_consignee, make_donor, make_unit
from tests.integration.test_records import released_final_lot, released_pool
from traceability.db import make_engine
from traceability.errors import ExitCode
from traceability.models import LookbackCase

ROOT = Path(__file__).resolve().parents[2]


def run_at_once(db_url: str, commands: list[list[str]]) -> list[tuple[int, str]]:
    env = {**os.environ, "PLASMATRACE_DB": db_url, "PLASMATRACE_ACTOR": cli_actor(db_url)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    outcomes = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=180)
        outcomes.append((proc.returncode, stderr))
    for _, stderr in outcomes:
        assert "Traceback" not in stderr, stderr
    return outcomes


def test_two_lots_drawing_the_last_of_a_pool_at_once_one_wins(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        released_pool(session, "P-RACE")  # 780 L
    engine.dispose()
    outcomes = run_at_once(
        db_url,
        [
            ["lot", "create", f"L-{i}", "--product", "ivig", "--pool", "P-RACE=500L", "--kind", "intermediate"]
            for i in (1, 2)
        ],
    )
    codes = sorted(code for code, _ in outcomes)
    assert codes == [ExitCode.OK, ExitCode.RULE_VIOLATION], outcomes
    loser = next(text for code, text in outcomes if code == ExitCode.RULE_VIOLATION)
    assert "Pool P-RACE has 280,000 mL left" in loser


def test_two_shipments_of_the_last_vials_at_once_one_wins(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        released_pool(session, "P-SHIP")
        lot = released_final_lot(session, "P-SHIP", lot="IVG-RACE", quantity=100)
        to = make_consignee(session)
    engine.dispose()
    today = datetime.now(UTC).date().isoformat()
    outcomes = run_at_once(
        db_url, [["lot", "ship", lot, "--to", to, "--quantity", "60", "--shipped-on", today] for _ in range(2)]
    )
    assert sorted(code for code, _ in outcomes) == [ExitCode.OK, ExitCode.RULE_VIOLATION], outcomes
    assert any("Lot IVG-RACE has 40 vials left" in text for _, text in outcomes)


def test_eight_look_back_cases_for_one_donor_at_once_open_one_and_the_others_join_it(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        donor = make_donor(session)
        make_unit(session, donor=donor)
        code = donor.donor_code
    engine.dispose()
    outcomes = run_at_once(db_url, [["lookback", "open", code, "--reason", f"PDI {i}"] for i in range(8)])
    assert [c for c, _ in outcomes] == [ExitCode.OK] * 8, outcomes
    assert sum("joins it" in text for _, text in outcomes) == 7, outcomes
    engine = make_engine(db_url)
    with Session(engine) as session:
        numbers = session.execute(select(LookbackCase.case_number)).scalars().all()
    engine.dispose()
    assert len(numbers) == 1, numbers


def test_eight_deferrals_of_one_donor_at_once_end_without_a_traceback(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        code = make_donor(session).donor_code
    engine.dispose()
    outcomes = run_at_once(db_url, [["donor", "defer", code, "--reason", f"travel {i}"] for i in range(8)])
    assert all(c in (ExitCode.OK, ExitCode.CONFLICT) for c, _ in outcomes), outcomes
    assert any(c == ExitCode.OK for c, _ in outcomes)
