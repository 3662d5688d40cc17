"""`trace ... --as-of T` and `report ... --as-of T` from the command line: the records as they were at T, the same
JSON keys plus `as_of`, clear refusals for a time in the future or before the first event, and a report built as
of T that still verifies after later changes."""

from __future__ import annotations

import json
import time
from datetime import datetime

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
from traceability.errors import ExitCode
from traceability.models import LotKind, StepMethod, utcnow
from traceability.services import lots


def moment() -> str:
    time.sleep(0.005)
    at = utcnow()
    time.sleep(0.005)
    return at.isoformat()


def test_trace_and_report_as_of_show_the_records_of_that_time(run: Cli) -> None:
    with seeded(run.db_url) as session:
        pool = make_released_pool(session, bulk=True, pool_number="P-T")
    t1 = moment()
    with seeded(run.db_url) as session:
        make_step(session, pool=pool, method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
        paste = make_lot(session, lot_number="PASTE-T", inputs=[("pool", pool)], kind=LotKind.INTERMEDIATE)
        lots.release_lot(session, lot_number=paste, actor=APPROVER)
        final = make_lot(session, lot_number="FIN-T", inputs=[("lot", paste)])
        make_step(session, lot=final, method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.2)
        lots.release_lot(session, lot_number=final, actor=APPROVER)
        backdate_release(session, final)
    t2 = moment()
    with seeded(run.db_url) as session:
        to = make_consignee(session, name="Hospital A")
        lots.ship_lot(session, lot_number=final, consignee=to, quantity=40, shipped_on=NOW.date(), actor=ACTOR)

    then, now = run.json("trace", "pool", pool, "--as-of", t1), run.json("trace", "pool", pool)
    assert (then["status"], then["lots"], then["as_of"]) == ("released", [], datetime.fromisoformat(t1).isoformat())
    assert set(then) == set(now) | {"as_of"} and now["lots"] == ["FIN-T", "PASTE-T"]
    assert run.json("trace", "pool", pool, "--as-of", t2)["shipments"] == [] and len(now["shipments"]) == 1
    table = run("trace", "pool", pool, "--as-of", t1).stdout
    assert "as recorded at" in table and "as of" in table

    missing = run("trace", "lot", "FIN-T", "--as-of", t1, code=ExitCode.NOT_FOUND)
    assert "Lot FIN-T was first recorded at" in missing.stderr
    future = run("trace", "lot", "FIN-T", "--as-of", "2999-01-01", code=ExitCode.INVALID_INPUT)
    assert "is in the future" in future.stderr
    early = run("trace", "donor", "D-NONE", "--as-of", "2000-01-01T00:00:00Z", code=ExitCode.INVALID_INPUT)
    assert "before the first audit event" in early.stderr
    wrong = run("trace", "unit", "X", "--as-of", "last week", code=ExitCode.INVALID_INPUT)
    assert "not an ISO 8601" in wrong.stderr

    report = run.workdir / "fin.json"
    run("report", "lot", "FIN-T", "--format", "json", "--output", str(report), "--as-of", t2)
    document = json.loads(report.read_text(encoding="utf-8"))
    assert document["manifest"]["as_of"] == document["data"]["as_of"] == datetime.fromisoformat(t2).isoformat()
    assert document["data"]["shipments"] == [] and document["data"]["status"] == "released"
    assert "lot.shipped" not in {e["action"] for e in document["audit_history"]}
    assert document["summary"]["as of"].startswith(document["data"]["as_of"])
    assert "matches the database" in run("report", "verify", str(report)).stderr  # the shipment came after T
    html = run.workdir / "fin.html"
    run("report", "lot", "FIN-T", "--format", "html", "--output", str(html), "--as-of", t2)
    assert "as recorded at" in html.read_text(encoding="utf-8")
    today = run.workdir / "today.json"
    run("report", "lot", "FIN-T", "--format", "json", "--output", str(today))
    assert "as_of" not in json.loads(today.read_text(encoding="utf-8"))["manifest"]
