"""The placement engine's view of one app for one pass (see engine.py): the replicas as they are (lost
pools' included), the decision being built, and the questions every step asks of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from falapp_operator.placement.decision import PROBE_BACKOFF_MAX, Decision, Move, Transition
from falapp_operator.placement.snapshot import NodeFree, Observed, PodView, Policy, Room, TypeOption


class PlannerState:
    """One pass's view of the app (the replicas as they are, the room left, the decision so far) and the
    questions the steps ask of it; the steps themselves are in extras.py and engine.py."""

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
                        on_demand: bool = True, take: bool = True) -> TypeOption | None:
        """The most preferred type with room on a node, or (`on_demand`) an autoscaled type to ask, unless
        it refused lately (cooling down) or a probe there failed (backing off); `take`: the room is taken
        (else only looked at)."""
        room = self.room.take if take else self.room.fits
        for rank, option in enumerate(self.options):
            if before_rank is not None and rank >= before_rank:
                break
            if option.name == exclude or (not allow_cooling and option.name in self.cooling):
                continue
            if not allow_backoff and self.backing_off(option.name):
                continue
            if room(option, on_demand=False):
                return option
            if on_demand and option.autoscaled and option.name not in self.cooling and not self.backing_off(
                    option.name) and room(option):
                return option
        return None

    def no_room_for_rollout(self, type_name: str, blocked: PodView, why: str = "") -> None:
        listed = self.by_name.get(type_name)
        self.decision.insufficient[listed.display if listed else type_name] = (
            f"rollout needs room for one more replica: {blocked.scheduler_message}{why}")
        self.decision.wake_at(self.now + self.policy.unschedulable_timeout)

    def blocked_rollout(self, type_name: str) -> PodView | None:
        """The new revision's pod a rollout on the type waits for, stuck: the rollout has no room."""
        return next((p for p in self.pods_on(type_name) if self.new_revision(p) and self.stuck(p)), None)

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
        interleave, so by time, not by position; and anchored on the pod, so waiting does not age it).
        A fallback that waited longer than that on its type (a node an autoscaler announced, up to
        scaleUpTimeout) stretches the round by its wait, once per type: only waits that happened (else a
        replica sent to the preferred type after a long wait there took the round for over and began a
        second lap; and an old round must not stop an autoscaled type from being asked again)."""
        slot = 2 * (self.policy.unschedulable_timeout + timedelta(seconds=5))  # one type's turn, interleaved
        since = pod.created - len(self.options) * slot
        tried: set[str] = set()
        stretched: dict[str, timedelta] = {}  # per type, the longest wait counted (replicas interleave)
        ended = sorted(((a.end, a) for a in self.attempts if a.outcome == Move.FELL_BACK and a.end is not None
                        and a.end <= pod.created + timedelta(seconds=5)), key=lambda pair: pair[0], reverse=True)
        for end, attempt in ended:
            if end < since:
                break
            tried.add(attempt.machine_type)
            if attempt.start is not None and end - attempt.start > slot:
                longer = min(end - attempt.start - slot, self.policy.scale_up_timeout)
                counted = stretched.get(attempt.machine_type, timedelta(0))
                if longer > counted:
                    since -= longer - counted
                    stretched[attempt.machine_type] = longer
        untried = [o for o in self.options if o.name != type_name and o.name not in tried]
        if untried:
            return untried[0]
        preferred = self.options[0]
        return None if type_name == preferred.name else preferred

    def last_messages(self) -> dict[str, str]:
        """The scheduler's latest message per type, from the attempt history."""
        return {a.machine_type: a.message for a in self.attempts if a.message}
