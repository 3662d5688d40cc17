"""Reading the cells of a row, shared by every kind: a problem collector, the parsers of values that several kinds
hold (unit numbers, times, codes), and the problems that name a missing reference.

Everything here is pure: a row is checked on its own, without the database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import TypeVar

from ..errors import InvalidInput
from ..identifiers import UnitNumber, parse_unit_number
from ..parsing import parse_timestamp
from ..services.units import CLOCK_SKEW
from .spec import Cells, RowProblem

T = TypeVar("T")

CODE_MAX = 40
"""The longest donor code, establishment code or pool number the database holds."""


class CellReader:
    """Reads the cells of one row, collecting a problem per bad cell instead of stopping at the first."""

    def __init__(self, line: int, cells: Cells) -> None:
        self.line, self.cells = line, cells
        self.problems: list[RowProblem] = []

    def problem(self, column: str, message: str) -> None:
        self.problems.append(RowProblem(self.line, column, message))

    def required(self, column: str, parse: Callable[[str], T]) -> T | None:
        if column not in self.cells:
            return None  # unusable (e.g. too long): already reported by the reader
        text = self.cells[column]
        if text is None:
            self.problem(column, "is empty; a value is required.")
            return None
        return self._parse(column, parse, text)

    def optional(self, column: str, parse: Callable[[str], T]) -> T | None:
        text = self.cells.get(column)
        return None if text is None else self._parse(column, parse, text)

    def not_future(self, column: str, value: datetime | None, now: datetime) -> None:
        if value is not None and value > now + CLOCK_SKEW:
            self.problem(column, f"{value.isoformat()} is in the future.")

    def _parse(self, column: str, parse: Callable[[str], T], text: str) -> T | None:
        try:
            return parse(text)
        except InvalidInput as error:
            self.problem(column, str(error))
            return None


# The same unit number, time, marker or method comes back on many rows of a file (a results file has a line per
# marker of each unit): parsing each distinct text once is most of the parsing work saved. Bounded, and only
# successes are kept (a bad cell raises again, with the same message).
CACHED = 1 << 12


@lru_cache(maxsize=CACHED)
def unit_number(text: str) -> UnitNumber:
    return parse_unit_number(text)


@lru_cache(maxsize=CACHED)
def timestamp(text: str) -> datetime:
    return parse_timestamp(text, "time")


@lru_cache(maxsize=1024)
def establishment(text: str) -> str:
    return parse_code(text, "establishment code")


@lru_cache(maxsize=CACHED)
def donor_code(text: str) -> str:
    return parse_code(text, "donor code")


def parse_code(text: str, what: str) -> str:
    """A donor code, establishment code or pool number: printable, no spaces, at most 40 characters."""
    if len(text) > CODE_MAX:
        raise InvalidInput(f"{what} {text[:CODE_MAX]!r}... is longer than {CODE_MAX} characters.")
    # isprintable() is False for every white space but the ASCII space (Unicode separators are not printable).
    if not text.isprintable() or " " in text:
        raise InvalidInput(f"{what} {text!r} contains spaces or control characters.")
    return text


def missing(line: int, column: str, what: str, key: str, fix: str) -> RowProblem:
    """A row naming a record that is not in the database."""
    return RowProblem(line, column, f"{what} {key} is not in the database; {fix}.")


def unknown_establishment(line: int, column: str, code: str) -> RowProblem:
    return missing(line, column, "establishment", code, "add it first with 'plasmatrace establishment add'")


def unknown_unit(line: int, unit_number: str) -> RowProblem:
    return missing(
        line,
        "unit_number",
        "unit",
        unit_number,
        "import the donations file first, or add it with 'plasmatrace donation add'",
    )
