"""The machine-type catalogue as the operator holds it: MachineTypes as declared, the Karpenter NodePools
whose nodes make a type autoscaled, what placement reads (the catalogue with autoscaled types marked, and
the pod templates made from it), and each type's status as last written or seen."""

from __future__ import annotations

import logging
from typing import Literal, TypeAlias

from pydantic import ValidationError

from falapp_operator.api import JsonMapping, JsonObject, MachineType, MachineTypeStatus
from falapp_operator.k8s.cache import PoolNodes, nodepool_nodes
from falapp_operator.k8s.store import version
from falapp_operator.reconcile import children

logger = logging.getLogger("falapp_operator")
# what a MachineType's event changed: nothing read here; its status only (written by someone else); its
# labels, annotations or generation (what placement reads of it may differ, its nodes are the same); its
# spec, or the type came or went (its nodes may be other ones)
TypeChange: TypeAlias = Literal["none", "status", "metadata", "spec"]


class MachineTypes:
    """What the operator knows of the catalogue, fed by the MachineType and NodePool watches."""

    def __init__(self) -> None:
        self.declared: dict[str, MachineType] = {}  # valid ones, as declared
        self.nodepools: dict[str, PoolNodes] = {}  # Karpenter NodePool -> what the nodes it makes carry
        self.templates = children.TemplateCache()  # pod templates, valid while the catalogue stays
        # what placement reads of each MachineType (valid or not), as last seen
        self.seen: dict[str, tuple[object, ...]] = {}
        self._placement: list[MachineType] | None = None  # with autoscaled types marked
        self.status: dict[str, MachineTypeStatus] = {}  # as last written, or seen written by someone else
        self._written: dict[str, int] = {}  # resourceVersion of our last status write per type

    def known(self, name: str) -> bool:
        """A machine type seen (valid or not; listed before any child is)."""
        return name in self.seen

    def placement(self) -> list[MachineType]:
        """The catalogue placement uses: a type whose nodes a Karpenter NodePool makes counts as
        autoscaled (as if its spec said so)."""
        if self._placement is None:
            self._placement = [
                m if not self.detected_autoscaled(m) else m.model_copy(
                    update={"spec": m.spec.model_copy(update={"autoscaled": True})})
                for m in self.declared.values()]
        return self._placement

    def detected_autoscaled(self, machine_type: MachineType) -> bool:
        """Unless declared either way, a GPU type whose nodes a NodePool makes (a CPU type would match
        every untainted pool: only a declaration makes it autoscaled)."""
        return (machine_type.spec.autoscaled is None and machine_type.spec.is_gpu
                and any(pool.of_type(machine_type) for pool in self.nodepools.values()))

    def _changed(self) -> None:
        """The placement catalogue is built again when next asked for, and the templates made from it."""
        self._placement = None
        self.templates.clear()

    def observe_nodepool(self, body: JsonMapping, deleted: bool) -> bool:
        """A Karpenter NodePool appeared, changed or went; whether the autoscaled types are other ones now."""
        name = body["metadata"]["name"]
        nodes = None if deleted else nodepool_nodes(body)
        if nodes == self.nodepools.get(name):
            return False  # its status only (Karpenter writes it as nodes come and go): nothing read here
        before = {m.metadata.name for m in self.placement() if m.spec.autoscaled}
        if nodes is None:
            self.nodepools.pop(name, None)
        else:
            self.nodepools[name] = nodes
        self._changed()
        return {m.metadata.name for m in self.placement() if m.spec.autoscaled} != before

    def observe(self, body: JsonMapping, deleted: bool) -> TypeChange:
        """A MachineType appeared, changed or went: kept as declared (an invalid one is logged and left
        out); what changed, for the controller to wake what that needs."""
        meta = body["metadata"]
        name = meta["name"]
        seen = (meta.get("generation"), body.get("spec"), meta.get("labels"), meta.get("annotations"))
        if not deleted and self.seen.get(name) == seen:
            # only its status changed: nothing placement reads (nor, for a type refused as invalid, a
            # reason to say so again). Our own status write coming back (or an older one) changes
            # nothing; anyone else's is corrected by the next status pass
            if name in self.declared and (version(body) or 0) > self._written.get(name, 0):
                self.status[name] = MachineTypeStatus.model_validate(body.get("status") or {})
                return "status"
            return "none"
        previous = self.seen.get(name)
        self.seen[name] = seen
        self._changed()
        self.status.pop(name, None)
        if deleted:
            self.declared.pop(name, None)
            self.seen.pop(name, None)
            self._written.pop(name, None)
        else:
            try:
                self.declared[name] = MachineType.model_validate(body)
            except ValidationError as e:
                logger.warning("MachineType %s is invalid and ignored: %s", name, e)
                self.declared.pop(name, None)
        # (a label or annotation, e.g. a GitOps tool's, changes none of its nodes)
        return "spec" if deleted or previous is None or previous[1] != body.get("spec") else "metadata"

    def status_differs(self, machine_type: MachineType, status: MachineTypeStatus) -> bool:
        """The numbers, not when they were taken: an unchanged view is not written again."""
        current = self.status.get(machine_type.metadata.name, machine_type.status)
        return current.model_dump(exclude={"observed_at"}) != status.model_dump(exclude={"observed_at"})

    def status_written(self, name: str, status: MachineTypeStatus, answer: JsonObject | None) -> None:
        self.status[name] = status
        self._written[name] = version(answer) or 0  # its echo changes nothing
