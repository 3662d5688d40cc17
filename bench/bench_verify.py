"""`audit verify` (chain and record proof) against reading the big tables once, side by side, in the same run.

    python bench/bench_verify.py --donations 100000            (SQLite; the database is built once into /tmp)
    python bench/bench_verify.py --donations 1000000

The database holds N donations and 6N results loaded by the import (their rows proven by the imports' digests).
The baseline is one plain SELECT of every column of each regulated table, streamed through the same driver;
`audit verify` must take at most 3x that. Peak RSS is this process's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from generate import ensure_generated, init_db  # noqa: E402


def load(url: str, data: Path) -> None:
    init_db(url, data)
    for kind in ("donors", "donations", "results"):
        subprocess.run(
            [sys.executable, "-m", "cli", "--db", url, "import", kind, str(data / f"{kind}.csv")],
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
            stdout=subprocess.DEVNULL,
        )


def build(donations: int, folder: Path) -> str:
    data = folder / f"verify-data-{donations}"
    ensure_generated(data, donations=donations)
    path = folder / f"plasmatrace-verify-{donations}.db"
    if not path.exists():
        partial = path.with_suffix(".part")
        common.remove_sqlite(partial)
        load(common.sqlite_url(partial), data)
        partial.rename(path)
    return common.sqlite_url(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--donations", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--postgres", metavar="URL", help="measure on a new database on this server instead")
    args = parser.parse_args()
    if args.postgres:
        data = args.dir / f"verify-data-{args.donations}"
        ensure_generated(data, donations=args.donations)
        with common.postgres_database(args.postgres, "verify") as url:
            load(url, data)
            measure(url, args.donations)
    else:
        measure(build(args.donations, args.dir), args.donations)


def measure(url: str, donations: int) -> None:
    from sqlalchemy import select, type_coerce
    from sqlalchemy.types import NullType
    from sqlmodel import Session

    from traceability import audit
    from traceability.audit import tables
    from traceability.db import make_engine

    engine = make_engine(url)
    rows = 0
    with engine.connect() as conn, common.Timer() as plain:
        for spec in tables.REGULATED:
            plain_select = select(*(type_coerce(c, NullType()) for c in spec.model_table.c))  # SELECT every column
            for _row in conn.execute(plain_select.execution_options(stream_results=True, yield_per=10_000)):
                rows += 1
    with Session(engine) as session, common.Timer() as verify:
        result = audit.verify(session)
    assert result.ok, result.problem
    ratio = verify.seconds / plain.seconds
    out = {
        "donations": donations,
        "engine": engine.dialect.name,
        "rows": rows,
        "plain_select_s": round(plain.seconds, 2),
        "verify_s": round(verify.seconds, 2),
        "ratio": round(ratio, 2),
        "peak_rss_mb": round(common.peak_rss_mb(), 1),
        "machine": common.machine(),
    }
    common.emit(out)
    print(
        f"{rows:,} rows: plain SELECT {plain.seconds:.1f} s, audit verify {verify.seconds:.1f} s "
        f"({ratio:.2f}x), peak RSS {out['peak_rss_mb']} MB"
    )


if __name__ == "__main__":
    main()
