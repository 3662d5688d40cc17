"""Lineage reports for auditors: a lot, a pool or a look-back case (SPEC §13).

One builder returns a ``Report``: a summary, the lineage picture, flag sections (holds, open cases, reactive donors,
deviations), the trace's sections, the audit history laid out field by field and the list of donations. Writers turn
it into JSON, CSV, HTML or PDF. Nothing printed depends on the wall clock or on who ran it: the time printed is the
audit head's, so the same database gives the same bytes. A manifest (audit checkpoint, SHA-256 of the report's data
and of each of its parts, software version, policy digest) travels inside every format, and ``verify_report``
rebuilds the report from the database and names what no longer matches.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from .. import audit
from ..errors import InvalidInput
from ..models import AuditEvent, Pool
from ..queries.lineage import trace_case, trace_lot, trace_pool
from ..rules import DEFAULT_POLICY, Policy, policy_digest
from . import contents
from .contents import HistoryEntry, Lineage
from .lineage_graph import LineageGraph
from .sections import Document, Section, case_document, lot_document, pool_document
from .writers import dumps_json, write_csv

Progress = Callable[[int, int], None]
"""Called with (done, total) while a long report is written."""

MANIFEST_FORMAT = 1
DONATIONS = "Donations"


def software_version() -> str:
    try:
        return metadata.version("plasma-traceability")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class Report:
    kind: str
    key: str
    title: str
    summary: list[tuple[str, str]]
    graph: LineageGraph
    flags: list[Section]
    sections: list[Section]
    history: list[HistoryEntry]
    donations: Section | None
    trace: dict[str, Any]
    audit_checkpoint: str
    audit_time: str
    audit_chain_ok: bool
    audit_problem: str | None
    policy_sha256: str
    version: str = field(default_factory=software_version)
    _parts: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def parts(self) -> dict[str, Any]:
        """The report's data, part by part, as plain JSON values. The manifest keeps each part's SHA-256, and the
        data SHA-256 is that of those digests (keys sorted), so one changed part can be named."""

        def table(section: Section) -> dict[str, Any]:
            return {"columns": section.columns, "rows": section.rows}

        if self._parts is not None:
            return self._parts
        raw = {
            "summary": [[label, value] for label, value in self.summary],
            "lineage": self.graph.as_json(),
            **{f"flag: {s.title}": table(s) for s in self.flags},
            **{f"section: {s.title}": table(s) for s in self.sections},
            "audit history": [h.as_json() for h in self.history],
            "donations": table(self.donations) if self.donations else None,
            "trace": self.trace,
            "policy": self.policy_sha256,
        }
        self._parts = json.loads(dumps_json(raw))
        return self._parts

    def manifest(self) -> dict[str, Any]:
        parts = self.parts()
        digests = {name: _sha256(value) for name, value in parts.items()}
        return {
            "manifest": MANIFEST_FORMAT,
            "report": self.kind,
            "key": self.key,
            "audit_checkpoint": self.audit_checkpoint,
            "audit_time": self.audit_time,
            "data_sha256": _sha256(digests),
            "parts_sha256": digests,
            "software_version": self.version,
            "policy_sha256": self.policy_sha256,
        }

    def footer(self) -> list[tuple[str, str]]:
        chain = "intact" if self.audit_chain_ok else f"BROKEN: {self.audit_problem}"
        return [
            ("data as of", self.audit_time + " (time of the last audit event)"),
            ("audit chain", chain),
            ("audit checkpoint", self.audit_checkpoint),
            ("data SHA-256", self.manifest()["data_sha256"]),
            ("policy SHA-256", self.policy_sha256),
            ("software", f"plasma-traceability {self.version}"),
        ]


def _sha256(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _split(document: Document) -> tuple[list[Section], Section | None]:
    donations = next((s for s in document.sections if s.title == DONATIONS), None)
    return [s for s in document.sections if s.title != DONATIONS], donations


def build_report(session: Session, kind: str, key: str, *, policy: Policy = DEFAULT_POLICY) -> Report:
    """Build the report of a lot, pool or case. Raises LotNotFound, PoolNotFound or CaseNotFound."""
    extra: dict[str, set[str]] = {}
    if kind == "lot":
        trace: Any = trace_lot(session, key, members=True, policy=policy)
        document = lot_document(trace)
        lineage = contents.lineage_of_lot(session, key)
        document.sections.insert(1, contents.pool_tests(session, lineage))
    elif kind == "pool":
        trace = trace_pool(session, key, members=True, policy=policy)
        document = pool_document(trace)
        lineage = contents.lineage_of_pool(session, key)
        document.sections[0] = contents.pool_tests(session, Lineage({p for p in lineage.pool_ids}, set()))
    else:
        trace = trace_case(session, key, policy=policy)
        document = case_document(trace)
        pool_ids = set(session.execute(select(Pool.id).where(Pool.pool_number.in_(trace.pools))).scalars())
        lineage = contents.lineage_downstream(session, pool_ids)
        extra = {"lookback_case": {trace.case_number}, "donor": {trace.donor_code}}
        extra["donation"] = {f["unit_number"] for f in trace.findings}
    changed = contents.corrected_units(session, lineage, extra.get("donation", set()))
    shown_units = ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else "")
    document.summary.append(
        (
            "changed since original entry",
            f"{len(changed):,} unit record(s): {shown_units}" if changed else "no unit record was corrected",
        )
    )
    flags = [build(session, lineage) for build in contents.FLAG_SECTIONS]
    sections, donations = _split(document)
    verification = audit.verify(session)
    head_time = session.execute(select(AuditEvent.occurred_at).order_by(AuditEvent.seq.desc()).limit(1)).scalar()
    return Report(
        kind=kind,
        key=key,
        title=document.title,
        summary=[(label, _text(value)) for label, value in document.summary],
        graph=contents.lineage_graph(session, lineage),
        flags=flags,
        sections=sections,
        history=contents.history(session, lineage, extra=extra),
        donations=donations,
        trace=trace.as_json(),
        audit_checkpoint=verification.checkpoint,
        audit_time=head_time.isoformat() if head_time else "no audit events",
        audit_chain_ok=verification.ok,
        audit_problem=verification.problem,
        policy_sha256=policy_digest(policy),
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# --- writing -----------------------------------------------------------------------------------------------------


def json_document(report: Report) -> dict[str, Any]:
    parts = report.parts()
    return {
        "report": report.kind,
        "key": report.key,
        **dict(report.footer()),
        "manifest": report.manifest(),
        "summary": dict(report.summary),
        "lineage": parts["lineage"],
        "flags": {s.title: [dict(zip(s.columns, r, strict=True)) for r in s.rows] for s in report.flags},
        "audit_history": parts["audit history"],
        "data": parts["trace"],
    }


def manifest_path(output: Path) -> Path:
    """Where a CSV report's manifest goes (CSV has no place for it inside)."""
    return output.with_name(output.name + ".manifest.json")


def write_report(report: Report, fmt: str, output: Path, *, progress: Progress | None = None) -> None:
    """Write the report as json, csv (plus FILE.manifest.json), html or pdf."""
    if fmt == "json":
        output.write_text(dumps_json(json_document(report)) + "\n", encoding="utf-8")
    elif fmt == "csv":
        primary = report.donations or (report.sections[0] if report.sections else Section("", [], []))
        with output.open("w", encoding="utf-8", newline="") as handle:
            write_csv(primary.columns, primary.rows, handle)
        manifest_path(output).write_text(dumps_json(report.manifest()) + "\n", encoding="utf-8")
    elif fmt == "html":
        from .html_writer import render_html

        output.write_text(render_html(report), encoding="utf-8")
    else:
        from .pdf_writer import render_pdf

        output.write_bytes(render_pdf(report, progress=progress))


# --- verification ------------------------------------------------------------------------------------------------

_HTML_MANIFEST = re.compile(r'<script type="application/json" id="plasmatrace-manifest">(.*?)</script>', re.S)
_PDF_MANIFEST = re.compile(rb"/Keywords \(plasmatrace-manifest:([A-Za-z0-9+/=]+)\)")


def read_manifest(path: Path) -> tuple[str, dict[str, Any]]:
    """The format and the manifest of a report file. Raises InvalidInput when the file holds none."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"Cannot read {path}: {error.strerror}.") from None
    try:
        if data.startswith(b"%PDF"):
            found = _PDF_MANIFEST.search(data)
            if found:
                return "pdf", json.loads(base64.b64decode(found.group(1)))
        elif data.lstrip().startswith(b"{"):
            return "json", json.loads(data)["manifest"]
        elif data.lstrip().lower().startswith(b"<!doctype html"):
            match = _HTML_MANIFEST.search(data.decode("utf-8"))
            if match:
                return "html", json.loads(match.group(1))
        elif manifest_path(path).is_file():
            return "csv", json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (ValueError, KeyError, UnicodeDecodeError):
        pass
    raise InvalidInput(f"{path} is not a plasmatrace report (no manifest found in it).")


@dataclass
class VerifyResult:
    kind: str
    key: str
    fmt: str
    checkpoint: str
    differences: list[str]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences


def verify_report(session: Session, path: Path, *, policy: Policy = DEFAULT_POLICY) -> VerifyResult:
    """Rebuild the report a file was written from and compare: the audit checkpoint must still be in the chain,
    every part's SHA-256 must match, and when nothing was recorded since, the file must be byte for byte what the
    database gives. Raises InvalidInput (not a report) and the not-found errors of the report's subject."""
    fmt, manifest = read_manifest(path)
    kind, key = manifest["report"], manifest["key"]
    differences: list[str] = []
    notes: list[str] = []
    chain = audit.verify(session, checkpoint=manifest["audit_checkpoint"])
    if not chain.ok:
        differences.append(f"audit trail: {chain.problem}")
    rebuilt = build_report(session, kind, key, policy=policy)
    now = rebuilt.manifest()
    for part in sorted(set(manifest["parts_sha256"]) | set(now["parts_sha256"])):
        if manifest["parts_sha256"].get(part) != now["parts_sha256"].get(part):
            differences.append(f"{part}: differs from the database now")
    if manifest.get("data_sha256") != _sha256(manifest["parts_sha256"]):
        differences.append("manifest: its data SHA-256 is not that of its parts (the manifest was edited)")
    if fmt == "json":
        document = json.loads(path.read_text(encoding="utf-8"))
        if _sha256(document.get("data")) != manifest["parts_sha256"].get("trace"):
            differences.append("the file's data was changed after the report was written")
    if now["audit_checkpoint"] == manifest["audit_checkpoint"]:
        with tempfile.TemporaryDirectory() as folder:
            scratch = Path(folder) / path.name
            write_report(rebuilt, fmt, scratch)
            if scratch.read_bytes() != path.read_bytes():
                differences.append("the file was changed after it was written (its bytes differ from a rebuild)")
    else:
        seq = int(now["audit_checkpoint"].split(":")[0]) - int(manifest["audit_checkpoint"].split(":")[0])
        notes.append(f"{seq:,} audit event(s) were recorded since the report; its data is checked part by part")
    if manifest.get("software_version") != now["software_version"]:
        notes.append(
            f"written by plasma-traceability {manifest.get('software_version')}, checked by {now['software_version']}"
        )
    return VerifyResult(kind, key, fmt, manifest["audit_checkpoint"], differences, notes)
