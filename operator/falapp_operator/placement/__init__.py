"""Pure placement: which machine type each replica should run on. No kopf, no I/O."""

from falapp_operator.placement.engine import Decision, Move, Transition, decide, probe_backoff
from falapp_operator.placement.snapshot import (
    Attempt,
    NodeFree,
    Observed,
    PodView,
    Policy,
    ProbeBackoff,
    Surge,
    TypeOption,
    after_claims,
)

__all__ = [
    "Attempt", "Decision", "Move", "NodeFree", "Observed", "Policy", "PodView", "ProbeBackoff",
    "Surge", "Transition", "TypeOption", "after_claims", "decide", "probe_backoff",
]
