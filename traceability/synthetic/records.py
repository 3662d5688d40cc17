"""Synthetic records in a database: qualified donors with tested units, and released pools of them.

* :func:`insert_qualified_units` writes donors, units and results set-based, without the services or the audit
  trail: fast, for benchmarks and tests about pools and lots rather than about recording units;
* :func:`pass_pool_tests` and :func:`release_new_pool` go through the services, audited, as a user would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert
from sqlmodel import Session, select

from ..models import Donation, Donor, Establishment, Marker, ResultValue, StepMethod, TestResult
from ..rules import DEFAULT_POLICY, Policy
from ..services import inactivation, pools

POOL_B19_IU_PER_ML = 50.0
"""A B19 DNA quantity found in ordinary pools, far under the anti-D limit."""
_CHUNK = 50_000
"""Rows per executemany: bounds the memory a driver holds for one call."""


@dataclass(frozen=True)
class TypicalStep:
    """How long a plant's step of one method takes, its process parameters and the reductions it is validated for."""

    hours: int
    parameters: dict[str, str]
    lrv: dict[str, float]


TYPICAL_STEPS = {
    StepMethod.SOLVENT_DETERGENT: TypicalStep(
        6, {"tnbp_pct": "0.3", "polysorbate80_pct": "1.0", "temperature_c": "24"}, {"enveloped": 6.0}
    ),
    StepMethod.LOW_PH: TypicalStep(1, {"ph": "4.0", "temperature_c": "37", "hours": "21"}, {"enveloped": 4.6}),
    StepMethod.NANOFILTRATION: TypicalStep(
        2, {"filter": "Planova 20N", "pore_nm": "20"}, {"enveloped": 5.2, "non-enveloped": 4.4}
    ),
}
"""An IVIG process: solvent-detergent on pools, low pH on the intermediate, nanofiltration on final lots."""

DinMaker = Callable[[int, int], str]
"""(donor index, visit index) -> the unit number of that donation."""


def _insert_keyed(db: Session | Connection, model: Any, key: Any, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert ``rows`` and return their ids by business key, read back as the rows past the largest id before
    (an index range, not a list of keys; rows another writer adds meanwhile come along, unused)."""
    before = db.execute(select(func.max(model.id))).scalar() or 0
    _insert(db, model, rows)
    return {k: i for k, i in db.execute(select(key, model.id).where(model.id > before))}


def _insert(db: Session | Connection, model: Any, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), _CHUNK):
        db.execute(insert(model), rows[start : start + _CHUNK])


def _import_pointer(loaded: Callable[[str, int], int | None] | None, kind: str, rows: int) -> dict[str, Any]:
    return {} if loaded is None else {"import_event_id": loaded(kind, rows)}


def insert_qualified_units(
    db: Session | Connection,
    *,
    establishment: str,
    donor_codes: Sequence[str],
    unit_number: DinMaker,
    units_per_donor: int = 2,
    first_collected: datetime,
    spacing_days: int = 7,
    volume_ml: int = 750,
    actor: str,
    at: datetime,
    panel: Sequence[Marker] | None = None,
    loaded: Callable[[str, int], int | None] | None = None,
) -> list[str]:
    """Qualified donors with fully tested nonreactive units, inserted set-based (no services, no audit events).

    ``loaded(kind, rows)``, when given, is called once per table before its rows go in (kind ``donors``,
    ``donations``, ``results``) and returns the id of the import event the rows then point at, as an import's do.

    Donor ``i``'s visit ``k`` is collected ``spacing_days * k`` days after ``first_collected`` at ``establishment``
    and tested with the whole panel (the default policy's) two days later. Returns the unit numbers, donor by
    donor. Works on a Session or a Connection; flushes nothing else and commits nothing.
    """
    markers = [m.value for m in (panel if panel is not None else DEFAULT_POLICY.required_panel)]
    site_id = db.execute(select(Establishment.id).where(Establishment.code == establishment)).scalar_one()
    codes = list(donor_codes)
    donors_event = _import_pointer(loaded, "donors", len(codes))
    donor_ids = _insert_keyed(
        db,
        Donor,
        Donor.donor_code,
        [
            {"donor_code": c, "establishment_id": site_id, "created_by": actor, "created_at": at} | donors_event
            for c in codes
        ],
    )
    numbers: list[str] = []
    units: list[dict[str, Any]] = []
    for i, code in enumerate(codes):
        for k in range(units_per_donor):
            number = unit_number(i, k)
            numbers.append(number)
            units.append(
                {
                    "unit_number": number,
                    "scheme": "isbt128",
                    "donor_id": donor_ids[code],
                    "establishment_id": site_id,
                    "collected_at": first_collected + timedelta(days=spacing_days * k),
                    "volume_ml": volume_ml,
                    "plasma_kind": "source",
                    "status": "in-inventory",
                    "version": 1,
                    "created_by": actor,
                    "created_at": at,
                }
            )
    donations_event = _import_pointer(loaded, "donations", len(units))
    unit_ids = _insert_keyed(db, Donation, Donation.unit_number, [u | donations_event for u in units])
    results_event = _import_pointer(loaded, "results", len(units) * len(markers))
    _insert(
        db,
        TestResult,
        [
            {
                "donation_id": unit_ids[u["unit_number"]],
                "marker": m,
                "version": 1,
                "result": "nonreactive",
                "tested_at": u["collected_at"] + timedelta(days=2),
                "created_by": actor,
                "created_at": at,
            }
            | results_event
            for u in units
            for m in markers
        ],
    )
    return numbers


def pass_pool_tests(
    session: Session,
    *,
    pool_number: str,
    product: str,
    tested_at: datetime,
    actor: str,
    policy: Policy = DEFAULT_POLICY,
) -> None:
    """Record every pool test the product requires as passed: nonreactive, B19 DNA quantified under its limit."""
    for marker in policy.product(product).pool_tests:
        value, unit = (POOL_B19_IU_PER_ML, "IU/mL") if marker == Marker.B19_DNA else (None, None)
        pools.test_pool(
            session,
            pool_number=pool_number,
            marker=marker,
            result=ResultValue.NONREACTIVE,
            tested_at=tested_at,
            actor=actor,
            value=value,
            value_unit=unit,
            policy=policy,
        )


def close_new_pool(
    session: Session,
    *,
    pool_number: str,
    unit_numbers: list[str],
    product: str = "ivig",
    at: datetime,
    actor: str,
    policy: Policy = DEFAULT_POLICY,
) -> pools.Composition:
    """A pool of eligible units created, filled and closed at ``at`` by ``actor``, not yet tested. Returns its
    composition. Raises what the services raise."""
    pools.create_pool(session, pool_number=pool_number, product=product, actor=actor, policy=policy)
    pools.add_units(session, pool_number=pool_number, unit_numbers=unit_numbers, actor=actor, policy=policy, now=at)
    _, composition = pools.close_pool(session, pool_number=pool_number, actor=actor, policy=policy, now=at)
    return composition


def release_new_pool(
    session: Session,
    *,
    pool_number: str,
    unit_numbers: list[str],
    product: str = "ivig",
    at: datetime,
    actor: str,
    approver: str,
    policy: Policy = DEFAULT_POLICY,
) -> pools.Composition:
    """A pool closed as :func:`close_new_pool` makes it, its tests passed at ``at``, and released by ``approver``
    (who records does not release). Returns its composition. Raises what the services raise."""
    composition = close_new_pool(
        session, pool_number=pool_number, unit_numbers=unit_numbers, product=product, at=at, actor=actor, policy=policy
    )
    pass_pool_tests(session, pool_number=pool_number, product=product, tested_at=at, actor=actor, policy=policy)
    pools.release_pool(session, pool_number=pool_number, actor=approver, policy=policy)
    return composition


def typical_step(
    session: Session,
    method: StepMethod,
    *,
    started_at: datetime,
    actor: str,
    pool_number: str | None = None,
    lot_number: str | None = None,
    lrv: dict[str, float] | None = None,
) -> str:
    """Record a completed step of ``method`` as :data:`TYPICAL_STEPS` describes it (``lrv`` overrides its
    reductions) on a pool or a lot; returns the step key. Raises what ``inactivation.add_step`` raises."""
    typical = TYPICAL_STEPS[method]
    return inactivation.add_step(
        session,
        method=method,
        started_at=started_at,
        ended_at=started_at + timedelta(hours=typical.hours),
        actor=actor,
        pool_number=pool_number,
        lot_number=lot_number,
        parameters=dict(typical.parameters),
        lrv=dict(lrv if lrv is not None else typical.lrv),
    ).step_key
