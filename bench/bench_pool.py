"""Pool add + close at fractionator scale, through the services, against raw SQL doing the core of the same work.

    python bench/bench_pool.py --units 20000 [--repeat 3] [--postgres postgresql://postgres@127.0.0.1:5432/test]
    python bench/bench_pool.py --units 20000 --inside bench/out/trace-1000000-7383.db
    python bench/bench_pool.py --units 20000 --background-donations 1000000 --postgres URL --no-sqlite

Set-up (not timed): a fresh migrated database, then qualified donors (two fully tested nonreactive units each,
past the hold) inserted set-based, enough for ``--repeat`` pools of ``--units`` units; an open pool per run.

Inside a large database: ``--inside FILE`` works on a copy of an existing SQLite database (the original is not
touched), ``--background-donations N`` first loads the generated files of N donations (bench/out/data-N-s1-p6,
made if missing) with the raw loaders of bench_import, then ANALYZE on PostgreSQL. The pools are then made of
the database's own units (``--members existing``, the default there): in-inventory units past the hold of
donors with several donations, at most ``units / 1,200`` per donor as bench_trace does, shuffled, and kept only
when the eligibility rules accept them (checked untimed). ``--members new`` adds the fresh two-unit donors instead.

Timed, each step in its own transaction as the command line does it, each run in a fresh process (on SQLite
the database file is read once just before, so that every run starts from the OS page cache: this machine
reclaims the cache of a file left alone for a minute, and a cold 1 GB database costs a second more):

* ``plasmatrace``: ``pools.add_units`` of all the units (unit-number parsing; eligibility of every unit: one
  screening statement over status, hold, volume, results, deferrals and donor qualification, with the full facts
  loaded and judged only for the units it cannot clear; membership rows and status update as INSERT ... SELECT
  and UPDATE; audit event), then ``pools.close_pool`` (the same screen over the members, distinct-donor
  composition, audit event);
* ``baseline`` (with ``--baseline DIR``): the same calls into another checkout, on pools of the same database,
  interleaved with the runs above;
* ``raw SQL``: resolve the unit numbers into a temporary table, one eligibility query (status, hold, complete
  nonreactive current panel), INSERT ... SELECT of the memberships, UPDATE of the unit status; then the
  distinct-donor count and the pool status update. No donor qualification or deferral check, no audit.

The target is add + close of 20,000 units under 2 s on SQLite.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common

PANEL_SQL = ", ".join(f"'{m}'" for m in common.PANEL)
# SQLite has no statistics unless ANALYZE is run: CROSS JOIN keeps the small temporary table outermost (else, in a
# database of 1,000,000 donations, it walks the whole donation table or unit-number index).
INELIGIBLE_SQL = f"""
SELECT count(*) FROM sel {{join}} donation d ON sel.id = d.id
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


def existing_batches(engine: Any, units: int, count: int, seed: int = 1) -> list[list[str]]:
    """``count`` batches of ``units`` of the database's own eligible units, spread over its donors."""
    from sqlalchemy import func, select

    from traceability.db import transaction
    from traceability.models import Donation, PoolMember, UnitStatus, utcnow
    from traceability.queries.eligibility import unit_facts
    from traceability.rules import DEFAULT_POLICY, eligibility_problems

    now = utcnow()
    hold_until = now - timedelta(days=DEFAULT_POLICY.hold_days)
    repeat_donors = select(Donation.donor_id).group_by(Donation.donor_id).having(func.count(Donation.id) >= 2)
    with transaction(engine) as session:
        rows = session.execute(
            select(Donation.donor_id, Donation.unit_number)
            .outerjoin(PoolMember, PoolMember.donation_id == Donation.id)
            .where(
                Donation.status == UnitStatus.IN_INVENTORY,
                PoolMember.id.is_(None),
                Donation.collected_at <= hold_until,
                Donation.donor_id.in_(repeat_donors),
            )
            .order_by(Donation.donor_id, Donation.collected_at)
        ).all()
    by_donor: dict[int, list[str]] = {}
    for donor_id, number in rows:
        by_donor.setdefault(donor_id, []).append(number)
    donors = sorted(by_donor)
    random.Random(seed).shuffle(donors)
    cap = max(1, units // 1_200)  # units of one donor per pool, as bench_trace: at least 1,200 donors per pool
    batches: list[list[str]] = []
    cursor = 0
    while len(batches) < count:
        candidates: list[str] = []
        while len(candidates) < units * 11 // 10 and cursor < len(donors):
            candidates.extend(by_donor[donors[cursor]][:cap])
            cursor += 1
        with transaction(engine) as session:
            facts = unit_facts(session, unit_numbers=candidates)
        good = [n for n in candidates if not eligibility_problems(facts[n], now=now)]
        if len(good) < units:
            if cursor >= len(donors):
                raise SystemExit(f"not enough eligible units in the database for {count} pools of {units:,}")
            continue
        batches.append(good[:units])
    return batches


def build(url: str, units: int, count: int, members: str) -> list[list[str]]:
    """``count`` batches of ``units`` eligible unit numbers, and one open pool per batch."""
    from traceability.db import make_engine, transaction
    from traceability.services import pools

    engine = make_engine(url)
    batches = []
    try:
        if members == "existing":
            batches = existing_batches(engine, units, count)
        else:
            for tag in range(1, count + 1):
                batches.append(common.bulk_qualified_units(engine, donors=units // 2, units_per_donor=2, tag=tag))
        with transaction(engine) as session:
            for tag in range(1, count + 1):
                pools.create_pool(session, pool_number=f"P-BENCH-{tag:02d}", product="ivig", actor=common.ACTOR)
    finally:
        engine.dispose()
    return batches


def copy_sqlite(source: Path, target: Path) -> None:
    """A copy of a SQLite database (with its write-ahead log, if any), leaving the original as it was."""
    common.remove_sqlite(target)
    shutil.copyfile(source, target)
    wal = Path(f"{source}-wal")
    if wal.exists() and wal.stat().st_size:
        shutil.copyfile(wal, Path(f"{target}-wal"))


def analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(common.libpq_url(url), autocommit=True) as conn:
        conn.execute("ANALYZE")


def describe(url: str) -> str:
    counts = common.table_counts(url)
    return f"{counts['donation']:,} donations, {counts['test_result']:,} results, {counts['donor']:,} donors"


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
    con.execute("INSERT INTO sel SELECT d.id FROM wanted w CROSS JOIN donation d ON d.unit_number = w.unit_number")
    found = con.execute("SELECT count(*) FROM sel").fetchone()[0]
    bad = con.execute(INELIGIBLE_SQL.format(join="CROSS JOIN"), {"hold": hold}).fetchone()[0]
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
    # JIT off for the session, as plasmatrace turns it off for its screening statement: compiling the eligibility
    # query costs more than running it (about 0.2 s of the add here).
    with psycopg.connect(common.libpq_url(url), options="-c jit=off") as conn, conn.cursor() as cur:
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
        bad = cur.execute(INELIGIBLE_SQL.format(join="JOIN").replace(":hold", "%(hold)s"), {"hold": hold}).fetchone()[0]
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


def warm(url: str) -> None:
    """Read a SQLite file once, so that each timed run starts from the OS page cache (as a database in use
    would) rather than from whatever the machine last reclaimed."""
    if url.startswith("sqlite:///"):
        with open(url.removeprefix("sqlite:///"), "rb") as handle:
            while handle.read(1 << 22):
                pass


def run(backend: str, url: str, args: argparse.Namespace, raw_name: str, members: str) -> list[dict[str, Any]]:
    script = Path(__file__).resolve()
    loaders = {"plasmatrace": (script, "plasmatrace")}
    if args.baseline:
        loaders["baseline"] = (args.baseline.resolve() / "bench" / "bench_pool.py", "plasmatrace")
    loaders[raw_name] = (script, raw_name)
    with common.Timer() as t:
        batches = build(url, args.units, len(loaders) * args.repeat, members)
    made = "picked" if members == "existing" else "built"
    print(f"  {backend}: {made} {len(batches) * args.units:,} eligible units in {t.seconds:.1f} s", file=sys.stderr)
    out = []
    for i in range(args.repeat):
        for k, (loader, (worker_script, name)) in enumerate(loaders.items()):
            tag = len(loaders) * i + k + 1
            units_file = common.OUT / f"pool-units-{os.getpid()}-{tag}.txt"
            units_file.write_text("\n".join(batches[tag - 1]))
            warm(url)
            try:
                r = common.run_worker(
                    worker_script,
                    ["--worker", name, "--db", url, "--pool", f"P-BENCH-{tag:02d}", "--units-file", str(units_file)],
                )
            finally:
                units_file.unlink()
            r.update(backend=backend, loader=loader)
            out.append(r)
            print(f"  {backend} {loader}: add {r['add']:.3f} s, close {r['close']:.3f} s", file=sys.stderr)
    return out


def summarise(runs: list[dict[str, Any]], units: int, baseline: Path | None) -> list[list[Any]]:
    """Per backend and loader, medians of add, close and add + close (of each run's sum), against raw SQL."""
    rows = []
    names = {
        "plasmatrace": "plasmatrace services",
        "baseline": f"plasmatrace services of {baseline}",
        "raw-sqlite": "raw SQL (sqlite3)",
        "raw-pg": "raw SQL (psycopg)",
    }
    for backend in dict.fromkeys(r["backend"] for r in runs):
        mine = [r for r in runs if r["backend"] == backend]
        raw_total = None
        for loader in dict.fromkeys(r["loader"] for r in mine):
            rs = [r for r in mine if r["loader"] == loader]
            total = common.median([r["add"] + r["close"] for r in rs])
            rows.append(
                [
                    backend,
                    names[loader],
                    units,
                    rs[0]["donors"],
                    common.median([r["add"] for r in rs]),
                    common.median([r["close"] for r in rs]),
                    total,
                    max(r["peak_mb"] for r in rs),
                    loader,
                ]
            )
            if loader.startswith("raw"):
                raw_total = total
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
    parser.add_argument(
        "--inside",
        metavar="FILE",
        type=Path,
        help="SQLite: measure inside a copy of this database (e.g. bench/out/trace-1000000-7383.db) instead of a "
        "fresh one; the file itself is not changed",
    )
    parser.add_argument(
        "--background-donations",
        metavar="N",
        type=int,
        default=0,
        help="load the generated files of N donations (raw loaders) into the fresh databases before the pools",
    )
    parser.add_argument(
        "--members",
        choices=("existing", "new"),
        help="pool the database's own eligible units (default with --inside or --background-donations) or new "
        "two-unit donors inserted set-based (default otherwise)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="also time the services of another checkout (e.g. `git worktree add /tmp/before HEAD~1`) on pools "
        "of the same database, interleaved with this one's: a before/after comparison under the same load",
    )
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

    if args.inside and not args.inside.exists():
        parser.error(f"--inside: {args.inside} does not exist")
    background = bool(args.inside or args.background_donations)
    members = args.members or ("existing" if background else "new")
    folder = None
    if args.background_donations:
        from generate import ensure_generated

        folder = common.OUT / f"data-{args.background_donations}-s1-p6"
        ensure_generated(folder, donations=args.background_donations, seed=1, panel=6)

    runs: list[dict[str, Any]] = []
    common.OUT.mkdir(parents=True, exist_ok=True)
    if not args.no_sqlite:
        db = common.OUT / f"pool-bench-{os.getpid()}.db"
        common.remove_sqlite(db)
        try:
            with common.Timer() as t:
                if args.inside:
                    copy_sqlite(args.inside, db)
                elif folder:
                    common.sqlite_template(folder, db)
                    common.raw_sqlite_load(db, folder)
                else:
                    common.prepare(common.sqlite_url(db))
            if background:
                print(f"  SQLite: {describe(common.sqlite_url(db))} in {t.seconds:.1f} s", file=sys.stderr)
            runs += run("SQLite", common.sqlite_url(db), args, "raw-sqlite", members)
        finally:
            common.remove_sqlite(db)
    if args.postgres:
        with common.postgres_database(args.postgres, "pool") as url:
            with common.Timer() as t:
                common.prepare(url, folder)
                if folder:
                    common.raw_postgres_copy(url, folder)
                    analyze(url)
            if background:
                print(f"  PostgreSQL: {describe(url)} in {t.seconds:.1f} s", file=sys.stderr)
            runs += run("PostgreSQL", url, args, "raw-pg", members)

    date = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"\n{date}; {common.machine()}" + (f"; {common.postgres_version(args.postgres)}" if args.postgres else ""))
    where = (
        f"inside a copy of {args.inside.name}"
        if args.inside
        else f"inside {args.background_donations:,} background donations"
        if args.background_donations
        else "fresh database"
    )
    shape = "the database's own units" if members == "existing" else "two per donor"
    print(
        f"pool of {args.units:,} units ({shape}), {where}, median of {args.repeat}; "
        "add and close each one transaction\n"
    )
    print(
        common.table(
            ["backend", "method", "units", "donors", "add s", "close s", "add+close s", "peak MB", "vs raw"],
            summarise(runs, args.units, args.baseline),
        )
    )
    print("\ntarget: add + close of 20,000 units under 2 s on SQLite")
    suffix = "-inside" if args.inside else f"-bg{args.background_donations}" if args.background_donations else ""
    common.save_json(
        f"pool-{args.units}{suffix}.json",
        {"date": date, "machine": common.machine(), "where": where, "members": members, "runs": runs},
    )


if __name__ == "__main__":
    main()
