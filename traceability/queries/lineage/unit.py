"""Forward from one unit: its donor, every result version, its pool, every lot downstream and every shipment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ...models import Donor, Pool, PoolMember, TestResult
from ..graph import downstream_lots
from ..lookup import get_unit
from . import as_of as then
from .lines import ResultLine, ShipmentLine, iso, trace_json
from .shared import lots, shipments


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
    results: list[ResultLine]
    lots: list[str]
    shipments: list[ShipmentLine]
    as_of: str | None = None  # the trace as recorded at this time (--as-of), or None for today's records

    def as_json(self) -> dict[str, Any]:
        return trace_json(self, "as_of")


def trace_unit(session: Session, unit_number: str, *, as_of: datetime | None = None) -> UnitTrace:
    """One unit: its donor, every result version, its pool, every lot downstream and every shipment; with ``as_of``
    as recorded then (the results, membership, lots and shipments recorded by then, the status and version of
    then)."""
    unit = get_unit(session, unit_number)
    donor_code = session.execute(select(col(Donor.donor_code)).where(col(Donor.id) == unit.donor_id)).scalar_one()
    in_pool = select(col(Pool.id), col(Pool.pool_number)).join(PoolMember, col(PoolMember.pool_id) == col(Pool.id))
    in_pool = in_pool.where(col(PoolMember.donation_id) == unit.id)
    results_query = select(TestResult).where(col(TestResult.donation_id) == unit.id)
    status, version = unit.status.value, unit.version
    if as_of is not None:
        then.recorded_at_or_refuse(unit.created_at, as_of, "Unit", unit.unit_number)
        in_pool = in_pool.where(col(PoolMember.created_at) <= as_of)
        results_query = results_query.where(col(TestResult.created_at) <= as_of)
    pool = session.execute(in_pool).first()
    pool_number = pool.pool_number if pool else None
    results = session.execute(results_query.order_by(col(TestResult.marker), col(TestResult.version))).scalars().all()
    if as_of is not None:
        now_in = select(col(Pool.pool_number)).join(PoolMember, col(PoolMember.pool_id) == col(Pool.id))
        pools = list(session.execute(now_in.where(col(PoolMember.donation_id) == unit.id)).scalars())
        if pool_number is None:  # taken out of an open pool after as_of? (no lots were made from it then)
            pool_number = then.pools_left_after(session, [unit.unit_number], as_of).get(unit.unit_number)
            pools += [pool_number] if pool_number else []
        status = then.unit_statuses_at(session, {unit.unit_number: status}, pools, as_of).get(unit.unit_number, status)
        version -= then.corrections_after(session, [unit.unit_number], as_of).get(unit.unit_number, 0)
    latest = {r.marker: r.version for r in results}
    lot_ids = downstream_lots(session, [pool.id]).get(pool.id, set()) if pool else set()
    lot_lines = lots(session, lot_ids, at=as_of)
    return UnitTrace(
        unit_number=unit.unit_number,
        scheme=unit.scheme.value,
        donor_code=donor_code,
        collected_at=unit.collected_at.isoformat(),
        frozen_at=iso(unit.frozen_at),
        volume_ml=unit.volume_ml,
        plasma_kind=unit.plasma_kind.value,
        status=status,
        status_reason=unit.status_reason if status == unit.status.value else None,
        version=version,
        pool_number=pool_number,
        results=[
            ResultLine(
                marker=r.marker.value,
                version=r.version,
                current=latest[r.marker] == r.version,
                result=r.result.value,
                value=r.value,
                unit=r.value_unit,
                method=r.method.value if r.method else None,
                tested_at=r.tested_at.isoformat(),
                reason=r.reason,
            )
            for r in results
        ],
        lots=sorted(line.lot_number for line in lot_lines.values()),
        shipments=shipments(session, set(lot_lines), at=as_of),
        as_of=then.as_of_text(as_of),
    )
