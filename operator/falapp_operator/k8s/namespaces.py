"""The namespaces of managed apps, as the controller knows them: labels (entitlements to MachineTypes),
deletions in progress, namespaces gone, and apps their namespace's deletion left behind ("orphans").

A namespace's change queues its apps; a namespace read fresh is known to be void when an event about it
came while the read was in flight (the answer may predate it).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from falapp_operator import metrics
from falapp_operator.api import JsonMapping, JsonObject
from falapp_operator.k8s.app_events import App
from falapp_operator.k8s.client import ApiError
from falapp_operator.k8s.workqueue import QueueKey, WorkQueue

logger = logging.getLogger("falapp_operator")


class Namespaces:
    def __init__(self, queue: WorkQueue[QueueKey], apps: set[App], read: Callable[[str], Awaitable[JsonObject | None]]):
        """`apps`: every FalApp the controller has seen (its own set, read here); `read`: a namespace read
        fresh from the API."""
        self.queue, self.apps, self._read = queue, apps, read
        self.labels: dict[str, dict[str, str]] = {}  # only the labels: no whole bodies kept
        self.terminating: set[str] = set()  # namespaces being deleted: their apps go with them
        # apps whose namespace is gone, left alone (see park): the uid of the one parked
        self.orphans: dict[App, str] = {}
        self._orphans_told: set[App] = set()  # told once, parked again or not, until deleted
        # namespaces read to know whether an app was left behind, with the reads in flight; and those an
        # event was about meanwhile (it may have come after the answer: the check is void)
        self.checking: Counter[str] = Counter()
        self._seen_while_checking: set[str] = set()
        # namespaces of known apps seen to go (DELETED) or missing from a LIST, until seen again: their
        # apps' reconciles read the namespace, as they may have nothing to write (no write would tell)
        self.gone: set[str] = set()

    def observe(self, body: JsonMapping, deleted: bool) -> None:
        """Keep each namespace's labels; when they change, its apps are placed again. Its apps are looked
        at again too when it goes (each one went with it or was left behind, see park) and when one of
        that name is there again (what the old one left behind is its now: parked apps, and those its
        deletion had put on hold)."""
        name = body["metadata"]["name"]
        if name in self.checking:
            self._seen_while_checking.add(name)
        labels = None if deleted else dict(body["metadata"].get("labels") or {})
        was_terminating = name in self.terminating
        if not deleted and body["metadata"].get("deletionTimestamp"):
            self.terminating.add(name)
        else:
            self.terminating.discard(name)
        if labels is None:
            self.labels.pop(name, None)
            if self.queue_apps(name):
                self.gone.add(name)
            return
        self.gone.discard(name)
        if name not in self.terminating:  # it is there (an event proves it)
            self._release_orphans(name)
            if was_terminating:  # its apps were held (see Controller._reconcile_app): the deletion is over
                self.queue_apps(name)
        if self.labels.get(name) != labels:  # (unknown before too: an app seen before its namespace was
            # placed without its entitlements)
            self.labels[name] = labels
            self.queue_apps(name)

    def listed(self) -> None:
        """Apps whose namespace the last LIST of namespaces did not have: looked at (see `gone`)."""
        missing = {namespace for namespace, _ in self.apps if namespace not in self.labels}
        for namespace in sorted(missing - self.gone):
            self.queue_apps(namespace)
        self.gone = missing

    def queue_apps(self, namespace: str) -> bool:
        """Its apps queued; whether it has any."""
        apps = sorted([app for app_namespace, app in self.apps if app_namespace == namespace])
        for app in apps:
            self.queue.add(("app", namespace, app))
        return bool(apps)

    async def read(self, namespace: str) -> tuple[JsonObject | None, bool]:
        """The namespace read fresh; and whether an event about it came meanwhile (the answer may predate
        it, and that event is handled already)."""
        self.checking[namespace] += 1
        try:
            return await self._read(namespace), namespace in self._seen_while_checking
        finally:
            self.checking[namespace] -= 1
            if not self.checking[namespace]:
                del self.checking[namespace]
                self._seen_while_checking.discard(namespace)

    def park(self, app: App, uid: str, error: ApiError) -> None:
        """The app is stored but its namespace is gone (the namespace's deletion left it behind: e.g. the
        API server restarted meanwhile): every write there answers 404, events included. Told once (by
        this process), left alone (no retries) until it is deleted or a namespace of that name is seen."""
        namespace, name = app
        self.orphans[app] = uid
        metrics.APPS_LEFT_BEHIND.set(len(self.orphans))
        if app not in self._orphans_told:
            self._orphans_told.add(app)
            logger.warning("%s/%s: its namespace no longer exists (%s): nothing can be written for it; left "
                           "alone until a namespace %s is created again or the FalApp is deleted "
                           "(kubectl delete falapp -n %s %s)", namespace, name, error, namespace, namespace, name)

    def forget_orphan(self, app: App) -> None:
        """The parked app is no longer this one (deleted, or another of its name): told no more either."""
        if self.orphans.pop(app, None) is not None:
            metrics.APPS_LEFT_BEHIND.set(len(self.orphans))
        self._orphans_told.discard(app)

    def _release_orphans(self, namespace: str) -> None:
        if not self.orphans:
            return
        for app in sorted(a for a in self.orphans if a[0] == namespace):
            del self.orphans[app]
            self.queue.add(("app", *app))
        metrics.APPS_LEFT_BEHIND.set(len(self.orphans))

    def app_gone(self, app: App) -> None:
        """A deleted app (no longer among `apps`) is forgotten: its namespace, if seen gone and holding no
        more apps, has nothing left to be read for."""
        self.forget_orphan(app)
        namespace = app[0]
        if namespace in self.gone and not any(n == namespace for n, _ in self.apps):
            self.gone.discard(namespace)
