"""The control loop: keep caches, queue apps on events, reconcile each app through the pure planner.

Handlers only feed events in here. Reconciles read the app's Deployments and pods fresh from the API,
so decisions never rest on a stale view of what the operator itself just wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import ValidationError

from falapp_operator import metrics
from falapp_operator.api import API_VERSION, FalAppSpec, MachineType, format_time
from falapp_operator.k8s.cache import APP_LABEL, SCALE_UP_REASONS, TYPE_LABEL, ClusterCache
from falapp_operator.k8s.client import DELETION_COST, KubeApi
from falapp_operator.k8s.workqueue import WorkQueue
from falapp_operator.placement import Move, NodeFree, PodView
from falapp_operator.reconcile import children
from falapp_operator.reconcile.app import AppPlan, AppSnapshot, invalid, plan
from falapp_operator.settings import OperatorSettings

logger = logging.getLogger("falapp_operator")
OWN_STATUS_MANAGERS = {"kube-controller-manager"}


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class Controller:
    def __init__(self, api: KubeApi, settings: OperatorSettings):
        self.api = api
        self.settings = settings
        self.cache = ClusterCache()
        self.catalogue: dict[str, MachineType] = {}
        self.queue = WorkQueue()
        self.apps: set[tuple[str, str]] = set()  # every FalApp seen, by namespace and name
        self.waiting: set[tuple[str, str]] = set()  # apps that would use freed capacity
        self.failures: dict[tuple, int] = {}
        self._workers: list[asyncio.Task] = []
        self._pending_posts: set[asyncio.Task] = set()
        self._nodes_by_type: dict[tuple[str, bool], list[str]] = {}  # cleared when nodes or types change
        self._machinetype_status: dict[str, dict] = {}
        self._free_by_type: dict[tuple[str, bool], tuple[int, list[NodeFree]]] = {}
        self._insufficient: dict[tuple[str, str], str] = {}
        self._replica_gauge: dict[tuple[str, str], dict[tuple[str, str], int]] = {}

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Fill the caches from a LIST before any reconcile, so no decision sees a half-known cluster."""
        for body in await self.api.list_machinetypes():
            self.machinetype_event(body, deleted=False)
        for body in await self.api.list_nodes():
            self.cache.upsert_node(body)
        for body in await self.api.list_pods():
            self.cache.upsert_pod(body)
        self._workers = [asyncio.create_task(self._worker(), name=f"falapp-worker-{i}")
                         for i in range(self.settings.workers)]

    async def stop(self) -> None:
        self.queue.close()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    # --- event intake (called by handlers) -------------------------------------------------------
    def app_event(self, namespace: str, name: str) -> None:
        if self.settings.manages(namespace):
            self.apps.add((namespace, name))
            self.queue.add(("app", namespace, name))

    def machinetype_event(self, body: Mapping, deleted: bool) -> None:
        name = body["metadata"]["name"]
        self._nodes_by_type.clear()
        self._free_by_type.clear()
        self._machinetype_status.pop(name, None)
        if deleted:
            self.catalogue.pop(name, None)
        else:
            try:
                self.catalogue[name] = MachineType.model_validate(body)
            except ValidationError as e:
                logger.warning("MachineType %s is invalid and ignored: %s", name, e)
                self.catalogue.pop(name, None)
        for namespace, app in list(self.apps):  # the catalogue changed: every app may place differently
            self.queue.add(("app", namespace, app))
        self._touch_machinetypes()

    def node_event(self, body: Mapping, deleted: bool) -> None:
        changed = (self.cache.remove_node(body["metadata"]["name"]) if deleted else self.cache.upsert_node(body))
        if changed:
            self._nodes_by_type.clear()
            self._free_by_type.clear()
            self._capacity_changed()

    def pod_event(self, body: Mapping, deleted: bool) -> None:
        meta = body["metadata"]
        freed = self.cache.remove_pod(meta["uid"]) if deleted else self.cache.upsert_pod(body)
        app = (meta.get("labels") or {}).get(APP_LABEL)
        if app:
            self.app_event(meta["namespace"], app)
            self._touch_machinetypes()
        if freed or (deleted and (body.get("spec") or {}).get("nodeName")):
            self._capacity_changed()

    def scale_signal_event(self, body: Mapping) -> None:
        """Autoscaler events (TriggeredScaleUp, NotTriggerScaleUp, Karpenter Nominated) about our pods."""
        involved = body.get("involvedObject") or {}
        if body.get("reason") not in SCALE_UP_REASONS or involved.get("kind") != "Pod":
            return
        when = _time(body.get("lastTimestamp") or body.get("eventTime") or body["metadata"].get(
            "creationTimestamp")) or datetime.now(UTC)
        self.cache.record_scale_signal(involved.get("uid", ""), body["reason"], when)
        pod = self.cache.pods.get(involved.get("uid", ""))
        if pod is not None and pod.app:
            self.app_event(pod.namespace, pod.app)

    def child_event(self, body: Mapping) -> None:
        meta = body["metadata"]
        app = (meta.get("labels") or {}).get(APP_LABEL)
        if app:
            self.app_event(meta["namespace"], app)

    def _capacity_changed(self) -> None:
        for namespace, name in list(self.waiting):
            self.queue.add(("app", namespace, name))
        self._touch_machinetypes()

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
                metrics.RECONCILES.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception:
                failures = self.failures.get(key, 0) + 1
                self.failures[key] = failures
                delay = min(0.5 * 2 ** (failures - 1), self.settings.error_backoff_max)
                logger.exception("reconcile of %s failed (attempt %d); retrying in %.1fs", key, failures, delay)
                metrics.RECONCILES.labels("error").inc()
                self.queue.add_after(key, delay)
            finally:
                self.queue.done(key)

    # --- one app -------------------------------------------------------------------------------------
    async def reconcile_app(self, namespace: str, name: str) -> None:
        logger.debug("reconcile %s/%s", namespace, name)
        body = await self.api.get_falapp(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self.waiting.discard((namespace, name))
            if body is None:
                self.apps.discard((namespace, name))
            self._forget_metrics(namespace, name)
            return
        meta = body["metadata"]
        ref = children.AppRef(name, namespace, meta["uid"])
        status = body.get("status") or {}
        try:
            spec = FalAppSpec.model_validate(body.get("spec") or {})
        except ValidationError as e:
            first = e.errors()[0]
            problem = "spec." + ".".join(str(p) for p in first["loc"]) + ": " + first["msg"]
            result = invalid(ref, meta.get("generation", 1), status, problem, datetime.now(UTC))
            await self._execute(ref, body, [], [], result)
            return
        deployments = await self.api.list_app_deployments(namespace, ref.selector)
        pods = await self.api.list_app_pods(namespace, ref.selector)
        now = datetime.now(UTC)
        snap = AppSnapshot(
            ref=ref, generation=meta.get("generation", 1), spec=spec, status=status,
            catalogue=list(self.catalogue.values()),
            counts={d["metadata"]["labels"][TYPE_LABEL]: d["spec"].get("replicas", 0) for d in deployments
                    if TYPE_LABEL in (d["metadata"].get("labels") or {})},
            surges={d["metadata"]["labels"][TYPE_LABEL]: int(
                (d["metadata"].get("annotations") or {}).get(children.SURGE_ANNOTATION, "0") or 0)
                for d in deployments if TYPE_LABEL in (d["metadata"].get("labels") or {})},
            pods=[self._pod_view(p) for p in pods if TYPE_LABEL in (p["metadata"].get("labels") or {})],
            free=self._free_for(spec),
            now=now,
        )
        result = plan(snap)
        await self._execute(ref, body, deployments, pods, result)
        for tr in result.decision.transitions if result.decision else ():
            logger.info("%s/%s: %s %s -> %s (decided %.3fs ago)", namespace, name, tr.move.value, tr.from_type,
                        tr.to_type, (datetime.now(UTC) - now).total_seconds())
        if result.requeue_at is not None:
            self.queue.add_after(("app", namespace, name), (result.requeue_at - now).total_seconds() + 0.05)
        if result.waiting_for_room:
            self.waiting.add((namespace, name))
        else:
            self.waiting.discard((namespace, name))
        self._record_metrics(namespace, name, snap, result)

    def _pod_view(self, pod: Mapping) -> PodView:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        scheduled = conditions.get("PodScheduled", {})
        unschedulable = scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"
        return PodView(
            name=meta["name"],
            machine_type=meta["labels"][TYPE_LABEL],
            created=_time(meta.get("creationTimestamp")) or datetime.now(UTC),
            bound=bool(spec.get("nodeName")),
            ready=conditions.get("Ready", {}).get("status") == "True",
            terminating=bool(meta.get("deletionTimestamp")) or status.get("phase") in ("Succeeded", "Failed"),
            unschedulable_since=_time(scheduled.get("lastTransitionTime")) if unschedulable else None,
            scheduler_message=scheduled.get("message", "") if unschedulable else "",
            scale_up_coming=bool(status.get("nominatedNodeName")) or self.cache.scale_up_coming(meta["uid"]),
        )

    def _free_for(self, spec: FalAppSpec) -> dict[str, list[NodeFree]]:
        out = {}
        for listed in spec.machine_types:
            machine_type = next((m for m in self.catalogue.values() if m.matches(listed)), None)
            if machine_type is not None:
                out[machine_type.metadata.name] = self._free_of(machine_type, spec.requires_nvenc)
        return out

    def _free_of(self, machine_type: MachineType, nvenc: bool) -> list[NodeFree]:
        """Free room per node of a type, reused until capacity changes anywhere (cache.version)."""
        key = (machine_type.metadata.name, nvenc)
        cached = self._free_by_type.get(key)
        if cached is None or cached[0] != self.cache.version:
            cached = (self.cache.version, self.cache.free(self._nodes_of(machine_type, nvenc)))
            self._free_by_type[key] = cached
        return cached[1]

    def _nodes_of(self, machine_type: MachineType, nvenc: bool = False):
        key = (machine_type.metadata.name, nvenc)
        if key not in self._nodes_by_type:
            self._nodes_by_type[key] = [n.name for n in self._match_nodes(machine_type, nvenc)]
        return [self.cache.nodes[n] for n in self._nodes_by_type[key] if n in self.cache.nodes]

    def _match_nodes(self, machine_type: MachineType, nvenc: bool):
        mt = machine_type.spec
        selector = dict(mt.node_selector or {})
        if nvenc:
            selector.update(mt.nvenc_node_selector or {})
        requirements = [r.model_dump(by_alias=True, exclude_none=True) for r in mt.node_affinity or []]
        tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in mt.tolerations or []]
        return self.cache.matching_nodes(selector, requirements, tolerations)

    async def _execute(self, ref: children.AppRef, body: Mapping, deployments: list[dict], pods: list[dict],
                       result: AppPlan) -> None:
        namespace = ref.namespace
        live = {d["metadata"]["name"]: d for d in deployments}
        marked = {p["metadata"]["name"] for p in pods
                  if (p["metadata"].get("annotations") or {}).get(DELETION_COST) == "-1000"}
        # grow first (the replacement starts sooner), then mark the pods to go, then shrink
        changed = [d for d in result.deployments if (current := live.get(d["metadata"]["name"])) is None
                   or _needs_apply(current, d, self.settings.field_manager)]
        growing = [d for d in changed if d["spec"]["replicas"] >= _replicas(live.get(d["metadata"]["name"]))]
        for desired in growing:
            await self.api.apply(desired)
        for pod_name in result.mark_for_deletion:
            if pod_name not in marked:
                await self.api.mark_pod_for_deletion(namespace, pod_name)
        for desired in changed:
            if desired not in growing:
                await self.api.apply(desired)
        for type_name, replicas in result.rescale_unlisted.items():
            await self.api.scale_deployment(namespace, children.deployment_name(ref.name, type_name), replicas)
        for type_name in result.delete_deployments:
            await self.api.delete_deployment(namespace, children.deployment_name(ref.name, type_name))
        if result.service is not None:
            current = await self.api.get_service(namespace, ref.name)
            if current is None or _needs_apply(current, result.service, self.settings.field_manager):
                await self.api.apply(result.service)
        await self._write_status(namespace, ref.name, body.get("status") or {}, result.status)
        involved = {"apiVersion": API_VERSION, "kind": "FalApp", "name": ref.name, "namespace": namespace,
                    "uid": ref.uid}
        for event in result.events:
            self._background(self.api.post_event(involved, event.type, event.reason, event.message))

    async def _write_status(self, namespace: str, name: str, current: Mapping, desired: Mapping) -> None:
        if any(current.get(k) != v for k, v in desired.items()):
            await self.api.patch_falapp_status(namespace, name, desired)

    def _background(self, coroutine) -> None:
        """Fire-and-forget writes (events) that must not delay the next placement step."""
        task = asyncio.create_task(coroutine)
        self._pending_posts.add(task)
        task.add_done_callback(self._posted)

    def _posted(self, task: asyncio.Task) -> None:
        self._pending_posts.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("could not post an event: %s", task.exception())

    # --- machine type capacity view ---------------------------------------------------------------
    async def reconcile_machinetypes(self) -> None:
        placed: Counter[str] = Counter()
        pending: Counter[str] = Counter()
        for pod in self.cache.pods.values():
            if pod.machine_type:
                (placed if pod.node else pending)[pod.machine_type] += 1
        for name, machine_type in list(self.catalogue.items()):
            nodes = [n for n in self._nodes_of(machine_type) if n.schedulable]
            status = {
                "nodes": len(nodes),
                "allocatableGpus": sum(n.allocatable.gpus for n in nodes),
                "freeGpus": sum(max(f.gpus, 0) for f in self.cache.free(nodes)),
                "placedReplicas": placed[name],
                "pendingReplicas": pending[name],
            }
            current = self._machinetype_status.get(name) or (
                machine_type.model_dump(by_alias=True, exclude_none=True, mode="json").get("status") or {})
            if any(current.get(k) != v for k, v in status.items()):
                await self.api.patch_machinetype_status(
                    name, {**status, "observedAt": format_time(datetime.now(UTC))})
                self._machinetype_status[name] = status

    # --- metrics -------------------------------------------------------------------------------------
    def _record_metrics(self, namespace: str, name: str, snap: AppSnapshot, result: AppPlan) -> None:
        decision = result.decision
        if decision is None:
            return
        display = {m.metadata.name: m.display_name for m in self.catalogue.values()}
        for tr in decision.transitions:
            src, dst = display.get(tr.from_type or "", tr.from_type or ""), display.get(tr.to_type or "", "")
            if tr.move == Move.FELL_BACK:
                metrics.FALLBACKS.labels(namespace, src, dst).inc()
                since = next((p.unschedulable_since for p in snap.pods
                              if p.machine_type == tr.from_type and p.unschedulable_since), None)
                if since is not None:
                    metrics.PENDING_SECONDS.labels(src).observe((snap.now - since).total_seconds())
            elif tr.move in (Move.RETURNED, Move.PLACED_PREFERRED):
                metrics.RETURNS.labels(namespace, src, dst).inc()
            elif tr.move == Move.PROBE_FAILED:
                metrics.PROBE_FAILURES.labels(namespace, dst).inc()
        counts: dict[tuple[str, str], int] = {}
        for pod in snap.pods:
            if not pod.terminating:
                key = (display.get(pod.machine_type, pod.machine_type), "ready" if pod.ready else "not_ready")
                counts[key] = counts.get(key, 0) + 1
        self._set_replica_gauge(namespace, name, counts)
        if decision.insufficient:
            self._insufficient[(namespace, name)] = namespace
        else:
            self._insufficient.pop((namespace, name), None)
        metrics.INSUFFICIENT.labels(namespace).set(sum(1 for ns in self._insufficient.values() if ns == namespace))

    def _set_replica_gauge(self, namespace: str, name: str, counts: dict[tuple[str, str], int]) -> None:
        old = self._replica_gauge.pop((namespace, name), {})
        if counts:
            self._replica_gauge[(namespace, name)] = counts
        for key in set(old) | set(counts):
            total = sum(c.get(key, 0) for (ns, _), c in self._replica_gauge.items() if ns == namespace)
            metrics.REPLICAS.labels(namespace, key[0], key[1]).set(total)

    def _forget_metrics(self, namespace: str, name: str) -> None:
        self._set_replica_gauge(namespace, name, {})
        self._insufficient.pop((namespace, name), None)
        metrics.INSUFFICIENT.labels(namespace).set(sum(1 for ns in self._insufficient.values() if ns == namespace))


def _replicas(deployment: Mapping | None) -> int:
    return 0 if deployment is None else (deployment.get("spec") or {}).get("replicas", 0)


def _needs_apply(current: Mapping, desired: Mapping, field_manager: str) -> bool:
    """Apply when our desired object changed, or someone else edited the child by hand."""
    meta = current["metadata"]
    if (meta.get("annotations") or {}).get(children.HASH_ANNOTATION) != desired["metadata"]["annotations"][
            children.HASH_ANNOTATION]:
        return True
    for entry in meta.get("managedFields") or []:
        if entry.get("subresource") == "status" or entry.get("manager") in OWN_STATUS_MANAGERS | {field_manager}:
            continue
        return True
    return False
