"""Turns of FalApp status writes that are not news: when each app's may go.

Counts are news for people, and the API server's time is placement's when many apps change at once (a
mass fallback, hundreds of apps rolling out): a custom resource's status write is one of its dearest
requests. So a status write that only updates counts waits until a second after the app's own last one,
and then takes a turn: the apps waiting take turns at `rate()` a second, namespaces in turn and each
namespace's apps oldest first (one tenant's burst does not hold up the others). An app whose counts go
back leaves the line without using a turn, so the line is the apps waiting. A new app's first status
takes turns too while it only says its replicas are starting (see writes.first_sight), for at most
settings.status_first_wait. The rate falls when the API server answers status writes slowly.

The app writer decides which writes take turns (k8s/app_writer.py, write_status); this module keeps the
line, the clock of each app's last write and the moving average of answer times.
"""

from __future__ import annotations

import asyncio
import math
import time

from falapp_operator import metrics
from falapp_operator.k8s.workqueue import TurnLine, WorkQueue
from falapp_operator.settings import OperatorSettings

App = tuple[str, str]  # namespace, name
# an app's status write that only updates counts (no condition turns, nothing else written, the same
# generation) waits until at least this long after its last one: replicas coming up one by one cost one
# write a second, not one each (longer when many apps wait: settings.status_counts_rate)
STATUS_COALESCE = 1.0
STATUS_LATENCY_WEIGHT = 0.2  # of the latest answer in the moving average of status writes' answer times
STATUS_LATENCY_CAP = 10.0  # one answer counts for at most this many times settings.status_counts_latency
STATUS_LATENCY_FADE = 10.0  # seconds for the average to fall to 1/e without answers


class StatusTurns:
    """The line of apps whose status write waits for a turn; a turn wakes the app through `queue`."""

    def __init__(self, settings: OperatorSettings, queue: WorkQueue[tuple[str, ...]]):
        self.settings, self.queue = settings, queue
        self.written: dict[App, float] = {}  # app -> when its status was last written
        self.waiting = TurnLine()  # the apps waiting, in the order their turns come
        self.given: set[App] = set()  # apps whose turn came and who have not written yet
        self.first_waiting_since: dict[App, float] = {}  # app -> when its first status began to wait
        self.last_turn = -1.0e9
        self.latency = 0.0  # moving average of the API's answer time to status writes, seconds
        self.latency_at = time.monotonic()  # when it was last updated (it fades from there)
        self.ticker: asyncio.TimerHandle | None = None
        metrics.STATUS_COUNTS_RATE.set(settings.status_counts_rate)

    def own_wait(self, app: App) -> float:
        """Seconds until a second has passed since the app's last status write (<= 0: it has)."""
        return self.written.get(app, -STATUS_COALESCE) + STATUS_COALESCE - time.monotonic()

    def first_wait_left(self, app: App) -> float:
        """Seconds a new app's first status may still wait for a turn: status_first_wait from when it first
        waited until it is written (a refused write does not start it again); after that it goes without."""
        now = time.monotonic()
        return self.first_waiting_since.setdefault(app, now) + self.settings.status_first_wait - now

    def take(self, app: App) -> bool:
        """Whether the app's status write that takes turns may go now; if not, it waits in line."""
        if app in self.given:
            self.given.discard(app)
            return True
        now = time.monotonic()
        if not self.waiting and not self._unused() and now - self.last_turn >= 1 / self.rate():
            self.last_turn = now
            return True
        self.waiting.add(app)
        metrics.STATUS_WRITES_WAITING.set(len(self.waiting))
        self._schedule_next()
        return False

    def give_back(self, app: App) -> None:
        """The app's write that used its turn failed: its retry writes at once."""
        self.given.add(app)

    def wrote(self, app: App) -> None:
        """The app's full status was written (a first status included)."""
        self.wrote_history(app)
        self.first_waiting_since.pop(app, None)

    def wrote_history(self, app: App) -> None:
        """A move's history was written into the app's status: its own second starts again, and a turn it
        waited for or held is used (a first status still waits, if it may)."""
        self.written[app] = time.monotonic()
        self.forget_turn(app)

    def settled(self, app: App) -> None:
        """The app's status says what its plan says: it waits for nothing and holds no turn."""
        self.forget_turn(app)
        self.first_waiting_since.pop(app, None)

    def forget(self, app: App) -> None:
        """The controller leaves the app alone (deleted, being deleted, left behind)."""
        self.written.pop(app, None)
        self.settled(app)

    def forget_turn(self, app: App) -> None:
        """Out of the line, and a turn given and not used dropped; its last write's time and its first
        status's wait stay."""
        self.waiting.discard(app)
        metrics.STATUS_WRITES_WAITING.set(len(self.waiting))
        self.given.discard(app)

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.cancel()
            self.ticker = None

    def _unused(self) -> int:
        """Turns given and not used yet, but for apps waiting out a back-off (their apply failing, say):
        those hold theirs until their retry, which must not stop the turns of everyone else."""
        return sum(1 for app in self.given if not self.queue.backing_off(("app", *app)))

    def _schedule_next(self) -> None:
        if self.ticker is None and self.waiting:
            delay = self.last_turn + 1 / self.rate() - time.monotonic()
            self.ticker = asyncio.get_running_loop().call_later(max(delay, 0.0), self.give_turn)

    def give_turn(self) -> None:
        """The next app in line gets its turn and is woken (the ticker's call)."""
        self.ticker = None
        rate = self.rate()
        # not sooner than 1/rate after the last turn (an app may have had one at once meanwhile), and not
        # while a second's worth of turns is still unused (workers held up: they would all write at once)
        early = self.last_turn + 1 / rate - time.monotonic()
        if early > 0.001 or self._unused() >= max(1, math.ceil(self.settings.status_counts_rate)):
            self.ticker = asyncio.get_running_loop().call_later(early if early > 0.001 else 1 / rate,
                                                                self.give_turn)
            return
        if self.waiting:
            app = self.waiting.pop()
            metrics.STATUS_WRITES_WAITING.set(len(self.waiting))
            self.given.add(app)
            self.last_turn = time.monotonic()
            self.queue.add(("app", *app), due=False)
        self._schedule_next()

    def answered_in(self, seconds: float) -> None:
        """One status write's answer time into the moving average; one answer counts for at most
        STATUS_LATENCY_CAP times the latency allowed (a lone slow answer, e.g. a tenant's huge object,
        slows the turns a little, not to the floor)."""
        seconds = min(seconds, STATUS_LATENCY_CAP * self.settings.status_counts_latency)
        self.latency = self.latency_now() + STATUS_LATENCY_WEIGHT * (seconds - self.latency_now())
        self.latency_at = time.monotonic()
        metrics.STATUS_COUNTS_RATE.set(self.rate())

    def latency_now(self) -> float:
        """The moving average, fading as time passes without answers (no write since: nothing is slow)."""
        idle = time.monotonic() - self.latency_at
        return self.latency * math.exp(-idle / STATUS_LATENCY_FADE) if idle > 0 else self.latency

    def rate(self) -> float:
        """Counts-only writes a second: status_counts_rate while status writes are answered within
        status_counts_latency, less in proportion when slower (the API server is busy: placement first)."""
        rate, slower = self.settings.status_counts_rate, self.latency_now() / self.settings.status_counts_latency
        return rate if slower <= 1 else max(1.0, rate / slower)
