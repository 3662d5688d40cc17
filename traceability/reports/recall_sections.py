"""What to stop and where it went, as sections: a recall and a drill answer (lots with their balances, shipments
with their consignees)."""

from __future__ import annotations

from typing import Any

from .document import Document, Section


def _lot_balances(lots: list[Any]) -> Section:
    return Section(
        "Lots",
        ["lot", "product", "kind", "status", "quantity", "unit", "drawn by lots", "shipped", "in stock"],
        [[x.lot_number, x.product, x.kind, x.status, x.quantity, x.unit, x.drawn, x.shipped, x.in_stock] for x in lots],
    )


def _distribution(shipments: list[Any]) -> Section:
    return Section(
        "Shipments",
        ["shipment", "lot", "consignee", "name", "address", "shipped on", "quantity", "unit"],
        [
            [
                s.shipment_number,
                s.lot_number,
                s.consignee_code,
                s.consignee,
                s.address,
                s.shipped_on,
                s.quantity,
                s.unit,
            ]
            for s in shipments
        ],
    )


def recall_document(view: Any) -> Document:
    """A recall: its consignees (address, lots, quantity, notice, acknowledgement, return), lots and shipments."""
    consignees = Section(
        "Consignees",
        [
            "consignee",
            "name",
            "address",
            "lots",
            "shipped",
            "unit",
            "notified on",
            "acknowledged at",
            "returned",
        ],
        [
            [
                c.code,
                c.name,
                c.address,
                ", ".join(c.lots),
                c.shipped,
                c.unit,
                c.notified_on,
                c.acknowledged_at,
                c.returned,
            ]
            for c in view.consignees
        ],
    )
    e = view.effectiveness
    return Document(
        title=f"Recall {view.recall_number}",
        summary=[
            ("status", view.status),
            ("lot", view.lot_number),
            ("class", view.recall_class),
            ("reason", view.reason),
            ("opened", f"{view.opened_at} by {view.opened_by}"),
            ("lots recalled", ", ".join(x.lot_number for x in view.lots)),
            ("consignees", f"{e.consignees:,}"),
            ("acknowledged / notified", e.acknowledged_of_notified),
            ("returned / shipped", e.returned_of_shipped),
            ("closed", f"{view.closed_at} by {view.closed_by}" if view.closed_at else ""),
        ],
        sections=[consignees, _lot_balances(view.lots), _distribution(view.shipments)],
        primary="Consignees",
    )


def drill_document(answer: Any) -> Document:
    """A recall drill: units to stop, pools, lots with their balance, consignees and quantities, and its timing."""
    units = Section(
        "Units",
        ["unit", "collected at", "status", "pool", "action"],
        [[u.unit_number, u.collected_at, u.status, u.pool_number, u.action] for u in answer.units],
    )
    consignees: dict[str, list[Any]] = {}
    for s in answer.shipments:
        line = consignees.setdefault(s.consignee_code, [s.consignee_code, s.consignee, s.address, set(), 0, set()])
        line[3].add(s.lot_number)
        line[4] += s.quantity
        line[5].add(s.unit or "")
    by_consignee = Section(
        "Consignees",
        ["consignee", "name", "address", "lots", "shipped", "unit"],
        [[c, n, a, ", ".join(sorted(lots)), q, ", ".join(sorted(u))] for c, n, a, lots, q, u in consignees.values()],
    )
    totals = answer.totals()
    balance = "; ".join(
        f"{t['quantity']:,} {unit} made, {t['drawn']:,} drawn by lots, {t['shipped']:,} shipped, "
        f"{t['in_stock']:,} in stock"
        for unit, t in sorted(totals.items())
    )
    return Document(
        title=f"Recall drill: {answer.subject} {answer.key}",
        summary=[
            ("window starts", answer.window_start or ("all donations" if answer.subject == "donor" else "")),
            ("units to stop", ", ".join(answer.units_to_stop) or "none"),
            ("units in the window", f"{len(answer.units):,}" if answer.subject == "donor" else ""),
            ("pools", ", ".join(answer.pools) or "none"),
            ("lots", ", ".join(x.lot_number for x in answer.lots) or "none"),
            ("consignees", ", ".join(answer.consignees) or "none"),
            ("quantity balance", balance or "no quantities recorded"),
            ("answered in", f"{answer.duration_ms:.1f} ms"),
            ("answer SHA-256", answer.digest()),
        ],
        sections=[units, _lot_balances(answer.lots), by_consignee, _distribution(answer.shipments)],
        primary="Consignees",
    )
