"""The set-based eligibility screen of pool add and close: it may send an eligible unit on to the exact judgement,
but it must never let through a unit the rules refuse, and pool add/close must answer as the rules do unit by unit.

Randomised but seeded data (set-based, not through the services) with the awkward cases: repeats and corrections
of results, missing markers, lifted and back-dated deferrals, donations exactly at and a microsecond past the
hold and the qualification window, units in other pools, discarded and rejected units, zero volumes.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event, insert, select, update
from sqlmodel import Session

from tests.factories import ACTOR, NOW, bulk_units, make_donor, make_establishment, make_unit
from traceability.calendars import local_day
from traceability.errors import IneligibleUnits
from traceability.models import (
    Deferral,
    Donation,
    Donor,
    Establishment,
    Marker,
    Pool,
    PoolMember,
    ResultValue,
    TestResult,
    UnitStatus,
)
from traceability.queries.eligibility import unit_facts
from traceability.queries.screen import screen_units
from traceability.rules import DEFAULT_POLICY, Policy, eligibility_problems
from traceability.services import pools, units

EDGE = [
    timedelta(0),
    timedelta(microseconds=1),
    -timedelta(microseconds=1),
    timedelta(milliseconds=1),
    -timedelta(milliseconds=1),
    timedelta(seconds=1),
    -timedelta(seconds=1),
]
POLICIES = {
    "default": DEFAULT_POLICY,
    "one-month qualification": Policy(qualification_months=1),
    "three-month qualification": Policy(qualification_months=3),
    "longer hold, five markers": Policy(hold_days=90, required_panel=[m for m in DEFAULT_POLICY.required_panel][:5]),
}


def _results(rng: random.Random) -> list[tuple[str, str]]:
    """(marker, result) by version order for one unit: mostly a clean panel, else anything, marker by marker."""
    rows: list[tuple[str, str]] = []
    if rng.random() < 0.7:
        return [(marker, "nonreactive") for marker in DEFAULT_POLICY.panel]
    for marker in DEFAULT_POLICY.panel:
        case = rng.random()
        if case < 0.8:
            rows.append((marker, "nonreactive"))
        elif case < 0.83:
            continue  # no result yet
        elif case < 0.86:
            rows.append((marker, "reactive"))
        elif case < 0.89:
            rows.append((marker, "invalid"))
        elif case < 0.93:
            rows += [(marker, "invalid"), (marker, "nonreactive")]  # retest
        elif case < 0.96:
            rows += [(marker, "nonreactive"), (marker, "reactive")]  # correction
        else:
            rows += [(marker, "reactive"), (marker, "nonreactive")]
    if rng.random() < 0.1:
        rows.append((Marker.B19_DNA.value, rng.choice(["reactive", "nonreactive"])))  # not on the panel
    return rows


def build_awkward_site(session: Session, seed: int, donors: int = 90) -> list[str]:
    """Donors with 1-5 donations at awkward distances, results, deferrals, statuses and memberships."""
    rng = random.Random(seed)
    site = make_establishment(session)
    site_id = session.execute(select(Establishment.id).where(Establishment.code == site)).scalar_one()
    # Centres far from UTC either way: their local days lie up to 26 hours apart for the same instants.
    zones = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "America/New_York"]
    site_ids = [site_id] + [
        session.execute(
            select(Establishment.id).where(Establishment.code == make_establishment(session, timezone=tz))
        ).scalar_one()
        for tz in zones[1:]
    ]
    codes = [f"SCR{seed:03d}{i:05d}" for i in range(donors)]
    session.execute(insert(Donor), [{"donor_code": c, "establishment_id": site_id, "created_by": ACTOR} for c in codes])
    donor_ids = dict(session.execute(select(Donor.donor_code, Donor.id).where(Donor.donor_code.in_(codes))).all())
    hold_edge = NOW - timedelta(days=DEFAULT_POLICY.hold_days)
    # Six calendar months span 181 to 184 days; each span at and around its edges, and ordinary gaps.
    gaps = [timedelta(days=d) + e for d in (179, 180, 181, 182, 183, 184, 185) for e in EDGE] + [
        timedelta(days=d) for d in (3, 7, 28, 29, 30, 31, 59, 60, 61, 89, 90, 92, 100, 200)
    ]
    rows, results, deferrals = [], {}, []
    serial = 0
    for code in codes:
        at = NOW - timedelta(
            days=rng.randint(61, 420), seconds=rng.randint(0, 86_399), microseconds=rng.randint(0, 999_999)
        )
        if rng.random() < 0.15:
            at = hold_edge + rng.choice(EDGE)
        times = []
        for _ in range(rng.randint(1, 5)):
            times.append(at)
            at = at + rng.choice(gaps) if rng.random() < 0.7 else at - rng.choice(gaps)
        for when in times:
            if rng.random() < 0.1:
                when = hold_edge + rng.choice(EDGE)
            serial += 1
            number = f"S{seed:02d}26{serial:08d}"
            status = rng.choices(["in-inventory", "discarded", "interdicted", "rejected"], [90, 4, 3, 3])[0]
            rows.append(
                {
                    "unit_number": number,
                    "scheme": "isbt128",
                    "donor_id": donor_ids[code],
                    "establishment_id": rng.choice(site_ids),
                    "collected_at": when,
                    "volume_ml": 0 if rng.random() < 0.03 else 750,
                    "plasma_kind": "source",
                    "status": status,
                    "version": 1,
                    "created_by": ACTOR,
                }
            )
            results[number] = _results(rng)
        if rng.random() < 0.25:
            day = rng.choice(times).date() + timedelta(days=rng.choice([-30, -1, 0, 1]))
            ends = rng.choice([None, day + timedelta(days=1), day + timedelta(days=rng.randint(2, 90))])
            lifted = None
            if rng.random() < 0.4:
                lifted = day + timedelta(days=rng.randint(0, 60))
                if ends is not None and lifted >= ends:
                    lifted = None
            deferrals.append(
                {
                    "donor_id": donor_ids[code],
                    "sequence": 1,
                    "reason": "screen test",
                    "source": "manual",
                    "starts_on": day,
                    "ends_on": ends,
                    "lifted_on": lifted,
                    "created_by": ACTOR,
                }
            )
    session.execute(insert(Donation), rows)
    ids = dict(
        session.execute(
            select(Donation.unit_number, Donation.id).where(Donation.unit_number.in_([r["unit_number"] for r in rows]))
        ).all()
    )
    result_rows = []
    for number, marks in results.items():
        versions: dict[str, int] = {}
        for marker, value in marks:
            versions[marker] = versions.get(marker, 0) + 1
            result_rows.append(
                {
                    "donation_id": ids[number],
                    "marker": marker,
                    "version": versions[marker],
                    "result": value,
                    "tested_at": NOW - timedelta(days=1),
                    "created_by": ACTOR,
                }
            )
    session.execute(insert(TestResult), result_rows)
    if deferrals:
        session.execute(insert(Deferral), deferrals)
    return [r["unit_number"] for r in rows]


def pool_some(session: Session, numbers: list[str], rng: random.Random, pool_number: str) -> tuple[int, list[str]]:
    """Make members of a new pool directly (whatever their eligibility), mostly with status pooled, some not."""
    pool = pools.create_pool(session, pool_number=pool_number, product="ivig", actor=ACTOR)
    session.flush()
    members = rng.sample(numbers, len(numbers) // 4)
    ids = dict(
        session.execute(select(Donation.unit_number, Donation.id).where(Donation.unit_number.in_(members))).all()
    )
    session.execute(
        insert(PoolMember), [{"pool_id": pool.id, "donation_id": ids[n], "created_by": ACTOR} for n in members]
    )
    for n in members:
        status = rng.choices([UnitStatus.POOLED, UnitStatus.IN_INVENTORY, UnitStatus.DISCARDED], [85, 5, 10])[0]
        session.execute(update(Donation).where(Donation.unit_number == n).values(status=status))
    return pool.id, members


@pytest.mark.parametrize("seed", [1, 2])
def test_the_screen_never_clears_a_unit_the_rules_refuse(session: Session, seed: int) -> None:
    numbers = build_awkward_site(session, seed)
    rng = random.Random(seed)
    pool_id, members = pool_some(session, numbers, rng, f"P-SCR-{seed}")
    absent = [f"Z{seed:02d}2600000001", f"Z{seed:02d}2600000002"]
    for name, policy in POLICIES.items():
        facts = unit_facts(session, unit_numbers=numbers, policy=policy)
        refused = {
            n for n, f in facts.items() if f.already_pooled_in or eligibility_problems(f, now=NOW, policy=policy)
        }
        screened = screen_units(session, unit_numbers=[*numbers, *absent], policy=policy, now=NOW)
        assert refused <= set(screened), (name, sorted(refused - set(screened)))
        assert {n for n, found in screened.items() if not found} == set(absent), name
        # Not vacuous: the screen clears a good part of the units the rules accept.
        accepted, cleared = len(numbers) - len(refused), len(numbers) - len(screened)
        assert cleared > 0 and (name != "default" or cleared >= accepted / 3), (name, accepted, cleared)

        refused_at_close = {
            n for n in members if eligibility_problems(facts[n], now=NOW, policy=policy, pooled_ok_in=f"P-SCR-{seed}")
        }
        at_close = screen_units(session, pool_id=pool_id, policy=policy, now=NOW)
        assert refused_at_close <= set(at_close), (name, sorted(refused_at_close - set(at_close)))
        assert set(at_close) <= set(members)
        assert len(at_close) < len(members), name


@pytest.mark.parametrize("seed", [3])
def test_pool_add_and_close_refuse_exactly_what_the_rules_refuse(session: Session, seed: int) -> None:
    numbers = build_awkward_site(session, seed, donors=60)
    facts = unit_facts(session, unit_numbers=numbers)
    candidates = [n for n in numbers if facts[n].status == UnitStatus.IN_INVENTORY]
    expected = {n: why for n in candidates if (why := eligibility_problems(facts[n], now=NOW))}
    assert expected and len(expected) < len(candidates)
    pools.create_pool(session, pool_number="P-SCR-ADD", product="ivig", actor=ACTOR)
    with pytest.raises(IneligibleUnits) as refused:
        pools.add_units(session, pool_number="P-SCR-ADD", unit_numbers=candidates, actor=ACTOR, now=NOW)
    assert refused.value.reasons == expected
    assert list(refused.value.reasons) == list(expected)  # in the order given
    eligible = [n for n in candidates if n not in expected]
    assert pools.add_units(session, pool_number="P-SCR-ADD", unit_numbers=eligible, actor=ACTOR, now=NOW) == len(
        eligible
    )

    # Facts change after the add: every kind of change must stop the close, with the rules' words.
    first, second, third = eligible[:3]
    units.add_result(
        session, unit_number=first, marker=Marker.HBSAG, result=ResultValue.INVALID, tested_at=NOW, actor=ACTOR
    )
    session.execute(update(Donation).where(Donation.unit_number == second).values(volume_ml=0))
    donor_id = session.execute(select(Donation.donor_id).where(Donation.unit_number == third)).scalar_one()
    day = local_day(facts[third].collected_at, facts[third].timezone)
    session.execute(
        insert(Deferral),
        [
            {
                "donor_id": donor_id,
                "sequence": 99,
                "reason": "back-dated",
                "source": "manual",
                "starts_on": day,
                "ends_on": day + timedelta(days=1),
                "created_by": ACTOR,
            }
        ],
    )
    after = unit_facts(session, unit_numbers=eligible)
    expected_close = {
        n: why for n, f in sorted(after.items()) if (why := eligibility_problems(f, now=NOW, pooled_ok_in="P-SCR-ADD"))
    }
    assert {first, second, third} <= set(expected_close)
    with pytest.raises(IneligibleUnits) as refused_close:
        pools.close_pool(session, pool_number="P-SCR-ADD", actor=ACTOR, now=NOW)
    assert refused_close.value.reasons == expected_close


def test_units_the_screen_cannot_clear_are_still_added_when_the_rules_accept_them(session: Session) -> None:
    # Each of these is eligible, but only the exact judgement can tell.
    edge = make_donor(session)  # qualified by a pair exactly six calendar months apart (183 days here)
    at_edge = make_unit(session, donor=edge, collected_at=datetime(2025, 8, 1, 9, 0, tzinfo=UTC))
    make_unit(session, donor=edge, collected_at=datetime(2026, 2, 1, 17, 0, tzinfo=UTC))
    retested = make_donor(session)  # an invalid result, then a nonreactive repeat
    first = make_unit(session, donor=retested, collected_at=NOW - timedelta(days=100))
    make_unit(session, donor=retested, collected_at=NOW - timedelta(days=90))
    units.add_result(
        session,
        unit_number=first.unit_number,
        marker=Marker.HBSAG,
        result=ResultValue.INVALID,
        tested_at=NOW,
        actor=ACTOR,
    )
    units.add_result(
        session,
        unit_number=first.unit_number,
        marker=Marker.HBSAG,
        result=ResultValue.NONREACTIVE,
        tested_at=NOW,
        actor=ACTOR,
    )
    deferred = make_donor(session)  # a deferral that ended before this collection
    session.execute(
        insert(Deferral),
        [
            {
                "donor_id": deferred.id,
                "sequence": 1,
                "reason": "travel",
                "source": "manual",
                "starts_on": (NOW - timedelta(days=200)).date(),
                "ends_on": (NOW - timedelta(days=150)).date(),
                "created_by": ACTOR,
            }
        ],
    )
    after_deferral = make_unit(session, donor=deferred, collected_at=NOW - timedelta(days=120))
    make_unit(session, donor=deferred, collected_at=NOW - timedelta(days=110))
    held = make_donor(session)  # exactly at the end of the hold
    at_hold = make_unit(session, donor=held, collected_at=NOW - timedelta(days=DEFAULT_POLICY.hold_days))
    make_unit(session, donor=held, collected_at=NOW - timedelta(days=100))

    wanted = [at_edge.unit_number, first.unit_number, after_deferral.unit_number, at_hold.unit_number]
    unclear = screen_units(session, unit_numbers=wanted, now=NOW)
    assert {at_edge.unit_number, first.unit_number, after_deferral.unit_number} <= set(unclear)
    pools.create_pool(session, pool_number="P-EXACT", product="ivig", actor=ACTOR)
    assert pools.add_units(session, pool_number="P-EXACT", unit_numbers=wanted, actor=ACTOR, now=NOW) == 4
    pool_id = session.execute(select(Pool.id).where(Pool.pool_number == "P-EXACT")).scalar_one()
    assert set(wanted) - {at_hold.unit_number} <= set(screen_units(session, pool_id=pool_id, now=NOW))


def test_a_day_past_six_calendar_months_does_not_qualify(session: Session) -> None:
    donor = make_donor(session)
    first = make_unit(session, donor=donor, collected_at=datetime(2025, 8, 1, 9, 0, tzinfo=UTC))
    make_unit(session, donor=donor, collected_at=datetime(2026, 2, 2, 0, 30, tzinfo=UTC))
    pools.create_pool(session, pool_number="P-EDGE", product="ivig", actor=ACTOR)
    with pytest.raises(IneligibleUnits, match="not qualified"):
        pools.add_units(session, pool_number="P-EDGE", unit_numbers=[first.unit_number], actor=ACTOR, now=NOW)


def test_add_and_close_run_as_many_statements_for_3000_units_as_for_20(session: Session) -> None:
    small, large = bulk_units(session, donors_count=10), bulk_units(session, donors_count=1_500)
    seen: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(statement)

    counts = {}
    for number, batch in (("P-S", small), ("P-L", large)):
        pools.create_pool(session, pool_number=number, product="ivig", actor=ACTOR)
        session.flush()
        engine = session.connection().engine
        event.listen(engine, "before_cursor_execute", note)
        try:
            seen.clear()
            pools.add_units(session, pool_number=number, unit_numbers=batch, actor=ACTOR, now=NOW)
            counts[number, "add"] = len(seen)
            seen.clear()
            pools.remove_units(session, pool_number=number, unit_numbers=batch[:1], reason="test", actor=ACTOR)
            pools.add_units(session, pool_number=number, unit_numbers=batch[:1], actor=ACTOR, now=NOW)
            if number == "P-L":
                seen.clear()
                pools.close_pool(session, pool_number=number, actor=ACTOR, now=NOW)
                counts[number, "close"] = len(seen)
        finally:
            event.remove(engine, "before_cursor_execute", note)
    # Each bound includes the two reads that put the written rows' state before and after into the audit event.
    assert counts["P-S", "add"] == counts["P-L", "add"] <= 14, counts
    assert counts["P-L", "close"] <= 14, counts


def test_the_screen_treats_a_date_only_deferral_like_the_rules(session: Session) -> None:
    # A deferral from the collection day, and one that ended on it (the end day is the first day allowed again).
    donor = make_donor(session)
    unit = make_unit(
        session, donor=donor, collected_at=datetime.combine(date(2026, 1, 10), datetime.min.time(), NOW.tzinfo)
    )
    make_unit(session, donor=donor, collected_at=NOW - timedelta(days=100))
    session.execute(
        insert(Deferral),
        [
            {
                "donor_id": donor.id,
                "sequence": 1,
                "reason": "ended that day",
                "source": "manual",
                "starts_on": date(2025, 12, 1),
                "ends_on": date(2026, 1, 10),
                "created_by": ACTOR,
            },
            {
                "donor_id": donor.id,
                "sequence": 2,
                "reason": "from the next day",
                "source": "manual",
                "starts_on": date(2026, 1, 11),
                "ends_on": None,
                "created_by": ACTOR,
            },
        ],
    )
    pools.create_pool(session, pool_number="P-DAY", product="ivig", actor=ACTOR)
    assert pools.add_units(session, pool_number="P-DAY", unit_numbers=[unit.unit_number], actor=ACTOR, now=NOW) == 1
