"""In-memory projections of nodes and pods: free capacity per node, and the app behind each pod.

Fed by the controller's watches and its resync's LISTs; holds a few numbers per object, never whole bodies.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from falapp_operator.api import JsonMapping, MachineType
from falapp_operator.api.names import APP_LABEL, KARPENTER_NODEPOOL_LABEL, TYPE_LABEL
from falapp_operator.api.nodes import Taint, scheduling_taints
from falapp_operator.api.resources import Resources, pod_requests
from falapp_operator.k8s.claims import ClaimTally
from falapp_operator.placement import NodeFree

SCALE_UP_COMING = frozenset({"TriggeredScaleUp", "Nominated"})
SCALE_UP_NOT_COMING = "NotTriggerScaleUp"
KARPENTER = "karpenter"
FAILED_SCHEDULING = "FailedScheduling"  # Karpenter's refusal (the scheduler's own use of it is not)
SCALE_UP_REASONS = SCALE_UP_COMING | {SCALE_UP_NOT_COMING, FAILED_SCHEDULING}
COMING, REFUSED = "coming", "refused"
DEFAULT_SCHEDULER = "default-scheduler"  # the API server's default spec.schedulerName: the operator's pods'
DELETED_NODES_KEPT = 10_000  # names of deleted nodes remembered (pods bound to them wait for the pod GC)
POD_CHANGES_KEPT = 4096  # nodes whose pods changed, kept to bring each type's free room up to date


@dataclass(frozen=True)
class PoolNodes:
    """What every node a Karpenter NodePool makes carries: labels and scheduling taints."""

    labels: Mapping[str, str]
    taints: tuple[Taint, ...]

    def of_type(self, machine_type: MachineType) -> bool:
        """Whether the type's pods can land on such a node (its selection matches, its taints tolerated)."""
        return machine_type.spec.matches_node(self.labels, self.taints)


def nodepool_nodes(nodepool: JsonMapping) -> PoolNodes:
    """The template's labels, requirements that allow exactly one value, karpenter.sh/nodepool, and the
    template's taints. (Requirements with a choice of values are left out: a type needing one of them
    is not counted as made by the pool.)"""
    template = (nodepool.get("spec") or {}).get("template") or {}
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    spec = template.get("spec") or {}
    for requirement in spec.get("requirements") or []:
        values = requirement.get("values") or []
        if requirement.get("operator") == "In" and len(values) == 1:
            labels[requirement["key"]] = values[0]
    labels[KARPENTER_NODEPOOL_LABEL] = nodepool["metadata"]["name"]
    return PoolNodes(labels, scheduling_taints(spec.get("taints")))


def autoscaler_answer(event: JsonMapping) -> str | None:
    """What an autoscaler's event says about a pending pod: a node is COMING (cluster-autoscaler's
    TriggeredScaleUp, Karpenter's Nominated), or none will (NotTriggerScaleUp; Karpenter's
    FailedScheduling, e.g. its node pool's limits are exhausted: REFUSED). None: not an autoscaler's."""
    reason = event.get("reason")
    if reason in SCALE_UP_COMING:
        return COMING
    if reason == SCALE_UP_NOT_COMING:
        return REFUSED
    source = (event.get("source") or {}).get("component") or event.get("reportingComponent") or ""
    if reason == FAILED_SCHEDULING and source == KARPENTER:
        return REFUSED
    return None


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]  # its NoSchedule/NoExecute taints
    allocatable: Resources
    schedulable: bool  # Ready and not cordoned


@dataclass(frozen=True)
class PodInfo:
    uid: str
    namespace: str
    node: str | None
    requests: Resources  # as the scheduler counts them (init containers, overhead)
    app: str | None  # FalApp name for our pods
    machine_type: str | None
    # the scheduler found no node for it, or will not look until its scheduling gates are removed, or it is
    # for a scheduler not in FALAPP_SCHEDULER_NAMES: it claims no room (a gated pod can wait for ever; so
    # can one whose scheduler never comes)
    unschedulable: bool = False
    # the scheduler tried it and found no node (PodScheduled False, Unschedulable), not gated: what
    # autoscalers answer
    scheduler_refused: bool = False

    @property
    def claims_room(self) -> bool:
        """One of our replicas about to be bound: room another app must not count on."""
        return bool(self.machine_type) and not self.node and not self.unschedulable


@dataclass(frozen=True)
class TypeFree:
    """Free room on a type's schedulable nodes, in the type's node order, as of a cache version."""

    version: int
    free: tuple[NodeFree, ...]
    index: Mapping[str, int]  # node name -> its place in `free`


@dataclass
class ClusterCache:
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    apps_by_node: dict[str, Counter[tuple[str, str]]] = field(default_factory=dict)  # our pods bound there
    requested: dict[str, Resources] = field(default_factory=dict)  # per node, by live pods bound to it
    # pod uid -> (answer, time) of the newest autoscaler event about it
    scale_signals: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    # namespace -> uids of our replicas there the scheduler found no node for (not gated): the autoscalers'
    # word about them is watched only while there are any
    unschedulable_replicas: dict[str, set[str]] = field(default_factory=dict)
    version: int = 0  # bumps whenever free capacity may have changed anywhere
    claims: ClaimTally = field(default_factory=ClaimTally)  # the claiming pods' shapes, per type and app
    # spec.schedulerName values whose pending pods claim room (FALAPP_SCHEDULER_NAMES)
    scheduler_names: frozenset[str] = frozenset({DEFAULT_SCHEDULER})
    # node names per (machine type, nvenc), cleared when nodes or machine types change
    _matches: dict[tuple[str, bool], list[str]] = field(default_factory=dict)
    # per node, its free room as each GPU resource name reads it; dropped when the node or its pods change
    _free: dict[str, dict[str | None, NodeFree]] = field(default_factory=dict)
    _deleted: dict[str, None] = field(default_factory=dict)  # names of nodes deleted lately, oldest first
    # per (machine type, nvenc), built again when a node changes, brought up to date when pods do
    _type_free: dict[tuple[str, bool], TypeFree] = field(default_factory=dict)
    # (version, node) for each change of a node's pods since the last node change; complete above _changes_from
    _pod_changes: list[tuple[int, str]] = field(default_factory=list)
    _changes_from: int = 0

    # --- updates (return whether capacity somewhere may have grown) ---------------------------
    def upsert_node(self, body: JsonMapping) -> bool:
        info = node_info(body)
        old = self.nodes.get(info.name)
        self.nodes[info.name] = info
        self._deleted.pop(info.name, None)
        changed = old is None or old != info
        if old is None or old.labels != info.labels or old.taints != info.taints:
            self.forget_node_matches()
        if changed:
            self._free.pop(info.name, None)
            self._node_changed()
        return changed

    def remove_node(self, name: str) -> bool:
        self._node_changed()
        self.forget_node_matches()
        self._free.pop(name, None)
        if self.requested.get(name) == Resources():  # (pods still bound to it keep theirs until they go)
            del self.requested[name]
        if name in self.nodes:
            self._deleted[name] = None
            while len(self._deleted) > DELETED_NODES_KEPT:
                del self._deleted[next(iter(self._deleted))]
        return self.nodes.pop(name, None) is not None

    def deleted(self, node: str | None) -> bool:
        """The node was seen and then deleted (one not seen yet may only be new: watches race)."""
        return node is not None and node in self._deleted and node not in self.nodes

    def upsert_pod(self, body: JsonMapping) -> bool:
        info = pod_info(body, self.scheduler_names)
        if info is None:  # finished or terminating: no longer holds its node's resources
            return self.remove_pod(body["metadata"]["uid"])
        old = self.pods.get(info.uid)
        self.pods[info.uid] = info
        self._unschedulable(info.namespace, info.uid, bool(info.app and info.scheduler_refused))
        if info.node:  # an autoscaler's word is about a pod waiting for a node: bound, it says nothing more
            self.scale_signals.pop(info.uid, None)
        if old is not None:
            self._unbind(old)
        if info.node and info.app:
            self.apps_by_node.setdefault(info.node, Counter())[(info.namespace, info.app)] += 1
        if info.claims_room:
            self.claims.claim(info.uid, info.machine_type or "", (info.namespace, info.app or ""), info.requests)
        else:
            self.claims.release(info.uid)
        if old is not None and old.node:
            self._release(old.node, old.requests)
        if info.node:
            self.requested[info.node] = self.requested.get(info.node, Resources()) + info.requests
            self._free.pop(info.node, None)
        if (old.node if old else None) != info.node or (old and old.requests != info.requests):
            self._pods_changed(*{n for n in (old.node if old else None, info.node) if n})
        return old is not None and old.node is not None and info.node != old.node

    def remove_pod(self, uid: str) -> bool:
        old = self.pods.pop(uid, None)
        self.claims.release(uid, gone=True)
        self.scale_signals.pop(uid, None)
        if old is not None:
            self._unschedulable(old.namespace, uid, False)
            self._unbind(old)
        if old is None or not old.node:
            return False
        self._release(old.node, old.requests)
        self._pods_changed(old.node)
        return True

    def _unschedulable(self, namespace: str, uid: str, waits: bool) -> None:
        if waits:
            self.unschedulable_replicas.setdefault(namespace, set()).add(uid)
        elif (uids := self.unschedulable_replicas.get(namespace)) is not None:
            uids.discard(uid)
            if not uids:
                del self.unschedulable_replicas[namespace]

    def replicas_unschedulable(self, namespace: str | None) -> bool:
        """Whether any of our replicas waits unschedulable in the namespace (None: anywhere)."""
        return bool(self.unschedulable_replicas) if namespace is None else namespace in self.unschedulable_replicas

    def _release(self, node: str, requests: Resources) -> None:
        """A pod no longer holds room on the node. A node gone keeps no entry once its last pod goes
        (node names come and go with an autoscaler)."""
        # (no entry: the node went while only pods requesting nothing were bound to it)
        left = self.requested.get(node, Resources()) - requests
        if node not in self.nodes and left == Resources():
            self.requested.pop(node, None)
        else:
            self.requested[node] = left
        self._free.pop(node, None)

    def _node_changed(self) -> None:
        """A node came, went or changed: each type's free room is built again when next asked for."""
        self.version += 1
        self._type_free.clear()
        self._pod_changes.clear()
        self._changes_from = self.version

    def _pods_changed(self, *nodes: str) -> None:
        """The pods bound to these nodes changed: only their entries in the types' free room go stale."""
        self.version += 1
        self._pod_changes.extend((self.version, node) for node in nodes)
        if len(self._pod_changes) > POD_CHANGES_KEPT:
            dropped = self._pod_changes[: POD_CHANGES_KEPT // 2]
            del self._pod_changes[: POD_CHANGES_KEPT // 2]
            self._changes_from = dropped[-1][0]  # (a change's nodes are logged together: none left half)
            while self._pod_changes and self._pod_changes[0][0] <= self._changes_from:
                del self._pod_changes[0]

    def _nodes_changed_since(self, version: int) -> set[str] | None:
        """The nodes whose pods changed after `version`; None when that is no longer known."""
        if version < self._changes_from:
            return None
        start = bisect_right(self._pod_changes, version, key=lambda change: change[0])
        return {node for _, node in self._pod_changes[start:]}

    def _unbind(self, pod: PodInfo) -> None:
        apps = self.apps_by_node.get(pod.node or "")
        if apps is not None and pod.app:
            apps[(pod.namespace, pod.app)] -= 1
            if apps[(pod.namespace, pod.app)] <= 0:
                del apps[(pod.namespace, pod.app)]
            if not apps:
                del self.apps_by_node[pod.node or ""]

    def apps_on_node(self, node: str) -> list[tuple[str, str]]:
        """The apps (namespace, name) with pods bound to the node, as their labels say."""
        return list(self.apps_by_node.get(node, ()))

    def record_scale_signal(self, pod_uid: str, answer: str, when: datetime) -> None:
        """The autoscaler's latest answer (COMING or REFUSED) about the pod: answers can flip (Nominated,
        then refused when another pod took the claim)."""
        pod = self.pods.get(pod_uid)
        if pod is not None and pod.node:  # bound: the word is about its wait, over (an Event listed again)
            return
        previous = self.scale_signals.get(pod_uid)
        if previous is None or previous[1] <= when:
            self.scale_signals[pod_uid] = (answer, when)

    def scale_up_coming(self, pod_uid: str) -> bool:
        signal = self.scale_signals.get(pod_uid)
        return signal is not None and signal[0] == COMING

    def scale_up_refused(self, pod_uid: str) -> bool:
        signal = self.scale_signals.get(pod_uid)
        return signal is not None and signal[0] == REFUSED

    def forget_node_matches(self) -> None:
        """A node or machine type changed: which nodes are of which type is computed again."""
        self._matches.clear()
        self._type_free.clear()

    def of_any_type(self, node: str, machine_types: Iterable[MachineType], info: NodeInfo | None = None) -> bool:
        """Whether pods of some machine type can land on the node (room freed there matters); `info`: the
        node as it was (or is), else as the cache has it. Looks at this node only: at start-up every node
        of a large cluster is asked in turn."""
        info = info or self.nodes.get(node)
        return info is not None and any(mt.spec.matches_node(info.labels, info.taints, False) for mt in machine_types)

    # --- queries -------------------------------------------------------------------------------
    def nodes_of_type(self, machine_type: MachineType, nvenc: bool = False) -> list[NodeInfo]:
        """Nodes a pod of the type can land on (selector, affinity, tolerated taints), as the
        generated Deployment selects them; NVENC apps also need the type's encoder selector."""
        key = (machine_type.metadata.name, nvenc)
        if key not in self._matches:
            self._index(machine_type, nvenc)
        return [self.nodes[n] for n in self._matches[key] if n in self.nodes]

    def _index(self, machine_type: MachineType, nvenc: bool) -> None:
        self._matches[(machine_type.metadata.name, nvenc)] = [
            n.name for n in self.nodes.values() if machine_type.spec.matches_node(n.labels, n.taints, nvenc)]

    def any_schedulable(self, machine_type: MachineType, nvenc: bool = False, index: bool = False) -> bool:
        """Whether a pod of the type can land on some Ready, uncordoned node; stops at the first, unless
        `index`: then the type's node list is built when missing, for the next asks (a reconcile's; not
        a node event's: each node deleted drops them all)."""
        key = (machine_type.metadata.name, nvenc)
        if index and key not in self._matches:
            self._index(machine_type, nvenc)
        if key in self._matches:
            return any(self.nodes[n].schedulable for n in self._matches[key] if n in self.nodes)
        return any(n.schedulable and machine_type.spec.matches_node(n.labels, n.taints, nvenc)
                   for n in self.nodes.values())

    def free(self, nodes: Iterable[NodeInfo], gpu_resource: str | None) -> list[NodeFree]:
        """Unrequested room on the schedulable ones, GPUs counted as `gpu_resource` (a machine type's)."""
        return [self._node_free(node, gpu_resource) for node in nodes if node.schedulable]

    def _node_free(self, node: NodeInfo, gpu_resource: str | None) -> NodeFree:
        known = self._free.setdefault(node.name, {})
        free = known.get(gpu_resource)
        if free is None:
            left = (node.allocatable - self.requested.get(node.name, Resources())).counting(gpu_resource)
            free = known[gpu_resource] = NodeFree(left.gpus, left.cpu_milli, left.memory_bytes)
        return free

    def free_of_type(self, machine_type: MachineType, nvenc: bool = False) -> tuple[NodeFree, ...]:
        """Free room on each schedulable node of the type (see nodes_of_type), in their order. Kept per
        type: a change of pods updates the entries of their nodes only (at scale pods bind many times a
        second, and a type has hundreds of nodes); a change of nodes builds it again."""
        key = (machine_type.metadata.name, nvenc)
        kept = self._type_free.get(key)
        if kept is not None and kept.version == self.version:
            return kept.free
        changed = None if kept is None else self._nodes_changed_since(kept.version)
        if kept is not None and changed is not None:
            hits = [(i, name) for name in changed if (i := kept.index.get(name)) is not None]
            if len(hits) <= len(kept.free) // 4 + 1:
                free = kept.free
                if hits:
                    entries = list(free)
                    for i, name in hits:
                        entries[i] = self._node_free(self.nodes[name], machine_type.spec.gpu_resource)
                    free = tuple(entries)
                kept = self._type_free[key] = TypeFree(self.version, free, kept.index)
                return kept.free
        nodes = [n for n in self.nodes_of_type(machine_type, nvenc) if n.schedulable]
        kept = self._type_free[key] = TypeFree(self.version, tuple(self.free(nodes, machine_type.spec.gpu_resource)),
                                               {n.name: i for i, n in enumerate(nodes)})
        return kept.free

    def app_pods(self, machine_type: str) -> list[PodInfo]:
        return [p for p in self.pods.values() if p.machine_type == machine_type]


def node_info(body: JsonMapping) -> NodeInfo:
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return NodeInfo(
        name=meta["name"],
        labels=dict(meta.get("labels") or {}),
        taints=scheduling_taints(spec.get("taints")),
        allocatable=_or_nothing(lambda: Resources.parse(status.get("allocatable"))),
        schedulable=ready and not spec.get("unschedulable", False),
    )


def pod_info(body: JsonMapping, scheduler_names: frozenset[str] = frozenset({DEFAULT_SCHEDULER})) -> PodInfo | None:
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    # a terminating pod still holds its node's resources (the scheduler counts it until it is gone)
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    labels = meta.get("labels") or {}
    gated = bool(spec.get("schedulingGates"))
    refused = not gated and not spec.get("nodeName") and any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or [])
    unschedulable = gated or refused or spec.get("schedulerName", DEFAULT_SCHEDULER) not in scheduler_names
    return PodInfo(uid=meta["uid"], namespace=meta.get("namespace", ""), node=spec.get("nodeName"),
                   requests=_or_nothing(lambda: pod_requests(spec)), app=labels.get(APP_LABEL),
                   machine_type=labels.get(TYPE_LABEL), unschedulable=unschedulable, scheduler_refused=refused)


def _or_nothing(amounts: Callable[[], Resources]) -> Resources:
    try:
        return amounts()
    except (TypeError, ValueError):
        # an amount the API server took but beyond 64 bits (e.g. nvidia.com/gpu 1e64): the scheduler's
        # arithmetic overflows and binds such a pod as if it asked for nothing, so it takes no room here
        # either (a node offering it offers none); the watch goes on
        return Resources()
