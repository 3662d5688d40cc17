"""Random arguments for every command: never a traceback, only SPEC exit codes, and the audit trail intact after."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import cli
from tests.cli.conftest import dispose_engines, seeded
from tests.factories import make_consignee, make_donor, make_establishment, make_unit
from traceability.errors import ExitCode
from traceability.services import pools

SPEC_CODES = {ExitCode.OK, ExitCode.USAGE, ExitCode.RULE_VIOLATION, ExitCode.NOT_FOUND, ExitCode.INVALID_INPUT}
SPEC_CODES |= {ExitCode.CONFLICT, ExitCode.NOT_PERMITTED}
SKIPPED = {("demo",)}  # builds a whole site: minutes, and it refuses a database with data anyway

VALUES = [
    "C-1", "D-1", "P-1", "H-1", "L-1", "A999926123456", "=A99992612345600", "Q12342690001", "W123426145963-00",
    "2026-03-01T09:30Z", "2026-03-01", "1850-01-01", "2031-01-01", "9999-12-31T23:59:59-14:00", "700", "0", "-1",
    str(2**31), str(2**63), "1e400", "nan", "enveloped=3", "volume_ml=100", "P-1=10L", "P-1=10", "ivig", "collection",
    "json", "csv", "table", "html", "pdf", "nonreactive", "R", "hbsag", "x" * 300, "Hosp\x1b]52;c;aGk=\x07",
    "D-000\uff18\uff15\uff15", "=HYPERLINK(1)", "", " ", "\n", "-", "LB-2026-0001", "a\x00b",
]  # fmt: skip
value = st.one_of(st.sampled_from(VALUES), st.text(max_size=12))


def commands() -> list[tuple[tuple[str, ...], Any]]:
    root = typer.main.get_command(cli.app)
    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(group: Any, path: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, (*path, name))
            elif (*path, name) not in SKIPPED:
                found.append(((*path, name), command))

    walk(root, ())  # type: ignore[arg-type]
    return sorted(found, key=lambda item: item[0])


COMMANDS = commands()


@st.composite
def invocation(draw: Any) -> list[str]:
    path, command = draw(st.sampled_from(COMMANDS))
    args = list(path)
    for param in command.params:
        if param.name == "help":
            continue
        if param.param_type_name == "argument":
            count = draw(st.integers(0, 2)) if param.nargs == -1 else (1 if draw(st.integers(0, 19)) else 0)
            args += [draw(value) for _ in range(count)]
        elif param.param_type_name == "option" and (param.required and draw(st.integers(0, 19)) or draw(st.booleans())):
            flag = param.opts[0]
            if getattr(param, "is_flag", False):
                args.append(flag)
                continue
            for _ in range(draw(st.integers(1, 2)) if getattr(param, "multiple", False) else 1):
                args += [flag, draw(value)]
    return args


@pytest.fixture(name="site_url")
def site_url_fixture(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "site.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    with seeded(url) as session:
        site = make_establishment(session, code="C-1")
        donor = make_donor(session, establishment=site, donor_code="D-1")
        make_unit(session, donor=donor, unit_number="A999926123456")
        pools.create_pool(session, pool_number="P-1", product="ivig", actor="qa")
        make_consignee(session, "H-1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield url
    dispose_engines(url, tmp_path)


def test_random_arguments_to_every_command_end_cleanly_and_leave_the_audit_trail_whole(site_url: str) -> None:
    runner = CliRunner()
    env = {"PLASMATRACE_DB": site_url, "PLASMATRACE_ACTOR": "fuzz", "PLASMATRACE_POLICY": None}

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(invocation())
    def one(args: list[str]) -> None:
        result = runner.invoke(cli.app, args, env=env)
        shown = f"plasmatrace {args!r}\n{result.output}"
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(shown) from result.exception
        assert result.exit_code in SPEC_CODES, shown
        assert "Traceback" not in result.output, shown

    one()
    verified = runner.invoke(cli.app, ["audit", "verify"], env=env)
    assert verified.exit_code == ExitCode.OK, verified.output
