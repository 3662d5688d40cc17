"""The PDF report (fpdf2): embedded DejaVu Sans with a CJK fallback, the lineage drawn as vectors, page x of y.

Reproducible: the creation date is the audit head's time and nothing else varies. The donation list is an appendix
drawn line by line in columns (fast: one text call per donation) and attached to the PDF as CSV as well.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fpdf import FPDF
from fpdf.fonts import FontFace

from .document import cell_text
from .history import shown
from .lineage_graph import LINE_HEIGHT, PADDING, Layout, layout
from .lineage_report import Progress, Report
from .sections import Section
from .writers import write_csv

FONT = "DejaVu"
CJK = "DroidCJK"
PT = 25.4 / 72  # millimetres per point


def _font_path(name: str) -> str:
    return str(resources.files("traceability.reports") / "fonts" / name)


class _Document(FPDF):
    def __init__(self, report: Report) -> None:
        super().__init__(orientation="L", unit="mm", format="A4")
        self.report = report
        self.footer_text = f"{report.title}: lineage report · data as of {report.audit_time}"
        self.page_footers: dict[int, str] = {}  # pages with a footer of their own (notification letters)

    def footer(self) -> None:
        self.set_y(-9)
        self.set_font(FONT, "", 7)
        self.set_text_color(90)
        self.cell(0, 4, self.page_footers.get(self.page_no(), self.footer_text), align="L")
        self.set_x(self.l_margin)
        self.cell(0, 4, f"page {self.page_no()} of {{nb}}", align="R")
        self.set_text_color(0)


def _heading(pdf: FPDF, text: str, *, alert: bool = False) -> None:
    if pdf.get_y() > pdf.h - 40:
        pdf.add_page()
    pdf.ln(3)
    pdf.set_font(FONT, "B", 11)
    if alert:
        pdf.set_text_color(176, 0, 32)
    pdf.cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)


def _table(pdf: FPDF, section: Section) -> None:
    if not section.rows:
        pdf.set_font(FONT, "", 8)
        pdf.cell(0, 5, "None.", new_x="LMARGIN", new_y="NEXT")
        return
    pdf.set_font(FONT, "", 7)
    with pdf.table(
        text_align="LEFT",
        first_row_as_headings=True,
        line_height=3.6,
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
    ) as table:
        table.row(section.columns)
        for values in section.rows:
            table.row([cell_text(v) for v in values])


def _picture(pdf: FPDF, report: Report) -> None:
    drawn: Layout = layout(report.graph)
    if not drawn.boxes:
        pdf.set_font(FONT, "", 8)
        pdf.cell(0, 5, "No pools or lots.", new_x="LMARGIN", new_y="NEXT")
        return
    width_mm = pdf.w - pdf.l_margin - pdf.r_margin
    scale = min(PT, width_mm / drawn.width, 120 / drawn.height)
    if pdf.get_y() + drawn.height * scale > pdf.h - 15:
        pdf.add_page()
    x0, y0 = pdf.l_margin, pdf.get_y() + 2

    def at(point: tuple[float, float]) -> tuple[float, float]:
        return x0 + point[0] * scale, y0 + point[1] * scale

    nodes = {n.ident: n for n in report.graph.nodes}
    pdf.set_draw_color(68)
    pdf.set_line_width(0.25)
    for edge, points in drawn.curves:
        mapped = [at(p) for p in points]
        pdf.bezier(mapped)
        (ax, ay), (bx, by) = mapped[-2], mapped[-1]
        length = max(((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5, 1e-6)
        ux, uy = (bx - ax) / length, (by - ay) / length
        size = 1.8
        pdf.set_fill_color(68)
        pdf.polygon(
            [
                (bx, by),
                (bx - size * ux - size * 0.5 * uy, by - size * uy + size * 0.5 * ux),
                (bx - size * ux + size * 0.5 * uy, by - size * uy - size * 0.5 * ux),
            ],
            style="F",
        )
        if edge.label:
            mid = mapped[len(mapped) // 2]
            pdf.set_font(FONT, "", max(5.0, 9 * scale / PT))
            pdf.set_xy(mid[0] - 15, mid[1] - 3.2)
            pdf.cell(30, 3, edge.label, align="C")
    for ident, box in sorted(drawn.boxes.items()):
        node = nodes[ident]
        if node.alert:
            pdf.set_draw_color(176, 0, 32)
            pdf.set_fill_color(253, 232, 232)
            pdf.set_line_width(0.5)
        elif node.kind == "pool":
            pdf.set_draw_color(26, 77, 143)
            pdf.set_fill_color(232, 240, 254)
            pdf.set_line_width(0.25)
        else:
            pdf.set_draw_color(46, 107, 52)
            pdf.set_fill_color(238, 247, 238)
            pdf.set_line_width(0.25)
        x, y = at((box.x, box.y))
        pdf.rect(x, y, box.width * scale, box.height * scale, style="DF", round_corners=True, corner_radius=1)
        size = 9 * scale / PT
        pdf.set_font(FONT, "B", size)
        text_x = x + PADDING * scale
        baseline = y + (PADDING + LINE_HEIGHT - 2) * scale
        pdf.text(text_x, baseline, f"{node.kind} {node.key}")
        pdf.set_font(FONT, "", size)
        for line in node.lines:
            baseline += LINE_HEIGHT * scale
            pdf.text(text_x, baseline, line)
    pdf.set_draw_color(0)
    pdf.set_line_width(0.2)
    pdf.set_y(y0 + drawn.height * scale + 2)
    pdf.set_font(FONT, "", 7)
    pdf.set_text_color(90)
    pdf.cell(
        0,
        4,
        "Pools and lots with distinct donors and donations; arrows are inputs with quantities; red: quarantine, "
        f"rejection, hold, open look-back case or a donor now reactive. Layout: {drawn.engine}.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_text_color(0)


def _history(pdf: FPDF, report: Report) -> None:
    _heading(pdf, f"Audit history ({len(report.history):,} events)")
    width = pdf.w - pdf.l_margin - pdf.r_margin
    for entry in report.history:
        if pdf.get_y() > pdf.h - 30:
            pdf.add_page()
        pdf.set_font(FONT, "B", 7.5)
        pdf.multi_cell(
            width,
            3.8,
            f"#{entry.seq}  {entry.at}  ·  {entry.action}  ·  {entry.entity} {entry.key}  ·  by {entry.actor}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_font(FONT, "", 7)
        if entry.reason:
            pdf.multi_cell(width, 3.6, f"reason: {entry.reason}", new_x="LMARGIN", new_y="NEXT")
        if entry.fields:
            with pdf.table(
                col_widths=(40, 118, 119),
                text_align="LEFT",
                line_height=3.4,
                headings_style=FontFace(emphasis="BOLD", fill_color=(245, 245, 245)),
            ) as table:
                table.row(["field", "old", "new"])
                for name, old, new in entry.fields:
                    table.row([name, shown(old), shown(new)])
        pdf.ln(1.5)


def _donations(pdf: FPDF, section: Section, progress: Progress | None) -> None:
    """Every donation, three to a line in fixed-width columns, about 60 lines to a page. When every entry is
    Latin-1 (unit numbers, donor codes and pool numbers are, in practice) a line is one call in the built-in
    Courier, which needs no glyph lookups; otherwise each entry is drawn in DejaVu Sans."""
    pdf.add_page()
    _heading(pdf, f"Appendix: donations ({len(section.rows):,})")
    pdf.set_font(FONT, "", 7)
    pdf.cell(
        0,
        4,
        "Each entry: " + " · ".join(section.columns) + ". The same list is attached to this PDF as donations.csv.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    rows = [[cell_text(v).replace("+00:00", "Z")[:32] for v in row] for row in section.rows]
    widths = [max((len(r[i]) for r in rows), default=0) + 2 for i in range(len(section.columns))]
    entries = ["".join(text.ljust(width) for text, width in zip(row, widths, strict=True)) for row in rows]
    per_line, line_height = 3, 3.05
    column_width = (pdf.w - pdf.l_margin - pdf.r_margin) / per_line
    try:
        "".join(entries).encode("latin-1")
        fixed = True
        pdf.set_font("Courier", "", 6.3)
    except UnicodeEncodeError:
        fixed = False
        pdf.set_font(FONT, "", 6.3)
    pad = int(column_width / pdf.get_string_width("0")) if fixed else 0
    y = pdf.get_y() + 3
    bottom = pdf.h - 12
    for start in range(0, len(entries), per_line):
        if y > bottom:
            pdf.add_page()
            y = pdf.t_margin + 3
        chunk = entries[start : start + per_line]
        if fixed:
            pdf.text(pdf.l_margin, y, "".join(entry.ljust(pad) for entry in chunk).rstrip())
        else:
            for offset, entry in enumerate(chunk):
                pdf.text(pdf.l_margin + offset * column_width, y, entry)
        y += line_height
        if progress and start % 3_000 == 0:
            progress(start, len(entries))
    if progress:
        progress(len(entries), len(entries))


def render_pdf(report: Report, *, progress: Progress | None = None) -> bytes:
    pdf = _Document(report)
    pdf.add_font(FONT, "", _font_path("DejaVuSans.ttf"))
    pdf.add_font(FONT, "B", _font_path("DejaVuSans-Bold.ttf"))
    pdf.add_font(CJK, "", _font_path("DroidSansFallback-CJK.ttf"))
    pdf.set_fallback_fonts([CJK])  # bold text falls back to the regular CJK face (exact_match is off)
    created = datetime.fromisoformat(report.audit_time) if report.audit_time[:1].isdigit() else datetime(1970, 1, 1)
    pdf.set_creation_date(created if created.tzinfo else created.replace(tzinfo=UTC))
    pdf.set_title(f"{report.title}: lineage report")
    pdf.set_creator(f"plasma-traceability {report.version}")
    manifest = json.dumps(report.manifest(), sort_keys=True, separators=(",", ":")).encode("ascii")
    pdf.set_keywords("plasmatrace-manifest:" + base64.b64encode(manifest).decode("ascii"))
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font(FONT, "B", 15)
    pdf.cell(0, 8, f"{report.title}: lineage report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FONT, "", 8.5)
    label_width = 52
    for label, value in report.summary:
        pdf.set_font(FONT, "B", 8.5)
        pdf.cell(label_width, 4.4, label)
        pdf.set_font(FONT, "", 8.5)
        pdf.multi_cell(0, 4.4, value, new_x="LMARGIN", new_y="NEXT")
    _heading(pdf, "Lineage")
    _picture(pdf, report)
    for section in report.flags:
        _heading(pdf, f"{section.title} ({len(section.rows):,})", alert=bool(section.rows))
        _table(pdf, section)
    for section in report.sections:
        _heading(pdf, f"{section.title} ({len(section.rows):,})")
        _table(pdf, section)
    _history(pdf, report)
    _heading(pdf, "Integrity")
    for label, value in report.footer():
        pdf.set_font(FONT, "B", 8)
        pdf.cell(40, 4.2, label)
        pdf.set_font(FONT, "", 8)
        pdf.multi_cell(0, 4.2, value, new_x="LMARGIN", new_y="NEXT")
    if report.donations is not None:
        buffer = io.StringIO()
        write_csv(report.donations.columns, report.donations.rows, buffer)
        pdf.embed_file(
            bytes=buffer.getvalue().encode("utf-8"),
            basename="donations.csv",
            modification_date=pdf.creation_date,
            mime_type="text/csv",
            desc="Every donation of the report, as CSV",
        )
        _donations(pdf, report.donations, progress)
    if report.kind == "recall":
        _letters(pdf, report.trace)
    return bytes(pdf.output())


_WHAT_TO_DO = {
    "I": "There is a reasonable probability that using this product will cause serious adverse health consequences.",
    "II": "Using this product may cause temporary or medically reversible adverse health consequences.",
    "III": "Using this product is not likely to cause adverse health consequences, but it must be withdrawn.",
}


def _letters(pdf: _Document, recall: dict[str, Any]) -> None:
    """One notification letter per consignee, each on a portrait page of its own: the consignee's name and address,
    the lots and quantities it was shipped, the recall's class and reason, what to do, and whom to contact."""
    number, recall_class = recall["recall_number"], recall["recall_class"]
    by_consignee: dict[str, list[dict[str, Any]]] = {}
    for line in recall["shipments"]:
        by_consignee.setdefault(line["consignee_code"], []).append(line)
    expiry = {lot["lot_number"]: lot for lot in recall["lots"]}
    width = 210 - 2 * 20
    opener = recall["opened_by"]
    contact = f"{recall['opened_by_name']} ({opener})" if recall.get("opened_by_name") else opener
    for consignee in recall["consignees"]:
        pdf.add_page(orientation="P")
        pdf.page_footers[pdf.page_no()] = (
            f"Recall {number} · notification to {consignee['code']} · issued {recall['opened_at'][:10]}"
        )
        pdf.set_left_margin(20)
        pdf.set_right_margin(20)
        pdf.set_xy(20, 18)
        pdf.set_font(FONT, "B", 15)
        pdf.set_text_color(176, 0, 32)
        pdf.cell(width, 8, f"URGENT: PRODUCT RECALL, CLASS {recall_class}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
        pdf.set_font(FONT, "", 9)
        pdf.cell(width, 5, f"Recall {number} · issued {recall['opened_at'][:10]}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)
        pdf.set_font(FONT, "B", 10.5)
        pdf.multi_cell(width, 5.2, consignee["name"], new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 10.5)
        address = consignee["address"] + (f"\n{consignee['country']}" if consignee.get("country") else "")
        pdf.multi_cell(width, 5.2, address, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 8.5)
        pdf.cell(width, 5, f"Consignee code {consignee['code']}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)
        pdf.set_font(FONT, "", 10)
        pdf.multi_cell(
            width,
            5.2,
            f"Our records show that you received the following product, which we are recalling (class "
            f"{recall_class}). {_WHAT_TO_DO.get(recall_class, '')}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.ln(2)
        pdf.set_font(FONT, "B", 10)
        pdf.cell(width, 5.5, "Reason", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 10)
        pdf.multi_cell(width, 5.2, recall["reason"], new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
        pdf.set_font(FONT, "B", 10)
        pdf.cell(width, 5.5, "Product you received", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 9)
        with pdf.table(
            col_widths=(30, 28, 30, 22, 28, 32),
            text_align="LEFT",
            line_height=4.6,
            headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        ) as table:
            table.row(["lot", "product", "shipped on", "quantity", "expires on", "shipment"])
            for line in by_consignee.get(consignee["code"], []):
                lot = expiry.get(line["lot_number"], {})
                table.row(
                    [
                        line["lot_number"],
                        lot.get("product") or "",
                        line["shipped_on"],
                        f"{line['quantity']:,} {line['unit'] or ''}".strip(),
                        lot.get("expires_on") or "",
                        line["shipment_number"],
                    ]
                )
        unit = f" {consignee['unit']}" if consignee.get("unit") else ""
        pdf.set_font(FONT, "", 9)
        pdf.cell(width, 5.5, f"Total shipped to you: {consignee['shipped']:,}{unit}.", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font(FONT, "B", 10)
        pdf.cell(width, 5.5, "What to do", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 10)
        for n, step in enumerate(
            (
                "Stop using and distributing the lots listed above at once.",
                "Quarantine all stock of these lots that you hold, apart from other stock.",
                "If you passed any of it on, notify your own consignees of this recall now.",
                "Return the quarantined stock to us, quoting the recall number.",
                "Acknowledge this notice within 3 calendar days, stating the quantity you hold, the quantity you "
                "return and the quantity already used, even if none.",
            ),
            start=1,
        ):
            pdf.multi_cell(width, 5.2, f"{n}. {step}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        pdf.set_font(FONT, "B", 10)
        pdf.cell(width, 5.5, "Contact", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 10)
        pdf.multi_cell(
            width,
            5.2,
            f"Recall coordinator {contact}; quote recall {number} and your consignee code "
            f"{consignee['code']} in every reply.",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.ln(5)
        pdf.set_font(FONT, "B", 10)
        pdf.cell(width, 5.5, "Acknowledgement (return this part)", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, "", 10)
        for label in ("Quantity in stock:", "Quantity returned:", "Quantity used:", "Name, signature and date:"):
            pdf.cell(width, 7, f"{label} " + "_" * (60 - len(label)), new_x="LMARGIN", new_y="NEXT")
