"""A limit on the app requests in flight, let through by priority. When many apps move at once (a pool
lost, hundreds of timeouts falling due together), the API server answers one request after another
whatever the order they came in; held here instead, the writes that start replacements (a move's
history, the Deployment that grows) go before those that only tidy up (shrinks, marks, status, events),
so the last app's replacement is asked for after every app's urgent writes, not after all their writes.
No request waits longer than `max_wait` behind more urgent ones: then it goes first come, first served
(a tenant rolling out thousands of apps does not hold everyone's status and events for good)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum


class Priority(IntEnum):
    URGENT = 0  # a replacement waits on it (and a reconcile's fresh reads)
    NORMAL = 1  # shrinks, marks, deletions, status
    LOW = 2  # events


class WriteGate:
    """At most `limit` requests in flight; a request waiting goes by priority, then first come, unless
    the oldest has waited `max_wait` seconds: it goes next."""

    def __init__(self, limit: int, max_wait: float = 1.0):
        self.limit, self.max_wait = limit, max_wait
        self._in_flight = 0
        self._by_priority: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._by_arrival: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._arrival = itertools.count()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        if self._in_flight < self.limit and not self._by_arrival:
            self._in_flight += 1
        else:
            handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._by_priority, (priority, next(self._arrival), handed))
            self._by_arrival.append((time.monotonic(), handed))
            try:
                await handed  # a request leaving hands its slot over
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._release()  # handed over as this waiter was cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._by_arrival and self._by_arrival[0][1].done():  # handed over or cancelled
            self._by_arrival.popleft()
        if self._by_arrival and time.monotonic() - self._by_arrival[0][0] >= self.max_wait:
            _, handed = self._by_arrival.popleft()  # waited long enough: its turn, whatever its priority
            handed.set_result(None)
            return
        while self._by_priority:
            _, _, handed = heapq.heappop(self._by_priority)
            if not handed.done():
                handed.set_result(None)  # the slot passes on; in flight stays the same
                return
        self._in_flight -= 1
