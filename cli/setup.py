"""The root commands that set a site up: init and demo."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.exc import OperationalError, ProgrammingError

from cli.core import (
    OutputFormat,
    app,
    err,
    fail,
    out,
    say,
    work,
)
from cli.output import (
    print_document,
    print_rows,
    progress,
)
from traceability import db, identity
from traceability.config import Settings
from traceability.errors import (
    DatabaseUnavailable,
    NotPermitted,
    TraceabilityError,
)
from traceability.queries import lineage, listings
from traceability.reports import sections


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the database or upgrade it to the newest schema. Example: plasmatrace --db sqlite:///site.db init"""
    from traceability import migrate

    settings: Settings = ctx.obj.settings
    try:
        before, after = migrate.upgrade(db.engine_for(settings))
    except OperationalError as error:
        raise fail(DatabaseUnavailable(db.describe_operational_error(error, settings.database_url))) from None
    where = db.safe_url(settings.database_url)
    if before == after:
        say(f"Database {where} is up to date (schema {after}).")
    else:
        say(f"Database {where} upgraded from schema {before or 'none'} to {after}.")
    try:
        created = identity.install_roles(db.engine_for(settings))
    except ProgrammingError as error:
        raise fail(
            NotPermitted(f"init could not create the plasmatrace roles and their GRANTs: {error.orig}")
        ) from None
    if created:
        say(f"Roles created: {', '.join(created)}. Add users with `plasmatrace user add`.")
    from traceability import ownership

    try:
        owned = ownership.install_owner(db.engine_for(settings))
    except ProgrammingError as error:
        raise fail(NotPermitted(f"init could not hand the tables to {ownership.OWNER_ROLE}: {error.orig}")) from None
    except TraceabilityError as error:
        raise fail(error) from None
    if owned is not None and (owned.created or owned.handed_over):
        say(
            f"Tables, triggers and functions belong to {ownership.OWNER_ROLE} (no application login is a member)"
            f"{'; role created' if owned.created else ''}."
        )


@app.command()
def demo(
    ctx: typer.Context,
    donors_count: Annotated[
        int, typer.Option("--donors", min=2200, help="Donors to generate (two pools need 1,000+ each).")
    ] = 2500,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same site.")] = 7,
) -> None:
    """Build a realistic synthetic site in an empty database and walk through it: import, pool, release, ship, recall.
    Example: plasmatrace --db sqlite:///demo.db demo --seed 7"""
    from functools import partial

    from traceability import demo as demo_site
    from traceability import migrate

    settings: Settings = ctx.obj.settings
    where = db.safe_url(settings.database_url)
    try:
        migrate.upgrade(db.engine_for(settings))
    except OperationalError as error:
        raise fail(DatabaseUnavailable(db.describe_operational_error(error, settings.database_url))) from None
    with work(ctx, readonly=True) as session:
        demo_site.ensure_empty(session, where)
    say(f"Building a demo site in {where} (seed {seed}, {donors_count:,} donors).")
    with progress("Importing") as update:
        try:
            result = demo_site.build(
                partial(db.unit_of_work, settings),
                donors_count=donors_count,
                seed=seed,
                actor=ctx.obj.actor,
                say=lambda text: err.print(escape(text), highlight=False),
                progress=update,
                policy=ctx.obj.policy,
            )
        except TraceabilityError as error:
            raise fail(error) from None
    with work(ctx, readonly=True) as session:
        columns, rows = listings.list_pools(session)
        lot_trace = lineage.trace_lot(session, result.final_lots[0], policy=ctx.obj.policy)
        donor_trace = lineage.trace_donor(session, result.recall_donor, policy=ctx.obj.policy)
    out.rule("Pools")
    print_rows(columns, rows, OutputFormat.table, title="Pool summary")
    out.rule(f"Lot {lot_trace.lot_number}: back to every donation")
    print_document(sections.lot_document(lot_trace), lot_trace, OutputFormat.table)
    out.rule(f"Donor {donor_trace.donor_code}: forward to every consignee")
    print_document(sections.donor_document(donor_trace), donor_trace, OutputFormat.table)
    say(f"\nTry: plasmatrace --db {settings.database_url} trace donor {result.recall_donor} --format json")
