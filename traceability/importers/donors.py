"""Donors files: a donor to register per row (donor_code, establishment, registered_on)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlmodel import SQLModel, col

from ..models import Donor, Establishment
from ..parsing import parse_date
from ..services.units import CLOCK_SKEW
from .cells import CellReader, donor_code, establishment, unknown_establishment
from .spec import Cells, Columns, ImportSpec, RowProblem

if TYPE_CHECKING:
    from .job import ImportJob


@dataclass(slots=True)
class DonorRow:
    """A donor to register."""

    line: int
    donor_code: str
    establishment: str
    registered_on: date | None

    @property
    def key(self) -> str:
        return self.donor_code

    @property
    def label(self) -> str:
        return f"donor {self.donor_code}"


def parse_donor(line: int, cells: Cells, now: datetime) -> tuple[DonorRow | None, list[RowProblem]]:
    """A donors-file row, or the problems that stop it."""
    c = CellReader(line, cells)
    code = c.required("donor_code", donor_code)
    site = c.required("establishment", establishment)
    registered_on = c.optional("registered_on", lambda t: parse_date(t, "date"))
    if registered_on is not None and registered_on > (now + CLOCK_SKEW).date():
        c.problem("registered_on", f"{registered_on.isoformat()} is in the future.")
    if c.problems or code is None or site is None:
        return None, c.problems
    return DonorRow(line, code, site, registered_on), []


def fast_donor(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> DonorRow | None:
    """The row of a valid record, read straight from its fields (see :class:`ImportSpec`)."""
    i_code, i_site, i_registered = ix
    code, site = f[i_code].strip(), f[i_site].strip()  # type: ignore[index]
    registered = f[i_registered].strip() if i_registered is not None else ""
    if not (code and site):
        return None
    registered_on = parse_date(registered, "date") if registered else None
    if registered_on is not None and registered_on > limit.date():
        return None
    return DonorRow(line, donor_code(code), establishment(site), registered_on)


_COLUMNS = ("donor_code", "establishment_id", "registered_on")


def load_donors(job: ImportJob, rows: list[DonorRow]) -> None:
    """Register the donors not recorded yet; a donor recorded before is present when its values are the same."""
    sites = job.establishment_ids(r.establishment for r in rows)
    existing = {
        row.donor_code: row
        for row in job.session.execute(
            select(
                col(Donor.donor_code),
                col(Establishment.code).label("site"),
                col(Donor.registered_on),
                col(Donor.id),
                col(Donor.import_event_id),
            )
            .join(Establishment, col(Establishment.id) == col(Donor.establishment_id))
            .where(job.among(col(Donor.donor_code), {r.donor_code for r in rows}))
        ).all()
    }
    registered = job.converter(SQLModel.metadata.tables["donor"].c.registered_on)
    recorded = job.recorded()
    with job.writing(Donor, _COLUMNS) as write:
        being_written = set(job.pending_values("donor_code"))
        for r in rows:
            old = existing.get(r.donor_code)
            if old is not None and old.import_event_id == job.event_id:
                job.duplicate(r, old.id)
            elif r.donor_code in being_written:
                job.duplicate_pending(r)
            elif r.establishment not in sites:
                job.reject(r.line, [unknown_establishment(r.line, "establishment", r.establishment)])
            elif old is not None:
                job.compare(
                    r,
                    [
                        ("establishment", old.site, r.establishment),
                        ("registered_on", old.registered_on, r.registered_on),
                    ],
                )
            else:
                write((r.donor_code, sites[r.establishment], registered(r.registered_on), *recorded))


SPEC = ImportSpec(
    name="donors",
    columns=Columns(("donor_code", "establishment"), ("registered_on",)),
    parse=parse_donor,
    fast=fast_donor,
    load=load_donors,
    model=Donor,
    key_column="donor_code",
    hint="a donor's recorded establishment and registration date are not changed by an import",
)
