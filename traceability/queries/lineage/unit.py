"""Forward from one unit: its donor, every result version, its pool, every lot downstream and every shipment."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from ...models import Donor, Pool, PoolMember, TestResult
from ..graph import downstream_lots
from ..lookup import get_unit
from .lines import ResultLine, ShipmentLine, iso
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
    lot_ids = downstream_lots(session, [pool.id]).get(pool.id, set()) if pool else set()
    lot_lines = lots(session, lot_ids)
    return UnitTrace(
        unit_number=unit.unit_number,
        scheme=unit.scheme.value,
        donor_code=donor_code,
        collected_at=unit.collected_at.isoformat(),
        frozen_at=iso(unit.frozen_at),
        volume_ml=unit.volume_ml,
        plasma_kind=unit.plasma_kind.value,
        status=unit.status.value,
        status_reason=unit.status_reason,
        version=unit.version,
        pool_number=pool.pool_number if pool else None,
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
        shipments=shipments(session, lot_ids),
    )
