"""Pool add + close at fractionator scale, through the services, against raw SQL doing the core of the same work.

    python bench/bench_pool.py --units 20000 [--repeat 3] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Set-up (not timed): a fresh migrated database, then qualified donors (two fully tested nonreactive units each,
past the hold) inserted set-based, enough for ``--repeat`` pools of ``--units`` units; an open pool per run.

Timed, each step in its own transaction as the command line does it:

* ``plasmatrace``: ``pools.add_units`` of all the units (unit-number parsing, eligibility facts of every unit:
  status, current results, donor qualification, deferrals; membership rows, status update, audit event), then
  ``pools.close_pool`` (eligibility again, distinct-donor composition, audit event);
* ``raw SQL``: resolve the unit numbers into a temporary table, one eligibility query (status, hold, complete
  nonreactive current panel), INSERT ... SELECT of the memberships, UPDATE of the unit status; then the
  distinct-donor count and the pool status update. No donor qualification or deferral check, no audit.

The target is add + close of 20,000 units under 2 s on SQLite.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common

PANEL_SQL = ", ".join(f"'{m}'" for m in common.PANEL)
INELIGIBLE_SQL = f"""
SELECT count(*) FROM donation d JOIN sel ON sel.id = d.id
WHERE d.status <> 'in-inventory' OR d.collected_at > :hold OR d.volume_ml <= 0
   OR (SELECT count(*) FROM test_result t
       WHERE t.donation_id = d.id AND t.marker IN ({PANEL_SQL}) AND t.result = 'nonreactive'
         AND t.version = (SELECT max(t2.version) FROM test_result t2
                          WHERE t2.donation_id = d.id AND t2.marker = t.marker)) < {len(common.PANEL)}
"""  # noqa: S608 - constants only
COMPOSITION_SQL = """
SELECT count(DISTINCT d.donor_id), count(*), coalesce(sum(d.volume_ml), 0)
FROM pool_member pm JOIN donation d ON d.id = pm.donation_id WHERE pm.pool_id = :pool
"""


def build(url: str, units: int, repeat: int) -> list[list[str]]:
    """``repeat`` batches of ``units`` eligible unit numbers, and one open pool per batch and loader."""
    from traceability.db import make_engine, transaction
    from traceability.services import pools

    engine = make_engine(url)
    batches = []
    try:
        for tag in range(1, 2 * repeat + 1):
            batches.append(common.bulk_qualified_units(engine, donors=units // 2, units_per_donor=2, tag=tag))
        with transaction(engine) as session:
            for tag in range(1, 2 * repeat + 1):
                pools.create_pool(session, pool_number=f"P-BENCH-{tag:02d}", product="ivig", actor=common.ACTOR)
    finally:
        engine.dispose()
    return batches


def plasmatrace_add_close(url: str, pool: str, numbers: list[str]) -> dict[str, float]:
    from sqlalchemy import text

    from traceability.db import make_engine, transaction
    from traceability.services import pools

    engine = make_engine(url)
    try:
        with transaction(engine) as session:  # open the connection before the clock starts
            session.execute(text("SELECT 1"))
        t0 = time.perf_counter()
        with transaction(engine) as session:
            added = pools.add_units(session, pool_number=pool, unit_numbers=numbers, actor=common.ACTOR)
        t1 = time.perf_counter()
        with transaction(engine) as session:
            _, composition = pools.close_pool(session, pool_number=pool, actor=common.ACTOR)
        t2 = time.perf_counter()
    finally:
        engine.dispose()
    assert added == len(numbers), added
    return {"add": t1 - t0, "close": t2 - t1, "donors": composition.donor_count}


def raw_sqlite_add_close(path: Path, pool: str, numbers: list[str]) -> dict[str, float]:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("PRAGMA synchronous=NORMAL")
    hold = (datetime.now(UTC) - timedelta(days=60)).replace(tzinfo=None).isoformat(" ", "microseconds")
    stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    t0 = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    pool_id, status = con.execute("SELECT id, status FROM pool WHERE pool_number = ?", (pool,)).fetchone()
    assert status == "open"
    con.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (unit_number TEXT PRIMARY KEY)")
    con.execute("CREATE TEMP TABLE IF NOT EXISTS sel (id INTEGER PRIMARY KEY)")
    con.execute("DELETE FROM wanted")
    con.execute("DELETE FROM sel")
    con.executemany("INSERT INTO wanted VALUES (?)", ((n,) for n in numbers))
    con.execute("INSERT INTO sel SELECT d.id FROM donation d JOIN wanted w ON w.unit_number = d.unit_number")
    found = con.execute("SELECT count(*) FROM sel").fetchone()[0]
    bad = con.execute(INELIGIBLE_SQL, {"hold": hold}).fetchone()[0]
    assert found == len(numbers) and bad == 0, (found, bad)
    con.execute(
        "INSERT INTO pool_member (pool_id, donation_id, created_at, created_by) SELECT ?, id, ?, ? FROM sel",
        (pool_id, stamp, common.ACTOR),
    )
    changed = con.execute(
        "UPDATE donation SET status = 'pooled' WHERE id IN (SELECT id FROM sel) AND status = 'in-inventory'"
    ).rowcount
    assert changed == len(numbers)
    con.execute("COMMIT")
    t1 = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    donors, count, _ = con.execute(COMPOSITION_SQL, {"pool": pool_id}).fetchone()
    con.execute("UPDATE pool SET status = 'closed', closed_at = ? WHERE id = ?", (stamp, pool_id))
    con.execute("COMMIT")
    t2 = time.perf_counter()
    con.close()
    return {"add": t1 - t0, "close": t2 - t1, "donors": donors}


def raw_postgres_add_close(url: str, pool: str, numbers: list[str]) -> dict[str, float]:
    import psycopg

    hold = datetime.now(UTC) - timedelta(days=60)
    stamp = datetime.now(UTC)
    with psycopg.connect(common.libpq_url(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        conn.commit()
        t0 = time.perf_counter()
        pool_id, status = cur.execute(
            "SELECT id, status FROM pool WHERE pool_number = %s FOR UPDATE", (pool,)
        ).fetchone()
        assert status == "open"
        cur.execute("CREATE TEMP TABLE wanted (unit_number text PRIMARY KEY) ON COMMIT DROP")
        with cur.copy("COPY wanted FROM STDIN") as copy:
            for n in numbers:
                copy.write_row((n,))
        cur.execute(
            "CREATE TEMP TABLE sel ON COMMIT DROP AS SELECT d.id FROM donation d "
            "JOIN wanted w ON w.unit_number = d.unit_number"
        )
        found = cur.execute("SELECT count(*) FROM sel").fetchone()[0]
        bad = cur.execute(INELIGIBLE_SQL.replace(":hold", "%(hold)s"), {"hold": hold}).fetchone()[0]
        assert found == len(numbers) and bad == 0, (found, bad)
        cur.execute(
            "INSERT INTO pool_member (pool_id, donation_id, created_at, created_by) SELECT %s, id, %s, %s FROM sel",
            (pool_id, stamp, common.ACTOR),
        )
        cur.execute(
            "UPDATE donation SET status = 'pooled' WHERE id IN (SELECT id FROM sel) AND status = 'in-inventory'"
        )
        assert cur.rowcount == len(numbers)
        conn.commit()
        t1 = time.perf_counter()
        cur.execute("SELECT id FROM pool WHERE id = %s FOR UPDATE", (pool_id,))
        donors, count, _ = cur.execute(COMPOSITION_SQL.replace(":pool", "%(pool)s"), {"pool": pool_id}).fetchone()
        cur.execute("UPDATE pool SET status = 'closed', closed_at = %s WHERE id = %s", (stamp, pool_id))
        conn.commit()
        t2 = time.perf_counter()
    return {"add": t1 - t0, "close": t2 - t1, "donors": donors}


def worker(args: argparse.Namespace) -> None:
    """One measurement in a fresh process (imports are done before the clock starts)."""
    numbers = Path(args.units_file).read_text().split()
    if args.worker == "plasmatrace":
        import traceability.services.pools  # noqa: F401 - imported before timing

        result = plasmatrace_add_close(args.db, args.pool, numbers)
    elif args.worker == "raw-sqlite":
        result = raw_sqlite_add_close(Path(args.db.removeprefix("sqlite:///")), args.pool, numbers)
    else:
        result = raw_postgres_add_close(args.db, args.pool, numbers)
    result["peak_mb"] = common.peak_rss_mb()
    common.emit(result)


def run(backend: str, url: str, units: int, repeat: int, raw_name: str) -> list[dict[str, Any]]:
    with common.Timer() as t:
        batches = build(url, units, repeat)
    print(f"  {backend}: built {len(batches) * units:,} eligible units in {t.seconds:.1f} s", file=sys.stderr)
    out = []
    script = Path(__file__).resolve()
    for i in range(repeat):
        for k, name in enumerate(("plasmatrace", raw_name)):
            tag = 2 * i + k + 1
            units_file = common.OUT / f"pool-units-{os.getpid()}-{tag}.txt"
            units_file.write_text("\n".join(batches[tag - 1]))
            try:
                r = common.run_worker(
                    script,
                    ["--worker", name, "--db", url, "--pool", f"P-BENCH-{tag:02d}", "--units-file", str(units_file)],
                )
            finally:
                units_file.unlink()
            r.update(backend=backend, loader=name)
            out.append(r)
            print(f"  {backend} {name}: add {r['add']:.3f} s, close {r['close']:.3f} s", file=sys.stderr)
    return out


def summarise(runs: list[dict[str, Any]], units: int) -> list[list[Any]]:
    rows = []
    names = {"plasmatrace": "plasmatrace services", "raw-sqlite": "raw SQL (sqlite3)", "raw-pg": "raw SQL (psycopg)"}
    for backend in dict.fromkeys(r["backend"] for r in runs):
        mine = [r for r in runs if r["backend"] == backend]
        raw_total = None
        for loader in ("plasmatrace", *(n for n in ("raw-sqlite", "raw-pg") if any(r["loader"] == n for r in mine))):
            rs = [r for r in mine if r["loader"] == loader]
            add = common.median([r["add"] for r in rs])
            close = common.median([r["close"] for r in rs])
            rows.append(
                [
                    backend,
                    names[loader],
                    units,
                    rs[0]["donors"],
                    add,
                    close,
                    add + close,
                    max(r["peak_mb"] for r in rs),
                    loader,
                ]
            )
            if loader != "plasmatrace":
                raw_total = add + close
        for row in rows:
            if row[0] == backend:
                row[8] = f"{row[6] / raw_total:.1f}x" if raw_total else "-"
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--units",
        type=int,
        default=20_000,
        help="units per pool (default 20,000; at least 2,000 for the 1,000-donor minimum)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="pools per loader; medians are shown")
    parser.add_argument("--postgres", metavar="URL", help="also measure on a fresh database on this server")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--pool", help=argparse.SUPPRESS)
    parser.add_argument("--units-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.units < 2_000:
        parser.error("--units must be at least 2,000: a pool needs 1,000 distinct donors (two units each here)")

    runs: list[dict[str, Any]] = []
    common.OUT.mkdir(parents=True, exist_ok=True)
    if not args.no_sqlite:
        db = common.OUT / f"pool-bench-{os.getpid()}.db"
        common.remove_sqlite(db)
        try:
            common.prepare(common.sqlite_url(db))
            runs += run("SQLite", common.sqlite_url(db), args.units, args.repeat, "raw-sqlite")
        finally:
            common.remove_sqlite(db)
    if args.postgres:
        with common.postgres_database(args.postgres, "pool") as url:
            common.prepare(url)
            runs += run("PostgreSQL", url, args.units, args.repeat, "raw-pg")

    date = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"\n{date}; {common.machine()}" + (f"; {common.postgres_version(args.postgres)}" if args.postgres else ""))
    print(
        f"pool of {args.units:,} units (two per donor), median of {args.repeat}; add and close each one transaction\n"
    )
    print(
        common.table(
            ["backend", "method", "units", "donors", "add s", "close s", "add+close s", "peak MB", "vs raw"],
            summarise(runs, args.units),
        )
    )
    print("\ntarget: add + close of 20,000 units under 2 s on SQLite")
    common.save_json(f"pool-{args.units}.json", {"date": date, "machine": common.machine(), "runs": runs})


if __name__ == "__main__":
    main()
