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

from tests.sim.invariants import Violation


@dataclass(frozen=True)
class KnownBug:
    tests: tuple[str, ...]  # the regression tests holding shrunk sequences
    matches: Callable[[Violation], bool]


def _held_move_leaves_rollout_pending_beside_room(violation: Violation) -> bool:
    """A move off a full type mid-rollout is Ready but held (finishing it would take a Ready pod of
    the old revision); the rollout's new pod stays pending although a third type has room, as only
    one make-before-break replica may be in flight."""
    if violation.letter != "c" or "pending while" not in violation.detail or violation.sim is None:
        return False
    invariants = violation.sim.invariants
    return any(s.from_type in invariants.rolling_types(name)
               for name in violation.app.split(",") if name in violation.sim.apps
               for s in invariants.surges_of(name))


KNOWN_BUGS = [
    KnownBug(("test_regression_held_move_leaves_the_rollout_pending_beside_free_room",),
             _held_move_leaves_rollout_pending_beside_room),
]


def known(violation: Violation) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(violation)), None)
