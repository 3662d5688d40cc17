"""Recalls as read: the consignees each must reach, their notices and returns, effectiveness; and kept drills."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from ..errors import RecallNotFound
from ..models import AppUser, Consignee, Lot, Recall, RecallConsignee, RecallDrill
from .drill import DistributionLine, DrillLot, distribution, lot_balances, recall_lot_ids


@dataclass(frozen=True)
class RecallConsigneeLine:
    code: str
    name: str
    address: str
    country: str | None
    lots: list[str]
    shipped: int
    unit: str | None  # the lots' unit when they share one
    notified_on: str | None
    notified_by: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    returned: int | None


@dataclass(frozen=True)
class Effectiveness:
    consignees: int
    notified: int
    acknowledged: int
    shipped: int
    returned: int

    @property
    def acknowledged_of_notified(self) -> str:
        return _ratio(self.acknowledged, self.notified)

    @property
    def returned_of_shipped(self) -> str:
        return _ratio(self.returned, self.shipped)


def _ratio(part: int, whole: int) -> str:
    return f"{part:,}/{whole:,} ({part / whole:.0%})" if whole else f"{part:,}/0"


@dataclass
class RecallView:
    recall_number: str
    lot_number: str
    recall_class: str
    reason: str
    status: str
    opened_at: str
    opened_by: str
    opened_by_name: str | None  # the printed name of a registered user
    closed_at: str | None
    closed_by: str | None
    lots: list[DrillLot]
    consignees: list[RecallConsigneeLine]
    shipments: list[DistributionLine]
    effectiveness: Effectiveness

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["effectiveness"] = {
            **asdict(self.effectiveness),
            "acknowledged_of_notified": self.effectiveness.acknowledged_of_notified,
            "returned_of_shipped": self.effectiveness.returned_of_shipped,
        }
        return data


def recall_view(session: Session, recall_number: str) -> RecallView:
    """A recall with its lots (balances), every consignee (address, lots, quantity shipped, notice, acknowledgement,
    return), every shipment and its effectiveness. Raises RecallNotFound."""
    recall = session.execute(
        select(Recall).where(col(Recall.recall_number) == recall_number.strip())
    ).scalar_one_or_none()
    if recall is None:
        raise RecallNotFound(recall_number)
    lot_number = session.execute(select(col(Lot.lot_number)).where(col(Lot.id) == recall.lot_id)).scalar_one()
    lot_ids = recall_lot_ids(session, recall.lot_id)
    shipments = distribution(session, lot_ids)
    lots_of: dict[str, set[str]] = {}
    units_of: dict[str, set[str | None]] = {}
    for s in shipments:
        lots_of.setdefault(s.consignee_code, set()).add(s.lot_number)
        units_of.setdefault(s.consignee_code, set()).add(s.unit)
    rows = session.execute(
        select(
            RecallConsignee, col(Consignee.code), col(Consignee.name), col(Consignee.address), col(Consignee.country)
        )
        .join(Consignee, col(Consignee.id) == col(RecallConsignee.consignee_id))
        .where(col(RecallConsignee.recall_id) == recall.id)
        .order_by(col(Consignee.code))
    ).all()
    consignees = []
    for row, code, name, address, country in rows:
        units = units_of.get(code, set())
        consignees.append(
            RecallConsigneeLine(
                code=code,
                name=name,
                address=address,
                country=country,
                lots=sorted(lots_of.get(code, ())),
                shipped=row.shipped,
                unit=next(iter(units)) if len(units) == 1 else None,
                notified_on=row.notified_on.isoformat() if row.notified_on else None,
                notified_by=row.notified_by,
                acknowledged_at=row.acknowledged_at.isoformat() if row.acknowledged_at else None,
                acknowledged_by=row.acknowledged_by,
                returned=row.returned,
            )
        )
    effectiveness = Effectiveness(
        consignees=len(consignees),
        notified=sum(1 for c in consignees if c.notified_on),
        acknowledged=sum(1 for c in consignees if c.acknowledged_at),
        shipped=sum(c.shipped for c in consignees),
        returned=sum(c.returned or 0 for c in consignees),
    )
    return RecallView(
        recall_number=recall.recall_number,
        lot_number=lot_number,
        recall_class=recall.recall_class.value,
        reason=recall.reason,
        status=recall.status.value,
        opened_at=recall.created_at.isoformat(),
        opened_by=recall.created_by,
        opened_by_name=session.execute(
            select(col(AppUser.full_name)).where(col(AppUser.login) == recall.created_by)
        ).scalar_one_or_none(),
        closed_at=recall.closed_at.isoformat() if recall.closed_at else None,
        closed_by=recall.closed_by,
        lots=lot_balances(session, lot_ids),
        consignees=consignees,
        shipments=shipments,
        effectiveness=effectiveness,
    )


def list_recalls(session: Session) -> tuple[list[str], list[list[Any]]]:
    counts = (
        select(
            col(RecallConsignee.recall_id),
            func.count(col(RecallConsignee.id)).label("n"),
            func.count(col(RecallConsignee.notified_on)).label("notified"),
            func.count(col(RecallConsignee.acknowledged_at)).label("acknowledged"),
        )
        .group_by(col(RecallConsignee.recall_id))
        .subquery()
    )
    rows = session.execute(
        select(
            col(Recall.recall_number),
            col(Recall.status),
            col(Recall.recall_class),
            col(Lot.lot_number),
            col(Recall.created_at),
            func.coalesce(counts.c.n, 0),
            func.coalesce(counts.c.notified, 0),
            func.coalesce(counts.c.acknowledged, 0),
            col(Recall.reason),
        )
        .join(Lot, col(Lot.id) == col(Recall.lot_id))
        .outerjoin(counts, counts.c.recall_id == col(Recall.id))
        .order_by(col(Recall.recall_number))
    )
    return (
        ["recall", "status", "class", "lot", "opened at", "consignees", "notified", "acknowledged", "reason"],
        [[n, s.value, c.value, lot, at, k, no, ack, r] for n, s, c, lot, at, k, no, ack, r in rows],
    )


def list_drills(session: Session) -> tuple[list[str], list[list[Any]]]:
    rows = session.execute(select(RecallDrill).order_by(col(RecallDrill.id)))
    return (
        ["drill", "at", "by", "subject", "key", "ms", "units", "pools", "lots", "consignees", "answer SHA-256"],
        [
            [
                d.id,
                d.created_at,
                d.created_by,
                d.subject.value,
                d.subject_key,
                d.duration_ms,
                d.units,
                d.pools,
                d.lots,
                d.consignees,
                d.answer_sha256,
            ]
            for d in rows.scalars()
        ],
    )
