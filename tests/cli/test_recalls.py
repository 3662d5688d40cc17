"""Recalls, notification letters and the recall drill (SPEC §12), through the command line on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from tests.cli.conftest import Cli, seeded
from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    backdate_release,
    make_consignee,
    make_lot,
    make_released_pool,
    make_step,
)
from traceability import audit
from traceability.errors import ExitCode
from traceability.models import Donation, Donor, LotKind, LotUnit, PoolMember, RecallDrill, StepMethod, UnitStatus
from traceability.services import lots


@dataclass
class Site:
    pool: str
    donor: str
    pooled_unit: str
    stock_unit: str


def build_site(db_url: str) -> Site:
    """A released pool; an intermediate lot (kg) from it; two final lots (vials) from that; shipments of both to
    three consignees. The donor has one unit in the pool and one still in inventory, both in the window."""
    with seeded(db_url) as session:
        pool = make_released_pool(session, donors_count=1000, bulk=True, pool_number="P-R1")
        make_step(session, pool=pool, method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
        paste = make_lot(
            session,
            lot_number="FII-1",
            inputs=[("pool", pool)],
            kind=LotKind.INTERMEDIATE,
            quantity=120,
            unit=LotUnit.KG,
        )
        lots.release_lot(session, lot_number=paste, actor=APPROVER)
        backdate_release(session, paste, NOW - timedelta(days=3))
        for number, draw in (("IVG-1", 60), ("IVG-2", 40)):
            make_lot(session, lot_number=number, inputs=[("lot", paste)], draw=draw, quantity=100)
            make_step(session, lot=number, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.2)
            lots.release_lot(session, lot_number=number, actor=APPROVER)
            backdate_release(session, number)
        for code, name in (("C-A", "St Mary's Hospital"), ("C-B", "Royal Infirmary"), ("C-C", "Hôpital Saint-Louis")):
            make_consignee(session, code, name=name, address=f"{code} Street 1, Springfield")
        for lot, to, quantity in (
            ("IVG-1", "C-A", 30),
            ("IVG-1", "C-B", 20),
            ("IVG-2", "C-A", 5),
            ("IVG-2", "C-C", 15),
        ):
            lots.ship_lot(session, lot_number=lot, consignee=to, quantity=quantity, shipped_on=NOW.date(), actor=ACTOR)
        pooled, donor_id = session.execute(
            select(Donation.unit_number, Donation.donor_id)
            .join(PoolMember, PoolMember.donation_id == Donation.id)
            .order_by(Donation.id)
            .limit(1)
        ).one()
        stock = session.execute(
            select(Donation.unit_number).where(
                Donation.donor_id == donor_id, Donation.status == UnitStatus.IN_INVENTORY
            )
        ).scalar_one()
        code = session.execute(select(Donor.donor_code).where(Donor.id == donor_id)).scalar_one()
    return Site(pool, code, pooled, stock)


def head(db_url: str) -> tuple[str, int]:
    with seeded(db_url) as session:
        return audit.head_checkpoint(session), session.execute(select(func.count(RecallDrill.id))).scalar_one()


# --- recalls -----------------------------------------------------------------------------------------------------


def test_a_recall_lists_every_consignee_of_the_lot_and_of_every_lot_made_from_it(run: Cli) -> None:
    build_site(run.db_url)
    opened = run("recall", "open", "FII-1", "--class", "II", "--reason", "donor HCV RNA reactive after pooling")
    number = f"RC-{datetime.now(UTC).year}-0001"
    assert f"Recall {number} (class II) opened for lot FII-1: 3 consignee(s), 70 shipped." in opened.stderr
    shown = run.json("recall", "show", number)
    assert [(c["code"], c["address"], c["lots"], c["shipped"], c["unit"]) for c in shown["consignees"]] == [
        ("C-A", "C-A Street 1, Springfield", ["IVG-1", "IVG-2"], 35, "vials"),
        ("C-B", "C-B Street 1, Springfield", ["IVG-1"], 20, "vials"),
        ("C-C", "C-C Street 1, Springfield", ["IVG-2"], 15, "vials"),
    ]
    assert [x["lot_number"] for x in shown["lots"]] == ["FII-1", "IVG-1", "IVG-2"]
    assert [(x["lot_number"], x["in_stock"]) for x in shown["lots"]] == [("FII-1", 20), ("IVG-1", 50), ("IVG-2", 80)]
    assert shown["effectiveness"]["acknowledged_of_notified"] == "0/0"
    # A final lot's recall reaches only its own consignees; a second open recall of a lot is a conflict.
    other = run.json(
        "recall", "show", run("recall", "open", "IVG-2", "--class", "III", "--reason", "label").stderr.split()[1]
    )
    assert [c["code"] for c in other["consignees"]] == ["C-A", "C-C"]
    assert other["consignees"][0]["shipped"] == 5
    run("recall", "open", "FII-1", "--class", "I", "--reason", "again", code=ExitCode.CONFLICT)
    run("recall", "open", "NOPE", "--class", "I", "--reason", "x", code=ExitCode.NOT_FOUND)
    run("recall", "open", "IVG-1", "--class", "IV", "--reason", "x", code=ExitCode.USAGE)
    listed = run.json("recall", "list")
    assert [(r["recall"], r["lot"], r["consignees"]) for r in listed] == [
        (number, "FII-1", 3),
        (other["recall_number"], "IVG-2", 2),
    ]


def test_notices_acknowledgements_and_returns_then_close_only_when_complete(run: Cli) -> None:
    build_site(run.db_url)
    run("recall", "open", "FII-1", "--class", "I", "--reason", "HCV RNA reactive donor in pool P-R1")
    number = f"RC-{datetime.now(UTC).year}-0001"
    today = datetime.now(UTC).date()
    # Nothing notified yet: close names every consignee missing (exit 3).
    refused = run("recall", "close", number, code=ExitCode.RULE_VIOLATION)
    assert "C-A: not notified" in refused.stderr and "C-C: not notified" in refused.stderr
    run("recall", "ack", number, "C-A", code=ExitCode.RULE_VIOLATION)  # acknowledgement before the notice
    run("recall", "notify", number, "C-A", "--on", str(today + timedelta(days=1)), code=ExitCode.INVALID_INPUT)
    run("recall", "notify", number, "C-A", "--on", str(today - timedelta(days=1)), code=ExitCode.INVALID_INPUT)
    run("recall", "notify", number, "C-A", "--on", str(today))  # the day it opened: the first day allowed
    run("recall", "notify", number, "C-A", code=ExitCode.RULE_VIOLATION)  # once
    run("recall", "notify", number, "C-X", code=ExitCode.NOT_FOUND)
    with seeded(run.db_url) as session:
        make_consignee(session, "C-Z")
    run("recall", "notify", number, "C-Z", code=ExitCode.NOT_FOUND)  # a consignee the recall never reached
    # Returned never above shipped (C-A was shipped 35): 36 is refused, 35 is accepted.
    run("recall", "ack", number, "C-A", "--returned", "36", code=ExitCode.INVALID_INPUT)
    run("recall", "ack", number, "C-A", "--returned", "-1", code=ExitCode.INVALID_INPUT)
    run("recall", "ack", number, "C-A", "--returned", "35")
    run("recall", "notify", number, "C-B")
    run("recall", "ack", number, "C-B")
    run("recall", "ack", number, "C-B", "--returned", "5")  # a later return raises the total
    run("recall", "notify", number, "C-C")
    refused = run("recall", "close", number, code=ExitCode.RULE_VIOLATION)
    assert f"C-C: notified on {today}, not acknowledged" in refused.stderr
    assert "C-A" not in refused.stderr
    shown = run.json("recall", "show", number)
    assert shown["effectiveness"]["acknowledged_of_notified"] == "2/3 (67%)"
    assert shown["effectiveness"]["returned_of_shipped"] == "40/70 (57%)"
    run("recall", "ack", number, "C-C", "--returned", "0")
    closed = run("recall", "close", number)
    assert "acknowledged/notified 3/3 (100%), returned/shipped 40/70 (57%)" in closed.stderr
    assert run.json("recall", "show", number)["status"] == "closed"
    run("recall", "ack", number, "C-C", "--returned", "1", code=ExitCode.RULE_VIOLATION)  # closed
    events = [e["action"] for e in run.json("audit", "log") if e["action"].startswith("recall.")]
    assert events.count("recall.consignee_listed") == 3 and events[-1] == "recall.closed"


def test_report_recall_has_a_notification_letter_per_consignee_and_is_the_same_bytes_twice(run: Cli) -> None:
    build_site(run.db_url)
    run("recall", "open", "FII-1", "--class", "II", "--reason", "donor HCV RNA reactive after pooling")
    number = f"RC-{datetime.now(UTC).year}-0001"
    run("recall", "notify", number, "C-B")
    for fmt in ("pdf", "html", "json", "csv"):
        run("report", "recall", number, "--format", fmt, "--output", f"a.{fmt}")
        run("report", "recall", number, "--format", fmt, "--output", f"b.{fmt}")
        assert Path(f"a.{fmt}").read_bytes() == Path(f"b.{fmt}").read_bytes(), fmt
        verified = run("report", "verify", f"a.{fmt}")
        assert "Traceback" not in verified.output
    document = json.loads(Path("a.json").read_text(encoding="utf-8"))
    assert document["report"] == "recall" and document["data"]["recall_class"] == "II"
    assert [c["code"] for c in document["data"]["consignees"]] == ["C-A", "C-B", "C-C"]
    assert Path("a.csv").read_text(encoding="utf-8").splitlines()[0].startswith("consignee,name,address,lots,shipped")
    pdf = Path("a.pdf").read_bytes()
    # One portrait page per consignee after the landscape report (595 x 842 pt pages).
    assert pdf.count(b"/MediaBox [0 0 595.28 841.89]") == 3
    assert "Hôpital Saint-Louis" in Path("a.html").read_text(encoding="utf-8")


# --- the drill ---------------------------------------------------------------------------------------------------


def test_a_drill_changes_nothing_and_reports_what_the_case_opened_afterwards_touches(run: Cli) -> None:
    site = build_site(run.db_url)
    before, drills = head(run.db_url)
    answer = run.json("recall", "drill", "--donor", site.donor)
    after, drills_after = head(run.db_url)
    assert after == before  # the audit head did not move: no regulated record changed
    assert drills_after == drills + 1  # the drill itself is kept, outside the audit chain
    assert answer["units_to_stop"] == [site.stock_unit]
    assert {u["unit_number"]: u["action"] for u in answer["units"]} == {
        site.pooled_unit: "pooled",
        site.stock_unit: "stop",
    }
    assert answer["pools"] == [site.pool]
    assert [x["lot_number"] for x in answer["lots"]] == ["FII-1", "IVG-1", "IVG-2"]
    assert answer["consignees"] == ["C-A", "C-B", "C-C"]
    assert answer["totals"] == {
        "kg": {"quantity": 120, "drawn": 100, "shipped": 0, "in_stock": 20},
        "vials": {"quantity": 200, "drawn": 0, "shipped": 70, "in_stock": 130},
    }
    assert answer["audit_checkpoint"] == before
    run("trace", "donor", site.donor)  # unchanged by the drill: the stock unit is still in inventory
    assert run.json("donation", "show", site.stock_unit)["status"] == "in-inventory"

    # The case opened afterwards touches the same units and consignees.
    opened = run("lookback", "open", site.donor, "--reason", "PDI: HCV RNA reactive at another centre")
    case = opened.stderr.split()[2]
    assert "1 unit(s) interdicted, 1 pooled" in opened.stderr
    shown = run.json("lookback", "show", case)
    assert sorted(f["unit_number"] for f in shown["findings"]) == sorted(u["unit_number"] for u in answer["units"])
    assert [f["unit_number"] for f in shown["findings"] if f["action"] == "interdicted"] == answer["units_to_stop"]
    assert shown["pools"] == answer["pools"]
    assert shown["lots"] == [x["lot_number"] for x in answer["lots"]]
    case_shipments = sorted((s["shipment_number"], s["quantity"]) for s in shown["shipments"])
    assert case_shipments == sorted((s["shipment_number"], s["quantity"]) for s in answer["shipments"])
    assert sorted({n["consignee_code"] for n in shown["notifications"]}) == answer["consignees"]
    traced = run.json("trace", "donor", site.donor)
    assert sorted({s["consignee"] for s in traced["shipments"]}) == sorted(
        {s["consignee"] for s in answer["shipments"]}
    )

    # A drill of a lot reaches the consignees a recall of it lists.
    lot_answer = run.json("recall", "drill", "--lot", "IVG-1")
    assert lot_answer["consignees"] == ["C-A", "C-B"] and lot_answer["pools"] == [site.pool]
    run("recall", "open", "IVG-1", "--class", "II", "--reason", "drill follow-up")
    recall = run.json("recall", "show", f"RC-{datetime.now(UTC).year}-0001")
    assert [c["code"] for c in recall["consignees"]] == lot_answer["consignees"]

    kept = run.json("recall", "drills")
    assert [(d["subject"], d["key"], d["consignees"]) for d in kept] == [
        ("donor", site.donor, 3),
        ("lot", "IVG-1", 2),
    ]
    assert kept[0]["answer SHA-256"] == answer["answer_sha256"]
    table = run("recall", "drill", "--donor", site.donor)
    assert "units to stop" in table.stdout and "nothing changed" in table.stderr


def test_a_drill_takes_one_subject(run: Cli) -> None:
    run("recall", "drill", code=ExitCode.INVALID_INPUT)
    run("recall", "drill", "--donor", "D-1", "--lot", "L-1", code=ExitCode.INVALID_INPUT)
    run("recall", "drill", "--donor", "D-NOBODY", code=ExitCode.NOT_FOUND)
    run("recall", "drill", "--lot", "L-NONE", code=ExitCode.NOT_FOUND)
    assert head(run.db_url)[1] == 0  # a failed drill keeps nothing
