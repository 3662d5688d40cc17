"""Pool-members files: a unit to add to an open pool per row (pool_number, unit_number), through the same service
and eligibility rules as ``pool add``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlmodel import col

from ..errors import IneligibleUnits
from ..models import Donation, Pool, PoolMember, PoolStatus
from ..services import pools
from .cells import CellReader, missing, parse_code, unit_number, unknown_unit
from .spec import Cells, Columns, ImportSpec, RowProblem

if TYPE_CHECKING:
    from .job import ImportJob


@dataclass(slots=True)
class PoolMemberRow:
    """A unit to add to a pool."""

    line: int
    pool_number: str
    unit_number: str

    @property
    def key(self) -> str:
        # A unit can be in one pool only, so the unit alone is the key: the same unit twice is a duplicate even
        # when both lines name the same pool.
        return self.unit_number

    @property
    def label(self) -> str:
        return f"unit {self.unit_number}"


def _pool_number(text: str) -> str:
    return parse_code(text, "pool number")


def parse_pool_member(line: int, cells: Cells, now: datetime) -> tuple[PoolMemberRow | None, list[RowProblem]]:
    """A pool-members-file row, or the problems that stop it."""
    c = CellReader(line, cells)
    pool_number = c.required("pool_number", _pool_number)
    unit = c.required("unit_number", unit_number)
    if c.problems or pool_number is None or unit is None:
        return None, c.problems
    return PoolMemberRow(line, pool_number, unit.value), []


def fast_pool_member(line: int, f: list[str], ix: tuple[int | None, ...], limit: datetime) -> PoolMemberRow | None:
    """The row of a valid record, read straight from its fields (see :class:`ImportSpec`)."""
    i_pool, i_unit = ix
    pool, unit = f[i_pool].strip(), f[i_unit].strip()  # type: ignore[index]
    if not (pool and unit):
        return None
    return PoolMemberRow(line, _pool_number(pool), unit_number(unit).value)


def load_pool_members(job: ImportJob, rows: list[PoolMemberRow]) -> None:
    """Add the units to their open pools; a unit already in the pool named is present."""
    session = job.session
    pool_rows = {
        pool.pool_number: pool
        for pool in session.execute(
            select(col(Pool.pool_number), col(Pool.id), col(Pool.status)).where(
                col(Pool.pool_number).in_({r.pool_number for r in rows})
            )
        ).all()
    }
    members = {
        row.unit_number: row
        for row in session.execute(
            select(
                col(Donation.unit_number), col(Pool.pool_number), col(PoolMember.id), col(PoolMember.import_event_id)
            )
            .outerjoin(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
            .outerjoin(Pool, col(Pool.id) == col(PoolMember.pool_id))
            .where(job.among(col(Donation.unit_number), {r.unit_number for r in rows}))
        ).all()
    }
    by_pool: dict[str, list[PoolMemberRow]] = defaultdict(list)
    for r in rows:
        member = members.get(r.unit_number)
        if member is not None and member.id is not None and member.import_event_id == job.event_id:
            job.duplicate(r, member.id)
            continue
        problems = []
        pool = pool_rows.get(r.pool_number)
        if pool is None:
            problems.append(
                missing(r.line, "pool_number", "pool", r.pool_number, "create it first with 'plasmatrace pool create'")
            )
        if member is None:
            problems.append(unknown_unit(r.line, r.unit_number))
        if problems or pool is None or member is None:
            job.reject(r.line, problems)
            continue
        pooled_in = member.pool_number
        if pooled_in == r.pool_number:
            job.count_present(r.line)
        elif pooled_in is not None:
            job.conflict(r.line, f"{r.label}: already in pool {pooled_in}, not {r.pool_number}; {job.spec.hint}.")
        elif pool.status != PoolStatus.OPEN:
            job.reject(
                r.line,
                [
                    RowProblem(
                        r.line,
                        "pool_number",
                        f"pool {r.pool_number} is {pool.status.value}; units can be added to an open pool only.",
                    )
                ],
            )
        else:
            by_pool[r.pool_number].append(r)
    for pool_number, added in by_pool.items():
        _add_to_pool(job, pool_number, added)


def _add_to_pool(job: ImportJob, pool_number: str, members: list[PoolMemberRow]) -> None:
    try:
        job.loaded += pools.add_units(
            job.session,
            pool_number=pool_number,
            unit_numbers=[m.unit_number for m in members],
            actor=job.actor,
            policy=job.policy,
            import_event_id=job.event_id,
        )
        return
    except IneligibleUnits as error:
        reasons = error.reasons
    # add_units changes nothing when it refuses, and eligibility is judged unit by unit: the others can go in.
    for m in members:
        if m.unit_number in reasons:
            job.reject(
                m.line,
                [
                    RowProblem(
                        m.line,
                        "unit_number",
                        f"unit {m.unit_number} is not eligible for pool "
                        f"{pool_number}: {'; '.join(reasons[m.unit_number])}.",
                    )
                ],
            )
    eligible = [m for m in members if m.unit_number not in reasons]
    if eligible:
        job.loaded += pools.add_units(
            job.session,
            pool_number=pool_number,
            unit_numbers=[m.unit_number for m in eligible],
            actor=job.actor,
            policy=job.policy,
            import_event_id=job.event_id,
        )


SPEC = ImportSpec(
    name="pool-members",
    columns=Columns(("pool_number", "unit_number")),
    parse=parse_pool_member,
    fast=fast_pool_member,
    load=load_pool_members,
    model=PoolMember,
    key_column="unit_number",
    hint="a unit can be in one pool only",
)
