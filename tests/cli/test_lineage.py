"""Steps, lots, shipments and traces from the command line, on a lineage of two released 1,000-donor pools.

Pool P-A: 1,000 donors, 1,500 units. Pool P-B: 1,000 donors, 1,000 units, of whom 500 also gave to P-A.
Intermediate INT-1 is made from both pools, final FIN-1 from INT-1: 1,500 distinct donors and 2,500 donations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tests.cli.conftest import Cli, seeded
from tests.factories import bulk_units
from traceability.errors import ExitCode

STARTED, ENDED = "2026-06-10T08:00:00Z", "2026-06-10T14:00:00Z"
KG, VIALS = ("--quantity", "100", "--unit", "kg"), ("--quantity", "500", "--unit", "vials")


def add_consignees(run: Cli) -> None:
    run("consignee", "add", "H-A", "--name", "Hospital A", "--address", "1 Main Street, Springfield", "--country", "US")
    run("consignee", "add", "C-B", "--name", "Clinic B", "--address", "2 High Street, Shelbyville")


@dataclass
class Site:
    pool_a: list[str]
    pool_b: list[str]
    shared: list[str]  # the two units of a donor who gave to both pools: the first in P-A, the second in P-B


def released_pools(run: Cli) -> Site:
    """Two released pools with a solvent-detergent step each, built through the CLI from bulk test units."""
    with seeded(run.db_url) as session:
        first = bulk_units(session, donors_count=1000, units_per_donor=2)  # donor i: first[2i], first[2i + 1]
        second = bulk_units(session, donors_count=500, units_per_donor=2)
    pool_a = [first[2 * i] for i in range(500)] + first[1000:]  # donors 0-499 once, donors 500-999 twice
    pool_b = [first[2 * i + 1] for i in range(500)] + second[::2]  # donors 0-499 again, plus 500 new donors
    for pool, units in (("P-A", pool_a), ("P-B", pool_b)):
        run("pool", "create", pool, "--product", "ivig")
        run("pool", "add", pool, "--file", run.units_file(units, f"{pool}.txt"))
        run("pool", "close", pool)
        for marker in ("hbsag", "anti-hiv", "hcv-rna"):
            run("pool", "test", pool, "--marker", marker, "--result", "NR")
        run("pool", "release", pool)
        run(
            "step",
            "add",
            "--pool",
            pool,
            "--method",
            "solvent-detergent",
            "--started-at",
            STARTED,
            "--ended-at",
            ENDED,
            "--param",
            "tnbp_pct=0.3",
            "--lrv",
            "enveloped=6",
        )
    return Site(pool_a=pool_a, pool_b=pool_b, shared=[first[0], first[1]])


def make_lots(run: Cli) -> None:
    run(
        "lot",
        "create",
        "INT-1",
        "--product",
        "ivig",
        "--pool",
        "P-A=100L",
        "--pool",
        "P-B=90L",
        "--kind",
        "intermediate",
        *KG,
    )
    run("lot", "release", "INT-1")
    run("lot", "create", "FIN-1", "--product", "ivig", "--lot", "INT-1=80", "--kind", "final", *VIALS)


def test_a_final_lot_is_released_only_with_clearance_on_every_path_then_shipped(run: Cli) -> None:
    released_pools(run)
    created = run(
        "lot",
        "create",
        "INT-1",
        "--product",
        "ivig",
        "--pool",
        "P-A=100L",
        "--pool",
        "P-B=90L",
        "--kind",
        "intermediate",
        *KG,
    )
    assert "INT-1" in created.stderr
    add_consignees(run)
    not_yet = run("lot", "ship", "INT-1", "--to", "H-A", "--quantity", "1", code=ExitCode.RULE_VIOLATION)
    assert "INT-1" in not_yet.stderr

    # A step with an open deviation holds the lot until QA closes the deviation.
    run(
        "step",
        "add",
        "--lot",
        "INT-1",
        "--method",
        "low-ph",
        "--started-at",
        STARTED,
        "--ended-at",
        ENDED,
        "--param",
        "ph=4.2",
        "--lrv",
        "enveloped=2",
        "--outcome",
        "deviation",
    )
    deviation = run("lot", "release", "INT-1", code=ExitCode.RULE_VIOLATION)
    assert "INT-1" in deviation.stderr and "INT-1-S1" in deviation.stderr and "deviation" in deviation.stderr
    run("step", "close-deviation", "INT-1-S1", "--reason", "CAPA-17: within validated range")
    run("lot", "release", "INT-1")

    run("lot", "create", "FIN-1", "--product", "ivig", "--lot", "INT-1=80", "--kind", "final", *VIALS)
    refused = run("lot", "release", "FIN-1", code=ExitCode.RULE_VIOLATION)
    assert "FIN-1" in refused.stderr
    # Both paths fall short alike: the worst path per class is named.
    assert "P-A -> INT-1 -> FIN-1" in refused.stderr or "P-B -> INT-1 -> FIN-1" in refused.stderr
    assert "non-enveloped" in refused.stderr
    assert run.json("lot", "show", "FIN-1")["status"] == "pending"

    step = run(
        "step",
        "add",
        "--lot",
        "FIN-1",
        "--method",
        "nanofiltration",
        "--started-at",
        "2026-06-20T08:00Z",
        "--ended-at",
        "2026-06-20T12:00Z",
        "--param",
        "pore_nm=20",
        "--lrv",
        "non-enveloped=4.5",
        "--lrv",
        "enveloped=5",
    )
    assert "FIN-1-S1" in step.stderr
    run("lot", "release", "FIN-1")
    lot = run.json("lot", "show", "FIN-1")
    assert lot["status"] == "released" and lot["clearance_problems"] == []

    late_step = run(
        "step",
        "add",
        "--lot",
        "FIN-1",
        "--method",
        "low-ph",
        "--started-at",
        STARTED,
        "--ended-at",
        ENDED,
        "--lrv",
        "enveloped=4",
        code=ExitCode.RULE_VIOLATION,
    )
    assert "FIN-1" in late_step.stderr

    shipped = run("lot", "ship", "FIN-1", "--to", "H-A", "--quantity", "10")
    assert "FIN-1" in shipped.stderr and "Hospital A" in shipped.stderr
    listed = {row["lot"]: row for row in run.json("lot", "list")}
    assert listed["FIN-1"]["status"] == "released" and listed["FIN-1"]["shipped"] == 10
    assert (listed["INT-1"]["kind"], listed["INT-1"]["inputs"]) == ("intermediate", 2)

    # Material that skipped a step did not get its benefit: the final lot gets its worst path.
    run("lot", "create", "INT-2", "--product", "ivig", "--pool", "P-A=50L", "--kind", "intermediate", *KG)
    run(
        "step",
        "add",
        "--lot",
        "INT-2",
        "--method",
        "nanofiltration",
        "--started-at",
        STARTED,
        "--ended-at",
        ENDED,
        "--lrv",
        "non-enveloped=4.5",
        "--lrv",
        "enveloped=5",
    )
    run("lot", "release", "INT-2")
    run(
        "lot",
        "create",
        "FIN-2",
        "--product",
        "ivig",
        "--lot",
        "INT-2=40",
        "--pool",
        "P-B=10L",
        "--kind",
        "final",
        *VIALS,
    )

    refused = run("lot", "release", "FIN-2", code=ExitCode.RULE_VIOLATION)
    assert "P-B -> FIN-2" in refused.stderr
    assert "P-A -> INT-2 -> FIN-2" not in refused.stderr
    clearance = {" -> ".join(c["path"]): c for c in run.json("trace", "lot", "FIN-2")["clearance"]}
    # The worst path per virus class, with its values: here one path is worst for both.
    assert set(clearance) == {"P-B -> FIN-2"}
    assert clearance["P-B -> FIN-2"]["worst_for"] == ["enveloped", "non-enveloped"]
    assert clearance["P-B -> FIN-2"]["cumulative_log10"] == {"enveloped": 6.0, "non-enveloped": 0.0}


def test_lot_pool_donor_and_unit_traces_report_the_whole_lineage_as_json_csv_and_tables(run: Cli) -> None:
    site = released_pools(run)
    today = datetime.now(UTC).date().isoformat()
    make_lots(run)
    run(
        "step",
        "add",
        "--lot",
        "FIN-1",
        "--method",
        "nanofiltration",
        "--started-at",
        STARTED,
        "--ended-at",
        ENDED,
        "--lrv",
        "non-enveloped=4.5",
        "--lrv",
        "enveloped=5",
    )
    run("lot", "release", "FIN-1")
    add_consignees(run)
    run("lot", "ship", "FIN-1", "--to", "H-A", "--quantity", "10", "--shipped-on", today)
    run("lot", "ship", "FIN-1", "--to", "C-B", "--quantity", "5")

    lot = run.json("trace", "lot", "FIN-1")
    assert {"lot_number", "pools", "lots", "donor_count", "donation_count", "steps", "shipments"} <= lot.keys()
    assert "donations" not in lot
    assert lot["lot_number"] == "FIN-1"
    assert lot["pools"] == [
        {
            "pool_number": "P-A",
            "product": "ivig",
            "status": "released",
            "donor_count": 1000,
            "donation_count": 1500,
            "volume_ml": 1500 * 750,
        },
        {
            "pool_number": "P-B",
            "product": "ivig",
            "status": "released",
            "donor_count": 1000,
            "donation_count": 1000,
            "volume_ml": 1000 * 750,
        },
    ]
    assert lot["lots"] == ["INT-1"]
    assert (lot["donor_count"], lot["donation_count"]) == (1500, 2500)
    assert sorted(s["step_key"] for s in lot["steps"]) == ["FIN-1-S1", "P-A-S1", "P-B-S1"]
    assert [(s["lot_number"], s["consignee"], s["quantity"], s["shipped_on"]) for s in lot["shipments"]] == [
        ("FIN-1", "Hospital A", 10, today),
        ("FIN-1", "Clinic B", 5, today),
    ]

    members = run.json("trace", "lot", "FIN-1", "--members")
    donations = members["donations"]
    assert len(donations) == 2500
    assert len({d["unit_number"] for d in donations}) == 2500
    assert len({d["donor_code"] for d in donations}) == 1500
    assert {d["unit_number"] for d in donations} == set(site.pool_a) | set(site.pool_b)
    by_unit = {d["unit_number"]: d for d in donations}
    assert by_unit[site.pool_a[0]]["pool_number"] == "P-A" and by_unit[site.pool_b[0]]["pool_number"] == "P-B"
    assert all({"unit_number", "donor_code", "pool_number"} <= d.keys() for d in donations)

    intermediate = run.json("trace", "lot", "INT-1")
    assert (intermediate["donor_count"], intermediate["donation_count"], intermediate["lots"]) == (1500, 2500, [])

    # P-A reaches this lot twice, directly and through INT-1: its donors and donations still count once.
    run(
        "lot", "create", "DIA-1", "--product", "ivig", "--lot", "INT-1=5", "--pool", "P-A=5L", "--kind", "final", *VIALS
    )
    diamond = run.json("trace", "lot", "DIA-1", "--members")
    assert [p["pool_number"] for p in diamond["pools"]] == ["P-A", "P-B"] and diamond["lots"] == ["INT-1"]
    assert (diamond["donor_count"], diamond["donation_count"]) == (1500, 2500)
    assert len(diamond["donations"]) == len({d["unit_number"] for d in diamond["donations"]}) == 2500
    # Three paths, all alike (S/D on each pool only): the worst path of each class is one of them.
    worst = diamond["clearance"]
    assert {c for w in worst for c in w["worst_for"]} == {"enveloped", "non-enveloped"}
    assert {" -> ".join(w["path"]) for w in worst} <= {"P-A -> INT-1 -> DIA-1", "P-B -> INT-1 -> DIA-1", "P-A -> DIA-1"}

    pool = run.json("trace", "pool", "P-A")
    assert {"pool_number", "status", "donor_count", "donation_count", "volume_ml", "lots", "shipments"} <= pool.keys()
    assert (pool["pool_number"], pool["status"], pool["donor_count"], pool["donation_count"]) == (
        "P-A",
        "released",
        1000,
        1500,
    )
    assert pool["volume_ml"] == 1500 * 750
    assert pool["lots"] == ["DIA-1", "FIN-1", "INT-1"]
    assert sorted(s["consignee"] for s in pool["shipments"]) == ["Clinic B", "Hospital A"]
    assert len(run.json("trace", "pool", "P-B", "--members")["donations"]) == 1000

    donor_code = run.json("donation", "show", site.shared[0])["donor_code"]
    donor = run.json("trace", "donor", donor_code)
    assert {"donor_code", "donations", "pools", "lots", "shipments"} <= donor.keys()
    assert donor["donor_code"] == donor_code
    assert [(d["unit_number"], d["status"], d["pool_number"], d["lot_numbers"]) for d in donor["donations"]] == [
        (site.shared[0], "pooled", "P-A", ["DIA-1", "FIN-1", "INT-1"]),
        (site.shared[1], "pooled", "P-B", ["DIA-1", "FIN-1", "INT-1"]),
    ]
    assert all(d["collected_at"].startswith("2026-01-") for d in donor["donations"])
    assert donor["pools"] == ["P-A", "P-B"] and donor["lots"] == ["DIA-1", "FIN-1", "INT-1"]
    assert sorted((s["lot_number"], s["consignee"], s["shipped_on"], s["quantity"]) for s in donor["shipments"]) == [
        ("FIN-1", "Clinic B", today, 5),
        ("FIN-1", "Hospital A", today, 10),
    ]

    unit = run.json("trace", "unit", site.shared[1])
    assert (unit["pool_number"], unit["lots"], len(unit["shipments"])) == ("P-B", ["DIA-1", "FIN-1", "INT-1"], 2)

    lot_csv = run("trace", "lot", "FIN-1", "--format", "csv").stdout.splitlines()
    assert lot_csv[0] == "pool,product,status,distinct donors,donations,volume mL"
    assert [line.split(",")[0] for line in lot_csv[1:]] == ["P-A", "P-B"]

    members_csv = run("trace", "lot", "FIN-1", "--members", "--format", "csv").stdout.splitlines()
    assert members_csv[0] == "unit,donor,pool,collected at"
    assert len(members_csv) == 1 + 2500

    donor_csv = run("trace", "donor", donor_code, "-f", "csv").stdout.splitlines()
    assert donor_csv[0].startswith("unit,collected at,")
    assert len(donor_csv) == 3

    table = run("trace", "lot", "FIN-1").stdout
    assert "FIN-1" in table and "P-A" in table and "INT-1" in table and "1,500" in table
