"""Table-driven tests of the placement engine (design section 3), in the style of Kueue's flavor assigner.

Each case is one snapshot of an app (Deployment sizes per type, surges, pods, free room per node) and the
decision the engine must take from it. Besides the table's expectations, every case checks that the
Ready replicas the ReplicaSets keep never drop below min(Ready before, replicas): a ReplicaSet removes
unscheduled, then not-Ready pods before Ready ones, so a type keeps min(its Ready pods, its count).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from falapp_operator.placement import (
    Decision,
    Move,
    NodeFree,
    Observed,
    PastMove,
    PodView,
    Policy,
    ProbeRetry,
    Surge,
    TypeOption,
    decide,
    probe_backoff,
)
from falapp_operator.placement.snapshot import FreeOnRead
from tests.builders import NOW, UNSCHEDULABLE, option
from tests.builders import free as node
from tests.builders import replica as pod

H100, A100, L4, V100 = "gpu-h100", "gpu-a100", "gpu-l4", "gpu-v100"  # V100: no longer listed
MSG = UNSCHEDULABLE


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


STUCK_SINCE = NOW - s(70)  # past the default 60 s unschedulableTimeout
LONG_AGO = {H100: NOW - s(900)}  # the operator raised H100 then (grown_at)


def stuck_pod(name: str, machine_type: str, since: datetime = STUCK_SINCE, **kw) -> PodView:
    return pod(name, machine_type, since=since, **kw)


TWO = (option(H100), option(A100))
# a move held mid-rollout: A100 -> H100 Ready, but shrinking A100 would take an old Ready pod
HELD = [pod("a-old1", A100, ready=True, current=False), pod("a-old2", A100, ready=True, current=False),
        stuck_pod("a-new1", A100), stuck_pod("a-new2", A100), pod("h1", H100, ready=True, created=NOW - s(20))]
COVER = Surge(L4, A100, NOW - s(10), cover=True)
THREE = (option(H100), option(A100), option(L4))
SURPLUS_WAITS = (f"rollout needs room for one more replica: {MSG}; the app runs 4 replicas for 3 wanted and none can "
                 "go without taking a Ready one, so none is started on another type to make room")


@dataclass(kw_only=True)
class Case:
    id: str
    replicas: int
    counts: dict[str, int] = field(default_factory=dict)
    surge: Surge | None = None
    cover: Surge | None = None
    pods: list[PodView] = field(default_factory=list)
    free: dict[str, list[NodeFree]] = field(default_factory=dict)
    options: tuple[TypeOption, ...] = TWO
    policy: Policy = Policy()
    probes: dict[str, ProbeRetry] = field(default_factory=dict)
    attempts: tuple[PastMove, ...] = ()
    uncreatable: dict[str, str] = field(default_factory=dict)
    nodeless_since: dict[str, datetime] = field(default_factory=dict)  # types seen with no schedulable node
    grown_at: dict[str, datetime] = field(default_factory=dict)  # when the operator last raised each type
    want_counts: dict[str, int]
    want_surge: str | None = None  # the type of the make-before-break replica in flight
    want_cover: str | None = None  # the type of its cover
    want_moves: list[Move] = field(default_factory=list)
    want_delete_first: list[str] | None = field(default_factory=list)  # None: not checked
    want_insufficient: dict[str, str] = field(default_factory=dict)
    want_requeue_at: datetime | None = None
    want_probes: dict[str, ProbeRetry] | None = None  # None: not checked
    xfail: str | None = None  # an engine bug; see the reason

    def observed(self) -> Observed:
        return Observed(self.counts, self.surge, tuple(self.pods), self.probes, self.attempts, self.uncreatable,
                        self.nodeless_since, self.grown_at, self.cover)

    def decide(self) -> Decision:
        return decide(self.options, self.replicas, self.policy, self.observed(), self.free, NOW)


def ready_by_type(observed: Observed) -> dict[str, int]:
    ready: dict[str, int] = {}
    for p in observed.pods:
        if p.ready and not p.terminating and not p.node_gone:  # on a deleted node it runs nowhere
            ready[p.machine_type] = ready.get(p.machine_type, 0) + 1
    return ready


def ready_kept(decision: Decision, observed: Observed) -> int:
    return sum(min(n, decision.counts.get(t, 0)) for t, n in ready_by_type(observed).items())


def apply(decision: Decision, observed: Observed) -> Observed:
    """The app once the decision is written and each ReplicaSet caught up; new pods are not yet scheduled."""
    pods: list[PodView] = []
    for t, n in decision.counts.items():
        on_t = [p for p in observed.pods if p.machine_type == t and not p.terminating]
        # deletion order: pod-deletion-cost (delete_first), unscheduled, not Ready, Ready
        on_t.sort(key=lambda p: (p.name not in decision.delete_first, p.bound, p.ready))
        kept = on_t[len(on_t) - n:] if len(on_t) > n else on_t
        pods += kept + [pod(f"{t}-new{i}", t, created=NOW) for i in range(n - len(kept))]
    return Observed(dict(decision.counts), decision.surge, tuple(pods), dict(decision.probes),
                    observed.attempts, cover=decision.cover)


def surge_to(decision: Decision) -> str | None:
    return decision.surge.to_type if decision.surge else None


# --- the table --------------------------------------------------------------------------------------
CASES = [
    # 1. preferred first
    Case(id="empty-app/room-everywhere", replicas=3,
         free={H100: [node()] * 3, A100: [node()] * 3},
         want_counts={H100: 3}, want_moves=[Move.SCALED_UP] * 3),
    Case(id="empty-app/design-example-1-h100-2-a100", replicas=3,
         free={H100: [node()], A100: [node(gpus=16)]},
         want_counts={H100: 1, A100: 2}, want_moves=[Move.SCALED_UP] * 3),
    Case(id="empty-app/pending-pods-reserve-room-first", replicas=2, counts={H100: 1},
         pods=[pod("h1", H100)], free={H100: [node()], A100: [node()]},
         want_counts={H100: 1, A100: 1}, want_moves=[Move.SCALED_UP]),
    # 2. no room anywhere
    Case(id="no-room/all-on-first-type", replicas=3,
         want_counts={H100: 3}, want_moves=[Move.SCALED_UP] * 3),
    Case(id="no-room/requeue-at-first-timeout", replicas=3, counts={H100: 3},
         pods=[pod("h1", H100, since=NOW - s(20)), pod("h2", H100, since=NOW - s(40)),
               pod("h3", H100, since=NOW - s(5))],
         want_counts={H100: 3}, want_requeue_at=NOW + s(20)),
    # 3. per-replica overflow
    Case(id="overflow/only-the-stuck-replica-moves", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, ready=True), stuck_pod("h2", H100)], free={A100: [node()]},
         want_counts={H100: 1, A100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["h2"]),
    Case(id="overflow/before-timeout-waits-until-deadline", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, ready=True), stuck_pod("h2", H100, since=NOW - s(45))],
         free={A100: [node()]},
         want_counts={H100: 2}, want_requeue_at=NOW + s(15)),
    Case(id="overflow/to-most-preferred-other-type-with-room", replicas=1, options=THREE,
         counts={H100: 1}, pods=[stuck_pod("h1", H100)], free={L4: [node()]},
         want_counts={L4: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"]),
    Case(id="overflow/each-stuck-replica-to-its-own-room", replicas=3, options=THREE, counts={H100: 3},
         pods=[pod("h1", H100, ready=True), stuck_pod("h2", H100), stuck_pod("h3", H100)],
         free={A100: [node()], L4: [node()]},
         want_counts={H100: 1, A100: 1, L4: 1}, want_moves=[Move.FELL_BACK] * 2,
         want_delete_first=["h2", "h3"]),
    # 4. autoscaler-aware
    Case(id="autoscaler/scale-up-coming-waits-scale-up-timeout", replicas=1, counts={H100: 1},
         pods=[stuck_pod("h1", H100, scale_up_coming=True)], free={A100: [node()]},
         want_counts={H100: 1}, want_requeue_at=NOW - s(70) + s(60) + timedelta(minutes=15)),
    Case(id="autoscaler/scale-up-timed-out-falls-back", replicas=1, counts={H100: 1},
         pods=[stuck_pod("h1", H100, since=NOW - s(60 + 15 * 60), scale_up_coming=True)],
         free={A100: [node()]},
         want_counts={A100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"]),
    # 5. no capacity anywhere
    Case(id="no-capacity/first-type-goes-to-next", replicas=1, counts={H100: 1},
         pods=[stuck_pod("h1", H100)],
         want_counts={A100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"],
         want_insufficient={"GPU-H100": MSG}, want_requeue_at=NOW + s(60)),
    Case(id="no-capacity/last-type-wraps-to-first", replicas=1, counts={A100: 1},
         pods=[stuck_pod("a1", A100)],
         want_counts={H100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["a1"],
         want_insufficient={"GPU-A100": MSG}, want_requeue_at=NOW + s(60)),
    Case(id="no-capacity/single-type-stays", replicas=1, options=(option(H100),), counts={H100: 1},
         pods=[stuck_pod("h1", H100)],
         want_counts={H100: 1}, want_insufficient={"GPU-H100": MSG}, want_requeue_at=NOW + s(60)),
    # 6. a pending replica moves up as soon as a preferred type has room, unless it is cooling down
    Case(id="move-up/pending-replica-to-preferred", replicas=2, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, since=NOW - s(10))], free={H100: [node()]},
         want_counts={A100: 1, H100: 1}, want_moves=[Move.PLACED_PREFERRED], want_delete_first=["a2"],
         want_requeue_at=NOW + s(50)),
    Case(id="move-up/not-before-the-scheduler-has-judged-it", replicas=2, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100)], free={H100: [node()]},
         want_counts={A100: 2}),
    Case(id="move-up/not-while-cooling-after-fallback", replicas=2, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, since=NOW - s(10))], free={H100: [node()]},
         attempts=(PastMove(H100, "FellBack", end=NOW - s(20)),),
         want_counts={A100: 2}, want_requeue_at=NOW + s(40)),
    Case(id="move-up/after-cooling-expired", replicas=2, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, since=NOW - s(10))], free={H100: [node()]},
         attempts=(PastMove(H100, "FellBack", end=NOW - s(61)),),
         want_counts={A100: 1, H100: 1}, want_moves=[Move.PLACED_PREFERRED], want_delete_first=["a2"],
         want_requeue_at=NOW + s(50)),
    # 7. return to preferred: make-before-break probe
    Case(id="return/probe-started", replicas=2, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True)], free={H100: [node()]},
         want_counts={A100: 2, H100: 1}, want_surge=H100, want_moves=[Move.PROBE_STARTED]),
    Case(id="return/disabled", replicas=2, counts={A100: 2}, policy=Policy(return_to_preferred=False),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True)], free={H100: [node()]},
         want_counts={A100: 2}),
    Case(id="return/backoff-in-future", replicas=2, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True)], free={H100: [node()]},
         probes={H100: ProbeRetry(1, NOW + s(30))},
         want_counts={A100: 2}, want_requeue_at=NOW + s(30)),
    Case(id="return/no-room", replicas=2, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True)], free={A100: [node()]},
         want_counts={A100: 2}),
    # 8. surge completion: the fallback replica goes only once the probe is Ready
    Case(id="surge/pending-probe-waits", replicas=2, counts={A100: 2, H100: 1}, surge=Surge(H100),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True),
               pod("h1", H100, since=NOW - s(10))],
         want_counts={A100: 2, H100: 1}, want_surge=H100, want_requeue_at=NOW + s(50)),
    Case(id="surge/bound-not-ready-probe-waits", replicas=2, counts={A100: 2, H100: 1}, surge=Surge(H100),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True),
               pod("h1", H100, bound=True, bound_since=NOW - s(240))],
         # a bound probe gets startupTimeout (30 min from being scheduled) to become Ready
         want_counts={A100: 2, H100: 1}, want_surge=H100, want_requeue_at=NOW + s(1560)),
    Case(id="surge/slow-start-is-timed-from-scheduling-not-creation", replicas=1, counts={A100: 1, H100: 1},
         surge=Surge(H100, A100, NOW - s(2000)),
         pods=[pod("a1", A100, ready=True), pod("h1", H100, bound=True, created=NOW - s(1990), bound_since=NOW - s(5))],
         want_counts={A100: 1, H100: 1}, want_surge=H100, want_requeue_at=NOW + s(1795)),
    Case(id="surge/never-ready-probe-fails", replicas=2, counts={A100: 2, H100: 1}, surge=Surge(H100),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True),
               pod("h1", H100, bound=True, bound_since=NOW - s(1801))],
         want_counts={A100: 2}, want_moves=[Move.PROBE_FAILED], want_delete_first=["h1"],
         want_probes={H100: ProbeRetry(1, NOW + s(60))}),
    Case(id="surge/crash-looping-probe-fails-at-once", replicas=1, counts={A100: 1, H100: 1},
         surge=Surge(H100, A100, NOW - s(30)),
         pods=[pod("a1", A100, ready=True),
               pod("h1", H100, bound=True, created=NOW - s(25), bound_since=NOW - s(20), failing="CrashLoopBackOff")],
         want_counts={A100: 1}, want_moves=[Move.PROBE_FAILED], want_delete_first=["h1"],
         want_probes={H100: ProbeRetry(1, NOW + s(60))}),
    Case(id="surge/ready-probe-returns", replicas=2, counts={A100: 2, H100: 1}, surge=Surge(H100),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True), pod("h1", H100, ready=True)],
         probes={H100: ProbeRetry(2, NOW - s(1))},
         want_counts={A100: 1, H100: 1}, want_moves=[Move.RETURNED], want_probes={}),
    # 9. surge failure backs off
    Case(id="surge/stuck-probe-fails", replicas=2, counts={A100: 2, H100: 1}, surge=Surge(H100),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True), stuck_pod("h1", H100)],
         free={H100: [node()]},  # the room it was started for is still there: the scheduler said no
         want_counts={A100: 2}, want_moves=[Move.PROBE_FAILED], want_delete_first=["h1"],
         want_probes={H100: ProbeRetry(1, NOW + s(60))}),
    Case(id="surge/second-failure-doubles-backoff", replicas=2, counts={A100: 2, H100: 1},
         surge=Surge(H100), probes={H100: ProbeRetry(1, NOW - s(100))}, free={H100: [node()]},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True), stuck_pod("h1", H100)],
         want_counts={A100: 2}, want_moves=[Move.PROBE_FAILED], want_delete_first=["h1"],
         want_probes={H100: ProbeRetry(2, NOW + s(120))}),
    # 10. scaling
    Case(id="scale-down/least-preferred-first", replicas=1, counts={H100: 1, A100: 2},
         pods=[pod("h1", H100, ready=True), pod("a1", A100, ready=True), pod("a2", A100, ready=True)],
         want_counts={H100: 1}, want_moves=[Move.SCALED_DOWN] * 2),
    Case(id="scale-down/unlisted-type-first", replicas=1, counts={H100: 1, V100: 1},
         pods=[pod("h1", H100, ready=True), pod("v1", V100, ready=True)],
         want_counts={H100: 1}, want_moves=[Move.SCALED_DOWN]),
    Case(id="scale-up/preferred-type-with-room-first", replicas=3, options=THREE, counts={L4: 1},
         pods=[pod("l1", L4, ready=True)], free={A100: [node()], L4: [node()]},
         want_counts={L4: 2, A100: 1}, want_moves=[Move.SCALED_UP] * 2),
    # 11. machineTypes edited: drain the unlisted type make-before-break
    Case(id="drain/started-on-best-listed-type-with-room", replicas=2, counts={V100: 2},
         pods=[pod("v1", V100, ready=True), pod("v2", V100, ready=True)], free={A100: [node()]},
         want_counts={V100: 2, A100: 1}, want_surge=A100, want_moves=[Move.DRAIN_STARTED]),
    Case(id="drain/even-without-return-to-preferred", replicas=1, counts={V100: 1},
         policy=Policy(return_to_preferred=False), pods=[pod("v1", V100, ready=True)], free={H100: [node()]},
         want_counts={V100: 1, H100: 1}, want_surge=H100, want_moves=[Move.DRAIN_STARTED]),
    Case(id="drain/drained-once-ready", replicas=2, counts={V100: 2, A100: 1}, surge=Surge(A100),
         pods=[pod("v1", V100, ready=True), pod("v2", V100, ready=True), pod("a1", A100, ready=True)],
         want_counts={V100: 1, A100: 1}, want_moves=[Move.DRAINED]),
    Case(id="drain/pending-on-unlisted-moves-now", replicas=1, counts={V100: 1},
         pods=[pod("v1", V100, since=NOW - s(5))],
         want_counts={H100: 1}, want_moves=[Move.PLACED_PREFERRED], want_delete_first=["v1"]),
    # 13. not converged: a move off a type is in flight until its ReplicaSet catches up
    Case(id="not-converged/delete-in-flight-no-second-move", replicas=2, counts={H100: 1, A100: 1},
         pods=[pod("h1", H100, ready=True), stuck_pod("h2", H100), pod("a1", A100)],
         free={A100: [node()]},
         want_counts={H100: 1, A100: 1}),
    Case(id="not-converged/pod-not-created-yet", replicas=2, counts={H100: 2},
         pods=[stuck_pod("h1", H100)], free={A100: [node()]},
         want_counts={H100: 2}),
    # 14. restart consistency
    Case(id="restart/stale-surge-marker-cleared", replicas=2, counts={H100: 1, A100: 1}, surge=Surge(H100),
         pods=[pod("h1", H100, ready=True), pod("a1", A100, ready=True)],
         want_counts={H100: 1, A100: 1}),
    Case(id="restart/surge-clamped-to-surplus", replicas=2, counts={A100: 2, H100: 1}, surge=Surge(H100),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True), pod("h1", H100)],
         want_counts={A100: 2, H100: 1}, want_surge=H100),
    # a scale-down and a move in the same step must not both spend the same non-Ready pod
    Case(id="scale-down/with-stuck-replica-keeps-ready-one", replicas=1, counts={H100: 2},
         pods=[pod("h1", H100, ready=True), stuck_pod("h2", H100)], free={A100: [node()]},
         want_counts={H100: 1}, want_moves=[Move.SCALED_DOWN], want_delete_first=["h2"]),
    Case(id="scale-down/with-pending-replica-keeps-ready-one", replicas=1, counts={A100: 2},
         pods=[pod("a1", A100, ready=True), pod("a2", A100)], free={H100: [node()]},
         want_counts={A100: 1}, want_moves=[Move.SCALED_DOWN], want_delete_first=["a2"]),
    # 15. day-2 operations (issue: rollouts, scale-down, drains, restarts, contention)
    Case(id="scale-down/ready-fallback-kept-over-pending-preferred", replicas=1, counts={H100: 1, A100: 1},
         pods=[pod("h1", H100, since=NOW - s(30), scale_up_coming=True), pod("a1", A100, ready=True)],
         want_counts={A100: 1}, want_moves=[Move.SCALED_DOWN], want_delete_first=["h1"]),
    Case(id="scale-down/to-zero-during-return-drops-the-probe", replicas=0, counts={A100: 1, H100: 1},
         surge=Surge(H100, A100, NOW - s(10)),
         pods=[pod("a1", A100, ready=True), pod("h1", H100, created=NOW - s(5))],
         want_counts={}, want_moves=[Move.SCALED_DOWN] * 2, want_delete_first=["h1"]),
    Case(id="scale-down/during-return-keeps-the-ready-replica", replicas=1, counts={A100: 2, H100: 1},
         surge=Surge(H100, A100, NOW - s(10)),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True), pod("h1", H100, created=NOW - s(5))],
         want_counts={A100: 1}, want_moves=[Move.SCALED_DOWN] * 2, want_delete_first=["h1"]),
    Case(id="rollout/blocked-on-full-type-moves-one-make-before-break", replicas=1, counts={H100: 1},
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100)],
         free={A100: [node()]},
         want_counts={H100: 1, A100: 1}, want_surge=A100, want_moves=[Move.FELL_BACK]),
    Case(id="rollout/restart-by-hand-blocked-on-full-type", replicas=1, counts={H100: 1},
         pods=[replace(pod("h-old", H100, ready=True, created=NOW - s(900)), revision="aaa"),
               replace(stuck_pod("h-new", H100), revision="bbb")],
         free={A100: [node()]},
         want_counts={H100: 1, A100: 1}, want_surge=A100, want_moves=[Move.FELL_BACK]),
    Case(id="rollout/waits-for-its-timeout", replicas=1, counts={H100: 1},
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100, since=NOW - s(10))],
         free={A100: [node()]},
         want_counts={H100: 1}, want_requeue_at=NOW + s(50)),
    Case(id="rollout/replacement-ready-gives-the-rollout-room", replicas=2, counts={H100: 2, A100: 1},
         surge=Surge(A100, H100, NOW - s(30)),
         pods=[pod("h-old1", H100, ready=True, current=False), pod("h-old2", H100, ready=True, current=False),
               stuck_pod("h-new", H100), pod("a1", A100, ready=True, created=NOW - s(20))],
         want_counts={H100: 1, A100: 1}, want_moves=[Move.MOVED]),
    Case(id="rollout/move-waits-while-the-shrink-would-take-an-old-ready-pod", replicas=3,
         counts={A100: 3, H100: 1}, surge=Surge(H100, A100, NOW - s(30)),
         pods=[pod("a-old1", A100, ready=True, current=False), pod("a-old2", A100, ready=True, current=False),
               stuck_pod("a-new1", A100), stuck_pod("a-new2", A100), pod("h1", H100, ready=True, created=NOW - s(20))],
         want_counts={A100: 3, H100: 1}, want_surge=H100, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-A100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="rollout/move-completes-when-the-new-revision-is-the-bigger-one", replicas=3,
         counts={A100: 3, H100: 1}, surge=Surge(H100, A100, NOW - s(30)),
         pods=[pod("a-old1", A100, ready=True, current=False), pod("a-new1", A100, ready=True),
               stuck_pod("a-new2", A100), pod("h1", H100, ready=True, created=NOW - s(20))],
         want_counts={A100: 2, H100: 1}, want_moves=[Move.RETURNED], want_delete_first=["a-new2"]),
    # a held move whose origin's rollout has no room: a cover on a third type lets it finish
    Case(id="cover/held-move-starts-one-where-there-is-room", replicas=3, options=THREE,
         counts={A100: 3, H100: 1}, surge=Surge(H100, A100, NOW - s(30)), pods=HELD, free={L4: [node()]},
         want_counts={A100: 3, H100: 1, L4: 1}, want_surge=H100, want_cover=L4, want_moves=[Move.COVER_STARTED]),
    Case(id="cover/not-on-a-type-backing-off", replicas=3, options=THREE,
         counts={A100: 3, H100: 1}, surge=Surge(H100, A100, NOW - s(30)), pods=HELD, free={L4: [node()]},
         probes={L4: ProbeRetry(1, NOW + s(30))},
         want_counts={A100: 3, H100: 1}, want_surge=H100, want_requeue_at=NOW + s(30),
         want_insufficient={"GPU-A100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="cover/on-its-way-keeps-the-move-held-and-says-nothing", replicas=3, options=THREE,
         counts={A100: 3, H100: 1, L4: 1}, surge=Surge(H100, A100, NOW - s(30)), cover=COVER,
         pods=[*HELD, pod("l1", L4, created=NOW - s(5))],
         want_counts={A100: 3, H100: 1, L4: 1}, want_surge=H100, want_cover=L4),
    Case(id="cover/ready-lets-the-held-move-finish", replicas=3, options=THREE,
         counts={A100: 3, H100: 1, L4: 1}, surge=Surge(H100, A100, NOW - s(30)), cover=COVER,
         pods=[*HELD, pod("l1", L4, ready=True, created=NOW - s(5))],
         want_counts={A100: 2, H100: 1, L4: 1}, want_cover=L4, want_moves=[Move.RETURNED]),
    Case(id="cover/turns-into-a-move-while-the-rollout-still-has-no-room", replicas=3, options=THREE,
         counts={A100: 2, H100: 1, L4: 1}, cover=COVER,
         pods=[pod("a-old1", A100, ready=True, current=False), pod("a-new1", A100, bound=True),
               stuck_pod("a-new2", A100), pod("h1", H100, ready=True), pod("l1", L4, ready=True, created=NOW - s(5))],
         want_counts={A100: 1, H100: 1, L4: 1}, want_moves=[Move.MOVED], want_delete_first=["a-new2"]),
    Case(id="cover/stays-while-the-rollout-runs-short-of-ready-replicas", replicas=3, options=THREE,
         counts={A100: 2, H100: 1, L4: 1}, cover=COVER,
         pods=[pod("a-old1", A100, ready=True, current=False), pod("a-new1", A100, bound=True),
               stuck_pod("a-new2", A100, since=NOW - s(10)), pod("h1", H100, ready=True),
               pod("l1", L4, ready=True, created=NOW - s(5))],
         want_counts={A100: 2, H100: 1, L4: 1}, want_cover=L4, want_requeue_at=NOW + s(50)),
    Case(id="cover/goes-once-the-app-has-its-ready-replicas-without-it", replicas=3, options=THREE,
         counts={A100: 2, H100: 1, L4: 1}, cover=COVER,
         pods=[pod("a-old1", A100, ready=True, current=False), pod("a-new1", A100, ready=True),
               pod("a-new2", A100, bound=True), pod("h1", H100, ready=True),
               pod("l1", L4, ready=True, created=NOW - s(5))],
         want_counts={A100: 2, H100: 1}, want_moves=[Move.COVER_REMOVED]),
    Case(id="cover/failed-goes-and-backs-off-then-the-move-says-it-has-no-room", replicas=3, options=THREE,
         counts={A100: 3, H100: 1, L4: 1}, surge=Surge(H100, A100, NOW - s(300)), cover=COVER,
         pods=[*HELD, stuck_pod("l1", L4, created=NOW - s(100))], free={L4: [node()]},
         want_counts={A100: 3, H100: 1}, want_surge=H100, want_moves=[Move.COVER_FAILED],
         want_delete_first=["l1"], want_requeue_at=NOW + s(60), want_probes={L4: ProbeRetry(1, NOW + s(60))},
         want_insufficient={"GPU-A100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="cover/a-stop-between-the-moves-shrink-and-its-mark-clearing-reads-the-move-as-done", replicas=3,
         options=THREE, counts={A100: 2, H100: 1, L4: 1}, surge=Surge(H100, A100, NOW - s(30)), cover=COVER,
         pods=[pod("a-old1", A100, ready=True, current=False), pod("a-new1", A100, bound=True),
               stuck_pod("a-new2", A100), pod("h1", H100, ready=True), pod("l1", L4, ready=True, created=NOW - s(5))],
         want_counts={A100: 1, H100: 1, L4: 1}, want_moves=[Move.MOVED], want_delete_first=["a-new2"]),
    Case(id="cover/stale-mark-without-a-move-beside-it-is-an-ordinary-replica", replicas=3, options=THREE,
         counts={A100: 2, L4: 1}, cover=COVER,
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True), pod("l1", L4, ready=True)],
         want_counts={A100: 2, L4: 1}),
    Case(id="rollout/move-waits-while-the-shrink-would-end-the-rollout-on-an-old-ready-pod", replicas=3,
         options=THREE, counts={H100: 2, A100: 1, L4: 1}, surge=Surge(A100, H100, NOW - s(60)),
         pods=[pod("h-old", H100, ready=True, current=False), pod("h-new1", H100, ready=True),
               stuck_pod("h-new2", H100), pod("a1", A100, ready=True, created=NOW - s(50)), pod("l1", L4, bound=True)],
         want_counts={H100: 2, A100: 1, L4: 1}, want_surge=A100, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="surge/ready-move-whose-type-then-rolls-out-without-room-is-no-failure", replicas=1,
         counts={A100: 1, H100: 1}, surge=Surge(H100, A100, NOW - s(600), NOW - s(500)),
         pods=[pod("a1", A100, ready=True), pod("h-old", H100, ready=True, current=False, created=NOW - s(590)),
               stuck_pod("h-new", H100)],
         want_counts={H100: 1}, want_moves=[Move.RETURNED]),
    Case(id="rollout/no-room-anywhere-is-said-beside-a-scale-up", replicas=2, counts={H100: 1},
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100)],
         want_counts={H100: 2}, want_moves=[Move.SCALED_UP], want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    # found by a review of the cover (each broke Ready or crashed before)
    Case(id="scale-down/a-type-whose-pod-was-never-made-gives-that-one", replicas=2, counts={H100: 2, A100: 1},
         pods=[pod("h1", H100, ready=True), pod("a1", A100, ready=True)],
         want_counts={H100: 1, A100: 1}, want_moves=[Move.SCALED_DOWN]),
    Case(id="surge/a-probe-is-not-judged-by-a-rollout-begun-since", replicas=2, counts={A100: 1, H100: 2},
         surge=Surge(H100, A100, NOW - s(100)),
         pods=[pod("a1", A100, ready=True), pod("h-old", H100, ready=True, current=False, created=NOW - s(3000)),
               pod("h-probe", H100, bound=True, current=False, created=NOW - s(95)),
               stuck_pod("h-new", H100, created=NOW - s(80))],
         want_counts={A100: 1, H100: 2}, want_surge=H100, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="cover/its-type-unlisted-serves-until-the-held-move-is-done", replicas=3,
         counts={A100: 3, H100: 1, L4: 1}, surge=Surge(H100, A100, NOW - s(30)), cover=COVER,
         pods=[*HELD, pod("l1", L4, ready=True, created=NOW - s(5))],
         want_counts={A100: 2, H100: 1, L4: 1}, want_cover=L4, want_moves=[Move.RETURNED]),
    Case(id="cover/stuck-on-a-type-unlisted-since-fails-and-the-move-says-why-it-waits", replicas=3,
         counts={A100: 3, H100: 1, L4: 1}, surge=Surge(H100, A100, NOW - s(3000)),
         cover=Surge(L4, A100, NOW - s(2000), cover=True), pods=[*HELD, stuck_pod("l1", L4, since=NOW - s(1900))],
         want_counts={A100: 3, H100: 1}, want_surge=H100, want_moves=[Move.COVER_FAILED], want_delete_first=["l1"],
         want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-A100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="cover/failed-and-left-in-place-its-surplus-waits-for-the-move", replicas=4, options=THREE,
         counts={A100: 3, H100: 1, L4: 2}, surge=Surge(H100, A100, NOW - s(400), NOW - s(300)),
         cover=Surge(L4, A100, NOW - s(200), cover=True),
         pods=[*HELD, pod("h1", H100, bound=True, created=NOW - s(390)),
               pod("l-old", L4, ready=True, current=False, created=NOW - s(3000)),
               stuck_pod("l-new", L4, created=NOW - s(190))],
         want_counts={A100: 3, H100: 1, L4: 2}, want_surge=H100, want_moves=[Move.COVER_FAILED],
         want_delete_first=["l-new"], want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-A100": f"rollout needs room for one more replica: {MSG}"}),
    # (its last replica fell back elsewhere: both extras are ordinary replicas, and the surplus goes now)
    Case(id="cover/goes-with-its-move-when-the-moves-origin-is-empty", replicas=2, options=THREE,
         counts={L4: 3, H100: 1}, surge=Surge(L4, A100, NOW - s(30)), cover=COVER,
         pods=[pod("l1", L4, ready=True), pod("l-move", L4, bound=True, created=NOW - s(25)),
               pod("l-cover", L4, bound=True, created=NOW - s(5)), pod("h1", H100, ready=True)],
         want_counts={L4: 1, H100: 1}, want_moves=[Move.SCALED_DOWN, Move.SCALED_DOWN],
         want_delete_first=["l-move", "l-cover"], want_requeue_at=NOW + s(1795)),  # (the cover was judged first)
    Case(id="rollout/no-room-anywhere-is-said-beside-a-drain-off-an-unlisted-type", replicas=2, options=THREE,
         counts={A100: 1, V100: 1, L4: 1}, surge=Surge(L4, V100, NOW - s(30)),
         pods=[pod("a-old", A100, ready=True, current=False), stuck_pod("a-new", A100), pod("v1", V100, ready=True),
               pod("l1", L4, ready=True, created=NOW - s(20))],
         want_counts={A100: 1, L4: 1}, want_moves=[Move.DRAINED], want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-A100": f"rollout needs room for one more replica: {MSG}"}),
    # found by a review of the two cases above
    Case(id="cover/goes-with-its-move-when-the-moves-target-was-unlisted", replicas=2, options=THREE,
         counts={H100: 2, V100: 1, L4: 1}, surge=Surge(V100, A100, NOW - s(310), NOW - s(280)),
         cover=Surge(L4, A100, NOW - s(110), cover=True),
         pods=[pod("h-old1", H100, ready=True, current=False), pod("h-old2", H100, ready=True, current=False),
               stuck_pod("h-new", H100), pod("v-move", V100, ready=True, created=NOW - s(300)),
               pod("l-cover", L4, ready=True, created=NOW - s(100))], free={A100: [node()]},
         want_counts={H100: 2}, want_moves=[Move.SCALED_DOWN, Move.SCALED_DOWN]),
    Case(id="rollout/no-move-starts-beside-a-surplus-the-scale-down-could-not-trim", replicas=3,
         options=(*THREE, option(V100)), counts={H100: 3, L4: 1},
         pods=[pod("h-old1", H100, ready=True, current=False), pod("h-old2", H100, ready=True, current=False),
               pod("h-new1", H100, bound=True, created=NOW - s(200)), stuck_pod("h-new2", H100, created=NOW - s(150)),
               pod("l1", L4, ready=True, created=NOW - s(100))], free={V100: [node()]},
         want_counts={H100: 3, L4: 1}, want_requeue_at=NOW + s(60), want_insufficient={"GPU-H100": SURPLUS_WAITS}),
    Case(id="rollout/a-surplus-of-a-scale-down-mid-rollout-says-why-the-rollout-waits", replicas=3, options=THREE,
         counts={H100: 3, A100: 1},
         pods=[pod("h-old1", H100, ready=True, current=False), pod("h-old2", H100, ready=True, current=False),
               stuck_pod("h-new1", H100), stuck_pod("h-new2", H100), pod("a1", A100, ready=True)],
         free={L4: [node()]}, want_counts={H100: 3, A100: 1}, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": SURPLUS_WAITS}),
    Case(id="rollout/waits-its-turn-behind-a-drain-and-is-looked-at-again", replicas=2, options=THREE,
         counts={H100: 1, L4: 1, V100: 1}, surge=Surge(L4, V100, NOW - s(20)),
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100), pod("v1", V100, ready=True),
               pod("l-drain", L4, bound=True, created=NOW - s(15))], free={A100: [node()]},
         want_counts={H100: 1, L4: 1, V100: 1}, want_surge=L4, want_requeue_at=NOW + s(60)),
    Case(id="drain/an-unlisted-type-mid-rollout-with-nothing-on-a-node-moves-up-beside-a-held-move", replicas=3,
         options=THREE, counts={H100: 1, L4: 1, V100: 2}, surge=Surge(L4, H100, NOW - s(60)),
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100),
               pod("l-move", L4, ready=True, created=NOW - s(50)), stuck_pod("v-old1", V100, current=False),
               stuck_pod("v-old2", V100, current=False), stuck_pod("v-new", V100)], free={A100: [node(gpus=16)]},
         want_counts={H100: 1, L4: 1, A100: 2}, want_surge=L4,
         want_moves=[Move.PLACED_PREFERRED, Move.PLACED_PREFERRED], want_delete_first=["v-old1", "v-old2"],
         want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="drain/an-unlisted-type-mid-rollout-with-a-pod-on-a-node-waits-behind-a-held-move", replicas=3,
         options=THREE, counts={H100: 1, L4: 1, V100: 2}, surge=Surge(L4, H100, NOW - s(60)),
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100),
               pod("l-move", L4, ready=True, created=NOW - s(50)), pod("v-old1", V100, bound=True, current=False),
               stuck_pod("v-old2", V100, current=False), stuck_pod("v-new", V100)], free={A100: [node(gpus=16)]},
         want_counts={H100: 1, L4: 1, V100: 2}, want_surge=L4, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="drain/a-stuck-replica-on-an-unlisted-type-with-no-listed-room-is-said-beside-a-scale-up", replicas=3,
         counts={V100: 2},
         pods=[pod("v-old1", V100, ready=True, current=False), pod("v-old2", V100, ready=True, current=False),
               stuck_pod("v-new", V100)],
         want_counts={V100: 2, H100: 1}, want_moves=[Move.SCALED_UP], want_requeue_at=NOW + s(60),
         want_insufficient={V100: f"no listed type has room to drain {V100}"}),
    Case(id="drain/a-stuck-replica-on-an-unlisted-type-is-not-said-when-this-pass-frees-room", replicas=2,
         counts={H100: 1, A100: 1, V100: 1}, surge=Surge(H100, A100, NOW - s(50)),
         # the return probe is done: A100 gives up its replica, and the next pass drains V100 onto its node
         pods=[pod("h1", H100, ready=True, created=NOW - s(40)), pod("a1", A100, ready=True),
               pod("v-old", V100, ready=True, current=False), stuck_pod("v-new", V100)],
         want_counts={H100: 1, V100: 1}, want_moves=[Move.RETURNED]),
    Case(id="rollout/a-rolling-types-extra-pod-is-not-room-coming", replicas=3, counts={H100: 1, A100: 3},
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100),
               replace(pod("a-o1", A100, ready=True, current=False), revision="o"),
               replace(pod("a-n1", A100, ready=True), revision="n"),
               replace(pod("a-n2", A100, ready=True), revision="n"),
               replace(stuck_pod("a-n3", A100), revision="n")],
         want_counts={H100: 1, A100: 2}, want_moves=[Move.SCALED_DOWN], want_delete_first=["a-n3"],
         want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="rollout/a-scale-down-of-a-pending-replica-frees-no-room", replicas=2, options=THREE,
         counts={H100: 1, A100: 2},
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100), pod("a1", A100, ready=True),
               pod("a2", A100)],
         want_counts={H100: 1, A100: 1}, want_moves=[Move.SCALED_DOWN], want_delete_first=["a2"],
         want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),

    Case(id="rollout/an-autoscaled-type-backing-off-is-no-room-beside-a-drain", replicas=2,
         options=(option(H100), replace(option(A100), autoscaled=True), option(L4)),
         counts={H100: 1, L4: 1, V100: 1}, surge=Surge(L4, V100, NOW - s(20)),
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100), pod("v1", V100, ready=True),
               pod("l-drain", L4, bound=True, created=NOW - s(15))], probes={A100: ProbeRetry(3, NOW + s(1800))},
         want_counts={H100: 1, L4: 1, V100: 1}, want_surge=L4, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="rollout/a-cover-removed-frees-room-the-next-pass-moves-to", replicas=2, options=THREE,
         counts={H100: 1, A100: 1, L4: 1}, cover=COVER,
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100), pod("a1", A100, ready=True),
               pod("l-cover", L4, ready=True, created=NOW - s(100))],
         want_counts={H100: 1, A100: 1}, want_moves=[Move.COVER_REMOVED]),
    Case(id="rollout/no-room-anywhere-says-so-and-waits", replicas=1, counts={H100: 1},
         pods=[pod("h-old", H100, ready=True, current=False), stuck_pod("h-new", H100)],
         want_counts={H100: 1}, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": f"rollout needs room for one more replica: {MSG}"}),
    Case(id="rollout/progressing-type-is-not-a-stuck-move", replicas=2, counts={H100: 2},
         pods=[pod("h-old", H100, ready=True, current=False), pod("h-new1", H100, ready=True),
               pod("h-new2", H100, bound=True)], free={A100: [node()]},
         want_counts={H100: 2}),
    Case(id="drain/waits-when-no-listed-type-has-room", replicas=1, counts={V100: 1},
         pods=[pod("v1", V100, ready=True)],
         want_counts={V100: 1}),
    Case(id="drain/respects-backoff-and-takes-next-type", replicas=1, counts={V100: 1},
         pods=[pod("v1", V100, ready=True)], free={H100: [node()], A100: [node()]},
         probes={H100: ProbeRetry(2, NOW + s(100))},
         want_counts={V100: 1, A100: 1}, want_surge=A100, want_moves=[Move.DRAIN_STARTED],
         want_requeue_at=NOW + s(100)),
    Case(id="restart/stale-surge-mark-on-unlisted-type-keeps-last-ready", replicas=1, counts={V100: 1},
         surge=Surge(V100), pods=[pod("v1", V100, ready=True)],
         want_counts={V100: 1}),
    Case(id="surge/probe-that-lost-a-race-is-not-punished", replicas=2, counts={A100: 2, H100: 1},
         surge=Surge(H100, A100, NOW - s(80)), probes={H100: ProbeRetry(3, NOW - s(100))},
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True),
               stuck_pod("h1", H100, created=NOW - s(75))],
         want_counts={A100: 2}, want_moves=[Move.PROBE_FAILED], want_delete_first=["h1"],
         want_probes={H100: ProbeRetry(3, NOW + s(60))}),
    Case(id="surge/old-replica-briefly-not-ready-is-not-the-probe", replicas=2, counts={H100: 2, A100: 1},
         surge=Surge(H100, A100, NOW - s(10)),
         pods=[pod("h-old", H100, bound=True, created=NOW - s(3600)), pod("h1", H100, created=NOW - s(5)),
               pod("a1", A100, ready=True)],
         want_counts={H100: 2, A100: 1}, want_surge=H100),
    # found by review: each was a hang or churn on the local cluster
    Case(id="surge/extra-replica-stamped-a-second-before-its-start-still-counts", replicas=2,
         counts={A100: 2, H100: 1}, surge=Surge(H100, A100, NOW - s(10)),
         pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True),
               pod("h1", H100, ready=True, created=NOW - s(11))],
         want_counts={A100: 1, H100: 1}, want_moves=[Move.RETURNED]),
    Case(id="surge/quota-blocks-the-extra-pod", replicas=2, counts={A100: 2, H100: 1},
         surge=Surge(H100, A100, NOW - s(30)), pods=[pod("a1", A100, ready=True), pod("a2", A100, ready=True)],
         uncreatable={H100: "exceeded quota: gpus"}, free={H100: [node()]},
         want_counts={A100: 2}, want_moves=[Move.PROBE_FAILED], want_probes={H100: ProbeRetry(1, NOW + s(60))}),
    Case(id="drain/unlisted-type-mid-rollout-is-drained", replicas=1, counts={V100: 1},
         pods=[replace(pod("v-old", V100, ready=True), revision="a"),
               replace(stuck_pod("v-new", V100, created=NOW - s(100)), revision="b")],
         free={H100: [node()]},
         want_counts={V100: 1, H100: 1}, want_surge=H100, want_moves=[Move.DRAIN_STARTED]),
    Case(id="no-capacity/interleaved-replicas-stop-after-one-round", replicas=2, options=THREE,
         # each replica came back to H100 after A100 and L4 (the replicas' attempts interleave)
         counts={H100: 2},
         pods=[stuck_pod("h1", H100, created=NOW - s(72)), stuck_pod("h2", H100, created=NOW - s(71))],
         attempts=(PastMove(A100, "FellBack", end=NOW - s(150)), PastMove(A100, "FellBack", end=NOW - s(149)),
                   PastMove(L4, "FellBack", end=NOW - s(74)), PastMove(L4, "FellBack", end=NOW - s(73))),
         want_counts={H100: 2}, want_requeue_at=NOW + s(60), want_delete_first=[],
         want_insufficient={"GPU-H100": MSG}),
    Case(id="no-capacity/a-round-that-waited-for-an-announced-node-rests-on-the-preferred-type", replicas=1,
         options=THREE, counts={H100: 1},
         # the replica tried A100 and L4 (60 s each), then waited on H100 for a node announced and never made
         # (scaleUpTimeout 900 s), then came back to H100 as the preferred type: its round is over
         pods=[stuck_pod("h1", H100, created=NOW - s(75))],
         attempts=(PastMove(H100, "FellBack", end=NOW - s(1200), start=NOW - s(1265)),
                   PastMove(A100, "FellBack", end=NOW - s(1135), start=NOW - s(1200)),
                   PastMove(L4, "FellBack", end=NOW - s(76), start=NOW - s(1135))),
         want_counts={H100: 1}, want_requeue_at=NOW + s(60), want_insufficient={"GPU-H100": MSG}),
    Case(id="no-capacity/an-old-round-does-not-keep-an-autoscaled-type-from-being-asked-again", replicas=1,
         options=(option(H100), replace(option(A100), autoscaled=True), option(L4)), counts={H100: 1},
         # a round 40 minutes ago ended on H100, where the replica ran once a node came; that node was lost
         pods=[stuck_pod("h1", H100, created=NOW - s(75))],
         attempts=(PastMove(H100, "FellBack", end=NOW - s(2400), start=NOW - s(2460)),
                   PastMove(A100, "FellBack", end=NOW - s(2280), start=NOW - s(2400)),
                   PastMove(L4, "FellBack", end=NOW - s(2220), start=NOW - s(2280))),
         want_counts={A100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"],
         want_insufficient={"GPU-H100": MSG}, want_requeue_at=NOW + s(60)),
    Case(id="no-capacity/other-replicas-long-waits-stretch-the-round-once-per-type", replicas=4,
         options=(option(H100), replace(option(A100), autoscaled=True), option(L4)), counts={H100: 1, A100: 3},
         # three other replicas each waited 960 s on H100 for an announced node, then fell back to A100
         pods=[stuck_pod("h1", H100, created=NOW - s(75)), *(pod(f"a{i}", A100, ready=True) for i in range(3))],
         attempts=(PastMove(H100, "FellBack", end=NOW - s(2400), start=NOW - s(2460)),
                   PastMove(A100, "FellBack", end=NOW - s(2280), start=NOW - s(2400)),
                   PastMove(L4, "FellBack", end=NOW - s(2220), start=NOW - s(2280)),
                   *(PastMove(H100, "FellBack", end=NOW - s(end), start=NOW - s(end + 960))
                     for end in (2000, 1200, 300))),
         want_counts={A100: 4}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"],
         want_insufficient={"GPU-H100": MSG}, want_requeue_at=NOW + s(60)),
    Case(id="overflow/not-back-to-a-type-just-left-whatever-the-view", replicas=1, counts={H100: 1},
         # A100 said no (its pod limit), though the view shows room: cooling keeps the replica on H100
         pods=[stuck_pod("h1", H100, created=NOW - s(12))], free={A100: [node()]},
         attempts=(PastMove(A100, "FellBack", end=NOW - s(10), message="Too many pods"),),
         want_counts={H100: 1}, want_requeue_at=NOW + s(50),
         want_insufficient={"GPU-H100": MSG, "GPU-A100": "Too many pods"}),
    Case(id="no-capacity/after-one-round-waits-on-preferred", replicas=1, counts={H100: 1},
         pods=[stuck_pod("h1", H100, created=NOW - s(71))],
         attempts=(PastMove(A100, "FellBack", end=NOW - s(72), message="0/4 nodes: A100 full"),),
         want_counts={H100: 1}, want_requeue_at=NOW + s(60),
         want_insufficient={"GPU-H100": MSG, "GPU-A100": "0/4 nodes: A100 full"}),
    # 5b. a lost pool: no Ready, schedulable node of the type at all; the scheduler's marks are not awaited
    Case(id="pool-lost/replacements-count-from-the-loss-not-their-creation", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, created=NOW - s(1)), pod("h2", H100, created=NOW - s(5))],
         free={H100: [], A100: [node(gpus=16)]}, nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={A100: 2}, want_moves=[Move.FELL_BACK] * 2, want_delete_first=["h1", "h2"]),
    Case(id="pool-lost/the-schedulers-later-mark-does-not-restart-the-wait", replicas=1, counts={H100: 1},
         pods=[stuck_pod("h1", H100, since=NOW - s(2))], free={H100: [], A100: [node()]},
         nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={A100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"]),
    Case(id="pool-lost/replicas-wait-out-the-timeout-from-the-loss", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, created=NOW - s(600))], free={H100: [], A100: [node(gpus=16)]},
         nodeless_since={H100: NOW - s(10)}, grown_at=LONG_AGO,
         want_counts={H100: 2}, want_requeue_at=NOW + s(50)),
    Case(id="pool-lost/an-empty-view-alone-is-the-schedulers-call", replicas=1, counts={H100: 1},
         pods=[pod("h1", H100, created=NOW - s(600))], free={H100: [], A100: [node()]},
         want_counts={H100: 1}),
    Case(id="pool-lost/full-nodes-are-the-schedulers-call", replicas=1, counts={H100: 1},
         pods=[pod("h1", H100, created=NOW - s(600))], free={H100: [node(gpus=0)], A100: [node()]},
         want_counts={H100: 1}),
    Case(id="pool-lost/a-gated-pod-is-not-the-schedulers-yet", replicas=1, counts={H100: 1},
         pods=[replace(pod("h1", H100, created=NOW - s(600)), gated=True)], free={H100: [], A100: [node()]},
         nodeless_since={H100: NOW - s(300)},
         want_counts={H100: 1}),
    Case(id="pool-lost/an-autoscaled-type-waits-for-its-autoscaler", replicas=2, counts={H100: 2},
         options=(replace(option(H100), autoscaled=True), option(A100)),
         pods=[pod("h1", H100, created=NOW - s(600))], free={H100: [], A100: [node(gpus=16)]},
         nodeless_since={H100: NOW - s(300)},
         want_counts={H100: 2}),
    # replicas whose pods went with their nodes move before the controller manager makes replacements
    Case(id="pool-lost/replicas-gone-with-their-nodes-fall-back-before-replacements-exist", replicas=3,
         counts={H100: 3}, free={H100: [], A100: [node(gpus=24)]}, nodeless_since={H100: NOW - s(61)},
         grown_at=LONG_AGO,
         want_counts={A100: 3}, want_moves=[Move.FELL_BACK] * 3,
         want_delete_first=[f"{H100}/lost-0", f"{H100}/lost-1", f"{H100}/lost-2"]),
    Case(id="pool-lost/replacements-and-missing-ones-go-together", replicas=3, counts={H100: 3},
         pods=[pod("h1", H100, created=NOW - s(2))], free={H100: [], A100: [node(gpus=24)]},
         nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={A100: 3}, want_moves=[Move.FELL_BACK] * 3,
         want_delete_first=["h1", f"{H100}/lost-0", f"{H100}/lost-1"]),
    Case(id="pool-lost/replacements-beyond-a-shrink-are-not-waited-for", replicas=3, counts={H100: 1, A100: 2},
         pods=[pod("h1", H100, created=NOW - s(3)), pod("h2", H100, created=NOW - s(2)),
               pod("h3", H100, created=NOW - s(1)), pod("a1", A100, ready=True), pod("a2", A100)],
         free={H100: [], A100: [node(gpus=16)]}, nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={A100: 3}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"]),
    Case(id="pool-lost/a-replica-still-running-on-a-cordoned-pool-stays", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, ready=True)], free={H100: [], A100: [node(gpus=16)]},
         nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={H100: 1, A100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=[f"{H100}/lost-0"]),
    Case(id="pool-lost/a-rollout-under-way-keeps-its-pods-as-they-are", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, ready=True, revision="r1"), pod("h2", H100, revision="r2", created=NOW - s(1))],
         free={H100: [], A100: [node(gpus=16)]}, nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={H100: 2}, want_delete_first=None, want_requeue_at=None),
    Case(id="pool-lost/lost-replicas-on-a-less-preferred-type-go-up-where-there-is-room", replicas=2,
         counts={A100: 2}, free={H100: [node(gpus=16)], A100: []}, nodeless_since={A100: NOW - s(5)},
         grown_at={A100: NOW - s(900)},
         want_counts={H100: 2}, want_moves=[Move.PLACED_PREFERRED] * 2,
         want_delete_first=[f"{A100}/lost-0", f"{A100}/lost-1"], want_requeue_at=NOW + s(55)),
    Case(id="pool-lost/replicas-bound-to-deleted-nodes-fall-back-with-the-rest", replicas=3, counts={H100: 3},
         pods=[pod("h1", H100, ready=True, node_gone=True), pod("h2", H100, ready=True, node_gone=True)],
         free={H100: [], A100: [node(gpus=24)]}, nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={A100: 3}, want_moves=[Move.FELL_BACK] * 3, want_delete_first=["h1", "h2", f"{H100}/lost-0"]),
    Case(id="pool-lost/a-pod-on-a-deleted-node-of-a-type-with-nodes-is-the-schedulers-call", replicas=1,
         counts={H100: 1}, pods=[pod("h1", H100, ready=True, node_gone=True)],
         free={H100: [node(gpus=0)], A100: [node()]}, grown_at=LONG_AGO,
         want_counts={H100: 1}),
    Case(id="pool-lost/missing-replicas-join-their-siblings-revision", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, revision="r1")], free={H100: [], A100: [node(gpus=16)]},
         nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={A100: 2}, want_moves=[Move.FELL_BACK] * 2, want_delete_first=["h1", f"{H100}/lost-0"]),
    Case(id="pool-lost/a-rollout-with-nothing-left-running-falls-back-whole", replicas=3, counts={H100: 3},
         pods=[pod("h1", H100, ready=True, revision="r1", node_gone=True),
               pod("h2", H100, revision="r2", created=NOW - s(1)),
               replace(pod("h3", H100, revision="r1", node_gone=True, ready=True), current=False)],
         free={H100: [], A100: [node(gpus=24)]}, nodeless_since={H100: NOW - s(61)}, grown_at=LONG_AGO,
         want_counts={A100: 3}, want_moves=[Move.FELL_BACK] * 3, want_delete_first=["h1", "h2", "h3"]),
    Case(id="pool-lost/a-replica-asked-for-after-the-loss-waits-from-then", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, created=NOW - s(9))], free={H100: [], A100: [node(gpus=16)]},
         nodeless_since={H100: NOW - s(300)}, grown_at={H100: NOW - s(10)},
         want_counts={H100: 2}, want_requeue_at=NOW + s(50)),
    Case(id="pool-lost/a-deployment-of-an-older-version-counts-from-each-pods-creation", replicas=3, counts={H100: 3},
         pods=[pod("h1", H100, created=NOW - s(61)), pod("h2", H100, created=NOW - s(20))],
         free={H100: [], A100: [node(gpus=24)]}, nodeless_since={H100: NOW - s(300)},
         want_counts={H100: 3}),
    Case(id="pool-lost/a-deployment-of-an-older-version-moves-its-old-replacements", replicas=2, counts={H100: 2},
         pods=[pod("h1", H100, created=NOW - s(61)), pod("h2", H100, created=NOW - s(62))],
         free={H100: [], A100: [node(gpus=24)]}, nodeless_since={H100: NOW - s(300)},
         want_counts={A100: 2}, want_moves=[Move.FELL_BACK] * 2, want_delete_first=["h1", "h2"]),
]


def params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail
                         else []) for c in cases]


@pytest.mark.parametrize("case", params(CASES))
def test_decide(case: Case) -> None:
    observed = case.observed()
    got = case.decide()
    assert got.counts == case.want_counts
    assert surge_to(got) == case.want_surge
    assert (got.cover.to_type if got.cover else None) == case.want_cover
    assert [t.move for t in got.transitions] == case.want_moves
    if case.want_delete_first is not None:
        assert got.delete_first == case.want_delete_first
    assert got.insufficient == case.want_insufficient
    assert got.requeue_at == case.want_requeue_at
    if case.want_probes is not None:
        assert got.probes == case.want_probes
    ready_before = sum(ready_by_type(observed).values())
    assert ready_kept(got, observed) >= min(ready_before, case.replicas), "a Ready replica was dropped"


@pytest.mark.parametrize("case", params([c for c in CASES if c.id.startswith("cover/")]))
def test_a_cover_case_decided_again_and_again_keeps_the_wanted_ready_replicas(case: Case) -> None:
    """Each pass's writes applied (new pods not scheduled yet) and decided again, three times: no pass
    takes a Ready replica the app wants (was: a failed cover's replica left in place was removed, Ready
    with it, on the next pass)."""
    observed = case.observed()
    for _ in range(3):
        decision = decide(case.options, case.replicas, case.policy, observed, case.free, NOW)
        before = sum(ready_by_type(observed).values())
        assert ready_kept(decision, observed) >= min(case.replicas, before)
        observed = apply(decision, observed)


# 12. idempotence: once the cluster holds the decision, deciding again changes nothing
STABLE = {"empty-app/room-everywhere", "empty-app/design-example-1-h100-2-a100", "no-room/all-on-first-type",
          "overflow/only-the-stuck-replica-moves", "overflow/each-stuck-replica-to-its-own-room",
          "no-capacity/last-type-wraps-to-first", "move-up/pending-replica-to-preferred",
          "return/probe-started", "surge/ready-probe-returns", "surge/stuck-probe-fails",
          "scale-down/least-preferred-first", "scale-up/preferred-type-with-room-first",
          "drain/started-on-best-listed-type-with-room", "drain/pending-on-unlisted-moves-now",
          "pool-lost/unmarked-replacements-fall-back-a-timeout-after-creation"}


@pytest.mark.parametrize("case", params([c for c in CASES if c.id in STABLE]))
def test_applied_decision_is_stable(case: Case) -> None:
    first = case.decide()
    assert first.transitions, "the case should move something"
    after = apply(first, case.observed())
    second = decide(case.options, case.replicas, case.policy, after, case.free, NOW)
    assert second.transitions == []
    assert (second.counts, second.surge) == (first.counts, first.surge)


def test_stable_after_fallback_with_attempt_recorded() -> None:
    """The status records the fallback; the new pending replica on A100 does not bounce back up."""
    case = next(c for c in CASES if c.id == "overflow/only-the-stuck-replica-moves")
    after = replace(apply(case.decide(), case.observed()), attempts=(PastMove(H100, "FellBack", NOW),))
    free = {H100: [node()], A100: [node()]}  # even if room frees up on H100 right away
    second = decide(case.options, case.replicas, case.policy, after, free, NOW)
    assert second.transitions == [] and second.requeue_at == NOW + s(60)


def test_return_to_preferred_is_make_before_break() -> None:
    """Walk a probe from start to finish: the A100 count drops only once the H100 pod is Ready."""
    policy, replicas = Policy(), 2
    observed = Observed({A100: 2}, None, (pod("a1", A100, ready=True), pod("a2", A100, ready=True)))
    free: dict[str, list[NodeFree]] = {H100: [node()]}
    d = decide(TWO, replicas, policy, observed, free, NOW)
    assert [t.move for t in d.transitions] == [Move.PROBE_STARTED]
    observed = apply(d, observed)
    probe = next(p for p in observed.pods if p.machine_type == H100)
    # the probe pending, then unschedulable for a while, then bound, then Ready
    steps = [(probe, free), (replace(probe, unschedulable_since=NOW - s(30)), free),
             (replace(probe, bound=True), {}), (replace(probe, bound=True, ready=True), {})]
    for i, (h, step_free) in enumerate(steps):
        observed = replace(observed, pods=tuple(p for p in observed.pods if p.machine_type != H100) + (h,))
        ready_before = sum(ready_by_type(observed).values())
        d = decide(TWO, replicas, policy, observed, step_free, NOW)
        assert ready_kept(d, observed) >= min(ready_before, replicas)
        if not h.ready:
            assert (d.counts, surge_to(d), d.transitions) == ({A100: 2, H100: 1}, H100, []), i
    assert (d.counts, d.surge) == ({A100: 1, H100: 1}, None)
    assert [(t.move, t.from_type, t.to_type) for t in d.transitions] == [(Move.RETURNED, A100, H100)]
    assert decide(TWO, replicas, policy, apply(d, observed), {}, NOW).transitions == []


@pytest.mark.parametrize(("failures", "want"), [(0, s(60)), (1, s(60)), (2, s(120)), (3, s(240)),
                                                (6, s(1920)), (7, s(3600)), (10, s(3600)), (10**6, s(3600))])
def test_probe_backoff(failures: int, want: timedelta) -> None:
    assert probe_backoff(failures) == want


# --- decided again after a stop half-way; held moves; types the scheduler keeps refusing -----------
def test_a_held_ready_move_is_marked_and_then_survives_a_readiness_blip() -> None:
    held = Case(id="held", replicas=3, counts={A100: 3, H100: 1}, surge=Surge(H100, A100, NOW - s(3000)),
                pods=[pod("a-old1", A100, ready=True, current=False), pod("a-old2", A100, ready=True, current=False),
                      stuck_pod("a-new1", A100), stuck_pod("a-new2", A100),
                      pod("h1", H100, ready=True, created=NOW - s(2990), bound_since=NOW - s(2980))],
                want_counts={A100: 3, H100: 1})
    got = held.decide()
    assert got.surge is not None and got.surge.ready_at == NOW and not got.transitions
    # later its pod loses readiness for a moment, long past startupTimeout: not a failed start
    blip = replace(held, surge=got.surge, pods=[*held.pods[:4], replace(held.pods[4], ready=False)])
    again = blip.decide()
    assert again.surge is not None and again.surge.to_type == H100 and not again.transitions
    assert again.counts == {A100: 3, H100: 1}


def test_a_probe_failure_decided_again_is_counted_once() -> None:
    since = NOW - s(1900)
    case = Case(id="again", replicas=1, counts={A100: 1, H100: 1}, surge=Surge(H100, A100, since),
                pods=[pod("a1", A100, ready=True), pod("h1", H100, bound=True, created=since, bound_since=since)],
                probes={H100: ProbeRetry(2, NOW + s(120))},  # already counted by the history write
                attempts=(PastMove(H100, Move.PROBE_FAILED, NOW - s(1), "not Ready", since),),
                want_counts={A100: 1})
    got = case.decide()
    assert [t.move for t in got.transitions] == [Move.PROBE_FAILED]
    assert got.probes[H100] == ProbeRetry(2, NOW + s(120)) and got.transitions[0].start == since


def test_no_swap_of_stuck_replicas_even_when_the_view_shows_room() -> None:
    """The scheduler refuses both types for this app (the view cannot see why, e.g. a volume's zone):
    the A100 replica may not move onto H100 while H100's stuck replica is leaving it."""
    case = Case(id="swap", replicas=2, counts={H100: 1, A100: 1},
                pods=[stuck_pod("h1", H100), stuck_pod("a1", A100)], free={H100: [node()]},
                want_counts={H100: 1, A100: 1})
    got = case.decide()
    moves = [(t.from_type, t.to_type) for t in got.transitions]
    assert not ((H100, A100) in moves and (A100, H100) in moves), moves


@pytest.mark.parametrize(("room_seen", "falls", "cooled_until"), [
    (True, 1, None),  # the timeout is over: try again
    (True, 2, NOW - s(10) + s(120)),  # refused twice though the view showed room: twice as long
    # refused twice where the view showed no room either (a round through the types while nothing had
    # room): no more than one timeout, so room that comes later is used within a timeout
    (False, 2, NOW - s(10) + s(60)),
])
def test_a_type_that_refuses_again_after_a_return_cools_down_longer(room_seen: bool, falls: int,
                                                                    cooled_until: datetime | None) -> None:
    attempts = (PastMove(H100, Move.FELL_BACK, NOW - s(70), MSG, NOW - s(140), room_seen),
                PastMove(H100, Move.FELL_BACK, NOW - s(10), MSG, NOW - s(50), room_seen))[:falls]
    case = Case(id="cool", replicas=1, counts={A100: 1}, pods=[pod("a1", A100, ready=True)],
                free={H100: [node()]}, attempts=attempts, want_counts={})
    got = case.decide()
    if cooled_until is None:
        assert got.surge is not None and got.surge.to_type == H100
    else:
        assert got.surge is None and got.requeue_at == cooled_until


def test_a_fallback_says_whether_the_view_showed_room_where_the_scheduler_refused() -> None:
    """The fallback off a type with room in the view is one the view does not explain (room_seen); off a
    type without room, it is explained."""
    stuck = pod("h1", H100, since=NOW - s(120))
    for free, seen in (({H100: [node()], A100: [node()]}, True), ({H100: [], A100: [node()]}, False)):
        got = Case(id="seen", replicas=1, counts={H100: 1}, pods=[stuck], free=free, want_counts={}).decide()
        assert [(t.move, t.room_seen) for t in got.transitions] == [(Move.FELL_BACK, seen)]


# --- autoscaled types: room on demand, the autoscaler's answer decides ---------------------------------
AUTOSCALED_FIRST = (replace(option(H100), autoscaled=True), option(A100))


@pytest.mark.parametrize("case", [
    Case(id="autoscaled/new-replica-asks-the-preferred-pool-though-no-node-has-room", options=AUTOSCALED_FIRST,
         replicas=1, counts={}, free={A100: [node()]}, want_counts={H100: 1}, want_moves=[Move.SCALED_UP]),
    Case(id="autoscaled/announced-node-is-waited-for", options=AUTOSCALED_FIRST, replicas=1, counts={H100: 1},
         pods=[stuck_pod("h1", H100, scale_up_coming=True)], free={A100: [node()]},
         want_counts={H100: 1}, want_requeue_at=STUCK_SINCE + s(60 + 900)),
    Case(id="autoscaled/refused-scale-up-falls-back-at-once", options=AUTOSCALED_FIRST, replicas=1,
         counts={H100: 1}, pods=[stuck_pod("h1", H100, since=NOW - s(2), scale_up_refused=True)],
         free={A100: [node()]}, want_counts={A100: 1}, want_moves=[Move.FELL_BACK], want_delete_first=["h1"]),
    Case(id="autoscaled/return-probe-asks-the-pool", options=AUTOSCALED_FIRST, replicas=1, counts={A100: 1},
         pods=[pod("a1", A100, ready=True)], want_counts={A100: 1, H100: 1}, want_surge=H100,
         want_moves=[Move.PROBE_STARTED]),
    Case(id="autoscaled/refused-return-probe-backs-off", options=AUTOSCALED_FIRST, replicas=1,
         counts={A100: 1, H100: 1}, surge=Surge(H100, A100, NOW - s(5)),
         pods=[pod("a1", A100, ready=True), stuck_pod("h1", H100, since=NOW - s(3), created=NOW - s(4),
                                                    scale_up_refused=True)],
         want_counts={A100: 1}, want_moves=[Move.PROBE_FAILED], want_delete_first=["h1"],
         want_probes={H100: ProbeRetry(1, NOW + s(60))}),
], ids=lambda c: c.id)
def test_autoscaled(case: Case) -> None:
    test_decide(case)


@pytest.mark.parametrize("case", [
    Case(id="autoscaled/a-refusal-on-fixed-nodes-is-no-reason-to-move-early", options=AUTOSCALED_FIRST, replicas=1,
         counts={A100: 1}, pods=[stuck_pod("a1", A100, since=NOW - s(3), scale_up_refused=True)],
         want_counts={A100: 1}, want_requeue_at=NOW - s(3) + s(60)),
    Case(id="autoscaled/a-pending-replica-moves-up-only-to-room-on-a-node", options=AUTOSCALED_FIRST, replicas=1,
         counts={A100: 1}, pods=[pod("a1", A100, bound=False)], want_counts={A100: 1}),
    Case(id="autoscaled/new-replicas-skip-a-pool-that-just-refused", options=AUTOSCALED_FIRST, replicas=2,
         counts={A100: 1}, pods=[pod("a1", A100, ready=True)], free={A100: [node()]},
         attempts=(PastMove(H100, Move.FELL_BACK, NOW - s(10), MSG, NOW - s(20)),),
         want_counts={A100: 2}, want_moves=[Move.SCALED_UP], want_requeue_at=NOW + s(50)),
], ids=lambda c: c.id)
def test_autoscaled_answers(case: Case) -> None:
    test_decide(case)


def test_two_refusing_pools_make_one_round_then_wait() -> None:
    """[H100, H200] both autoscaled, A100 fixed and full; every pool refuses each pod 3 s after it is
    made. Stepping the planner every 5 s for two hours: the replica tries each type once, then waits on
    the preferred one (it was: a lap every few minutes, for ever)."""
    h200 = "gpu-h200"
    options = (replace(option(H100), autoscaled=True), replace(option(h200), autoscaled=True), option(A100))
    autoscaled = {H100, h200}
    now, counts, pods, attempts, moves, seq = NOW, {}, [], [], [], 0
    for _ in range(2 * 3600 // 5):
        views = tuple(PodView(p, t, created, unschedulable_since=created + s(1) if now >= created + s(1) else None,
                              scheduler_message=MSG, scale_up_refused=t in autoscaled and now >= created + s(3))
                      for p, t, created in pods)
        got = decide(options, 1, Policy(), Observed(counts, None, views, {}, tuple(attempts)), {A100: []}, now)
        for tr in got.transitions:
            if tr.move == Move.FELL_BACK:
                moves.append((tr.from_type, tr.to_type))
                attempts = [*attempts, PastMove(tr.from_type, tr.move, now, MSG, tr.start)][-20:]
        # the ReplicaSets catch up: pods marked go first, new ones are made for the new counts
        kept = [p for p in pods if p[0] not in got.delete_first]
        for t, n in got.counts.items():
            have = [p for p in kept if p[1] == t]
            for _ in range(n - len(have)):
                seq += 1
                kept.append((f"p{seq}", t, now))
        pods = [p for p in kept if p[1] in got.counts]
        counts = dict(got.counts)
        now += s(5)
    assert moves == [(H100, h200), (h200, A100), (A100, H100)], moves


@pytest.mark.parametrize("case", params(CASES))
def test_free_room_computed_when_read_decides_the_same(case: Case) -> None:
    lazy = FreeOnRead(case.free, lambda type_name: case.free[type_name])
    assert decide(case.options, case.replicas, case.policy, case.observed(), lazy, NOW) == case.decide()


def test_an_app_settled_on_its_preferred_type_reads_no_free_room() -> None:
    """The controller computes a type's free room (hundreds of nodes) only when the planner reads it."""
    case = next(c for c in CASES if c.id == "empty-app/room-everywhere")
    settled = Observed({H100: 3}, None, tuple(pod(f"r{i}", H100, ready=True) for i in range(3)), {}, ())
    read: list[str] = []
    lazy = FreeOnRead(case.free, lambda type_name: read.append(type_name) or case.free[type_name])
    assert decide(case.options, case.replicas, case.policy, settled, lazy, NOW).transitions == []
    assert read == []
