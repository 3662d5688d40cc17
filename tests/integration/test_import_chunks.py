"""plasmatrace import: files loaded chunk by chunk, duplicates found across chunks, times and completion events;
on both engines."""

from __future__ import annotations

import gc
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import ACTOR, make_din, make_donor, make_unit
from tests.integration.importing import DONATIONS_HEADER, RESULTS_HEADER, T0, counts, import_, write
from traceability.errors import InvalidImportFile
from traceability.importers import load
from traceability.models import (
    Donation,
    TestResult,
)

# --- chunks ------------------------------------------------------------------------------------------------------


def test_rows_are_loaded_chunk_by_chunk_and_duplicates_are_found_across_chunks(
    session: Session, donor_code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "CHUNK_ROWS", 2)
    numbers = [make_din() for _ in range(5)]
    path = write(
        tmp_path,
        "donations.csv",
        DONATIONS_HEADER
        + "".join(f"{n},{donor_code},{T0},750\n" for n in numbers)
        + f"{numbers[1]},{donor_code},{T0},750\n",
    )
    seen: list[int] = []

    with pytest.raises(InvalidImportFile, match=rf"donations\.csv:7: unit_number: unit {numbers[1]} is also on line 3"):
        import_(session, "donations", path, progress=seen.append)

    assert seen == [2, 4, 6]
    assert session.execute(select(func.count()).select_from(Donation)).scalar_one() == 0
    report = import_(session, "donations", path, skip_invalid=True, progress=seen.append)
    assert (report.loaded, report.rejected) == (5, 1)


def test_results_of_one_unit_spread_over_chunks_get_consecutive_versions(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "CHUNK_ROWS", 1)
    unit = make_unit(session, donor=make_donor(session), panel=None)
    times = [(unit.collected_at + timedelta(days=1, hours=h)).isoformat() for h in range(3)]
    path = write(tmp_path, "r.csv", RESULTS_HEADER + "".join(f"{unit.unit_number},hcv-rna,NR,{t}\n" for t in times))

    assert import_(session, "results", path).loaded == 3
    versions = (
        session.execute(
            select(TestResult.version).where(TestResult.donation_id == unit.id).order_by(TestResult.version)
        )
        .scalars()
        .all()
    )
    assert versions == [1, 2, 3]


def test_duplicates_across_chunks_name_the_first_line_whether_it_was_loaded_or_not(
    session: Session, donor_code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys of loaded rows are not kept for the whole file: the database and a second read of the chunk name the line.
    monkeypatch.setattr(load, "CHUNK_ROWS", 2)
    loaded = make_din()
    path = write(
        tmp_path,
        "donations.csv",
        DONATIONS_HEADER
        + f"{make_din()},{donor_code},{T0},750\n"  # 2
        + f"{loaded},{donor_code},{T0},750\n"  # 3
        + f"{make_din()},D-MISSING,{T0},750\n"  # 4
        + f"{make_din()},{donor_code},{T0},750\n"  # 5
        + f"{loaded},{donor_code},{T0},700\n"  # 6: duplicate of a row loaded from another chunk
        + f"{loaded.lower()},{donor_code},{T0},750\n",  # 7: the same unit written otherwise, a third time
    )

    report = import_(session, "donations", path, skip_invalid=True)

    assert (report.loaded, report.rejected) == (3, 3)
    assert [p.split(": ", 1)[1] for p in report.problems[1:]] == [
        f"unit_number: unit {loaded} is also on line 3 of this file.",
        f"unit_number: unit {loaded} is also on line 3 of this file.",
    ]
    again = write(
        tmp_path, "again.csv", DONATIONS_HEADER + "".join(f"{make_din()},{donor_code},{T0},750\n" for _ in range(3))
    )
    assert import_(session, "donations", again).loaded == 3


def test_a_result_repeated_in_a_later_chunk_is_a_duplicate_with_its_first_line(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "CHUNK_ROWS", 2)
    unit = make_unit(session, donor=make_donor(session), panel=None)
    t = (unit.collected_at + timedelta(days=1)).isoformat()
    t2 = (unit.collected_at + timedelta(days=2)).isoformat()
    path = write(
        tmp_path,
        "r.csv",
        RESULTS_HEADER
        + f"{unit.unit_number},hcv-rna,NR,{t}\n"  # 2
        + f"{unit.unit_number},hbsag,NR,{t}\n"  # 3
        + f"{unit.unit_number},hbsag,NR,{t2}\n"  # 4
        + f"{unit.unit_number},hcv-rna,NR,{t}\n",  # 5
    )

    with pytest.raises(InvalidImportFile) as raised:
        import_(session, "results", path)

    assert raised.value.problems == [
        f"{path}:5: unit_number: unit {unit.unit_number} hcv-rna tested at "
        f"{datetime.fromisoformat(t).astimezone(UTC).isoformat()} is also on line 2 of this file."
    ]
    assert session.execute(select(func.count()).select_from(TestResult)).scalar_one() == 0


@pytest.mark.parametrize("gap", [1, 2], ids=["next-chunk", "two-chunks-later"])
@pytest.mark.parametrize("kind", ["donors", "donations", "results"])
def test_a_row_repeated_one_or_two_chunks_later_is_a_duplicate_of_its_first_line(
    session: Session, site: str, donor_code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, gap: int
) -> None:
    # On PostgreSQL a chunk's rows are written while the next chunk is checked: a repeat in the next chunk is found
    # among the rows being written, a repeat further on in the database. Both name the first line and load nothing.
    monkeypatch.setattr(load, "CHUNK_ROWS", 1)
    if kind == "donors":
        header, rows = "establishment,donor_code,registered_on\n", [f"{site},D-{i},2025-03-01\n" for i in range(3)]
    elif kind == "donations":
        header, rows = DONATIONS_HEADER, [f"{make_din()},{donor_code},{T0},750\n" for _ in range(3)]
    else:
        unit = make_unit(session, donor=make_donor(session), panel=None)
        at = [(unit.collected_at + timedelta(days=1, hours=h)).isoformat() for h in range(3)]
        header, rows = RESULTS_HEADER, [f"{unit.unit_number},hcv-rna,NR,{t}\n" for t in at]
    before = counts(session)
    path = write(tmp_path, f"{kind}.csv", header + "".join(rows[:gap]) + rows[0] + "".join(rows[gap:]))

    with pytest.raises(InvalidImportFile) as raised:
        import_(session, kind, path)

    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith(f"{path}:{2 + gap}: ")
    assert raised.value.problems[0].endswith("is also on line 2 of this file.")
    assert counts(session) == before
    report = import_(session, kind, path, skip_invalid=True)
    assert (report.loaded, report.rejected) == (3, 1)


@pytest.mark.parametrize("broken", [False, True], ids=["loaded", "refused"])
def test_an_import_leaves_the_interpreter_settings_as_it_found_them(
    session: Session, donor_code: str, tmp_path: Path, broken: bool
) -> None:
    # Imports tune the garbage collector (and, when pipelined, the thread switch interval) for their length only.
    volume = "a lot" if broken else "750"
    path = write(tmp_path, "d.csv", DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},{volume}\n")
    before = (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count())

    if broken:
        with pytest.raises(InvalidImportFile):
            import_(session, "donations", path)
    else:
        assert import_(session, "donations", path).loaded == 1

    assert (sys.getswitchinterval(), gc.get_threshold(), gc.get_freeze_count()) == before


def test_every_later_copy_of_a_row_names_its_first_line(
    session: Session, donor_code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "CHUNK_ROWS", 1)
    unit = make_din()
    path = write(tmp_path, "d.csv", DONATIONS_HEADER + f"{unit},{donor_code},{T0},750\n" * 4)

    report = import_(session, "donations", path, skip_invalid=True)

    assert (report.loaded, report.rejected) == (1, 3)
    assert report.problems == [
        f"{path}:{line}: unit_number: unit {unit} is also on line 2 of this file." for line in (3, 4, 5)
    ]


def test_a_duplicate_of_a_row_already_present_is_still_a_duplicate(
    session: Session, donor_code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "CHUNK_ROWS", 1)
    unit = make_din()
    first = write(tmp_path, "first.csv", DONATIONS_HEADER + f"{unit},{donor_code},{T0},750\n")
    import_(session, "donations", first)
    path = write(tmp_path, "second.csv", DONATIONS_HEADER + f"{unit},{donor_code},{T0},750\n" * 2)

    report = import_(session, "donations", path, skip_invalid=True)

    assert (report.loaded, report.already_present, report.rejected) == (0, 1, 1)
    assert report.problems == [f"{path}:3: unit_number: unit {unit} is also on line 2 of this file."]


def test_times_written_by_an_import_read_back_and_compare_like_times_written_through_the_orm(
    session: Session, donor_code: str, tmp_path: Path
) -> None:
    unit = make_din()
    at = "2026-03-01T10:30:00+01:00"
    frozen = "2026-03-01T12:00:00.250000Z"
    path = write(
        tmp_path,
        "d.csv",
        "unit_number,donor_code,collected_at,volume_ml,frozen_at\n" + f"{unit},{donor_code},{at},750,{frozen}\n",
    )
    import_(session, "donations", path)
    session.expire_all()

    collected = datetime.fromisoformat(at)
    donation = session.execute(select(Donation).where(Donation.collected_at == collected)).scalar_one()
    assert donation.unit_number == unit
    assert donation.collected_at == collected and donation.collected_at.tzinfo is not None
    assert donation.frozen_at == datetime.fromisoformat(frozen)
    assert (
        session.execute(
            select(func.count())
            .select_from(Donation)
            .where(Donation.collected_at < collected + timedelta(microseconds=1))
        ).scalar_one()
        >= 1
    )
    assert donation.created_by == ACTOR and donation.import_event_id is not None


def test_a_file_that_breaks_after_a_loaded_chunk_loads_nothing_and_says_why(
    session: Session, donor_code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "CHUNK_ROWS", 1)
    before = counts(session)
    path = write(
        tmp_path,
        "d.csv",
        DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},750\n{make_din()},{donor_code},{T0},750\n" + 'G1,"D\n',
    )

    with pytest.raises(InvalidImportFile) as raised:
        import_(session, "donations", path, skip_invalid=True)

    assert raised.value.problems[0].startswith(f"{path}:4: row: a quoted field that starts on this line")
    assert counts(session) == before
    assert not (tmp_path / "d.rejects.csv").exists()


def test_the_completion_event_counts_the_rows_and_a_second_import_reports_them(
    session: Session, donor_code: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "d.csv", DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},750\n\n")
    totals: list[int] = []

    assert import_(session, "donations", path, on_rows_counted=totals.append).rows == 1
    again = import_(session, "donations", path)

    assert again.already_imported and again.rows == 1
    assert totals == [2]  # the lines after the header: an upper bound known before reading
