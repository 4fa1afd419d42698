"""The objects of one LIST taken as their watch events would be, one by one.

A body the handlers did not expect is left out, said in the log and counted, and the rest of the LIST is
taken: one odd node must not park the watch of all of them (its LIST failing at every try). Not at the
start (`strict`: no decision on a half-known cluster; the start fails and is retried, as it always did),
and not when nothing of a LIST could be taken (a fault on every object, not an odd one: the LIST fails
with ListNotTaken, everything kept as known).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from falapp_operator import metrics
from falapp_operator.api import JsonMapping

logger = logging.getLogger("falapp_operator")
NAMED = 10  # objects left out that a LIST names in the log, one line each; the rest are counted


class ListNotTaken(Exception):
    """None of a LIST's objects could be taken."""


class ListedTakes:
    def __init__(self, resource: str, strict: bool):
        self.resource, self.strict = resource, strict
        self.taken = self.skipped = 0
        self._traced: set[str] = set()  # exception types whose traceback this LIST has logged

    def take(self, body: JsonMapping, handle: Callable[[], None]) -> None:
        try:
            handle()
        except Exception as e:
            if self.strict:
                raise
            self.skipped += 1
            if self.skipped > NAMED:
                return
            meta = body.get("metadata") or {}
            name = "/".join(p for p in (meta.get("namespace"), meta.get("name")) if p)
            if type(e).__name__ in self._traced:  # one traceback per kind of fault and LIST
                logger.error("listed %s %s not taken: %s: %s", self.resource, name, type(e).__name__, e)
            else:
                self._traced.add(type(e).__name__)
                logger.exception("listed %s %s not taken", self.resource, name)
        else:
            self.taken += 1

    def taken_as_told(self) -> None:
        """An object the LIST passed over, its watch's word being newer: taken all the same."""
        self.taken += 1

    def done(self) -> None:
        """The objects left out counted; ListNotTaken when there were some and none was taken."""
        if not self.skipped:
            return
        if not self.taken:
            raise ListNotTaken(f"none of the {self.skipped} listed {self.resource} could be taken (see the log)")
        metrics.LISTED_SKIPPED.labels(self.resource).inc(self.skipped)
        logger.warning("%d listed %s not taken (the first %d named above), the other %d taken", self.skipped,
                       self.resource, min(self.skipped, NAMED), self.taken)
