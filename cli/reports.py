"""report and export: lineage documents for auditors and other systems."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.core import (
    AsOfOption,
    as_of_time,
    err,
    export_app,
    fail,
    parsed,
    report_app,
    say,
    when,
    work,
)
from cli.output import (
    check_output,
    progress,
)
from traceability.errors import (
    ExitCode,
)


class ReportFormat(StrEnum):
    html = "html"
    pdf = "pdf"
    json = "json"
    csv = "csv"


ReportFormatOption = Annotated[ReportFormat, typer.Option("--format", "-f", help="html, pdf, json or csv.")]
OutputOption = Annotated[
    str | None,
    typer.Option(
        "--output", "-o", help="File to write (default report.FORMAT); - for stdout (not pdf).", show_default=False
    ),
]


def _report(
    ctx: typer.Context, kind: str, key: str, fmt: ReportFormat, output: str | None, as_of: str | None = None
) -> None:
    import os
    import tempfile

    from traceability.reports.lineage_report import build_report, manifest_path, write_report

    to_stdout = output == "-"
    if to_stdout and fmt == ReportFormat.pdf:
        raise fail("A PDF report needs a file: --output FILE.pdf (--output - is for html, json and csv).", 5)
    target = Path(output or f"report.{fmt.value}")
    if not to_stdout:
        check_output(ctx, target, "Output file")
    with progress(f"Building the {kind} report"), work(ctx, readonly=True) as session:
        report = build_report(session, kind, key, policy=ctx.obj.policy, as_of=as_of_time(session, as_of))
    folder = Path(tempfile.gettempdir()) if to_stdout else target.resolve().parent
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    os.close(handle)
    temp = Path(temp_name)
    try:
        with progress(f"Writing the {kind} report ({fmt.value})") as hook:

            def advance(done: int, total: int) -> None:
                hook.total(total)
                hook(done)

            # Written beside the target and renamed over it: a failed write leaves the previous file whole.
            write_report(report, fmt.value, temp, progress=advance)
        if to_stdout:
            sys.stdout.write(temp.read_text(encoding="utf-8"))
            sys.stdout.flush()
        else:
            if manifest_path(temp).exists():  # a CSV report's manifest travels beside it
                os.replace(manifest_path(temp), manifest_path(target))
            os.replace(temp, target)
    except OSError as error:
        raise fail(
            f"Cannot write {target}: {error.strerror or error}; the previous file, if any, is unchanged."
        ) from None
    finally:
        temp.unlink(missing_ok=True)
        manifest_path(temp).unlink(missing_ok=True)
    where = "stdout" if to_stdout else str(target)
    recorded = f", as recorded at {report.as_of}" if report.as_of else ""
    say(
        f"Report of {kind} {key}{recorded} written to {where} ({fmt.value}); "
        f"audit checkpoint {report.audit_checkpoint}."
    )
    if not report.audit_chain_ok:
        err.print(f"[bold red]Warning: the audit trail is broken:[/] {escape(report.audit_problem or '')}")


@report_app.command("lot")
def report_lot(
    ctx: typer.Context,
    lot: str,
    fmt: ReportFormatOption = ReportFormat.html,
    output: OutputOption = None,
    as_of: AsOfOption = None,
) -> None:
    """A lot's genealogy back to every donation and donor, with tests, steps, clearance, shipments and history.
    Example: plasmatrace report lot IVG-2605 --format pdf --output IVG-2605.pdf (as known at its release:
    --as-of 2026-05-04T09:30:00Z)"""
    _report(ctx, "lot", lot, fmt, output, as_of)


@report_app.command("pool")
def report_pool(
    ctx: typer.Context,
    pool: str,
    fmt: ReportFormatOption = ReportFormat.html,
    output: OutputOption = None,
    as_of: AsOfOption = None,
) -> None:
    """A pool's members, tests, steps, lots and shipments, with history. Example: plasmatrace report pool P-0042 --format html --output P-0042.html --as-of 2026-05-04"""
    _report(ctx, "pool", pool, fmt, output, as_of)


@report_app.command("case")
def report_case(
    ctx: typer.Context,
    case: str,
    fmt: ReportFormatOption = ReportFormat.html,
    output: OutputOption = None,
    as_of: AsOfOption = None,
) -> None:
    """A look-back case: implicated units, pools, lots, consignees and history. Example: plasmatrace report case LB-2026-0001 --format pdf --output LB-2026-0001.pdf"""
    _report(ctx, "case", case, fmt, output, as_of)


@report_app.command("recall")
def report_recall(
    ctx: typer.Context,
    recall: str,
    fmt: ReportFormatOption = ReportFormat.html,
    output: OutputOption = None,
) -> None:
    """A recall: consignees with addresses, quantities, notices, returns and effectiveness; the PDF adds one
    notification letter per consignee. Example: plasmatrace report recall RC-2026-0001 --format pdf --output RC-2026-0001.pdf"""
    _report(ctx, "recall", recall, fmt, output)


@export_app.command("epcis")
def export_epcis(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", dir_okay=False, help="File to write.")],
    lot: Annotated[str | None, typer.Option("--lot", help="A lot's lineage back to its donations.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="A pool and every lot made from it.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Everything recorded at or after this time.")] = None,
) -> None:
    """Write GS1 EPCIS 2.0 JSON-LD: pooling and lot creation as TransformationEvents, steps and pool tests as
    ObjectEvents, shipments with bizStep shipping, corrections as errorDeclarations.
    Example: plasmatrace export epcis --lot IVG-26-001 --output IVG-26-001.epcis.json"""
    from traceability.exchange import epcis

    if sum(x is not None for x in (lot, pool, since)) != 1:
        raise typer.BadParameter("give exactly one of --lot, --pool or --since")
    start = parsed(when, since, "--since")
    with work(ctx, readonly=True) as session:
        document = epcis.export_epcis(session, epcis.scope_of(session, lot_number=lot, pool_number=pool, since=start))
    try:
        output.write_text(epcis.dumps(document), encoding="utf-8")
    except OSError as error:
        raise fail(f"Cannot write {output}: {error.strerror}.", ExitCode.INVALID_INPUT) from None
    say(f"{len(document['epcisBody']['eventList']):,} EPCIS events written to {output}.")


@report_app.command("verify")
def report_verify(
    ctx: typer.Context, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A report file.")]
) -> None:
    """Check a report (html, pdf, json, or csv with its .manifest.json) against the database: its audit checkpoint
    is still in the chain and every part of its data is what the database gives now. Exit 3 names what differs.
    Example: plasmatrace report verify IVG-2605.pdf"""
    from traceability.reports.lineage_report import verify_report

    with work(ctx, readonly=True) as session:
        result = verify_report(session, file, policy=ctx.obj.policy)
    for note in result.notes:
        say(f"Note: {note}.")
    if not result.ok:
        err.print(
            f"[bold red]Report {escape(str(file))} ({result.kind} {escape(result.key)}) no longer matches the database:[/]"
        )
        for difference in result.differences:
            err.print(f"  {escape(difference)}", highlight=False)
        raise typer.Exit(code=ExitCode.RULE_VIOLATION)
    say(
        f"Report {file} ({result.kind} {result.key}, {result.fmt}) matches the database; checkpoint {result.checkpoint}."
    )
