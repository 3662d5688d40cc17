"""Listings for the `list` commands and the audit log: plain rows, newest or most relevant first."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from ..models import (
    AuditEvent,
    Consignee,
    Donation,
    Donor,
    Establishment,
    Lot,
    LotHold,
    LotInput,
    Pool,
    PoolMember,
    Shipment,
)
from .lookup import canonical_unit_number, get_consignee, get_donor, get_establishment, get_pool


def list_establishments(session: Session) -> tuple[list[str], list[list[Any]]]:
    rows = session.execute(
        select(
            col(Establishment.code), col(Establishment.name), col(Establishment.kind), col(Establishment.timezone)
        ).order_by(col(Establishment.code))
    )
    return ["code", "name", "kind", "timezone"], [[c, n, k.value, tz] for c, n, k, tz in rows]


def list_donors(
    session: Session, *, establishment: str | None = None, limit: int = 200
) -> tuple[list[str], list[list[Any]]]:
    counts = (
        select(col(Donation.donor_id), func.count(col(Donation.id)).label("n"))
        .group_by(col(Donation.donor_id))
        .subquery()
    )
    query = (
        select(col(Donor.donor_code), col(Establishment.code), col(Donor.registered_on), func.coalesce(counts.c.n, 0))
        .join(Establishment, col(Establishment.id) == col(Donor.establishment_id))
        .outerjoin(counts, counts.c.donor_id == col(Donor.id))
        .order_by(col(Donor.donor_code))
        .limit(limit)
    )
    if establishment:
        query = query.where(col(Establishment.id) == get_establishment(session, establishment).id)
    return ["donor", "establishment", "registered on", "donations"], [list(r) for r in session.execute(query)]


def list_donations(
    session: Session, *, donor: str | None = None, status: str | None = None, pool: str | None = None, limit: int = 200
) -> tuple[list[str], list[list[Any]]]:
    query = (
        select(
            col(Donation.unit_number),
            col(Donor.donor_code),
            col(Donation.collected_at),
            col(Donation.volume_ml),
            col(Donation.status),
            col(Pool.pool_number),
        )
        .join(Donor, col(Donor.id) == col(Donation.donor_id))
        .outerjoin(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .outerjoin(Pool, col(Pool.id) == col(PoolMember.pool_id))
        .order_by(col(Donation.collected_at).desc(), col(Donation.unit_number))
        .limit(limit)
    )
    if donor:
        query = query.where(col(Donation.donor_id) == get_donor(session, donor).id)
    if status:
        query = query.where(col(Donation.status) == status)
    if pool:
        query = query.where(col(PoolMember.pool_id) == get_pool(session, pool).id)
    return (
        ["unit", "donor", "collected at", "volume mL", "status", "pool"],
        [[u, d, c, v, s.value, p or ""] for u, d, c, v, s, p in session.execute(query)],
    )


def list_pools(session: Session, *, status: str | None = None) -> tuple[list[str], list[list[Any]]]:
    query = (
        select(
            col(Pool.pool_number),
            col(Pool.product),
            col(Pool.status),
            func.count(func.distinct(col(Donation.donor_id))),
            func.count(col(Donation.id)),
            func.coalesce(func.sum(col(Donation.volume_ml)), 0),
            col(Pool.created_at),
        )
        .outerjoin(PoolMember, col(PoolMember.pool_id) == col(Pool.id))
        .outerjoin(Donation, col(Donation.id) == col(PoolMember.donation_id))
        .group_by(col(Pool.id), col(Pool.pool_number), col(Pool.product), col(Pool.status), col(Pool.created_at))
        .order_by(col(Pool.pool_number))
    )
    if status:
        query = query.where(col(Pool.status) == status)
    return (
        ["pool", "product", "status", "distinct donors", "donations", "volume mL", "created at"],
        [[n, p, s.value, d, c, v, t] for n, p, s, d, c, v, t in session.execute(query)],
    )


def list_lots(session: Session) -> tuple[list[str], list[list[Any]]]:
    inputs = (
        select(col(LotInput.lot_id), func.count(col(LotInput.id)).label("n")).group_by(col(LotInput.lot_id)).subquery()
    )
    shipped = (
        select(col(Shipment.lot_id), func.sum(col(Shipment.quantity)).label("q"))
        .group_by(col(Shipment.lot_id))
        .subquery()
    )
    holds = (
        select(col(LotHold.lot_id), func.count(col(LotHold.id)).label("h"))
        .where(col(LotHold.lifted_at).is_(None))
        .group_by(col(LotHold.lot_id))
        .subquery()
    )
    rows = session.execute(
        select(
            col(Lot.lot_number),
            col(Lot.product),
            col(Lot.kind),
            col(Lot.status),
            func.coalesce(inputs.c.n, 0),
            func.coalesce(shipped.c.q, 0),
            col(Lot.released_at),
            func.coalesce(holds.c.h, 0),
        )
        .outerjoin(inputs, inputs.c.lot_id == col(Lot.id))
        .outerjoin(shipped, shipped.c.lot_id == col(Lot.id))
        .outerjoin(holds, holds.c.lot_id == col(Lot.id))
        .order_by(col(Lot.lot_number))
    )
    return (
        ["lot", "product", "kind", "status", "inputs", "shipped", "released at", "holds standing"],
        [[n, p, k.value, s.value, i, q, r, h] for n, p, k, s, i, q, r, h in rows],
    )


def list_consignees(session: Session) -> tuple[list[str], list[list[Any]]]:
    rows = session.execute(
        select(col(Consignee.code), col(Consignee.name), col(Consignee.address), col(Consignee.country)).order_by(
            col(Consignee.code)
        )
    )
    return ["code", "name", "address", "country"], [list(r) for r in rows]


def show_consignee(session: Session, code: str) -> tuple[dict[str, Any], list[str], list[list[Any]]]:
    """A consignee and its distribution records: lot, quantity and unit, day shipped and the lot's expiry."""
    row = get_consignee(session, code)
    shipments = session.execute(
        select(
            col(Shipment.shipment_number),
            col(Lot.lot_number),
            col(Shipment.quantity),
            col(Lot.unit),
            col(Shipment.shipped_on),
            col(Lot.expires_on),
        )
        .join(Lot, col(Lot.id) == col(Shipment.lot_id))
        .where(col(Shipment.consignee_id) == row.id)
        .order_by(col(Shipment.shipped_on), col(Shipment.shipment_number))
    )
    summary = {"code": row.code, "name": row.name, "address": row.address, "country": row.country}
    return (
        summary,
        ["shipment", "lot", "quantity", "unit", "shipped_on", "expires_on"],
        [
            [n, lot, q, u.value if u else None, on.isoformat(), exp.isoformat() if exp else None]
            for n, lot, q, u, on, exp in shipments
        ],
    )


def audit_log(
    session: Session, *, entity: str | None = None, key: str | None = None, limit: int = 500
) -> tuple[list[str], list[list[Any]]]:
    """Audit events, oldest first; for a record, its whole history with old and new values and reasons."""
    query = select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(limit)
    if entity:
        query = query.where(col(AuditEvent.entity_type) == entity)
    if key:
        keys = {key}
        try:
            keys.add(canonical_unit_number(key))
        except Exception:  # not a unit number: match the key as given
            pass
        query = query.where(col(AuditEvent.entity_key).in_(keys))
    rows = list(session.execute(query).scalars())[::-1]
    return (
        ["seq", "at", "actor", "action", "entity", "key", "old", "new", "reason"],
        [
            [
                e.seq,
                e.occurred_at,
                e.actor,
                e.action,
                e.entity_type,
                e.entity_key,
                _values(e.old_values),
                _values(e.new_values),
                e.reason or "",
            ]
            for e in rows
        ],
    )


def _values(text: str | None) -> dict[str, Any] | str:
    """An event's values as shown, without the rows it wrote (``records``: full state, for ``audit verify``)."""
    values = json.loads(text) if text else ""
    if isinstance(values, dict):
        values.pop("records", None)
    return values
