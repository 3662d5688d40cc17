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
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
from generate import ensure_generated

SCRIPT = Path(__file__).resolve()


APPROVER = "bench.approver"  # separation of duties: whoever records does not release


def make_lineage(url: str, *, pools: int, pool_units: int, seed: int) -> dict[str, Any]:
    """Through the services: ``pools`` pools of eligible units, each closed, tested, released and solvent/detergent
    treated, made into an intermediate lot (kg, low pH) and a final lot (vials, nanofiltration) shipped to two
    consignees; a final lot ``IVG-MIX`` from the first two intermediates. Records by ``bench``, releases by
    ``bench.approver``."""
    import random
    from collections import defaultdict
    from datetime import timedelta

    import bench_trace

    from traceability.db import make_engine, transaction
    from traceability.models import LotKind, LotUnit, Marker, ResultValue, StepMethod, utcnow
    from traceability.rules import DEFAULT_POLICY
    from traceability.services import consignees, inactivation, lots
    from traceability.services import pools as pool_service

    engine = make_engine(url)
    rng = random.Random(seed)
    timings: dict[str, list[float]] = defaultdict(list)
    with transaction(engine) as session:
        by_donor = bench_trace.eligible_units(session, utcnow() - timedelta(days=DEFAULT_POLICY.hold_days))
        for code, name in (("H-LEEDS", "St Mary's Hospital"), ("H-GLASGOW", "Royal Infirmary")):
            consignees.add_consignee(
                session, code=code, name=name, address=f"{name}, 1 Main Street", country="GB", actor=common.ACTOR
            )
    donors = sorted(by_donor)
    rng.shuffle(donors)
    cap = max(1, pool_units // 1_200)
    cursor = 0

    def step(session: Any, method: StepMethod, lrv: dict[str, float], **target: str) -> None:
        now = utcnow()
        inactivation.add_step(
            session,
            method=method,
            started_at=now - timedelta(hours=2),
            ended_at=now - timedelta(hours=1),
            lrv=lrv,
            actor=common.ACTOR,
            **target,
        )

    def final(session: Any, number: str, inputs: list[Any]) -> None:
        lots.create_lot(
            session,
            lot_number=number,
            product="ivig",
            kind=LotKind.FINAL,
            inputs=inputs,
            quantity=5_000,
            unit=LotUnit.VIALS,
            actor=common.ACTOR,
        )
        step(session, StepMethod.NANOFILTRATION, {"enveloped": 5.2, "non-enveloped": 4.4}, lot_number=number)
        lots.release_lot(session, lot_number=number, actor=APPROVER)
        for to in ("H-LEEDS", "H-GLASGOW"):
            lots.ship_lot(
                session, lot_number=number, consignee=to, quantity=40, shipped_on=utcnow().date(), actor=common.ACTOR
            )

    for index in range(1, pools + 1):
        members: list[str] = []
        while len(members) < pool_units and cursor < len(donors):
            take = by_donor[donors[cursor]][: min(cap, pool_units - len(members))]
            members.extend(take)
            cursor += 1
        if len(members) < pool_units:
            raise SystemExit(f"not enough eligible units for pool {index}; give more --donations")
        number = f"P-{index:04d}"
        with common.Timer() as t, transaction(engine) as session:
            pool_service.create_pool(session, pool_number=number, product="ivig", actor=common.ACTOR)
            pool_service.add_units(session, pool_number=number, unit_numbers=members, actor=common.ACTOR)
        timings["pool add"].append(t.seconds)
        with common.Timer() as t, transaction(engine) as session:
            pool_service.close_pool(session, pool_number=number, actor=common.ACTOR)
        timings["pool close"].append(t.seconds)
        with common.Timer() as t, transaction(engine) as session:
            for marker in DEFAULT_POLICY.product("ivig").pool_tests:
                pool_service.test_pool(
                    session,
                    pool_number=number,
                    marker=Marker(marker),
                    result=ResultValue.NONREACTIVE,
                    tested_at=utcnow(),
                    actor=common.ACTOR,
                    **({"value": 50.0, "value_unit": "IU/mL"} if marker == Marker.B19_DNA else {}),
                )
            pool_service.release_pool(session, pool_number=number, actor=APPROVER)
            step(session, StepMethod.SOLVENT_DETERGENT, {"enveloped": 6.0}, pool_number=number)
            paste = f"FII-{index:03d}"
            lots.create_lot(
                session,
                lot_number=paste,
                product="fraction-ii-paste",
                kind=LotKind.INTERMEDIATE,
                inputs=[lots.InputSpec("pool", number, 500, "L")],
                quantity=400,
                unit=LotUnit.KG,
                actor=common.ACTOR,
            )
            step(session, StepMethod.LOW_PH, {"enveloped": 4.6}, lot_number=paste)
            lots.release_lot(session, lot_number=paste, actor=APPROVER)
            final(session, f"IVG-{index:03d}", [lots.InputSpec("lot", paste, 200)])
        timings["test, release, steps, 2 lots, 2 shipments"].append(t.seconds)
    if pools >= 2:
        with transaction(engine) as session:
            final(session, "IVG-MIX", [lots.InputSpec("lot", "FII-001", 100), lots.InputSpec("lot", "FII-002", 100)])
    engine.dispose()
    return {"pooled_donors": cursor, "timings": {k: common.median(v) for k, v in timings.items()}}


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
    built: dict[str, Any] = {}
    with common.Timer() as t:
        built["load"] = bench_trace.load(common.sqlite_url(partial), folder, args.build)
    built["load_seconds"] = t.seconds
    print(f"loaded in {t.seconds:.1f} s {built['load']}", file=sys.stderr)
    with common.Timer() as t:
        built["lineage"] = make_lineage(
            common.sqlite_url(partial), pools=args.pools, pool_units=args.pool_units, seed=args.seed
        )
    built["lineage_seconds"] = t.seconds
    os.replace(partial, db)
    note.write_text(json.dumps(built, default=str), encoding="utf-8")
    return url, built


# --- measuring ---------------------------------------------------------------------------------------------------

# The cheapest hand-written answer to "what would a case for this donor touch": the donor's donations with their
# pool, then the lots downstream of those pools (recursive) with their balances and shipments to consignees. It
# takes every donation (no look-back window: that needs the donor's results and time zones) and keeps no record.
RAW_UNITS = """
SELECT d.id, d.unit_number, d.status, pm.pool_id
FROM donation d LEFT JOIN pool_member pm ON pm.donation_id = d.id
WHERE d.donor_id = (SELECT id FROM donor WHERE donor_code = {p})
"""
RAW_LOTS = """
WITH RECURSIVE down(lot_id) AS (
  SELECT lot_id FROM lot_input WHERE input_pool_id IN ({pools})
  UNION SELECT i.lot_id FROM lot_input i JOIN down ON i.input_lot_id = down.lot_id
)
SELECT l.lot_number, l.quantity, l.drawn, l.shipped, s.shipment_number, s.quantity, c.code, c.address
FROM down JOIN lot l ON l.id = down.lot_id
LEFT JOIN shipment s ON s.lot_id = l.id LEFT JOIN consignee c ON c.id = s.consignee_id
"""


def raw_drill(conn: Any, code: str, placeholder: str) -> tuple[list[str], list[str], set[str]]:
    cur = conn.cursor()
    cur.execute(RAW_UNITS.format(p=placeholder), (code,))
    units = cur.fetchall()
    stop = [u[1] for u in units if u[2] == "in-inventory"]
    pools = sorted({u[3] for u in units if u[3] is not None})
    lots: list[str] = []
    consignees: set[str] = set()
    if pools:
        cur.execute(RAW_LOTS.format(pools=",".join(str(int(p)) for p in pools)))
        for row in cur.fetchall():
            lots.append(row[0])
            if row[6] is not None:
                consignees.add(row[6])
    return stop, sorted(set(lots)), consignees


def sample_donors(url: str, count: int, seed: int) -> dict[str, list[str]]:
    import bench_trace

    return bench_trace.sample_donors(url, count, seed)


def worker(url: str, samples: dict[str, list[str]], repeat: int) -> dict[str, Any]:
    """In one process: the drill in-process (own read transaction each, nothing kept) and the raw SQL baseline."""
    from sqlmodel import Session

    from traceability.db import make_engine
    from traceability.queries import drill

    engine = make_engine(url)
    result: dict[str, Any] = {}
    raw_conn: Any
    if url.startswith("sqlite"):
        raw_conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        placeholder = "?"
    else:
        import psycopg

        raw_conn = psycopg.connect(common.libpq_url(url), autocommit=True)
        placeholder = "%s"
    for group, codes in samples.items():
        ours: list[float] = []
        raw: list[float] = []
        agree = 0
        for code in codes:  # warm, untimed
            with Session(engine) as session:
                drill.drill_donor(session, code)
            raw_drill(raw_conn, code, placeholder)
        for _ in range(repeat):
            for code in codes:
                t0 = time.perf_counter()
                with Session(engine) as session:
                    answer = drill.drill_donor(session, code)
                ours.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                stop, lots, consignees = raw_drill(raw_conn, code, placeholder)
                raw.append((time.perf_counter() - t0) * 1000)
                # The raw answer ignores the window, so it may find more; it must never find less lots.
                agree += set(x.lot_number for x in answer.lots) <= set(lots)
        result[group] = {
            "ours_ms": ours,
            "raw_ms": raw,
            "agree": agree,
            "n": len(ours),
        }
    engine.dispose()
    raw_conn.close()
    return result


CPU_MS: dict[str, list[float]] = {}
"""Per command: the CPU time (user + system) of each run, which a busy machine stretches less than wall time."""


def wall(cmd: list[str], runs: int, name: str | None = None) -> list[float]:
    import resource

    subprocess.run(cmd, capture_output=True, cwd=common.ROOT)  # warm the OS file cache
    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT)
        times.append((time.perf_counter() - t0) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
        CPU_MS.setdefault(name or " ".join(cmd), []).append(cpu)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    return times


def command_timings(url: str, codes: list[str], runs: int) -> dict[str, list[float]]:
    cli = [sys.executable, "-m", "cli"]
    out: dict[str, list[float]] = {}
    out["python -c pass"] = wall([sys.executable, "-c", "pass"], runs, "python -c pass")
    out["python -m cli --help"] = wall([*cli, "--help"], runs, "python -m cli --help")
    for name, args in (
        ("python -m cli trace donor CODE --format json", ["trace", "donor"]),
        ("python -m cli recall drill --donor CODE --format json", ["recall", "drill", "--donor"]),
    ):
        times: list[float] = []
        for i in range(runs):
            times += wall([*cli, "--db", url, *args, codes[i % len(codes)], "--format", "json"], 1, name)
        out[name] = times
    return out


def warm_file(path: Path) -> None:
    """Read the database once: this machine drops file pages unused for about a minute from the cache."""
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass


def stats(values: list[float]) -> str:
    return (
        f"median {common.median(values):.1f} ms, p95 {common.percentile(values, 0.95):.1f} ms, max {max(values):.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--donations", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pools", type=int, default=2)
    parser.add_argument("--pool-units", type=int, default=20_000)
    parser.add_argument("--build", choices=("raw", "import"), default="raw")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/plasmatrace-drill"))
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--samples", type=int, default=50, help="donors per group (pooled, any)")
    parser.add_argument("--repeat", type=int, default=3, help="in-process drills per donor (0: none)")
    parser.add_argument("--cli-runs", type=int, default=10, help="whole commands per kind")
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
    from traceability.db import make_engine
    from traceability.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)  # the kept database may predate the recall tables
    engine.dispose()
    samples = sample_donors(url, args.samples, args.seed)
    path = Path(url.removeprefix("sqlite:///"))
    warm_file(path)
    load = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with common.Timer() as t:
        inproc = worker(url, samples, args.repeat) if args.repeat else {}
    print(f"\n{started}; {common.machine()}; load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        f"{args.donations:,} donations; {args.pools} pools of {args.pool_units:,} units; "
        f"in-process part {t.seconds:.1f} s\n"
    )
    for group, r in inproc.items():
        print(f"donors ({group}, {r['n']} drills): plasmatrace drill_donor {stats(r['ours_ms'])}")
        print(f"{'':>{len(group) + 12}}raw SQL baseline        {stats(r['raw_ms'])}")
        ratio = common.median(r["ours_ms"]) / max(common.median(r["raw_ms"]), 1e-9)
        print(
            f"{'':>{len(group) + 12}}ratio of medians {ratio:.1f}x; lots within the raw answer: {r['agree']}/{r['n']}"
        )
    warm_file(path)
    codes = samples["pooled"]
    commands = command_timings(url, codes, args.cli_runs)
    print("\nwhole commands (fresh process each, wall time):")
    for name, times in commands.items():
        print(f"  {name:<58} {stats(times)}")
    print("the same, CPU time of the process (user + system):")
    for name, times in CPU_MS.items():
        print(f"  {name:<58} {stats(times)}")
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    common.save_json(
        f"drill-{args.donations}-{int(time.time())}.json",
        {
            "started": started,
            "load_before": load,
            "load_after": load_after,
            "inprocess": inproc,
            "commands": commands,
            "commands_cpu_ms": CPU_MS,
        },
    )


if __name__ == "__main__":
    main()
