"""Pools from the command line: the 1,000-donor boundary, eligibility refusals, one pool per unit, test and release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.cli.conftest import Cli, seeded
from tests.factories import PANEL, bulk_units, make_donor, make_unit
from traceability.errors import ExitCode
from traceability.identifiers import din_check_character
from traceability.models import Marker, ResultValue


def pool_json(run: Cli, pool: str) -> dict:
    return run.json("pool", "show", pool)


def test_a_pool_of_999_donors_cannot_close_and_the_1000th_donor_closes_it_then_it_is_tested_and_released(
    run: Cli,
) -> None:
    with seeded(run.db_url) as session:
        numbers = bulk_units(session, donors_count=999, units_per_donor=2)
        extra = bulk_units(session, donors_count=1, units_per_donor=2)
    members = numbers[:1002] + numbers[1002::2]  # 999 donors: 501 with both units, 498 with one
    assert len(members) == 1500

    run("pool", "create", "P-0042", "--product", "ivig")
    added = run("pool", "add", "P-0042", "--file", run.units_file(members))
    assert "1,500" in added.stderr

    refused = run("pool", "close", "P-0042", code=ExitCode.RULE_VIOLATION)
    assert "P-0042" in refused.stderr
    assert "999" in refused.stderr and "1,000" in refused.stderr
    assert "Pool P-0042 has 999 distinct donors; 1,000 are required." in refused.stderr
    shown = pool_json(run, "P-0042")
    assert (shown["status"], shown["donor_count"], shown["donation_count"]) == ("open", 999, 1500)

    run("pool", "add", "P-0042", "--file", run.units_file(extra[:1], "one-more.txt"))

    # A product may raise the minimum: the same 1,000-donor pool does not close under a 1,200-donor policy.
    stricter = run.workdir / "stricter.toml"
    stricter.write_text("[products.ivig]\nmin_donors = 1200\n", encoding="utf-8")
    raised = run("--policy", str(stricter), "pool", "close", "P-0042", code=ExitCode.RULE_VIOLATION)
    assert "Pool P-0042 has 1,000 distinct donors; 1,200 are required." in raised.stderr
    assert pool_json(run, "P-0042")["status"] == "open"

    closed = run("pool", "close", "P-0042")
    assert "1,000 distinct donors" in closed.stderr and "1,501 units" in closed.stderr
    shown = pool_json(run, "P-0042")
    assert (shown["status"], shown["donor_count"], shown["donation_count"]) == ("closed", 1000, 1501)
    assert shown["volume_ml"] == 1501 * 750

    late = run("pool", "add", "P-0042", extra[1], code=ExitCode.RULE_VIOLATION)
    assert "P-0042" in late.stderr
    assert pool_json(run, "P-0042")["donation_count"] == 1501

    unreleased = run(
        "lot",
        "create",
        "INT-0001",
        "--product",
        "ivig",
        "--pool",
        "P-0042=100",
        "--kind",
        "intermediate",
        code=ExitCode.RULE_VIOLATION,
    )
    assert "P-0042" in unreleased.stderr
    assert run.json("lot", "list") == []

    run("pool", "test", "P-0042", "--marker", "hbsag", "--result", "NR")
    run("pool", "test", "P-0042", "--marker", "anti-hiv", "--result", "nonreactive")
    missing = run("pool", "release", "P-0042", code=ExitCode.RULE_VIOLATION)
    assert "P-0042" in missing.stderr and "hcv-rna" in missing.stderr
    assert "hbsag" not in missing.stderr

    # An invalid result needs a retest (a reactive one would quarantine the pool: tests/cli/test_holds.py).
    run("pool", "test", "P-0042", "--marker", "hcv-rna", "--result", "invalid")
    invalid = run("pool", "release", "P-0042", code=ExitCode.RULE_VIOLATION)
    assert "hcv-rna: result invalid (version 1), retest needed" in invalid.stderr

    retest = run("pool", "test", "P-0042", "--marker", "hcv-rna", "--result", "negative")
    assert "version 2" in retest.stderr
    run("pool", "release", "P-0042")
    shown = pool_json(run, "P-0042")
    assert shown["status"] == "released"
    assert {(t["marker"], t["version"], t["result"]) for t in shown["tests"]} == {
        ("hbsag", 1, "nonreactive"),
        ("anti-hiv", 1, "nonreactive"),
        ("hcv-rna", 1, "invalid"),
        ("hcv-rna", 2, "nonreactive"),
    }
    assert [row["pool"] for row in run.json("pool", "list", "--status", "released")] == ["P-0042"]


def test_each_ineligible_unit_is_refused_with_its_reason_and_nothing_is_added(run: Cli) -> None:
    recent = datetime.now(UTC) - timedelta(days=20)
    with seeded(run.db_url) as session:
        good = bulk_units(session, donors_count=1, units_per_donor=2)
        [applicant] = bulk_units(session, donors_count=1, units_per_donor=1)
        held = bulk_units(session, donors_count=1, units_per_donor=2, collected_at=recent)[1]
        donor = make_donor(session)
        untested = make_unit(session, donor=donor, panel=None).unit_number
        partial = make_unit(
            session, donor=donor, panel={m: ResultValue.NONREACTIVE for m in PANEL if m != Marker.HBV_DNA}
        ).unit_number
        discarded, empty, deferred, reactive = bulk_units(session, donors_count=4, units_per_donor=2)[::2]
    run("donation", "discard", discarded, "--reason", "bag leaked")
    run("donation", "correct", empty, "--set", "volume_ml=0", "--reason", "empty bag")
    deferred_donor = run.json("donation", "show", deferred)["donor_code"]
    run("donor", "defer", deferred_donor, "--reason", "travel", "--from", "2025-12-01", "--until", "2026-12-01")
    run("result", "add", reactive, "--marker", "hcv-rna", "--result", "positive", "--tested-at", "2026-01-05T10:00Z")
    run("pool", "create", "P-0007", "--product", "albumin")

    cases = {
        untested: "screening incomplete: no result for hbsag, anti-hiv, anti-hcv, hiv-rna, hcv-rna, hbv-dna",
        partial: "screening incomplete: no result for hbv-dna",
        held: "inventory hold until",
        applicant: "not qualified",
        discarded: "not in inventory: discarded",
        empty: "volume 0 mL is not positive",
        deferred: "was deferred at collection",
        reactive: "reactive: hcv-rna",
    }
    for unit, reason in cases.items():
        refused = run("pool", "add", "P-0007", unit, code=ExitCode.RULE_VIOLATION)
        assert "P-0007" in refused.stderr, unit
        assert unit in refused.stderr and reason in refused.stderr, unit
        assert pool_json(run, "P-0007")["donation_count"] == 0

    # A refusal lists every reason for every unit, and takes none of them, not even the eligible one.
    everything = run("pool", "add", "P-0007", "--file", run.units_file([good[0], *cases]), code=ExitCode.RULE_VIOLATION)
    assert f"{len(cases)} units are not eligible" in everything.stderr
    for unit, reason in cases.items():
        assert unit in everything.stderr and reason in everything.stderr, unit
    assert good[0] not in everything.stderr
    assert pool_json(run, "P-0007")["donation_count"] == 0
    assert run.json("donation", "show", good[0])["status"] == "in-inventory"

    assert "2 units added" in run("pool", "add", "P-0007", *good).stderr
    assert pool_json(run, "P-0007")["donation_count"] == 2

    # The applicant's first unit waits until a second tested donation qualifies the donor.
    applicant_donor = run.json("donation", "show", applicant)["donor_code"]
    run(
        "donation",
        "add",
        "A888826000001",
        "--donor",
        applicant_donor,
        "--collected-at",
        "2026-03-01T09:00Z",
        "--volume-ml",
        "700",
    )
    for marker in PANEL:
        run(
            "result",
            "add",
            "A888826000001",
            "--marker",
            marker.value,
            "--result",
            "NR",
            "--tested-at",
            "2026-03-02T09:00Z",
        )
    run("pool", "add", "P-0007", applicant, "A888826000001")
    assert pool_json(run, "P-0007")["donation_count"] == 4


def test_a_unit_cannot_be_added_to_two_pools(run: Cli) -> None:
    with seeded(run.db_url) as session:
        units = bulk_units(session, donors_count=2, units_per_donor=2)
    run("pool", "create", "P-A", "--product", "ivig")
    run("pool", "create", "P-B", "--product", "ivig")
    run("pool", "add", "P-A", units[0], units[2])

    conflict = run("pool", "add", "P-B", units[0], code=ExitCode.CONFLICT)
    assert units[0] in conflict.stderr and "P-A" in conflict.stderr

    # The same unit in a printed form is the same unit.
    printed = run("pool", "add", "P-B", units[0] + din_check_character(units[0]), code=ExitCode.CONFLICT)
    assert units[0] in printed.stderr and "P-A" in printed.stderr

    partly = run("pool", "add", "P-B", units[1], units[2], code=ExitCode.CONFLICT)
    assert units[2] in partly.stderr and "P-A" in partly.stderr
    assert pool_json(run, "P-B")["donation_count"] == 0
    assert run.json("donation", "show", units[1])["status"] == "in-inventory"

    both = run("pool", "add", "P-B", "--file", run.units_file([units[0], units[2]]), code=ExitCode.CONFLICT)
    assert units[0] in both.stderr and units[2] in both.stderr and "P-A" in both.stderr

    again = run("pool", "add", "P-A", units[0], code=ExitCode.CONFLICT)
    assert units[0] in again.stderr and "P-A" in again.stderr

    assert pool_json(run, "P-A")["donation_count"] == 2
    assert run.json("trace", "unit", units[0])["pool_number"] == "P-A"


def test_a_units_file_saved_with_a_byte_order_mark_and_crlf_line_ends_is_read(run: Cli) -> None:
    with seeded(run.db_url) as session:
        units = bulk_units(session, donors_count=2, units_per_donor=2)[::2]
    run("pool", "create", "P-0008", "--product", "ivig")
    path = run.workdir / "exported.txt"
    path.write_bytes("\ufeff".encode() + "\r\n".join(units).encode("ascii") + b"\r\n")
    assert "2 units added" in run("pool", "add", "P-0008", "--file", str(path)).stderr
    assert pool_json(run, "P-0008")["donation_count"] == 2
