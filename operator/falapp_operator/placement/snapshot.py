"""Immutable inputs of the placement engine: what the cluster looks like for one app at one instant.

The k8s layer builds these from watched pods/nodes and the app's Deployments; the engine never does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class TypeOption:
    """A machine type that can host the app, with the requests one replica makes on it."""

    name: str  # MachineType object name, e.g. "gpu-h100"
    display: str  # the name users write, e.g. "GPU-H100"
    gpus: int  # per replica; 0 on CPU types
    cpu_milli: int  # per replica
    memory_bytes: int  # per replica


@dataclass(frozen=True)
class Policy:
    unschedulable_timeout: timedelta = timedelta(seconds=60)
    scale_up_timeout: timedelta = timedelta(minutes=15)
    return_to_preferred: bool = True


@dataclass(frozen=True)
class PodView:
    """One replica's pod, reduced to what placement needs."""

    name: str
    machine_type: str
    created: datetime
    bound: bool = False  # spec.nodeName set
    ready: bool = False
    terminating: bool = False
    unschedulable_since: datetime | None = None  # PodScheduled=False/Unschedulable lastTransitionTime
    scheduler_message: str = ""
    scale_up_coming: bool = False  # TriggeredScaleUp / Nominated / nominatedNodeName, not since cancelled

    @property
    def pending(self) -> bool:
        return not self.bound and not self.terminating

    def deadline(self, policy: Policy) -> datetime | None:
        """When this pending pod counts as stuck on its type (None: not unschedulable)."""
        if not self.pending or self.unschedulable_since is None:
            return None
        wait = policy.unschedulable_timeout + (policy.scale_up_timeout if self.scale_up_coming else timedelta())
        return self.unschedulable_since + wait


@dataclass(frozen=True)
class NodeFree:
    """Unrequested resources on one Ready, schedulable node."""

    gpus: int
    cpu_milli: int
    memory_bytes: int

    def fits(self, option: TypeOption) -> bool:
        return (self.gpus >= option.gpus and self.cpu_milli >= option.cpu_milli
                and self.memory_bytes >= option.memory_bytes)

    def minus(self, option: TypeOption) -> NodeFree:
        return NodeFree(self.gpus - option.gpus, self.cpu_milli - option.cpu_milli,
                        self.memory_bytes - option.memory_bytes)


@dataclass(frozen=True)
class ProbeBackoff:
    """Failed return-to-preferred probes on one type: no new probe there before `next_attempt`."""

    failures: int
    next_attempt: datetime


@dataclass(frozen=True)
class Attempt:
    """A past stay of one replica on a type (from status), used to cool a type down after leaving it."""

    machine_type: str
    outcome: str
    end: datetime | None


@dataclass(frozen=True)
class Observed:
    """The app's current state: Deployment sizes per type, pods, and what status remembers."""

    counts: Mapping[str, int] = field(default_factory=dict)  # Deployment spec.replicas per type
    surges: Mapping[str, int] = field(default_factory=dict)  # make-before-break replicas in flight
    pods: tuple[PodView, ...] = ()
    probes: Mapping[str, ProbeBackoff] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()


class Room:
    """Mutable what-if copy of free capacity per type; placing a replica consumes room first-fit."""

    def __init__(self, free_by_type: Mapping[str, Iterable[NodeFree]]):
        self._free = {t: list(nodes) for t, nodes in free_by_type.items()}

    def has_room(self, option: TypeOption) -> bool:
        return any(n.fits(option) for n in self._free.get(option.name, ()))

    def take(self, option: TypeOption) -> bool:
        nodes = self._free.get(option.name, [])
        for i, node in enumerate(nodes):
            if node.fits(option):
                nodes[i] = node.minus(option)
                return True
        return False
