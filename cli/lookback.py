"""lookback: cases opened from post-donation information, their tasks and decisions."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.core import (
    FormatOption,
    MeaningOption,
    OutputFormat,
    PasswordStdinOption,
    ReasonOption,
    SignOption,
    fail,
    lookback_app,
    say,
    signed_work,
    work,
)
from cli.output import (
    print_document,
    print_rows,
    say_case,
)
from traceability.errors import (
    ExitCode,
)
from traceability.identity import Role
from traceability.models import (
    CaseTrigger,
    Decision,
    SignatureMeaning,
)
from traceability.queries import casework, lineage
from traceability.reports import sections
from traceability.services import lookback


@lookback_app.command("open")
def lookback_open(
    ctx: typer.Context,
    donor: str,
    reason: ReasonOption,
    trigger: Annotated[
        CaseTrigger, typer.Option("--trigger", help="What opened it: reactive-test, pdi, recipient-infection, other.")
    ] = CaseTrigger.OTHER,
) -> None:
    """Open a case (investigators): interdict the donor's units in inventory in the window, hold every lot made
    from the pooled ones, add the tasks with their due dates. When the donor has an open case, the information
    joins it. Example: plasmatrace lookback open D-000123 --trigger pdi --reason "PDI: later HCV RNA reactive at
    another centre\""""
    with work(ctx, role=Role.INVESTIGATOR) as session:
        opened = lookback.open_case(
            session, donor_code=donor, reason=reason, actor=ctx.obj.actor, policy=ctx.obj.policy, trigger=trigger
        )
    if opened.joined:
        say(f"Donor {opened.donor_code} already has an open look-back case, {opened.case_number}; this joins it.")
    say_case(opened)


@lookback_app.command("show")
def lookback_show(ctx: typer.Context, case: str, fmt: FormatOption = OutputFormat.table) -> None:
    """Show a case: each implicated unit, its pool, every lot downstream and every consignee. Example: plasmatrace lookback show LB-2026-0001"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_case(session, case, policy=ctx.obj.policy)
    print_document(sections.case_document(trace), trace, fmt)


@lookback_app.command("list")
def lookback_list(
    ctx: typer.Context,
    only_open: Annotated[bool, typer.Option("--open", help="Only the open cases.")] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List look-back cases. Example: plasmatrace lookback list --open"""
    with work(ctx, readonly=True) as session:
        columns, rows = lineage.list_cases(session)
    if only_open:
        rows = [r for r in rows if r[1] == "open"]
    print_rows(columns, rows, fmt, title="Look-back cases")


@lookback_app.command("due")
def lookback_due(
    ctx: typer.Context,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only the tasks past their due day.")] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """What is due in open cases, oldest due day first, with the days late (calendar days, the case's local day).
    Example: plasmatrace lookback due --overdue"""
    with work(ctx, readonly=True) as session:
        lines = casework.due_tasks(session, overdue=overdue)
    columns = ["case", "task", "kind", "lot", "consignee", "due on", "days late"]
    rows = [
        [t.case_number, t.task, t.kind, t.lot_number or "", t.consignee or "", t.due_on, t.days_late] for t in lines
    ]
    print_rows(columns, rows, fmt, title="Overdue look-back tasks" if overdue else "Look-back tasks due")


@lookback_app.command("task")
def lookback_task(
    ctx: typer.Context,
    case: str,
    task: Annotated[int, typer.Argument(help="The task's number (plasmatrace lookback show CASE).")],
    done: Annotated[bool, typer.Option("--done", help="The task is done (with --note).")] = False,
    note: Annotated[str | None, typer.Option("--note", help="What was done, when, with whom.")] = None,
    waive: Annotated[bool, typer.Option("--waive", help="The task is waived (with --reason).")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why it is waived.")] = None,
) -> None:
    """Record a task of a case as done with a note, or waived with a reason (investigators).
    Example: plasmatrace lookback task LB-2026-0001 2 --done --note "quarantine requested by phone, 2026-06-03\""""
    if done == waive:
        raise fail("Give either --done --note TEXT or --waive --reason TEXT.", ExitCode.INVALID_INPUT)
    if done and (note is None or reason is not None):
        raise fail("--done takes --note TEXT (not --reason).", ExitCode.INVALID_INPUT)
    if waive and (reason is None or note is not None):
        raise fail("--waive takes --reason TEXT (not --note).", ExitCode.INVALID_INPUT)
    with work(ctx, role=Role.INVESTIGATOR) as session:
        row = lookback.finish_task(
            session, case_number=case, seq=task, actor=ctx.obj.actor, note=note, waive=reason if waive else None
        )
        state = row.state.value
    say(f"Task {task} of look-back case {case}: {state}.")


@lookback_app.command("assess")
def lookback_assess(
    ctx: typer.Context,
    case: str,
    lot: str,
    decision: Annotated[Decision, typer.Option("--decision", help="no-action, withdraw or recall.")],
    reason: ReasonOption,
) -> None:
    """Record the assessment of an implicated lot (investigators); no-action lifts the case's hold on it.
    Example: plasmatrace lookback assess LB-2026-0001 IVG-2605 --decision no-action --reason "within validated
    clearance: 11.2 log enveloped\""""
    with work(ctx, role=Role.INVESTIGATOR) as session:
        done = lookback.assess_lot(
            session, case_number=case, lot_number=lot, decision=decision, reason=reason, actor=ctx.obj.actor
        )
        worst = casework.lot_clearance_text(session, done.lot_number, ctx.obj.policy)
    say(f"Lot {done.lot_number} assessed {done.decision.value} in {case} (clearance on the worst path: {worst}).")
    if done.lifted:
        say(f"The hold of {case} on lot {done.lot_number} is lifted.")
    for line in done.still_held:
        say(f"Still held: {line}.")


@lookback_app.command("close")
def lookback_close(
    ctx: typer.Context,
    case: str,
    reason: Annotated[str, typer.Option("--reason", help="The conclusion.")],
    sign: SignOption = False,
    meaning: MeaningOption = SignatureMeaning.APPROVED,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Close a case with its conclusion once every task is done or waived (investigators; with separation of
    duties, not the person who opened it). Example: plasmatrace lookback close LB-2026-0001 --reason "consignees notified; lots within validated clearance" --sign"""
    with signed_work(
        ctx,
        role=Role.INVESTIGATOR,
        sign=sign,
        password_stdin=password_stdin,
        meaning=meaning,
        kind="lookback_case",
        key=case,
    ) as (session, signing):
        lookback.close_case(session, case_number=case, reason=reason, actor=ctx.obj.actor, policy=ctx.obj.policy)
    say(f"Look-back case {case} closed.{signing.note}")
