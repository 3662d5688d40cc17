"""A lot release and a reactive pool retest at the same moment: the retest waits for the release, then holds the
lot it released; neither deadlocks nor misses the other."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlmodel import Session

from tests.factories import ACTOR, APPROVER, NOW, make_lot, make_released_pool, make_step
from traceability.db import make_engine
from traceability.models import Lot, LotStatus, Marker, ResultValue, StepMethod
from traceability.services import lots, pools


def test_a_pool_retest_during_a_lot_release_waits_and_then_holds_the_released_lot(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine, expire_on_commit=False) as session, session.begin():
        make_released_pool(session, pool_number="P-A", bulk=True)
        make_step(session, pool="P-A", method=StepMethod.SOLVENT_DETERGENT, enveloped=6.0)
        make_lot(session, lot_number="FIN-1", inputs=[("pool", "P-A")])
        make_step(session, lot="FIN-1", method=StepMethod.NANOFILTRATION, enveloped=5.0, non_enveloped=4.5)

    retest_done = threading.Event()
    errors: list[BaseException] = []

    def retest() -> None:
        try:
            with Session(engine, expire_on_commit=False) as other, other.begin():
                pools.test_pool(
                    other,
                    pool_number="P-A",
                    marker=Marker.HCV_RNA,
                    result=ResultValue.REACTIVE,
                    tested_at=NOW,
                    actor=ACTOR,
                )
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            retest_done.set()

    with Session(engine, expire_on_commit=False) as session, session.begin():
        lots.release_lot(session, lot_number="FIN-1", actor=APPROVER)
        worker = threading.Thread(target=retest)
        worker.start()
        time.sleep(1.0)
        assert not retest_done.is_set(), "the retest did not wait for the release holding the lineage"
    worker.join(timeout=60)
    assert not errors, errors
    with Session(engine) as session:
        lot = session.execute(select(Lot).where(Lot.lot_number == "FIN-1")).scalar_one()
        assert (lot.status, lot.status_reason) == (LotStatus.QUARANTINED, "pool P-A hcv-rna: reactive (version 2)")
    engine.dispose()
