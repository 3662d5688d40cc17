"""Loading import files (SPEC §6): donors, donations, screening results, pool members and consignees.

An import first hashes the raw bytes of its file (no parsing) so that a file imported before is recognised before
anything loads. One pass then validates every row and loads the file chunk by chunk: per chunk one query per kind
of reference (donors, units, establishments, pools, keys already recorded) and one set-based write through the
driver (:mod:`traceability.db.bulk`), never a query per row. A file found unreadable as a whole on the way (broken
quoting, a bad header) loads nothing. Everything happens inside a SAVEPOINT, so a file with a bad row (without
``skip_invalid``), a conflict or a dry run leaves the database exactly as it was, even for a caller that carries
on afterwards.

Each import is one audit event ``import.<kind>`` (file name, SHA-256), written before any row and named by every
row it loaded (``import_event_id``), then ``import.<kind>.completed`` with the counts (rows, loaded, already
present, rejected). The same file imported again is found by that event and adds nothing.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col

from .. import audit
from ..errors import InvalidImportFile, InvalidInput
from ..models import AuditEvent
from ..rules import DEFAULT_POLICY, Policy
from .job import PROBLEMS_KEPT, ImportJob
from .pipeline import parsed_chunks
from .readers import file_digest, read_records
from .registry import SPECS, ImportKind
from .rejects import RejectsWriter, default_rejects_path
from .spec import RowParser

__all__ = ["CHUNK_ROWS", "ImportKind", "ImportReport", "default_rejects_path", "import_file"]

CHUNK_ROWS = 5_000
"""Rows validated, resolved and inserted together: large enough for set-based work, small enough for memory."""
FULL_COLLECTION_CHUNKS = 20
_ENTITY_KEY_MAX = 200


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
    spec = SPECS[kind]
    columns = spec.columns
    sha256, lines = file_digest(path)

    chunk_rows = CHUNK_ROWS
    job = ImportJob(
        session,
        spec,
        path,
        actor=actor,
        policy=policy,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        chunk_rows=chunk_rows,
    )
    savepoint = session.begin_nested()
    writer: RejectsWriter | None = None
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
                return _report(
                    job, sha256, _recorded_rows(session, earlier), already_imported=True, event_seq=earlier.seq
                )
            # The file was loaded in part (--skip-invalid) before: load the rows that are valid now; the rows
            # loaded earlier are found recorded with the same values and counted as such.
            resumed_from = earlier.seq
        job.event_id = event.id
        if skip_invalid and not dry_run:
            writer = job.rejects = RejectsWriter(rejects_target, columns.ignored)
        if on_rows_counted is not None:
            on_rows_counted(max(lines - 1, 0))

        stream = job.stream = read_records(path, columns)
        processed = done = 0
        # A parser of its own for the chunks (read ahead in a thread when pipelined): RowParser remembers the layout.
        with job.chunks(parsed_chunks(stream, RowParser(spec, now=job.now), chunk_rows)) as chunks:
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
                    "digest": audit.recording.import_digest(session, event.id, event.action) if event.id else {},
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
    report = _report(
        job,
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
            col(AuditEvent.action) == f"import.{kind.value}",
            col(AuditEvent.new_values).contains(sha256),
            col(AuditEvent.id) != exclude,
        )
        .order_by(col(AuditEvent.seq))
    ).scalars()
    for event in candidates:
        if json.loads(event.new_values or "{}").get("sha256") == sha256:
            found: AuditEvent = event
            return found
    return None


def _rejected_last_time(session: Session, kind: ImportKind, sha256: str) -> int:
    """How many rows the latest completed import of this file rejected (0 when it loaded them all)."""
    for values in session.execute(
        select(col(AuditEvent.new_values))
        .where(col(AuditEvent.action) == f"import.{kind.value}.completed", col(AuditEvent.new_values).contains(sha256))
        .order_by(col(AuditEvent.seq).desc())
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
        select(col(AuditEvent.new_values))
        .where(
            col(AuditEvent.action) == f"{earlier.action}.completed",
            col(AuditEvent.new_values).contains(started["sha256"]),
            col(AuditEvent.seq) > earlier.seq,
        )
        .order_by(col(AuditEvent.seq))
    ).scalars():
        completed = json.loads(values or "{}")
        if completed.get("sha256") == started["sha256"]:
            return int(completed.get("rows", 0))
    return 0


def _report(
    job: ImportJob,
    sha256: str,
    rows: int,
    *,
    already_imported: bool,
    event_seq: int | None,
    rejects_path: str | None = None,
) -> ImportReport:
    return ImportReport(
        kind=ImportKind(job.spec.name),
        path=job.file,
        sha256=sha256,
        rows=rows,
        loaded=job.loaded,
        already_present=job.present,
        rejected=job.rejected,
        problems=list(job.problems),
        problem_count=job.problem_count,
        rejects_path=rejects_path,
        dry_run=job.dry_run,
        already_imported=already_imported,
        event_seq=event_seq,
        reactive=list(job.reactive),
    )
