"""Separation of duties in the services, on SQLite and PostgreSQL (policy release.separate_duties)."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from tests.factories import ACTOR, APPROVER, make_lot, make_released_pool, make_step
from traceability.errors import DutiesNotSeparated, ExitCode
from traceability.models import LotKind, StepMethod
from traceability.rules import Policy, ReleasePolicy
from traceability.services import lots


def test_the_creator_of_a_lot_does_not_release_it_unless_the_policy_says_so(session: Session) -> None:
    pool = make_released_pool(session, pool_number="P-DUTIES", bulk=True)
    lot = make_lot(session, inputs=[("pool", pool)], kind=LotKind.INTERMEDIATE)
    with pytest.raises(DutiesNotSeparated) as refused:
        lots.release_lot(session, lot_number=lot, actor=ACTOR)
    assert refused.value.exit_code == ExitCode.NOT_PERMITTED
    assert f"Lot {lot} cannot be released by {ACTOR}, who created lot {lot}" in str(refused.value)
    # Also who recorded a step upstream, or a pool test of an upstream pool.
    step = make_step(session, pool=pool, method=StepMethod.SOLVENT_DETERGENT, enveloped=5)
    with pytest.raises(DutiesNotSeparated) as again:
        lots.release_lot(session, lot_number=lot, actor=ACTOR)
    assert f"recorded step {step}" in str(again.value) and f"of pool {pool}" in str(again.value)
    one_person = Policy(release=ReleasePolicy(separate_duties=False))
    assert lots.release_lot(session, lot_number=lot, actor=ACTOR, policy=one_person).status.value == "released"


def test_another_approver_releases_the_lot(session: Session) -> None:
    pool = make_released_pool(session, pool_number="P-DUTIES", bulk=True)
    lot = make_lot(session, inputs=[("pool", pool)], kind=LotKind.INTERMEDIATE)
    assert lots.release_lot(session, lot_number=lot, actor=APPROVER).status.value == "released"
