"""MachineType: one machine type users can name in a FalApp, and how to find and size its nodes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from falapp_operator.api.common import (
    API_VERSION,
    DNS1123_LABEL,
    GROUP,
    MACHINE_TYPE_NAME,
    QUALIFIED_NAME,
    VERSION,
    ApiModel,
    ObjectMeta,
    Quantity,
    StatusModel,
    Timestamp,
    Toleration,
    cel,
    plain,
    x_validations,
)
from falapp_operator.api.crd import PrinterColumn, ResourceInfo
from falapp_operator.api.nodes import LabelSelector, LabelValue, NodeSelectorRequirement, Taint, tolerated

NVIDIA_GPU = "nvidia.com/gpu"


class GpuSpec(ApiModel):
    """The GPUs of a machine type."""

    resource_name: str = Field(
        NVIDIA_GPU,
        max_length=253,
        pattern=QUALIFIED_NAME,
        description="Extended resource a replica requests, one per GPU.",
    )
    max_gpus_per_replica: int = Field(ge=1, le=16, description="Most GPUs one replica may use (numGpus).")
    vram: Quantity | None = Field(
        None,
        description="Memory of one GPU, e.g. 80Gi. FalApps choosing by spec.gpuMemory only consider types "
        "that declare it.",
    )
    nvenc_engines: int = Field(0, ge=0, le=64, description="Hardware video encoders (NVENC) per GPU.")
    nvdec_engines: int = Field(0, ge=0, le=64, description="Hardware video decoders (NVDEC) per GPU.")


class MachineResources(ApiModel):
    """cpu/memory requests: per GPU on GPU types, per replica on CPU types."""

    cpu: Quantity = Field(description="CPU request, e.g. 12 or 500m.")
    memory: Quantity = Field(description="Memory request, e.g. 112Gi.")


_MT_RULES = x_validations(
    cel(
        "!has(self.nvencNodeSelector) || size(self.nvencNodeSelector) == 0 || "
        "(has(self.gpu) && has(self.gpu.nvencEngines) && self.gpu.nvencEngines > 0)",
        "nvencNodeSelector is only allowed when gpu.nvencEngines > 0",
        field_path=".nvencNodeSelector",
    ),
)


class MachineTypeSpec(ApiModel):
    """A machine type: GPUs, requests, how to find its nodes."""

    model_config = ConfigDict(json_schema_extra=_MT_RULES)

    display_name: str | None = Field(
        None,
        max_length=63,
        pattern=MACHINE_TYPE_NAME,
        description="The name users write in spec.machineTypes, e.g. GPU-H100 (matched case-insensitively). "
        "Defaults to metadata.name upper-cased.",
    )
    gpu: GpuSpec | None = Field(None, description="GPUs of the type; absent for CPU types.")
    resources: MachineResources = Field(
        description="cpu/memory requests: per GPU on GPU types, per replica on CPU types."
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Node labels the type's nodes carry (all must match)"
    )
    node_affinity: list[NodeSelectorRequirement] = Field(
        default_factory=list,
        max_length=16,
        description="Node label requirements, all of which must hold; use operator In with several values "
        "to accept any of several labels.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations the type's pods get."
    )
    nvenc_node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Extra node labels required only for apps with requiresNvenc "
        "(needs gpu.nvencEngines > 0).",
    )

    price: Quantity | None = Field(
        None,
        description="Price of one GPU (per replica on CPU types), in any unit used across the catalogue, "
        "e.g. 2.49. When FalApps choose by spec.gpuMemory it breaks ties between types of equal VRAM: the "
        "cheaper first, types without a price after priced ones.",
    )
    autoscaled: bool | None = Field(
        None,
        description="Nodes of the type are added on demand (cluster-autoscaler, a Karpenter NodePool): the type "
        "is tried in preference order even when no node has room, and the autoscaler's answer decides (a node "
        "announced: wait up to scaleUpTimeout; refused: the next type at once). Absent: a GPU type whose node "
        "selection matches (and tolerations allow) a Karpenter NodePool's template counts as autoscaled "
        "(status.autoscaled); false: never.",
    )
    namespace_selector: LabelSelector | None = Field(
        None,
        description="Namespaces whose FalApps may use the type (matchLabels/matchExpressions on the "
        "namespace's labels, e.g. kubernetes.io/metadata.name). Absent: every namespace. A FalApp listing "
        "a type its namespace may not use is Stalled with reason InvalidSpec.",
    )

    @model_validator(mode="after")
    def _nvenc(self) -> MachineTypeSpec:
        if self.nvenc_node_selector and (self.gpu is None or self.gpu.nvenc_engines == 0):
            raise ValueError("nvencNodeSelector is only allowed when gpu.nvencEngines > 0")
        return self

    @property
    def is_gpu(self) -> bool:
        return self.gpu is not None

    @property
    def nvenc_capable(self) -> bool:
        return self.gpu is not None and self.gpu.nvenc_engines > 0

    @property
    def gpu_resource(self) -> str | None:
        """The extended resource its replicas request GPUs as (None: a CPU type)."""
        return self.gpu.resource_name if self.gpu is not None else None

    def available_to(self, namespace_labels: Mapping[str, str] | None) -> bool:
        """Whether FalApps of a namespace with these labels may use the type. Unknown labels (None) pass
        only a type without a selector, or with one that matches every namespace."""
        selector = self.namespace_selector
        if selector is None or selector.matches_everything:
            return True
        return namespace_labels is not None and selector.matches(namespace_labels)

    def matches_node(self, labels: Mapping[str, str], taints: Iterable[Taint] = (), nvenc: bool = False) -> bool:
        """Whether the type's pods can land on a node with these labels and taints, as its Deployments
        select nodes: nodeSelector (with nvencNodeSelector when `nvenc`), nodeAffinity, and each of the
        node's NoSchedule/NoExecute taints tolerated by the type's tolerations."""
        selectors = [self.node_selector, self.nvenc_node_selector if nvenc else {}]
        if any(labels.get(k) != v for selector in selectors for k, v in selector.items()):
            return False
        return (all(req.matches(labels) for req in self.node_affinity)
                and all(tolerated(taint, self.tolerations) for taint in taints))


class MachineTypeStatus(StatusModel):
    """The operator's view of the type's capacity."""

    nodes: int | None = Field(None, ge=0, description="Ready nodes that match the type.")
    allocatable_gpus: int | None = Field(None, ge=0, description="GPUs allocatable on those nodes.")
    free_gpus: int | None = Field(None, ge=0, description="GPUs not requested by scheduled pods.")
    placed_replicas: int | None = Field(None, ge=0, description="FalApp replicas bound to the type's nodes.")
    pending_replicas: int | None = Field(None, ge=0, description="FalApp replicas waiting for the type.")
    autoscaled: bool | None = Field(
        None, description="Nodes are added on demand: spec.autoscaled, or a Karpenter NodePool makes them."
    )
    observed_at: Timestamp | None = Field(None, description="When these numbers were computed.")


def display_name_for(name: str) -> str:
    """Default displayName of a MachineType: its object name upper-cased (`gpu-h100` -> `GPU-H100`)."""
    return name.upper()


class MachineType(BaseModel):
    """A whole MachineType object as read from the API."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["fal.ai/v1alpha1"] = Field(API_VERSION, description="fal.ai/v1alpha1")
    kind: Literal["MachineType"] = Field("MachineType", description="MachineType")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: MachineTypeSpec = Field(description="The machine type.")
    status: MachineTypeStatus = Field(default_factory=MachineTypeStatus, description="Observed capacity.")

    @model_validator(mode="after")
    def _name(self) -> MachineType:
        name = self.metadata.name
        if len(name) > 63 or not re.fullmatch(DNS1123_LABEL, name):
            raise ValueError(f"metadata.name {name!r} must be a DNS-1123 label, e.g. gpu-h100")
        return self

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MachineType:
        """Validate an object body (a dict or a kopf Body)."""
        return cls.model_validate(plain(body))

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def display_name(self) -> str:
        return self.spec.display_name or display_name_for(self.metadata.name)

    @property
    def is_gpu(self) -> bool:
        return self.spec.is_gpu

    @property
    def nvenc_capable(self) -> bool:
        return self.spec.nvenc_capable

    def matches(self, name: str) -> bool:
        """Whether `name` (as written in a FalApp) is this type's object name or displayName, any case."""
        wanted = name.lower()
        return wanted in (self.metadata.name.lower(), self.display_name.lower())

    def to_wire(self) -> dict[str, Any]:
        """The object as JSON-ready dict (no status, no empty collections)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"name": self.metadata.name},
            "spec": _drop_empty(self.spec.to_wire()),
        }


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def find_machine_type(catalog: Iterable[MachineType], name: str) -> MachineType | None:
    """The first MachineType `name` refers to (case-insensitive), or None."""
    for machine_type in catalog:
        if machine_type.matches(name):
            return machine_type
    return None


MACHINETYPE = ResourceInfo(
    group=GROUP,
    version=VERSION,
    kind="MachineType",
    plural="machinetypes",
    singular="machinetype",
    scope="Cluster",
    description="MachineType is one machine type FalApps can name: its GPUs, cpu/memory requests and how "
    "to find its nodes. The object name is DNS-1123 (gpu-h100); FalApps may write it in any case or use "
    "spec.displayName (GPU-H100).",
    spec_model=MachineTypeSpec,
    status_model=MachineTypeStatus,
    short_names=("mt",),
    categories=("fal",),
    printer_columns=(
        PrinterColumn("Display", "string", ".spec.displayName", "Name users write."),
        PrinterColumn("VRAM", "string", ".spec.gpu.vram", "Memory per GPU."),
        PrinterColumn("GPUs-Per-Replica", "integer", ".spec.gpu.maxGpusPerReplica", "Most GPUs per replica."),
        PrinterColumn("Nodes", "integer", ".status.nodes", "Ready matching nodes."),
        PrinterColumn("Free-GPUs", "integer", ".status.freeGpus", "Unrequested GPUs."),
        PrinterColumn("Placed", "integer", ".status.placedReplicas", "Replicas on the type."),
        PrinterColumn("Pending", "integer", ".status.pendingReplicas", "Replicas waiting for the type."),
        PrinterColumn("Autoscaled", "boolean", ".status.autoscaled", "Nodes added on demand."),
        PrinterColumn("NVENC", "integer", ".spec.gpu.nvencEngines", "Video encoders per GPU.", priority=1),
        PrinterColumn("Price", "string", ".spec.price", "Price per GPU (ties between equal VRAM).", priority=1),
        PrinterColumn(
            "Namespaces",
            "string",
            ".spec.namespaceSelector",
            "Which namespaces may use the type (empty: all).",
            priority=1,
        ),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
    ),
    metadata_schema={
        "properties": {
            "name": {
                "type": "string",
                "maxLength": 63,
                "pattern": DNS1123_LABEL,
                "description": "A DNS-1123 label, e.g. gpu-h100.",
            }
        }
    },
)
