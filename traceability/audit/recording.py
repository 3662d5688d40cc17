"""Recording: which rows of regulated tables a write touched, and the form an event keeps them in.

Every write records, in its event, the complete state of each row it created or changed (``new["records"]``) and,
for a changed or deleted row, the hash of its state before. ORM writes are noticed by the flush hooks; a set-based
statement says which rows it touches (``touching``, ``touching_where`` before a change; ``touched_new``,
``touched_new_where`` after an insert). An import keeps, in its ``import.*.completed`` event, a digest of the rows it
loaded (``import_digest``: a count and a sum of per-row hashes per table), so imported rows are proven without an
event per row; ``baseline`` is the digest of every row kept when a database from before the record proof is
upgraded.
"""

from __future__ import annotations

import hashlib
import marshal
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select
from sqlmodel import Session

from ..db import dialect
from ..models import IMPORT_EVENT_POINTERS
from .canonical import CHUNK, MASK, CanonicalRow, Digest, Value, row_hash, row_state
from .tables import BY_TABLE, REGULATED

BASELINE_ACTION = "audit.baseline"
_TOUCHED = "plasmatrace.touched_rows"


@dataclass
class _Touched:
    """Rows written in this transaction since the last event: table -> id -> canonical state before (None: new)."""

    before: dict[str, dict[int, tuple[Any, CanonicalRow] | None]] = field(default_factory=lambda: defaultdict(dict))
    after: dict[str, dict[int, dict[str, Value]]] = field(default_factory=lambda: defaultdict(dict))
    """Rows whose new state is their state before with these fields set (a set-based UPDATE of known values)."""


def _touched(session: Session) -> _Touched:
    found = session.info.get(_TOUCHED)
    if found is None:
        found = session.info[_TOUCHED] = _Touched()
    assert isinstance(found, _Touched)
    return found


def read_rows(session: Session, table: str, ids: Iterable[int]) -> dict[int, tuple[Any, CanonicalRow]]:
    """The canonical state of the given rows of one regulated table: id -> (import event id, row)."""
    spec = BY_TABLE[table]
    id_column = spec.model_table.c.id
    found: dict[int, tuple[Any, CanonicalRow]] = {}
    wanted = sorted(set(ids))
    connection = session.connection()
    if len(wanted) > 50 and wanted[-1] - wanted[0] < 2 * len(wanted):
        # Rows written together have ids close together: one range, no list of parameters to expand.
        chosen = set(wanted)
        query = spec.select().where(id_column.between(wanted[0], wanted[-1]))
        for row in connection.execute(query):
            if int(row[0]) in chosen:
                found[int(row[0])] = (row[1], row_state(row))
        return found
    for start in range(0, len(wanted), CHUNK):
        query = spec.select().where(id_column.in_(wanted[start : start + CHUNK]))
        for row in connection.execute(query):
            found[int(row[0])] = (row[1], row_state(row))
    return found


def touching(session: Session, table: str, ids: Iterable[int]) -> None:
    """Say that rows of a regulated table are about to be changed or deleted by a set-based statement (call it
    before the statement): the next audit event records their new state and the hash of their state before."""
    registry = _touched(session).before[table]
    new_ids = [i for i in ids if i not in registry]
    if not new_ids:
        return
    states = read_rows(session, table, new_ids)
    for i in new_ids:
        registry[i] = states.get(i)


def touched_new(session: Session, table: str, ids: Iterable[int]) -> None:
    """Say that rows of a regulated table were inserted by a set-based statement (call it after the statement)."""
    registry = _touched(session).before[table]
    for i in ids:
        registry.setdefault(i, None)


def touching_where(session: Session, table: str, condition: Any, *, sets: dict[str, Value] | None = None) -> None:
    """``touching`` for the rows a condition selects (one statement): call it before a set-based change. With
    ``sets`` (the UPDATE's values, which every selected row gets), their new state is not read again."""
    touched = _touched(session)
    registry = touched.before[table]
    known = touched.after[table]
    for row in session.connection().execute(BY_TABLE[table].select().where(condition)):
        row_id = int(row[0])
        if row_id not in registry:
            registry[row_id] = (row[1], row_state(row))
            if sets is not None:
                known[row_id] = sets


def touched_new_where(session: Session, table: str, condition: Any) -> None:
    """``touched_new`` for the rows a condition selects (one statement): call it after a set-based insert."""
    ids = session.connection().execute(select(BY_TABLE[table].model_table.c.id).where(condition)).scalars()
    touched_new(session, table, (int(i) for i in ids))


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    """Changed and deleted ORM objects of regulated tables: their state before, read while the database still
    holds it."""
    wanted: dict[str, list[int]] = defaultdict(list)
    for obj in list(session.dirty) + list(session.deleted):
        table = getattr(obj, "__tablename__", None)
        if table in BY_TABLE and obj.id is not None and session.is_modified(obj):
            wanted[table].append(obj.id)
    for obj in session.deleted:
        table = getattr(obj, "__tablename__", None)
        if table in BY_TABLE and obj.id is not None:
            wanted[table].append(obj.id)
    for table, ids in wanted.items():
        touching(session, table, ids)


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, context: Any) -> None:
    for obj in session.new:
        table = getattr(obj, "__tablename__", None)
        if table in BY_TABLE and obj.id is not None:
            touched_new(session, table, [obj.id])


@event.listens_for(Session, "after_transaction_end")
def _forget_touched(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the whole transaction, not a flush's or a savepoint's
        session.info.pop(_TOUCHED, None)


def capture(session: Session, *, baseline: bool) -> dict[str, Any] | None:
    """The rows touched since the last event, in the form an event keeps them (and forget them). The hash of a
    row's state before is kept where a digest needs it: for an imported row, or any row once there is a baseline."""
    touched = session.info.pop(_TOUCHED, None)
    if touched is None or not any(touched.before.values()):
        return None
    out: dict[str, Any] = {}
    for table, before in sorted(touched.before.items()):
        if not before:
            continue
        known = touched.after.get(table, {})
        after = read_rows(session, table, [i for i in before if i not in known])
        if known:
            columns = BY_TABLE[table].columns()
            for i, sets in known.items():
                old = before[i]
                if old is not None:
                    state = list(old[1])
                    for name, value in sets.items():
                        state[columns.index(name)] = value
                    after[i] = (old[0], tuple(state))
        rows: list[list[Value]] = []
        was: list[str | None] = []
        deleted: list[list[Value]] = []
        deleted_from: list[list[Any]] = []
        for i in sorted(before):
            old = before[i]
            if i in after:
                rows.append(list(after[i][1]))
                # The state before matters to a digest only: that of an import, or of the baseline if there is one.
                needed = old is not None and (old[0] is not None or baseline)
                was.append(f"{row_hash(old[1]):016x}" if needed and old is not None else None)
            elif old is not None:
                deleted.append(list(old[1]))
                deleted_from.append([old[0], i])
        entry: dict[str, Any] = {"columns": BY_TABLE[table].columns()}
        if rows:
            entry["rows"], entry["was"] = rows, was
        if deleted:
            entry["deleted"], entry["deleted_from"] = deleted, deleted_from
        out[table] = entry
    return out


# --- digests of imported rows ------------------------------------------------------------------------------------


def import_digest(session: Session, import_event_id: int, action: str) -> dict[str, Any]:
    """A digest per table of the rows an import loaded (those naming its event): what its completion event keeps.
    Only the tables whose rows name imports of this kind (``models.IMPORT_EVENT_POINTERS``) are read."""
    out: dict[str, Any] = {}
    connection = session.connection()
    plain = dialect.is_sqlite(connection)
    for spec in REGULATED:
        if IMPORT_EVENT_POINTERS.get(spec.table) != action:
            continue
        pointer = spec.model_table.c.import_event_id
        query = spec.select().where(pointer == import_event_id)
        count, total = _digest_rows(connection.execute(query.execution_options(yield_per=10_000)), plain)
        if count:
            out[spec.table] = Digest(count, total).as_json()
    return out


def _digest_rows(rows: Iterable[Any], plain: bool) -> tuple[int, int]:
    """Count and 64-bit sum of row hashes, in as few Python steps per row as it takes."""
    count = total = 0
    blake, from_bytes, dumps = hashlib.blake2b, int.from_bytes, marshal.dumps
    for row in rows:
        state = tuple(row)[2:] if plain else row_state(row)
        total += from_bytes(blake(dumps(state, 0), digest_size=8).digest(), "big")
        count += 1
    return count, total & MASK


def baseline(session: Session) -> dict[str, Any]:
    """A digest of every row of every regulated table, with the highest id: what the baseline event keeps when a
    database from before the record proof is upgraded (its older events do not carry full rows)."""
    out: dict[str, Any] = {}
    connection = session.connection()
    for spec in REGULATED:
        digest, top = Digest(), 0
        for row in connection.execute(spec.select()):
            digest.add(row_hash(row_state(row)))
            top = max(top, int(row[0]))
        out[spec.table] = digest.as_json() | {"max_id": top}
    return out
