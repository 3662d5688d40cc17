"""Viral clearance of a lot, judged along every path from a pool to it."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from ..models import Lot, Pool, Step, StepOutcome
from ..rules import DEFAULT_POLICY, ENVELOPED, NON_ENVELOPED, PathClearance, Policy, StepFacts, path_clearance
from .graph import Upstream, paths_to, steps_for, upstream


def step_facts(step: Step) -> StepFacts:
    return StepFacts(
        step_key=step.step_key,
        method=step.method,
        outcome=step.outcome,
        deviation_open=step.outcome == StepOutcome.DEVIATION and step.deviation_closed_at is None,
        lrv={ENVELOPED: step.lrv_enveloped, NON_ENVELOPED: step.lrv_non_enveloped},
    )


def lot_clearance(
    session: Session,
    lot: Lot,
    policy: Policy = DEFAULT_POLICY,
    *,
    graph: Upstream | None = None,
    steps: list[Step] | None = None,
) -> list[PathClearance]:
    """Clearance along every path from a pool to the lot (material that skipped a step did not get its benefit)."""
    graph = graph or upstream(session, lot.id)
    if steps is None:
        steps = steps_for(session, pool_ids=graph.pool_ids, lot_ids=graph.lot_ids)
    by_pool: dict[int, list[Step]] = {}
    by_lot: dict[int, list[Step]] = {}
    for step in steps:
        if step.pool_id is not None:
            by_pool.setdefault(step.pool_id, []).append(step)
        elif step.lot_id is not None:
            by_lot.setdefault(step.lot_id, []).append(step)
    names = dict(session.execute(select(Pool.id, Pool.pool_number).where(Pool.id.in_(graph.pool_ids))).all())
    lot_names = dict(session.execute(select(Lot.id, Lot.lot_number).where(Lot.id.in_(graph.lot_ids))).all())
    results = []
    for path in paths_to(graph, lot.id):
        labels = [names[i] if k == "pool" else lot_names[i] for k, i in path]
        on_path = [s for k, i in path for s in (by_pool if k == "pool" else by_lot).get(i, [])]
        results.append(path_clearance(labels, [step_facts(s) for s in on_path], policy.clearance))
    return results
