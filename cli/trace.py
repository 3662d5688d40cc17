"""trace: lineage forward from a donor or unit, back from a pool or lot."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.core import (
    AsOfOption,
    FormatOption,
    OutputFormat,
    as_of_time,
    trace_app,
    work,
)
from cli.output import (
    print_document,
)
from traceability.queries import lineage
from traceability.reports import sections

MembersOption = Annotated[bool, typer.Option("--members", help="Include every donation (unit, donor, pool).")]


@trace_app.command("donor")
def trace_donor(
    ctx: typer.Context, code: str, fmt: FormatOption = OutputFormat.table, as_of: AsOfOption = None
) -> None:
    """Every donation of a donor and where it went: inventory, pool, lots, consignees. Example: plasmatrace trace donor D-000123 --format json (as recorded on a past day: --as-of 2026-05-04)"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_donor(session, code, policy=ctx.obj.policy, as_of=as_of_time(session, as_of))
    print_document(sections.marked_as_of(sections.donor_document(trace), trace.as_of), trace, fmt)


@trace_app.command("unit")
def trace_unit(ctx: typer.Context, unit: str, fmt: FormatOption = OutputFormat.table, as_of: AsOfOption = None) -> None:
    """One unit forward: results, pool, lots, shipments. Example: plasmatrace trace unit "=A99992612345600" --as-of 2026-05-04T12:00:00Z"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_unit(session, unit, as_of=as_of_time(session, as_of))
    print_document(sections.marked_as_of(sections.unit_document(trace), trace.as_of), trace, fmt)


@trace_app.command("pool")
def trace_pool(
    ctx: typer.Context,
    pool: str,
    fmt: FormatOption = OutputFormat.table,
    members: MembersOption = False,
    as_of: AsOfOption = None,
) -> None:
    """A pool back to its donations and forward to its lots and shipments. Example: plasmatrace trace pool P-0042 --members --format csv"""
    with work(ctx, readonly=True) as session:
        at = as_of_time(session, as_of)
        trace = lineage.trace_pool(session, pool, members=members, policy=ctx.obj.policy, as_of=at)
    print_document(sections.marked_as_of(sections.pool_document(trace), trace.as_of), trace, fmt)


@trace_app.command("lot")
def trace_lot(
    ctx: typer.Context,
    lot: str,
    fmt: FormatOption = OutputFormat.table,
    members: MembersOption = False,
    as_of: AsOfOption = None,
) -> None:
    """A lot back through every lot and pool to every donation and donor. Example: plasmatrace trace lot IVG-2605 --members --format json (what was known at its release: --as-of 2026-05-04T09:30:00Z)"""
    with work(ctx, readonly=True) as session:
        at = as_of_time(session, as_of)
        trace = lineage.trace_lot(session, lot, members=members, policy=ctx.obj.policy, as_of=at)
    print_document(sections.marked_as_of(sections.lot_document(trace), trace.as_of), trace, fmt)
