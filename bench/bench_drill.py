"""Recall drill latency at fractionator scale: ``plasmatrace recall drill --donor CODE`` as a whole command.

    python bench/bench_drill.py --donations 1000000 [--postgres postgresql://postgres@127.0.0.1:5432/test]

The database is built once (the generated files of ``generate.py``, loaded set-based, then pools, lots and
shipments through the services, as ``bench_trace.py`` builds them) into ``--dir`` (default /tmp/plasmatrace-drill)
and reused by later runs with the same ``--donations``, ``--seed``, ``--pools`` and ``--pool-units``; it is
migrated to the current schema before each run. PostgreSQL databases are built each run and dropped afterwards
unless ``--keep``.

Timed, for donors whose units went into pools and for random donors:

* the whole command ``python -m cli --db URL recall drill --donor CODE --format json`` in a fresh process
  (start-up, migration check, the drill and keeping its record included), median and worst of ``--cli-runs``
  runs over ``--samples`` donors;
* the drill in-process (``drill.drill_donor`` in its own transaction, without keeping it);
* the cheapest raw-SQL baseline answering the same question on a bare ``sqlite3``/psycopg connection: the donor's
  donations in the window with their pools, the lots downstream (recursive CTE) and their shipments and balances,
  without the look-back window rules (every donation is taken) and without the record of the drill;
* ``python -c pass`` and ``python -m cli --help`` for the start-up floor.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import common
from generate import ensure_generated

SCRIPT = Path(__file__).resolve()


def built_sqlite(args: argparse.Namespace, folder: Path) -> tuple[str, dict[str, Any]]:
    """The kept SQLite database of this shape, built now when there is none."""
    import bench_trace

    shape = f"{args.donations}-s{args.seed}-{args.pools}x{args.pool_units}"
    db = args.dir / f"drill-{shape}.db"
    note = args.dir / f"drill-{shape}.json"
    url = common.sqlite_url(db)
    if db.exists() and note.exists():
        return url, json.loads(note.read_text(encoding="utf-8"))
    partial = args.dir / f"drill-{shape}.{os.getpid()}.part.db"
    common.sqlite_template(folder, partial)
    built = bench_trace.build("SQLite", common.sqlite_url(partial), folder, args)
    os.replace(partial, db)
    note.write_text(json.dumps(built, default=str), encoding="utf-8")
    return url, built


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--donations", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pools", type=int, default=2)
    parser.add_argument("--pool-units", type=int, default=20_000)
    parser.add_argument("--build", choices=("raw", "import"), default="raw")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/plasmatrace-drill"))
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    folder = args.dir / f"data-{args.donations}-s{args.seed}-p6"
    ensure_generated(folder, donations=args.donations, seed=args.seed, panel=6)
    url, built = built_sqlite(args, folder)
    print(
        f"SQLite database {url} (built in {built.get('load_seconds', 0):.0f} s"
        f" + {built.get('lineage_seconds', 0):.0f} s)"
    )
    if args.build_only:
        return


if __name__ == "__main__":
    main()
