"""Import files without a database: the row models of each kind and the CSV reader that numbers the rows."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from traceability.identifiers import UnitScheme
from traceability.importers import readers
from traceability.importers.donations import DonationRow
from traceability.importers.donors import DonorRow
from traceability.importers.load import ImportReport, default_rejects_path
from traceability.importers.pool_members import PoolMemberRow
from traceability.importers.readers import MAX_CELL_CHARS, RecordStream, Resume, read_records
from traceability.importers.registry import SPECS, ImportKind, parse_row
from traceability.importers.results import ResultRow
from traceability.importers.spec import Columns, RowParser, RowProblem
from traceability.models import Marker, PlasmaKind, ResultValue, TestMethod

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
COLUMNS = {kind: spec.columns for kind, spec in SPECS.items()}


def cells(kind: ImportKind, **given: str) -> dict[str, str | None]:
    """Cells as the reader hands them over: every known column, blank ones None."""
    return {column: (given.get(column) or None) for column in COLUMNS[kind].known}


def problems_of(kind: ImportKind, **given: str) -> list[tuple[str, str]]:
    row, problems = parse_row(kind, 7, cells(kind, **given), now=NOW)
    assert row is None
    assert all(p.line == 7 for p in problems)
    return [(p.field, p.message) for p in problems]


# --- rows ----------------------------------------------------------------------------------------------------------


def test_a_donor_row_has_its_code_establishment_and_optional_registration_date() -> None:
    row, problems = parse_row(
        ImportKind.DONORS,
        2,
        cells(ImportKind.DONORS, donor_code="D-1", establishment="C1", registered_on="2025-03-01"),
        now=NOW,
    )
    assert problems == [] and row == DonorRow(2, "D-1", "C1", date(2025, 3, 1))
    row, _ = parse_row(ImportKind.DONORS, 3, cells(ImportKind.DONORS, donor_code="D-2", establishment="C1"), now=NOW)
    assert isinstance(row, DonorRow) and row.registered_on is None and row.key == "D-2"


def test_a_donation_row_keeps_the_canonical_unit_number_and_reads_times_in_utc() -> None:
    row, problems = parse_row(
        ImportKind.DONATIONS,
        5,
        cells(
            ImportKind.DONATIONS,
            unit_number="=G12341765432170",
            donor_code="D-1",
            collected_at="2026-05-01T09:30:00+02:00",
            volume_ml="750",
            plasma_kind="Recovered",
            frozen_at="2026-05-01T08:00:00Z",
        ),
        now=NOW,
    )
    assert problems == []
    assert isinstance(row, DonationRow)
    assert (row.unit_number, row.unit.scheme, row.unit.flag) == ("G123417654321", UnitScheme.ISBT128, "70")
    assert row.collected_at == datetime(2026, 5, 1, 7, 30, tzinfo=UTC)
    assert (row.volume_ml, row.plasma_kind, row.establishment) == (750, PlasmaKind.RECOVERED, None)
    assert row.key == "G123417654321" and row.line == 5


def test_a_time_without_an_offset_is_utc_and_a_bare_date_is_midnight() -> None:
    row, _ = parse_row(
        ImportKind.DONATIONS,
        2,
        cells(
            ImportKind.DONATIONS, unit_number="G123417654321A", donor_code="D", collected_at="2026-05-01", volume_ml="0"
        ),
        now=NOW,
    )
    assert isinstance(row, DonationRow) and row.collected_at == datetime(2026, 5, 1, tzinfo=UTC) and row.volume_ml == 0


def test_a_result_row_accepts_the_usual_spellings_of_a_result() -> None:
    for text, expected in [
        ("NR", ResultValue.NONREACTIVE),
        ("negative", ResultValue.NONREACTIVE),
        ("Non-Reactive", ResultValue.NONREACTIVE),
        ("R", ResultValue.REACTIVE),
        ("positive", ResultValue.REACTIVE),
        ("invalid", ResultValue.INVALID),
    ]:
        row, problems = parse_row(
            ImportKind.RESULTS,
            2,
            cells(
                ImportKind.RESULTS,
                unit_number="G123417654321",
                marker="HBsAg",
                result=text,
                tested_at="2026-05-02T10:00:00Z",
            ),
            now=NOW,
        )
        assert problems == [] and isinstance(row, ResultRow)
        assert (row.marker, row.result, row.method, row.lab, row.value) == (Marker.HBSAG, expected, None, None, None)


def test_a_quantitative_result_has_a_method_lab_value_and_unit() -> None:
    row, problems = parse_row(
        ImportKind.RESULTS,
        2,
        cells(
            ImportKind.RESULTS,
            unit_number="G123417654321",
            marker="b19-dna",
            result="NR",
            tested_at="2026-05-02",
            method="NAT",
            lab="LAB-1",
            value="1,250.5",
            unit="IU/mL",
        ),
        now=NOW,
    )
    assert problems == [] and isinstance(row, ResultRow)
    assert (row.method, row.lab, row.value, row.value_unit) == (TestMethod.NAT, "LAB-1", 1250.5, "IU/mL")
    assert row.key == ("G123417654321", Marker.B19_DNA, datetime(2026, 5, 2, tzinfo=UTC))


def test_a_pool_member_row_is_keyed_by_its_unit() -> None:
    row, problems = parse_row(
        ImportKind.POOL_MEMBERS,
        2,
        cells(ImportKind.POOL_MEMBERS, pool_number="P-1", unit_number="G1234 17 654321 A"),
        now=NOW,
    )
    assert problems == [] and row == PoolMemberRow(2, "P-1", "G123417654321") and row.key == "G123417654321"


def test_every_bad_cell_of_a_row_is_reported_at_once() -> None:
    found = problems_of(
        ImportKind.DONATIONS,
        unit_number="G123417654321B",
        donor_code="D 1",
        collected_at="yesterday",
        volume_ml="-5",
        plasma_kind="fresh",
    )
    assert [column for column, _ in found] == ["unit_number", "donor_code", "collected_at", "volume_ml", "plasma_kind"]
    messages = dict(found)
    assert messages["unit_number"] == (
        "Unit number 'G123417654321B' is invalid: check character B does not match A for DIN G123417654321"
    )
    assert messages["donor_code"] == "donor code 'D 1' contains spaces or control characters."
    assert messages["collected_at"].startswith("time 'yesterday' is not an ISO 8601 time")
    assert messages["volume_ml"] == "volume (mL) -5 must be zero or more."
    assert messages["plasma_kind"] == "plasma kind 'fresh' is not one of: source, recovered."


def test_a_blank_required_cell_is_empty_and_a_blank_optional_one_is_null() -> None:
    assert problems_of(ImportKind.DONATIONS, unit_number="G123417654321", collected_at="2026-05-01", volume_ml="1") == [
        ("donor_code", "is empty; a value is required.")
    ]
    row, _ = parse_row(
        ImportKind.DONATIONS,
        2,
        cells(
            ImportKind.DONATIONS, unit_number="G123417654321", donor_code="D", collected_at="2026-05-01", volume_ml="1"
        ),
        now=NOW,
    )
    assert isinstance(row, DonationRow) and (row.establishment, row.plasma_kind, row.frozen_at) == (None, None, None)


def test_a_cell_the_reader_could_not_use_is_not_reported_twice() -> None:
    given = cells(ImportKind.DONORS, establishment="C1")
    del given["donor_code"]  # too long: the reader already said so
    row, problems = parse_row(ImportKind.DONORS, 2, given, now=NOW)
    assert row is None and problems == []


@pytest.mark.parametrize(
    ("kind", "given", "column", "message"),
    [
        (
            ImportKind.DONORS,
            {"donor_code": "D", "establishment": "C", "registered_on": "2025-02-30"},
            "registered_on",
            "date '2025-02-30' is not a date of the form YYYY-MM-DD.",
        ),
        (
            ImportKind.DONORS,
            {"donor_code": "D", "establishment": "C", "registered_on": "2027-01-01"},
            "registered_on",
            "2027-01-01 is in the future.",
        ),
        (
            ImportKind.DONORS,
            {"donor_code": "D" * 41, "establishment": "C"},
            "donor_code",
            f"donor code {'D' * 40!r}... is longer than 40 characters.",
        ),
        (
            ImportKind.DONATIONS,
            {"unit_number": "G123417654321", "donor_code": "D", "collected_at": "2026-07-01", "volume_ml": "1"},
            "collected_at",
            "2026-07-01T00:00:00+00:00 is in the future.",
        ),
        (
            ImportKind.DONATIONS,
            {
                "unit_number": "G123417654321",
                "donor_code": "D",
                "collected_at": "2026-05-01T10:00Z",
                "volume_ml": "1",
                "frozen_at": "2026-05-01T09:59Z",
            },
            "frozen_at",
            "2026-05-01T09:59:00+00:00 is before the collection at 2026-05-01T10:00:00+00:00.",
        ),
        (
            ImportKind.DONATIONS,
            {"unit_number": "G123417654321", "donor_code": "D", "collected_at": "2026-05-01", "volume_ml": "7.5"},
            "volume_ml",
            "volume (mL) '7.5' is not a whole number.",
        ),
        (
            ImportKind.DONATIONS,
            {"unit_number": "GO23417654321", "donor_code": "D", "collected_at": "2026-05-01", "volume_ml": "1"},
            "unit_number",
            "Unit number 'GO23417654321' is invalid: GO23417654321 is not a valid DIN: character 2 'O' must be A-N, P-Z or "
            "0-9; an ISBT 128 DIN is 13 characters such as G123417654321 (A-N, P-Z or 1-9; two of A-N, P-Z or 0-9; then 10 "
            "digits), optionally followed by 2 flag characters and/or the keyboard check character, or scanned as "
            "=G12341765432100",
        ),
        (
            ImportKind.RESULTS,
            {"unit_number": "G123417654321", "marker": "hiv", "result": "NR", "tested_at": "2026-05-01"},
            "marker",
            "marker 'hiv' is not one of: hbsag, anti-hiv, anti-hcv, hiv-rna, hcv-rna, hbv-dna, hav-rna, b19-dna, "
            "syphilis.",
        ),
        (
            ImportKind.RESULTS,
            {"unit_number": "G123417654321", "marker": "hbsag", "result": "weak", "tested_at": "2026-05-01"},
            "result",
            "result 'weak' is not one of: nonreactive (NR, non-reactive, negative), reactive (R, positive), invalid.",
        ),
        (
            ImportKind.RESULTS,
            {
                "unit_number": "G123417654321",
                "marker": "hbsag",
                "result": "R",
                "tested_at": "2026-05-01",
                "method": "pcr",
            },
            "method",
            "method 'pcr' is not one of: serology, nat.",
        ),
        (
            ImportKind.RESULTS,
            {
                "unit_number": "G123417654321",
                "marker": "hbsag",
                "result": "R",
                "tested_at": "2026-05-01",
                "value": "-1",
                "unit": "IU/mL",
            },
            "value",
            "value -1 is negative.",
        ),
        (
            ImportKind.RESULTS,
            {
                "unit_number": "G123417654321",
                "marker": "hbsag",
                "result": "R",
                "tested_at": "2026-05-01",
                "value": "nan",
                "unit": "IU/mL",
            },
            "value",
            "value 'nan' is not a finite number.",
        ),
        (
            ImportKind.RESULTS,
            {
                "unit_number": "G123417654321",
                "marker": "hbsag",
                "result": "R",
                "tested_at": "2026-05-01",
                "unit": "IU/mL",
            },
            "value",
            "is empty; a quantitative result needs both value and unit.",
        ),
        (
            ImportKind.RESULTS,
            {
                "unit_number": "G123417654321",
                "marker": "hbsag",
                "result": "R",
                "tested_at": "2026-05-01",
                "value": "3",
                "unit": "x" * 21,
            },
            "unit",
            f"unit {'x' * 20!r}... is longer than 20 characters.",
        ),
        (
            ImportKind.POOL_MEMBERS,
            {"pool_number": "P\t1", "unit_number": "G123417654321"},
            "pool_number",
            "pool number 'P\\t1' contains spaces or control characters.",
        ),
    ],
)
def test_a_bad_cell_is_named_with_its_column_and_what_is_wrong(
    kind: ImportKind, given: dict[str, str], column: str, message: str
) -> None:
    assert problems_of(kind, **given) == [(column, message)]


def test_a_problem_renders_as_file_line_column_message() -> None:
    assert RowProblem(12, "volume_ml", "is negative.").render("in/d.csv") == "in/d.csv:12: volume_ml: is negative."


# --- reader ----------------------------------------------------------------------------------------------------------


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "file.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def scan(path: Path, columns: Columns) -> RecordStream:
    """The whole file read through: its SHA-256, data rows, header and the problems that stop the whole file."""
    stream = read_records(path, columns)
    for _ in stream:
        pass
    return stream


def rendered(path: Path, kind: ImportKind = ImportKind.DONATIONS) -> list[str]:
    return [p.render("f") for p in scan(path, COLUMNS[kind]).problems]


def test_the_scan_hashes_the_bytes_and_counts_data_rows_not_lines(tmp_path: Path) -> None:
    content = ('\ufeffDonor_Code , ESTABLISHMENT\r\n"D-1",C1\r\n\r\n"D-\n2",C1\r\n,\r\n').encode()
    path = write(tmp_path, content)

    first = scan(path, COLUMNS[ImportKind.DONORS])

    assert first.problems == [] and first.rows == 2 and first.header == ["donor_code", "establishment"]
    assert first.sha256 == hashlib.sha256(content).hexdigest()
    stream = read_records(path, COLUMNS[ImportKind.DONORS])
    records = list(stream)
    assert [(r.line, r.cells["donor_code"]) for r in records] == [(2, "D-1"), (4, "D-\n2")]
    assert records[0].cells == {"donor_code": "D-1", "establishment": "C1", "registered_on": None}
    assert stream.sha256 == first.sha256


def test_columns_may_come_in_any_order_and_the_rejects_columns_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "problem,volume_ml,line,collected_at,donor_code,unit_number\nold,1,9,2026-05-01,D,G1\n")
    records = list(read_records(path, COLUMNS[ImportKind.DONATIONS]))
    assert records[0].cells["unit_number"] == "G1" and records[0].cells["volume_ml"] == "1"
    assert "line" not in records[0].cells and records[0].problems == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"",
            "f:1: file: is empty; expected a header row with the columns unit_number, donor_code, collected_at, "
            "volume_ml (optional: establishment, plasma_kind, frozen_at).",
        ),
        (b"\xef\xbb\xbf\r\n", "f:1: file: is empty"),
        ("unit_number,donor_code\n".encode("utf-16"), "f:1: file: is UTF-16 encoded"),
        (
            b"unit_number,donor_code,collected_at,volume_ml,colour,size\n",
            "f:1: header: unknown columns colour, size; expected a header row with the columns unit_number",
        ),
        (b"unit_number,collected_at\n", "f:1: header: missing required columns donor_code, volume_ml"),
        (b"unit_number;donor_code;collected_at;volume_ml\n", "f:1: header: columns are separated by ';'"),
        (b"unit_number,donor_code,,collected_at,volume_ml\n", "f:1: header: column 3 has no name"),
        (b"unit_number,donor_\xe9,collected_at,volume_ml\n", "f:1: header: is not valid UTF-8"),
        (
            b'unit_number,donor_code,collected_at,volume_ml\nG1,"D\n',
            "f:2: row: a quoted field that starts on this line is never closed",
        ),
        (
            b'unit_number,donor_code,collected_at,volume_ml\nG1,D,"2026"x,1\nG2,D,2026-05-01,1\n',
            "f:2: row: a quoted field has text after its closing quote",
        ),
    ],
)
def test_a_file_that_cannot_be_read_as_a_whole_is_reported_by_the_scan(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    found = rendered(write(tmp_path, content))
    assert any(p.startswith(expected) for p in found), found


def test_an_unclosed_quote_stops_reading_when_the_row_grows_too_long(tmp_path: Path) -> None:
    path = write(tmp_path, "unit_number,donor_code,collected_at,volume_ml\n" + 'G1,"D,x,1\n' + "G2,D,x,1\n" * 20_000)
    assert rendered(path) == [
        "f:2: row: runs past 65,536 characters (to line 14,565) without ending; a quoted field is probably never "
        "closed, or this is not a CSV file. Reading stopped here."
    ]


@pytest.mark.parametrize("newline", ["\n", ""])
def test_a_line_too_long_for_a_row_stops_reading(tmp_path: Path, newline: str) -> None:
    path = write(tmp_path, "unit_number,donor_code,collected_at,volume_ml\nG1,D,x,1\n" + "y," * 300_000 + newline)
    found = rendered(path)
    assert len(found) == 1 and found[0].startswith("f:3: row: runs past 65,536 characters (to line 3)"), found


@pytest.mark.parametrize("block", [1, 2, 3, 7, 16, 61, 4096])
def test_records_read_in_small_blocks_are_the_records_read_in_one(
    tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = (
        b"\xef\xbb\xbfunit_number,donor_code,collected_at,volume_ml\r\n"
        b"G1,D-1,2026-05-01,1\r\n"
        b'G2,"two\nlines \xc3\xa9",2026-05-01,1\n'
        b"\n"
        b"G3,D-\xe9,2026-05-01,1\n"
        b'G4,"x\x00\n\x00y",2026-05-01,1\n'
        b"G5,D,2026-05-01\n"
        b'G6,"D"x,2026-05-01,1\n'
        b"G7,D-\xe2\x82\xac,2026-05-01,1"
    )
    path = write(tmp_path, content)

    def read() -> tuple[list[tuple[object, ...]], list[RowProblem], str]:
        stream = read_records(path, COLUMNS[ImportKind.DONATIONS])
        records = [(r.line, r.fields, r.cells, r.problems, r.offset) for r in stream]
        return records, stream.problems, stream.sha256

    whole = read()
    monkeypatch.setattr(readers, "_BLOCK_BYTES", block)
    assert read() == whole
    records, problems, sha256 = whole
    assert sha256 == hashlib.sha256(content).hexdigest()
    assert [line for line, *_ in records] == [2, 3, 6, 7, 9, 11]
    assert [content[offset:].split(b",")[0] for *_, offset in records] == [b"G1", b"G2", b"G3", b"G4", b"G5", b"G7"]
    assert [p.line for p in problems] == [10]
    resumed = read_records(
        path,
        COLUMNS[ImportKind.DONATIONS],
        Resume(records[2][4], 6, ("unit_number", "donor_code", "collected_at", "volume_ml")),
    )
    assert [r.line for r in resumed] == [6, 7, 9, 11]


def test_a_header_only_file_has_no_rows_and_no_problems(tmp_path: Path) -> None:
    first = scan(write(tmp_path, "unit_number,donor_code,collected_at,volume_ml\n"), COLUMNS[ImportKind.DONATIONS])
    assert (first.rows, first.problems) == (0, [])


def test_row_problems_found_while_reading_carry_the_physical_line(tmp_path: Path) -> None:
    long_code = "D" * (MAX_CELL_CHARS + 1)
    content = (
        b"unit_number,donor_code,collected_at,volume_ml\n"
        b"G1,D-\xe9,2026-05-01,1\n"
        b'G2,"two\nlines\x00",2026-05-01,1\n'
        b"G3,D,2026-05-01\n"
        b"G4,D,2026-05-01,1,extra\n" + f"G5,{long_code},2026-05-01,1\n".encode()
    )
    path = write(tmp_path, content)
    assert scan(path, COLUMNS[ImportKind.DONATIONS]).problems == []

    records = list(read_records(path, COLUMNS[ImportKind.DONATIONS]))

    found = [(r.line, [p.render("f") for p in r.problems]) for r in records]
    assert found == [
        (
            2,
            [
                "f:2: row: is not valid UTF-8 (byte 0xE9 at byte 6 of the line); save the file as UTF-8 (in a "
                "spreadsheet: CSV UTF-8)."
            ],
        ),
        (
            3,
            [
                "f:4: row: contains a NUL byte (byte 6 of the line); a CSV file has none, so this line is probably "
                "damaged or the file is not plain text."
            ],
        ),
        (
            5,
            [
                "f:5: row: has 3 fields; the header has 4 (unit_number, donor_code, collected_at, volume_ml). Check "
                "the commas and quotes on this line."
            ],
        ),
        (
            6,
            [
                "f:6: row: has 5 fields; the header has 4 (unit_number, donor_code, collected_at, volume_ml). Check "
                "the commas and quotes on this line."
            ],
        ),
        (7, [f"f:7: donor_code: is {MAX_CELL_CHARS + 1:,} characters long; at most 1,000 are accepted."]),
    ]
    assert records[0].cells["donor_code"] == "D-\ufffd" and records[1].cells["donor_code"] == "two\nlines"
    assert records[2].cells == {} and "donor_code" not in records[4].cells


# --- report ---------------------------------------------------------------------------------------------------------


def report(**overrides: object) -> ImportReport:
    values: dict[str, object] = dict(
        kind=ImportKind.DONATIONS,
        path="d.csv",
        sha256="ab" * 32,
        rows=10,
        loaded=7,
        already_present=2,
        rejected=1,
        problems=[],
        problem_count=1,
        rejects_path="d.rejects.csv",
        dry_run=False,
        already_imported=False,
        event_seq=41,
        reactive=[],
    )
    values.update(overrides)
    return ImportReport(**values)  # type: ignore[arg-type]


def test_the_report_sums_up_what_happened_in_one_sentence() -> None:
    assert report().summary == ("d.csv: 7 of 10 rows loaded, 2 already present, 1 rejected (written to d.rejects.csv).")
    assert report(dry_run=True, rejects_path=None).summary == (
        "d.csv: 7 of 10 rows would be loaded, 2 already present, 1 rejected (dry run: nothing was written)."
    )
    assert report(already_imported=True, loaded=0).summary.startswith("d.csv was already imported (audit event 41")
    assert report(rows=0, loaded=0, already_present=0, rejected=0).summary == (
        "d.csv has a header but no data rows; 0 rows loaded."
    )


def test_rejects_go_beside_the_file() -> None:
    assert default_rejects_path(Path("in/donations.csv")) == Path("in/donations.rejects.csv")
    assert default_rejects_path(Path("in/units")) == Path("in/units.rejects.csv")


# --- the fast path gives what the thorough parser gives ---------------------------------------------------------

_CELL_TEXTS = {
    "unit_number": ["G123417654321", " g123417654321 ", "=G1234176543210012", "G123417654322", "G12341765432", ""],
    "donor_code": ["D-1", "D 1", "D\u00a01", "D" * 41, ""],
    "establishment": ["C1", "C 1", ""],
    "registered_on": ["2026-05-01", "2026-06-05", "2026-13-01", ""],
    "collected_at": ["2026-05-01T08:00:00-05:00", "2026-05-01", "2026-06-01T13:30:00Z", "2026-07-01", "noon", ""],
    "volume_ml": ["750", "1,250", "0", "-5", "a lot", ""],
    "plasma_kind": ["source", "RECOVERED", "fresh", ""],
    "frozen_at": ["2026-05-01T09:00:00-05:00", "2026-04-30", ""],
    "marker": ["hbsag", "ANTI-HIV", "b19-dna", "hiv", ""],
    "result": ["NR", "reactive", "maybe", ""],
    "tested_at": ["2026-05-02T10:00:00Z", "2026-07-02", "yesterday", ""],
    "method": ["nat", "EIA", "guess", ""],
    "lab": ["LAB-1", "LAB 1", ""],
    "value": ["1,250.5", "-1", "nan", "12", ""],
    "unit": ["IU/mL", "x" * 21, ""],
    "pool_number": ["P-1", "P 1", ""],
    "code": ["H-1", "H 1", ""],
    "name": ["St Mary's Hospital", "bad\x1bname", ""],
    "address": ["1 Main Street, Springfield", "x" * 600, ""],
    "country": ["US", "USA", ""],
}


@pytest.mark.parametrize("kind", list(ImportKind))
def test_the_fast_path_and_the_thorough_parser_agree_on_every_row(
    tmp_path: Path, kind: ImportKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random
    from dataclasses import replace

    rng = random.Random(kind.value)
    columns = list(COLUMNS[kind].known)
    thorough: list[int] = []
    spec = SPECS[kind]
    parse = RowParser(replace(spec, parse=lambda *a: (thorough.append(1), spec.parse(*a))[1]), now=NOW)
    valid = invalid = 0
    for number in range(2_000):
        present = [c for c in columns if c in COLUMNS[kind].required or rng.random() < 0.7]
        texts = [_CELL_TEXTS[c][0] if rng.random() < 0.85 else rng.choice(_CELL_TEXTS[c]) for c in present]
        path = tmp_path / f"{number}.csv"
        path.write_text(",".join(present) + "\n" + ",".join(f'"{t}"' for t in texts) + "\n", encoding="utf-8")
        records = list(read_records(path, COLUMNS[kind]))
        if not records:
            continue  # every cell blank: a blank line, not a row
        expected = parse_row(kind, 2, records[0].cells, now=NOW)
        thorough.clear()
        assert parse(records[0]) == expected, (present, texts)
        if expected[0] is None:
            invalid += 1
        else:
            valid += 1
            assert not thorough, "a valid row went through the thorough parser"
    assert valid > 100 and invalid > 100


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_times_go_to_the_driver_as_the_value_the_column_type_would_send(dialect_name: str) -> None:
    from datetime import timedelta, timezone

    from sqlalchemy.dialects import postgresql, sqlite

    from traceability.db.bulk import driver_converter
    from traceability.models import TestResult

    dialect = sqlite.dialect() if dialect_name == "sqlite" else postgresql.psycopg.dialect()
    column = TestResult.__table__.c.tested_at
    by_type = column.type.dialect_impl(dialect).bind_processor(dialect)
    ours = driver_converter(column, dialect)
    zones = [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
    for value in [datetime(2026, 5, 1, 8, 0, tzinfo=z) for z in zones] + [
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=zones[2]),
        None,
    ]:
        expected = by_type(value) if by_type else value
        if dialect_name == "sqlite" or value is None:
            assert ours(value) == expected, value
        else:  # ISO 8601 text in UTC for PostgreSQL to parse: the same instant as the aware datetime the type sends
            assert ours(value).endswith("+00:00") and datetime.fromisoformat(ours(value)) == expected, value


def test_every_import_kind_has_one_spec_named_as_on_the_command_line() -> None:
    assert list(SPECS) == list(ImportKind)
    for kind, spec in SPECS.items():
        assert spec.name == kind.value
        assert spec.key_column in spec.columns.known
        assert set(spec.columns.required) <= set(spec.columns.known)
