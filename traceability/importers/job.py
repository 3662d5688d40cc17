"""The state of one import, shared by every kind: counts, problems and rejects, conflicts, and the duplicates
found across chunks; and what loaders ask of it (key-set lookups, the values recorded on every row, writing).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Container, Hashable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlmodel import Session, SQLModel, col

from ..db import dialect
from ..db.bulk import driver_converter
from ..errors import Conflict, InvalidImportFile
from ..models import Establishment, utcnow
from ..rules import Policy
from .pipeline import Chunk, ChunkWriter
from .readers import Record, RecordStream, Resume, read_records
from .rejects import RejectsWriter
from .spec import ImportSpec, Parsed, Row, RowParser, RowProblem

PROBLEMS_KEPT = 50
RECORDED = ("created_at", "created_by", "import_event_id")
"""The columns every imported row records after its own: when, by whom, and by which import."""


def _shown(value: Any) -> str:
    if value is None:
        return "(blank)"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ImportJob:
    """The state of one import: counts, problems, keys seen so far in the file, and the rejects writer."""

    def __init__(
        self,
        session: Session,
        spec: ImportSpec[Any],
        path: Path,
        *,
        actor: str,
        policy: Policy,
        dry_run: bool,
        skip_invalid: bool,
        chunk_rows: int,
    ) -> None:
        self.session, self.spec, self.path, self.file = session, spec, path, str(path)
        self.actor, self.policy, self.dry_run, self.skip_invalid = actor, policy, dry_run, skip_invalid
        self.chunk_rows = chunk_rows
        self.now = self.stamp = utcnow()
        self.parse = RowParser(spec, now=self.now)  # for this thread's re-reads; the read-ahead thread has its own
        self.event_id: int | None = None
        self.rejects: RejectsWriter | None = None
        self.loaded = self.present = self.rejected = 0
        self.problems: list[str] = []
        self.problem_count = 0
        self.conflicts: list[str] = []
        self.conflict_count = 0
        self.reactive: list[str] = []
        self._reactive_seen: set[str] = set()
        self.statistics_fresh = False  # planner statistics refreshed in this import
        self.stream: RecordStream | None = None
        # Duplicates in the file are found without keeping every key of it (memory stays flat with the file size):
        # within a chunk by its keys; across chunks by the rows this import has already written (the loaders find
        # them in the database, marked with this import's event, or among the pending rows of the chunk still
        # being written), whose line is found again by reading their chunk once more. Only the keys of valid rows
        # that were not written (present, refused by a reference check, in conflict) are kept for the whole file:
        # usually few.
        self.kept_out: dict[Hashable, int] = {}
        self._chunk_ids: list[int] = []  # the highest id of the table after each chunk that wrote rows
        self._chunk_starts: list[Resume] = []  # and where that chunk starts in the file
        self._start: Resume | None = None  # where the chunk being checked starts
        self._out: set[int] = set()  # lines of this chunk's valid rows that were not written
        self._duplicates: list[tuple[Row, int]] = []  # rows whose key this import wrote earlier, with their chunk
        self._sites: dict[str, int] = {}
        self._chunk: list[Record] = []
        self._rejected: list[tuple[int, list[RowProblem]]] = []
        # Rows are written through the database's bulk writer; pipelined (PostgreSQL) one chunk late, by a thread
        # of their own, while the next chunk is checked (see ChunkWriter.writing()).
        self.writer = ChunkWriter(session, on_rows=self._rows_written, on_written=self._chunk_ids.append)
        self.dialect = session.get_bind().dialect
        self.time = driver_converter(SQLModel.metadata.tables["test_result"].c.tested_at, self.dialect)
        self._recorded = (self.time(self.stamp), actor)

    # -- outcome -------------------------------------------------------------------------------------------------

    @property
    def failing(self) -> bool:
        """True once the import is bound to be undone: its side effects need not be worked out any more."""
        return self.conflict_count > 0 or (self.problem_count > 0 and not self.skip_invalid)

    def raise_if_failed(self) -> None:
        if self.conflict_count:
            more = self.conflict_count - len(self.conflicts)
            lines = self.conflicts + ([f"... and {more:,} more."] if more > 0 else [])
            other = (
                f"\nThe file also has {self.problem_count:,} other problem{'s' if self.problem_count != 1 else ''}."
                if self.problem_count
                else ""
            )
            raise Conflict("\n".join(lines) + other + "\nNothing was loaded.")
        if self.problem_count and not self.skip_invalid:
            raise InvalidImportFile(self.file, self.problems, total=self.problem_count)

    # -- rows ----------------------------------------------------------------------------------------------------

    def process(self, chunk: list[Record], parsed: list[Parsed[Any]]) -> None:
        """Check one chunk of records, parsed (:class:`RowParser`), then resolve and load its valid rows."""
        self._chunk = chunk
        self._out = set()
        valid: list[Row] = [row for row, _ in parsed if row is not None]
        if len(valid) < len(chunk):
            for record, (row, problems) in zip(chunk, parsed, strict=True):
                if row is None:
                    self.reject(record.line, problems)
        repeated: list[tuple[Row, int]] = []  # rows whose key is on an earlier line of this chunk
        kept_out = self.kept_out
        keys = [row.key for row in valid]
        if kept_out or len(set(keys)) < len(keys):  # a key seen before: sort the rows out one by one
            local: dict[Hashable, int] = {}
            unique = []
            for row, key in zip(valid, keys, strict=True):
                first = kept_out.get(key)
                if first is not None:
                    self.reject(row.line, [self._duplicate_problem(row, first)])
                elif key in local:
                    repeated.append((row, local[key]))
                else:
                    local[key] = row.line
                    unique.append(row)
            valid = unique
        resolved: dict[int, int | None] = {}
        if valid:
            assert self.stream is not None
            self._duplicates = []
            self._start = Resume(chunk[0].offset, chunk[0].line, tuple(self.stream.header))
            loaded, chunks = self.loaded, len(self._chunk_starts)
            self.writer.settle()  # the previous chunk's rows were written while this chunk was read and sorted out
            self.spec.load(self, valid)
            if self.loaded > loaded and len(self._chunk_starts) == chunks:  # written by a service, not writing()
                self._chunk_starts.append(self._start)
                self._chunk_ids.append(self.session.execute(select(func.max(self.spec.model.id))).scalar_one())
            if self._out:
                for row in valid:
                    if row.line in self._out:
                        kept_out.setdefault(row.key, row.line)
            resolved = self._reject_duplicates()
        for row, first in repeated:
            # When the first row of the chunk with this key was itself a repeat of an earlier chunk, name that line.
            self.reject(row.line, [self._duplicate_problem(row, resolved.get(first, first))])
        self._flush_rejected()

    def _duplicate_problem(self, row: Row, first: int | None) -> RowProblem:
        where = f"line {first:,}" if first is not None else "an earlier line"
        return RowProblem(row.line, self.spec.key_column, f"{row.label} is also on {where} of this file.")

    def duplicate(self, row: Row, row_id: int) -> None:
        """A loader found the key of ``row`` among the rows this import wrote from an earlier chunk."""
        self._duplicates.append((row, bisect_left(self._chunk_ids, row_id)))

    def duplicate_pending(self, row: Row) -> None:
        """A loader found the key of ``row`` among :attr:`pending_rows`."""
        self._duplicates.append((row, self.writer.pending_chunk))

    def _reject_duplicates(self) -> dict[int, int | None]:
        """Reject the rows found repeating a row written from an earlier chunk; the line each one repeats."""
        by_chunk: dict[int, list[Row]] = defaultdict(list)
        for row, index in self._duplicates:
            by_chunk[index].append(row)
        resolved: dict[int, int | None] = {}
        for index, rows in by_chunk.items():
            first = self._first_lines(index, {row.key for row in rows})
            for row in rows:
                resolved[row.line] = first.get(row.key)
                self.reject(row.line, [self._duplicate_problem(row, resolved[row.line])])
        self._duplicates = []
        return resolved

    def _first_lines(self, index: int, keys: set[Hashable]) -> dict[Hashable, int]:
        """The line of each key's first valid row in an earlier chunk, read again from the file."""
        if index >= len(self._chunk_starts):
            return {}
        found: dict[Hashable, int] = {}
        records = iter(read_records(self.path, self.spec.columns, self._chunk_starts[index]))
        try:
            for _, record in zip(range(self.chunk_rows), records, strict=False):
                row, _ = self.parse(record)
                if row is not None and row.key in keys:
                    found.setdefault(row.key, record.line)
                    if len(found) == len(keys):
                        break
        finally:
            records.close()  # type: ignore[attr-defined]
        return found

    def reject(self, line: int, problems: list[RowProblem]) -> None:
        self.rejected += 1
        self.problem_count += len(problems)
        self._rejected.append((line, problems))
        self._out.add(line)

    def count_present(self, line: int) -> None:
        self.present += 1
        self._out.add(line)

    def _flush_rejected(self) -> None:
        # Rows are rejected while reading and again while resolving references; reporting them in file order
        # makes the list and the rejects file follow the file.
        if not self._rejected:
            return
        records = {record.line: record for record in self._chunk} if self.rejects is not None else {}
        for line, problems in sorted(self._rejected, key=lambda item: item[0]):
            for problem in problems:
                if len(self.problems) < PROBLEMS_KEPT:
                    self.problems.append(problem.render(self.file))
            if self.rejects is not None:
                self.rejects.write(records[line], problems)
        self._rejected = []

    def compare(self, row: Row, pairs: list[tuple[str, Any, Any]]) -> None:
        """Count a row whose key is already recorded as present, or record a conflict naming each difference."""
        diffs = [f"{column}: {_shown(old)} -> {_shown(new)}" for column, old, new in pairs if old != new]
        if not diffs:
            self.count_present(row.line)
            return
        self.conflict(
            row.line, f"{row.label}: already recorded with different values ({', '.join(diffs)}); {self.spec.hint}"
        )

    def conflict(self, line: int, message: str) -> None:
        self._out.add(line)
        self.conflict_count += 1
        if len(self.conflicts) < PROBLEMS_KEPT:
            self.conflicts.append(f"{self.file}:{line}: {message}")

    # -- writing -------------------------------------------------------------------------------------------------

    def chunks(self, parsed: Iterator[Chunk]) -> AbstractContextManager[Iterator[Chunk]]:
        return self.writer.chunks(parsed)  # type: ignore[arg-type]

    def writing(
        self, model: type[Any], columns: tuple[str, ...]
    ) -> AbstractContextManager[Callable[[tuple[Any, ...]], None]]:
        """A function that takes the rows of ``model`` this chunk adds: each holds values in the order of
        ``columns``, then the :meth:`recorded` ones. See :meth:`ChunkWriter.writing` for what a loader may do
        inside the block (no session) and where it finds the rows of the previous chunk, not written yet."""
        return self.writer.writing(model, (*columns, *RECORDED))

    def pending_values(self, *names: str) -> Iterable[Any]:
        """The named columns of the previous chunk's rows, being written while this chunk is checked: the
        loader's lookups cannot see them yet, so a loader looks for its keys here too (a repeat in the file, a
        version number). One value per row for one name, else a tuple in the order of ``names``."""
        return self.writer.pending_values(*names)

    def pending_where(self, column: str, wanted: Container[Any], *names: str) -> list[Any]:
        """As :meth:`pending_values`, for the previous chunk's rows whose ``column`` is among ``wanted`` only."""
        return self.writer.pending_where(column, wanted, *names)

    def when_written(self, then: Callable[[], None]) -> None:
        """Call ``then`` once the rows of this chunk are written (at once if it has none to write)."""
        self.writer.when_written(then)

    def finish_writing(self) -> None:
        self.writer.finish_writing()

    def close(self) -> None:
        self.writer.close()

    def _rows_written(self, count: int) -> int:
        assert self._start is not None
        self._chunk_starts.append(self._start)
        self.loaded += count
        return len(self._chunk_starts) - 1

    # -- what loaders ask --------------------------------------------------------------------------------------

    def among(self, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
        """``column IN values``, as one parameter (see :func:`traceability.db.dialect.among`)."""
        return dialect.among(self.dialect, column, values)

    def converter(self, column: Any) -> Callable[[Any], Any]:
        """How a value of ``column`` goes to the bulk writer."""
        return driver_converter(column, self.dialect)

    def recorded(self) -> tuple[Any, ...]:
        """created_at, created_by, import_event_id of every row this import writes, as the driver takes them."""
        return (*self._recorded, self.event_id)

    def establishment_ids(self, codes: Iterable[str | None]) -> dict[str, int]:
        """Ids of the named establishments that exist; there are few, so they are remembered for the run."""
        wanted = {c for c in codes if c and c not in self._sites}
        if wanted:
            self._sites.update(
                self.session.execute(
                    select(col(Establishment.code), col(Establishment.id)).where(col(Establishment.code).in_(wanted))
                ).all()
            )
        return self._sites

    def refresh_statistics(self, *tables: str) -> None:
        """Once per import: rows bulk-loaded in this transaction get planner statistics (where the database needs
        them), so that queries run row by row after them (look-back) use the indexes."""
        if not self.statistics_fresh:
            dialect.refresh_statistics(self.session, tables)
            self.statistics_fresh = True

    def note_reactive(self, unit_number: str) -> None:
        if unit_number not in self._reactive_seen:
            self._reactive_seen.add(unit_number)
            self.reactive.append(unit_number)
