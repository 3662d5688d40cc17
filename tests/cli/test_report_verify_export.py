"""On the demo site: reports are the same bytes twice, `report verify` catches a changed database or file, and the
EPCIS export of the demo validates against GS1's schema."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from tests.cli.conftest import Cli
from tests.epcis_schema import epcis_errors
from tests.factories import ACTOR
from traceability.errors import ExitCode


@pytest.fixture(name="demo_db", scope="module")
def demo_db_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    result = CliRunner().invoke(
        cli.app, ["demo", "--seed", "7"], env={"PLASMATRACE_DB": f"sqlite:///{path}", "PLASMATRACE_ACTOR": ACTOR}
    )
    assert result.exit_code == 0, result.output
    yield path


@pytest.fixture(name="demo")
def demo_fixture(demo_db: Path, tmp_path: Path) -> Cli:
    """A copy of the demo database for one test, so a test that changes it leaves the others alone."""
    copy = tmp_path / "demo.db"
    for suffix in ("", "-wal", "-shm"):  # SQLite in WAL mode keeps recent pages beside the file
        if Path(f"{demo_db}{suffix}").exists():
            shutil.copy(f"{demo_db}{suffix}", f"{copy}{suffix}")
    return Cli(f"sqlite:///{copy}", tmp_path)


def final_lot(demo: Cli) -> str:
    lots = demo.json("lot", "list")
    return next(lot["lot"] for lot in lots if lot["kind"] == "final")


def test_the_demo_lot_report_is_the_same_bytes_twice_and_verifies_in_every_format(demo: Cli) -> None:
    lot = final_lot(demo)
    for fmt in ("html", "pdf", "json", "csv"):
        first, second = demo.workdir / f"a.{fmt}", demo.workdir / f"b.{fmt}"
        written = demo("report", "lot", lot, "--format", fmt, "--output", str(first))
        assert "Writing the lot report" not in written.stderr  # the progress bar stays quiet when not on a terminal
        demo("report", "lot", lot, "--format", fmt, "--output", str(second))
        assert first.read_bytes() == second.read_bytes(), fmt
        verified = demo("report", "verify", str(first))
        assert "matches the database" in verified.stderr
    html = (demo.workdir / "a.html").read_text(encoding="utf-8")
    assert "<svg" in html and "Donors with reactive results (1)" in html and "import.donations" in html
    assert "3,9" in html and "values:" in html  # the pool's long unit list is counted and cut, not spilled
    document = json.loads((demo.workdir / "a.json").read_text(encoding="utf-8"))
    assert document["manifest"]["report"] == "lot" and document["data"]["lot_number"] == lot
    assert any(e["action"] == "import.results.completed" for e in document["audit_history"])


def test_verify_names_what_changed_in_the_database_and_exits_3(demo: Cli) -> None:
    lot = final_lot(demo)
    report = demo.workdir / "lot.pdf"
    demo("report", "lot", lot, "--format", "pdf", "--output", str(report))
    unit = demo.json("trace", "lot", lot, "--members")["donations"][0]["unit_number"]
    demo(
        "donation", "correct", unit, "--set", "volume_ml=640", "--reason", "scale misread", "--deviation", "DEV-26-001"
    )

    result = demo("report", "verify", str(report), code=ExitCode.RULE_VIOLATION)
    assert "no longer matches the database" in result.stderr
    assert "audit history: differs" in result.stderr and "trace: differs" in result.stderr
    assert "1 audit event(s) were recorded since the report" in result.stderr


def test_verify_catches_an_edited_file_and_refuses_a_file_that_is_not_a_report(demo: Cli) -> None:
    lot = final_lot(demo)
    report = demo.workdir / "lot.html"
    demo("report", "lot", lot, "--format", "html", "--output", str(report))
    report.write_text(report.read_text(encoding="utf-8").replace("released", "relaesed", 1), encoding="utf-8")
    result = demo("report", "verify", str(report), code=ExitCode.RULE_VIOLATION)
    assert "its bytes differ from a rebuild" in result.stderr

    other = demo.workdir / "notes.txt"
    other.write_text("hello\n", encoding="utf-8")
    refused = demo("report", "verify", str(other), code=ExitCode.INVALID_INPUT)
    assert "is not a plasmatrace report" in refused.stderr


def test_the_epcis_export_of_the_demo_validates_against_gs1s_schema(demo: Cli) -> None:
    lot = final_lot(demo)
    pools = [p["pool"] for p in demo.json("pool", "list")]
    for scope in (["--lot", lot], ["--pool", pools[0]], ["--since", "2000-01-01T00:00:00Z"]):
        out = demo.workdir / "export.json"
        written = demo("export", "epcis", *scope, "--output", str(out))
        assert "EPCIS events written" in written.stderr
        document = json.loads(out.read_text(encoding="utf-8"))
        assert epcis_errors(document) == [], scope
        kinds = {(e["type"], e.get("bizStep")) for e in document["epcisBody"]["eventList"]}
        assert ("TransformationEvent", "assembling") in kinds and ("ObjectEvent", "shipping") in kinds


def test_export_epcis_needs_exactly_one_scope_and_names_an_unknown_lot(demo: Cli) -> None:
    out = str(demo.workdir / "x.json")
    demo("export", "epcis", "--output", out, code=ExitCode.USAGE)
    missing = demo("export", "epcis", "--lot", "NOPE-1", "--output", out, code=ExitCode.NOT_FOUND)
    assert "NOPE-1" in missing.stderr
    bad = demo("export", "epcis", "--since", "yesterday", "--output", out, code=ExitCode.INVALID_INPUT)
    assert "--since 'yesterday'" in bad.stderr
    assert not Path(out).exists()
