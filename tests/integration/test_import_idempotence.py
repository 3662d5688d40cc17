"""plasmatrace import: the same file or an overlapping one adds nothing twice; changed rows are conflicts;
on both engines."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import ACTOR, bulk_units, make_din, make_donor, make_unit
from tests.integration.importing import DONATIONS_HEADER, RESULTS_HEADER, T0, counts, import_, write
from traceability.errors import Conflict, ExitCode, InvalidImportFile
from traceability.identifiers import din_check_character
from traceability.models import (
    Donation,
    Marker,
    PoolMember,
    ResultValue,
    TestResult,
)
from traceability.services import pools

# --- idempotency and conflicts ----------------------------------------------------------------------------------


def test_importing_the_same_file_twice_adds_nothing_and_says_so(
    session: Session, donor_code: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "donations.csv", DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},750\n")
    first = import_(session, "donations", path)
    before = counts(session)

    again = import_(session, "donations", path)

    assert again.already_imported and again.loaded == 0 and again.event_seq == first.event_seq
    assert "already imported" in again.summary and "nothing was added" in again.summary
    assert counts(session) == before
    copy = write(tmp_path, "renamed.csv", path.read_bytes())
    assert import_(session, "donations", copy).already_imported  # the content decides, not the name
    assert not import_(session, "donations", copy, dry_run=True).loaded


def test_an_overlapping_file_counts_identical_rows_as_already_present(
    session: Session, donor_code: str, tmp_path: Path
) -> None:
    a, b, c = make_din(), make_din(), make_din()
    import_(
        session,
        "donations",
        write(tmp_path, "week1.csv", DONATIONS_HEADER + f"{a},{donor_code},{T0},750\n{b},{donor_code},{T0},700\n"),
    )
    overlapping = write(
        tmp_path,
        "week1-2.csv",
        "volume_ml,unit_number,collected_at,donor_code,plasma_kind\n"
        f"700,{b}{din_check_character(b)},{T0},{donor_code},source\n750,{a},{T0},{donor_code},\n"
        f"650,{c},{T0},{donor_code},\n",
    )

    report = import_(session, "donations", overlapping)

    assert (report.rows, report.loaded, report.already_present, report.rejected) == (3, 1, 2, 0)
    assert "1 of 3 rows loaded, 2 already present" in report.summary
    assert session.execute(select(func.count()).select_from(Donation)).scalar_one() == 3


def test_a_changed_row_is_a_conflict_naming_its_line_and_the_difference(
    session: Session, donor_code: str, tmp_path: Path
) -> None:
    a, b = make_din(), make_din()
    import_(
        session,
        "donations",
        write(tmp_path, "first.csv", DONATIONS_HEADER + f"{a},{donor_code},{T0},750\n{b},{donor_code},{T0},700\n"),
    )
    before = counts(session)
    changed = write(
        tmp_path,
        "second.csv",
        DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},600\n"
        f"{a},{donor_code},{T0},750\n{b},{donor_code},{T0},800\n",
    )

    with pytest.raises(Conflict) as caught:
        import_(session, "donations", changed)

    assert caught.value.exit_code == ExitCode.CONFLICT
    assert (
        f"{changed}:4: unit {b}: already recorded with different values (volume_ml: 700 -> 800); "
        "corrections go through 'plasmatrace donation correct'"
    ) in str(caught.value)
    assert "Nothing was loaded." in str(caught.value)
    assert counts(session) == before


def test_a_result_with_the_same_key_and_another_value_is_a_conflict(session: Session, tmp_path: Path) -> None:
    unit = make_unit(session, donor=make_donor(session), panel=None)
    tested = (unit.collected_at + timedelta(days=1)).isoformat()
    import_(session, "results", write(tmp_path, "r1.csv", RESULTS_HEADER + f"{unit.unit_number},hbsag,NR,{tested}\n"))
    again = write(
        tmp_path,
        "r2.csv",
        RESULTS_HEADER + f"{unit.unit_number},hbsag,nonreactive,{tested}\n{unit.unit_number},anti-hcv,R,{tested}\n",
    )
    assert import_(session, "results", again, dry_run=True).already_present == 1
    before = counts(session)

    changed = write(tmp_path, "r3.csv", RESULTS_HEADER + f"{unit.unit_number},hbsag,reactive,{tested}\n")
    with pytest.raises(
        Conflict,
        match=rf"r3\.csv:2: unit {unit.unit_number} hbsag tested at .*: already recorded "
        r"with different values \(result: nonreactive -> reactive\)",
    ):
        import_(session, "results", changed)
    assert counts(session) == before


def test_a_repeat_test_at_another_time_becomes_the_next_version(session: Session, tmp_path: Path) -> None:
    unit = make_unit(session, donor=make_donor(session), panel={Marker.HBSAG: ResultValue.INVALID})
    day = unit.collected_at + timedelta(days=3)
    path = write(
        tmp_path,
        "repeat.csv",
        RESULTS_HEADER
        + f"{unit.unit_number},hbsag,NR,{day.isoformat()}\n"
        + f"{unit.unit_number},hbsag,NR,{(day + timedelta(hours=2)).isoformat()}\n",
    )

    assert import_(session, "results", path).loaded == 2

    versions = session.execute(
        select(TestResult.version, TestResult.result, TestResult.reason)
        .where(TestResult.donation_id == unit.id)
        .order_by(TestResult.version)
    ).all()
    assert [tuple(v) for v in versions] == [
        (1, ResultValue.INVALID, None),
        (2, ResultValue.NONREACTIVE, "repeat test"),
        (3, ResultValue.NONREACTIVE, "repeat test"),
    ]


def test_pool_members_already_in_the_pool_are_present_and_in_another_pool_a_conflict(
    session: Session, tmp_path: Path
) -> None:
    units = bulk_units(session, donors_count=2, units_per_donor=2)
    for number in ("P-A", "P-B"):
        pools.create_pool(session, pool_number=number, product="ivig", actor=ACTOR)
    import_(session, "pool-members", write(tmp_path, "m1.csv", f"pool_number,unit_number\nP-A,{units[0]}\n"))

    overlap = import_(
        session, "pool-members", write(tmp_path, "m2.csv", f"pool_number,unit_number\nP-A,{units[0]}\nP-A,{units[1]}\n")
    )
    assert (overlap.loaded, overlap.already_present) == (1, 1)

    before = counts(session)
    moved = write(tmp_path, "m3.csv", f"pool_number,unit_number\nP-B,{units[2]}\nP-B,{units[1]}\n")
    with pytest.raises(Conflict) as caught:
        import_(session, "pool-members", moved)
    assert f"{moved}:3: unit {units[1]}: already in pool P-A, not P-B; a unit can be in one pool only" in str(
        caught.value
    )
    assert counts(session) == before


def test_an_ineligible_unit_in_a_pool_members_file_is_a_problem_on_its_line(session: Session, tmp_path: Path) -> None:
    units = bulk_units(session, donors_count=2, units_per_donor=2)[::2]
    untested = make_unit(session, donor=make_donor(session), panel=None).unit_number
    pools.create_pool(session, pool_number="P-A", product="ivig", actor=ACTOR)
    path = write(
        tmp_path,
        "members.csv",
        f"pool_number,unit_number\nP-A,{units[0]}\nP-A,{untested}\nP-A,{units[1]}\nP-404,{units[1]}\n",
    )
    before = counts(session)

    with pytest.raises(InvalidImportFile) as caught:
        import_(session, "pool-members", path)
    message = str(caught.value)
    assert f"{path}:3: unit_number: unit {untested} is not eligible for pool P-A: screening incomplete" in message
    assert f"{path}:5: unit_number: unit {units[1]} is also on line 4 of this file." in message
    assert counts(session) == before

    report = import_(session, "pool-members", path, skip_invalid=True)
    assert (report.loaded, report.rejected) == (2, 2), report.problems
    assert session.execute(select(func.count()).select_from(PoolMember)).scalar_one() == 2
