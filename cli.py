"""plasmatrace: plasma-pool batch traceability from donor to consignee and back.

Parse, open a unit of work, call one service or query, render. Messages and errors go to stderr; tables, JSON and
CSV go to stdout.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError
from sqlmodel import Session

from traceability import audit, db, identity
from traceability.config import Settings
from traceability.errors import (
    CheckConstraintFailed,
    DatabaseUnavailable,
    ExitCode,
    InvalidInput,
    InvalidPolicy,
    NotPermitted,
    SignatureFailed,
    TraceabilityError,
)
from traceability.identity import Identity, Role
from traceability.models import (
    EstablishmentKind,
    LotKind,
    LotUnit,
    PlasmaKind,
    PoolStatus,
    SignatureMeaning,
    StepMethod,
    StepOutcome,
    TestMethod,
    UnitStatus,
)
from traceability.parsing import parse_assignments, parse_date, parse_float, parse_marker, parse_result, parse_timestamp
from traceability.queries import lineage, listings
from traceability.queries.signatures import signatures_for
from traceability.reports import sections, writers
from traceability.rules import Policy, load_policy, policy_digest, policy_keys
from traceability.services import consignees, donors, inactivation, lookback, lots, pools, signatures, units, users
from traceability.services.common import has_control

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings=CONTEXT,
    add_completion=False,
    help="Plasma-pool batch traceability: donors, units, pools, lots and shipments, traced both ways.",
)
out, err = Console(), Console(stderr=True, soft_wrap=True)
if not out.is_terminal:
    out = Console(width=200)  # piped tables: wide enough that timestamps and keys are not folded


def group(name: str, help: str, *, hidden: bool = False) -> typer.Typer:
    sub = typer.Typer(help=help, no_args_is_help=True, context_settings=CONTEXT)
    app.add_typer(sub, name=name, hidden=hidden)
    return sub


establishment_app = group("establishment", "Register collection centres, testing labs and fractionation sites.")
donor_app = group("donor", "Register donors (pseudonymous codes) and defer them.")
donation_app = typer.Typer(
    help="Record plasma units (donations): add, correct, discard, inspect.",
    no_args_is_help=True,
    context_settings=CONTEXT,
)
app.add_typer(donation_app, name="donation")
app.add_typer(donation_app, name="unit", help="Alias of `donation`.", hidden=True)
result_app = group("result", "Record screening results of units.")
pool_app = group("pool", "Build, close, test, release and inspect fractionation pools.")
step_app = group("step", "Record viral inactivation and removal steps on pools and lots.")
lot_app = group("lot", "Create, release, ship and inspect intermediate and final lots.")
consignee_app = group("consignee", "Register the hospitals and distributors lots are shipped to, with addresses.")
trace_app = group("trace", "Trace lineage: a donor or unit forward, a pool or lot back to every donation.")
import_app = group("import", "Load CSV exports (donors, donations, results, pool members, consignees), all or nothing.")
lookback_app = group("lookback", "Open and follow look-back cases from post-donation information.")
report_app = group("report", "Write lineage reports for auditors: HTML, PDF, JSON or CSV.")
export_app = group("export", "Export the lineage for other systems: GS1 EPCIS 2.0 JSON-LD.")
audit_app = group("audit", "Read and verify the hash-chained audit trail.")
policy_app = group("policy", "Show the thresholds in force.")
user_app = group("user", "Add, list and disable users and their roles (admins).")
signature_app = group("signature", "List electronic signatures and whether their records changed since.")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]


@dataclass
class AppContext:
    settings: Settings
    policy: Policy
    explicit_actor: bool = False  # --actor or PLASMATRACE_ACTOR was given (on PostgreSQL it must be the login)
    identity: Identity | None = None  # who is acting, once a unit of work has established it

    @property
    def actor(self) -> str:
        return self.identity.login if self.identity is not None else self.settings.actor


def shown(text: str) -> str:
    """Text as a terminal may print it: control, escape and bidi characters (already stored, or typed) are shown
    as escapes such as \\x1b, so that no stored name can write to the clipboard or hide text from an auditor."""
    if not has_control(text, newlines=True):
        return text
    return "".join(
        ch if ch in "\n\t" or not has_control(ch) else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def say(text: str) -> None:
    """A plain message on stderr: business keys are printed verbatim, never read as Rich markup."""
    err.print(shown(text), markup=False, highlight=False)


def fail(error: TraceabilityError | str, code: int = ExitCode.FAILURE) -> typer.Exit:
    message = shown(str(error))
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=getattr(error, "exit_code", code))


@app.callback()
def main(
    ctx: typer.Context,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db", help="SQLAlchemy URL (env PLASMATRACE_DB); default sqlite:///plasmatrace.db.", show_default=False
        ),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option("--actor", help="Who is acting (env PLASMATRACE_ACTOR); default the OS user.", show_default=False),
    ] = None,
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="TOML policy overrides (env PLASMATRACE_POLICY).", show_default=False),
    ] = None,
) -> None:
    """Plasma-pool batch traceability. Example: plasmatrace --db sqlite:///site.db trace donor D-000123"""
    _say_on_interrupt()
    overrides: dict[str, Any] = {}
    if db_url:
        overrides["database_url"] = db_url
    if actor:
        overrides["actor"] = actor
    if policy_file:
        overrides["policy_file"] = policy_file
    try:
        settings = Settings(**overrides)
        db.check_database_url(settings.database_url)
        if not settings.actor.strip() or has_control(settings.actor) or len(settings.actor) > 100:
            raise InvalidInput(
                f"--actor {settings.actor[:40]!r} must be 1-100 characters without newlines or control characters."
            )
        if settings.policy_file is not None and Path(settings.policy_file).is_dir():
            raise InvalidPolicy(f"Policy file {settings.policy_file} is a folder; give a TOML file.")
        explicit = "actor" in settings.model_fields_set
        ctx.obj = AppContext(settings=settings, policy=load_policy(settings.policy_file), explicit_actor=explicit)
    except TraceabilityError as error:
        raise fail(error) from None
    except OSError as error:
        raise fail(f"Policy file {policy_file}: {error.strerror}.", ExitCode.INVALID_INPUT) from None
    except ValueError as error:  # the settings themselves (pydantic), e.g. an unreadable .env value
        raise fail(f"Invalid setting: {str(error).splitlines()[0]}", ExitCode.INVALID_INPUT) from None


def _say_on_interrupt() -> None:
    """Ctrl-C: the transaction under way is rolled back (the unit of work sees the exception); say so, exit 130."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupted(_signum: int, _frame: Any) -> None:
        err.print("\nInterrupted: the change under way was rolled back.", markup=False, highlight=False)
        raise SystemExit(130)

    signal.signal(signal.SIGINT, interrupted)


# How SQLite and PostgreSQL name the CHECK constraint a row broke.
_CHECK_FAILED = re.compile(r"check constraint(?: failed:)?\s+\"?(ck_\w+)", re.IGNORECASE)


@contextmanager
def work(ctx: typer.Context, *, readonly: bool = False, role: Role | None = None) -> Iterator[Session]:
    """One unit of work: establish who is acting and check their role (a writing command needs ``role``, by
    default the recorder's), then commit on success; an expected failure prints its message and exits with its
    code. A failed signature is recorded in a transaction of its own after the command's has rolled back.

    What the database itself refuses ends in a message, never a traceback: a privilege it refuses is not permitted
    (7); a unique key taken by a concurrent command is a conflict (6); a number or text too large for its column is
    invalid input (5)."""
    needed = role or (None if readonly else Role.RECORDER)
    doing = f"run `{ctx.command_path.partition(' ')[2] or ctx.command_path}`"
    url = ctx.obj.settings.database_url
    try:
        db.require_existing_database(url)
        with db.unit_of_work(ctx.obj.settings, readonly=readonly) as session:
            who = identity.establish(session, declared=ctx.obj.settings.actor, explicit=ctx.obj.explicit_actor)
            ctx.obj.identity = who
            if needed is not None:
                identity.require(who, needed, doing=doing)
            yield session
    except SignatureFailed as error:
        try:
            with db.unit_of_work(ctx.obj.settings) as session:
                signatures.record_failure(session, failure=error)
        except (TraceabilityError, ProgrammingError) as unrecorded:
            say(f"The failed attempt could not be recorded: {unrecorded}")
        raise fail(error) from None
    except TraceabilityError as error:
        raise fail(error) from None
    except ProgrammingError as error:
        if getattr(error.orig, "sqlstate", None) == "42501":  # insufficient_privilege: a GRANT or a role trigger
            refused = str(error.orig).strip().splitlines()[0]
            login = make_url(url).username or ctx.obj.actor
            role_hint = f"; that needs the role {needed.value}" if needed is not None else ""
            raise fail(
                NotPermitted(
                    f"{login} may not {doing}: the database refused it ({refused}){role_hint}; nothing was changed."
                )
            ) from None
        raise fail(DatabaseUnavailable(db.describe_operational_error(error, url))) from None
    except IntegrityError as error:
        check = _CHECK_FAILED.search(str(error.orig))  # SQLite and PostgreSQL both name the constraint
        if check is not None:
            raise fail(CheckConstraintFailed(check.group(1))) from None
        first = str(error.orig).strip().splitlines()[0] if error.orig is not None else ""
        raise fail(
            f"The change collided with another one made at the same time (or with a record that exists): {first}. "
            "Nothing was changed; check and try again.",
            ExitCode.CONFLICT,
        ) from None
    except (DataError, OverflowError) as error:
        detail = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise fail(
            f"A value is too large or too long for the database ({detail}); nothing was changed.",
            ExitCode.INVALID_INPUT,
        ) from None


SignOption = Annotated[
    bool, typer.Option("--sign", help="Sign electronically: your password is checked again now (21 CFR 11.200).")
]
MeaningOption = Annotated[SignatureMeaning, typer.Option("--meaning", help="What the signature means (21 CFR 11.50).")]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password as one line of standard input, not the terminal.")
]


def read_password(from_stdin: bool, prompt: str = "Password: ") -> str:
    """The password, from one line of stdin or the terminal (never echoed); read before any transaction opens."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise fail("--sign asks for the password on a terminal; without one, give it with --password-stdin.", 2)
    import getpass

    try:
        return getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        raise fail("No password was given; nothing was signed or changed.", 2) from None


def signed(
    ctx: typer.Context, session: Session, *, password: str | None, meaning: SignatureMeaning, kind: str, key: str
) -> str:
    """Sign the record in this unit of work when --sign was given; returns a phrase for the message."""
    if password is None:
        return ""
    assert ctx.obj.identity is not None
    row = signatures.sign(
        session, signer=ctx.obj.identity, password=password, meaning=meaning, entity_type=kind, entity_key=key
    )
    return f" Signed by {row.full_name} ({row.login}), {row.meaning.value}, {row.signed_at:%Y-%m-%d %H:%M:%S} UTC."


def when(text: str | None, what: str) -> datetime | None:
    return None if text is None else parse_timestamp(text, what)


def day(text: str | None, what: str) -> date | None:
    return None if text is None else parse_date(text, what)


def parsed(parse: Callable[..., Any], *args: Any) -> Any:
    """Run a parser on a command-line value; bad input exits 5 with the parser's message."""
    try:
        return parse(*args)
    except TraceabilityError as error:
        raise fail(error) from None


# --- rendering -------------------------------------------------------------------------------------------------


def print_rows(columns: list[str], rows: list[list[Any]], fmt: OutputFormat, *, title: str | None = None) -> None:
    if fmt == OutputFormat.json:
        writers.write_json([dict(zip(columns, row, strict=True)) for row in rows], sys.stdout)
    elif fmt == OutputFormat.csv:
        writers.write_csv(columns, rows, sys.stdout)
    else:
        table = Table(title=title, header_style="bold", title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(escape(_text(v)) for v in row))
        out.print(table)
        if not rows:
            say("No records.")


def _text(value: Any) -> str:
    return shown(_plain_text(value))


def _plain_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dict):
        return "\n".join(f"{k}: {_plain_text(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_plain_text(v) for v in value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def print_document(document: sections.Document, trace: Any, fmt: OutputFormat) -> None:
    if fmt == OutputFormat.json:
        writers.write_json(trace.as_json(), sys.stdout)
        return
    if fmt == OutputFormat.csv:
        primary = document.section(document.primary)
        writers.write_csv(primary.columns, primary.rows, sys.stdout)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in document.summary:
        grid.add_row(label, escape(_text(value)))
    out.print(f"[bold underline]{escape(shown(document.title))}[/]")
    out.print(grid)
    for section in document.sections:
        if section.rows:
            out.print()
            print_rows(section.columns, section.rows, OutputFormat.table, title=section.title)


class ProgressHook:
    """Callbacks for long work: ``update(done)`` and ``total(n)``; no-ops when not on a terminal."""

    def __init__(self, update: Callable[[int], None], total: Callable[[int], None]) -> None:
        self.update, self.total = update, total

    def __call__(self, done: int) -> None:
        self.update(done)


@contextmanager
def progress(description: str) -> Iterator[ProgressHook]:
    """A live progress bar with rows per second on a terminal; nothing when piped."""
    if not err.is_terminal:
        yield ProgressHook(lambda _n: None, lambda _n: None)
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=None, rate="")
        started = datetime.now(UTC)

        def update(n: int) -> None:
            seconds = max((datetime.now(UTC) - started).total_seconds(), 1e-6)
            bar.update(task, completed=n, rate=f"{n / seconds:,.0f} rows/s")

        yield ProgressHook(update, lambda n: bar.update(task, total=n))


# --- init, policy ----------------------------------------------------------------------------------------------


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


# --- establishments and donors ---------------------------------------------------------------------------------


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
    password = read_password(password_stdin) if sign else None
    with work(ctx, role=Role.APPROVER) as session:
        row = donors.lift_deferral(
            session, donor_code=code, sequence=deferral, lifted_on=lifted, reason=reason, actor=ctx.obj.actor
        )
        note = signed(ctx, session, password=password, meaning=meaning, kind="deferral", key=f"{code}#{deferral}")
    say(f"Deferral #{deferral} of donor {code} lifted on {row.lifted_on}.{note}")


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


# --- pools -----------------------------------------------------------------------------------------------------


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
    password = read_password(password_stdin) if sign else None
    with work(ctx, role=Role.APPROVER) as session:
        pools.release_pool(session, pool_number=pool, actor=ctx.obj.actor, policy=ctx.obj.policy)
        note = signed(ctx, session, password=password, meaning=meaning, kind="pool", key=pool)
    say(f"Pool {pool} released.{note}")


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


# --- steps and lots --------------------------------------------------------------------------------------------


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
    password = read_password(password_stdin) if sign else None
    with work(ctx, role=Role.APPROVER) as session:
        lots.release_lot(session, lot_number=lot, actor=ctx.obj.actor, policy=ctx.obj.policy)
        note = signed(ctx, session, password=password, meaning=meaning, kind="lot", key=lot)
    say(f"Lot {lot} released.{note}")


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
        left = lots.lot_balance(lots.get_lot(session, lot))
    say(
        f"Shipment {number}: {quantity:,} {left.unit} of lot {lot} to {name} on {on}; "
        f"{left.available:,} {left.unit} left."
    )


# --- consignees -----------------------------------------------------------------------------------------------


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
        say(f"{label}: {_text(value)}")
    print_rows(columns, rows, OutputFormat.table, title="Shipments")


# --- trace -----------------------------------------------------------------------------------------------------

MembersOption = Annotated[bool, typer.Option("--members", help="Include every donation (unit, donor, pool).")]


@trace_app.command("donor")
def trace_donor(ctx: typer.Context, code: str, fmt: FormatOption = OutputFormat.table) -> None:
    """Every donation of a donor and where it went: inventory, pool, lots, consignees. Example: plasmatrace trace donor D-000123 --format json"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_donor(session, code, policy=ctx.obj.policy)
    print_document(sections.donor_document(trace), trace, fmt)


@trace_app.command("unit")
def trace_unit(ctx: typer.Context, unit: str, fmt: FormatOption = OutputFormat.table) -> None:
    """One unit forward: results, pool, lots, shipments. Example: plasmatrace trace unit "=A99992612345600\""""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_unit(session, unit)
    print_document(sections.unit_document(trace), trace, fmt)


@trace_app.command("pool")
def trace_pool(
    ctx: typer.Context, pool: str, fmt: FormatOption = OutputFormat.table, members: MembersOption = False
) -> None:
    """A pool back to its donations and forward to its lots and shipments. Example: plasmatrace trace pool P-0042 --members --format csv"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_pool(session, pool, members=members, policy=ctx.obj.policy)
    print_document(sections.pool_document(trace), trace, fmt)


@trace_app.command("lot")
def trace_lot(
    ctx: typer.Context, lot: str, fmt: FormatOption = OutputFormat.table, members: MembersOption = False
) -> None:
    """A lot back through every lot and pool to every donation and donor. Example: plasmatrace trace lot IVG-2605 --members --format json"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_lot(session, lot, members=members, policy=ctx.obj.policy)
    print_document(sections.lot_document(trace), trace, fmt)


# --- import --------------------------------------------------------------------------------------------------


def _import(ctx: typer.Context, kind: str, file: Path, dry_run: bool, skip_invalid: bool, rejects: Path | None) -> None:
    from traceability.importers.load import ImportKind, default_rejects_path, import_file

    try:
        file.stat()
    except FileNotFoundError:
        pass  # said by the import, in its words
    except OSError as error:
        raise fail(f"Import file {str(file)[:80]}: {error.strerror}.", ExitCode.INVALID_INPUT) from None
    if skip_invalid and not dry_run:
        check_output(ctx, rejects or default_rejects_path(file), "Rejects file", file)
    with progress(f"Importing {file.name}") as update, work(ctx) as session, _writing(rejects or file):
        report = import_file(
            session,
            ImportKind(kind),
            file,
            actor=ctx.obj.actor,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            rejects_path=rejects,
            policy=ctx.obj.policy,
            progress=update,
            on_rows_counted=update.total,
        )
    err.print(escape(shown(report.summary)), highlight=False)
    for line in report.problems:
        err.print(escape(shown(line)), highlight=False)
    if report.reactive:
        err.print(
            f"[bold yellow]{len(report.reactive):,} unit(s) received a reactive result[/]: "
            + escape(", ".join(report.reactive[:20]))
            + "; their donors were deferred; trace them with "
            "plasmatrace trace donor."
        )


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A file that cannot be written (disk full, no permission) ends the command with a message; the unit of work
    around it is rolled back, so nothing was loaded."""
    try:
        yield
    except OSError as error:
        raise fail(f"Cannot write beside {path}: {error.strerror or error}; nothing was loaded.") from None


DryRun = Annotated[bool, typer.Option("--dry-run", help="Validate only; write nothing.")]
SkipInvalid = Annotated[
    bool, typer.Option("--skip-invalid", help="Load the good rows; write the bad ones to a rejects CSV.")
]
Rejects = Annotated[
    Path | None, typer.Option("--rejects", dir_okay=False, help="Rejects file (default FILE.rejects.csv).")
]
ImportFile = Annotated[Path, typer.Argument(help="UTF-8 CSV with a header row.", show_default=False)]


@import_app.command("donors")
def import_donors(
    ctx: typer.Context,
    file: ImportFile,
    dry_run: DryRun = False,
    skip_invalid: SkipInvalid = False,
    rejects: Rejects = None,
) -> None:
    """Import donors (donor_code, establishment, registered_on). Example: plasmatrace import donors donors.csv --dry-run"""
    _import(ctx, "donors", file, dry_run, skip_invalid, rejects)


@import_app.command("donations")
def import_donations(
    ctx: typer.Context,
    file: ImportFile,
    dry_run: DryRun = False,
    skip_invalid: SkipInvalid = False,
    rejects: Rejects = None,
) -> None:
    """Import donations (unit_number, donor_code, collected_at, volume_ml[, establishment, plasma_kind, frozen_at]).
    Example: plasmatrace import donations donations.csv --skip-invalid"""
    _import(ctx, "donations", file, dry_run, skip_invalid, rejects)


@import_app.command("results")
def import_results(
    ctx: typer.Context,
    file: ImportFile,
    dry_run: DryRun = False,
    skip_invalid: SkipInvalid = False,
    rejects: Rejects = None,
) -> None:
    """Import screening results (unit_number, marker, result, tested_at[, method, lab, value, unit]).
    Example: plasmatrace import results results.csv"""
    _import(ctx, "results", file, dry_run, skip_invalid, rejects)


@import_app.command("pool-members")
def import_pool_members(
    ctx: typer.Context,
    file: ImportFile,
    dry_run: DryRun = False,
    skip_invalid: SkipInvalid = False,
    rejects: Rejects = None,
) -> None:
    """Import pool memberships (pool_number, unit_number); each pool's units are checked set-based.
    Example: plasmatrace import pool-members members.csv"""
    _import(ctx, "pool-members", file, dry_run, skip_invalid, rejects)


@import_app.command("consignees")
def import_consignees(
    ctx: typer.Context,
    file: ImportFile,
    dry_run: DryRun = False,
    skip_invalid: SkipInvalid = False,
    rejects: Rejects = None,
) -> None:
    """Import consignees (code, name, address[, country]). Example: plasmatrace import consignees consignees.csv"""
    _import(ctx, "consignees", file, dry_run, skip_invalid, rejects)


# --- look-back -------------------------------------------------------------------------------------------------


@lookback_app.command("open")
def lookback_open(ctx: typer.Context, donor: str, reason: ReasonOption) -> None:
    """Open a case: interdict the donor's units in inventory in the window, list the pooled ones.
    Example: plasmatrace lookback open D-000123 --reason "PDI: later HCV RNA reactive at another centre\""""
    with work(ctx, role=Role.INVESTIGATOR) as session:
        opened = lookback.open_case(
            session, donor_code=donor, reason=reason, actor=ctx.obj.actor, policy=ctx.obj.policy
        )
    say(
        f"Look-back case {opened.case_number} opened for donor {donor}: {len(opened.interdicted)} unit(s) "
        f"interdicted, {len(opened.pooled)} pooled, {len(opened.other)} already out of inventory."
    )
    say(f"Next: plasmatrace lookback show {opened.case_number}")


@lookback_app.command("show")
def lookback_show(ctx: typer.Context, case: str, fmt: FormatOption = OutputFormat.table) -> None:
    """Show a case: each implicated unit, its pool, every lot downstream and every consignee. Example: plasmatrace lookback show LB-2026-0001"""
    with work(ctx, readonly=True) as session:
        trace = lineage.trace_case(session, case)
    print_document(sections.case_document(trace), trace, fmt)


@lookback_app.command("list")
def lookback_list(ctx: typer.Context, fmt: FormatOption = OutputFormat.table) -> None:
    """List look-back cases. Example: plasmatrace lookback list"""
    with work(ctx, readonly=True) as session:
        columns, rows = lineage.list_cases(session)
    print_rows(columns, rows, fmt, title="Look-back cases")


@lookback_app.command("close")
def lookback_close(
    ctx: typer.Context,
    case: str,
    reason: Annotated[str, typer.Option("--reason", help="The conclusion.")],
    sign: SignOption = False,
    meaning: MeaningOption = SignatureMeaning.APPROVED,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Close a case with its conclusion (investigators). Example: plasmatrace lookback close LB-2026-0001 --reason "consignees notified; lots within validated clearance" --sign"""
    password = read_password(password_stdin) if sign else None
    with work(ctx, role=Role.INVESTIGATOR) as session:
        lookback.close_case(session, case_number=case, reason=reason, actor=ctx.obj.actor)
        note = signed(ctx, session, password=password, meaning=meaning, kind="lookback_case", key=case)
    say(f"Look-back case {case} closed.{note}")


# --- reports -------------------------------------------------------------------------------------------------


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


def protected_files(ctx: typer.Context, *reads: Path | None) -> list[Path]:
    """Files a command must never overwrite: the database (and its -wal, -shm) and every file it reads."""
    files = list(db.database_files(ctx.obj.settings.database_url))
    for path in (ctx.obj.settings.policy_file, *reads):
        if path is not None:
            files.append(Path(path).resolve())
    return files


def check_output(ctx: typer.Context, output: Path, what: str, *reads: Path | None) -> None:
    """An output path that replaces neither the database nor an input, in a folder that exists (exit 5)."""
    try:
        target = output.resolve()
        if target in protected_files(ctx, *reads):
            raise fail(f"{what} {output} is the database or a file this command reads; choose another file.", 5)
        if target.is_dir():
            raise fail(f"{what} {output} is a folder; give a file name.", ExitCode.INVALID_INPUT)
        if not target.parent.is_dir():
            raise fail(f"{what} {output}: the folder {output.parent} does not exist.", ExitCode.INVALID_INPUT)
    except OSError as error:
        raise fail(f"{what} {str(output)[:80]}: {error.strerror}.", ExitCode.INVALID_INPUT) from None


def _report(ctx: typer.Context, kind: str, key: str, fmt: ReportFormat, output: str | None) -> None:
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
        report = build_report(session, kind, key, policy=ctx.obj.policy)
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
    say(f"Report of {kind} {key} written to {where} ({fmt.value}); audit checkpoint {report.audit_checkpoint}.")
    if not report.audit_chain_ok:
        err.print(f"[bold red]Warning: the audit trail is broken:[/] {escape(report.audit_problem or '')}")


@report_app.command("lot")
def report_lot(
    ctx: typer.Context,
    lot: str,
    fmt: ReportFormatOption = ReportFormat.html,
    output: OutputOption = None,
) -> None:
    """A lot's genealogy back to every donation and donor, with tests, steps, clearance, shipments and history.
    Example: plasmatrace report lot IVG-2605 --format pdf --output IVG-2605.pdf"""
    _report(ctx, "lot", lot, fmt, output)


@report_app.command("pool")
def report_pool(
    ctx: typer.Context,
    pool: str,
    fmt: ReportFormatOption = ReportFormat.html,
    output: OutputOption = None,
) -> None:
    """A pool's members, tests, steps, lots and shipments, with history. Example: plasmatrace report pool P-0042 --format html --output P-0042.html"""
    _report(ctx, "pool", pool, fmt, output)


@report_app.command("case")
def report_case(
    ctx: typer.Context,
    case: str,
    fmt: ReportFormatOption = ReportFormat.html,
    output: OutputOption = None,
) -> None:
    """A look-back case: implicated units, pools, lots, consignees and history. Example: plasmatrace report case LB-2026-0001 --format pdf --output LB-2026-0001.pdf"""
    _report(ctx, "case", case, fmt, output)


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
    since: Annotated[
        str | None, typer.Option("--since", help="A token from `audit checkpoint`: verify only what changed after it.")
    ] = None,
) -> None:
    """Recompute the hash chain and name the first event that was changed, removed or inserted; then prove every
    record of the regulated tables against the trail. Example: plasmatrace audit verify --checkpoint 1234:9f2c..."""
    with work(ctx, readonly=True) as session:
        result = audit.verify(session, checkpoint=checkpoint, since=since)
    if not result.ok:
        err.print(f"[bold red]Audit trail broken:[/] {escape(result.problem or '')}")
        if result.records is not None:
            for difference in result.records.differences:
                err.print(f"  {escape(difference.render())}")
            if result.records.more:
                err.print(f"  ... and {result.records.more:,} more")
        raise typer.Exit(code=ExitCode.RULE_VIOLATION)
    proven = result.records
    rows = f"; {proven.rows:,} records in {proven.tables} tables match it" if proven else ""
    scope = f" since {since.split(':')[0]}" if since else ""
    say(f"Audit trail intact{scope}: {result.events:,} events, head {result.checkpoint}{rows}.")


@audit_app.command("checkpoint")
def audit_checkpoint(ctx: typer.Context) -> None:
    """Print the chain head as one token (SEQ:SHA256) to keep outside the database. Example: plasmatrace audit checkpoint"""
    with work(ctx, readonly=True) as session:
        token = audit.head_checkpoint(session)
    print(token)


# --- users and signatures --------------------------------------------------------------------------------------


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


if __name__ == "__main__":
    app()
