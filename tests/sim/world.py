"""The cluster model: the controllers that move nodes, pods and Deployments, on a simulated clock.

Nothing here imports operator logic: the scheduler, the ReplicaSet ranking and the rolling update are
written from Kubernetes' behaviour; the objects are in `objects.py`.

Simplifications:
- Pods removed by the Deployment controller, by a Deployment's deletion or by a lost node vanish at
  once (no Terminating phase, no grace period).
- The scheduler is first-fit over nodes in creation order, pods in creation order, every step; no
  scoring, no preemption, no backoff queue. A node's taints and labels, the pod's nodeSelector,
  required node affinity and tolerations are honoured.
- The ReplicaSet ranking for scale-down is Kubernetes' `ActivePodsWithRanks` minus the co-location
  rank and restart counts: unbound, then Pending phase, then not Ready, then lower
  pod-deletion-cost, then Ready more recently, then newer.
- The Deployment controller keeps a ReplicaSet per revision with its own size, as Kubernetes does, and
  each ReplicaSet keeps that many pods (a lost pod is replaced, by its own revision). Rolling update
  (maxSurge 1, maxUnavailable 0), from Kubernetes' rolloutRolling: the new ReplicaSet grows while the
  sizes add up to at most replicas + 1; the old ones shrink by their unavailable pods, oldest first,
  within what leaves replicas available, then by their available pods beyond replicas. A new size is a
  scaling event, Kubernetes' scale(): a single active ReplicaSet takes it; otherwise proportional
  scaling (see World._scale). Unlike Kubernetes, the rolling step follows the scaling in the same sync.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from falapp_operator.api.names import APP_LABEL, DELETION_COST, REVISION_LABEL, TYPE_LABEL
from tests.sim.objects import EPOCH, SHAPES, Deployment, Node, Pod


@dataclass
class Flags:
    """What happened to the world in one step, for the invariants' exemptions."""

    capacity_changed: bool = False  # nodes added, lost, cordoned, NotReady or back
    ready_lost: bool = False  # a Ready pod vanished or went NotReady through no fault of the operator
    changed: bool = False  # anything at all moved (pods created, bound, Ready, deleted)
    removed_from: set[str] = field(default_factory=set)  # apps whose pods were removed (room freed)


def _rank(pod: Pod) -> tuple:
    """Kubernetes' scale-down order (smaller goes first), without co-location and restarts."""
    cost = int(pod.annotations.get(DELETION_COST, "0"))
    ready_since = -(pod.ready_since.timestamp()) if pod.ready and pod.ready_since else 0
    return (pod.node is not None, pod.started, pod.ready, cost, ready_since, -pod.seq)


class World:
    def __init__(self, now: datetime = EPOCH):
        self.now = now
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self.deployments: dict[str, Deployment] = {}
        self.ready_delay: dict[str, timedelta] = {}  # per app
        self.arrivals: list[tuple[datetime, str, int]] = []  # announced nodes: (when, type, gpus)
        self.flags = Flags()
        self.version = 0  # bumps on every change of any object
        self.memo: dict = {}  # observers' scratch space (e.g. the operator's cache, keyed by version)
        self._seq = 0
        self._node_seq = 0

    # --- bookkeeping -------------------------------------------------------------------------
    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def touch(self) -> None:
        """Something changed (a watch event would fire): bump the version, note it for this step."""
        self.version += 1
        self.flags.changed = True

    def begin_step(self, dt: timedelta) -> None:
        self.now += dt
        self.flags = Flags()

    def pods_of(self, app: str) -> list[Pod]:
        return sorted((p for p in self.pods.values() if p.app == app), key=lambda p: p.seq)

    def all_pods(self) -> list[Pod]:
        return sorted(self.pods.values(), key=lambda p: p.seq)

    def deployments_of(self, app: str) -> list[Deployment]:
        return [d for d in self.deployments.values() if d.app == app]

    def ready_count(self, app: str) -> int:
        return sum(p.ready for p in self.pods.values() if p.app == app)

    def timers(self) -> list[datetime]:
        """When the world will change by itself (for the quiet phase's fast-forward)."""
        out = [when for when, _, _ in self.arrivals]
        out += [n.down_until for n in self.nodes.values() if n.down_until]
        for p in self.pods.values():
            if p.node and not p.started and p.ready_at:
                out.append(p.ready_at)
            if p.flap_until:
                out.append(p.flap_until)
        return [t for t in out if t > self.now]

    def _delete_pod(self, pod: Pod) -> None:
        del self.pods[pod.name]
        self.flags.removed_from.add(pod.app)
        self.touch()

    # --- nodes ---------------------------------------------------------------------------------
    def add_node(self, machine_type: str, gpus: int) -> Node:
        shape = SHAPES[machine_type]
        self._node_seq += 1
        node = Node(f"{machine_type.removeprefix('gpu-')}-{self._node_seq}", machine_type, gpus,
                    shape.cpu_per_gpu * gpus, shape.memory_per_gpu * gpus)
        self.nodes[node.name] = node
        self.flags.capacity_changed = True
        self.touch()
        return node

    def lose_node(self, name: str) -> None:
        """The node and its pods vanish (the machine died; the pods' ReplicaSets will replace them)."""
        self.nodes.pop(name)
        for pod in [p for p in self.pods.values() if p.node == name]:
            self.flags.ready_lost |= pod.ready
            self._delete_pod(pod)
        self.flags.capacity_changed = True
        self.touch()

    def set_cordon(self, name: str, cordoned: bool) -> None:
        node = self.nodes[name]
        if node.cordoned != cordoned:
            node.cordoned = cordoned
            self.flags.capacity_changed = True
            self.touch()

    def node_down(self, name: str, seconds: int) -> None:
        """The node goes NotReady for a while: no scheduling there, and its pods are not Ready."""
        node = self.nodes[name]
        node.ready, node.down_until = False, self.now + timedelta(seconds=seconds)
        for pod in self.pods.values():
            if pod.node == name and pod.ready:
                pod.ready = False
                self.flags.ready_lost = True
        self.flags.capacity_changed = True
        self.touch()

    # --- pods: readiness flaps, autoscaler --------------------------------------------------------
    def flap(self, index: int, seconds: int) -> None:
        """The index-th Ready pod (creation order, any app) fails its readiness probe for a while."""
        ready = [p for p in self.all_pods() if p.ready]
        if ready:
            pod = ready[index % len(ready)]
            pod.ready, pod.flap_until = False, self.now + timedelta(seconds=seconds)
            self.flags.ready_lost = True
            self.touch()

    def announce(self, machine_type: str, node_in: int | None) -> None:
        """An autoscaler says a node is coming for the oldest unschedulable pod of the type (if any); the
        node arrives `node_in` seconds later (None: it never does)."""
        pod = next((p for p in self.all_pods() if p.machine_type == machine_type and p.pending
                    and p.unschedulable_since is not None and not p.scale_up_coming), None)
        if pod is None:
            return
        pod.scale_up_coming, pod.announced_at = True, self.now
        self.touch()
        if node_in is not None:
            self.arrivals.append((self.now + timedelta(seconds=node_in), machine_type, max(pod.requests[0], 1)))

    # --- kubelet and node lifecycle ---------------------------------------------------------------
    def kubelet(self) -> None:
        for arrival in [a for a in self.arrivals if a[0] <= self.now]:
            self.arrivals.remove(arrival)
            self.add_node(arrival[1], arrival[2])
        for node in self.nodes.values():
            if node.down_until and node.down_until <= self.now:
                node.ready, node.down_until = True, None
                self.flags.capacity_changed = True
                self.touch()
        for pod in self.pods.values():
            if pod.flap_until and pod.flap_until <= self.now:
                pod.flap_until = None
            if pod.node and not pod.started and pod.ready_at and pod.ready_at <= self.now:
                pod.started = True
                self.touch()
            ready = pod.started and pod.flap_until is None and self.nodes[pod.node].ready if pod.node else False
            if ready and not pod.ready:
                pod.ready, pod.ready_since = True, self.now
                self.touch()

    # --- scheduler -----------------------------------------------------------------------------
    def schedule(self) -> None:
        used: dict[str, list[int]] = {n: [0, 0, 0] for n in self.nodes}
        for pod in self.pods.values():
            if pod.node:
                for i, amount in enumerate(pod.requests):
                    used[pod.node][i] += amount
        for pod in self.all_pods():
            if not pod.pending:
                continue
            want = pod.requests
            reasons: dict[str, int] = {}
            chosen = None
            for node in self.nodes.values():
                why = self._unfit(pod, node, want, used[node.name])
                if why is None:
                    chosen = node
                    break
                reasons[why] = reasons.get(why, 0) + 1
            if chosen is not None:
                pod.node, pod.bound_at, pod.ready_at = chosen.name, self.now, self.now + pod.ready_delay
                pod.unschedulable_since, pod.message = None, ""
                for i, amount in enumerate(want):
                    used[chosen.name][i] += amount
                self.touch()
            else:
                detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
                message = f"0/{len(self.nodes)} nodes are available: {detail}." if detail else \
                    "0/0 nodes are available."
                if pod.unschedulable_since is None or pod.message != message:
                    pod.unschedulable_since = pod.unschedulable_since or self.now
                    pod.message = message
                    self.touch()

    def _unfit(self, pod: Pod, node: Node, want: tuple[int, int, int], used: list[int]) -> str | None:
        spec = pod.template["spec"]
        labels = node.labels()
        if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return "node(s) didn't match Pod's node affinity/selector"
        terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                 .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
        if terms and not any(all(_expression_holds(e, labels) for e in t.get("matchExpressions") or [])
                             for t in terms):
            return "node(s) didn't match Pod's node affinity/selector"
        if node.cordoned:
            return "node(s) were unschedulable"
        for taint in node.taints():
            if not any(_tolerates(t, taint) for t in spec.get("tolerations") or []):
                return f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
        have = (node.gpus, node.cpu_milli, node.memory)
        for name, h, u, w in zip(("nvidia.com/gpu", "cpu", "memory"), have, used, want, strict=True):
            if u + w > h:
                return f"Insufficient {name}"
        return None

    # --- the Deployment controller (Deployments and their ReplicaSets) -------------------------
    def sync_deployments(self, app: str | None = None) -> None:
        for dep in list(self.deployments.values()):
            if app is None or dep.app == app:
                self._sync(dep)

    def _create_pod(self, dep: Deployment, revision: str) -> None:
        seq = self.next_seq()
        template = dep.templates[revision]
        pod = Pod(f"{dep.name}-{seq}", f"uid-{seq}", seq, dep.app, dep.machine_type, dep.name, template, self.now,
                  self.ready_delay.get(dep.app, timedelta()), annotations=dict(template["metadata"]["annotations"]),
                  requests=Pod.requests_of(template), revision=revision,
                  labels={**template["metadata"]["labels"], REVISION_LABEL: revision})
        self.pods[pod.name] = pod
        self.touch()

    def _sync(self, dep: Deployment) -> None:
        """RollingUpdate with maxSurge 1, maxUnavailable 0 (what the operator's Deployments ask for), then
        each ReplicaSet's pods."""
        desired, current, sets = dep.replicas, dep.revision, dep.sets
        sets.setdefault(current, 0)
        dep.templates.setdefault(current, dep.body["spec"]["template"])
        pods = {r: [p for p in self.pods.values() if p.deployment == dep.name and p.revision == r] for r in sets}

        def available(revision: str) -> int:
            return sum(p.ready for p in pods[revision])

        old = [r for r in sets if r != current]
        if dep.sized_for != desired:
            self._scale(dep)
        # the new ReplicaSet grows while the sizes add up to at most desired + maxSurge
        if sets[current] > desired:
            sets[current] = desired
        elif sets[current] < desired:
            sets[current] += max(0, min(desired + 1 - sum(sets.values()), desired - sets[current]))
        # the old ones shrink: unavailable pods first (oldest ReplicaSet first), within what keeps desired
        # available, then available pods beyond desired
        if any(sets[r] for r in old):
            budget = sum(sets.values()) - desired - (sets[current] - available(current))
            for r in old:
                if budget <= 0:
                    break
                cut = min(budget, max(sets[r] - available(r), 0))
                sets[r] -= cut
                budget -= cut
            surplus = sum(min(available(r), sets[r]) for r in sets) - desired
            for r in old:
                cut = min(sets[r], max(surplus, 0))
                sets[r] -= cut
                surplus -= cut
        # each ReplicaSet keeps its size: replacements by its own revision, removals by Kubernetes' rank
        for r, size in sets.items():
            for _ in range(size - len(pods[r])):
                self._create_pod(dep, r)
            for pod in sorted(pods[r], key=_rank)[:max(len(pods[r]) - size, 0)]:
                self._delete_pod(pod)

    def _scale(self, dep: Deployment) -> None:
        """A scaling event (the Deployment's size changed since its sets were sized), as Kubernetes'
        scale(): a single active set (or, with none, the newest) takes the size; otherwise proportional
        scaling of the active sets to replicas + maxSurge, each by its share of its last size (rounded half
        away from zero), within what is left to add, the leftover to the first in order (the biggest: the
        newer on ties when growing, the older when shrinking)."""
        desired, sets = dep.replicas, dep.sets
        before, dep.sized_for = dep.sized_for, desired
        active = [r for r, n in sets.items() if n > 0]
        if len(active) <= 1:
            sets[active[0] if active else dep.revision] = desired
            return
        allowed = desired + 1 if desired > 0 else 0
        to_add = allowed - sum(sets.values())
        if to_add == 0:
            return
        order = list(sets)  # oldest first
        ranked = sorted(active, key=lambda r: (-sets[r], -order.index(r) if to_add > 0 else order.index(r)))
        annotated = before + 1 if before else sum(sets.values())  # the sets' max-replicas annotation
        sizes, added = {}, 0
        for r in ranked:
            share = 0
            if to_add != added:
                fraction = (-sets[r] if desired == 0 else
                            math.floor(sets[r] * allowed / annotated + 0.5) - sets[r])
                share = min(fraction, to_add - added) if to_add > 0 else max(fraction, to_add - added)
            sizes[r] = sets[r] + share
            added += share
        sizes[ranked[0]] = max(sizes[ranked[0]] + to_add - added, 0)
        sets.update(sizes)

    # --- writes the operator makes ---------------------------------------------------------------
    def apply_deployment(self, body: dict) -> None:
        """Server-side apply by the only manager of these fields: the object becomes the body."""
        meta = body["metadata"]
        stored = {"metadata": {**meta, "annotations": dict(meta.get("annotations") or {})},
                  "spec": dict(body["spec"])}
        name = meta["name"]
        previous = self.deployments.get(name)
        type_name = meta["labels"][TYPE_LABEL]
        revision = previous.revision if previous and previous.body["spec"]["template"] == body["spec"]["template"] \
            else hashlib.sha256(json.dumps(body["spec"]["template"], sort_keys=True).encode()).hexdigest()[:10]
        carried = (previous.sets, previous.templates, previous.sized_for) if previous else ({}, {}, None)
        self.deployments[name] = Deployment(meta["labels"][APP_LABEL], type_name, stored, revision, *carried)
        self.deployments[name].templates.setdefault(revision, body["spec"]["template"])
        if previous is None or previous.body != stored:
            self.touch()

    def resize_unlisted(self, name: str, patch: dict) -> None:
        """Merge patch of the metadata's annotations and the spec's scalar fields."""
        dep = self.deployments.get(name)
        if dep is not None:  # a 404 is ignored, as the client does
            dep.body["metadata"]["annotations"].update(patch["metadata"]["annotations"])
            dep.body["spec"].update(patch["spec"])
            self.touch()

    def delete_deployment(self, name: str) -> None:
        if self.deployments.pop(name, None) is not None:
            for pod in [p for p in self.pods.values() if p.deployment == name]:
                self._delete_pod(pod)
            self.touch()

    def mark_pod(self, name: str, cost: str) -> None:
        pod = self.pods.get(name)
        if pod is not None and pod.annotations.get(DELETION_COST) != cost:
            pod.annotations[DELETION_COST] = cost
            self.touch()


def _expression_holds(expression: dict, labels: dict[str, str]) -> bool:
    key, op, values = expression["key"], expression["operator"], expression.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise AssertionError(f"the model does not know operator {op}")


def _tolerates(toleration: dict, taint: dict) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint["effect"]:
        return False
    if toleration.get("operator", "Equal") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint["key"]
    return toleration.get("key") == taint["key"] and toleration.get("value", "") == taint.get("value", "")
