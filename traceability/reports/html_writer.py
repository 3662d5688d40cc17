"""The HTML report: one self-contained page (inline CSS and SVG, no scripts), printable, wrapping long values."""

from __future__ import annotations

import html
import json

from .document import cell_text
from .history import shown
from .lineage_graph import layout, to_svg
from .lineage_report import Report
from .sections import Section

STYLE = """
body{font-family:"DejaVu Sans",system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#111}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;width:100%;table-layout:auto}
td,th{border:1px solid #bbb;padding:.2em .45em;font-size:.8em;vertical-align:top;overflow-wrap:anywhere}
th{background:#eee;text-align:left}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15em 1em}dt{font-weight:bold}
dd{margin:0;overflow-wrap:anywhere}
.picture{overflow-x:auto;border:1px solid #ddd;padding:.5em;background:#fcfcfc}
.flag{border-left:4px solid #b00020;padding-left:.6em}.none{color:#555}
.event{border:1px solid #ccc;margin:.5em 0;padding:.3em .6em;font-size:.85em;break-inside:avoid}
.event header{font-weight:bold}.event .reason{font-style:italic}
.event table{width:auto;max-width:100%}.event th{white-space:nowrap}.event td:first-child{white-space:nowrap}
.donations{columns:3 22em;font-family:"DejaVu Sans Mono",monospace;font-size:.75em}
.donations div{break-inside:avoid}
footer{margin-top:2em;border-top:1px solid #999;font-size:.85em}code{overflow-wrap:anywhere}
@media print{body{max-width:none}}
"""


def _table(section: Section) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in section.columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell_text(v))}</td>" for v in row) + "</tr>" for row in section.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report) -> str:
    esc = html.escape
    drawn = layout(report.graph)
    parts = [
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(report.title)}: lineage report</title><style>{STYLE}</style></head><body>",
        f"<h1>{esc(report.title)}: lineage report</h1><dl>",
        *(f"<dt>{esc(label)}</dt><dd>{esc(value)}</dd>" for label, value in report.summary),
        "</dl>",
        "<h2>Lineage</h2>",
        f"<div class='picture'>{to_svg(report.graph, drawn)}</div>",
        f"<p class='none'>Pools and lots with distinct donors and donations; arrows are inputs with quantities; "
        "red marks a quarantine, rejection, hold, open look-back case or a donor now reactive. "
        f"Layout: {esc(drawn.engine)}.</p>",
    ]
    for section in report.flags:
        parts.append(f"<h2>{esc(section.title)} ({len(section.rows):,})</h2>")
        parts.append(f"<div class='flag'>{_table(section)}</div>" if section.rows else "<p class='none'>None.</p>")
    for section in report.sections:
        parts.append(f"<h2>{esc(section.title)} ({len(section.rows):,})</h2>")
        parts.append(_table(section) if section.rows else "<p class='none'>None.</p>")
    parts.append(f"<h2>Audit history ({len(report.history):,} events)</h2>")
    for entry in report.history:
        parts.append(
            f"<div class='event'><header>#{entry.seq} {esc(entry.at)} · {esc(entry.action)} · "
            f"{esc(entry.entity)} {esc(entry.key)} · by {esc(entry.actor)}</header>"
        )
        if entry.reason:
            parts.append(f"<div class='reason'>reason: {esc(entry.reason)}</div>")
        if entry.fields:
            parts.append("<table><thead><tr><th>field</th><th>old</th><th>new</th></tr></thead><tbody>")
            parts += [
                f"<tr><td>{esc(name)}</td><td>{esc(shown(old))}</td><td>{esc(shown(new))}</td></tr>"
                for name, old, new in entry.fields
            ]
            parts.append("</tbody></table>")
        parts.append("</div>")
    if report.donations is not None:
        rows = report.donations.rows
        parts.append(f"<h2>Donations ({len(rows):,})</h2>")
        parts.append(f"<p class='none'>{esc(' · '.join(report.donations.columns))}</p><div class='donations'>")
        parts += ["<div>" + esc(" ".join(cell_text(v) for v in row)) + "</div>" for row in rows]
        parts.append("</div>")
    parts.append("<footer><dl>")
    parts += [f"<dt>{esc(label)}</dt><dd><code>{esc(value)}</code></dd>" for label, value in report.footer()]
    parts.append("</dl>")
    manifest = json.dumps(report.manifest(), sort_keys=True, ensure_ascii=True).replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="plasmatrace-manifest">{manifest}</script>')
    parts.append("</footer></body></html>\n")
    return "".join(parts)
