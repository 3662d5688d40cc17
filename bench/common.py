"""Shared by the benchmarks: fresh databases, workers in subprocesses, raw loaders and plain-text tables."""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout: `python bench/x.py` finds the traceability package

ACTOR = "bench"
APPROVER = "bench.approver"  # separation of duties: who records does not release


# --- measuring -------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far.

    ``VmHWM`` of /proc/self/status where there is one: on Linux ``ru_maxrss`` is carried over ``execve`` from the
    process that started us (with vfork, the parent's peak), so a small worker would report its parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def run_worker(script: Path, args: list[str], *, timeout: float | None = None) -> dict[str, Any]:
    """Run ``python script --worker ...`` in a fresh interpreter; its last stdout line is a JSON result."""
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


def emit(result: dict[str, Any]) -> None:
    """A worker's answer to run_worker."""
    print(json.dumps(result), flush=True)


# --- machine and output ------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import sqlalchemy

        sa_version = sqlalchemy.__version__
    except ImportError:  # pragma: no cover
        sa_version = "?"
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"SQLAlchemy {sa_version}"
    )


def postgres_version(url: str) -> str:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def table(headers: list[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table, numbers right-aligned (also valid Markdown)."""
    body = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    numeric = [all(_numeric(r[i]) for r in body) and bool(body) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=True))
            + " |"
        )

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if n else ("-" * (w + 2)) for w, n in zip(widths, numeric, strict=True))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in body)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace(".", "").replace("x", "").replace("-", "").strip()
    return stripped.isdigit() or text == "-"


def save_json(name: str, data: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path


# --- databases -------------------------------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def libpq_url(url: str) -> str:
    """A URL psycopg.connect accepts (no SQLAlchemy driver suffix)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(libpq_url(url)).set(database=name).render_as_string(hide_password=False)


def create_postgres_database(base_url: str, tag: str) -> str:
    """A new, empty database on the server of ``base_url``; returns its URL."""
    import psycopg

    name = f"plasmatrace_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(base_url, name)


def drop_postgres_database(base_url: str, url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(libpq_url(base_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def postgres_database(base_url: str, tag: str, *, keep: bool = False) -> Iterator[str]:
    url = create_postgres_database(base_url, tag)
    try:
        yield url
    finally:
        if not keep:
            drop_postgres_database(base_url, url)


def prepare(url: str, folder: Path | None = None) -> None:
    """Migrate the database and create the establishments (through the service) of the generated files in
    ``folder``, or the default ones."""
    from generate import create_establishments, establishments, read_establishments

    from traceability.db import make_engine, transaction
    from traceability.migrate import upgrade

    engine = make_engine(url)
    try:
        upgrade(engine)
        with transaction(engine) as session:
            create_establishments(session, read_establishments(folder) if folder else establishments(4))
    finally:
        engine.dispose()  # on SQLite the last connection checkpoints the WAL into the file


def sqlite_template(folder: Path, target: Path) -> Path:
    """A migrated SQLite file with the establishments, made once per data folder and copied for each run."""
    template = folder / "template.db"
    if not template.exists():
        partial = folder / f"template.db.{os.getpid()}.part"
        remove_sqlite(partial)
        prepare(sqlite_url(partial), folder)
        os.replace(partial, template)
    remove_sqlite(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
    return target


def table_counts(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from traceability.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()  # noqa: S608
                for name in ("donor", "donation", "test_result", "audit_event", "deferral")
            }
    finally:
        engine.dispose()


# --- raw loaders: the same rows into the same schema, without the application --------------------------------------


def _rows(path: Path) -> tuple[dict[str, int], Iterator[list[str]], Any]:
    handle = path.open(newline="", encoding="utf-8")
    reader = csv.reader(handle)
    header = next(reader)
    return {name: i for i, name in enumerate(header)}, reader, handle


def _sqlite_time(text: str) -> str:
    """ISO 8601 with offset -> the UTC text SQLAlchemy stores in SQLite ('YYYY-MM-DD HH:MM:SS.ffffff')."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _result_fields(row: list[str], col: dict[str, int]) -> list[str]:
    return [row[col[c]] if c in col else "" for c in ("unit_number", "marker", "result", "tested_at", "method", "lab")]


def raw_sqlite_load(db: Path, folder: Path, *, set_aside: list[list[str]] | None = None) -> dict[str, float]:
    """csv module + sqlite3 executemany of donors, donations and results, in one transaction.

    The same pragmas as the application (WAL, synchronous=NORMAL, foreign keys on), the same tables and
    indexes (the file is migrated by the application's migrations). References are resolved with one SELECT per
    table into a dict. Returns seconds per file. With ``set_aside``, reactive results are appended to it (as
    ``[unit_number, marker, result, tested_at, method, lab]``) instead of being inserted.
    """
    seconds: dict[str, float] = {}
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA foreign_keys=ON")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    started = time.perf_counter()
    con.execute("BEGIN IMMEDIATE")
    sites = dict(con.execute("SELECT code, id FROM establishment"))

    col, reader, handle = _rows(folder / "donors.csv")
    with handle:
        c_code, c_site, c_reg = col["donor_code"], col["establishment"], col["registered_on"]
        con.executemany(
            "INSERT INTO donor (donor_code, establishment_id, registered_on, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?)",
            ((r[c_code], sites[r[c_site]], r[c_reg] or None, stamp, ACTOR) for r in reader),
        )
    donors = {code: (i, site) for code, i, site in con.execute("SELECT donor_code, id, establishment_id FROM donor")}
    seconds["donors"] = time.perf_counter() - started

    mark = time.perf_counter()
    col, reader, handle = _rows(folder / "donations.csv")
    with handle:
        c_unit, c_donor, c_at, c_vol = col["unit_number"], col["donor_code"], col["collected_at"], col["volume_ml"]
        c_site, c_kind, c_frozen = col.get("establishment"), col.get("plasma_kind"), col.get("frozen_at")

        def donations() -> Iterator[tuple[Any, ...]]:
            for r in reader:
                donor_id, donor_site = donors[r[c_donor]]
                site = r[c_site] if c_site is not None else ""
                frozen = r[c_frozen] if c_frozen is not None else ""
                yield (
                    r[c_unit],
                    "isbt128",
                    donor_id,
                    sites[site] if site else donor_site,
                    _sqlite_time(r[c_at]),
                    _sqlite_time(frozen) if frozen else None,
                    int(r[c_vol]),
                    (r[c_kind] if c_kind is not None else "") or "source",
                    "in-inventory",
                    1,
                    stamp,
                    ACTOR,
                )

        con.executemany(
            "INSERT INTO donation (unit_number, scheme, donor_id, establishment_id, collected_at, frozen_at, "
            "volume_ml, plasma_kind, status, version, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            donations(),
        )
    units = dict(con.execute("SELECT unit_number, id FROM donation"))
    seconds["donations"] = time.perf_counter() - mark

    mark = time.perf_counter()
    col, reader, handle = _rows(folder / "results.csv")
    with handle:
        c_unit, c_marker, c_result, c_at = col["unit_number"], col["marker"], col["result"], col["tested_at"]
        c_method, c_lab = col.get("method"), col.get("lab")

        def results() -> Iterator[tuple[Any, ...]]:
            for r in reader:
                lab = r[c_lab] if c_lab is not None else ""
                if set_aside is not None and r[c_result] == "reactive":
                    set_aside.append(_result_fields(r, col))
                    continue
                yield (
                    units[r[c_unit]],
                    r[c_marker],
                    1,
                    r[c_result],
                    (r[c_method] if c_method is not None else "") or None,
                    sites[lab] if lab else None,
                    _sqlite_time(r[c_at]),
                    stamp,
                    ACTOR,
                )

        con.executemany(
            "INSERT INTO test_result (donation_id, marker, version, result, method, lab_id, tested_at, created_at, "
            "created_by) VALUES (?,?,?,?,?,?,?,?,?)",
            results(),
        )
    con.execute("COMMIT")
    seconds["results"] = time.perf_counter() - mark
    con.close()
    return seconds


def raw_postgres_copy(url: str, folder: Path, *, set_aside: list[list[str]] | None = None) -> dict[str, float]:
    """csv module + COPY ... FROM STDIN (psycopg 3) of donors, donations and results, in one transaction.

    Times go to PostgreSQL as text (it parses ISO 8601 with offsets itself); references are resolved with one
    SELECT per table into a dict. Returns seconds per file. ``set_aside`` as for :func:`raw_sqlite_load`.
    """
    import psycopg

    seconds: dict[str, float] = {}
    stamp = datetime.now(UTC)
    with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        sites = dict(cur.execute("SELECT code, id FROM establishment").fetchall())

        col, reader, handle = _rows(folder / "donors.csv")
        with (
            handle,
            cur.copy(
                "COPY donor (donor_code, establishment_id, registered_on, created_at, created_by) FROM STDIN"
            ) as copy,
        ):
            c_code, c_site, c_reg = col["donor_code"], col["establishment"], col["registered_on"]
            for r in reader:
                copy.write_row((r[c_code], sites[r[c_site]], r[c_reg] or None, stamp, ACTOR))
        donors = {
            code: (i, site)
            for code, i, site in cur.execute("SELECT donor_code, id, establishment_id FROM donor").fetchall()
        }
        seconds["donors"] = time.perf_counter() - started

        mark = time.perf_counter()
        col, reader, handle = _rows(folder / "donations.csv")
        with (
            handle,
            cur.copy(
                "COPY donation (unit_number, scheme, donor_id, establishment_id, collected_at, "
                "frozen_at, volume_ml, plasma_kind, status, version, created_at, created_by) "
                "FROM STDIN"
            ) as copy,
        ):
            c_unit, c_donor, c_at, c_vol = col["unit_number"], col["donor_code"], col["collected_at"], col["volume_ml"]
            c_site, c_kind, c_frozen = col.get("establishment"), col.get("plasma_kind"), col.get("frozen_at")
            for r in reader:
                donor_id, donor_site = donors[r[c_donor]]
                site = r[c_site] if c_site is not None else ""
                copy.write_row(
                    (
                        r[c_unit],
                        "isbt128",
                        donor_id,
                        sites[site] if site else donor_site,
                        r[c_at],
                        (r[c_frozen] if c_frozen is not None else "") or None,
                        int(r[c_vol]),
                        (r[c_kind] if c_kind is not None else "") or "source",
                        "in-inventory",
                        1,
                        stamp,
                        ACTOR,
                    )
                )
        units = dict(cur.execute("SELECT unit_number, id FROM donation").fetchall())
        seconds["donations"] = time.perf_counter() - mark

        mark = time.perf_counter()
        col, reader, handle = _rows(folder / "results.csv")
        with (
            handle,
            cur.copy(
                "COPY test_result (donation_id, marker, version, result, method, lab_id, tested_at, "
                "created_at, created_by) FROM STDIN"
            ) as copy,
        ):
            c_unit, c_marker, c_result, c_at = col["unit_number"], col["marker"], col["result"], col["tested_at"]
            c_method, c_lab = col.get("method"), col.get("lab")
            for r in reader:
                lab = r[c_lab] if c_lab is not None else ""
                if set_aside is not None and r[c_result] == "reactive":
                    set_aside.append(_result_fields(r, col))
                    continue
                copy.write_row(
                    (
                        units[r[c_unit]],
                        r[c_marker],
                        1,
                        r[c_result],
                        (r[c_method] if c_method is not None else "") or None,
                        sites[lab] if lab else None,
                        r[c_at],
                        stamp,
                        ACTOR,
                    )
                )
        conn.commit()
        seconds["results"] = time.perf_counter() - mark
    return seconds


def plasmatrace_import(
    url: str, folder: Path, *, kinds: Sequence[str] = ("donors", "donations", "results"), engine: Any = None
) -> dict[str, float]:
    """``import_file`` of each file in its own transaction, as ``plasmatrace import KIND FILE`` does."""
    from traceability.db import make_engine, transaction
    from traceability.importers.load import import_file

    own = engine is None
    engine = engine or make_engine(url)
    seconds: dict[str, float] = {}
    try:
        for kind in kinds:
            mark = time.perf_counter()
            with transaction(engine) as session:
                report = import_file(session, kind, folder / f"{kind}.csv", actor=ACTOR)
            if report.rejected or report.problem_count:
                raise RuntimeError(f"{kind}: {report.summary} {report.problems[:3]}")
            seconds[kind] = time.perf_counter() - mark
    finally:
        if own:
            engine.dispose()
    return seconds


# --- set-based test data -------------------------------------------------------------------------------------------


def bulk_qualified_units(
    engine: Any,
    *,
    donors: int,
    units_per_donor: int = 2,
    tag: int = 1,
    site: str = "C-01",
    collected_at: datetime | None = None,
) -> list[str]:
    """Qualified donors with fully tested, nonreactive units past the hold, inserted set-based (not through the
    services; test data only, the generator tests/factories.bulk_units uses too). Returns the unit numbers, donor
    by donor: DINs of FIN W99 + tag, year 25."""
    from datetime import timedelta

    from traceability.synthetic import codes, records

    first = collected_at or datetime.now(UTC).replace(microsecond=0) - timedelta(days=150)
    with engine.begin() as conn:
        return records.insert_qualified_units(
            conn,
            establishment=site,
            donor_codes=[f"BP{tag:02d}{i:07d}" for i in range(donors)],
            unit_number=lambda i, k: codes.din(f"W99{tag:02d}", 25, i * units_per_donor + k),
            units_per_donor=units_per_donor,
            first_collected=first,
            actor=ACTOR,
            at=datetime.now(UTC),
        )


PANEL = ["hbsag", "anti-hiv", "anti-hcv", "hiv-rna", "hcv-rna", "hbv-dna"]
"""The default policy's required panel, as the generated files and the raw SQL of the benchmarks name it."""
