"""Pool tests and pool release."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models import Marker, ResultValue
from .policy import (
    ProductPolicy,
)

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
