"""Queries more than one trace uses: shipments, lots, pools, members, pool tests, steps and deviations of a set of
ids, each one statement whatever the size of the set."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import FromClause, func, select
from sqlmodel import Session, SQLModel, col

from ...models import (
    Consignee,
    CorrectionDeviation,
    Donation,
    Donor,
    Lot,
    Pool,
    PoolTest,
    Shipment,
    Step,
)
from .as_of import statuses_at
from .lines import (
    DeviationLine,
    LotLine,
    MemberLine,
    PoolLine,
    PoolTestLine,
    ShipmentLine,
    StepLine,
    iso,
)

MEMBERS = SQLModel.metadata.tables["pool_member"]  # (pool_id, donation_id) rows: the members now


def deviations(session: Session, pool_ids: set[int], *, at: datetime | None = None) -> list[DeviationLine]:
    if not pool_ids:
        return []
    query = (
        select(CorrectionDeviation, col(Pool.pool_number), col(Donation.unit_number))
        .join(Pool, col(Pool.id) == col(CorrectionDeviation.pool_id))
        .join(Donation, col(Donation.id) == col(CorrectionDeviation.donation_id))
        .where(col(CorrectionDeviation.pool_id).in_(pool_ids))
        .order_by(col(CorrectionDeviation.created_at), col(CorrectionDeviation.id))
    )
    if at is not None:
        query = query.where(col(CorrectionDeviation.created_at) <= at)
    rows = session.execute(query)
    return [
        DeviationLine(
            d.reference, pool, unit, d.donation_version, d.changes, d.reason, d.created_at.isoformat(), d.created_by
        )
        for d, pool, unit in rows
    ]


def shipments(session: Session, lot_ids: set[int], *, at: datetime | None = None) -> list[ShipmentLine]:
    if not lot_ids:
        return []
    query = (
        select(
            col(Shipment.shipment_number),
            col(Lot.lot_number),
            col(Shipment.consignee),
            col(Shipment.shipped_on),
            col(Shipment.quantity),
            col(Consignee.address),
            col(Lot.unit),
            col(Lot.expires_on),
        )
        .join(Lot, col(Lot.id) == col(Shipment.lot_id))
        .join(Consignee, col(Consignee.id) == col(Shipment.consignee_id))
        .where(col(Shipment.lot_id).in_(lot_ids))
        .order_by(col(Shipment.shipped_on), col(Shipment.shipment_number))
    )
    if at is not None:
        query = query.where(col(Shipment.created_at) <= at)
    rows = session.execute(query)
    return [
        ShipmentLine(n, lot, to, on.isoformat(), q, address, unit.value if unit else None, iso(expires))
        for n, lot, to, on, q, address, unit, expires in rows
    ]


def distribution_details(session: Session, lines: dict[str, ShipmentLine]) -> None:
    """Fill in what a distribution record needs besides the trace's own columns: address, unit, expiry."""
    if not lines:
        return
    rows = session.execute(
        select(col(Shipment.shipment_number), col(Consignee.address), col(Lot.unit), col(Lot.expires_on))
        .join(Consignee, col(Consignee.id) == col(Shipment.consignee_id))
        .join(Lot, col(Lot.id) == col(Shipment.lot_id))
        .where(col(Shipment.shipment_number).in_(list(lines)))
    )
    for number, address, unit, expires in rows:
        line = lines[number]
        line.consignee_address, line.unit, line.expires_on = address, unit.value if unit else None, iso(expires)


def lots(session: Session, lot_ids: set[int], *, at: datetime | None = None) -> dict[int, LotLine]:
    """The given lots; with ``at`` only those recorded by then, each with its status at ``at``."""
    if not lot_ids:
        return {}
    query = select(col(Lot.id), col(Lot.lot_number), col(Lot.product), col(Lot.kind), col(Lot.status)).where(
        col(Lot.id).in_(lot_ids)
    )
    if at is None:
        return {i: LotLine(n, p, k.value, s.value) for i, n, p, k, s in session.execute(query)}
    found = {
        i: LotLine(n, p, k.value, s.value) for i, n, p, k, s in session.execute(query.where(col(Lot.created_at) <= at))
    }
    then = statuses_at(session, "lot", [line.lot_number for line in found.values()], at)
    for line in found.values():
        line.status = then.get(line.lot_number, (line.status, None))[0]
    return found


def step_lines(
    steps: list[Step], pool_names: dict[int, str], lot_names: dict[int, str], *, at: datetime | None = None
) -> list[StepLine]:
    """The steps as lines; with ``at`` a deviation closed after ``at`` is still open."""
    return [
        StepLine(
            step_key=s.step_key,
            target=pool_names.get(s.pool_id or -1) or lot_names.get(s.lot_id or -1, ""),
            method=s.method.value,
            started_at=s.started_at.isoformat(),
            ended_at=s.ended_at.isoformat(),
            outcome=s.outcome.value,
            deviation_open=s.outcome.value == "deviation"
            and (s.deviation_closed_at is None or (at is not None and s.deviation_closed_at > at)),
            lrv_enveloped=s.lrv_enveloped,
            lrv_non_enveloped=s.lrv_non_enveloped,
            parameters=dict(s.parameters or {}),
            operator=s.operator,
        )
        for s in steps
    ]


def pool_lines(
    session: Session, pool_ids: set[int], *, at: datetime | None = None, members: FromClause | None = None
) -> dict[int, PoolLine]:
    """Each pool with its counts over ``members`` (rows of pool_id, donation_id: the member table by default, or the
    members at ``at``), and with ``at`` its status at ``at``."""
    if not pool_ids:
        return {}
    m = MEMBERS if members is None else members
    rows = session.execute(
        select(
            col(Pool.id),
            col(Pool.pool_number),
            col(Pool.product),
            col(Pool.status),
            func.count(func.distinct(col(Donation.donor_id))),
            func.count(col(Donation.id)),
            func.coalesce(func.sum(col(Donation.volume_ml)), 0),
        )
        .outerjoin(m, m.c.pool_id == col(Pool.id))
        .outerjoin(Donation, col(Donation.id) == m.c.donation_id)
        .where(col(Pool.id).in_(pool_ids))
        .group_by(col(Pool.id), col(Pool.pool_number), col(Pool.product), col(Pool.status))
    )
    found = {i: PoolLine(n, p, s.value, int(d), int(c), int(v)) for i, n, p, s, d, c, v in rows}
    if at is not None:
        then = statuses_at(session, "pool", [line.pool_number for line in found.values()], at)
        for line in found.values():
            line.status = then.get(line.pool_number, (line.status, None))[0]
    return found


def member_lines(session: Session, pool_ids: set[int], *, members: FromClause | None = None) -> list[MemberLine]:
    if not pool_ids:
        return []
    m = MEMBERS if members is None else members
    rows = session.execute(
        select(col(Donation.unit_number), col(Donor.donor_code), col(Pool.pool_number), col(Donation.collected_at))
        .join(m, m.c.donation_id == col(Donation.id))
        .join(Pool, col(Pool.id) == m.c.pool_id)
        .join(Donor, col(Donor.id) == col(Donation.donor_id))
        .where(m.c.pool_id.in_(pool_ids))
        .order_by(col(Pool.pool_number), col(Donation.unit_number))
    )
    return [MemberLine(u, d, p, c.isoformat()) for u, d, p, c in rows]


def pool_tests(session: Session, pool_ids: set[int], *, at: datetime | None = None) -> dict[int, list[PoolTestLine]]:
    tests: dict[int, list[PoolTestLine]] = defaultdict(list)
    if not pool_ids:
        return tests
    query = (
        select(PoolTest)
        .where(col(PoolTest.pool_id).in_(pool_ids))
        .order_by(col(PoolTest.marker), col(PoolTest.version))
    )
    if at is not None:
        query = query.where(col(PoolTest.created_at) <= at)
    rows = session.execute(query).scalars()
    for t in rows:
        tests[t.pool_id].append(
            PoolTestLine(
                marker=t.marker.value,
                version=t.version,
                result=t.result.value,
                value=t.value,
                unit=t.value_unit,
                tested_at=t.tested_at.isoformat(),
            )
        )
    return tests


def recorded_steps(steps: list[Step], at: datetime | None) -> list[Step]:
    """The steps recorded by ``at`` (all of them without it)."""
    return steps if at is None else [s for s in steps if s.created_at <= at]
