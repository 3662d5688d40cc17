"""donor, donation (alias unit) and result: who gave, what was collected, how it tested."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from cli.core import (
    FormatOption,
    MeaningOption,
    OutputFormat,
    PasswordStdinOption,
    ReasonOption,
    SignOption,
    day,
    donation_app,
    donor_app,
    err,
    parsed,
    result_app,
    say,
    signed_work,
    when,
    work,
)
from cli.output import (
    print_document,
    print_rows,
    say_case,
)
from traceability.identity import Role
from traceability.models import (
    PlasmaKind,
    SignatureMeaning,
    TestMethod,
    UnitStatus,
)
from traceability.parsing import parse_assignments, parse_float, parse_marker, parse_result, parse_timestamp
from traceability.queries import lineage, listings
from traceability.reports import sections
from traceability.services import donors, units


@donor_app.command("add")
def donor_add(
    ctx: typer.Context,
    code: str,
    establishment: Annotated[str, typer.Option("--establishment", "-e", help="Establishment code.")],
    registered_on: Annotated[str | None, typer.Option("--registered-on", help="YYYY-MM-DD.")] = None,
) -> None:
    """Register a donor by pseudonymous code. Example: plasmatrace donor add D-000123 --establishment C-BOS"""
    registered = parsed(day, registered_on, "--registered-on")
    with work(ctx) as session:
        donors.add_donor(
            session, donor_code=code, establishment=establishment, registered_on=registered, actor=ctx.obj.actor
        )
    say(f"Donor {code} added.")


@donor_app.command("show")
def donor_show(ctx: typer.Context, code: str, fmt: FormatOption = OutputFormat.table) -> None:
    """Show a donor with deferrals and every donation. Example: plasmatrace donor show D-000123"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_donor(session, code, policy=ctx.obj.policy)
    print_document(sections.donor_document(trace), trace, fmt)


@donor_app.command("list")
def donor_list(
    ctx: typer.Context,
    establishment: Annotated[str | None, typer.Option("--establishment", "-e")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 200,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List donors with their number of donations. Example: plasmatrace donor list --establishment C-BOS"""
    with work(ctx, readonly=True) as session:
        columns, rows = listings.list_donors(session, establishment=establishment, limit=limit)
    print_rows(columns, rows, fmt, title="Donors")


@donor_app.command("defer")
def donor_defer(
    ctx: typer.Context,
    code: str,
    reason: ReasonOption,
    starts: Annotated[
        str | None, typer.Option("--from", help="First day of the deferral (default today at the donor's centre).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="First day the donor may donate again; none = permanent.")
    ] = None,
) -> None:
    """Defer a donor; without --until the deferral is permanent.
    Example: plasmatrace donor defer D-000123 --reason "travel" --from 2026-03-01 --until 2026-09-01"""
    start = parsed(day, starts, "--from")  # default: today at the donor's centre
    end = parsed(day, until, "--until")
    with work(ctx) as session:
        row = donors.defer_donor(
            session, donor_code=code, reason=reason, starts_on=start, ends_on=end, actor=ctx.obj.actor
        )
    say(
        f"Donor {code} deferred from {row.starts_on} "
        + (f"until {end}" if end else "permanently")
        + f" (deferral #{row.sequence})."
    )


@donor_app.command("lift")
def donor_lift(
    ctx: typer.Context,
    code: str,
    deferral: Annotated[int, typer.Option("--deferral", help="Deferral number, as shown by donor show.")],
    reason: ReasonOption,
    on: Annotated[str | None, typer.Option("--on", help="Day it ends (default today at the donor's centre).")] = None,
    sign: SignOption = False,
    meaning: MeaningOption = SignatureMeaning.APPROVED,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Lift a temporary deferral early, with a reason (approvers). Example: plasmatrace donor lift D-000123 --deferral 1 --reason "cleared by physician" --sign"""
    lifted = parsed(day, on, "--on")  # default: today at the donor's centre
    with signed_work(
        ctx,
        role=Role.APPROVER,
        sign=sign,
        password_stdin=password_stdin,
        meaning=meaning,
        kind="deferral",
        key=f"{code}#{deferral}",
    ) as (session, signing):
        row = donors.lift_deferral(
            session, donor_code=code, sequence=deferral, lifted_on=lifted, reason=reason, actor=ctx.obj.actor
        )
    say(f"Deferral #{deferral} of donor {code} lifted on {row.lifted_on}.{signing.note}")


# --- donations and results -------------------------------------------------------------------------------------


@donation_app.command("add")
def donation_add(
    ctx: typer.Context,
    unit: str,
    donor: Annotated[str, typer.Option("--donor", help="Donor code.")],
    collected_at: Annotated[str, typer.Option("--collected-at", help="ISO 8601; UTC when no offset.")],
    volume_ml: Annotated[int, typer.Option("--volume-ml", help="Volume in whole millilitres.")],
    establishment: Annotated[str | None, typer.Option("--establishment", "-e", help="Default: the donor's.")] = None,
    kind: Annotated[PlasmaKind, typer.Option("--kind", help="source or recovered.")] = PlasmaKind.SOURCE,
    frozen_at: Annotated[str | None, typer.Option("--frozen-at")] = None,
) -> None:
    """Record a plasma unit (any ISBT 128 printed form, Codabar or local number).
    Example: plasmatrace donation add "=A99992612345600" --donor D-000123 --collected-at 2026-03-01T09:30Z --volume-ml 780"""
    collected = parsed(parse_timestamp, collected_at, "--collected-at")
    frozen = parsed(when, frozen_at, "--frozen-at")
    with work(ctx) as session:
        row = units.add_donation(
            session,
            unit_number=unit,
            donor_code=donor,
            collected_at=collected,
            volume_ml=volume_ml,
            establishment=establishment,
            plasma_kind=kind,
            frozen_at=frozen,
            actor=ctx.obj.actor,
        )
        number, scheme = row.unit_number, row.scheme.value
    say(f"Unit {number} ({scheme}) added for donor {donor}.")


@donation_app.command("show")
def donation_show(ctx: typer.Context, unit: str, fmt: FormatOption = OutputFormat.table) -> None:
    """Show a unit with every result version, its pool, lots and shipments. Example: plasmatrace donation show A999926123456"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_unit(session, unit)
    print_document(sections.unit_document(trace), trace, fmt)


@donation_app.command("list")
def donation_list(
    ctx: typer.Context,
    donor: Annotated[str | None, typer.Option("--donor")] = None,
    status: Annotated[UnitStatus | None, typer.Option("--status", help="Only units in this status.")] = None,
    pool: Annotated[str | None, typer.Option("--pool")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 200,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List units, newest first. Example: plasmatrace donation list --status interdicted"""
    with work(ctx, readonly=True) as session:
        columns, rows = listings.list_donations(
            session, donor=donor, status=status.value if status else None, pool=pool, limit=limit
        )
    print_rows(columns, rows, fmt, title="Donations")


@donation_app.command("correct")
def donation_correct(
    ctx: typer.Context,
    unit: str,
    assignments: Annotated[
        list[str],
        typer.Option("--set", help="FIELD=VALUE: collected_at, frozen_at, volume_ml, plasma_kind, establishment."),
    ],
    reason: ReasonOption,
    deviation: Annotated[
        str | None, typer.Option("--deviation", help="Deviation reference; needed for a unit in a closed pool.")
    ] = None,
) -> None:
    """Correct recorded fields; the old values stay readable in the audit trail. A unit in a closed or released
    pool needs a deviation reference, which then shows on the pool and every lot downstream.
    Example: plasmatrace donation correct A999926123456 --set volume_ml=760 --reason "scale misread\""""
    changes = parsed(parse_assignments, assignments, "--set")
    with work(ctx) as session:
        row = units.correct_donation(
            session, unit_number=unit, changes=changes, reason=reason, actor=ctx.obj.actor, deviation=deviation
        )
        number, version = row.unit_number, row.version
    say(f"Unit {number} corrected (record version {version}).")


@donation_app.command("discard")
def donation_discard(ctx: typer.Context, unit: str, reason: ReasonOption) -> None:
    """Mark a unit destroyed. Example: plasmatrace donation discard A999926123456 --reason "bag leaked\""""
    with work(ctx) as session:
        number = units.discard_donation(session, unit_number=unit, reason=reason, actor=ctx.obj.actor).unit_number
    say(f"Unit {number} discarded.")


@result_app.command("add")
def result_add(
    ctx: typer.Context,
    unit: str,
    marker: Annotated[
        str,
        typer.Option(
            "--marker", help="hbsag, anti-hiv, anti-hcv, hiv-rna, hcv-rna, hbv-dna, hav-rna, b19-dna, syphilis."
        ),
    ],
    result: Annotated[str, typer.Option("--result", help="nonreactive (NR), reactive (R), invalid.")],
    tested_at: Annotated[str | None, typer.Option("--tested-at", help="Default now.")] = None,
    method: Annotated[TestMethod | None, typer.Option("--method")] = None,
    lab: Annotated[str | None, typer.Option("--lab", help="Testing establishment code.")] = None,
    value: Annotated[str | None, typer.Option("--value")] = None,
    value_unit: Annotated[str | None, typer.Option("--unit", help="Unit of --value, e.g. IU/mL.")] = None,
) -> None:
    """Record a screening result; a reactive one rejects the unit, defers the donor and interdicts.
    Example: plasmatrace result add A999926123456 --marker hiv-rna --result NR --method nat"""
    parsed_marker, parsed_result = parsed(parse_marker, marker), parsed(parse_result, result)
    tested = parsed(when, tested_at, "--tested-at") or datetime.now(UTC)
    number = parsed(parse_float, value, "--value") if value is not None else None
    with work(ctx) as session:
        outcome = units.add_result(
            session,
            unit_number=unit,
            marker=parsed_marker,
            result=parsed_result,
            tested_at=tested,
            method=method,
            lab=lab,
            value=number,
            value_unit=value_unit,
            actor=ctx.obj.actor,
            policy=ctx.obj.policy,
        )
        version = outcome.result.version
    say(f"Unit {outcome.unit_number}: {parsed_marker.value} {parsed_result.value} recorded (version {version}).")
    if outcome.rejected:
        err.print(f"[bold yellow]Unit {escape(outcome.unit_number)} rejected.[/]")
    if outcome.deferred:
        err.print(f"[bold yellow]Donor {escape(outcome.donor_code)} deferred permanently.[/]")
    if outcome.interdicted:
        err.print(
            f"[bold yellow]Interdicted {len(outcome.interdicted)} unit(s) in the look-back window:[/] "
            + escape(", ".join(outcome.interdicted))
        )
    if outcome.still_pooled:
        err.print(f"[bold red]Unit {escape(outcome.unit_number)} is already in pool {escape(outcome.still_pooled)}.[/]")
    if outcome.pooled_in_window:
        err.print(
            "[bold red]Pooled units in the look-back window:[/] "
            + escape(
                ", ".join(f"{u} (pool {p})" for u, p in outcome.pooled_in_window)
                + f"\nTrace them: plasmatrace trace donor {outcome.donor_code}"
            )
        )
    if outcome.case is not None:
        say_case(outcome.case)
