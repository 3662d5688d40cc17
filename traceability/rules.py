"""The policy (named thresholds, overridable by TOML) and pure checks on loaded facts. Nothing here queries."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InvalidInput, InvalidPolicy, NotEnoughDonors
from .models import Marker, ResultValue, StepMethod, StepOutcome, UnitStatus

MIN_DISTINCT_DONORS = 1_000
"""The floor for every pool (USP Immune Globulin, FDA): a product may raise it, nothing may lower it."""

DEFAULT_PANEL = [Marker.HBSAG, Marker.ANTI_HIV, Marker.ANTI_HCV, Marker.HIV_RNA, Marker.HCV_RNA, Marker.HBV_DNA]
DEFAULT_POOL_TESTS = [Marker.HBSAG, Marker.ANTI_HIV, Marker.HCV_RNA]
B19_POOL_LIMIT_IU_PER_ML = 10_000.0

ENVELOPED, NON_ENVELOPED = "enveloped", "non-enveloped"
VIRUS_CLASSES = (ENVELOPED, NON_ENVELOPED)

# Steps that act the same way are not additive (DOMAIN §3.1): S/D and caprylate both dissolve lipid envelopes;
# pasteurisation and dry heat are both heat. Grouping them is the conservative reading; a site can regroup.
DEFAULT_MECHANISMS: dict[StepMethod, str] = {
    StepMethod.SOLVENT_DETERGENT: "lipid-solvent",
    StepMethod.CAPRYLATE: "lipid-solvent",
    StepMethod.LOW_PH: "acid",
    StepMethod.PASTEURIZATION: "heat",
    StepMethod.DRY_HEAT: "heat",
    StepMethod.NANOFILTRATION: "size-exclusion",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProductPolicy(_Strict):
    """What one product asks of its pools."""

    min_donors: int | None = None
    pool_tests: list[Marker] = Field(default_factory=lambda: list(DEFAULT_POOL_TESTS))
    pool_limits_iu_per_ml: dict[Marker, float] = Field(default_factory=dict)

    @field_validator("min_donors")
    @classmethod
    def _not_below_floor(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_DISTINCT_DONORS:
            raise ValueError(f"min_donors {value:,} is below the floor of {MIN_DISTINCT_DONORS:,} distinct donors")
        return value


class ClearancePolicy(_Strict):
    """How a final lot's viral clearance is judged along each path from a pool."""

    min_step_log: float = 1.0
    effective_log: float = 4.0
    enveloped_steps: int = 2
    non_enveloped_steps: int = 1
    mechanisms: dict[StepMethod, str] = Field(default_factory=lambda: dict(DEFAULT_MECHANISMS))

    @model_validator(mode="after")
    def _every_method_has_a_mechanism(self) -> ClearancePolicy:
        missing = [m.value for m in StepMethod if m not in self.mechanisms]
        if missing:
            raise ValueError(f"clearance.mechanisms lacks {', '.join(missing)}")
        return self


def _default_products() -> dict[str, ProductPolicy]:
    return {
        "ivig": ProductPolicy(),
        "albumin": ProductPolicy(),
        "anti-d": ProductPolicy(
            pool_tests=[*DEFAULT_POOL_TESTS, Marker.B19_DNA],
            pool_limits_iu_per_ml={Marker.B19_DNA: B19_POOL_LIMIT_IU_PER_ML},
        ),
    }


_PANELS: dict[int, tuple[Policy, tuple[str, ...]]] = {}


class Policy(_Strict):
    """Every configurable threshold of SPEC §4, with its default."""

    required_panel: list[Marker] = Field(default_factory=lambda: list(DEFAULT_PANEL))
    hold_days: int = Field(default=60, ge=0)
    qualification_donations: int = Field(default=2, ge=1)
    qualification_window_days: int = Field(default=183, ge=1)
    lookback_days: int = Field(default=365, ge=183)
    min_donors: int = MIN_DISTINCT_DONORS
    products: dict[str, ProductPolicy] = Field(default_factory=_default_products)
    clearance: ClearancePolicy = Field(default_factory=ClearancePolicy)

    @field_validator("min_donors")
    @classmethod
    def _floor(cls, value: int) -> int:
        if value < MIN_DISTINCT_DONORS:
            raise ValueError(f"min_donors {value:,} is below the floor of {MIN_DISTINCT_DONORS:,} distinct donors")
        return value

    @property
    def panel(self) -> tuple[str, ...]:
        """The required panel as marker codes, computed once per policy (it is read for every unit checked)."""
        cached = _PANELS.get(id(self))
        if cached is None or cached[0] is not self:
            cached = _PANELS[id(self)] = (self, tuple(m.value for m in self.required_panel))
        return cached[1]

    def product(self, name: str) -> ProductPolicy:
        try:
            return self.products[name]
        except KeyError:
            known = ", ".join(sorted(self.products))
            raise InvalidInput(f"Product {name!r} is not in the policy; known products: {known}.") from None

    def min_donors_for(self, product: str) -> int:
        own = self.product(product).min_donors
        return max(self.min_donors, own or 0)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


DEFAULT_POLICY = Policy()


def load_policy(path: Path | None) -> Policy:
    """The default policy, overridden by the TOML file when one is given. Raises InvalidPolicy."""
    if path is None:
        return DEFAULT_POLICY
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidPolicy(f"Policy file {path} does not exist.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InvalidPolicy(f"Policy file {path} is not valid TOML: {error}") from None
    products = _default_products()
    for name, override in (data.pop("products", None) or {}).items():
        base = products.get(name, ProductPolicy()).model_dump()
        products[name] = override if not isinstance(override, dict) else {**base, **override}  # type: ignore[assignment]
    try:
        return Policy.model_validate({**data, "products": products})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise InvalidPolicy(f"Policy file {path} is invalid: {problems}") from None


# --- eligibility -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitFacts:
    """What the eligibility rules need to know about one unit, loaded set-based by the services."""

    unit_number: str
    status: UnitStatus
    collected_at: datetime
    volume_ml: int
    current_results: dict[str, str]
    donor_code: str
    donor_qualified: bool
    deferral_at_collection: str | None
    already_pooled_in: str | None = None
    donation_id: int | None = None


def hold_ends_at(collected_at: datetime, policy: Policy = DEFAULT_POLICY) -> datetime:
    return collected_at + timedelta(days=policy.hold_days)


def eligibility_problems(
    unit: UnitFacts, *, now: datetime, policy: Policy = DEFAULT_POLICY, pooled_ok_in: str | None = None
) -> list[str]:
    """Every reason the unit may not be pooled (empty when eligible).

    ``pooled_ok_in`` names the pool the unit is already a member of when a pool is being closed: being pooled
    there is expected, anything else about its status is not.
    """
    reasons: list[str] = []
    if unit.status == UnitStatus.POOLED:
        if pooled_ok_in is None or unit.already_pooled_in != pooled_ok_in:
            where = f"pool {unit.already_pooled_in}" if unit.already_pooled_in else "a pool"
            reasons.append(f"not in inventory: already in {where}")
    elif unit.status != UnitStatus.IN_INVENTORY:
        reasons.append(f"not in inventory: {unit.status.value}")
    results = unit.current_results
    panel = policy.panel
    if any(results.get(m) != "nonreactive" for m in panel):
        missing = [m for m in panel if m not in results]
        if missing:
            reasons.append(f"screening incomplete: no result for {', '.join(missing)}")
        reactive = [m for m in panel if results.get(m) == "reactive"]
        if reactive:
            reasons.append(f"reactive: {', '.join(reactive)}")
        invalid = [m for m in panel if results.get(m) == "invalid"]
        if invalid:
            reasons.append(f"invalid result, retest needed: {', '.join(invalid)}")
    ends = hold_ends_at(unit.collected_at, policy)
    if now < ends:
        reasons.append(f"inventory hold until {ends.strftime('%Y-%m-%d %H:%M')} UTC ({policy.hold_days} days)")
    if not unit.donor_qualified:
        reasons.append(
            f"donor {unit.donor_code} not qualified: needs {policy.qualification_donations} donations with complete "
            f"nonreactive panels within {policy.qualification_window_days} days"
        )
    if unit.deferral_at_collection:
        reasons.append(f"donor {unit.donor_code} was deferred at collection: {unit.deferral_at_collection}")
    if unit.volume_ml <= 0:
        reasons.append(f"volume {unit.volume_ml} mL is not positive")
    return reasons


def panel_complete_and_nonreactive(current_results: dict[str, str], policy: Policy = DEFAULT_POLICY) -> bool:
    return all(current_results.get(m) == ResultValue.NONREACTIVE for m in policy.panel)


def donor_is_qualified(qualifying_collections: list[datetime], policy: Policy = DEFAULT_POLICY) -> bool:
    """At least N donations with complete nonreactive panels whose collections lie within the window of each other."""
    needed = policy.qualification_donations
    times = sorted(qualifying_collections)
    window = timedelta(days=policy.qualification_window_days)
    return any(times[i + needed - 1] - times[i] <= window for i in range(len(times) - needed + 1))


def deferral_covers(starts_on: date, ends_on: date | None, lifted_on: date | None, day: date) -> bool:
    """A deferral covers the days from starts_on up to, not including, ends_on (or the day it was lifted)."""
    end = min(d for d in (ends_on, lifted_on) if d is not None) if (ends_on or lifted_on) else None
    return starts_on <= day and (end is None or day < end)


def check_pool_composition(pool_number: str, donor_count: int, required: int) -> None:
    if donor_count < required:
        raise NotEnoughDonors(pool_number, found=donor_count, required=required)


# --- pool tests and pool release -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolTestFacts:
    marker: str
    result: str
    value: float | None
    value_unit: str | None
    version: int = 1


# IU/µL is written with the micro sign (U+00B5), the Greek mu (U+03BC) or a plain u.
_IU_PER_ML_FACTOR = {"iu/ml": 1.0, "iu/\u00b5l": 1_000.0, "iu/\u03bcl": 1_000.0, "iu/ul": 1_000.0}


def _number(value: float) -> str:
    """10000 -> '10,000', 10010.000000000002 -> '10,010', 10000.5 -> '10,000.5': exact enough to see an edge."""
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def iu_per_ml(value: float, unit: str | None) -> float | None:
    """A quantitative pool-test value in IU/mL (10.0 IU/µL = 10,000 IU/mL); None for a unit that is not known."""
    factor = _IU_PER_ML_FACTOR.get((unit or "").replace(" ", "").lower())
    return None if factor is None else round(value * factor, 6)


def pool_test_problem(test: PoolTestFacts, *, limit_iu_per_ml: float | None, required: bool = True) -> str | None:
    """Why the current version of one pool test does not pass, or None when it passes.

    With a limit (``products.<name>.pool_limits_iu_per_ml``, Ph. Eur. anti-D B19 DNA: at most 10.0 IU/µL) the
    quantity decides and the limit itself passes; without one, only a nonreactive result passes. An invalid
    result of a required test never passes: it needs a retest. A test the product does not require stops the
    pool only when reactive (B19 DNA, quantitative, only against a limit).
    """
    where = f"(version {test.version})"
    if not required and limit_iu_per_ml is None:
        if test.result != ResultValue.REACTIVE or test.marker == Marker.B19_DNA:
            return None
    if test.result == ResultValue.INVALID:
        return f"{test.marker}: result invalid {where}, retest needed"
    if limit_iu_per_ml is None:
        return None if test.result == ResultValue.NONREACTIVE else f"{test.marker}: {test.result} {where}"
    limit = f"{_number(limit_iu_per_ml)} IU/mL"
    measured = None if test.value is None else iu_per_ml(test.value, test.value_unit)
    if measured is None:
        return f"{test.marker}: needs a quantitative value in IU/mL or IU/µL (limit {limit}) {where}"
    if measured > limit_iu_per_ml:
        given = f"{_number(measured)} IU/mL"
        if (test.value_unit or "").replace(" ", "").lower() != "iu/ml":
            given += f" ({_number(test.value or 0.0)} {test.value_unit})"
        return f"{test.marker}: {given} exceeds the limit of {limit} {where}"
    return None


def pool_test_quarantines(test: PoolTestFacts, product: ProductPolicy) -> bool:
    """A reactive result, or a value over the limit (``products.<name>.pool_limits_iu_per_ml``), quarantines the
    pool wherever it is and holds every lot downstream (Ph. Eur. 0853, Annex 14). An invalid result or a missing
    value does not pass either, but only asks for a retest."""
    marker = Marker(test.marker)
    limit = product.pool_limits_iu_per_ml.get(marker)
    problem = pool_test_problem(test, limit_iu_per_ml=limit, required=marker in product.pool_tests)
    if problem is None or test.result == ResultValue.INVALID:
        return False
    if limit is None:
        return True
    return test.value is not None and iu_per_ml(test.value, test.value_unit) is not None


def pool_release_problems(tests: dict[str, PoolTestFacts], product: ProductPolicy) -> list[str]:
    """Every required pool test (``products.<name>.pool_tests``) that is missing or whose current version does not
    pass, then every other current pool test that stops the pool (a reactive result on any marker)."""
    problems: list[str] = []
    required = [m.value for m in product.pool_tests]
    for marker in [*required, *sorted(set(tests) - set(required))]:
        test = tests.get(marker)
        if test is None:
            problems.append(f"{marker}: no pool test recorded")
            continue
        limit = product.pool_limits_iu_per_ml.get(Marker(marker))
        if problem := pool_test_problem(test, limit_iu_per_ml=limit, required=marker in required):
            problems.append(problem)
    return problems


# --- viral clearance -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepFacts:
    step_key: str
    method: StepMethod
    outcome: StepOutcome
    deviation_open: bool
    lrv: dict[str, float | None]


def counts_toward_clearance(log_reduction: float | None, *, min_step_log: float) -> bool:
    """ICH Q5A (USP <1050>): a step's reduction adds to the overall only when **greater than** ``min_step_log``
    (``clearance.min_step_log``, 1 log): a step of exactly 1.0 log is not counted, 1.01 is."""
    return log_reduction is not None and log_reduction > min_step_log


def is_effective_step(log_reduction: float, *, effective_log: float) -> bool:
    """A step is effective against a virus class when it reaches ``clearance.effective_log`` (4 log)."""
    return log_reduction >= effective_log


def step_credit(step: StepFacts, virus_class: str, *, min_step_log: float) -> float | None:
    """What one step adds to a path's clearance of a class: nothing for a failed step or one of min_step_log or
    less. (A step with an open deviation still counts here; the open deviation blocks release by itself.)"""
    if step.outcome == StepOutcome.FAILED:
        return None
    value = step.lrv.get(virus_class)
    return value if counts_toward_clearance(value, min_step_log=min_step_log) else None


def step_release_problem(step: StepFacts) -> str | None:
    """A failed step or a step with an open deviation anywhere upstream blocks release and shipment."""
    if step.outcome == StepOutcome.FAILED:
        return f"step {step.step_key} ({step.method.value}) failed"
    if step.deviation_open:
        return f"step {step.step_key} ({step.method.value}) has an open deviation"
    return None


def mechanism_credits(
    steps: Sequence[StepFacts], virus_class: str, clearance: ClearancePolicy, start: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The largest counted reduction per mechanism (``clearance.mechanisms``): steps of one mechanism do not add."""
    best = dict(start or {})
    for step in steps:
        value = step_credit(step, virus_class, min_step_log=clearance.min_step_log)
        if value is not None:
            mechanism = clearance.mechanisms[step.method]
            best[mechanism] = max(best.get(mechanism, 0.0), value)
    return best


@dataclass
class PathClearance:
    """Clearance along one path from a pool to the lot."""

    path: list[str]
    cumulative: dict[str, float] = field(default_factory=dict)
    effective_mechanisms: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    worst_for: list[str] = field(default_factory=list)


def path_clearance(path: list[str], steps: list[StepFacts], clearance: ClearancePolicy) -> PathClearance:
    """Cumulative log reduction per virus class along one path: steps of more than min_step_log, one per
    mechanism; the effective mechanisms are those whose step reaches effective_log."""
    result = PathClearance(path=path)
    for virus_class in VIRUS_CLASSES:
        best = mechanism_credits(steps, virus_class, clearance)
        result.cumulative[virus_class] = round(sum(best.values()), 2)
        result.effective_mechanisms[virus_class] = sorted(
            m for m, v in best.items() if is_effective_step(v, effective_log=clearance.effective_log)
        )
    result.problems = [p for s in steps if (p := step_release_problem(s))]
    return result


Node = tuple[str, int]
"""A node of the lineage: ("pool", id) or ("lot", id)."""


def worst_paths(
    target: Node,
    inputs: Mapping[int, Sequence[Node]],
    steps: Mapping[Node, Sequence[StepFacts]],
    clearance: ClearancePolicy,
) -> dict[str, list[Node]]:
    """The worst path from a pool to ``target`` per virus class, pool first, exact over every path of the DAG
    without enumerating them (2^20 paths through a ladder of lots take one pass).

    Along a path the state is the vector of the largest counted reduction per mechanism; a node's steps raise it
    (element-wise maximum), which is monotone. So it suffices to keep, per node, the Pareto-minimal vectors (with
    one witness path each): every path's vector is at or above one of them, and the verdict (effective steps,
    then cumulative value) only grows with the vector. Mechanisms are few, so the frontier stays small. Worst
    means fewest effective mechanisms, then lowest cumulative value.
    """
    mechanisms = sorted(set(clearance.mechanisms.values()))
    order = _inputs_first(target, inputs)
    worst: dict[str, list[Node]] = {}
    for virus_class in VIRUS_CLASSES:
        frontier: dict[Node, list[tuple[tuple[float, ...], _Witness]]] = {}
        for node in order:
            own = mechanism_credits(steps.get(node, ()), virus_class, clearance)
            floor = tuple(own.get(m, 0.0) for m in mechanisms)
            upstream = inputs.get(node[1], ()) if node[0] == "lot" else ()
            sources = [(v, w) for n in upstream for v, w in frontier[n]]
            if not sources:
                frontier[node] = [(floor, (node, None))]
                continue
            candidates = [(tuple(map(max, v, floor)), (node, w)) for v, w in sources]
            frontier[node] = _pareto_minimal(candidates)
        verdict = _verdict_key(clearance)
        _, witness = min(frontier[target], key=lambda vw: verdict(dict(zip(mechanisms, vw[0], strict=True))))
        worst[virus_class] = _unwind(witness)
    return worst


_Witness = tuple[Node, "_Witness | None"]


def _verdict_key(clearance: ClearancePolicy) -> Any:
    def key(best: dict[str, float]) -> tuple[int, float]:
        effective = sum(1 for v in best.values() if is_effective_step(v, effective_log=clearance.effective_log))
        return effective, round(sum(best.values()), 6)

    return key


def _pareto_minimal(
    candidates: list[tuple[tuple[float, ...], _Witness]],
) -> list[tuple[tuple[float, ...], _Witness]]:
    unique: dict[tuple[float, ...], _Witness] = {}
    for vector, witness in candidates:
        unique.setdefault(vector, witness)
    vectors = sorted(unique, key=sum)
    kept: list[tuple[float, ...]] = []
    for v in vectors:  # a vector can only be dominated by one of no larger sum, which comes earlier
        if not any(all(a <= b for a, b in zip(k, v, strict=True)) for k in kept):
            kept.append(v)
    return [(v, unique[v]) for v in kept]


def _unwind(witness: _Witness | None) -> list[Node]:
    path: list[Node] = []
    while witness is not None:
        node, witness = witness
        path.append(node)
    return path[::-1]


def _inputs_first(target: Node, inputs: Mapping[int, Sequence[Node]]) -> list[Node]:
    """Every node upstream of target, each after all of its inputs (iterative: any depth)."""
    order: list[Node] = []
    done: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(target, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            if node not in done:
                done.add(node)
                order.append(node)
            continue
        if node in done:
            continue
        stack.append((node, True))
        if node[0] == "lot":
            stack.extend((n, False) for n in inputs.get(node[1], ()) if n not in done)
    return order


@dataclass
class LotClearance:
    """A lot's clearance: the worst path per virus class (with both classes' values along it), and the failed
    steps and open deviations anywhere upstream."""

    worst: dict[str, PathClearance]
    step_problems: list[str]

    @property
    def paths(self) -> list[PathClearance]:
        """The worst paths, each once, with the classes it is worst for."""
        seen: dict[tuple[str, ...], PathClearance] = {}
        for virus_class, path in self.worst.items():
            shown = seen.setdefault(tuple(path.path), path)
            shown.worst_for = sorted({*shown.worst_for, virus_class}, key=VIRUS_CLASSES.index)
        return list(seen.values())


def clearance_shortfall(path: PathClearance, virus_class: str, *, required: int, effective_log: float) -> str | None:
    """The path's shortfall against one class: ``clearance.enveloped_steps`` [2] effective steps of different
    mechanisms against enveloped viruses, ``clearance.non_enveloped_steps`` [1] against non-enveloped ones."""
    found = len(path.effective_mechanisms.get(virus_class, []))
    if found >= required:
        return None
    route = " -> ".join(path.path)
    kind = (
        "of different mechanisms against enveloped viruses"
        if virus_class == ENVELOPED
        else "against non-enveloped viruses"
    )
    return (
        f"path {route}: {found} effective step(s) {kind} (at least {effective_log:g} log; cumulative "
        f"{path.cumulative.get(virus_class, 0.0):g} log); {required} are required"
    )


def final_lot_clearance_problems(result: LotClearance, clearance: ClearancePolicy) -> list[str]:
    """Problems of a final lot: the worst path of each class against the rule, then every failed step or open
    deviation upstream; empty when every path meets the rule."""
    required = {ENVELOPED: clearance.enveloped_steps, NON_ENVELOPED: clearance.non_enveloped_steps}
    problems = [
        p
        for virus_class, path in result.worst.items()
        if (
            p := clearance_shortfall(
                path, virus_class, required=required[virus_class], effective_log=clearance.effective_log
            )
        )
    ]
    return list(dict.fromkeys([*problems, *result.step_problems]))
