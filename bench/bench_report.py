"""The PDF report of a 20,000-donation lot against its JSON report, side by side (issue 16: within 3x).

    python bench/bench_report.py [--donors 6400] [--runs 3] [--db sqlite:///demo.db]

Builds a demo site whose final lot holds about 20,000 donations (``plasmatrace demo --donors N``; not timed in the
comparison), then, in this process, builds and writes the lot's report as JSON and as PDF ``--runs`` times each,
alternating, and prints the medians and their ratio. The whole commands (``plasmatrace report lot ... --format``)
are timed too, in subprocesses, start-up included. Both PDF runs must give the same bytes; that is checked.
Figures go to bench/out/report-*.json.

"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "cli"]  # with ROOT on PYTHONPATH: this checkout's cli package
CLI_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def build_site(url: str, donors: int) -> None:
    subprocess.run(
        [*CLI, "--db", url, "demo", "--donors", str(donors), "--seed", "7"],
        check=True,
        capture_output=True,
        env=CLI_ENV,
    )


def biggest_final_lot(url: str) -> tuple[str, int]:
    from sqlmodel import Session, select

    from traceability.db import make_engine
    from traceability.models import Lot, LotKind
    from traceability.queries.lineage import trace_lot

    with Session(make_engine(url)) as session:
        numbers = list(session.exec(select(Lot.lot_number).where(Lot.kind == LotKind.FINAL)))
        sizes = {n: trace_lot(session, n).donation_count for n in numbers}
    number = max(sizes, key=lambda n: (sizes[n], n))
    return number, sizes[number]


def in_process(url: str, lot: str, fmt: str, output: Path) -> float:
    from sqlmodel import Session

    from traceability.db import make_engine
    from traceability.reports.lineage_report import build_report, write_report

    engine = make_engine(url)
    started = time.perf_counter()
    with Session(engine) as session:
        report = build_report(session, "lot", lot)
    write_report(report, fmt, output)
    return time.perf_counter() - started


def command(url: str, lot: str, fmt: str, output: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*CLI, "--db", url, "report", "lot", lot, "--format", fmt, "-o", str(output)],
        check=True,
        capture_output=True,
        env=CLI_ENV,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--donors", type=int, default=6400, help="demo donors (6,400 give about 20,000 donations)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", help="an existing demo database to reuse")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{folder}/report-bench.db"
        if not args.db:
            started = time.perf_counter()
            build_site(url, args.donors)
            print(f"demo site with {args.donors:,} donors built in {time.perf_counter() - started:.1f} s")
        lot, donations = biggest_final_lot(url)
        out = Path(folder)
        seconds: dict[str, list[float]] = {"json": [], "pdf": [], "json command": [], "pdf command": []}
        digests = set()
        for _ in range(args.runs):
            for fmt in ("json", "pdf"):
                seconds[fmt].append(in_process(url, lot, fmt, out / f"r.{fmt}"))
            digests.add(hashlib.sha256((out / "r.pdf").read_bytes()).hexdigest())
            for fmt in ("json", "pdf"):
                seconds[f"{fmt} command"].append(command(url, lot, fmt, out / f"c.{fmt}"))
        pages = (out / "r.pdf").read_bytes().count(b"/Type /Page\n")
        sizes = {fmt: (out / f"r.{fmt}").stat().st_size for fmt in ("json", "pdf")}
    medians = {k: common.median(v) for k, v in seconds.items()}
    rows = [
        [
            "in process (build + write)",
            f"{medians['json']:.2f}",
            f"{medians['pdf']:.2f}",
            f"{medians['pdf'] / medians['json']:.2f}x",
        ],
        [
            "whole command",
            f"{medians['json command']:.2f}",
            f"{medians['pdf command']:.2f}",
            f"{medians['pdf command'] / medians['json command']:.2f}x",
        ],
    ]
    print(
        f"lot {lot}: {donations:,} donations; PDF {pages} pages, {sizes['pdf'] / 1e6:.1f} MB; "
        f"JSON {sizes['json'] / 1e6:.1f} MB; PDF runs byte-identical: {len(digests) == 1}"
    )
    print(common.table(["median of runs, seconds", "JSON", "PDF", "PDF / JSON"], rows))
    common.save_json(
        f"report-{time.strftime('%Y%m%dT%H%M%S')}.json",
        {
            "machine": common.machine(),
            "lot": lot,
            "donations": donations,
            "pages": pages,
            "seconds": seconds,
            "medians": medians,
            "identical": len(digests) == 1,
        },
    )


if __name__ == "__main__":
    main()
