"""A limit on the app requests in flight, let through by priority. When many apps move at once (a pool
lost, hundreds of timeouts falling due together), the API server answers one request after another
whatever the order they came in; held here instead, the writes that start replacements (a move's
history, the Deployment that grows) go before those that only tidy up (shrinks, marks, status, events),
so the last app's replacement is asked for after every app's urgent writes, not after all their writes.
A request that has waited `max_wait` behind more urgent ones gets every AGED_SHARE-th slot, first come
first served: a tenant rolling out thousands of apps slows others' status and events, never stops them,
and urgent requests keep the other slots."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum

AGED_SHARE = 4  # one slot in four may go to the oldest request once it waited max_wait


class Priority(IntEnum):
    # the Deployment a replacement waits on (a move's history rides on it); it goes before other moves'
    # histories: a move started is finished first, so half the apps have their replacements in about
    # half the time, not all of them only at the end
    GROW = 0
    HISTORY = 1  # the history of a move that grows nothing (a return's shrink, a drain), its first write
    NORMAL = 2  # shrinks, marks, deletions, full status writes, a reconcile's fresh reads
    LOW = 3  # status writes that take turns (counts only, a new app's first), events


class RequestGate:
    """At most `limit` requests in flight; a request waiting goes by priority, then first come (see the
    module's note for the oldest one's share)."""

    def __init__(self, limit: int, max_wait: float = 1.0):
        self.limit, self.max_wait = limit, max_wait
        self._in_flight = 0
        # every waiter is in both; one let through by either is left in the other, done, until popped
        self._by_priority: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._by_arrival: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._waiting = 0  # not let through yet, not cancelled
        self._arrival = itertools.count()
        self._handoffs = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        if self._in_flight < self.limit and not self._waiting:
            self._in_flight += 1
        else:
            handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._by_priority, (priority, next(self._arrival), handed))
            self._by_arrival.append((time.monotonic(), handed))
            self._waiting += 1
            try:
                await handed  # a request leaving hands its slot over
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._release()  # handed over as this waiter was cancelled: pass it on
                else:
                    self._waiting -= 1
                    self._compact()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._by_arrival and self._by_arrival[0][1].done():
            self._by_arrival.popleft()
        self._handoffs += 1
        if (self._by_arrival and self._handoffs % AGED_SHARE == 0
                and time.monotonic() - self._by_arrival[0][0] >= self.max_wait):
            self._hand(self._by_arrival.popleft()[1])
            return
        while self._by_priority:
            _, _, handed = heapq.heappop(self._by_priority)
            if not handed.done():
                self._hand(handed)
                return
        self._in_flight -= 1

    def _hand(self, handed: asyncio.Future[None]) -> None:
        handed.set_result(None)  # the slot passes on; in flight stays the same
        self._waiting -= 1
        self._compact()

    def _compact(self) -> None:
        """Entries let through (or cancelled) are left in the other structure until they reach its front;
        under a long flood they would pile up behind a waiter that stays: drop them now and then."""
        if len(self._by_priority) > 2 * self._waiting + 64:
            self._by_priority = [e for e in self._by_priority if not e[2].done()]
            heapq.heapify(self._by_priority)
        if len(self._by_arrival) > 2 * self._waiting + 64:
            self._by_arrival = deque(e for e in self._by_arrival if not e[1].done())
