"""Viral inactivation and removal steps on pools and lots."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from .. import audit
from ..errors import InvalidInput, WrongState
from ..models import Donation, LotStatus, PoolMember, PoolStatus, Step, StepMethod, StepOutcome, utcnow
from ..plausibility import check_step
from ..queries.graph import upstream
from ..queries.lookup import get_lot, get_pool, get_step
from ..rules import ENVELOPED, NON_ENVELOPED


def add_step(
    session: Session,
    *,
    method: StepMethod,
    started_at: datetime,
    ended_at: datetime,
    actor: str,
    pool_number: str | None = None,
    lot_number: str | None = None,
    parameters: dict[str, str] | None = None,
    lrv: dict[str, float] | None = None,
    outcome: StepOutcome = StepOutcome.COMPLETED,
    operator: str | None = None,
) -> Step:
    """Record a step applied to a closed pool or an unreleased lot; its key is TARGET-S<n>."""
    if (pool_number is None) == (lot_number is None):
        raise InvalidInput("A step applies to exactly one target: give --pool or --lot.")
    lrv = lrv or {}
    unknown = sorted(set(lrv) - {ENVELOPED, NON_ENVELOPED})
    if unknown:
        raise InvalidInput(f"--lrv class {', '.join(unknown)} is not one of: enveloped, non-enveloped.")
    bad = {k: v for k, v in lrv.items() if v < 0 or v > 20}
    if bad:
        raise InvalidInput(f"--lrv values must lie between 0 and 20 log10; got {bad}.")
    if ended_at < started_at:
        raise InvalidInput(f"Step ends at {ended_at.isoformat()}, before it starts at {started_at.isoformat()}.")
    if pool_number is not None:
        pool = get_pool(session, pool_number, for_update=True)
        if pool.status not in (PoolStatus.CLOSED, PoolStatus.RELEASED):
            raise WrongState(
                f"Pool {pool.pool_number} is {pool.status.value}; steps apply to closed or released pools."
            )
        target, where = pool.pool_number, Step.pool_id == pool.id
        ids = {"pool_id": pool.id}
        began, life = _material_began(session, {pool.id}), f"the last unit of pool {pool.pool_number} was collected"
    else:
        lot = get_lot(session, lot_number or "", for_update=True)
        if lot.status != LotStatus.PENDING:
            raise WrongState(f"Lot {lot.lot_number} is {lot.status.value}; steps apply to lots not yet released.")
        target, where = lot.lot_number, Step.lot_id == lot.id
        ids = {"lot_id": lot.id}
        began = _material_began(session, upstream(session, lot.id or 0).pool_ids)
        life = f"the last unit upstream of lot {lot.lot_number} was collected"
    n = (session.execute(select(func.count(Step.id)).where(where)).scalar() or 0) + 1
    check_step(
        f"Step {target}-S{n} ({method.value})",
        started_at=started_at,
        ended_at=ended_at,
        began=began,
        target=life,
        now=utcnow(),
    )
    step = Step(
        step_key=f"{target}-S{n}",
        method=method,
        started_at=started_at,
        ended_at=ended_at,
        parameters=parameters or {},
        lrv_enveloped=lrv.get(ENVELOPED),
        lrv_non_enveloped=lrv.get(NON_ENVELOPED),
        outcome=outcome,
        operator=operator or actor,
        created_by=actor,
        **ids,
    )
    session.add(step)
    session.flush()
    audit.record(
        session,
        action="step.added",
        entity_type="pool" if pool_number else "lot",
        entity_key=target,
        actor=actor,
        new={
            "step": step.step_key,
            "method": method,
            "started_at": started_at,
            "ended_at": ended_at,
            "parameters": step.parameters,
            "lrv": lrv,
            "outcome": outcome,
            "operator": step.operator,
        },
    )
    return step


def _material_began(session: Session, pool_ids: set[int]) -> datetime | None:
    """When a pool's (or a lot's) material existed at the earliest: the latest collection of a unit in it.
    Records entered after the fact keep their own times, so the record's creation time is no bound."""
    if not pool_ids:
        return None
    return session.execute(
        select(func.max(Donation.collected_at))
        .join(PoolMember, PoolMember.donation_id == Donation.id)
        .where(PoolMember.pool_id.in_(pool_ids))
    ).scalar()


def close_deviation(session: Session, *, step_key: str, reason: str, actor: str) -> Step:
    """Close the deviation of a step after QA's assessment; the step then counts again."""
    reason = audit.require_reason(reason, f"Closing the deviation of step {step_key}")
    step = get_step(session, step_key)
    if step.outcome != StepOutcome.DEVIATION:
        raise WrongState(f"Step {step.step_key} is {step.outcome.value}; only a deviation can be closed.")
    if step.deviation_closed_at is not None:
        raise WrongState(f"The deviation of step {step.step_key} was already closed.")
    step.deviation_closed_at, step.deviation_closure = utcnow(), reason
    session.flush()
    audit.record(
        session,
        action="step.deviation_closed",
        entity_type="step",
        entity_key=step.step_key,
        actor=actor,
        old={"deviation_open": True},
        new={"deviation_open": False},
        reason=reason,
    )
    return step
