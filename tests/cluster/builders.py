"""Small builders for cluster tests: private fake GPU nodes and MachineTypes, FalApps."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from tests.kube import Kubectl, wait_until

POOL_LABEL = "fal.test/pool"


def falapp(name: str, machine_types: list[str] | None, *, gpus: int | None = 1, replicas: int = 1,
           timeout: str = "3s", scale_up_timeout: str = "15m", return_to_preferred: bool = True,
           **spec) -> dict:
    """A FalApp; `machine_types` None leaves the list out (the app chooses by spec.gpuMemory)."""
    body = {"image": "registry.example.com/app:1", "replicas": replicas,
            "fallback": {"unschedulableTimeout": timeout, "scaleUpTimeout": scale_up_timeout,
                         "returnToPreferred": return_to_preferred}, **spec}
    if machine_types is not None:
        body["machineTypes"] = machine_types
    if gpus is not None:
        body["numGpus"] = gpus
    return {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "metadata": {"name": name}, "spec": body}


@dataclass
class PrivatePools:
    """MachineTypes that select only nodes this test creates, so tests control capacity exactly."""

    kubectl: Kubectl
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:6]}")
    nodes: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)

    def machine_type(self, pool: str, *, max_gpus: int = 8, nvenc: int = 0, cpu: str = "1",
                     memory: str = "1Gi", vram: str = "80Gi") -> str:
        """Create (or update) MachineType `<prefix>-<pool>`; returns the name to list in a FalApp."""
        name = f"{self.prefix}-{pool}"
        self.kubectl.apply({
            "apiVersion": "fal.ai/v1alpha1", "kind": "MachineType", "metadata": {"name": name},
            "spec": {"displayName": name.upper(),
                     "gpu": {"maxGpusPerReplica": max_gpus, "vram": vram, "nvencEngines": nvenc},
                     "resources": {"cpu": cpu, "memory": memory},
                     "nodeSelector": {POOL_LABEL: name},
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
        })
        if name not in self.types:
            self.types.append(name)
        return name.upper()

    def add_node(self, pool: str, gpus: int = 8, ready: bool = True, pods: int = 110) -> str:
        pool_name = f"{self.prefix}-{pool}"
        name = f"{pool_name}-{len(self.nodes)}"
        self.kubectl.apply({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                         "labels": {POOL_LABEL: pool_name, "type": "kwok", "kubernetes.io/hostname": name,
                                    "nvidia.com/gpu.product": "NVIDIA-TEST-GPU"}},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                     "providerID": f"kwok://{name}"},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "pods": str(pods), "nvidia.com/gpu": str(gpus)},
                       "capacity": {"cpu": "64", "memory": "512Gi", "pods": str(pods), "nvidia.com/gpu": str(gpus)}},
        }, "--server-side")
        self.nodes.append(name)
        if ready:
            wait_until(lambda: self.kubectl.run("wait", "--for=condition=Ready", f"node/{name}", "--timeout=1s",
                                                check=False).returncode == 0, timeout=30, message=f"{name} Ready")
        return name

    def remove_node(self, name: str) -> None:
        self.kubectl.run("delete", "node", name, "--wait=false")
        self.nodes.remove(name)

    def cleanup(self) -> None:
        for name in self.nodes:
            self.kubectl.run("delete", "node", name, "--wait=false", check=False)
        for name in self.types:
            self.kubectl.run("delete", "machinetype", name, "--wait=false", check=False)
