"""Viral inactivation and removal steps on pools and lots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, col

from .. import audit
from ..errors import InvalidInput, WrongState
from ..models import (
    Donation,
    Lot,
    LotStatus,
    Pool,
    PoolMember,
    PoolStatus,
    Step,
    StepMethod,
    StepOutcome,
    saved_id,
    utcnow,
)
from ..plausibility import check_step
from ..queries.clearance import lot_blockers, step_facts
from ..queries.graph import upstream
from ..queries.lookup import get_lot, get_pool, get_step
from ..rules import DEFAULT_POLICY, ENVELOPED, NON_ENVELOPED, Policy, step_release_problem
from .holds import HeldLots, hold_downstream


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
) -> RecordedStep:
    """Record a step applied to a closed or released pool or a pending or released lot; its key is TARGET-S<n>.

    A failed step, or one with a deviation, holds every pending or released lot downstream of its pool or lot
    (``hold_downstream``), as a reactive pool retest does. Raises InvalidInput, WrongState."""
    if (pool_number is None) == (lot_number is None):
        raise InvalidInput("A step applies to exactly one target: give --pool or --lot.")
    lrv = lrv or {}
    unknown = sorted(set(lrv) - {ENVELOPED, NON_ENVELOPED})
    if unknown:
        raise InvalidInput(f"--lrv class {', '.join(unknown)} is not one of: enveloped, non-enveloped.")
    bad = {k: v for k, v in lrv.items() if not (0 <= v <= 20)}  # NaN fails this too
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
        target, where = pool.pool_number, col(Step.pool_id) == pool.id
        lot_was_released = False
        pool_id, lot_id = pool.id, None
        began, life = (
            _material_began(session, {saved_id(pool.id)}),
            f"the last unit of pool {pool.pool_number} was collected",
        )
    else:
        lot = get_lot(session, lot_number or "", for_update=True)
        # A released lot takes only a finding: a failed step or a deviation discovered later (it holds the lot and
        # everything made from it); a completed step after release would change a clearance already judged.
        finding = outcome in (StepOutcome.FAILED, StepOutcome.DEVIATION)
        if lot.status != LotStatus.PENDING and not (finding and lot.status == LotStatus.RELEASED):
            raise WrongState(
                f"Lot {lot.lot_number} is {lot.status.value}; steps apply to lots not yet released "
                "(a released lot takes only a failed step or a deviation found later)."
            )
        target, where = lot.lot_number, col(Step.lot_id) == lot.id
        pool_id, lot_id = None, lot.id
        lot_was_released = lot.status == LotStatus.RELEASED
        began = _material_began(session, upstream(session, lot.id or 0).pool_ids)
        life = f"the last unit upstream of lot {lot.lot_number} was collected"
    n = (session.execute(select(func.count(col(Step.id))).where(where)).scalar() or 0) + 1
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
        pool_id=pool_id,
        lot_id=lot_id,
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
    held = HeldLots([], [], [])
    if (problem := step_release_problem(step_facts(step))) is not None:
        held = hold_downstream(
            session,
            pool_ids=[step.pool_id] if step.pool_id is not None else [],
            lot_ids=[step.lot_id] if step.lot_id is not None else [],
            reason=_hold_reason(session, step, problem),
            actor=actor,
            # A failed step or deviation found on a released lot takes that lot itself out of release too.
            itself=[step.lot_id] if step.lot_id is not None and lot_was_released else [],
        )
    return RecordedStep(step, held)


def _material_began(session: Session, pool_ids: set[int]) -> datetime | None:
    """When a pool's (or a lot's) material existed at the earliest: the latest collection of a unit in it.
    Records entered after the fact keep their own times, so the record's creation time is no bound."""
    if not pool_ids:
        return None
    return session.execute(
        select(func.max(col(Donation.collected_at)))
        .join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
        .where(col(PoolMember.pool_id).in_(pool_ids))
    ).scalar()


@dataclass(frozen=True)
class RecordedStep:
    """A step just recorded and the lots it put on hold (a failed step or a deviation)."""

    step: Step
    held: HeldLots

    @property
    def step_key(self) -> str:
        return self.step.step_key


def _hold_reason(session: Session, step: Step, problem: str) -> str:
    if step.pool_id is not None:
        on = "pool " + session.execute(select(col(Pool.pool_number)).where(col(Pool.id) == step.pool_id)).scalar_one()
    else:
        on = "lot " + session.execute(select(col(Lot.lot_number)).where(col(Lot.id) == step.lot_id)).scalar_one()
    return f"{problem} on {on}"


@dataclass(frozen=True)
class ClosedDeviation:
    """A deviation closed, and the lots whose hold for it was lifted."""

    step: Step
    lifted: list[str]


def close_deviation(
    session: Session, *, step_key: str, reason: str, actor: str, policy: Policy = DEFAULT_POLICY
) -> ClosedDeviation:
    """Close the deviation of a step after QA's assessment; the step then counts again.

    The lots held for this open deviation (their hold names the step) go back to released or pending, each with
    a ``lot.hold_lifted`` audit event, when nothing else upstream blocks them (``lot_blockers``); the others stay
    quarantined."""
    reason = audit.require_reason(reason, f"Closing the deviation of step {step_key}")
    step = get_step(session, step_key)
    held_for = _hold_reason(session, step, f"step {step.step_key} ({step.method.value}) has an open deviation")
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
    held = session.execute(
        select(Lot)
        .where(col(Lot.status) == LotStatus.QUARANTINED, col(Lot.status_reason) == held_for)
        .order_by(col(Lot.id))  # a lot is made after its inputs: upstream lots are judged (and lifted) first
        .with_for_update()
    ).scalars()
    lifted = []
    for lot in list(held):
        if lot_blockers(session, lot, policy):
            continue
        lot.status = LotStatus.RELEASED if lot.released_at is not None else LotStatus.PENDING
        lot.status_reason = None
        session.flush()
        audit.record(
            session,
            action="lot.hold_lifted",
            entity_type="lot",
            entity_key=lot.lot_number,
            actor=actor,
            old={"status": LotStatus.QUARANTINED, "status_reason": held_for},
            new={"status": lot.status},
            reason=f"deviation of step {step.step_key} closed: {reason}",
        )
        lifted.append(lot.lot_number)
    return ClosedDeviation(step, sorted(lifted))
