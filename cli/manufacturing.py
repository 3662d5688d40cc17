"""step and lot: viral inactivation steps, intermediate and final lots, shipments."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated

import typer

from cli.core import (
    FormatOption,
    MeaningOption,
    OutputFormat,
    PasswordStdinOption,
    ReasonOption,
    SignOption,
    day,
    lot_app,
    parsed,
    say,
    signed_work,
    step_app,
    work,
)
from cli.output import (
    print_document,
    print_rows,
)
from traceability.identity import Role
from traceability.models import (
    LotKind,
    LotUnit,
    SignatureMeaning,
    StepMethod,
    StepOutcome,
)
from traceability.parsing import parse_assignments, parse_float, parse_timestamp
from traceability.queries import lineage, listings, lookup
from traceability.reports import sections
from traceability.services import holds, inactivation, lots


def _lrv(items: list[str]) -> dict[str, float]:
    pairs = parse_assignments(items, "--lrv")
    return {k: parse_float(v, f"--lrv {k}") for k, v in pairs.items()}


@step_app.command("add")
def step_add(
    ctx: typer.Context,
    method: Annotated[StepMethod, typer.Option("--method")],
    started_at: Annotated[str, typer.Option("--started-at")],
    ended_at: Annotated[str, typer.Option("--ended-at")],
    pool: Annotated[str | None, typer.Option("--pool")] = None,
    lot: Annotated[str | None, typer.Option("--lot")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE, e.g. temperature_c=30.")] = None,
    lrv: Annotated[list[str] | None, typer.Option("--lrv", help="enveloped=LOG10 or non-enveloped=LOG10.")] = None,
    outcome: Annotated[StepOutcome, typer.Option("--outcome")] = StepOutcome.COMPLETED,
    operator: Annotated[str | None, typer.Option("--operator", help="Default: the actor.")] = None,
) -> None:
    """Record a viral inactivation/removal step on a pool or lot.
    Example: plasmatrace step add --pool P-0042 --method solvent-detergent --started-at 2026-05-01T08:00Z --ended-at 2026-05-01T14:00Z --param tnbp_pct=0.3 --lrv enveloped=6.1"""
    start, end = parsed(parse_timestamp, started_at, "--started-at"), parsed(parse_timestamp, ended_at, "--ended-at")
    params = parsed(parse_assignments, param or [], "--param")
    claims = parsed(_lrv, lrv or [])
    with work(ctx) as session:
        recorded = inactivation.add_step(
            session,
            method=method,
            started_at=start,
            ended_at=end,
            pool_number=pool,
            lot_number=lot,
            parameters=params,
            lrv=claims,
            outcome=outcome,
            operator=operator,
            actor=ctx.obj.actor,
        )
    say(f"Step {recorded.step_key} ({method.value}, {outcome.value}) recorded.")
    if recorded.held.held:
        say(f"Lots held (quarantined) downstream: {', '.join(recorded.held.held)}.")
    if recorded.held.consignees:
        say(f"Consignees that received lots downstream: {', '.join(recorded.held.consignees)}.")


@step_app.command("close-deviation")
def step_close_deviation(ctx: typer.Context, step: str, reason: ReasonOption) -> None:
    """Close a step's deviation after QA assessment. Example: plasmatrace step close-deviation P-0042-S1 --reason "CAPA-17: within validated range\""""
    with work(ctx, role=Role.APPROVER) as session:
        closed = inactivation.close_deviation(
            session, step_key=step, reason=reason, actor=ctx.obj.actor, policy=ctx.obj.policy
        )
    say(f"Deviation of step {step} closed.")
    if closed.lifted:
        say(f"Hold lifted from lots: {', '.join(closed.lifted)}.")


_DRAW = re.compile(r"\s*([0-9]+)\s*([A-Za-z]*)\s*")


def _inputs(kind: str, items: list[str]) -> list[lots.InputSpec]:
    """POOL=QTY with L or mL (P-0042=1200L, =850000mL), LOT=QTY in the lot's unit; a malformed one exits 2."""
    specs = []
    for item in items:
        number, sep, qty = item.partition("=")
        quantity, unit = None, None
        if sep:
            match = _DRAW.fullmatch(unicodedata.normalize("NFKC", qty))
            if not match:
                example = f"{number.strip()}=1200L" if kind == "pool" else f"{number.strip()}=120"
                raise typer.BadParameter(
                    f"{item!r}: the quantity must be a whole number"
                    + (" with L or mL" if kind == "pool" else "")
                    + f", as in {example}."
                )
            quantity, unit = int(match.group(1)), match.group(2) or None
        specs.append(lots.InputSpec(kind, number.strip(), quantity, unit))
    return specs


@lot_app.command("create")
def lot_create(
    ctx: typer.Context,
    lot: str,
    product: Annotated[str, typer.Option("--product")],
    pool: Annotated[list[str] | None, typer.Option("--pool", help="POOL[=QTY]; repeat for several.")] = None,
    from_lot: Annotated[list[str] | None, typer.Option("--lot", help="LOT[=QTY]; repeat for several.")] = None,
    kind: Annotated[LotKind, typer.Option("--kind")] = LotKind.FINAL,
    quantity: Annotated[int | None, typer.Option("--quantity", help="How much the lot holds, in --unit.")] = None,
    unit: Annotated[LotUnit | None, typer.Option("--unit", help="vials, bottles, g, kg or L.")] = None,
    expires_on: Annotated[str | None, typer.Option("--expires-on", help="Expiry date, YYYY-MM-DD.")] = None,
) -> None:
    """Create a lot from released pools (volume drawn, in L or mL) and/or released lots (in their unit).
    Example: plasmatrace lot create IVG-2605 --product ivig --lot PASTE-II-7=120 --kind final --quantity 4000 --unit vials --expires-on 2029-06-30"""
    inputs = _inputs("pool", pool or []) + _inputs("lot", from_lot or [])
    expiry = parsed(day, expires_on, "--expires-on")
    with work(ctx) as session:
        lots.create_lot(
            session,
            lot_number=lot,
            product=product,
            inputs=inputs,
            kind=kind,
            actor=ctx.obj.actor,
            policy=ctx.obj.policy,
            quantity=quantity,
            unit=unit,
            expires_on=expiry,
        )
    size = f" holding {quantity:,} {unit.value}" if quantity is not None and unit is not None else ""
    say(f"Lot {lot} ({kind.value}){size} created from " + ", ".join(f"{i.kind} {i.number}" for i in inputs) + ".")


@lot_app.command("quantity")
def lot_quantity(
    ctx: typer.Context,
    lot: str,
    quantity: Annotated[int, typer.Option("--quantity", help="How much the lot holds, in --unit.")],
    unit: Annotated[LotUnit, typer.Option("--unit", help="vials, bottles, g, kg or L.")],
    reason: ReasonOption,
    expires_on: Annotated[str | None, typer.Option("--expires-on", help="Expiry date, YYYY-MM-DD.")] = None,
) -> None:
    """Record the quantity of a lot created without one (before quantities were kept), so it can ship.
    Example: plasmatrace lot quantity IVG-2401 --quantity 4000 --unit vials --expires-on 2027-01-31 --reason "batch record BR-2401\""""
    expiry = parsed(day, expires_on, "--expires-on")
    with work(ctx) as session:
        row = lots.record_quantity(
            session,
            lot_number=lot,
            quantity=quantity,
            unit=unit,
            expires_on=expiry,
            reason=reason,
            actor=ctx.obj.actor,
        )
        left = lots.lot_balance(row)
    say(f"Lot {lot}: {quantity:,} {unit.value} recorded; {left.available:,} {unit.value} left.")


@lot_app.command("release")
def lot_release(
    ctx: typer.Context,
    lot: str,
    sign: SignOption = False,
    meaning: MeaningOption = SignatureMeaning.APPROVED,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Release a lot; a final lot must meet the viral-clearance rule on every path (approvers; not who created
    the lot, recorded its steps or its pools' tests). Example: plasmatrace lot release IVG-2605 --sign"""
    with signed_work(
        ctx, role=Role.APPROVER, sign=sign, password_stdin=password_stdin, meaning=meaning, kind="lot", key=lot
    ) as (session, signing):
        lots.release_lot(session, lot_number=lot, actor=ctx.obj.actor, policy=ctx.obj.policy)
    say(f"Lot {lot} released.{signing.note}")


@lot_app.command("show")
def lot_show(
    ctx: typer.Context,
    lot: str,
    members: Annotated[bool, typer.Option("--members")] = False,
    fmt: FormatOption = OutputFormat.table,
) -> None:
    """Show a lot's genealogy, steps, clearance and shipments. Example: plasmatrace lot show IVG-2605"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_lot(session, lot, members=members, policy=ctx.obj.policy)
    print_document(sections.lot_document(trace), trace, fmt)


@lot_app.command("list")
def lot_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List lots. Example: plasmatrace lot list"""
    with work(ctx, readonly=True) as session:
        columns, rows = listings.list_lots(session)
    print_rows(columns, rows, fmt, title="Lots")


@lot_app.command("ship")
def lot_ship(
    ctx: typer.Context,
    lot: str,
    to: Annotated[str, typer.Option("--to", help="Consignee code (plasmatrace consignee add).")],
    quantity: Annotated[int, typer.Option("--quantity", help="How much, in the lot's unit.")],
    shipped_on: Annotated[str | None, typer.Option("--shipped-on", help="YYYY-MM-DD, default today.")] = None,
) -> None:
    """Record a shipment of a released lot to a consignee, within the lot's balance.
    Example: plasmatrace lot ship IVG-2605 --to H-STMARY --quantity 40 --shipped-on 2026-06-02"""
    on = parsed(day, shipped_on, "--shipped-on") or datetime.now(UTC).date()
    with work(ctx) as session:
        row = lots.ship_lot(
            session,
            lot_number=lot,
            consignee=to,
            quantity=quantity,
            shipped_on=on,
            actor=ctx.obj.actor,
            policy=ctx.obj.policy,
        )
        number, name = row.shipment_number, row.consignee
        left = lots.lot_balance(lookup.get_lot(session, lot))
    say(
        f"Shipment {number}: {quantity:,} {left.unit} of lot {lot} to {name} on {on}; "
        f"{left.available:,} {left.unit} left."
    )


@lot_app.command("hold")
def lot_hold(ctx: typer.Context, lot: str, reason: ReasonOption) -> None:
    """Hold a lot by hand (approvers): no release or shipment of it or of lots made from it until unheld.
    Example: plasmatrace lot hold IVG-2605 --reason "complaint under investigation\""""
    with work(ctx, role=Role.APPROVER) as session:
        holds.hold_lot(session, lot_number=lot, reason=reason, actor=ctx.obj.actor)
    say(f"Lot {lot} held: {reason}")


@lot_app.command("unhold")
def lot_unhold(ctx: typer.Context, lot: str, reason: ReasonOption) -> None:
    """Lift every hold on a lot, by hand or by a look-back case (approvers), with the reason.
    Example: plasmatrace lot unhold IVG-2605 --reason "QA: complaint unfounded\""""
    with work(ctx, role=Role.APPROVER) as session:
        lifted = holds.unhold_lot(session, lot_number=lot, reason=reason, actor=ctx.obj.actor)
    for line in lifted:
        say(f"Lifted: {line}.")
    say(f"Lot {lot} is no longer held.")
