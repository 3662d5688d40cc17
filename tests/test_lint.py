"""The linter and the type checker run with the tests: among the linter's rules, S608 refuses SQL built from strings
(SPEC §9); mypy checks traceability/ and cli/ strictly, as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_sql_rule_is_on() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"S608"' in text.split("[tool.ruff.lint]")[1].split("\n\n")[0]


def test_mypy_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_strict_for_the_core_and_the_cli() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    settings = text.split("[tool.mypy]")[1].split("\n\n")[0]
    assert "strict = true" in settings
    assert 'files = ["traceability", "cli"]' in settings
