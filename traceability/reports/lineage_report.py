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
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from .. import audit
from ..errors import InvalidInput
from ..models import AuditEvent, Pool
from ..queries.drill import recall_lot_ids
from ..queries.lineage import trace_case, trace_lot, trace_pool
from ..queries.lookup import get_lot
from ..queries.recalls import recall_view
from ..rules import DEFAULT_POLICY, Policy, policy_digest
from . import as_of as then
from . import contents
from . import history as audit_history
from .contents import Lineage
from .document import cell_text
from .history import HistoryEntry
from .lineage_graph import LineageGraph
from .sections import Document, Section, case_document, lot_document, marked_as_of, pool_document, recall_document
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
    as_of: str | None = None  # built from the records as they were at this time (--as-of)
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
        as_of = {} if self.as_of is None else {"as_of": self.as_of}
        return {
            "manifest": MANIFEST_FORMAT,
            "report": self.kind,
            "key": self.key,
            **as_of,
            "audit_checkpoint": self.audit_checkpoint,
            "audit_time": self.audit_time,
            "data_sha256": _sha256(digests),
            "parts_sha256": digests,
            "software_version": self.version,
            "policy_sha256": self.policy_sha256,
        }

    def footer(self) -> list[tuple[str, str]]:
        chain = "intact" if self.audit_chain_ok else f"BROKEN: {self.audit_problem}"
        if self.as_of is not None:
            data_as_of = f"{self.as_of} (--as-of; the last audit event by then: {self.audit_time})"
        else:
            data_as_of = self.audit_time + " (time of the last audit event)"
        return [
            ("data as of", data_as_of),
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


def build_report(
    session: Session, kind: str, key: str, *, policy: Policy = DEFAULT_POLICY, as_of: datetime | None = None
) -> Report:
    """Build the report of a lot, pool, case or recall, of today's records or with ``as_of`` of the records as
    they were then (``reports.as_of``; not for recalls). Raises LotNotFound, PoolNotFound, CaseNotFound or
    RecallNotFound (NotYetRecorded when the subject was recorded after ``as_of``)."""
    extra: dict[str, set[str]] = {}

    def tests_of(lineage: Lineage) -> Section:
        return contents.pool_tests(session, lineage, as_of)

    if kind == "lot":
        trace: Any = trace_lot(session, key, members=True, policy=policy, as_of=as_of)
        document = lot_document(trace)
        lineage = contents.lineage_of_lot(session, key)
        document.sections.insert(1, tests_of(lineage))
    elif kind == "pool":
        trace = trace_pool(session, key, members=True, policy=policy, as_of=as_of)
        document = pool_document(trace)
        lineage = contents.lineage_of_pool(session, key)
        document.sections[0] = tests_of(Lineage({p for p in lineage.pool_ids}, set()))
    elif kind == "recall":
        if as_of is not None:
            raise InvalidInput(f"Recall {key}: --as-of is for lot, pool and case reports; a recall report is of today.")
        trace = recall_view(session, key)
        document = recall_document(trace)
        recalled = get_lot(session, trace.lot_number).id or 0
        lineage = contents.lineage_of_recall(session, recall_lot_ids(session, recalled), recalled)
        document.sections.insert(1, contents.pool_tests(session, lineage))
        extra = {
            "recall": {trace.recall_number},
            "recall_consignee": {f"{trace.recall_number}/{c.code}" for c in trace.consignees},
        }
    else:
        trace = trace_case(session, key, as_of=as_of, policy=policy)
        document = case_document(trace)
        pool_ids = set(session.execute(select(col(Pool.id)).where(col(Pool.pool_number).in_(trace.pools))).scalars())
        lineage = contents.lineage_downstream(session, pool_ids)
        extra = {"lookback_case": {trace.case_number}, "donor": {trace.donor_code}}
        extra["donation"] = {f.unit_number for f in trace.findings}
    marked_as_of(document, getattr(trace, "as_of", None))
    if as_of is not None:
        lineage = then.recorded_lineage(session, lineage, as_of)
    changed = contents.corrected_units(session, lineage, extra.get("donation", set()))
    if as_of is not None:
        changed = then.corrected_by(session, changed, as_of)
    shown_units = ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else "")
    document.summary.append(
        (
            "changed since original entry",
            f"{len(changed):,} unit record(s): {shown_units}" if changed else "no unit record was corrected",
        )
    )
    if as_of is None:
        flags = [build(session, lineage) for build in contents.FLAG_SECTIONS]
    else:
        flags = then.flags_at(session, lineage, as_of)
    sections, donations = _split(document)
    verification = audit.verify(session)
    head_time = session.execute(
        select(col(AuditEvent.occurred_at)).order_by(col(AuditEvent.seq).desc()).limit(1)
    ).scalar()
    checkpoint, audit_time = verification.checkpoint, head_time.isoformat() if head_time else "no audit events"
    graph = contents.lineage_graph(session, lineage)
    history = audit_history.history(session, lineage, extra=extra)
    if as_of is not None:
        head = then.checkpoint_at(session, as_of)
        checkpoint, audit_time = head.token, head.time
        graph = then.graph_at(session, graph, lineage, as_of)
        history = then.history_at(history, head)
    return Report(
        kind=kind,
        key=key,
        title=document.title,
        summary=[(label, cell_text(value)) for label, value in document.summary],
        graph=graph,
        flags=flags,
        sections=sections,
        history=history,
        donations=donations,
        trace=trace.as_json(),
        audit_checkpoint=checkpoint,
        audit_time=audit_time,
        audit_chain_ok=verification.ok,
        audit_problem=verification.problem,
        policy_sha256=policy_digest(policy),
        as_of=getattr(trace, "as_of", None),
    )


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
    as_of = datetime.fromisoformat(manifest["as_of"]) if manifest.get("as_of") else None
    rebuilt = build_report(session, kind, key, policy=policy, as_of=as_of)
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
