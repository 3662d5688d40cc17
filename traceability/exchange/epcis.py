"""GS1 EPCIS 2.0 JSON-LD of the lineage (SPEC §13), for fractionators' plasma suppliers and the supply chain.

What becomes which event:
- pooling: a TransformationEvent, the donations in (each by its unit number as a URI), the pool out, with the pool's
  volume as a quantity;
- lot creation: a TransformationEvent, the pools and lots in (with the recorded quantity when there is one), the lot
  out;
- a viral inactivation/removal step and a pool test: an ObjectEvent (``inspecting``) carrying its method, times,
  parameters, outcome and log reduction values as extension fields;
- a shipment: an ObjectEvent with bizStep ``shipping``, the lot as a class with the quantity shipped and the
  consignee as the destination;
- a corrected donation: its collection as first recorded, with an ``errorDeclaration`` naming the event that
  carries the corrected values.

Event identifiers are name-based UUIDs of the business keys, and the document's creation date is the audit head's
time, so two exports of the same database are the same bytes.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import quote

from sqlalchemy import or_, select
from sqlmodel import Session, col

from ..models import AuditEvent, Donation, Donor, Lot, LotInput, Pool, PoolMember, PoolTest, Shipment, Step
from ..queries.graph import downstream_lots, upstream
from ..queries.lookup import get_lot, get_pool

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
NAMESPACE = "https://plasmatrace.org/epcis/"
"""The JSON-LD namespace of plasmatrace's extension fields (prefix ``pt``)."""
URI_BASE = "urn:plasmatrace:"
_IDS = uuid.UUID("6f1e0c7a-4d5b-5e2f-9a41-3c9b1e7d2a10")


def _uri(kind: str, key: str) -> str:
    return f"{URI_BASE}{kind}:{quote(key, safe='-._~')}"


def unit_uri(unit_number: str, scheme: str = "isbt128") -> str:
    """An ISBT 128 DIN as ``urn:plasmatrace:din:A999926123456``; other schemes name themselves."""
    if scheme == "isbt128":
        return _uri("din", unit_number)
    return _uri(f"unit:{scheme}", unit_number)


def pool_uri(pool_number: str) -> str:
    return _uri("pool", pool_number)


def lot_uri(lot_number: str) -> str:
    return _uri("lot", lot_number)


def consignee_uri(consignee: str) -> str:
    return _uri("party", consignee)


def _event_id(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_IDS, '/'.join(parts))}"


def _time(value: datetime | date) -> str:
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(0), tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Scope:
    """What an export covers: pool and lot ids, and the earliest record time (``--since``)."""

    pool_ids: set[int]
    lot_ids: set[int]
    since: datetime | None = None


def scope_of(
    session: Session, *, lot_number: str | None = None, pool_number: str | None = None, since: datetime | None = None
) -> Scope:
    """A lot's lineage back to its donations, a pool and everything made from it, or every record since a time.

    Raises LotNotFound or PoolNotFound."""
    if lot_number is not None:
        graph = upstream(session, get_lot(session, lot_number).id or 0)
        return Scope(pool_ids=graph.pool_ids, lot_ids=graph.lot_ids)
    if pool_number is not None:
        pool_id = get_pool(session, pool_number).id or 0
        return Scope(pool_ids={pool_id}, lot_ids=downstream_lots(session, [pool_id]).get(pool_id, set()))
    return Scope(
        pool_ids=set(session.execute(select(col(Pool.id))).scalars()),
        lot_ids=set(session.execute(select(col(Lot.id))).scalars()),
        since=since,
    )


def _ext(name: str) -> str:
    return f"pt:{name}"


def _pooling_events(session: Session, pools: dict[int, Pool]) -> list[dict[str, Any]]:
    members: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
    donors: dict[int, set[str]] = defaultdict(set)
    if pools:
        rows = session.execute(
            select(
                col(PoolMember.pool_id),
                col(Donation.unit_number),
                col(Donation.scheme),
                col(Donation.volume_ml),
                col(Donor.donor_code),
            )
            .join(Donation, col(Donation.id) == col(PoolMember.donation_id))
            .join(Donor, col(Donor.id) == col(Donation.donor_id))
            .where(col(PoolMember.pool_id).in_(list(pools)))
            .order_by(col(Donation.unit_number))
        )
        for pool_id, unit_number, scheme, volume_ml, donor_code in rows:
            members[pool_id].append((unit_number, str(scheme.value if hasattr(scheme, "value") else scheme), volume_ml))
            donors[pool_id].add(donor_code)
    events = []
    for pool_id, pool in sorted(pools.items(), key=lambda item: item[1].pool_number):
        units = members[pool_id]
        if not units:
            continue  # nothing pooled yet: no transformation happened
        volume = sum(v for _, _, v in units)
        events.append(
            {
                "type": "TransformationEvent",
                "eventID": _event_id("pooling", pool.pool_number),
                "eventTime": _time(pool.closed_at or pool.created_at),
                "recordTime": _time(pool.created_at),
                "eventTimeZoneOffset": "+00:00",
                "inputEPCList": [unit_uri(u, s) for u, s, _ in units],
                "outputEPCList": [pool_uri(pool.pool_number)],
                "outputQuantityList": [
                    {"epcClass": pool_uri(pool.pool_number), "quantity": volume / 1000, "uom": "LTR"}
                ],
                "transformationID": _uri("pooling", pool.pool_number),
                "bizStep": "assembling",
                _ext("product"): pool.product,
                _ext("poolStatus"): pool.status.value,
                _ext("donationCount"): len(units),
                _ext("donorCount"): len(donors[pool_id]),
                _ext("volumeMl"): volume,
            }
        )
    return events


def _lot_events(session: Session, lots: dict[int, Lot]) -> list[dict[str, Any]]:
    if not lots:
        return []
    inputs: dict[int, list[LotInput]] = defaultdict(list)
    for edge in session.execute(select(LotInput).where(col(LotInput.lot_id).in_(list(lots)))).scalars():
        inputs[edge.lot_id].append(edge)
    ids = {e.input_pool_id for edges in inputs.values() for e in edges if e.input_pool_id}
    pool_names = {
        i: n for i, n in session.execute(select(col(Pool.id), col(Pool.pool_number)).where(col(Pool.id).in_(ids)))
    }
    lot_ids = {e.input_lot_id for edges in inputs.values() for e in edges if e.input_lot_id}
    lot_names = {
        i: n for i, n in session.execute(select(col(Lot.id), col(Lot.lot_number)).where(col(Lot.id).in_(lot_ids)))
    }
    events = []
    for lot_id, lot in sorted(lots.items(), key=lambda item: item[1].lot_number):
        epcs: list[str] = []
        quantities: list[dict[str, Any]] = []
        for edge in sorted(inputs[lot_id], key=lambda e: (e.input_pool_id is None, e.input_pool_id or e.input_lot_id)):
            uri = (
                pool_uri(pool_names[edge.input_pool_id])
                if edge.input_pool_id
                else lot_uri(lot_names[edge.input_lot_id])
            )
            if edge.quantity is None:
                epcs.append(uri)
            else:
                quantities.append({"epcClass": uri, **_measured(edge.quantity, edge.quantity_unit)})
        event: dict[str, Any] = {
            "type": "TransformationEvent",
            "eventID": _event_id("lot", lot.lot_number),
            "eventTime": _time(lot.created_at),
            "recordTime": _time(lot.created_at),
            "eventTimeZoneOffset": "+00:00",
        }
        if epcs:
            event["inputEPCList"] = epcs
        if quantities:
            event["inputQuantityList"] = quantities
        event.update(
            {
                "outputEPCList": [lot_uri(lot.lot_number)],
                "transformationID": _uri("lot-creation", lot.lot_number),
                "bizStep": "commissioning",
                _ext("product"): lot.product,
                _ext("lotKind"): lot.kind.value,
                _ext("lotStatus"): lot.status.value,
            }
        )
        events.append(event)
    return events


def _step_events(session: Session, pools: dict[int, Pool], lots: dict[int, Lot], scope: Scope) -> list[dict[str, Any]]:
    clauses = []
    if scope.pool_ids:
        clauses.append(col(Step.pool_id).in_(list(scope.pool_ids)))
    if scope.lot_ids:
        clauses.append(col(Step.lot_id).in_(list(scope.lot_ids)))
    if not clauses:
        return []
    events = []
    for step in session.execute(select(Step).where(or_(*clauses)).order_by(col(Step.step_key))).scalars():
        target = pool_uri(pools[step.pool_id].pool_number) if step.pool_id else lot_uri(lots[step.lot_id].lot_number)
        lrv = {
            k: v
            for k, v in (("enveloped", step.lrv_enveloped), ("non-enveloped", step.lrv_non_enveloped))
            if v is not None
        }
        events.append(
            {
                "type": "ObjectEvent",
                "eventID": _event_id("step", step.step_key),
                "eventTime": _time(step.ended_at),
                "recordTime": _time(step.created_at),
                "eventTimeZoneOffset": "+00:00",
                "epcList": [target],
                "action": "OBSERVE",
                "bizStep": "inspecting",
                _ext("step"): step.step_key,
                _ext("method"): step.method.value,
                _ext("startedAt"): _time(step.started_at),
                _ext("endedAt"): _time(step.ended_at),
                _ext("parameters"): dict(sorted(step.parameters.items())),
                _ext("logReduction"): lrv,
                _ext("outcome"): step.outcome.value,
                _ext("operator"): step.operator,
            }
        )
    return events


def _pool_test_events(session: Session, pools: dict[int, Pool]) -> list[dict[str, Any]]:
    if not pools:
        return []
    rows = session.execute(
        select(PoolTest)
        .where(col(PoolTest.pool_id).in_(list(pools)))
        .order_by(col(PoolTest.marker), col(PoolTest.version))
    ).scalars()
    events = []
    for test in sorted(rows, key=lambda t: (pools[t.pool_id].pool_number, t.marker.value, t.version)):
        pool_number = pools[test.pool_id].pool_number
        event: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventID": _event_id("pool-test", pool_number, test.marker.value, str(test.version)),
            "eventTime": _time(test.tested_at),
            "recordTime": _time(test.created_at),
            "eventTimeZoneOffset": "+00:00",
            "epcList": [pool_uri(pool_number)],
            "action": "OBSERVE",
            "bizStep": "inspecting",
            _ext("marker"): test.marker.value,
            _ext("version"): test.version,
            _ext("result"): test.result.value,
        }
        if test.value is not None:
            event[_ext("value")] = test.value
            event[_ext("valueUnit")] = test.value_unit
        events.append(event)
    return events


def _shipment_events(session: Session, lots: dict[int, Lot]) -> list[dict[str, Any]]:
    if not lots:
        return []
    rows = session.execute(
        select(Shipment).where(col(Shipment.lot_id).in_(list(lots))).order_by(col(Shipment.shipment_number))
    ).scalars()
    return [
        {
            "type": "ObjectEvent",
            "eventID": _event_id("shipment", s.shipment_number),
            "eventTime": _time(s.shipped_on),
            "recordTime": _time(s.created_at),
            "eventTimeZoneOffset": "+00:00",
            "epcList": [],
            "quantityList": [
                {
                    "epcClass": lot_uri(lots[s.lot_id].lot_number),
                    **_measured(s.quantity, unit.value if (unit := lots[s.lot_id].unit) else None),
                }
            ],
            "action": "OBSERVE",
            "bizStep": "shipping",
            "disposition": "in_transit",
            "destinationList": [{"type": "owning_party", "destination": consignee_uri(s.consignee)}],
            _ext("shipment"): s.shipment_number,
        }
        for s in rows
    ]


_COLLECTION_FIELDS = ("collected_at", "frozen_at", "volume_ml", "plasma_kind")


def _correction_events(session: Session, pools: dict[int, Pool]) -> list[dict[str, Any]]:
    """A corrected donation: each version of its collection record, every superseded one with an errorDeclaration."""
    if not pools:
        return []
    corrected = session.execute(
        select(Donation)
        .join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .where(col(PoolMember.pool_id).in_(list(pools)), col(Donation.version) > 1)
        .order_by(col(Donation.unit_number))
    ).scalars()
    events: list[dict[str, Any]] = []
    for unit in corrected:
        corrections = list(
            session.execute(
                select(AuditEvent)
                .where(
                    col(AuditEvent.entity_type) == "donation",
                    col(AuditEvent.entity_key) == unit.unit_number,
                    col(AuditEvent.action) == "donation.corrected",
                )
                .order_by(col(AuditEvent.seq))
            ).scalars()
        )
        values: dict[str, Any] = {name: getattr(unit, name) for name in _COLLECTION_FIELDS}
        values = {k: (v.value if hasattr(v, "value") else v) for k, v in values.items()}
        versions: dict[int, dict[str, Any]] = {unit.version: dict(values)}
        declared: dict[int, AuditEvent] = {}
        for correction in reversed(corrections):
            old = json.loads(correction.old_values or "{}")
            version = int(old.get("version", 1))
            values.update({k: v for k, v in old.items() if k in _COLLECTION_FIELDS})
            versions[version] = dict(values)
            declared[version] = correction
        scheme = unit.scheme.value if hasattr(unit.scheme, "value") else str(unit.scheme)
        for version in sorted(versions):
            fields = versions[version]
            event: dict[str, Any] = {
                "type": "ObjectEvent",
                "eventID": _event_id("collection", unit.unit_number, str(version)),
                "eventTime": _time(_as_datetime(fields["collected_at"])),
                "recordTime": _time(unit.created_at if version == 1 else declared_time(declared, version - 1)),
                "eventTimeZoneOffset": "+00:00",
                "epcList": [unit_uri(unit.unit_number, scheme)],
                "action": "OBSERVE",
                "bizStep": "commissioning",
                _ext("recordVersion"): version,
                _ext("collection"): {k: _json_value(v) for k, v in fields.items()},
            }
            if version in declared:
                correction = declared[version]
                event["errorDeclaration"] = {
                    "declarationTime": _time(correction.occurred_at),
                    "reason": "incorrect_data",
                    "correctiveEventIDs": [_event_id("collection", unit.unit_number, str(version + 1))],
                    _ext("reason"): correction.reason or "",
                }
            events.append(event)
    return events


def declared_time(declared: dict[int, AuditEvent], version: int) -> datetime:
    return declared[version].occurred_at


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return _time(value)
    return value


def _after(event: dict[str, Any], since: datetime) -> bool:
    stamp = _time(since)
    declaration = event.get("errorDeclaration", {}).get("declarationTime")
    return event["recordTime"] >= stamp or (declaration is not None and declaration >= stamp)


def export_epcis(session: Session, scope: Scope) -> dict[str, Any]:
    """The EPCIS 2.0 document of everything in ``scope``: events ordered by time, then by identifier."""
    pools = {p.id: p for p in session.execute(select(Pool).where(col(Pool.id).in_(list(scope.pool_ids)))).scalars()}
    lots = {lot.id: lot for lot in session.execute(select(Lot).where(col(Lot.id).in_(list(scope.lot_ids)))).scalars()}
    events = [
        *_pooling_events(session, pools),
        *_correction_events(session, pools),
        *_pool_test_events(session, pools),
        *_step_events(session, pools, lots, scope),
        *_lot_events(session, lots),
        *_shipment_events(session, lots),
    ]
    if scope.since is not None:
        events = [e for e in events if _after(e, scope.since)]
    events.sort(key=lambda e: (e["eventTime"], e["recordTime"], e["eventID"]))
    head = session.execute(select(col(AuditEvent.occurred_at)).order_by(col(AuditEvent.seq).desc()).limit(1)).scalar()
    return {
        "@context": [EPCIS_CONTEXT, {"pt": NAMESPACE}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(head or datetime(1970, 1, 1, tzinfo=UTC)),
        "epcisBody": {"eventList": events},
    }


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


_UOM = {"mL": ("LTR", 0.001), "L": ("LTR", 1.0), "kg": ("KGM", 1.0), "g": ("GRM", 1.0)}
"""UN/CEFACT codes (EPCIS 2.0 quantity uom) of the units plasmatrace keeps; vials and bottles are counts."""


def _measured(quantity: int, unit: str | None) -> dict[str, Any]:
    """An EPCIS quantity element: litres, kilograms or grams with their UN/CEFACT code; a count without one."""
    code = _UOM.get(unit or "")
    if code is None:
        return {"quantity": quantity}
    return {"quantity": round(quantity * code[1], 6), "uom": code[0]}
