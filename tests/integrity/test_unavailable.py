"""A database that is locked too long, read-only or unreachable gives a clear message and exit code, never a
traceback, and never shows a password."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from traceability.errors import ExitCode

runner = CliRunner()


def invoke(url: str, *args: str, **env: str) -> object:
    return runner.invoke(app, list(args), env={"PLASMATRACE_DB": url, "PLASMATRACE_ACTOR": "qa.tester", **env})


def test_a_database_locked_too_long_is_reported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    assert invoke(url, "init").exit_code == 0  # type: ignore[attr-defined]
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = invoke(
            url, "establishment", "add", "C1", "--name", "x", "--kind", "collection", PLASMATRACE_LOCK_TIMEOUT_S="0.5"
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == ExitCode.FAILURE  # type: ignore[attr-defined]
    assert "stayed locked by another user for too long" in result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_a_read_only_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    assert invoke(f"sqlite:///{path}", "init").exit_code == 0  # type: ignore[attr-defined]
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    result = invoke(url, "establishment", "add", "C1", "--name", "x", "--kind", "collection")
    assert result.exit_code == ExitCode.FAILURE  # type: ignore[attr-defined]
    assert "is read-only; nothing was changed" in result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_an_unreachable_server_is_reported_without_its_password() -> None:
    url = "postgresql://qa:s3cret-pw@127.0.0.1:1/plasma"
    result = invoke(url, "donor", "list")
    assert result.exit_code == ExitCode.FAILURE  # type: ignore[attr-defined]
    assert "cannot be reached" in result.stderr  # type: ignore[attr-defined]
    assert "s3cret-pw" not in result.output and "***" in result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]


def test_a_database_without_the_schema_says_to_run_init(tmp_path: Path) -> None:
    result = invoke(f"sqlite:///{tmp_path / 'empty.db'}", "pool", "list")
    assert result.exit_code == ExitCode.FAILURE  # type: ignore[attr-defined]
    assert "run `plasmatrace init` first" in result.stderr  # type: ignore[attr-defined]
