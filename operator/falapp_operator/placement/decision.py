"""What the placement engine decides for one app: replicas per type, the moves made and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from falapp_operator.placement.snapshot import ProbeRetry, Surge

PROBE_BACKOFF_BASE = timedelta(seconds=60)
PROBE_BACKOFF_MAX = timedelta(hours=1)


class Move(StrEnum):
    FELL_BACK = "FellBack"  # a replica stuck on a type moved (or, mid-rollout, started moving) to another
    PLACED_PREFERRED = "PlacedPreferred"  # a pending replica moved up to a type that has room
    PROBE_STARTED = "ProbeStarted"  # make-before-break: extra replica started on a preferred type
    RETURNED = "ReturnedToPreferred"  # the probe became Ready; a fallback replica was removed
    MOVED = "Moved"  # a make-before-break move off a type whose rollout was blocked is complete
    PROBE_FAILED = "ProbeFailed"  # the extra replica could not be scheduled or never turned Ready
    DRAIN_STARTED = "DrainStarted"  # make-before-break off a type no longer listed
    DRAINED = "Drained"
    COVER_STARTED = "CoverStarted"  # a second extra replica, so that a held move can finish (see Surge)
    COVER_REMOVED = "CoverRemoved"  # that replica went: the app has its Ready replicas without it
    COVER_FAILED = "CoverFailed"  # it could not be scheduled or never turned Ready (its type backs off)
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"


@dataclass(frozen=True)
class Transition:
    move: Move
    from_type: str | None
    to_type: str | None
    message: str = ""
    # when the stay it ends began (a stuck pod's unschedulable time, a make-before-break start): the
    # same move decided again after a crash carries the same start, so history records it once
    start: datetime | None = None
    room_seen: bool = False  # a fallback off a type the view showed room on (see PlannerState._cooling)


@dataclass
class Decision:
    counts: dict[str, int]
    surge: Surge | None
    probes: dict[str, ProbeRetry]
    cover: Surge | None = None
    transitions: list[Transition] = field(default_factory=list)
    # types with replicas stuck and nowhere to go, each with the scheduler's last message
    insufficient: dict[str, str] = field(default_factory=dict)
    # stuck pods the ReplicaSet must remove first when its type shrinks (pod-deletion-cost)
    delete_first: list[str] = field(default_factory=list)
    requeue_at: datetime | None = None

    def extras(self) -> list[Surge]:
        """The replicas in flight beyond the wanted number: the make-before-break one and its cover."""
        return [e for e in (self.surge, self.cover) if e is not None]

    def wake_at(self, when: datetime | None) -> None:
        if when is not None and (self.requeue_at is None or when < self.requeue_at):
            self.requeue_at = when

    def settled_counts(self) -> dict[str, int]:
        """Replicas per type without the make-before-break replicas in flight."""
        counts = dict(self.counts)
        for extra in self.extras():
            counts[extra.to_type] = counts.get(extra.to_type, 0) - 1
        return {t: n for t, n in counts.items() if n > 0}


def probe_backoff(failures: int) -> timedelta:
    """60 s after the first failure, doubling up to one hour."""
    return min(PROBE_BACKOFF_BASE * (1 << min(max(failures - 1, 0), 16)), PROBE_BACKOFF_MAX)  # no overflow
