"""Since when each machine type has had no Ready, schedulable node: the lost-pool rule's clock.

A type's time starts when its last node goes (for NVENC apps: its last NVENC node; watched for fixed-size
types only: an autoscaled type without nodes is as it should be), or when a reconcile first sees it
without one, whichever is first; it ends with the first schedulable node of the type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from falapp_operator.api import FalAppSpec, MachineType
from falapp_operator.k8s.cache import ClusterCache, NodeInfo
from falapp_operator.placement.eligibility import candidate_types


class NodelessTimes:
    def __init__(self, cache: ClusterCache, now: Callable[[], datetime],
                 since: dict[tuple[str, bool], datetime] | None = None):
        """`now`: the API server's time (ServerClock.now); `since`: the times kept so far."""
        self.cache, self.now = cache, now
        self.since = {} if since is None else since  # (type, NVENC) -> since when (as first seen)

    def lost(self, old: NodeInfo, node: NodeInfo | None, catalogue: Iterable[MachineType]) -> set[str]:
        """The node was a schedulable one and is no more (deleted, cordoned, NotReady, tainted or
        relabelled away; `node`: as it is now, None when deleted): the fixed-size types of `catalogue`
        (the placement catalogue: autoscaled types marked) it was the last node of, whose time starts now."""
        lost = set()
        for machine_type in catalogue:
            if machine_type.spec.autoscaled:  # no node is its normal state: the lost-pool rule skips it
                continue
            for nvenc in (False, True) if machine_type.spec.nvenc_node_selector else (False,):
                if not machine_type.spec.matches_node(old.labels, old.taints, nvenc):
                    break  # an NVENC node is one of the type's nodes first
                if node is not None and node.schedulable and machine_type.spec.matches_node(node.labels, node.taints,
                                                                                            nvenc):
                    continue
                if not self.cache.any_schedulable(machine_type, nvenc):
                    self.since.setdefault((machine_type.metadata.name, nvenc), self.now())
                    lost.add(machine_type.metadata.name)
        return lost

    def node_back(self, node: NodeInfo, catalogue: Mapping[str, MachineType]) -> None:
        """A schedulable node of a type seen without any: that time is over, whether or not an app of
        the type is reconciled before the type is lost again (a stale time would skip the timeout)."""
        for key in list(self.since):
            machine_type = catalogue.get(key[0])
            if machine_type is None or machine_type.spec.matches_node(node.labels, node.taints, key[1]):
                del self.since[key]

    def forget_type(self, name: str) -> None:
        """The type's spec changed or it went: its nodes may be other ones now."""
        for key in [k for k in self.since if k[0] == name]:
            del self.since[key]

    def observe_for(self, spec: FalAppSpec, catalogue: Iterable[MachineType]) -> dict[str, datetime]:
        """The app's candidate types without any Ready, schedulable node, and since when (as first seen so:
        a type first seen so now starts its time, one with a node again ends it)."""
        out = {}
        for machine_type in candidate_types(spec, catalogue):
            key = (machine_type.metadata.name, spec.requires_nvenc)
            if self.cache.any_schedulable(machine_type, spec.requires_nvenc, index=True):
                self.since.pop(key, None)
            else:  # first seen now: later than the last node went, never earlier
                out[key[0]] = self.since.setdefault(key, self.now())
        return out
