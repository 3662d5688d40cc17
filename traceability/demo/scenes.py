"""The demo as scenes, each one thing a site does, each through the same importers and services as every command.

:func:`build` plays them in order: :func:`site`, :func:`imports`, :func:`pools`, :func:`lots_and_shipments`,
then :func:`late_reactive_result`, whose :class:`LateResult` the scenes after it take (the look-back case it
opened and a mock recall drill, in :mod:`traceability.demo.casework`, then :func:`pool_retest`). Scenes share a
:class:`Tour` (how to open a unit of work, how to speak, the clock, the policy, who records and who releases) and
open one unit of work per step a user would take.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session, col

from ..db import dialect
from ..errors import Conflict, IneligibleUnits, InvalidInput, NotPermitted
from ..identity import Role
from ..importers.load import ImportKind, import_file
from ..models import (
    AuditEvent,
    EstablishmentKind,
    LotKind,
    LotUnit,
    Marker,
    ResultValue,
    StepMethod,
    utcnow,
)
from ..rules import DEFAULT_POLICY, Policy
from ..services import consignees, donors, lots, units, users
from ..services import pools as pool_service
from ..services.units import ResultOutcome
from ..synthetic.codes import din
from ..synthetic.records import pass_pool_tests, typical_step
from . import casework
from .cast import APPROVER, CENTRES, CONSIGNEES, DEMO_USERS, LAB, PLANT, RECORDER, ZONES
from .population import Population, populate, write_exports

Work = Callable[[], AbstractContextManager[Session]]
Say = Callable[[str], None]


@dataclass
class DemoResult:
    """What the command shows after the tour: the pools, the final lots and the donor to trace forward."""

    pools: list[str] = field(default_factory=list)
    final_lots: list[str] = field(default_factory=list)
    recall_donor: str = ""
    files: dict[str, int] = field(default_factory=dict)


@dataclass
class Tour:
    """What every scene needs. ``people`` says whether the demo's users exist (SQLite): then RECORDER records,
    APPROVER releases and signs; otherwise the person running the demo does everything and nothing is signed."""

    work: Work
    say: Say
    rng: random.Random
    now: datetime
    policy: Policy
    admin: str
    progress: Callable[[int], None] | None = None
    people: bool = False
    result: DemoResult = field(default_factory=DemoResult)

    @property
    def actor(self) -> str:
        return RECORDER.login if self.people else self.admin

    @property
    def approver(self) -> str:
        return APPROVER.login if self.people else self.admin

    @property
    def closing(self) -> datetime:
        """The plant's day: pools close 14 hours ago, are tested, treated and made into lots; lots ship today."""
        return self.now - timedelta(hours=14)

    def sign(self, session: Session, kind: str, key: str) -> None:
        if self.people:
            APPROVER.sign(session, kind, key)


@dataclass(frozen=True)
class LateResult:
    """The returning donor's reactive donation and what recording it did (rejected, deferred, interdicted)."""

    donor_code: str
    unit_number: str
    outcome: ResultOutcome


def ensure_empty(session: Session, where: str) -> None:
    """The demo fills only an empty database."""
    events = session.execute(select(func.count(col(AuditEvent.id)))).scalar() or 0
    if events:
        raise Conflict(
            f"Database {where} already holds data ({events:,} audit events); the demo fills only an empty database. "
            "Run it on a new file, e.g. plasmatrace --db sqlite:///demo.db demo"
        )


def _add_users(session: Session, *, actor: str, say: Say) -> bool:
    """The demo's people (SQLite only: on PostgreSQL users are database logins, which an admin adds for real).
    The person running the demo becomes the site's administrator, holding every role for the tour."""
    if dialect.logins_are_database_roles(session):
        say("On PostgreSQL the demo adds no users and signs nothing: add logins with `plasmatrace user add`.")
        return False
    try:
        users.check_login(actor)
        runner = [(actor, f"Site administrator ({actor})", list(Role), f"{actor}-signs")]
    except InvalidInput:
        runner = []
    people = [(u.login, u.full_name, [u.role], u.password) for u in DEMO_USERS]
    for login, full_name, roles, password in runner + people:
        users.add_user(session, login=login, full_name=full_name, roles=roles, password=password, actor=actor)
    say(
        "Users: "
        + ", ".join(f"{u.login} ({u.role.short}, signing password {u.password})" for u in DEMO_USERS)
        + (f"; {actor} administers the site with every role." if runner else ".")
    )
    return True


def _one_login_cannot_release(session: Session, policy: Policy) -> None:
    """On PostgreSQL the demo runs as the one login it connects with and adds no people; with separation of duties
    that login could not release the pools and lots it recorded. Say so before writing anything."""
    if dialect.logins_are_database_roles(session) and policy.release.separate_duties:
        raise NotPermitted(
            "The demo on PostgreSQL runs as one login, and separation of duties (release.separate_duties) lets nobody "
            "release what they recorded, so it would stop at the first release. Run the demo on SQLite "
            "(plasmatrace --db sqlite:///demo.db demo), where it adds its own people."
        )


def site(tour: Tour) -> None:
    """Shows the site before any donor: its people and their roles (who records is not who releases), the
    collection centres in their own time zones, the laboratory, the plant and the consignees lots ship to."""
    with tour.work() as session:
        tour.people = _add_users(session, actor=tour.admin, say=tour.say)
    with tour.work() as session:
        for code, name, _ in CENTRES:
            donors.add_establishment(
                session, code=code, name=name, kind=EstablishmentKind.COLLECTION, timezone=ZONES[code], actor=tour.actor
            )
        donors.add_establishment(
            session, code=LAB, name="Central Testing Laboratory", kind=EstablishmentKind.TESTING, actor=tour.actor
        )
        donors.add_establishment(
            session, code=PLANT, name="Fractionation Plant 1", kind=EstablishmentKind.FRACTIONATION, actor=tour.actor
        )
    tour.say(
        f"Registered {len(CENTRES)} collection centres ("
        + ", ".join(f"{code} in {zone}" for code, zone in ZONES.items())
        + "), a testing laboratory and a fractionation plant."
    )
    with tour.work() as session:
        for code, name, address, country in CONSIGNEES:
            consignees.add_consignee(session, code=code, name=name, address=address, country=country, actor=tour.actor)
    tour.say(
        f"Registered {len(CONSIGNEES)} consignees with their addresses: " + ", ".join(c[0] for c in CONSIGNEES) + "."
    )


def imports(tour: Tour, population: Population) -> None:
    """Shows the centres' and the laboratory's files imported as they come (DINs typed three ways, results spelled
    as labs spell them): reactive units rejected and their donors deferred on import, applicants waiting."""
    with tempfile.TemporaryDirectory(prefix="plasmatrace-demo-") as tmp:
        folder = Path(tmp)
        tour.result.files = write_exports(folder, population, tour.rng, tour.now, tour.policy)
        for kind in (ImportKind.DONORS, ImportKind.DONATIONS, ImportKind.RESULTS):
            with tour.work() as session:
                report = import_file(
                    session,
                    kind,
                    folder / f"{kind.value}.csv",
                    actor=tour.actor,
                    policy=tour.policy,
                    progress=tour.progress,
                )
            tour.say(
                f"Imported {report.loaded:,} {kind.value} from {kind.value}.csv (SHA-256 {report.sha256[:12]}...)."
            )
    tour.say(
        f"Screening: {len(population.reactive)} reactive results; those units were rejected and their donors "
        f"deferred. {len(population.applicants)} applicant donor(s) have a single donation and wait to qualify."
    )


def _refused_attempt(tour: Tour, population: Population, pool_number: str, members: list[str], held: list[str]) -> None:
    """QA tries to pool a unit on hold, an applicant's unit and a lapsed donor's first unit back: all refused."""
    back = [
        max((v for v in population.visits if v.donor == d), key=lambda v: v.collected_at).number
        for d in sorted(population.lapsed)
    ]
    applicants = [v.number for v in population.visits if v.donor in population.applicants]
    refused = held[:1] + applicants[:1] + back[:1]
    try:
        with tour.work() as session:
            pool_service.add_units(
                session,
                pool_number=pool_number,
                unit_numbers=members[:5] + refused,
                actor=tour.actor,
                policy=tour.policy,
            )
    except IneligibleUnits as error:
        tour.say(
            "QA tried to pool a unit still on hold, an applicant's unit and the first unit of a donor back "
            "after 700 days (an applicant again: qualification belongs to each unit and lapses after 6 "
            "calendar months); plasmatrace refused:\n" + str(error)
        )


def _test_treat_release(tour: Tour, pool_number: str, product: str) -> None:
    """Half an hour after closing the pool's tests pass; a solvent-detergent step; QA releases it (signed)."""
    with tour.work() as session:
        pass_pool_tests(
            session,
            pool_number=pool_number,
            product=product,
            tested_at=tour.closing + timedelta(minutes=30),
            actor=tour.actor,
            policy=tour.policy,
        )
        typical_step(
            session,
            StepMethod.SOLVENT_DETERGENT,
            pool_number=pool_number,
            started_at=tour.closing + timedelta(hours=1),
            lrv={"enveloped": round(tour.rng.uniform(5.5, 6.5), 1)},
            actor=tour.actor,
        )
        pool_service.release_pool(session, pool_number=pool_number, actor=tour.approver, policy=tour.policy)
        tour.sign(session, "pool", pool_number)


def pools(tour: Tour, population: Population) -> dict[str, int]:
    """Shows two pools of more than 1,000 distinct donors each (half the donors each), after QA is refused the
    units it may not pool: filled, closed, tested, treated by solvent-detergent and released (signed).
    Returns each pool's volume in mL."""
    halves, held = population.poolable(tour.closing, tour.policy.hold_days)
    products = ["ivig", "ivig"]
    volumes: dict[str, int] = {}
    for index, members in enumerate(halves):
        number = f"P-{tour.now:%y}-{index + 1:04d}"
        with tour.work() as session:
            pool_service.create_pool(
                session, pool_number=number, product=products[index], actor=tour.actor, policy=tour.policy
            )
        if index == 0:
            _refused_attempt(tour, population, number, members, held)
        with tour.work() as session:
            pool_service.add_units(
                session, pool_number=number, unit_numbers=members, actor=tour.actor, policy=tour.policy
            )
        with tour.work() as session:
            _, composition = pool_service.close_pool(
                session, pool_number=number, actor=tour.actor, policy=tour.policy, now=tour.closing
            )
        volumes[number] = composition.volume_ml
        _test_treat_release(tour, number, products[index])
        tour.result.pools.append(number)
        tour.say(
            f"Pool {number}: {composition.donor_count:,} distinct donors, {composition.donation_count:,} units, "
            f"{composition.volume_ml / 1000:,.1f} L; closed, tested, released; solvent-detergent step recorded."
        )
    return volumes


def _intermediate(tour: Tour, volumes: dict[str, int]) -> str:
    """Fraction II paste from 90% of each pool, through a low-pH step, released (signed)."""
    paste = f"FII-{tour.now:%y}-001"
    with tour.work() as session:
        lots.create_lot(
            session,
            lot_number=paste,
            product="fraction-ii-paste",
            kind=LotKind.INTERMEDIATE,
            inputs=[lots.InputSpec("pool", p, volume * 9 // 10, "mL") for p, volume in volumes.items()],
            quantity=120,
            unit=LotUnit.KG,
            actor=tour.actor,
        )
        typical_step(
            session, StepMethod.LOW_PH, lot_number=paste, started_at=tour.closing + timedelta(hours=8), actor=tour.actor
        )
        lots.release_lot(session, lot_number=paste, actor=tour.approver, policy=tour.policy)
        tour.sign(session, "lot", paste)
    return paste


def lots_and_shipments(tour: Tour, volumes: dict[str, int]) -> None:
    """Shows lots made from lots: an intermediate from both pools, then two final lots of vials from it, each
    nanofiltered, released (signed) and shipped to two of the consignees."""
    paste = _intermediate(tour, volumes)
    for k in (1, 2):
        final = f"IVG-{tour.now:%y}-{k:03d}"
        with tour.work() as session:
            lots.create_lot(
                session,
                lot_number=final,
                product="ivig",
                kind=LotKind.FINAL,
                inputs=[lots.InputSpec("lot", paste, 40)],
                quantity=2000,
                unit=LotUnit.VIALS,
                expires_on=(tour.now + timedelta(days=730)).date(),
                actor=tour.actor,
            )
            typical_step(
                session,
                StepMethod.NANOFILTRATION,
                lot_number=final,
                started_at=tour.closing + timedelta(hours=10),
                actor=tour.actor,
            )
            lots.release_lot(session, lot_number=final, actor=tour.approver, policy=tour.policy)
            tour.sign(session, "lot", final)
            for code, *_ in tour.rng.sample(CONSIGNEES, 2):
                lots.ship_lot(
                    session,
                    lot_number=final,
                    consignee=code,
                    quantity=tour.rng.choice([24, 40, 60]),
                    shipped_on=tour.now.date(),
                    actor=tour.actor,
                )
        tour.result.final_lots.append(final)
    tour.say(
        f"Intermediate {paste} (low pH) from both pools; final lots {', '.join(tour.result.final_lots)} "
        "(nanofiltration) released and shipped."
    )


def late_reactive_result(tour: Tour, population: Population, *, seed: int) -> LateResult:
    """Shows post-donation information: a donor whose earlier units went into the first pool returns, and the new
    donation is HCV RNA reactive: it is rejected, the donor deferred, the units still in the freezer interdicted,
    and the units already pooled named. Prefers a donor who also has units on hold, so the interdiction shows."""
    halves, held = population.poolable(tour.closing, tour.policy.hold_days)
    pooled, on_hold = set(halves[0]), set(held)
    donors_pooled = {v.donor for v in population.visits if v.number in pooled}
    donors_held = {v.donor for v in population.visits if v.number in on_hold}
    donor_code = sorted(donors_pooled & donors_held or donors_pooled)[0]
    centre = next(v.centre for v in population.visits if v.donor == donor_code)
    fin = next(f for c, _, f in CENTRES if c == centre)
    unit_number = din(fin, tour.now.year, 999_001 + seed % 900)
    with tour.work() as session:
        units.add_donation(
            session,
            unit_number=unit_number,
            donor_code=donor_code,
            collected_at=tour.now - timedelta(hours=2),
            volume_ml=700,
            establishment=centre,
            actor=tour.actor,
        )
        outcome = units.add_result(
            session,
            unit_number=unit_number,
            marker=Marker.HCV_RNA,
            result=ResultValue.REACTIVE,
            tested_at=tour.now,
            actor=tour.actor,
            policy=tour.policy,
            lab=LAB,
        )
    tour.result.recall_donor = donor_code
    tour.say(
        f"Donor {donor_code} returned; the new unit {unit_number} tested HCV RNA reactive. "
        f"Rejected it, deferred the donor, interdicted {len(outcome.interdicted)} unit(s) still in the freezer; "
        f"{len(outcome.pooled_in_window)} earlier unit(s) are already pooled."
    )
    return LateResult(donor_code, unit_number, outcome)


def pool_retest(tour: Tour, late: LateResult) -> None:
    """Shows a finding after release: QA retests the retained sample of the pool that holds the donor's earlier
    units, reactive. The retest is the pool's current version: the pool is quarantined although it was released,
    every lot made from it, released and shipped or not, is held, and the consignees to notify are named."""
    pooled_in = late.outcome.pooled_in_window
    retested = pooled_in[0][1] if pooled_in else tour.result.pools[0]
    with tour.work() as session:
        retest = pool_service.test_pool(
            session,
            pool_number=retested,
            marker=Marker.HCV_RNA,
            result=ResultValue.REACTIVE,
            tested_at=tour.now,
            actor=tour.actor,
            policy=tour.policy,
        )
    held = retest.downstream
    tour.say(
        f"Pool {retested}, released, retested HCV RNA reactive (version {retest.test.version}): quarantined; "
        f"lots held: {', '.join(held.held)}; consignees to notify: {', '.join(held.consignees)}."
    )


def build(
    work: Work,
    *,
    donors_count: int = 2500,
    seed: int = 7,
    actor: str = "demo",
    say: Say = print,
    progress: Callable[[int], None] | None = None,
    policy: Policy = DEFAULT_POLICY,
) -> DemoResult:
    """Build the demo site through the importers and services, scene by scene; deterministic for a seed (apart
    from the timestamps of the run itself)."""
    rng = random.Random(seed)
    now = utcnow().replace(microsecond=0)
    tour = Tour(work=work, say=say, rng=rng, now=now, policy=policy, admin=actor, progress=progress)
    with work() as session:
        _one_login_cannot_release(session, policy)
    population = populate(rng, donors_count, now)
    site(tour)
    imports(tour, population)
    volumes = pools(tour, population)
    lots_and_shipments(tour, volumes)
    late = late_reactive_result(tour, population, seed=seed)
    casework.case_work(tour, late)
    casework.recall_drill(tour, late)
    pool_retest(tour, late)
    return tour.result
