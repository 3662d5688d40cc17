"""Rendering: tables, documents, JSON and CSV on stdout; progress bars; checked output paths."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.core import (
    OutputFormat,
    err,
    fail,
    out,
    say,
    shown,
)
from traceability import db
from traceability.errors import (
    ExitCode,
)
from traceability.reports import sections, writers
from traceability.services import lookback


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
            table.add_row(*(escape(cell_text(v)) for v in row))
        out.print(table)
        if not rows:
            say("No records.")


def cell_text(value: Any) -> str:
    return shown(_plain_text(value))


def _plain_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
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
        grid.add_row(label, escape(cell_text(value)))
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


def say_case(opened: lookback.CaseOpened) -> None:
    """What opening (or joining) a look-back case did, and what is due first."""
    verb = "joined" if opened.joined else "opened"
    say(
        f"Look-back case {opened.case_number} {verb} for donor {opened.donor_code}: "
        f"{len(opened.interdicted)} unit(s) interdicted, {len(opened.pooled)} pooled, {len(opened.other)} already "
        f"out of inventory; {opened.tasks} task(s) added"
        + (f", first due {opened.first_due.isoformat()}" if opened.first_due else "")
        + (f"; lots held: {', '.join(opened.held)}" if opened.held else "")
        + "."
    )
    say(f"Next: plasmatrace lookback show {opened.case_number}")
