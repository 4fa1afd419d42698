"""Events on FalApps: posted in the background (an event never holds up a placement step), each Warning
once until the app's status has caught up with it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import TypeVar

from falapp_operator.api import API_VERSION, JsonMapping
from falapp_operator.k8s.client import ApiError, KubeApi
from falapp_operator.k8s.gate import Priority
from falapp_operator.reconcile import children
from falapp_operator.reconcile.app import Event

logger = logging.getLogger("falapp_operator")
App = tuple[str, str]  # namespace, name
Send = Callable[[Priority, Coroutine[object, object, None]], Awaitable[None]]
Unposted = Callable[[], None] | None
K = TypeVar("K")
V = TypeVar("V")


def unmark(marks: MutableMapping[K, V], key: K, value: V) -> Callable[[], None]:
    """An `unposted` callback for an event posted once: it forgets `marks[key] == value` (the mark that
    it was posted), so that the event is posted again while it still holds."""
    def forget() -> None:
        if marks.get(key) == value:
            del marks[key]
    return forget


class AppEvents:
    """The operator's events on FalApps, and the Warnings posted while each app's status lags behind."""

    def __init__(self, api: KubeApi, send: Send):
        """`send`: how an app request goes out (through the controller's gate)."""
        self.api, self._send = api, send
        self.pending: set[asyncio.Task[None]] = set()  # posts not answered yet (cancelled when stopping)
        # app -> (reason, message) of the last Warning posted while its status had not caught up with it
        self.warned: dict[App, tuple[str, str]] = {}

    @staticmethod
    def involved(ref: children.AppRef) -> JsonMapping:
        """The FalApp as an event's involvedObject."""
        return {"apiVersion": API_VERSION, "kind": "FalApp", "name": ref.name, "namespace": ref.namespace,
                "uid": ref.uid}

    def post_all(self, ref: children.AppRef, events: Iterable[Event], unposted: Unposted = None) -> None:
        """A plan's events. The plan tells news from the recorded status; while a counts-only status write
        waits its turn, the same warning would be news again at every reconcile: it is posted once."""
        for event in events:
            if event.type == "Warning":
                self.warn(ref, event.reason, event.message, unposted)
            else:
                self.post(self.involved(ref), event.type, event.reason, event.message, unposted)

    def warn(self, ref: children.AppRef, reason: str, message: str, unposted: Unposted = None) -> None:
        """A Warning, unless the same one was posted since the app's status last caught up (or its post
        failed: then the next reconcile posts it)."""
        app = (ref.namespace, ref.name)
        if self.warned.get(app) != (reason, message):
            self.warned[app] = (reason, message)
            forget = unmark(self.warned, app, (reason, message))

            def forgotten() -> None:
                forget()
                if unposted is not None:
                    unposted()
            self.post(self.involved(ref), "Warning", reason, message, forgotten)

    def caught_up(self, app: App) -> None:
        """The app's status says what its plan says: a warning from now on is news."""
        self.warned.pop(app, None)

    def post(self, involved: JsonMapping, event_type: str, reason: str, message: str,
             unposted: Unposted = None) -> None:
        """`unposted`: called should the post fail (not when cancelled as the controller stops): a caller
        that posts an event once forgets it did, so that it is posted again while it still holds."""
        task = asyncio.create_task(self._post(involved, event_type, reason, message))
        self.pending.add(task)
        task.add_done_callback(lambda done: self._posted(done, unposted))

    async def _post(self, involved: JsonMapping, event_type: str, reason: str, message: str) -> None:
        # the request is made here, not by the caller: a task cancelled before it starts leaves none unawaited
        await self._send(Priority.LOW, self.api.post_event(involved, event_type, reason, message))

    def _posted(self, task: asyncio.Task[None], unposted: Unposted) -> None:
        self.pending.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            if unposted is not None:
                unposted()
            if isinstance(error, ApiError) and error.namespace_gone:  # the app went with it, or was left behind
                logger.debug("event not posted: %s", error)
            else:
                logger.warning("could not post an event: %s", error)
