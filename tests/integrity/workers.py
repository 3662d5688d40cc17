"""Work run in separate processes by the integrity tests (importable, so spawned processes can find it)."""

from __future__ import annotations

from datetime import timedelta

from traceability.db import make_engine, transaction
from traceability.models import Marker, ResultValue
from traceability.services import donors, units

NOW_DAYS_AGO = 120


def write_many(url: str, worker: int, operations: int, site: str) -> int:
    """One process's share of a write storm: donors, units and results, one unit of work each."""
    from tests.factories import NOW

    engine = make_engine(url, lock_timeout_s=120)
    done = 0
    for i in range(operations):
        with transaction(engine) as session:
            kind = i % 3
            code = f"W{worker:02d}-{i // 3:05d}"
            if kind == 0:
                donors.add_donor(
                    session, donor_code=code, establishment=site, registered_on=None, actor=f"worker-{worker}"
                )
            elif kind == 1:
                units.add_donation(
                    session,
                    unit_number=f"U-{code}",
                    donor_code=code,
                    collected_at=NOW - timedelta(days=NOW_DAYS_AGO),
                    volume_ml=700,
                    actor=f"worker-{worker}",
                )
            else:
                units.add_result(
                    session,
                    unit_number=f"U-{code}",
                    marker=Marker.HBSAG,
                    result=ResultValue.NONREACTIVE,
                    tested_at=NOW,
                    actor=f"worker-{worker}",
                )
        done += 1
    engine.dispose()
    return done
