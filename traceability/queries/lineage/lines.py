"""The read models the traces are made of: plain dataclasses whose field names are the JSON keys (SPEC §5).

Every trace's ``as_json()`` is ``dataclasses.asdict`` of it, so a field added here is a key added to the output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from ..signatures import SignatureLine

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass
class ShipmentLine:
    shipment_number: str
    lot_number: str
    consignee: str
    shipped_on: str
    quantity: int
    consignee_address: str | None = None  # a distribution record (21 CFR 606.165): name, address, lot, quantity,
    unit: str | None = None  # day shipped and the lot's expiry
    expires_on: str | None = None


@dataclass
class DeviationLine:
    """A correction to a unit in a closed or released pool, made under a named deviation."""

    reference: str
    pool_number: str
    unit_number: str
    version: int
    changes: str
    reason: str
    recorded_at: str
    recorded_by: str


@dataclass
class StepLine:
    step_key: str
    target: str
    method: str
    started_at: str
    ended_at: str
    outcome: str
    deviation_open: bool
    lrv_enveloped: float | None
    lrv_non_enveloped: float | None
    parameters: dict[str, str]
    operator: str


@dataclass
class LotLine:
    lot_number: str
    product: str
    kind: str
    status: str


@dataclass
class PoolLine:
    pool_number: str
    product: str
    status: str
    donor_count: int
    donation_count: int
    volume_ml: int


@dataclass
class MemberLine:
    unit_number: str
    donor_code: str
    pool_number: str
    collected_at: str


@dataclass
class DeferralLine:
    sequence: int
    reason: str
    source: str
    starts_on: str | None
    ends_on: str | None
    lifted_on: str | None


@dataclass
class ResultLine:
    """One version of a unit's screening result for one marker; ``current`` marks the latest version."""

    marker: str
    version: int
    current: bool
    result: str
    value: float | None
    unit: str | None
    method: str | None
    tested_at: str
    reason: str | None


@dataclass
class PoolTestLine:
    marker: str
    version: int
    result: str
    value: float | None
    unit: str | None
    tested_at: str


@dataclass
class InputLine:
    """One edge of a lot's lineage: ``lot_number`` drew ``quantity`` (in ``quantity_unit``: mL from a pool, the
    input lot's unit from a lot) from a pool or lot (``input_kind``)."""

    lot_number: str
    input_kind: str
    input: str
    quantity: int | None
    quantity_unit: str | None = None


@dataclass
class ClearancePathLine:
    path: list[str]
    worst_for: list[str]
    cumulative_log10: dict[str, float]
    effective_mechanisms: dict[str, list[str]]
    problems: list[str]


@dataclass
class SignedLine:
    """A signature on the traced record as the trace prints it (the time as ISO 8601 text)."""

    entity_type: str
    entity_key: str
    login: str
    full_name: str
    meaning: str
    signed_at: str
    content_sha256: str
    audit_seq: int
    changed_since_signing: bool

    @classmethod
    def of(cls, line: SignatureLine) -> SignedLine:
        return cls(
            entity_type=line.entity_type,
            entity_key=line.entity_key,
            login=line.login,
            full_name=line.full_name,
            meaning=line.meaning,
            signed_at=line.signed_at.isoformat(),
            content_sha256=line.content_sha256,
            audit_seq=line.audit_seq,
            changed_since_signing=line.changed_since_signing,
        )


@dataclass
class FindingLine:
    """One unit a look-back case implicates, with its pool and every lot downstream."""

    unit_number: str
    collected_at: str
    status: str
    action: str
    pool_number: str | None
    pool_status: str | None
    lot_numbers: list[str]


def trace_json(trace: DataclassInstance, *optional: str) -> dict[str, Any]:
    """A trace as JSON: every field, less the ``optional`` ones that hold None (donations not asked for with
    --members; ``as_of`` of today's records)."""
    data = asdict(trace)
    for name in optional:
        if data[name] is None:
            data.pop(name)
    return data
