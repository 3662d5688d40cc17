"""The lineage picture: pools and lots as boxes (counts, status, holds), inputs as arrows with quantities.

Never the donations. Graphviz ``dot`` lays the boxes out where it is installed (``dot -Tplain``: positions only);
otherwise a small layered layout in Python does. Either way one ``Layout`` comes out, in points, and the same code
draws it as SVG (HTML) and as vector lines and boxes (PDF), so the two paths differ only in where boxes sit.
"""

from __future__ import annotations

import html
import shlex
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field

BOX_WIDTH, LINE_HEIGHT, PADDING = 150.0, 11.0, 5.0
RANK_GAP, NODE_GAP = 70.0, 18.0
ALERT_STATUSES = frozenset({"quarantined", "rejected", "held"})


@dataclass
class Node:
    """A pool or a lot: ``lines`` are printed under the key; ``alert`` draws it red (quarantine, hold, open case)."""

    ident: str
    kind: str
    key: str
    lines: list[str]
    alert: bool = False


@dataclass
class Edge:
    source: str
    target: str
    label: str = ""


@dataclass
class LineageGraph:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "nodes": [
                {"id": n.ident, "kind": n.kind, "key": n.key, "lines": n.lines, "alert": n.alert} for n in self.nodes
            ],
            "edges": [{"from": e.source, "to": e.target, "label": e.label} for e in self.edges],
        }


@dataclass
class Box:
    x: float
    y: float
    width: float
    height: float


@dataclass
class Layout:
    """Boxes by node id and each edge as a cubic Bézier chain (start, then three points per segment), in points."""

    width: float
    height: float
    boxes: dict[str, Box]
    curves: list[tuple[Edge, list[tuple[float, float]]]]
    engine: str


def _height(node: Node) -> float:
    return (1 + len(node.lines)) * LINE_HEIGHT + 2 * PADDING


def _dot_id(ident: str) -> str:
    return '"' + ident.replace("\\", "\\\\").replace('"', '\\"') + '"'


def layout_with_dot(graph: LineageGraph, dot: str) -> Layout:
    """Ask Graphviz for positions only (``-Tplain``, inches, origin bottom left) and convert them to points."""
    source = ["digraph lineage {", "rankdir=LR; nodesep=0.25; ranksep=0.9; splines=spline;", "node [shape=box];"]
    for node in graph.nodes:
        source.append(
            f"{_dot_id(node.ident)} [width={BOX_WIDTH / 72:.4f}, height={_height(node) / 72:.4f}, fixedsize=true];"
        )
    for edge in graph.edges:
        source.append(f"{_dot_id(edge.source)} -> {_dot_id(edge.target)};")
    source.append("}")
    plain = subprocess.run(
        [dot, "-Tplain"], input="\n".join(source), capture_output=True, text=True, check=True, timeout=60
    ).stdout
    height = 0.0
    width = 0.0
    boxes: dict[str, Box] = {}
    raw_curves: dict[tuple[str, str], list[list[tuple[float, float]]]] = defaultdict(list)
    for line in plain.splitlines():
        parts = shlex.split(line)
        if not parts:
            continue
        if parts[0] == "graph":
            width, height = float(parts[2]) * 72, float(parts[3]) * 72
        elif parts[0] == "node":
            cx, cy, w, h = (float(v) * 72 for v in parts[2:6])
            boxes[parts[1]] = Box(cx - w / 2, height - cy - h / 2, w, h)
        elif parts[0] == "edge":
            count = int(parts[3])
            values = [float(v) * 72 for v in parts[4 : 4 + 2 * count]]
            points = [(values[i], height - values[i + 1]) for i in range(0, len(values), 2)]
            raw_curves[(parts[1], parts[2])].append(points)
    margin = 4.0  # dot's bounding box ends on the outermost boxes' borders
    for box in boxes.values():
        box.x, box.y = box.x + margin, box.y + margin
    curves = [
        (edge, [(x + margin, y + margin) for x, y in raw_curves[(edge.source, edge.target)].pop(0)])
        for edge in graph.edges
    ]
    return Layout(width + 2 * margin, height + 2 * margin, boxes, curves, "graphviz dot")


def layout_layered(graph: LineageGraph) -> Layout:
    """Pure Python: a node's rank is the longest path from a source; within a rank, ordered by the mean position of
    its inputs (one barycentre pass), then by key; arrows are S-curves from the right edge to the left edge."""
    inputs: dict[str, list[str]] = defaultdict(list)
    for edge in graph.edges:
        inputs[edge.target].append(edge.source)
    nodes = {n.ident: n for n in graph.nodes}
    rank: dict[str, int] = {}

    def rank_of(ident: str) -> int:
        if ident not in rank:
            rank[ident] = 0  # a guard: lineage is acyclic, but a cycle must not recurse forever
            rank[ident] = 1 + max((rank_of(s) for s in inputs[ident]), default=-1)
        return rank[ident]

    for ident in nodes:
        rank_of(ident)
    columns: dict[int, list[str]] = defaultdict(list)
    for ident in sorted(nodes, key=lambda i: nodes[i].key):
        columns[rank[ident]].append(ident)
    order: dict[str, float] = {}
    for r in sorted(columns):
        if r > 0:
            columns[r].sort(key=lambda i: (sum(order[s] for s in inputs[i]) / max(len(inputs[i]), 1), nodes[i].key))
        for position, ident in enumerate(columns[r]):
            order[ident] = position
    heights = {
        r: sum(_height(nodes[i]) for i in idents) + NODE_GAP * (len(idents) - 1) for r, idents in columns.items()
    }
    total_height = max(heights.values(), default=0.0) + 2 * NODE_GAP
    boxes: dict[str, Box] = {}
    for r, idents in columns.items():
        y = (total_height - heights[r]) / 2
        for ident in idents:
            boxes[ident] = Box(NODE_GAP + r * (BOX_WIDTH + RANK_GAP), y, BOX_WIDTH, _height(nodes[ident]))
            y += _height(nodes[ident]) + NODE_GAP
    curves = []
    for edge in graph.edges:
        a, b = boxes[edge.source], boxes[edge.target]
        start = (a.x + a.width, a.y + a.height / 2)
        end = (b.x, b.y + b.height / 2)
        middle = (start[0] + end[0]) / 2
        curves.append((edge, [start, (middle, start[1]), (middle, end[1]), end]))
    width = NODE_GAP * 2 + (max(columns, default=0) + 1) * (BOX_WIDTH + RANK_GAP) - RANK_GAP
    return Layout(width, total_height, boxes, curves, "layered (Python)")


def layout(graph: LineageGraph, *, use_dot: bool = True) -> Layout:
    """Graphviz where installed (and wanted), the Python layout otherwise or when dot fails."""
    dot = shutil.which("dot") if use_dot else None
    if dot and graph.nodes:
        try:
            return layout_with_dot(graph, dot)
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return layout_layered(graph)


def _label_point(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The middle of the chain's middle segment: on the curve, where a quantity reads naturally."""
    segments = max((len(points) - 1) // 3, 1)
    i = 3 * (segments // 2)
    p0, p1, p2, p3 = points[i : i + 4] if len(points) >= i + 4 else (points[0], points[0], points[-1], points[-1])
    return (
        (p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]) / 8,
        (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8,
    )


def to_svg(graph: LineageGraph, drawn: Layout) -> str:
    """An inline SVG (no external references), sized in CSS pixels = points."""
    esc = html.escape
    nodes = {n.ident: n for n in graph.nodes}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="lineage" role="img" '
        f'viewBox="0 0 {drawn.width:.1f} {drawn.height:.1f}" width="{drawn.width:.1f}" height="{drawn.height:.1f}" '
        'font-family="DejaVu Sans, system-ui, sans-serif" font-size="9">',
        "<title>Lineage: pools and lots, inputs with quantities</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>',
    ]
    for edge, points in drawn.curves:
        path = f"M{points[0][0]:.1f},{points[0][1]:.1f}" + "".join(
            f" C{points[i][0]:.1f},{points[i][1]:.1f} {points[i + 1][0]:.1f},{points[i + 1][1]:.1f} "
            f"{points[i + 2][0]:.1f},{points[i + 2][1]:.1f}"
            for i in range(1, len(points) - 2, 3)
        )
        out.append(f'<path d="{path}" fill="none" stroke="#444" stroke-width="1" marker-end="url(#arrow)"/>')
        if edge.label:
            x, y = _label_point(points)
            out.append(
                f'<text x="{x:.1f}" y="{y - 3:.1f}" text-anchor="middle" fill="#222" '
                f'paint-order="stroke" stroke="#fff" stroke-width="3">{esc(edge.label)}</text>'
            )
    for ident, box in sorted(drawn.boxes.items()):
        node = nodes[ident]
        fill, stroke = (
            ("#fde8e8", "#b00020")
            if node.alert
            else (("#e8f0fe", "#1a4d8f") if node.kind == "pool" else ("#eef7ee", "#2e6b34"))
        )
        out.append(
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" height="{box.height:.1f}" rx="4" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="{2 if node.alert else 1}"/>'
        )
        y = box.y + PADDING + LINE_HEIGHT - 2
        out.append(
            f'<text x="{box.x + PADDING:.1f}" y="{y:.1f}" font-weight="bold">{esc(node.kind)} {esc(node.key)}</text>'
        )
        for line in node.lines:
            y += LINE_HEIGHT
            out.append(f'<text x="{box.x + PADDING:.1f}" y="{y:.1f}">{esc(line)}</text>')
    out.append("</svg>")
    return "".join(out)
