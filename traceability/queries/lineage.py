"""Lineage traces, forward from a donor or unit and backward from a lot or pool.

Each trace runs a fixed number of statements whatever the size of the pools (joins, recursive CTEs and GROUP BYs,
never one statement per unit) and returns plain read models that outlive the session.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Date,
    Dialect,
    Integer,
    String,
    bindparam,
    cast,
    func,
    literal_column,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from ..calendars import local_day
from ..errors import CaseNotFound, DonorNotFound
from ..models import (
    CaseFinding,
    Consignee,
    CorrectionDeviation,
    Deferral,
    Donation,
    Donor,
    Establishment,
    LookbackCase,
    Lot,
    LotInput,
    Pool,
    PoolMember,
    PoolTest,
    Shipment,
    Step,
    TestResult,
    UTCDateTime,
)
from ..rules import (
    DEFAULT_POLICY,
    Policy,
    final_lot_clearance_problems,
    in_lookback_window,
    lookback_anchor,
    lookback_window_starts_on,
    panel_complete_and_nonreactive,
)
from . import casework
from .clearance import lot_clearance
from .eligibility import zone_of_donation
from .graph import downstream_lots, steps_for, upstream
from .holds import active_holds
from .lookup import get_lot, get_pool, get_unit
from .signatures import signatures_for


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass
class ShipmentLine:
    shipment_number: str
    lot_number: str
    consignee: str
    shipped_on: str
    quantity: int
    consignee_address: str | None = None  # a distribution record (21 CFR 606.165): name, address, lot, quantity,
    unit: str | None = None  # day shipped and the lot's expiry
    expires_on: str | None = None


@dataclass
class DeviationLine:
    """A correction to a unit in a closed or released pool, made under a named deviation."""

    reference: str
    pool_number: str
    unit_number: str
    version: int
    changes: str
    reason: str
    recorded_at: str
    recorded_by: str


def _deviations(session: Session, pool_ids: set[int]) -> list[DeviationLine]:
    if not pool_ids:
        return []
    rows = session.execute(
        select(CorrectionDeviation, Pool.pool_number, Donation.unit_number)
        .join(Pool, Pool.id == CorrectionDeviation.pool_id)
        .join(Donation, Donation.id == CorrectionDeviation.donation_id)
        .where(CorrectionDeviation.pool_id.in_(pool_ids))
        .order_by(CorrectionDeviation.created_at, CorrectionDeviation.id)
    )
    return [
        DeviationLine(
            d.reference, pool, unit, d.donation_version, d.changes, d.reason, d.created_at.isoformat(), d.created_by
        )
        for d, pool, unit in rows
    ]


@dataclass
class StepLine:
    step_key: str
    target: str
    method: str
    started_at: str
    ended_at: str
    outcome: str
    deviation_open: bool
    lrv_enveloped: float | None
    lrv_non_enveloped: float | None
    parameters: dict[str, str]
    operator: str


@dataclass
class LotLine:
    lot_number: str
    product: str
    kind: str
    status: str


def _shipments(session: Session, lot_ids: set[int]) -> list[ShipmentLine]:
    if not lot_ids:
        return []
    rows = session.execute(
        select(
            Shipment.shipment_number,
            Lot.lot_number,
            Shipment.consignee,
            Shipment.shipped_on,
            Shipment.quantity,
            Consignee.address,
            Lot.unit,
            Lot.expires_on,
        )
        .join(Lot, Lot.id == Shipment.lot_id)
        .join(Consignee, Consignee.id == Shipment.consignee_id)
        .where(Shipment.lot_id.in_(lot_ids))
        .order_by(Shipment.shipped_on, Shipment.shipment_number)
    )
    return [
        ShipmentLine(n, lot, to, on.isoformat(), q, address, unit.value if unit else None, _iso(expires))
        for n, lot, to, on, q, address, unit, expires in rows
    ]


def _distribution_details(session: Session, lines: dict[str, ShipmentLine]) -> None:
    """Fill in what a distribution record needs besides the trace's own columns: address, unit, expiry."""
    if not lines:
        return
    rows = session.execute(
        select(Shipment.shipment_number, Consignee.address, Lot.unit, Lot.expires_on)
        .join(Consignee, Consignee.id == Shipment.consignee_id)
        .join(Lot, Lot.id == Shipment.lot_id)
        .where(Shipment.shipment_number.in_(list(lines)))
    )
    for number, address, unit, expires in rows:
        line = lines[number]
        line.consignee_address, line.unit, line.expires_on = address, unit.value if unit else None, _iso(expires)


def _lots(session: Session, lot_ids: set[int]) -> dict[int, LotLine]:
    if not lot_ids:
        return {}
    rows = session.execute(select(Lot.id, Lot.lot_number, Lot.product, Lot.kind, Lot.status).where(Lot.id.in_(lot_ids)))
    return {i: LotLine(n, p, k.value, s.value) for i, n, p, k, s in rows}


def _step_lines(steps: list[Step], pool_names: dict[int, str], lot_names: dict[int, str]) -> list[StepLine]:
    return [
        StepLine(
            step_key=s.step_key,
            target=pool_names.get(s.pool_id or -1) or lot_names.get(s.lot_id or -1, ""),
            method=s.method.value,
            started_at=s.started_at.isoformat(),
            ended_at=s.ended_at.isoformat(),
            outcome=s.outcome.value,
            deviation_open=s.outcome.value == "deviation" and s.deviation_closed_at is None,
            lrv_enveloped=s.lrv_enveloped,
            lrv_non_enveloped=s.lrv_non_enveloped,
            parameters=dict(s.parameters or {}),
            operator=s.operator,
        )
        for s in steps
    ]


# --- forward: donor and unit -----------------------------------------------------------------------------------


@dataclass
class DonationLine:
    unit_number: str
    collected_at: str
    volume_ml: int
    status: str
    pool_number: str | None
    lot_numbers: list[str]
    results: dict[str, str]
    in_lookback_window: bool
    changed: bool


@dataclass
class DonorTrace:
    donor_code: str
    establishment: str
    registered_on: str | None
    deferrals: list[dict[str, Any]]
    lookback_window_start: str | None
    donations: list[DonationLine]
    pools: list[str]
    lots: list[str]
    shipments: list[ShipmentLine]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# The whole forward trace is one statement: every fact about the donor is one row of a UNION ALL, told apart by its
# first column, ``kind``. The other columns are slots shared by the branches, so that each slot has one type:
#
#   0 donor      n1 donor id, t1 donor_code, t2 establishment code, d1 registered_on
#   1 deferral   n1 sequence, t1 reason, t2 source, d1 starts_on, d2 ends_on, d3 lifted_on
#   2 donation   n1 donation id, n2 volume_ml, n3 version, n4 pool id, t1 unit_number, t2 status, t3 pool_number,
#                ts collected_at
#   3 result     n1 donation id, n2 version, t1 marker, t2 result
#   4 lot        n1 pool id it comes from, n2 shipment quantity, t1 lot_number, t2 shipment_number, t3 consignee,
#                d1 shipped_on
#
# A result row is every version of a marker (the latest is kept while reading, which is cheaper than asking SQL for
# the latest per marker), and a lot row is every lot downstream of one of the donor's pools (recursive) with each of
# its shipments (one row when there is none). There is no ORDER BY: donations and deferrals are few and sorted in
# Python, which SQLite does faster than sorting each branch of the union.
_DONOR_ROW, _DEFERRAL_ROW, _DONATION_ROW, _RESULT_ROW, _LOT_ROW = range(5)
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


def _facts(kind: int, **slots: Any) -> list[Any]:
    """The columns of one branch of the trace: its kind, its values in the named slots and typed NULLs in the others
    (PostgreSQL would take a bare NULL in a UNION for text)."""
    columns = [literal_column(str(kind), Integer).label("kind")]
    columns += [(slots[name] if name in slots else cast(null(), type_)).label(name) for name, type_ in _SLOTS.items()]
    return columns


def _donor_trace_statement() -> CompoundSelect:
    # Built from the tables' Core columns, not the ORM attributes: compiling it then needs no ORM compile state and
    # no mapper configuration, which made up most of a one-off command's first trace.
    t_donor, t_donation, t_member, t_input, t_site, t_deferral, t_pool, t_result, t_lot, t_shipment = (
        model.__table__
        for model in (Donor, Donation, PoolMember, LotInput, Establishment, Deferral, Pool, TestResult, Lot, Shipment)
    )
    me = select(t_donor.c.id, t_donor.c.donor_code, t_donor.c.registered_on, t_donor.c.establishment_id)
    me = me.where(t_donor.c.donor_code == bindparam("donor_code")).cte("me")
    donor_id = select(me.c.id).scalar_subquery()
    down = (
        select(t_member.c.pool_id.label("origin"), t_input.c.lot_id.label("lot_id"))
        .join(t_donation, t_donation.c.id == t_member.c.donation_id)
        .join(t_input, t_input.c.input_pool_id == t_member.c.pool_id)
        .where(t_donation.c.donor_id == donor_id)
        .cte("donor_down", recursive=True)
    )
    down = down.union(select(down.c.origin, t_input.c.lot_id).join(down, t_input.c.input_lot_id == down.c.lot_id))
    donor = _facts(_DONOR_ROW, n1=me.c.id, t1=me.c.donor_code, t2=t_site.c.code, d1=me.c.registered_on)
    deferral = _facts(
        _DEFERRAL_ROW,
        n1=t_deferral.c.sequence,
        t1=t_deferral.c.reason,
        t2=type_coerce(t_deferral.c.source, String),
        d1=t_deferral.c.starts_on,
        d2=t_deferral.c.ends_on,
        d3=t_deferral.c.lifted_on,
    )
    donation = _facts(
        _DONATION_ROW,
        n1=t_donation.c.id,
        n2=t_donation.c.volume_ml,
        n3=t_donation.c.version,
        n4=t_pool.c.id,
        t1=t_donation.c.unit_number,
        t2=type_coerce(t_donation.c.status, String),
        t3=t_pool.c.pool_number,
        ts=t_donation.c.collected_at,
    )
    result = _facts(
        _RESULT_ROW,
        n1=t_result.c.donation_id,
        n2=t_result.c.version,
        t1=type_coerce(t_result.c.marker, String),
        t2=type_coerce(t_result.c.result, String),
    )
    lot = _facts(
        _LOT_ROW,
        n1=down.c.origin,
        n2=t_shipment.c.quantity,
        t1=t_lot.c.lot_number,
        t2=t_shipment.c.shipment_number,
        t3=t_shipment.c.consignee,
        d1=t_shipment.c.shipped_on,
    )
    # Every branch finds its rows by donor_id = (the donor's id), one value: SQLite, which keeps no statistics, then
    # searches the donor_id index first whatever join order it would otherwise try (a plain join to the donor made it
    # scan test_result), and PostgreSQL needs no semi-join for it.
    return union_all(
        select(*donor).select_from(me).join(t_site, t_site.c.id == me.c.establishment_id),
        select(*deferral).where(t_deferral.c.donor_id == donor_id),
        select(*donation)
        .select_from(t_donation)
        .outerjoin(t_member, t_member.c.donation_id == t_donation.c.id)
        .outerjoin(t_pool, t_pool.c.id == t_member.c.pool_id)
        .where(t_donation.c.donor_id == donor_id),
        select(*result)
        .join(t_donation, t_donation.c.id == t_result.c.donation_id)
        .where(t_donation.c.donor_id == donor_id),
        select(*lot)
        .select_from(down)
        .join(t_lot, t_lot.c.id == down.c.lot_id)
        .outerjoin(t_shipment, t_shipment.c.lot_id == t_lot.c.id),
    )


_DONOR_TRACE = _donor_trace_statement()


@dataclass(frozen=True)
class _DriverStatement:
    """The trace compiled once for one dialect and driver, with SQLAlchemy's own conversions of that driver's
    timestamps and dates (SQLite gives text, psycopg gives objects) to apply to the few values that need them."""

    sql: str
    positional: int | None  # the number of ``?`` (each the donor code), or None for a named parameter
    at: Callable[[Any], datetime]
    day: Callable[[Any], date]

    def run(self, conn: Connection, donor_code: str) -> list[Any]:
        params: Any = (donor_code,) * self.positional if self.positional is not None else {"donor_code": donor_code}
        dbapi = conn.dialect.loaded_dbapi
        try:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(self.sql, params)
                return cursor.fetchall()
            finally:
                cursor.close()
        except dbapi.Error as error:
            raise DBAPIError.instance(self.sql, params, error, dbapi.Error, dialect=conn.dialect) from error


_COMPILED: dict[tuple[str, str, str], _DriverStatement] = {}


def _compiled_for(dialect: Dialect) -> _DriverStatement:
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    found = _COMPILED.get(key)
    if found is None:
        compiled = _DONOR_TRACE.compile(dialect=dialect)
        names = list(compiled.positiontup or ()) if compiled.positional else list(compiled.binds)
        if set(names) != {"donor_code"}:  # run() passes the donor code and nothing else
            raise RuntimeError(f"the donor trace takes only the donor code, not {sorted(set(names))}")

        def converter(type_: Any) -> Callable[[Any], Any]:
            process = type_.dialect_impl(dialect).result_processor(dialect, None)
            return process or (lambda value: value)

        found = _COMPILED[key] = _DriverStatement(
            sql=str(compiled),
            positional=len(names) if compiled.positional else None,
            at=converter(UTCDateTime()),
            day=converter(Date()),
        )
    return found


def trace_donor(session: Session, donor_code: str, *, policy: Policy = DEFAULT_POLICY) -> DonorTrace:
    """Every donation of a donor and where each went: inventory, pool, every lot downstream, every shipment.

    One statement, whatever the donor's history (see ``_donor_trace_statement``), compiled once per dialect and run
    on the session's own connection and transaction through the driver's cursor. That skips SQLAlchemy's per-call
    execution and result handling (and so its statement logging and cursor events); driver errors are still raised
    as SQLAlchemy's. The look-back window comes from the results read with it.
    """
    donor_code = unicodedata.normalize("NFKC", donor_code).strip()  # stored keys are NFKC
    conn = session.connection()
    statement = _compiled_for(conn.dialect)
    at, day = statement.at, statement.day
    donor = None
    deferrals: list[dict[str, Any]] = []
    donations: list[tuple[Any, ...]] = []
    results: dict[int, dict[str, tuple[int, str]]] = defaultdict(dict)
    lots_by_pool: dict[int, set[str]] = defaultdict(set)
    shipped: dict[str, ShipmentLine] = {}
    for kind, n1, n2, n3, n4, t1, t2, t3, when, d1, d2, d3 in statement.run(conn, donor_code):
        if kind == _RESULT_ROW:
            markers = results[n1]
            if t1 not in markers or markers[t1][0] < n2:
                markers[t1] = (n2, t2)
        elif kind == _DONATION_ROW:
            donations.append((n1, t1, at(when), n2, t2, n3, n4, t3))
        elif kind == _LOT_ROW:
            lots_by_pool[n1].add(t1)
            if t2 is not None:
                shipped[t2] = ShipmentLine(t2, t1, t3, day(d1).isoformat(), n2)
        elif kind == _DONOR_ROW:
            donor = (t1, t2, day(d1))
        else:
            deferrals.append(
                {
                    "sequence": n1,
                    "reason": t1,
                    "source": t2,
                    "starts_on": _iso(day(d1)),
                    "ends_on": _iso(day(d2)),
                    "lifted_on": _iso(day(d3)),
                }
            )
    if donor is None:
        raise DonorNotFound(donor_code)
    donations.sort(key=lambda r: (r[2], r[0]))
    deferrals.sort(key=lambda d: d["sequence"])
    current = {i: {m: value for m, (_, value) in sorted(markers.items())} for i, markers in results.items()}
    _distribution_details(session, shipped)
    shipments = sorted(shipped.values(), key=lambda line: (line.shipped_on, line.shipment_number))
    zones: dict[int, str] = {
        i: tz
        for i, tz in session.execute(
            select(Donation.id, zone_of_donation()).where(Donation.id.in_([r[0] for r in donations]))
        )
    }
    days = {r[0]: local_day(r[2], zones.get(r[0])) for r in donations}
    clean = [(r[2], days[r[0]]) for r in donations if panel_complete_and_nonreactive(current.get(r[0], {}), policy)]
    turned = [r[2] for r in donations if any(current.get(r[0], {}).get(m) == "reactive" for m in policy.panel)]
    anchor = lookback_anchor(clean, min(turned, default=None))
    start = lookback_window_starts_on(anchor, policy.lookback_months) if anchor else None
    return DonorTrace(
        donor_code=donor[0],
        establishment=donor[1],
        registered_on=_iso(donor[2]),
        deferrals=deferrals,
        lookback_window_start=_iso(start),
        donations=[
            DonationLine(
                unit_number=r[1],
                collected_at=r[2].isoformat(),
                volume_ml=r[3],
                status=r[4],
                pool_number=r[7],
                lot_numbers=sorted(lots_by_pool.get(r[6], ())),
                results=current.get(r[0], {}),
                in_lookback_window=in_lookback_window(days[r[0]], start),
                changed=r[5] > 1,
            )
            for r in donations
        ],
        pools=sorted({r[7] for r in donations if r[7] is not None}),
        lots=sorted(set().union(*lots_by_pool.values())) if lots_by_pool else [],
        shipments=shipments,
    )


@dataclass
class UnitTrace:
    unit_number: str
    scheme: str
    donor_code: str
    collected_at: str
    frozen_at: str | None
    volume_ml: int
    plasma_kind: str
    status: str
    status_reason: str | None
    version: int
    pool_number: str | None
    results: list[dict[str, Any]]
    lots: list[str]
    shipments: list[ShipmentLine]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def trace_unit(session: Session, unit_number: str) -> UnitTrace:
    """One unit: its donor, every result version, its pool, every lot downstream and every shipment."""
    unit = get_unit(session, unit_number)
    donor_code = session.execute(select(Donor.donor_code).where(Donor.id == unit.donor_id)).scalar_one()
    pool = session.execute(
        select(Pool.id, Pool.pool_number)
        .join(PoolMember, PoolMember.pool_id == Pool.id)
        .where(PoolMember.donation_id == unit.id)
    ).first()
    results = (
        session.execute(
            select(TestResult).where(TestResult.donation_id == unit.id).order_by(TestResult.marker, TestResult.version)
        )
        .scalars()
        .all()
    )
    latest = {r.marker: r.version for r in results}
    lot_ids = downstream_lots(session, [pool[0]]).get(pool[0], set()) if pool else set()
    lots = _lots(session, lot_ids)
    return UnitTrace(
        unit_number=unit.unit_number,
        scheme=unit.scheme.value,
        donor_code=donor_code,
        collected_at=unit.collected_at.isoformat(),
        frozen_at=_iso(unit.frozen_at),
        volume_ml=unit.volume_ml,
        plasma_kind=unit.plasma_kind.value,
        status=unit.status.value,
        status_reason=unit.status_reason,
        version=unit.version,
        pool_number=pool[1] if pool else None,
        results=[
            {
                "marker": r.marker.value,
                "version": r.version,
                "current": latest[r.marker] == r.version,
                "result": r.result.value,
                "value": r.value,
                "unit": r.value_unit,
                "method": r.method.value if r.method else None,
                "tested_at": r.tested_at.isoformat(),
                "reason": r.reason,
            }
            for r in results
        ],
        lots=sorted(line.lot_number for line in lots.values()),
        shipments=_shipments(session, lot_ids),
    )


# --- backward: pool and lot ------------------------------------------------------------------------------------


@dataclass
class PoolLine:
    pool_number: str
    product: str
    status: str
    donor_count: int
    donation_count: int
    volume_ml: int


@dataclass
class MemberLine:
    unit_number: str
    donor_code: str
    pool_number: str
    collected_at: str


def _pool_lines(session: Session, pool_ids: set[int]) -> dict[int, PoolLine]:
    if not pool_ids:
        return {}
    rows = session.execute(
        select(
            Pool.id,
            Pool.pool_number,
            Pool.product,
            Pool.status,
            func.count(func.distinct(Donation.donor_id)),
            func.count(Donation.id),
            func.coalesce(func.sum(Donation.volume_ml), 0),
        )
        .outerjoin(PoolMember, PoolMember.pool_id == Pool.id)
        .outerjoin(Donation, Donation.id == PoolMember.donation_id)
        .where(Pool.id.in_(pool_ids))
        .group_by(Pool.id, Pool.pool_number, Pool.product, Pool.status)
    )
    return {i: PoolLine(n, p, s.value, int(d), int(c), int(v)) for i, n, p, s, d, c, v in rows}


def _members(session: Session, pool_ids: set[int]) -> list[MemberLine]:
    if not pool_ids:
        return []
    rows = session.execute(
        select(Donation.unit_number, Donor.donor_code, Pool.pool_number, Donation.collected_at)
        .join(PoolMember, PoolMember.donation_id == Donation.id)
        .join(Pool, Pool.id == PoolMember.pool_id)
        .join(Donor, Donor.id == Donation.donor_id)
        .where(PoolMember.pool_id.in_(pool_ids))
        .order_by(Pool.pool_number, Donation.unit_number)
    )
    return [MemberLine(u, d, p, c.isoformat()) for u, d, p, c in rows]


def _pool_tests(session: Session, pool_ids: set[int]) -> dict[int, list[dict[str, Any]]]:
    tests: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not pool_ids:
        return tests
    rows = session.execute(
        select(PoolTest).where(PoolTest.pool_id.in_(pool_ids)).order_by(PoolTest.marker, PoolTest.version)
    ).scalars()
    for t in rows:
        tests[t.pool_id].append(
            {
                "marker": t.marker.value,
                "version": t.version,
                "result": t.result.value,
                "value": t.value,
                "unit": t.value_unit,
                "tested_at": t.tested_at.isoformat(),
            }
        )
    return tests


@dataclass
class LotTrace:
    lot_number: str
    product: str
    kind: str
    status: str
    pools: list[PoolLine]
    lots: list[str]
    inputs: list[dict[str, Any]]
    donor_count: int
    donation_count: int
    volume_ml: int
    steps: list[StepLine]
    pool_tests: dict[str, list[dict[str, Any]]]
    clearance: list[dict[str, Any]]
    clearance_problems: list[str]
    shipments: list[ShipmentLine]
    donations: list[MemberLine] | None = None
    status_reason: str | None = None  # why a lot is quarantined: the pool retest, failed step or deviation upstream
    signatures: list[dict[str, Any]] = field(default_factory=list)  # SignatureLine.as_json(), oldest first
    quantity: int | None = None
    unit: str | None = None
    expires_on: str | None = None
    drawn: int = 0
    shipped: int = 0
    available: int | None = None  # quantity less what later lots drew and what was shipped
    deviations: list[DeviationLine] = field(default_factory=list)  # corrections upstream under a deviation
    holds: list[dict[str, Any]] = field(default_factory=list)  # holds standing on the lot or a lot upstream

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.donations is None:
            data.pop("donations")
        return data


def trace_lot(session: Session, lot_number: str, *, members: bool = False, policy: Policy = DEFAULT_POLICY) -> LotTrace:
    """A lot's whole genealogy: every upstream pool and lot, distinct donors and donations over the whole
    lineage, every step, pool test and shipment, clearance per path, and with ``members`` every donation."""
    lot = get_lot(session, lot_number)
    graph = upstream(session, lot.id)
    pools = _pool_lines(session, graph.pool_ids)
    lots = _lots(session, graph.lot_ids)
    totals = (0, 0, 0)
    if graph.pool_ids:
        totals = session.execute(
            select(
                func.count(func.distinct(Donation.donor_id)),
                func.count(Donation.id),
                func.coalesce(func.sum(Donation.volume_ml), 0),
            )
            .join(PoolMember, PoolMember.donation_id == Donation.id)
            .where(PoolMember.pool_id.in_(graph.pool_ids))
        ).one()
    steps = steps_for(session, pool_ids=graph.pool_ids, lot_ids=graph.lot_ids)
    pool_names = {i: p.pool_number for i, p in pools.items()}
    lot_names = {i: line.lot_number for i, line in lots.items()}
    clearance = lot_clearance(session, lot, policy, graph=graph, steps=steps)
    tests = _pool_tests(session, graph.pool_ids)
    return LotTrace(
        lot_number=lot.lot_number,
        product=lot.product,
        kind=lot.kind.value,
        status=lot.status.value,
        pools=sorted(pools.values(), key=lambda p: p.pool_number),
        lots=sorted(n for i, n in lot_names.items() if i != lot.id),
        inputs=sorted(
            (
                {
                    "lot_number": lot_names[target],
                    "input_kind": kind,
                    "input": pool_names[ident] if kind == "pool" else lot_names[ident],
                    "quantity": quantity,
                }
                for target, edges in graph.inputs.items()
                for kind, ident, quantity in edges
            ),
            key=lambda e: (e["lot_number"], e["input"]),
        ),
        donor_count=int(totals[0]),
        donation_count=int(totals[1]),
        volume_ml=int(totals[2]),
        steps=_step_lines(steps, pool_names, lot_names),
        pool_tests={pool_names[i]: t for i, t in tests.items()},
        clearance=[
            {
                "path": p.path,
                "worst_for": p.worst_for,
                "cumulative_log10": p.cumulative,
                "effective_mechanisms": p.effective_mechanisms,
                "problems": p.problems,
            }
            for p in clearance.paths
        ],
        clearance_problems=(
            final_lot_clearance_problems(clearance, policy.clearance) if lot.kind.value == "final" else []
        ),
        shipments=_shipments(session, {lot.id}),
        donations=_members(session, graph.pool_ids) if members else None,
        status_reason=lot.status_reason,
        signatures=[s.as_json() for s in signatures_for(session, lot.lot_number, entity_type="lot")],
        quantity=lot.quantity,
        unit=lot.unit.value if lot.unit else None,
        expires_on=_iso(lot.expires_on),
        drawn=lot.drawn,
        shipped=lot.shipped,
        available=None if lot.quantity is None else lot.quantity - lot.drawn - lot.shipped,
        deviations=_deviations(session, graph.pool_ids),
        holds=[h.as_json() for lines in active_holds(session, graph.lot_ids).values() for h in lines],
    )


@dataclass
class PoolTrace:
    pool_number: str
    product: str
    status: str
    created_at: str
    closed_at: str | None
    released_at: str | None
    donor_count: int
    donation_count: int
    volume_ml: int
    min_donors: int
    tests: list[dict[str, Any]]
    steps: list[StepLine]
    lots: list[str]
    shipments: list[ShipmentLine]
    donations: list[MemberLine] | None = None
    status_reason: str | None = None  # why a pool is quarantined: the pool test, marker and version
    signatures: list[dict[str, Any]] = field(default_factory=list)  # SignatureLine.as_json(), oldest first
    drawn_ml: int = 0  # taken by lots
    deviations: list[DeviationLine] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.donations is None:
            data.pop("donations")
        return data


def trace_pool(
    session: Session, pool_number: str, *, members: bool = False, policy: Policy = DEFAULT_POLICY
) -> PoolTrace:
    """A pool: its composition, tests and steps, every lot made from it and every shipment of those lots."""
    pool = get_pool(session, pool_number)
    line = _pool_lines(session, {pool.id})[pool.id]
    lot_ids = downstream_lots(session, [pool.id]).get(pool.id, set())
    lots = _lots(session, lot_ids)
    steps = steps_for(session, pool_ids={pool.id}, lot_ids=set())
    return PoolTrace(
        pool_number=pool.pool_number,
        product=pool.product,
        status=pool.status.value,
        created_at=pool.created_at.isoformat(),
        closed_at=_iso(pool.closed_at),
        released_at=_iso(pool.released_at),
        donor_count=line.donor_count,
        donation_count=line.donation_count,
        volume_ml=line.volume_ml,
        min_donors=policy.min_donors_for(pool.product),
        tests=_pool_tests(session, {pool.id}).get(pool.id, []),
        steps=_step_lines(steps, {pool.id: pool.pool_number}, {}),
        lots=sorted(x.lot_number for x in lots.values()),
        shipments=_shipments(session, lot_ids),
        donations=_members(session, {pool.id}) if members else None,
        status_reason=pool.status_reason,
        signatures=[s.as_json() for s in signatures_for(session, pool.pool_number, entity_type="pool")],
        drawn_ml=pool.drawn_ml,
        deviations=_deviations(session, {pool.id}),
    )


# --- look-back cases -------------------------------------------------------------------------------------------


@dataclass
class CaseTrace:
    case_number: str
    status: str
    donor_code: str
    reason: str
    opened_at: str
    opened_by: str
    window_start: str | None
    closed_at: str | None
    closure: str | None
    findings: list[dict[str, Any]]
    pools: list[str]
    lots: list[str]
    shipments: list[ShipmentLine]
    trigger: str = "other"
    received_on: str | None = None  # the local day the tasks' due dates count from
    closed_by: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)  # casework.TaskLine.as_json(), by number
    notifications: list[dict[str, Any]] = field(default_factory=list)  # casework.notification_list
    holds: list[dict[str, Any]] = field(default_factory=list)  # every hold the case placed, standing or lifted

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def trace_case(session: Session, case_number: str, *, policy: Policy = DEFAULT_POLICY) -> CaseTrace:
    """A look-back case with each implicated unit, its pool, every lot downstream and every shipment."""
    case = session.execute(select(LookbackCase).where(LookbackCase.case_number == case_number)).scalar_one_or_none()
    if case is None:
        raise CaseNotFound(case_number)
    donor_code = session.execute(select(Donor.donor_code).where(Donor.id == case.donor_id)).scalar_one()
    rows = session.execute(
        select(
            Donation.unit_number,
            Donation.collected_at,
            Donation.status,
            CaseFinding.action,
            Pool.id,
            Pool.pool_number,
            Pool.status,
        )
        .join(CaseFinding, CaseFinding.donation_id == Donation.id)
        .outerjoin(Pool, Pool.id == CaseFinding.pool_id)
        .where(CaseFinding.case_id == case.id)
        .order_by(Donation.collected_at)
    ).all()
    pool_ids = sorted({r[4] for r in rows if r[4] is not None})
    lots_by_pool = downstream_lots(session, pool_ids)
    lot_ids = set().union(*lots_by_pool.values()) if lots_by_pool else set()
    lots = _lots(session, lot_ids)
    return CaseTrace(
        case_number=case.case_number,
        status=case.status.value,
        donor_code=donor_code,
        reason=case.reason,
        opened_at=case.created_at.isoformat(),
        opened_by=case.created_by,
        window_start=_iso(case.window_start),
        closed_at=_iso(case.closed_at),
        closure=case.closure,
        findings=[
            {
                "unit_number": u,
                "collected_at": c.isoformat(),
                "status": s.value,
                "action": a,
                "pool_number": pn,
                "pool_status": ps.value if ps else None,
                "lot_numbers": sorted(lots[i].lot_number for i in lots_by_pool.get(pid, ())),
            }
            for u, c, s, a, pid, pn, ps in rows
        ],
        pools=sorted({r[5] for r in rows if r[5]}),
        lots=sorted(x.lot_number for x in lots.values()),
        shipments=_shipments(session, lot_ids),
        trigger=case.trigger.value,
        received_on=_iso(case.received_on),
        closed_by=case.closed_by,
        tasks=[t.as_json() for t in casework.case_tasks(session, case.id or 0, policy=policy)],
        notifications=casework.notification_list(session, case.id or 0),
        holds=casework.case_holds(session, case.id or 0),
    )


def list_cases(session: Session) -> tuple[list[str], list[list[Any]]]:
    counts = select(CaseFinding.case_id, func.count(CaseFinding.id).label("n")).group_by(CaseFinding.case_id).subquery()
    rows = session.execute(
        select(
            LookbackCase.case_number,
            LookbackCase.status,
            Donor.donor_code,
            LookbackCase.created_at,
            func.coalesce(counts.c.n, 0),
            LookbackCase.reason,
        )
        .join(Donor, Donor.id == LookbackCase.donor_id)
        .outerjoin(counts, counts.c.case_id == LookbackCase.id)
        .order_by(LookbackCase.case_number)
    )
    return (
        ["case", "status", "donor", "opened at", "units", "reason"],
        [[n, s.value, d, o, c, r] for n, s, d, o, c, r in rows],
    )
