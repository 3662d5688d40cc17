"""The demo's donors and their donations, and the files the collection centres and the laboratory export.

A few donors are there to be refused: applicants (one donation so far), lapsed donors (qualified long ago, back
after almost two years: applicants again) and four donations with a reactive marker. Deterministic for a seed.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..identifiers import din_check_character
from ..models import Marker
from ..rules import Policy
from ..synthetic.codes import din, screening_method
from .cast import CENTRES, LAB

DONOR_COLUMNS = ["donor_code", "establishment", "registered_on"]
DONATION_COLUMNS = ["unit_number", "donor_code", "collected_at", "volume_ml", "plasma_kind", "frozen_at"]
RESULT_COLUMNS = ["unit_number", "marker", "result", "tested_at", "method", "lab"]


@dataclass(frozen=True)
class Visit:
    """One donation: its canonical DIN, the donor, the centre, when and how much."""

    number: str
    donor: str
    centre: str
    collected_at: datetime
    volume_ml: int


@dataclass(frozen=True)
class Population:
    """Donors (code, centre, registered on), their visits, and the donors and units the rules must refuse."""

    donors: list[tuple[str, str, str]]
    visits: list[Visit]
    applicants: set[str]
    lapsed: set[str]
    reactive: dict[str, Marker]
    """unit number -> the marker it is reactive for."""

    def poolable(self, closing: datetime, hold_days: int) -> tuple[list[list[str]], list[str]]:
        """The units a pool may take at ``closing``, split by donor into two halves, and those still on hold."""
        reactive_donors = {v.donor for v in self.visits if v.number in self.reactive}
        halves: list[list[str]] = [[], []]
        held: list[str] = []
        for v in self.visits:
            if v.donor in self.applicants or v.donor in reactive_donors or v.donor in self.lapsed:
                continue
            if v.collected_at + timedelta(days=hold_days) > closing:
                held.append(v.number)
                continue
            halves[int(v.donor[2:]) % 2].append(v.number)
        return halves, held


def populate(rng: random.Random, donor_count: int, now: datetime) -> Population:
    """Donors coming back 2-5 times over the last year, a few applicants and lapsed donors, four reactive units."""
    donors: list[tuple[str, str, str]] = []
    visits: list[Visit] = []
    sequence = {fin: rng.randrange(100_000, 200_000) for _, _, fin in CENTRES}
    applicants: set[str] = set()
    lapsed: set[str] = set()
    for i in range(donor_count):
        code = f"D-{i + 1:06d}"
        centre, _, fin = CENTRES[i % 2]
        start = now - timedelta(days=rng.randint(150, 330), hours=rng.randint(0, 9), minutes=rng.randint(0, 59))
        count = 1 if rng.random() < 0.004 else rng.choice([2, 2, 3, 3, 4, 5])
        gaps = [rng.choice([3, 4, 7, 7, 14, 21, 35]) for _ in range(count)]
        if i % 400 == 17:  # two visits some 800 days ago, then a first new one after 700 days away
            start, count, gaps = now - timedelta(days=800, hours=rng.randint(0, 9)), 3, [14, 700, 7]
            lapsed.add(code)
        elif count == 1:
            applicants.add(code)
        donors.append((code, centre, (start - timedelta(days=rng.randint(0, 3))).date().isoformat()))
        when = start
        for gap in gaps[:count]:
            if when > now - timedelta(days=3):
                break
            sequence[fin] += 1
            visits.append(Visit(din(fin, when.year, sequence[fin]), code, centre, when, rng.randint(625, 800)))
            when += timedelta(days=gap, minutes=rng.randint(-90, 90))
    reactive = {
        v.number: rng.choice([Marker.HBSAG, Marker.ANTI_HCV, Marker.HIV_RNA])
        for v in rng.sample(visits, 4)
        if v.donor not in applicants
    }
    return Population(donors, visits, applicants, lapsed, reactive)


def _write(path: Path, header: list[str], rows: Iterable[list[str]]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def _printed_din(number: str, rng: random.Random) -> str:
    """Centres export DINs the way scanners and people type them: canonical, with '=' and flags, or spaced."""
    style = rng.random()
    if style < 0.6:
        return number
    if style < 0.9:
        return f"={number}00"
    return f"{number[:5]} {number[5:7]} {number[7:]} {din_check_character(number)}"


def write_exports(
    folder: Path, population: Population, rng: random.Random, now: datetime, policy: Policy
) -> dict[str, int]:
    """donors.csv, donations.csv and results.csv (the whole panel, two days after collection at the latest,
    results spelled as labs spell them) in ``folder``; returns the rows written per file."""
    rows = {"donors": _write(folder / "donors.csv", DONOR_COLUMNS, [list(d) for d in population.donors])}
    rows["donations"] = _write(
        folder / "donations.csv",
        DONATION_COLUMNS,
        (
            [
                _printed_din(v.number, rng),
                v.donor,
                v.collected_at.isoformat(),
                str(v.volume_ml),
                "source",
                (v.collected_at + timedelta(minutes=rng.randint(40, 300))).isoformat(),
            ]
            for v in population.visits
        ),
    )
    rows["results"] = _write(
        folder / "results.csv",
        RESULT_COLUMNS,
        (
            [
                v.number,
                m.value,
                "R" if population.reactive.get(v.number) == m else rng.choice(["NR", "nonreactive", "NR"]),
                (v.collected_at + timedelta(days=1, hours=rng.randint(0, 20))).isoformat(),
                screening_method(m.value),
                LAB,
            ]
            for v in population.visits
            if v.collected_at < now - timedelta(days=2)
            for m in policy.required_panel
        ),
    )
    return rows
