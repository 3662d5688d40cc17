"""A small lineage for report and export tests: two released pools of 1,000 donors, an intermediate lot made from
them with quantities, a final lot, a step on each, two shipments to consignees with non-Latin names.

``built_lineage`` is a module-scoped fixture (SQLite, and PostgreSQL when configured) holding that lineage
committed once, for the tests that only read it; tests that change data build their own in ``session``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.factories import (
    ACTOR,
    APPROVER,
    NOW,
    backdate_release,
    bulk_units,
    make_consignee,
    make_released_pool,
    make_step,
)
from traceability.db import make_engine
from traceability.migrate import upgrade
from traceability.models import LotKind, LotUnit, StepMethod
from traceability.services import lots


def build_lineage(session: Session) -> dict[str, Any]:
    """Two pools -> an intermediate (with quantities) -> a final lot, steps on each level, two shipments."""
    a = bulk_units(session, donors_count=1000)
    make_released_pool(session, pool_number="P-A", members=a)
    b = bulk_units(session, donors_count=1000)
    make_released_pool(session, pool_number="P-B", members=b)
    make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0, parameters={"TNBP": "0.3%"})
    make_step(session, pool="P-B", method=StepMethod.SOLVENT_DETERGENT, enveloped=5.5)
    lots.create_lot(
        session,
        lot_number="FII-1",
        product="ivig",
        kind=LotKind.INTERMEDIATE,
        inputs=[lots.InputSpec("pool", "P-A", 700, "L"), lots.InputSpec("pool", "P-B", 650, "L")],
        actor=ACTOR,
        quantity=100,
        unit=LotUnit.KG,
    )
    make_step(session, lot="FII-1", method=StepMethod.LOW_PH, enveloped=4.5, parameters={"pH": "4.0", "hours": "21"})
    lots.release_lot(session, lot_number="FII-1", actor=APPROVER)
    lots.create_lot(
        session,
        lot_number="IVG-1",
        product="ivig",
        kind=LotKind.FINAL,
        inputs=[lots.InputSpec("lot", "FII-1", 40)],
        actor=ACTOR,
        quantity=2000,
        unit=LotUnit.VIALS,
    )
    make_step(session, lot="IVG-1", method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.2)
    lots.release_lot(session, lot_number="IVG-1", actor=APPROVER)
    backdate_release(session, "IVG-1")  # released "yesterday": the records are dated as of NOW
    for consignee, quantity in (("Szpital Łódź", 40), ("東京病院", 25)):
        to = make_consignee(session, name=consignee)
        lots.ship_lot(session, lot_number="IVG-1", consignee=to, quantity=quantity, shipped_on=NOW.date(), actor=ACTOR)
    return {"a": a, "b": b}


@pytest.fixture(name="built", scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def built_fixture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Session, dict[str, Any]]]:
    """The lineage, committed once per module and engine; a session to read it (tests must not write)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("lineage") / "lineage.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = create_postgres_database()
        upgrade(make_engine(url))
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        with session.begin():
            made = build_lineage(session)
        yield session, made
    engine.dispose()
    if request.param != "sqlite":
        drop_postgres_database(url)
