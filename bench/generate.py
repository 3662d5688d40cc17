"""Realistic synthetic import files for benchmarks: donors.csv, donations.csv, results.csv (SPEC §6).

    python bench/generate.py --donations 200000 --seed 1 --out bench/out/data

What the files look like:

* several collection centres (``--centres``, default 4), each with its own ISBT 128 facility identification
  numbers (FIN) and its own UTC offset; DINs are canonical 13 characters, FIN + two-digit year + a six-digit
  sequence per FIN and year (a centre takes another FIN when a sequence would pass 999999, so any size works);
* donors come back 2-10 times (more often a few times than many), about 1% are applicants with one donation;
  visits are 3-35 days apart, all collected before ``--end`` (default 2026-06-30, so the output does not
  depend on the day it is generated);
* every donation is screened by one of two testing laboratories for the whole required panel
  (``--panel 6``: the six markers of the default policy, so 6N results and poolable units; ``--panel 5``
  drops hbv-dna for the literal "N donations + 5N results", whose units are then not poolable);
* about 0.05% of donations (``--reactive-rate``) have one reactive marker.

Writing is streamed (one donor at a time), so any size fits in memory; the output is identical for the same
arguments. ``establishments.csv`` lists the centres, laboratories and the fractionation plant; they must exist
before the donors file is imported: ``--init-db URL`` migrates a database and creates them, or call
:func:`create_establishments` with a session.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout: `python bench/generate.py` finds the traceability package
from traceability.synthetic.codes import din, screening_method  # noqa: E402  (standard library only: loads fast)

DEFAULT_END = date(2026, 6, 30)
SPAN_DAYS = 720
"""Donors' first visits fall in the SPAN_DAYS before --end."""

PANEL = ["hbsag", "anti-hiv", "anti-hcv", "hiv-rna", "hcv-rna", "hbv-dna"]
VISIT_WEIGHTS = {2: 20, 3: 16, 4: 14, 5: 12, 6: 10, 7: 9, 8: 7, 9: 6, 10: 6}
INTERVAL_DAYS = [3, 4, 4, 7, 7, 7, 14, 14, 21, 28, 35]
OFFSETS_H = [0, 1, -5, 2, -8, 9, -3, 5]
LABS = [("LAB-1", "Central Testing Laboratory"), ("LAB-2", "Northern Testing Laboratory")]
PLANT = ("FRAC-01", "Fractionation Plant 1")
ACTOR = "bench"

DONOR_COLUMNS = ["donor_code", "establishment", "registered_on"]
DONATION_COLUMNS = [
    "unit_number",
    "donor_code",
    "collected_at",
    "volume_ml",
    "establishment",
    "plasma_kind",
    "frozen_at",
]
RESULT_COLUMNS = ["unit_number", "marker", "result", "tested_at", "method", "lab"]


@dataclass
class Centre:
    code: str
    name: str
    number: int
    tz: timezone
    fin_index: int = 0

    def fin(self) -> str:
        # FIN: a letter, then two of A-N/P-Z/0-9, then two digits. W + centre (2 digits) + FIN index (2 digits).
        return f"W{self.number:02d}{self.fin_index:02d}"


def centres(count: int) -> list[Centre]:
    return [
        Centre(f"C-{i:02d}", f"Plasma Centre {i:02d}", i, timezone(timedelta(hours=OFFSETS_H[i % len(OFFSETS_H)])))
        for i in range(1, count + 1)
    ]


def establishments(count: int) -> list[tuple[str, str, str]]:
    """(code, name, kind) of every establishment the files name."""
    rows = [(c.code, c.name, "collection") for c in centres(count)]
    rows += [(code, name, "testing") for code, name in LABS]
    rows.append((PLANT[0], PLANT[1], "fractionation"))
    return rows


def create_establishments(session: Any, rows: list[tuple[str, str, str]], *, actor: str = ACTOR) -> int:
    """Create the establishments (through the service, audited) that are not there yet; returns how many."""
    from sqlalchemy import select

    from traceability.models import Establishment, EstablishmentKind
    from traceability.services.donors import add_establishment

    existing = set(session.execute(select(Establishment.code)).scalars())
    made = 0
    for code, name, kind in rows:
        if code not in existing:
            add_establishment(session, code=code, name=name, kind=EstablishmentKind(kind), actor=actor)
            made += 1
    return made


def read_establishments(folder: Path) -> list[tuple[str, str, str]]:
    with (folder / "establishments.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [(code, name, kind) for code, name, kind in reader]


def _stamp(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def generate(
    out: Path,
    *,
    donations: int,
    seed: int = 1,
    centre_count: int = 4,
    panel: int = 6,
    reactive_rate: float = 0.0005,
    end: date = DEFAULT_END,
) -> dict[str, Any]:
    """Write the files into ``out``; returns the manifest (also written as manifest.json)."""
    if donations < 1:
        raise ValueError("--donations must be at least 1")
    if panel not in (5, 6):
        raise ValueError("--panel is 5 or 6")
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    sites = centres(centre_count)
    markers = PANEL[:panel]
    methods = {m: screening_method(m) for m in markers}
    end_at = datetime(end.year, end.month, end.day, 23, 59, tzinfo=UTC)
    first_day = datetime(end.year, end.month, end.day, tzinfo=UTC) - timedelta(days=SPAN_DAYS)
    visit_counts, visit_weights = list(VISIT_WEIGHTS), list(VISIT_WEIGHTS.values())
    sequences: dict[tuple[str, int], int] = {}
    counts = {"donors": 0, "donations": 0, "results": 0, "applicants": 0, "reactive": 0}
    per_centre = dict.fromkeys((c.code for c in sites), 0)

    with (out / "establishments.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["code", "name", "kind"])
        writer.writerows(establishments(centre_count))

    with (
        (out / "donors.csv").open("w", newline="", encoding="utf-8") as f_donors,
        (out / "donations.csv").open("w", newline="", encoding="utf-8") as f_donations,
        (out / "results.csv").open("w", newline="", encoding="utf-8") as f_results,
    ):
        w_donors = csv.writer(f_donors, lineterminator="\n")
        w_donations = csv.writer(f_donations, lineterminator="\n")
        w_results = csv.writer(f_results, lineterminator="\n")
        w_donors.writerow(DONOR_COLUMNS)
        w_donations.writerow(DONATION_COLUMNS)
        w_results.writerow(RESULT_COLUMNS)
        left = donations
        while left > 0:
            counts["donors"] += 1
            code = f"D{counts['donors']:08d}"
            site = sites[rng.randrange(len(sites))]
            applicant = rng.random() < 0.01
            visits = 1 if applicant else rng.choices(visit_counts, visit_weights)[0]
            # A donor's first visit, at least 40 days before the end (time for a second one); applicants are new.
            day = SPAN_DAYS - rng.randrange(3, 90) if applicant else rng.randrange(SPAN_DAYS - 40)
            local_minute = rng.randrange(7 * 60, 18 * 60)  # opening hours, local time
            when = first_day + timedelta(days=day, minutes=local_minute) - site.tz.utcoffset(None)
            w_donors.writerow([code, site.code, (when - timedelta(days=rng.randrange(0, 4))).date().isoformat()])
            made = 0
            while made < visits and left > 0 and when <= end_at:
                year = when.year % 100
                key = (site.fin(), year)
                number = sequences.get(key, 0) + 1
                if number > 999_999:
                    site.fin_index += 1
                    key, number = (site.fin(), year), 1
                sequences[key] = number
                unit = din(key[0], year, number)
                local = when.astimezone(site.tz)
                kind = "recovered" if rng.random() < 0.03 else "source"
                w_donations.writerow(
                    [
                        unit,
                        code,
                        _stamp(local),
                        rng.randrange(625, 881, 5),
                        site.code,
                        kind,
                        _stamp(local + timedelta(minutes=rng.randrange(30, 300))),
                    ]
                )
                tested = _stamp(when + timedelta(days=1, minutes=rng.randrange(0, 20 * 60))).replace("+00:00", "Z")
                lab = LABS[rng.randrange(len(LABS))][0]
                reactive = markers[rng.randrange(len(markers))] if rng.random() < reactive_rate else None
                counts["reactive"] += reactive is not None
                w_results.writerows(
                    [
                        unit,
                        m,
                        "reactive" if m == reactive else "nonreactive",
                        tested,
                        methods[m],
                        lab,
                    ]
                    for m in markers
                )
                counts["results"] += len(markers)
                per_centre[site.code] += 1
                made += 1
                left -= 1
                when += timedelta(days=rng.choice(INTERVAL_DAYS), minutes=rng.randrange(-90, 91))
            counts["donations"] += made
            counts["applicants"] += applicant
    manifest = {
        "donations": donations,
        "seed": seed,
        "centres": centre_count,
        "panel": panel,
        "reactive_rate": reactive_rate,
        "end": end.isoformat(),
        "counts": counts,
        "per_centre": per_centre,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def ensure_generated(
    out: Path, *, donations: int, seed: int = 1, panel: int = 6, quiet: bool = False, **kw: Any
) -> dict[str, Any]:
    """Reuse the files in ``out`` when they were generated with the same arguments, else generate them."""
    wanted = {"donations": donations, "seed": seed, "panel": panel}
    path = out / "manifest.json"
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = ("donors.csv", "donations.csv", "results.csv")
        if all(manifest.get(k) == v for k, v in wanted.items()) and all((out / f).exists() for f in files):
            return manifest
    started = time.perf_counter()
    # Written beside the folder, then moved in file by file (manifest last): a benchmark started at the same time
    # never reads half-written files.
    partial = out.parent / f".{out.name}.{os.getpid()}.part"
    manifest = generate(partial, donations=donations, seed=seed, panel=panel, **kw)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("establishments.csv", "donors.csv", "donations.csv", "results.csv", "manifest.json"):
        os.replace(partial / name, out / name)
    partial.rmdir()
    if not quiet:
        c = manifest["counts"]
        print(
            f"generated {c['donors']:,} donors, {c['donations']:,} donations, {c['results']:,} results in {out} "
            f"({time.perf_counter() - started:.1f} s)",
            file=sys.stderr,
        )
    return manifest


def init_db(url: str, folder: Path) -> None:
    """Migrate the database at ``url`` and create the establishments the files in ``folder`` name."""
    from traceability.db import make_engine, transaction
    from traceability.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    with transaction(engine) as session:
        made = create_establishments(session, read_establishments(folder))
    engine.dispose()
    print(f"{url}: migrated; {made} establishment(s) created.", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--donations", type=int, required=True, help="number of donations (N)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV files")
    parser.add_argument("--centres", type=int, default=4, help="collection centres (default 4)")
    parser.add_argument("--panel", type=int, default=6, choices=(5, 6), help="markers per donation (default 6)")
    parser.add_argument("--reactive-rate", type=float, default=0.0005, help="share of donations with a reactive marker")
    parser.add_argument("--end", type=date.fromisoformat, default=DEFAULT_END, help="last collection day (YYYY-MM-DD)")
    parser.add_argument("--init-db", metavar="URL", help="also migrate this database and create the establishments")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    manifest = generate(
        args.out,
        donations=args.donations,
        seed=args.seed,
        centre_count=args.centres,
        panel=args.panel,
        reactive_rate=args.reactive_rate,
        end=args.end,
    )
    c = manifest["counts"]
    print(
        f"{args.out}: {c['donors']:,} donors ({c['applicants']:,} applicants), {c['donations']:,} donations, "
        f"{c['results']:,} results ({c['reactive']:,} reactive donations) in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    if args.init_db:
        init_db(args.init_db, args.out)


if __name__ == "__main__":
    main()
