"""pool: build, close, test, release and inspect fractionation pools."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
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
    parsed,
    pool_app,
    say,
    signed_work,
    when,
    work,
)
from cli.output import (
    print_document,
    print_rows,
)
from traceability.errors import (
    ExitCode,
)
from traceability.identity import Role
from traceability.models import (
    PoolStatus,
    SignatureMeaning,
)
from traceability.parsing import parse_float, parse_marker, parse_result
from traceability.queries import lineage, listings
from traceability.reports import sections
from traceability.services import pools


@pool_app.command("create")
def pool_create(
    ctx: typer.Context,
    pool: str,
    product: Annotated[str, typer.Option("--product", help="A product of the policy: ivig, albumin, anti-d.")],
) -> None:
    """Open a new pool for a product. Example: plasmatrace pool create P-0042 --product ivig"""
    with work(ctx) as session:
        pools.create_pool(session, pool_number=pool, product=product, actor=ctx.obj.actor, policy=ctx.obj.policy)
    say(f"Pool {pool} created for {product}.")


@pool_app.command("add")
def pool_add(
    ctx: typer.Context,
    pool: str,
    unit_numbers: Annotated[list[str] | None, typer.Argument(help="Unit numbers.", show_default=False)] = None,
    file: Annotated[
        Path | None, typer.Option("--file", exists=True, dir_okay=False, help="One unit number per line.")
    ] = None,
) -> None:
    """Add eligible units to an open pool, all or none. Example: plasmatrace pool add P-0042 --file units.txt"""
    numbers = list(unit_numbers or [])
    if file:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            line = file.read_bytes()[: error.start].count(b"\n") + 1
            raise fail(
                f"{file}:{line}: not UTF-8 (byte 0x{error.object[error.start]:02x}); save the list as UTF-8.",
                ExitCode.INVALID_INPUT,
            ) from None
        except OSError as error:
            raise fail(f"Cannot read {file}: {error.strerror}.", ExitCode.INVALID_INPUT) from None
        numbers += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    with work(ctx) as session:
        added = pools.add_units(
            session, pool_number=pool, unit_numbers=numbers, actor=ctx.obj.actor, policy=ctx.obj.policy
        )
    say(f"{added:,} units added to pool {pool}.")


@pool_app.command("remove")
def pool_remove(
    ctx: typer.Context,
    pool: str,
    unit_numbers: Annotated[list[str], typer.Argument(help="Unit numbers.", show_default=False)],
    reason: ReasonOption,
) -> None:
    """Take units back out of an open pool, with a reason. Example: plasmatrace pool remove P-0042 A999926123456 --reason "HBsAg reactive after allocation\""""
    with work(ctx) as session:
        removed = pools.remove_units(
            session,
            pool_number=pool,
            unit_numbers=unit_numbers,
            reason=reason,
            actor=ctx.obj.actor,
            policy=ctx.obj.policy,
        )
    say(f"{removed:,} unit(s) removed from pool {pool}.")


@pool_app.command("close")
def pool_close(ctx: typer.Context, pool: str) -> None:
    """Close a pool: at least min_donors distinct donors and every member still eligible. Example: plasmatrace pool close P-0042"""
    with work(ctx) as session:
        _, composition = pools.close_pool(session, pool_number=pool, actor=ctx.obj.actor, policy=ctx.obj.policy)
    say(
        f"Pool {pool} closed: {composition.donor_count:,} distinct donors, {composition.donation_count:,} units, "
        f"{composition.volume_ml / 1000:,.1f} L."
    )


@pool_app.command("test")
def pool_test(
    ctx: typer.Context,
    pool: str,
    marker: Annotated[str, typer.Option("--marker")],
    result: Annotated[str, typer.Option("--result")],
    value: Annotated[str | None, typer.Option("--value")] = None,
    value_unit: Annotated[str | None, typer.Option("--unit", help="e.g. IU/mL")] = None,
    tested_at: Annotated[str | None, typer.Option("--tested-at")] = None,
) -> None:
    """Record a manufacturing-pool test. Example: plasmatrace pool test P-0042 --marker b19-dna --result R --value 120 --unit IU/mL"""
    parsed_marker, parsed_result = parsed(parse_marker, marker), parsed(parse_result, result)
    number = parsed(parse_float, value, "--value") if value is not None else None
    tested = parsed(when, tested_at, "--tested-at") or datetime.now(UTC)
    with work(ctx) as session:
        outcome = pools.test_pool(
            session,
            pool_number=pool,
            marker=parsed_marker,
            result=parsed_result,
            tested_at=tested,
            value=number,
            value_unit=value_unit,
            actor=ctx.obj.actor,
            policy=ctx.obj.policy,
        )
    say(f"Pool {pool}: {parsed_marker.value} {parsed_result.value} recorded (version {outcome.test.version}).")
    if outcome.problem:
        say(f"Pool {pool}: {outcome.problem}.")
    if outcome.quarantined:
        say(f"Pool {pool} quarantined.")
    down = outcome.downstream
    if down.held:
        say(f"Lots held (quarantined): {', '.join(down.held)}.")
    if outcome.problem and down.affected:
        say(f"Lots downstream, not to be released or shipped: {', '.join(down.affected)}.")
    if down.consignees:
        say(f"Consignees that received lots downstream: {', '.join(down.consignees)}.")


@pool_app.command("release")
def pool_release(
    ctx: typer.Context,
    pool: str,
    sign: SignOption = False,
    meaning: MeaningOption = SignatureMeaning.APPROVED,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Release a closed pool whose required pool tests pass (approvers; not who recorded its tests).
    Example: plasmatrace pool release P-0042 --sign --meaning approved"""
    with signed_work(
        ctx, role=Role.APPROVER, sign=sign, password_stdin=password_stdin, meaning=meaning, kind="pool", key=pool
    ) as (session, signing):
        pools.release_pool(session, pool_number=pool, actor=ctx.obj.actor, policy=ctx.obj.policy)
    say(f"Pool {pool} released.{signing.note}")


@pool_app.command("show")
def pool_show(
    ctx: typer.Context,
    pool: str,
    members: Annotated[bool, typer.Option("--members")] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show a pool: composition, tests, steps, lots. Example: plasmatrace pool show P-0042"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_pool(session, pool, members=members, policy=ctx.obj.policy)
    print_document(sections.pool_document(trace), trace, fmt)


@pool_app.command("list")
def pool_list(
    ctx: typer.Context,
    status: Annotated[PoolStatus | None, typer.Option("--status")] = None,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """List pools with distinct donors and volume. Example: plasmatrace pool list --status open"""
    with work(ctx, readonly=True) as session:
        columns, rows = listings.list_pools(session, status=status.value if status else None)
    print_rows(columns, rows, fmt, title="Pools")
