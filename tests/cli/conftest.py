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
from tests.factories import cli_actor
from traceability import db
from traceability.config import normalise_database_url
from traceability.db import make_engine
from traceability.errors import ExitCode


@dataclass
class Cli:
    """Runs `plasmatrace` in-process against one database and checks what every run must satisfy."""

    db_url: str
    workdir: Path
    runner: CliRunner = field(default_factory=CliRunner)
    one_person: bool = True  # separation of duties off (see env)

    @property
    def env(self) -> dict[str, str | None]:
        # One person runs every command here: on PostgreSQL the login (the only actor it accepts), and separation
        # of duties is off so that who records may also release. tests/identity tests roles, duties and
        # signatures with logins of their own on a password-checking server.
        policy = None
        if self.one_person:
            path = self.workdir / "one-person-policy.toml"
            if not path.exists():
                path.write_text("[release]\nseparate_duties = false\n", encoding="utf-8")
            policy = str(path)
        return {
            "PLASMATRACE_DB": self.db_url,
            "PLASMATRACE_ACTOR": cli_actor(self.db_url),
            "PLASMATRACE_POLICY": policy,
        }

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


def dispose_engines(db_url: str, folder: Path) -> None:
    """Close the engines the CLI cached (one per URL, for the life of the process) for this test's databases."""
    for url in list(db._engines):
        if url.split("|")[0] == normalise_database_url(db_url) or str(folder) in url:
            db._engines.pop(url).dispose()


@pytest.fixture(name="run")
def run_fixture(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """A CLI runner on a committed, migrated database; the working directory is a scratch folder."""
    monkeypatch.chdir(tmp_path)
    yield Cli(db_url=db_url, workdir=tmp_path)
    dispose_engines(db_url, tmp_path)


@pytest.fixture(name="fresh")
def fresh_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """A CLI runner on a SQLite file that does not exist yet (no schema)."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'site.db'}"
    yield Cli(db_url=url, workdir=tmp_path)
    dispose_engines(url, tmp_path)


@pytest.fixture(name="bare")
def bare_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A runner for commands that never open the database (help, usage errors, policy)."""
    monkeypatch.chdir(tmp_path)
    return Cli(db_url=f"sqlite:///{tmp_path / 'unused.db'}", workdir=tmp_path, one_person=False)


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
