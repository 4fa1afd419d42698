"""Resource vectors: what a pod requests and a node offers, counted the way the scheduler counts them.

The one place in the operator that sums a pod's requests (`pod_requests`): the capacity view uses it, so
the operator sees a node as full exactly when the scheduler does. The simulated scheduler counts with its
own small sum (tests/sim/objects.py), checked against this one, so a miscount here shows there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from falapp_operator.api.units import cpu_millis, memory_bytes, whole

CPU, MEMORY = "cpu", "memory"
SIDECAR = "Always"  # restartPolicy of an init container that keeps running beside the app (a sidecar)


@dataclass(frozen=True)
class Resources:
    """cpu in millicores, memory in bytes, and every other resource (GPUs and other extended resources,
    ephemeral storage) as a whole count. `gpus` reads the resource named by `gpu_resource`: machine
    types name their GPUs differently, so the same vector is read per type (see `counting`)."""

    cpu_milli: int = 0
    memory_bytes: int = 0
    others: tuple[tuple[str, int], ...] = ()  # sorted by name, no zero amounts
    gpu_resource: str | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, amounts: Mapping[str, Any] | None) -> Resources:
        """A resource list as the API spells it (`{"cpu": "500m", "nvidia.com/gpu": "2"}`).
        Raises ValueError for a quantity that is not one, or too large to compute with."""
        cpu = memory = 0
        others: dict[str, int] = {}
        for name, value in (amounts or {}).items():
            if name == CPU:
                cpu = cpu_millis(value)
            elif name == MEMORY:
                memory = memory_bytes(value)
            else:
                others[name] = whole(value)  # GPUs, other extended resources, bytes of storage
        return cls._of(cpu, memory, others)

    @classmethod
    def _of(cls, cpu_milli: int, memory: int, others: Mapping[str, int],
            gpu_resource: str | None = None) -> Resources:
        return cls(cpu_milli, memory, tuple(sorted((k, v) for k, v in others.items() if v)), gpu_resource)

    def count(self, name: str) -> int:
        """The amount of a resource other than cpu and memory (0 if absent)."""
        return next((amount for key, amount in self.others if key == name), 0)

    @property
    def gpus(self) -> int:
        return self.count(self.gpu_resource) if self.gpu_resource else 0

    def counting(self, gpu_resource: str | None) -> Resources:
        """The same vector with `gpus` reading `gpu_resource` (None: no GPUs, a CPU type)."""
        if gpu_resource == self.gpu_resource:
            return self
        return Resources(self.cpu_milli, self.memory_bytes, self.others, gpu_resource)  # (replace() is slow)

    def _combine(self, other: Resources, op: Callable[[int, int], int]) -> Resources:
        if self.others == other.others == ():
            return Resources(op(self.cpu_milli, other.cpu_milli), op(self.memory_bytes, other.memory_bytes),
                             (), self.gpu_resource)
        mine, theirs = dict(self.others), dict(other.others)
        others = {k: op(mine.get(k, 0), theirs.get(k, 0)) for k in mine.keys() | theirs.keys()}
        return self._of(op(self.cpu_milli, other.cpu_milli), op(self.memory_bytes, other.memory_bytes), others,
                        self.gpu_resource)

    def __add__(self, other: Resources) -> Resources:
        return self._combine(other, int.__add__)

    def __sub__(self, other: Resources) -> Resources:
        return self._combine(other, int.__sub__)

    def max(self, other: Resources) -> Resources:
        """Per resource, the larger amount."""
        return self._combine(other, max)


def container_requests(container: Mapping[str, Any]) -> Resources:
    """What one container requests. A resource with a limit and no request is requested at its limit:
    the API server fills that in when a pod is created, so pods read from it already say so; objects
    built elsewhere (the simulator) are read the same way."""
    resources = container.get("resources") or {}
    return Resources.parse({**(resources.get("limits") or {}), **(resources.get("requests") or {})})


def _init_containers(spec: Mapping[str, Any]) -> Iterator[tuple[Resources, bool]]:
    for container in spec.get("initContainers") or []:
        yield container_requests(container), container.get("restartPolicy") == SIDECAR


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """What a pod (its spec) takes of a node, as the scheduler counts it, per resource:
    - app containers and sidecars (init containers with restartPolicy Always) run together: summed;
    - each other init container runs alone, beside the sidecars started before it; the pod needs room
      for the largest of these moments, so it takes the larger of that and the sum above;
    - a pod-level request (spec.resources, cpu and memory only) replaces the containers' for that resource;
    - the runtime's overhead (spec.overhead, set from the pod's RuntimeClass) comes on top.
    Raises ValueError for a quantity that cannot be computed."""
    containers = [container_requests(c) for c in spec.get("containers") or []]
    total = containers[0] if containers else Resources()
    for requests in containers[1:]:
        total += requests
    if spec.get("initContainers"):
        sidecars = peak = Resources()
        for requests, sidecar in _init_containers(spec):
            if sidecar:
                total += requests
                sidecars += requests
                peak = peak.max(sidecars)
            else:
                peak = peak.max(requests + sidecars)
        total = total.max(peak)
    pod_level = {k: v for k, v in ((spec.get("resources") or {}).get("requests") or {}).items() if k in (CPU, MEMORY)}
    if pod_level:
        own = Resources.parse(pod_level)
        total = replace(total, cpu_milli=own.cpu_milli if CPU in pod_level else total.cpu_milli,
                        memory_bytes=own.memory_bytes if MEMORY in pod_level else total.memory_bytes)
    return total + Resources.parse(spec["overhead"]) if spec.get("overhead") else total
