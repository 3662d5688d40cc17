"""Lineage reports for auditors: a lot, a pool or a look-back case, with its audit history and integrity footer.

One builder returns a ``Report`` (sections of rows plus metadata); writers turn it into JSON, CSV, HTML or PDF.
Rows are in a fixed order and times are ISO-8601 UTC, so two reports of the same data diff cleanly; the footer
carries the audit chain's checkpoint and a SHA-256 of the report's data, so a copy can be verified later.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from .. import audit
from ..models import AuditEvent, Donation, utcnow
from ..queries.lineage import trace_case, trace_lot, trace_pool
from ..rules import DEFAULT_POLICY, Policy
from .sections import Document, Section, case_document, lot_document, pool_document
from .writers import dumps_json, write_csv


@dataclass
class Report:
    kind: str
    key: str
    document: Document
    data: dict[str, Any]
    history: Section
    generated_at: str
    generated_by: str
    audit_checkpoint: str
    audit_chain_ok: bool
    audit_problem: str | None
    changed: list[str] = field(default_factory=list)

    @property
    def data_sha256(self) -> str:
        return hashlib.sha256(dumps_json(self.data).encode("utf-8")).hexdigest()


def _history(session: Session, keys: dict[str, set[str]]) -> Section:
    rows: list[list[Any]] = []
    for entity_type, entity_keys in sorted(keys.items()):
        if not entity_keys:
            continue
        events = session.execute(
            select(AuditEvent)
            .where(AuditEvent.entity_type == entity_type, AuditEvent.entity_key.in_(sorted(entity_keys)))
            .order_by(AuditEvent.seq)
        ).scalars()
        rows.extend(
            [
                e.seq,
                e.occurred_at.isoformat(),
                e.actor,
                e.action,
                e.entity_key,
                e.old_values or "",
                e.new_values or "",
                e.reason or "",
            ]
            for e in events
        )
    rows.sort(key=lambda r: r[0])
    return Section("Audit history", ["seq", "at", "actor", "action", "key", "old", "new", "reason"], rows)


def _changed_units(session: Session, unit_numbers: list[str]) -> list[str]:
    """Units whose record was corrected after its original entry (Annex 11 §8.2)."""
    changed: list[str] = []
    for start in range(0, len(unit_numbers), 10_000):
        chunk = unit_numbers[start : start + 10_000]
        changed.extend(
            session.execute(
                select(Donation.unit_number).where(Donation.unit_number.in_(chunk), Donation.version > 1)
            ).scalars()
        )
    return sorted(changed)


def build_report(session: Session, kind: str, key: str, *, actor: str, policy: Policy = DEFAULT_POLICY) -> Report:
    """Build the report of a lot, pool or case. Raises LotNotFound, PoolNotFound or CaseNotFound."""
    units: list[str]
    if kind == "lot":
        trace: Any = trace_lot(session, key, members=True, policy=policy)
        document = lot_document(trace)
        keys = {
            "lot": {trace.lot_number, *trace.lots},
            "pool": {p.pool_number for p in trace.pools},
            "step": {s.step_key for s in trace.steps},
        }
        units = [d.unit_number for d in trace.donations or []]
    elif kind == "pool":
        trace = trace_pool(session, key, members=True, policy=policy)
        document = pool_document(trace)
        keys = {"pool": {trace.pool_number}, "lot": set(trace.lots), "step": {s.step_key for s in trace.steps}}
        units = [d.unit_number for d in trace.donations or []]
    else:
        trace = trace_case(session, key)
        document = case_document(trace)
        units = [f["unit_number"] for f in trace.findings]
        keys = {
            "lookback_case": {trace.case_number},
            "pool": set(trace.pools),
            "lot": set(trace.lots),
            "donation": set(units),
            "donor": {trace.donor_code},
        }
    verification = audit.verify(session)
    changed = _changed_units(session, units)
    if changed:
        document.summary.append(
            (
                "changed since original entry",
                f"{len(changed):,} unit record(s): " + ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else ""),
            )
        )
    else:
        document.summary.append(("changed since original entry", "no unit record was corrected"))
    return Report(
        kind=kind,
        key=key,
        document=document,
        data=trace.as_json(),
        history=_history(session, keys),
        generated_at=utcnow().isoformat(),
        generated_by=actor,
        audit_checkpoint=verification.checkpoint,
        audit_chain_ok=verification.ok,
        audit_problem=verification.problem,
        changed=changed,
    )


def _footer(report: Report) -> list[tuple[str, str]]:
    chain = "intact" if report.audit_chain_ok else f"BROKEN: {report.audit_problem}"
    return [
        ("generated at", report.generated_at),
        ("generated by", report.generated_by),
        ("audit chain", chain),
        ("audit checkpoint", report.audit_checkpoint),
        ("data SHA-256", report.data_sha256),
    ]


def write_report(report: Report, fmt: str, output: Path) -> None:
    """Write the report as json, csv, html or pdf."""
    if fmt == "json":
        document = {
            "report": report.kind,
            "key": report.key,
            **dict(_footer(report)),
            "changed": report.changed,
            "data": report.data,
            "audit_history": [dict(zip(report.history.columns, r, strict=True)) for r in report.history.rows],
        }
        output.write_text(dumps_json(document) + "\n", encoding="utf-8")
    elif fmt == "csv":
        primary = report.document.section(report.document.primary)
        with output.open("w", encoding="utf-8", newline="") as handle:
            write_csv(primary.columns, primary.rows, handle)
    elif fmt == "html":
        output.write_text(_html(report), encoding="utf-8")
    else:
        _pdf(report, output)


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _html(report: Report) -> str:
    doc = report.document
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(doc.title)}: lineage report</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:.25em .5em;font-size:.85em;vertical-align:top}"
        "th{background:#eee;text-align:left}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}"
        "dt{font-weight:bold}footer{margin-top:2em;border-top:1px solid #999;font-size:.85em}</style></head><body>",
        f"<h1>{esc(doc.title)}: lineage report</h1><dl>",
    ]
    parts += [f"<dt>{esc(label)}</dt><dd>{esc(_cell_text(value))}</dd>" for label, value in doc.summary]
    parts.append("</dl>")
    for section in [*doc.sections, report.history]:
        parts.append(f"<h2>{esc(section.title)} ({len(section.rows):,})</h2>")
        if not section.rows:
            parts.append("<p>None.</p>")
            continue
        parts.append(
            "<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in section.columns) + "</tr></thead><tbody>"
        )
        parts += ["<tr>" + "".join(f"<td>{esc(_cell_text(v))}</td>" for v in row) + "</tr>" for row in section.rows]
        parts.append("</tbody></table>")
    parts.append("<footer><dl>")
    parts += [f"<dt>{esc(label)}</dt><dd><code>{esc(value)}</code></dd>" for label, value in _footer(report)]
    parts.append("</dl></footer></body></html>\n")
    return "".join(parts)


def _pdf(report: Report, output: Path) -> None:
    from fpdf import FPDF

    def latin(text: str) -> str:  # the core PDF fonts are Latin-1
        return text.encode("latin-1", "replace").decode("latin-1")

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    doc = report.document
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 8, latin(f"{doc.title}: lineage report"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    for label, value in doc.summary:
        pdf.multi_cell(0, 5, latin(f"{label}: {_cell_text(value)}"), new_x="LMARGIN", new_y="NEXT")
    for section in [*doc.sections, report.history]:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 6, latin(f"{section.title} ({len(section.rows):,})"), new_x="LMARGIN", new_y="NEXT")
        if not section.rows:
            continue
        pdf.set_font("Helvetica", "", 7)
        with pdf.table(text_align="LEFT", first_row_as_headings=True, line_height=3.5) as table:
            table.row([latin(c) for c in section.columns])
            for values in section.rows:
                table.row([latin(_cell_text(v))[:300] for v in values])
    pdf.ln(4)
    pdf.set_font("Helvetica", "", 8)
    for label, value in _footer(report):
        pdf.multi_cell(0, 4, latin(f"{label}: {value}"), new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(output))
