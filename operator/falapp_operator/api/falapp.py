"""FalApp: an app's image, its ordered machine types, GPU count, replicas and fallback behaviour."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from falapp_operator.api.common import (
    API_VERSION,
    DNS1123_SUBDOMAIN,
    GPU_MEMORY_MAX,
    GPU_MEMORY_MIN,
    GROUP,
    LABEL_VALUE,
    MACHINE_TYPE_NAME,
    MAX_MACHINE_TYPES,
    RESERVED_DOMAINS_TEXT,
    VERSION,
    ApiModel,
    AppToleration,
    GpuMemory,
    ObjectMeta,
    cel,
    check_map_keys,
    duration_type,
    list_map,
    map_key_rules,
    plain,
    x_validations,
)
from falapp_operator.api.crd import PrinterColumn, ResourceInfo
from falapp_operator.api.podspec import (
    ContainerPort,
    EnvFromSource,
    EnvVar,
    LocalObjectReference,
    Probe,
    ResourceOverrides,
)
from falapp_operator.api.status import FalAppStatus
from falapp_operator.api.units import parse_duration
from falapp_operator.api.volumes import Volume, VolumeMount

RESERVED_LABEL_PREFIX = f"{GROUP}/"

# --- names of the children ---------------------------------------------------------------------------
# A FalApp's children are its Service, named like the app, and its Deployments, named "<app><suffix>"
# where the suffix names the machine type. The app name is a label value on every child (<= 63) and,
# with ports, a Service name (a DNS-1035 label). The longest suffix a Deployment name may get:
CHILD_SUFFIX_MAX = 80
# A Deployment's ReplicaSets are named "<deployment>-<hash of up to 10>", a DNS-1123 subdomain (<= 253).
DEPLOYMENT_NAME_MAX = 253 - 11
APP_NAME_MAX = min(63, DEPLOYMENT_NAME_MAX - CHILD_SUFFIX_MAX)
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
SERVICE_NAME_MESSAGE = (
    "metadata.name must be a DNS-1035 label when spec.ports is set (it names the app's Service): "
    "lower-case letters, digits and '-', starting with a letter, no dots"
)
APP_NAME_MESSAGE = f"metadata.name must be at most {APP_NAME_MAX} characters (it is a label value on the app's pods)"

# podAnnotations: keys + values, counted together (Kubernetes allows 256Ki for all of an object's annotations)
ANNOTATIONS_MAX_SIZE = 64 * 1024
ANNOTATIONS_SIZE_MESSAGE = f"podAnnotations may hold at most {ANNOTATIONS_MAX_SIZE} characters (keys and values)"


def app_name_problem(name: str, spec: FalAppSpec) -> str | None:
    """Why the children of an app with this name and spec could not be created, or None."""
    if len(name) > APP_NAME_MAX:
        return APP_NAME_MESSAGE
    if spec.ports and not re.fullmatch(DNS1035_LABEL, name):
        return SERVICE_NAME_MESSAGE
    return None

MachineTypeName = Annotated[str, Field(min_length=1, max_length=63, pattern=MACHINE_TYPE_NAME)]
if TYPE_CHECKING:  # built types are opaque to a type checker: it sees the str that pydantic checks
    UnschedulableTimeout: TypeAlias = str
    ScaleUpTimeout: TypeAlias = str
    StartupTimeout: TypeAlias = str
else:
    UnschedulableTimeout = duration_type("1s", "24h")
    ScaleUpTimeout = duration_type("0s", "24h")
    StartupTimeout = duration_type("1s", "24h")


def _unique(items: Iterable[Any], key: Any, field: str) -> None:
    seen: set[Any] = set()
    for item in items:
        k = key(item)
        if k in seen:
            raise ValueError(f"{field}: duplicate entry {k!r}")
        seen.add(k)


class Fallback(ApiModel):
    """When a replica moves to the next machine type, and whether it comes back."""

    unschedulable_timeout: UnschedulableTimeout = Field(
        "60s",
        description="How long a replica may stay unschedulable on a type before it is placed on the next "
        "type (1s..24h, e.g. 60s, 2m30s).",
    )
    scale_up_timeout: ScaleUpTimeout = Field(
        "15m",
        description="Extra wait while a cluster autoscaler reports that a node is coming for the pending "
        "replica (0s..24h).",
    )
    startup_timeout: StartupTimeout = Field(
        "30m",
        description="How long a make-before-break replica (return, drain, or the move that gives a rollout "
        "room) may take from being scheduled to its first Ready before it counts as failed (1s..24h; never "
        "less than the startupProbe allows, up to a year); one whose container keeps crashing (CrashLoopBackOff "
        "after 3 restarts), names an invalid image or misses a Secret/ConfigMap fails at once.",
    )
    return_to_preferred: bool = Field(
        True,
        description="Move replicas back to a more preferred type when it has room again (make-before-break).",
    )

    @property
    def unschedulable_timeout_seconds(self) -> float:
        return parse_duration(self.unschedulable_timeout).total_seconds()

    @property
    def scale_up_timeout_seconds(self) -> float:
        return parse_duration(self.scale_up_timeout).total_seconds()

    @property
    def startup_timeout_seconds(self) -> float:
        return parse_duration(self.startup_timeout).total_seconds()


def _unique_machine_types(value: list[str]) -> list[str]:
    if len({v.lower() for v in value}) != len(value):
        raise ValueError("machineTypes must be unique (case-insensitive)")
    return value


def _check_labels(value: dict[str, str]) -> dict[str, str]:
    return check_map_keys(value, "podLabels")


def _check_annotations(value: dict[str, str]) -> dict[str, str]:
    check_map_keys(value, "podAnnotations")
    if sum(len(k) + len(v) for k, v in value.items()) > ANNOTATIONS_MAX_SIZE:
        raise ValueError(ANNOTATIONS_SIZE_MESSAGE)
    return value


MACHINE_TYPES_OR_GPU_MEMORY = "machineTypes is required unless gpuMemory is set"
SPLIT_NEEDS_MEMORY = "splitAcrossGpus needs gpuMemory (the VRAM one replica needs)"
NUM_GPUS_WITH_MEMORY = (
    "numGpus may only be 1 with gpuMemory (one GPU holds the model); set splitAcrossGpus: true to spread "
    "it over several GPUs"
)
NUM_GPUS_WITH_SPLIT = "numGpus may not be set with splitAcrossGpus: the GPU count is chosen per machine type"
# the Service's name of an unnamed port is port-<containerPort> (children.service): it must not collide.
# These, and the envFrom prefix of an app with GPUs, are judged by the operator (eligibility.spec_problem),
# not by the CRD: a rule added to the schema would refuse even the status writes of objects stored before it
PORT_NAMES_UNIQUE = "two ports may not have the same name"
UNNAMED_PORTS_SHARE_A_NUMBER = (
    "unnamed ports need different numbers (the Service calls an unnamed port port-<containerPort>): name "
    "ports that share a number, e.g. TCP and UDP 53"
)
PORT_NAMED_AFTER_ANOTHER = "is the Service's name for an unnamed port (port-<containerPort>): choose another"
# the GPU device plugin's NVIDIA_VISIBLE_DEVICES comes before the container's variables, so a key of that
# name in an unprefixed envFrom source would replace it (the GPU runtime then exposes every GPU of the
# node); pods without GPUs have it pinned to void by an env entry, which wins over envFrom
ENV_FROM_NEEDS_PREFIX = (
    "every envFrom entry of an app with GPUs needs a prefix (keys named NVIDIA_* would become variables the "
    "GPU runtime reads: NVIDIA_VISIBLE_DEVICES=all exposes every GPU of the node); numGpus: 0 says the app "
    "has none"
)

_SPEC_RULES = x_validations(
    cel(
        "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
        "self.volumes.exists(v, v.name == m.name))",
        "every volumeMounts[].name must name an entry of volumes",
        field_path=".volumeMounts",
    ),
    cel(
        "!has(self.livenessProbe) || !has(self.livenessProbe.successThreshold) || "
        "self.livenessProbe.successThreshold == 1",
        "livenessProbe.successThreshold must be 1",
        field_path=".livenessProbe.successThreshold",
    ),
    cel(
        "!has(self.startupProbe) || !has(self.startupProbe.successThreshold) || "
        "self.startupProbe.successThreshold == 1",
        "startupProbe.successThreshold must be 1",
        field_path=".startupProbe.successThreshold",
    ),
    cel(
        "!has(self.requiresNvenc) || !self.requiresNvenc || !has(self.numGpus) || self.numGpus > 0",
        "requiresNvenc needs a GPU: numGpus may not be 0",
        field_path=".numGpus",
    ),
    cel("has(self.machineTypes) || has(self.gpuMemory)", MACHINE_TYPES_OR_GPU_MEMORY, field_path=".machineTypes"),
    cel("!has(self.splitAcrossGpus) || !self.splitAcrossGpus || has(self.gpuMemory)", SPLIT_NEEDS_MEMORY,
        field_path=".splitAcrossGpus"),
    cel("!has(self.gpuMemory) || !has(self.numGpus) || self.numGpus == 1", NUM_GPUS_WITH_MEMORY,
        field_path=".numGpus"),
    cel("!has(self.splitAcrossGpus) || !self.splitAcrossGpus || !has(self.numGpus)", NUM_GPUS_WITH_SPLIT,
        field_path=".numGpus"),
)


class FalAppSpec(ApiModel):
    """Desired state of a FalApp."""

    model_config = ConfigDict(json_schema_extra=_SPEC_RULES)

    image: str = Field(min_length=1, max_length=1024, description="Container image of the app.")
    machine_types: Annotated[list[MachineTypeName], AfterValidator(_unique_machine_types)] | None = Field(
        None,
        min_length=1,
        max_length=MAX_MACHINE_TYPES,
        description="Machine types the app may run on, most preferred first (1..8, unique, "
        "case-insensitive), e.g. [GPU-H100, GPU-A100]. Each names a MachineType by its name or displayName. "
        "Required unless gpuMemory is set; with gpuMemory the list keeps its order and every listed type "
        "must fit the model.",
        json_schema_extra=x_validations(
            cel(
                "self.all(x, self.filter(y, y.lowerAscii() == x.lowerAscii()).size() == 1)",
                "machineTypes must be unique (case-insensitive)",
            )
        ),
    )
    num_gpus: int | None = Field(
        None,
        ge=0,
        le=16,
        description="GPUs per replica. Absent means 1 on GPU types and 0 on CPU types; "
        "0 means CPU types only.",
    )
    gpu_memory: GpuMemory | None = Field(
        None,
        description=f"VRAM one replica needs, e.g. 60Gi ({GPU_MEMORY_MIN}..{GPU_MEMORY_MAX}). Without "
        "machineTypes the candidates are the GPU machine types whose VRAM fits it, smallest first (ties: "
        "spec.price of the MachineType, then name; at most 8). Without splitAcrossGpus the model must fit "
        "one GPU and a replica gets one GPU (numGpus may be absent or 1).",
    )
    split_across_gpus: bool | None = Field(
        None,
        description="With gpuMemory: the model may be spread over several GPUs of one type. Per type a "
        "replica gets the smallest of 1, 2, 4, 8 or 16 GPUs (at most the type's gpu.maxGpusPerReplica) "
        "whose VRAM together fits gpuMemory; candidates are ordered by that total VRAM, then fewer GPUs. "
        "numGpus may not be set.",
    )
    replicas: int = Field(1, ge=0, le=1000, description="Wanted number of replicas (scale subresource).")
    requires_nvenc: bool = Field(
        False, description="Only use machine types with hardware video encoders (NVENC)."
    )
    fallback: Fallback = Field(
        default_factory=Fallback,
        description="Fallback timing between machine types.",
        json_schema_extra={"default": {}},
    )
    command: list[str] = Field(
        default_factory=list, max_length=256, description="Entrypoint; replaces the image's ENTRYPOINT."
    )
    args: list[str] = Field(
        default_factory=list, max_length=1024, description="Arguments; replace the image's CMD."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=256,
        description="Environment variables of the app container.",
        json_schema_extra=list_map("name"),
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list, max_length=64, description="ConfigMaps and Secrets to expose as variables."
    )
    ports: list[ContainerPort] = Field(
        default_factory=list,
        max_length=64,
        description="Ports the app listens on. The Service calls an unnamed one port-<containerPort>, so "
        "names are unique, unnamed ports have different numbers, and no port is named after an unnamed one "
        "(the operator stalls the app as InvalidSpec otherwise).",
        json_schema_extra=list_map("containerPort", "protocol"),
    )
    readiness_probe: Probe | None = Field(None, description="When a replica is ready to serve.")
    liveness_probe: Probe | None = Field(None, description="When a replica must be restarted.")
    startup_probe: Probe | None = Field(None, description="Holds the other probes until the app has started.")
    resources: ResourceOverrides | None = Field(
        None, description="cpu/memory requests per replica, replacing the machine type's."
    )
    volumes: list[Volume] = Field(
        default_factory=list,
        max_length=64,
        description="Volumes: configMap, secret, persistentVolumeClaim or emptyDir.",
        json_schema_extra=list_map("name"),
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list,
        max_length=64,
        description="Where volumes are mounted in the app container.",
        json_schema_extra=list_map("mountPath"),
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=16,
        description="Secrets used to pull the image.",
        json_schema_extra=list_map("name"),
    )
    service_account_name: str | None = Field(
        None, max_length=253, pattern=DNS1123_SUBDOMAIN, description="ServiceAccount the pods run as."
    )
    pod_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
        AfterValidator(_check_labels),
    ] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra labels on the pods. Keys are qualified names (example.com/team); keys under "
        f"{RESERVED_DOMAINS_TEXT} are refused, except app.kubernetes.io/.",
        json_schema_extra=x_validations(*map_key_rules("podLabels")),
    )
    pod_annotations: Annotated[dict[str, str], AfterValidator(_check_annotations)] = Field(
        default_factory=dict,
        max_length=128,
        description="Extra annotations on the pods. Keys are qualified names; keys under "
        f"{RESERVED_DOMAINS_TEXT} are refused (they change how pods are evicted, confined or scheduled), "
        f"except app.kubernetes.io/. Keys and values together at most {ANNOTATIONS_MAX_SIZE} characters.",
        json_schema_extra=x_validations(
            *map_key_rules("podAnnotations"),
            cel(f"self.map(k, size(k) + size(self[k])).sum() <= {ANNOTATIONS_MAX_SIZE}", ANNOTATIONS_SIZE_MESSAGE),
        ),
    )
    tolerations: list[AppToleration] = Field(
        default_factory=list,
        max_length=64,
        description="Extra tolerations, added to the machine type's. Each names a taint key; keys under "
        f"{RESERVED_DOMAINS_TEXT}, and keys a MachineType tolerates, are the machine types' own.",
    )
    automount_service_account_token: bool = Field(
        False,
        strict=True,
        description="Mount a token of the pods' ServiceAccount into the app container. Off unless asked for.",
    )
    priority_class_name: str | None = Field(
        None, max_length=253, pattern=DNS1123_SUBDOMAIN, description="PriorityClass of the pods."
    )

    @model_validator(mode="after")
    def _rules(self) -> FalAppSpec:
        _unique(self.env, lambda e: e.name, "env")
        _unique(self.ports, lambda p: (p.container_port, p.protocol), "ports")
        _unique(self.volumes, lambda v: v.name, "volumes")
        _unique(self.volume_mounts, lambda m: m.mount_path, "volumeMounts")
        _unique(self.image_pull_secrets, lambda s: s.name, "imagePullSecrets")
        declared = {v.name for v in self.volumes}
        for mount in self.volume_mounts:
            if mount.name not in declared:
                raise ValueError("every volumeMounts[].name must name an entry of volumes")
        for name, probe in (("livenessProbe", self.liveness_probe), ("startupProbe", self.startup_probe)):
            if probe is not None and probe.success_threshold not in (None, 1):
                raise ValueError(f"{name}.successThreshold must be 1")
        if self.requires_nvenc and self.num_gpus == 0:
            raise ValueError("requiresNvenc needs a GPU: numGpus may not be 0")
        if self.machine_types is None and self.gpu_memory is None:
            raise ValueError(MACHINE_TYPES_OR_GPU_MEMORY)
        if self.split_across_gpus and self.gpu_memory is None:
            raise ValueError(SPLIT_NEEDS_MEMORY)
        if self.gpu_memory is not None and self.num_gpus not in (None, 1):
            raise ValueError(NUM_GPUS_WITH_MEMORY)
        if self.split_across_gpus and self.num_gpus is not None:
            raise ValueError(NUM_GPUS_WITH_SPLIT)
        return self


class FalApp(BaseModel):
    """A whole FalApp object as read from the API."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["fal.ai/v1alpha1"] = Field(API_VERSION, description="fal.ai/v1alpha1")
    kind: Literal["FalApp"] = Field("FalApp", description="FalApp")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: FalAppSpec = Field(description="Desired state.")
    status: FalAppStatus = Field(default_factory=FalAppStatus, description="Observed state.")

    @model_validator(mode="after")
    def _name(self) -> FalApp:
        problem = app_name_problem(self.metadata.name, self.spec)
        if problem:
            raise ValueError(problem)
        return self

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> FalApp:
        """Validate an object body (a dict or a kopf Body)."""
        return cls.model_validate(plain(body))


FALAPP = ResourceInfo(
    group=GROUP,
    version=VERSION,
    kind="FalApp",
    plural="falapps",
    singular="falapp",
    scope="Namespaced",
    description="FalApp runs replicas of an app image on machine types in order of preference, with "
    "per-replica fallback to the next type when a type has no room.",
    spec_model=FalAppSpec,
    status_model=FalAppStatus,
    short_names=("fa",),
    categories=("fal",),
    printer_columns=(
        PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', "Ready condition."),
        PrinterColumn("Machines", "string", ".status.machines", "Replicas per machine type."),
        PrinterColumn("Replicas", "integer", ".spec.replicas", "Wanted replicas."),
        PrinterColumn("Available", "integer", ".status.readyReplicas", "Ready replicas."),
        PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        PrinterColumn(
            "Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', "Ready reason.", priority=1
        ),
        PrinterColumn(
            "Candidates", "string", ".status.candidates", "Machine types in order, GPUs x VRAM per replica.",
            priority=1,
        ),
    ),
    scale=(".spec.replicas", ".status.replicas", ".status.selector"),
    metadata_schema={
        "properties": {
            "name": {
                "type": "string",
                "maxLength": APP_NAME_MAX,
                "description": f"At most {APP_NAME_MAX} characters; a DNS-1035 label (no dots, starts with a "
                "letter) when spec.ports is set, since it names the Service.",
            }
        }
    },
    root_rules=(
        cel(
            "!has(self.spec.ports) || size(self.spec.ports) == 0 || "
            f"self.metadata.name.matches('{DNS1035_LABEL}')",
            SERVICE_NAME_MESSAGE,
            field_path=".metadata.name",
        ),
    ),
)
