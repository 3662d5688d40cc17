"""Unit-number parsing: ISBT 128 DINs with their check characters, Codabar and local numbers."""

from __future__ import annotations

import csv
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from traceability.errors import ExitCode, InvalidUnitNumber
from traceability.identifiers import (
    UnitNumber,
    UnitScheme,
    din_check_character,
    din_type3_flag,
    parse_unit_number,
)

VECTORS_CSV = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "isbt128_din_vectors.csv"

# The same rows as the shared file, so the published vectors are checked even where that file is not checked out.
INLINE_VECTORS = [
    ("G123417654321", "A", "70"),
    ("G123498654321", "H", "77"),
    ("A999921123456", "3", "63"),
    ("W000009123456", "G", "76"),
    ("G123489654321", "Y", "94"),
    ("A999917123456", "9", "69"),
    ("A999916123456", "Q", "86"),
]

CHECK_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"


def load_vectors() -> list[tuple[str, str, str]]:
    if not VECTORS_CSV.is_file():
        return INLINE_VECTORS
    with VECTORS_CSV.open(newline="", encoding="utf-8") as handle:
        return [(row["din"], row["check_character"], row["type3_flag"]) for row in csv.DictReader(handle)]


VECTORS = load_vectors()


def refusal(text: str, scheme: UnitScheme | str | None = None) -> InvalidUnitNumber:
    with pytest.raises(InvalidUnitNumber) as caught:
        parse_unit_number(text, scheme)
    return caught.value


def printed(din: str) -> str:
    """The eye-readable grouping used on labels: FIN, year, sequence."""
    return f"{din[:5]} {din[5:7]} {din[7:]}"


def weighted_checksum(din: str) -> int:
    """ST-001 Appendix A.1 written out independently: weights 2^n counted from the right, then (38 - sum % 37) % 37."""
    total = sum(CHECK_ALPHABET.index(ch) * 2 ** (len(din) - i) for i, ch in enumerate(din))
    return (38 - total % 37) % 37


# --- published vectors -----------------------------------------------------------------------------------------


def test_the_vector_file_holds_at_least_the_published_rows() -> None:
    assert {row[0] for row in INLINE_VECTORS} <= {row[0] for row in VECTORS}


@pytest.mark.parametrize(("din", "check", "flag"), VECTORS, ids=[row[0] for row in VECTORS])
class TestPublishedVectors:
    def test_check_character_matches(self, din: str, check: str, flag: str) -> None:
        assert din_check_character(din) == check

    def test_type3_flag_matches(self, din: str, check: str, flag: str) -> None:
        assert din_type3_flag(din) == flag

    def test_the_position_weighted_method_agrees(self, din: str, check: str, flag: str) -> None:
        assert CHECK_ALPHABET[weighted_checksum(din)] == check

    def test_scanned_data_structure_with_type3_flag_is_accepted(self, din: str, check: str, flag: str) -> None:
        assert parse_unit_number(f"={din}{flag}") == UnitNumber(din, UnitScheme.ISBT128, flag)

    def test_din_with_check_character_is_accepted(self, din: str, check: str, flag: str) -> None:
        assert parse_unit_number(din + check) == UnitNumber(din, UnitScheme.ISBT128)

    def test_spaced_printed_form_is_accepted(self, din: str, check: str, flag: str) -> None:
        assert parse_unit_number(f"{printed(din)} {check}") == UnitNumber(din, UnitScheme.ISBT128)

    def test_bare_din_is_accepted(self, din: str, check: str, flag: str) -> None:
        assert parse_unit_number(din) == UnitNumber(din, UnitScheme.ISBT128)

    def test_din_with_flags_and_check_character_is_accepted(self, din: str, check: str, flag: str) -> None:
        assert parse_unit_number(f"{printed(din)} 01 {check}") == UnitNumber(din, UnitScheme.ISBT128, "01")


# --- ISBT 128 forms and refusals -------------------------------------------------------------------------------


def test_a_type3_flag_that_does_not_match_is_refused() -> None:
    error = refusal("=G12341765432171")
    assert error.exit_code == ExitCode.INVALID_INPUT
    assert "=G12341765432171" in str(error)
    assert "Type 3 flag 71 does not match the check value 70 for DIN G123417654321" in str(error)


def test_a_type3_flag_that_does_not_match_is_refused_without_the_equals_sign() -> None:
    assert "check value 70" in str(refusal("G12341765432171"))


def test_the_st001_label_example_keeps_its_flag() -> None:
    unit = parse_unit_number("W0000 09 123456 02 G")
    assert unit == UnitNumber("W000009123456", UnitScheme.ISBT128, "02")
    assert str(unit) == "W000009123456"


def test_the_st001_figure_2_form_with_flag_01_and_check_3_is_accepted() -> None:
    assert parse_unit_number("A9999 21 123456 01 3") == UnitNumber("A999921123456", UnitScheme.ISBT128, "01")


@pytest.mark.parametrize("text", ["G1234 17 654321 A", "A999921123456 3", "A9999211234563", "G123417654321"])
def test_the_printed_and_typed_forms_in_the_brief_are_accepted(text: str) -> None:
    assert parse_unit_number(text).scheme is UnitScheme.ISBT128


def test_a_wrong_check_character_is_refused_and_never_read_as_a_local_number() -> None:
    error = refusal("G123417654321 B")
    assert "G123417654321 B" in str(error)
    assert "check character B does not match A for DIN G123417654321" in str(error)
    assert "does not match A" in str(refusal("G123417654321B"))


def test_flag_and_check_character_problems_are_reported_together() -> None:
    message = str(refusal("G12341765432171B"))
    assert "Type 3 flag 71" in message and "check character B does not match A" in message


@pytest.mark.parametrize("flag", ["97", "98", "99"])
def test_reserved_flags_are_refused(flag: str) -> None:
    assert f"flag {flag} is reserved" in str(refusal(f"=G123417654321{flag}"))


@pytest.mark.parametrize("flag", ["00", "01", "09", "14", "20", "59", "0A", "PY"])
def test_other_flags_are_kept_as_given(flag: str) -> None:
    assert parse_unit_number(f"=G123417654321{flag}").flag == flag


@pytest.mark.parametrize("flag", ["0I", "O0", "Q1", "Z9", "0*"])
def test_characters_outside_the_flag_alphabet_are_refused(flag: str) -> None:
    assert f"flag characters {flag} are not valid" in str(refusal(f"=G123417654321{flag}"))


def test_lower_case_input_is_read_as_upper_case() -> None:
    assert parse_unit_number("g1234 17 654321 a") == UnitNumber("G123417654321", UnitScheme.ISBT128)
    assert parse_unit_number("=g12341765432170").value == "G123417654321"
    assert parse_unit_number("w0000 09 123456 02 g").flag == "02"


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_unit_number("  \tG123417654321A\n").value == "G123417654321"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("=G123417654321", "'=' must be followed by the 13-character DIN and 2 flag characters"),
        ("=G12341765432100A", "not 16 characters"),
        ("=O12341765432100", "character 1 'O' must be A-N, P-Z or 1-9"),
        ("=012341765432100", "character 1 '0' must be A-N, P-Z or 1-9"),
        ("=G12A417654321 00", "character 4 'A' must be a digit"),
    ],
)
def test_a_malformed_scanned_data_structure_is_refused(text: str, problem: str) -> None:
    message = str(refusal(text))
    assert text in message and problem in message


def test_a_din_with_one_mistyped_structural_character_is_refused_not_stored_as_local() -> None:
    message = str(refusal("G1234176543O1A"))  # letter O typed for a zero
    assert "character 12 'O' must be a digit" in message


def test_a_spaced_text_that_is_not_a_din_is_refused_with_the_din_shape() -> None:
    message = str(refusal("G1234 17 5432"))
    assert "spaces are allowed only in a printed ISBT 128 DIN" in message


def test_an_explicit_isbt_scheme_refuses_other_shapes_and_explains_the_din() -> None:
    message = str(refusal("LOT-7", UnitScheme.ISBT128))
    assert "LOT-7" in message and "13 characters such as G123417654321" in message
    assert "character 1 'O'" in str(refusal("O123417654321", "isbt128"))


def test_din_helpers_refuse_malformed_dins() -> None:
    with pytest.raises(InvalidUnitNumber, match="13 characters"):
        din_check_character("G12341765432")
    with pytest.raises(InvalidUnitNumber, match="character 1 'O'"):
        din_type3_flag("O123417654321")
    assert din_check_character("g123417654321") == "A"


DINS_FOR_SUBSTITUTION = ["G123417654321", "A999921123456", "W000009123456", "A999916123456"]


@pytest.mark.parametrize("din", DINS_FOR_SUBSTITUTION)
def test_every_single_character_substitution_is_refused_as_isbt(din: str) -> None:
    valid = din + din_check_character(din)
    for position, original in enumerate(valid):
        for replacement in CHECK_ALPHABET + "-./_#":
            if replacement == original:
                continue
            typo = valid[:position] + replacement + valid[position + 1 :]
            with pytest.raises(InvalidUnitNumber):
                parse_unit_number(typo, UnitScheme.ISBT128)


@pytest.mark.parametrize("din", DINS_FOR_SUBSTITUTION)
def test_every_single_character_substitution_is_refused_by_auto_detection(din: str) -> None:
    valid = din + din_check_character(din)
    for position, original in enumerate(valid):
        for replacement in CHECK_ALPHABET:
            if replacement == original:
                continue
            typo = valid[:position] + replacement + valid[position + 1 :]
            if typo.isdigit() and typo.startswith("0"):
                # 13-16 digits led by 0 cannot be a DIN, so detection reads them as Codabar (documented rule 3).
                assert parse_unit_number(typo).scheme is UnitScheme.CODABAR
                continue
            with pytest.raises(InvalidUnitNumber):
                parse_unit_number(typo)


@pytest.mark.parametrize("din", DINS_FOR_SUBSTITUTION)
def test_every_adjacent_transposition_is_refused(din: str) -> None:
    valid = din + din_check_character(din)
    for position in range(len(valid) - 1):
        if valid[position] == valid[position + 1]:
            continue
        swapped = valid[:position] + valid[position + 1] + valid[position] + valid[position + 2 :]
        with pytest.raises(InvalidUnitNumber):
            parse_unit_number(swapped, UnitScheme.ISBT128)


# --- Codabar and local ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("A1234567B", "1234567"), ("0123456", "0123456"), ("c0123456d", "0123456"), ("123456789012", "123456789012")],
)
def test_codabar_numbers_are_detected_and_lose_their_start_stop_characters(text: str, value: str) -> None:
    assert parse_unit_number(text) == UnitNumber(value, UnitScheme.CODABAR)


def test_leading_zero_digit_strings_up_to_16_are_codabar() -> None:
    assert parse_unit_number("0" * 16).scheme is UnitScheme.CODABAR
    assert parse_unit_number("0" * 17).scheme is UnitScheme.LOCAL


def test_short_digit_strings_are_local_unless_codabar_is_asked_for() -> None:
    assert parse_unit_number("123456") == UnitNumber("123456", UnitScheme.LOCAL)
    assert parse_unit_number("123456", "codabar") == UnitNumber("123456", UnitScheme.CODABAR)


def test_a_din_shaped_digit_string_is_isbt_unless_codabar_is_asked_for() -> None:
    assert parse_unit_number("1234567890123").scheme is UnitScheme.ISBT128
    assert parse_unit_number("1234567890123", UnitScheme.CODABAR) == UnitNumber("1234567890123", UnitScheme.CODABAR)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("A1234567", "both a start and a stop character"),
        ("12-34567", "'-' is not allowed"),
        ("AB", "1-40 digits, not 0"),
        ("1" * 41, "not 41"),
    ],
)
def test_explicit_codabar_refuses_what_is_not_codabar(text: str, problem: str) -> None:
    message = str(refusal(text, "codabar"))
    assert problem in message


@pytest.mark.parametrize("text", ["LOT-2023/01.a", "x", "a_b.c", "Z" * 40, "ABC1234", "A1234567"])
def test_local_numbers_are_kept_exactly(text: str) -> None:
    assert parse_unit_number(text) == UnitNumber(text, UnitScheme.LOCAL)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("LOT 7", "spaces are allowed only in a printed ISBT 128 DIN"),
        ("LOT#7", "character '#' at position 4 is not allowed: only letters, digits and - _ / . are allowed"),
        ("LOT\x007", "control character '\\x00' at position 4"),
        ("LOT\u04107", "non-ASCII character"),
        ("L" * 41, "longer than 40 characters (41)"),
        ("   ", "it is empty"),
        ("", "it is empty"),
    ],
)
def test_invalid_local_numbers_are_refused_with_the_reason(text: str, problem: str) -> None:
    message = str(refusal(text))
    assert problem in message and repr(text.strip() or text) in message


def test_an_explicit_local_scheme_keeps_a_din_lookalike_as_given() -> None:
    assert parse_unit_number("G123417654321B", "local") == UnitNumber("G123417654321B", UnitScheme.LOCAL)


def test_scheme_names_are_accepted_in_any_case_and_unknown_ones_refused() -> None:
    assert parse_unit_number("0123456", "CODABAR").scheme is UnitScheme.CODABAR
    assert parse_unit_number("G123417654321", "ISBT-128").scheme is UnitScheme.ISBT128
    assert "unknown unit-number scheme 'eurocode'" in str(refusal("G123417654321", "eurocode"))


def test_non_text_input_is_refused() -> None:
    with pytest.raises(InvalidUnitNumber):
        parse_unit_number(1234567)  # type: ignore[arg-type]


def test_schemes_are_strings_holding_their_value() -> None:
    assert UnitScheme("isbt128") is UnitScheme.ISBT128
    assert str(UnitScheme.CODABAR) == "codabar" and UnitScheme.LOCAL == "local"


def test_unit_numbers_are_immutable_and_print_their_value() -> None:
    unit = parse_unit_number("=G12341765432170")
    assert str(unit) == "G123417654321" and unit.flag == "70"
    with pytest.raises(FrozenInstanceError):
        unit.value = "X"  # type: ignore[misc]


# --- properties ------------------------------------------------------------------------------------------------

schemes = st.sampled_from([None, *UnitScheme, "isbt128", "codabar", "local"])


@given(text=st.text(max_size=60), scheme=schemes)
def test_parsing_arbitrary_text_raises_nothing_but_invalid_unit_number(text: str, scheme: UnitScheme | None) -> None:
    try:
        unit = parse_unit_number(text, scheme)
    except InvalidUnitNumber:
        return
    assert unit.value and str(unit) == unit.value
    assert parse_unit_number(unit.value, unit.scheme).value == unit.value


@given(text=st.text(alphabet=CHECK_ALPHABET + "=abcxyz -", min_size=12, max_size=18), scheme=schemes)
def test_din_like_text_raises_nothing_but_invalid_unit_number(text: str, scheme: UnitScheme | None) -> None:
    try:
        parse_unit_number(text, scheme)
    except InvalidUnitNumber:
        pass


dins = st.builds(
    lambda first, fin, rest: first + fin + rest,
    st.sampled_from("ABCDEFGHIJKLMNPQRSTUVWXYZ123456789"),
    st.text(alphabet="ABCDEFGHIJKLMNPQRSTUVWXYZ0123456789", min_size=2, max_size=2),
    st.text(alphabet="0123456789", min_size=10, max_size=10),
)
plain_flags = st.one_of(
    st.integers(0, 59).map(lambda n: f"{n:02d}"),
    st.text(alphabet="0123456789ABCDEFGHJKLMNPRSTUVWXY", min_size=2, max_size=2).filter(lambda f: not f.isdigit()),
)


def with_spaces(text: str, gaps: list[bool]) -> str:
    return "".join(ch + (" " if gap else "") for ch, gap in zip(text, gaps, strict=False)).strip()


@given(
    din=dins,
    flag=plain_flags,
    gaps=st.lists(st.booleans(), min_size=16, max_size=16),
    lower=st.booleans(),
)
def test_every_accepted_form_of_a_valid_din_round_trips_to_the_same_value(
    din: str, flag: str, gaps: list[bool], lower: bool
) -> None:
    check, type3 = din_check_character(din), din_type3_flag(din)
    forms = [
        din,
        din + check,
        din + flag,
        din + flag + check,
        din + type3,
        din + type3 + check,
        with_spaces(din + check, gaps),
        with_spaces(din + flag + check, gaps),
        "=" + din + flag,
        "=" + din + type3,
    ]
    for form in forms:
        text = form.lower() if lower else form
        unit = parse_unit_number(text)
        assert (unit.value, unit.scheme) == (din, UnitScheme.ISBT128), text
        assert parse_unit_number(text, UnitScheme.ISBT128) == unit


@given(din=dins)
def test_stdnum_agrees_with_the_position_weighted_st001_method(din: str) -> None:
    checksum = weighted_checksum(din)
    assert din_check_character(din) == CHECK_ALPHABET[checksum]
    assert din_type3_flag(din) == str(60 + checksum)


@given(din=dins, wrong=st.sampled_from(CHECK_ALPHABET))
def test_any_other_check_character_is_refused(din: str, wrong: str) -> None:
    expected = din_check_character(din)
    if wrong == expected:
        return
    message = str(refusal(f"{printed(din)} {wrong}"))
    assert f"check character {wrong} does not match {expected} for DIN {din}" in message
