"""policy, audit and signature: what is in force, and the record of who did what."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.core import (
    FormatOption,
    OutputFormat,
    audit_app,
    err,
    fail,
    policy_app,
    say,
    shown,
    signature_app,
    work,
)
from cli.output import (
    print_rows,
)
from traceability import audit
from traceability.errors import (
    ExitCode,
    InvalidInput,
    TraceabilityError,
)
from traceability.queries import listings
from traceability.queries.signatures import signatures_for
from traceability.reports import writers
from traceability.rules import Policy, policy_digest, policy_keys


@policy_app.command("show")
def policy_show(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """Show every key in force (defaults plus the --policy file) with its meaning, the law's limit and the policy's
    SHA-256, which every release records. Example: plasmatrace policy show --format json"""
    policy: Policy = ctx.obj.policy
    if fmt == OutputFormat.json:
        writers.write_json({"sha256": policy_digest(policy), **policy.as_dict()}, sys.stdout)
        return
    rows = [[k.name, k.value, k.meaning, k.law, k.source] for k in policy_keys(policy)]
    print_rows(["key", "value", "meaning", "limit of the law", "source"], rows, fmt, title="Policy")
    if fmt == OutputFormat.table:
        say(f"Policy SHA-256: {policy_digest(policy)}")


# --- audit -----------------------------------------------------------------------------------------------------


@audit_app.command("log")
def audit_log(
    ctx: typer.Context,
    entity: Annotated[
        str | None, typer.Option("--entity", help="donor, donation, pool, lot, step, import, ...")
    ] = None,
    key: Annotated[str | None, typer.Option("--key", help="Business key, e.g. a unit number.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 500,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show audit events, oldest first: who, what, when, old and new values, reason.
    Example: plasmatrace audit log --entity donation --key A999926123456"""
    with work(ctx, readonly=True) as session:
        columns, rows = listings.audit_log(session, entity=entity, key=key, limit=limit)
    print_rows(columns, rows, fmt, title="Audit trail")


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    checkpoint: Annotated[str | None, typer.Option("--checkpoint", help="A token from `audit checkpoint`.")] = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option("--checkpoints", help="A file written by `audit checkpoint --to FILE`: every line is checked."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="A token from `audit checkpoint`: verify only what changed after it.")
    ] = None,
) -> None:
    """Recompute the hash chain and name the first event that was changed, removed or inserted; then prove every
    record of the regulated tables against the trail (a row changed, removed or inserted behind its back is named)
    and name the records that have no audit event (an empty or rebuilt trail).
    Example: plasmatrace audit verify --checkpoints /mnt/worm/cp"""
    from traceability import audit_checkpoints

    try:
        kept = audit_checkpoints.read_checkpoints(checkpoints) if checkpoints is not None else []
    except TraceabilityError as error:
        raise fail(error) from None
    if checkpoints is not None and not kept:
        raise fail(InvalidInput(f"Checkpoint file {checkpoints} holds no checkpoint."))
    with work(ctx, readonly=True) as session:
        result = audit.verify(session, checkpoint=checkpoint, since=since)
        problems = [] if result.ok else [result.problem or ""]
        if result.ok and kept:
            problems += audit_checkpoints.checkpoint_problems(session, kept, path=checkpoints or Path())
        unproven = [] if since else audit_checkpoints.records_without_events(session)
    problems += [u.describe() for u in unproven]
    if problems:
        for problem in problems:
            err.print(f"[bold red]Audit trail broken:[/] {escape(shown(problem))}")
        if result.records is not None:
            for difference in result.records.differences:
                err.print(f"  {escape(difference.render())}")
            if result.records.more:
                err.print(f"  ... and {result.records.more:,} more")
        raise typer.Exit(code=ExitCode.RULE_VIOLATION)
    against = f"; {len(kept):,} checkpoints of {checkpoints} match" if kept else ""
    proven = result.records
    rows = f"; {proven.rows:,} records in {proven.tables} tables match it" if proven else ""
    scope = f" since {since.split(':')[0]}" if since else ""
    say(f"Audit trail intact{scope}: {result.events:,} events, head {result.checkpoint}{rows}{against}.")


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Append the head as one line to this file (keep it elsewhere: write-once media)."),
    ] = None,
) -> None:
    """Print the chain head as one token (SEQ:SHA256) to keep outside the database; with --to, append it to a file.
    Example: plasmatrace audit checkpoint --to /mnt/worm/plasmatrace.checkpoints"""
    from traceability import audit_checkpoints

    with work(ctx, readonly=True) as session:
        seq, head_hash = audit_checkpoints.head(session)
    if to is not None:
        try:
            line = audit_checkpoints.append_checkpoint(to, seq=seq, head_hash=head_hash)
        except TraceabilityError as error:
            raise fail(error) from None
        say(f"Checkpoint {line.token} taken {line.taken_at} appended to {to} (line {line.line}).")
    print(f"{seq}:{head_hash}")


# --- signatures ------------------------------------------------------------------------------------------------


@signature_app.command("list")
def signature_list(
    ctx: typer.Context,
    key: Annotated[str | None, typer.Option("--key", help="Only the signatures of this record.")] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List electronic signatures, flagging records changed since they were signed.
    Example: plasmatrace signature list --key IVG-2605"""
    with work(ctx, readonly=True) as session:
        lines = signatures_for(session, key)
    columns = ["entity_type", "entity_key", "full_name", "login", "meaning", "signed_at", "changed_since_signing"]
    rows = [
        [s.entity_type, s.entity_key, s.full_name, s.login, s.meaning, s.signed_at, s.changed_since_signing]
        for s in lines
    ]
    print_rows(columns, rows, fmt, title="Signatures")
