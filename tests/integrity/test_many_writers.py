"""Many writers at once: no write lost, and the audit trail stays one unbroken chain."""

from __future__ import annotations

import multiprocessing
import os

from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import make_establishment
from tests.integrity.workers import write_many
from traceability import audit
from traceability.db import make_engine
from traceability.models import AuditEvent, Donation, Donor, TestResult

WORKERS = 8
OPERATIONS = int(os.environ.get("PLASMATRACE_TEST_WRITER_OPS", "201"))


def test_eight_processes_writing_at_once_lose_nothing_and_keep_one_chain(db_url: str) -> None:
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        site = make_establishment(session, code="C-STORM")
    context = multiprocessing.get_context("spawn")
    with context.Pool(WORKERS) as workers:
        done = workers.starmap(write_many, [(db_url, w, OPERATIONS, site) for w in range(WORKERS)])
    assert done == [OPERATIONS] * WORKERS
    per_kind = OPERATIONS // 3
    with Session(engine) as session:
        assert session.execute(select(func.count(Donor.id))).scalar() == WORKERS * per_kind
        assert session.execute(select(func.count(Donation.id))).scalar() == WORKERS * per_kind
        assert session.execute(select(func.count(TestResult.id))).scalar() == WORKERS * per_kind
        events = session.execute(select(func.count(AuditEvent.id))).scalar()
        assert events == 1 + WORKERS * OPERATIONS
        result = audit.verify(session)
        assert result.ok, result.problem
        assert result.events == events and result.head_seq == events
    engine.dispose()
