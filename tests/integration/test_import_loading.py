"""plasmatrace import: clean files of each kind load every row, and a reactive result acts as `result add`
does; on both engines."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import ACTOR, NOW, bulk_units, make_donor, make_establishment, make_unit
from tests.integration.importing import DONATIONS_HEADER, RESULTS_HEADER, T0, import_, write
from traceability import audit
from traceability.importers import load
from traceability.importers.load import ImportKind
from traceability.models import (
    AuditEvent,
    Deferral,
    Donation,
    Donor,
    Establishment,
    Marker,
    PoolMember,
    ResultValue,
    TestResult,
    UnitStatus,
)
from traceability.services import pools

# --- clean imports of each kind ---------------------------------------------------------------------------------


def test_a_donors_file_loads_every_row_and_names_its_import_event(session: Session, site: str, tmp_path: Path) -> None:
    path = write(
        tmp_path, "donors.csv", f"establishment,donor_code,registered_on\n{site},D-1,2025-03-01\n{site},D-2,\n"
    )

    report = import_(session, ImportKind.DONORS, path)

    assert (report.rows, report.loaded, report.already_present, report.rejected) == (2, 2, 0, 0)
    assert not report.already_imported and not report.dry_run and report.problems == []
    event = session.execute(select(AuditEvent).where(AuditEvent.seq == report.event_seq)).scalar_one()
    assert (event.action, event.entity_type, event.entity_key) == ("import.donors", "import", "donors.csv")
    assert report.sha256 in (event.new_values or "")
    rows = session.execute(
        select(Donor.donor_code, Donor.registered_on, Donor.import_event_id, Establishment.code)
        .join(Establishment)
        .where(Donor.donor_code.in_(["D-1", "D-2"]))
        .order_by(Donor.donor_code)
    ).all()
    assert [(r[0], r[1] and r[1].isoformat(), r[2], r[3]) for r in rows] == [
        ("D-1", "2025-03-01", event.id, site),
        ("D-2", None, event.id, site),
    ]
    completed = session.execute(select(AuditEvent).where(AuditEvent.action == "import.donors.completed")).scalar_one()
    assert '"loaded":2' in (completed.new_values or "")
    assert audit.verify(session).ok


def test_a_donations_file_stores_canonical_unit_numbers_and_defaults_the_establishment(
    session: Session, site: str, donor_code: str, tmp_path: Path
) -> None:
    other = make_establishment(session, code="SITE-2")
    path = write(
        tmp_path,
        "donations.csv",
        "\ufeff"
        + (
            "unit_number,donor_code,collected_at,volume_ml,establishment,plasma_kind,frozen_at\r\n"
            f"G123417654321A,{donor_code},2026-05-01T09:30:00+02:00,750,,,\r\n"
            f"=G12341765432200,{donor_code},2026-05-08T09:30:00,690,{other},recovered,2026-05-08T11:00:00Z\r\n"
            f"G1234 17 654323,{donor_code},2026-05-15,0,,SOURCE,\r\n"
        ),
    )

    report = import_(session, "donations", path)

    assert (report.rows, report.loaded) == (3, 3)
    units = {u.unit_number: u for u in session.execute(select(Donation)).scalars()}
    assert set(units) == {"G123417654321", "G123417654322", "G123417654323"}
    first, second = units["G123417654321"], units["G123417654322"]
    assert first.collected_at.isoformat() == "2026-05-01T07:30:00+00:00"
    assert first.volume_ml == 750 and first.plasma_kind == "source" and first.status == UnitStatus.IN_INVENTORY
    site_ids = dict(session.execute(select(Establishment.code, Establishment.id)).all())
    assert first.establishment_id == site_ids[site]
    assert second.establishment_id == site_ids[other] and second.flag == "00" and second.plasma_kind == "recovered"
    assert {u.import_event_id for u in units.values()} == {
        session.execute(select(AuditEvent.id).where(AuditEvent.seq == report.event_seq)).scalar_one()
    }


def test_a_results_file_records_results_for_units_of_an_earlier_donations_file(
    session: Session, site: str, tmp_path: Path
) -> None:
    donors_file = write(tmp_path, "donors.csv", f"donor_code,establishment\nD-10,{site}\nD-11,{site}\n")
    donations_file = write(
        tmp_path, "donations.csv", DONATIONS_HEADER + f"A999926000001,D-10,{T0},750\nA999926000002,D-11,{T0},700\n"
    )
    results_file = write(
        tmp_path,
        "results.csv",
        "unit_number,marker,result,tested_at,method,lab,value,unit\n"
        f"A999926000001,hbsag,NR,{NOW.isoformat()},serology,{site},,\n"
        f"A999926000001,hiv-rna,negative,{NOW.isoformat()},nat,,0.5,IU/mL\n"
        f"A999926000002,anti-hcv,nonreactive,{NOW.isoformat()},,,,\n",
    )

    assert import_(session, "donors", donors_file).loaded == 2
    assert import_(session, "donations", donations_file).loaded == 2
    report = import_(session, "results", results_file)

    assert (report.loaded, report.reactive) == (3, [])
    results = session.execute(
        select(
            Donation.unit_number,
            TestResult.marker,
            TestResult.version,
            TestResult.result,
            TestResult.value,
            TestResult.value_unit,
            TestResult.method,
        )
        .join(Donation)
        .order_by(Donation.unit_number, TestResult.marker)
    ).all()
    assert [tuple(r) for r in results] == [
        ("A999926000001", Marker.HBSAG, 1, ResultValue.NONREACTIVE, None, None, "serology"),
        ("A999926000001", Marker.HIV_RNA, 1, ResultValue.NONREACTIVE, 0.5, "IU/mL", "nat"),
        ("A999926000002", Marker.ANTI_HCV, 1, ResultValue.NONREACTIVE, None, None, None),
    ]
    assert audit.verify(session).ok


def test_a_pool_members_file_adds_eligible_units_to_their_pools(session: Session, tmp_path: Path) -> None:
    units = bulk_units(session, donors_count=3, units_per_donor=2)
    pools.create_pool(session, pool_number="P-A", product="ivig", actor=ACTOR)
    pools.create_pool(session, pool_number="P-B", product="albumin", actor=ACTOR)
    path = write(
        tmp_path,
        "members.csv",
        "unit_number,pool_number\n"
        + "".join(f"{u},P-A\n" for u in units[:4])
        + "".join(f"{u},P-B\n" for u in units[4:]),
    )

    report = import_(session, ImportKind.POOL_MEMBERS, path)

    assert (report.rows, report.loaded, report.rejected) == (6, 6, 0)
    event_id = session.execute(select(AuditEvent.id).where(AuditEvent.seq == report.event_seq)).scalar_one()
    members = session.execute(select(PoolMember.import_event_id, func.count()).group_by(PoolMember.import_event_id))
    assert dict(members.all()) == {event_id: 6}
    statuses = session.execute(select(Donation.status).where(Donation.unit_number.in_(units))).scalars().all()
    assert set(statuses) == {UnitStatus.POOLED}


# --- reactive results ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [load.CHUNK_ROWS, 1], ids=["one-chunk", "acted-on-after-its-chunk-is-written"])
def test_a_reactive_result_in_a_results_file_rejects_the_unit_defers_the_donor_and_interdicts(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    # With one row per chunk, the reactive row's chunk is written (on PostgreSQL by the writing thread) while the
    # next is checked: the consequences follow once it is written.
    monkeypatch.setattr(load, "CHUNK_ROWS", chunk_rows)
    donor = make_donor(session)
    earlier = make_unit(session, donor=donor, collected_at=NOW - timedelta(days=120))
    latest = make_unit(session, donor=donor, collected_at=NOW - timedelta(days=10), panel=None)
    other = make_unit(session, donor=make_donor(session), collected_at=NOW - timedelta(days=10), panel=None)
    path = write(
        tmp_path,
        "results.csv",
        RESULTS_HEADER
        + f"{latest.unit_number},anti-hiv,R,{(NOW - timedelta(days=8)).isoformat()}\n"
        + f"{other.unit_number},anti-hiv,NR,{(NOW - timedelta(days=8)).isoformat()}\n",
    )

    report = import_(session, "results", path)

    assert report.reactive == [latest.unit_number] and report.loaded == 2
    statuses = dict(session.execute(select(Donation.unit_number, Donation.status)).all())
    assert statuses[latest.unit_number] == UnitStatus.REJECTED
    assert statuses[earlier.unit_number] == UnitStatus.INTERDICTED
    assert statuses[other.unit_number] == UnitStatus.IN_INVENTORY
    deferral = session.execute(select(Deferral).where(Deferral.donor_id == donor.id)).scalar_one()
    assert deferral.ends_on is None and "reactive anti-hiv" in deferral.reason
    actions = session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars().all()
    assert actions[-1] == "import.results.completed" and "donation.rejected" in actions
    assert "result.added" not in actions[actions.index("import.results") :]
    assert audit.verify(session).ok
