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
    saved_id,
)
from traceability.rules import DEFAULT_POLICY
from traceability.services import consignees, donors, inactivation, lots, units
from traceability.synthetic import codes, records

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
    return codes.din(fin, int(year), n if n is not None else next_id())


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


def _pool_members(session: Session, *, donors_count: int, units_per_donor: int, bulk: bool) -> list[str]:
    """``units_per_donor`` units of each of ``donors_count`` new qualified donors (who have at least two)."""
    site = make_establishment(session)
    units_each = max(2, units_per_donor)
    if bulk:
        numbers = bulk_units(session, donors_count=donors_count, units_per_donor=units_each, establishment=site)
        return [n for i, n in enumerate(numbers) if i % units_each < units_per_donor]
    members: list[str] = []
    for _ in range(donors_count):
        _, made = make_qualified_donor_units(session, establishment=site, count=units_each)
        members.extend(u.unit_number for u in made[:units_per_donor])
    return members


def make_closed_pool(
    session: Session,
    *,
    donors_count: int = 1000,
    units_per_donor: int = 1,
    product: str = "ivig",
    pool_number: str | None = None,
    members: list[str] | None = None,
) -> str:
    """A closed, untested pool of bulk-inserted qualified units (or of ``members``), closed by ACTOR at NOW."""
    number = pool_number or f"P-{next_id():05d}"
    if members is None:
        members = _pool_members(session, donors_count=donors_count, units_per_donor=units_per_donor, bulk=True)
    records.close_new_pool(session, pool_number=number, unit_numbers=members, product=product, at=NOW, actor=ACTOR)
    return number


def make_released_pool(
    session: Session,
    *,
    donors_count: int = 1000,
    units_per_donor: int = 1,
    product: str = "ivig",
    pool_number: str | None = None,
    bulk: bool = False,
    members: list[str] | None = None,
) -> str:
    """A released pool of qualified donors' units, built through the services (slow-ish: ~1s per 1,000 units), or
    with ``bulk`` from units inserted set-based (fast; for tests about pools and lots, not about recording units),
    or of ``members``, units the test made itself. Closed and tested by ACTOR at NOW, released by APPROVER."""
    number = pool_number or f"P-{next_id():05d}"
    if members is None:
        members = _pool_members(session, donors_count=donors_count, units_per_donor=units_per_donor, bulk=bulk)
    records.release_new_pool(
        session, pool_number=number, unit_numbers=members, product=product, at=NOW, actor=ACTOR, approver=APPROVER
    )
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

    Returns the unit numbers, donor by donor. Used where a test is about pools, not about recording units. Like an
    import, each kind of row names one import event of the audit trail (``import_event_id``).
    """

    started: dict[str, tuple[int, int]] = {}  # kind -> (import event id, rows)
    batch = f"bulk test data {next_id()}"

    def loaded(kind: str, rows: int) -> int | None:
        """Bulk rows point at an import event, as imported rows do."""
        event = audit.record(
            session, action=f"import.{kind}", entity_type="import", entity_key=batch, actor=ACTOR,
            new={"sha256": batch, "file": batch},
        )  # fmt: skip
        started[kind] = (saved_id(event.id), rows)
        return event.id

    base = next_id() * 10_000
    numbers = records.insert_qualified_units(
        session,
        establishment=establishment or make_establishment(session),
        donor_codes=[f"BD{base + i:09d}" for i in range(donors_count)],
        unit_number=lambda _donor, _visit: make_din(),
        units_per_donor=units_per_donor,
        first_collected=collected_at or NOW - timedelta(days=150),
        spacing_days=spacing_days,
        actor=ACTOR,
        at=NOW,
        panel=PANEL,
        loaded=loaded,
    )
    # Each import completes with the digest of the rows it loaded, as a real import's does: audit verify proves them.
    for kind, (event_id, rows) in started.items():
        action = f"import.{kind}"
        audit.record(
            session, action=f"{action}.completed", entity_type="import", entity_key=batch, actor=ACTOR,
            new={"sha256": batch, "rows": rows, "loaded": rows, "import_event": event_id,
                 "digest": audit.recording.import_digest(session, event_id, action)},
        )  # fmt: skip
    return numbers


def backdate_release(session: Session, lot_number: str, when: datetime = NOW - timedelta(days=1)) -> None:
    """Make a lot look released at ``when`` (test data recorded as of NOW, a day in the past)."""
    from sqlalchemy import update

    from traceability.models import Lot

    session.execute(update(Lot).where(Lot.lot_number == lot_number).values(released_at=when))
    session.expire_all()
