"""The policy (named thresholds, overridable by TOML) and the rules of SPEC §4, each one pure function named after
what it decides and taking the policy key it uses. Nothing here queries: the queries load facts, the rules judge."""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum as _StdStrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import calendars
from .calendars import DEFAULT_TIMEZONE
from .errors import InvalidInput, InvalidPolicy, NotEnoughDonors
from .models import Marker, ResultValue, StepMethod, StepOutcome, UnitStatus

MIN_DISTINCT_DONORS = 1_000
"""The floor for every pool (USP Immune Globulin, FDA): a product may raise it, nothing may lower it."""

LAW_PANEL = (Marker.HBSAG, Marker.ANTI_HIV, Marker.ANTI_HCV)
"""What every donation must be tested for, at the least (Ph. Eur. 0853; 21 CFR 610.40(a))."""
DEFAULT_PANEL = [Marker.HBSAG, Marker.ANTI_HIV, Marker.ANTI_HCV, Marker.HIV_RNA, Marker.HCV_RNA, Marker.HBV_DNA]
LAW_DEFER_MARKERS = (Marker.HBSAG, Marker.ANTI_HIV, Marker.ANTI_HCV, Marker.HIV_RNA, Marker.HCV_RNA, Marker.HBV_DNA)
"""A reactive screening test for HIV, HBV or HCV defers the donor permanently, whether or not the site's panel
requires the marker (21 CFR 610.41(a); PPTA NDDR)."""
LAW_POOL_TESTS = (Marker.HBSAG, Marker.ANTI_HIV, Marker.HCV_RNA)
"""What every manufacturing pool must be tested for, at the least (EU OCABR: HBsAg, anti-HIV, HCV RNA)."""
DEFAULT_POOL_TESTS = list(LAW_POOL_TESTS)
B19_POOL_LIMIT_IU_PER_ML = 10_000.0
"""Ph. Eur. limit of parvovirus B19 DNA in anti-D pools: 10^4 IU/mL = 10.0 IU/µL."""
QUANTITATIVE_POOL_TESTS = {Marker.B19_DNA}
"""Pool tests judged against a quantity (B19 DNA, common at low levels); every other one must be nonreactive."""

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

DEFAULT_INTERMEDIATES = [
    "cryo-poor-plasma",
    "cryoprecipitate",
    "fraction-i-paste",
    "fraction-ii-iii-paste",
    "fraction-ii-paste",
    "fraction-iv-paste",
    "fraction-v-paste",
]


class OnReactive(_StdStrEnum):
    """What a reactive screening result on a marker sets off."""

    DEFER_PERMANENTLY = "defer-permanently"
    """Reject the unit, defer the donor for good, interdict the look-back window (the panel markers, by law)."""
    DEFER_UNTIL_NONREACTIVE = "defer-until-nonreactive"
    """Reject the unit and defer the donor until a later donation of theirs tests nonreactive (syphilis)."""
    REJECT_UNIT = "reject-unit"
    """Reject the unit only."""


@dataclass(frozen=True)
class Law:
    """The limit of the law on a policy key: a policy that goes past it is refused (exit 5) naming the key."""

    text: str
    allows: Callable[[Any], bool]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _within_the_law(self) -> Self:
        for name, info in type(self).model_fields.items():
            for law in (m for m in info.metadata if isinstance(m, Law)):
                value = getattr(self, name)
                if not law.allows(value):
                    raise ValueError(f"{name} = {_shown(value)} relaxes the law: {law.text}")
        return self


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _includes(*markers: Marker) -> Callable[[Any], bool]:
    return lambda value: set(markers) <= set(value)


class ProductPolicy(_Strict):
    """What one final product asks of its pools."""

    min_donors: Annotated[
        int | None, Law("at least 1,000 distinct donors", lambda v: v is None or v >= MIN_DISTINCT_DONORS)
    ] = Field(
        default=None,
        description="distinct donors this product's pools need to close; only raises min_donors",
        json_schema_extra={"source": "USP Immune Globulin; FDA; Ph. Eur. 0338"},
    )
    pool_tests: Annotated[list[Marker], Law("hbsag, anti-hiv and hcv-rna", _includes(*LAW_POOL_TESTS))] = Field(
        default_factory=lambda: list(DEFAULT_POOL_TESTS),
        description="tests each pool needs, present and passing in their current version, before release",
        json_schema_extra={"source": "Ph. Eur. 0853; EU OCABR plasma pool testing"},
    )
    pool_limits_iu_per_ml: Annotated[
        dict[Marker, float],
        Law(
            "only b19-dna takes a quantitative limit (the other pool tests must be nonreactive), at most 10,000 "
            "IU/mL (10.0 IU/µL)",
            lambda v: (
                set(v) <= QUANTITATIVE_POOL_TESTS
                and all(math.isfinite(limit) and 0 <= limit <= B19_POOL_LIMIT_IU_PER_ML for limit in v.values())
            ),
        ),
    ] = Field(
        default_factory=dict,
        description="quantitative pool limits in IU/mL (IU/µL accepted on input); over the limit fails",
        json_schema_extra={"source": "Ph. Eur. anti-D immunoglobulin (B19 DNA); Transfusion 2004;44:97"},
    )

    @model_validator(mode="after")
    def _limits_are_tested(self) -> ProductPolicy:
        untested = [m.value for m in self.pool_limits_iu_per_ml if m not in self.pool_tests]
        if untested:
            raise ValueError(f"pool_limits_iu_per_ml names {', '.join(untested)}, which is not in pool_tests")
        return self


def _not_split(mechanisms: dict[StepMethod, str]) -> bool:
    """Regrouping may merge mechanisms, never split the default ones (two lipid-solvent steps are not orthogonal)."""
    groups: dict[str, set[str]] = {}
    for method, mechanism in DEFAULT_MECHANISMS.items():
        groups.setdefault(mechanism, set()).add(mechanisms.get(method, mechanism))
    return all(len(names) == 1 for names in groups.values())


class ClearancePolicy(_Strict):
    """How a final lot's viral clearance is judged along each path from a pool."""

    min_step_log: Annotated[float, Law("at least 1 log (a step counts only when greater than 1)", lambda v: v >= 1)] = (
        Field(
            default=1.0,
            description="a step counts towards the cumulative value only when its log reduction is MORE than this",
            json_schema_extra={"source": "ICH Q5A via USP <1050>: an individual reduction factor greater than 1"},
        )
    )
    effective_log: Annotated[float, Law("at least 4 log", lambda v: v >= 4)] = Field(
        default=4.0,
        description="an effective step reaches at least this log reduction",
        json_schema_extra={"source": "CPMP/BWP/268/95; EMA plasma-derived medicinal products guideline"},
    )
    enveloped_steps: Annotated[int, Law("at least 2", lambda v: v >= 2)] = Field(
        default=2,
        description="effective steps of different mechanisms against enveloped viruses, on every path",
        json_schema_extra={"source": "EMA/CHMP/BWP/706271/2010: two orthogonal steps"},
    )
    non_enveloped_steps: Annotated[int, Law("at least 1", lambda v: v >= 1)] = Field(
        default=1,
        description="effective steps against non-enveloped viruses, on every path",
        json_schema_extra={"source": "EMA/CHMP/BWP/706271/2010"},
    )
    mechanisms: Annotated[
        dict[StepMethod, str],
        Law(
            "methods of one default mechanism stay together (S/D with caprylate, pasteurization with dry heat)",
            _not_split,
        ),
    ] = Field(
        default_factory=lambda: dict(DEFAULT_MECHANISMS),
        description="mechanism of each step method; steps of one mechanism are not added (the larger counts)",
        json_schema_extra={"source": "CPMP/BWP/268/95: orthogonal steps of different mechanisms"},
    )

    @model_validator(mode="after")
    def _every_method_has_a_mechanism(self) -> ClearancePolicy:
        missing = [m.value for m in StepMethod if m not in self.mechanisms]
        if missing:
            raise ValueError(f"clearance.mechanisms lacks {', '.join(missing)}")
        return self


class MarkerPolicy(_Strict):
    """What one marker's reactive result sets off."""

    on_reactive: OnReactive = Field(
        default=OnReactive.REJECT_UNIT,
        description="what a reactive result sets off: defer-permanently, defer-until-nonreactive or reject-unit",
        json_schema_extra={"source": "21 CFR 610.41; 21 CFR 640.65(b)(2)(ii) (syphilis)"},
    )


class ReleasePolicy(_Strict):
    """Who may release what (SPEC §11)."""

    separate_duties: bool = Field(
        default=True,
        description=(
            "a lot is not released by who created it, recorded its steps or the pool tests of its pools; "
            "a pool is not released by who recorded its tests"
        ),
        json_schema_extra={"source": "21 CFR 211.22; 21 CFR 11.10(g); EU GMP Annex 16 (independent release)"},
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


def _default_markers() -> dict[Marker, MarkerPolicy]:
    return {Marker.SYPHILIS: MarkerPolicy(on_reactive=OnReactive.DEFER_UNTIL_NONREACTIVE)}


class Policy(_Strict):
    """Every configurable threshold of SPEC §4, with its default, its meaning, the law's limit and its source.

    ``policy show``, README's rule table and the floor checks all read these declarations.
    """

    required_panel: Annotated[list[Marker], Law("hbsag, anti-hiv and anti-hcv", _includes(*LAW_PANEL))] = Field(
        default_factory=lambda: list(DEFAULT_PANEL),
        description="markers every unit needs a current nonreactive result for before pooling",
        json_schema_extra={"source": "Ph. Eur. 0853; 21 CFR 610.40(a); PPTA QSEAL NAT standard"},
    )
    hold_days: Annotated[int, Law("at least 60 days", lambda v: v >= 60)] = Field(
        default=60,
        le=3650,
        description="inventory hold: a unit is poolable from exactly this many days after its collection time",
        json_schema_extra={"source": "PPTA QSEAL inventory hold"},
    )
    qualification_months: Annotated[int, Law("at most 6 calendar months", lambda v: 1 <= v <= 6)] = Field(
        default=6,
        description="a unit is usable when another donation of the donor with a complete nonreactive panel was "
        "collected within this many calendar months of it (local days); a donor away longer is an applicant again",
        json_schema_extra={"source": "PPTA IQPP Qualified Donor Standard"},
    )
    lookback_months: Annotated[int, Law("at least 6 calendar months", lambda v: v >= 6)] = Field(
        default=12,
        le=600,
        description="look-back window: every donation collected on or after the local day this many calendar "
        "months before the donor's last nonreactive donation",
        json_schema_extra={"source": "21 CFR 610.46/610.47 (12 months); EU GMP Annex 14 (at least 6 months)"},
    )
    lookback_quarantine_days: Annotated[int, Law("at most 3 calendar days", lambda v: 1 <= v <= 3)] = Field(
        default=3,
        description="a look-back case's record review and quarantine of the units in the window, and its quarantine "
        "request to every consignee of an implicated lot, are due this many calendar days (the case's local days) "
        "after the reactive test or the information received",
        json_schema_extra={"source": "21 CFR 610.46(a)(1)/610.47(a)(1)"},
    )
    lookback_supplemental_days: Annotated[int, Law("at most 45 calendar days", lambda v: 1 <= v <= 45)] = Field(
        default=45,
        description="a look-back case's supplemental test results to every consignee of an implicated lot are due "
        "this many calendar days (the case's local days) after the reactive test or the information received",
        json_schema_extra={"source": "21 CFR 610.46/610.47 (supplemental results to consignees)"},
    )
    min_donors: Annotated[int, Law("at least 1,000 distinct donors", lambda v: v >= MIN_DISTINCT_DONORS)] = Field(
        default=MIN_DISTINCT_DONORS,
        le=10_000_000,
        description="distinct donors (not units) a pool needs to close; a product may raise it",
        json_schema_extra={"source": "USP Immune Globulin; FDA (stricter than Ph. Eur. for anti-D, on purpose)"},
    )
    products: dict[str, ProductPolicy] = Field(
        default_factory=_default_products,
        description="final products: what each asks of its pools; a pool and a final lot name one of these",
        json_schema_extra={"source": "Ph. Eur. 0853 and product monographs"},
    )
    intermediates: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INTERMEDIATES),
        description="intermediate products (pastes, fractions) an intermediate lot may name besides a final product",
        json_schema_extra={"source": "site process (Cohn fractionation)"},
    )
    markers: dict[Marker, MarkerPolicy] = Field(
        default_factory=_default_markers,
        description="per marker, what a reactive result sets off; the required panel always defers permanently",
        json_schema_extra={"source": "21 CFR 610.41; 21 CFR 640.65(b)(2)(ii)"},
    )
    clearance: ClearancePolicy = Field(
        default_factory=ClearancePolicy,
        description="viral clearance on every path from a pool to a final lot",
        json_schema_extra={"source": "ICH Q5A; CPMP/BWP/268/95"},
    )
    release: ReleasePolicy = Field(
        default_factory=ReleasePolicy,
        description="who may release what",
        json_schema_extra={"source": "21 CFR Part 11; EU GMP Annex 11"},
    )

    @model_validator(mode="after")
    def _panel_markers_defer_permanently(self) -> Policy:
        for marker in (*self.required_panel, *LAW_DEFER_MARKERS):
            action = self.markers.get(marker)
            if action is not None and action.on_reactive != OnReactive.DEFER_PERMANENTLY:
                raise ValueError(
                    f"markers.{marker.value}.on_reactive = {action.on_reactive.value} relaxes the law: a reactive "
                    "result for HIV, HBV, HCV or a required-panel marker defers the donor permanently (21 CFR 610.41)"
                )
        syphilis = self.markers.get(Marker.SYPHILIS)
        if syphilis is not None and syphilis.on_reactive == OnReactive.REJECT_UNIT:
            raise ValueError(
                "markers.syphilis.on_reactive = reject-unit relaxes the law: a donor with a reactive syphilis test "
                "is not plasmapheresed again until tested nonreactive (21 CFR 640.65(b)(2)(ii))"
            )
        anti_d = self.products.get("anti-d")
        if anti_d is not None and Marker.B19_DNA not in anti_d.pool_limits_iu_per_ml:
            raise ValueError("products.anti-d.pool_limits_iu_per_ml relaxes the law: anti-D pools need b19-dna")
        return self

    @property
    def panel(self) -> tuple[str, ...]:
        """The required panel as marker codes (read for every unit checked)."""
        return tuple(m.value for m in self.required_panel)

    def product(self, name: str) -> ProductPolicy:
        """The final product's policy. Raises InvalidInput naming the known products."""
        try:
            return self.products[name]
        except KeyError:
            known = ", ".join(sorted(self.products))
            raise InvalidInput(f"Product {name!r} is not in the policy; known final products: {known}.") from None

    def min_donors_for(self, product: str) -> int:
        """Distinct donors a pool of the product needs: the policy's minimum, raised by the product's own (a product
        the policy no longer names gets the policy's minimum)."""
        own = self.products.get(product)
        return max(self.min_donors, (own.min_donors if own is not None else None) or 0)

    def on_reactive(self, marker: Marker) -> OnReactive:
        """What a reactive result on the marker sets off: the required panel and every HIV, HBV and HCV marker
        always defer permanently."""
        if marker in self.required_panel or marker in LAW_DEFER_MARKERS:
            return OnReactive.DEFER_PERMANENTLY
        found = self.markers.get(marker)
        return found.on_reactive if found is not None else OnReactive.REJECT_UNIT

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def digest(self) -> str:
        return policy_digest(self)


def policy_digest(policy: Policy) -> str:
    """SHA-256 of the policy's canonical JSON: what a release records as the policy in force."""
    canonical = json.dumps(policy.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class PolicyKey:
    """One policy key as ``policy show`` and README's rule table present it."""

    name: str
    value: Any
    meaning: str
    law: str
    source: str


def policy_keys(policy: Policy = DEFAULT_POLICY) -> list[PolicyKey]:
    """Every key of the policy in force, each with its meaning, the law's limit and the source, all read from the
    declarations above. Products and markers are shown once per entry (``products.anti-d.pool_tests``)."""
    keys: list[PolicyKey] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, info in type(model).model_fields.items():
            value = getattr(model, name)
            dotted = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(value, f"{dotted}.")
                continue
            if isinstance(value, dict) and value and all(isinstance(v, BaseModel) for v in value.values()):
                for entry, sub in sorted(value.items(), key=lambda item: str(item[0])):
                    walk(sub, f"{dotted}.{getattr(entry, 'value', entry)}.")
                continue
            laws = [m.text for m in info.metadata if isinstance(m, Law)]
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            keys.append(
                PolicyKey(dotted, _plain(value), info.description or "", "; ".join(laws), str(extra.get("source", "")))
            )

    walk(policy, "")
    return keys


def policy_key_names() -> list[str]:
    """The keys as README's rule table names them: one name per declared field, products and markers generic."""
    names: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
            elif name == "products":
                walk(ProductPolicy, f"{prefix}products.<product>.")
            elif name == "markers":
                walk(MarkerPolicy, f"{prefix}markers.<marker>.")
            else:
                names.append(f"{prefix}{name}")

    walk(Policy, "")
    return names


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return " ".join(str(getattr(v, "value", v)) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{getattr(k, 'value', k)}={getattr(v, 'value', v)}" for k, v in value.items())
    return getattr(value, "value", value)


RENAMED_KEYS = {
    "lookback_days": "lookback_months (calendar months; US 12, EU at least 6)",
    "qualification_window_days": "qualification_months (calendar months, at most 6)",
    "qualification_donations": "nothing: a unit qualifies with one other nonreactive donation within "
    "qualification_months",
}


def load_policy(path: Path | None) -> Policy:
    """The default policy, overridden by the TOML file when one is given. Raises InvalidPolicy naming the key."""
    if path is None:
        return DEFAULT_POLICY
    path = Path(path)
    if path.is_dir():
        raise InvalidPolicy(f"Policy file {path} is a folder; give a TOML file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidPolicy(f"Policy file {path} does not exist.") from None
    except PermissionError:
        raise InvalidPolicy(f"Policy file {path} cannot be read (permission denied).") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise InvalidPolicy(f"Policy file {path} is not valid TOML: {error}") from None
    renamed = [f"{old} is now {new}" for old, new in RENAMED_KEYS.items() if old in data]
    if renamed:
        raise InvalidPolicy(f"Policy file {path} uses a retired key: " + "; ".join(renamed) + ".")
    products: dict[str, Any] = dict(_default_products())
    overrides = data.pop("products", None) or {}
    if not isinstance(overrides, dict):
        raise InvalidPolicy(f"Policy file {path} is invalid: products: a table of products is expected.")
    for name, override in overrides.items():
        base = products.get(name, ProductPolicy()).model_dump()
        products[name] = override if not isinstance(override, dict) else {**base, **override}
    # Tables of one entry per method or marker override the entries they name and keep the others.
    clearance = data.get("clearance")
    if isinstance(clearance, dict) and isinstance(clearance.get("mechanisms"), dict):
        clearance["mechanisms"] = {**{m.value: v for m, v in DEFAULT_MECHANISMS.items()}, **clearance["mechanisms"]}
    if isinstance(data.get("markers"), dict):
        data["markers"] = {**{m.value: p.model_dump() for m, p in _default_markers().items()}, **data["markers"]}
    try:
        return Policy.model_validate({**data, "products": products})
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors())
        raise InvalidPolicy(f"Policy file {path} is invalid: {problems}") from None


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


# --- eligibility (SPEC §4, rules 1-6) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitFacts:
    """What the eligibility rules need to know about one unit, loaded set-based by the queries."""

    unit_number: str
    status: UnitStatus
    collected_at: datetime
    volume_ml: int
    current_results: dict[str, str]
    donor_code: str
    qualified: bool
    deferral_at_collection: str | None
    already_pooled_in: str | None = None
    donation_id: int | None = None
    timezone: str = DEFAULT_TIMEZONE
    open_case: str | None = None
    donor_reactive: str | None = None
    other_reactive: tuple[str, ...] = ()
    """Markers outside the required panel whose current result on this unit is reactive."""


def unit_in_inventory_problem(unit: UnitFacts, *, pooled_ok_in: str | None = None) -> str | None:
    """Rule 1: the unit is in inventory (or, when its pool is being closed, pooled there) and no open look-back case
    holds it."""
    if unit.status == UnitStatus.POOLED:
        if pooled_ok_in is None or unit.already_pooled_in != pooled_ok_in:
            where = f"pool {unit.already_pooled_in}" if unit.already_pooled_in else "a pool"
            return f"not in inventory: already in {where}"
    elif unit.status != UnitStatus.IN_INVENTORY:
        return f"not in inventory: {unit.status.value}"
    if unit.open_case:
        return f"held by open look-back case {unit.open_case}"
    return None


def screening_problems(current_results: dict[str, str], required_panel: Sequence[str]) -> list[str]:
    """Rule 2 (``required_panel``): every panel marker has a current result, and each is nonreactive."""
    if all(current_results.get(m) == ResultValue.NONREACTIVE for m in required_panel):
        return []
    reasons = []
    missing = [m for m in required_panel if m not in current_results]
    if missing:
        reasons.append(f"screening incomplete: no result for {', '.join(missing)}")
    reactive = [m for m in required_panel if current_results.get(m) == ResultValue.REACTIVE]
    if reactive:
        reasons.append(f"reactive: {', '.join(reactive)}")
    invalid = [m for m in required_panel if current_results.get(m) == ResultValue.INVALID]
    if invalid:
        reasons.append(f"invalid result, retest needed: {', '.join(invalid)}")
    return reasons


def panel_complete_and_nonreactive(current_results: dict[str, str], policy: Policy = DEFAULT_POLICY) -> bool:
    """A donation whose required panel is complete and wholly nonreactive: it qualifies and anchors look-back."""
    return not screening_problems(current_results, policy.panel)


def hold_ends_at(collected_at: datetime, hold_days: int) -> datetime:
    """Rule 3 (``hold_days``): the instant the inventory hold ends, exactly hold_days after collection."""
    return collected_at + timedelta(days=hold_days)


def hold_problem(collected_at: datetime, *, now: datetime, hold_days: int, timezone: str) -> str | None:
    """Rule 3: the hold has passed at ``now``; the end is shown in the collection centre's local time."""
    ends = hold_ends_at(collected_at, hold_days)
    if now >= ends:
        return None
    local = calendars.local_time(ends, timezone)
    return f"inventory hold until {local.strftime('%Y-%m-%d %H:%M')} {timezone} ({hold_days} days)"


def qualified_for_unit(unit_day: date, other_qualifying_days: Iterable[date], qualification_months: int) -> bool:
    """Rule 4 (``qualification_months``): the donor is qualified for this unit.

    Qualification belongs to the unit (PPTA IQPP; DOMAIN §2.11): the unit is usable only when another donation of
    the donor with a complete nonreactive panel was collected within qualification_months calendar months of it,
    before or after, on local days. So an applicant's first unit waits for a second nonreactive donation within
    the months, and is never usable when the second came later; and a donor away longer than the months is an
    applicant again: the first unit after the gap waits for the next. (A qualifying pair before the unit with no
    longer gap since then always includes the donation just before the unit, which is within the months.)
    """
    return any(calendars.within_months(day, unit_day, qualification_months) for day in other_qualifying_days)


def deferral_covers(starts_on: date, ends_on: date | None, lifted_on: date | None, day: date) -> bool:
    """Rule 5: a deferral covers the local days from starts_on up to, not including, ends_on (or the day it was
    lifted)."""
    end = min(d for d in (ends_on, lifted_on) if d is not None) if (ends_on or lifted_on) else None
    return starts_on <= day and (end is None or day < end)


def volume_problem(volume_ml: int) -> str | None:
    """Rule 6: the unit has a positive volume."""
    return None if volume_ml > 0 else f"volume {volume_ml} mL is not positive"


def eligibility_problems(
    unit: UnitFacts, *, now: datetime, policy: Policy = DEFAULT_POLICY, pooled_ok_in: str | None = None
) -> list[str]:
    """Every reason the unit may not be pooled (empty when eligible): SPEC §4 rules 1-6 in order.

    ``pooled_ok_in`` names the pool the unit is already a member of when a pool is being closed: being pooled
    there is expected, anything else about its status is not.
    """
    reasons: list[str] = []
    if problem := unit_in_inventory_problem(unit, pooled_ok_in=pooled_ok_in):
        reasons.append(problem)
    reasons.extend(screening_problems(unit.current_results, policy.panel))
    if unit.other_reactive:  # every reactive result rejects its unit (markers.<marker>.on_reactive)
        reasons.append(f"reactive: {', '.join(unit.other_reactive)} (not on the panel; the unit is rejected)")
    if unit.donor_reactive:
        reasons.append(f"donor {unit.donor_code} has a reactive result: {unit.donor_reactive}")
    if problem := hold_problem(unit.collected_at, now=now, hold_days=policy.hold_days, timezone=unit.timezone):
        reasons.append(problem)
    if not unit.qualified:
        reasons.append(
            f"donor {unit.donor_code} not qualified for this unit: no other donation with a complete nonreactive "
            f"panel within {policy.qualification_months} calendar months of it"
        )
    if unit.deferral_at_collection:
        reasons.append(f"donor {unit.donor_code} was deferred at collection: {unit.deferral_at_collection}")
    if problem := volume_problem(unit.volume_ml):
        reasons.append(problem)
    return reasons


def check_pool_composition(pool_number: str, donor_count: int, min_donors: int) -> None:
    """A pool closes with at least ``min_donors`` distinct donors (``Policy.min_donors_for`` the product)."""
    if donor_count < min_donors:
        raise NotEnoughDonors(pool_number, found=donor_count, required=min_donors)


# --- look-back (SPEC §4, last paragraph) ---------------------------------------------------------------------------


def lookback_anchor(nonreactive: Iterable[tuple[datetime, date]], first_reactive_at: datetime | None) -> date | None:
    """The local day of the donor's last nonreactive donation, from which the look-back window counts back: the
    last one collected before the donor's first reactive donation. A nonreactive donation collected after the
    reactive one (before its result came back: donors give twice a week) must not move the window later.
    ``nonreactive``: (collected at, local day) of the donations with a complete nonreactive panel."""
    days = [(at, day) for at, day in nonreactive if first_reactive_at is None or at < first_reactive_at]
    return max(days)[1] if days else None


def lookback_window_starts_on(last_nonreactive_day: date, lookback_months: int) -> date:
    """The first local day of the look-back window (``lookback_months``): the same day that many calendar months
    before the donor's last nonreactive donation, the whole day included (21 CFR 610.46: "twelve months and less
    before"); 2024-03-01 gives 2023-03-01, 2024-02-29 gives 2023-02-28."""
    return calendars.add_months(last_nonreactive_day, -lookback_months)


def case_due_on(received_on: date, days: int) -> date:
    """The last local day on which a look-back task counted in calendar days is on time: ``days`` calendar days
    after the day of the reactive test or of the information (30 November + 3 days: 3 December)."""
    return received_on + timedelta(days=days)


def days_late(due_on: date | None, today: date) -> int:
    """Whole calendar days a task is late on ``today`` (0 on its due day and before)."""
    return 0 if due_on is None else max(0, (today - due_on).days)


def in_lookback_window(collection_day: date, starts_on: date | None) -> bool:
    """A donation is in the window when collected on or after its first day (no nonreactive donation: all are)."""
    return starts_on is None or collection_day >= starts_on


# --- products (SPEC §4: a lot's product, its pools' product) -------------------------------------------------------


def lot_product_problem(product: str, kind: str, policy: Policy) -> str | None:
    """A final lot names a final product of the policy (``products``); an intermediate lot a declared intermediate
    (``intermediates``) or a final product."""
    if product in policy.products:
        return None
    if kind != "final" and product in policy.intermediates:
        return None
    finals = ", ".join(sorted(policy.products))
    if kind == "final":
        return f"product {product!r} is not a final product of the policy (known: {finals})"
    known = ", ".join(sorted(policy.intermediates))
    return f"product {product!r} is not in the policy (final products: {finals}; intermediates: {known})"


def upstream_product_problems(product: str, upstream_pools: Iterable[tuple[str, str]]) -> list[str]:
    """Every pool upstream of a final lot was made for that final product: (pool_number, product) pairs."""
    return [
        f"pool {number} was made for {pool_product}, not {product}"
        for number, pool_product in sorted(upstream_pools)
        if pool_product != product
    ]


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
    if measured is None or not math.isfinite(measured) or measured < 0:
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
