"""The migrations build exactly the models' schema, on each engine; the core stays free of CLI toolkits."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from tests.conftest import create_postgres_database, drop_postgres_database
from traceability import audit
from traceability.db import make_engine, transaction
from traceability.importers.load import import_file
from traceability.migrate import alembic_config, current_revision, head_revision, upgrade

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


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_database_with_rows_upgrades_from_the_first_schema_keeping_them_and_their_keys(
    backend: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else create_postgres_database()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0001")
        # Rows as the first schema held them: written with plain SQL, since today's models have columns it lacks.
        site = "C-OLD"
        with engine.begin() as conn:
            stamp = {"at": datetime(2026, 1, 5, 9, 0, tzinfo=UTC), "by": "qa.old"}
            conn.execute(
                text(
                    "INSERT INTO establishment (code, name, kind, created_at, created_by) "
                    "VALUES (:code, 'Old centre', 'collection', :at, :by)"
                ),
                {"code": site, **stamp},
            )
            conn.execute(
                text(
                    "INSERT INTO donor (donor_code, establishment_id, created_at, created_by) "
                    "SELECT 'D-OLD', id, :at, :by FROM establishment WHERE code = :code"
                ),
                {"code": site, **stamp},
            )
            conn.execute(
                text(
                    "INSERT INTO donation (unit_number, scheme, donor_id, collected_at, volume_ml, plasma_kind, "
                    "status, version, created_at, created_by) "
                    "SELECT 'A999926000777', 'isbt128', id, :at, 750, 'source', 'in-inventory', 1, :at, :by "
                    "FROM donor WHERE donor_code = 'D-OLD'"
                ),
                stamp,
            )
            unit_id = conn.execute(text("SELECT id FROM donation")).scalar_one()
        path = tmp_path / "donors.csv"
        path.write_text(f"donor_code,establishment\nOLD-1,{site}\n", encoding="utf-8")
        with transaction(engine) as session:
            import_file(session, "donors", path, actor="qa.import")

        before, after = upgrade(engine)

        assert (before, after) == ("0001", head_revision())
        with transaction(engine) as session:
            assert session.execute(text("SELECT count(*) FROM donation")).scalar_one() == 1
            assert session.execute(text("SELECT timezone FROM establishment")).scalars().all() == ["UTC"]
            imported = session.execute(text("SELECT import_event_id FROM donor WHERE donor_code = 'OLD-1'")).scalar()
            assert imported is not None
            assert audit.verify(session).ok
        with pytest.raises(IntegrityError), transaction(engine) as session:  # the other keys still hold
            session.execute(text("UPDATE donation SET donor_id = 987654 WHERE id = :id"), {"id": unit_id})
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_postgres_database(url)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_free_text_consignees_become_records_with_an_unknown_address(backend: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if backend == "sqlite" else create_postgres_database()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0002")
            conn.execute(
                text(
                    "INSERT INTO lot (created_at, created_by, lot_number, product, kind, status) "
                    "VALUES (CURRENT_TIMESTAMP, 'qa', 'IVG-OLD', 'ivig', 'final', 'released')"
                )
            )
            for n, name in enumerate(["St Mary's Hospital", "Clinic B", "St Mary's Hospital"], start=1):
                conn.execute(
                    text(
                        "INSERT INTO shipment (created_at, created_by, shipment_number, lot_id, consignee, quantity, "
                        "shipped_on) SELECT CURRENT_TIMESTAMP, 'qa', :number, id, :name, 5, '2026-01-05' FROM lot"
                    ),
                    {"number": f"IVG-OLD-SH{n:03d}", "name": name},
                )
        upgrade(engine)
        with engine.connect() as conn:
            consignees = conn.execute(text("SELECT code, name, address FROM consignee ORDER BY code")).all()
            shipped = conn.execute(
                text(
                    "SELECT s.shipment_number, c.code FROM shipment s JOIN consignee c ON c.id = s.consignee_id "
                    "ORDER BY s.shipment_number"
                )
            ).all()
            lot = conn.execute(text("SELECT quantity, drawn, shipped FROM lot")).one()
        assert [tuple(r) for r in consignees] == [
            ("LEGACY-0001", "Clinic B", "unknown"),
            ("LEGACY-0002", "St Mary's Hospital", "unknown"),
        ]
        assert [tuple(r) for r in shipped] == [
            ("IVG-OLD-SH001", "LEGACY-0002"),
            ("IVG-OLD-SH002", "LEGACY-0001"),
            ("IVG-OLD-SH003", "LEGACY-0002"),
        ]
        assert tuple(lot) == (None, 0, 15)  # no recorded quantity (it cannot ship); what it shipped is counted
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_postgres_database(url)
