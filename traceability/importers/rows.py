"""Row models of the import files (SPEC §6): the columns of each kind and the typed, validated rows.

Everything here is pure: a row is checked on its own, without the database. References (donors, units,
establishments, pools) and keys already recorded are resolved by :mod:`traceability.importers.load`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar

from ..errors import InvalidInput
from ..identifiers import UnitNumber, parse_unit_number
from ..models import Marker, PlasmaKind, ResultValue, TestMethod
from ..parsing import (
    parse_choice,
    parse_date,
    parse_float,
    parse_marker,
    parse_positive_int,
    parse_result,
    parse_timestamp,
)
from ..services.units import CLOCK_SKEW

T = TypeVar("T")

CODE_MAX = 40
"""The longest donor code, establishment code or pool number the database holds."""
VALUE_UNIT_MAX = 20

ROW = "row"
"""The column named in problems that concern a whole row (field count, encoding) rather than one cell."""


class ImportKind(StrEnum):
    """What an import file holds; the value is the name used on the command line."""

    DONORS = "donors"
    DONATIONS = "donations"
    RESULTS = "results"
    POOL_MEMBERS = "pool-members"
    CONSIGNEES = "consignees"


@dataclass(frozen=True)
class Columns:
    """The header an import file of one kind may have."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    # A rejects file adds these two; ignoring them lets a corrected rejects file be imported as it is.
    ignored: tuple[str, ...] = ("line", "problem")

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.optional

    def describe(self) -> str:
        optional = f" (optional: {', '.join(self.optional)})" if self.optional else ""
        return f"{', '.join(self.required)}{optional}"


COLUMNS: dict[ImportKind, Columns] = {
    ImportKind.DONORS: Columns(("donor_code", "establishment"), ("registered_on",)),
    ImportKind.DONATIONS: Columns(
        ("unit_number", "donor_code", "collected_at", "volume_ml"), ("establishment", "plasma_kind", "frozen_at")
    ),
    ImportKind.RESULTS: Columns(("unit_number", "marker", "result", "tested_at"), ("method", "lab", "value", "unit")),
    ImportKind.POOL_MEMBERS: Columns(("pool_number", "unit_number")),
    ImportKind.CONSIGNEES: Columns(("code", "name", "address"), ("country",)),
}


@dataclass(frozen=True)
class RowProblem:
    """One problem of one row: its physical line, the column (or ``row``), and what is wrong."""

    line: int
    field: str
    message: str

    def render(self, file: str) -> str:
        """The problem as ``FILE:LINE: column: message``."""
        return f"{file}:{self.line}: {self.field}: {self.message}"


@dataclass(slots=True)
class DonorRow:
    """A donor to register."""

    line: int
    donor_code: str
    establishment: str
    registered_on: date | None

    @property
    def key(self) -> str:
        return self.donor_code

    @property
    def label(self) -> str:
        return f"donor {self.donor_code}"


@dataclass(slots=True)
class DonationRow:
    """A collection to record, its unit number parsed."""

    line: int
    unit: UnitNumber
    donor_code: str
    collected_at: datetime
    volume_ml: int
    establishment: str | None
    plasma_kind: PlasmaKind | None
    frozen_at: datetime | None

    @property
    def unit_number(self) -> str:
        return self.unit.value

    @property
    def key(self) -> str:
        return self.unit.value

    @property
    def label(self) -> str:
        return f"unit {self.unit.value}"


@dataclass(slots=True)
class ResultRow:
    """A screening result; its key is the unit, the marker and the test time."""

    line: int
    unit_number: str
    marker: Marker
    result: ResultValue
    tested_at: datetime
    method: TestMethod | None
    lab: str | None
    value: float | None
    value_unit: str | None

    @property
    def key(self) -> tuple[str, Marker, datetime]:
        return (self.unit_number, self.marker, self.tested_at)

    @property
    def label(self) -> str:
        return f"unit {self.unit_number} {self.marker.value} tested at {self.tested_at.isoformat()}"


@dataclass(slots=True)
class PoolMemberRow:
    """A unit to add to a pool."""

    line: int
    pool_number: str
    unit_number: str

    @property
    def key(self) -> str:
        # A unit can be in one pool only, so the unit alone is the key: the same unit twice is a duplicate even
        # when both lines name the same pool.
        return self.unit_number

    @property
    def label(self) -> str:
        return f"unit {self.unit_number}"


@dataclass(slots=True)
class ConsigneeRow:
    """A consignee to register, with its address (SPEC §10)."""

    line: int
    code: str
    name: str
    address: str
    country: str | None

    @property
    def key(self) -> str:
        return self.code

    @property
    def label(self) -> str:
        return f"consignee {self.code}"


Row = DonorRow | DonationRow | ResultRow | PoolMemberRow | ConsigneeRow


class _Cells:
    """Reads the cells of one row, collecting a problem per bad cell instead of stopping at the first."""

    def __init__(self, line: int, cells: dict[str, str | None]) -> None:
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

    def _parse(self, column: str, parse: Callable[[str], T], text: str) -> T | None:
        try:
            return parse(text)
        except InvalidInput as error:
            self.problem(column, str(error))
            return None


# The same unit number, time, marker or method comes back on many rows of a file (a results file has a line per
# marker of each unit): parsing each distinct text once is most of the parsing work saved. Bounded, and only
# successes are kept (a bad cell raises again, with the same message).
_CACHED = 1 << 12


@lru_cache(maxsize=_CACHED)
def _unit_number(text: str) -> UnitNumber:
    return parse_unit_number(text)


@lru_cache(maxsize=_CACHED)
def _time(text: str) -> datetime:
    return parse_timestamp(text, "time")


_marker = lru_cache(maxsize=256)(parse_marker)
_result = lru_cache(maxsize=256)(parse_result)


@lru_cache(maxsize=256)
def _method(text: str) -> TestMethod:
    return parse_choice(TestMethod, text, "method")


@lru_cache(maxsize=1024)
def _establishment(text: str) -> str:
    return parse_code(text, "establishment code")


@lru_cache(maxsize=_CACHED)
def _donor_code(text: str) -> str:
    return parse_code(text, "donor code")


@lru_cache(maxsize=64)
def _plasma_kind(text: str) -> PlasmaKind:
    return parse_choice(PlasmaKind, text, "plasma kind")


def _volume(text: str) -> int:
    return parse_positive_int(text, "volume (mL)", allow_zero=True)


def _pool_number(text: str) -> str:
    return parse_code(text, "pool number")


def parse_code(text: str, what: str) -> str:
    """A donor code, establishment code or pool number: printable, no spaces, at most 40 characters."""
    if len(text) > CODE_MAX:
        raise InvalidInput(f"{what} {text[:CODE_MAX]!r}... is longer than {CODE_MAX} characters.")
    # isprintable() is False for every white space but the ASCII space (Unicode separators are not printable).
    if not text.isprintable() or " " in text:
        raise InvalidInput(f"{what} {text!r} contains spaces or control characters.")
    return text


def _not_future(cells: _Cells, column: str, value: datetime | None, now: datetime) -> None:
    if value is not None and value > now + CLOCK_SKEW:
        cells.problem(column, f"{value.isoformat()} is in the future.")


def parse_donor(line: int, cells: dict[str, str | None], *, now: datetime) -> tuple[DonorRow | None, list[RowProblem]]:
    """A donors-file row, or the problems that stop it."""
    c = _Cells(line, cells)
    donor_code = c.required("donor_code", _donor_code)
    establishment = c.required("establishment", _establishment)
    registered_on = c.optional("registered_on", lambda t: parse_date(t, "date"))
    if registered_on is not None and registered_on > (now + CLOCK_SKEW).date():
        c.problem("registered_on", f"{registered_on.isoformat()} is in the future.")
    if c.problems or donor_code is None or establishment is None:
        return None, c.problems
    return DonorRow(line, donor_code, establishment, registered_on), []


def parse_donation(
    line: int, cells: dict[str, str | None], *, now: datetime
) -> tuple[DonationRow | None, list[RowProblem]]:
    """A donations-file row, or the problems that stop it."""
    c = _Cells(line, cells)
    unit = c.required("unit_number", _unit_number)
    donor_code = c.required("donor_code", _donor_code)
    collected_at = c.required("collected_at", _time)
    volume_ml = c.required("volume_ml", _volume)
    establishment = c.optional("establishment", _establishment)
    plasma_kind = c.optional("plasma_kind", _plasma_kind)
    frozen_at = c.optional("frozen_at", _time)
    _not_future(c, "collected_at", collected_at, now)
    if frozen_at is not None and collected_at is not None and frozen_at < collected_at:
        c.problem("frozen_at", f"{frozen_at.isoformat()} is before the collection at {collected_at.isoformat()}.")
    if c.problems or unit is None or donor_code is None or collected_at is None or volume_ml is None:
        return None, c.problems
    return DonationRow(line, unit, donor_code, collected_at, volume_ml, establishment, plasma_kind, frozen_at), []


def _value_unit(text: str) -> str:
    if len(text) > VALUE_UNIT_MAX:
        raise InvalidInput(f"unit {text[:VALUE_UNIT_MAX]!r}... is longer than {VALUE_UNIT_MAX} characters.")
    return text


def _value(text: str) -> float:
    value = parse_float(text, "value")
    if value < 0:
        raise InvalidInput(f"value {value:g} is negative.")
    return value


def parse_test_result(
    line: int, cells: dict[str, str | None], *, now: datetime
) -> tuple[ResultRow | None, list[RowProblem]]:
    """A results-file row, or the problems that stop it."""
    c = _Cells(line, cells)
    unit = c.required("unit_number", _unit_number)
    marker = c.required("marker", _marker)
    result = c.required("result", _result)
    tested_at = c.required("tested_at", _time)
    method = c.optional("method", _method)
    lab = c.optional("lab", _establishment)
    value = c.optional("value", _value)
    value_unit = c.optional("unit", _value_unit)
    _not_future(c, "tested_at", tested_at, now)
    if "value" in cells and "unit" in cells and (cells["value"] is None) != (cells["unit"] is None):
        blank = "unit" if cells["unit"] is None else "value"
        c.problem(blank, "is empty; a quantitative result needs both value and unit.")
    if c.problems or unit is None or marker is None or result is None or tested_at is None:
        return None, c.problems
    return ResultRow(line, unit.value, marker, result, tested_at, method, lab, value, value_unit), []


def parse_pool_member(
    line: int, cells: dict[str, str | None], *, now: datetime
) -> tuple[PoolMemberRow | None, list[RowProblem]]:
    """A pool-members-file row, or the problems that stop it."""
    c = _Cells(line, cells)
    pool_number = c.required("pool_number", _pool_number)
    unit = c.required("unit_number", _unit_number)
    if c.problems or pool_number is None or unit is None:
        return None, c.problems
    return PoolMemberRow(line, pool_number, unit.value), []


def parse_consignee(
    line: int, cells: dict[str, str | None], *, now: datetime
) -> tuple[ConsigneeRow | None, list[RowProblem]]:
    """A consignees-file row, or the problems that stop it: the same checks as `consignee add`."""
    from ..services.consignees import check_consignee

    c = _Cells(line, cells)
    for column in ("code", "name", "address"):
        if column in cells and cells[column] is None:
            c.problem(column, "is empty; a value is required.")
    if c.problems or any(column not in cells for column in ("code", "name", "address")):
        return None, c.problems
    try:
        fields = check_consignee(
            code=cells["code"] or "",
            name=cells["name"] or "",
            address=cells["address"] or "",
            country=cells.get("country"),
        )
    except InvalidInput as error:
        text = str(error)
        column = (
            "country"
            if "country" in text
            else "address"
            if "address" in text
            else "name"
            if ": name" in text
            else "code"
        )
        c.problem(column, text)
        return None, c.problems
    return ConsigneeRow(line, fields.code, fields.name, fields.address, fields.country), []


PARSERS: dict[ImportKind, Callable[..., tuple[Row | None, list[RowProblem]]]] = {
    ImportKind.DONORS: parse_donor,
    ImportKind.DONATIONS: parse_donation,
    ImportKind.RESULTS: parse_test_result,
    ImportKind.POOL_MEMBERS: parse_pool_member,
    ImportKind.CONSIGNEES: parse_consignee,
}


def parse_row(
    kind: ImportKind, line: int, cells: dict[str, str | None], *, now: datetime
) -> tuple[Row | None, list[RowProblem]]:
    """Validate one row of a file of the given kind: the typed row, or None and every problem found.

    ``cells`` maps each column to its stripped text, None when blank; a column left out was already reported
    as unusable by the reader and is not checked again.
    """
    return PARSERS[kind](line, cells, now=now)


# --- the fast path ---------------------------------------------------------------------------------------------
# Nearly every row of a real file is valid. For those, the functions below read the fields of the record straight
# (no cells, no problem collecting) with the same parsing functions as the thorough parsers above, and build the
# same row; at the first sign of trouble they give up (None, or InvalidInput) and the thorough parser runs to name
# every problem of the row. A test checks that both give the same rows. ``ix`` holds the position of each known
# column of the kind in the file's header (None when absent); ``limit`` is the latest time accepted.


def _fast_donor(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> DonorRow | None:
    i_code, i_site, i_registered = ix
    code, site = f[i_code].strip(), f[i_site].strip()  # type: ignore[index]
    registered = f[i_registered].strip() if i_registered is not None else ""
    if not (code and site):
        return None
    registered_on = parse_date(registered, "date") if registered else None
    if registered_on is not None and registered_on > limit.date():
        return None
    return DonorRow(line, _donor_code(code), _establishment(site), registered_on)


def _fast_donation(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> DonationRow | None:
    i_unit, i_donor, i_collected, i_volume, i_site, i_kind, i_frozen = ix
    unit, donor = f[i_unit].strip(), f[i_donor].strip()  # type: ignore[index]
    collected, volume = f[i_collected].strip(), f[i_volume].strip()  # type: ignore[index]
    site = f[i_site].strip() if i_site is not None else ""
    kind = f[i_kind].strip() if i_kind is not None else ""
    frozen = f[i_frozen].strip() if i_frozen is not None else ""
    if not (unit and donor and collected and volume):
        return None
    collected_at = _time(collected)
    frozen_at = _time(frozen) if frozen else None
    if collected_at > limit or (frozen_at is not None and frozen_at < collected_at):
        return None
    return DonationRow(
        line,
        _unit_number(unit),
        _donor_code(donor),
        collected_at,
        _volume(volume),
        _establishment(site) if site else None,
        _plasma_kind(kind) if kind else None,
        frozen_at,
    )


def _fast_result(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> ResultRow | None:
    i_unit, i_marker, i_result, i_tested, i_method, i_lab, i_value, i_value_unit = ix
    unit, marker = f[i_unit].strip(), f[i_marker].strip()  # type: ignore[index]
    result, tested = f[i_result].strip(), f[i_tested].strip()  # type: ignore[index]
    method = f[i_method].strip() if i_method is not None else ""
    lab = f[i_lab].strip() if i_lab is not None else ""
    value = f[i_value].strip() if i_value is not None else ""
    value_unit = f[i_value_unit].strip() if i_value_unit is not None else ""
    if not (unit and marker and result and tested) or bool(value) != bool(value_unit):
        return None
    tested_at = _time(tested)
    if tested_at > limit:
        return None
    return ResultRow(
        line,
        _unit_number(unit).value,
        _marker(marker),
        _result(result),
        tested_at,
        _method(method) if method else None,
        _establishment(lab) if lab else None,
        _value(value) if value else None,
        _value_unit(value_unit) if value_unit else None,
    )


def _fast_pool_member(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> PoolMemberRow | None:
    i_pool, i_unit = ix
    pool, unit = f[i_pool].strip(), f[i_unit].strip()  # type: ignore[index]
    if not (pool and unit):
        return None
    return PoolMemberRow(line, _pool_number(pool), _unit_number(unit).value)


def _fast_consignee(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> ConsigneeRow | None:
    from ..services.consignees import check_consignee

    i_code, i_name, i_address, i_country = ix
    code, name, address = f[i_code].strip(), f[i_name].strip(), f[i_address].strip()  # type: ignore[index]
    country = f[i_country].strip() if i_country is not None else ""
    if not (code and name and address):
        return None
    fields = check_consignee(code=code, name=name, address=address, country=country or None)
    return ConsigneeRow(line, fields.code, fields.name, fields.address, fields.country)


_FAST: dict[ImportKind, Callable[[int, list[str], tuple[int | None, ...], datetime], Row | None]] = {
    ImportKind.DONORS: _fast_donor,
    ImportKind.DONATIONS: _fast_donation,
    ImportKind.RESULTS: _fast_result,
    ImportKind.POOL_MEMBERS: _fast_pool_member,
    ImportKind.CONSIGNEES: _fast_consignee,
}


class RowParser:
    """Turns the records of one file of one kind into rows: the fast path for a valid row, else every problem.

    Call it with a :class:`~traceability.importers.readers.Record`; it gives the row and no problems, or None
    and every problem of the record (those found reading it first, then those of its cells).
    """

    def __init__(self, kind: ImportKind, *, now: datetime) -> None:
        self.kind, self.now = kind, now
        self._fast = _FAST[kind]
        self._known = COLUMNS[kind].known
        self._limit = now + CLOCK_SKEW
        self._layout: Any = None
        self._ix: tuple[int | None, ...] = ()

    def __call__(self, record: Any) -> tuple[Row | None, list[RowProblem]]:
        layout = record.layout
        if layout is not None and not record.problems:
            if layout is not self._layout:
                self._layout, self._ix = layout, tuple(layout.index.get(c) for c in self._known)
            try:
                row = self._fast(record.line, record.fields, self._ix, self._limit)
            except InvalidInput:
                row = None
            if row is not None:
                return row, []
        row, problems = parse_row(self.kind, record.line, record.cells, now=self.now)
        if record.problems:
            return None, [*record.problems, *problems]
        return row, problems
