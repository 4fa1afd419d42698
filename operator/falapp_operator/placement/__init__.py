"""Pure placement: which machine type each replica should run on. No kopf, no I/O."""

from falapp_operator.placement.decision import PROBE_BACKOFF_MAX, Decision, Move, Transition, probe_backoff
from falapp_operator.placement.engine import decide
from falapp_operator.placement.snapshot import (
    NodeFree,
    Observed,
    PastMove,
    PodView,
    Policy,
    ProbeRetry,
    Surge,
    TypeOption,
    after_shapes,
    shape_of,
)

__all__ = [
    "PROBE_BACKOFF_MAX", "Decision", "Move", "NodeFree", "Observed", "PastMove", "Policy", "PodView", "ProbeRetry",
    "Surge", "Transition", "TypeOption", "after_shapes", "decide", "probe_backoff",
    "shape_of",
]
