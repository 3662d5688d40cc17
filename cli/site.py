"""establishment, consignee and user: the site's own records."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.core import (
    FormatOption,
    OutputFormat,
    PasswordStdinOption,
    consignee_app,
    establishment_app,
    fail,
    parsed,
    read_password,
    say,
    user_app,
    work,
)
from cli.output import (
    cell_text,
    print_rows,
)
from traceability import identity
from traceability.errors import (
    InvalidInput,
)
from traceability.identity import Role
from traceability.models import (
    EstablishmentKind,
)
from traceability.queries import listings
from traceability.reports import writers
from traceability.services import consignees, donors, users

# --- establishments --------------------------------------------------------------------------------------------


@establishment_app.command("add")
def establishment_add(
    ctx: typer.Context,
    code: str,
    name: Annotated[str, typer.Option("--name", help="Full name of the site.")],
    kind: Annotated[EstablishmentKind, typer.Option("--kind", help="collection, testing or fractionation.")],
    timezone: Annotated[
        str, typer.Option("--timezone", help="IANA time zone (Area/City); the rules count its local days.")
    ] = "UTC",
) -> None:
    """Register an establishment in its time zone. Example: plasmatrace establishment add C-BOS --name "Boston centre" --kind collection --timezone America/New_York"""
    with work(ctx) as session:
        donors.add_establishment(session, code=code, name=name, kind=kind, timezone=timezone, actor=ctx.obj.actor)
    say(f"Establishment {code} added.")


@establishment_app.command("list")
def establishment_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List establishments. Example: plasmatrace establishment list"""
    with work(ctx, readonly=True) as session:
        columns, rows = listings.list_establishments(session)
    print_rows(columns, rows, fmt, title="Establishments")


# --- consignees ------------------------------------------------------------------------------------------------


@consignee_app.command("add")
def consignee_add(
    ctx: typer.Context,
    code: str,
    name: Annotated[str, typer.Option("--name", help="Name of the hospital or distributor.")],
    address: Annotated[str, typer.Option("--address", help="Postal address.")],
    country: Annotated[str | None, typer.Option("--country", help="ISO 3166 code, e.g. US.")] = None,
) -> None:
    """Register a consignee with its address. Example: plasmatrace consignee add H-STMARY --name "St Mary's Hospital" --address "1 Main St, Boston MA" --country US"""
    with work(ctx) as session:
        consignees.add_consignee(session, code=code, name=name, address=address, country=country, actor=ctx.obj.actor)
    say(f"Consignee {code} added.")


@consignee_app.command("list")
def consignee_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List consignees. Example: plasmatrace consignee list"""
    with work(ctx, readonly=True) as session:
        columns, rows = listings.list_consignees(session)
    print_rows(columns, rows, fmt, title="Consignees")


@consignee_app.command("show")
def consignee_show(ctx: typer.Context, code: str, fmt: FormatOption = OutputFormat.table) -> None:
    """Show a consignee and every shipment to it (lot, quantity, day, expiry). Example: plasmatrace consignee show H-STMARY"""
    with work(ctx, readonly=True) as session:
        summary, columns, rows = listings.show_consignee(session, code)
    if fmt == OutputFormat.json:
        writers.write_json({**summary, "shipments": [dict(zip(columns, r, strict=True)) for r in rows]}, sys.stdout)
        return
    if fmt == OutputFormat.csv:
        writers.write_csv(columns, rows, sys.stdout)
        return
    for label, value in summary.items():
        say(f"{label}: {cell_text(value)}")
    print_rows(columns, rows, OutputFormat.table, title="Shipments")


# --- users -----------------------------------------------------------------------------------------------------


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    login: str,
    roles: Annotated[
        list[str], typer.Option("--role", help="recorder, approver, investigator, auditor or admin (repeatable).")
    ],
    full_name: Annotated[str, typer.Option("--full-name", help="The printed name signatures show.")],
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Add a user (admins): on PostgreSQL a database login in the group roles; on SQLite a signing password.
    Example: plasmatrace user add jdoe --role approver --full-name "Jane Doe" --password-stdin"""
    wanted = [parsed(identity.parse_role, r) for r in roles]
    password = read_password(password_stdin, f"Password for {login}: ")
    if not password_stdin:
        import getpass

        if getpass.getpass("Again: ") != password:
            raise fail(InvalidInput("The two passwords differ; nothing was changed."))
    with work(ctx, role=Role.ADMIN) as session:
        user = users.add_user(
            session, login=login, full_name=full_name, roles=wanted, password=password, actor=ctx.obj.actor
        )
    say(f"User {user.login} ({user.full_name}) added with roles {', '.join(r.short for r in wanted)}.")


@user_app.command("list")
def user_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List users, their printed names and roles. Example: plasmatrace user list"""
    with work(ctx, readonly=True) as session:
        lines = users.list_users(session)
    rows = [
        [u.login, u.full_name, " ".join(r.removeprefix("plasmatrace_") for r in u.roles), u.disabled_at, u.created_at]
        for u in lines
    ]
    print_rows(["login", "full_name", "roles", "disabled_at", "created_at"], rows, fmt, title="Users")


@user_app.command("disable")
def user_disable(
    ctx: typer.Context,
    login: str,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept in the audit trail).")] = None,
) -> None:
    """Disable a user (admins): the login can no longer connect or sign; its records keep its name.
    Example: plasmatrace user disable jdoe --reason "left the company\""""
    with work(ctx, role=Role.ADMIN) as session:
        users.disable_user(session, login=login, reason=reason, actor=ctx.obj.actor)
    say(f"User {login} disabled.")
