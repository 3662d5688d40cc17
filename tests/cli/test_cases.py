"""The look-back case workflow on the command line (SPEC §12): a reactive result opens the case, `lookback due`
lists what is due, a held lot is refused at shipment (exit 3) until assessed no-action, the notification list comes
out as CSV, and the case closes only when every task is done or waived."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from tests.cli.conftest import Cli, seeded
from tests.integration.test_cases import lineage
from traceability.errors import ExitCode


def test_the_case_workflow_from_a_reactive_result_to_its_close(run: Cli) -> None:
    with seeded(run.db_url) as session:
        unit, donor = lineage(session)
    tested = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%dT%H:%MZ")
    added = run("result", "add", unit, "--marker", "anti-hcv", "--result", "R", "--tested-at", tested)
    assert f"opened for donor {donor}" in added.stderr and "lots held: FIN-C, FIN-D, INT-C" in added.stderr
    [case] = [c["case"] for c in run.json("lookback", "list", "--open")]
    assert case in added.stderr
    again = run("result", "add", unit, "--marker", "hbsag", "--result", "R", "--tested-at", tested)
    assert f"Look-back case {case} joined" in again.stderr
    assert len(run.json("lookback", "list")) == 1

    late = run.json("lookback", "due", "--overdue")
    assert [(t["task"], t["kind"], t["days late"]) for t in late] == [
        (1, "review-quarantine", 2),
        (2, "quarantine-request", 2),
    ]
    assert [t["kind"] for t in run.json("lookback", "due")][-1] == "supplemental-results"

    refused = run("lot", "ship", "FIN-C", "--to", "H-C", "--quantity", "1", code=ExitCode.RULE_VIOLATION)
    assert f"held by look-back case {case}" in refused.stderr
    flags = json.loads(run("report", "lot", "FIN-C", "--format", "json", "--output", "-").stdout)["flags"]
    assert {r["key"] for r in flags["Holds and quarantines"] if r["status"] == "held"} == {"FIN-C", "INT-C"}
    shown = run.json("lot", "show", "FIN-C")
    assert {h["lot_number"] for h in shown["holds"]} == {"FIN-C", "INT-C"}
    assert "held by look-back case" in run("lot", "show", "FIN-C").stderr + run("lot", "show", "FIN-C").stdout

    listed = list(csv.reader(io.StringIO(run("lookback", "show", case, "--format", "csv").stdout)))
    assert listed[0][:5] == ["consignee", "address", "lot", "quantity", "shipped on"]
    assert listed[1][:4] == ["Hospital C", "1 Harbour Road, Portsmouth", "FIN-C", "40 vials"]
    assert listed[1][5] == "2 open"
    run("lookback", "task", case, "2", "--done", "--note", "quarantine requested from Hospital C by phone")
    report = run("report", "case", case, "--format", "csv", "--output", "-").stdout
    assert "Hospital C" in report and "2 done" in report

    run("lookback", "task", case, "4", "--done", "--note", "x", code=ExitCode.INVALID_INPUT)  # an assessment
    run("lookback", "task", case, "1", "--done", code=ExitCode.INVALID_INPUT)  # no note
    assessed = run("lookback", "assess", case, "FIN-C", "--decision", "no-action", "--reason", "11 log enveloped")
    assert "clearance" in assessed.stderr and "Still held: lot FIN-C is held" not in assessed.stderr
    run("lookback", "assess", case, "INT-C", "--decision", "no-action", "--reason", "S/D 6 log")
    run("lot", "ship", "FIN-C", "--to", "H-C", "--quantity", "1")

    closing = run("lookback", "close", case, "--reason", "no action", code=ExitCode.RULE_VIOLATION)
    assert "3 open task(s): 1 (review-quarantine), 3 (supplemental-results), 5 (assessment)" in closing.stderr
    run("lookback", "task", case, "1", "--done", "--note", "records reviewed")
    run("lookback", "task", case, "3", "--waive", "--reason", "supplemental test negative; sent with task 2")
    run("lookback", "assess", case, "FIN-D", "--decision", "withdraw", "--reason", "pending lot, not needed")
    run("lot", "release", "FIN-D", code=ExitCode.RULE_VIOLATION)  # withdrawn: still held
    run("lookback", "close", case, "--reason", "consignee notified; lots within validated clearance")
    assert run.json("lookback", "show", case)["status"] == "closed"
    assert run.json("lookback", "due") == []
    run("lot", "unhold", "FIN-D", "--reason", "QA: withdrawn lot to be destroyed, hold no longer needed")
    run("lot", "unhold", "FIN-D", "--reason", "again", code=ExitCode.RULE_VIOLATION)
    run("lot", "hold", "FIN-C", "--reason", "complaint")
    assert "held by hand" in run("lot", "ship", "FIN-C", "--to", "H-C", "--quantity", "1", code=3).stderr


def test_opening_by_hand_takes_a_trigger_and_joins_the_open_case(run: Cli) -> None:
    with seeded(run.db_url) as session:
        _, donor = lineage(session)
    opened = run("lookback", "open", donor, "--trigger", "pdi", "--reason", "PDI: HCV RNA reactive elsewhere")
    [case] = [c["case"] for c in run.json("lookback", "list")]
    assert f"Look-back case {case} opened" in opened.stderr
    joined = run("lookback", "open", donor, "--trigger", "recipient-infection", "--reason", "recipient infected")
    assert f"already has an open look-back case, {case}; this joins it" in joined.stderr
    shown = run.json("lookback", "show", case)
    assert shown["trigger"] == "pdi" and [t["kind"] for t in shown["tasks"]].count("review-quarantine") == 1
    run("lookback", "open", donor, "--trigger", "rumour", "--reason", "x", code=2)


def test_a_reactive_result_imported_opens_the_case_and_says_which(run: Cli) -> None:
    with seeded(run.db_url) as session:
        unit, donor = lineage(session)
    path = run.workdir / "results.csv"
    path.write_text(
        f"unit_number,marker,result,tested_at\n{unit},anti-hiv,R,2026-06-01T09:00:00Z\n"
        f"{unit},hbsag,R,2026-06-01T10:00:00Z\n",
        encoding="utf-8",
    )
    imported = run("import", "results", str(path))
    [case] = run.json("lookback", "list")
    assert case["donor"] == donor and case["status"] == "open"
    assert f"Look-back case(s) open for their donors (opened or joined by a reactive panel result): {case['case']}" in (
        " ".join(imported.stderr.split())
    )
    shown = run.json("lookback", "show", case["case"])
    assert (shown["trigger"], shown["received_on"]) == ("reactive-test", "2026-06-01")
    assert [t["due_on"] for t in shown["tasks"]][:3] == ["2026-06-04", "2026-06-04", "2026-07-16"]
