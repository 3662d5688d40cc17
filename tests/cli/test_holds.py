"""A reactive pool retest after release, from the command line: the pool quarantined, the lots downstream held
and named with their consignees, and a shipment refused with exit 3."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.cli.conftest import Cli
from tests.cli.test_lineage import ENDED, STARTED, add_consignees, make_lots, released_pools
from traceability.errors import ExitCode


def test_a_reactive_pool_retest_names_the_lots_held_and_their_consignees_and_stops_shipment(run: Cli) -> None:
    released_pools(run)
    make_lots(run)
    run(
        "step", "add", "--lot", "FIN-1", "--method", "nanofiltration", "--started-at", STARTED, "--ended-at", ENDED,
        "--lrv", "enveloped=5", "--lrv", "non-enveloped=4.5",
    )  # fmt: skip
    run("lot", "release", "FIN-1")
    add_consignees(run)
    today = datetime.now(UTC).date().isoformat()  # a shipment is not dated before its lot's release
    run("lot", "ship", "FIN-1", "--to", "H-A", "--quantity", "10", "--shipped-on", today)

    retest = run("pool", "test", "P-B", "--marker", "hcv-rna", "--result", "R")
    assert "(version 2)" in retest.stderr
    assert "Pool P-B quarantined." in retest.stderr
    assert "Lots held (quarantined): FIN-1, INT-1." in retest.stderr
    assert "Consignees that received lots downstream: Hospital A." in retest.stderr
    lot = run.json("lot", "show", "FIN-1")
    assert (lot["status"], lot["status_reason"]) == ("quarantined", "pool P-B hcv-rna: reactive (version 2)")
    assert run.json("pool", "show", "P-B")["status_reason"] == "pool test hcv-rna: reactive (version 2)"
    assert "quarantined (pool P-B hcv-rna: reactive (version 2))" in run("lot", "show", "FIN-1").stdout

    refused = run("lot", "ship", "FIN-1", "--to", "C-B", "--quantity", "1", code=ExitCode.RULE_VIOLATION)
    assert "Lot FIN-1 is quarantined (pool P-B hcv-rna: reactive (version 2))" in refused.stderr
    assert run.json("trace", "lot", "FIN-1")["shipments"][0]["consignee"] == "Hospital A"
    assert len(run.json("trace", "lot", "FIN-1")["shipments"]) == 1
