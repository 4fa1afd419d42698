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


KNOWN_BUGS = [
    KnownBug(("test_regression_late_round_of_one_replica_repeats_moves",), _rounds_of_several_replicas_overlap),
    KnownBug(("test_regression_crash_before_status_write_forgets_the_fallback",), _crash_loses_attempt),
    KnownBug(("test_regression_slow_starting_probe_always_fails",), _slow_start_probe_fails),
]


def known(violation: Violation) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(violation)), None)
