"""An empty or rebuilt trail is not intact, and checkpoints kept elsewhere catch a chain rewritten whole.

The hash chain proves itself: a trail dropped and recreated, or one whose every event was rewritten consistently,
is still a valid chain. Two checks close that:

- ``records_without_events``: every row of a regulated table must have the audit event that created it (or, for
  an imported row, name an import event of its kind). A trail that is empty, or that starts after the rows were
  written, leaves rows without their events; they are named by table and business key. Set-based: two statements
  per table.
- A checkpoint file: ``audit checkpoint --to FILE`` appends the head of the chain as one line (``SEQ:SHA256``, the
  time it was taken, and a digest chaining the line to the one before it) to a file kept elsewhere (write-once
  media, another server). ``audit verify --checkpoints FILE`` checks every line against the chain: a chain
  rehashed from the first event on no longer holds the hash any earlier checkpoint recorded.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, FromClause, String, and_, cast, exists, func, or_, select
from sqlmodel import Session, SQLModel, col

from .audit import GENESIS_HASH
from .errors import InvalidInput, NotFound
from .models import IMPORT_EVENT_POINTERS, AuditEvent

GENESIS_DIGEST = "0" * 64
SAMPLE = 5  # business keys named per table; the count says how many more there are

# --- records without events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unproven:
    """Rows of one table that have no audit event creating them."""

    table: str
    count: int
    keys: tuple[str, ...]  # the first few business keys, in key order

    def describe(self) -> str:
        rows = "1 row has" if self.count == 1 else f"{self.count:,} rows have"
        more = self.count - len(self.keys)
        listed = ", ".join(self.keys) + (f" and {more:,} more" if more > 0 else "")
        return f"{self.table}: {rows} no audit event recording {'it' if self.count == 1 else 'them'} ({listed})"


@dataclass(frozen=True)
class _Proof:
    """How the rows of one table are proven by the trail: ``recorded`` is true where the event that created the row
    exists (its action, on the entity type and business key of the row or of its parent); an imported row may
    instead name an import event of its kind (see ``_imported``)."""

    table: str
    source: FromClause
    keys: tuple[ColumnElement[object], ...]  # the business key shown, column by column
    recorded: ColumnElement[bool]  # true where the creating event exists


def _table(name: str) -> FromClause:
    return SQLModel.metadata.tables[name]


def _event_on(entity_type: str, entity_key: ColumnElement[Any], *actions: str) -> ColumnElement[bool]:
    events = _table("audit_event")
    return exists().where(
        events.c.entity_type == entity_type, events.c.entity_key == entity_key, events.c.action.in_(actions)
    )


UNCHECKED = frozenset({"audit_event", "alembic_version", "recall_drill"})
"""Tables whose rows need no creating event: the trail itself, and the kept recall drills (a drill changes no
regulated record, so it is kept outside the chain; its answer digest and audit checkpoint are in the row)."""


def proven_tables() -> frozenset[str]:
    return frozenset(p.table for p in _proofs())


def _proofs() -> list[_Proof]:
    t = SQLModel.metadata.tables
    establishment, donor, donation, result = t["establishment"], t["donor"], t["donation"], t["test_result"]
    pool, member, pool_test, lot, lot_input = t["pool"], t["pool_member"], t["pool_test"], t["lot"], t["lot_input"]
    step, consignee, shipment, deferral = t["step"], t["consignee"], t["shipment"], t["deferral"]
    case, finding, user, signature = t["lookback_case"], t["case_finding"], t["app_user"], t["signature"]
    correction, events = t["correction_deviation"], t["audit_event"]
    task, hold, recall, recall_consignee = t["case_task"], t["lot_hold"], t["recall"], t["recall_consignee"]
    step_pool, step_lot = pool.alias("step_pool"), lot.alias("step_lot")
    return [
        _Proof("establishment", establishment, (establishment.c.code,),
               _event_on("establishment", establishment.c.code, "establishment.added")),
        _Proof("donor", donor, (donor.c.donor_code,), _event_on("donor", donor.c.donor_code, "donor.added")),
        _Proof("donation", donation, (donation.c.unit_number,),
               _event_on("donation", donation.c.unit_number, "donation.added")),
        _Proof("test_result", result.join(donation, donation.c.id == result.c.donation_id),
               (donation.c.unit_number, result.c.marker, result.c.version),
               _event_on("donation", donation.c.unit_number, "result.added")),
        _Proof("deferral", deferral.join(donor, donor.c.id == deferral.c.donor_id),
               (donor.c.donor_code, deferral.c.sequence), _event_on("donor", donor.c.donor_code, "donor.deferred")),
        _Proof("pool", pool, (pool.c.pool_number,), _event_on("pool", pool.c.pool_number, "pool.created")),
        _Proof("pool_member", member.join(pool, pool.c.id == member.c.pool_id).join(
                   donation, donation.c.id == member.c.donation_id),
               (pool.c.pool_number, donation.c.unit_number),
               _event_on("pool", pool.c.pool_number, "pool.units_added")),
        _Proof("pool_test", pool_test.join(pool, pool.c.id == pool_test.c.pool_id),
               (pool.c.pool_number, pool_test.c.marker, pool_test.c.version),
               _event_on("pool", pool.c.pool_number, "pool.tested")),
        _Proof("lot", lot, (lot.c.lot_number,), _event_on("lot", lot.c.lot_number, "lot.created")),
        _Proof("lot_input", lot_input.join(lot, lot.c.id == lot_input.c.lot_id), (lot.c.lot_number, lot_input.c.id),
               _event_on("lot", lot.c.lot_number, "lot.created")),
        _Proof("step", step.outerjoin(step_pool, step_pool.c.id == step.c.pool_id).outerjoin(
                   step_lot, step_lot.c.id == step.c.lot_id),
               (step.c.step_key,),
               or_(_event_on("pool", step_pool.c.pool_number, "step.added"),
                   _event_on("lot", step_lot.c.lot_number, "step.added"))),
        _Proof("consignee", consignee, (consignee.c.code,),
               _event_on("consignee", consignee.c.code, "consignee.added")),
        _Proof("shipment", shipment.join(lot, lot.c.id == shipment.c.lot_id), (shipment.c.shipment_number,),
               _event_on("lot", lot.c.lot_number, "lot.shipped")),
        _Proof("lookback_case", case, (case.c.case_number,),
               _event_on("lookback_case", case.c.case_number, "lookback.opened")),
        _Proof("case_finding", finding.join(case, case.c.id == finding.c.case_id).join(
                   donation, donation.c.id == finding.c.donation_id),
               (case.c.case_number, donation.c.unit_number),
               _event_on("lookback_case", case.c.case_number, "lookback.opened", "lookback.joined")),
        _Proof("case_task", task.join(case, case.c.id == task.c.case_id), (case.c.case_number, task.c.seq),
               _event_on("case_task", case.c.case_number + "#" + cast(task.c.seq, String), "lookback.task_added")),
        _Proof("lot_hold", hold.join(lot, lot.c.id == hold.c.lot_id), (lot.c.lot_number, hold.c.id),
               _event_on("lot", lot.c.lot_number, "lot.held")),
        _Proof("recall", recall, (recall.c.recall_number,),
               _event_on("recall", recall.c.recall_number, "recall.opened")),
        _Proof("recall_consignee", recall_consignee.join(recall, recall.c.id == recall_consignee.c.recall_id).join(
                   consignee, consignee.c.id == recall_consignee.c.consignee_id),
               (recall.c.recall_number, consignee.c.code),
               _event_on("recall_consignee", recall.c.recall_number + "/" + consignee.c.code,
                         "recall.consignee_listed")),
        _Proof("app_user", user, (user.c.login,), _event_on("user", user.c.login, "user.added")),
        _Proof("signature", signature, (signature.c.entity_type, signature.c.entity_key, signature.c.id),
               exists().where(events.c.id == signature.c.audit_event_id, events.c.action == "signature.applied")),
        _Proof("correction_deviation", correction.join(donation, donation.c.id == correction.c.donation_id),
               (correction.c.reference, donation.c.unit_number),
               _event_on("donation", donation.c.unit_number, "donation.corrected")),
    ]  # fmt: skip


def _imported(table: str) -> ColumnElement[bool] | None:
    """True where the row names an import event of its kind (one hashed set per table, not a lookup per row)."""
    action = IMPORT_EVENT_POINTERS.get(table)
    if action is None:
        return None
    pointer = _table(table).c.import_event_id
    imports = select(col(AuditEvent.id)).where(col(AuditEvent.action) == action)
    return and_(pointer.is_not(None), pointer.in_(imports))


def records_without_events(session: Session, *, sample: int = SAMPLE) -> list[Unproven]:
    """Every regulated table's rows that have no audit event recording their creation (or, imported, no import
    event of their kind): a trail that is empty, rebuilt, or starts after the rows were written leaves them."""
    found = []
    for proof in _proofs():
        imported = _imported(proof.table)
        proven = proof.recorded if imported is None else or_(imported, proof.recorded)
        missing = select(*proof.keys).select_from(proof.source).where(~proven)
        count = session.execute(select(func.count()).select_from(missing.subquery())).scalar_one()
        if not count:
            continue
        rows = session.execute(missing.order_by(*proof.keys).limit(sample)).all()
        keys = tuple(" ".join(str(getattr(v, "value", v)) for v in row) for row in rows)
        found.append(Unproven(proof.table, int(count), keys))
    return found


# --- checkpoints kept in a file --------------------------------------------------------------------------------

_LINE = re.compile(r"^(\d+):([0-9a-f]{64}) (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) ([0-9a-f]{64})$")
LINE_FORM = "SEQ:SHA256 YYYY-MM-DDTHH:MM:SSZ DIGEST"


@dataclass(frozen=True)
class Checkpoint:
    """One line of a checkpoint file: the head of the chain when it was taken."""

    line: int  # its line number in the file, from 1
    seq: int
    hash: str
    taken_at: str  # UTC, to the second, as written
    digest: str  # SHA-256 of the line before's digest and this line's head and time

    @property
    def token(self) -> str:
        return f"{self.seq}:{self.hash}"

    def text(self) -> str:
        return f"{self.token} {self.taken_at} {self.digest}"


def line_digest(previous: str, seq: int, head_hash: str, taken_at: str) -> str:
    return hashlib.sha256(f"{previous} {seq}:{head_hash} {taken_at}".encode("ascii")).hexdigest()


def read_checkpoints(path: Path) -> list[Checkpoint]:
    """The checkpoints of a file, each line checked: its form and its digest (which chains it to the line before,
    so an edited, removed or reordered line is caught). Blank lines and lines starting with '#' are skipped.
    Raises NotFound (no such file) or InvalidInput naming the line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound("Checkpoint file", str(path)) from None
    except OSError as error:
        raise InvalidInput(f"Checkpoint file {path} cannot be read: {error.strerror or error}.") from None
    return _parse(raw, path)


def _parse(raw: bytes, path: Path) -> list[Checkpoint]:
    try:
        content = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput(f"Checkpoint file {path} is not a checkpoint file (it holds non-ASCII bytes).") from None
    found: list[Checkpoint] = []
    previous = GENESIS_DIGEST
    for number, line in enumerate(content.splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _LINE.match(text)
        if match is None:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise InvalidInput(f"{path} line {number} is not a checkpoint ({LINE_FORM}): {shown!r}.")
        seq, head_hash, taken_at, digest = int(match[1]), match[2], match[3], match[4]
        try:
            datetime.strptime(taken_at, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise InvalidInput(f"{path} line {number}: {taken_at!r} is not a valid time.") from None
        if digest != line_digest(previous, seq, head_hash, taken_at):
            raise InvalidInput(
                f"{path} line {number} does not carry the digest of its content and the line before it: "
                "the line was edited, or a line before it was removed or reordered."
            )
        found.append(Checkpoint(number, seq, head_hash, taken_at, digest))
        previous = digest
    return found


def append_checkpoint(path: Path, *, seq: int, head_hash: str, now: datetime | None = None) -> Checkpoint:
    """Append the head as one line to ``path`` (created when missing), after checking every line already there.
    The file is only ever appended to, so it can live on write-once media; an exclusive lock keeps two processes
    appending at once from chaining both lines to the same line before. Raises InvalidInput."""
    taken_at = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except FileNotFoundError:
        raise InvalidInput(f"Checkpoint file {path}: its folder does not exist.") from None
    except OSError as error:
        raise InvalidInput(f"Checkpoint file {path} cannot be written: {error.strerror or error}.") from None
    with os.fdopen(descriptor, "r+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            raw = handle.read()
        except OSError as error:
            raise InvalidInput(f"Checkpoint file {path} cannot be read: {error.strerror or error}.") from None
        existing = _parse(raw, path)
        previous = existing[-1].digest if existing else GENESIS_DIGEST
        number = raw.count(b"\n") + (1 if raw and not raw.endswith(b"\n") else 0) + 1
        line = Checkpoint(number, seq, head_hash, taken_at, line_digest(previous, seq, head_hash, taken_at))
        text = ("\n" if raw and not raw.endswith(b"\n") else "") + line.text() + "\n"
        try:
            handle.write(text.encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as error:
            raise InvalidInput(f"Checkpoint file {path} cannot be written: {error.strerror or error}.") from None
    return line


def head(session: Session) -> tuple[int, str]:
    """The last event's seq and hash ((0, genesis) on an empty trail)."""
    row = session.execute(
        select(col(AuditEvent.seq), col(AuditEvent.hash)).order_by(col(AuditEvent.seq).desc()).limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)


def checkpoint_problems(session: Session, checkpoints: Sequence[Checkpoint], *, path: Path) -> list[str]:
    """What each checkpoint says against the chain as it is now, earliest line first: a checkpoint whose event
    holds another hash (the chain was rewritten at or before it) or is gone (the tail was cut). Meant to run after
    the chain itself verified: then an event that still holds a checkpoint's hash proves every event up to it."""
    seqs = sorted({c.seq for c in checkpoints if c.seq > 0})
    held: dict[int, str] = {0: GENESIS_HASH}
    for start in range(0, len(seqs), 1000):
        chunk = seqs[start : start + 1000]
        rows = session.execute(select(col(AuditEvent.seq), col(AuditEvent.hash)).where(col(AuditEvent.seq).in_(chunk)))
        held.update((int(seq), str(digest)) for seq, digest in rows)
    last = head(session)[0]
    problems = []
    for checkpoint in checkpoints:
        where = f"{path} line {checkpoint.line} (event {checkpoint.seq}, taken {checkpoint.taken_at})"
        now_held = held.get(checkpoint.seq)
        if now_held is None:
            problems.append(
                f"{where}: the chain ends at event {last} but the checkpoint names event {checkpoint.seq}: "
                "events after it were removed"
            )
        elif now_held != checkpoint.hash:
            problems.append(
                f"{where} does not match the chain: event {checkpoint.seq} now hashes to {now_held[:12]}..., the "
                f"checkpoint recorded {checkpoint.hash[:12]}...: the chain was rewritten at or before event "
                f"{checkpoint.seq}"
            )
    return problems
