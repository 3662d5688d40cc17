"""The donor trace's one statement, and its rows decoded by name.

Every fact about the donor is one row of a UNION ALL, told apart by its first column, ``kind``. The other columns
are slots shared by the branches (``n1..n4`` integers, ``t1..t3`` text, ``ts`` a timestamp, ``d1..d3`` dates), so
that each slot has one type. Which field of which row sits in which slot is said once, in ``_LAYOUT``; the
statement is built from it and the rows are read back through it into the named tuples below.

A result row is every version of a marker (the latest is kept while reading, which is cheaper than asking SQL for
the latest per marker), and a lot row is every lot downstream of one of the donor's pools (recursive) with each of
its shipments (one row when there is none). There is no ORDER BY: donations and deferrals are few and sorted in
Python, which SQLite does faster than sorting each branch of the union.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Date,
    Dialect,
    Integer,
    String,
    and_,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from ...db.dialect import dialect_key
from ...models import (
    Deferral,
    Donation,
    Donor,
    Establishment,
    Lot,
    LotInput,
    Pool,
    PoolMember,
    Shipment,
    TestResult,
    UTCDateTime,
)


class DonorRow(NamedTuple):
    donor_id: int
    donor_code: str
    establishment: str
    registered_on: Any  # the driver's date (converted while reading)


class DeferralRow(NamedTuple):
    sequence: int
    reason: str
    source: str
    starts_on: Any
    ends_on: Any
    lifted_on: Any


class DonationRow(NamedTuple):
    donation_id: int
    volume_ml: int
    version: int
    pool_id: int | None
    unit_number: str
    status: str
    pool_number: str | None
    collected_at: Any  # the driver's timestamp (converted while reading)


class ResultRow(NamedTuple):
    donation_id: int
    version: int
    marker: str
    result: str


class LotRow(NamedTuple):
    pool_id: int  # the donor's pool the lot comes from
    quantity: int | None  # of the shipment, when there is one
    lot_number: str
    shipment_number: str | None
    consignee: str | None
    shipped_on: Any


FactRow = DonorRow | DeferralRow | DonationRow | ResultRow | LotRow

_SLOTS: dict[str, Any] = {
    "n1": Integer,
    "n2": Integer,
    "n3": Integer,
    "n4": Integer,
    "t1": String,
    "t2": String,
    "t3": String,
    "ts": UTCDateTime,
    "d1": Date,
    "d2": Date,
    "d3": Date,
}

# Each row type: its ``kind`` and the slot of each of its fields, in field order.
_LAYOUT: dict[type[FactRow], tuple[int, tuple[str, ...]]] = {
    DonorRow: (0, ("n1", "t1", "t2", "d1")),
    DeferralRow: (1, ("n1", "t1", "t2", "d1", "d2", "d3")),
    DonationRow: (2, ("n1", "n2", "n3", "n4", "t1", "t2", "t3", "ts")),
    ResultRow: (3, ("n1", "n2", "t1", "t2")),
    LotRow: (4, ("n1", "n2", "t1", "t2", "t3", "d1")),
}


def _facts(row_type: type[FactRow], **columns: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    """The columns of one branch: its kind, each named field in its slot and typed NULLs in the other slots
    (PostgreSQL would take a bare NULL in a UNION for text)."""
    kind, slots = _LAYOUT[row_type]
    if tuple(columns) != row_type._fields:
        raise RuntimeError(f"{row_type.__name__} needs {row_type._fields}, got {tuple(columns)}")
    placed = dict(zip(slots, columns.values(), strict=True))
    out: list[ColumnElement[Any]] = [literal_column(str(kind), Integer).label("kind")]
    out += [(placed[name] if name in placed else cast(null(), type_)).label(name) for name, type_ in _SLOTS.items()]
    return out


# Reading back: the row's kind picks its type and the getter that takes that type's slots out of the raw row.
_SLOT_INDEX = {name: i + 1 for i, name in enumerate(_SLOTS)}
_READERS: dict[int, tuple[Callable[[Any], Any], Callable[[Any], FactRow]]] = {
    kind: (itemgetter(*(_SLOT_INDEX[s] for s in slots)), row_type._make) for row_type, (kind, slots) in _LAYOUT.items()
}


def decode(raw: Any) -> FactRow:
    """One raw row of the statement as its named row."""
    take, make = _READERS[raw[0]]
    return make(take(raw))


def kind_of(row_type: type[FactRow]) -> int:
    return _LAYOUT[row_type][0]


def result_positions() -> ResultRow:
    """Where each field of a result row sits in a raw row, for reading the many result rows without building a
    named row for each (they are most of a donor's rows)."""
    return ResultRow._make(_SLOT_INDEX[slot] for slot in _LAYOUT[ResultRow][1])


def donor_trace_statement(*, as_of: bool = False) -> CompoundSelect[Any]:
    """The trace of today's records, or with ``as_of`` of the rows recorded by the bound time ``as_of`` (deferrals,
    donations, pool memberships, results, lots and shipments whose ``created_at`` is not after it)."""
    # Built from the tables' Core columns, not the ORM attributes: compiling it then needs no ORM compile state and
    # no mapper configuration, which made up most of a one-off command's first trace.
    t_donor, t_donation, t_member, t_input, t_site, t_deferral, t_pool, t_result, t_lot, t_shipment = (
        SQLModel.metadata.tables[str(model.__tablename__)]
        for model in (Donor, Donation, PoolMember, LotInput, Establishment, Deferral, Pool, TestResult, Lot, Shipment)
    )
    cutoff = bindparam("as_of", type_=UTCDateTime())

    def known(table: Any) -> list[ColumnElement[bool]]:
        """The rows of ``table`` recorded by the as-of time: no condition at all for today's trace."""
        return [table.c.created_at <= cutoff] if as_of else []

    me = (
        select(t_donor.c.id, t_donor.c.donor_code, t_donor.c.registered_on, t_donor.c.establishment_id)
        .where(t_donor.c.donor_code == bindparam("donor_code"))
        .cte("me")
    )
    donor_id = select(me.c.id).scalar_subquery()
    down = (
        select(t_member.c.pool_id.label("origin"), t_input.c.lot_id.label("lot_id"))
        .join(t_donation, t_donation.c.id == t_member.c.donation_id)
        .join(t_input, t_input.c.input_pool_id == t_member.c.pool_id)
        .where(t_donation.c.donor_id == donor_id, *known(t_member), *known(t_input))
        .cte("donor_down", recursive=True)
    )
    down = down.union(
        select(down.c.origin, t_input.c.lot_id)
        .join(down, t_input.c.input_lot_id == down.c.lot_id)
        .where(*known(t_input))
    )
    donor = _facts(
        DonorRow,
        donor_id=me.c.id,
        donor_code=me.c.donor_code,
        establishment=t_site.c.code,
        registered_on=me.c.registered_on,
    )
    deferral = _facts(
        DeferralRow,
        sequence=t_deferral.c.sequence,
        reason=t_deferral.c.reason,
        source=type_coerce(t_deferral.c.source, String),
        starts_on=t_deferral.c.starts_on,
        ends_on=t_deferral.c.ends_on,
        lifted_on=t_deferral.c.lifted_on,
    )
    donation = _facts(
        DonationRow,
        donation_id=t_donation.c.id,
        volume_ml=t_donation.c.volume_ml,
        version=t_donation.c.version,
        pool_id=t_pool.c.id,
        unit_number=t_donation.c.unit_number,
        status=type_coerce(t_donation.c.status, String),
        pool_number=t_pool.c.pool_number,
        collected_at=t_donation.c.collected_at,
    )
    result = _facts(
        ResultRow,
        donation_id=t_result.c.donation_id,
        version=t_result.c.version,
        marker=type_coerce(t_result.c.marker, String),
        result=type_coerce(t_result.c.result, String),
    )
    lot = _facts(
        LotRow,
        pool_id=down.c.origin,
        quantity=t_shipment.c.quantity,
        lot_number=t_lot.c.lot_number,
        shipment_number=t_shipment.c.shipment_number,
        consignee=t_shipment.c.consignee,
        shipped_on=t_shipment.c.shipped_on,
    )
    # Every branch finds its rows by donor_id = (the donor's id), one value: SQLite, which keeps no statistics, then
    # searches the donor_id index first whatever join order it would otherwise try (a plain join to the donor made it
    # scan test_result), and PostgreSQL needs no semi-join for it.
    return union_all(
        select(*donor).select_from(me).join(t_site, t_site.c.id == me.c.establishment_id),
        select(*deferral).where(t_deferral.c.donor_id == donor_id, *known(t_deferral)),
        select(*donation)
        .select_from(t_donation)
        .outerjoin(t_member, and_(t_member.c.donation_id == t_donation.c.id, *known(t_member)))
        .outerjoin(t_pool, t_pool.c.id == t_member.c.pool_id)
        .where(t_donation.c.donor_id == donor_id, *known(t_donation)),
        select(*result)
        .join(t_donation, t_donation.c.id == t_result.c.donation_id)
        .where(t_donation.c.donor_id == donor_id, *known(t_result)),
        select(*lot)
        .select_from(down)
        .join(t_lot, t_lot.c.id == down.c.lot_id)
        .outerjoin(t_shipment, and_(t_shipment.c.lot_id == t_lot.c.id, *known(t_shipment))),
    )


DONOR_TRACE = donor_trace_statement()
DONOR_TRACE_AS_OF = donor_trace_statement(as_of=True)


@dataclass(frozen=True)
class DriverStatement:
    """The trace compiled once for one dialect and driver, with SQLAlchemy's own conversions of that driver's
    timestamps and dates (SQLite gives text, psycopg gives objects) to apply to the few values that need them."""

    sql: str
    positional: tuple[str, ...] | None  # the name of each ``?`` in order, or None for named parameters
    at: Callable[[Any], datetime]
    day: Callable[[Any], date]
    bind_time: Callable[[datetime], Any]  # the as-of time as this driver takes it

    def run(self, conn: Connection, donor_code: str, as_of: datetime | None = None) -> list[Any]:
        params: Any
        if as_of is None and self.positional is not None:  # today's trace: every ``?`` is the donor code
            params = (donor_code,) * len(self.positional)
        else:
            values = {"donor_code": donor_code, "as_of": None if as_of is None else self.bind_time(as_of)}
            params = tuple(values[name] for name in self.positional) if self.positional is not None else values
        dbapi = conn.dialect.loaded_dbapi
        try:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(self.sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except dbapi.Error as error:
            raise DBAPIError.instance(self.sql, params, error, dbapi.Error, dialect=conn.dialect) from error


_COMPILED: dict[tuple[str, str, str, bool], DriverStatement] = {}


def compiled_for(dialect: Dialect, *, as_of: bool = False) -> DriverStatement:
    key = (*dialect_key(dialect), as_of)
    found = _COMPILED.get(key)
    if found is None:
        compiled = (DONOR_TRACE_AS_OF if as_of else DONOR_TRACE).compile(dialect=dialect)
        names = list(compiled.positiontup or ()) if compiled.positional else list(compiled.binds)
        expected = {"donor_code", "as_of"} if as_of else {"donor_code"}
        if set(names) != expected:  # run() passes these and nothing else
            raise RuntimeError(f"the donor trace takes {sorted(expected)}, not {sorted(set(names))}")

        def converter(type_: Any) -> Callable[[Any], Any]:
            process = type_.dialect_impl(dialect).result_processor(dialect, None)
            return process or (lambda value: value)

        bind = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        found = _COMPILED[key] = DriverStatement(
            sql=str(compiled),
            positional=tuple(names) if compiled.positional else None,
            at=converter(UTCDateTime()),
            day=converter(Date()),
            bind_time=bind or (lambda value: value),
        )
    return found
