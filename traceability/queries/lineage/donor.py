"""Forward from a donor: every donation and where it went, in one statement (see ``donor_statement``)."""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from ...calendars import local_day
from ...errors import DonorNotFound
from ...models import Donation, Donor, Pool, PoolMember
from ...rules import (
    DEFAULT_POLICY,
    Policy,
    in_lookback_window,
    lookback_anchor,
    lookback_window_starts_on,
    panel_complete_and_nonreactive,
)
from ..eligibility import zone_of_donation
from . import as_of as then
from .donor_statement import (
    DeferralRow,
    DonationRow,
    DonorRow,
    LotRow,
    ResultRow,
    compiled_for,
    decode,
    kind_of,
    result_positions,
)
from .lines import DeferralLine, ShipmentLine, iso, trace_json
from .shared import distribution_details

_RESULT = kind_of(ResultRow)
_RESULT_AT = result_positions()


@dataclass
class DonationLine:
    unit_number: str
    collected_at: str
    volume_ml: int
    status: str
    pool_number: str | None
    lot_numbers: list[str]
    results: dict[str, str]
    in_lookback_window: bool
    changed: bool


@dataclass
class DonorTrace:
    donor_code: str
    establishment: str
    registered_on: str | None
    deferrals: list[DeferralLine]
    lookback_window_start: str | None
    donations: list[DonationLine]
    pools: list[str]
    lots: list[str]
    shipments: list[ShipmentLine]
    as_of: str | None = None  # the trace as recorded at this time (--as-of), or None for today's records

    def as_json(self) -> dict[str, Any]:
        return trace_json(self, "as_of")


def trace_donor(
    session: Session, donor_code: str, *, policy: Policy = DEFAULT_POLICY, as_of: datetime | None = None
) -> DonorTrace:
    """Every donation of a donor and where each went: inventory, pool, every lot downstream, every shipment.

    One statement, whatever the donor's history, compiled once per dialect and run on the session's own connection
    and transaction through the driver's cursor. That skips SQLAlchemy's per-call execution and result handling
    (and so its statement logging and cursor events); driver errors are still raised as SQLAlchemy's. The look-back
    window comes from the results read with it.

    With ``as_of`` the statement keeps only the rows recorded by then, and the statuses, lifted deferrals and
    record versions are those of that time (see ``as_of``).
    """
    donor_code = unicodedata.normalize("NFKC", donor_code).strip()  # stored keys are NFKC
    conn = session.connection()
    statement = compiled_for(conn.dialect, as_of=as_of is not None)
    at, day = statement.at, statement.day
    donor: DonorRow | None = None
    deferrals: list[DeferralLine] = []
    donations: list[DonationRow] = []
    latest: dict[int, dict[str, tuple[int, str]]] = defaultdict(dict)  # donation id -> marker -> (version, result)
    lots_by_pool: dict[int, set[str]] = defaultdict(set)
    shipped: dict[str, ShipmentLine] = {}
    result_at = _RESULT
    r_donation, r_version, r_marker, r_result = _RESULT_AT
    for raw in statement.run(conn, donor_code, as_of):
        if raw[0] == result_at:  # most rows: read in place, by the positions of the result row's fields
            markers = latest[raw[r_donation]]
            marker, version = raw[r_marker], raw[r_version]
            if marker not in markers or markers[marker][0] < version:
                markers[marker] = (version, raw[r_result])
            continue
        row = decode(raw)
        if type(row) is DonationRow:
            donations.append(row._replace(collected_at=at(row.collected_at)))
        elif type(row) is LotRow:
            lots_by_pool[row.pool_id].add(row.lot_number)
            if row.shipment_number is not None:
                shipped[row.shipment_number] = ShipmentLine(
                    row.shipment_number,
                    row.lot_number,
                    row.consignee or "",
                    day(row.shipped_on).isoformat(),
                    row.quantity or 0,
                )
        elif type(row) is DonorRow:
            donor = row
        elif type(row) is DeferralRow:
            deferrals.append(
                DeferralLine(
                    sequence=row.sequence,
                    reason=row.reason,
                    source=row.source,
                    starts_on=iso(day(row.starts_on)),
                    ends_on=iso(day(row.ends_on)),
                    lifted_on=iso(day(row.lifted_on)),
                )
            )
    if donor is None:
        raise DonorNotFound(donor_code)
    if as_of is not None:
        donations, deferrals = _as_recorded_at(session, donor, donations, deferrals, as_of)
    donations.sort(key=lambda d: (d.collected_at, d.donation_id))
    deferrals.sort(key=lambda d: d.sequence)
    current = {i: {m: value for m, (_, value) in sorted(markers.items())} for i, markers in latest.items()}
    distribution_details(session, shipped)
    shipments = sorted(shipped.values(), key=lambda line: (line.shipped_on, line.shipment_number))
    zones: dict[int, str] = {
        i: tz
        for i, tz in session.execute(
            select(col(Donation.id), zone_of_donation()).where(col(Donation.id).in_([d.donation_id for d in donations]))
        )
    }
    days = {d.donation_id: local_day(d.collected_at, zones.get(d.donation_id)) for d in donations}
    clean = [
        (d.collected_at, days[d.donation_id])
        for d in donations
        if panel_complete_and_nonreactive(current.get(d.donation_id, {}), policy)
    ]
    turned = [
        d.collected_at
        for d in donations
        if any(current.get(d.donation_id, {}).get(m) == "reactive" for m in policy.panel)
    ]
    anchor = lookback_anchor(clean, min(turned, default=None))
    start = lookback_window_starts_on(anchor, policy.lookback_months) if anchor else None
    return DonorTrace(
        donor_code=donor.donor_code,
        establishment=donor.establishment,
        registered_on=iso(day(donor.registered_on)),
        deferrals=deferrals,
        lookback_window_start=iso(start),
        donations=[
            DonationLine(
                unit_number=d.unit_number,
                collected_at=d.collected_at.isoformat(),
                volume_ml=d.volume_ml,
                status=d.status,
                pool_number=d.pool_number,
                lot_numbers=sorted(lots_by_pool.get(d.pool_id, ())) if d.pool_id is not None else [],
                results=current.get(d.donation_id, {}),
                in_lookback_window=in_lookback_window(days[d.donation_id], start),
                changed=d.version > 1,
            )
            for d in donations
        ],
        pools=sorted({d.pool_number for d in donations if d.pool_number is not None}),
        lots=sorted(set().union(*lots_by_pool.values())) if lots_by_pool else [],
        shipments=shipments,
        as_of=then.as_of_text(as_of),
    )


def _as_recorded_at(
    session: Session, donor: DonorRow, donations: list[DonationRow], deferrals: list[DeferralLine], at: datetime
) -> tuple[list[DonationRow], list[DeferralLine]]:
    """The donor's rows recorded by ``at`` with the statuses, versions and lifted deferrals of that time."""
    created = session.execute(select(col(Donor.created_at)).where(col(Donor.id) == donor.donor_id)).scalar_one()
    then.recorded_at_or_refuse(created, at, "Donor", donor.donor_code)
    units = {d.unit_number: d.status for d in donations}
    pools = set(  # the pools they are in now: a pool's events say when each unit went in
        session.execute(
            select(col(Pool.pool_number))
            .join(PoolMember, col(PoolMember.pool_id) == col(Pool.id))
            .join(Donation, col(Donation.id) == col(PoolMember.donation_id))
            .where(col(Donation.donor_id) == donor.donor_id)
        ).scalars()
    )
    left = then.pools_left_after(session, [d.unit_number for d in donations if d.pool_number is None], at)
    statuses = then.unit_statuses_at(session, units, pools | set(left.values()), at)
    corrected = then.corrections_after(session, units, at)
    lifted_later = then.lifted_after(session, donor.donor_code, at)
    for line in deferrals:
        if line.sequence in lifted_later:
            line.lifted_on = None
    return [
        d._replace(
            status=statuses.get(d.unit_number, d.status),
            version=d.version - corrected.get(d.unit_number, 0),
            pool_number=d.pool_number or left.get(d.unit_number),  # an open pool then: no lots made from it yet
        )
        for d in donations
    ], deferrals
