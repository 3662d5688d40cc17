"""CLI fixtures: a runner bound to the per-test database (`db_url`: SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from typer.testing import CliRunner, Result

import cli
from traceability import db
from traceability.config import normalise_database_url
from traceability.db import make_engine
from traceability.errors import ExitCode

ACTOR = "qa.tester"


@dataclass
class Cli:
    """Runs `plasmatrace` in-process against one database and checks what every run must satisfy."""

    db_url: str
    workdir: Path
    runner: CliRunner = field(default_factory=CliRunner)

    @property
    def env(self) -> dict[str, str | None]:
        return {"PLASMATRACE_DB": self.db_url, "PLASMATRACE_ACTOR": ACTOR, "PLASMATRACE_POLICY": None}

    def __call__(self, *args: str, code: int | None = ExitCode.OK) -> Result:
        """Invoke with ``args``; assert the exit code (None: any non-zero) and that nothing crashed."""
        result = self.runner.invoke(cli.app, list(args), env=self.env)
        shown = f"plasmatrace {' '.join(args)}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            crash = "".join(traceback.format_exception(result.exception))
            pytest.fail(f"unexpected exception from {shown}\n{crash}")
        if code is None:
            assert result.exit_code != ExitCode.OK, shown
        else:
            assert result.exit_code == code, shown
        assert "Traceback" not in result.output, shown
        return result

    def json(self, *args: str) -> Any:
        """Run a command with ``--format json``: stdout must be exactly one JSON document."""
        result = self(*args, "--format", "json")
        return json.loads(result.stdout)

    def units_file(self, numbers: list[str], name: str = "units.txt") -> str:
        path = self.workdir / name
        path.write_text("\n".join(numbers) + "\n", encoding="utf-8")
        return str(path)


@pytest.fixture(name="run")
def run_fixture(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """A CLI runner on a committed, migrated database; the working directory is a scratch folder."""
    monkeypatch.chdir(tmp_path)
    yield Cli(db_url=db_url, workdir=tmp_path)
    # The CLI keeps one engine per URL for the life of the process: close this test's.
    engine = db._engines.pop(normalise_database_url(db_url), None)
    if engine is not None:
        engine.dispose()


@contextmanager
def seeded(db_url: str) -> Iterator[Session]:
    """A session on the test database whose work is committed on exit, for building fixtures fast."""
    engine = make_engine(db_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
            session.commit()
    finally:
        engine.dispose()
