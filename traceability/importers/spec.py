"""What describes one kind of import file: its columns, its row type, its parsers and its loader, in one
:class:`ImportSpec` that the kind's module declares and :mod:`traceability.importers.registry` lists.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..errors import InvalidInput
from ..services.units import CLOCK_SKEW

if TYPE_CHECKING:
    from .job import ImportJob
    from .readers import Record

ROW = "row"
"""The column named in problems that concern a whole row (field count, encoding) rather than one cell."""


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


@dataclass(frozen=True)
class RowProblem:
    """One problem of one row: its physical line, the column (or ``row``), and what is wrong."""

    line: int
    field: str
    message: str

    def render(self, file: str) -> str:
        """The problem as ``FILE:LINE: column: message``."""
        return f"{file}:{self.line}: {self.field}: {self.message}"


class Row(Protocol):
    """A valid row of any kind: its physical line, the key that makes it unique in the file, and a label that
    names it in messages (``unit A9999...``)."""

    @property
    def line(self) -> int: ...

    @property
    def key(self) -> Hashable: ...

    @property
    def label(self) -> str: ...


R = TypeVar("R", bound=Row)

Cells = dict[str, str | None]
"""The cells of a row: each column to its stripped text, None when blank."""
Parsed = tuple[R | None, list[RowProblem]]


@dataclass(frozen=True)
class ImportSpec(Generic[R]):
    """Everything that makes one kind of import file what it is.

    ``parse`` checks every cell of a row and names each problem; ``fast`` builds the same row straight from the
    record's fields for a row that is valid (giving up with None or InvalidInput at the first sign of trouble, so
    that ``parse`` then names the problems; a test checks both agree). Its ``positions`` are those of
    ``columns.known`` in the file's header (None when absent) and ``limit`` the latest time accepted. ``load``
    resolves a chunk's valid rows against the database and writes them through the job; ``model`` is the table
    they go to (its ids mark which chunk wrote a row). ``key_column`` names the column of a duplicate, ``hint``
    ends the message of a row recorded before with different values.
    """

    name: str
    columns: Columns
    parse: Callable[[int, Cells, datetime], Parsed[R]]
    fast: Callable[[int, list[str], tuple[int | None, ...], datetime], R | None]
    load: Callable[[ImportJob, list[R]], None]
    model: type[Any]
    key_column: str
    hint: str


class RowParser(Generic[R]):
    """Turns the records of one file of one kind into rows: the fast path for a valid row, else every problem.

    Call it with a :class:`~traceability.importers.readers.Record`; it gives the row and no problems, or None
    and every problem of the record (those found reading it first, then those of its cells).
    """

    def __init__(self, spec: ImportSpec[R], *, now: datetime) -> None:
        self.spec, self.now = spec, now
        self._parse, self._fast = spec.parse, spec.fast
        self._known = spec.columns.known
        self._limit = now + CLOCK_SKEW
        self._layout: object | None = None  # the header the positions were found for
        self._ix: tuple[int | None, ...] = ()

    def __call__(self, record: Record) -> Parsed[R]:
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
        row, problems = self._parse(record.line, record.cells, self.now)
        if record.problems:
            return None, [*record.problems, *problems]
        return row, problems
