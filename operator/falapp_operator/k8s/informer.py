"""One kind of object kept current by a paged LIST, then a WATCH from the LIST's version, and on from
where each watch stopped.

The API server filters (namespace, label and field selectors), so only matching objects cross the
wire. An expired version (410 Gone) lists again and reports what the new LIST lacks as deleted (with
the LIST's version: a later write the operator already holds is not undone); other failures retry
with a short back-off from where the watch stopped, and an error of the handler lists again after one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from falapp_operator.api import JsonObject
from falapp_operator.k8s.client import WATCH_SILENCE, ApiError, KubeApi, watch_timeout
from falapp_operator.k8s.workqueue import backoff

logger = logging.getLogger("falapp_operator")
EVENTS = ("ADDED", "MODIFIED", "DELETED")


class Informer:
    def __init__(self, api: KubeApi, resource: str, on_event: Callable[[str, JsonObject], object],
                 namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None,
                 track_deletions: bool = True, bookmarks: bool = True,
                 relist: Callable[[], Awaitable[str]] | None = None, max_backoff: float = 10.0):
        self.api, self.resource, self.on_event = api, resource, on_event
        # who lists again when the version expired, instead of `sync` (the controller's resync of the
        # cluster's objects, which finds deletions itself); returns the LIST's version
        self.relist = relist
        self.namespace, self.label_selector, self.field_selector = namespace, label_selector, field_selector
        self.track_deletions = track_deletions  # events are not: nobody minds an Event going
        # without bookmarks (what the API server watches straight from etcd: Events) silence says nothing,
        # and a watch restarted from a LIST's version long past expires (410) and lists again: such watches
        # stay open for 30-60 minutes (the API server's own default), their dead connections found by TCP
        # keepalive; others are restarted every 5-10 minutes (as client-go's) and after 90 s of silence
        self.silence: float | None = WATCH_SILENCE if bookmarks else None
        self.server_timeout = 300 if bookmarks else 1800
        self.version: str | None = None  # where the watch continues; None: list first
        self.max_backoff = max_backoff  # the longest wait between failed requests
        self._known: dict[str, tuple[str, str]] = {}  # uid -> (namespace, name) of what was reported

    @property
    def what(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.resource}{where} {self.label_selector or ''}{self.field_selector or ''}".strip()

    async def sync(self) -> None:
        """LIST everything (each object reported as ADDED), then DELETED for what was known but is gone."""
        listed: dict[str, tuple[str, str]] = {}

        def each(body: JsonObject) -> None:
            meta = body["metadata"]
            if self.track_deletions:
                listed[meta["uid"]] = (meta.get("namespace") or "", meta["name"])
            self.on_event("ADDED", body)
        version = await self.api.list_objects(self.resource, each, self.namespace, self.label_selector,
                                              self.field_selector)
        for uid, (namespace, name) in self._known.items():
            if uid not in listed:
                self.on_event("DELETED", {"metadata": {"uid": uid, "namespace": namespace, "name": name,
                                                       "resourceVersion": version}})
        self._known, self.version = listed, version

    async def run(self) -> None:
        # in a row: requests failing (reset once the stream answers), and the handler failing on events
        failures = handler_failures = 0
        while True:
            try:
                if self.version is None:
                    if self.relist is None:
                        await self.sync()
                    else:
                        self.version = await self.relist()
                async for kind, body in self.api.watch_objects(
                        self.resource, self.version or "", self.namespace, self.label_selector, self.field_selector,
                        server_timeout=watch_timeout(self.server_timeout), silence=self.silence):
                    failures = 0
                    meta = body.get("metadata") or {}
                    self.version = meta.get("resourceVersion") or self.version
                    if kind not in EVENTS:  # BOOKMARK: only the version moves on
                        continue
                    if self.track_deletions:
                        if kind == "DELETED":
                            self._known.pop(meta.get("uid", ""), None)
                        else:
                            self._known[meta["uid"]] = (meta.get("namespace") or "", meta["name"])
                    self.on_event(kind, body)
                    handler_failures = 0
            except ApiError as e:
                if e.status == 410:  # the version is too old to continue from
                    logger.info("watch of %s expired; listing again", self.what)
                    self.version = None
                    continue
                failures += 1
                delay = backoff(failures, self.max_backoff)
                logger.warning("%s %s failed (attempt %d), retrying in %.1fs: %s",
                               "listing" if self.version is None else "watch of", self.what, failures, delay, e)
                await asyncio.sleep(delay)
            except Exception:  # a body the handler did not expect: the watch must not end for good
                handler_failures += 1
                delay = backoff(handler_failures, 10.0)
                logger.exception("%s %s failed (attempt %d), listing again in %.1fs",
                                 "listing" if self.version is None else "watch of", self.what, handler_failures,
                                 delay)
                self.version = None  # the failed event (and what followed) comes back with the LIST
                await asyncio.sleep(delay)


class WhileWanted:
    """Informers that run only while something wants them, and `linger` seconds after the last want
    ends (a want that comes and goes in a rollout lists once, not at every pod). Stopped, they cost
    nothing: no watch, no renewal, no LIST when a long-idle watch comes back expired. Started again,
    each lists first: what was posted while they were stopped is taken then."""

    def __init__(self, what: str, informers: list[Informer], linger: float):
        self.what, self.informers, self.linger = what, informers, linger
        self._tasks: list[asyncio.Task[None]] = []
        self._halted: set[asyncio.Task[None]] = set()  # cancelled, not yet done
        self._halt_timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    async def start_listed(self) -> None:
        """Start with every informer's LIST taken (the controller's start: before the first reconcile)."""
        for informer in self.informers:
            await informer.sync()
        self._start()

    def want(self, wanted: bool) -> None:
        if wanted:
            if self._halt_timer is not None:
                self._halt_timer.cancel()
                self._halt_timer = None
            if not self._tasks:
                logger.info("%s wanted: %d watches start", self.what, len(self.informers))
                self._start()
        elif self._tasks and self._halt_timer is None:
            self._halt_timer = asyncio.get_running_loop().call_later(self.linger, self._halt)

    def _start(self) -> None:
        for task in self._halted:  # (cancelled already: should one have kept running, it must not share
            task.cancel()          # an informer's version with its successor)
        self._tasks = [asyncio.create_task(i.run(), name=f"falapp-watch-{i.what}") for i in self.informers]

    def _halt(self) -> None:
        self._halt_timer = None
        logger.info("%s: unwanted for %.0fs, %d watches stop", self.what, self.linger, len(self._tasks))
        for task in self._tasks:
            task.cancel()
            self._halted.add(task)
            task.add_done_callback(self._halted.discard)
        self._tasks = []
        for informer in self.informers:
            informer.version = None  # (their next run lists first)

    async def stop(self) -> None:
        if self._halt_timer is not None:
            self._halt_timer.cancel()
            self._halt_timer = None
        tasks = [*self._tasks, *self._halted]
        self._tasks = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
