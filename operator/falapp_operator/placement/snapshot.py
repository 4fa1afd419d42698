"""Immutable inputs of the placement engine: what the cluster looks like for one app at one instant.

The k8s layer builds these from watched pods/nodes and the app's Deployments; the engine never does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol


@dataclass(frozen=True)
class TypeOption:
    """A machine type that can host the app, with the requests one replica makes on it."""

    name: str  # MachineType object name, e.g. "gpu-h100"
    display: str  # the name users write, e.g. "GPU-H100"
    gpus: int  # per replica; 0 on CPU types
    cpu_milli: int  # per replica
    memory_bytes: int  # per replica
    autoscaled: bool = False  # nodes are added on demand: room whenever the autoscaler agrees


@dataclass(frozen=True)
class Policy:
    unschedulable_timeout: timedelta = timedelta(seconds=60)
    scale_up_timeout: timedelta = timedelta(minutes=15)
    startup_timeout: timedelta = timedelta(minutes=30)
    return_to_preferred: bool = True


@dataclass(frozen=True)
class PodView:
    """One replica's pod, reduced to what placement needs."""

    name: str
    machine_type: str
    created: datetime
    bound: bool = False  # spec.nodeName set
    bound_since: datetime | None = None  # PodScheduled=True lastTransitionTime
    failing: str = ""  # why a container cannot run (e.g. "CrashLoopBackOff: back-off 5m0s restarting ...")
    ready: bool = False
    terminating: bool = False
    unschedulable_since: datetime | None = None  # PodScheduled=False/Unschedulable lastTransitionTime
    scheduler_message: str = ""
    scale_up_coming: bool = False  # TriggeredScaleUp / Nominated / nominatedNodeName, not since cancelled
    gated: bool = False  # spec.schedulingGates: not for the scheduler yet (e.g. a queue admits it later)
    scale_up_refused: bool = False  # the autoscaler's latest word: no node is coming (NotTriggerScaleUp,
    # Karpenter's FailedScheduling)
    template: str = ""  # hash of the pod template it was created from
    current: bool = True  # runs its type's current template (False: an old revision, mid-rollout)
    revision: str = ""  # its ReplicaSet's pod-template-hash (a `kubectl rollout restart` changes only this)
    node_gone: bool = False  # bound to a node that was deleted: it runs nowhere (the pod garbage collector
    # removes such pods only after a while)

    @property
    def pending(self) -> bool:
        return not self.bound and not self.terminating

    def deadline(self, policy: Policy) -> datetime | None:
        """When this pending pod counts as stuck on its type (None: not unschedulable)."""
        if not self.pending or self.unschedulable_since is None:
            return None
        if self.scale_up_refused and not self.scale_up_coming:
            return self.unschedulable_since  # the autoscaler said no: nothing to wait for
        wait = policy.unschedulable_timeout + (policy.scale_up_timeout if self.scale_up_coming else timedelta())
        return self.unschedulable_since + wait


class Demand(Protocol):
    """Anything that asks for GPUs, cpu and memory (a type option, a pod's requests)."""

    @property
    def gpus(self) -> int: ...
    @property
    def cpu_milli(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...


@dataclass(frozen=True)
class NodeFree:
    """Unrequested resources on one Ready, schedulable node."""

    gpus: int
    cpu_milli: int
    memory_bytes: int

    def fits(self, option: TypeOption | Demand) -> bool:
        return (self.gpus >= option.gpus and self.cpu_milli >= option.cpu_milli
                and self.memory_bytes >= option.memory_bytes)

    def minus(self, option: TypeOption | Demand) -> NodeFree:
        return NodeFree(self.gpus - option.gpus, self.cpu_milli - option.cpu_milli,
                        self.memory_bytes - option.memory_bytes)


@dataclass(frozen=True)
class Surge:
    """The make-before-break replica in flight: an extra replica on `to_type`; when it is Ready, one
    replica leaves `from_type` (None: recorded by an older operator, the least preferred type).

    A cover is a second extra replica, on a type the app has no other replica on: started only while a
    move off a type mid-rollout is Ready but held (shrinking the type would take a Ready pod of the old
    revision), it lets that move finish with no Ready replica lost, and goes once the app has its Ready
    replicas without it."""

    to_type: str
    from_type: str | None = None
    since: datetime | None = None  # when it was started; pods created before then are not the probe
    ready_at: datetime | None = None  # when it was first seen Ready: its start-up is over (a later
    # readiness loss is the app's, not a failed start)
    cover: bool = False


@dataclass(frozen=True)
class ProbeRetry:
    """When a return-to-preferred probe on one type may be tried again: failed `failures` times in a row,
    no new probe there before `next_attempt` (status.probes, read with display names resolved)."""

    failures: int
    next_attempt: datetime


@dataclass(frozen=True)
class PastMove:
    """A move made earlier (an entry of status.attempts, its type by object name): `outcome` is the Move's
    name. Cools a type down after a fallback off it, and tells a probe's failure already recorded."""

    machine_type: str
    outcome: str
    end: datetime | None
    message: str = ""  # the scheduler's message, for fallbacks
    start: datetime | None = None
    room_seen: bool = False  # a fallback whose type showed room in the view (Attempt.room_seen)


@dataclass(frozen=True)
class Observed:
    """The app's current state: Deployment sizes per type, pods, and what status remembers."""

    counts: Mapping[str, int] = field(default_factory=dict)  # Deployment spec.replicas per type
    surge: Surge | None = None  # the make-before-break replica in flight, counted in `counts`
    pods: tuple[PodView, ...] = ()
    probes: Mapping[str, ProbeRetry] = field(default_factory=dict)
    attempts: tuple[PastMove, ...] = ()
    # types whose pods the controller manager cannot create (quota, admission), with its message
    uncreatable: Mapping[str, str] = field(default_factory=dict)
    # types with no Ready, schedulable node at all (a lost or cordoned pool), since when that was seen
    nodeless_since: Mapping[str, datetime] = field(default_factory=dict)
    # when this operator last raised each type's Deployment (unknown: made by an older version)
    grown_at: Mapping[str, datetime] = field(default_factory=dict)
    cover: Surge | None = None  # the second extra replica of a held move (see Surge), counted in `counts`


class FreeOnRead(Mapping[str, Sequence[NodeFree]]):
    """Free room per type, each type computed when first read: a reconcile often reads one of its
    candidate types, or none (a free list is per node of the type: hundreds of nodes)."""

    def __init__(self, types: Iterable[str], compute: Callable[[str], Sequence[NodeFree]]):
        self._types = list(dict.fromkeys(types))
        self._compute = compute
        self._read: dict[str, Sequence[NodeFree]] = {}

    def __getitem__(self, type_name: str) -> Sequence[NodeFree]:
        if type_name not in self._read:
            if type_name not in self._types:
                raise KeyError(type_name)
            self._read[type_name] = self._compute(type_name)
        return self._read[type_name]

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types  # (Mapping's own would compute it, and take its errors for "no")

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


class Room:
    """Mutable what-if copy of free capacity per type; placing a replica consumes room first-fit."""

    def __init__(self, free_by_type: Mapping[str, Iterable[NodeFree]]):
        # a type is read (and copied) when first asked about: the mapping may compute it only then
        self._source = free_by_type
        self._free: dict[str, list[NodeFree]] = {}

    def _nodes(self, type_name: str) -> list[NodeFree]:
        nodes = self._free.get(type_name)
        if nodes is None:
            # (not .get(): an error computing the type must not read as "no room there")
            nodes = self._free[type_name] = list(self._source[type_name]) if type_name in self._source else []
        return nodes

    def fits(self, option: TypeOption, on_demand: bool = True) -> bool:
        """Whether `take` would find room, without taking it."""
        return any(n.fits(option) for n in self._nodes(option.name)) or (on_demand and option.autoscaled)

    def take(self, option: TypeOption, on_demand: bool = True) -> bool:
        """Room for one replica: on a node (taken), or, with `on_demand`, on an autoscaled type (its
        autoscaler is asked)."""
        nodes = self._nodes(option.name)
        for i, node in enumerate(nodes):
            if node.fits(option):
                nodes[i] = node.minus(option)
                return True
        return on_demand and option.autoscaled


Shape = tuple[int, int, int]  # a demand's (gpus, cpu_milli, memory_bytes)


def shape_of(demand: Demand) -> Shape:
    return demand.gpus, demand.cpu_milli, demand.memory_bytes


def after_shapes(free: Sequence[NodeFree], shapes: Mapping[Shape, int]) -> list[NodeFree]:
    """Free room once the claims (other apps' pending replicas, counted by shape) are placed first-fit,
    largest first; a claim that fits nowhere takes nothing. Claims of one shape are placed together, as
    many on a node as fit: a mass fallback has hundreds of claims, on hundreds of nodes."""
    nodes = list(free)
    for (gpus, cpu, memory), count in sorted(shapes.items(), reverse=True):
        if count <= 0:
            continue
        if not (gpus or cpu or memory):
            continue  # takes nothing
        for i, node in enumerate(nodes):
            fit = count
            for have, want in ((node.gpus, gpus), (node.cpu_milli, cpu), (node.memory_bytes, memory)):
                fit = min(fit, have // want) if want else fit if have >= 0 else 0  # overcommitted: none fits
            if fit > 0:
                nodes[i] = NodeFree(node.gpus - fit * gpus, node.cpu_milli - fit * cpu,
                                    node.memory_bytes - fit * memory)
                count -= fit
                if not count:
                    break
    return nodes
