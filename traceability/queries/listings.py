"""Listings for the `list` commands and the audit log: plain rows, newest or most relevant first."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from ..models import (
    AuditEvent,
    Consignee,
    Donation,
    Donor,
    Establishment,
    Lot,
    LotInput,
    Pool,
    PoolMember,
    Shipment,
)
from .lookup import canonical_unit_number, get_consignee, get_donor, get_establishment, get_pool


def list_establishments(session: Session) -> tuple[list[str], list[list[Any]]]:
    rows = session.execute(
        select(Establishment.code, Establishment.name, Establishment.kind, Establishment.timezone).order_by(
            Establishment.code
        )
    )
    return ["code", "name", "kind", "timezone"], [[c, n, k.value, tz] for c, n, k, tz in rows]


def list_donors(
    session: Session, *, establishment: str | None = None, limit: int = 200
) -> tuple[list[str], list[list[Any]]]:
    counts = select(Donation.donor_id, func.count(Donation.id).label("n")).group_by(Donation.donor_id).subquery()
    query = (
        select(Donor.donor_code, Establishment.code, Donor.registered_on, func.coalesce(counts.c.n, 0))
        .join(Establishment, Establishment.id == Donor.establishment_id)
        .outerjoin(counts, counts.c.donor_id == Donor.id)
        .order_by(Donor.donor_code)
        .limit(limit)
    )
    if establishment:
        query = query.where(Establishment.id == get_establishment(session, establishment).id)
    return ["donor", "establishment", "registered on", "donations"], [list(r) for r in session.execute(query)]


def list_donations(
    session: Session, *, donor: str | None = None, status: str | None = None, pool: str | None = None, limit: int = 200
) -> tuple[list[str], list[list[Any]]]:
    query = (
        select(
            Donation.unit_number,
            Donor.donor_code,
            Donation.collected_at,
            Donation.volume_ml,
            Donation.status,
            Pool.pool_number,
        )
        .join(Donor, Donor.id == Donation.donor_id)
        .outerjoin(PoolMember, PoolMember.donation_id == Donation.id)
        .outerjoin(Pool, Pool.id == PoolMember.pool_id)
        .order_by(Donation.collected_at.desc(), Donation.unit_number)
        .limit(limit)
    )
    if donor:
        query = query.where(Donation.donor_id == get_donor(session, donor).id)
    if status:
        query = query.where(Donation.status == status)
    if pool:
        query = query.where(PoolMember.pool_id == get_pool(session, pool).id)
    return (
        ["unit", "donor", "collected at", "volume mL", "status", "pool"],
        [[u, d, c, v, s.value, p or ""] for u, d, c, v, s, p in session.execute(query)],
    )


def list_pools(session: Session, *, status: str | None = None) -> tuple[list[str], list[list[Any]]]:
    query = (
        select(
            Pool.pool_number,
            Pool.product,
            Pool.status,
            func.count(func.distinct(Donation.donor_id)),
            func.count(Donation.id),
            func.coalesce(func.sum(Donation.volume_ml), 0),
            Pool.created_at,
        )
        .outerjoin(PoolMember, PoolMember.pool_id == Pool.id)
        .outerjoin(Donation, Donation.id == PoolMember.donation_id)
        .group_by(Pool.id, Pool.pool_number, Pool.product, Pool.status, Pool.created_at)
        .order_by(Pool.pool_number)
    )
    if status:
        query = query.where(Pool.status == status)
    return (
        ["pool", "product", "status", "distinct donors", "donations", "volume mL", "created at"],
        [[n, p, s.value, d, c, v, t] for n, p, s, d, c, v, t in session.execute(query)],
    )


def list_lots(session: Session) -> tuple[list[str], list[list[Any]]]:
    inputs = select(LotInput.lot_id, func.count(LotInput.id).label("n")).group_by(LotInput.lot_id).subquery()
    shipped = select(Shipment.lot_id, func.sum(Shipment.quantity).label("q")).group_by(Shipment.lot_id).subquery()
    rows = session.execute(
        select(
            Lot.lot_number,
            Lot.product,
            Lot.kind,
            Lot.status,
            func.coalesce(inputs.c.n, 0),
            func.coalesce(shipped.c.q, 0),
            Lot.released_at,
        )
        .outerjoin(inputs, inputs.c.lot_id == Lot.id)
        .outerjoin(shipped, shipped.c.lot_id == Lot.id)
        .order_by(Lot.lot_number)
    )
    return (
        ["lot", "product", "kind", "status", "inputs", "shipped", "released at"],
        [[n, p, k.value, s.value, i, q, r] for n, p, k, s, i, q, r in rows],
    )


def list_consignees(session: Session) -> tuple[list[str], list[list[Any]]]:
    rows = session.execute(
        select(Consignee.code, Consignee.name, Consignee.address, Consignee.country).order_by(Consignee.code)
    )
    return ["code", "name", "address", "country"], [list(r) for r in rows]


def show_consignee(session: Session, code: str) -> tuple[dict[str, Any], list[str], list[list[Any]]]:
    """A consignee and its distribution records: lot, quantity and unit, day shipped and the lot's expiry."""
    row = get_consignee(session, code)
    shipments = session.execute(
        select(
            Shipment.shipment_number, Lot.lot_number, Shipment.quantity, Lot.unit, Shipment.shipped_on, Lot.expires_on
        )
        .join(Lot, Lot.id == Shipment.lot_id)
        .where(Shipment.consignee_id == row.id)
        .order_by(Shipment.shipped_on, Shipment.shipment_number)
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
    query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
    if entity:
        query = query.where(AuditEvent.entity_type == entity)
    if key:
        keys = {key}
        try:
            keys.add(canonical_unit_number(key))
        except Exception:  # not a unit number: match the key as given
            pass
        query = query.where(AuditEvent.entity_key.in_(keys))
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
