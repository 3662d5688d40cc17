"""Every difference between SQLite and PostgreSQL is decided under traceability/db/: nothing else reads the engine's
name (the issue's seam), so that a third engine, or a change in how one is used, touches one package."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEAM = ROOT / "traceability" / "db"

# Reading the engine's name, its driver's name or the URL's backend, or a local helper that does.
ENGINE_NAME = re.compile(
    r"dialect\.name\b|dialect\.driver\b|\.drivername\b|get_backend_name\(|get_driver_name\("
    r"|\bdef\s+is_(sqlite|postgres(ql)?)\b|\bname\s*==\s*[\"'](sqlite|postgresql)[\"']"
)


def _sources() -> list[Path]:
    files = [*sorted((ROOT / "cli").rglob("*.py")), *sorted((ROOT / "traceability").rglob("*.py"))]
    return [f for f in files if SEAM not in f.parents]


def test_only_the_db_package_reads_which_database_engine_it_talks_to() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if ENGINE_NAME.search(line)
    ]
    assert found == [], "decide this in traceability/db/ (dialect.py or bulk.py):\n" + "\n".join(found)


def test_the_seam_check_finds_an_engine_name_read_outside_the_db_package() -> None:
    assert ENGINE_NAME.search('    if session.get_bind().dialect.name == "postgresql":')
    assert ENGINE_NAME.search("    sqlite = conn.dialect.name == 'sqlite'")
    assert ENGINE_NAME.search('    if url.get_backend_name() != "postgresql":')
    assert ENGINE_NAME.search("def is_sqlite(bind: Bind) -> bool:")
    assert not ENGINE_NAME.search("    if dialect.is_postgresql(session):")
