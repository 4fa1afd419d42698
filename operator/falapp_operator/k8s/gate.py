"""A limit on the app writes in flight, let through by priority. When many apps move at once (a pool
lost, hundreds of timeouts falling due together), the API server answers one write after another
whatever the order they came in; held here instead, the writes that start replacements (a move's
history, the Deployment that grows) go before those that only tidy up (shrinks, marks, status, events),
so the last app's replacement is asked for after every app's urgent writes, not after all their writes."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum


class Priority(IntEnum):
    URGENT = 0  # a replacement waits on it
    NORMAL = 1  # shrinks, marks, deletions, status
    LOW = 2  # events


class WriteGate:
    """At most `limit` writes in flight; a write waiting goes by priority, then first come."""

    def __init__(self, limit: int):
        self.limit = limit
        self._in_flight = 0
        self._waiting: list[tuple[Priority, int, asyncio.Future[None]]] = []
        self._arrival = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(not f.done() for _, _, f in self._waiting)

    @asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        if self._in_flight < self.limit and not self._waiting:
            self._in_flight += 1
        else:
            handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._arrival), handed))
            try:
                await handed  # a write leaving hands its slot over
            except asyncio.CancelledError:
                if handed.done() and not handed.cancelled():
                    self._release()  # handed over as this waiter was cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, handed = heapq.heappop(self._waiting)
            if not handed.done():  # (a cancelled waiter's future is done)
                handed.set_result(None)
                return
        self._in_flight -= 1
