"""Plain factory functions: keyword overrides, unique keys, flush but never commit. They go through the services."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import make_url
from sqlmodel import Session

from traceability import audit
from traceability.models import (
    Donation,
    Donor,
    EstablishmentKind,
    LotKind,
    LotUnit,
    Marker,
    ResultValue,
    StepMethod,
)
from traceability.rules import DEFAULT_POLICY
from traceability.services import consignees, donors, inactivation, lots, pools, units

ACTOR = "qa.tester"
APPROVER = "qa.approver"  # separation of duties: who records does not release


def cli_actor(db_url: str, wanted: str = ACTOR) -> str:
    """The actor a command may name: anyone on SQLite; on PostgreSQL only the login of the URL."""
    url = make_url(db_url)
    return wanted if url.get_backend_name() == "sqlite" else (url.username or wanted)


NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PANEL = [m for m in DEFAULT_POLICY.required_panel]
_seq = itertools.count(1)


def next_id() -> int:
    return next(_seq)


def make_din(n: int | None = None, *, fin: str = "A9999", year: str = "26") -> str:
    """A valid 13-character ISBT 128 DIN (without check character)."""
    return f"{fin}{year}{(n if n is not None else next_id()) % 1_000_000:06d}"


def make_establishment(session: Session, **overrides: object) -> str:
    code = str(overrides.get("code") or f"C{next_id():04d}")
    donors.add_establishment(
        session,
        code=code,
        name=str(overrides.get("name", f"Centre {code}")),
        kind=overrides.get("kind", EstablishmentKind.COLLECTION),
        timezone=str(overrides.get("timezone", "UTC")),
        actor=ACTOR,
    )  # type: ignore[arg-type]
    return code


def make_donor(session: Session, *, establishment: str | None = None, donor_code: str | None = None) -> Donor:
    site = establishment or make_establishment(session)
    return donors.add_donor(
        session, donor_code=donor_code or f"DN{next_id():07d}", establishment=site, registered_on=None, actor=ACTOR
    )


def make_unit(
    session: Session,
    *,
    donor: Donor,
    collected_at: datetime | None = None,
    volume_ml: int = 750,
    panel: dict[Marker, ResultValue] | None | str = "nonreactive",
    unit_number: str | None = None,
) -> Donation:
    """A unit, by default tested with the full panel all nonreactive."""
    collected = collected_at or NOW - timedelta(days=120)
    unit = units.add_donation(
        session,
        unit_number=unit_number or make_din(),
        donor_code=donor.donor_code,
        collected_at=collected,
        volume_ml=volume_ml,
        actor=ACTOR,
    )
    results = {m: ResultValue.NONREACTIVE for m in PANEL} if panel == "nonreactive" else (panel or {})
    for marker, result in results.items():  # type: ignore[union-attr]
        units.add_result(
            session,
            unit_number=unit.unit_number,
            marker=marker,
            result=result,
            tested_at=collected + timedelta(days=2),
            actor=ACTOR,
        )
    return unit


def make_qualified_donor_units(
    session: Session, *, establishment: str | None = None, count: int = 2, start: datetime | None = None
) -> tuple[Donor, list[Donation]]:
    """A qualified donor with ``count`` tested units a week apart, all past the hold."""
    donor = make_donor(session, establishment=establishment)
    first = start or NOW - timedelta(days=150)
    made = [make_unit(session, donor=donor, collected_at=first + timedelta(days=7 * i)) for i in range(count)]
    return donor, made


def make_released_pool(
    session: Session,
    *,
    donors_count: int = 1000,
    units_per_donor: int = 1,
    product: str = "ivig",
    pool_number: str | None = None,
    bulk: bool = False,
) -> str:
    """A released pool of qualified donors' units, built through the services (slow-ish: ~1s per 1,000 units), or
    with ``bulk`` from units inserted set-based (fast; for tests about pools and lots, not about recording units)."""
    site = make_establishment(session)
    number = pool_number or f"P-{next_id():05d}"
    pools.create_pool(session, pool_number=number, product=product, actor=ACTOR)
    members = []
    if bulk:
        units_each = max(2, units_per_donor)
        numbers = bulk_units(session, donors_count=donors_count, units_per_donor=units_each, establishment=site)
        members = [n for i, n in enumerate(numbers) if i % units_each < units_per_donor]
    for _ in range(0 if bulk else donors_count):
        _, made = make_qualified_donor_units(session, establishment=site, count=max(2, units_per_donor))
        members.extend(u.unit_number for u in made[:units_per_donor])
    pools.add_units(session, pool_number=number, unit_numbers=members, actor=ACTOR, now=NOW)
    pools.close_pool(session, pool_number=number, actor=ACTOR, now=NOW)
    for marker in DEFAULT_POLICY.product(product).pool_tests:
        value, unit = (50.0, "IU/mL") if marker == Marker.B19_DNA else (None, None)
        pools.test_pool(
            session,
            pool_number=number,
            marker=marker,
            result=ResultValue.NONREACTIVE,
            tested_at=NOW,
            actor=ACTOR,
            value=value,
            value_unit=unit,
        )
    pools.release_pool(session, pool_number=number, actor=APPROVER)
    return number


def make_step(
    session: Session,
    *,
    method: StepMethod,
    pool: str | None = None,
    lot: str | None = None,
    enveloped: float | None = None,
    non_enveloped: float | None = None,
    **kw: object,
) -> str:
    lrv = {k: v for k, v in (("enveloped", enveloped), ("non-enveloped", non_enveloped)) if v is not None}
    return inactivation.add_step(
        session,
        method=method,
        started_at=NOW,
        ended_at=NOW + timedelta(hours=6),
        pool_number=pool,
        lot_number=lot,
        lrv=lrv,
        actor=ACTOR,
        **kw,
    ).step_key  # type: ignore[arg-type]


def make_lot(
    session: Session,
    *,
    inputs: list[tuple[str, str]],
    kind: LotKind = LotKind.FINAL,
    lot_number: str | None = None,
    product: str = "ivig",
    quantity: int | None = 1000,
    unit: LotUnit | None = LotUnit.VIALS,
    draw: int = 1,
) -> str:
    """A lot drawing 1 L from each pool and ``draw`` of each input lot's unit; by default it holds 1,000 vials."""
    number = lot_number or f"L-{next_id():05d}"
    lots.create_lot(
        session,
        lot_number=number,
        product=product,
        kind=kind,
        inputs=[lots.InputSpec(k, n, 1 if k == "pool" else draw, "L" if k == "pool" else None) for k, n in inputs],
        actor=ACTOR,
        quantity=quantity,
        unit=unit if quantity is not None else None,
    )
    return number


def make_consignee(session: Session, code: str | None = None, **overrides: str) -> str:
    code = code or f"H-{next_id():04d}"
    consignees.add_consignee(
        session,
        code=code,
        name=overrides.get("name", f"Hospital {code}"),
        address=overrides.get("address", f"{next_id()} Main Street, Springfield"),
        country=overrides.get("country", "US"),
        actor=ACTOR,
    )
    return code


def bulk_units(
    session: Session,
    *,
    donors_count: int,
    units_per_donor: int = 2,
    establishment: str | None = None,
    collected_at: datetime | None = None,
    spacing_days: int = 7,
) -> list[str]:
    """Many qualified donors with fully tested nonreactive units, inserted set-based (test data only).

    Returns the unit numbers, donor by donor. Used where a test is about pools, not about recording units.
    """
    from sqlalchemy import insert, select

    from traceability.models import Donation as D
    from traceability.models import Donor as Dn
    from traceability.models import Establishment, TestResult

    site = establishment or make_establishment(session)
    site_id = session.execute(select(Establishment.id).where(Establishment.code == site)).scalar_one()
    base = next_id() * 10_000
    codes = [f"BD{base + i:09d}" for i in range(donors_count)]
    session.execute(
        insert(Dn),
        [{"donor_code": c, "establishment_id": site_id, "created_by": ACTOR, "created_at": NOW} for c in codes],
    )
    ids = dict(session.execute(select(Dn.donor_code, Dn.id).where(Dn.donor_code.in_(codes))).all())
    first = collected_at or NOW - timedelta(days=150)
    numbers, rows = [], []
    for code in codes:
        for k in range(units_per_donor):
            number = make_din()
            numbers.append(number)
            rows.append(
                {
                    "unit_number": number,
                    "scheme": "isbt128",
                    "donor_id": ids[code],
                    "establishment_id": site_id,
                    "collected_at": first + timedelta(days=spacing_days * k),
                    "volume_ml": 750,
                    "plasma_kind": "source",
                    "status": "in-inventory",
                    "version": 1,
                    "created_by": ACTOR,
                    "created_at": NOW,
                }
            )
    session.execute(insert(D), rows)
    unit_ids = dict(session.execute(select(D.unit_number, D.id).where(D.unit_number.in_(numbers))).all())
    results = [
        {
            "donation_id": unit_ids[r["unit_number"]],
            "marker": m.value,
            "version": 1,
            "result": "nonreactive",
            "tested_at": r["collected_at"] + timedelta(days=2),
            "created_by": ACTOR,
            "created_at": NOW,
        }
        for r in rows
        for m in PANEL
    ]
    for start in range(0, len(results), 20_000):
        session.execute(insert(TestResult), results[start : start + 20_000])
    # The rows go into the trail as one event, as an import's digest would prove them: audit verify replays them.
    audit.records.touched_new(session, "donor", ids.values())
    audit.records.touched_new(session, "donation", unit_ids.values())
    audit.records.touched_new_where(session, "test_result", TestResult.donation_id.in_(list(unit_ids.values())))
    audit.record(
        session,
        action="donation.added",
        entity_type="donation",
        entity_key=f"{len(numbers)} test units",
        actor=ACTOR,
    )
    return numbers


def backdate_release(session: Session, lot_number: str, when: datetime = NOW - timedelta(days=1)) -> None:
    """Make a lot look released at ``when`` (test data recorded as of NOW, a day in the past)."""
    from sqlalchemy import update

    from traceability.models import Lot

    session.execute(update(Lot).where(Lot.lot_number == lot_number).values(released_at=when))
    session.expire_all()
