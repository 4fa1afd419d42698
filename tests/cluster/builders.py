"""Cluster tests' builders: private fake GPU nodes and MachineTypes they create and remove, and FalApps
with the cluster tests' defaults (all built by tests/builders.py)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from falapp_operator.api import GPU_PRODUCT_LABEL
from tests import builders
from tests.kube import Kubectl, wait_until


def falapp(name: str, machine_types: list[str] | None, *, gpus: int | None = 1, replicas: int = 1,
           timeout: str = "3s", scale_up_timeout: str = "15m", return_to_preferred: bool = True,
           **spec) -> dict:
    """tests.builders.falapp with the cluster tests' defaults: one GPU, one replica, fallback after 3 s
    (so scenarios finish quickly); `machine_types` None leaves the list out (the app chooses by
    spec.gpuMemory); `spec` (wire names) goes last and wins."""
    return builders.falapp(name, **{"machineTypes": machine_types, "numGpus": gpus, "replicas": replicas,
                                    "fallback": builders.fallback(timeout, scale_up_timeout, return_to_preferred),
                                    **spec})


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
        self.kubectl.apply(builders.pool_machine_type(name, max_gpus=max_gpus, vram=vram, nvenc=nvenc, cpu=cpu,
                                                      memory=memory))
        if name not in self.types:
            self.types.append(name)
        return name.upper()

    def add_node(self, pool: str, gpus: int = 8, ready: bool = True, pods: int = 110) -> str:
        pool_name = f"{self.prefix}-{pool}"
        name = f"{pool_name}-{len(self.nodes)}"
        labels = {"kubernetes.io/hostname": name, GPU_PRODUCT_LABEL: "NVIDIA-TEST-GPU"}
        self.kubectl.apply(builders.pool_node(name, pool_name, gpus=gpus, pods=pods, **labels), "--server-side")
        self.nodes.append(name)
        if ready:
            wait_until(lambda: self.kubectl.run("wait", "--for=condition=Ready", f"node/{name}", "--timeout=1s",
                                                check=False).returncode == 0, timeout=30, message=f"{name} Ready")
        return name

    def operator_sees(self, pool: str, nodes: int, timeout: float = 20) -> None:
        """Wait until the operator's view holds `nodes` schedulable nodes of the pool (its MachineType's
        status says so): a node Ready in the API may not be in the operator's view yet, as the watches
        of nodes and of FalApps are separate streams, and a decision on that view is not the one a test
        of "room on this type" means to check."""
        wait_until(lambda: (self.kubectl.get("machinetype", f"{self.prefix}-{pool}").get("status") or {})
                   .get("nodes") == nodes, timeout=timeout, message=f"the operator sees {nodes} {pool} node(s)")

    def remove_node(self, name: str) -> None:
        self.kubectl.run("delete", "node", name, "--wait=false")
        self.nodes.remove(name)

    def cleanup(self) -> None:
        for name in self.nodes:
            self.kubectl.run("delete", "node", name, "--wait=false", check=False)
        for name in self.types:
            self.kubectl.run("delete", "machinetype", name, "--wait=false", check=False)
