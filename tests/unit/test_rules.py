"""The rules of SPEC §4 as pure functions, at their boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from traceability.errors import InvalidPolicy, NotEnoughDonors
from traceability.models import Marker, ResultValue, StepMethod, StepOutcome, UnitStatus
from traceability.rules import (
    DEFAULT_POLICY,
    ENVELOPED,
    NON_ENVELOPED,
    PoolTestFacts,
    StepFacts,
    UnitFacts,
    check_pool_composition,
    deferral_covers,
    eligibility_problems,
    load_policy,
    path_clearance,
    pool_release_problems,
)

COLLECTED = datetime(2026, 1, 10, 9, 30, tzinfo=UTC)
PANEL = {m.value: ResultValue.NONREACTIVE.value for m in DEFAULT_POLICY.required_panel}


def unit(**overrides: object) -> UnitFacts:
    values: dict[str, object] = dict(
        unit_number="A999926000001",
        status=UnitStatus.IN_INVENTORY,
        collected_at=COLLECTED,
        volume_ml=750,
        current_results=dict(PANEL),
        donor_code="D-1",
        qualified=True,
        deferral_at_collection=None,
    )
    values.update(overrides)
    return UnitFacts(**values)  # type: ignore[arg-type]


LATER = COLLECTED + timedelta(days=90)


def test_a_fully_tested_held_unit_of_a_qualified_donor_is_eligible() -> None:
    assert eligibility_problems(unit(), now=LATER) == []


def test_the_hold_ends_exactly_60_days_after_collection() -> None:
    ends = COLLECTED + timedelta(days=60)
    assert eligibility_problems(unit(), now=ends) == []
    problems = eligibility_problems(unit(), now=ends - timedelta(seconds=1))
    assert problems == ["inventory hold until 2026-03-11 09:30 UTC (60 days)"]


def test_every_reason_is_listed_for_a_unit_that_fails_all_rules() -> None:
    bad = unit(
        status=UnitStatus.INTERDICTED,
        current_results={"hbsag": "reactive", "anti-hiv": "invalid"},
        qualified=False,
        deferral_at_collection="travel (from 2026-01-01 until 2026-02-01)",
        volume_ml=0,
    )
    problems = eligibility_problems(bad, now=COLLECTED)
    assert len(problems) == 8
    assert problems[0] == "not in inventory: interdicted"
    assert "no result for anti-hcv, hiv-rna, hcv-rna, hbv-dna" in problems[1]
    assert problems[2] == "reactive: hbsag"
    assert problems[3] == "invalid result, retest needed: anti-hiv"
    assert problems[4].startswith("inventory hold until")
    assert "not qualified" in problems[5]
    assert "deferred at collection: travel" in problems[6]
    assert problems[7] == "volume 0 mL is not positive"


def test_a_unit_already_pooled_is_refused_but_expected_when_closing_its_own_pool() -> None:
    pooled = unit(status=UnitStatus.POOLED, already_pooled_in="P-1")
    assert eligibility_problems(pooled, now=LATER) == ["not in inventory: already in pool P-1"]
    assert eligibility_problems(pooled, now=LATER, pooled_ok_in="P-1") == []
    assert eligibility_problems(pooled, now=LATER, pooled_ok_in="P-2") == ["not in inventory: already in pool P-1"]


@pytest.mark.parametrize("missing", [m.value for m in DEFAULT_POLICY.required_panel])
def test_each_marker_of_the_panel_is_required(missing: str) -> None:
    results = {k: v for k, v in PANEL.items() if k != missing}
    assert eligibility_problems(unit(current_results=results), now=LATER) == [
        f"screening incomplete: no result for {missing}"
    ]


def test_a_deferral_covers_from_its_first_day_up_to_but_not_including_its_end() -> None:
    start, end = date(2026, 3, 1), date(2026, 9, 1)
    assert not deferral_covers(start, end, None, date(2026, 2, 28))
    assert deferral_covers(start, end, None, start)
    assert deferral_covers(start, end, None, date(2026, 8, 31))
    assert not deferral_covers(start, end, None, end)
    assert deferral_covers(start, None, None, date(2099, 1, 1))
    assert not deferral_covers(start, None, date(2026, 4, 1), date(2026, 4, 1))


def test_pool_composition_at_999_and_1000_distinct_donors() -> None:
    with pytest.raises(NotEnoughDonors, match=r"Pool P-0042 has 999 distinct donors; 1,000 are required\."):
        check_pool_composition("P-0042", 999, 1000)
    check_pool_composition("P-0042", 1000, 1000)


def test_a_product_may_raise_the_minimum_but_nothing_lowers_it(tmp_path: Path) -> None:
    raised = tmp_path / "raised.toml"
    raised.write_text("[products.ivig]\nmin_donors = 1200\n")
    policy = load_policy(raised)
    assert policy.min_donors_for("ivig") == 1200
    assert policy.min_donors_for("albumin") == 1000
    for text in ("min_donors = 999\n", "[products.ivig]\nmin_donors = 999\n"):
        lowered = tmp_path / "lowered.toml"
        lowered.write_text(text)
        with pytest.raises(InvalidPolicy, match="min_donors = 999 relaxes the law: at least 1,000 distinct donors"):
            load_policy(lowered)


def test_a_policy_file_with_unknown_keys_or_bad_toml_is_refused(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("hold_dayz = 30\n")
    with pytest.raises(InvalidPolicy, match="hold_dayz"):
        load_policy(unknown)
    broken = tmp_path / "broken.toml"
    broken.write_text("hold_days = \n")
    with pytest.raises(InvalidPolicy, match="not valid TOML"):
        load_policy(broken)
    with pytest.raises(InvalidPolicy, match="does not exist"):
        load_policy(tmp_path / "missing.toml")


def test_overrides_keep_the_defaults_they_do_not_name(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("hold_days = 90\n[products.anti-d]\nmin_donors = 1500\n")
    policy = load_policy(path)
    assert policy.hold_days == 90
    assert policy.product("anti-d").pool_limits_iu_per_ml == {Marker.B19_DNA: 10_000.0}
    assert policy.required_panel == DEFAULT_POLICY.required_panel


def _tests(**values: tuple[str, float | None, str | None]) -> dict[str, PoolTestFacts]:
    return {m.replace("_", "-"): PoolTestFacts(m.replace("_", "-"), r, v, u) for m, (r, v, u) in values.items()}


def test_pool_release_needs_every_required_test_passing() -> None:
    ivig = DEFAULT_POLICY.product("ivig")
    assert (
        pool_release_problems(
            _tests(
                hbsag=("nonreactive", None, None),
                anti_hiv=("nonreactive", None, None),
                hcv_rna=("nonreactive", None, None),
            ),
            ivig,
        )
        == []
    )
    problems = pool_release_problems(_tests(hbsag=("reactive", None, None)), ivig)
    assert problems == [
        "hbsag: reactive (version 1)",
        "anti-hiv: no pool test recorded",
        "hcv-rna: no pool test recorded",
    ]


@pytest.mark.parametrize(("value", "ok"), [(10_000.0, True), (10_000.5, False), (10_001.0, False), (0.0, True)])
def test_b19_dna_limit_for_anti_d_is_10000_iu_per_ml(value: float, ok: bool) -> None:
    anti_d = DEFAULT_POLICY.product("anti-d")
    base = dict(
        hbsag=("nonreactive", None, None), anti_hiv=("nonreactive", None, None), hcv_rna=("nonreactive", None, None)
    )
    problems = pool_release_problems(_tests(**base, b19_dna=("reactive", value, "IU/mL")), anti_d)
    assert (problems == []) is ok
    assert pool_release_problems(_tests(**base, b19_dna=("nonreactive", None, None)), anti_d) == [
        "b19-dna: needs a quantitative value in IU/mL or IU/\u00b5L (limit 10,000 IU/mL) (version 1)"
    ]


def step(
    key: str,
    method: StepMethod,
    env: float | None = None,
    non_env: float | None = None,
    outcome: StepOutcome = StepOutcome.COMPLETED,
    open_deviation: bool = False,
) -> StepFacts:
    return StepFacts(key, method, outcome, open_deviation, {ENVELOPED: env, NON_ENVELOPED: non_env})


CLEARANCE = DEFAULT_POLICY.clearance


def test_cumulative_clearance_counts_one_step_per_mechanism_and_ignores_steps_under_1_log() -> None:
    result = path_clearance(
        ["P", "L"],
        [
            step("S1", StepMethod.SOLVENT_DETERGENT, env=6.0),
            step("S2", StepMethod.CAPRYLATE, env=4.5),  # same mechanism as S/D: only the larger counts
            step("S3", StepMethod.LOW_PH, env=0.9),  # under 1 log: not counted
            step("S4", StepMethod.NANOFILTRATION, env=5.0, non_env=4.0),
        ],
        CLEARANCE,
    )
    assert result.cumulative == {ENVELOPED: 11.0, NON_ENVELOPED: 4.0}
    assert result.effective_mechanisms == {
        ENVELOPED: ["lipid-solvent", "size-exclusion"],
        NON_ENVELOPED: ["size-exclusion"],
    }


def test_a_step_of_exactly_1_log_is_not_counted_and_1_01_is_and_4_log_is_effective() -> None:
    result = path_clearance(
        ["P"],
        [step("S1", StepMethod.LOW_PH, env=1.0), step("S2", StepMethod.DRY_HEAT, env=4.0, non_env=3.99)],
        CLEARANCE,
    )
    assert result.cumulative[ENVELOPED] == 4.0
    assert result.effective_mechanisms[ENVELOPED] == ["heat"]
    assert result.effective_mechanisms[NON_ENVELOPED] == []
    counted = path_clearance(["P"], [step("S1", StepMethod.LOW_PH, env=1.01)], CLEARANCE)
    assert counted.cumulative[ENVELOPED] == 1.01


def test_a_failed_step_gives_no_credit_and_both_failed_and_open_deviation_are_problems() -> None:
    result = path_clearance(
        ["P", "L"],
        [
            step("S1", StepMethod.SOLVENT_DETERGENT, env=6, outcome=StepOutcome.FAILED),
            step("S2", StepMethod.NANOFILTRATION, env=5, non_env=5, outcome=StepOutcome.DEVIATION, open_deviation=True),
        ],
        CLEARANCE,
    )
    assert result.effective_mechanisms[ENVELOPED] == ["size-exclusion"]
    assert result.problems == [
        "step S1 (solvent-detergent) failed",
        "step S2 (nanofiltration) has an open deviation",
    ]
