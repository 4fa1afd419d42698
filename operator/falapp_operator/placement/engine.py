"""The placement engine: how many replicas each machine type should run, decided from a snapshot.

Pure and deterministic. The state that must survive restarts lives in the cluster: Deployment sizes per
type (`Observed.counts`), make-before-break replicas in flight (`Observed.surge`, `Observed.cover`) and status
(`probes`, `attempts`). One call moves the app one consistent step towards its placement; calling it
again on the resulting state changes nothing until the cluster does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from falapp_operator.api.units import format_duration
from falapp_operator.placement.snapshot import (
    NodeFree,
    Observed,
    PodView,
    Policy,
    ProbeRetry,
    Room,
    Surge,
    TypeOption,
)

PROBE_BACKOFF_BASE = timedelta(seconds=60)
PROBE_BACKOFF_MAX = timedelta(hours=1)
SINCE_SLACK = timedelta(seconds=2)


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
    room_seen: bool = False  # a fallback off a type the view showed room on (see _cooling)


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
        autoscaled = {o.name for o in options if o.autoscaled}
        # an autoscaler's refusal only cuts the wait on a type whose nodes it makes (on fixed nodes it
        # says nothing: Karpenter and cluster-autoscaler comment on every pending pod)
        self.pods = [p if not p.scale_up_refused or p.machine_type in autoscaled else replace(p, scale_up_refused=False)
                     for p in observed.pods if not p.terminating]
        self.observed_counts = {t: n for t, n in observed.counts.items() if n > 0}
        self.pods = self._on_lost_pools(observed)
        self.room = Room(free)
        self.room_seen: set[str] = set()  # pending pods the view has room on a node for (reserve_pending)
        counts = dict(self.observed_counts)
        surge, cover, total = observed.surge, observed.cover, sum(counts.values())
        if cover is not None and (counts.get(cover.to_type, 0) <= (surge is not None and surge.to_type == cover.to_type)
                                  or total <= replicas or (cover.to_type not in self.by_name and (
                                      surge is None or surge.to_type not in self.by_name
                                      or surge.from_type != cover.from_type))):
            # no replica beyond the wanted number: the mark is stale, the replica is ordinary (so is a
            # cover on a type unlisted since, once its move is done; its mark is cleared then)
            cover = None
        if surge is not None and (counts.get(surge.to_type, 0) <= 0 or total <= replicas + (cover is not None)):
            # likewise: the replica is ordinary. With a cover and one replica beyond, the move was done (its
            # origin's shrink is written before the mark is cleared) and the operator stopped in between
            surge = None
        self.decision = Decision(counts=counts, surge=surge, probes=dict(observed.probes), cover=cover)
        self.attempts = observed.attempts
        self.uncreatable = dict(observed.uncreatable)
        self.cooling = self._cooling(observed)

    def _on_lost_pools(self, observed: Observed) -> list[PodView]:
        """The pods, with the replicas of lost pools as they are. On a listed, fixed-size type with no
        Ready, schedulable node at all, a replica not running there has had nowhere to run since the type
        was seen so, or since the operator asked for it there if that was later, whatever the scheduler
        has said yet and whether its pod exists yet or not. When a whole pool is lost, the controller
        manager makes hundreds of replacements and the scheduler marks them one by one before binding
        anything, and a pod bound to a deleted node stays until the pod garbage collector comes by:
        waiting for any of them doubles the outage. So each such replica is a pending pod, unschedulable
        since then: its own pod (unbound, or bound to a deleted node; the oldest first), or one the
        ReplicaSet has yet to make, named so that no write is aimed at it (a pod name has no '/'); pods
        beyond the type's count are on their way out and left out. The timeout still runs from then
        (nodes may come back). A gated pod is not the scheduler's yet; a rollout under way is ignored
        unless replicas still run there (a cordoned pool). Without the time the operator asked, a pod
        counts from its creation and a missing one is waited for."""
        pods = list(self.pods)
        for type_name, count in self.observed_counts.items():
            option, since = self.by_name.get(type_name), observed.nodeless_since.get(type_name)
            if option is None or since is None or option.autoscaled:
                continue
            on_type = self.pods_on(type_name)
            rolling = self.rolling(type_name)
            if rolling and any(p.bound and not p.node_gone for p in on_type):
                continue  # old and new replicas still running there (a cordoned pool): the rollout's call
            # one revision for all (mid-rollout, none is left to protect); missing ones as their siblings
            revision = "" if rolling else next((p.revision for p in on_type), "")
            grown_at = observed.grown_at.get(type_name)
            message = f"no Ready, schedulable node of machine type {option.display}"
            homeless = max(0, count - sum(p.bound and not p.node_gone for p in on_type))  # not running there
            pending = sorted((p for p in on_type if p.pending or p.node_gone), key=lambda p: p.created)
            lost = {p.name: p for p in pending[:homeless]}
            pods = [p for p in pods if p.machine_type != type_name or p.name in lost or not (p.pending or p.node_gone)]
            pods = [self._lost(p, max(since, grown_at or p.created), message, revision) if p.name in lost else p
                    for p in pods]
            if grown_at is not None:
                since = max(since, grown_at)
                pods += [PodView(f"{type_name}/lost-{i}", type_name, created=since, unschedulable_since=since,
                                 scheduler_message=message, revision=revision) for i in range(homeless - len(lost))]
        return pods

    @staticmethod
    def _lost(pod: PodView, since: datetime, message: str, revision: str) -> PodView:
        if pod.revision != revision:
            pod = replace(pod, current=True, revision=revision)
        if pod.node_gone:  # bound to nothing any more: pending, as its replacement would be
            pod = replace(pod, bound=False, ready=False, bound_since=None)
        if pod.gated or pod.scale_up_coming:
            return pod
        if pod.unschedulable_since is not None:  # the scheduler's mark on a replacement comes after the loss
            return replace(pod, unschedulable_since=min(pod.unschedulable_since, since))
        return replace(pod, unschedulable_since=since, scheduler_message=message)

    # --- helpers -------------------------------------------------------------------------------
    def rank(self, type_name: str) -> int:
        """Preference rank; types no longer listed rank below every listed type."""
        return next((i for i, o in enumerate(self.options) if o.name == type_name), len(self.options))

    def pods_on(self, type_name: str) -> list[PodView]:
        return [p for p in self.pods if p.machine_type == type_name]

    def rolling(self, type_name: str) -> bool:
        """A rollout is under way on this type: its pods run more than one template (ours changed, or
        someone restarted the Deployment). On an unlisted type it is left to finish or be drained."""
        pods = self.pods_on(type_name)
        return any(not p.current for p in pods) or len({p.revision for p in pods}) > 1

    def new_revision(self, pod: PodView) -> bool:
        """The pod belongs to the revision a rollout on its type is rolling to."""
        pods = self.pods_on(pod.machine_type)
        if any(not p.current for p in pods):
            return pod.current
        return pod.revision == max(pods, key=lambda p: p.created).revision

    def converged(self, type_name: str) -> bool:
        """The ReplicaSets have as many live pods as wanted (one more while rolling out, maxSurge 1):
        earlier moves off this type are done."""
        pods, count = len(self.pods_on(type_name)), self.observed_counts.get(type_name, 0)
        return count <= pods <= count + int(self.rolling(type_name))

    def is_surge_target(self, type_name: str) -> bool:
        """A replica in flight (the make-before-break one or its cover) runs on this type."""
        return any(e.to_type == type_name for e in self.decision.extras())

    def stuck(self, pod: PodView) -> bool:
        deadline = pod.deadline(self.policy)
        if deadline is None:
            return False
        if deadline > self.now:
            self.decision.wake_at(deadline)
            return False
        return True

    def never_ready(self, pod: PodView) -> bool:
        """A bound pod whose container cannot run, or still not Ready startupTimeout after it was
        scheduled: the extra replica failed (a slow start is not a failure)."""
        if not pod.bound or pod.ready:
            return False
        if pod.failing:
            return True
        deadline = (pod.bound_since or pod.created) + self.policy.startup_timeout
        if deadline > self.now:
            self.decision.wake_at(deadline)
            return False
        return True

    def shrink_group(self, type_name: str) -> list[PodView]:
        """The pods a shrink of the type by one takes from. Mid-rollout the Deployment spreads a
        scale-down over its ReplicaSets by size, so the bigger revision loses one (the old on a tie)."""
        pods = self.pods_on(type_name)
        if not self.rolling(type_name):
            return pods
        groups: dict[str, list[PodView]] = {}
        for p in pods:  # per ReplicaSet (pod-template-hash); without one, by whether it runs the current spec
            groups.setdefault(p.revision or f"current={p.current}", []).append(p)
        return max(groups.values(), key=lambda g: (len(g), -min(p.created for p in g).timestamp()))

    def shrink_takes_ready(self, type_name: str) -> bool:
        """A shrink of the type by one takes a Ready pod: it has more Ready pods than its new size (a pod
        not made yet, or not Ready, goes first), or (mid-rollout, where the bigger ReplicaSet shrinks) that
        ReplicaSet has no other."""
        more_ready = sum(p.ready for p in self.pods_on(type_name)) > self.decision.counts.get(type_name, 0) - 1
        if more_ready or not self.rolling(type_name):
            return more_ready
        group = self.shrink_group(type_name)
        return bool(group) and all(p.ready for p in group)

    def spend_one(self, type_name: str) -> None:
        """The type shrinks by one: its ReplicaSet removes an unscheduled, then a not-Ready pod first, so
        that pod is spoken for (nothing else may move it: the type would shrink twice for it)."""
        doomed = sorted((p for p in self.shrink_group(type_name) if p.name not in self.decision.delete_first),
                        key=lambda p: (p.bound, p.ready))
        if doomed and not doomed[0].ready:
            self.decision.delete_first.append(doomed[0].name)

    def shift(self, from_type: str | None, to_type: str | None) -> None:
        counts = self.decision.counts
        if from_type is not None:
            counts[from_type] -= 1
            if counts[from_type] == 0:
                del counts[from_type]
        if to_type is not None:
            counts[to_type] = counts.get(to_type, 0) + 1

    def record(self, move: Move, from_type: str | None, to_type: str | None, message: str = "",
               start: datetime | None = None, room_seen: bool = False) -> None:
        self.decision.transitions.append(Transition(move, from_type, to_type, message, start, room_seen))

    def first_with_room(self, exclude: str | None = None, before_rank: int | None = None,
                        allow_cooling: bool = True, allow_backoff: bool = True,
                        on_demand: bool = True) -> TypeOption | None:
        """The most preferred type with room on a node, or (`on_demand`) an autoscaled type to ask, unless
        it refused lately (cooling down) or a probe there failed (backing off)."""
        for rank, option in enumerate(self.options):
            if before_rank is not None and rank >= before_rank:
                break
            if option.name == exclude or (not allow_cooling and option.name in self.cooling):
                continue
            if not allow_backoff and self.backing_off(option.name):
                continue
            if self.room.take(option, on_demand=False):
                return option
            if on_demand and option.autoscaled and option.name not in self.cooling and not self.backing_off(
                    option.name) and self.room.take(option):
                return option
        return None

    def backing_off(self, type_name: str) -> bool:
        backoff = self.decision.probes.get(type_name)
        if backoff is not None and backoff.next_attempt > self.now:
            self.decision.wake_at(backoff.next_attempt)
            return True
        return False

    def movable(self, type_name: str) -> int:
        """Replicas on the type that may move or go: all but those in flight."""
        return self.decision.counts.get(type_name, 0) - sum(e.to_type == type_name for e in self.decision.extras())

    def least_preferred_with_replicas(self, below_rank: int = -1) -> str | None:
        candidates = [t for t in self.decision.counts if self.movable(t) > 0 and self.rank(t) > below_rank]
        return max(candidates, key=self.rank, default=None)

    def settled_total(self) -> int:
        return sum(self.decision.settled_counts().values())

    def _cooling(self, observed: Observed) -> set[str]:
        """Types a replica of this app fell back from within the last unschedulableTimeout, doubled for
        each time within the hour a replica came back there and got stuck again although the capacity view
        showed room (a volume's zone, a node affinity the view cannot see): such a type is not retried at
        the timeout's rate for good. Falls the view explains (no room there: a replica's round through the
        types while nothing has room) double nothing, so room that comes later is used within a timeout."""
        falls: dict[str, list[tuple[datetime, datetime | None, bool]]] = {}  # type -> (end, start, room seen)
        for attempt in observed.attempts:
            if attempt.outcome == Move.FELL_BACK and attempt.end is not None:
                falls.setdefault(attempt.machine_type, []).append((attempt.end, attempt.start, attempt.room_seen))
        cooling = set()
        for type_name, stays in falls.items():
            recent = [(end, start) for end, start, seen in stays if seen and end > self.now - PROBE_BACKOFF_MAX]
            repeats = sum(1 for _, start in recent if start is not None and any(end < start for end, _ in recent))
            wait = min(self.policy.unschedulable_timeout * (1 << min(repeats, 16)), PROBE_BACKOFF_MAX)
            until = max(end for end, _, _ in stays) + wait
            if until > self.now:
                cooling.add(type_name)
                self.decision.wake_at(until)
        return cooling

    def next_in_round(self, type_name: str, pod: PodView) -> TypeOption | None:
        """With no room anywhere, a stuck replica tries each listed type once (in list order, those not
        tried yet in this round), then waits on the preferred one, where autoscalers are asked first,
        until capacity changes: no endless churn, no second lap. The round is read from the fallbacks
        that ended in the time a round takes before this pod was created (replicas' attempts
        interleave, so by time, not by position; and anchored on the pod, so waiting does not age it)."""
        window = 2 * len(self.options) * (self.policy.unschedulable_timeout + timedelta(seconds=5))
        tried = {a.machine_type for a in self.attempts if a.outcome == Move.FELL_BACK and a.end is not None
                 and pod.created - window <= a.end <= pod.created + timedelta(seconds=5)}
        untried = [o for o in self.options if o.name != type_name and o.name not in tried]
        if untried:
            return untried[0]
        preferred = self.options[0]
        return None if type_name == preferred.name else preferred

    def last_messages(self) -> dict[str, str]:
        """The scheduler's latest message per type, from the attempt history."""
        return {a.machine_type: a.message for a in self.attempts if a.message}

    # --- steps ---------------------------------------------------------------------------------
    def run(self) -> Decision:
        if self.settled_total() > self.replicas:  # fewer replicas wanted: the moves in flight are cancelled
            self.decision.surge = self.decision.cover = None
        self.settle_cover()  # first: a failed cover may be replaced, and a cover turned move judged, in this pass
        self.settle_surge()
        self.reserve_pending()
        self.scale_down()
        self.scale_up()
        self.overflow()
        self.move_pending_up()
        self.start_surge()
        return self.decision

    def settle_surge(self) -> None:
        """Judge the make-before-break replica in flight: failed, done, or still on its way."""
        d = self.decision
        surge = d.surge
        if surge is None:
            return
        option = self.by_name.get(surge.to_type)
        if option is None:
            # its type was unlisted meanwhile: the extra replica is an ordinary one now (it may be the
            # only Ready one); scale-down and the drain of that type remove it in the right order
            d.surge = None
            return
        if surge.from_type is not None and self.movable(surge.from_type) <= 0:
            d.surge = None  # the replica it was to replace is gone already: it stays as an ordinary one
            return
        on_type = self.pods_on(surge.to_type)
        if self.failed_extra(surge, option):
            return
        # done when the type has all its replicas, the extra one included, and they are Ready, and
        # removing one from the origin keeps the app at its Ready count (a replica may be down elsewhere)
        ready = sum(p.ready for p in self.pods)
        loses_ready = surge.from_type is not None and self.shrink_takes_ready(surge.from_type)
        type_ready = len(on_type) >= d.counts[surge.to_type] and sum(p.ready for p in on_type) >= d.counts[
            surge.to_type]
        if type_ready and ready - loses_ready >= min(self.replicas, ready):
            victim = surge.from_type if surge.from_type is not None else self.least_preferred_with_replicas(
                below_rank=self.rank(surge.to_type))
            d.surge = None
            d.probes.pop(surge.to_type, None)
            if victim is not None:
                self.shift(victim, None)
                self.spend_one(victim)
                if victim not in self.by_name:
                    move = Move.DRAINED
                elif self.rank(victim) > self.rank(surge.to_type):
                    move = Move.RETURNED
                else:
                    move = Move.MOVED
                self.record(move, victim, surge.to_type, start=surge.since)
            return
        if type_ready and surge.ready_at is None:
            d.surge = replace(surge, ready_at=self.now)  # held: from now on it is a serving replica
        if surge.from_type is not None and self.rolling(surge.from_type):
            # the origin's rollout is blocked and its shrink would take a Ready pod of the old revision
            # (room was lost since the move started): keep serving, start a cover where there is room,
            # else say the rollout has no room
            blocked = self.blocked_rollout(surge.from_type)
            if blocked is not None and type_ready and loses_ready and d.cover is None and ready >= self.replicas:
                # (with fewer Ready, one more would not let the move finish: a replica is down elsewhere)
                target = self.cover_target(surge)
                if target is not None:
                    self.shift(None, target.name)
                    d.cover = Surge(target.name, surge.from_type, self.now, cover=True)
                    self.record(Move.COVER_STARTED, surge.from_type, target.name, blocked.scheduler_message)
                    return
            if blocked is not None and d.cover is None:  # a cover on its way is the answer
                self.no_room_for_rollout(surge.from_type, blocked)
        if (own := self.blocked_rollout(surge.to_type)) is not None:
            # a rollout on its own type since it was Ready, with no room there: the move is finished first
            self.no_room_for_rollout(surge.to_type, own)

    def no_room_for_rollout(self, type_name: str, blocked: PodView) -> None:
        listed = self.by_name.get(type_name)
        self.decision.insufficient[listed.display if listed else type_name] = (
            f"rollout needs room for one more replica: {blocked.scheduler_message}")
        self.decision.wake_at(self.now + self.policy.unschedulable_timeout)

    def blocked_rollout(self, type_name: str) -> PodView | None:
        """The new revision's pod a rollout on the type waits for, stuck: the rollout has no room."""
        return next((p for p in self.pods_on(type_name) if self.new_revision(p) and self.stuck(p)), None)

    def failed_extra(self, extra: Surge, option: TypeOption | None) -> bool:
        """Whether a replica in flight failed (stuck, never Ready, or its pod cannot be created): then it
        goes, and its type backs off as a failed probe's does."""
        d = self.decision
        on_type = [p for p in self.pods_on(extra.to_type) if p.name not in d.delete_first]  # not judged already
        # pods that may be the extra one: created since it was started (timestamps have whole seconds
        # and the operator's estimate of the server's clock is not exact: allow some slack)
        started = extra.since - SINCE_SLACK if extra.since is not None else None
        recent = [p for p in on_type if started is None or p.created >= started]
        # once it was Ready its start-up is over: losing readiness later is not a failed start; and a pod
        # stuck beside a Ready one in a rollout there since is the rollout's (a shrink could take the Ready one)
        serving = extra.ready_at is not None and self.rolling(extra.to_type) and any(p.ready for p in on_type)
        # and a rollout there begun since it started: its new revision's pods are the rollout's
        judged = on_type
        if self.rolling(extra.to_type) and any(not self.new_revision(p) for p in recent):
            judged = [p for p in on_type if not self.new_revision(p)]
        failed = None if serving else next((p for p in judged if self.stuck(p)), None) or (
            None if extra.ready_at else next((p for p in recent if self.never_ready(p)), None))
        uncreatable = extra.to_type in self.uncreatable and len(on_type) < d.counts[extra.to_type]
        if failed is None and not uncreatable:
            return False
        if failed is not None:
            d.delete_first.append(failed.name)
        if extra.cover:
            d.cover = None
        else:
            d.surge = None
        if not self.shrink_takes_ready(extra.to_type):
            self.shift(extra.to_type, None)
        # else (its type mid-rollout, whose shrink goes by ReplicaSet size): an ordinary replica now, the
        # scale-down trims the surplus where that takes no Ready pod
        failure = Move.COVER_FAILED if extra.cover else Move.PROBE_FAILED
        previous = d.probes.get(extra.to_type)
        failures = previous.failures if previous else 0
        lost_race = failed is not None and failed.pending and (option is None or not self.room.has_room(option))
        if failed is None:
            message = f"its pod cannot be created: {self.uncreatable[extra.to_type]}"
        elif lost_race:  # the room it was started for is gone (another app took it): no penalty
            message = f"lost the room to another pod: {failed.scheduler_message}"
        elif not failed.pending:
            timeout = format_duration(self.policy.startup_timeout)
            message = failed.failing or f"not Ready {timeout} after it was scheduled"
        else:
            message = failed.scheduler_message
        # decided before, and the operator stopped before the children were written: status has
        # its back-off already
        counted = previous is not None and extra.since is not None and any(
            a.outcome == failure and a.machine_type == extra.to_type and a.start == extra.since
            for a in self.attempts)
        if lost_race:
            d.probes[extra.to_type] = ProbeRetry(failures, self.now + self.policy.unschedulable_timeout)
        elif not counted:
            d.probes[extra.to_type] = ProbeRetry(failures + 1, self.now + probe_backoff(failures + 1))
        self.record(failure, extra.from_type, extra.to_type, message, extra.since)
        return True

    def cover_target(self, surge: Surge) -> TypeOption | None:
        """Where a cover may run: the most preferred listed type with room on a node, other than the move's
        origin, not cooling down or backing off."""
        for option in self.options:
            if option.name == surge.from_type or option.name in self.cooling or self.backing_off(option.name):
                continue
            if self.room.take(option, on_demand=False):
                return option
        return None

    def settle_cover(self) -> None:
        """Judge the cover: failed; needed while its move is in flight; once the move is done, a move of
        its own if the origin's rollout still has no room (one more replica must leave it), else kept while
        that rollout runs with fewer Ready replicas than wanted without it; then it goes."""
        d = self.decision
        cover = d.cover
        if cover is None:
            return
        option = self.by_name.get(cover.to_type)
        if self.failed_extra(cover, option) or option is None:
            return  # (its type unlisted: it serves until its move is done, then it is ordinary and drained)
        # Ready when its type is (any revision: a rollout there may have begun since)
        cover_ready = sum(p.ready for p in self.pods_on(cover.to_type)) >= d.counts[cover.to_type]
        if cover_ready and cover.ready_at is None:
            d.cover = cover = replace(cover, ready_at=self.now)
        if d.surge is not None or (cover.from_type in d.counts and not self.converged(cover.from_type)):
            # its move is in flight (or another: it is not overwritten), or was done by the last pass and
            # the view has not seen it yet
            return
        ready = sum(p.ready for p in self.pods)
        rolling = cover.from_type is not None and self.rolling(cover.from_type)
        if rolling and cover.from_type is not None and self.blocked_rollout(cover.from_type):
            # (not Ready yet: its start-up is judged as the move's)
            d.surge, d.cover = replace(cover, cover=False), None  # a move now: settle_surge judges it next
            return
        if cover_ready and ready - 1 < self.replicas:
            if not rolling:
                # it serves in place of a wanted replica that is down: an ordinary one now, and the
                # scale-down trims the surplus, a replica that is not Ready
                d.cover = None
            return
        d.cover = None
        self.shift(cover.to_type, None)
        self.spend_one(cover.to_type)
        self.record(Move.COVER_REMOVED, cover.to_type, None, start=cover.since)

    def reserve_pending(self) -> None:
        """Our pending pods will land where there is room; take it before placing anything else. Those
        the view has room on a node for are noted: a refusal of theirs the view does not explain."""
        for option in self.options:
            for pod in self.pods_on(option.name):
                if pod.pending and not self.room.take(option, on_demand=False):
                    self.room.take(option)  # an autoscaled type's: asked, no node's room taken
                elif pod.pending:
                    self.room_seen.add(pod.name)

    def scale_down(self) -> None:
        """Fewer replicas (the replicas in flight are ordinary ones now, see run): first from types whose
        shrink takes no Ready pod (least preferred type first; mid-rollout that depends on the ReplicaSets'
        sizes), Ready ones only beyond the wanted number: Ready replicas never drop needlessly (a surplus
        waits for a type to give one)."""
        d = self.decision
        if d.extras():
            return  # a surplus beside replicas in flight (a failed one left in place) waits for them
        ready = sum(p.ready for p in self.pods)
        while self.settled_total() > self.replicas:
            spare = [t for t in d.counts if not self.shrink_takes_ready(t)]
            if not spare:
                if ready <= self.replicas:
                    break  # every shrink would take one of the wanted Ready replicas: wait for a type to give one
                ready -= 1  # a Ready one beyond the wanted number goes
            spare = spare or list(d.counts)
            victim = max(spare, key=self.rank)
            self.shift(victim, None)
            self.record(Move.SCALED_DOWN, victim, None)
            self.spend_one(victim)

    def scale_up(self) -> None:
        while self.settled_total() < self.replicas:
            option = self.first_with_room() or self.options[0]
            self.shift(None, option.name)
            self.record(Move.SCALED_UP, None, option.name)

    def overflow(self) -> None:
        """Stuck replicas move, one by one, to the most preferred other type with room, else the next one.
        A stuck replica of a rollout moves make-before-break: its type's old replicas are still serving."""
        d = self.decision
        # types left and entered by stuck replicas in this pass
        left: set[str] = set()
        entered: set[str] = set()
        for option in self.options:
            if not self.converged(option.name) or self.is_surge_target(option.name):
                continue
            rolling = self.rolling(option.name)
            stuck = [p for p in self.pods_on(option.name) if p.name not in d.delete_first and self.stuck(p)]
            if not rolling:  # mid-rollout, every stuck pod is looked at: old ones are skipped below
                stuck = stuck[:self.movable(option.name)]
            for pod in stuck:
                if rolling:
                    # the new revision's pod gets room make-before-break; an old revision's stuck pod
                    # goes with the rollout (shrinking the type would take a Ready pod along)
                    if self.new_revision(pod):
                        self.unblock_rollout(option, pod)
                    continue
                # not back to a type just left: the scheduler said no there, whatever the view says
                # (room on a node only: an autoscaled type is asked in the round below, once a round)
                target = self.first_with_room(exclude=option.name, allow_cooling=False, on_demand=False)
                if target is None:
                    d.insufficient[option.display] = pod.scheduler_message
                    target = self.next_in_round(option.name, pod)
                if target is None or target.name in left or option.name in entered:
                    # onto a type a stuck replica is leaving (or off one another enters): the
                    # Deployment would not shrink, so the stuck pod would stay; swaps only churn
                    continue
                left.add(option.name)
                entered.add(target.name)
                self.shift(option.name, target.name)
                d.delete_first.append(pod.name)
                self.record(Move.FELL_BACK, option.name, target.name, pod.scheduler_message, pod.unschedulable_since,
                            room_seen=pod.name in self.room_seen)
        if d.insufficient:
            display = {o.name: o.display for o in self.options}
            for type_name, message in self.last_messages().items():
                if type_name in display:
                    d.insufficient.setdefault(display[type_name], message)
            # still stuck until capacity changes; look again after a timeout too
            d.wake_at(self.now + self.policy.unschedulable_timeout)

    def unblock_rollout(self, option: TypeOption, pod: PodView) -> None:
        """The new revision's extra pod finds no room on its type: start one replica on another type;
        when it is Ready one replica leaves this type, which gives the rollout its room."""
        d = self.decision
        moves = [t for t in d.transitions if t.move is not Move.COVER_REMOVED]  # (a cover's removal moves nothing)
        if d.surge is not None or moves or (d.cover is not None and d.cover.from_type == option.name):
            # one at a time; while a cover from this type runs, its rollout is being given room. Beside a
            # resize only (nothing moving), no room anywhere else is said now all the same
            resized_only = all(t.move in (Move.SCALED_UP, Move.SCALED_DOWN) for t in moves)
            if d.surge is None and d.cover is None and resized_only and not any(
                    self.room.has_room(o) for o in self.options if o.name != option.name):
                self.no_room_for_rollout(option.name, pod)
            return
        target = self.first_with_room(exclude=option.name, allow_backoff=False)
        if target is None:
            self.no_room_for_rollout(option.name, pod)
            return
        self._start(target.name, Move.FELL_BACK, option.name, pod.scheduler_message)

    def move_pending_up(self) -> None:
        """Pending replicas on a less preferred (or unlisted) type go up as soon as a better type has room."""
        d = self.decision
        pending = sorted((p for p in self.pods if p.pending and p.name not in d.delete_first
                          and self.converged(p.machine_type)), key=lambda p: -self.rank(p.machine_type))
        for pod in pending:
            if self.is_surge_target(pod.machine_type) or self.rolling(pod.machine_type):
                # the replica in flight, or a rollout's new pod (judged by overflow, or drained with
                # its type): moving it would shrink a type whose Ready pods run the old template
                continue
            if self.movable(pod.machine_type) <= 0:
                continue
            if pod.machine_type in self.by_name and pod.unschedulable_since is None and not pod.scale_up_coming:
                # not judged by the scheduler yet: it may be bound where it is in a moment (a replica
                # that just fell back, on a busy cluster, would otherwise go back and forth)
                continue
            rank = self.rank(pod.machine_type)
            # room on a node only: an autoscaled type is asked by a make-before-break probe (with
            # back-off) or in the round of a stuck replica, not each time a replica is pending
            target = self.first_with_room(before_rank=rank, allow_cooling=False, on_demand=False)
            if target is None and pod.machine_type not in self.by_name:
                target = self.options[0]
            if target is not None:
                self.shift(pod.machine_type, target.name)
                d.delete_first.append(pod.name)
                self.record(Move.PLACED_PREFERRED, pod.machine_type, target.name)

    def start_surge(self) -> None:
        """Make-before-break: one extra replica on a better type; a worse one goes once it is Ready."""
        d = self.decision
        listed = [t for t in d.counts if t in self.by_name]
        if d.surge or d.cover or d.transitions or any(map(self.rolling, listed)) or any(
                p.pending for p in self.pods if p.machine_type in self.by_name):
            return
        if any(not self.converged(t) for t in d.counts):
            return
        unlisted = self.least_preferred_with_replicas(below_rank=len(self.options) - 1)
        if unlisted is not None:
            target = self.probe_target(len(self.options))
            if target is not None:
                self._start(target.name, Move.DRAIN_STARTED, unlisted)
            else:
                # a replica on an unlisted type that cannot even run: say so, and look again after a timeout
                for type_name in sorted({p.machine_type for p in self.pods if p.pending and p.machine_type not in
                                         self.by_name}):
                    d.insufficient[type_name] = f"no listed type has room to drain {type_name}"
                    d.wake_at(self.now + self.policy.unschedulable_timeout)
            return
        if not self.policy.return_to_preferred:
            return
        worst = self.least_preferred_with_replicas(below_rank=0)
        if worst is None:
            return
        target = self.probe_target(self.rank(worst))
        if target is not None:
            self._start(target.name, Move.PROBE_STARTED, worst)

    def probe_target(self, before_rank: int) -> TypeOption | None:
        """The most preferred type above `before_rank` with room, not backing off, not cooling down."""
        for option in self.options[:before_rank]:
            if self.backing_off(option.name) or option.name in self.cooling:
                continue
            if self.room.take(option):
                return option
        return None

    def _start(self, to_type: str, move: Move, from_type: str, message: str = "") -> None:
        self.shift(None, to_type)
        self.decision.surge = Surge(to_type, from_type, self.now)
        self.record(move, from_type, to_type, message)

