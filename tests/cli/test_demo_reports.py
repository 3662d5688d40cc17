"""The demo builds a whole site through the commands' own services; reports of it are written in every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from traceability.errors import ExitCode


def test_the_demo_builds_a_site_refuses_to_run_twice_and_reports_on_it(fresh: Cli, tmp_path: Path) -> None:
    result = fresh("demo", "--seed", "3")
    assert "distinct donors" in result.stderr and "tested HCV RNA reactive" in result.stderr
    assert "Pool summary" in result.stdout and "forward to every consignee" in result.stdout

    again = fresh("demo", code=ExitCode.CONFLICT)
    assert "already holds data" in again.stderr

    # The pool that held the late reactive donor's units was retested reactive after release: quarantined, and
    # every lot made from it held.
    pools = fresh.json("pool", "list", "--format", "json")
    assert len(pools) == 2 and all(p["distinct donors"] >= 1000 for p in pools)
    assert sorted(p["status"] for p in pools) == ["quarantined", "released"]
    assert "retested HCV RNA reactive (version 2): quarantined" in result.stderr
    # The late reactive result opened its case by itself; a mock recall drill ran, changed nothing and was kept.
    assert "opened by itself" in result.stderr and "Mock recall drill for donor" in result.stderr
    assert [d["subject"] for d in fresh.json("recall", "drills")] == ["donor"]
    lots = fresh.json("lot", "list", "--format", "json")
    assert {lot["status"] for lot in lots} == {"quarantined"}
    final = next(lot["lot"] for lot in lots if lot["kind"] == "final")
    verified = fresh("audit", "verify")
    assert "Audit trail intact" in verified.stderr and "tables match it" in verified.stderr  # every record proven

    for fmt in ("html", "pdf", "json", "csv"):
        out = tmp_path / f"report.{fmt}"
        written = fresh("report", "lot", final, "--format", fmt, "--output", str(out))
        assert f"written to {out}" in written.stderr
        assert out.stat().st_size > 1000
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert final in html and "audit checkpoint" in html and "data SHA-256" in html
    document = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert document["audit chain"] == "intact" and document["data"]["lot_number"] == final
    assert document["data"]["donor_count"] >= 2000
    assert (tmp_path / "report.csv").read_text(encoding="utf-8").startswith("unit,donor,pool,collected at")

    donor = next(line for line in result.stderr.splitlines() if "tested HCV RNA reactive" in line).split()[1]
    # The late reactive result opened its case by itself; one notification is recorded.
    case = next(c["case"] for c in fresh.json("lookback", "list", "--open") if c["donor"] == donor)
    assert f"Look-back case {case} opened by itself" in result.stderr
    tasks = fresh.json("lookback", "show", case)["tasks"]
    assert [t["kind"] for t in tasks if t["state"] == "done"] == ["quarantine-request"]
    joined = fresh("lookback", "open", donor, "--reason", "PDI")
    assert f"already has an open look-back case, {case}" in joined.stderr
    fresh("report", "case", case, "--format", "html", "--output", str(tmp_path / "case.html"))
    assert donor in (tmp_path / "case.html").read_text(encoding="utf-8")


def test_a_report_of_an_unknown_lot_is_not_found(fresh: Cli, tmp_path: Path) -> None:
    fresh("init")
    result = fresh("report", "lot", "NOPE", "--output", str(tmp_path / "r.html"), code=ExitCode.NOT_FOUND)
    assert "Lot NOPE not found" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_the_demo_on_postgresql_says_at_once_that_one_login_cannot_release_and_writes_nothing(run: Cli) -> None:
    if not run.db_url.startswith("postgresql"):
        pytest.skip("on SQLite the demo adds its own people (the test above)")
    as_one_login = Cli(db_url=run.db_url, workdir=run.workdir, one_person=False)  # the default policy
    refused = as_one_login("demo", code=ExitCode.NOT_PERMITTED)
    assert "separation of duties" in refused.stderr and "sqlite:///demo.db" in refused.stderr
    assert run.json("establishment", "list") == []
