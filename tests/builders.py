"""Builders of the objects tests and benchmarks make, one home for all of them.

Wire bodies (plain dicts, as a user applies them or the API returns them): FalApps, MachineTypes, fake
GPU nodes, pods. Model instances for the pure layers: FalAppSpec, MachineType, and the placement
engine's views (TypeOption, NodeFree, PodView).

Every builder starts from a small valid object; keyword arguments named as on the wire replace its
fields, and None removes one. The benchmarks import this module too (bench/common.py puts the
repository on the path), so it needs nothing beyond the operator package and the standard library.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from falapp_operator.api import GPU_PRODUCT_LABEL, FalApp, FalAppSpec, MachineType
from falapp_operator.placement import NodeFree, PodView, TypeOption

API_VERSION = "fal.ai/v1alpha1"
IMAGE = "registry.example.com/app:1"
GPU = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
POOL_LABEL = "fal.test/pool"  # selects the fake nodes a test or benchmark creates for one MachineType
# the labels users select children by, spelled out here (not taken from the operator) so a change shows
TYPE_LABEL = "fal.ai/machine-type"
APP_LABEL = "fal.ai/app"
H100_AFFINITY = [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": ["NVIDIA-H100"]}]
GI = 1024**3
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
UNSCHEDULABLE = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."


def changed(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with `changes` applied: a value replaces the field, None removes it."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _metadata(name: str, namespace: str | None) -> dict[str, Any]:
    return {"name": name, **({"namespace": namespace} if namespace else {})}


# --- FalApps and MachineTypes, as a user applies them ------------------------------------------------


def falapp(name: str = "sdxl", *, namespace: str | None = None, **spec: Any) -> dict[str, Any]:
    """A valid FalApp (image, machineTypes GPU-H100 then GPU-A100); `spec` replaces fields (None removes)."""
    base = {"image": IMAGE, "machineTypes": ["GPU-H100", "GPU-A100"]}
    return {"apiVersion": API_VERSION, "kind": "FalApp", "metadata": _metadata(name, namespace),
            "spec": changed(base, spec)}


def fallback(timeout: str | None = None, scale_up_timeout: str | None = None,
             return_to_preferred: bool | None = None) -> dict[str, Any]:
    """spec.fallback with the fields given (the rest default)."""
    return changed({}, {"unschedulableTimeout": timeout, "scaleUpTimeout": scale_up_timeout,
                        "returnToPreferred": return_to_preferred})


def machine_type(name: str = "gpu-test", **spec: Any) -> dict[str, Any]:
    """A valid GPU MachineType like the catalogue's (8 GPUs of 80Gi, H100 nodes by product label);
    `spec` replaces fields (None removes)."""
    base = {"gpu": {"maxGpusPerReplica": 8, "vram": "80Gi"}, "resources": {"cpu": "12", "memory": "112Gi"},
            "nodeAffinity": H100_AFFINITY}
    return {"apiVersion": API_VERSION, "kind": "MachineType", "metadata": {"name": name},
            "spec": changed(base, spec)}


def pool_machine_type(name: str, pool: str | None = None, *, max_gpus: int = 8, vram: str = "80Gi",
                      nvenc: int | None = None, cpu: str = "1", memory: str = "1Gi", **spec: Any) -> dict[str, Any]:
    """A GPU MachineType selecting only the fake nodes of `pool` (default: its own name) and tolerating
    their GPU taint, so a test or benchmark controls its capacity exactly."""
    gpu = changed({"maxGpusPerReplica": max_gpus, "vram": vram}, {"nvencEngines": nvenc})
    return machine_type(name, gpu=gpu, resources={"cpu": cpu, "memory": memory}, nodeAffinity=None,
                        nodeSelector={POOL_LABEL: pool or name}, tolerations=[GPU_TOLERATION], **spec)


# --- nodes and pods, as the API returns them ----------------------------------------------------------


def node(name: str, *, gpus: int = 8, cpu: str = "64", memory: str = "512Gi", pods: int | None = None,
         labels: Mapping[str, str] | None = None, taints: Iterable[dict] = (GPU_TAINT,), ready: bool | None = None,
         unschedulable: bool | None = None, kwok: bool = False) -> dict[str, Any]:
    """A GPU node; `kwok`: a fake node KWOK runs (its annotation, label type=kwok, provider ID and
    capacity); `ready`: with a Ready condition."""
    alloc = {"cpu": cpu, "memory": memory, GPU: str(gpus), **({"pods": str(pods)} if pods is not None else {})}
    meta: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
    spec: dict[str, Any] = {"taints": [dict(t) for t in taints]}
    status: dict[str, Any] = {"allocatable": alloc}
    if kwok:
        meta["annotations"] = {"kwok.x-k8s.io/node": "fake"}
        meta["labels"]["type"] = "kwok"
        spec["providerID"] = f"kwok://{name}"
        status["capacity"] = dict(alloc)
    if unschedulable is not None:
        spec["unschedulable"] = unschedulable
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": status}


def pool_node(name: str, pool: str, *, gpus: int = 8, pods: int = 110, cpu: str = "64", memory: str = "512Gi",
              **labels: str) -> dict[str, Any]:
    """A fake KWOK GPU node of `pool` (see pool_machine_type), tainted as GPU nodes are."""
    return node(name, gpus=gpus, cpu=cpu, memory=memory, pods=pods, kwok=True,
                labels={POOL_LABEL: pool, **labels})


def pod(name: str, *, namespace: str | None = None, uid: str | None = None, labels: Mapping[str, str] | None = None,
        node_name: str | None = None, ready: bool | None = None, conditions: Iterable[dict] = (),
        phase: str | None = None, requests: Mapping[str, str] | None = None, created: str | None = None,
        deleting: bool = False, container_statuses: Iterable[dict] | None = None) -> dict[str, Any]:
    """A pod as the API returns it; `ready` adds a Ready condition after `conditions`; `requests`: one
    container requesting them; `deleting`: being deleted."""
    meta: dict[str, Any] = {"name": name, "labels": dict(labels or {})}
    for key, value in (("namespace", namespace), ("uid", uid), ("creationTimestamp", created),
                       ("deletionTimestamp", "2026-01-01T00:00:00Z" if deleting else None)):
        if value is not None:
            meta[key] = value
    spec: dict[str, Any] = {}
    if node_name is not None:
        spec["nodeName"] = node_name
    if requests is not None:
        spec["containers"] = [{"name": "app", "image": IMAGE, "resources": {"requests": dict(requests)}}]
    status: dict[str, Any] = {"conditions": [*conditions]}
    if ready is not None:
        status["conditions"].append({"type": "Ready", "status": "True" if ready else "False"})
    if phase is not None:
        status["phase"] = phase
    if container_statuses is not None:
        status["containerStatuses"] = list(container_statuses)
    return {"metadata": meta, "spec": spec, "status": status}


# --- model instances ----------------------------------------------------------------------------------


def model(body: Mapping[str, Any]) -> FalApp | MachineType:
    """A FalApp or MachineType body, validated by its model (ValidationError when it is invalid)."""
    return FalApp.model_validate(body) if body["kind"] == "FalApp" else MachineType.model_validate(body)


def falapp_spec(**spec: Any) -> FalAppSpec:
    """The spec of `falapp(**spec)`, validated."""
    return FalAppSpec.model_validate(falapp(**spec)["spec"])


def machine_type_model(name: str = "gpu-test", **spec: Any) -> MachineType:
    """`machine_type(name, **spec)`, validated."""
    return MachineType.model_validate(machine_type(name, **spec))


# --- the placement engine's views ---------------------------------------------------------------------


def option(name: str, gpus: int = 8, cpu_milli: int = 8000, memory_bytes: int = 64 * GI) -> TypeOption:
    """A listed type as the engine sees it: display name, GPUs, CPU and memory per replica."""
    return TypeOption(name, name.upper(), gpus, cpu_milli, memory_bytes)


def free(gpus: int = 8, cpu_milli: int = 64_000, memory_bytes: int = 512 * GI) -> NodeFree:
    """The room left on one node."""
    return NodeFree(gpus, cpu_milli, memory_bytes)


def replica(name: str, machine_type: str, *, ready: bool = False, bound: bool | None = None,
            since: datetime | None = None, created: datetime | None = None, now: datetime = NOW,
            message: str = UNSCHEDULABLE, **view: Any) -> PodView:
    """A pod of the type's Deployment, created ten minutes before `now`: Ready implies bound; `since`:
    Unschedulable since then (with the scheduler's `message`); `view`: further PodView fields."""
    return PodView(name, machine_type, created=created or now - timedelta(seconds=600),
                   bound=ready if bound is None else bound, ready=ready, unschedulable_since=since,
                   scheduler_message=message if since else "", **view)
