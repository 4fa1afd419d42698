"""Pure placement: which machine type each replica should run on. No kopf, no I/O."""

from falapp_operator.placement.engine import Decision, Move, Transition, decide, probe_backoff
from falapp_operator.placement.snapshot import (
    Attempt,
    NodeFree,
    Observed,
    PodView,
    Policy,
    ProbeBackoff,
    TypeOption,
)

__all__ = [
    "Attempt", "Decision", "Move", "NodeFree", "Observed", "Policy", "PodView", "ProbeBackoff",
    "Transition", "TypeOption", "decide", "probe_backoff",
]
