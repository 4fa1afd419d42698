"""The writes of one app's reconcile, in the plan's order, and the fresh reads that back them.

Every request goes through the gate (k8s/gate.py); every answer goes into the stores at once
(write-through), so the next reconcile never decides on a view older than its own last write. A write
that got no answer leaves the app "unsure": its next reconcile reads it fresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Literal, TypeVar

from falapp_operator import metrics
from falapp_operator.api import FalAppStatus, JsonMapping, JsonObject
from falapp_operator.api.names import APP_LABEL, service_name
from falapp_operator.k8s.app_events import App, AppEvents, unmark
from falapp_operator.k8s.client import ApiError, KubeApi
from falapp_operator.k8s.gate import Priority, RequestGate
from falapp_operator.k8s.status_turns import StatusTurns
from falapp_operator.k8s.store import CONFIRM_DEADLINE, Store
from falapp_operator.k8s.workqueue import QueueKey, WorkQueue
from falapp_operator.reconcile import children
from falapp_operator.reconcile.app import AppPlan, AppSnapshot, invalid
from falapp_operator.reconcile.writes import (
    child_writes,
    counts_only,
    first_sight,
    left_waiting,
    name_conflict,
    needs_apply,
    object_version,
    status_changed,
)
from falapp_operator.settings import OperatorSettings

T = TypeVar("T")
logger = logging.getLogger("falapp_operator")
UNKNOWN_OUTCOME = frozenset({0, 408, 500, 502, 503, 504})  # no answer, or none saying whether it was written


class AppGone(Exception):
    """The app (this uid) is no longer in the API: it was deleted before its watch said so."""

    def __init__(self, uid: str):
        super().__init__(uid)
        self.uid = uid


class NamespaceGone(Exception):
    """A write for the app (this uid) answered that its namespace is not there (see Controller.reconcile_app)."""

    def __init__(self, uid: str, error: ApiError):
        super().__init__(uid, error)
        self.uid, self.error = uid, error


@dataclass(frozen=True)
class AppStores:
    """What reconciles read, fed by the watches and by the answers to the operator's writes."""

    falapps: Store
    deployments: Store
    services: Store
    app_pods: Store

    def overdue(self, app: App) -> bool:
        """Whether a write for the app is not back from its watch in time (see Store.overdue)."""
        return any(s.overdue(app) for s in (self.falapps, self.deployments, self.services, self.app_pods))


class AppWriter:
    def __init__(self, api: KubeApi, settings: OperatorSettings, queue: WorkQueue[QueueKey], stores: AppStores,
                 status_turns: StatusTurns):
        self.api, self.settings, self.queue, self.stores = api, settings, queue, stores
        self.gate = RequestGate(settings.requests_in_flight)
        self.status_turns = status_turns  # when status writes that are not news go
        self.events = AppEvents(api, self.sent)
        # per app: child name -> its version right after our last apply (others' additions since are theirs)
        self.applied: dict[App, dict[str, str]] = {}
        # apps whose last write got no answer, or whose child someone deleted: read them fresh
        self.unsure: set[App] = set()
        self.deleting: set[tuple[str, str]] = set()  # (namespace, name) of children being deleted by the operator
        # (reason, problem) last posted per app whose status write is refused: one event, not one per retry
        self.refusal_posted: dict[App, tuple[str, str]] = {}

    def forget(self, app: App) -> None:
        """What the writer holds for an app the controller leaves alone."""
        self.applied.pop(app, None)
        self.unsure.discard(app)
        self.refusal_posted.pop(app, None)
        self.status_turns.forget(app)
        self.events.caught_up(app)

    def needs_fresh_read(self, app: App) -> bool:
        return app in self.unsure or self.stores.overdue(app)

    async def sent(self, priority: Priority, request: Coroutine[object, object, T]) -> T:
        """An app request, sent when the gate lets it through (see k8s/gate.py)."""
        asked = time.monotonic()
        try:
            async with self.gate.slot(priority):
                metrics.API_WAIT.labels(priority.name.lower()).observe(time.monotonic() - asked)
                return await request
        finally:
            request.close()  # not sent if cancelled while waiting (no-op once it ran)

    async def gone(self, namespace: str, name: str, uid: str) -> bool:
        """Whether the app of this uid is no longer in the API (read fresh: its watch may lag)."""
        live = await self.sent(Priority.NORMAL, self.api.get_falapp(namespace, name))
        return live is None or live["metadata"].get("uid") != uid

    async def read_fresh(self, namespace: str, name: str) -> None:
        """Read the app and its children from the API into the stores: a write of its last reconcile got
        no answer, or is not back from its watch in time (a watch event lost)."""
        app = (namespace, name)
        stores = self.stores
        logger.info("%s/%s: reading the app fresh from the API", namespace, name)
        stores.falapps.refresh(app, app, await self.sent(Priority.NORMAL, self.api.get_falapp(namespace, name)))
        stores.services.refresh(app, app, await self.sent(Priority.NORMAL, self.api.get_service(
            namespace, service_name(name))))
        selector = f"{APP_LABEL}={name}"
        for store, resource in ((stores.deployments, "deployments"), (stores.app_pods, "pods")):
            items: list[JsonObject] = []
            listed_at = await self.sent(Priority.NORMAL, self.api.list_objects(
                resource, items.append, namespace, label_selector=selector, read=f"list_app_{resource}"))
            store.refresh_app(app, namespace, items, listed_at)
        self.unsure.discard(app)

    def name_conflict(self, ref: children.AppRef, labelled: list[JsonObject],
                      result: AppPlan) -> tuple[str | None, JsonObject | None]:
        """(why a child of the plan may not be written, the live Service): a child is written only when
        absent or controlled by this FalApp. The stores hold every Deployment and Service of the app's
        namespace (others' by name and controller only). One made under the name after the store last
        heard of it is caught by the create itself: an apply without force conflicts with its fields."""
        by_name = {d["metadata"]["name"]: d for d in labelled}
        for body in result.deployments:
            name = body["metadata"]["name"]
            live = by_name.get(name) or self.stores.deployments.get((ref.namespace, name))
            if (problem := name_conflict("Deployment", live, ref)) is not None:
                return problem, None
        service = None
        if result.service is not None:
            service = self.stores.services.get((ref.namespace, service_name(ref.name)))
            if (problem := name_conflict("Service", service, ref)) is not None:
                return problem, None
        return None, service

    async def refuse(self, ref: children.AppRef, generation: int, status: JsonMapping, problem: str,
                     snap: AppSnapshot | None, reason: str) -> None:
        """Stalled with `reason` and the problem, a Warning event; retried at the slowest rate. `status`:
        the app's status as recorded now (with any history written since it was read, into the status or
        on a Deployment that grew)."""
        refused = invalid(ref, generation, FalAppStatus.model_validate(status), problem, self.api.clock.now(),
                          snap.pods if snap else (), reason=reason)
        app = (ref.namespace, ref.name)
        try:
            await self.write_status(ref.namespace, ref.name, ref.uid, status, refused.status, at_once=True)
        except ApiError:  # the status itself refused: the event is all that shows it, once per problem
            if self.refusal_posted.get(app) != (reason, problem):
                self.refusal_posted[app] = (reason, problem)  # (a post that fails too: the next retry posts it)
                self.events.post_all(ref, refused.events, unmark(self.refusal_posted, app, (reason, problem)))
            raise
        self.events.post_all(ref, refused.events)
        logger.warning("%s/%s: %s: %s", ref.namespace, ref.name, reason, problem)
        self.queue.retry_after(("app", ref.namespace, ref.name), self.settings.error_backoff_max)

    async def execute(self, ref: children.AppRef, body: JsonMapping, deployments: list[JsonObject],
                      pods: list[JsonObject], result: AppPlan, service: JsonObject | None = None) -> None:
        """The plan's writes in order; each answer goes into the stores at once (write-through)."""
        namespace = ref.namespace
        app = (namespace, ref.name)
        stores = self.stores
        applied = self.applied.setdefault(app, {})
        status = body["status"]
        writes = child_writes(result, ref, deployments, pods, self.settings.field_manager, applied, status)
        wrote = bool(writes)
        try:
            for write in writes:
                if write.kind == "history":
                    assert write.body is not None, "a history write carries its status patch"
                    stores.falapps.wrote(await self.patch_status(namespace, ref.name, ref.uid, write.body,
                                                                 Priority.HISTORY), app)
                    self.status_turns.wrote_history(app)
                    status.update(write.body)  # a refusal further on builds on what is recorded now
                elif write.kind == "apply":
                    assert write.body is not None, "an apply carries the desired object"
                    answer = await self.sent(Priority.GROW if write.urgent else Priority.NORMAL,
                                             self.api.apply(write.body, write.create))
                    stores.deployments.wrote(answer, app)
                    applied[write.name] = object_version(answer)
                    if write.name in result.history_on and result.history is not None:
                        status.update(result.history.to_patch())  # recorded now, as a history write is
                elif write.kind == "mark":
                    stores.app_pods.wrote(await self.sent(Priority.NORMAL, self.api.mark_pod_for_deletion(
                        namespace, write.name)), app)
                elif write.kind == "resize_unlisted":
                    assert write.body is not None, "a resize carries its merge patch"
                    stores.deployments.wrote(await self.sent(Priority.NORMAL, self.api.resize_unlisted(
                        namespace, write.name, write.body)), app)
                else:
                    self.deleting.add((namespace, write.name))
                    try:
                        await self.sent(Priority.NORMAL, self.api.delete_deployment(namespace, write.name))
                    finally:
                        self.deleting.discard((namespace, write.name))
                    stores.deployments.deleted((namespace, write.name), app)
                    await self.delete_waiting(ref, write.name)
            if result.service is not None:
                if service is None or needs_apply(service, result.service, self.settings.field_manager,
                                                  applied.get(ref.name)):
                    answer = await self.sent(Priority.NORMAL, self.api.apply(result.service, create=service is None))
                    stores.services.wrote(answer, app)
                    applied[ref.name] = object_version(answer)
                    wrote = True
            wrote = await self.write_status(namespace, ref.name, ref.uid, status, result.status, wrote) or wrote
        except ApiError as e:
            if e.status in UNKNOWN_OUTCOME:  # the write may have happened: do not trust the stores on it
                self.unsure.add(app)
            raise
        if wrote:
            asyncio.get_running_loop().call_later(CONFIRM_DEADLINE + 0.1, self._confirm, app)
        self.refusal_posted.pop(app, None)  # reconciled: a refusal from now on is news again
        self.events.post_all(ref, result.events)

    def _confirm(self, app: App) -> None:
        """A write whose watch event never came: the app is reconciled (reading it fresh) all the same."""
        if self.stores.overdue(app):
            self.queue.add(("app", *app))

    async def delete_waiting(self, ref: children.AppRef, deployment: str) -> None:
        """The pods of a deleted Deployment that no node runs, and their ReplicaSets first (see
        writes.left_waiting). Best effort: what is not deleted (refused, say a pod bound meanwhile or
        RBAC of an older chart, or no answer) is the garbage collector's, as before, and the app's
        reconcile goes on. A refusal stops the rest (a ReplicaSet left would replace its pods) and is
        told in a Warning event, not again for the same refusal until the app's status is next written
        (as the plan's warnings); a transient error (an overloaded API server) is only logged."""
        replicasets, pods = left_waiting(self.stores.app_pods.of_app(ref.namespace, ref.name), deployment)
        kinds: tuple[tuple[Literal["ReplicaSet", "Pod"], list[tuple[str, str]]], ...] = (
            ("ReplicaSet", replicasets), ("Pod", pods))
        for kind, refs in kinds:
            answers = await asyncio.gather(*(self.sent(Priority.NORMAL, self.api.delete_waiting(
                kind, ref.namespace, name, uid)) for name, uid in refs), return_exceptions=True)
            for answer in answers:
                if isinstance(answer, ApiError):
                    message = (f"{answer}; what Deployment {deployment} left waiting for a node is left to "
                               "the garbage collector")
                    if answer.transient:
                        logger.info("%s/%s: %s", ref.namespace, ref.name, message)
                        return
                    logger.warning("%s/%s: %s", ref.namespace, ref.name, message)
                    self.events.warn(ref, "CleanupRefused", message)
                    return
                if isinstance(answer, BaseException):
                    raise answer

    async def _timed_status_patch(self, namespace: str, name: str, patch: JsonMapping) -> JsonObject | None:
        """The status write itself; its time (not its wait for a slot: that says how busy the operator
        is, and counts-only writes wait last anyway) sets the counts rate."""
        sent = time.monotonic()
        try:
            answer = await self.api.patch_falapp_status(namespace, name, patch)
        except ApiError as e:
            if e.transient:  # overloaded, or no answer in time: the strongest sign of a busy API server
                self.status_turns.answered_in(time.monotonic() - sent)
            raise
        self.status_turns.answered_in(time.monotonic() - sent)
        return answer

    async def patch_status(self, namespace: str, name: str, uid: str, patch: JsonMapping,
                           priority: Priority) -> JsonObject:
        """The app's status written; AppGone if it is no longer there. A 404 for an app that is there (a
        status subresource missing from its CRD) is an error to show; NamespaceGone if the answer is that
        its namespace is not there."""
        try:
            answer = await self.sent(priority, self._timed_status_patch(namespace, name, patch))
        except ApiError as e:
            if e.namespace_gone:
                raise NamespaceGone(uid, e) from e
            raise
        if answer is not None:
            return answer
        if await self.gone(namespace, name, uid):
            raise AppGone(uid)
        raise ApiError(404, "NotFound", "the FalApp is there but its status answers 404: is the CRD's status "
                       "subresource missing?", f"FalApp {namespace}/{name} status")

    async def write_status(self, namespace: str, name: str, uid: str, current: JsonMapping,
                           desired: FalAppStatus, at_once: bool) -> bool:
        """`at_once`: this reconcile wrote something else first, or the status must go now (a refusal).
        A new app's first status that only says its replicas are starting takes its turn all the same: the
        app reads InProgress meanwhile, and one write is saved when its replicas are Ready first."""
        patch = desired.to_patch()
        app = (namespace, name)
        turns = self.status_turns
        if not status_changed(current, patch):
            turns.settled(app)  # it went back: the app waits for nothing (and holds no turn)
            self.events.caught_up(app)
            return False
        counts = not at_once and counts_only(current, patch)
        if counts and (own := turns.own_wait(app)) > 0:  # its own second first
            self.queue.add_after(("app", namespace, name), own, due=False)
            return False
        # a new app's first status, when it may wait (status_first_wait > 0), waits at low priority, its
        # turn or not: it is not news
        first = not counts and self.settings.status_first_wait > 0 and first_sight(current, patch)
        wait_left = turns.first_wait_left(app) if first else 0.0
        takes_turn = counts or wait_left > 0
        if takes_turn:
            if not turns.take(app):
                if first:  # woken when its wait is over (set again at every wait: a back-off takes it)
                    self.queue.add_after(("app", namespace, name), wait_left + 0.01, due=False)
                return False  # woken when its turn comes; written then, as it is then
        else:
            turns.forget_turn(app)
        try:
            # counts are news for people: placement's requests and the full status go first (so does a
            # first status that waited its longest: past its turns, not past other apps' requests)
            self.stores.falapps.wrote(await self.patch_status(namespace, name, uid, patch,
                                                              Priority.LOW if counts or first else Priority.NORMAL),
                                      app)
        except ApiError:
            if takes_turn:  # the retry writes at once: the turn was this app's
                turns.give_back(app)
            raise
        turns.wrote(app)
        self.events.caught_up(app)  # the status says it now: the plan sees what was said
        return True
