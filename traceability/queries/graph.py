"""The lineage graph: pools and lots joined by lot inputs, walked with recursive CTEs (one statement per hop kind)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import select
from sqlmodel import Session, col

from ..models import LotInput, Step


@dataclass
class Upstream:
    """Everything upstream of one lot: the lots (itself included), the pools and the edges between them."""

    lot_ids: set[int] = field(default_factory=set)
    pool_ids: set[int] = field(default_factory=set)
    # lot_id -> list of (kind, id, quantity, quantity_unit) with kind "pool" or "lot"
    inputs: dict[int, list[tuple[str, int, int | None, str | None]]] = field(default_factory=lambda: defaultdict(list))


def upstream(session: Session, lot_id: int) -> Upstream:
    """Two statements: the recursive set of upstream lots, then every input edge of those lots."""
    up = select(sa.literal(lot_id, sa.Integer).label("lot_id")).cte("up", recursive=True)
    up = up.union(
        select(col(LotInput.input_lot_id))
        .join(up, col(LotInput.lot_id) == up.c.lot_id)
        .where(col(LotInput.input_lot_id).is_not(None))
    )
    result = Upstream()
    result.lot_ids = {row[0] for row in session.execute(select(up.c.lot_id))}
    for target, kind, ident, quantity, unit in input_edges(session, result.lot_ids):
        if kind == "pool":
            result.pool_ids.add(ident)
        result.inputs[target].append((kind, ident, quantity, unit))
    return result


def input_edges(session: Session, lot_ids: Iterable[int]) -> list[tuple[int, str, int, int | None, str | None]]:
    """Every input edge of the given lots, in one statement: (lot_id, "pool" or "lot", input id, quantity,
    quantity_unit)."""
    rows = session.execute(
        select(
            col(LotInput.lot_id),
            col(LotInput.input_pool_id),
            col(LotInput.input_lot_id),
            col(LotInput.quantity),
            col(LotInput.quantity_unit),
        ).where(col(LotInput.lot_id).in_(list(lot_ids)))
    )
    return [
        (target, "pool", pool_id, quantity, unit)
        if pool_id is not None
        else (target, "lot", input_lot_id or 0, quantity, unit)
        for target, pool_id, input_lot_id, quantity, unit in rows
    ]


def downstream_lots(session: Session, pool_ids: Sequence[int]) -> dict[int, set[int]]:
    """For each pool, every lot made from it directly or through other lots (one recursive statement)."""
    if not pool_ids:
        return {}
    down = (
        select(col(LotInput.input_pool_id).label("origin"), col(LotInput.lot_id).label("lot_id"))
        .where(col(LotInput.input_pool_id).in_(list(pool_ids)))
        .cte("down", recursive=True)
    )
    down = down.union(
        select(down.c.origin, col(LotInput.lot_id)).join(down, col(LotInput.input_lot_id) == down.c.lot_id)
    )
    result: dict[int, set[int]] = defaultdict(set)
    for origin, lot in session.execute(select(down.c.origin, down.c.lot_id)):
        result[origin].add(lot)
    return result


def downstream_lot_ids(*, pool_ids: Iterable[int] = (), lot_ids: Iterable[int] = ()) -> sa.Select[tuple[int]] | None:
    """A statement selecting every lot made from the given pools or lots, directly or through other lots (one
    recursive CTE, to use inside a set-based statement); None when nothing is given."""
    pools, lots = list(pool_ids), list(lot_ids)
    if not pools and not lots:
        return None
    down = (
        select(col(LotInput.lot_id).label("lot_id"))
        .where(sa.or_(col(LotInput.input_pool_id).in_(pools), col(LotInput.input_lot_id).in_(lots)))
        .cte("down", recursive=True)
    )
    down = down.union(select(col(LotInput.lot_id)).join(down, col(LotInput.input_lot_id) == down.c.lot_id))
    return select(down.c.lot_id)


def steps_for(session: Session, *, pool_ids: set[int], lot_ids: set[int]) -> list[Step]:
    """Every step on the given pools and lots, in one statement."""
    if not pool_ids and not lot_ids:
        return []
    return list(
        session.execute(
            select(Step)
            .where(sa.or_(col(Step.pool_id).in_(pool_ids), col(Step.lot_id).in_(lot_ids)))
            .order_by(col(Step.started_at))
        ).scalars()
    )
