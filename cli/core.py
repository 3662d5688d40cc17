"""The app, its command groups and what every command shares: the unit of work with its error-to-exit-code
mapping, option types and value parsers."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError
from sqlmodel import Session

from traceability import db, identity
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
    SignatureMeaning,
)
from traceability.parsing import parse_date, parse_timestamp
from traceability.queries.lineage.as_of import checked_as_of, parse_as_of
from traceability.rules import Policy, load_policy
from traceability.services import signatures
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
recall_app = group("recall", "Recall lots from every consignee, record notices and returns; run recall drills.")
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


@dataclass
class Signing:
    """What --sign adds to a command's message: empty when the record was not signed."""

    note: str = ""


@contextmanager
def signed_work(
    ctx: typer.Context,
    *,
    role: Role,
    sign: bool,
    password_stdin: bool,
    meaning: SignatureMeaning,
    kind: str,
    key: str,
) -> Iterator[tuple[Session, Signing]]:
    """A unit of work that, with --sign, signs the record it changed before it commits (signature and change are
    saved together or not at all); the password is read first, before any transaction opens."""
    password = read_password(password_stdin) if sign else None
    signing = Signing()
    with work(ctx, role=role) as session:
        yield session, signing
        if password is not None:
            assert ctx.obj.identity is not None
            row = signatures.sign(
                session, signer=ctx.obj.identity, password=password, meaning=meaning, entity_type=kind, entity_key=key
            )
            signing.note = (
                f" Signed by {row.full_name} ({row.login}), {row.meaning.value}, {row.signed_at:%Y-%m-%d %H:%M:%S} UTC."
            )


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


AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        metavar="T",
        help="As recorded at T (ISO 8601; a date alone is the end of that day, UTC): statuses, current result "
        "versions, pool members, lots and shipments as they were then. Example: --as-of 2026-05-04T12:00:00Z",
        show_default=False,
    ),
]


def as_of_time(session: Session, text: str | None) -> datetime | None:
    """The --as-of time, refused (exit 5) when unreadable, in the future or before the first audit event."""
    if text is None:
        return None
    return checked_as_of(session, parsed(parse_as_of, text))
