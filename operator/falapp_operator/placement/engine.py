"""The placement engine: how many replicas each machine type should run, decided from a snapshot.

Pure and deterministic. The state that must survive restarts lives in the cluster: Deployment sizes per
type (`Observed.counts`), make-before-break replicas in flight (`Observed.surges`) and status
(`probes`, `attempts`). One call moves the app one consistent step towards its placement; calling it
again on the resulting state changes nothing until the cluster does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from falapp_operator.placement.snapshot import (
    NodeFree,
    Observed,
    PodView,
    Policy,
    ProbeBackoff,
    Room,
    TypeOption,
)

PROBE_BACKOFF_BASE = timedelta(seconds=60)
PROBE_BACKOFF_MAX = timedelta(hours=1)


class Move(StrEnum):
    FELL_BACK = "FellBack"  # a replica stuck on a type moved to another one
    PLACED_PREFERRED = "PlacedPreferred"  # a pending replica moved up to a type that has room
    PROBE_STARTED = "ProbeStarted"  # make-before-break: extra replica started on a preferred type
    RETURNED = "ReturnedToPreferred"  # the probe became Ready; a fallback replica was removed
    PROBE_FAILED = "ProbeFailed"  # the probe could not be scheduled; backing off
    DRAIN_STARTED = "DrainStarted"  # make-before-break off a type no longer listed
    DRAINED = "Drained"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"


@dataclass(frozen=True)
class Transition:
    move: Move
    from_type: str | None
    to_type: str | None
    message: str = ""


@dataclass
class Decision:
    counts: dict[str, int]
    surges: dict[str, int]
    probes: dict[str, ProbeBackoff]
    transitions: list[Transition] = field(default_factory=list)
    # types with replicas stuck and nowhere to go, each with the scheduler's last message
    insufficient: dict[str, str] = field(default_factory=dict)
    # stuck pods the ReplicaSet must remove first when its type shrinks (pod-deletion-cost)
    delete_first: list[str] = field(default_factory=list)
    requeue_at: datetime | None = None

    def wake_at(self, when: datetime | None) -> None:
        if when is not None and (self.requeue_at is None or when < self.requeue_at):
            self.requeue_at = when


def probe_backoff(failures: int) -> timedelta:
    """60 s after the first failure, doubling up to one hour."""
    return min(PROBE_BACKOFF_BASE * (2 ** max(failures - 1, 0)), PROBE_BACKOFF_MAX)


def decide(options: Sequence[TypeOption], replicas: int, policy: Policy, observed: Observed,
           free: Mapping[str, Sequence[NodeFree]], now: datetime) -> Decision:
    return _Planner(options, replicas, policy, observed, free, now).run()


class _Planner:
    def __init__(self, options: Sequence[TypeOption], replicas: int, policy: Policy, observed: Observed,
                 free: Mapping[str, Sequence[NodeFree]], now: datetime):
        if not options:
            raise ValueError("placement needs at least one machine type that can host the app")
        self.options = list(options)
        self.by_name = {o.name: o for o in options}
        self.replicas = replicas
        self.policy = policy
        self.now = now
        self.pods = [p for p in observed.pods if not p.terminating]
        self.room = Room(free)
        counts = {t: n for t, n in observed.counts.items() if n > 0}
        self.observed_counts = dict(counts)
        surplus = max(sum(counts.values()) - replicas, 0)
        surges: dict[str, int] = {}
        for t, s in observed.surges.items():  # never more surges than replicas beyond the wanted number
            s = min(s, counts.get(t, 0), surplus - sum(surges.values()))
            if s > 0:
                surges[t] = s
        self.decision = Decision(counts=counts, surges=surges, probes=dict(observed.probes))
        self.cooling = self._cooling(observed)

    # --- helpers -------------------------------------------------------------------------------
    def rank(self, type_name: str) -> int:
        """Preference rank; types no longer listed rank below every listed type."""
        return next((i for i, o in enumerate(self.options) if o.name == type_name), len(self.options))

    def pods_on(self, type_name: str) -> list[PodView]:
        return [p for p in self.pods if p.machine_type == type_name]

    def converged(self, type_name: str) -> bool:
        """The ReplicaSet has as many live pods as wanted: earlier moves off this type are done."""
        return len(self.pods_on(type_name)) == self.observed_counts.get(type_name, 0)

    def stuck(self, pod: PodView) -> bool:
        deadline = pod.deadline(self.policy)
        if deadline is None:
            return False
        if deadline > self.now:
            self.decision.wake_at(deadline)
            return False
        return True

    def never_ready(self, pod: PodView) -> bool:
        """A bound pod still not Ready after both timeouts: a return probe there has failed."""
        if not pod.bound or pod.ready:
            return False
        deadline = pod.created + self.policy.unschedulable_timeout + self.policy.scale_up_timeout
        if deadline > self.now:
            self.decision.wake_at(deadline)
            return False
        return True

    def shift(self, from_type: str | None, to_type: str | None) -> None:
        counts = self.decision.counts
        if from_type is not None:
            counts[from_type] -= 1
            if counts[from_type] == 0:
                del counts[from_type]
        if to_type is not None:
            counts[to_type] = counts.get(to_type, 0) + 1

    def record(self, move: Move, from_type: str | None, to_type: str | None, message: str = "") -> None:
        self.decision.transitions.append(Transition(move, from_type, to_type, message))

    def first_with_room(self, exclude: str | None = None, before_rank: int | None = None,
                        allow_cooling: bool = True) -> TypeOption | None:
        for rank, option in enumerate(self.options):
            if before_rank is not None and rank >= before_rank:
                break
            if option.name == exclude or (not allow_cooling and option.name in self.cooling):
                continue
            if self.room.take(option):
                return option
        return None

    def least_preferred_with_replicas(self, below_rank: int = -1) -> str | None:
        candidates = [t for t, n in self.decision.counts.items()
                      if n - self.decision.surges.get(t, 0) > 0 and self.rank(t) > below_rank]
        return max(candidates, key=self.rank, default=None)

    def _cooling(self, observed: Observed) -> set[str]:
        """Types a replica of this app fell back from within the last unschedulableTimeout."""
        cooling = set()
        for attempt in observed.attempts:
            if attempt.outcome == Move.FELL_BACK and attempt.end is not None:
                until = attempt.end + self.policy.unschedulable_timeout
                if until > self.now:
                    cooling.add(attempt.machine_type)
                    self.decision.wake_at(until)
        return cooling

    # --- steps ---------------------------------------------------------------------------------
    def run(self) -> Decision:
        self.reserve_pending()
        self.settle_surges()
        self.scale_down()
        self.scale_up()
        self.overflow()
        self.move_pending_up()
        self.start_surge()
        return self.decision

    def reserve_pending(self) -> None:
        """Our pending pods will land where there is room; take it before placing anything else."""
        for option in self.options:
            for pod in self.pods_on(option.name):
                if pod.pending:
                    self.room.take(option)

    def settle_surges(self) -> None:
        d = self.decision
        for type_name, surge in list(d.surges.items()):
            option = self.by_name.get(type_name)
            on_type = self.pods_on(type_name)
            if option is None:  # its type was unlisted meanwhile
                for _ in range(surge):
                    self.shift(type_name, None)
                del d.surges[type_name]
                continue
            stuck = [p for p in on_type if self.stuck(p) or self.never_ready(p)]
            if stuck:
                d.delete_first.append(stuck[0].name)
                failures = d.probes[type_name].failures + 1 if type_name in d.probes else 1
                d.probes[type_name] = ProbeBackoff(failures, self.now + probe_backoff(failures))
                self.shift(type_name, None)
                self._drop_surge(type_name)
                message = next((p.scheduler_message for p in on_type if p.pending), "")
                self.record(Move.PROBE_FAILED, None, type_name, message)
                continue
            ready = sum(p.ready for p in on_type)
            if ready >= d.counts.get(type_name, 0) and len(on_type) >= d.counts.get(type_name, 0):
                victim = self.least_preferred_with_replicas(below_rank=self.rank(type_name))
                self._drop_surge(type_name)
                d.probes.pop(type_name, None)
                if victim is not None:
                    self.shift(victim, None)
                    move = Move.DRAINED if victim not in self.by_name else Move.RETURNED
                    self.record(move, victim, type_name)

    def _drop_surge(self, type_name: str) -> None:
        self.decision.surges[type_name] -= 1
        if self.decision.surges[type_name] <= 0:
            del self.decision.surges[type_name]

    def settled_total(self) -> int:
        return sum(self.decision.counts.values()) - sum(self.decision.surges.values())

    def scale_down(self) -> None:
        while self.settled_total() > self.replicas:
            victim = self.least_preferred_with_replicas()
            self.shift(victim, None)
            self.record(Move.SCALED_DOWN, victim, None)
            # the ReplicaSet removes an unscheduled, then a not-Ready pod first: that one is spoken for
            doomed = sorted((p for p in self.pods_on(victim) if p.name not in self.decision.delete_first),
                            key=lambda p: (p.bound, p.ready))
            if doomed and not doomed[0].ready:
                self.decision.delete_first.append(doomed[0].name)

    def scale_up(self) -> None:
        while self.settled_total() < self.replicas:
            option = self.first_with_room() or self.options[0]
            self.shift(None, option.name)
            self.record(Move.SCALED_UP, None, option.name)

    def overflow(self) -> None:
        """Stuck replicas move, one by one, to the most preferred other type with room, else the next one."""
        d = self.decision
        for rank, option in enumerate(self.options):
            if not self.converged(option.name):
                continue
            movable = d.counts.get(option.name, 0) - d.surges.get(option.name, 0)
            stuck = [p for p in self.pods_on(option.name)
                     if p.name not in d.delete_first and self.stuck(p)][:movable]
            for pod in stuck:
                if len(self.options) == 1:
                    d.insufficient[option.display] = pod.scheduler_message
                    continue
                target = self.first_with_room(exclude=option.name)
                if target is None:
                    d.insufficient[option.display] = pod.scheduler_message
                    target = self.options[(rank + 1) % len(self.options)]
                self.shift(option.name, target.name)
                d.delete_first.append(pod.name)
                self.record(Move.FELL_BACK, option.name, target.name, pod.scheduler_message)
        if d.insufficient:
            # still stuck on its type until the next timeout; say so again then
            d.wake_at(self.now + self.policy.unschedulable_timeout)

    def move_pending_up(self) -> None:
        """Pending replicas on a less preferred (or unlisted) type go up as soon as a better type has room."""
        d = self.decision
        pending = sorted((p for p in self.pods if p.pending and p.name not in d.delete_first
                          and self.converged(p.machine_type)), key=lambda p: -self.rank(p.machine_type))
        for pod in pending:
            if d.surges.get(pod.machine_type):
                continue  # a pending pod there is the probe itself
            movable = d.counts.get(pod.machine_type, 0) - d.surges.get(pod.machine_type, 0)
            if movable <= 0:
                continue
            rank = self.rank(pod.machine_type)
            target = self.first_with_room(before_rank=rank, allow_cooling=False)
            if target is None and pod.machine_type not in self.by_name:
                target = self.options[0]
            if target is not None:
                self.shift(pod.machine_type, target.name)
                d.delete_first.append(pod.name)
                self.record(Move.PLACED_PREFERRED, pod.machine_type, target.name)

    def start_surge(self) -> None:
        """Make-before-break: one extra replica on a better type; a worse one goes once it is Ready."""
        d = self.decision
        if d.surges or d.transitions or any(p.pending for p in self.pods):
            return
        if any(not self.converged(t) for t in d.counts):
            return
        unlisted = self.least_preferred_with_replicas(below_rank=len(self.options) - 1)
        if unlisted is not None:
            target = self.first_with_room() or self.options[0]
            self._start(target.name, Move.DRAIN_STARTED, unlisted)
            return
        if not self.policy.return_to_preferred:
            return
        worst = self.least_preferred_with_replicas(below_rank=0)
        if worst is None:
            return
        for option in self.options[: self.rank(worst)]:
            backoff = d.probes.get(option.name)
            if backoff is not None and backoff.next_attempt > self.now:
                d.wake_at(backoff.next_attempt)
                continue
            if option.name not in self.cooling and self.room.take(option):
                self._start(option.name, Move.PROBE_STARTED, worst)
                return

    def _start(self, to_type: str, move: Move, from_type: str) -> None:
        self.shift(None, to_type)
        self.decision.surges[to_type] = self.decision.surges.get(to_type, 0) + 1
        self.record(move, from_type, to_type)
