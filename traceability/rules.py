"""The policy (named thresholds, overridable by TOML) and pure checks on loaded facts. Nothing here queries."""

from __future__ import annotations

import tomllib
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


class ReleasePolicy(_Strict):
    """Who may release what (SPEC §11)."""

    separate_duties: bool = Field(
        default=True,
        description=(
            "A lot is not released by who created it, recorded its steps or the pool tests of its pools; "
            "a pool is not released by who recorded its tests (21 CFR 211.22, EU GMP Annex 16)."
        ),
    )


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
    release: ReleasePolicy = Field(default_factory=ReleasePolicy)

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


# --- pool release ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolTestFacts:
    marker: str
    result: str
    value: float | None
    value_unit: str | None


def pool_release_problems(tests: dict[str, PoolTestFacts], product: ProductPolicy) -> list[str]:
    """Every required pool test that is missing or does not pass."""
    problems: list[str] = []
    for marker in product.pool_tests:
        test = tests.get(marker.value)
        limit = product.pool_limits_iu_per_ml.get(marker)
        if test is None:
            problems.append(f"{marker.value}: no pool test recorded")
            continue
        if limit is not None:
            if test.value is None or (test.value_unit or "").replace(" ", "").lower() != "iu/ml":
                problems.append(f"{marker.value}: needs a quantitative value in IU/mL (limit {limit:,.0f} IU/mL)")
            elif test.value > limit:
                problems.append(f"{marker.value}: {test.value:,.0f} IU/mL exceeds the limit of {limit:,.0f} IU/mL")
            elif test.result == ResultValue.INVALID:
                problems.append(f"{marker.value}: result invalid, retest needed")
            continue
        if test.result != ResultValue.NONREACTIVE:
            problems.append(f"{marker.value}: {test.result}")
    return problems


# --- viral clearance -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepFacts:
    step_key: str
    method: StepMethod
    outcome: StepOutcome
    deviation_open: bool
    lrv: dict[str, float | None]


@dataclass
class PathClearance:
    """Clearance along one path from a pool to the lot."""

    path: list[str]
    cumulative: dict[str, float] = field(default_factory=dict)
    effective_mechanisms: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def path_clearance(path: list[str], steps: list[StepFacts], clearance: ClearancePolicy) -> PathClearance:
    """Cumulative log reduction per virus class along one path: steps of at least min_step_log, one per mechanism."""
    result = PathClearance(path=path)
    for virus_class in VIRUS_CLASSES:
        best: dict[str, float] = {}
        for step in steps:
            if step.outcome == StepOutcome.FAILED:
                continue
            value = step.lrv.get(virus_class)
            if value is None or value < clearance.min_step_log:
                continue
            mechanism = clearance.mechanisms[step.method]
            best[mechanism] = max(best.get(mechanism, 0.0), value)
        result.cumulative[virus_class] = round(sum(best.values()), 2)
        result.effective_mechanisms[virus_class] = sorted(m for m, v in best.items() if v >= clearance.effective_log)
    for step in steps:
        if step.outcome == StepOutcome.FAILED:
            result.problems.append(f"step {step.step_key} ({step.method.value}) failed")
        if step.deviation_open:
            result.problems.append(f"step {step.step_key} ({step.method.value}) has an open deviation")
    return result


def final_lot_clearance_problems(paths: list[PathClearance], clearance: ClearancePolicy) -> list[str]:
    """Problems on the worst path; empty when every path meets the rule."""
    problems: list[str] = []
    for path in paths:
        route = " -> ".join(path.path)
        env = path.effective_mechanisms.get(ENVELOPED, [])
        non_env = path.effective_mechanisms.get(NON_ENVELOPED, [])
        if len(env) < clearance.enveloped_steps:
            problems.append(
                f"path {route}: {len(env)} effective step(s) of different mechanisms against enveloped viruses "
                f"(at least {clearance.effective_log:g} log); {clearance.enveloped_steps} are required"
            )
        if len(non_env) < clearance.non_enveloped_steps:
            problems.append(
                f"path {route}: {len(non_env)} effective step(s) against non-enveloped viruses "
                f"(at least {clearance.effective_log:g} log); {clearance.non_enveloped_steps} are required"
            )
        problems.extend(f"path {route}: {p}" for p in path.problems)
    return list(dict.fromkeys(problems))
