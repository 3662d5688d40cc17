"""Import throughput and peak memory: plasmatrace import against raw loading of the same rows, in one run.

    python bench/bench_import.py --donations 200000 [--postgres postgresql://postgres@127.0.0.1:5432/test]

On the same generated files (bench/generate.py; donors, N donations, 6N results by default):

* ``plasmatrace`` imports donors, donations and results with ``import_file``, each file in its own transaction
  like ``plasmatrace import``: validation, reference checks, duplicate checks, audit events and the reactive
  result rules included;
* ``raw sqlite3`` parses the same files with the csv module and inserts the same rows with ``executemany`` into
  the same migrated schema (same tables, indexes, pragmas), one transaction, no validation, no audit;
* with ``--postgres``: the same two against a fresh PostgreSQL database each, the raw side with
  ``COPY ... FROM STDIN`` (psycopg 3).

Every measurement runs in a fresh subprocess on a fresh, migrated database with the establishments already
created; the peak memory is that process's peak RSS (``ru_maxrss``), interpreter and libraries included. The
target is plasmatrace at most 2x the raw time and under 300 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import common
from generate import ensure_generated

SCRIPT = Path(__file__).resolve()
KINDS = ("donors", "donations", "results")


# --- worker: one measurement in its own process ------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    folder = Path(args.data)
    if args.worker == "plasmatrace":
        from traceability.db import make_engine

        engine = make_engine(args.db)
        start_mb = common.current_rss_mb()
        with common.Timer() as t:
            seconds = common.plasmatrace_import(args.db, folder, engine=engine)
        engine.dispose()
    elif args.worker == "raw-sqlite":
        start_mb = common.current_rss_mb()
        with common.Timer() as t:
            seconds = common.raw_sqlite_load(Path(args.db.removeprefix("sqlite:///")), folder)
    elif args.worker == "raw-copy":
        start_mb = common.current_rss_mb()
        with common.Timer() as t:
            seconds = common.raw_postgres_copy(args.db, folder)
    else:
        raise SystemExit(f"unknown worker {args.worker}")
    common.emit({"seconds": t.seconds, "per_file": seconds, "start_mb": start_mb, "peak_mb": common.peak_rss_mb()})


# --- orchestration -------------------------------------------------------------------------------------------------


def measure(name: str, url: str, folder: Path) -> dict[str, Any]:
    result = common.run_worker(SCRIPT, ["--worker", name, "--db", url, "--data", str(folder)])
    result["counts"] = common.table_counts(url)
    return result


def run_sqlite(folder: Path, repeat: int, ours_only: bool) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {"plasmatrace": []} if ours_only else {"raw-sqlite": [], "plasmatrace": []}
    db = common.OUT / f"import-bench-{os.getpid()}.db"
    try:
        for _ in range(repeat):
            for name in runs:
                common.sqlite_template(folder, db)
                runs[name].append(measure(name, common.sqlite_url(db), folder))
                print(f"  sqlite {name}: {runs[name][-1]['seconds']:.2f} s", file=sys.stderr)
    finally:
        common.remove_sqlite(db)
    return runs


def run_postgres(base_url: str, folder: Path, repeat: int, ours_only: bool) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {"plasmatrace": []} if ours_only else {"raw-copy": [], "plasmatrace": []}
    for _ in range(repeat):
        for name in runs:
            with common.postgres_database(base_url, "import") as url:
                common.prepare(url, folder)
                runs[name].append(measure(name, url, folder))
            print(f"  postgresql {name}: {runs[name][-1]['seconds']:.2f} s", file=sys.stderr)
    return runs


def best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["seconds"])


def report_rows(
    backend: str, runs: dict[str, list[dict[str, Any]]], rows: int, raw_name: str, label: dict[str, str]
) -> list[list[Any]]:
    raw = best(runs[raw_name]) if raw_name in runs else None
    out = []
    for name in (raw_name, "plasmatrace"):
        if name not in runs:
            continue
        r = best(runs[name])
        per = r["per_file"]
        out.append(
            [
                backend,
                label[name],
                rows,
                r["seconds"],
                rows / r["seconds"],
                per["donors"],
                per["donations"],
                per["results"],
                r["start_mb"],
                r["peak_mb"],
                f"{r['seconds'] / raw['seconds']:.2f}x" if raw else "no raw run",
            ]
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--donations", type=int, default=200_000, help="N donations (default 200,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--panel", type=int, default=6, choices=(5, 6), help="results per donation (default 6)")
    parser.add_argument("--data", type=Path, help="folder of generated files (default bench/out/data-N-sSEED-pPANEL)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also measure on PostgreSQL (a database per run is created on this server and dropped)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the fastest is shown")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="measure plasmatrace only, no raw loading (for peak memory on files too big to load twice)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    folder = args.data or common.OUT / f"data-{args.donations}-s{args.seed}-p{args.panel}"
    manifest = ensure_generated(folder, donations=args.donations, seed=args.seed, panel=args.panel)
    c = manifest["counts"]
    rows = c["donors"] + c["donations"] + c["results"]
    print(
        f"data: {folder} ({c['donors']:,} donors, {c['donations']:,} donations, {c['results']:,} results)",
        file=sys.stderr,
    )
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": common.machine(),
        "manifest": manifest,
        "rows": rows,
    }
    lines: list[list[Any]] = []
    if not args.no_sqlite:
        sq = run_sqlite(folder, args.repeat, args.ours_only)
        results["sqlite"] = sq
        lines += report_rows(
            "SQLite",
            sq,
            rows,
            "raw-sqlite",
            {"raw-sqlite": "raw sqlite3 executemany", "plasmatrace": "plasmatrace import"},
        )
        _check_counts(sq, "raw-sqlite")
    if args.postgres:
        results["postgres_version"] = common.postgres_version(args.postgres)
        pg = run_postgres(args.postgres, folder, args.repeat, args.ours_only)
        results["postgres"] = pg
        lines += report_rows(
            "PostgreSQL", pg, rows, "raw-copy", {"raw-copy": "raw COPY FROM STDIN", "plasmatrace": "plasmatrace import"}
        )
        _check_counts(pg, "raw-copy")

    print(f"\n{results['date']}; {results['machine']}" + (f"; {results['postgres_version']}" if args.postgres else ""))
    print(
        f"{c['donors']:,} donors + {c['donations']:,} donations + {c['results']:,} results = {rows:,} rows "
        f"(seed {args.seed}, panel {args.panel}); best of {args.repeat}\n"
    )
    print(
        common.table(
            [
                "backend",
                "loader",
                "rows",
                "s",
                "rows/s",
                "donors s",
                "donations s",
                "results s",
                "start MB",
                "peak MB",
                "vs raw",
            ],
            lines,
        )
    )
    print("\ntargets: plasmatrace <= 2.00x raw; peak < 300 MB")
    path = common.save_json(f"import-{args.donations}.json", results)
    print(f"details: {path.relative_to(common.ROOT)}", file=sys.stderr)


def _check_counts(runs: dict[str, list[dict[str, Any]]], raw_name: str) -> None:
    if raw_name not in runs:
        return
    raw, ours = best(runs[raw_name])["counts"], best(runs["plasmatrace"])["counts"]
    for table in ("donor", "donation", "test_result"):
        if raw[table] != ours[table]:
            print(f"WARNING: {table}: raw loaded {raw[table]:,} rows, plasmatrace {ours[table]:,}", file=sys.stderr)


if __name__ == "__main__":
    main()
