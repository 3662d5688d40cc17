"""Separation of duties (policy ``release.separate_duties``): what the person about to release did themselves."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session, col

from ..models import Lot, Pool, PoolTest, Step
from .graph import upstream


def _tests_by(session: Session, pool_ids: set[int], login: str) -> list[str]:
    rows = session.execute(
        select(col(Pool.pool_number), col(PoolTest.marker), col(PoolTest.version))
        .join(Pool, col(Pool.id) == col(PoolTest.pool_id))
        .where(col(PoolTest.pool_id).in_(pool_ids), col(PoolTest.created_by) == login)
        .order_by(col(Pool.pool_number), col(PoolTest.marker), col(PoolTest.version))
    ).all()
    return [f"recorded pool test {marker.value} v{version} of pool {number}" for number, marker, version in rows]


def pool_duty_conflicts(session: Session, pool: Pool, login: str) -> list[str]:
    """A pool is not released by who recorded its tests."""
    assert pool.id is not None
    return _tests_by(session, {pool.id}, login)


def lot_duty_conflicts(session: Session, lot: Lot, login: str) -> list[str]:
    """A lot is not released by who created it, recorded a step on it or upstream of it, or recorded a pool test
    of a pool upstream of it."""
    assert lot.id is not None
    conflicts = [f"created lot {lot.lot_number}"] if lot.created_by == login else []
    graph = upstream(session, lot.id)
    steps = session.execute(
        select(col(Step.step_key))
        .where(
            (col(Step.lot_id).in_(graph.lot_ids) | col(Step.pool_id).in_(graph.pool_ids)),
            col(Step.created_by) == login,
        )
        .order_by(col(Step.step_key))
    ).scalars()
    conflicts.extend(f"recorded step {key}" for key in steps)
    conflicts.extend(_tests_by(session, graph.pool_ids, login))
    return conflicts
