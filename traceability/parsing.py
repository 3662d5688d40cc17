"""Parsing of the values users type and files carry: times, dates, markers, results. Raises InvalidInput."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import Enum
from typing import TypeVar

from .errors import InvalidInput
from .models import Marker, ResultValue

E = TypeVar("E", bound=Enum)

RESULT_ALIASES = {
    "nonreactive": ResultValue.NONREACTIVE,
    "non-reactive": ResultValue.NONREACTIVE,
    "nr": ResultValue.NONREACTIVE,
    "negative": ResultValue.NONREACTIVE,
    "neg": ResultValue.NONREACTIVE,
    "reactive": ResultValue.REACTIVE,
    "r": ResultValue.REACTIVE,
    "positive": ResultValue.REACTIVE,
    "pos": ResultValue.REACTIVE,
    "invalid": ResultValue.INVALID,
}


def parse_timestamp(text: str, what: str = "time") -> datetime:
    """ISO 8601 with an offset, or UTC when none is given; a bare date means midnight UTC."""
    value = text.strip()
    if not value:
        raise InvalidInput(f"{what} is empty; expected ISO 8601, e.g. 2026-03-01T09:30:00Z.")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InvalidInput(f"{what} {text[:60]!r} is not an ISO 8601 time, e.g. 2026-03-01T09:30:00Z.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"{what} {text[:60]!r} lies outside the calendar (years 1-9999 in UTC).") from None


def parse_date(text: str, what: str = "date") -> date:
    value = text.strip()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{what} {text[:60]!r} is not a date of the form YYYY-MM-DD.") from None


def parse_choice(enum: type[E], text: str, what: str) -> E:
    value = text.strip().lower()
    for member in enum:
        if member.value == value:
            return member
    allowed = ", ".join(m.value for m in enum)
    raise InvalidInput(f"{what} {text!r} is not one of: {allowed}.")


def parse_marker(text: str) -> Marker:
    return parse_choice(Marker, text, "marker")


def parse_result(text: str) -> ResultValue:
    value = RESULT_ALIASES.get(text.strip().lower())
    if value is None:
        raise InvalidInput(
            f"result {text!r} is not one of: nonreactive (NR, non-reactive, negative), reactive (R, positive), invalid."
        )
    return value


def parse_positive_int(text: str, what: str, *, allow_zero: bool = False) -> int:
    try:
        value = int(text.strip().replace(",", "").replace("_", ""))
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a whole number.") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidInput(f"{what} {value} must be {'zero or more' if allow_zero else 'positive'}.")
    return value


def parse_float(text: str, what: str) -> float:
    try:
        value = float(text.strip().replace(",", ""))
    except ValueError:
        raise InvalidInput(f"{what} {text!r} is not a number.") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"{what} {text!r} is not a finite number.")
    return value


def parse_assignments(items: list[str], what: str) -> dict[str, str]:
    """KEY=VALUE pairs, as given to --param and --set."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{what} {item!r} is not of the form KEY=VALUE.")
        if key.strip() in result:
            raise InvalidInput(
                f"{what} {key.strip()} is given twice ({result[key.strip()]!r} and {value.strip()!r}); give it once."
            )
        result[key.strip()] = value.strip()
    return result
