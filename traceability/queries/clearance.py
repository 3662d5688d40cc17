"""Viral clearance of a lot (the worst path per virus class, in one pass over the lineage) and everything upstream
that stops a lot from being released or shipped."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlmodel import Session, col

from ..models import Lot, LotKind, LotStatus, Pool, PoolStatus, PoolTest, Step, StepOutcome, saved_id
from ..rules import (
    DEFAULT_POLICY,
    ENVELOPED,
    NON_ENVELOPED,
    LotClearance,
    Node,
    Policy,
    PoolTestFacts,
    StepFacts,
    final_lot_clearance_problems,
    lot_product_problem,
    path_clearance,
    pool_release_problems,
    step_release_problem,
    upstream_product_problems,
    worst_paths,
)
from .graph import Upstream, downstream_lot_ids, steps_for, upstream
from .holds import active_holds
from .lookup import get_lot


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
) -> LotClearance:
    """The worst path from a pool to the lot per virus class (material that skipped a step did not get its
    benefit), found over every path without enumerating them, and every failed step or open deviation upstream."""
    graph = graph or upstream(session, saved_id(lot.id))
    if steps is None:
        steps = steps_for(session, pool_ids=graph.pool_ids, lot_ids=graph.lot_ids)
    by_node: dict[Node, list[StepFacts]] = defaultdict(list)
    for step in steps:
        node: Node = ("pool", step.pool_id) if step.pool_id is not None else ("lot", step.lot_id or 0)
        by_node[node].append(step_facts(step))
    inputs = {target: sorted((kind, ident) for kind, ident, _, _ in edges) for target, edges in graph.inputs.items()}
    names = dict(
        session.execute(select(col(Pool.id), col(Pool.pool_number)).where(col(Pool.id).in_(graph.pool_ids))).all()
    )
    lot_names = dict(
        session.execute(select(col(Lot.id), col(Lot.lot_number)).where(col(Lot.id).in_(graph.lot_ids))).all()
    )
    worst = {}
    for virus_class, path in worst_paths(("lot", saved_id(lot.id)), inputs, by_node, policy.clearance).items():
        labels = [names[i] if kind == "pool" else lot_names[i] for kind, i in path]
        worst[virus_class] = path_clearance(labels, [s for n in path for s in by_node.get(n, [])], policy.clearance)
    problems = [p for node_steps in by_node.values() for s in node_steps if (p := step_release_problem(s))]
    return LotClearance(worst=worst, step_problems=sorted(problems))


def current_pool_tests(session: Session, pool_ids: Iterable[int]) -> dict[int, dict[str, PoolTestFacts]]:
    """The current (newest) version of every pool test of the given pools, in one statement."""
    ids = list(pool_ids)
    if not ids:
        return {}
    latest = (
        select(col(PoolTest.pool_id), col(PoolTest.marker), func.max(col(PoolTest.version)).label("v"))
        .where(col(PoolTest.pool_id).in_(ids))
        .group_by(col(PoolTest.pool_id), col(PoolTest.marker))
        .subquery()
    )
    rows = session.execute(
        select(PoolTest).join(
            latest,
            (col(PoolTest.pool_id) == latest.c.pool_id)
            & (col(PoolTest.marker) == latest.c.marker)
            & (col(PoolTest.version) == latest.c.v),
        )
    ).scalars()
    tests: dict[int, dict[str, PoolTestFacts]] = defaultdict(dict)
    for r in rows:
        tests[r.pool_id][r.marker.value] = PoolTestFacts(
            r.marker.value, r.result.value, r.value, r.value_unit, r.version
        )
    return tests


def lock_lineage(session: Session, lot_number: str) -> Lot:
    """The lot, locked FOR UPDATE after every pool and lot upstream of it FOR SHARE (PostgreSQL; SQLite has one
    writer anyway). A pool retest or a step locks its pool first and then the lots downstream: taking the pools
    first here too means the two wait for each other in line, never in a circle, and the one that comes second
    sees what the first wrote. Raises LotNotFound."""
    lot = get_lot(session, lot_number)
    graph = upstream(session, saved_id(lot.id))
    session.execute(
        select(col(Pool.id)).where(col(Pool.id).in_(graph.pool_ids)).order_by(col(Pool.id)).with_for_update(read=True)
    ).all()
    others = graph.lot_ids - {lot.id}
    session.execute(
        select(col(Lot.id)).where(col(Lot.id).in_(others)).order_by(col(Lot.id)).with_for_update(read=True)
    ).all()
    locked: Lot = session.execute(
        select(Lot).where(col(Lot.id) == lot.id).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    return locked


def lot_blockers(session: Session, lot: Lot, policy: Policy = DEFAULT_POLICY) -> list[str]:
    """Everything on the lot's whole upstream lineage that stops its release or shipment, each naming the pool,
    lot or step and the numbers: a pool not released or whose current tests do not pass, a lot not released, a
    failed step or an open deviation anywhere (the lot's own steps included), a hold standing on it or on a lot
    upstream (naming its look-back case), and for a final lot the clearance
    rule on its worst path per virus class. Empty when nothing blocks.
    """
    graph = upstream(session, saved_id(lot.id))
    problems: list[str] = []
    pools_query = select(Pool).where(col(Pool.id).in_(graph.pool_ids)).order_by(col(Pool.pool_number))
    lots_query = select(Lot).where(col(Lot.id).in_(graph.lot_ids - {lot.id})).order_by(col(Lot.lot_number))
    upstream_pools = list(session.execute(pools_query).scalars())
    tests = current_pool_tests(session, graph.pool_ids)
    for pool in upstream_pools:
        if pool.status != PoolStatus.RELEASED:
            why = f" ({pool.status_reason})" if pool.status_reason else ""
            problems.append(f"pool {pool.pool_number} is {pool.status.value}{why}")
        product = policy.products.get(pool.product)
        if product is None:
            problems.append(f"pool {pool.pool_number} is for product {pool.product!r}, which the policy does not know")
            continue
        problems.extend(f"pool {pool.pool_number}: {p}" for p in pool_release_problems(tests.get(pool.id, {}), product))
    for other in session.execute(lots_query).scalars():
        if other.status != LotStatus.RELEASED:
            why = f" ({other.status_reason})" if other.status_reason else ""
            problems.append(f"lot {other.lot_number} is {other.status.value}{why}")
    # A hold on the lot or on any lot it was made from (a look-back case's or an approver's) stops it too.
    problems.extend(h.text() for lines in active_holds(session, graph.lot_ids).values() for h in lines)
    steps = steps_for(session, pool_ids=graph.pool_ids, lot_ids=graph.lot_ids)
    if lot.kind == LotKind.FINAL:
        if problem := lot_product_problem(lot.product, lot.kind.value, policy):
            problems.append(problem)
        problems.extend(upstream_product_problems(lot.product, [(p.pool_number, p.product) for p in upstream_pools]))
        problems.extend(
            final_lot_clearance_problems(
                lot_clearance(session, lot, policy, graph=graph, steps=steps), policy.clearance
            )
        )
    else:
        problems.extend(p for s in steps if (p := step_release_problem(step_facts(s))))
    return list(dict.fromkeys(problems))


def downstream_of(session: Session, *, pool_ids: Iterable[int] = (), lot_ids: Iterable[int] = ()) -> list[Lot]:
    """Every lot made from the given pools or lots, directly or through other lots, by lot number."""
    ids = downstream_lot_ids(pool_ids=pool_ids, lot_ids=lot_ids)
    if ids is None:
        return []
    return list(session.execute(select(Lot).where(col(Lot.id).in_(ids)).order_by(col(Lot.lot_number))).scalars())
