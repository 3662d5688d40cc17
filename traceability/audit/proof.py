"""The record proof: every row of every regulated table is what the audit trail says was written.

``verify_records`` replays the trail into the state it says each table holds and reads each table once (one
SELECT per table, streamed), naming every difference: table, business key, field, what the trail says and what the
table holds. Imported rows are proven by the digest their import's completion event keeps, and rows present at an
``audit.baseline`` event by its digest.
"""

from __future__ import annotations

import hashlib
import json
import marshal
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, tuple_
from sqlmodel import Session, col

from ..db import dialect
from ..models import AuditEvent
from .canonical import CHUNK, MASK, RECORDS_KEY, CanonicalRow, Digest, Value, canonical, row_hash, row_state
from .recording import BASELINE_ACTION
from .tables import BY_TABLE, REGULATED, Regulated


@dataclass(frozen=True)
class Difference:
    """One way a table differs from what the trail says it holds."""

    table: str
    key: str
    field: str | None
    trail: Value | str
    table_holds: Value | str

    def render(self) -> str:
        where = f"{self.table} {self.key}" + (f", field {self.field}" if self.field else "")
        return f"{where}: the trail says {_shown(self.trail)}, the table holds {_shown(self.table_holds)}"


def _shown(value: Any) -> str:
    return "NULL" if value is None else (value if isinstance(value, str) and value.startswith("(") else repr(value))


@dataclass
class _Life:
    """What the trail says of one business key of one table."""

    hash: int | None = None  # None: deleted (or never created)
    seq: int = 0
    row: CanonicalRow | None = None  # kept only for small trails; else re-read from the event
    changes: list[tuple[int, int, Any, int | None]] = field(default_factory=list)
    """(seq, hash before, import event id of a deleted row or None, id of a deleted row or None) per change."""


@dataclass
class _ImportClaim:
    seq: int
    digests: dict[str, Digest]


def _key_text(key: Sequence[Value]) -> str:
    return "/".join("-" if v is None else str(v) for v in key)


def _events(session: Session, since_seq: int) -> Iterator[tuple[int, int, str, str | None]]:
    query = (
        select(col(AuditEvent.seq), col(AuditEvent.id), col(AuditEvent.action), col(AuditEvent.new_values))
        .where(col(AuditEvent.seq) > since_seq)
        .order_by(col(AuditEvent.seq))
        .execution_options(yield_per=2_000)
    )
    for row in session.connection().execute(query):
        yield int(row[0]), int(row[1] or 0), str(row[2]), row[3]


@dataclass
class RecordProof:
    """The outcome of replaying the trail against the tables."""

    tables: int = 0
    rows: int = 0
    differences: list[Difference] = field(default_factory=list)
    more: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences


_SHOWN_MAX = 200


def verify_records(session: Session, *, since_seq: int = 0) -> RecordProof:
    """Replay the trail into the state it says each regulated table holds and compare it with the tables."""
    proof = RecordProof()

    def differ(d: Difference) -> None:
        if len(proof.differences) < _SHOWN_MAX:
            proof.differences.append(d)
        else:
            proof.more += 1

    lives: dict[str, dict[CanonicalRow, _Life]] = {spec.table: {} for spec in REGULATED}
    imports: dict[int, _ImportClaim] = {}
    started: dict[int, int] = {}  # import event seq by id, for imports whose completion comes later
    base: tuple[int, dict[str, Any]] | None = None
    for seq, _id, action, text in _events(session, since_seq):
        if action == BASELINE_ACTION:
            base = (seq, json.loads(text or "{}").get("tables", {}))
            for table in lives.values():
                table.clear()
            imports.clear()
            continue
        if action.startswith("import.") and not action.endswith(".completed"):
            started[_id] = seq
            continue
        if not text or (RECORDS_KEY not in text and "digest" not in text):
            continue
        values = json.loads(text)
        if action.startswith("import.") and action.endswith(".completed"):
            event_id = values.get("import_event")
            if event_id is not None and "digest" in values:
                imports[int(event_id)] = _ImportClaim(
                    seq, {t: Digest(int(d["rows"]), int(d["sum"], 16)) for t, d in values["digest"].items()}
                )
        records = values.get(RECORDS_KEY) if isinstance(values, dict) else None
        if not records:
            continue
        for table, entry in records.items():
            spec = BY_TABLE.get(table)
            if spec is None:
                continue
            width = len(spec.key)
            known = lives[table]
            for row, was in zip(entry.get("rows", []), entry.get("was", []), strict=False):
                state = tuple(row)
                key = state[:width]
                life = known.get(key)
                if life is None:
                    life = known[key] = _Life()
                if was is not None:
                    life.changes.append((seq, int(was, 16), None, None))
                life.hash, life.seq, life.row = row_hash(state), seq, state
            origins = entry.get("deleted_from") or [[None, None]] * len(entry.get("deleted", []))
            for row, (origin, row_id) in zip(entry.get("deleted", []), origins, strict=False):
                state = tuple(row)
                key = state[:width]
                life = known.get(key)
                if life is None:
                    life = known[key] = _Life()
                life.changes.append((seq, row_hash(state), origin, row_id))
                life.hash, life.seq, life.row = None, seq, None

    base_seq, base_tables = base if base else (0, {})
    connection = session.connection()
    for spec in REGULATED:
        proof.tables += 1
        known = lives[spec.table]
        width = len(spec.key)
        names = spec.columns()
        claimed: dict[int, Digest] = defaultdict(Digest)
        base_info = base_tables.get(spec.table)
        base_max = int(base_info["max_id"]) if base_info else 0
        base_digest = Digest()
        seen: set[CanonicalRow] = set()
        # The common case (an imported row no event touched since) in as few steps as Python allows: marshal
        # (format 0: no interning marks) and BLAKE2b in C, the sum kept per import.
        sums: dict[Any, list[int]] = {i: [0, 0] for i in imports}
        sums.update({str(i): s for i, s in sums.items()})
        plain = dialect.is_sqlite(connection)  # SQLite returns text and numbers: canonical already
        blake, from_bytes, dumps = hashlib.blake2b, int.from_bytes, marshal.dumps
        for raw in _table_rows(connection, spec, known, imports, since_seq):
            proof.rows += 1
            state = tuple(raw)[2:] if plain else row_state(raw)
            imported = raw[1]
            if imported is not None and (not known or state[:width] not in known):
                acc = sums.get(imported)
                if acc is not None:
                    acc[0] += 1
                    acc[1] += from_bytes(blake(dumps(state, 0), digest_size=8).digest(), "big")
                    continue
            key = state[:width]
            value = row_hash(state)
            life = known.get(key)
            row_id = int(raw[0])
            if life is not None:
                seen.add(key)
                if life.hash is None:
                    differ(Difference(spec.table, _key_text(key), None, f"(deleted by event {life.seq})", "(a row)"))
                elif life.hash != value:
                    trail_row = life.row or ()
                    for name, said, holds in zip(names, trail_row, state, strict=False):
                        if said != holds:
                            differ(Difference(spec.table, _key_text(key), name, said, holds))
            if imported is not None and int(imported) in imports:
                claim = imports[int(imported)]
                claimed[int(imported)].add(_first_before(life, claim.seq, value))
            elif base and row_id <= base_max:
                base_digest.add(_first_before(life, base_seq, value))
            elif life is None:
                differ(Difference(spec.table, _key_text(key), None, "(no event wrote this row)", "(a row)"))
        for key, life in known.items():
            for seq, _before, origin, row_id in life.changes:
                if row_id is None:
                    continue  # a change, not a deletion
                if origin is not None and int(origin) in imports:
                    claim = imports[int(origin)]
                    if claim.seq < seq:
                        claimed[int(origin)].add(_first_before(life, claim.seq, 0, until=seq))
                elif base and int(row_id) <= base_max and base_seq < seq:
                    base_digest.add(_first_before(life, base_seq, 0, until=seq))
            if key not in seen and life.hash is not None:
                differ(
                    Difference(spec.table, _key_text(key), None, f"(a row, written by event {life.seq})", "(no row)")
                )
        for import_id, claim in imports.items():
            kept = claim.digests.get(spec.table)
            slow = claimed.get(import_id, Digest())
            fast = sums[import_id]
            held = Digest(slow.rows + fast[0], (slow.total + fast[1]) & MASK)
            if kept is None and held.rows == 0:
                continue
            loaded = kept or Digest()
            if (loaded.rows, loaded.total) != (held.rows, held.total):
                differ(
                    Difference(
                        spec.table,
                        f"(rows of import event {claim.seq})",
                        None,
                        f"({loaded.rows:,} rows, digest {loaded.total:016x})",
                        f"({held.rows:,} rows, digest {held.total:016x})",
                    )
                )
        if base_info is not None:
            at_base = Digest(int(base_info["rows"]), int(base_info["sum"], 16))
            # Rows of the baseline deleted since are accounted by their deletion event.
            if (at_base.rows, at_base.total) != (base_digest.rows, base_digest.total):
                differ(
                    Difference(
                        spec.table,
                        f"(rows present at the baseline, event {base_seq})",
                        None,
                        f"({at_base.rows:,} rows, digest {at_base.total:016x})",
                        f"({base_digest.rows:,} rows, digest {base_digest.total:016x})",
                    )
                )
    return proof


def _table_rows(
    connection: Any, spec: Regulated, known: dict[CanonicalRow, _Life], imports: dict[int, _ImportClaim], since: int
) -> Iterator[Any]:
    """Every row of the table (one streamed SELECT); after a checkpoint only the rows the trail says changed since
    and the rows of imports since (a statement per 500 keys)."""
    query = spec.select()
    if not since:
        yield from connection.execute(query.execution_options(stream_results=True, yield_per=10_000))
        return
    width = len(spec.key)
    if any(None in k for k in known):  # a NULL in a key matches nothing in IN: read this table whole
        yield from connection.execute(query.execution_options(stream_results=True, yield_per=10_000))
        return
    inner = spec.source()
    raw_keys = list(inner.selected_columns)[2 : 2 + width]
    keys = sorted(known, key=repr)
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        if width == 1:
            condition = raw_keys[0].in_([k[0] for k in chunk])
        else:
            condition = tuple_(*raw_keys).in_([tuple(k) for k in chunk])
        yield from connection.execute(query.where(condition))
    if spec.imported and imports:
        pointer = spec.model_table.c.import_event_id
        for raw in connection.execute(query.where(pointer.in_(sorted(imports)))):
            if tuple(canonical(v) for v in raw[2 : 2 + width]) not in known:
                yield raw


def _first_before(life: _Life | None, after_seq: int, current: int, *, until: int | None = None) -> int:
    """The hash a row had at ``after_seq``: the state before its first change after then (up to ``until``), or
    its state now."""
    if life is not None:
        for seq, before, _origin, _id in life.changes:
            if seq > after_seq and (until is None or seq <= until):
                return before
    return current
