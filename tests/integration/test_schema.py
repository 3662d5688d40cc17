"""The migrations build exactly the models' schema, on each engine; the core stays free of CLI toolkits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from traceability.db import make_engine
from traceability.migrate import current_revision, head_revision, upgrade

ROOT = Path(__file__).resolve().parents[2]


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    engine.dispose()
    assert diff == []


def test_upgrading_an_up_to_date_database_changes_nothing(db_url: str) -> None:
    engine = make_engine(db_url)
    before, after = upgrade(engine)
    engine.dispose()
    assert before == after == head_revision()


def test_the_core_imports_neither_typer_nor_rich() -> None:
    script = Path(sys.executable).parent / "lint-imports"
    command = [str(script)] if script.exists() else ["lint-imports"]
    result = subprocess.run(
        [*command, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout
