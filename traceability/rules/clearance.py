"""Viral clearance of a lot along every path from its pools."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..models import StepMethod, StepOutcome
from .policy import (
    ENVELOPED,
    NON_ENVELOPED,
    VIRUS_CLASSES,
    ClearancePolicy,
)

# --- viral clearance -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepFacts:
    step_key: str
    method: StepMethod
    outcome: StepOutcome
    deviation_open: bool
    lrv: dict[str, float | None]


def counts_toward_clearance(log_reduction: float | None, *, min_step_log: float) -> bool:
    """ICH Q5A (USP <1050>): a step's reduction adds to the overall only when **greater than** ``min_step_log``
    (``clearance.min_step_log``, 1 log): a step of exactly 1.0 log is not counted, 1.01 is."""
    return log_reduction is not None and log_reduction > min_step_log


def is_effective_step(log_reduction: float, *, effective_log: float) -> bool:
    """A step is effective against a virus class when it reaches ``clearance.effective_log`` (4 log)."""
    return log_reduction >= effective_log


def step_credit(step: StepFacts, virus_class: str, *, min_step_log: float) -> float | None:
    """What one step adds to a path's clearance of a class: nothing for a failed step or one of min_step_log or
    less. (A step with an open deviation still counts here; the open deviation blocks release by itself.)"""
    if step.outcome == StepOutcome.FAILED:
        return None
    value = step.lrv.get(virus_class)
    return value if counts_toward_clearance(value, min_step_log=min_step_log) else None


def step_release_problem(step: StepFacts) -> str | None:
    """A failed step or a step with an open deviation anywhere upstream blocks release and shipment."""
    if step.outcome == StepOutcome.FAILED:
        return f"step {step.step_key} ({step.method.value}) failed"
    if step.deviation_open:
        return f"step {step.step_key} ({step.method.value}) has an open deviation"
    return None


def mechanism_credits(
    steps: Sequence[StepFacts], virus_class: str, clearance: ClearancePolicy, start: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The largest counted reduction per mechanism (``clearance.mechanisms``): steps of one mechanism do not add."""
    best = dict(start or {})
    for step in steps:
        value = step_credit(step, virus_class, min_step_log=clearance.min_step_log)
        if value is not None:
            mechanism = clearance.mechanisms[step.method]
            best[mechanism] = max(best.get(mechanism, 0.0), value)
    return best


@dataclass
class PathClearance:
    """Clearance along one path from a pool to the lot."""

    path: list[str]
    cumulative: dict[str, float] = field(default_factory=dict)
    effective_mechanisms: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    worst_for: list[str] = field(default_factory=list)


def path_clearance(path: list[str], steps: list[StepFacts], clearance: ClearancePolicy) -> PathClearance:
    """Cumulative log reduction per virus class along one path: steps of more than min_step_log, one per
    mechanism; the effective mechanisms are those whose step reaches effective_log."""
    result = PathClearance(path=path)
    for virus_class in VIRUS_CLASSES:
        best = mechanism_credits(steps, virus_class, clearance)
        result.cumulative[virus_class] = round(sum(best.values()), 2)
        result.effective_mechanisms[virus_class] = sorted(
            m for m, v in best.items() if is_effective_step(v, effective_log=clearance.effective_log)
        )
    result.problems = [p for s in steps if (p := step_release_problem(s))]
    return result


Node = tuple[str, int]
"""A node of the lineage: ("pool", id) or ("lot", id)."""


def worst_paths(
    target: Node,
    inputs: Mapping[int, Sequence[Node]],
    steps: Mapping[Node, Sequence[StepFacts]],
    clearance: ClearancePolicy,
) -> dict[str, list[Node]]:
    """The worst path from a pool to ``target`` per virus class, pool first, exact over every path of the DAG
    without enumerating them (2^20 paths through a ladder of lots take one pass).

    Along a path the state is the vector of the largest counted reduction per mechanism; a node's steps raise it
    (element-wise maximum), which is monotone. So it suffices to keep, per node, the Pareto-minimal vectors (with
    one witness path each): every path's vector is at or above one of them, and the verdict (effective steps,
    then cumulative value) only grows with the vector. Mechanisms are few, so the frontier stays small. Worst
    means fewest effective mechanisms, then lowest cumulative value.
    """
    mechanisms = sorted(set(clearance.mechanisms.values()))
    order = _inputs_first(target, inputs)
    worst: dict[str, list[Node]] = {}
    for virus_class in VIRUS_CLASSES:
        frontier: dict[Node, list[tuple[tuple[float, ...], _Witness]]] = {}
        for node in order:
            own = mechanism_credits(steps.get(node, ()), virus_class, clearance)
            floor = tuple(own.get(m, 0.0) for m in mechanisms)
            upstream = inputs.get(node[1], ()) if node[0] == "lot" else ()
            sources = [(v, w) for n in upstream for v, w in frontier[n]]
            if not sources:
                frontier[node] = [(floor, (node, None))]
                continue
            candidates: list[tuple[tuple[float, ...], _Witness]] = [
                (tuple(map(max, v, floor)), (node, w)) for v, w in sources
            ]
            frontier[node] = _pareto_minimal(candidates)
        verdict = _verdict_key(clearance)
        _, witness = min(frontier[target], key=lambda vw: verdict(dict(zip(mechanisms, vw[0], strict=True))))
        worst[virus_class] = _unwind(witness)
    return worst


_Witness = tuple[Node, "_Witness | None"]


def _verdict_key(clearance: ClearancePolicy) -> Callable[[dict[str, float]], tuple[int, float]]:
    def key(best: dict[str, float]) -> tuple[int, float]:
        effective = sum(1 for v in best.values() if is_effective_step(v, effective_log=clearance.effective_log))
        return effective, round(sum(best.values()), 6)

    return key


def _pareto_minimal(
    candidates: list[tuple[tuple[float, ...], _Witness]],
) -> list[tuple[tuple[float, ...], _Witness]]:
    unique: dict[tuple[float, ...], _Witness] = {}
    for vector, witness in candidates:
        unique.setdefault(vector, witness)
    vectors = sorted(unique, key=sum)
    kept: list[tuple[float, ...]] = []
    for v in vectors:  # a vector can only be dominated by one of no larger sum, which comes earlier
        if not any(all(a <= b for a, b in zip(k, v, strict=True)) for k in kept):
            kept.append(v)
    return [(v, unique[v]) for v in kept]


def _unwind(witness: _Witness | None) -> list[Node]:
    path: list[Node] = []
    while witness is not None:
        node, witness = witness
        path.append(node)
    return path[::-1]


def _inputs_first(target: Node, inputs: Mapping[int, Sequence[Node]]) -> list[Node]:
    """Every node upstream of target, each after all of its inputs (iterative: any depth)."""
    order: list[Node] = []
    done: set[Node] = set()
    stack: list[tuple[Node, bool]] = [(target, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            if node not in done:
                done.add(node)
                order.append(node)
            continue
        if node in done:
            continue
        stack.append((node, True))
        if node[0] == "lot":
            stack.extend((n, False) for n in inputs.get(node[1], ()) if n not in done)
    return order


@dataclass
class LotClearance:
    """A lot's clearance: the worst path per virus class (with both classes' values along it), and the failed
    steps and open deviations anywhere upstream."""

    worst: dict[str, PathClearance]
    step_problems: list[str]

    @property
    def paths(self) -> list[PathClearance]:
        """The worst paths, each once, with the classes it is worst for."""
        seen: dict[tuple[str, ...], PathClearance] = {}
        for virus_class, path in self.worst.items():
            shown = seen.setdefault(tuple(path.path), path)
            shown.worst_for = sorted({*shown.worst_for, virus_class}, key=VIRUS_CLASSES.index)
        return list(seen.values())


def clearance_shortfall(path: PathClearance, virus_class: str, *, required: int, effective_log: float) -> str | None:
    """The path's shortfall against one class: ``clearance.enveloped_steps`` [2] effective steps of different
    mechanisms against enveloped viruses, ``clearance.non_enveloped_steps`` [1] against non-enveloped ones."""
    found = len(path.effective_mechanisms.get(virus_class, []))
    if found >= required:
        return None
    route = " -> ".join(path.path)
    kind = (
        "of different mechanisms against enveloped viruses"
        if virus_class == ENVELOPED
        else "against non-enveloped viruses"
    )
    return (
        f"path {route}: {found} effective step(s) {kind} (at least {effective_log:g} log; cumulative "
        f"{path.cumulative.get(virus_class, 0.0):g} log); {required} are required"
    )


def final_lot_clearance_problems(result: LotClearance, clearance: ClearancePolicy) -> list[str]:
    """Problems of a final lot: the worst path of each class against the rule, then every failed step or open
    deviation upstream; empty when every path meets the rule."""
    required = {ENVELOPED: clearance.enveloped_steps, NON_ENVELOPED: clearance.non_enveloped_steps}
    problems = [
        p
        for virus_class, path in result.worst.items()
        if (
            p := clearance_shortfall(
                path, virus_class, required=required[virus_class], effective_log=clearance.effective_log
            )
        )
    ]
    return list(dict.fromkeys([*problems, *result.step_problems]))
