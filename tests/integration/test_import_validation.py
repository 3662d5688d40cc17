"""plasmatrace import: broken files and bad rows are refused with file, line and column; --skip-invalid and
--dry-run; on both engines."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from tests.factories import NOW, make_din, make_donor, make_establishment, make_unit
from tests.integration.importing import DONATIONS_HEADER, RESULTS_HEADER, T0, counts, import_, write
from traceability import audit
from traceability.errors import ExitCode, InvalidImportFile, InvalidInput
from traceability.models import (
    AuditEvent,
    Donation,
)

# --- broken files -----------------------------------------------------------------------------------------------


GOOD = "G123417654321A,D-0001,2026-05-01T10:00:00Z,750\n"
LONG = "x" * 5_000
BROKEN: dict[str, tuple[str, bytes, str]] = {
    "empty file": ("donations", b"", ":1: file: is empty; expected a header row with the columns unit_number"),
    "blank header": ("donations", b"\n" + GOOD.encode(), ":1: header: is blank"),
    "UTF-16": ("donations", (DONATIONS_HEADER + GOOD).encode("utf-16"), ":1: file: is UTF-16 encoded"),
    "not UTF-8": (
        "donations",
        (DONATIONS_HEADER + GOOD).encode() + b"G123417654322,D-0\xe9,2026-05-01,750\n",
        ":3: row: is not valid UTF-8 (byte 0xE9 at byte 18 of the line)",
    ),
    "NUL byte": (
        "donations",
        (DONATIONS_HEADER + GOOD).encode() + b"G123417654322,D-0001\x00,2026-05-01,750\n",
        ":3: row: contains a NUL byte",
    ),
    "too many fields": (
        "donations",
        (DONATIONS_HEADER + GOOD + "G123417654322,D-0001,2026-05-01,750,9\n").encode(),
        ":3: row: has 5 fields; the header has 4",
    ),
    "too few fields": (
        "donations",
        (DONATIONS_HEADER + "G123417654322,D-0001,2026-05-01\n" + GOOD).encode(),
        ":2: row: has 3 fields; the header has 4",
    ),
    "truncated last line": (
        "donations",
        (DONATIONS_HEADER + GOOD + "G123417654322,D-00").encode(),
        ":3: row: has 2 fields; the header has 4",
    ),
    "unterminated quote": (
        "donations",
        (DONATIONS_HEADER + GOOD + 'G123417654322,"D-0001,2026-05-01,750\n' + GOOD).encode(),
        ":3: row: a quoted field that starts on this line is never closed",
    ),
    "quote swallowing the file": (
        "donations",
        (DONATIONS_HEADER + '"' + GOOD * 2_000).encode(),
        ":2: row: runs past 65,536 characters",
    ),
    "text after a closing quote": (
        "donations",
        (DONATIONS_HEADER + '"G123417654322"x,D-0001,2026-05-01,750\n').encode(),
        ":2: row: a quoted field has text after its closing quote",
    ),
    "unknown column": (
        "donations",
        ("unit_number,donor_code,collected_at,volume_ml,colour\n" + GOOD).encode(),
        ":1: header: unknown column colour; expected a header row with the columns",
    ),
    "missing column": (
        "donations",
        (b"unit_number,donor_code,collected_at\nG123417654321,D-0001,2026-05-01\n"),
        ":1: header: missing required column volume_ml",
    ),
    "column twice": (
        "donations",
        (b"unit_number,donor_code,collected_at,volume_ml,UNIT_NUMBER\n"),
        ":1: header: column unit_number appears more than once",
    ),
    "unknown donor": (
        "donations",
        (DONATIONS_HEADER + GOOD + "G123417654322,D-404,2026-05-01,750\n").encode(),
        ":3: donor_code: donor D-404 is not in the database; import the donors file first",
    ),
    "unknown establishment": (
        "donors",
        b"donor_code,establishment\nD-9,SITE-404\n",
        ":2: establishment: establishment SITE-404 is not in the database",
    ),
    "duplicate key": (
        "donations",
        (
            DONATIONS_HEADER + GOOD + "G123417654322,D-0001,2026-05-01,700\n" + "G123417654321,D-0001,2026-05-02,700\n"
        ).encode(),
        ":4: unit_number: unit G123417654321 is also on line 2 of this file.",
    ),
    "duplicate donor": (
        "donors",
        b"donor_code,establishment\nD-7,SITE-1\nD-8,SITE-1\nD-7,SITE-1\n",
        ":4: donor_code: donor D-7 is also on line 2 of this file.",
    ),
    "wrong check character": (
        "donations",
        (DONATIONS_HEADER + "G123417654321B,D-0001,2026-05-01,750\n").encode(),
        ":2: unit_number: Unit number 'G123417654321B' is invalid: check character B does not "
        "match A for DIN G123417654321",
    ),
    "bad date": (
        "donors",
        b"donor_code,establishment,registered_on\nD-9,SITE-1,2025-02-30\n",
        ":2: registered_on: date '2025-02-30' is not a date of the form YYYY-MM-DD.",
    ),
    "bad time": (
        "donations",
        (DONATIONS_HEADER + "G123417654321,D-0001,01/05/2026,750\n").encode(),
        ":2: collected_at: time '01/05/2026' is not an ISO 8601 time",
    ),
    "collected in the future": (
        "donations",
        (DONATIONS_HEADER + "G123417654321,D-0001,2999-01-01,750\n").encode(),
        ":2: collected_at: 2999-01-01T00:00:00+00:00 is in the future.",
    ),
    "frozen before collection": (
        "donations",
        (
            DONATIONS_HEADER.strip() + ",frozen_at\nG123417654321,D-0001,2026-05-01T10:00Z,750,2026-05-01T09:00Z\n"
        ).encode(),
        ":2: frozen_at: 2026-05-01T09:00:00+00:00 is before the collection",
    ),
    "negative volume": (
        "donations",
        (DONATIONS_HEADER + "G123417654321,D-0001,2026-05-01,-5\n").encode(),
        ":2: volume_ml: volume (mL) -5 must be zero or more.",
    ),
    "empty required cell": (
        "donations",
        (DONATIONS_HEADER + "G123417654321,,2026-05-01,750\n").encode(),
        ":2: donor_code: is empty; a value is required.",
    ),
    "huge field": (
        "donors",
        f"donor_code,establishment\n{LONG},SITE-1\n".encode(),
        ":2: donor_code: is 5,000 characters long; at most 1,000 are accepted.",
    ),
    "unknown unit": (
        "results",
        (RESULTS_HEADER + "G123417654399,hbsag,NR,2026-05-03\n").encode(),
        ":2: unit_number: unit G123417654399 is not in the database",
    ),
    "unknown marker": (
        "results",
        (RESULTS_HEADER + "G123417654321,hiv,NR,2026-05-03\n").encode(),
        ":2: marker: marker 'hiv' is not one of: hbsag, anti-hiv",
    ),
    "unknown result": (
        "results",
        (RESULTS_HEADER + "G123417654321,hbsag,maybe,2026-05-03\n").encode(),
        ":2: result: result 'maybe' is not one of: nonreactive",
    ),
    "tested before collection": (
        "results",
        (RESULTS_HEADER + "G123417654321,hbsag,NR,2026-04-01\n").encode(),
        ":2: tested_at: 2026-04-01T00:00:00+00:00 is before unit G123417654321 was collected",
    ),
    "value without unit": (
        "results",
        (b"unit_number,marker,result,tested_at,value,unit\nG123417654321,b19-dna,NR,2026-05-03,12.5,\n"),
        ":2: unit: is empty; a quantitative result needs both value and unit.",
    ),
    "unknown pool": (
        "pool-members",
        b"pool_number,unit_number\nP-404,G123417654321\n",
        ":2: pool_number: pool P-404 is not in the database; create it first",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_broken_file_is_refused_with_file_line_column_and_loads_nothing(
    session: Session, donor_code: str, tmp_path: Path, case: str
) -> None:
    kind, content, expected = BROKEN[case]
    if kind == "results":
        make_unit(
            session,
            donor=make_donor(session),
            unit_number="G123417654321",
            collected_at=NOW - timedelta(days=31),
            panel=None,
        )
    path = write(tmp_path, "broken.csv", content)
    before = counts(session)

    with pytest.raises(InvalidImportFile) as caught:
        import_(session, kind, path)

    assert caught.value.exit_code == ExitCode.INVALID_INPUT
    assert f"{path}{expected}" in str(caught.value), str(caught.value)
    assert "nothing was loaded" in str(caught.value)
    assert counts(session) == before
    assert audit.verify(session).ok


def test_a_missing_file_is_invalid_input(session: Session, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"Import file .*nowhere\.csv does not exist\.") as caught:
        import_(session, "donors", tmp_path / "nowhere.csv")
    assert caught.value.exit_code == ExitCode.INVALID_INPUT
    with pytest.raises(InvalidInput, match="is not a file"):
        import_(session, "donors", tmp_path)


def test_a_header_only_file_is_not_an_error_and_says_it_loaded_no_rows(session: Session, tmp_path: Path) -> None:
    path = write(tmp_path, "donors.csv", "donor_code,establishment,registered_on\n\n")

    report = import_(session, "donors", path)

    assert (report.rows, report.loaded, report.rejected) == (0, 0, 0)
    assert "no data rows" in report.summary and "0 rows loaded" in report.summary


def test_problems_past_the_first_fifty_are_counted(session: Session, donor_code: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many.csv",
        DONATIONS_HEADER + "".join(f"{make_din()},{donor_code},{T0},-{i}\n" for i in range(1, 121)),
    )
    with pytest.raises(InvalidImportFile) as caught:
        import_(session, "donations", path)
    assert caught.value.total == 120 and "... and 70 more." in str(caught.value)


# --- skip-invalid, dry run ---------------------------------------------------------------------------------------


def test_skip_invalid_loads_the_good_rows_and_writes_rejects_that_can_be_fixed_and_imported(
    session: Session, donor_code: str, tmp_path: Path
) -> None:
    good, bad, unknown = make_din(), make_din(), make_din()
    path = write(
        tmp_path,
        "donations.csv",
        DONATIONS_HEADER + f"{good},{donor_code},{T0},750\n{bad},{donor_code},{T0},-700\n{unknown},D-404,{T0},650\n",
    )

    report = import_(session, "donations", path, skip_invalid=True)

    assert (report.loaded, report.rejected, report.problem_count) == (1, 2, 2)
    assert report.rejects_path == str(tmp_path / "donations.rejects.csv")
    assert f"{path}:3: volume_ml: volume (mL) -700 must be zero or more." in report.problems
    with open(report.rejects_path, encoding="utf-8", newline="") as handle:
        rejected = list(csv.DictReader(handle))
    assert [(r["unit_number"], r["line"]) for r in rejected] == [(bad, "3"), (unknown, "4")]
    assert list(rejected[0]) == ["unit_number", "donor_code", "collected_at", "volume_ml", "line", "problem"]
    assert rejected[1]["problem"].startswith("donor_code: donor D-404 is not in the database")

    rejected[0]["volume_ml"] = "700"
    rejected[1]["donor_code"] = donor_code
    fixed = tmp_path / "donations.rejects.csv"
    with open(fixed, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rejected[0]))
        writer.writeheader()
        writer.writerows(rejected)
    again = import_(session, "donations", fixed)

    assert (again.loaded, again.rejected) == (2, 0)
    volumes = dict(session.execute(select(Donation.unit_number, Donation.volume_ml)).all())
    assert volumes == {good: 750, bad: 700, unknown: 650}
    completed = (
        session.execute(
            select(AuditEvent.new_values)
            .where(AuditEvent.action == "import.donations.completed")
            .order_by(AuditEvent.seq)
        )
        .scalars()
        .all()
    )
    assert '"rejected":2' in completed[0]


def test_skip_invalid_can_write_the_rejects_elsewhere_and_writes_none_without_rejects(
    session: Session, donor_code: str, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "bad-rows.csv"
    target.parent.mkdir()
    path = write(tmp_path, "d.csv", DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},x\n")
    assert import_(session, "donations", path, skip_invalid=True, rejects_path=target).rejects_path == str(target)
    assert target.exists() and not (tmp_path / "d.rejects.csv").exists()

    clean = write(tmp_path, "clean.csv", DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},750\n")
    assert import_(session, "donations", clean, skip_invalid=True).rejects_path is None
    assert not (tmp_path / "clean.rejects.csv").exists()
    assert [p.name for p in target.parent.iterdir()] == ["bad-rows.csv"]  # no temporary file left behind


def test_a_dry_run_reports_what_would_load_and_writes_nothing(
    session: Session, site: str, donor_code: str, tmp_path: Path
) -> None:
    make_establishment(session)
    path = write(
        tmp_path,
        "donations.csv",
        DONATIONS_HEADER + f"{make_din()},{donor_code},{T0},750\n{make_din()},{donor_code},{T0},-1\n",
    )
    before = counts(session)

    report = import_(session, "donations", path, dry_run=True, skip_invalid=True)

    assert report.dry_run and (report.loaded, report.rejected) == (1, 1) and report.event_seq is None
    assert report.rejects_path is None and not (tmp_path / "donations.rejects.csv").exists()
    assert "would be loaded" in report.summary
    assert counts(session) == before
    with pytest.raises(InvalidImportFile):
        import_(session, "donations", path, dry_run=True)
    # The audit chain goes on where it was before the dry runs, and the real import is not "already imported".
    make_establishment(session)
    assert import_(session, "donations", path, skip_invalid=True).loaded == 1
    assert audit.verify(session).ok
