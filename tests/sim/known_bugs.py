"""Operator bugs the simulator found that are not fixed yet.

Each entry recognises a violation narrowly (its invariant and the situation it arose in) and names
the xfail regression tests in tests/unit/test_simulator.py holding its shrunk sequences. The
generated-sequence test lets a recognised violation pass (and counts it), so that one open bug does
not hide the others. When the planner is fixed, the regression test XPASSes, which fails it (strict):
then drop its xfail mark and its entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from falapp_operator.placement import Move
from tests.sim.invariants import Violation


@dataclass(frozen=True)
class KnownBug:
    tests: tuple[str, ...]  # the regression tests holding shrunk sequences
    matches: Callable[[Violation], bool]


def _apps(violation: Violation) -> list[str]:
    return [a for a in violation.app.split(",") if violation.sim and a in violation.sim.apps]


def _crash_loses_attempt(violation: Violation) -> bool:
    """The operator dies between a fallback's child writes and its status write: the attempt history
    never records the fallback, so the next reconcile sees one replica too many (ScaledDown instead of
    FellBack), and the stuck replica's round of the types is not seen as done: it tries a type again."""
    return violation.letter == "e" and any(a in violation.sim.invariants.crashed for a in _apps(violation))


def _slow_start_probe_fails(violation: Violation) -> bool:
    """Pods that take longer to turn Ready than unschedulableTimeout + scaleUpTimeout (binding
    included): every make-before-break replica is judged "bound but never Ready" and removed, again
    and again (returns, drains and rollout moves never complete). Every pod of the type made since the
    move started is judged from its start, so a rollout pod made later fails it too, and the removal
    can take the app's only Ready replica (the extra one, Ready by then) along."""
    if violation.letter not in ("a", "c", "d", "e"):
        return False
    sim = violation.sim
    for name in _apps(violation):
        config, app = sim.configs[name], sim.apps[name]
        decision = sim.outcomes[name].plan.decision
        now = [t.message for t in (decision.transitions if decision else ()) if t.move == Move.PROBE_FAILED
               and name in sim.reconciled]
        before = [a.get("message") or "" for a in app.status.get("attempts") or []
                  if a.get("outcome") == Move.PROBE_FAILED]
        messages = now if violation.letter == "a" else now + before  # a: the removal in this very step
        # from the probe's start: the next scheduler pass (a step, up to 20 s), then the start-up
        slow = config.ready_after + 20 >= config.unschedulable + config.scale_up
        if slow and any("bound but never Ready" in m for m in messages):
            return True
    return False


def _completed_move(violation: Violation) -> tuple[str, object] | None:
    """(app, transition) of a make-before-break move completed in the violating step, if any."""
    sim = violation.sim
    for name in _apps(violation):
        decision = sim.outcomes[name].plan.decision
        if name in sim.reconciled and decision is not None:
            for tr in decision.transitions:
                if tr.move in (Move.RETURNED, Move.DRAINED, Move.MOVED):
                    return name, tr
    return None


def _victim_mid_rollout(violation: Violation, name: str, type_name: str) -> bool:
    pods = [p for p in violation.sim.outcomes[name].snapshot.pods if p.machine_type == type_name]
    return len({p.revision for p in pods}) > 1


def _move_off_a_rolling_type_takes_an_old_ready_pod(violation: Violation) -> bool:
    """Moved: the type the replica leaves is mid-rollout; shrinking its Deployment is a scaling event,
    which Kubernetes spreads over the ReplicaSets by size (older first on ties), so a Ready pod of the
    old revision goes while the new revision's Unschedulable pods stay."""
    found = violation.letter in ("a", "f") and _completed_move(violation)
    return bool(found) and _victim_mid_rollout(violation, found[0], found[1].from_type)


def _rounds_of_several_replicas_overlap(violation: Violation) -> bool:
    """No room anywhere, several replicas stuck at different times (one waited for an announced node):
    each replica's round of the types is read from the shared attempt history, so one that starts its
    round late can repeat a move another replica already made (more moves in a direction than replicas)."""
    if violation.letter != "e":
        return False
    sim = violation.sim
    for name in _apps(violation):
        decision = sim.outcomes[name].plan.decision
        if decision is not None and decision.insufficient and sim.apps[name].validated().replicas >= 2:
            return True
    return False


def _pending_origin_pod_spent_twice(violation: Violation) -> bool:
    """A move completes because the origin type has a pod that is not Ready (the ReplicaSet removes
    that one first), and the same reconcile moves that pending pod up to a better type: the origin
    shrinks twice for one non-Ready pod, so a Ready replica goes."""
    found = violation.letter in ("a", "f") and _completed_move(violation)
    if not found:
        return False
    decision = violation.sim.outcomes[found[0]].plan.decision
    return any(t.move == Move.PLACED_PREFERRED and t.from_type == found[1].from_type for t in decision.transitions)


KNOWN_BUGS = [
    KnownBug(("test_regression_drain_and_move_up_spend_the_same_pending_pod",), _pending_origin_pod_spent_twice),
    KnownBug(("test_regression_late_round_of_one_replica_repeats_moves",), _rounds_of_several_replicas_overlap),
    KnownBug(("test_regression_crash_before_status_write_forgets_the_fallback",), _crash_loses_attempt),
    KnownBug(("test_regression_slow_starting_probe_always_fails",), _slow_start_probe_fails),
    KnownBug(("test_regression_move_off_a_rolling_type_removes_an_old_ready_pod",),
             _move_off_a_rolling_type_takes_an_old_ready_pod),
]


def known(violation: Violation) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(violation)), None)
