"""Consignees files: a consignee to register per row, with its address (code, name, address; optionally country),
checked as ``consignee add`` checks it (SPEC §10)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlmodel import col

from ..errors import InvalidInput
from ..models import Consignee
from ..services.consignees import check_consignee
from .cells import CellReader
from .spec import Cells, Columns, ImportSpec, RowProblem

if TYPE_CHECKING:
    from .job import ImportJob


@dataclass(slots=True)
class ConsigneeRow:
    """A consignee to register, with its address (SPEC §10)."""

    line: int
    code: str
    name: str
    address: str
    country: str | None

    @property
    def key(self) -> str:
        return self.code

    @property
    def label(self) -> str:
        return f"consignee {self.code}"


def parse_consignee(line: int, cells: Cells, now: datetime) -> tuple[ConsigneeRow | None, list[RowProblem]]:
    """A consignees-file row, or the problems that stop it: the same checks as `consignee add`."""
    c = CellReader(line, cells)
    for column in ("code", "name", "address"):
        if column in cells and cells[column] is None:
            c.problem(column, "is empty; a value is required.")
    if c.problems or any(column not in cells for column in ("code", "name", "address")):
        return None, c.problems
    try:
        fields = check_consignee(
            code=cells["code"] or "",
            name=cells["name"] or "",
            address=cells["address"] or "",
            country=cells.get("country"),
        )
    except InvalidInput as error:
        text = str(error)
        column = (
            "country"
            if "country" in text
            else "address"
            if "address" in text
            else "name"
            if ": name" in text
            else "code"
        )
        c.problem(column, text)
        return None, c.problems
    return ConsigneeRow(line, fields.code, fields.name, fields.address, fields.country), []


def fast_consignee(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> ConsigneeRow | None:
    """The row of a valid record, read straight from its fields (see :class:`ImportSpec`)."""
    i_code, i_name, i_address, i_country = ix
    code, name, address = f[i_code].strip(), f[i_name].strip(), f[i_address].strip()  # type: ignore[index]
    country = f[i_country].strip() if i_country is not None else ""
    if not (code and name and address):
        return None
    fields = check_consignee(code=code, name=name, address=address, country=country or None)
    return ConsigneeRow(line, fields.code, fields.name, fields.address, fields.country)


_COLUMNS = ("code", "name", "address", "country")


def load_consignees(job: ImportJob, rows: list[ConsigneeRow]) -> None:
    """Register the consignees not recorded yet; one recorded before is present when its values are the same."""
    existing = {
        row.code: row
        for row in job.session.execute(
            select(
                col(Consignee.code),
                col(Consignee.name),
                col(Consignee.address),
                col(Consignee.country),
                col(Consignee.id),
                col(Consignee.import_event_id),
            ).where(job.among(col(Consignee.code), {r.code for r in rows}))
        ).all()
    }
    recorded = job.recorded()
    with job.writing(Consignee, _COLUMNS) as write:
        being_written = set(job.pending_values("code"))
        for r in rows:
            old = existing.get(r.code)
            if old is not None and old.import_event_id == job.event_id:
                job.duplicate(r, old.id)
            elif r.code in being_written:
                job.duplicate_pending(r)
            elif old is not None:
                job.compare(
                    r,
                    [
                        ("name", old.name, r.name),
                        ("address", old.address, r.address),
                        ("country", old.country, r.country),
                    ],
                )
            else:
                write((r.code, r.name, r.address, r.country, *recorded))


SPEC = ImportSpec(
    name="consignees",
    columns=Columns(("code", "name", "address"), ("country",)),
    parse=parse_consignee,
    fast=fast_consignee,
    load=load_consignees,
    model=Consignee,
    key_column="code",
    hint="a recorded consignee is not changed by an import",
)
