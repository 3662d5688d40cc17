"""Donations files: a collection to record per row, its unit number parsed (unit_number, donor_code, collected_at,
volume_ml; optionally establishment, plasma_kind, frozen_at)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlmodel import col

from ..identifiers import UnitNumber
from ..models import Donation, Donor, Establishment, PlasmaKind, UnitStatus
from ..parsing import parse_choice, parse_positive_int
from ..plausibility import day_began
from .cells import (
    CellReader,
    donor_code,
    establishment,
    missing,
    timestamp,
    unit_number,
    unknown_establishment,
)
from .spec import Cells, Columns, ImportSpec, RowProblem

if TYPE_CHECKING:
    from .job import ImportJob


@dataclass(slots=True)
class DonationRow:
    """A collection to record, its unit number parsed."""

    line: int
    unit: UnitNumber
    donor_code: str
    collected_at: datetime
    volume_ml: int
    establishment: str | None
    plasma_kind: PlasmaKind | None
    frozen_at: datetime | None

    @property
    def unit_number(self) -> str:
        return self.unit.value

    @property
    def key(self) -> str:
        return self.unit.value

    @property
    def label(self) -> str:
        return f"unit {self.unit.value}"


@lru_cache(maxsize=64)
def _plasma_kind(text: str) -> PlasmaKind:
    return parse_choice(PlasmaKind, text, "plasma kind")


def _volume(text: str) -> int:
    return parse_positive_int(text, "volume (mL)", allow_zero=True)


def parse_donation(line: int, cells: Cells, now: datetime) -> tuple[DonationRow | None, list[RowProblem]]:
    """A donations-file row, or the problems that stop it."""
    c = CellReader(line, cells)
    unit = c.required("unit_number", unit_number)
    donor = c.required("donor_code", donor_code)
    collected_at = c.required("collected_at", timestamp)
    volume_ml = c.required("volume_ml", _volume)
    site = c.optional("establishment", establishment)
    plasma_kind = c.optional("plasma_kind", _plasma_kind)
    frozen_at = c.optional("frozen_at", timestamp)
    c.not_future("collected_at", collected_at, now)
    if frozen_at is not None and collected_at is not None and frozen_at < collected_at:
        c.problem("frozen_at", f"{frozen_at.isoformat()} is before the collection at {collected_at.isoformat()}.")
    if c.problems or unit is None or donor is None or collected_at is None or volume_ml is None:
        return None, c.problems
    return DonationRow(line, unit, donor, collected_at, volume_ml, site, plasma_kind, frozen_at), []


def fast_donation(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> DonationRow | None:
    """The row of a valid record, read straight from its fields (see :class:`ImportSpec`)."""
    i_unit, i_donor, i_collected, i_volume, i_site, i_kind, i_frozen = ix
    unit, donor = f[i_unit].strip(), f[i_donor].strip()  # type: ignore[index]
    collected, volume = f[i_collected].strip(), f[i_volume].strip()  # type: ignore[index]
    site = f[i_site].strip() if i_site is not None else ""
    kind = f[i_kind].strip() if i_kind is not None else ""
    frozen = f[i_frozen].strip() if i_frozen is not None else ""
    if not (unit and donor and collected and volume):
        return None
    collected_at = timestamp(collected)
    frozen_at = timestamp(frozen) if frozen else None
    if collected_at > limit or (frozen_at is not None and frozen_at < collected_at):
        return None
    return DonationRow(
        line,
        unit_number(unit),
        donor_code(donor),
        collected_at,
        _volume(volume),
        establishment(site) if site else None,
        _plasma_kind(kind) if kind else None,
        frozen_at,
    )


_IN_INVENTORY = str(UnitStatus.IN_INVENTORY)
_COLUMNS = (
    "unit_number",
    "scheme",
    "flag",
    "donor_id",
    "establishment_id",
    "collected_at",
    "frozen_at",
    "volume_ml",
    "plasma_kind",
    "status",
    "status_reason",
    "version",
)


def load_donations(job: ImportJob, rows: list[DonationRow]) -> None:
    """Record the collections not recorded yet, in inventory; their donors (and establishments) must exist."""
    session = job.session
    donors = {
        donor.donor_code: donor
        for donor in session.execute(
            select(
                col(Donor.donor_code),
                col(Donor.id),
                col(Donor.establishment_id),
                col(Establishment.code).label("site"),
                col(Donor.registered_on),
            )
            .join(Establishment, col(Establishment.id) == col(Donor.establishment_id))
            .where(job.among(col(Donor.donor_code), {r.donor_code for r in rows}))
        ).all()
    }
    sites = job.establishment_ids(r.establishment for r in rows)
    existing = {
        row.unit_number: row
        for row in session.execute(
            select(
                col(Donation.unit_number),
                col(Donor.donor_code),
                col(Establishment.code).label("establishment"),
                col(Donation.collected_at),
                col(Donation.volume_ml),
                col(Donation.plasma_kind),
                col(Donation.frozen_at),
                col(Donation.id),
                col(Donation.import_event_id),
            )
            .join(Donor, col(Donor.id) == col(Donation.donor_id))
            .outerjoin(Establishment, col(Establishment.id) == col(Donation.establishment_id))
            .where(job.among(col(Donation.unit_number), {r.unit_number for r in rows}))
        )
    }
    time = job.time
    recorded = job.recorded()
    with job.writing(Donation, _COLUMNS) as write:
        being_written = set(job.pending_values("unit_number"))
        for r in rows:
            old = existing.get(r.unit_number)
            if old is not None and old.import_event_id == job.event_id:
                job.duplicate(r, old.id)
                continue
            if r.unit_number in being_written:
                job.duplicate_pending(r)
                continue
            problems = []
            donor = donors.get(r.donor_code)
            if donor is None:
                problems.append(
                    missing(
                        r.line,
                        "donor_code",
                        "donor",
                        r.donor_code,
                        "import the donors file first, or add the donor with 'plasmatrace donor add'",
                    )
                )
            if r.establishment is not None and r.establishment not in sites:
                problems.append(unknown_establishment(r.line, "establishment", r.establishment))
            registered = donor.registered_on if donor is not None else None
            if registered is not None and r.collected_at < day_began(registered):
                problems.append(
                    RowProblem(
                        r.line,
                        "collected_at",
                        f"{r.collected_at.isoformat()} is before donor {r.donor_code} was registered "
                        f"({registered.isoformat()}); rule: a collection is not before the donor's registration.",
                    )
                )
            if problems or donor is None:
                job.reject(r.line, problems)
                continue
            site = r.establishment or donor.site
            kind = r.plasma_kind or PlasmaKind.SOURCE
            if old is not None:
                job.compare(
                    r,
                    [
                        ("donor_code", old.donor_code, r.donor_code),
                        ("collected_at", old.collected_at, r.collected_at),
                        ("volume_ml", old.volume_ml, r.volume_ml),
                        ("establishment", old.establishment, site),
                        ("plasma_kind", old.plasma_kind, kind),
                        ("frozen_at", old.frozen_at, r.frozen_at),
                    ],
                )
                continue
            write(
                (
                    r.unit.value,
                    str(r.unit.scheme),
                    r.unit.flag,
                    donor.id,
                    sites[r.establishment] if r.establishment else donor.establishment_id,
                    time(r.collected_at),
                    time(r.frozen_at),
                    r.volume_ml,
                    str(kind),
                    _IN_INVENTORY,
                    None,
                    1,
                    *recorded,
                )
            )


SPEC = ImportSpec(
    name="donations",
    columns=Columns(
        ("unit_number", "donor_code", "collected_at", "volume_ml"), ("establishment", "plasma_kind", "frozen_at")
    ),
    parse=parse_donation,
    fast=fast_donation,
    load=load_donations,
    model=Donation,
    key_column="unit_number",
    hint="corrections go through 'plasmatrace donation correct'",
)
