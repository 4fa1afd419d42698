"""Room about to be taken: the shapes of the managed apps' pods about to be bound, and of the replicas an
app just asked for whose pods are not seen yet, per machine type, kept up to date pod by pod. A reconcile
reads other apps' claims in O(shapes), not O(pending pods): a large rollout has thousands pending, and
every pod event used to make the next reconcile count them all."""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

from falapp_operator.api.resources import Resources
from falapp_operator.placement.snapshot import Shape, shape_of

App = tuple[str, str]  # (namespace, name)
K = TypeVar("K", bound=Hashable)


class ClaimTally:
    def __init__(self) -> None:
        self._pods: dict[str, tuple[str, App, Resources]] = {}  # uid -> (machine type, app, requests)
        self._gpu_resource: dict[str, str | None] = {}  # per type: the resource its GPUs are counted as
        self._apps: set[App] = set()  # whose pods claim room (a pod merely carrying an app's label does not)
        self._own: dict[str, dict[App, Counter[Shape]]] = {}  # per type, per app (admitted or not)
        self._totals: dict[str, Counter[Shape]] = {}  # per type, the admitted apps' together
        # replicas asked for, per app and type: (when, shape), oldest first; and every batch, oldest first
        self._expected: dict[App, dict[str, deque[tuple[float, Shape]]]] = {}
        self._expected_batches: deque[tuple[float, App, str]] = deque()
        # the types where room the admitted apps claimed was given up, not taken, since last taken: a pending
        # pod gone, replicas asked for that are no longer wanted, an app no longer counted (apps that would
        # move there look again). A pod bound, or a replica whose pod came, only moves the claim; replicas
        # asked for whose pods are merely late (a burst of thousands) expire without a word
        self.given_up: set[str] = set()

    # --- changes -----------------------------------------------------------------------------------
    def claim(self, uid: str, machine_type: str, app: App, requests: Resources) -> None:
        self.release(uid)
        self._pods[uid] = (machine_type, app, requests)
        self._count(machine_type, app, self._shape(machine_type, requests), 1)

    def release(self, uid: str, gone: bool = False) -> None:
        """The pod claims no room any more: bound, judged unschedulable, or (`gone`) deleted."""
        counted = self._pods.pop(uid, None)
        if counted is not None:
            machine_type, app, requests = counted
            self._count(machine_type, app, self._shape(machine_type, requests), -1)
            self._given_up(app, machine_type, gone)

    def expect(self, app: App, machine_type: str, shape: Shape, count: int, at: float) -> None:
        """`count` replicas just asked for: they claim room until their pods are seen or they expire."""
        if count > 0:
            self._expected.setdefault(app, {}).setdefault(machine_type, deque()).extend([(at, shape)] * count)
            self._expected_batches.append((at, app, machine_type))
            self._count(machine_type, app, shape, count)

    def seen(self, app: App, machine_type: str) -> None:
        """A new pod of the app on the type: the oldest replica expected there has come."""
        by_type = self._expected.get(app)
        if by_type and machine_type in by_type:
            self._unexpect(app, by_type, machine_type, by_type[machine_type].popleft())

    def expect_at_most(self, app: App, machine_type: str, count: int) -> None:
        """At most `count` replicas of the app are still to come on the type (it was asked for fewer
        before the pods of the last ask came): the newest expected beyond that claim nothing."""
        by_type = self._expected.get(app)
        while by_type and machine_type in by_type and len(by_type[machine_type]) > max(count, 0):
            self._unexpect(app, by_type, machine_type, by_type[machine_type].pop())
            self._given_up(app, machine_type)

    def give_up_asked_before(self, app: App, machine_type: str, at: float) -> float | None:
        """The replicas of the app expected on the type that were asked for at or before `at` will not
        come: they claim nothing any more. Returns when the oldest one left was asked for (None: none)."""
        by_type = self._expected.get(app)
        while by_type and machine_type in by_type and by_type[machine_type][0][0] <= at:
            self._unexpect(app, by_type, machine_type, by_type[machine_type].popleft())
            self._given_up(app, machine_type)
        return by_type[machine_type][0][0] if by_type and machine_type in by_type else None

    def expecting(self, app: App) -> dict[str, int]:
        """Replicas of the app expected per type, their pods not seen yet."""
        return {machine_type: len(queue) for machine_type, queue in (self._expected.get(app) or {}).items()}

    def expire(self, deadline: float) -> None:
        """Replicas asked for at or before `deadline` whose pods never came claim nothing any more."""
        while self._expected_batches and self._expected_batches[0][0] <= deadline:
            _, app, machine_type = self._expected_batches.popleft()
            by_type = self._expected.get(app) or {}
            while machine_type in by_type and by_type[machine_type][0][0] <= deadline:
                self._unexpect(app, by_type, machine_type, by_type[machine_type].popleft())

    def forget_expected(self, app: App) -> None:
        for machine_type, queue in self._expected.pop(app, {}).items():
            for _, shape in queue:
                self._count(machine_type, app, shape, -1)
                self._given_up(app, machine_type)

    def admit(self, app: App) -> None:
        if app not in self._apps:
            self._apps.add(app)
            self._move_totals(app, 1)

    def retire(self, app: App) -> None:
        if app in self._apps:
            self._move_totals(app, -1)
            for machine_type, by_app in self._own.items():
                self._given_up(app, machine_type, app in by_app)
            self._apps.discard(app)

    def count_gpus_as(self, gpu_resources: Mapping[str, str | None]) -> None:
        """The catalogue changed: each type's pods are counted as its GPUs are named now."""
        if dict(gpu_resources) == self._gpu_resource:
            return
        self._gpu_resource = dict(gpu_resources)
        self._own.clear()
        self._totals.clear()
        for machine_type, app, requests in self._pods.values():
            self._count(machine_type, app, self._shape(machine_type, requests), 1)
        for app, by_type in self._expected.items():
            for machine_type, queue in by_type.items():
                for _, shape in queue:
                    self._count(machine_type, app, shape, 1)

    # --- reads -------------------------------------------------------------------------------------
    def admitted(self) -> frozenset[App]:
        return frozenset(self._apps)

    def others_on(self, app: App, machine_type: str) -> Counter[Shape]:
        """The shapes the admitted apps other than `app` are about to take on the type."""
        total = self._totals.get(machine_type)
        if not total:
            return Counter()
        own = self._own.get(machine_type, {}).get(app) if app in self._apps else None
        return total - own if own else Counter(total)

    def others(self, app: App) -> dict[str, Counter[Shape]]:
        """others_on for every type some admitted app's replicas are about to take room on."""
        return {t: rest for t in self._totals if (rest := self.others_on(app, t))}

    def _shape(self, machine_type: str, requests: Resources) -> Shape:
        return shape_of(requests.counting(self._gpu_resource.get(machine_type)))

    def _count(self, machine_type: str, app: App, shape: Shape, n: int) -> None:
        _add(self._own.setdefault(machine_type, {}), app, shape, n)
        if not self._own[machine_type]:
            del self._own[machine_type]
        if app in self._apps:
            _add(self._totals, machine_type, shape, n)

    def _given_up(self, app: App, machine_type: str, really: bool = True) -> None:
        if really and app in self._apps:
            self.given_up.add(machine_type)

    def _unexpect(self, app: App, by_type: dict[str, deque[tuple[float, Shape]]], machine_type: str,
                  entry: tuple[float, Shape]) -> None:
        self._count(machine_type, app, entry[1], -1)
        if not by_type[machine_type]:
            del by_type[machine_type]
            if not by_type:
                del self._expected[app]

    def _move_totals(self, app: App, sign: int) -> None:
        for machine_type, by_app in self._own.items():
            for shape, n in (by_app.get(app) or {}).items():
                _add(self._totals, machine_type, shape, sign * n)


class RefusedCreates:
    """Where the API server refused an app's pods for good (see observe.refused_for_good), remembered for
    `memory` seconds from the last look that saw it: replicas asked for there claim no room meanwhile. The
    refusal shows on the app's Deployment, which goes with its last replica: a tenant scaling to zero and
    back would otherwise claim the room afresh at each ask and could hide it from everyone. A namespace's
    quota refuses every app of the namespace; any other refusal (a ServiceAccount not there, a webhook's
    denial) is the app's own, and ends when a pod of its Deployment's is there on that type."""

    def __init__(self, memory: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.memory, self.clock = memory, clock
        self._by_namespace: dict[str, dict[str, float]] = {}  # quota refusals: namespace -> type -> when
        self._by_app: dict[App, dict[str, float]] = {}  # the app's own: app -> type -> when
        self._swept = clock()

    def note(self, app: App, machine_type: str, quota: bool) -> bool:
        """The app's creates on the type are refused now (`quota`: by its namespace's quota); whether
        this was not remembered yet."""
        now = self.clock()
        if now - self._swept > self.memory:
            self._sweep(now)
        seen = self._by_namespace.setdefault(app[0], {}) if quota else self._by_app.setdefault(app, {})
        new = seen.get(machine_type, -math.inf) < now - self.memory
        seen[machine_type] = now
        return new

    def created(self, app: App, machine_type: str) -> None:
        """The app's Deployment made a pod on the type and reports no failure: its own refusal is over."""
        seen = self._by_app.get(app)
        if seen is not None and seen.pop(machine_type, None) is not None and not seen:
            del self._by_app[app]

    def refused(self, app: App) -> set[str]:
        """The types where the app's asks claim no room now."""
        since = self.clock() - self.memory
        return {t for seen in (self._by_namespace.get(app[0]), self._by_app.get(app)) if seen
                for t, at in seen.items() if at >= since}

    def forget_namespace(self, namespace: str) -> None:
        """The namespace is gone, and its quota and apps with it."""
        self._by_namespace.pop(namespace, None)
        for app in [a for a in self._by_app if a[0] == namespace]:
            del self._by_app[app]

    def _sweep(self, now: float) -> None:
        self._swept, since = now, now - self.memory
        self._by_namespace = {k: kept for k, seen in self._by_namespace.items() if (kept := _kept(seen, since))}
        self._by_app = {k: kept for k, seen in self._by_app.items() if (kept := _kept(seen, since))}


def _kept(seen: dict[str, float], since: float) -> dict[str, float]:
    return {t: at for t, at in seen.items() if at >= since}


def _add(counters: dict[K, Counter[Shape]], key: K, shape: Shape, n: int) -> None:
    """counters[key][shape] += n, dropping what reaches zero (a tally of every pod ever pending would grow)."""
    counter = counters.setdefault(key, Counter())
    counter[shape] += n
    if not counter[shape]:
        del counter[shape]
        if not counter:
            del counters[key]
