"""Loading import files (SPEC §6): donors, donations, screening results and pool members.

An import first hashes the raw bytes of its file (no parsing) so that a file imported before is recognised before
anything loads. One pass then validates every row and loads the file chunk by chunk: per chunk one query per kind
of reference (donors, units, establishments, pools, keys already recorded) and one set-based write through the
driver (executemany of a compiled INSERT on SQLite, COPY on PostgreSQL), never a query per row. A file found
unreadable as a whole on the way (broken quoting, a bad header) loads nothing. Everything happens inside a
SAVEPOINT, so a file with a bad row (without ``skip_invalid``), a conflict or a dry run leaves the database exactly
as it was, even for a caller that carries on afterwards.

Each import is one audit event ``import.<kind>`` (file name, SHA-256), written before any row and named by every
row it loaded (``import_event_id``), then ``import.<kind>.completed`` with the counts (rows, loaded, already
present, rejected). The same file imported again is found by that event and adds nothing.
"""

from __future__ import annotations

import csv
import gc
import json
import os
import queue
import re
import sys
import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import Enum
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import ARRAY, ColumnElement, Connection, String, Table, bindparam, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from .. import audit
from ..errors import Conflict, IneligibleUnits, InvalidImportFile, InvalidInput
from ..models import (
    AuditEvent,
    Consignee,
    Donation,
    Donor,
    Establishment,
    Marker,
    PlasmaKind,
    Pool,
    PoolMember,
    PoolStatus,
    ResultValue,
    TestResult,
    UnitStatus,
    UTCDateTime,
    utcnow,
)
from ..plausibility import day_began
from ..reports.writers import FORMULA_PREFIXES
from ..rules import DEFAULT_POLICY, OnReactive, Policy
from ..services import pools
from ..services.units import ResultOutcome, apply_reactive, end_deferrals_on_nonreactive
from .readers import Record, RecordStream, Resume, file_digest, read_records
from .rows import (
    COLUMNS,
    ConsigneeRow,
    DonationRow,
    DonorRow,
    ImportKind,
    PoolMemberRow,
    ResultRow,
    Row,
    RowParser,
    RowProblem,
)

__all__ = ["CHUNK_ROWS", "ImportKind", "ImportReport", "default_rejects_path", "import_file"]

T = TypeVar("T")

CHUNK_ROWS = 5_000
"""Rows validated, resolved and inserted together: large enough for set-based work, small enough for memory."""
FULL_COLLECTION_CHUNKS = 20
SWITCH_INTERVAL = 0.0005
PROBLEMS_KEPT = 50
_ENTITY_KEY_MAX = 200

_HINTS = {
    ImportKind.DONORS: "a donor's recorded establishment and registration date are not changed by an import",
    ImportKind.DONATIONS: "corrections go through 'plasmatrace donation correct'",
    ImportKind.RESULTS: "a corrected result is a new test: give it its own tested_at, or use 'plasmatrace result add'",
    ImportKind.POOL_MEMBERS: "a unit can be in one pool only",
    ImportKind.CONSIGNEES: "a recorded consignee is not changed by an import",
}


@dataclass
class ImportReport:
    """What an import did (or, for a dry run, would do)."""

    kind: ImportKind
    path: str
    sha256: str
    rows: int
    loaded: int
    already_present: int
    rejected: int
    problems: list[str]  # "FILE:LINE: column: message", at most the first PROBLEMS_KEPT
    problem_count: int
    rejects_path: str | None  # where the rejected rows were written (skip_invalid), else None
    dry_run: bool
    already_imported: bool  # this file (same SHA-256 and kind) was imported before: nothing was added
    event_seq: int | None  # seq of this import's audit event (of the earlier one when already imported)
    reactive: list[str] = field(default_factory=list)  # units given a reactive result by a results import
    resumed_from: int | None = None  # seq of an earlier import of this file that rejected rows, when run again

    @property
    def summary(self) -> str:
        """One sentence for the user, e.g. ``donations.csv: 1,200 rows loaded, 3 already present.``"""
        if self.already_imported:
            return (
                f"{self.path} was already imported (audit event {self.event_seq}, SHA-256 {self.sha256[:12]}...); "
                "nothing was added."
            )
        if self.rows == 0:
            return f"{self.path} has a header but no data rows; 0 rows loaded."
        verb = "would be loaded" if self.dry_run else "loaded"
        text = f"{self.path}: {self.loaded:,} of {self.rows:,} rows {verb}"
        if self.resumed_from is not None:
            text += f" this time, {self.already_present:,} loaded earlier (import event {self.resumed_from})"
        elif self.already_present:
            text += f", {self.already_present:,} already present"
        if self.rejected:
            text += f", {self.rejected:,} rejected"
            if self.rejects_path:
                text += f" (written to {self.rejects_path})"
        return text + (" (dry run: nothing was written)." if self.dry_run else ".")


def default_rejects_path(path: Path) -> Path:
    """Where skip_invalid writes rejected rows: beside the file, ``donations.csv`` -> ``donations.rejects.csv``."""
    return path.with_suffix(".rejects.csv")


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while importing: a chunk allocates hundreds of thousands of
    short-lived, acyclic objects (records, cells, rows), and the default thresholds make the collector walk every
    live object again and again (a third of the import time on large files). The thresholds are restored after.
    The cyclic garbage there is (SQLAlchemy statements holding a chunk's keys) is then collected every
    FULL_COLLECTION_CHUNKS chunks by the import loop, so that memory stays flat however long the file.

    The objects that exist when the import starts (the libraries, the application, the caller's) are frozen for
    its length, so that those collections look only at what the import made: 20 ms each instead of 50. Not when
    the caller has frozen objects itself, since unfreezing would release those too."""
    before = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0
    gc.set_threshold(max(before[0], 100_000), max(before[1], 50), max(before[2], 1_000))
    if freeze:
        gc.freeze()
    try:
        yield
    finally:
        if freeze:
            gc.unfreeze()
        gc.set_threshold(*before)


@contextmanager
def _quick_thread_switches() -> Iterator[None]:
    """Hand the interpreter from thread to thread every SWITCH_INTERVAL seconds instead of every 5 ms while a
    pipelined import runs. The importing thread, the reading thread and the writing thread each wait for the
    server or the disk many times a chunk, and each time they get the interpreter back only when the thread
    holding it lets go: at 5 ms a time the server sat idle waiting for them (a PostgreSQL import of 1,000,000
    results took about 10% longer). Restored after."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def import_file(
    session: Session,
    kind: ImportKind | str,
    path: Path,
    *,
    actor: str,
    dry_run: bool = False,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    policy: Policy = DEFAULT_POLICY,
    progress: Callable[[int], None] | None = None,
    on_rows_counted: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate and load one import file in the caller's transaction; see the module docstring.

    Without ``skip_invalid`` any bad row raises InvalidImportFile (every problem as ``FILE:LINE: column:
    message``) and nothing stays written; with it, good rows load and bad ones go to ``rejects_path`` (default:
    :func:`default_rejects_path`) with ``line`` and ``problem`` columns, ready to be corrected and imported.
    ``dry_run`` validates and counts, then undoes everything and writes no rejects file. ``progress`` is called
    with the number of rows processed after each chunk; ``on_rows_counted`` once, before loading starts, with the
    number of lines after the header (the total of a progress bar; data rows are at most that many).

    Raises InvalidInput (missing file), InvalidImportFile (unreadable file or bad rows), Conflict (a row whose
    key is recorded with different values; a unit in another pool), and whatever pools.add_units raises that
    cannot be tied to a row.
    """
    with _fewer_collections():
        return _import_file(
            session,
            kind,
            path,
            actor=actor,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            rejects_path=rejects_path,
            policy=policy,
            progress=progress,
            on_rows_counted=on_rows_counted,
        )


def _import_file(
    session: Session,
    kind: ImportKind | str,
    path: Path,
    *,
    actor: str,
    dry_run: bool,
    skip_invalid: bool,
    rejects_path: Path | None,
    policy: Policy,
    progress: Callable[[int], None] | None,
    on_rows_counted: Callable[[int], None] | None,
) -> ImportReport:
    try:
        kind = ImportKind(kind)
    except ValueError:
        raise InvalidInput(
            f"{kind!r} is not a kind of import file; use one of: {', '.join(k.value for k in ImportKind)}."
        ) from None
    path = Path(path)
    file = str(path)
    if not path.exists():
        raise InvalidInput(f"Import file {file} does not exist.")
    if not path.is_file():
        raise InvalidInput(f"Import file {file} is not a file.")
    rejects_target = rejects_path or default_rejects_path(path)
    if skip_invalid and rejects_target.resolve() == path.resolve():
        raise InvalidInput(f"The rejects file {rejects_target} would overwrite the file being imported.")
    columns = COLUMNS[kind]
    sha256, lines = file_digest(path)

    job = _Import(session, kind, path, actor=actor, policy=policy, dry_run=dry_run, skip_invalid=skip_invalid)
    savepoint = session.begin_nested()
    writer: _RejectsWriter | None = None
    try:
        event = audit.record(
            session,
            action=f"import.{kind.value}",
            entity_type="import",
            entity_key=path.name[:_ENTITY_KEY_MAX],
            actor=actor,
            new={"sha256": sha256, "file": file},
        )
        # Looked up only after our own event is written: on PostgreSQL writing it took the audit-chain lock, so a
        # concurrent import of the same file has committed by now and is seen here.
        earlier = _earlier_import(session, kind, sha256, exclude=event.id)
        resumed_from = None
        if earlier is not None:
            rejected_before = _rejected_last_time(session, kind, sha256)
            if not rejected_before:
                _undo(session, savepoint)
                return job.report(
                    sha256, _recorded_rows(session, earlier), already_imported=True, event_seq=earlier.seq
                )
            # The file was loaded in part (--skip-invalid) before: load the rows that are valid now; the rows
            # loaded earlier are found recorded with the same values and counted as such.
            resumed_from = earlier.seq
        job.event_id = event.id
        if skip_invalid and not dry_run:
            writer = job.rejects = _RejectsWriter(rejects_target, columns.ignored)
        if on_rows_counted is not None:
            on_rows_counted(max(lines - 1, 0))

        stream = job.stream = read_records(path, columns)
        processed = done = 0
        # A parser of its own for the chunks (read ahead in a thread when pipelined): RowParser remembers the layout.
        with job.chunks(_parsed_chunks(stream, RowParser(kind, now=job.now))) as chunks:
            for chunk, parsed in chunks:
                if writer is not None:
                    writer.header = stream.header  # known once reading has started
                job.process(chunk, parsed)
                processed += len(chunk)
                done += 1
                if done % FULL_COLLECTION_CHUNKS == 0:
                    gc.collect()
                if progress is not None:
                    progress(processed)
        job.finish_writing()

        if stream.problems:
            # A file that cannot be read as a whole loads nothing, whatever its rows were.
            raise InvalidImportFile(
                file, [p.render(file) for p in stream.problems[:PROBLEMS_KEPT]], total=len(stream.problems)
            )
        if stream.sha256 != sha256:
            raise InvalidImportFile(file, [f"{file}:1: file: changed while it was being imported; import it again."])
        job.raise_if_failed()
        if not dry_run:
            audit.record(
                session,
                action=f"import.{kind.value}.completed",
                entity_type="import",
                entity_key=path.name[:_ENTITY_KEY_MAX],
                actor=actor,
                new={
                    "sha256": sha256,
                    "rows": stream.rows,
                    "loaded": job.loaded,
                    "already_present": job.present,
                    "rejected": job.rejected,
                    # The rows it loaded, as a digest per table: audit verify proves them without an event per row.
                    "import_event": event.id,
                    "digest": audit.records.import_digest(session, event.id, event.action) if event.id else {},
                },
            )
        if dry_run:
            _undo(session, savepoint)
        else:
            savepoint.commit()
    except BaseException:
        try:
            job.close()  # any write under way ends before the savepoint is rolled back
        finally:
            _undo(session, savepoint)
            if writer is not None:
                writer.discard()
        raise
    finally:
        job.close()
    written = writer.finish() if writer is not None else None
    report = job.report(
        sha256,
        stream.rows,
        already_imported=False,
        event_seq=None if dry_run else event.seq,
        rejects_path=str(written) if written else None,
    )
    report.resumed_from = resumed_from
    return report


# --- the import run --------------------------------------------------------------------------------------------


def _undo(session: Session, savepoint: Any) -> None:
    if savepoint.is_active:
        try:
            savepoint.rollback()
        except DBAPIError:
            # The database ended the transaction itself (SQLite on a full disk rolls it back, savepoints and all):
            # the error that did it is the one to report, and the caller's rollback follows.
            pass


def _earlier_import(session: Session, kind: ImportKind, sha256: str, *, exclude: int | None) -> AuditEvent | None:
    candidates = session.execute(
        select(AuditEvent)
        .where(
            AuditEvent.action == f"import.{kind.value}",
            AuditEvent.new_values.contains(sha256),
            AuditEvent.id != exclude,
        )
        .order_by(AuditEvent.seq)
    ).scalars()
    for event in candidates:
        if json.loads(event.new_values or "{}").get("sha256") == sha256:
            return event
    return None


def _rejected_last_time(session: Session, kind: ImportKind, sha256: str) -> int:
    """How many rows the latest completed import of this file rejected (0 when it loaded them all)."""
    for values in session.execute(
        select(AuditEvent.new_values)
        .where(AuditEvent.action == f"import.{kind.value}.completed", AuditEvent.new_values.contains(sha256))
        .order_by(AuditEvent.seq.desc())
    ).scalars():
        completed = json.loads(values or "{}")
        if completed.get("sha256") == sha256:
            return int(completed.get("rejected", 0))
    return 0


def _recorded_rows(session: Session, earlier: AuditEvent) -> int:
    """The data rows of an earlier import of the same file: counted in its completion event (in the start event
    itself for imports recorded before the count moved there)."""
    started = json.loads(earlier.new_values or "{}")
    if "rows" in started:
        return int(started["rows"])
    for values in session.execute(
        select(AuditEvent.new_values)
        .where(
            AuditEvent.action == f"{earlier.action}.completed",
            AuditEvent.new_values.contains(started["sha256"]),
            AuditEvent.seq > earlier.seq,
        )
        .order_by(AuditEvent.seq)
    ).scalars():
        completed = json.loads(values or "{}")
        if completed.get("sha256") == started["sha256"]:
            return int(completed.get("rows", 0))
    return 0


def _parsed_chunks(
    records: Iterable[Record], parse: RowParser
) -> Generator[tuple[list[Record], list[tuple[Row | None, list[RowProblem]]]], None, None]:
    """The records in chunks of CHUNK_ROWS, each with its rows as parsed (row or problems, record by record)."""
    records = iter(records)
    while chunk := list(islice(records, CHUNK_ROWS)):
        yield chunk, list(map(parse, chunk))


class _ReadAhead(Generic[T]):
    """Iterate over ``items`` produced in a thread, one item ahead: the next chunk of a file is read and parsed
    while this one is checked against the database and written. The driver lets go of the interpreter while it
    waits for the server, so reading and writing overlap on two cores.

    Use it as a context manager: leaving stops the thread (after the item it is working on) and closes
    ``items``. An exception raised producing an item is raised again where the item was expected."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plasmatrace-read-ahead", daemon=True)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._take()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _take(self) -> Iterator[T]:
        while True:
            kind, value = self._queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put("item", item):
                    return
            self._put("end", None)
        except BaseException as error:  # handed to the consuming thread, raised there
            self._put("error", error)
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def _put(self, kind: str, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


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


class _Import:
    """The state of one import: counts, problems, keys seen so far in the file, and the rejects writer."""

    def __init__(
        self,
        session: Session,
        kind: ImportKind,
        path: Path,
        *,
        actor: str,
        policy: Policy,
        dry_run: bool,
        skip_invalid: bool,
    ) -> None:
        self.session, self.kind, self.path, self.file = session, kind, path, str(path)
        self.actor, self.policy, self.dry_run, self.skip_invalid = actor, policy, dry_run, skip_invalid
        self.now = self.stamp = utcnow()
        self.parse = RowParser(kind, now=self.now)  # for this thread's re-reads; the read-ahead thread has its own
        self.event_id: int | None = None
        self.rejects: _RejectsWriter | None = None
        self.loaded = self.present = self.rejected = 0
        self.problems: list[str] = []
        self.problem_count = 0
        self.conflicts: list[str] = []
        self.conflict_count = 0
        self.reactive: list[str] = []
        self._reactive_seen: set[str] = set()
        self.statistics_fresh = False  # PostgreSQL: planner statistics refreshed in this import
        self.stream: RecordStream | None = None
        # Duplicates in the file are found without keeping every key of it (memory stays flat with the file size):
        # within a chunk by its keys; across chunks by the rows this import has already written (the loaders find
        # them in the database, marked with this import's event, or among the pending rows of the chunk still
        # being written), whose line is found again by reading their chunk once more. Only the keys of valid rows
        # that were not written (present, refused by a reference check, in conflict) are kept for the whole file:
        # usually few.
        self.kept_out: dict[Any, int] = {}
        self._chunk_ids: list[int] = []  # the highest id of the table after each chunk that wrote rows
        self._chunk_starts: list[Resume] = []  # and where that chunk starts in the file
        self._start: Resume | None = None  # where the chunk being checked starts
        self._out: set[int] = set()  # lines of this chunk's valid rows that were not written
        self._duplicates: list[tuple[Row, int]] = []  # rows whose key this import wrote earlier, with their chunk
        # On PostgreSQL rows are written one chunk late, by a thread of their own, while the next chunk is checked
        # (see writing()); on SQLite at the end of each chunk.
        self._pending: _Pending | None = None
        self._under_way: tuple[_Pending, Callable[[], int]] | None = None  # rows being written, and how to wait
        self._writer: ThreadPoolExecutor | None = None
        self._formatter: _CopyFormatter | None = None  # PostgreSQL: turns rows into COPY data
        self._sites: dict[str, int] = {}
        self._chunk: list[Record] = []
        self._rejected: list[tuple[int, list[RowProblem]]] = []
        self._loader = _LOADERS[kind]
        self._model = _MODELS[kind]
        self.dialect = session.get_bind().dialect
        # Pipelined on PostgreSQL, whose driver lets go of the interpreter while the server works: the next chunk
        # is read and parsed in a thread (chunks()) and each chunk's rows are written by COPY in another, one chunk
        # late (writing()), while this chunk is checked. Not on SQLite, where everything runs in the importing
        # thread: sqlite3 lets go of the interpreter around every row it writes or fetches and must then win it back
        # from the other threads, row after row (the import took 6% longer with a reading thread, a chunk's lookups
        # 4x longer; writing one chunk late, 5% longer).
        self.pipelined = self.dialect.name == "postgresql"
        self.time = _converter(TestResult.__table__.c.tested_at, self.dialect)
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

    def report(
        self, sha256: str, rows: int, *, already_imported: bool, event_seq: int | None, rejects_path: str | None = None
    ) -> ImportReport:
        return ImportReport(
            kind=self.kind,
            path=self.file,
            sha256=sha256,
            rows=rows,
            loaded=self.loaded,
            already_present=self.present,
            rejected=self.rejected,
            problems=list(self.problems),
            problem_count=self.problem_count,
            rejects_path=rejects_path,
            dry_run=self.dry_run,
            already_imported=already_imported,
            event_seq=event_seq,
            reactive=list(self.reactive),
        )

    # -- rows ----------------------------------------------------------------------------------------------------

    def process(self, chunk: list[Record], parsed: list[tuple[Row | None, list[RowProblem]]]) -> None:
        """Check one chunk of records, parsed (:class:`RowParser`), then resolve and load its valid rows."""
        self._chunk = chunk
        self._out = set()
        valid = [row for row, _ in parsed if row is not None]
        if len(valid) < len(chunk):
            for record, (row, problems) in zip(chunk, parsed, strict=True):
                if row is None:
                    self.reject(record.line, problems)
        repeated: list[tuple[Row, int]] = []  # rows whose key is on an earlier line of this chunk
        kept_out = self.kept_out
        keys = [row.key for row in valid]
        if kept_out or len(set(keys)) < len(keys):  # a key seen before: sort the rows out one by one
            local: dict[Any, int] = {}
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
            self._duplicates = []
            self._start = Resume(chunk[0].offset, chunk[0].line, tuple(self.stream.header))
            loaded, chunks = self.loaded, len(self._chunk_starts)
            self.settle()  # the previous chunk's rows were written while this chunk was read and sorted out
            self._loader(self, valid)
            if self.loaded > loaded and len(self._chunk_starts) == chunks:  # written by a service, not writing()
                self._chunk_starts.append(self._start)
                self._chunk_ids.append(self.session.execute(select(func.max(self._model.id))).scalar_one())
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
        return RowProblem(row.line, _key_column(self.kind), f"{row.label} is also on {where} of this file.")

    def duplicate(self, row: Row, row_id: int) -> None:
        """A loader found the key of ``row`` among the rows this import wrote from an earlier chunk."""
        self._duplicates.append((row, bisect_left(self._chunk_ids, row_id)))

    def duplicate_pending(self, row: Row) -> None:
        """A loader found the key of ``row`` among :attr:`pending_rows`."""
        assert self._pending is not None
        self._duplicates.append((row, self._pending.chunk))

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

    def _first_lines(self, index: int, keys: set[Any]) -> dict[Any, int]:
        """The line of each key's first valid row in an earlier chunk, read again from the file."""
        if index >= len(self._chunk_starts):
            return {}
        found: dict[Any, int] = {}
        records = iter(read_records(self.path, COLUMNS[self.kind], self._chunk_starts[index]))
        try:
            for _, record in zip(range(CHUNK_ROWS), records, strict=False):
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
            row.line, f"{row.label}: already recorded with different values ({', '.join(diffs)}); {_HINTS[self.kind]}"
        )

    def conflict(self, line: int, message: str) -> None:
        self._out.add(line)
        self.conflict_count += 1
        if len(self.conflicts) < PROBLEMS_KEPT:
            self.conflicts.append(f"{self.file}:{line}: {message}")

    @property
    def pending_rows(self) -> list[tuple[Any, ...]]:
        """The rows of the previous chunk, being written while this chunk is checked: the loader's lookups cannot
        see them yet, so a loader looks for its keys here too (a repeat in the file, a version number)."""
        return self._pending.rows if self._pending is not None else []

    @contextmanager
    def chunks(self, parsed: Generator[T, None, None]) -> Iterator[Iterator[T]]:
        """The file's parsed chunks, read ahead in a thread with quick thread switches when pipelined; the chunks
        are closed on leaving."""
        if not self.pipelined:
            with closing(parsed):
                yield parsed
            return
        with _quick_thread_switches(), _ReadAhead(parsed) as chunks:
            yield chunks

    @contextmanager
    def writing(self, model: type[Any], columns: tuple[str, ...]) -> Iterator[Callable[[tuple[Any, ...]], None]]:
        """A function that takes the rows of ``model`` this chunk adds, written through the driver: each row holds,
        in the order of ``columns`` (then the :meth:`recorded` columns), values as the driver takes them for what
        the column types would store (see :func:`_converter`).

        On PostgreSQL the rows are written one chunk late, by COPY in a thread of its own, so that the server stores
        them while Python checks the next chunk: entering the block starts writing the previous chunk's rows;
        leaving it turns this chunk's rows into COPY data and keeps them for the next block or
        :meth:`finish_writing`. The write goes on after the block until :meth:`settle`, which :meth:`process` calls
        before the next chunk's lookups. So a loader does its lookups before the block, must not use the session
        inside it or after it, and finds the previous chunk's rows, which its lookups cannot see yet, in
        :attr:`pending_rows`. On SQLite the rows are written on leaving the block, with one executemany of a
        statement compiled from the table (sqlite3 would hold up a writing thread after every row it steps)."""
        self.settle()
        self.session.flush()  # anything pending in the session goes first, as before a session.execute
        if self._formatter is None and self.pipelined:  # made while no write is under way
            self._formatter = _CopyFormatter(self.session.connection().connection.driver_connection)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._under_way = (pending, self._write(pending))
        rows: list[tuple[Any, ...]] = []
        self._pending = pending  # visible to the loader as pending_rows while it builds this chunk's rows
        try:
            yield rows.append
        except BaseException:
            self._pending = None
            self.settle(quietly=True)  # the connection is free again before the error goes on to undo the import
            raise
        self._pending = None
        if rows:
            # On PostgreSQL the rows become COPY data here, while the previous chunk is still being written.
            data = self._formatter.data(rows) if self._formatter is not None else None
            self._chunk_starts.append(self._start)
            self._pending = _Pending(model.__table__, (*columns, *_RECORDED), rows, len(self._chunk_starts) - 1, data)
            self.loaded += len(rows)
            if not self.pipelined:
                self.finish_writing()  # at once

    def settle(self, *, quietly: bool = False) -> None:
        """Wait until the write under way, if any, has ended; then the session can be used again. ``quietly``: the
        import is being undone for another error, so the outcome of the write does not matter."""
        if self._under_way is not None:
            pending, wait = self._under_way
            self._under_way = None
            if quietly:
                _quietly(wait)
            else:
                self._written(pending, wait())

    def when_written(self, then: Callable[[], None]) -> None:
        """Call ``then`` once the rows of this chunk are written (at once if it has none to write)."""
        if self._pending is None:
            self.settle()
            then()
        else:
            self._pending.then.append(then)

    def finish_writing(self) -> None:
        """Write the rows still pending (the last chunk's); an import calls this after its last chunk."""
        self.settle()
        pending, self._pending = self._pending, None
        if pending is not None:
            self.session.flush()
            self._written(pending, self._write(pending)())

    def close(self) -> None:
        """Stop the writing thread, once any write it is doing has ended."""
        self._under_way = None
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._formatter is not None:
            self._formatter.close()
            self._formatter = None

    def _write(self, pending: _Pending) -> Callable[[], int]:
        """Start writing ``pending``; returns a function that waits for the end and gives the table's highest id."""
        connection = self.session.connection()
        if not self.pipelined:
            top = _execute_many(connection, pending)
            return lambda: top
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plasmatrace-writer")
        return self._writer.submit(_copy, connection.connection.driver_connection, pending).result

    def _written(self, pending: _Pending, top: int) -> None:
        self._chunk_ids.append(top)
        for then in pending.then:
            then()

    def among(self, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
        """``column IN values``. On PostgreSQL as one array parameter, so that the statement is the same for every
        chunk instead of thousands of parameters to render, send and plan each time; and as ``IN (SELECT
        unnest(array))``, not ``= ANY(array)``: for the latter, until the table has statistics (a table filled by
        this very import, or by the import just before it), the planner takes the array's 5,000 values for a large
        share of the table and scans all of it (100 ms a chunk at 1,000,000 donations instead of 10 ms) until the
        statement has run often enough to get a generic plan; the semi-join probes the unique index from the start.
        On SQLite as one JSON array read by ``json_each``, for the same reason (the index is probed all the same)."""
        if self.dialect.name == "postgresql":
            return column.in_(select(func.unnest(bindparam(None, list(values), type_=ARRAY(column.type)))))
        wanted = func.json_each(bindparam(None, json.dumps(list(values)), type_=String)).table_valued("value")
        return column.in_(select(wanted.c.value))

    def recorded(self) -> tuple[Any, ...]:
        """created_at, created_by, import_event_id of every row this import writes, as the driver takes them."""
        return (*self._recorded, self.event_id)

    def establishment_ids(self, codes: Iterable[str | None]) -> dict[str, int]:
        """Ids of the named establishments that exist; there are few, so they are remembered for the run."""
        wanted = {c for c in codes if c and c not in self._sites}
        if wanted:
            self._sites.update(
                self.session.execute(
                    select(Establishment.code, Establishment.id).where(Establishment.code.in_(wanted))
                ).all()
            )
        return self._sites

    def note_reactive(self, unit_number: str) -> None:
        if unit_number not in self._reactive_seen:
            self._reactive_seen.add(unit_number)
            self.reactive.append(unit_number)


_RECORDED = ("created_at", "created_by", "import_event_id")
_CONVERTED = 1 << 12


def _converter(column: Any, dialect: Any) -> Callable[[Any], Any]:
    """A value of ``column`` as the driver takes it for the same stored value as the column type gives, so rows
    written through the driver read back and compare exactly as rows written through the ORM: by the type's own
    bind processing, except for UTCDateTime, done here in one step (a test checks both against the type). On
    SQLite that is the naive-UTC text the type stores; on PostgreSQL, ISO 8601 text in UTC with its offset, the
    instant the type's aware datetime would be (psycopg formats text for COPY four times faster than datetime
    objects). Times repeat in a file: each distinct value is converted once (bounded)."""
    if isinstance(column.type, UTCDateTime):
        process = _utc_text if dialect.name == "sqlite" else _utc_iso
    else:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return lambda value: value
    done: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        try:
            return done[value]
        except KeyError:
            pass
        if len(done) >= _CONVERTED:
            done.clear()
        done[value] = converted = process(value) if value is not None else None
        return converted

    return convert


def _utc_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _utc_iso(value: datetime) -> str:
    """UTCDateTime on PostgreSQL: the UTC time as ISO 8601 text with its offset (``+00:00``)."""
    return _utc_aware(value).isoformat()


def _utc_text(value: datetime) -> str:
    """UTCDateTime on SQLite: the UTC time as the text SQLAlchemy's SQLite DATETIME stores."""
    return _utc_aware(value).replace(tzinfo=None).isoformat(" ", "microseconds")


_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, Callable[[tuple[Any, ...]], Any] | None]] = {}


def _insert_sql(
    table: Table, names: tuple[str, ...], connection: Connection
) -> tuple[str, Callable[[tuple[Any, ...]], Any] | None]:
    """The INSERT of these columns of ``table`` compiled for the connection's dialect (SQL from the table
    definition only, compiled once), and how to reorder a row into its parameter order (None: as it is)."""
    key = (connection.dialect.name, table.name, names)
    if key not in _STATEMENTS:
        compiled = insert(table).compile(dialect=connection.dialect, column_keys=list(names))
        order = list(compiled.positiontup or ())
        if sorted(order) != sorted(names):
            raise RuntimeError(f"INSERT into {table.name} takes {order}, not {list(names)}")
        positions = [names.index(name) for name in order]
        reorder = None if positions == list(range(len(names))) else itemgetter(*positions)
        _STATEMENTS[key] = (str(compiled), reorder)
    return _STATEMENTS[key]


class _CopyFormatter:
    """Rows as COPY text data, formatted by psycopg exactly as for rows sent one by one, without the server: one
    ``Copy`` for the whole import on a cursor of the connection (for its adapters), never started, whose writer
    collects the data. Made while the connection is idle, so that formatting later never asks the connection
    anything while the writing thread uses it."""

    def __init__(self, driver: Any) -> None:
        from psycopg.copy import Copy, Writer

        class Collect(Writer):
            def __init__(self) -> None:
                self.parts: list[Any] = []

            def write(self, data: Any) -> None:
                self.parts.append(data)

        self._cursor = driver.cursor()
        self._sink = Collect()
        self._copy = Copy(self._cursor, writer=self._sink)

    def data(self, rows: list[tuple[Any, ...]]) -> bytes:
        write_row = self._copy.write_row
        for row in rows:
            write_row(row)
        parts = self._sink.parts
        parts.append(self._copy.formatter.end())  # what is left in the formatter's buffer
        data = b"".join(parts)
        parts.clear()
        return data

    def close(self) -> None:
        self._cursor.close()


@dataclass
class _Pending:
    """Rows of one chunk waiting to be written (``names``: the columns, in the order of each row's values)."""

    table: Table
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    chunk: int  # the chunk's index in _Import._chunk_starts
    data: bytes | None = None  # PostgreSQL: the rows as COPY data
    then: list[Callable[[], None]] = field(default_factory=list)


def _execute_many(connection: Connection, pending: _Pending) -> int:
    """One executemany of the INSERT compiled for the connection's dialect; the table's highest id after it."""
    statement, order = _insert_sql(pending.table, pending.names, connection)
    rows = pending.rows
    connection.exec_driver_sql(statement, rows if order is None else list(map(order, rows)))
    return connection.execute(select(func.max(pending.table.c.id))).scalar_one()


def _copy(driver: Any, pending: _Pending) -> int:
    """COPY ... FROM STDIN of the rows' COPY data through psycopg 3, in the connection's transaction; the table's
    highest id after it. Runs in the writing thread, which holds the interpreter only to start and end: the data
    goes to the server while the importing thread checks the next chunk and leaves the connection alone."""
    import psycopg
    from psycopg import sql

    table = sql.Identifier(pending.table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        table, sql.SQL(", ").join(sql.Identifier(n) for n in pending.names)
    )
    try:
        with driver.cursor() as cursor:
            with cursor.copy(statement) as copy:
                copy.write(pending.data)
            return cursor.execute(sql.SQL("SELECT max(id) FROM {}").format(table)).fetchone()[0]
    except psycopg.IntegrityError as error:  # raised as SQLAlchemy raises it for every other write
        raise IntegrityError(statement.as_string(driver), None, error) from error


def _quietly(wait: Callable[[], Any]) -> None:
    """Wait for a write whose outcome no longer matters (the import is being undone for another error)."""
    with suppress(Exception):  # the error being raised already says why the import stops
        wait()


def _key_column(kind: ImportKind) -> str:
    return {ImportKind.DONORS: "donor_code", ImportKind.CONSIGNEES: "code"}.get(kind, "unit_number")


def _missing(line: int, column: str, what: str, key: str, fix: str) -> RowProblem:
    return RowProblem(line, column, f"{what} {key} is not in the database; {fix}.")


def _unknown_establishment(line: int, column: str, code: str) -> RowProblem:
    return _missing(line, column, "establishment", code, "add it first with 'plasmatrace establishment add'")


def _unknown_unit(line: int, unit_number: str) -> RowProblem:
    return _missing(
        line,
        "unit_number",
        "unit",
        unit_number,
        "import the donations file first, or add it with 'plasmatrace donation add'",
    )


# --- one loader per kind ---------------------------------------------------------------------------------------


def _load_donors(job: _Import, rows: list[DonorRow]) -> None:
    sites = job.establishment_ids(r.establishment for r in rows)
    existing = {
        row.donor_code: row
        for row in job.session.execute(
            select(
                Donor.donor_code, Establishment.code.label("site"), Donor.registered_on, Donor.id, Donor.import_event_id
            )
            .join(Establishment, Establishment.id == Donor.establishment_id)
            .where(job.among(Donor.donor_code, {r.donor_code for r in rows}))
        ).all()
    }
    registered = _converter(Donor.__table__.c.registered_on, job.dialect)
    recorded = job.recorded()
    with job.writing(Donor, ("donor_code", "establishment_id", "registered_on")) as write:
        being_written = {row[0] for row in job.pending_rows}
        for r in rows:
            old = existing.get(r.donor_code)
            if old is not None and old.import_event_id == job.event_id:
                job.duplicate(r, old.id)
            elif r.donor_code in being_written:
                job.duplicate_pending(r)
            elif r.establishment not in sites:
                job.reject(r.line, [_unknown_establishment(r.line, "establishment", r.establishment)])
            elif old is not None:
                job.compare(
                    r,
                    [
                        ("establishment", old.site, r.establishment),
                        ("registered_on", old.registered_on, r.registered_on),
                    ],
                )
            else:
                write((r.donor_code, sites[r.establishment], registered(r.registered_on), *recorded))


def _load_donations(job: _Import, rows: list[DonationRow]) -> None:
    session = job.session
    found = session.execute(
        select(Donor.donor_code, Donor.id, Donor.establishment_id, Establishment.code, Donor.registered_on)
        .join(Establishment, Establishment.id == Donor.establishment_id)
        .where(job.among(Donor.donor_code, {r.donor_code for r in rows}))
    ).all()
    donors = {code: (donor_id, site_id, site) for code, donor_id, site_id, site, _ in found}
    registered_on = {row[0]: row[4] for row in found if row[4] is not None}
    sites = job.establishment_ids(r.establishment for r in rows)
    existing = {
        row.unit_number: row
        for row in session.execute(
            select(
                Donation.unit_number,
                Donor.donor_code,
                Establishment.code.label("establishment"),
                Donation.collected_at,
                Donation.volume_ml,
                Donation.plasma_kind,
                Donation.frozen_at,
                Donation.id,
                Donation.import_event_id,
            )
            .join(Donor, Donor.id == Donation.donor_id)
            .outerjoin(Establishment, Establishment.id == Donation.establishment_id)
            .where(job.among(Donation.unit_number, {r.unit_number for r in rows}))
        )
    }
    time = job.time
    recorded = job.recorded()
    with job.writing(Donation, _DONATION_COLUMNS) as write:
        being_written = {row[0] for row in job.pending_rows}
        for r in rows:
            old = existing.get(r.unit_number)
            if old is not None and old.import_event_id == job.event_id:
                job.duplicate(r, old.id)
                continue
            if r.unit_number in being_written:
                job.duplicate_pending(r)
                continue
            problems = []
            donor = donors.get(r.donor_code)
            if donor is None:
                problems.append(
                    _missing(
                        r.line,
                        "donor_code",
                        "donor",
                        r.donor_code,
                        "import the donors file first, or add the donor with 'plasmatrace donor add'",
                    )
                )
            if r.establishment is not None and r.establishment not in sites:
                problems.append(_unknown_establishment(r.line, "establishment", r.establishment))
            registered = registered_on.get(r.donor_code)
            if registered is not None and r.collected_at < day_began(registered):
                problems.append(
                    RowProblem(
                        r.line,
                        "collected_at",
                        f"{r.collected_at.isoformat()} is before donor {r.donor_code} was registered "
                        f"({registered.isoformat()}); rule: a collection is not before the donor's registration.",
                    )
                )
            if problems or donor is None:
                job.reject(r.line, problems)
                continue
            donor_id, donor_site_id, donor_site = donor
            site = r.establishment or donor_site
            kind = r.plasma_kind or PlasmaKind.SOURCE
            if old is not None:
                job.compare(
                    r,
                    [
                        ("donor_code", old.donor_code, r.donor_code),
                        ("collected_at", old.collected_at, r.collected_at),
                        ("volume_ml", old.volume_ml, r.volume_ml),
                        ("establishment", old.establishment, site),
                        ("plasma_kind", old.plasma_kind, kind),
                        ("frozen_at", old.frozen_at, r.frozen_at),
                    ],
                )
                continue
            write(
                (
                    r.unit.value,
                    str(r.unit.scheme),
                    r.unit.flag,
                    donor_id,
                    sites[r.establishment] if r.establishment else donor_site_id,
                    time(r.collected_at),
                    time(r.frozen_at),
                    r.volume_ml,
                    str(kind),
                    _IN_INVENTORY,
                    None,
                    1,
                    *recorded,
                )
            )


_IN_INVENTORY = str(UnitStatus.IN_INVENTORY)
_DONATION_COLUMNS = (
    "unit_number",
    "scheme",
    "flag",
    "donor_id",
    "establishment_id",
    "collected_at",
    "frozen_at",
    "volume_ml",
    "plasma_kind",
    "status",
    "status_reason",
    "version",
)


def _load_results(job: _Import, rows: list[ResultRow]) -> None:
    session = job.session
    units: dict[str, tuple[int, datetime]] = {
        number: (donation_id, collected_at)
        for number, donation_id, collected_at in session.execute(
            select(Donation.unit_number, Donation.id, Donation.collected_at).where(
                job.among(Donation.unit_number, {r.unit_number for r in rows})
            )
        )
    }
    labs = job.establishment_ids(r.lab for r in rows)
    latest: dict[tuple[int, str], int] = {}
    recorded_keys: dict[tuple[int, str, datetime], Any] = {}
    if units:
        for old in session.execute(
            select(
                TestResult.donation_id,
                TestResult.marker,
                TestResult.version,
                TestResult.tested_at,
                TestResult.result,
                TestResult.value,
                TestResult.value_unit,
                TestResult.method,
                Establishment.code.label("lab"),
                TestResult.id,
                TestResult.import_event_id,
            )
            .outerjoin(Establishment, Establishment.id == TestResult.lab_id)
            .where(job.among(TestResult.donation_id, [u[0] for u in units.values()]))
            .order_by(TestResult.version)
        ):
            latest[(old.donation_id, old.marker.value)] = old.version
            recorded_keys[(old.donation_id, old.marker.value, old.tested_at)] = old  # the newest version wins
    time = job.time
    created_at, created_by, event_id = job.recorded()
    reactive: list[tuple[ResultRow, int, int]] = []
    awaited: dict[Marker, list[int]] = {
        m: [] for m in Marker if job.policy.on_reactive(m) == OnReactive.DEFER_UNTIL_NONREACTIVE
    }
    with job.writing(TestResult, _RESULT_COLUMNS) as write:
        # The previous chunk's rows are not in the database yet: their keys and versions for this chunk's units.
        being_written: set[tuple[int, str, Any]] = set()
        if job.pending_rows:
            ids = {unit[0] for unit in units.values()}
            for p in job.pending_rows:
                if p[0] in ids:
                    being_written.add((p[0], p[1], p[8]))
                    if p[2] > latest.get((p[0], p[1]), 0):
                        latest[(p[0], p[1])] = p[2]
        shared = {key[0] for key in being_written}  # units with rows in both chunks: usually one or none
        for r in rows:
            unit = units.get(r.unit_number)
            marker = str(r.marker)  # the value: StrEnum's str() is str's own, faster than .value
            old = None
            if recorded_keys and unit is not None:
                old = recorded_keys.get((unit[0], marker, r.tested_at))
                if old is not None and old.import_event_id == event_id:
                    job.duplicate(r, old.id)
                    continue
            if (
                shared
                and unit is not None
                and unit[0] in shared
                and (unit[0], marker, time(r.tested_at)) in being_written
            ):
                job.duplicate_pending(r)
                continue
            lab = r.lab
            if unit is None or r.tested_at < unit[1] or (lab is not None and lab not in labs):
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
            unit_id = unit[0]
            key = (unit_id, marker)
            version = latest.get(key, 0) + 1
            latest[key] = version
            write(
                (
                    unit_id,
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
                reactive.append((r, unit_id, version))
            elif r.result is ResultValue.NONREACTIVE and r.marker in awaited:
                awaited[r.marker].append(unit_id)
    for r, _, _ in reactive:
        job.note_reactive(r.unit_number)
    if reactive:
        job.when_written(lambda: _apply_reactive_results(job, reactive))
    if any(awaited.values()):
        job.when_written(lambda: _end_awaited_deferrals(job, awaited))


def _result_problems(r: ResultRow, unit: tuple[int, datetime] | None, labs: dict[str, int]) -> list[RowProblem]:
    problems = []
    if unit is None:
        problems.append(_unknown_unit(r.line, r.unit_number))
    elif r.tested_at < unit[1]:
        problems.append(
            RowProblem(
                r.line,
                "tested_at",
                f"{r.tested_at.isoformat()} is before unit {r.unit_number} was collected ({unit[1].isoformat()}).",
            )
        )
    if r.lab is not None and r.lab not in labs:
        problems.append(_unknown_establishment(r.line, "lab", r.lab))
    return problems


_RESULT_COLUMNS = (
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


def _end_awaited_deferrals(job: _Import, awaited: dict[Marker, list[int]]) -> None:
    """Nonreactive results on markers whose reactive result defers until a nonreactive retest (syphilis) end those
    deferrals, as recording the result by hand does; one statement per such marker and chunk."""
    if job.dry_run or job.failing:
        return
    for marker, donation_ids in awaited.items():
        end_deferrals_on_nonreactive(job.session, donation_ids, marker, actor=job.actor, policy=job.policy)


def _apply_reactive_results(job: _Import, reactive: list[tuple[ResultRow, int, int]]) -> None:
    """Reject, defer and interdict for each reactive row, as recording the result by hand does.

    Reactive results are rare, so this goes row by row through the same code as ``result add``.
    """
    if job.dry_run or job.failing:
        return  # the import will be undone: its consequences need not be worked out
    session = job.session
    if not job.statistics_fresh and session.get_bind().dialect.name == "postgresql":
        # Rows bulk-loaded in this transaction have no planner statistics yet; without them the look-back query
        # of each reactive row scans every result (seconds per row on a large database instead of milliseconds).
        session.execute(text("ANALYZE donation, test_result"))
        job.statistics_fresh = True
    ids = sorted({donation_id for _, donation_id, _ in reactive})
    # populate_existing: set-based updates elsewhere (pooling) may have left copies in the session stale.
    units = {
        unit.id: unit
        for unit in session.execute(
            select(Donation).where(Donation.id.in_(ids)).execution_options(populate_existing=True)
        ).scalars()
    }
    donors = dict(
        session.execute(
            select(Donation.id, Donor.donor_code).join(Donor, Donor.id == Donation.donor_id).where(Donation.id.in_(ids))
        ).all()
    )
    results = {
        (result.donation_id, result.marker.value, result.version): result
        for result in session.execute(
            select(TestResult).where(TestResult.donation_id.in_(ids), TestResult.import_event_id == job.event_id)
        ).scalars()
    }
    for row, donation_id, version in reactive:
        unit = units[donation_id]
        outcome = ResultOutcome(
            result=results[(donation_id, row.marker.value, version)],
            unit_number=unit.unit_number,
            donor_code=donors[donation_id],
        )
        apply_reactive(session, unit, row.marker, outcome, actor=job.actor, policy=job.policy)


def _load_pool_members(job: _Import, rows: list[PoolMemberRow]) -> None:
    session = job.session
    pool_rows = {
        number: (pool_id, status)
        for number, pool_id, status in session.execute(
            select(Pool.pool_number, Pool.id, Pool.status).where(Pool.pool_number.in_({r.pool_number for r in rows}))
        ).all()
    }
    members = {
        row.unit_number: row
        for row in session.execute(
            select(Donation.unit_number, Pool.pool_number, PoolMember.id, PoolMember.import_event_id)
            .outerjoin(PoolMember, PoolMember.donation_id == Donation.id)
            .outerjoin(Pool, Pool.id == PoolMember.pool_id)
            .where(job.among(Donation.unit_number, {r.unit_number for r in rows}))
        ).all()
    }
    units = {number: member.pool_number for number, member in members.items()}
    by_pool: dict[str, list[PoolMemberRow]] = defaultdict(list)
    for r in rows:
        member = members.get(r.unit_number)
        if member is not None and member.id is not None and member.import_event_id == job.event_id:
            job.duplicate(r, member.id)
            continue
        problems = []
        pool = pool_rows.get(r.pool_number)
        if pool is None:
            problems.append(
                _missing(r.line, "pool_number", "pool", r.pool_number, "create it first with 'plasmatrace pool create'")
            )
        if r.unit_number not in units:
            problems.append(_unknown_unit(r.line, r.unit_number))
        if problems or pool is None:
            job.reject(r.line, problems)
            continue
        pooled_in = units[r.unit_number]
        if pooled_in == r.pool_number:
            job.count_present(r.line)
        elif pooled_in is not None:
            job.conflict(r.line, f"{r.label}: already in pool {pooled_in}, not {r.pool_number}; {_HINTS[job.kind]}.")
        elif pool[1] != PoolStatus.OPEN:
            job.reject(
                r.line,
                [
                    RowProblem(
                        r.line,
                        "pool_number",
                        f"pool {r.pool_number} is {pool[1].value}; units can be added to an open pool only.",
                    )
                ],
            )
        else:
            by_pool[r.pool_number].append(r)
    for pool_number, members in by_pool.items():
        _add_to_pool(job, pool_number, members)


def _add_to_pool(job: _Import, pool_number: str, members: list[PoolMemberRow]) -> None:
    try:
        job.loaded += pools.add_units(
            job.session,
            pool_number=pool_number,
            unit_numbers=[m.unit_number for m in members],
            actor=job.actor,
            policy=job.policy,
            import_event_id=job.event_id,
        )
        return
    except IneligibleUnits as error:
        reasons = error.reasons
    # add_units changes nothing when it refuses, and eligibility is judged unit by unit: the others can go in.
    for m in members:
        if m.unit_number in reasons:
            job.reject(
                m.line,
                [
                    RowProblem(
                        m.line,
                        "unit_number",
                        f"unit {m.unit_number} is not eligible for pool "
                        f"{pool_number}: {'; '.join(reasons[m.unit_number])}.",
                    )
                ],
            )
    eligible = [m for m in members if m.unit_number not in reasons]
    if eligible:
        job.loaded += pools.add_units(
            job.session,
            pool_number=pool_number,
            unit_numbers=[m.unit_number for m in eligible],
            actor=job.actor,
            policy=job.policy,
            import_event_id=job.event_id,
        )


def _load_consignees(job: _Import, rows: list[ConsigneeRow]) -> None:
    existing = {
        row.code: row
        for row in job.session.execute(
            select(
                Consignee.code,
                Consignee.name,
                Consignee.address,
                Consignee.country,
                Consignee.id,
                Consignee.import_event_id,
            ).where(job.among(Consignee.code, {r.code for r in rows}))
        ).all()
    }
    recorded = job.recorded()
    with job.writing(Consignee, ("code", "name", "address", "country")) as write:
        being_written = {row[0] for row in job.pending_rows}
        for r in rows:
            old = existing.get(r.code)
            if old is not None and old.import_event_id == job.event_id:
                job.duplicate(r, old.id)
            elif r.code in being_written:
                job.duplicate_pending(r)
            elif old is not None:
                job.compare(
                    r,
                    [
                        ("name", old.name, r.name),
                        ("address", old.address, r.address),
                        ("country", old.country, r.country),
                    ],
                )
            else:
                write((r.code, r.name, r.address, r.country, *recorded))


_LOADERS: dict[ImportKind, Callable[[_Import, Any], None]] = {
    ImportKind.DONORS: _load_donors,
    ImportKind.DONATIONS: _load_donations,
    ImportKind.RESULTS: _load_results,
    ImportKind.POOL_MEMBERS: _load_pool_members,
    ImportKind.CONSIGNEES: _load_consignees,
}
_MODELS: dict[ImportKind, Any] = {
    ImportKind.DONORS: Donor,
    ImportKind.DONATIONS: Donation,
    ImportKind.RESULTS: TestResult,
    ImportKind.POOL_MEMBERS: PoolMember,
    ImportKind.CONSIGNEES: Consignee,
}


# --- rejects file ----------------------------------------------------------------------------------------------


_SCANNED_DIN = re.compile(r"=[0-9A-Z]{15,16}")
_NUMBER = re.compile(r"[-+]?[0-9][0-9.,]*")


def _spreadsheet_safe(cell: str) -> str:
    """A rejects cell a spreadsheet would run as a formula (``=HYPERLINK(...)``) gets an apostrophe in front. A
    scanned DIN (``=A99992612345600``) and a plain signed number stay as they are, so that a corrected rejects file
    imports as the original would have."""
    stripped = cell.lstrip(" ")
    if stripped.startswith(FORMULA_PREFIXES) and not (_SCANNED_DIN.fullmatch(stripped) or _NUMBER.fullmatch(stripped)):
        return "'" + cell
    return cell


class _RejectsWriter:
    """Rejected rows with their original cells plus ``line`` and ``problem``; written beside the target, then
    moved into place, so a failed run never leaves half a rejects file."""

    def __init__(self, target: Path, ignored: tuple[str, ...]) -> None:
        self.target, self.ignored = target, ignored
        self.header: list[str] = []
        self._temp = target.with_name(f".{target.name}.{os.getpid()}.part")
        self._file: Any = None
        self._csv: Any = None

    def write(self, record: Record, problems: list[RowProblem]) -> None:
        keep = [i for i, name in enumerate(self.header) if name not in self.ignored]
        if self._file is None:
            self._file = self._temp.open("w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._file, lineterminator="\n")
            self._csv.writerow([self.header[i] for i in keep] + ["line", "problem"])
        fields = record.fields
        text = "; ".join(
            f"{p.field}: {p.message}" if p.line == record.line else f"{p.field} (line {p.line}): {p.message}"
            for p in problems
        )
        if len(fields) > len(self.header):
            text += f" Extra fields: {' | '.join(fields[len(self.header) :])}"
        cells = [_spreadsheet_safe(fields[i]) if i < len(fields) else "" for i in keep]
        self._csv.writerow([*cells, record.line, _spreadsheet_safe(text)])

    def finish(self) -> Path | None:
        if self._file is None:
            return None
        self._file.close()
        os.replace(self._temp, self.target)
        return self.target

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._temp.unlink(missing_ok=True)
