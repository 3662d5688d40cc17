"""plasmatrace import: loading donors, donations, results and pool members from CSV files, on both engines."""

from __future__ import annotations

import csv
import gc
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import ACTOR, NOW, bulk_units, make_din, make_donor, make_establishment, make_unit
from traceability import audit
from traceability.errors import Conflict, ExitCode, InvalidImportFile, InvalidInput
from traceability.identifiers import din_check_character
from traceability.importers import load
from traceability.importers.load import ImportKind, import_file
from traceability.models import (
    AuditEvent,
    Deferral,
    Donation,
    Donor,
    Establishment,
    Marker,
    PoolMember,
    ResultValue,
    TestResult,
    UnitStatus,
)
from traceability.services import pools

DONATIONS_HEADER = "unit_number,donor_code,collected_at,volume_ml\n"
RESULTS_HEADER = "unit_number,marker,result,tested_at\n"
T0 = (NOW - timedelta(days=20)).isoformat()


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def counts(session: Session) -> dict[str, int]:
    models = {
        "donors": Donor,
        "donations": Donation,
        "results": TestResult,
        "members": PoolMember,
        "events": AuditEvent,
        "deferrals": Deferral,
    }
    return {name: session.execute(select(func.count()).select_from(m)).scalar_one() for name, m in models.items()}


def import_(session: Session, kind: ImportKind | str, path: Path, **options: object) -> load.ImportReport:
    return import_file(session, kind, path, actor=ACTOR, **options)  # type: ignore[arg-type]


@pytest.fixture(name="site")
def site_fixture(session: Session) -> str:
    return make_establishment(session, code="SITE-1")


@pytest.fixture(name="donor_code")
def donor_code_fixture(session: Session, site: str) -> str:
    return make_donor(session, establishment=site, donor_code="D-0001").donor_code


# --- clean imports of each kind ---------------------------------------------------------------------------------


def test_a_donors_file_loads_every_row_and_names_its_import_event(session: Session, site: str, tmp_path: Path) -> None:
    path = write(
        tmp_path, "donors.csv", f"establishment,donor_code,registered_on\n{site},D-1,2025-03-01\n{site},D-2,\n"
    )

    report = import_(session, ImportKind.DONORS, path)

    assert (report.rows, report.loaded, report.already_present, report.rejected) == (2, 2, 0, 0)
    assert not report.already_imported and not report.dry_run and report.problems == []
    event = session.execute(select(AuditEvent).where(AuditEvent.seq == report.event_seq)).scalar_one()
    assert (event.action, event.entity_type, event.entity_key) == ("import.donors", "import", "donors.csv")
    assert report.sha256 in (event.new_values or "")
    rows = session.execute(
        select(Donor.donor_code, Donor.registered_on, Donor.import_event_id, Establishment.code)
        .join(Establishment)
        .where(Donor.donor_code.in_(["D-1", "D-2"]))
        .order_by(Donor.donor_code)
    ).all()
    assert [(r[0], r[1] and r[1].isoformat(), r[2], r[3]) for r in rows] == [
        ("D-1", "2025-03-01", event.id, site),
        ("D-2", None, event.id, site),
    ]
    completed = session.execute(select(AuditEvent).where(AuditEvent.action == "import.donors.completed")).scalar_one()
    assert '"loaded":2' in (completed.new_values or "")
    assert audit.verify(session).ok


def test_a_donations_file_stores_canonical_unit_numbers_and_defaults_the_establishment(
    session: Session, site: str, donor_code: str, tmp_path: Path
) -> None:
    other = make_establishment(session, code="SITE-2")
    path = write(
        tmp_path,
        "donations.csv",
        "\ufeff"
        + (
            "unit_number,donor_code,collected_at,volume_ml,establishment,plasma_kind,frozen_at\r\n"
            f"G123417654321A,{donor_code},2026-05-01T09:30:00+02:00,750,,,\r\n"
            f"=G12341765432200,{donor_code},2026-05-08T09:30:00,690,{other},recovered,2026-05-08T11:00:00Z\r\n"
            f"G1234 17 654323,{donor_code},2026-05-15,0,,SOURCE,\r\n"
        ),
    )

    report = import_(session, "donations", path)

    assert (report.rows, report.loaded) == (3, 3)
    units = {u.unit_number: u for u in session.execute(select(Donation)).scalars()}
    assert set(units) == {"G123417654321", "G123417654322", "G123417654323"}
    first, second = units["G123417654321"], units["G123417654322"]
    assert first.collected_at.isoformat() == "2026-05-01T07:30:00+00:00"
    assert first.volume_ml == 750 and first.plasma_kind == "source" and first.status == UnitStatus.IN_INVENTORY
    site_ids = dict(session.execute(select(Establishment.code, Establishment.id)).all())
    assert first.establishment_id == site_ids[site]
    assert second.establishment_id == site_ids[other] and second.flag == "00" and second.plasma_kind == "recovered"
    assert {u.import_event_id for u in units.values()} == {
        session.execute(select(AuditEvent.id).where(AuditEvent.seq == report.event_seq)).scalar_one()
    }


def test_a_results_file_records_results_for_units_of_an_earlier_donations_file(
    session: Session, site: str, tmp_path: Path
) -> None:
    donors_file = write(tmp_path, "donors.csv", f"donor_code,establishment\nD-10,{site}\nD-11,{site}\n")
    donations_file = write(
        tmp_path, "donations.csv", DONATIONS_HEADER + f"A999926000001,D-10,{T0},750\nA999926000002,D-11,{T0},700\n"
    )
    results_file = write(
        tmp_path,
        "results.csv",
        "unit_number,marker,result,tested_at,method,lab,value,unit\n"
        f"A999926000001,hbsag,NR,{NOW.isoformat()},serology,{site},,\n"
        f"A999926000001,hiv-rna,negative,{NOW.isoformat()},nat,,0.5,IU/mL\n"
        f"A999926000002,anti-hcv,nonreactive,{NOW.isoformat()},,,,\n",
    )

    assert import_(session, "donors", donors_file).loaded == 2
    assert import_(session, "donations", donations_file).loaded == 2
    report = import_(session, "results", results_file)

    assert (report.loaded, report.reactive) == (3, [])
    results = session.execute(
        select(
            Donation.unit_number,
            TestResult.marker,
            TestResult.version,
            TestResult.result,
            TestResult.value,
            TestResult.value_unit,
            TestResult.method,
        )
        .join(Donation)
        .order_by(Donation.unit_number, TestResult.marker)
    ).all()
    assert [tuple(r) for r in results] == [
        ("A999926000001", Marker.HBSAG, 1, ResultValue.NONREACTIVE, None, None, "serology"),
        ("A999926000001", Marker.HIV_RNA, 1, ResultValue.NONREACTIVE, 0.5, "IU/mL", "nat"),
        ("A999926000002", Marker.ANTI_HCV, 1, ResultValue.NONREACTIVE, None, None, None),
    ]
    assert audit.verify(session).ok


def test_a_pool_members_file_adds_eligible_units_to_their_pools(session: Session, tmp_path: Path) -> None:
    units = bulk_units(session, donors_count=3, units_per_donor=2)
    pools.create_pool(session, pool_number="P-A", product="ivig", actor=ACTOR)
    pools.create_pool(session, pool_number="P-B", product="albumin", actor=ACTOR)
    path = write(
        tmp_path,
        "members.csv",
        "unit_number,pool_number\n"
        + "".join(f"{u},P-A\n" for u in units[:4])
        + "".join(f"{u},P-B\n" for u in units[4:]),
    )

    report = import_(session, ImportKind.POOL_MEMBERS, path)

    assert (report.rows, report.loaded, report.rejected) == (6, 6, 0)
    event_id = session.execute(select(AuditEvent.id).where(AuditEvent.seq == report.event_seq)).scalar_one()
    members = session.execute(select(PoolMember.import_event_id, func.count()).group_by(PoolMember.import_event_id))
    assert dict(members.all()) == {event_id: 6}
    statuses = session.execute(select(Donation.status).where(Donation.unit_number.in_(units))).scalars().all()
    assert set(statuses) == {UnitStatus.POOLED}


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


# --- reactive results ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [load.CHUNK_ROWS, 1], ids=["one-chunk", "acted-on-after-its-chunk-is-written"])
def test_a_reactive_result_in_a_results_file_rejects_the_unit_defers_the_donor_and_interdicts(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    # With one row per chunk, the reactive row's chunk is written (on PostgreSQL by the writing thread) while the
    # next is checked: the consequences follow once it is written.
    monkeypatch.setattr(load, "CHUNK_ROWS", chunk_rows)
    donor = make_donor(session)
    earlier = make_unit(session, donor=donor, collected_at=NOW - timedelta(days=120))
    latest = make_unit(session, donor=donor, collected_at=NOW - timedelta(days=10), panel=None)
    other = make_unit(session, donor=make_donor(session), collected_at=NOW - timedelta(days=10), panel=None)
    path = write(
        tmp_path,
        "results.csv",
        RESULTS_HEADER
        + f"{latest.unit_number},anti-hiv,R,{(NOW - timedelta(days=8)).isoformat()}\n"
        + f"{other.unit_number},anti-hiv,NR,{(NOW - timedelta(days=8)).isoformat()}\n",
    )

    report = import_(session, "results", path)

    assert report.reactive == [latest.unit_number] and report.loaded == 2
    statuses = dict(session.execute(select(Donation.unit_number, Donation.status)).all())
    assert statuses[latest.unit_number] == UnitStatus.REJECTED
    assert statuses[earlier.unit_number] == UnitStatus.INTERDICTED
    assert statuses[other.unit_number] == UnitStatus.IN_INVENTORY
    deferral = session.execute(select(Deferral).where(Deferral.donor_id == donor.id)).scalar_one()
    assert deferral.ends_on is None and "reactive anti-hiv" in deferral.reason
    actions = session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars().all()
    assert actions[-1] == "import.results.completed" and "donation.rejected" in actions
    assert "result.added" not in actions[actions.index("import.results") :]
    assert audit.verify(session).ok


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
