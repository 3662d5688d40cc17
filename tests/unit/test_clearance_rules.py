"""Viral clearance judged on every path without enumerating paths, and pool tests against their limits."""

from __future__ import annotations

import time

import pytest

from traceability.models import Marker, StepMethod, StepOutcome
from traceability.rules import (
    DEFAULT_POLICY,
    ENVELOPED,
    NON_ENVELOPED,
    LotClearance,
    Node,
    PoolTestFacts,
    StepFacts,
    counts_toward_clearance,
    final_lot_clearance_problems,
    iu_per_ml,
    path_clearance,
    pool_release_problems,
    pool_test_problem,
    pool_test_quarantines,
    worst_paths,
)

CLEARANCE = DEFAULT_POLICY.clearance


def step(key: str, method: StepMethod, env: float | None = None, non_env: float | None = None) -> StepFacts:
    return StepFacts(key, method, StepOutcome.COMPLETED, False, {ENVELOPED: env, NON_ENVELOPED: non_env})


@pytest.mark.parametrize(("value", "counted"), [(0.99, False), (1.0, False), (1.01, True), (None, False)])
def test_a_step_counts_only_when_greater_than_min_step_log(value: float | None, counted: bool) -> None:
    assert counts_toward_clearance(value, min_step_log=CLEARANCE.min_step_log) is counted


def _judge(target: Node, inputs: dict[int, list[Node]], steps: dict[Node, list[StepFacts]]) -> list[str]:
    names = {node: f"{node[0][0].upper()}{node[1]}" for node in [target, *(n for v in inputs.values() for n in v)]}
    worst = {
        virus_class: path_clearance([names[n] for n in path], [s for n in path for s in steps.get(n, [])], CLEARANCE)
        for virus_class, path in worst_paths(target, inputs, steps, CLEARANCE).items()
    }
    return final_lot_clearance_problems(LotClearance(worst=worst, step_problems=[]), CLEARANCE)


def test_the_lot_gets_the_worst_path() -> None:
    # L3 <- P1 (S/D 6) and P2 (nothing); L3 itself: nanofiltration 5/5
    inputs: dict[int, list[Node]] = {3: [("pool", 1), ("pool", 2)]}
    steps = {
        ("pool", 1): [step("P1-S1", StepMethod.SOLVENT_DETERGENT, env=6)],
        ("lot", 3): [step("L3-S1", StepMethod.NANOFILTRATION, env=5, non_env=5)],
    }
    assert _judge(("lot", 3), inputs, steps) == [
        "path P2 -> L3: 1 effective step(s) of different mechanisms against enveloped viruses "
        "(at least 4 log; cumulative 5 log); 2 are required"
    ]


def _ladder(depth: int, *, untreated: bool) -> tuple[Node, dict[int, list[Node]], dict[Node, list[StepFacts]]]:
    """Pool 1 (S/D) feeds lots 1 and 2; each level k has lots 2k+1, 2k+2 made from both lots of level k-1; the
    final lot is made from the top two (and from lot 9999, an intermediate of pool 2 that had no enveloped step)."""
    inputs: dict[int, list[Node]] = {1: [("pool", 1)], 2: [("pool", 1)]}
    for k in range(1, depth):
        inputs[2 * k + 1] = inputs[2 * k + 2] = [("lot", 2 * k - 1), ("lot", 2 * k)]
    final = 100_000
    inputs[final] = [("lot", 2 * depth - 1), ("lot", 2 * depth)]
    steps: dict[Node, list[StepFacts]] = {
        ("pool", 1): [step("P1-S1", StepMethod.SOLVENT_DETERGENT, env=6)],
        ("pool", 2): [step("P2-S1", StepMethod.NANOFILTRATION, non_env=5)],
        ("lot", final): [step("F-S1", StepMethod.NANOFILTRATION, env=5, non_env=5)],
    }
    if untreated:
        inputs[9999] = [("pool", 2)]
        inputs[final].append(("lot", 9999))
    return ("lot", final), inputs, steps


def test_a_ladder_20_deep_and_2_wide_is_judged_on_every_one_of_its_2_to_the_20_paths_at_once() -> None:
    started = time.perf_counter()
    target, inputs, steps = _ladder(20, untreated=True)
    problems = _judge(target, inputs, steps)
    assert problems == [
        "path P2 -> L9999 -> L100000: 1 effective step(s) of different mechanisms against enveloped viruses "
        "(at least 4 log; cumulative 5 log); 2 are required"
    ]
    target, inputs, steps = _ladder(20, untreated=False)
    assert _judge(target, inputs, steps) == []
    assert time.perf_counter() - started < 1.0


def test_the_worst_path_is_found_past_any_number_of_paths_however_deep() -> None:
    # 40 levels: 2^40 paths; the untreated pool enters at the bottom of the ladder only.
    target, inputs, steps = _ladder(40, untreated=False)
    inputs[1] = [("pool", 1), ("pool", 2)]
    worst = worst_paths(target, inputs, steps, CLEARANCE)
    assert worst[ENVELOPED][0] == ("pool", 2) and len(worst[ENVELOPED]) == 42


def test_the_frontier_keeps_incomparable_paths_and_the_verdict_picks_the_worst() -> None:
    # Two paths: one with heat 4.5 only, one with acid 1.5 and size 1.5: the second has no effective step.
    inputs: dict[int, list[Node]] = {10: [("lot", 1), ("lot", 2)], 1: [("pool", 1)], 2: [("pool", 2)]}
    steps = {
        ("pool", 1): [step("P1-S1", StepMethod.PASTEURIZATION, env=4.5)],
        ("pool", 2): [step("P2-S1", StepMethod.LOW_PH, env=1.5), step("P2-S2", StepMethod.NANOFILTRATION, env=1.5)],
    }
    assert worst_paths(("lot", 10), inputs, steps, CLEARANCE)[ENVELOPED] == [("pool", 2), ("lot", 2), ("lot", 10)]


def _b19(result: str, value: float | None, unit: str | None, version: int = 1) -> PoolTestFacts:
    return PoolTestFacts(Marker.B19_DNA.value, result, value, unit, version)


@pytest.mark.parametrize(
    ("value", "unit", "passes"),
    [
        (10_000.0, "IU/mL", True),
        (10_001.0, "IU/mL", False),
        (10.0, "IU/\u00b5L", True),
        (10.01, "IU/\u00b5L", False),
        (10.0, "IU/\u03bcL", True),
        (10.01, "IU/uL", False),
        (9.99, "iu/ul", True),
    ],
)
def test_the_b19_limit_accepts_iu_per_ml_and_iu_per_microlitre_and_the_limit_itself_passes(
    value: float, unit: str, passes: bool
) -> None:
    test = _b19("reactive", value, unit, version=2)
    problem = pool_test_problem(test, limit_iu_per_ml=10_000.0)
    assert (problem is None) is passes
    assert pool_test_quarantines(test, DEFAULT_POLICY.product("anti-d")) is not passes
    if not passes:
        assert "exceeds the limit of 10,000 IU/mL (version 2)" in problem  # type: ignore[operator]


def test_a_value_over_the_limit_names_both_units() -> None:
    assert pool_test_problem(_b19("reactive", 10.01, "IU/\u00b5L"), limit_iu_per_ml=10_000.0) == (
        "b19-dna: 10,010 IU/mL (10.01 IU/\u00b5L) exceeds the limit of 10,000 IU/mL (version 1)"
    )
    assert iu_per_ml(10.0, "IU/\u00b5L") == 10_000.0
    assert iu_per_ml(10.0, "copies/mL") is None


def test_an_invalid_current_version_does_not_pass_but_asks_for_a_retest_instead_of_quarantine() -> None:
    ivig = DEFAULT_POLICY.product("ivig")
    invalid = PoolTestFacts("hcv-rna", "invalid", None, None, 3)
    assert pool_test_problem(invalid, limit_iu_per_ml=None) == "hcv-rna: result invalid (version 3), retest needed"
    assert not pool_test_quarantines(invalid, ivig)
    invalid_b19 = _b19("invalid", 5.0, "IU/mL")
    assert pool_test_problem(invalid_b19, limit_iu_per_ml=10_000.0) == (
        "b19-dna: result invalid (version 1), retest needed"
    )
    reactive = PoolTestFacts("hcv-rna", "reactive", None, None, 2)
    assert pool_test_quarantines(reactive, ivig)


def test_a_reactive_test_the_product_does_not_require_stops_the_pool_too() -> None:
    ivig = DEFAULT_POLICY.product("ivig")
    tests = {m: PoolTestFacts(m, "nonreactive", None, None) for m in ("hbsag", "anti-hiv", "hcv-rna", "b19-dna")} | {
        "hiv-rna": PoolTestFacts("hiv-rna", "reactive", None, None, 2)
    }
    assert pool_release_problems(tests, ivig) == ["hiv-rna: reactive (version 2)"]
    assert pool_test_quarantines(tests["hiv-rna"], ivig)
    # B19 DNA is quantitative: without a limit for the product, a low-level reactive result stops nothing
    assert not pool_test_quarantines(_b19("reactive", 200.0, "IU/mL"), ivig)
