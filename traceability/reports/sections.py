"""Read models turned into titled sections of rows: the one shape behind tables, CSV exports and reports."""

from __future__ import annotations

from typing import Any

from ..queries.casework import NOTIFICATION_COLUMNS, notification_rows
from ..queries.lineage import DonorTrace, LotTrace, PoolTrace, UnitTrace
from .document import Document, Section, marked_as_of
from .recall_sections import drill_document, recall_document

__all__ = ["Document", "Section", "drill_document", "marked_as_of", "recall_document"]  # one import for callers


def _shipments(trace: Any) -> Section:
    return Section(
        "Shipments",
        ["shipment", "lot", "consignee", "address", "shipped on", "quantity", "unit", "expires on"],
        [
            [
                s.shipment_number,
                s.lot_number,
                s.consignee,
                s.consignee_address,
                s.shipped_on,
                s.quantity,
                s.unit,
                s.expires_on,
            ]
            for s in trace.shipments
        ],
    )


def _deviations(trace: Any) -> Section:
    return Section(
        "Corrections under deviation",
        ["deviation", "pool", "unit", "unit version", "changes", "reason", "recorded at", "recorded by"],
        [
            [d.reference, d.pool_number, d.unit_number, d.version, d.changes, d.reason, d.recorded_at, d.recorded_by]
            for d in trace.deviations
        ],
    )


def _steps(steps: list[Any]) -> Section:
    return Section(
        "Viral inactivation / removal steps",
        ["step", "on", "method", "started", "ended", "outcome", "LRV env.", "LRV non-env.", "parameters", "operator"],
        [
            [
                s.step_key,
                s.target,
                s.method,
                s.started_at,
                s.ended_at,
                s.outcome + (" (open)" if s.deviation_open else ""),
                s.lrv_enveloped,
                s.lrv_non_enveloped,
                ", ".join(f"{k}={v}" for k, v in s.parameters.items()),
                s.operator,
            ]
            for s in steps
        ],
    )


def donor_document(trace: DonorTrace) -> Document:
    deferrals = (
        "; ".join(
            f"#{d.sequence} {d.reason} from {d.starts_on} "
            + (f"until {d.ends_on}" if d.ends_on else "permanent")
            + (f" (lifted {d.lifted_on})" if d.lifted_on else "")
            for d in trace.deferrals
        )
        or "none"
    )
    donations = Section(
        "Donations",
        ["unit", "collected at", "volume mL", "status", "pool", "lots", "look-back window", "screening", "changed"],
        [
            [
                d.unit_number,
                d.collected_at,
                d.volume_ml,
                d.status,
                d.pool_number or "",
                ", ".join(d.lot_numbers),
                "yes" if d.in_lookback_window else "no",
                ", ".join(f"{m} {r}" for m, r in d.results.items() if r != "nonreactive")
                or ("all nonreactive" if d.results else "not tested"),
                "corrected" if d.changed else "",
            ]
            for d in trace.donations
        ],
    )
    return Document(
        title=f"Donor {trace.donor_code}",
        summary=[
            ("establishment", trace.establishment),
            ("registered on", trace.registered_on or ""),
            ("deferrals", deferrals),
            ("look-back window starts", trace.lookback_window_start or "all donations"),
            ("donations", len(trace.donations)),
            ("pools", ", ".join(trace.pools) or "none"),
            ("lots", ", ".join(trace.lots) or "none"),
            ("shipments", len(trace.shipments)),
        ],
        sections=[donations, _shipments(trace)],
        primary="Donations",
    )


def unit_document(trace: UnitTrace) -> Document:
    results = Section(
        "Screening results",
        ["marker", "version", "current", "result", "value", "method", "tested at", "reason"],
        [
            [
                r.marker,
                r.version,
                "yes" if r.current else "superseded",
                r.result,
                f"{r.value:g} {r.unit}" if r.value is not None else "",
                r.method or "",
                r.tested_at,
                r.reason or "",
            ]
            for r in trace.results
        ],
    )
    return Document(
        title=f"Unit {trace.unit_number}",
        summary=[
            ("scheme", trace.scheme),
            ("donor", trace.donor_code),
            ("collected at", trace.collected_at),
            ("frozen at", trace.frozen_at or ""),
            ("volume mL", trace.volume_ml),
            ("kind", trace.plasma_kind),
            ("status", trace.status + (f" ({trace.status_reason})" if trace.status_reason else "")),
            ("record version", trace.version if trace.version == 1 else f"{trace.version} (corrected)"),
            ("pool", trace.pool_number or "not pooled"),
            ("lots", ", ".join(trace.lots) or "none"),
        ],
        sections=[results, _shipments(trace)],
        primary="Screening results",
    )


def _members(trace: Any) -> Section:
    return Section(
        "Donations",
        ["unit", "donor", "pool", "collected at"],
        [[m.unit_number, m.donor_code, m.pool_number, m.collected_at] for m in trace.donations or []],
    )


def pool_document(trace: PoolTrace) -> Document:
    tests = Section(
        "Pool tests",
        ["marker", "version", "result", "value", "tested at"],
        [
            [
                t.marker,
                t.version,
                t.result,
                f"{t.value:g} {t.unit}" if t.value is not None else "",
                t.tested_at,
            ]
            for t in trace.tests
        ],
    )
    sections = [tests, _steps(trace.steps), _shipments(trace), _deviations(trace), _signatures(trace)]
    if trace.donations is not None:
        sections.append(_members(trace))
    return Document(
        title=f"Pool {trace.pool_number}",
        summary=[
            ("product", trace.product),
            ("status", trace.status + (f" ({trace.status_reason})" if trace.status_reason else "")),
            ("distinct donors", f"{trace.donor_count:,}"),
            ("donations", f"{trace.donation_count:,}"),
            ("volume", f"{trace.volume_ml / 1000:,.1f} L"),
            ("donors required", f"{trace.min_donors:,}"),
            ("closed at", trace.closed_at or ""),
            ("released at", trace.released_at or ""),
            ("lots", ", ".join(trace.lots) or "none"),
            ("signed", _signed(trace)),
            ("drawn by lots", f"{trace.drawn_ml / 1000:,.1f} L"),
            ("deviations", ", ".join(sorted({d.reference for d in trace.deviations})) or "none"),
        ],
        sections=sections,
        primary="Donations" if trace.donations is not None else "Pool tests",
    )


def _signatures(trace: Any) -> Section:
    """Electronic signatures with printed name, meaning and time (21 CFR 11.50), flagged when the record changed
    after signing."""
    return Section(
        "Signatures",
        ["printed name", "login", "meaning", "signed at", "content SHA-256", "record changed since"],
        [
            [
                s.full_name,
                s.login,
                s.meaning,
                s.signed_at,
                s.content_sha256,
                "YES: changed after signing" if s.changed_since_signing else "no",
            ]
            for s in trace.signatures
        ],
    )


def _signed(trace: Any) -> str:
    if not trace.signatures:
        return "none"
    last = trace.signatures[-1]
    flag = " (RECORD CHANGED SINCE SIGNING)" if last.changed_since_signing else ""
    when = f"{last.signed_at[:19].replace('T', ' ')} UTC"
    return f"{last.full_name}, {last.meaning}, {when}{flag}"


def lot_document(trace: LotTrace) -> Document:
    pools = Section(
        "Pools",
        ["pool", "product", "status", "distinct donors", "donations", "volume mL"],
        [[p.pool_number, p.product, p.status, p.donor_count, p.donation_count, p.volume_ml] for p in trace.pools],
    )
    inputs = Section(
        "Lineage (inputs)",
        ["lot", "input kind", "input", "quantity", "unit"],
        [[e.lot_number, e.input_kind, e.input, e.quantity or "", e.quantity_unit or ""] for e in trace.inputs],
    )
    clearance = Section(
        "Viral clearance: the worst path per virus class",
        [
            "path",
            "worst for",
            "cumulative log10 env.",
            "cumulative log10 non-env.",
            "effective mechanisms env.",
            "effective mechanisms non-env.",
            "problems",
        ],
        [
            [
                " -> ".join(c.path),
                ", ".join(c.worst_for),
                c.cumulative_log10.get("enveloped"),
                c.cumulative_log10.get("non-enveloped"),
                ", ".join(c.effective_mechanisms.get("enveloped", [])),
                ", ".join(c.effective_mechanisms.get("non-enveloped", [])),
                "; ".join(c.problems),
            ]
            for c in trace.clearance
        ],
    )
    sections = [
        pools,
        inputs,
        _steps(trace.steps),
        clearance,
        _shipments(trace),
        _deviations(trace),
        _signatures(trace),
    ]
    if trace.donations is not None:
        sections.append(_members(trace))
    verdict = "meets the rule on every path" if not trace.clearance_problems else "; ".join(trace.clearance_problems)
    return Document(
        title=f"Lot {trace.lot_number}",
        summary=[
            ("product", trace.product),
            ("kind", trace.kind),
            ("status", trace.status + (f" ({trace.status_reason})" if trace.status_reason else "")),
            ("distinct donors", f"{trace.donor_count:,}"),
            ("donations", f"{trace.donation_count:,}"),
            ("pools", ", ".join(p.pool_number for p in trace.pools) or "none"),
            ("upstream lots", ", ".join(trace.lots) or "none"),
            ("clearance", verdict if trace.kind == "final" else "judged on final lots"),
            ("signed", _signed(trace)),
            ("quantity", f"{trace.quantity:,} {trace.unit}" if trace.quantity is not None else "not recorded"),
            (
                "balance",
                f"{trace.available:,} {trace.unit} left ({trace.drawn:,} drawn by lots, {trace.shipped:,} shipped)"
                if trace.available is not None
                else "unknown (no quantity recorded; cannot be shipped or drawn from)",
            ),
            ("expires on", trace.expires_on or "not recorded"),
            ("deviations", ", ".join(sorted({d.reference for d in trace.deviations})) or "none"),
            ("holds", "; ".join(h.text() for h in trace.holds) or "none"),
        ],
        sections=sections,
        primary="Donations" if trace.donations is not None else "Pools",
    )


def case_document(trace: Any) -> Document:
    findings = Section(
        "Implicated units",
        ["unit", "collected at", "status now", "action", "pool", "pool status", "lots"],
        [
            [
                f.unit_number,
                f.collected_at,
                f.status,
                f.action,
                f.pool_number or "",
                f.pool_status or "",
                ", ".join(f.lot_numbers),
            ]
            for f in trace.findings
        ],
    )
    notifications = Section("Notification list", NOTIFICATION_COLUMNS, notification_rows(trace.notifications))
    tasks = Section(
        "Tasks",
        ["task", "kind", "lot", "consignee", "due on", "state", "days late", "decision", "note", "by"],
        [
            [
                t.task,
                t.kind,
                t.lot_number or "",
                t.consignee or "",
                t.due_on or "",
                t.state,
                t.days_late or "",
                t.decision or "",
                t.note or t.clearance or "",
                t.done_by or "",
            ]
            for t in trace.tasks
        ],
    )
    holds = Section(
        "Holds placed by the case",
        ["lot", "held at", "lifted at", "lifted by"],
        [[h.lot_number, h.held_at, h.lifted_at or "standing", h.lifted_by or ""] for h in trace.holds],
    )
    open_tasks = [t for t in trace.tasks if t.state == "open"]
    late = [t for t in open_tasks if t.days_late]
    return Document(
        title=f"Look-back case {trace.case_number}",
        summary=[
            ("status", trace.status),
            ("donor", trace.donor_code),
            ("trigger", trace.trigger),
            ("reason", trace.reason),
            ("opened", f"{trace.opened_at} by {trace.opened_by}"),
            ("due dates count from", trace.received_on or "not recorded"),
            ("tasks", f"{len(trace.tasks)} ({len(open_tasks)} open, {len(late)} late)"),
            ("window starts", trace.window_start or "all donations"),
            ("pools", ", ".join(trace.pools) or "none"),
            ("lots", ", ".join(trace.lots) or "none"),
            ("consignees to notify", ", ".join(sorted({s.consignee for s in trace.shipments})) or "none"),
            ("closed", f"{trace.closed_at} by {trace.closed_by}: {trace.closure}" if trace.closed_at else ""),
        ],
        sections=[notifications, tasks, findings, holds, _shipments(trace)],
        primary="Notification list",
    )
