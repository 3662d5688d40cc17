"""The rules of SPEC §4 at the edges DOMAIN §2.11 decides: calendar months on local days, qualification per unit,
the law's floors on the policy, and one declaration per policy key."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from traceability import calendars
from traceability.errors import InvalidInput, InvalidPolicy
from traceability.models import Marker, ResultValue, UnitStatus
from traceability.rules import (
    DEFAULT_POLICY,
    OnReactive,
    Policy,
    UnitFacts,
    eligibility_problems,
    in_lookback_window,
    load_policy,
    lookback_window_starts_on,
    lot_product_problem,
    policy_digest,
    policy_key_names,
    policy_keys,
    qualified_for_unit,
    upstream_product_problems,
)

ROOT = Path(__file__).resolve().parents[2]


# --- calendar months and local days ---------------------------------------------------------------------------------


def test_twelve_calendar_months_back_keep_the_same_day_and_clamp_to_the_month_end() -> None:
    assert calendars.add_months(date(2024, 3, 1), -12) == date(2023, 3, 1)
    assert calendars.add_months(date(2024, 2, 29), -12) == date(2023, 2, 28)
    assert calendars.add_months(date(2025, 8, 31), 6) == date(2026, 2, 28)
    assert calendars.add_months(date(2023, 8, 31), 6) == date(2024, 2, 29)
    assert calendars.add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    assert calendars.shortest_span_days(6) == 181
    assert calendars.shortest_span_days(12) == 365


def test_the_lookback_window_starts_on_the_same_day_twelve_months_before_its_whole_first_day_included() -> None:
    # Last nonreactive donation 2024-03-01 10:00: 365 days before is 2023-03-02 10:00 (2024 holds 29 February), so a
    # unit of 2023-03-02 08:00 fell outside a window counted in hours. Counted in calendar months it is inside.
    starts = lookback_window_starts_on(date(2024, 3, 1), 12)
    assert starts == date(2023, 3, 1)
    assert in_lookback_window(date(2023, 3, 2), starts)
    assert in_lookback_window(date(2023, 3, 1), starts)  # the edge day, whole
    assert not in_lookback_window(date(2023, 2, 28), starts)  # the day before
    assert in_lookback_window(date(1999, 1, 1), None)  # no nonreactive donation: every donation


def test_the_lookback_window_from_29_february_starts_on_28_february_of_the_year_before() -> None:
    starts = lookback_window_starts_on(date(2024, 2, 29), 12)
    assert starts == date(2023, 2, 28)
    assert in_lookback_window(date(2023, 2, 28), starts)
    assert not in_lookback_window(date(2023, 2, 27), starts)


def test_the_eu_six_month_window_is_calendar_months_not_183_days() -> None:
    starts = lookback_window_starts_on(date(2026, 8, 31), 6)
    assert starts == date(2026, 2, 28)
    assert (date(2026, 8, 31) - starts).days == 184  # 183 days would leave 28 February out


def test_local_day_follows_the_collection_centre_not_utc() -> None:
    at = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 20:00 on 1 March in New York
    assert calendars.local_day(at, "America/New_York") == date(2026, 3, 1)
    assert calendars.local_day(at, "UTC") == date(2026, 3, 2)
    assert calendars.local_day(at, "Pacific/Kiritimati") == date(2026, 3, 2)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "EST5EDT ", "../etc/passwd", "Europe/Vienna/x"])
def test_an_unknown_time_zone_is_invalid_input_naming_it(name: str) -> None:
    with pytest.raises(InvalidInput, match="is not an IANA time zone"):
        calendars.check_timezone(name)


# --- qualification per unit -----------------------------------------------------------------------------------------


def test_a_second_clean_donation_six_calendar_months_later_qualifies_the_first_and_one_day_more_does_not() -> None:
    first = date(2026, 1, 15)
    assert qualified_for_unit(first, [date(2026, 7, 15)], 6)
    assert not qualified_for_unit(first, [date(2026, 7, 16)], 6)
    assert qualified_for_unit(date(2026, 7, 15), [first], 6)  # both ways
    assert not qualified_for_unit(first, [], 6)  # an applicant's first unit waits


def test_an_applicant_whose_second_visit_came_200_days_later_never_qualifies_the_first_unit() -> None:
    one, two, three = date(2026, 1, 1), date(2026, 7, 20), date(2026, 8, 19)
    assert not qualified_for_unit(one, [two, three], 6)
    assert qualified_for_unit(two, [one, three], 6)
    assert qualified_for_unit(three, [one, two], 6)


def test_a_donor_away_longer_than_six_months_is_an_applicant_again() -> None:
    history = [date(2023, 1, 10), date(2023, 2, 10), date(2023, 3, 10)]
    back = date(2025, 2, 7)  # 700 days after the last visit
    assert not qualified_for_unit(back, history, 6)
    assert qualified_for_unit(back, [*history, date(2025, 3, 7)], 6)  # the next visit qualifies it


def test_month_end_edges_of_the_qualification_window() -> None:
    assert qualified_for_unit(date(2025, 8, 31), [date(2026, 2, 28)], 6)
    assert not qualified_for_unit(date(2025, 8, 31), [date(2026, 3, 1)], 6)
    assert qualified_for_unit(date(2023, 8, 31), [date(2024, 2, 29)], 6)


def _unit(**overrides: object) -> UnitFacts:
    values: dict[str, object] = dict(
        unit_number="A999926000001",
        status=UnitStatus.IN_INVENTORY,
        collected_at=datetime(2026, 1, 10, 9, 30, tzinfo=UTC),
        volume_ml=750,
        current_results={m: ResultValue.NONREACTIVE.value for m in DEFAULT_POLICY.panel},
        donor_code="D-1",
        qualified=True,
        deferral_at_collection=None,
    )
    values.update(overrides)
    return UnitFacts(**values)  # type: ignore[arg-type]


def test_the_hold_end_is_shown_in_the_collection_centres_local_time() -> None:
    now = datetime(2026, 3, 11, 9, 0, tzinfo=UTC)
    problems = eligibility_problems(_unit(timezone="America/New_York"), now=now)
    assert problems == ["inventory hold until 2026-03-11 05:30 America/New_York (60 days)"]


def test_a_unit_held_by_an_open_case_or_of_a_donor_turned_reactive_is_not_eligible() -> None:
    later = datetime(2026, 6, 1, tzinfo=UTC)
    assert eligibility_problems(_unit(open_case="LB-2026-0001"), now=later) == [
        "held by open look-back case LB-2026-0001"
    ]
    turned = eligibility_problems(_unit(donor_reactive="reactive anti-hiv on unit X (2026-05-01)"), now=later)
    assert turned == ["donor D-1 has a reactive result: reactive anti-hiv on unit X (2026-05-01)"]


# --- products -------------------------------------------------------------------------------------------------------


def test_a_lot_names_a_product_the_policy_knows() -> None:
    assert lot_product_problem("ivig", "final", DEFAULT_POLICY) is None
    assert lot_product_problem("fraction-ii-paste", "intermediate", DEFAULT_POLICY) is None
    assert lot_product_problem("ivig", "intermediate", DEFAULT_POLICY) is None
    assert "not a final product" in (lot_product_problem("fraction-ii-paste", "final", DEFAULT_POLICY) or "")
    assert "'snake-oil' is not in the policy" in (
        lot_product_problem("snake-oil", "intermediate", DEFAULT_POLICY) or ""
    )


def test_every_pool_upstream_of_a_final_lot_was_made_for_its_product() -> None:
    assert upstream_product_problems("anti-d", [("P-1", "anti-d")]) == []
    assert upstream_product_problems("anti-d", [("P-1", "anti-d"), ("P-2", "ivig")]) == [
        "pool P-2 was made for ivig, not anti-d"
    ]


# --- the policy: floors, per-marker actions, digest, one declaration per key ---------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("min_donors = 999\n", "min_donors = 999"),
        ("required_panel = []\n", "required_panel = []"),
        ('required_panel = ["hbsag", "anti-hiv"]\n', "required_panel"),
        ("hold_days = 59\n", "hold_days = 59"),
        ("lookback_months = 5\n", "lookback_months = 5"),
        ("qualification_months = 7\n", "qualification_months = 7"),
        ("[clearance]\neffective_log = 0\n", "effective_log = 0"),
        ("[clearance]\neffective_log = 3.99\n", "effective_log = 3.99"),
        ("[clearance]\nenveloped_steps = 0\n", "enveloped_steps = 0"),
        ("[clearance]\nenveloped_steps = 1\n", "enveloped_steps = 1"),
        ("[clearance]\nnon_enveloped_steps = 0\n", "non_enveloped_steps = 0"),
        ("[clearance]\nmin_step_log = 0.5\n", "min_step_log = 0.5"),
        ('[clearance.mechanisms]\ncaprylate = "caprylate"\n', "mechanisms"),
        ('[products.ivig]\npool_tests = ["hbsag", "anti-hiv"]\n', "pool_tests"),
        ("[products.ivig]\nmin_donors = 999\n", "min_donors = 999"),
        ("[products.anti-d]\npool_limits_iu_per_ml = {}\n", "anti-d"),
        ('[products.anti-d]\npool_limits_iu_per_ml = { "b19-dna" = 10001 }\n', "pool_limits_iu_per_ml"),
        ('[markers.anti-hiv]\non_reactive = "reject-unit"\n', "markers.anti-hiv.on_reactive"),
    ],
)
def test_a_policy_that_relaxes_the_law_is_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(InvalidPolicy) as refused:
        load_policy(path)
    assert key in str(refused.value)
    assert refused.value.exit_code == 5


@pytest.mark.parametrize(
    "text",
    [
        "min_donors = 1000\n",
        "hold_days = 60\n",
        "lookback_months = 6\n",
        "qualification_months = 6\n",
        "[clearance]\neffective_log = 4\nenveloped_steps = 2\nnon_enveloped_steps = 1\nmin_step_log = 1\n",
        '[clearance.mechanisms]\nnanofiltration = "heat"\n',  # merging mechanisms is stricter
        '[products.anti-d]\npool_limits_iu_per_ml = { "b19-dna" = 10000 }\n',
    ],
)
def test_a_policy_at_the_law_exactly_is_accepted(tmp_path: Path, text: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    load_policy(path)


def test_a_retired_key_names_its_successor(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text("lookback_days = 365\n")
    with pytest.raises(InvalidPolicy, match="lookback_days is now lookback_months"):
        load_policy(path)


def test_a_folder_as_policy_file_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidPolicy, match="is a folder"):
        load_policy(tmp_path)


def test_syphilis_defers_until_nonreactive_by_default_and_the_panel_always_defers_permanently() -> None:
    assert DEFAULT_POLICY.on_reactive(Marker.SYPHILIS) == OnReactive.DEFER_UNTIL_NONREACTIVE
    assert DEFAULT_POLICY.on_reactive(Marker.ANTI_HIV) == OnReactive.DEFER_PERMANENTLY
    assert DEFAULT_POLICY.on_reactive(Marker.B19_DNA) == OnReactive.REJECT_UNIT


def test_the_policy_digest_changes_with_any_key_and_not_otherwise() -> None:
    assert policy_digest(DEFAULT_POLICY) == policy_digest(Policy())
    assert re.fullmatch("[0-9a-f]{64}", policy_digest(DEFAULT_POLICY))
    assert policy_digest(Policy(hold_days=61)) != policy_digest(DEFAULT_POLICY)


def test_every_policy_key_has_a_meaning_and_a_source() -> None:
    for key in policy_keys(DEFAULT_POLICY):
        assert key.meaning and key.source, key.name


def test_readmes_rule_table_lists_every_policy_key() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Rules and their policy keys") :]
    table = table[: table.index("\n## ", 5)]
    missing = [name for name in policy_key_names() if f"`{name}`" not in table]
    assert missing == []


def test_no_floor_is_left_without_a_limit_in_days_or_months() -> None:
    # The policy counts in calendar months where the law does; no day-based window survives.
    names = policy_key_names()
    assert "lookback_months" in names and "qualification_months" in names
    assert not [n for n in names if n.startswith(("lookback_days", "qualification_window"))]
    assert timedelta(days=DEFAULT_POLICY.hold_days) == timedelta(days=60)
