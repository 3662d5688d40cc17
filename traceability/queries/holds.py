"""Holds on lots that stand: who placed them, why, and which look-back case (if any) they belong to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlmodel import Session, col

from ..models import LookbackCase, Lot, LotHold


@dataclass(frozen=True)
class HoldLine:
    """A hold that stands on a lot."""

    lot_number: str
    case_number: str | None  # None: placed by hand
    reason: str
    placed_at: str
    placed_by: str

    def text(self) -> str:
        by = f"look-back case {self.case_number}" if self.case_number else f"hand ({self.placed_by})"
        return f"lot {self.lot_number} is held by {by}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def active_holds(session: Session, lot_ids: Iterable[int], *, at: datetime | None = None) -> dict[int, list[HoldLine]]:
    """For each of the lots that has any, the holds standing on it, oldest first (one statement); with ``at``,
    the holds that stood at that time (placed by then, not lifted by then)."""
    ids = sorted(set(lot_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(
            col(LotHold.lot_id),
            col(Lot.lot_number),
            col(LookbackCase.case_number),
            col(LotHold.reason),
            col(LotHold.created_at),
            col(LotHold.created_by),
        )
        .join(Lot, col(Lot.id) == col(LotHold.lot_id))
        .outerjoin(LookbackCase, col(LookbackCase.id) == col(LotHold.case_id))
        .where(
            col(LotHold.lot_id).in_(ids),
            col(LotHold.lifted_at).is_(None)
            if at is None
            else and_(
                col(LotHold.created_at) <= at, or_(col(LotHold.lifted_at).is_(None), col(LotHold.lifted_at) > at)
            ),
        )
        .order_by(col(LotHold.created_at), col(LotHold.id))
    ).all()
    holds: dict[int, list[HoldLine]] = defaultdict(list)
    for lot_id, lot_number, case_number, reason, at, by in rows:
        holds[lot_id].append(HoldLine(lot_number, case_number, reason, at.isoformat(), by))
    return dict(holds)
