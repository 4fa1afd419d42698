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


KNOWN_BUGS: list[KnownBug] = []


def known(violation: Violation) -> KnownBug | None:
    return next((bug for bug in KNOWN_BUGS if bug.matches(violation)), None)
