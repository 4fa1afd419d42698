"""The control loop: keep caches, queue apps on events, reconcile each app through the pure planner.

Handlers and the controller's own watches only feed events in here. Reconciles read the app, its
Deployments, Service and pods from in-memory stores the watches keep (k8s/store.py): no API reads in
steady state. The reconcile's writes go out through k8s/app_writer.py, whose answers go into the stores
at once, so no decision rests on a view older than the operator's own last write. Every API answer is
checked: transient errors retry with back-off; refusals (quota, RBAC, invalid objects) are shown on
the FalApp as Stalled with the API's message, plus a Warning event, and retried at the longest back-off.
Kept apart: namespaces (entitlements, deletions, apps left behind) in k8s/namespaces.py, the room an
app's asks claim in k8s/asks.py, the machine-type catalogue and NodePools in k8s/machine_types.py, the
time each type has been without nodes in k8s/nodeless.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

from pydantic import ValidationError

from falapp_operator import metrics
from falapp_operator.api import (
    ConditionType,
    FalAppSpec,
    FalAppStatus,
    JsonMapping,
    JsonObject,
    MachineTypeStatus,
    parse_time,
    truncate,
)
from falapp_operator.api.names import APP_LABEL, REVISION_LABEL, SURGE_ANNOTATION, TYPE_LABEL
from falapp_operator.k8s.app_events import unmark
from falapp_operator.k8s.app_metrics import AppMetrics
from falapp_operator.k8s.app_writer import AppGone, AppStores, AppWriter, NamespaceGone
from falapp_operator.k8s.asks import AppAsks
from falapp_operator.k8s.cache import (
    FAILED_SCHEDULING,
    KARPENTER,
    SCALE_UP_REASONS,
    ClusterCache,
    NodeInfo,
    PodInfo,
    autoscaler_answer,
)
from falapp_operator.k8s.client import ApiError, KubeApi, NotLeading
from falapp_operator.k8s.gate import Priority
from falapp_operator.k8s.informer import Informer, WhileWanted
from falapp_operator.k8s.listing import ListedTakes, ListNotTaken
from falapp_operator.k8s.machine_types import MachineTypes
from falapp_operator.k8s.namespaces import Namespaces
from falapp_operator.k8s.nodeless import NodelessTimes
from falapp_operator.k8s.status_turns import StatusTurns
from falapp_operator.k8s.store import Store
from falapp_operator.k8s.workqueue import QueueKey, WorkQueue, backoff
from falapp_operator.reconcile import children
from falapp_operator.reconcile.app import STEADY_READY_REASONS, AppSnapshot, invalid, plan
from falapp_operator.reconcile.observe import (
    children_state,
    controller_uid,
    made_by,
    pod_ready,
    pod_terminating,
    pod_unschedulable,
    pod_view,
    progress_only,
    slim_child,
    slim_falapp,
    slim_pod,
)
from falapp_operator.settings import OperatorSettings

Obj = TypeVar("Obj", bound=JsonMapping)
logger = logging.getLogger("falapp_operator")
# what the resync LISTs and the controller's own watches continue from
CLUSTER_WATCHED = ("machinetypes", "nodepools", "namespaces", "nodes", "pods")
# Karpenter's NodePools are watched while its CRD is there (and serves v1)
NODEPOOL_CRD, NODEPOOL_VERSION = "nodepools.karpenter.sh", "v1"
# room claimed and given up wakes the apps that would move there once in this long, however many claims
# went (a lost pool's hundreds of doomed replacements are deleted one by one): no decision falls due then
CLAIMS_WAKE_WINDOW = 1.0


class Controller:
    def __init__(self, api: KubeApi, settings: OperatorSettings):
        self.api = api
        self.settings = settings
        self.cache = ClusterCache(scheduler_names=settings.claiming_schedulers())
        self._other_schedulers: set[str] = set()  # unlisted scheduler names seen on replicas, warned about once
        self.types = MachineTypes()
        self.queue: WorkQueue[QueueKey] = WorkQueue()
        self.apps: set[tuple[str, str]] = set()  # every FalApp seen, by namespace and name
        self.namespaces = Namespaces(self.queue, self.apps, self._get_namespace)
        self.generations: dict[tuple[str, str], tuple[str, int]] = {}  # last (uid, generation) per app
        self.waiting: set[tuple[str, str]] = set()  # apps that would use freed capacity
        # of those, apps with replicas off their preferred type, and the types they would move up to
        self.off_preferred: dict[tuple[str, str], frozenset[str]] = {}
        # room freed, and claimed room given up, so far: a reconcile knows whether either came while it wrote
        self._capacity_changes = 0
        self._claims_given_up = 0
        self.failures: dict[QueueKey, int] = {}
        self._failing_since: dict[QueueKey, float] = {}  # (monotonic) the first of the failures in a row
        self._workers: list[asyncio.Task[None]] = []
        self._stopped = False
        self._resync: asyncio.Task[None] | None = None
        self._cluster_watches: list[asyncio.Task[None]] = []
        self._start_done = False
        # where the watches of what the resync lists continue; None: list first
        self._versions: dict[str, str | None] = dict.fromkeys(CLUSTER_WATCHED)
        # one relist of a resource at a time (the resync's and its watch's), each resource's on its own: a
        # node relist does not wait behind the pods' pages
        self._relist_locks = {resource: asyncio.Lock() for resource in CLUSTER_WATCHED}
        # per resource whose LIST is in flight: the names (pods: uids) its watch told of meanwhile
        self._told_while_listing: dict[str, set[str]] = {}
        self.nodeless = NodelessTimes(self.cache, lambda: self.api.clock.now())
        # a Deployment without fal.ai/grown-at was last raised by an older version: before this start
        self._started_at: datetime | None = None  # set by start
        self.asks = AppAsks(self.cache, self.queue)
        self.app_metrics = AppMetrics()
        # what reconciles read, fed by watches (and the answers to our writes): slim copies only
        field_manager = settings.field_manager
        self.falapps = Store(slim_falapp)
        self.deployments = Store(lambda body: slim_child(body, field_manager, "Deployment", self.types.known),
                                 index_label=APP_LABEL)
        self.services = Store(lambda body: slim_child(body, field_manager, "Service"), index_label=APP_LABEL)
        self.app_pods = Store(slim_pod, index_label=APP_LABEL)
        self._informers: list[Informer] = []
        # the autoscalers' Events about our pods, per namespace watched (None: all), one watch per reason
        self.scale_signals: dict[str | None, WhileWanted] = {}
        self.nodepool_watch = WhileWanted("Karpenter NodePools", [], 0.0)  # while their CRD serves them
        self._informer_tasks: list[asyncio.Task[None]] = []
        self.status_turns = StatusTurns(settings, self.queue)  # when status writes that are not news go
        self.writer = AppWriter(api, settings, self.queue,
                                AppStores(self.falapps, self.deployments, self.services, self.app_pods),
                                self.status_turns)
        self.events = self.writer.events
        # the failure last told per work-queue key (see _tell_failure)
        self._failure_told: dict[tuple[str, ...], str] = {}

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Fill the caches from a LIST before any reconcile, so no decision sees a half-known cluster:
        catalogue, namespaces, nodes, pods, and (while a replica waits unschedulable) the autoscalers'
        announcements about pods (Events); then keep them current. Reads only: reconciling (and every
        write) starts with `lead`."""
        self._started_at = self.api.clock.now()
        await self.resync()  # machine types, NodePools, namespaces, nodes, pods
        watched: list[str | None] = [n for n in self.settings.watch_namespaces.split(",") if n] or [None]
        for namespace in watched:  # FalApps and their children: only where FalApps are managed
            self._informers += [
                Informer(self.api, "falapps", self.falapp_watched, namespace),
                # every Deployment and Service there, not only the apps' (labelled): whether a child's name
                # is taken is known without a read; others' are kept as name and controller only
                Informer(self.api, "deployments", lambda kind, body: self.child_watched(self.deployments, kind, body),
                         namespace),
                Informer(self.api, "services", lambda kind, body: self.child_watched(self.services, kind, body),
                         namespace),
            ]
            # the autoscalers' word about pending pods, filtered by the API server: one watch per reason;
            # FailedScheduling only from Karpenter (the scheduler posts one for every unschedulable pod)
            # (as the events.k8s.io API posts them, Karpenter's carry reportingComponent instead of source)
            selectors = [f"reason={r}" for r in sorted(SCALE_UP_REASONS - {FAILED_SCHEDULING})] + [
                f"reason={FAILED_SCHEDULING},{field}={KARPENTER}" for field in ("source", "reportingComponent")]
            self.scale_signals[namespace] = WhileWanted(
                f"autoscaler Events{' in ' + namespace if namespace else ''}",
                [Informer(self.api, "events", self.scale_signal_watched, namespace, field_selector=s,
                          track_deletions=False, bookmarks=False) for s in selectors],
                self.settings.scale_signal_linger)
        for informer in self._informers:  # every store full before the first reconcile
            await informer.sync()
        # the autoscalers' word matters only while a replica waits unschedulable: watched only then (and
        # a while after), and only in its namespace, so an idle cluster's Events (read from etcd, every
        # Event, then filtered) are never listed
        for namespace, signals in self.scale_signals.items():
            if self.cache.replicas_unschedulable(namespace):
                await signals.start_listed()
        self.namespaces.listed()
        self._start_done = True  # (a LIST's odd object is left out from now on: see k8s/listing.py)
        self._informer_tasks = [asyncio.create_task(i.run(), name=f"falapp-watch-{i.what}") for i in self._informers]
        self._cluster_watches = [
            asyncio.create_task(self._cluster_informer(resource, event).run(), name=f"falapp-watch-{resource}")
            for resource, event in (("machinetypes", self.machinetype_event), ("namespaces", self.namespace_event),
                                    ("nodes", self.node_event), ("pods", self.pod_event))]
        # Karpenter's NodePools only while its CRD serves them (installed after the operator, or removed):
        # no LIST refused every few seconds where there is no Karpenter. Not needed to start (the start's
        # LIST took the NodePools): the CRD's watch lists it first itself, and a refusal (RBAC without
        # it) is retried every few minutes at most, the periodic resync still listing NodePools
        self.nodepool_watch.informers = [self._cluster_informer("nodepools", self.nodepool_event)]
        crd = Informer(self.api, "customresourcedefinitions", self.nodepool_crd_watched,
                       field_selector=f"metadata.name={NODEPOOL_CRD}", max_backoff=300.0)
        self._cluster_watches.append(asyncio.create_task(crd.run(), name="falapp-watch-nodepool-crd"))
        if self.settings.resync_period:
            self._resync = asyncio.create_task(self._resync_loop(), name="falapp-resync")

    def namespace_event(self, body: JsonMapping, deleted: bool) -> None:
        """A namespace's labels, deletion or going (see Namespaces.observe)."""
        name = body["metadata"]["name"]
        self._told("namespaces", name)
        if deleted:
            self.asks.refused_creates.forget_namespace(name)  # its quota and apps went with it
        self.namespaces.observe(body, deleted)

    def lead(self) -> None:
        """Start reconciling queued apps: only the leader (or a process without leader election) does; not
        once stopped (elected while the process stops)."""
        if self._stopped:
            return
        self._workers = [asyncio.create_task(self._worker(), name=f"falapp-worker-{i}")
                         for i in range(self.settings.workers)]

    async def stop(self) -> None:
        self._stopped = True
        self.queue.close()
        self.status_turns.stop()
        # events still waiting for a slot go unposted: nothing may write once the controller stops
        tasks = [*self._workers, *self.events.pending, *self._informer_tasks, *self._cluster_watches,
                 *(t for t in (self._resync,) if t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *(s.stop() for s in self.scale_signals.values()), self.nodepool_watch.stop(),
                             return_exceptions=True)

    async def resync(self, only: str | None = None) -> None:
        """Machine types, Karpenter NodePools, namespaces, nodes and pods from a fresh LIST (`only`: that one
        of CLUSTER_WATCHED, for its watch whose version expired or whose handler failed); drops what the
        watches missed (deletions while a watch was away: a LIST tells none by itself), keeps what they told
        meanwhile."""
        for resource in CLUSTER_WATCHED:
            if only not in (None, resource):
                continue
            async with self._relist_locks[resource]:
                newer: set[str] = set()  # the watch's word on these is newer than the LIST's
                self._told_while_listing[resource] = newer
                try:
                    if resource == "pods":
                        listed_pods = await self._list_pods(newer)
                    else:
                        await self._list_named(resource, newer)
                except (ApiError, ListNotTaken) as e:
                    # a watch's relist fails (and is tried again), and so does the start (no decision on a
                    # half-known cluster), but for the NodePools (say Karpenter's conversion webhook down);
                    # a periodic resync goes on: the other resources' corrections matter more
                    if (only is not None or (resource == "machinetypes" and not self.types.seen)
                            or (not self._start_done and resource != "nodepools")):
                        raise
                    logger.warning("resync: %s not listed, kept as known: %s", resource, e)
                    continue
                finally:
                    del self._told_while_listing[resource]
                if resource == "pods":
                    self._unlisted_pods(listed_pods, newer)

    def _told(self, resource: str, key: str) -> None:
        """The watch told of this object (by name; pods by uid): should a LIST of its resource be in
        flight, the LIST's copy is older."""
        if (told := self._told_while_listing.get(resource)) is not None:
            told.add(key)

    async def _list_pods(self, newer: set[str]) -> set[str]:
        """Every pod of the cluster into the cache, a page at a time, as its watch would tell it (not those
        the watch told of meanwhile: `newer`); returns the uids listed."""
        listed_pods: set[str] = set()
        takes = ListedTakes("pods", strict=not self._start_done)

        def listed(body: JsonMapping) -> None:
            listed_pods.add(body["metadata"]["uid"])  # (a pod not taken is kept as known: not gone)
            if body["metadata"]["uid"] not in newer:
                takes.take(body, lambda: self._pod_listed(body))
            else:
                takes.taken_as_told()
        self._versions["pods"] = await self.api.list_objects("pods", listed)
        takes.done()
        return listed_pods

    def _pod_listed(self, body: JsonMapping) -> None:
        """A pod a LIST found, taken as its watch event would be."""
        meta = body["metadata"]
        old = self.cache.pods.get(meta["uid"])
        new = old is None and not self._held_pod(meta)
        self._left_app(old, (meta.get("labels") or {}).get(APP_LABEL))
        # finished or gone from its node while the watch was away: as its event would
        self._room_freed(old, self.cache.upsert_pod(body))
        changed = self._app_pod(body, "ADDED")
        labels = meta.get("labels") or {}
        if new and labels.get(APP_LABEL):  # a replica asked for has come (its watch event lost)
            self._seen(meta["namespace"], labels[APP_LABEL], labels.get(TYPE_LABEL, ""))
        if changed and labels.get(APP_LABEL):  # changed while the watch was away: news
            self.app_event(meta["namespace"], labels[APP_LABEL], batch=True)
        self._watch_scale_signals(meta.get("namespace") or "")

    def _unlisted_pods(self, listed_pods: set[str], newer: set[str]) -> None:
        """Pods known but not listed (nor told of by the watch meanwhile) are gone."""
        for uid in [u for u in self.cache.pods if u not in listed_pods and u not in newer]:
            self.pod_event({"metadata": {"uid": uid, "namespace": self.cache.pods[uid].namespace}}, deleted=True)
        # an app's finished pod is in the app's store only (it takes no room): gone too if not listed
        for uid, namespace in [(u, b["metadata"].get("namespace")) for b in self.app_pods.objects.values()
                               if (u := b["metadata"].get("uid")) and u not in listed_pods and u not in newer]:
            self.pod_event({"metadata": {"uid": uid, "namespace": namespace}}, deleted=True)
        self._claims_changed()  # a pending pod the LIST found finished claims no more

    async def _list_named(self, resource: str, newer: set[str]) -> None:
        """The cluster's machine types, NodePools, namespaces or nodes from a LIST (paged, taken a page at a
        time: a cluster's nodes never sit in memory as one list), each told as its watch would, and those
        known but not listed as deleted; not those the watch told of meanwhile (newer than the LIST)."""
        named: dict[str, tuple[Iterable[str], Callable[[JsonMapping, bool], None]]] = {
            "machinetypes": (self.types.seen, self.machinetype_event),
            "nodepools": (self.types.nodepools, self.nodepool_event),
            "namespaces": (self.namespaces.labels, self.namespace_event),
            "nodes": (self.cache.nodes, self.node_event)}
        known, event = named[resource]
        names: set[str] = set()
        takes = ListedTakes(resource, strict=not self._start_done)

        def listed(body: JsonMapping) -> None:
            names.add(self._listed(body, event, takes, newer))
        version: str | None = None
        try:
            version = await self.api.list_objects(resource, listed)
        except ApiError as e:
            if resource != "nodepools" or e.status != 404:
                raise  # (Karpenter's NodePools are not served where it is not installed: none)
        takes.done()
        for name in [n for n in known if n not in names and n not in newer]:
            event({"metadata": {"name": name}}, True)
        if resource in CLUSTER_WATCHED:
            self._versions[resource] = version
        if resource == "namespaces":
            self.namespaces.listed()

    def _listed(self, body: JsonMapping, event: Callable[[JsonMapping, bool], None], takes: ListedTakes,
                newer: set[str]) -> str:
        """The object's name; the object taken unless its watch told of it meanwhile (one not taken is kept
        as known: not gone)."""
        name: str = body["metadata"]["name"]
        if name not in newer:
            takes.take(body, lambda: event(body, False))
        else:
            takes.taken_as_told()
        return name

    def _cluster_informer(self, resource: str, event: Callable[[JsonMapping, bool], None]) -> Informer:
        """Every machine type, namespace, node or pod of the cluster, read-only, whichever namespaces FalApps
        are watched in (free room counts other namespaces' pods too): from the start's LIST, then from where
        its stream stopped (not from a periodic resync's LIST: what it told during that LIST was not taken
        from it); its resource listed again by the resync when its version expired."""
        async def relist() -> str:
            await self.resync(only=resource)
            version = self._versions[resource]
            if version is None:  # (set by that resync, or it raised) but for NodePools not served
                raise ApiError(404, "NotFound", "not served", resource)
            return version
        informer = Informer(self.api, resource, lambda kind, body: event(body, kind == "DELETED"),
                            track_deletions=False, relist=relist)
        informer.version = self._versions[resource]
        return informer

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_period)
            try:
                await self.resync()
            except ApiError as e:
                logger.warning("resync failed: %s", e)
            except Exception:  # a body the handlers did not expect: the resyncs must not end for good
                logger.exception("resync failed")

    # --- event intake (called by the watches) ------------------------------------------------------
    def app_event(self, namespace: str, name: str, generation: int | None = None, uid: str = "",
                  batch: bool = False, progress: bool = False) -> None:
        """Something about the app changed; `batch`: an event of its pods or children, reconciled together
        with those that follow it within settings.event_batch_window (`progress`: a pod's mere progress,
        observe.progress_only: within settings.progress_batch_window)."""
        if self.settings.manages(namespace):
            key = (namespace, name)
            if key not in self.apps:
                self.apps.add(key)
                self.cache.claims.admit(key)  # its pending pods claim room
            # a new spec (or a new app of the same name) is urgent: it cuts short a failing app's back-off
            urgent = generation is not None and self.generations.get(key) != (uid, generation)
            if generation is not None:
                self.generations[key] = (uid, generation)
            if batch and not urgent:
                window = self.settings.event_batch_window
                self.queue.add_batched(("app", namespace, name),
                                       max(window, self.settings.progress_batch_window) if progress else window)
            else:
                self.queue.add(("app", namespace, name), urgent=urgent)

    def nodepool_crd_watched(self, kind: str, body: JsonMapping) -> None:
        """Karpenter's NodePool CRD came, changed or went: NodePools are watched while it serves them."""
        spec, status = body.get("spec") or {}, body.get("status") or {}
        served = kind != "DELETED" and any(
            c.get("type") == "Established" and c.get("status") == "True" for c in status.get("conditions") or ()
        ) and any(v.get("name") == NODEPOOL_VERSION and v.get("served") for v in spec.get("versions") or ())
        if not served:  # (none is left where the CRD went; its watch may not tell)
            for name in list(self.types.nodepools):
                self.nodepool_event({"metadata": {"name": name}}, deleted=True)
        self.nodepool_watch.want(served)

    def nodepool_event(self, body: JsonMapping, deleted: bool) -> None:
        """A Karpenter NodePool appeared, changed or went: which types are autoscaled may have changed."""
        self._told("nodepools", body["metadata"]["name"])
        if self.types.observe_nodepool(body, deleted):
            for namespace, app in sorted(self.apps):
                self.queue.add(("app", namespace, app))
            self._touch_machinetypes()

    def machinetype_event(self, body: JsonMapping, deleted: bool) -> None:
        name = body["metadata"]["name"]
        self._told("machinetypes", name)
        change = self.types.observe(body, deleted)
        if change == "none":
            return
        if change != "status":
            self.cache.forget_node_matches()
            if change == "spec":
                self.nodeless.forget_type(name)
            # pending pods are counted as their types name their GPUs
            self.cache.claims.count_gpus_as({n: m.spec.gpu_resource for n, m in self.types.declared.items()})
            for namespace, app in list(self.apps):  # the catalogue changed: every app may place differently
                self.queue.add(("app", namespace, app))
        self._touch_machinetypes()

    def node_event(self, body: JsonMapping, deleted: bool) -> None:
        self._told("nodes", body["metadata"]["name"])
        name = body["metadata"]["name"]
        old = self.cache.nodes.get(name)  # (a heartbeat changes nothing read here: nothing more is done)
        changed = self.cache.remove_node(name) if deleted else self.cache.upsert_node(body)
        if changed:
            node = None if deleted else self.cache.nodes[name]
            declared = self.types.declared.values()
            if any(n is not None and self.cache.of_any_type(n.name, declared, n) for n in (old, node)):
                self._capacity_changed()
            if node is not None and node.schedulable:
                self.nodeless.node_back(node, self.types.declared)
            if deleted or (old is not None and old.schedulable and node is not None and not node.schedulable):
                # its replicas may have nowhere left to go (a lost pool): no pod event says so while the
                # pods bound to a deleted node wait for the pod garbage collector. Batched: a pool's nodes
                # go one after another; a fixed-size type's last going wakes its apps at once (_lost_types),
                # which keeps the time it went
                for namespace, app in self.cache.apps_on_node(name):
                    self.app_event(namespace, app, batch=True)
            if old is not None and old.schedulable:
                self._lost_types(old, node)

    def pod_event(self, body: JsonMapping, deleted: bool) -> None:
        meta = body["metadata"]
        self._told("pods", meta["uid"])
        old = self.cache.pods.get(meta["uid"])
        new = old is None and not self._held_pod(meta)
        freed = self.cache.remove_pod(meta["uid"]) if deleted else self.cache.upsert_pod(body)
        app = (meta.get("labels") or {}).get(APP_LABEL) or (old.app if old and deleted else None)
        held = None if deleted or "name" not in meta else self.app_pods.get((meta.get("namespace") or "", meta["name"]))
        changed = self._app_pod(body, "DELETED" if deleted else "MODIFIED")
        if app and not deleted:
            self._warn_other_scheduler(meta, body.get("spec") or {})
        self._left_app(old, app)
        if app:
            namespace = meta.get("namespace") or (old.namespace if old else "")
            if new and not deleted:
                self._seen(meta["namespace"], app, (meta.get("labels") or {}).get(TYPE_LABEL, ""))
            if changed or new or deleted:
                # cheapest first: most events of a steady app's start are progress, the app's scans last. A
                # pod none of the app's Deployments made (its Deployment deleted in a move, the garbage
                # collector's to delete; anyone's pod carrying the label) is no replica: the reconcile does
                # not read it, so nothing about it is news. Still a pass, not none: should the store not
                # hold a Deployment yet when its pods are seen, the pass comes a second later, not never
                progress = ("name" in meta and not self._replicas(namespace, app, [body])) or (
                    not deleted and progress_only(held, body, steady=True) and self._steady(namespace, app)
                    and not (pod_ready(body) and self._completes(namespace, app)))
                self.app_event(namespace, app, batch=True, progress=progress)
            self._touch_machinetypes()
        if not self._room_freed(old, freed) and not app and not deleted and (
                now := self.cache.pods.get(meta["uid"])) is not None and now.node and (
                old is None or old.node != now.node) and self.cache.of_any_type(now.node, self.types.declared.values()):
            self._touch_machinetypes()  # another team's pod took room on a type's node: its status shows it
        self._claims_changed()
        self._watch_scale_signals(meta.get("namespace") or (old.namespace if old else ""))

    def _watch_scale_signals(self, namespace: str) -> None:
        """The autoscalers' Events in the pod's namespace watched while a replica waits unschedulable
        there (see WhileWanted)."""
        if not self._start_done:
            return
        key = namespace if namespace in self.scale_signals else None
        if (signals := self.scale_signals.get(key)) is not None:
            signals.want(self.cache.replicas_unschedulable(key))

    def _held_pod(self, meta: JsonMapping) -> bool:
        """Whether the app's store holds this pod already (a finished one is there, not in the cache): not a
        replica that has just come."""
        held = self.app_pods.get((meta.get("namespace") or "", meta.get("name") or ""))
        return held is not None and held["metadata"].get("uid") == meta["uid"]

    def _left_app(self, old: PodInfo | None, app: str | None) -> None:
        """A pod whose app label was changed or taken off: the app it left counts one replica fewer."""
        if old is not None and old.app and old.app != app:
            self.app_event(old.namespace, old.app, batch=True)

    def _room_freed(self, old: PodInfo | None, freed: bool) -> bool:
        """A pod left its node (`freed`, as the cache said; `old`: as it was): where the node is one of a
        machine type's, apps waiting for room look again (CPU churn elsewhere wakes nobody)."""
        if freed and old is not None and old.node and self.cache.of_any_type(old.node, self.types.declared.values()):
            self._capacity_changed()
            return True
        return False

    def _steady(self, namespace: str, app: str) -> bool:
        """Whether the app's replicas are only starting or running, so that a replica's progress changes
        its counts alone (see observe.progress_only): not while a make-before-break replica is in flight
        (its Ready lets the next step go), nor off its preferred type with a move up to make (a probe waits
        for the replicas to be placed), nor while its Ready condition says more than that (no room, a
        rollout, a failure), nor while a replica waits on its unschedulable timeout, nor mid-rollout (pods
        of two revisions on a type: a rollout restart's too)."""
        if (namespace, app) in self.off_preferred:
            return False
        stored = self.falapps.get((namespace, app))
        conditions = ((stored or {}).get("status") or {}).get("conditions") or []
        if next((c.get("reason") for c in conditions if c.get("type") == ConditionType.READY.value),
                None) not in STEADY_READY_REASONS:
            return False
        own = self._app_deployments(namespace, app)
        if any((d["metadata"].get("annotations") or {}).get(SURGE_ANNOTATION) for d in own):
            return False
        revisions: dict[str | None, str | None] = {}
        for pod in made_by(self.app_pods.of_app(namespace, app), own):
            if pod_terminating(pod):
                continue
            if pod_unschedulable(pod):
                return False  # a replica waiting on its timeout: a replacement made or bound may let it move
            labels = pod["metadata"].get("labels") or {}
            if revisions.setdefault(labels.get(TYPE_LABEL), labels.get(REVISION_LABEL)) != labels.get(REVISION_LABEL):
                return False
        return True

    def _completes(self, namespace: str, app: str) -> bool:
        """Whether the app's pods Ready, as held now, make up its wanted replicas: its Ready condition
        turns (kubectl wait, Helm --wait and Argo CD read it), news however it came."""
        stored = self.falapps.get((namespace, app))
        wanted = ((stored or {}).get("spec") or {}).get("replicas", FalAppSpec.model_fields["replicas"].default)
        return isinstance(wanted, int) and sum(pod_ready(p) for p in self._replicas(namespace, app)) >= wanted

    def _replicas(self, namespace: str, app: str, pods: Iterable[JsonMapping] | None = None) -> list[JsonMapping]:
        """Of `pods` (the app's pods as held), those its own Deployments made (observe.made_by): the
        replicas its reconcile reads."""
        return made_by(self.app_pods.of_app(namespace, app) if pods is None else pods,
                       self._app_deployments(namespace, app))

    def _app_deployments(self, namespace: str, app: str) -> list[JsonObject]:
        """The Deployments the app (as stored) controls."""
        stored = self.falapps.get((namespace, app))
        return self._own_deployments(self.deployments.of_app(namespace, app),
                                     (stored or {}).get("metadata", {}).get("uid"))

    @staticmethod
    def _own_deployments(labelled: Iterable[Obj], uid: str | None) -> list[Obj]:
        """Of the Deployments carrying an app's label, those it controls (an old app's of the same name
        are not its)."""
        return [d for d in labelled if uid is not None and controller_uid(d) == uid]

    def _warn_other_scheduler(self, meta: JsonMapping, spec: JsonMapping) -> None:
        name = spec.get("schedulerName")
        if (name and name not in self.cache.scheduler_names and name not in self._other_schedulers
                and len(self._other_schedulers) < 10 and self.settings.manages(meta.get("namespace", ""))):
            self._other_schedulers.add(name)
            logger.warning("pod %s/%s of FalApp %s asks for scheduler %r, not in FALAPP_SCHEDULER_NAMES: pending "
                           "pods for it claim no room, so freed room may be promised to two apps at once; add "
                           "it if a webhook sets it on the operator's pods", meta.get("namespace"), meta.get("name"),
                           (meta.get("labels") or {}).get(APP_LABEL), name)

    def _app_pod(self, body: JsonMapping, kind: str) -> bool:
        """Keep the slim copy of a pod of a managed app (whether a reconcile may see it differently)."""
        meta = body["metadata"]
        if "name" not in meta:  # a deletion the resync found: known by uid only
            key = self.app_pods.key_of_uid(meta["uid"])
            if key is None:
                return False
            body = {"metadata": {**meta, "namespace": key[0], "name": key[1]}}
        elif not (meta.get("labels") or {}).get(APP_LABEL) or not self.settings.manages(meta.get("namespace", "")):
            key = self.app_pods.key_of_uid(meta["uid"])  # someone took the app's label off: no longer its
            return key is not None and self.app_pods.observe("DELETED", {"metadata": {
                **meta, "namespace": key[0], "name": key[1], "resourceVersion": None}})
        return self.app_pods.observe(kind, body)

    def falapp_watched(self, kind: str, body: JsonMapping) -> None:
        if self.falapps.observe(kind, body):
            meta = body["metadata"]
            self.app_event(meta["namespace"], meta["name"], generation=meta.get("generation"), uid=meta.get("uid", ""))

    def child_watched(self, store: Store, kind: str, body: JsonMapping) -> None:
        meta = body["metadata"]
        old = store.get((meta.get("namespace") or "", meta["name"]))
        if store.observe(kind, body):
            apps: set[str | None] = {(meta.get("labels") or {}).get(APP_LABEL),
                                     ((old or {}).get("metadata", {}).get("labels") or {}).get(APP_LABEL)}
            for app in apps:
                if app is None:
                    continue
                held = ((old or {}).get("metadata", {}).get("labels") or {}).get(APP_LABEL) == app
                if (kind == "DELETED" and held and meta["namespace"] not in self.namespaces.terminating
                        and (meta["namespace"], meta["name"]) not in self.writer.deleting):
                    # one the operator made for the app (the store keeps labels of those only), deleted by
                    # someone else (not by a delete of the operator's in flight, whose answer may come after
                    # the event): the app may be gone too (a FalApp deleted in the background takes its
                    # children after it, its own DELETED may come later on its watch): read it fresh
                    # before making it again, not a Deployment of a deleted app
                    self.writer.unsure.add((meta["namespace"], app))
                self.app_event(meta["namespace"], app, batch=True)

    def scale_signal_watched(self, kind: str, body: JsonMapping) -> None:
        if kind != "DELETED":
            self.scale_signal_event(body)

    def scale_signal_event(self, body: JsonMapping) -> None:
        """Autoscaler events (TriggeredScaleUp, NotTriggerScaleUp, Karpenter Nominated) about our pods."""
        involved = body.get("involvedObject") or {}
        answer = autoscaler_answer(body)
        if answer is None or involved.get("kind") != "Pod":
            return
        when = parse_time(body.get("lastTimestamp") or body.get("eventTime") or body["metadata"].get(
            "creationTimestamp")) or self.api.clock.now()
        pod = self.cache.pods.get(involved.get("uid", ""))
        # only about our pods, and only from their own namespace (an Event elsewhere proves nothing)
        if pod is None or not pod.app or pod.namespace != (body.get("metadata") or {}).get(
                "namespace", pod.namespace):
            return
        self.cache.record_scale_signal(pod.uid, answer, when)
        self.app_event(pod.namespace, pod.app)

    def _capacity_changed(self) -> None:
        self._capacity_changes += 1  # (an app being reconciled now is not among those waiting yet)
        for namespace, name in list(self.waiting):
            self.queue.add(("app", namespace, name))
        self._touch_machinetypes()

    def _claims_changed(self, current: tuple[str, str] | None = None) -> None:
        """Room the apps' pending replicas claimed was given up (a pending pod deleted, replicas asked for
        that are no longer wanted, an app gone): the room is free in the view, and the apps with replicas
        off their preferred type that would move up there look again (but `current`, whose reconcile read
        it). Apps merely pending are the scheduler's to place: it hears of a pod deleted itself."""
        given_up = self.cache.claims.given_up
        if not given_up:
            return
        # a claim on a type without a schedulable node held no room (a lost pool's doomed replacements
        # going): the view has none there to free, so nobody looks again
        freed = {t for t in given_up
                 if (m := self.types.declared.get(t)) is None or self.cache.any_schedulable(m, index=True)}
        given_up.clear()
        if not freed:
            return
        self._claims_given_up += 1
        for app, better in list(self.off_preferred.items()):
            if app != current and not better.isdisjoint(freed):
                self.queue.add_batched(("app", *app), CLAIMS_WAKE_WINDOW)

    def _touch_machinetypes(self) -> None:
        self.queue.add_after(("machinetypes",), self.settings.machine_type_status_delay)

    # --- workers -----------------------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            started = time.perf_counter()
            try:
                if key[0] == "app":
                    await self.reconcile_app(key[1], key[2])
                    metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
                else:
                    await self.reconcile_machinetypes()
                self.failures.pop(key, None)
                self._failing_since.pop(key, None)
                self._failure_told.pop(key, None)
                metrics.RECONCILES.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except NotLeading:  # leadership lost or handed over as the process stops: no fault of the app's
                logger.info("reconcile of %s stopped: this process no longer leads", key)
                self.queue.retry_after(key, 1.0)
            except Exception as e:
                failures = self.failures.get(key, 0) + 1
                self.failures[key] = failures
                self._failing_since.setdefault(key, time.monotonic())
                delay = backoff(failures, self.settings.error_backoff_max)
                if isinstance(e, ApiError):
                    logger.warning("reconcile of %s failed (attempt %d), retrying in %.1fs: %s",
                                   key, failures, delay, e)
                    self._tell_lasting(key, e)
                else:
                    logger.exception("reconcile of %s failed (attempt %d); retrying in %.1fs", key, failures, delay)
                    self._tell_failure(key, e)
                metrics.RECONCILES.labels("error").inc()
                self.queue.retry_after(key, delay)
            finally:
                self.queue.done(key)

    def _tell_failure(self, key: QueueKey, error: Exception) -> None:
        """A reconcile of an app that raised what no API answer explains (the operator's own fault, met on
        some input): a Warning event on the app says so, once per error, besides the log; it is retried
        at its back-off."""
        message = truncate(f"{type(error).__name__}: {error}")
        self._tell_once(key, message, "ReconcileFailed",
                        f"the operator could not reconcile this app and retries with back-off; report it: {message}")

    def _tell_lasting(self, key: QueueKey, error: ApiError) -> None:
        """An app whose reconciles have failed on errors worth retrying for settings.requests_failing_after
        seconds in a row: a Warning event on the app says so with the API's message, once per kind of answer
        (status and reason), besides the log (its status keeps what it last said: the writes are what fail);
        retrying goes on. (A refusal is told by AppWriter.refuse.)"""
        failing_for = time.monotonic() - self._failing_since.get(key, time.monotonic())
        if not error.transient or failing_for < self.settings.requests_failing_after:
            return
        # told once per kind of answer: the words of one may change at every attempt (a webhook's expired
        # certificate names the current time, a write's time limit the lease's seconds left)
        self._tell_once(key, f"RequestsFailing: {error.status} {error.reason}", "RequestsFailing",
                        f"this app's requests have failed for {failing_for:.0f}s ({self.failures.get(key, 0)} "
                        f"attempts); retrying with back-off: {truncate(str(error))}")

    def _tell_once(self, key: QueueKey, told: str, reason: str, message: str) -> None:
        """A Warning event on the app of `key` about its failures, unless `told` was the last said (a post
        that failed is forgotten: the API failing the app's requests may fail it too)."""
        if key[0] != "app" or (body := self.falapps.get((key[1], key[2]))) is None:
            return
        if self._failure_told.get(key) == told:
            return
        self._failure_told[key] = told
        self.events.post(self.events.involved(children.AppRef(key[2], key[1], body["metadata"].get("uid", ""))),
                         "Warning", reason, message, unmark(self._failure_told, key, told))

    # --- one app -------------------------------------------------------------------------------------
    async def reconcile_app(self, namespace: str, name: str) -> None:
        try:
            await self._reconcile_app(namespace, name)
        except NamespaceGone as lost:
            # the app went with its namespace (as a namespace's deletion goes), or was left behind
            if await self.writer.gone(namespace, name, lost.uid):
                self._app_gone(namespace, name, lost.uid)
                return
            there, seen = await self.namespaces.read(namespace)
            if there is not None:
                raise lost.error from None  # there after all (made again meanwhile, or a webhook's answer): retried
            if seen:  # it may have come after the answer, its event handled already: nothing would release it
                logger.debug("%s/%s: namespace seen while it was read; looking again", namespace, name)
                self.queue.add_after(("app", namespace, name), 1.0, due=False)
                return
            self.namespaces.park((namespace, name), lost.uid, lost.error)
            self._forget_app(namespace, name, gone=False)
        except AppGone as gone:
            self._app_gone(namespace, name, gone.uid)

    async def _get_namespace(self, namespace: str) -> JsonObject | None:
        return await self.writer.sent(Priority.NORMAL, self.api.get_namespace(namespace))

    def _app_gone(self, namespace: str, name: str, uid: str) -> None:
        """Deleted before its watch said so (with its namespace, or while this operator started): nothing
        more is written for it, not even an event (its namespace may be gone: every post would fail)."""
        stored = self.falapps.get((namespace, name))
        if stored is not None and stored["metadata"].get("uid") != uid:
            self.queue.add(("app", namespace, name))  # one of the same name came meanwhile: it is news
            return
        logger.info("%s/%s: deleted (its writes answer 404); its watch has not said so yet", namespace, name)
        self.falapps.refresh((namespace, name), (namespace, name), None)
        self._forget_app(namespace, name, gone=True)

    async def _reconcile_app(self, namespace: str, name: str) -> None:
        logger.debug("reconcile %s/%s", namespace, name)
        key = (namespace, name)
        if self.writer.needs_fresh_read(key):
            await self.writer.read_fresh(namespace, name)
        cached = self.falapps.get(key)
        # the status is updated below as writes succeed: a copy (the stored one is as the API has it)
        body = None if cached is None else {**cached, "status": dict(cached.get("status") or {})}
        # an app being deleted, or in a namespace being deleted, is left alone: nothing can be created
        # there any more (not even an event), and its children go with it
        if body is None or body["metadata"].get("deletionTimestamp") or namespace in self.namespaces.terminating:
            self._forget_app(namespace, name, gone=body is None)
            return
        if key in self.namespaces.orphans:  # its namespace is gone: nothing can be written for it (see Namespaces.park)
            if self.namespaces.orphans[key] == body["metadata"].get("uid"):
                return
            self.namespaces.forget_orphan(key)  # another one of that name (the old one's DELETED never told): news
        if namespace in self.namespaces.gone:  # its apps may have nothing to write: no write would tell
            there, seen = await self.namespaces.read(namespace)
            if there is None:
                raise NamespaceGone(body["metadata"].get("uid", ""), ApiError(
                    404, "NotFound", f'namespaces "{namespace}" not found', f"Namespace {namespace}", "namespaces"))
            if there["metadata"].get("deletionTimestamp"):  # being deleted: left alone, as its event will say
                self._forget_app(namespace, name, gone=False)
                # (should its events be missed, a later look tells whether the deletion left it behind)
                self.queue.add_after(("app", namespace, name), self.settings.error_backoff_max, due=False)
                return
            if not seen:  # there (its event is still to come): read no more
                self.namespaces.gone.discard(namespace)
        meta = body["metadata"]
        ref = children.AppRef(name, namespace, meta["uid"])
        status = body["status"] = body.get("status") or {}  # one dict: the writes below update it
        generation = meta.get("generation", 1)
        try:
            spec = FalAppSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            self.off_preferred.pop(key, None)  # it goes nowhere until its spec is fixed
            first = e.errors()[0]
            problem = "spec." + ".".join(str(p) for p in first["loc"]) + ": " + first["msg"]
            await self.writer.execute(ref, body, [], [], invalid(ref, generation, FalAppStatus.model_validate(status),
                                                           problem, self.api.clock.now()))
            return
        snap: AppSnapshot | None = None
        capacity_seen, claims_seen = self._capacity_changes, self._claims_given_up
        try:
            labelled = self.deployments.of_app(namespace, name)
            deployments = self._own_deployments(labelled, ref.uid)
            pods = made_by(self.app_pods.of_app(namespace, name), deployments)
            now = self.api.clock.now()
            state = children_state(deployments, ref.uid)
            snap = AppSnapshot(
                ref=ref, generation=generation, spec=spec, status=FalAppStatus.model_validate(status),
                catalogue=self.types.placement(),
                counts=state.counts,
                surge=state.surge,
                cover=state.cover,
                pods=[pod_view(p, self.cache.scale_up_coming(p["metadata"]["uid"]), now,
                               self.cache.scale_up_refused(p["metadata"]["uid"]),
                               self.cache.deleted((p.get("spec") or {}).get("nodeName"))) for p in pods
                      if TYPE_LABEL in (p["metadata"].get("labels") or {})],
                free=self.asks.free_for(spec, (namespace, name), self.types.declared.values()),
                nodeless_since=self.nodeless.observe_for(spec, self.types.declared.values()),
                grown_at=state.grown_at,
                recorded_moves=state.recorded_moves,
                raised_before=self._started_at or now,
                now=now,
                replica_failures=state.replica_failures,
                create_failing=frozenset(state.create_failing),
                refused_since=state.refused_since,
                namespace_labels=self.namespaces.labels.get(namespace),
                templates=self.types.templates,
            )
            result = plan(snap)
            # before the first await: an app planned after this one sees the room as taken, and its pods'
            # events while the writes go out are judged by where the app is going (see _steady)
            if result.better_types:
                self.off_preferred[(namespace, name)] = result.better_types
            else:
                self.off_preferred.pop((namespace, name), None)
            self.asks.expect(snap, result)
            self._claims_changed(current=(namespace, name))  # it asked for fewer: others look again
            claims_seen = self._claims_given_up
            conflict, service = self.writer.name_conflict(ref, labelled, result)
            if conflict is not None:
                # an object of that name is not this app's: write nothing, not even over a stale view
                self.cache.claims.forget_expected((namespace, name))
                self.off_preferred.pop((namespace, name), None)  # it goes nowhere: nothing to wake it for
                self._claims_changed()
                await self.writer.refuse(ref, generation, status, conflict, snap, "NameConflict")
                return
            await self.writer.execute(ref, body, deployments, pods, result, service)
        except ApiError as e:
            if e.transient:
                raise
            if e.namespace_gone:
                raise NamespaceGone(ref.uid, e) from e  # nothing to refuse it with there
            if e.status == 404 and await self.writer.gone(namespace, name, ref.uid):
                raise AppGone(ref.uid) from e
            # the API refused a read or write for this app: say so on the app, retry at the slowest rate
            await self.writer.refuse(ref, generation, status, str(e), snap, "RequestRejected")
            return
        # one line per move, with the number of replicas making it
        moves = Counter((t.move.value, t.from_type, t.to_type) for t in result.decision.transitions) \
            if result.decision else Counter()
        for (move, from_type, to_type), count in moves.items():
            logger.info("%s/%s: %s %s -> %s x%d (decided %.3fs ago)", namespace, name, move, from_type, to_type,
                        count, (self.api.clock.now() - now).total_seconds())
        if result.requeue_at is not None:
            # just past the deadline (a wake a hair early, e.g. the clock's offset moved, only looks again)
            self.queue.add_after(("app", namespace, name), (result.requeue_at - now).total_seconds() + 0.01)
        (self.waiting.add if result.waiting_for_room else self.waiting.discard)((namespace, name))
        # room came while this reconcile wrote, after it read the view: nothing else would wake the app (it
        # was not among those waiting yet: new, or a catalogue edit made its type a worse one)
        if result.waiting_for_room and self._capacity_changes != capacity_seen:
            self.queue.add(("app", namespace, name))
        elif result.better_types and self._claims_given_up != claims_seen:
            self.queue.add_batched(("app", namespace, name), CLAIMS_WAKE_WINDOW)
        self.app_metrics.record((namespace, name), snap, result, self.types.declared.values())

    def _forget_app(self, namespace: str, name: str, gone: bool) -> None:
        """What the controller holds for an app it leaves alone: deleted (`gone`), being deleted, in a
        namespace being deleted, or left behind by its namespace (see Namespaces.park)."""
        app = (namespace, name)
        self.waiting.discard(app)
        self.off_preferred.pop(app, None)
        self.cache.claims.forget_expected(app)
        self.writer.forget(app)
        self._failure_told.pop(("app", *app), None)
        self._failing_since.pop(("app", *app), None)
        self.types.templates.forget(namespace, name)
        if gone:
            if app in self.apps:
                self.apps.discard(app)
                self.cache.claims.retire(app)
            self.generations.pop(app, None)
            self.namespaces.app_gone(app)
        self.app_metrics.forget(app)
        self._claims_changed()

    def _seen(self, namespace: str, app: str, type_name: str) -> None:
        self.cache.claims.seen((namespace, app), type_name)

    def _lost_types(self, old: NodeInfo, node: NodeInfo | None) -> None:
        """The node was a schedulable one of fixed-size types and is no more. Where it was the type's last,
        every app with a Deployment of the type hears so now: the apps whose pods were on nodes that went
        earlier were woken then, while nodes were left, and nothing else would wake them before their next
        pod event."""
        lost = self.nodeless.lost(old, node, self.types.placement())
        if not lost:
            return
        for deployment in list(self.deployments.objects.values()):
            meta = deployment["metadata"]
            labels = meta.get("labels") or {}
            if labels.get(TYPE_LABEL) in lost and labels.get(APP_LABEL):
                self.app_event(meta.get("namespace") or "", labels[APP_LABEL])

    # --- machine type capacity view ---------------------------------------------------------------
    async def reconcile_machinetypes(self) -> None:
        placed: Counter[str] = Counter()
        pending: Counter[str] = Counter()
        for pod in self.cache.pods.values():
            if pod.machine_type:
                (placed if pod.node else pending)[pod.machine_type] += 1
        for name, machine_type in list(self.types.declared.items()):
            nodes = [n for n in self.cache.nodes_of_type(machine_type) if n.schedulable]
            gpu_resource = machine_type.spec.gpu_resource
            status = MachineTypeStatus(
                nodes=len(nodes),
                allocatable_gpus=sum(n.allocatable.counting(gpu_resource).gpus for n in nodes),
                free_gpus=sum(max(f.gpus, 0) for f in self.cache.free_of_type(machine_type)),
                placed_replicas=placed[name],
                pending_replicas=pending[name],
                autoscaled=bool(machine_type.spec.autoscaled) or self.types.detected_autoscaled(machine_type),
                observed_at=self.api.clock.now(),
            )
            if self.types.status_differs(machine_type, status):
                answer = await self.api.patch_machinetype_status(name, status.to_patch())
                self.types.status_written(name, status, answer)
