"""Trace latency at fractionator scale: lineage queries against raw SQL answering the same question.

    python bench/bench_trace.py --donations 1000000 [--postgres postgresql://postgres@127.0.0.1:5432/test]

Build (timed and reported, not part of the comparison): the generated files for N donations are loaded set-based
(``--build raw``: the raw loader of bench_import, reactive results through ``units.add_result`` so that units
are rejected, donors deferred and look-back units interdicted as on import) or with ``--build import``
(``import_file``, slower). Then, through the services, ``--pools`` pools of ``--pool-units`` eligible units
are created, filled, closed, tested and released, each with a solvent/detergent step; each pool goes into an
intermediate lot (low pH), that into a final lot (nanofiltration), released and shipped twice; a final lot
``IVG-MIX`` is made from the first two intermediates (twice the units). PostgreSQL gets ANALYZE after loading.

Timed in a fresh process, warm (every sampled donor traced once, untimed, first), each call in its own read
transaction:

* ``trace_donor`` of ``--samples`` donors whose units went into pools, and of as many random donors, against
  raw SQL returning the same answer (donations with results, pool, downstream lots, shipments, deferrals and
  look-back window) in the six statements one would write by hand; the answers are compared. For scale, the one
  statement trace_donor runs is also timed on the bare connection, without building an answer from its rows;
* ``trace_lot(members=True)`` of a final lot over one pool and of IVG-MIX, against raw SQL of the same (lineage,
  pool compositions, totals, steps, pool tests, shipments, every member with its donor); compared;
* the whole command ``plasmatrace --db URL trace donor CODE --format json`` in a subprocess (start-up included),
  median of ``--cli-runs``, next to ``python -c pass`` and ``plasmatrace --help``.

Targets: in-process trace at most 3x raw SQL; donor trace median under 1 ms; 20,000-unit lot with members
under 0.5 s; the whole command under 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common
from generate import ensure_generated

SCRIPT = Path(__file__).resolve()
PANEL = common.PANEL
LOOKBACK_DAYS = 365


# --- build -----------------------------------------------------------------------------------------------------


def load(url: str, folder: Path, method: str) -> dict[str, float]:
    from traceability.db import make_engine, transaction
    from traceability.models import Marker, ResultValue, TestMethod
    from traceability.parsing import parse_timestamp
    from traceability.services import units

    timings: dict[str, float] = {}
    if method == "import":
        with common.Timer() as t:
            common.plasmatrace_import(url, folder)
        timings["import"] = t.seconds
        return timings
    reactive: list[list[str]] = []
    with common.Timer() as t:
        if url.startswith("sqlite"):
            common.raw_sqlite_load(Path(url.removeprefix("sqlite:///")), folder, set_aside=reactive)
        else:
            common.raw_postgres_copy(url, folder, set_aside=reactive)
    timings["raw load"] = t.seconds
    if not url.startswith("sqlite"):
        analyze(url, timings)  # as autovacuum would have by then; without statistics the look-back queries scan
    engine = make_engine(url)
    with common.Timer() as t, transaction(engine) as session:
        for unit, marker, result, tested_at, method_, lab in reactive:
            units.add_result(
                session,
                unit_number=unit,
                marker=Marker(marker),
                result=ResultValue(result),
                tested_at=parse_timestamp(tested_at),
                method=TestMethod(method_) if method_ else None,
                lab=lab or None,
                actor=common.ACTOR,
            )
    timings[f"{len(reactive)} reactive results (services)"] = t.seconds
    engine.dispose()
    return timings


def analyze(url: str, timings: dict[str, float]) -> None:
    import psycopg

    with psycopg.connect(common.libpq_url(url), autocommit=True) as conn, common.Timer() as t:
        conn.execute("ANALYZE")
    timings["ANALYZE"] = timings.get("ANALYZE", 0.0) + t.seconds


def eligible_units(session: Any, hold_until: datetime) -> dict[int, list[str]]:
    """Unit numbers of in-inventory, past-hold units of donors with two donations or more and no deferral."""
    from sqlalchemy import func, select

    from traceability.models import Deferral, Donation, PoolMember, UnitStatus

    repeat_donors = select(Donation.donor_id).group_by(Donation.donor_id).having(func.count(Donation.id) >= 2)
    rows = session.execute(
        select(Donation.donor_id, Donation.unit_number, Donation.collected_at)
        .outerjoin(PoolMember, PoolMember.donation_id == Donation.id)
        .where(
            Donation.status == UnitStatus.IN_INVENTORY,
            PoolMember.id.is_(None),
            Donation.donor_id.in_(repeat_donors),
            Donation.donor_id.not_in(select(Deferral.donor_id)),
        )
        .order_by(Donation.donor_id, Donation.collected_at)
    )
    by_donor: dict[int, list[str]] = defaultdict(list)
    for donor_id, number, collected_at in rows:
        if collected_at <= hold_until:
            by_donor[donor_id].append(number)
    return by_donor


def make_lineage(url: str, *, pools: int, pool_units: int, seed: int) -> dict[str, Any]:
    """Pools of eligible units, steps, intermediate and final lots, shipments, all through the services."""
    from traceability.db import make_engine, transaction
    from traceability.models import LotKind, LotUnit, StepMethod, utcnow
    from traceability.rules import DEFAULT_POLICY
    from traceability.services import consignees, lots
    from traceability.services import pools as pool_service
    from traceability.synthetic.records import pass_pool_tests, typical_step

    engine = make_engine(url)
    now = utcnow().replace(microsecond=0)
    rng = random.Random(seed)
    timings: dict[str, list[float]] = defaultdict(list)
    with transaction(engine) as session:
        by_donor = eligible_units(session, now - timedelta(days=DEFAULT_POLICY.hold_days))
        for code, name in CONSIGNEES:
            consignees.add_consignee(
                session, code=code, name=name, address="1 Hospital Road", country="GB", actor=common.ACTOR
            )
    donors = sorted(by_donor)
    rng.shuffle(donors)
    cap = max(1, pool_units // 1_200)  # units of one donor per pool, so that small pools still have 1,000 donors
    cursor = 0
    made: dict[str, Any] = {"pools": [], "lots": [], "pooled_donors": 0}
    for index in range(1, pools + 1):
        members: list[str] = []
        while len(members) < pool_units and cursor < len(donors):
            take = by_donor[donors[cursor]][: min(cap, pool_units - len(members))]
            del by_donor[donors[cursor]][: len(take)]
            members.extend(take)
            if not by_donor[donors[cursor]]:
                cursor += 1
            elif len(members) < pool_units:
                cursor += 1
        if len(members) < pool_units:
            raise SystemExit(
                f"not enough eligible units for pool {index} ({len(members):,} of {pool_units:,}); "
                "give more --donations or fewer/smaller pools"
            )
        number = f"P-{index:04d}"
        with transaction(engine) as session:
            pool_service.create_pool(session, pool_number=number, product="ivig", actor=common.ACTOR)
        with common.Timer() as t, transaction(engine) as session:
            pool_service.add_units(session, pool_number=number, unit_numbers=members, actor=common.ACTOR)
        timings["pool add"].append(t.seconds)
        with common.Timer() as t, transaction(engine) as session:
            closed, _ = pool_service.close_pool(session, pool_number=number, actor=common.ACTOR)
            closed_at = closed.closed_at or now
        timings["pool close"].append(t.seconds)
        with common.Timer() as t, transaction(engine) as session:
            # A pool test is not dated before its pool closed, and the pool closes after ``now`` was taken.
            pass_pool_tests(session, pool_number=number, product="ivig", tested_at=closed_at, actor=common.ACTOR)
            pool_service.release_pool(session, pool_number=number, actor=common.APPROVER)
            typical_step(
                session,
                StepMethod.SOLVENT_DETERGENT,
                pool_number=number,
                started_at=now - timedelta(hours=12),
                actor=common.ACTOR,
            )
            paste = f"FII-{index:03d}"
            lots.create_lot(
                session,
                lot_number=paste,
                product="fraction-ii-paste",
                kind=LotKind.INTERMEDIATE,
                inputs=[lots.InputSpec("pool", number, 1000)],
                quantity=1000,
                unit=LotUnit.KG,
                actor=common.ACTOR,
            )
            typical_step(
                session, StepMethod.LOW_PH, lot_number=paste, started_at=now - timedelta(hours=5), actor=common.ACTOR
            )
            lots.release_lot(session, lot_number=paste, actor=common.APPROVER)
            final = f"IVG-{index:03d}"
            _final_lot(session, final, [lots.InputSpec("lot", paste, 400)], now)
        timings["test, release, steps, 2 lots, 2 shipments"].append(t.seconds)
        made["pools"].append(number)
        made["lots"].append(final)
    if pools >= 2:
        with transaction(engine) as session:
            _final_lot(
                session, "IVG-MIX", [lots.InputSpec("lot", "FII-001", 300), lots.InputSpec("lot", "FII-002", 300)], now
            )
        made["lots"].append("IVG-MIX")
    engine.dispose()
    made["pooled_donors"] = cursor
    made["timings"] = {k: common.median(v) for k, v in timings.items()}
    return made


CONSIGNEES = [("H-LEEDS-SM", "St Mary's Hospital, Leeds"), ("H-GLAS-RI", "Royal Infirmary, Glasgow")]
"""(code, name) of the consignees every final lot ships to."""


def _final_lot(session: Any, number: str, inputs: list[Any], now: datetime) -> None:
    from traceability.models import LotKind, LotUnit, StepMethod
    from traceability.services import lots
    from traceability.synthetic.records import typical_step

    lots.create_lot(
        session,
        lot_number=number,
        product="ivig",
        kind=LotKind.FINAL,
        inputs=inputs,
        quantity=2000,
        unit=LotUnit.VIALS,
        actor=common.ACTOR,
    )
    typical_step(
        session, StepMethod.NANOFILTRATION, lot_number=number, started_at=now - timedelta(hours=3), actor=common.ACTOR
    )
    lots.release_lot(session, lot_number=number, actor=common.APPROVER)
    for consignee, _ in CONSIGNEES:
        lots.ship_lot(
            session, lot_number=number, consignee=consignee, quantity=40, shipped_on=now.date(), actor=common.ACTOR
        )


def sample_donors(url: str, count: int, seed: int) -> dict[str, list[str]]:
    """``count`` donors with pooled units and ``count`` donors of any kind, at random (seeded)."""
    from sqlalchemy import select

    from traceability.db import make_engine
    from traceability.models import Donation, Donor, PoolMember

    engine = make_engine(url)
    with engine.connect() as conn:
        pooled = sorted(
            set(
                conn.execute(
                    select(Donor.donor_code)
                    .join(Donation, Donation.donor_id == Donor.id)
                    .join(PoolMember, PoolMember.donation_id == Donation.id)
                ).scalars()
            )
        )
        everyone = list(conn.execute(select(Donor.donor_code).order_by(Donor.id)).scalars())
    engine.dispose()
    rng = random.Random(seed)
    return {
        "pooled": rng.sample(pooled, min(count, len(pooled))),
        "any": rng.sample(everyone, min(count, len(everyone))),
    }


# --- raw SQL answers -------------------------------------------------------------------------------------------


class RawTracer:
    """The same questions in SQL on a bare DB-API connection (sqlite3 or psycopg), with the same result shape."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        else:
            import psycopg

            self.conn = psycopg.connect(common.libpq_url(url))
        self._sql: dict[str, str] = {}

    def begin(self) -> None:
        if self.sqlite:
            self.conn.execute("BEGIN")

    def end(self) -> None:
        if self.sqlite:
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()

    def q(self, sql: str, **params: Any) -> list[Any]:
        if not self.sqlite:
            sql = self._sql.get(sql) or self._sql.setdefault(sql, re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql))
        return self.conn.execute(sql, params).fetchall()

    def _time(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    def donor(self, code: str) -> dict[str, Any]:
        self.begin()
        donor_id, donor_code, registered_on, site = self.q(
            "SELECT d.id, d.donor_code, d.registered_on, e.code FROM donor d "
            "JOIN establishment e ON e.id = d.establishment_id WHERE d.donor_code = :code",
            code=code,
        )[0]
        donations = self.q(
            "SELECT dn.id, dn.unit_number, dn.collected_at, dn.volume_ml, dn.status, dn.version, p.id, p.pool_number "
            "FROM donation dn LEFT JOIN pool_member pm ON pm.donation_id = dn.id LEFT JOIN pool p ON p.id = pm.pool_id "
            "WHERE dn.donor_id = :donor ORDER BY dn.collected_at",
            donor=donor_id,
        )
        results: dict[int, dict[str, str]] = defaultdict(dict)
        for donation_id, marker, value in self.q(
            "SELECT t.donation_id, t.marker, t.result FROM test_result t JOIN donation dn ON dn.id = t.donation_id "
            "WHERE dn.donor_id = :donor AND t.version = (SELECT max(t2.version) FROM test_result t2 "
            "WHERE t2.donation_id = t.donation_id AND t2.marker = t.marker)",
            donor=donor_id,
        ):
            results[donation_id][marker] = value
        deferrals = self.q(
            "SELECT sequence, reason, source, starts_on, ends_on, lifted_on FROM deferral "
            "WHERE donor_id = :donor ORDER BY sequence",
            donor=donor_id,
        )
        pool_ids = sorted({r[6] for r in donations if r[6] is not None})
        lots_by_pool: dict[int, set[str]] = defaultdict(set)
        lot_ids: dict[int, str] = {}
        shipments: list[Any] = []
        if pool_ids:
            ids = ",".join(str(int(i)) for i in pool_ids)
            for origin, lot_id, number in self.q(
                "WITH RECURSIVE down(origin, lot_id) AS ("  # noqa: S608 - integers from the database
                f"SELECT input_pool_id, lot_id FROM lot_input WHERE input_pool_id IN ({ids}) "
                "UNION SELECT down.origin, li.lot_id FROM lot_input li JOIN down ON li.input_lot_id = down.lot_id) "
                "SELECT down.origin, l.id, l.lot_number FROM down JOIN lot l ON l.id = down.lot_id"
            ):
                lots_by_pool[origin].add(number)
                lot_ids[lot_id] = number
            if lot_ids:
                shipments = self.q(
                    "SELECT s.shipment_number, l.lot_number, s.consignee, s.shipped_on, s.quantity "  # noqa: S608
                    "FROM shipment s JOIN lot l ON l.id = s.lot_id "
                    f"WHERE s.lot_id IN ({','.join(str(int(i)) for i in lot_ids)}) "
                    "ORDER BY s.shipped_on, s.shipment_number"
                )
        self.end()
        qualifying = [r[2] for r in donations if all(results.get(r[0], {}).get(m) == "nonreactive" for m in PANEL)]
        start = self._time(max(qualifying)) - timedelta(days=LOOKBACK_DAYS) if qualifying else None
        return {
            "donor_code": donor_code,
            "establishment": site,
            "registered_on": registered_on,
            "deferrals": deferrals,
            "lookback_window_start": start,
            "donations": [
                (
                    r[1],
                    r[7],
                    sorted(lots_by_pool.get(r[6], ())),
                    dict(sorted(results.get(r[0], {}).items())),
                    start is None or self._time(r[2]) >= start,
                )
                for r in donations
            ],
            "lots": sorted(lot_ids.values()),
            "shipments": [s[0] for s in shipments],
        }

    def one_statement(self, sql: str, params: Any) -> list[Any]:
        """plasmatrace's single donor-trace statement on this bare connection, rows only (see donor_statement)."""
        self.begin()
        rows = self.conn.execute(sql, params).fetchall()
        self.end()
        return rows

    def lot(self, number: str) -> dict[str, Any]:
        self.begin()
        lot_id, lot_number, product, kind, status = self.q(
            "SELECT id, lot_number, product, kind, status FROM lot WHERE lot_number = :n", n=number
        )[0]
        edges = self.q(
            "WITH RECURSIVE up(lot_id) AS (SELECT CAST(:lot AS INTEGER) UNION SELECT li.input_lot_id FROM lot_input li "
            "JOIN up ON li.lot_id = up.lot_id WHERE li.input_lot_id IS NOT NULL) "
            "SELECT li.lot_id, li.input_pool_id, li.input_lot_id, li.quantity FROM lot_input li "
            "JOIN up ON up.lot_id = li.lot_id",
            lot=lot_id,
        )
        lot_ids = {lot_id} | {e[0] for e in edges} | {e[2] for e in edges if e[2] is not None}
        pool_ids = {e[1] for e in edges if e[1] is not None}
        lids = ",".join(str(int(i)) for i in sorted(lot_ids))
        answer: dict[str, Any] = {
            "lot_number": lot_number,
            "product": product,
            "kind": kind,
            "status": status,
            "inputs": edges,
        }
        answer["lots"] = self.q(f"SELECT id, lot_number, product, kind, status FROM lot WHERE id IN ({lids})")  # noqa: S608
        answer["shipments"] = self.q(
            "SELECT s.shipment_number, l.lot_number, s.consignee, s.shipped_on, s.quantity FROM shipment s "
            "JOIN lot l ON l.id = s.lot_id WHERE s.lot_id = :lot ORDER BY s.shipped_on, s.shipment_number",
            lot=lot_id,
        )
        answer.update(pools=[], totals=(0, 0, 0), pool_tests=[], members=[])
        pool_filter = "pool_id IN (NULL)"
        if pool_ids:
            pids = ",".join(str(int(i)) for i in sorted(pool_ids))
            pool_filter = f"pool_id IN ({pids})"
            answer["pools"] = self.q(
                "SELECT p.id, p.pool_number, p.product, p.status, count(DISTINCT dn.donor_id), count(dn.id), "  # noqa: S608
                "coalesce(sum(dn.volume_ml), 0) FROM pool p LEFT JOIN pool_member pm ON pm.pool_id = p.id "
                f"LEFT JOIN donation dn ON dn.id = pm.donation_id WHERE p.id IN ({pids}) "
                "GROUP BY p.id, p.pool_number, p.product, p.status"
            )
            answer["totals"] = self.q(
                "SELECT count(DISTINCT dn.donor_id), count(dn.id), coalesce(sum(dn.volume_ml), 0) "  # noqa: S608
                f"FROM pool_member pm JOIN donation dn ON dn.id = pm.donation_id WHERE pm.pool_id IN ({pids})"
            )[0]
            answer["pool_tests"] = self.q(
                "SELECT pool_id, marker, version, result, value, value_unit, tested_at FROM pool_test "  # noqa: S608
                f"WHERE pool_id IN ({pids}) ORDER BY marker, version"
            )
            answer["members"] = self.q(
                "SELECT dn.unit_number, d.donor_code, p.pool_number, dn.collected_at FROM pool_member pm "  # noqa: S608
                "JOIN donation dn ON dn.id = pm.donation_id JOIN pool p ON p.id = pm.pool_id "
                f"JOIN donor d ON d.id = dn.donor_id WHERE pm.pool_id IN ({pids}) "
                "ORDER BY p.pool_number, dn.unit_number"
            )
        answer["steps"] = self.q(
            "SELECT step_key, pool_id, lot_id, method, started_at, ended_at, outcome, lrv_enveloped, "  # noqa: S608
            f"lrv_non_enveloped, parameters, operator, deviation_closed_at FROM step WHERE {pool_filter} "
            f"OR lot_id IN ({lids}) ORDER BY started_at"
        )
        self.end()
        return answer

    def close(self) -> None:
        self.conn.close()


def donor_statement(engine: Any) -> tuple[str, Any]:
    """The SQL that ``trace_donor`` runs, as compiled for this database, and how to bind a donor code to it.

    Timed on the bare connection, with no answer built from the rows, it shows what the SQL of plasmatrace's single
    statement costs against the raw tracer's six; the rest of plasmatrace's time is the Session and the Python.
    """
    from traceability.queries.lineage import DONOR_TRACE

    compiled = DONOR_TRACE.compile(dialect=engine.dialect)
    if compiled.positional:
        count = len(compiled.positiontup or ())
        return str(compiled), lambda code: (code,) * count
    return str(compiled), lambda code: {"donor_code": code}


def same_donor(app: Any, raw: dict[str, Any]) -> bool:
    mine = [(d.unit_number, d.pool_number, d.lot_numbers, d.results, d.in_lookback_window) for d in app.donations]
    return (
        mine == raw["donations"]
        and app.lots == raw["lots"]
        and [s.shipment_number for s in app.shipments] == raw["shipments"]
        and len(app.deferrals) == len(raw["deferrals"])
    )


def same_lot(app: Any, raw: dict[str, Any]) -> bool:
    return (
        [m.unit_number for m in app.donations or []] == [m[0] for m in raw["members"]]
        and [m.donor_code for m in app.donations or []] == [m[1] for m in raw["members"]]
        and (app.donor_count, app.donation_count, app.volume_ml) == tuple(int(x) for x in raw["totals"])
        and len(app.steps) == len(raw["steps"])
        and len(app.shipments) == len(raw["shipments"])
    )


# --- timing worker ---------------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    from sqlmodel import Session

    from traceability.db import make_engine
    from traceability.queries.lineage import trace_donor, trace_lot

    plan = json.loads(Path(args.plan).read_text())
    engine = make_engine(args.db)
    read = engine.execution_options(sqlite_begin="DEFERRED") if args.db.startswith("sqlite") else engine
    raw = RawTracer(args.db)

    def app_donor(code: str) -> Any:
        with Session(read, expire_on_commit=False) as session, session.begin():
            return trace_donor(session, code)

    def app_lot(number: str) -> Any:
        with Session(read, expire_on_commit=False) as session, session.begin():
            return trace_lot(session, number, members=True)

    out: dict[str, Any] = {"mismatches": []}
    one_sql, one_params = donor_statement(engine)
    # Warm, not timed: every sampled donor once through each side, so that all of them are timed from the caches
    # (this machine reclaims file pages that have not been used for about a minute; on a database kept with --keep
    # and measured again with --reuse, a first touch of each donor's pages read the disk and tripled the p95).
    for code in plan["donors"]["pooled"] + plan["donors"]["any"]:
        app_donor(code)
        raw.donor(code)
        raw.one_statement(one_sql, one_params(code))
    calls = {"app": app_donor, "raw": raw.donor, "one": lambda code: raw.one_statement(one_sql, one_params(code))}
    orders = [("app", "raw", "one"), ("raw", "one", "app"), ("one", "app", "raw")]
    for group, codes in plan["donors"].items():
        ms: dict[str, list[float]] = {who: [] for who in calls}
        for i, code in enumerate(codes):
            answers = {}
            for who in orders[i % 3]:
                t0 = time.perf_counter()
                answers[who] = calls[who](code)
                ms[who].append((time.perf_counter() - t0) * 1000)
            if not same_donor(answers["app"], answers["raw"]):
                out["mismatches"].append(f"donor {code}")
        out[f"donor/{group}"] = ms
    for number in plan["lots"]:
        app_ms, raw_ms = [], []
        app_lot(number)  # warm
        raw.lot(number)
        for i in range(args.lot_runs):
            for who in ("app", "raw") if i % 2 == 0 else ("raw", "app"):
                t0 = time.perf_counter()
                answer = app_lot(number) if who == "app" else raw.lot(number)
                (app_ms if who == "app" else raw_ms).append((time.perf_counter() - t0) * 1000)
                if who == "app":
                    mine = answer
                else:
                    theirs = answer
        if not same_lot(mine, theirs):
            out["mismatches"].append(f"lot {number}")
        out[f"lot/{number}"] = {
            "app": app_ms,
            "raw": raw_ms,
            "members": len(mine.donations or []),
            "donors": mine.donor_count,
        }
    raw.close()
    engine.dispose()
    out["peak_mb"] = common.peak_rss_mb()
    common.emit(out)


# --- whole command ---------------------------------------------------------------------------------------------


def plasmatrace_executable() -> list[str]:
    beside = Path(sys.executable).parent / "plasmatrace"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("plasmatrace")
    return [found] if found else [sys.executable, "-c", "import cli; cli.app()"]


def wall(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, cwd=common.ROOT)  # warm the OS file cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT)
        times.append((time.perf_counter() - t0) * 1000)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")
    return times


def command_timings(url: str, codes: list[str], runs: int) -> dict[str, list[float]]:
    exe = plasmatrace_executable()
    out: dict[str, list[float]] = {}
    out["python -c pass"] = wall([sys.executable, "-c", "pass"], runs)
    out["python -c 'import cli'"] = wall([sys.executable, "-c", "import cli"], runs)
    out["plasmatrace --help"] = wall([*exe, "--help"], runs)
    times = []
    subprocess.run(
        [*exe, "--db", url, "trace", "donor", codes[0], "--format", "json"], capture_output=True, cwd=common.ROOT
    )
    for i in range(runs):
        times += wall([*exe, "--db", url, "trace", "donor", codes[i % len(codes)], "--format", "json"], 1)
    out["plasmatrace trace donor CODE --format json"] = times
    return out


def import_time_top(count: int = 8) -> list[tuple[str, float]]:
    """What ``import cli`` spends its time on: the total, then its slowest direct imports (cumulative ms, as
    ``python -X importtime`` reports them; a package is charged to whoever imports it first)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import cli"], capture_output=True, text=True, cwd=common.ROOT
    )
    rows, total = [], 0.0
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            if name.strip() == "cli":
                total = int(parts[1]) / 1000
            elif depth == 1:
                rows.append((name.strip(), int(parts[1]) / 1000))
    return [("import cli (total)", total), *sorted(rows, key=lambda r: -r[1])[:count]]


# --- orchestration ---------------------------------------------------------------------------------------------


def build(backend: str, url: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load the generated files and make the pools, lots and shipments; returns the build's figures."""
    result: dict[str, Any] = {"backend": backend}
    with common.Timer() as t:
        result["load"] = load(url, folder, args.build)
    result["load_seconds"] = t.seconds
    if not url.startswith("sqlite"):
        after: dict[str, float] = {}
        analyze(url, after)
        result["load"]["ANALYZE again"] = after["ANALYZE"]
        result["load_seconds"] += after["ANALYZE"]
    print(f"  {backend}: loaded in {result['load_seconds']:.1f} s {result['load']}", file=sys.stderr)
    with common.Timer() as t:
        result["lineage"] = make_lineage(url, pools=args.pools, pool_units=args.pool_units, seed=args.seed)
    result["lineage_seconds"] = t.seconds
    print(
        f"  {backend}: {args.pools} pools, lots and shipments in {t.seconds:.1f} s {result['lineage']['timings']}",
        file=sys.stderr,
    )
    return result


def kept_record(backend: str, args: argparse.Namespace) -> Path:
    """Where ``--keep`` notes a built database (its URL and build figures) for ``--reuse`` to find."""
    shape = f"{args.donations}-s{args.seed}-{args.pools}x{args.pool_units}-{args.build}"
    return common.OUT / f"trace-kept-{backend.lower()}-{shape}.json"


def kept_database(backend: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The build noted by an earlier ``--keep`` run of the same shape, if ``--reuse`` and it still exists."""
    record = kept_record(backend, args)
    if not (args.reuse and record.exists()):
        return None
    kept = json.loads(record.read_text())
    if kept["url"].startswith("sqlite") and not Path(kept["url"].removeprefix("sqlite:///")).exists():
        return None
    if not kept["url"].startswith("sqlite"):
        import psycopg

        try:
            psycopg.connect(common.libpq_url(kept["url"])).close()
        except psycopg.OperationalError:
            return None
    print(f"  {backend}: reusing {kept['url']} (built {kept['built']})", file=sys.stderr)
    return kept


def keep_database(backend: str, url: str, result: dict[str, Any], args: argparse.Namespace) -> None:
    record = kept_record(backend, args)
    record.write_text(json.dumps({"url": url, "built": time.strftime("%Y-%m-%d %H:%M %Z"), "result": result}))
    print(f"kept {url} (noted in {record.relative_to(common.ROOT)}; --reuse measures on it again)", file=sys.stderr)


def run_backend(backend: str, url: str, result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Time the traces on a built database."""
    result = dict(result)
    donors = sample_donors(url, args.samples, args.seed)
    lots = [result["lineage"]["lots"][0]] + (["IVG-MIX"] if "IVG-MIX" in result["lineage"]["lots"] else [])
    lots = lots if args.lot_runs else []
    plan = common.OUT / f"trace-plan-{backend}-{os.getpid()}.json"
    plan.write_text(json.dumps({"donors": donors, "lots": lots}))
    try:
        result["timings"] = common.run_worker(
            SCRIPT, ["--worker", "time", "--db", url, "--plan", str(plan), "--lot-runs", str(args.lot_runs)]
        )
    finally:
        plan.unlink()
    result["command"] = command_timings(url, donors["pooled"], args.cli_runs) if args.cli_runs else {}
    return result


def summary_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    backend = result["backend"]
    for key, value in result["timings"].items():
        if not isinstance(value, dict) or "app" not in value:
            continue
        app, raw = value["app"], value["raw"]
        if key.startswith("donor/"):
            what = f"trace donor ({'pooled' if key.endswith('pooled') else 'random'} donors, n={len(app)})"
        else:
            what = f"trace lot {key[4:]} --members ({value['members']:,} units, n={len(app)})"
        lines = [(what, app)]
        if "one" in value:
            lines.append(("  its one statement on the bare driver, no answer built", value["one"]))
        for label, times in lines:
            rows.append(
                [
                    backend,
                    label,
                    common.median(times),
                    common.percentile(times, 0.95),
                    common.median(raw),
                    common.percentile(raw, 0.95),
                    f"{common.median(times) / common.median(raw):.1f}x",
                ]
            )
    for what, times in result["command"].items():
        rows.append([backend, f"$ {what}", common.median(times), max(times), None, None, "-"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--donations", type=int, default=1_000_000, help="N donations (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pools", type=int, default=4, help="pools (default 4)")
    parser.add_argument("--pool-units", type=int, default=20_000, help="units per pool (default 20,000)")
    parser.add_argument("--samples", type=int, default=200, help="donors traced per group (default 200)")
    parser.add_argument("--lot-runs", type=int, default=5, help="traces per lot (default 5; 0: none)")
    parser.add_argument("--cli-runs", type=int, default=5, help="runs of each command (default 5; 0: none)")
    parser.add_argument(
        "--build",
        choices=("raw", "import"),
        default="raw",
        help="how the generated files are loaded (default raw: set-based)",
    )
    parser.add_argument("--postgres", metavar="URL", help="also measure on a fresh database on this server")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the built databases (SQLite file in bench/out) and note them for --reuse",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure on the databases an earlier --keep run built with the same --donations, --seed, --pools, "
        "--pool-units and --build, if they still exist (build figures are those of that run); "
        "builds as usual otherwise",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return

    folder = common.OUT / f"data-{args.donations}-s{args.seed}-p6"
    manifest = ensure_generated(folder, donations=args.donations, seed=args.seed, panel=6)
    c = manifest["counts"]
    results: list[dict[str, Any]] = []
    if not args.no_sqlite:
        kept = kept_database("SQLite", args)
        if kept:
            results.append(run_backend("SQLite", kept["url"], kept["result"], args))
        else:
            db = common.OUT / f"trace-{args.donations}-{os.getpid()}.db"
            common.sqlite_template(folder, db)
            url = common.sqlite_url(db)
            try:
                built = build("SQLite", url, folder, args)
                if args.keep:
                    keep_database("SQLite", url, built, args)
                results.append(run_backend("SQLite", url, built, args))
            finally:
                if not args.keep:
                    common.remove_sqlite(db)
    if args.postgres:
        kept = kept_database("PostgreSQL", args)
        if kept:
            results.append(run_backend("PostgreSQL", kept["url"], kept["result"], args))
        else:
            with common.postgres_database(args.postgres, "trace", keep=args.keep) as url:
                common.prepare(url, folder)
                built = build("PostgreSQL", url, folder, args)
                if args.keep:
                    keep_database("PostgreSQL", url, built, args)
                results.append(run_backend("PostgreSQL", url, built, args))

    stamp = time.strftime("%Y-%m-%d %H:%M %Z")
    print(f"\n{stamp}; {common.machine()}" + (f"; {common.postgres_version(args.postgres)}" if args.postgres else ""))
    print(
        f"{c['donors']:,} donors, {c['donations']:,} donations, {c['results']:,} results (build: {args.build}); "
        f"{args.pools} pools of {args.pool_units:,} units\n"
    )
    print("build:")
    for r in results:
        lineage = r["lineage"]["timings"]
        print(
            f"  {r['backend']}: load {r['load_seconds']:.1f} s ("
            + ", ".join(f"{k} {v:.1f} s" for k, v in r["load"].items())
            + f"); pools and lots {r['lineage_seconds']:.1f} s (per pool: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in lineage.items())
            + ")"
        )
    print()
    rows = [row for r in results for row in summary_rows(r)]
    print(common.table(["backend", "what", "median ms", "p95/max ms", "raw median ms", "raw p95 ms", "vs raw"], rows))
    mismatches = [m for r in results for m in r["timings"]["mismatches"]]
    print(f"\nanswers compared with raw SQL: {'all equal' if not mismatches else 'MISMATCH ' + ', '.join(mismatches)}")
    print(
        "targets: in-process <= 3x raw; donor trace median < 1 ms; 20,000-unit lot with members < 500 ms; "
        "whole command < 1,000 ms"
    )
    top = import_time_top()
    print("slowest imports of `import cli` (cumulative ms): " + ", ".join(f"{n} {ms:.0f}" for n, ms in top))
    common.save_json(
        f"trace-{args.donations}.json",
        {
            "date": stamp,
            "machine": common.machine(),
            "manifest": manifest,
            "args": vars(args),
            "results": results,
            "import_time": top,
        },
    )


if __name__ == "__main__":
    main()
