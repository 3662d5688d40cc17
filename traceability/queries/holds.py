"""Holds on lots that stand: who placed them, why, and which look-back case (if any) they belong to."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

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


def active_holds(session: Session, lot_ids: Iterable[int]) -> dict[int, list[HoldLine]]:
    """For each of the lots that has any, the holds standing on it, oldest first (one statement)."""
    ids = sorted(set(lot_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(
            LotHold.lot_id,
            Lot.lot_number,
            LookbackCase.case_number,
            LotHold.reason,
            LotHold.created_at,
            LotHold.created_by,
        )
        .join(Lot, Lot.id == LotHold.lot_id)
        .outerjoin(LookbackCase, LookbackCase.id == LotHold.case_id)
        .where(LotHold.lot_id.in_(ids), LotHold.lifted_at.is_(None))
        .order_by(LotHold.created_at, LotHold.id)
    ).all()
    holds: dict[int, list[HoldLine]] = defaultdict(list)
    for lot_id, lot_number, case_number, reason, at, by in rows:
        holds[lot_id].append(HoldLine(lot_number, case_number, reason, at.isoformat(), by))
    return dict(holds)
