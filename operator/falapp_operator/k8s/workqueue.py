"""A keyed work queue: each key is processed by one worker at a time, duplicates coalesce,
delayed adds keep only the earliest wake-up (the model of client-go's workqueue): the earliest decision
falling due, and apart from it routine work put off a while, kept only while sooner than the decision.

A key that failed waits out its back-off (`retry_after`): ordinary adds do not cut it short, so a
failing reconcile is retried at its back-off rate, not at the rate its watch events arrive. An
urgent add (the user changed the spec) does.

A key whose delay ran out (a decision fell due: an unschedulable timeout, a probe's back-off) is
handed out before keys queued by events, also when an event queued it before: in a burst of
fallbacks, a replica whose timeout expired does not wait behind other apps' routine status updates."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeAlias, TypeVar

K = TypeVar("K", bound=Hashable)  # a key: what one worker processes at a time
QueueKey: TypeAlias = tuple[str, ...]  # the operator's keys: ("app", namespace, name) or ("machinetypes",)


def backoff(failures: int, ceiling: float) -> float:
    """The wait after the `failures`-th failure in a row (1, 2, ...): 0.5 s doubling up to `ceiling`. The
    exponent is bounded, so a key failing for days still gets a number (2 ** 1024 is no float)."""
    return min(0.5 * 2.0 ** min(max(failures, 1) - 1, 40), ceiling)


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._ready: deque[K] = deque()
        self._due: deque[K] = deque()  # keys whose delay ran out: handed out first
        self._count = asyncio.Semaphore(0)  # keys in _ready and _due
        self._queued: set[K] = set()
        self._processing: set[K] = set()
        self._dirty: dict[K, bool] = {}  # processed keys added again -> whether due
        self._timers: dict[K, asyncio.TimerHandle] = {}  # the soonest decision falling due, or a back-off's end
        # routine work put off a while (due=False), while sooner than the key's decision: kept apart, so a
        # routine wake neither drops the decision's time nor takes its place ahead of others
        self._routine_timers: dict[K, asyncio.TimerHandle] = {}
        self._backing_off: set[K] = set()
        # a batch of events waiting for its pass: apart from the timers above, so a batch neither moves
        # a decision's time nor takes its place ahead of others
        self._batches: dict[K, asyncio.TimerHandle] = {}

    def add(self, key: K, urgent: bool = False, due: bool = False) -> None:
        if key in self._backing_off:
            if not urgent:
                return
            self._backing_off.discard(key)
            timer = self._timers.pop(key, None)
            if timer is not None:  # the back-off's
                timer.cancel()
        # a delay still running is kept: should the key still wait in the queue when it runs out, it
        # moves ahead then (a reconcile before it sets the same delay again, which changes nothing)
        if key in self._processing:
            self._dirty[key] = due or self._dirty.get(key, False)
        elif key not in self._queued:
            self._queued.add(key)
            (self._due if due else self._ready).append(key)
            self._count.release()
        elif due and key in self._ready:
            self._ready.remove(key)
            self._due.append(key)

    def add_batched(self, key: K, window: float) -> None:
        """An event about the key: a routine pass once `window` has passed, shared with the events that
        come meanwhile (one pass for a burst), and with any pass handed out before then. A shorter
        window than the batch's own brings its pass forward (news that may change a decision joins
        a batch of mere progress)."""
        if window <= 0:
            self.add(key)
        elif key not in self._queued and key not in self._dirty:
            loop = asyncio.get_running_loop()
            batch = self._batches.get(key)
            if batch is not None:
                if batch.when() <= loop.time() + window:
                    return
                batch.cancel()
            self._batches[key] = loop.call_later(window, self._batch_due, key)

    def _batch_due(self, key: K) -> None:
        del self._batches[key]
        self.add(key)

    def add_after(self, key: K, delay: float, due: bool = True) -> None:
        """`due`: a decision falls due then (handed out first); not for routine work put off a while."""
        if key in self._backing_off:
            return
        if delay <= 0:
            self.add(key, due=due)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        decision = self._timers.get(key)
        if not due:  # routine: only while sooner than the key's decision (whose pass sets it again)
            routine = self._routine_timers.get(key)
            if (decision is not None and decision.when() <= when) or (routine is not None and routine.when() <= when):
                return
            if routine is not None:
                routine.cancel()
            self._routine_timers[key] = loop.call_at(when, self._fire_routine, key)
            return
        if decision is not None:
            if decision.when() <= when:
                return
            decision.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)
        routine = self._routine_timers.get(key)
        if routine is not None and routine.when() >= when:
            routine.cancel()
            del self._routine_timers[key]

    def _fire_routine(self, key: K) -> None:
        del self._routine_timers[key]
        self.add(key)

    def backing_off(self, key: K) -> bool:
        """The key failed and waits out its back-off (see retry_after)."""
        return key in self._backing_off

    def retry_after(self, key: K, delay: float) -> None:
        """Process the key again after `delay`, and not sooner unless an urgent add comes."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        routine = self._routine_timers.pop(key, None)
        if routine is not None:  # a back-off is waited out whatever was put off
            routine.cancel()
        self._dirty.pop(key, None)
        self._backing_off.add(key)
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self._backing_off.discard(key)
        self.add(key, due=True)

    async def get(self) -> K:
        await self._count.acquire()
        key = self._due.popleft() if self._due else self._ready.popleft()
        self._queued.discard(key)
        batch = self._batches.pop(key, None)
        if batch is not None:  # this pass sees the batch's events
            batch.cancel()
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self.add(key, due=self._dirty.pop(key))

    def __len__(self) -> int:
        return len(self._queued)

    def close(self) -> None:
        for timer in [*self._timers.values(), *self._routine_timers.values()]:
            timer.cancel()
        self._timers.clear()
        self._routine_timers.clear()
        for batch in self._batches.values():
            batch.cancel()
        self._batches.clear()
        self._backing_off.clear()


App = tuple[str, str]  # (namespace, name)


class TurnLine:
    """Apps waiting for a turn. Namespaces take turns, each namespace's apps oldest first: a namespace with
    a thousand apps waiting delays another namespace's app by one turn a round, not by the thousand.
    Iterating gives the apps in the order their turns would come."""

    def __init__(self) -> None:
        # namespace -> its apps waiting, oldest first; the namespace whose turn is next first
        self._by_namespace: dict[str, dict[App, None]] = {}
        self._count = 0

    def add(self, app: App) -> None:
        """In line at the end of its namespace's apps (an app already waiting keeps its place)."""
        apps = self._by_namespace.setdefault(app[0], {})
        if app not in apps:
            apps[app] = None
            self._count += 1

    def discard(self, app: App) -> None:
        apps = self._by_namespace.get(app[0])
        if apps is not None and app in apps:
            del apps[app]
            self._count -= 1
            if not apps:
                del self._by_namespace[app[0]]

    def pop(self) -> App:
        """The app whose turn it is; its namespace goes to the end of the round. IndexError if none waits."""
        if not self._by_namespace:
            raise IndexError("no app waits for a turn")
        namespace = next(iter(self._by_namespace))
        apps = self._by_namespace.pop(namespace)
        app = next(iter(apps))
        del apps[app]
        self._count -= 1
        if apps:
            self._by_namespace[namespace] = apps
        return app

    def __contains__(self, app: object) -> bool:
        return isinstance(app, tuple) and len(app) == 2 and app in self._by_namespace.get(app[0], {})

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[App]:
        rounds = [iter(list(apps)) for apps in self._by_namespace.values()]
        while rounds:
            for each in list(rounds):
                app = next(each, None)
                if app is None:
                    rounds.remove(each)
                else:
                    yield app
