"""recall: recalls of lots, notices, returns and drills."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from cli.core import (
    FormatOption,
    OutputFormat,
    ReasonOption,
    day,
    fail,
    parsed,
    recall_app,
    say,
    work,
)
from cli.output import (
    print_document,
    print_rows,
)
from traceability import audit
from traceability.errors import (
    ExitCode,
)
from traceability.identity import Role
from traceability.reports import sections, writers


class RecallClassChoice(StrEnum):
    I = "I"  # noqa: E741
    II = "II"
    III = "III"


class DrillFormat(StrEnum):
    table = "table"
    json = "json"


@recall_app.command("open")
def recall_open(
    ctx: typer.Context,
    lot: str,
    recall_class: Annotated[
        RecallClassChoice,
        typer.Option("--class", help="I: serious harm probable; II: temporary or remote; III: unlikely."),
    ],
    reason: ReasonOption,
) -> None:
    """Open a recall of a lot and every lot made from it; lists every consignee they reached (investigators).
    Example: plasmatrace recall open IVG-2605 --class II --reason "donor HCV RNA reactive; pool P-0042 implicated\""""
    from traceability.models import RecallClass
    from traceability.services import recalls

    with work(ctx, role=Role.INVESTIGATOR) as session:
        recall, listed = recalls.open_recall(
            session, lot_number=lot, recall_class=RecallClass(recall_class.value), reason=reason, actor=ctx.obj.actor
        )
        number = recall.recall_number
        count, shipped = len(listed), sum(r.shipped for r in listed)
    say(
        f"Recall {number} (class {recall_class.value}) opened for lot {lot}: {count} consignee(s), {shipped:,} shipped."
    )
    say(f"Next: plasmatrace recall show {number}")


@recall_app.command("show")
def recall_show(ctx: typer.Context, recall: str, fmt: FormatOption = OutputFormat.table) -> None:
    """Show a recall: every consignee with address, lots, quantity shipped, notice, acknowledgement and return, and
    its effectiveness. Example: plasmatrace recall show RC-2026-0001"""
    from traceability.queries.recalls import recall_view

    with work(ctx, readonly=True) as session:
        view = recall_view(session, recall)
    print_document(sections.recall_document(view), view, fmt)


@recall_app.command("list")
def recall_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List recalls. Example: plasmatrace recall list"""
    from traceability.queries.recalls import list_recalls

    with work(ctx, readonly=True) as session:
        columns, rows = list_recalls(session)
    print_rows(columns, rows, fmt, title="Recalls")


@recall_app.command("notify")
def recall_notify(
    ctx: typer.Context,
    recall: str,
    consignee: str,
    on: Annotated[str | None, typer.Option("--on", help="YYYY-MM-DD the notice went out, default today.")] = None,
) -> None:
    """Record that a consignee was notified of a recall. Example: plasmatrace recall notify RC-2026-0001 H-STMARY --on 2026-06-03"""
    from traceability.services import recalls

    day_on = parsed(day, on, "--on")
    with work(ctx, role=Role.INVESTIGATOR) as session:
        row = recalls.notify(session, recall_number=recall, consignee_code=consignee, actor=ctx.obj.actor, on=day_on)
        notified = row.notified_on
    say(f"Recall {recall}: {consignee} notified on {notified}.")


@recall_app.command("ack")
def recall_ack(
    ctx: typer.Context,
    recall: str,
    consignee: str,
    returned: Annotated[
        int | None, typer.Option("--returned", help="Quantity returned so far, in the lots' unit (at most shipped).")
    ] = None,
) -> None:
    """Record a consignee's acknowledgement of a recall and what it returned. Example: plasmatrace recall ack RC-2026-0001 H-STMARY --returned 12"""
    from traceability.services import recalls

    with work(ctx, role=Role.INVESTIGATOR) as session:
        row = recalls.acknowledge(
            session, recall_number=recall, consignee_code=consignee, actor=ctx.obj.actor, returned=returned
        )
        back, shipped = row.returned, row.shipped
    say(
        f"Recall {recall}: {consignee} acknowledged"
        + (f"; {back:,} of {shipped:,} returned." if back is not None else ".")
    )


@recall_app.command("close")
def recall_close(ctx: typer.Context, recall: str) -> None:
    """Close a recall once every consignee was notified and acknowledged. Example: plasmatrace recall close RC-2026-0001"""
    from traceability.queries.recalls import recall_view
    from traceability.services import recalls

    with work(ctx, role=Role.INVESTIGATOR) as session:
        recalls.close_recall(session, recall_number=recall, actor=ctx.obj.actor)
        e = recall_view(session, recall).effectiveness
    say(
        f"Recall {recall} closed: acknowledged/notified {e.acknowledged_of_notified}, "
        f"returned/shipped {e.returned_of_shipped}."
    )


@recall_app.command("drill")
def recall_drill(
    ctx: typer.Context,
    donor: Annotated[
        str | None, typer.Option("--donor", help="A donor code: what a look-back case would touch.")
    ] = None,
    lot: Annotated[str | None, typer.Option("--lot", help="A lot number: what a recall would touch.")] = None,
    fmt: Annotated[DrillFormat, typer.Option("--format", "-f", help="table or json.")] = DrillFormat.table,
) -> None:
    """A mock recall: what a case or recall would touch (units to stop, pools, lots, consignees, quantities shipped
    and in stock), changing nothing, timed; the drill is kept for inspectors (recall drills).
    Example: plasmatrace recall drill --donor D-000123"""
    from traceability.queries import drill
    from traceability.services import recalls

    if (donor is None) == (lot is None):
        raise fail("Give exactly one of --donor CODE or --lot LOT.", ExitCode.INVALID_INPUT)
    with work(ctx, role=Role.INVESTIGATOR) as session:
        if donor is not None:
            answer = drill.drill_donor(session, donor, policy=ctx.obj.policy)
        else:
            answer = drill.drill_lot(session, lot or "")
        checkpoint = audit.head_checkpoint(session)
        kept = recalls.record_drill(session, answer=answer, checkpoint=checkpoint, actor=ctx.obj.actor)
        kept_id = kept.id
    if fmt == DrillFormat.json:
        writers.write_json({**answer.as_json(), "drill": kept_id, "audit_checkpoint": checkpoint}, sys.stdout)
        return
    print_document(sections.drill_document(answer), answer, OutputFormat.table)
    say(f"Drill {kept_id} kept ({answer.duration_ms:.1f} ms, read at audit checkpoint {checkpoint}); nothing changed.")


@recall_app.command("drills")
def recall_drills(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List kept recall drills: when, by whom, what was asked, how long the answer took, its SHA-256.
    Example: plasmatrace recall drills"""
    from traceability.queries.recalls import list_drills

    with work(ctx, readonly=True) as session:
        columns, rows = list_drills(session)
    print_rows(columns, rows, fmt, title="Recall drills")
