"""The policy: named thresholds with their defaults, the law's limits and sources, overridable by TOML."""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum as _StdStrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import InvalidInput, InvalidPolicy
from ..models import Marker, StepMethod

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
