"""Results files: a screening result per row (unit_number, marker, result, tested_at; optionally method, lab, value,
unit). A reactive result rejects, defers and interdicts as recording it by hand does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import select
from sqlmodel import col

from ..errors import InvalidInput
from ..models import Donation, Donor, Establishment, Marker, ResultValue, TestMethod, TestResult
from ..parsing import parse_choice, parse_float, parse_marker, parse_result
from ..rules import OnReactive
from ..services.units import ResultOutcome, apply_reactive, end_deferrals_on_nonreactive
from .cells import CellReader, establishment, timestamp, unit_number, unknown_establishment, unknown_unit
from .spec import Cells, Columns, ImportSpec, RowProblem

if TYPE_CHECKING:
    from .job import ImportJob

VALUE_UNIT_MAX = 20


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


_marker = lru_cache(maxsize=256)(parse_marker)
_result = lru_cache(maxsize=256)(parse_result)


@lru_cache(maxsize=256)
def _method(text: str) -> TestMethod:
    return parse_choice(TestMethod, text, "method")


def _value_unit(text: str) -> str:
    if len(text) > VALUE_UNIT_MAX:
        raise InvalidInput(f"unit {text[:VALUE_UNIT_MAX]!r}... is longer than {VALUE_UNIT_MAX} characters.")
    return text


def _value(text: str) -> float:
    value = parse_float(text, "value")
    if value < 0:
        raise InvalidInput(f"value {value:g} is negative.")
    return value


def parse_test_result(line: int, cells: Cells, now: datetime) -> tuple[ResultRow | None, list[RowProblem]]:
    """A results-file row, or the problems that stop it."""
    c = CellReader(line, cells)
    unit = c.required("unit_number", unit_number)
    marker = c.required("marker", _marker)
    result = c.required("result", _result)
    tested_at = c.required("tested_at", timestamp)
    method = c.optional("method", _method)
    lab = c.optional("lab", establishment)
    value = c.optional("value", _value)
    value_unit = c.optional("unit", _value_unit)
    c.not_future("tested_at", tested_at, now)
    if "value" in cells and "unit" in cells and (cells["value"] is None) != (cells["unit"] is None):
        blank = "unit" if cells["unit"] is None else "value"
        c.problem(blank, "is empty; a quantitative result needs both value and unit.")
    if c.problems or unit is None or marker is None or result is None or tested_at is None:
        return None, c.problems
    return ResultRow(line, unit.value, marker, result, tested_at, method, lab, value, value_unit), []


def fast_result(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> ResultRow | None:
    """The row of a valid record, read straight from its fields (see :class:`ImportSpec`)."""
    i_unit, i_marker, i_result, i_tested, i_method, i_lab, i_value, i_value_unit = ix
    unit, marker = f[i_unit].strip(), f[i_marker].strip()  # type: ignore[index]
    result, tested = f[i_result].strip(), f[i_tested].strip()  # type: ignore[index]
    method = f[i_method].strip() if i_method is not None else ""
    lab = f[i_lab].strip() if i_lab is not None else ""
    value = f[i_value].strip() if i_value is not None else ""
    value_unit = f[i_value_unit].strip() if i_value_unit is not None else ""
    if not (unit and marker and result and tested) or bool(value) != bool(value_unit):
        return None
    tested_at = timestamp(tested)
    if tested_at > limit:
        return None
    return ResultRow(
        line,
        unit_number(unit).value,
        _marker(marker),
        _result(result),
        tested_at,
        _method(method) if method else None,
        establishment(lab) if lab else None,
        _value(value) if value else None,
        _value_unit(value_unit) if value_unit else None,
    )


class _Unit(NamedTuple):
    """A unit named by the chunk, as recorded."""

    id: int
    collected_at: datetime


class _Reactive(NamedTuple):
    """A reactive result written by this chunk: its row, unit and version."""

    row: ResultRow
    donation_id: int
    version: int


_COLUMNS = (
    "donation_id",
    "marker",
    "version",
    "result",
    "value",
    "value_unit",
    "method",
    "lab_id",
    "tested_at",
    "reason",
)


def load_results(job: ImportJob, rows: list[ResultRow]) -> None:
    """Record the results not recorded yet, each a new version of its unit's marker; then, once written, apply
    the reactive ones and end the deferrals that a nonreactive retest ends."""
    session = job.session
    units: dict[str, _Unit] = {
        number: _Unit(donation_id, collected_at)
        for number, donation_id, collected_at in session.execute(
            select(col(Donation.unit_number), col(Donation.id), col(Donation.collected_at)).where(
                job.among(col(Donation.unit_number), {r.unit_number for r in rows})
            )
        )
    }
    labs = job.establishment_ids(r.lab for r in rows)
    latest: dict[tuple[int, str], int] = {}
    recorded_keys: dict[tuple[int, str, datetime], Any] = {}
    if units:
        for recorded in session.execute(
            select(
                col(TestResult.donation_id),
                col(TestResult.marker),
                col(TestResult.version),
                col(TestResult.tested_at),
                col(TestResult.result),
                col(TestResult.value),
                col(TestResult.value_unit),
                col(TestResult.method),
                col(Establishment.code).label("lab"),
                col(TestResult.id),
                col(TestResult.import_event_id),
            )
            .outerjoin(Establishment, col(Establishment.id) == col(TestResult.lab_id))
            .where(job.among(col(TestResult.donation_id), [u.id for u in units.values()]))
            .order_by(col(TestResult.version))
        ):
            latest[(recorded.donation_id, recorded.marker.value)] = recorded.version
            recorded_keys[(recorded.donation_id, recorded.marker.value, recorded.tested_at)] = recorded  # newest wins
    time = job.time
    created_at, created_by, event_id = job.recorded()
    reactive: list[_Reactive] = []
    awaited: dict[Marker, list[int]] = {
        m: [] for m in Marker if job.policy.on_reactive(m) == OnReactive.DEFER_UNTIL_NONREACTIVE
    }
    with job.writing(TestResult, _COLUMNS) as write:
        # The previous chunk's rows are not in the database yet: their keys and versions for this chunk's units.
        being_written: set[tuple[int, str, Any]] = set()
        shared: set[int] = set()  # units with rows in both chunks: usually one or none
        ids = {unit.id for unit in units.values()}
        for donation_id, marker_text, tested_text, version in job.pending_where(
            "donation_id", ids, "donation_id", "marker", "tested_at", "version"
        ):
            being_written.add((donation_id, marker_text, tested_text))
            shared.add(donation_id)
            if version > latest.get((donation_id, marker_text), 0):
                latest[(donation_id, marker_text)] = version
        for r in rows:
            unit = units.get(r.unit_number)
            marker = str(r.marker)  # the value: StrEnum's str() is str's own, faster than .value
            old: Any = None
            if recorded_keys and unit is not None:
                old = recorded_keys.get((unit.id, marker, r.tested_at))
                if old is not None and old.import_event_id == event_id:
                    job.duplicate(r, old.id)
                    continue
            if (
                shared
                and unit is not None
                and unit.id in shared
                and (unit.id, marker, time(r.tested_at)) in being_written
            ):
                job.duplicate_pending(r)
                continue
            lab = r.lab
            if unit is None or r.tested_at < unit.collected_at or (lab is not None and lab not in labs):
                job.reject(r.line, _result_problems(r, unit, labs))
                continue
            if old is not None:
                job.compare(
                    r,
                    [
                        ("result", old.result, r.result),
                        ("value", old.value, r.value),
                        ("unit", old.value_unit, r.value_unit),
                        ("method", old.method, r.method),
                        ("lab", old.lab, lab),
                    ],
                )
                continue
            key = (unit.id, marker)
            version = latest.get(key, 0) + 1
            latest[key] = version
            write(
                (
                    unit.id,
                    marker,
                    version,
                    str(r.result),
                    r.value,
                    r.value_unit,
                    None if r.method is None else str(r.method),
                    None if lab is None else labs[lab],
                    time(r.tested_at),
                    None if version == 1 else "repeat test",
                    created_at,
                    created_by,
                    event_id,
                )
            )
            if r.result is ResultValue.REACTIVE:
                reactive.append(_Reactive(r, unit.id, version))
            elif r.result is ResultValue.NONREACTIVE and r.marker in awaited:
                awaited[r.marker].append(unit.id)
    for found in reactive:
        job.note_reactive(found.row.unit_number)
    if reactive:
        job.when_written(lambda: _apply_reactive_results(job, reactive))
    if any(awaited.values()):
        job.when_written(lambda: _end_awaited_deferrals(job, awaited))


def _result_problems(r: ResultRow, unit: _Unit | None, labs: dict[str, int]) -> list[RowProblem]:
    problems = []
    if unit is None:
        problems.append(unknown_unit(r.line, r.unit_number))
    elif r.tested_at < unit.collected_at:
        problems.append(
            RowProblem(
                r.line,
                "tested_at",
                f"{r.tested_at.isoformat()} is before unit {r.unit_number} was collected "
                f"({unit.collected_at.isoformat()}).",
            )
        )
    if r.lab is not None and r.lab not in labs:
        problems.append(unknown_establishment(r.line, "lab", r.lab))
    return problems


def _end_awaited_deferrals(job: ImportJob, awaited: dict[Marker, list[int]]) -> None:
    """Nonreactive results on markers whose reactive result defers until a nonreactive retest (syphilis) end those
    deferrals, as recording the result by hand does; one statement per such marker and chunk."""
    if job.dry_run or job.failing:
        return
    for marker, donation_ids in awaited.items():
        end_deferrals_on_nonreactive(job.session, donation_ids, marker, actor=job.actor, policy=job.policy)


def _apply_reactive_results(job: ImportJob, reactive: list[_Reactive]) -> None:
    """Reject, defer and interdict for each reactive row, as recording the result by hand does.

    Reactive results are rare, so this goes row by row through the same code as ``result add``.
    """
    if job.dry_run or job.failing:
        return  # the import will be undone: its consequences need not be worked out
    session = job.session
    # Rows bulk-loaded in this transaction have no planner statistics yet; without them the look-back query of each
    # reactive row scans every result (seconds per row on a large database instead of milliseconds).
    job.refresh_statistics("donation", "test_result")
    ids = sorted({found.donation_id for found in reactive})
    # populate_existing: set-based updates elsewhere (pooling) may have left copies in the session stale.
    units = {
        unit.id: unit
        for unit in session.execute(
            select(Donation).where(col(Donation.id).in_(ids)).execution_options(populate_existing=True)
        ).scalars()
    }
    donors = dict(
        session.execute(
            select(col(Donation.id), col(Donor.donor_code))
            .join(Donor, col(Donor.id) == col(Donation.donor_id))
            .where(col(Donation.id).in_(ids))
        ).all()
    )
    results = {
        (result.donation_id, result.marker.value, result.version): result
        for result in session.execute(
            select(TestResult).where(
                col(TestResult.donation_id).in_(ids), col(TestResult.import_event_id) == job.event_id
            )
        ).scalars()
    }
    for found in reactive:
        unit = units[found.donation_id]
        outcome = ResultOutcome(
            result=results[(found.donation_id, found.row.marker.value, found.version)],
            unit_number=unit.unit_number,
            donor_code=donors[found.donation_id],
        )
        apply_reactive(session, unit, found.row.marker, outcome, actor=job.actor, policy=job.policy)


SPEC = ImportSpec(
    name="results",
    columns=Columns(("unit_number", "marker", "result", "tested_at"), ("method", "lab", "value", "unit")),
    parse=parse_test_result,
    fast=fast_result,
    load=load_results,
    model=TestResult,
    key_column="unit_number",
    hint="a corrected result is a new test: give it its own tested_at, or use 'plasmatrace result add'",
)
