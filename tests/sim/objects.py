"""The model's objects (nodes, pods, Deployments), rendered as dicts shaped like the Kubernetes API's.

`Node.body()`, `Pod.body()` and `Deployment.body` are all the operator side ever reads. A
Deployment's revision is its ReplicaSet's `pod-template-hash` (a hash of the whole pod template); its
pods carry it as a label and keep their template's annotations (the operator's `fal.ai/template-hash`
among them). Nodes of a machine type carry its GPU Feature Discovery product label, the GPU taint,
and as many CPUs and as much memory per GPU as the default catalogue's type asks per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from falapp_operator.api import DEFAULT_CATALOG, GPU_PRODUCT_LABEL, format_time
from falapp_operator.api.units import cpu_millis, memory_bytes
from tests.builders import GPU, GPU_TAINT, node

NAMESPACE = "team"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Shape:
    """What a node of a machine type looks like: its product label and resources per GPU."""

    product: str
    cpu_per_gpu: int  # milli
    memory_per_gpu: int  # bytes


def _shapes() -> dict[str, Shape]:
    out = {}
    for mt in DEFAULT_CATALOG:
        if mt.spec.gpu is None:
            continue
        product = mt.spec.node_affinity[0].values[0]
        out[mt.metadata.name] = Shape(product, cpu_millis(mt.spec.resources.cpu),
                                      memory_bytes(mt.spec.resources.memory))
    return out


SHAPES = _shapes()


@dataclass
class Node:
    name: str
    machine_type: str
    gpus: int
    cpu_milli: int
    memory: int
    ready: bool = True
    cordoned: bool = False
    down_until: datetime | None = None  # NotReady until then

    def labels(self) -> dict[str, str]:
        return {GPU_PRODUCT_LABEL: SHAPES[self.machine_type].product, "kubernetes.io/hostname": self.name}

    def taints(self) -> list[dict]:
        taints = [GPU_TAINT]
        if not self.ready:
            taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
        return taints

    def body(self) -> dict:
        return node(self.name, gpus=self.gpus, cpu=f"{self.cpu_milli}m", memory=str(self.memory),
                    labels=self.labels(), taints=self.taints(), ready=self.ready, unschedulable=self.cordoned)


def requests_of(spec: dict) -> tuple[int, int, int]:
    """(GPUs, milli-cpu, memory bytes) the scheduler counts for a pod: its containers summed, or an init
    container's request where larger (init containers run one at a time, before them). The simulated
    scheduler's own sum, apart from the operator's `pod_requests` so it catches a miscount there
    (tests/unit/test_sim_requests.py compares the two). Only what the operator's pods use: a pod with
    sidecars, pod-level requests or overhead is refused rather than counted wrong."""
    unmodelled = [k for k in ("overhead", "resources") if spec.get(k)] + [
        c["name"] for c in spec.get("initContainers") or [] if c.get("restartPolicy")]
    if unmodelled:
        raise ValueError(f"the simulator does not count {unmodelled}")

    def asked(container: dict) -> tuple[int, int, int]:
        resources = container.get("resources") or {}
        amounts = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return int(amounts.get(GPU, 0)), cpu_millis(amounts.get("cpu", 0)), memory_bytes(amounts.get("memory", 0))

    containers = [asked(c) for c in spec["containers"]]
    gpus, cpu, memory = (sum(r[i] for r in containers) for i in range(3))
    for init in map(asked, spec.get("initContainers") or []):
        gpus, cpu, memory = max(gpus, init[0]), max(cpu, init[1]), max(memory, init[2])
    return gpus, cpu, memory


@dataclass
class Pod:
    name: str
    uid: str
    seq: int  # creation order
    app: str
    machine_type: str
    deployment: str
    template: dict  # the Deployment's spec.template when the pod was created (shared, never mutated)
    created: datetime
    ready_delay: timedelta  # from binding to Ready
    annotations: dict = field(default_factory=dict)
    node: str | None = None
    bound_at: datetime | None = None
    ready_at: datetime | None = None
    started: bool = False  # containers started once (phase Running)
    ready: bool = False  # the Ready condition as the kubelet reports it
    ready_since: datetime | None = None
    flap_until: datetime | None = None  # NotReady until then (a failing readiness probe)
    unschedulable_since: datetime | None = None
    message: str = ""
    scale_up_coming: bool = False
    announced_at: datetime | None = None
    requests: tuple[int, int, int] = (0, 0, 0)  # GPUs, milli-cpu, memory bytes of its containers
    revision: str = ""  # its ReplicaSet's pod-template-hash (also a label)
    labels: dict = field(default_factory=dict)  # the template's labels plus pod-template-hash

    @property
    def pending(self) -> bool:
        return self.node is None

    @staticmethod
    def requests_of(template: dict) -> tuple[int, int, int]:
        return requests_of(template["spec"])

    def body(self) -> dict:
        conditions = []
        if self.node:
            conditions.append({"type": "PodScheduled", "status": "True",
                               "lastTransitionTime": format_time(self.bound_at or self.created)})
        elif self.unschedulable_since is not None:
            conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                               "message": self.message, "lastTransitionTime": format_time(self.unschedulable_since)})
        conditions.append({"type": "Ready", "status": "True" if self.ready else "False"})
        spec = dict(self.template["spec"])
        if self.node:
            spec["nodeName"] = self.node
        return {
            "metadata": {"name": self.name, "namespace": NAMESPACE, "uid": self.uid,
                         "labels": self.labels, "annotations": self.annotations,
                         "creationTimestamp": format_time(self.created),
                         "ownerReferences": [{"kind": "ReplicaSet", "name": f"{self.deployment}-{self.revision}",
                                              "controller": True}]},
            "spec": spec,
            "status": {"phase": "Running" if self.started else "Pending", "conditions": conditions},
        }


@dataclass
class Deployment:
    app: str
    machine_type: str
    body: dict  # metadata + spec as applied
    revision: str = ""  # pod-template-hash of its current ReplicaSet (a hash of spec.template)
    # its ReplicaSets, oldest first: revision -> spec.replicas, and each one's pod template
    sets: dict[str, int] = field(default_factory=dict)
    templates: dict[str, dict] = field(default_factory=dict)
    sized_for: int | None = None  # the size the sets were last scaled for (the desired-replicas annotation)

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def replicas(self) -> int:
        return self.body["spec"].get("replicas", 0) or 0
