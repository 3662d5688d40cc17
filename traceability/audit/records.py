"""The record proof: every row of every regulated table is what the audit trail says was written.

Each regulated table has one declaration (``Regulated``): its business key, the fields the trail keeps, and the
actions that create, change or delete its rows. Every write records, in its event, the complete state of each row
it created or changed (``new["records"]``) and, for a changed or deleted row, the hash of its state before. An
import keeps, in its ``import.*.completed`` event, a digest of the rows it loaded (a count and a sum of per-row
hashes per table), so imported rows are proven without an event per row.

``verify_records`` replays the trail into the state it says each table holds and reads each table once (one
SELECT per table, streamed), naming every difference: table, business key, field, what the trail says and what the
table holds.

Rows are compared in a canonical form: text, whole numbers and floats as the driver returns them; times as
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC; dates as ``YYYY-MM-DD``; JSON as sorted compact text.
"""

from __future__ import annotations

import hashlib
import json
import marshal
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Select, Table, event, null, select, tuple_, type_coerce
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType
from sqlmodel import Session, SQLModel, col

from ..db import dialect
from ..models import (
    IMPORT_EVENT_POINTERS,
    AppUser,
    AuditEvent,
    CaseFinding,
    CaseTask,
    Consignee,
    CorrectionDeviation,
    Deferral,
    Donation,
    Donor,
    Establishment,
    LookbackCase,
    Lot,
    LotHold,
    LotInput,
    Pool,
    PoolMember,
    PoolTest,
    Recall,
    RecallConsignee,
    Shipment,
    Step,
    TestResult,
)

Value = str | int | float | None
CanonicalRow = tuple[Value, ...]

RECORDS_KEY = "records"
"""Where an event keeps the rows it wrote: ``new["records"][table] = {"columns", "rows", "was", "deleted"}``."""

BASELINE_ACTION = "audit.baseline"
_TOUCHED = "plasmatrace.touched_rows"
_MASK = (1 << 64) - 1
_CHUNK = 5_000


# --- canonical form ----------------------------------------------------------------------------------------------


def canonical(value: Any) -> Value:
    """One value as the proof compares it, whatever the engine returned."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            if value.utcoffset():
                value = value.astimezone(UTC)
            value = value.replace(tzinfo=None)
        return str(value.isoformat(" ", "microseconds"))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


_PLAIN_TYPES = frozenset((str, int, float, type(None)))


def _state(row: Any) -> CanonicalRow:
    """The canonical business state of a row read by a declaration's SELECT (after its id and import columns).
    SQLite returns text and numbers already: the common case costs one pass in C."""
    values = tuple(row)[2:]
    if _PLAIN_TYPES.issuperset(map(type, values)):
        return values
    return tuple(canonical(v) for v in values)


def row_hash(values: Sequence[Value]) -> int:
    """A 64-bit hash of one canonical row (order of fields fixed by its table's declaration)."""
    return _from_bytes(_blake2b(marshal.dumps(tuple(values), 0), digest_size=8).digest(), "big")


_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes
_dumps = marshal.dumps


# --- the declarations --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regulated:
    """One regulated table: how to read its rows in business terms, and which actions write them.

    ``source`` returns a SELECT whose first two columns are the row's surrogate id and its import event (or NULL),
    then the business key's columns (``key`` names them), then every other field the trail keeps."""

    table: str
    key: tuple[str, ...]
    source: Callable[[], Select[Any]]
    creates: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    deletes: tuple[str, ...] = ()
    imported: bool = False

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(self.creates + self.changes + self.deletes)

    def select(self) -> Select[Any]:
        """The declaration's SELECT with every column read as the driver returns it (no type processing)."""
        query = self.source()
        coerced = query.with_only_columns(
            *(type_coerce(c, NullType()).label(c.key or f"c{i}") for i, c in enumerate(query.selected_columns)),
            maintain_column_froms=True,
        )
        return cast("Select[Any]", coerced)

    def columns(self) -> list[str]:
        return [c.key or "" for c in self.source().selected_columns][2:]

    @property
    def model_table(self) -> Table:
        return SQLModel.metadata.tables[self.table]


def _imp(column: Any) -> ColumnElement[Any]:
    return type_coerce(column, NullType()).label("_import")


def _no_import() -> ColumnElement[Any]:
    return null().label("_import")


def _recorded(model: Any) -> list[ColumnElement[Any]]:
    return [col(model.created_at).label("created_at"), col(model.created_by).label("created_by")]


def _establishments() -> Select[Any]:
    e = Establishment
    return select(col(e.id), _no_import(), col(e.code), col(e.name), col(e.kind), col(e.timezone), *_recorded(e))


def _donors() -> Select[Any]:
    site = aliased(Establishment)
    return (
        select(
            col(Donor.id),
            _imp(col(Donor.import_event_id)),
            col(Donor.donor_code),
            col(site.code).label("establishment"),
            col(Donor.registered_on),
            *_recorded(Donor),
        )
        .select_from(Donor)
        .outerjoin(site, col(site.id) == col(Donor.establishment_id))
    )


def _deferrals() -> Select[Any]:
    d = Deferral
    return (
        select(
            col(d.id),
            _no_import(),
            col(Donor.donor_code).label("donor"),
            col(d.sequence),
            col(d.reason),
            col(d.source),
            col(d.starts_on),
            col(d.ends_on),
            col(d.lifted_on),
            col(d.lift_reason),
            col(d.marker),
            *_recorded(d),
        )
        .select_from(d)
        .outerjoin(Donor, col(Donor.id) == d.donor_id)
    )


def _donations() -> Select[Any]:
    d = Donation
    site = aliased(Establishment)
    return (
        select(
            col(d.id),
            _imp(d.import_event_id),
            col(d.unit_number),
            col(d.scheme),
            col(d.flag),
            col(Donor.donor_code).label("donor"),
            col(site.code).label("establishment"),
            col(d.collected_at),
            col(d.frozen_at),
            col(d.volume_ml),
            col(d.plasma_kind),
            col(d.status),
            col(d.status_reason),
            col(d.version),
            *_recorded(d),
        )
        .select_from(d)
        .outerjoin(Donor, col(Donor.id) == d.donor_id)
        .outerjoin(site, col(site.id) == col(d.establishment_id))
    )


def _results() -> Select[Any]:
    r = TestResult
    lab = aliased(Establishment)
    return (
        select(
            col(r.id),
            _imp(r.import_event_id),
            col(Donation.unit_number).label("unit"),
            col(r.marker),
            col(r.version),
            col(r.result),
            col(r.value),
            col(r.value_unit),
            col(r.method),
            col(lab.code).label("lab"),
            col(r.tested_at),
            col(r.reason),
            *_recorded(r),
        )
        .select_from(r)
        .outerjoin(Donation, col(Donation.id) == r.donation_id)
        .outerjoin(lab, col(lab.id) == col(r.lab_id))
    )


def _pools() -> Select[Any]:
    p = Pool
    return select(
        col(p.id),
        _no_import(),
        col(p.pool_number),
        col(p.product),
        col(p.status),
        col(p.closed_at),
        col(p.released_at),
        col(p.status_reason),
        col(p.drawn_ml),
        *_recorded(p),
    )


def _members() -> Select[Any]:
    m = PoolMember
    return (
        select(
            col(m.id),
            _imp(m.import_event_id),
            col(Donation.unit_number).label("unit"),
            col(Pool.pool_number).label("pool"),
            *_recorded(m),
        )
        .select_from(m)
        .outerjoin(Donation, col(Donation.id) == m.donation_id)
        .outerjoin(Pool, col(Pool.id) == m.pool_id)
    )


def _pool_tests() -> Select[Any]:
    t = PoolTest
    return (
        select(
            col(t.id),
            _no_import(),
            col(Pool.pool_number).label("pool"),
            col(t.marker),
            col(t.version),
            col(t.result),
            col(t.value),
            col(t.value_unit),
            col(t.tested_at),
            col(t.reason),
            *_recorded(t),
        )
        .select_from(t)
        .outerjoin(Pool, col(Pool.id) == t.pool_id)
    )


def _lots() -> Select[Any]:
    o = Lot
    return select(
        col(o.id),
        _no_import(),
        col(o.lot_number),
        col(o.product),
        col(o.kind),
        col(o.status),
        col(o.released_at),
        col(o.status_reason),
        col(o.quantity),
        col(o.unit),
        col(o.expires_on),
        col(o.drawn),
        col(o.shipped),
        *_recorded(o),
    )


def _lot_inputs() -> Select[Any]:
    i = LotInput
    made, drawn = aliased(Lot), aliased(Lot)
    return (
        select(
            col(i.id),
            _no_import(),
            col(made.lot_number).label("lot"),
            col(Pool.pool_number).label("input_pool"),
            col(drawn.lot_number).label("input_lot"),
            col(i.quantity),
            col(i.quantity_unit),
            *_recorded(i),
        )
        .select_from(i)
        .outerjoin(made, col(made.id) == col(i.lot_id))
        .outerjoin(Pool, col(Pool.id) == i.input_pool_id)
        .outerjoin(drawn, col(drawn.id) == col(i.input_lot_id))
    )


def _steps() -> Select[Any]:
    s = Step
    return (
        select(
            col(s.id),
            _no_import(),
            col(s.step_key),
            col(Pool.pool_number).label("pool"),
            col(Lot.lot_number).label("lot"),
            col(s.method),
            col(s.started_at),
            col(s.ended_at),
            col(s.parameters),
            col(s.lrv_enveloped),
            col(s.lrv_non_enveloped),
            col(s.outcome),
            col(s.operator),
            col(s.deviation_closed_at),
            col(s.deviation_closure),
            *_recorded(s),
        )
        .select_from(s)
        .outerjoin(Pool, col(Pool.id) == s.pool_id)
        .outerjoin(Lot, col(Lot.id) == s.lot_id)
    )


def _consignees() -> Select[Any]:
    c = Consignee
    return select(
        col(c.id),
        _imp(c.import_event_id),
        col(c.code),
        col(c.name),
        col(c.address),
        col(c.country),
        *_recorded(c),
    )


def _shipments() -> Select[Any]:
    s = Shipment
    return (
        select(
            col(s.id),
            _no_import(),
            col(s.shipment_number),
            col(Lot.lot_number).label("lot"),
            col(Consignee.code).label("consignee_code"),
            col(s.consignee),
            col(s.quantity),
            col(s.shipped_on),
            *_recorded(s),
        )
        .select_from(s)
        .outerjoin(Lot, col(Lot.id) == s.lot_id)
        .outerjoin(Consignee, col(Consignee.id) == s.consignee_id)
    )


def _cases() -> Select[Any]:
    c = LookbackCase
    return (
        select(
            col(c.id),
            _no_import(),
            col(c.case_number),
            col(Donor.donor_code).label("donor"),
            col(c.reason),
            col(c.status),
            col(c.window_start),
            col(c.closed_at),
            col(c.closure),
            col(c.trigger),
            col(c.received_on),
            col(c.timezone),
            col(c.closed_by),
            *_recorded(c),
        )
        .select_from(c)
        .outerjoin(Donor, col(Donor.id) == c.donor_id)
    )


def _tasks() -> Select[Any]:
    t = CaseTask
    return (
        select(
            col(t.id),
            _no_import(),
            col(LookbackCase.case_number).label("case"),
            col(t.seq),
            col(t.kind),
            col(Lot.lot_number).label("lot"),
            col(Consignee.code).label("consignee"),
            col(t.due_on),
            col(t.state),
            col(t.decision),
            col(t.note),
            col(t.done_at),
            col(t.done_by),
            *_recorded(t),
        )
        .select_from(t)
        .outerjoin(LookbackCase, col(LookbackCase.id) == t.case_id)
        .outerjoin(Lot, col(Lot.id) == t.lot_id)
        .outerjoin(Consignee, col(Consignee.id) == t.consignee_id)
    )


def _holds() -> Select[Any]:
    h = LotHold
    return (
        select(
            col(h.id),
            _no_import(),
            col(Lot.lot_number).label("lot"),
            col(h.id).label("hold"),
            col(LookbackCase.case_number).label("case"),
            col(h.reason),
            col(h.lifted_at),
            col(h.lifted_by),
            col(h.lift_reason),
            *_recorded(h),
        )
        .select_from(h)
        .outerjoin(Lot, col(Lot.id) == h.lot_id)
        .outerjoin(LookbackCase, col(LookbackCase.id) == h.case_id)
    )


def _recalls() -> Select[Any]:
    r = Recall
    return (
        select(
            col(r.id),
            _no_import(),
            col(r.recall_number),
            col(Lot.lot_number).label("lot"),
            col(r.recall_class),
            col(r.reason),
            col(r.status),
            col(r.closed_at),
            col(r.closed_by),
            *_recorded(r),
        )
        .select_from(r)
        .outerjoin(Lot, col(Lot.id) == r.lot_id)
    )


def _recall_consignees() -> Select[Any]:
    rc = RecallConsignee
    return (
        select(
            col(rc.id),
            _no_import(),
            col(Recall.recall_number).label("recall"),
            col(Consignee.code).label("consignee"),
            col(rc.shipped),
            col(rc.notified_on),
            col(rc.notified_by),
            col(rc.acknowledged_at),
            col(rc.acknowledged_by),
            col(rc.returned),
            *_recorded(rc),
        )
        .select_from(rc)
        .outerjoin(Recall, col(Recall.id) == rc.recall_id)
        .outerjoin(Consignee, col(Consignee.id) == rc.consignee_id)
    )


def _findings() -> Select[Any]:
    f = CaseFinding
    return (
        select(
            col(f.id),
            _no_import(),
            col(LookbackCase.case_number).label("case"),
            col(Donation.unit_number).label("unit"),
            col(Pool.pool_number).label("pool"),
            col(f.action),
            *_recorded(f),
        )
        .select_from(f)
        .outerjoin(LookbackCase, col(LookbackCase.id) == f.case_id)
        .outerjoin(Donation, col(Donation.id) == f.donation_id)
        .outerjoin(Pool, col(Pool.id) == f.pool_id)
    )


def _users() -> Select[Any]:
    u = AppUser
    return select(
        col(u.id),
        _no_import(),
        col(u.login),
        col(u.full_name),
        col(u.roles),
        col(u.password_hash),
        col(u.disabled_at),
        col(u.disabled_by),
        *_recorded(u),
    )


def _corrections() -> Select[Any]:
    c = CorrectionDeviation
    return (
        select(
            col(c.id),
            _no_import(),
            col(Donation.unit_number).label("unit"),
            col(c.donation_version),
            col(c.reference),
            col(Pool.pool_number).label("pool"),
            col(c.changes),
            col(c.reason),
            *_recorded(c),
        )
        .select_from(c)
        .outerjoin(Donation, col(Donation.id) == c.donation_id)
        .outerjoin(Pool, col(Pool.id) == c.pool_id)
    )


_REACTIVE = ("result.added", "import.results")
"""A reactive result (typed or imported) rejects its unit, defers its donor and interdicts units in its window."""

REGULATED: tuple[Regulated, ...] = (
    Regulated("establishment", ("code",), _establishments, creates=("establishment.added",)),
    Regulated("donor", ("donor_code",), _donors, creates=("donor.added",), imported=True),
    Regulated(
        "deferral",
        ("donor", "sequence"),
        _deferrals,
        creates=("donor.deferred",),
        changes=("donor.deferral_lifted",),
    ),
    Regulated(
        "donation",
        ("unit_number",),
        _donations,
        creates=("donation.added",),
        changes=(
            "donation.corrected",
            "donation.discarded",
            "donation.rejected",
            "donation.interdicted",
            "pool.units_added",
            "pool.units_removed",
        ),
        imported=True,
    ),
    Regulated("test_result", ("unit", "marker", "version"), _results, creates=("result.added",), imported=True),
    Regulated(
        "pool",
        ("pool_number",),
        _pools,
        creates=("pool.created",),
        changes=("pool.closed", "pool.quarantined", "pool.released", "lot.created"),
    ),
    Regulated(
        "pool_member",
        ("unit",),
        _members,
        creates=("pool.units_added",),
        deletes=("pool.units_removed",),
        imported=True,
    ),
    Regulated("pool_test", ("pool", "marker", "version"), _pool_tests, creates=("pool.tested",)),
    Regulated(
        "lot",
        ("lot_number",),
        _lots,
        creates=("lot.created",),
        changes=(
            "lot.created",
            "lot.quantity-recorded",
            "lot.released",
            "lot.quarantined",
            "lot.hold_lifted",
            "lot.shipped",
        ),
    ),
    Regulated("lot_input", ("lot", "input_pool", "input_lot"), _lot_inputs, creates=("lot.created",)),
    Regulated("step", ("step_key",), _steps, creates=("step.added",), changes=("step.deviation_closed",)),
    Regulated("consignee", ("code",), _consignees, creates=("consignee.added",), imported=True),
    Regulated("shipment", ("shipment_number",), _shipments, creates=("lot.shipped",)),
    Regulated(
        "lookback_case",
        ("case_number",),
        _cases,
        creates=("lookback.opened",),
        changes=("lookback.joined", "lookback.closed"),
    ),
    Regulated("case_finding", ("case", "unit"), _findings, creates=("lookback.opened", "lookback.joined")),
    Regulated(
        "case_task",
        ("case", "seq"),
        _tasks,
        creates=("lookback.task_added",),
        changes=("lookback.task_done", "lookback.task_waived"),
    ),
    Regulated("lot_hold", ("lot", "hold"), _holds, creates=("lot.held",), changes=("lot.unheld",)),
    Regulated("recall", ("recall_number",), _recalls, creates=("recall.opened",), changes=("recall.closed",)),
    Regulated(
        "recall_consignee",
        ("recall", "consignee"),
        _recall_consignees,
        creates=("recall.consignee_listed",),
        changes=("recall.notified", "recall.acknowledged"),
    ),
    Regulated("app_user", ("login",), _users, creates=("user.added",), changes=("user.disabled",)),
    Regulated("correction_deviation", ("unit", "donation_version"), _corrections, creates=("donation.corrected",)),
)
"""Every regulated table, one declaration each; a new table is one more entry here (tests/integrity/test_record_proof
fails for a table in the metadata that is neither here nor in NOT_REGULATED)."""

NOT_REGULATED: dict[str, str] = {
    "audit_event": "the trail itself: its hash chain proves it (audit verify checks the chain first)",
    "recall_drill": (
        "a kept recall drill changes no regulated record (SPEC §12): it is kept outside the chain, with the audit "
        "checkpoint it read and the SHA-256 of its answer"
    ),
    "signature": (
        "each row restates its own signature.applied event (login, printed name, meaning, time, content hash), "
        "which the chain proves; it is written after that event because it names the event's id"
    ),
}
"""Tables in the metadata that the record proof does not replay, and why."""

BY_TABLE: dict[str, Regulated] = {spec.table: spec for spec in REGULATED}


# --- recording: which rows a write touched -----------------------------------------------------------------------


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
                found[int(row[0])] = (row[1], _state(row))
        return found
    for start in range(0, len(wanted), _CHUNK):
        query = spec.select().where(id_column.in_(wanted[start : start + _CHUNK]))
        for row in connection.execute(query):
            found[int(row[0])] = (row[1], _state(row))
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
            registry[row_id] = (row[1], _state(row))
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


@dataclass
class Digest:
    rows: int = 0
    total: int = 0

    def add(self, value: int) -> None:
        self.rows += 1
        self.total = (self.total + value) & _MASK

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "sum": f"{self.total:016x}"}


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
    blake, from_bytes, dumps = _blake2b, _from_bytes, _dumps
    for row in rows:
        state = tuple(row)[2:] if plain else _state(row)
        total += from_bytes(blake(dumps(state, 0), digest_size=8).digest(), "big")
        count += 1
    return count, total & _MASK


def baseline(session: Session) -> dict[str, Any]:
    """A digest of every row of every regulated table, with the highest id: what the baseline event keeps when a
    database from before the record proof is upgraded (its older events do not carry full rows)."""
    out: dict[str, Any] = {}
    connection = session.connection()
    for spec in REGULATED:
        digest, top = Digest(), 0
        for row in connection.execute(spec.select()):
            digest.add(row_hash(_state(row)))
            top = max(top, int(row[0]))
        out[spec.table] = digest.as_json() | {"max_id": top}
    return out


# --- verification --------------------------------------------------------------------------------------------------


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
        blake, from_bytes, dumps = _blake2b, _from_bytes, _dumps
        for raw in _table_rows(connection, spec, known, imports, since_seq):
            proof.rows += 1
            state = tuple(raw)[2:] if plain else _state(raw)
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
            held = Digest(slow.rows + fast[0], (slow.total + fast[1]) & _MASK)
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
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
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
