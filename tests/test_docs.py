"""README documents every command, and every command's help carries an example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main

from cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def leaf_commands() -> list[tuple[str, Any]]:
    root = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []

    def walk(prefix: str, command: Any) -> None:
        if hasattr(command, "commands"):  # a group (Typer vendors its own Click classes)
            for name, sub in command.commands.items():
                if not sub.hidden:
                    walk(f"{prefix} {name}", sub)
        else:
            found.append((prefix, command))

    walk("plasmatrace", root)
    return found


def test_every_command_is_in_the_readme_tour() -> None:
    missing = [path for path, _ in leaf_commands() if path not in README]
    assert missing == []


def test_every_command_has_help_with_an_example() -> None:
    without = [path for path, command in leaf_commands() if "Example:" not in (command.help or "")]
    assert without == []


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text(encoding="utf-8")
    test_command = 'python -m pip install -e ".[test]" && python -m pytest'
    assert "python -m pip install -e . && plasmatrace demo" in README
    assert test_command in README
    assert test_command in ci


def test_readme_lists_every_audit_action_of_the_catalogue() -> None:
    import re

    from traceability.audit import catalogue

    section = README.split("### Audit events", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([a-z._-]+)` \|", section, flags=re.MULTILINE))
    assert listed == set(catalogue.catalogue())
