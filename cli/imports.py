"""import: CSV exports loaded all or nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.core import (
    err,
    fail,
    import_app,
    shown,
    work,
)
from cli.output import (
    check_output,
    progress,
)
from traceability.errors import (
    ExitCode,
)
from traceability.queries import casework


def _import(ctx: typer.Context, kind: str, file: Path, dry_run: bool, skip_invalid: bool, rejects: Path | None) -> None:
    from traceability.importers.load import ImportKind, default_rejects_path, import_file

    if not file.name:  # "" or "." (Path("") is the current folder): no file to import nor to name rejects after
        raise fail(f"Import file {str(file)!r}: give the path of a CSV file.", ExitCode.INVALID_INPUT)
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
        with work(ctx, readonly=True) as session:
            cases = casework.open_cases_of_units(session, report.reactive)
        if cases:
            err.print(
                "[bold yellow]Look-back case(s) open for their donors[/] (opened or joined by a reactive panel result): "
                + escape(", ".join(cases))
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
