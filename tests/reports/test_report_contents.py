"""Reports (SPEC §13): the lineage picture, the flags on the lineage, pool tests by version, the audit history laid
out field by field, the manifest, and the same bytes from the same database."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import Session

from tests.factories import ACTOR, NOW
from tests.lineage_data import build_lineage, built_fixture  # noqa: F401 (a fixture)
from traceability.models import Donation, Marker, Pool, PoolStatus, ResultValue, StepMethod, StepOutcome
from traceability.queries.lineage import trace_lot
from traceability.reports import lineage_graph
from traceability.reports.lineage_report import build_report, read_manifest, software_version, write_report
from traceability.reports.sections import lot_document
from traceability.rules import DEFAULT_POLICY, policy_digest
from traceability.services import inactivation, lookback, lots, pools, units


def section(report, title):  # type: ignore[no-untyped-def]
    return next(s for s in [*report.flags, *report.sections] if s.title == title)


def test_the_picture_has_pools_and_lots_with_counts_and_inputs_with_quantities_never_donations(
    built: tuple[Session, dict[str, Any]],
) -> None:
    session, _ = built
    report = build_report(session, "lot", "IVG-1")

    nodes = {n.ident: n for n in report.graph.nodes}
    assert set(nodes) == {"pool:P-A", "pool:P-B", "lot:FII-1", "lot:IVG-1"}
    assert nodes["pool:P-A"].lines[1] == "1,000 donors, 2,000 donations"
    assert nodes["lot:IVG-1"].lines[1] == "2,000 donors, 4,000 donations"
    assert "status: released" in nodes["lot:IVG-1"].lines
    edges = {(e.source, e.target): e.label for e in report.graph.edges}
    assert edges == {
        ("pool:P-A", "lot:FII-1"): "700 L",
        ("pool:P-B", "lot:FII-1"): "650 L",
        ("lot:FII-1", "lot:IVG-1"): "40 kg",
    }
    assert not any(n.alert for n in report.graph.nodes)

    report = build_report(session, "pool", "P-B")  # a pool: itself and every lot made from it
    assert {n.ident for n in report.graph.nodes} == {"pool:P-B", "lot:FII-1", "lot:IVG-1"}
    assert [r[0] for r in section(report, "Pool tests (every version)").rows] == ["P-B"] * 3


def test_the_lineage_table_prints_each_draw_with_its_unit_in_the_report_and_lot_show(
    built: tuple[Session, dict[str, Any]],
) -> None:
    session, _ = built
    rows = section(build_report(session, "lot", "IVG-1"), "Lineage (inputs)").rows
    assert sorted(rows) == [
        ["FII-1", "pool", "P-A", 700_000, "mL"],
        ["FII-1", "pool", "P-B", 650_000, "mL"],
        ["IVG-1", "lot", "FII-1", 40, "kg"],
    ]
    shown = lot_document(trace_lot(session, "IVG-1")).section("Lineage (inputs)")  # what `lot show` prints
    assert shown.columns[-2:] == ["quantity", "unit"] and sorted(shown.rows) == sorted(rows)


def test_both_layouts_place_every_box_without_overlap_and_draw_every_arrow(
    built: tuple[Session, dict[str, Any]],
) -> None:
    session, _ = built
    graph = build_report(session, "lot", "IVG-1").graph
    engines = [lineage_graph.layout_layered(graph)]
    dot = shutil.which("dot")
    if dot:  # .ci/run installs Graphviz, so CI checks both
        engines.append(lineage_graph.layout_with_dot(graph, dot))
    for drawn in engines:
        boxes = list(drawn.boxes.values())
        assert len(boxes) == 4 and len(drawn.curves) == 3
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                apart = a.x + a.width <= b.x or b.x + b.width <= a.x or a.y + a.height <= b.y or b.y + b.height <= a.y
                assert apart, drawn.engine
        pools_x = max(drawn.boxes[i].x for i in ("pool:P-A", "pool:P-B"))
        assert pools_x < drawn.boxes["lot:FII-1"].x < drawn.boxes["lot:IVG-1"].x  # inputs left of outputs
        svg = lineage_graph.to_svg(graph, drawn)
        assert svg.count("<rect") == 4 and svg.count("marker-end") == 3 and ">700 L<" in svg
        assert "A9999" not in svg  # never a donation


def test_quarantines_open_cases_reactive_donors_and_deviations_are_flagged(session: Session) -> None:
    made = build_lineage(session)
    clean = build_report(session, "lot", "IVG-1")
    assert [len(s.rows) for s in clean.flags] == [0, 0, 0, 0]

    pool = session.execute(select(Pool).where(Pool.pool_number == "P-B")).scalar_one()
    pool.status, pool.status_reason = PoolStatus.QUARANTINED, "HCV RNA version 2 reactive"
    lots.create_lot(
        session,
        lot_number="FII-2",
        product="ivig",
        kind="intermediate",
        inputs=[lots.InputSpec("pool", "P-A", 10, "L")],
        actor=ACTOR,
    )
    inactivation.add_step(
        session,
        method=StepMethod.LOW_PH,
        started_at=NOW,
        ended_at=NOW + timedelta(hours=1),
        pool_number="P-A",
        lrv={"enveloped": 4.0},
        outcome=StepOutcome.DEVIATION,
        actor=ACTOR,
    )
    donation = session.execute(select(Donation).where(Donation.unit_number == made["a"][0])).scalar_one()
    donor_code = donation.donor.donor_code if hasattr(donation, "donor") else None
    from traceability.models import Donor

    donor_code = session.execute(select(Donor.donor_code).where(Donor.id == donation.donor_id)).scalar_one()
    case = lookback.open_case(session, donor_code=donor_code, reason="PDI from another centre", actor=ACTOR)
    units.add_result(
        session,
        unit_number=made["a"][1],
        marker=Marker.HCV_RNA,
        result=ResultValue.REACTIVE,
        tested_at=NOW + timedelta(days=1),
        actor=ACTOR,
        reason="retest",
    )
    session.flush()

    report = build_report(session, "lot", "IVG-1")
    # The open deviation recorded on P-A holds every lot made from it (FII-1, and IVG-1 from FII-1).
    held = section(report, "Holds and quarantines").rows
    assert ["pool", "P-B", "quarantined", "HCV RNA version 2 reactive"] in held
    # ... and the open look-back case holds them too (SPEC §12), each hold naming the case.
    assert {(r[0], r[1], r[2]) for r in held if r[0] == "lot"} == {
        ("lot", "FII-1", "quarantined"),
        ("lot", "IVG-1", "quarantined"),
        ("lot", "FII-1", "held"),
        ("lot", "IVG-1", "held"),
    }
    quarantined = [r for r in held if r[0] == "lot" and r[2] == "quarantined"]
    assert all("step P-A-S2 (low-ph) has an open deviation on pool P-A" in r[3] for r in quarantined)
    assert all(f"look-back case {case.case_number}" in r[3] for r in held if r[2] == "held")
    cases = section(report, "Open look-back cases").rows
    assert [c[0] for c in cases] == [case.case.case_number if hasattr(case, "case") else cases[0][0]]
    assert cases[0][1] == donor_code and f"{made['a'][0]} (P-A)" in cases[0][4]
    reactive = section(report, "Donors with reactive results").rows
    assert [(r[1], r[2], r[5]) for r in reactive] == [(made["a"][1], "hcv-rna", "yes")]
    deviations = section(report, "Deviations and failed steps").rows
    assert [(d[0], d[3], d[4]) for d in deviations] == [("P-A-S2", "deviation", "open")]
    nodes = {n.ident: n for n in report.graph.nodes}
    assert nodes["pool:P-B"].alert and nodes["pool:P-A"].alert  # quarantined; open case
    assert "open look-back case" in nodes["pool:P-A"].lines and "1 donor(s) now reactive" in nodes["pool:P-A"].lines
    assert "held: open look-back case" in nodes["lot:IVG-1"].lines and nodes["lot:IVG-1"].alert
    assert "FII-2" not in {n.key for n in report.graph.nodes}  # not on this lot's lineage


def test_pool_tests_show_every_version_and_which_is_current(session: Session) -> None:
    build_lineage(session)
    pools.test_pool(
        session,
        pool_number="P-A",
        marker=Marker.HCV_RNA,
        result=ResultValue.NONREACTIVE,
        tested_at=NOW,
        actor=ACTOR,
    )
    rows = section(build_report(session, "lot", "IVG-1"), "Pool tests (every version)").rows
    hcv = [r for r in rows if r[0] == "P-A" and r[1] == "hcv-rna"]
    assert [(r[2], r[3], r[7]) for r in hcv] == [(1, "superseded", ""), (2, "current", "repeat test")]


def test_the_history_lays_out_old_and_new_values_and_includes_corrections(session: Session) -> None:
    made = build_lineage(session)
    units.correct_donation(
        session,
        unit_number=made["b"][3],
        changes={"volume_ml": "612"},
        reason="scale misread",
        actor=ACTOR,
        deviation="DEV-1",
    )
    report = build_report(session, "lot", "IVG-1")
    corrected = [h for h in report.history if h.action == "donation.corrected"]
    assert len(corrected) == 1 and corrected[0].key == made["b"][3] and corrected[0].reason == "scale misread"
    fields = {name: (old, new) for name, old, new in corrected[0].fields}
    assert fields["volume_ml"][1] == 612 and fields["version"] == (1, 2)
    actions = [h.action for h in report.history]
    assert {"pool.created", "pool.closed", "pool.released", "lot.created", "lot.released", "lot.shipped"} <= set(
        actions
    )
    assert [h.seq for h in report.history] == sorted(h.seq for h in report.history)
    assert dict(report.summary)["changed since original entry"].startswith("1 unit record(s)")


def test_the_manifest_names_checkpoint_policy_version_and_parts_and_two_builds_are_the_same_bytes(
    built: tuple[Session, dict[str, Any]], tmp_path: Path
) -> None:
    session, _ = built
    report = build_report(session, "lot", "IVG-1")
    manifest = report.manifest()
    assert manifest["audit_checkpoint"] == report.audit_checkpoint and ":" in manifest["audit_checkpoint"]
    assert manifest["policy_sha256"] == policy_digest(DEFAULT_POLICY) and len(manifest["policy_sha256"]) == 64
    assert manifest["software_version"] == software_version() != ""
    assert {"lineage", "audit history", "trace", "flag: Open look-back cases"} <= set(manifest["parts_sha256"])
    for fmt in ("json", "html", "pdf", "csv"):
        out = tmp_path / f"r.{fmt}"
        write_report(report, fmt, out)
        assert read_manifest(out) == (fmt, json.loads(json.dumps(manifest)))

    # the same database gives the same bytes in every format
    for fmt in ("json", "html", "pdf", "csv"):
        first, second = tmp_path / f"1.{fmt}", tmp_path / f"2.{fmt}"
        write_report(build_report(session, "lot", "IVG-1"), fmt, first)
        write_report(build_report(session, "lot", "IVG-1"), fmt, second)
        assert first.read_bytes() == second.read_bytes(), fmt


def test_unicode_consignees_print_in_html_and_pdf(built: tuple[Session, dict[str, Any]], tmp_path: Path) -> None:
    session, _ = built
    report = build_report(session, "lot", "IVG-1")
    write_report(report, "html", tmp_path / "r.html")
    write_report(report, "pdf", tmp_path / "r.pdf")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Szpital Łódź" in page and "東京病院" in page
    pdf = (tmp_path / "r.pdf").read_bytes()
    assert b"DejaVuSans" in pdf and b"DroidSansFallback" in pdf  # both fonts embedded (subset)
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed; .ci/run installs it")
    text = subprocess.run(
        ["pdftotext", "-enc", "UTF-8", str(tmp_path / "r.pdf"), "-"], capture_output=True, check=True
    ).stdout.decode("utf-8")
    assert "Szpital Łódź" in text and "東京病院" in text
    pages = text.count("\f")
    assert f"page 1 of {pages}" in text and f"page {pages} of {pages}" in text
