"""Every command and group explains itself, and every command shows an example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[2]


Node = tuple[tuple[str, ...], Any]  # (command path, Click command or group)


def is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def walk(command: Any, path: tuple[str, ...] = ()) -> list[Node]:
    """Every group and command under ``command``, depth first, with the words that invoke it."""
    found: list[Node] = [(path, command)]
    if is_group(command):
        for name, sub in sorted(command.commands.items()):
            found += walk(sub, (*path, name))
    return found


TREE = walk(typer.main.get_command(cli.app))
GROUPS = [(path, c) for path, c in TREE if is_group(c)]
LEAVES = [(path, c) for path, c in TREE if not is_group(c)]


def label(item: Node) -> str:
    return " ".join(item[0]) or "plasmatrace"


def test_the_command_tree_has_the_documented_groups_and_commands() -> None:
    paths = {" ".join(path) for path, _ in TREE}
    for expected in (
        "init",
        "establishment add",
        "establishment list",
        "donor add",
        "donor show",
        "donor list",
        "donor defer",
        "donation add",
        "donation show",
        "donation list",
        "donation correct",
        "donation discard",
        "result add",
        "pool create",
        "pool add",
        "pool close",
        "pool test",
        "pool release",
        "pool show",
        "pool list",
        "step add",
        "lot create",
        "lot release",
        "lot show",
        "lot list",
        "lot ship",
        "trace donor",
        "trace unit",
        "trace pool",
        "trace lot",
        "audit log",
        "audit verify",
        "audit checkpoint",
        "policy show",
        "unit add",
    ):
        assert expected in paths, expected


@pytest.mark.parametrize("item", GROUPS, ids=label)
def test_every_group_has_help_text(item: Node) -> None:
    path, group = item
    assert (group.help or "").strip(), label(item)
    result = CliRunner().invoke(cli.app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert group.help.split()[0] in result.stdout


@pytest.mark.parametrize("item", LEAVES, ids=label)
def test_every_command_has_help_text_with_an_example(item: Node) -> None:
    path, command = item
    text = (command.help or "").strip()
    assert text, label(item)
    assert "Example:" in text, label(item)
    example = text.split("Example:", 1)[1].split()
    assert example[0] == "plasmatrace", label(item)
    result = CliRunner().invoke(cli.app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.stdout
    assert "Traceback" not in result.output


def test_members_is_offered_by_the_pool_and_lot_traces_only() -> None:
    """A donor trace lists every donation of the donor already, and a unit is one donation: its pool's other
    members are `trace pool POOL --members`."""
    offered = {label(item) for item in LEAVES if any("--members" in p.opts for p in item[1].params)}
    assert {"trace pool", "trace lot"} <= offered
    assert not {"trace donor", "trace unit"} & offered
    result = CliRunner().invoke(cli.app, ["trace", "donor", "D-000123", "--members"])
    assert result.exit_code == 2 and "--members" in result.output


def test_python_m_cli_help_runs_from_the_repository_root() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout
    for path, group in GROUPS:
        if len(path) == 1 and not group.hidden:
            assert path[0] in done.stdout
    assert "Traceback" not in done.stderr
