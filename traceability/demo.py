"""A realistic synthetic site, built through the same importers and services as every command.

Two collection centres export donors, donations and screening results; QA imports them, builds two pools of more
than 1,000 distinct donors (and is refused when trying to pool an applicant's unit or a unit still on hold),
tests and releases them, records the viral inactivation steps, makes an intermediate and two final lots and ships
them. Then a late reactive result arrives for a donor whose earlier donations went into a pool: the unit is
rejected, the donor deferred, the units still in the freezer interdicted, and the trace shows where the rest went.
Deterministic for a seed (apart from the timestamps of the run itself).
"""

from __future__ import annotations

import csv
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from .errors import Conflict, IneligibleUnits, InvalidInput
from .identifiers import din_check_character
from .identity import Identity, Role
from .importers.load import ImportKind, import_file
from .models import (
    AuditEvent,
    EstablishmentKind,
    LotKind,
    LotUnit,
    Marker,
    ResultValue,
    SignatureMeaning,
    StepMethod,
    utcnow,
)
from .queries import casework
from .rules import DEFAULT_POLICY, Policy
from .services import consignees, donors, inactivation, lookback, lots, pools, signatures, units, users

Work = Callable[[], AbstractContextManager[Session]]
Say = Callable[[str], None]

CENTRES = [("C-NORTH", "Northgate Plasma Centre", "W1234"), ("C-SOUTH", "Southbank Plasma Centre", "W5678")]
ZONES = {"C-NORTH": "Europe/Vienna", "C-SOUTH": "America/New_York"}
"""Each centre counts its own local days (deferrals, look-back and qualification months)."""
LAB, PLANT = "LAB-CENTRAL", "FRAC-01"
CONSIGNEES = [
    ("H-LEEDS-SM", "St Mary's Hospital", "Greenhill Road, Leeds LS12 3QE", "GB"),
    ("H-GLAS-RI", "Royal Infirmary", "84 Castle Street, Glasgow G4 0SF", "GB"),
    ("H-CARD-UH", "University Hospital of Wales", "Heath Park Way, Cardiff CF14 4XW", "GB"),
]


@dataclass
class DemoResult:
    pools: list[str] = field(default_factory=list)
    final_lots: list[str] = field(default_factory=list)
    recall_donor: str = ""
    files: dict[str, int] = field(default_factory=dict)


@dataclass
class _Unit:
    number: str
    donor: str
    centre: str
    collected_at: datetime
    volume_ml: int


def ensure_empty(session: Session, where: str) -> None:
    """The demo fills only an empty database."""
    events = session.execute(select(func.count(AuditEvent.id))).scalar() or 0
    if events:
        raise Conflict(
            f"Database {where} already holds data ({events:,} audit events); the demo fills only an empty database. "
            "Run it on a new file, e.g. plasmatrace --db sqlite:///demo.db demo"
        )


def _site(
    rng: random.Random, donor_count: int, now: datetime
) -> tuple[list[tuple[str, str, str]], list[_Unit], set[str], set[str]]:
    """Donors (code, centre, registered on), their units, the applicants (one donation so far) and the lapsed donors
    (qualified long ago, back after almost two years with one donation: an applicant again)."""
    donor_rows: list[tuple[str, str, str]] = []
    made: list[_Unit] = []
    sequence = {fin: rng.randrange(100_000, 200_000) for _, _, fin in CENTRES}
    applicants: set[str] = set()
    lapsed: set[str] = set()
    for i in range(donor_count):
        code = f"D-{i + 1:06d}"
        centre, _, fin = CENTRES[i % 2]
        start = now - timedelta(days=rng.randint(150, 330), hours=rng.randint(0, 9), minutes=rng.randint(0, 59))
        visits = 1 if rng.random() < 0.004 else rng.choice([2, 2, 3, 3, 4, 5])
        gaps = [rng.choice([3, 4, 7, 7, 14, 21, 35]) for _ in range(visits)]
        if i % 400 == 17:  # two visits some 800 days ago, then a first new one after 700 days away
            start, visits, gaps = now - timedelta(days=800, hours=rng.randint(0, 9)), 3, [14, 700, 7]
            lapsed.add(code)
        elif visits == 1:
            applicants.add(code)
        donor_rows.append((code, centre, (start - timedelta(days=rng.randint(0, 3))).date().isoformat()))
        when = start
        for gap in gaps[:visits]:
            if when > now - timedelta(days=3):
                break
            sequence[fin] += 1
            number = f"{fin}{when:%y}{sequence[fin]:06d}"
            made.append(_Unit(number, code, centre, when, rng.randint(625, 800)))
            when += timedelta(days=gap, minutes=rng.randint(-90, 90))
    return donor_rows, made, applicants, lapsed


def _write(path: Path, header: list[str], rows: Iterator[list[str]] | list[list[str]]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def _printed_din(number: str, rng: random.Random) -> str:
    """Centres export DINs the way scanners and people type them: canonical, with '=' and flags, or spaced."""
    style = rng.random()
    if style < 0.6:
        return number
    if style < 0.9:
        return f"={number}00"
    return f"{number[:5]} {number[5:7]} {number[7:]} {din_check_character(number)}"


@dataclass(frozen=True)
class DemoUser:
    login: str
    full_name: str
    role: Role

    @property
    def password(self) -> str:
        return f"{self.login}-signs"  # a demo's signing password, printed by the demo itself

    def identity(self) -> Identity:
        return Identity(self.login, self.full_name, frozenset({self.role}), True, False)


RECORDER = DemoUser("rita.recorder", "Rita Recorder", Role.RECORDER)
APPROVER = DemoUser("anna.approver", "Anna Approver (QA)", Role.APPROVER)
INVESTIGATOR = DemoUser("ivo.investigator", "Ivo Investigator", Role.INVESTIGATOR)
AUDITOR = DemoUser("aude.auditor", "Aude Auditor", Role.AUDITOR)
DEMO_USERS = (RECORDER, APPROVER, INVESTIGATOR, AUDITOR)


def _add_users(session: Session, *, actor: str, say: Say) -> bool:
    """The demo's people (SQLite only: on PostgreSQL users are database logins, which an admin adds for real).
    The person running the demo becomes the site's administrator, holding every role for the tour."""
    if session.get_bind().dialect.name != "sqlite":
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


def _sign(session: Session, signer: DemoUser, kind: str, key: str) -> None:
    signatures.sign(
        session,
        signer=signer.identity(),
        password=signer.password,
        meaning=SignatureMeaning.APPROVED,
        entity_type=kind,
        entity_key=key,
    )


def _scene_case_work(work: Work, outcome: units.ResultOutcome, *, actor: str, say: Say) -> None:
    """The late reactive result opened its look-back case by itself: what is due, and one notification recorded
    (the first consignee's quarantine request)."""
    if outcome.case is None:
        return
    number = outcome.case.case_number
    say(
        f"Look-back case {number} opened by itself for donor {outcome.case.donor_code}: {outcome.case.tasks} task(s), "
        f"first due {outcome.case.first_due}; lots held until assessed: {', '.join(outcome.case.held) or 'none'}."
    )
    with work() as session:
        due = [t for t in casework.due_tasks(session) if t.case_number == number]
        for line in due[:4]:
            what = " ".join(x for x in (line.kind, line.lot_number, line.consignee) if x)
            say(f"  due {line.due_on}: task {line.task} {what}")
        request = next((t for t in due if t.kind == "quarantine-request"), None)
        if request is not None:
            lookback.finish_task(
                session,
                case_number=number,
                seq=request.task,
                actor=actor,
                note=f"quarantine of lot {request.lot_number} requested from {request.consignee} by phone and letter",
            )
            say(f"Notified {request.consignee} to quarantine lot {request.lot_number} (task {request.task} done).")


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
    """Build the demo site through the importers and services, one unit of work per step a user would take."""
    rng = random.Random(seed)
    now = utcnow().replace(microsecond=0)
    result = DemoResult()
    donor_rows, made, applicants, lapsed = _site(rng, donors_count, now)
    reactive = {
        u.number: rng.choice([Marker.HBSAG, Marker.ANTI_HCV, Marker.HIV_RNA])
        for u in rng.sample(made, 4)
        if u.donor not in applicants
    }

    with work() as session:
        people = _add_users(session, actor=actor, say=say)
    admin, actor = actor, RECORDER.login if people else actor
    approver = APPROVER.login if people else admin

    with work() as session:
        for code, name, _ in CENTRES:
            donors.add_establishment(
                session, code=code, name=name, kind=EstablishmentKind.COLLECTION, timezone=ZONES[code], actor=actor
            )
        donors.add_establishment(
            session, code=LAB, name="Central Testing Laboratory", kind=EstablishmentKind.TESTING, actor=actor
        )
        donors.add_establishment(
            session, code=PLANT, name="Fractionation Plant 1", kind=EstablishmentKind.FRACTIONATION, actor=actor
        )
    say(
        f"Registered {len(CENTRES)} collection centres ("
        + ", ".join(f"{code} in {zone}" for code, zone in ZONES.items())
        + "), a testing laboratory and a fractionation plant."
    )

    with tempfile.TemporaryDirectory(prefix="plasmatrace-demo-") as tmp:
        folder = Path(tmp)
        result.files["donors"] = _write(
            folder / "donors.csv", ["donor_code", "establishment", "registered_on"], [list(r) for r in donor_rows]
        )
        result.files["donations"] = _write(
            folder / "donations.csv",
            ["unit_number", "donor_code", "collected_at", "volume_ml", "plasma_kind", "frozen_at"],
            (
                [
                    _printed_din(u.number, rng),
                    u.donor,
                    u.collected_at.isoformat(),
                    str(u.volume_ml),
                    "source",
                    (u.collected_at + timedelta(minutes=rng.randint(40, 300))).isoformat(),
                ]
                for u in made
            ),
        )
        panel = list(policy.required_panel)
        result.files["results"] = _write(
            folder / "results.csv",
            ["unit_number", "marker", "result", "tested_at", "method", "lab"],
            (
                [
                    u.number,
                    m.value,
                    "R" if reactive.get(u.number) == m else rng.choice(["NR", "nonreactive", "NR"]),
                    (u.collected_at + timedelta(days=1, hours=rng.randint(0, 20))).isoformat(),
                    "nat" if m.value.endswith(("rna", "dna")) else "serology",
                    LAB,
                ]
                for u in made
                if u.collected_at < now - timedelta(days=2)
                for m in panel
            ),
        )
        for kind in (ImportKind.DONORS, ImportKind.DONATIONS, ImportKind.RESULTS):
            with work() as session:
                report = import_file(
                    session, kind, folder / f"{kind.value}.csv", actor=actor, policy=policy, progress=progress
                )
            say(f"Imported {report.loaded:,} {kind.value} from {kind.value}.csv (SHA-256 {report.sha256[:12]}...).")
    say(
        f"Screening: {len(reactive)} reactive results; those units were rejected and their donors deferred. "
        f"{len(applicants)} applicant donor(s) have a single donation and wait to qualify."
    )

    # Pools: each takes the held, fully tested units of half the donors. QA first tries a few it may not pool.
    reactive_donors = {u.donor for u in made if u.number in reactive}
    # The plant's day: pools close 14 hours ago, are tested, treated and made into lots; lots ship today.
    closing = now - timedelta(hours=14)
    eligible_by_half: list[list[str]] = [[], []]
    held: list[str] = []
    for u in made:
        if u.donor in applicants or u.donor in reactive_donors or u.donor in lapsed:
            continue
        if u.collected_at + timedelta(days=policy.hold_days) > closing:
            held.append(u.number)
            continue
        eligible_by_half[int(u.donor[2:]) % 2].append(u.number)
    products = ["ivig", "ivig"]
    volumes: dict[str, int] = {}
    for index, members in enumerate(eligible_by_half):
        number = f"P-{now:%y}-{index + 1:04d}"
        with work() as session:
            pools.create_pool(session, pool_number=number, product=products[index], actor=actor, policy=policy)
        if index == 0:
            back = [max((u for u in made if u.donor == d), key=lambda u: u.collected_at).number for d in sorted(lapsed)]
            refused = held[:1] + [u.number for u in made if u.donor in applicants][:1] + back[:1]
            try:
                with work() as session:
                    pools.add_units(
                        session, pool_number=number, unit_numbers=members[:5] + refused, actor=actor, policy=policy
                    )
            except IneligibleUnits as error:
                say(
                    "QA tried to pool a unit still on hold, an applicant's unit and the first unit of a donor back "
                    "after 700 days (an applicant again: qualification belongs to each unit and lapses after 6 "
                    "calendar months); plasmatrace refused:\n" + str(error)
                )
        with work() as session:
            pools.add_units(session, pool_number=number, unit_numbers=members, actor=actor, policy=policy)
        with work() as session:
            _, composition = pools.close_pool(session, pool_number=number, actor=actor, policy=policy, now=closing)
        volumes[number] = composition.volume_ml
        with work() as session:
            for marker in policy.product(products[index]).pool_tests:
                pools.test_pool(
                    session,
                    pool_number=number,
                    marker=marker,
                    result=ResultValue.NONREACTIVE,
                    tested_at=closing + timedelta(minutes=30),
                    actor=actor,
                )
            inactivation.add_step(
                session,
                pool_number=number,
                method=StepMethod.SOLVENT_DETERGENT,
                started_at=closing + timedelta(hours=1),
                ended_at=closing + timedelta(hours=7),
                parameters={"tnbp_pct": "0.3", "polysorbate80_pct": "1.0", "temperature_c": "24"},
                lrv={"enveloped": round(rng.uniform(5.5, 6.5), 1)},
                actor=actor,
            )
            pools.release_pool(session, pool_number=number, actor=approver, policy=policy)
            if people:
                _sign(session, APPROVER, "pool", number)
        result.pools.append(number)
        say(
            f"Pool {number}: {composition.donor_count:,} distinct donors, {composition.donation_count:,} units, "
            f"{composition.volume_ml / 1000:,.1f} L; closed, tested, released; solvent-detergent step recorded."
        )

    with work() as session:
        for code, name, address, country in CONSIGNEES:
            consignees.add_consignee(session, code=code, name=name, address=address, country=country, actor=actor)
    say(f"Registered {len(CONSIGNEES)} consignees with their addresses: " + ", ".join(c[0] for c in CONSIGNEES) + ".")
    paste = f"FII-{now:%y}-001"
    with work() as session:
        lots.create_lot(
            session,
            lot_number=paste,
            product="fraction-ii-paste",
            kind=LotKind.INTERMEDIATE,
            inputs=[lots.InputSpec("pool", p, volumes[p] * 9 // 10, "mL") for p in result.pools],
            quantity=120,
            unit=LotUnit.KG,
            actor=actor,
        )
        inactivation.add_step(
            session,
            lot_number=paste,
            method=StepMethod.LOW_PH,
            started_at=closing + timedelta(hours=8),
            ended_at=closing + timedelta(hours=9),
            parameters={"ph": "4.0", "temperature_c": "37", "hours": "21"},
            lrv={"enveloped": 4.6},
            actor=actor,
        )
        lots.release_lot(session, lot_number=paste, actor=approver, policy=policy)
        if people:
            _sign(session, APPROVER, "lot", paste)
    for k in (1, 2):
        final = f"IVG-{now:%y}-{k:03d}"
        with work() as session:
            lots.create_lot(
                session,
                lot_number=final,
                product="ivig",
                kind=LotKind.FINAL,
                inputs=[lots.InputSpec("lot", paste, 40)],
                quantity=2000,
                unit=LotUnit.VIALS,
                expires_on=(now + timedelta(days=730)).date(),
                actor=actor,
            )
            inactivation.add_step(
                session,
                lot_number=final,
                method=StepMethod.NANOFILTRATION,
                started_at=closing + timedelta(hours=10),
                ended_at=closing + timedelta(hours=12),
                parameters={"filter": "Planova 20N", "pore_nm": "20"},
                lrv={"enveloped": 5.2, "non-enveloped": 4.4},
                actor=actor,
            )
            lots.release_lot(session, lot_number=final, actor=approver, policy=policy)
            if people:
                _sign(session, APPROVER, "lot", final)
            for code, *_ in rng.sample(CONSIGNEES, 2):
                lots.ship_lot(
                    session,
                    lot_number=final,
                    consignee=code,
                    quantity=rng.choice([24, 40, 60]),
                    shipped_on=now.date(),
                    actor=actor,
                )
        result.final_lots.append(final)
    say(
        f"Intermediate {paste} (low pH) from both pools; final lots {', '.join(result.final_lots)} "
        "(nanofiltration) released and shipped."
    )

    # Post-donation information: a donor whose earlier units went into a pool returns, and the new donation is
    # HCV RNA reactive. Prefer a donor who also has units still on hold, so the interdiction shows.
    pooled = set(eligible_by_half[0])
    donors_pooled = {u.donor for u in made if u.number in pooled}
    donors_held = {u.donor for u in made if u.number in held}
    donor_code = sorted(donors_pooled & donors_held or donors_pooled)[0]
    centre, fin = next((c, f) for c, _, f in CENTRES if c == next(u.centre for u in made if u.donor == donor_code))
    new_unit = f"{fin}{now:%y}{999_001 + seed % 900:06d}"
    with work() as session:
        units.add_donation(
            session,
            unit_number=new_unit,
            donor_code=donor_code,
            collected_at=now - timedelta(hours=2),
            volume_ml=700,
            establishment=centre,
            actor=actor,
        )
        outcome = units.add_result(
            session,
            unit_number=new_unit,
            marker=Marker.HCV_RNA,
            result=ResultValue.REACTIVE,
            tested_at=now,
            actor=actor,
            policy=policy,
            lab=LAB,
        )
    late = _Unit(new_unit, donor_code, centre, now, 700)
    result.recall_donor = late.donor
    say(
        f"Donor {late.donor} returned; the new unit {late.number} tested HCV RNA reactive. "
        f"Rejected it, deferred the donor, interdicted {len(outcome.interdicted)} unit(s) still in the freezer; "
        f"{len(outcome.pooled_in_window)} earlier unit(s) are already pooled."
    )
    _scene_case_work(work, outcome, actor=INVESTIGATOR.login if people else actor, say=say)

    # The donor's earlier units went into a released pool: QA retests the pool's retained sample. The retest is the
    # pool's current version now, and it is reactive: the pool is quarantined although it was released, and every
    # lot made from it, released and shipped or not, is held; the consignees are named for the recall.
    retested = outcome.pooled_in_window[0][1] if outcome.pooled_in_window else result.pools[0]
    with work() as session:
        retest = pools.test_pool(
            session,
            pool_number=retested,
            marker=Marker.HCV_RNA,
            result=ResultValue.REACTIVE,
            tested_at=now,
            actor=actor,
            policy=policy,
        )
    held = retest.downstream
    say(
        f"Pool {retested}, released, retested HCV RNA reactive (version {retest.test.version}): quarantined; "
        f"lots held: {', '.join(held.held)}; consignees to notify: {', '.join(held.consignees)}."
    )
    return result
