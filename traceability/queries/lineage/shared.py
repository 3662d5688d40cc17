"""Queries more than one trace uses: shipments, lots, pools, members, pool tests, steps and deviations of a set of
ids, each one statement whatever the size of the set."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlmodel import Session

from ...models import (
    Consignee,
    CorrectionDeviation,
    Donation,
    Donor,
    Lot,
    Pool,
    PoolMember,
    PoolTest,
    Shipment,
    Step,
)
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


def deviations(session: Session, pool_ids: set[int]) -> list[DeviationLine]:
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


def shipments(session: Session, lot_ids: set[int]) -> list[ShipmentLine]:
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
        ShipmentLine(n, lot, to, on.isoformat(), q, address, unit.value if unit else None, iso(expires))
        for n, lot, to, on, q, address, unit, expires in rows
    ]


def distribution_details(session: Session, lines: dict[str, ShipmentLine]) -> None:
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
        line.consignee_address, line.unit, line.expires_on = address, unit.value if unit else None, iso(expires)


def lots(session: Session, lot_ids: set[int]) -> dict[int, LotLine]:
    if not lot_ids:
        return {}
    rows = session.execute(select(Lot.id, Lot.lot_number, Lot.product, Lot.kind, Lot.status).where(Lot.id.in_(lot_ids)))
    return {i: LotLine(n, p, k.value, s.value) for i, n, p, k, s in rows}


def step_lines(steps: list[Step], pool_names: dict[int, str], lot_names: dict[int, str]) -> list[StepLine]:
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


def pool_lines(session: Session, pool_ids: set[int]) -> dict[int, PoolLine]:
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


def member_lines(session: Session, pool_ids: set[int]) -> list[MemberLine]:
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


def pool_tests(session: Session, pool_ids: set[int]) -> dict[int, list[PoolTestLine]]:
    tests: dict[int, list[PoolTestLine]] = defaultdict(list)
    if not pool_ids:
        return tests
    rows = session.execute(
        select(PoolTest).where(PoolTest.pool_id.in_(pool_ids)).order_by(PoolTest.marker, PoolTest.version)
    ).scalars()
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
