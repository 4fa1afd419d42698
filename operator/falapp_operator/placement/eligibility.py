"""Which machine types can host an app, judged against the catalogue (pure).

The candidates are the app's listed `machineTypes`, in their order, or, with `gpuMemory` and no list,
the GPU types whose VRAM fits the model: smallest (total) VRAM first, then fewer GPUs, then the cheaper
(`spec.price`), then by name; at most MAX_MACHINE_TYPES of them. `gpuMemory` also sets the GPUs a replica
gets on each type: one (the model must fit one GPU), or with `splitAcrossGpus` the smallest of
SPLIT_GPU_COUNTS (up to the type's maxGpusPerReplica) whose VRAM together holds it.

Besides what each type can host, the catalogue decides three things a schema cannot:
- entitlements: a listed type whose `namespaceSelector` does not select the app's namespace makes the
  spec invalid (labels not known yet count as not selected, unless the type has no selector);
- taints the machine types own: an app may not tolerate a taint key any MachineType tolerates (that
  is how a type reaches its dedicated nodes; an app tolerating it would land on them through any type);
- sizes: a replica's cpu (in millicores) and memory (in bytes) must fit the int64 Kubernetes keeps them in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from falapp_operator.api import FalAppSpec, MachineType
from falapp_operator.api.common import MAX_MACHINE_TYPES
from falapp_operator.api.falapp import (
    ENV_FROM_NEEDS_PREFIX,
    PORT_NAMED_AFTER_ANOTHER,
    PORT_NAMES_UNIQUE,
    UNNAMED_PORTS_SHARE_A_NUMBER,
)
from falapp_operator.api.machinetype import GpuSpec, find_machine_type
from falapp_operator.api.units import cpu_millis, memory_bytes, parse_quantity
from falapp_operator.placement.snapshot import TypeOption

# GPUs a replica may get when its model is split across GPUs: powers of two, as tensor parallelism
# divides a model's attention heads and layers evenly
SPLIT_GPU_COUNTS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Resolution:
    options: list[TypeOption] = field(default_factory=list)  # hostable types, in preference order
    types: dict[str, MachineType] = field(default_factory=dict)  # by object name
    skipped: dict[str, str] = field(default_factory=dict)  # listed type -> why it cannot host the app
    problem: str | None = None  # the spec cannot run anywhere (InvalidSpec)


def gpus_per_replica(spec: FalAppSpec, machine_type: MachineType) -> int:
    """GPUs a replica asks for on the type: numGpus (absent: 1), or with gpuMemory what fits (0: none does)."""
    if machine_type.spec.gpu is None:
        return 0
    if spec.gpu_memory is not None:
        return gpus_to_fit(spec, machine_type) or 0
    return 1 if spec.num_gpus is None else spec.num_gpus


def vram_of(machine_type: MachineType) -> int | None:
    """Bytes of VRAM of one GPU of the type, None when it declares none (or is a CPU type)."""
    gpu = machine_type.spec.gpu
    return memory_bytes(gpu.vram) if gpu is not None and gpu.vram is not None else None


def gpus_to_fit(spec: FalAppSpec, machine_type: MachineType) -> int | None:
    """The fewest GPUs of the type whose VRAM holds spec.gpuMemory, or None when none allowed does."""
    vram, gpu = vram_of(machine_type), machine_type.spec.gpu
    if vram is None or gpu is None or spec.gpu_memory is None:
        return None
    need = memory_bytes(spec.gpu_memory)
    counts = SPLIT_GPU_COUNTS if spec.split_across_gpus else (1,)
    return next((n for n in counts if n <= gpu.max_gpus_per_replica and n * vram >= need), None)


def why_not_fit(spec: FalAppSpec, machine_type: MachineType) -> str | None:
    """Why the type's GPUs cannot hold spec.gpuMemory, or None."""
    name, gpu = machine_type.display_name, machine_type.spec.gpu
    if gpu is None:
        return f"{name} is a CPU type but gpuMemory is {spec.gpu_memory}"
    if gpu.vram is None:
        return f"{name} declares no gpu.vram, so gpuMemory {spec.gpu_memory} cannot be checked"
    if gpus_to_fit(spec, machine_type) is not None:
        return None
    if not spec.split_across_gpus:
        return f"{name} has {gpu.vram} per GPU, less than gpuMemory {spec.gpu_memory}"
    most = max(n for n in SPLIT_GPU_COUNTS if n <= gpu.max_gpus_per_replica)
    return (f"{name} holds at most {most} x {gpu.vram} per replica (gpu.maxGpusPerReplica "
            f"{gpu.max_gpus_per_replica}), less than gpuMemory {spec.gpu_memory}")


def _price_key(machine_type: MachineType, gpus: int) -> tuple[int, Decimal]:
    """Sort key of a replica's price on the type: priced types (cheaper first) before unpriced ones."""
    price = machine_type.spec.price
    return (0, parse_quantity(price) * gpus) if price is not None else (1, Decimal(0))


def by_vram(spec: FalAppSpec, catalogue: Iterable[MachineType]) -> tuple[list[tuple[MachineType, int]], dict[str, str]]:
    """(GPU types that fit spec.gpuMemory with the GPUs a replica gets there, in preference order;
    why each other GPU type does not fit)."""
    fitting: list[tuple[tuple[int, int, tuple[int, Decimal], str, str], MachineType, int]] = []
    unfit: dict[str, str] = {}
    for machine_type in catalogue:
        if not machine_type.is_gpu:
            continue
        gpus = gpus_to_fit(spec, machine_type)
        if gpus is None:
            unfit[machine_type.display_name] = why_not_fit(spec, machine_type) or ""
            continue
        vram = vram_of(machine_type) or 0
        # the object name last: display names need not be unique, and the catalogue's order is the order
        # its watch happened to report, so without it the preferred type could change on a restart
        key = (gpus * vram, gpus, _price_key(machine_type, gpus), machine_type.display_name,
               machine_type.metadata.name)
        fitting.append((key, machine_type, gpus))
    fitting.sort(key=lambda entry: entry[0])
    return [(m, gpus) for _, m, gpus in fitting], unfit


REQUEST_MAX = 2**63 - 1  # Kubernetes compares cpu in millicores and memory in bytes as int64


def type_option(spec: FalAppSpec, machine_type: MachineType) -> TypeOption:
    """The requests one replica makes on the type. Raises ValueError (naming the field) when they cannot
    be computed or do not fit a Kubernetes request."""
    gpus = gpus_per_replica(spec, machine_type)
    field = "spec.gpuMemory" if spec.gpu_memory is not None else "spec.numGpus"
    per = max(gpus, 1)  # catalogue cpu/memory are per GPU on GPU types, per replica on CPU types
    cpu = spec.resources.cpu if spec.resources and spec.resources.cpu else None
    memory = spec.resources.memory if spec.resources and spec.resources.memory else None
    name = machine_type.display_name
    try:
        cpu_milli = cpu_millis(cpu) if cpu else cpu_millis(machine_type.spec.resources.cpu) * per
        mem_bytes = memory_bytes(memory) if memory else memory_bytes(machine_type.spec.resources.memory) * per
    except (ArithmeticError, ValueError) as exc:
        raise ValueError(f"spec.resources: cannot compute the requests of a replica on {name}: {exc}") from exc
    for what, value in (("cpu", cpu_milli), ("memory", mem_bytes)):
        if value > REQUEST_MAX:
            source = (f"spec.resources.{what}" if getattr(spec.resources, what, None)
                      else f"{field}: {per} x the {what} per GPU of {name}")
            raise ValueError(f"{source}: a replica's {what} request on {name} is too large for Kubernetes")
    return TypeOption(name=machine_type.metadata.name, display=name, gpus=gpus, cpu_milli=cpu_milli,
                      memory_bytes=mem_bytes, autoscaled=bool(machine_type.spec.autoscaled))


def why_not(spec: FalAppSpec, machine_type: MachineType) -> str | None:
    gpu = machine_type.spec.gpu
    name = machine_type.display_name
    if gpu is None:
        if spec.num_gpus:
            return f"{name} is a CPU type but numGpus is {spec.num_gpus}"
        if spec.requires_nvenc:
            return f"{name} has no video encoders (requiresNvenc)"
        return None
    if spec.num_gpus == 0:
        return f"{name} is a GPU type but numGpus is 0"
    wanted = gpus_per_replica(spec, machine_type)
    if wanted > gpu.max_gpus_per_replica:
        return f"{name} allows at most {gpu.max_gpus_per_replica} GPUs per replica, numGpus is {wanted}"
    if spec.requires_nvenc and not machine_type.nvenc_capable:
        return f"{name} has no NVENC encoders (requiresNvenc)"
    return None


def not_available(machine_type: MachineType, namespace: str, namespace_labels: Mapping[str, str] | None) -> str | None:
    """Why the app's namespace may not use the type (its namespaceSelector), or None."""
    if machine_type.spec.available_to(namespace_labels):
        return None
    unknown = " (the namespace's labels are not known yet)" if namespace_labels is None else ""
    return f"{machine_type.display_name} is not available to namespace {namespace}{unknown}"


def owned_toleration(spec: FalAppSpec, catalogue: Iterable[MachineType]) -> str | None:
    """Why one of the app's tolerations is for a taint key a machine type owns, or None."""
    owners: dict[str, str] = {}
    for machine_type in catalogue:
        for toleration in machine_type.spec.tolerations:
            if toleration.key:
                owners.setdefault(toleration.key, machine_type.display_name)
    for i, toleration in enumerate(spec.tolerations):
        if toleration.key in owners:
            return (f"spec.tolerations[{i}].key: {toleration.key} is tolerated by machine type "
                    f"{owners[toleration.key]}; only machine types may tolerate it")
    return None


@dataclass
class _Hosts:
    """The types taken so far, in preference order, and why the others were not."""

    spec: FalAppSpec
    options: list[TypeOption] = field(default_factory=list)
    types: dict[str, MachineType] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # under the name the app knows the type by
    oversized: list[str] = field(default_factory=list)  # requests Kubernetes cannot hold

    def consider(self, name: str, machine_type: MachineType, reason: str | None) -> None:
        """Take the type, unless there is a reason not to or a replica's requests there do not fit."""
        if reason:
            self.skipped[name] = reason
            return
        try:
            option = type_option(self.spec, machine_type)
        except ValueError as exc:
            self.oversized.append(str(exc))
            return
        self.types[machine_type.metadata.name] = machine_type
        self.options.append(option)

    def resolution(self, problem: str | None) -> Resolution:
        # the status names types by display name, one entry per type: two pools of one GPU may share
        # one (say GPU-H100 under two label schemes), then those go by their object names
        shared = {d for d, n in Counter(o.display for o in self.options).items() if n > 1}
        options = [replace(o, display=o.name) if o.display in shared else o for o in self.options]
        return Resolution(options=options if problem is None else [], types=self.types,
                          skipped=self.skipped, problem=problem)


def resolve(spec: FalAppSpec, catalogue: Iterable[MachineType], namespace: str = "",
            namespace_labels: Mapping[str, str] | None = None) -> Resolution:
    """The types that can host the app, in preference order, or the problem that makes the spec
    invalid. `namespace_labels` are the labels of the app's namespace (None: not known)."""
    resolution = _resolve(spec, list(catalogue), namespace, namespace_labels)
    if resolution.problem is None and (problem := spec_problem(spec, resolution.options)) is not None:
        return Resolution(types=resolution.types, skipped=resolution.skipped, problem=problem)
    return resolution


def spec_problem(spec: FalAppSpec, options: Iterable[TypeOption]) -> str | None:
    """What the schema lets through but the app's children could not be made of: ports whose Service names
    collide, and an unprefixed envFrom source in an app with GPUs (see falapp.ENV_FROM_NEEDS_PREFIX)."""
    named = [p.name for p in spec.ports if p.name]
    unnamed = [p.container_port for p in spec.ports if not p.name]
    if len(set(named)) < len(named):
        return f"spec.ports: {PORT_NAMES_UNIQUE}"
    if len(set(unnamed)) < len(unnamed):
        return f"spec.ports: {UNNAMED_PORTS_SHARE_A_NUMBER}"
    clash = next((name for name in named if name in {f"port-{n}" for n in unnamed}), None)
    if clash is not None:
        return f"spec.ports: port name {clash} {PORT_NAMED_AFTER_ANOTHER}"
    unprefixed = next((i for i, source in enumerate(spec.env_from) if not source.prefix), None)
    if unprefixed is not None and any(o.gpus for o in options):
        return f"spec.envFrom[{unprefixed}].prefix: {ENV_FROM_NEEDS_PREFIX}"
    return None


def _resolve(spec: FalAppSpec, catalogue: list[MachineType], namespace: str,
             namespace_labels: Mapping[str, str] | None) -> Resolution:
    if spec.machine_types is None:
        return _resolve_by_vram(spec, catalogue, namespace, namespace_labels)
    hosts = _Hosts(spec)
    unknown: list[str] = []
    refused: list[str] = []
    unfit: list[str] = []
    for listed in spec.machine_types:
        machine_type = find_machine_type(catalogue, listed)
        if machine_type is None:
            unknown.append(listed)
            continue
        denied = not_available(machine_type, namespace, namespace_labels)
        if denied:
            refused.append(denied)
            continue
        too_small = why_not_fit(spec, machine_type) if spec.gpu_memory is not None else None
        if too_small:
            unfit.append(too_small)
            continue
        hosts.consider(listed, machine_type, why_not(spec, machine_type))
    problem: str | None
    if unknown:
        known = ", ".join(sorted(m.display_name for m in catalogue)) or "none"
        problem = f"spec.machineTypes: unknown machine type(s) {', '.join(unknown)} (known: {known})"
    elif refused:
        problem = "spec.machineTypes: " + "; ".join(refused)
    elif unfit:
        problem = "spec.machineTypes: " + "; ".join(unfit)
    elif hosts.oversized:
        problem = hosts.oversized[0]
    elif not hosts.options:
        problem = "spec.machineTypes: no listed type can host this app: " + "; ".join(hosts.skipped.values())
    else:
        problem = owned_toleration(spec, catalogue)
    return hosts.resolution(problem)


def _largest(spec: FalAppSpec, catalogue: list[MachineType]) -> str:
    """What the catalogue holds at most, for a gpuMemory nothing fits."""
    sized = [(m.display_name, gpu) for m in catalogue if (gpu := m.spec.gpu) is not None and gpu.vram]
    if not sized:
        return "no GPU machine type declares gpu.vram"
    if not spec.split_across_gpus:
        name, gpu = max(sized, key=lambda entry: memory_bytes(entry[1].vram or "0"))
        return (f"the most VRAM per GPU is {gpu.vram} on {name}; splitAcrossGpus: true spreads the model "
                "over several GPUs")

    def most(gpu: GpuSpec) -> int:
        return max(n for n in SPLIT_GPU_COUNTS if n <= gpu.max_gpus_per_replica)
    name, gpu = max(sized, key=lambda entry: most(entry[1]) * memory_bytes(entry[1].vram or "0"))
    return (f"the most VRAM per replica is {most(gpu)} x {gpu.vram} on {name} "
            f"(gpu.maxGpusPerReplica {gpu.max_gpus_per_replica})")


def _resolve_by_vram(spec: FalAppSpec, catalogue: list[MachineType], namespace: str,
                     namespace_labels: Mapping[str, str] | None) -> Resolution:
    """Without machineTypes: the GPU types whose VRAM fits gpuMemory, among those the app may use."""
    fitting, unfit = by_vram(spec, catalogue)
    hosts = _Hosts(spec)
    for machine_type, _ in fitting:
        if len(hosts.options) == MAX_MACHINE_TYPES:
            break
        hosts.consider(machine_type.display_name, machine_type,
                       not_available(machine_type, namespace, namespace_labels) or why_not(spec, machine_type))
    problem: str | None
    if not hosts.options and fitting:
        problem = (f"spec.gpuMemory: no machine type this app may use fits {spec.gpu_memory}: "
                   + "; ".join([*hosts.skipped.values(), *hosts.oversized]))
    elif not hosts.options:
        problem = f"spec.gpuMemory: no machine type fits {spec.gpu_memory}: " + _largest(spec, catalogue)
    else:
        problem = owned_toleration(spec, catalogue)
    return hosts.resolution(problem)


def candidate_types(spec: FalAppSpec, catalogue: Iterable[MachineType]) -> list[MachineType]:
    """The types whose free room placement may look at for the app: the listed ones, or those whose VRAM
    fits gpuMemory (before entitlements and NVENC are judged: room of a type it may not use is unused)."""
    catalogue = list(catalogue)
    if spec.machine_types is None:
        return [machine_type for machine_type, _ in by_vram(spec, catalogue)[0]]
    return [m for listed in spec.machine_types if (m := find_machine_type(catalogue, listed))]
